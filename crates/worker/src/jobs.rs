//! Workflow jobs: sealed input dataset -> this attested worker -> sealed
//! results.
//!
//! The worker claims a queued run from the coordinator over mutual TLS
//! ([`Worker::run_next_job`], or [`Worker::run_jobs`] in a loop), reads the
//! sealed input from the object store, has the coordinator unwrap its file
//! key (the attested release path for one file: the worker never holds the
//! dataset's key itself), opens it in memory only, scores every pair the
//! input lists, seals the results under a data key the coordinator issues
//! for the output key, writes them to the output location (never replacing
//! an object), and reports the digest with a signed receipt. Plaintext
//! images, pairs and results never touch disk.
//!
//! # The input: one sealed tar archive
//!
//! The data owner archives a folder with `tar` and seals the archive under a
//! coordinator key (`twinseal seal --coordinator URL --key dataset-key -c
//! purpose=pairs pairs.tar -o pairs.sealed`). The folder holds the images
//! (PNG, JPEG, or raw grey bytes of the model's size) and a `pairs.csv`
//! naming pairs of them by their path inside the archive:
//!
//! ```text
//! left,right,same
//! 3/0001.png,3/0042.png,1
//! 3/0001.png,8/0007.png,0
//! ```
//!
//! The header is `left,right` or `left,right,same`; `same` is `1` or `0`.
//! Paths contain no commas or quotes; a leading `./` in the archive is
//! ignored. At most [`MAX_PAIRS`] pairs, [`MAX_FILES`] files, and a sealed
//! input of at most [`MAX_INPUT_BYTES`].
//!
//! # The output: one sealed CSV
//!
//! `left,right,same,verdict,probability,distance,score`, one line per pair
//! in input order (`same` empty when the input had none), sealed under the
//! workflow's output key with the context `purpose=workflow-output,
//! workflow=NAME, run=N`, so results of one run cannot pass for another's.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use twinseal_api as api;
use twinseal_envelope::{Context, FileKey, Header};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::worker::{AppState, Worker};

/// Most pairs one job scores.
pub const MAX_PAIRS: usize = 1_000_000;
/// Most files in one input archive.
pub const MAX_FILES: usize = 1_000_000;
/// Largest sealed input a job reads (it is opened in memory), bytes.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;
/// Pairs scored together.
const CHUNK: usize = 1024;
/// The file inside the input archive that lists the pairs.
pub const PAIRS_FILE: &str = "pairs.csv";

/// One line of `pairs.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairLine {
    /// The left image's path inside the archive.
    pub left: String,
    /// The right image's path.
    pub right: String,
    /// Whether both show the same identity, when the file says.
    pub same: Option<bool>,
}

pub(crate) fn job_err(m: impl Into<String>) -> Error {
    Error::Job(m.into())
}

/// A job's opened input: the archive's files by path, and its pairs.
/// Plaintext, in memory only; `Debug` shows counts.
pub struct Input {
    files: HashMap<String, Zeroizing<Vec<u8>>>,
    pairs: Vec<PairLine>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("files", &self.files.len())
            .field("pairs", &self.pairs.len())
            .finish()
    }
}

impl Input {
    /// Reads a tar archive (the plaintext of a job's input) and its
    /// `pairs.csv`, checking that every pair names files of the archive.
    /// Errors name the step and the line or entry number, never a path or
    /// any other content.
    pub fn from_tar(bytes: &[u8]) -> Result<Input> {
        let mut archive = tar::Archive::new(bytes);
        let entries = archive
            .entries()
            .map_err(|_| job_err("the input is not a tar archive"))?;
        let mut files = HashMap::new();
        for (n, entry) in entries.enumerate() {
            let n = n + 1;
            let mut entry =
                entry.map_err(|_| job_err(format!("input archive entry {n} is malformed")))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                tar::EntryType::Directory => continue,
                // pax and GNU long-name records are consumed by the reader;
                // anything else (links, devices) has no place in a dataset.
                _ => {
                    return Err(job_err(format!(
                        "input archive entry {n} is not a regular file or directory"
                    )));
                }
            }
            let path = entry
                .path()
                .map_err(|_| job_err(format!("input archive entry {n} has an unreadable path")))?;
            let path = archive_path(&path)
                .ok_or_else(|| job_err(format!("input archive entry {n} has an unsafe path")))?;
            if files.len() == MAX_FILES {
                return Err(job_err(format!(
                    "the input archive holds more than {MAX_FILES} files"
                )));
            }
            let mut data = Zeroizing::new(Vec::with_capacity(entry.size().min(1 << 24) as usize));
            entry
                .read_to_end(&mut data)
                .map_err(|_| job_err(format!("input archive entry {n} is truncated")))?;
            if files.insert(path, data).is_some() {
                return Err(job_err(format!("input archive entry {n} repeats a path")));
            }
        }
        let text = files
            .get(PAIRS_FILE)
            .ok_or_else(|| job_err(format!("the input archive holds no {PAIRS_FILE}")))?;
        let pairs = parse_pairs(text)?;
        for (n, p) in pairs.iter().enumerate() {
            if !files.contains_key(&p.left) || !files.contains_key(&p.right) {
                return Err(job_err(format!(
                    "{PAIRS_FILE} pair {}: names an image the archive does not hold",
                    n + 1
                )));
            }
        }
        Ok(Input { files, pairs })
    }

    /// The pairs, in file order.
    pub fn pairs(&self) -> &[PairLine] {
        &self.pairs
    }

    /// Files in the archive (`pairs.csv` included).
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

/// An archive path as `pairs.csv` names it: `/`-separated, no leading
/// `./`, no empty, `.` or `..` part, not absolute.
fn archive_path(p: &std::path::Path) -> Option<String> {
    let s = p.to_str()?;
    let s = s.trim_start_matches("./");
    if s.is_empty() || s.starts_with('/') {
        return None;
    }
    let ok = s.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then(|| s.to_string())
}

/// Parses `pairs.csv` (format in the module documentation). Errors give
/// the line number, never the line's content: the coordinator shows them
/// to people who may not see the data.
pub fn parse_pairs(text: &[u8]) -> Result<Vec<PairLine>> {
    let text = std::str::from_utf8(text).map_err(|_| job_err("pairs.csv is not UTF-8"))?;
    let mut lines = text.lines().enumerate();
    let labelled = match lines.next().map(|(_, h)| h.trim_end_matches('\r')) {
        Some("left,right") => false,
        Some("left,right,same") => true,
        _ => {
            return Err(job_err(
                "pairs.csv must start with the header `left,right` or `left,right,same`",
            ));
        }
    };
    let mut out = Vec::new();
    for (i, line) in lines {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if out.len() == MAX_PAIRS {
            return Err(job_err(format!(
                "pairs.csv holds more than {MAX_PAIRS} pairs"
            )));
        }
        let mut f = line.split(',');
        let (left, right) = match (f.next(), f.next()) {
            (Some(l), Some(r)) if !l.is_empty() && !r.is_empty() => (l, r),
            _ => return Err(job_err(format!("pairs.csv line {n}: expected two paths"))),
        };
        let same = match (labelled, f.next()) {
            (false, None) => None,
            (true, Some("1")) => Some(true),
            (true, Some("0")) => Some(false),
            (true, _) => {
                return Err(job_err(format!(
                    "pairs.csv line {n}: `same` must be 0 or 1"
                )));
            }
            (false, Some(_)) => {
                return Err(job_err(format!(
                    "pairs.csv line {n}: more fields than the header"
                )));
            }
        };
        if f.next().is_some() {
            return Err(job_err(format!(
                "pairs.csv line {n}: more fields than the header"
            )));
        }
        if [left, right].iter().any(|p| p.contains('"')) {
            return Err(job_err(format!(
                "pairs.csv line {n}: quoted fields are not supported"
            )));
        }
        out.push(PairLine {
            left: left.to_string(),
            right: right.to_string(),
            same,
        });
    }
    if out.is_empty() {
        return Err(job_err("pairs.csv lists no pairs"));
    }
    Ok(out)
}

/// Opens an object store from a location: `s3://BUCKET[/PREFIX]`, a
/// `file://` URL or a plain directory path (which must exist).
///
/// S3: the endpoint, region and credentials come from the environment
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; `AWS_ALLOW_HTTP=true` for
/// a plain-HTTP endpoint, which is logged as INSECURE). Create-only and
/// versioned writes use conditional puts (`If-None-Match`, `If-Match`).
/// Call [`check_store`] before relying on it: building a store does not
/// reach it.
pub fn open_store(location: &str) -> Result<Arc<dyn ObjectStore>> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!(
                "object store {location:?}: name a bucket (s3://BUCKET/PREFIX)"
            )));
        }
        let builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
        if std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
            tracing::warn!(
                location,
                "INSECURE: AWS_ALLOW_HTTP=true: the S3 credentials and requests travel in plain \
                 text (the objects themselves are sealed)"
            );
        }
        let s3 = builder
            .build()
            .map_err(|e| Error::Config(format!("object store {location:?}: {e}")))?;
        let prefix = prefix.trim_matches('/');
        return Ok(if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        });
    }
    let dir = match location.strip_prefix("file://") {
        Some(rest) => std::path::PathBuf::from(rest),
        None if location.contains("://") => {
            return Err(Error::Config(format!(
                "object store {location:?}: s3:// and file:// URLs and directories are supported"
            )));
        }
        None => std::path::PathBuf::from(location),
    };
    let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| Error::Config(format!("object store {}: {e}", dir.display())))?;
    Ok(Arc::new(fs))
}

/// Checks that an object store answers (the bucket exists, the
/// credentials are accepted), with one clear error if not. Reads nothing
/// but a listing of the top level; writes nothing.
pub async fn check_store(store: &dyn ObjectStore, location: &str) -> Result<()> {
    match store.list_with_delimiter(None).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let why = if text.contains("NoSuchBucket")
                || matches!(e, object_store::Error::NotFound { .. })
            {
                "the bucket does not exist".to_string()
            } else if text.contains("AccessDenied")
                || text.contains("InvalidAccessKeyId")
                || text.contains("SignatureDoesNotMatch")
                || matches!(
                    e,
                    object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                )
            {
                "the credentials were refused".to_string()
            } else {
                format!("it does not answer: {e}")
            };
            Err(Error::Config(format!("object store {location:?}: {why}")))
        }
    }
}

/// Opens `location` for reading, refusing objects larger than `max` bytes;
/// errors name `what`, never the store's own message (it is logged).
pub(crate) async fn open_object(
    store: &dyn ObjectStore,
    location: &str,
    what: &str,
    max: u64,
) -> Result<object_store::GetResult> {
    let path =
        ObjectPath::parse(location).map_err(|_| job_err(format!("{what}: invalid object path")))?;
    let r = store.get(&path).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => {
            job_err(format!("{what}: not found in the object store"))
        }
        other => {
            tracing::warn!(error = %other, location, "object store read failed");
            job_err(format!("{what}: the object store failed"))
        }
    })?;
    if r.meta.size > max {
        return Err(job_err(format!("{what}: larger than {max} bytes")));
    }
    Ok(r)
}

/// Reads a whole object of at most [`MAX_INPUT_BYTES`] into memory.
pub(crate) async fn get(store: &dyn ObjectStore, location: &str, what: &str) -> Result<Vec<u8>> {
    let bytes = open_object(store, location, what, MAX_INPUT_BYTES)
        .await?
        .bytes()
        .await
        .map_err(|_| job_err(format!("{what}: reading from the object store failed")))?;
    Ok(bytes.to_vec())
}

pub(crate) fn context_of(pairs: &std::collections::BTreeMap<String, String>) -> Result<Context> {
    Context::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| job_err(format!("the job's encryption context is invalid: {e}")))
}

/// Progress reports to the coordinator, at most one a second.
pub(crate) struct Reporter {
    client: twinseal_net::client::Client,
    run: u64,
    last: Option<Instant>,
}

impl Reporter {
    /// A training run's progress (`done`/`total` count epochs); sent at
    /// once (one report per stage or finished epoch).
    pub(crate) async fn training(&mut self, p: api::TrainingProgress) {
        self.last = Some(Instant::now());
        let body = api::JobProgress {
            done: p.epoch as u64,
            total: p.epochs as u64,
            training: Some(p),
        };
        let r: std::result::Result<api::RunInfo, _> = self
            .client
            .post(&format!("/v1/jobs/{}/progress", self.run), &body)
            .await;
        if let Err(e) = r {
            tracing::warn!(run = self.run, error = %e, "progress report failed");
        }
    }

    async fn report(&mut self, done: u64, total: u64, force: bool) {
        if !force
            && self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        let r: std::result::Result<api::RunInfo, _> = self
            .client
            .post(
                &format!("/v1/jobs/{}/progress", self.run),
                &api::JobProgress {
                    done,
                    total,
                    training: None,
                },
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(run = self.run, error = %e, "progress report failed");
        }
    }
}

impl Worker {
    /// Claim the next queued run of this app's workflows and run it;
    /// `None` when nothing was queued. The run's failure is reported to the
    /// coordinator and returned as `Ok(Some((run, Err)))`; an `Err` means
    /// the coordinator could not be reached.
    pub async fn run_next_job(
        &self,
        store: &dyn ObjectStore,
    ) -> Result<Option<(u64, Result<api::RunInfo>)>> {
        let state = self.state();
        let client = state.coordinator();
        let claim: api::ClaimResponse = client
            .post("/v1/jobs/claim", &())
            .await
            .map_err(|e| job_err(format!("claiming a job: {e}")))?;
        let Some(job) = claim.job else {
            return Ok(None);
        };
        let run = job.run;
        tracing::info!(run, workflow = %job.workflow, "running workflow job");
        let mut reporter = Reporter {
            client: client.clone(),
            run,
            last: None,
        };
        let outcome = run_job(&state, store, &job, &mut reporter).await;
        let finish = match &outcome {
            Ok(f) => f.clone(),
            Err(e) => {
                tracing::warn!(run, error = %e, "workflow job failed");
                api::JobFinish {
                    done: 0,
                    output_sha256: None,
                    error: Some(e.to_string()),
                    receipt: None,
                    training: None,
                }
            }
        };
        let info: std::result::Result<api::RunInfo, _> = state
            .coordinator()
            .post(&format!("/v1/jobs/{run}/finish"), &finish)
            .await;
        let info = info.map_err(|e| job_err(format!("reporting run {run}: {e}")))?;
        Ok(Some((
            run,
            match outcome {
                Ok(_) => Ok(info),
                Err(e) => Err(e),
            },
        )))
    }

    /// Run jobs as they are queued, polling the coordinator every `poll`,
    /// until `stop` resolves. Failures are reported and logged; the loop
    /// goes on.
    pub async fn run_jobs(
        &self,
        store: Arc<dyn ObjectStore>,
        poll: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let ran = tokio::select! {
                _ = &mut stop => return,
                r = self.run_next_job(store.as_ref()) => r,
            };
            let idle = !matches!(ran, Ok(Some(_)));
            match ran {
                Ok(Some((run, Ok(_)))) => tracing::info!(run, "workflow job succeeded"),
                Ok(Some((run, Err(e)))) => tracing::warn!(run, error = %e, "workflow job failed"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim jobs"),
            }
            if idle {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
    }
}

async fn run_job(
    state: &AppState,
    store: &dyn ObjectStore,
    job: &api::Job,
    reporter: &mut Reporter,
) -> Result<api::JobFinish> {
    match job.kind.as_str() {
        "score" => run_score_job(state, store, job, reporter).await,
        "train" => crate::training::run_train_job(state, store, job, reporter).await,
        other => Err(job_err(format!("kind {other:?} is not supported"))),
    }
}

async fn run_score_job(
    state: &AppState,
    store: &dyn ObjectStore,
    job: &api::Job,
    reporter: &mut Reporter,
) -> Result<api::JobFinish> {
    let model = state.model().ok_or_else(|| {
        job_err("a score workflow needs a worker that serves a model; this one is a trainer")
    })?;
    let sealed = get(store, &job.input.location, "the input").await?;
    let inputs_sha256 = hex::encode(Sha256::digest(&sealed));
    let header = Header::parse(&sealed)
        .map_err(|e| job_err(format!("the input is not a sealed file: {e}")))?;
    // The coordinator checks that this app may use the key and unwraps the
    // file's key for this one file.
    let file_key =
        crate::worker::unwrap_file_key(&state.coordinator(), &job.input.key, header.as_bytes())
            .await?;
    let plain = Zeroizing::new(
        twinseal_envelope::open_bytes_with_file_key(
            &sealed,
            &file_key,
            &context_of(&job.input.context)?,
        )
        .map_err(|e| {
            job_err(format!(
                "the input does not open with its key and context: {e}"
            ))
        })?,
    );
    drop(file_key);
    drop(sealed);
    let input = Input::from_tar(&plain)?;
    drop(plain);
    let total = input.pairs.len() as u64;
    reporter.report(0, total, true).await;

    let (height, width) = model.input_size();
    let threshold = model.threshold();
    let mut pixels: HashMap<&str, Arc<Vec<f32>>> = HashMap::new();
    let mut load = |path: &str| -> Result<Arc<Vec<f32>>> {
        if let Some(p) = pixels.get(path) {
            return Ok(p.clone());
        }
        let (key, bytes) = input
            .files
            .get_key_value(path)
            .ok_or_else(|| job_err("an image vanished from the input"))?;
        let px =
            twinseal_siamese::data::decode_image(bytes, height, width, "image").map_err(|_| {
                job_err("an image of the input is not a PNG, JPEG or raw image of the model's size")
            })?;
        let px = Arc::new(px);
        pixels.insert(key.as_str(), px.clone());
        Ok(px)
    };
    let mut csv = Zeroizing::new(String::from(
        "left,right,same,verdict,probability,distance,score\n",
    ));
    let mut done = 0u64;
    for chunk in input.pairs.chunks(CHUNK) {
        let mut a = Vec::with_capacity(chunk.len() * height * width);
        let mut b = Vec::with_capacity(chunk.len() * height * width);
        for p in chunk {
            a.extend_from_slice(&load(&p.left)?);
            b.extend_from_slice(&load(&p.right)?);
        }
        let s = state.clone();
        let scores = tokio::task::spawn_blocking(move || {
            let out = s.served().and_then(|m| {
                m.score_pairs(&a, &b)
                    .map_err(|e| Error::Internal(e.to_string()))
            });
            drop(Zeroizing::new(a));
            drop(Zeroizing::new(b));
            out
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(e.to_string()))?;
        for (p, s) in chunk.iter().zip(scores) {
            use std::fmt::Write as _;
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{},{}",
                p.left,
                p.right,
                p.same.map(|s| if s { "1" } else { "0" }).unwrap_or(""),
                if s.score <= threshold {
                    "similar"
                } else {
                    "dissimilar"
                },
                s.probability,
                s.distance,
                s.score
            );
        }
        done += chunk.len() as u64;
        reporter.report(done, total, false).await;
    }
    drop(pixels);
    drop(input);

    let (output_sha256, _) =
        seal_and_put(state, store, &job.output, csv.as_bytes(), "the results").await?;
    drop(csv);
    reporter.report(done, total, true).await;
    let output = api::WorkflowOutput {
        run: job.run,
        workflow: job.workflow.clone(),
        pairs: done,
        output: job.output.location.clone(),
        output_sha256: output_sha256.clone(),
    };
    let output = serde_json::to_string(&output).map_err(|e| Error::Internal(e.to_string()))?;
    let receipt = crate::http::sign(state, "workflow", inputs_sha256, output)?;
    Ok(api::JobFinish {
        done,
        output_sha256: Some(output_sha256),
        error: None,
        receipt: Some(receipt),
        training: None,
    })
}

/// Seals `plaintext` under a data key the coordinator issues for `to.key`
/// with `to.context` (the worker never holds that key itself) and writes it
/// to `to.location`, never replacing an object. Returns the SHA-256 of the
/// sealed object and of its envelope header, hex.
pub(crate) async fn seal_and_put(
    state: &AppState,
    store: &dyn ObjectStore,
    to: &api::SealedLocation,
    plaintext: &[u8],
    what: &str,
) -> Result<(String, String)> {
    let mut dk: api::DataKeyResponse = state
        .coordinator()
        .post(
            &format!("/v1/keys/{}/datakey", to.key),
            &api::DataKeyRequest {
                context: to.context.clone(),
            },
        )
        .await
        .map_err(|e| job_err(format!("no data key for {what} under key {}: {e}", to.key)))?;
    let header = B64
        .decode(&dk.header)
        .map_err(|_| job_err("the coordinator's data key header is not base64"))?;
    let file_key = decode_file_key(&dk.file_key)?;
    dk.file_key.zeroize();
    let sealed = twinseal_envelope::seal_bytes_with_header(plaintext, &header, &file_key)
        .map_err(|e| job_err(format!("sealing {what}: {e}")))?;
    drop(file_key);
    let sealed_sha256 = hex::encode(Sha256::digest(&sealed));
    let header_sha256 = hex::encode(Sha256::digest(
        Header::parse(&sealed)
            .map_err(|e| job_err(format!("sealing {what}: {e}")))?
            .as_bytes(),
    ));
    let path = ObjectPath::parse(&to.location)
        .map_err(|_| job_err(format!("the location of {what} is not a valid object path")))?;
    store
        .put_opts(
            &path,
            PutPayload::from(sealed),
            PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            },
        )
        .await
        .map_err(|e| match e {
            object_store::Error::AlreadyExists { .. } => job_err(format!(
                "{} already exists; nothing was replaced",
                to.location
            )),
            other => {
                tracing::warn!(error = %other, "object store write failed");
                job_err(format!("writing {what} to the object store failed"))
            }
        })?;
    Ok((sealed_sha256, header_sha256))
}

/// A 32-byte file key from the coordinator's base64, wiped after use.
pub(crate) fn decode_file_key(b64: &str) -> Result<FileKey> {
    let raw = Zeroizing::new(
        B64.decode(b64)
            .map_err(|_| job_err("the coordinator's file key is not base64"))?,
    );
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| job_err("the coordinator's file key has the wrong size"))?;
    Ok(FileKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_with_and_without_labels() {
        let p = parse_pairs(b"left,right,same\r\na.png,b.png,1\n\nc/d.png,e.png,0\n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].same, Some(true));
        assert_eq!(p[1].left, "c/d.png");
        let p = parse_pairs(b"left,right\na,b").unwrap();
        assert_eq!(p[0].same, None);
    }

    #[test]
    fn fail_malformed_pairs_files() {
        for (bad, why) in [
            (&b""[..], "header"),
            (b"a,b\nx,y", "header"),
            (b"left,right\n", "no pairs"),
            (b"left,right\na", "two paths"),
            (b"left,right\na,", "two paths"),
            (b"left,right\na,b,1", "more fields"),
            (b"left,right,same\na,b", "0 or 1"),
            (b"left,right,same\na,b,yes", "0 or 1"),
            (b"left,right,same\na,b,1,2", "more fields"),
            (b"left,right\n\"a\",b", "quoted"),
            (b"left,right\n\xff,b", "UTF-8"),
        ] {
            let e = parse_pairs(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{:?}: {e}", String::from_utf8_lossy(bad));
        }
        // Errors name the line, not its content.
        let e = parse_pairs(b"left,right\nsecret-name.png")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && !e.contains("secret"), "{e}");
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn an_archive_opens_with_its_pairs() {
        let t = tar_of(&[
            ("./pairs.csv", b"left,right,same\na/1.png,b/2.raw,0\n"),
            ("./a/1.png", b"png"),
            ("b/2.raw", &[0u8; 784]),
        ]);
        let input = Input::from_tar(&t).unwrap();
        assert_eq!(input.pairs().len(), 1);
        assert_eq!(input.file_count(), 3);
        assert_eq!(format!("{input:?}"), "Input { files: 3, pairs: 1 }");
    }

    #[test]
    fn fail_archives_that_are_not_datasets() {
        let pairs: &[u8] = b"left,right\na.png,b.png\n";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"not a tar archive at all, just bytes".repeat(20),
                "malformed",
            ),
            (tar_of(&[("a.png", b"x"), ("b.png", b"y")]), "no pairs.csv"),
            (
                tar_of(&[("pairs.csv", pairs), ("a.png", b"x")]),
                "does not hold",
            ),
            (
                tar_of(&[
                    ("pairs.csv", pairs),
                    ("a.png", b"x"),
                    ("./a.png", b"y"),
                    ("b.png", b"z"),
                ]),
                "repeats a path",
            ),
        ];
        for (bytes, why) in cases {
            let e = Input::from_tar(&bytes).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
        // A symbolic link and an escaping path are refused.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "a.png", "/etc/passwd").unwrap();
        let e = Input::from_tar(&b.into_inner().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert_eq!(archive_path(std::path::Path::new("../x")), None);
        assert_eq!(archive_path(std::path::Path::new("/x")), None);
        assert_eq!(archive_path(std::path::Path::new("a//b")), None);
        assert_eq!(
            archive_path(std::path::Path::new("./a/b")).as_deref(),
            Some("a/b")
        );
        // A truncated archive.
        let t = tar_of(&[
            ("pairs.csv", pairs),
            ("a.png", &[7u8; 2000]),
            ("b.png", b"z"),
        ]);
        let e = Input::from_tar(&t[..1200]).unwrap_err().to_string();
        assert!(
            e.contains("truncated") || e.contains("malformed") || e.contains("no pairs"),
            "{e}"
        );
    }
}
