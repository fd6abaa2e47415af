//! `twinseal worker serve` (the attested app) and the client side of the
//! worker: `twinseal compare --worker`, `twinseal enroll`, `twinseal verify`.
//! Clients pin the coordinator's root, refuse simulated-TEE certificates
//! unless told otherwise, and verify every answer's signed receipt against
//! the certificate that served it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use twinseal_api as api;
use twinseal_attest::SimulatedPlatform;
use twinseal_attest::collect::{Collector, TeeInterface};
use twinseal_worker::{EvidenceSource, GalleryOptions, Limits, Worker, WorkerOptions};

/// `twinseal worker ...`.
#[derive(Debug, clap::Subcommand)]
pub enum WorkerCommand {
    /// Attest with the coordinator, obtain the model key, open the sealed
    /// model in memory and serve compare/embed/enroll/verify over HTTPS with
    /// the attested certificate, attesting again before it expires.
    Serve(Box<ServeArgs>),
    /// Print the measurement the simulated TEE reports for this binary
    /// (SHA-384 of the executable), for a development manifest. On real
    /// TEEs the measurement comes from the enclave/TD/guest build instead.
    Measurement,
}

/// Where the worker's evidence comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tee {
    /// The TEE this machine offers (configfs-tsm or Gramine's /dev/attestation).
    Auto,
    /// Intel SGX (through Gramine).
    Sgx,
    /// Intel TDX (configfs-tsm).
    Tdx,
    /// AMD SEV-SNP (configfs-tsm).
    Snp,
    /// INSECURE, development only: the simulated TEE (needs
    /// --insecure-simulated-platform-key; the coordinator must allow it).
    Simulated,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The coordinator's URL.
    #[arg(long, env = "TWINSEAL_COORDINATOR")]
    pub coordinator: String,
    /// The coordinator's root certificate (PEM), pinned.
    #[arg(long, env = "TWINSEAL_CA", value_name = "ROOT.pem")]
    pub ca: PathBuf,
    /// The app name in the coordinator's manifest.
    #[arg(long)]
    pub app: String,
    /// The sealed model file. Without it the worker is a trainer: it
    /// runs the workflow jobs of its app (needs --jobs) and serves no model.
    #[arg(long, value_name = "SEALED_MODEL", required_unless_present = "jobs")]
    pub model: Option<PathBuf>,
    /// The coordinator key the model is sealed under.
    #[arg(long, default_value = "model-key")]
    pub model_key: String,
    /// Encryption context the model was sealed with (repeatable KEY=VALUE).
    #[arg(
        long = "model-context",
        value_name = "KEY=VALUE",
        default_value = "purpose=model"
    )]
    pub model_context: Vec<String>,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// DNS names or IP addresses clients use to reach this worker (repeatable;
    /// default: the listen address's IP). Never one of the coordinator's
    /// own names: the coordinator refuses to certify those for an app.
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// Where the attestation evidence comes from.
    #[arg(long, value_enum, default_value_t = Tee::Auto)]
    pub tee: Tee,
    /// INSECURE: the simulated platform's private key (PKCS#8 DER, as
    /// written by `twinseal attest simulate`), with `--tee simulated`.
    #[arg(long, value_name = "FILE")]
    pub insecure_simulated_platform_key: Option<PathBuf>,
    /// The simulated platform's id (placement refers to it as `simulated:ID`).
    #[arg(long, default_value = "simulated-dev")]
    pub insecure_simulated_platform_id: String,
    /// The sealed enrolment gallery (created on the first enrolment); enables
    /// /v1/enroll and /v1/verify.
    #[arg(long, value_name = "FILE", requires = "gallery_key")]
    pub gallery: Option<PathBuf>,
    /// The coordinator key the gallery is sealed under.
    #[arg(long, value_name = "KEY")]
    pub gallery_key: Option<String>,
    /// INSECURE, for a public demo: answer /v1/compare without client
    /// credentials. embed, verify, identify and enroll still need a client
    /// token with that permission (`[apps.<app>.clients]` in the manifest).
    #[arg(long)]
    pub insecure_public_compare: bool,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = twinseal_worker::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Also run workflow jobs of this app: claim queued runs from the
    /// coordinator, read sealed inputs from and write sealed results to
    /// this object store (a directory or file:// URL).
    #[arg(long, value_name = "DIR|URL")]
    pub jobs: Option<String>,
    /// Seconds between polls for queued workflow runs.
    #[arg(long, default_value_t = 2, requires = "jobs")]
    pub poll_secs: u64,
}

pub fn run(cmd: WorkerCommand) -> Result<()> {
    match cmd {
        WorkerCommand::Serve(a) => serve(*a),
        WorkerCommand::Measurement => {
            println!(
                "{}",
                hex::encode(twinseal_attest::simulated::executable_measurement()?)
            );
            Ok(())
        }
    }
}

fn evidence_source(tee: Tee, key: Option<&Path>, platform_id: &str) -> Result<EvidenceSource> {
    Ok(match tee {
        Tee::Simulated => {
            let path = key.context(
                "--tee simulated needs --insecure-simulated-platform-key (see `twinseal attest simulate`)",
            )?;
            let pkcs8 =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            eprintln!(
                "WARNING: INSECURE simulated TEE: this worker's evidence proves nothing about hardware"
            );
            EvidenceSource::InsecureSimulated {
                platform: SimulatedPlatform::from_pkcs8(&pkcs8, platform_id)?,
                measurement: twinseal_attest::simulated::executable_measurement()?,
            }
        }
        other => {
            let c = Collector::system();
            let found = c
                .detect()
                .context("no TEE interface found (configfs-tsm or /dev/attestation); use --tee simulated for development")?;
            eprintln!("evidence from {found:?}");
            // TDX and SEV-SNP share configfs-tsm; the coordinator checks the
            // evidence's kind against the manifest in any case.
            let matches = matches!(
                (other, &found),
                (Tee::Auto, _)
                    | (Tee::Sgx, TeeInterface::GramineSgx)
                    | (Tee::Tdx | Tee::Snp, TeeInterface::ConfigFsTsm)
            );
            ensure!(
                matches,
                "--tee {other:?} asked for, but this machine offers {found:?}"
            );
            EvidenceSource::Collector(c)
        }
    })
}

fn serve(a: ServeArgs) -> Result<()> {
    let root =
        std::fs::read_to_string(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
    let sealed = a
        .model
        .as_deref()
        .map(|m| std::fs::read(m).with_context(|| format!("reading {}", m.display())))
        .transpose()?;
    let names = if a.names.is_empty() {
        vec![a.listen.ip().to_string()]
    } else {
        a.names.clone()
    };
    if a.insecure_public_compare {
        eprintln!(
            "WARNING: INSECURE: --insecure-public-compare: /v1/compare answers anyone who reaches this worker"
        );
    }
    let opts = WorkerOptions {
        coordinator_url: a.coordinator.clone(),
        coordinator_root_pem: root,
        app: a.app.clone(),
        names,
        model_key: a.model_key.clone(),
        sealed_model: sealed,
        model_context: crate::seal::parse_context(&a.model_context)?,
        evidence: evidence_source(
            a.tee,
            a.insecure_simulated_platform_key.as_deref(),
            &a.insecure_simulated_platform_id,
        )?,
        limits: Limits {
            max_body_bytes: a.max_body_bytes,
            ..Limits::default()
        },
        gallery: a.gallery.clone().map(|path| GalleryOptions {
            path,
            key: a.gallery_key.clone().unwrap_or_default(),
        }),
        insecure_public_compare: a.insecure_public_compare,
        renew_before: None,
    };
    let store = a
        .jobs
        .as_deref()
        .map(twinseal_worker::jobs::open_store)
        .transpose()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let worker = Worker::start(opts).await?;
        if let Some(store) = store {
            let w = worker.clone();
            let poll = std::time::Duration::from_secs(a.poll_secs.max(1));
            eprintln!(
                "running workflow jobs of {} (object store {})",
                a.app,
                a.jobs.as_deref().unwrap_or_default()
            );
            tokio::spawn(async move { w.run_jobs(store, poll, std::future::pending()).await });
        }
        let state = worker.state();
        let info = state.attestation();
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        eprintln!(
            "worker {} serving https://{} ({}; certificate {} until {}; {})",
            a.app,
            a.listen,
            if info.simulated {
                "SIMULATED TEE, INSECURE".to_string()
            } else {
                info.tee.clone()
            },
            info.serial,
            info.not_after,
            match state.model() {
                Some(_) => format!("model sha256 {}", state.model_sha256()),
                None => "a trainer: no model, workflow jobs only".to_string(),
            }
        );
        worker
            .serve(listener, twinseal_coordinator::tls::shutdown_signal())
            .await?;
        Ok(())
    })
}

/// How a client reaches a worker.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerClientArgs {
    /// The worker's URL (`https://host:port`).
    #[arg(long, env = "TWINSEAL_WORKER")]
    pub worker: Option<String>,
    /// The coordinator's root certificate (PEM) that the worker's certificate must chain to.
    #[arg(long, env = "TWINSEAL_CA", value_name = "ROOT.pem")]
    pub ca: Option<PathBuf>,
    /// INSECURE: accept a worker whose certificate was issued on simulated-TEE evidence.
    #[arg(long)]
    pub allow_simulated: bool,
    /// File holding the client's bearer token (a user with the `client`
    /// role that the manifest lets call this worker's app). Without it, the
    /// token is read from the TWINSEAL_TOKEN environment variable.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl WorkerClientArgs {
    /// The client token: from `--token-file`, else `TWINSEAL_TOKEN`.
    pub fn token(&self) -> Result<Option<zeroize::Zeroizing<String>>> {
        if let Some(p) = &self.token_file {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("reading the token file {}", p.display()))?;
            return Ok(Some(zeroize::Zeroizing::new(t.trim().to_string())));
        }
        Ok(std::env::var("TWINSEAL_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| zeroize::Zeroizing::new(t.trim().to_string())))
    }
}

/// A connection to one worker: TLS pinned to the coordinator's root, with
/// the client's bearer token (if any) on every request.
pub struct WorkerClient {
    http: reqwest::Client,
    url: String,
    token: Option<zeroize::Zeroizing<String>>,
}

impl WorkerClient {
    pub fn new(args: &WorkerClientArgs) -> Result<WorkerClient> {
        let url = args
            .worker
            .clone()
            .context("no worker: give --worker URL or set TWINSEAL_WORKER")?;
        let ca = args
            .ca
            .as_deref()
            .context("no root certificate: give --ca ROOT.pem or set TWINSEAL_CA")?;
        let root =
            std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
        if args.allow_simulated {
            eprintln!("WARNING: INSECURE: accepting a simulated-TEE worker (--allow-simulated)");
        }
        Ok(Self::with_root(&url, &root, args.allow_simulated)?.with_token(args.token()?))
    }

    /// Send `token` as the bearer token of every request.
    pub fn with_token(mut self, token: Option<zeroize::Zeroizing<String>>) -> WorkerClient {
        self.token = token;
        self
    }

    pub fn with_root(url: &str, root_pem: &str, allow_simulated: bool) -> Result<WorkerClient> {
        let cfg = twinseal_worker::WorkerCertVerifier::from_root_pem(root_pem, allow_simulated)?
            .client_config()?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .tls_info(true)
            .build()?;
        Ok(WorkerClient {
            http,
            url: url.trim_end_matches('/').to_string(),
            token: None,
        })
    }

    /// POST `body` to `path` with the client's token; the answer and the
    /// DER certificate of the worker that served it.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(T, Vec<u8>)> {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.as_str());
        }
        let resp = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the worker at {} over TLS pinned to the coordinator's root: {}",
                self.url,
                error_chain(&e)
            )
        })?;
        let cert = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec)
            .context("the worker presented no certificate")?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<api::ErrorBody>(&bytes)
                .map(|e| format!("{}: {}", e.kind, e.detail))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("the worker answered {status}: {detail}");
        }
        Ok((serde_json::from_slice(&bytes)?, cert))
    }

    /// [`WorkerClient::post`], then the receipt checked against the
    /// certificate that served it, and bound to this exchange: its
    /// operation is the path's, its inputs digest is that of the images
    /// sent, and its signed output is the answer received.
    pub async fn post_verified<B, T>(&self, path: &str, body: &B) -> Result<T>
    where
        B: Serialize + SignedInputs,
        T: DeserializeOwned + HasReceipt,
    {
        let (r, cert): (T, _) = self.post(path, body).await?;
        check_receipt(r.receipt(), &cert)?;
        let receipt = r.receipt();
        let operation = match path {
            "/v1/compare" => "compare",
            "/v1/compare/batch" => "compare_batch",
            "/v1/embed" => "embed",
            "/v1/enroll" => "enroll",
            "/v1/verify" => "verify",
            other => bail!("no receipt is defined for {other}"),
        };
        ensure!(
            receipt.operation == operation,
            "the receipt is for {:?}, not {operation:?}",
            receipt.operation
        );
        ensure!(
            receipt.inputs_sha256 == inputs_sha256(&body.images())?,
            "the receipt names other inputs than the ones sent"
        );
        ensure!(
            r.output_matches()?,
            "the receipt's signed output differs from the answer received"
        );
        Ok(r)
    }
}

/// The receipt inputs digest of `images` as the worker computes it (the
/// decoded bytes, with their kind).
fn inputs_sha256(images: &[&api::ImageWire]) -> Result<String> {
    let decoded = images
        .iter()
        .map(|w| {
            let (kind, b64) = match w {
                api::ImageWire::Png(s) | api::ImageWire::Jpeg(s) => {
                    (twinseal_worker::receipt::InputKind::Encoded, s)
                }
                api::ImageWire::Raw(s) => (twinseal_worker::receipt::InputKind::Raw, s),
            };
            Ok((
                kind,
                B64.decode(b64).context("an image sent is not base64")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(twinseal_worker::receipt::inputs_digest(
        decoded.iter().map(|(k, b)| (*k, b.as_slice())),
    ))
}

/// Requests whose receipts name their images.
pub trait SignedInputs {
    /// The images, in the order the receipt digests them.
    fn images(&self) -> Vec<&api::ImageWire>;
}

impl SignedInputs for api::CompareRequest {
    fn images(&self) -> Vec<&api::ImageWire> {
        vec![&self.a, &self.b]
    }
}

impl SignedInputs for api::CompareBatchRequest {
    fn images(&self) -> Vec<&api::ImageWire> {
        self.pairs.iter().flat_map(|p| [&p.a, &p.b]).collect()
    }
}

impl SignedInputs for api::EnrollRequest {
    fn images(&self) -> Vec<&api::ImageWire> {
        self.images.iter().collect()
    }
}

impl SignedInputs for api::VerifyRequest {
    fn images(&self) -> Vec<&api::ImageWire> {
        vec![&self.probe]
    }
}

/// Answers that carry a receipt.
pub trait HasReceipt {
    fn receipt(&self) -> &api::Receipt;
    /// Whether the receipt's signed output is the answer's result (both
    /// read as the result type, so that numbers compare as the worker
    /// computed them).
    fn output_matches(&self) -> Result<bool>;
}

macro_rules! has_receipt {
    ($($t:ty => $r:ty),*) => {$(
        impl HasReceipt for $t {
            fn receipt(&self) -> &api::Receipt {
                &self.receipt
            }
            fn output_matches(&self) -> Result<bool> {
                let signed: $r = serde_json::from_str(&self.receipt.output)
                    .context("the receipt's output is not the operation's result")?;
                Ok(serde_json::to_string(&signed)? == serde_json::to_string(&self.result)?)
            }
        }
    )*};
}
has_receipt!(
    api::CompareResponse => api::CompareResult,
    api::CompareBatchResponse => api::CompareBatchResult,
    api::EmbedResponse => api::EmbedResult,
    api::EnrollResponse => api::EnrollResult,
    api::VerifyResponse => api::VerifyResult
);

/// Runs one client call to completion on a small runtime of its own.
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Checks a receipt against the certificate that served it.
pub fn check_receipt(receipt: &api::Receipt, cert_der: &[u8]) -> Result<()> {
    ensure!(
        receipt.certificate_sha256 == hex::encode(Sha256::digest(cert_der)),
        "the receipt names another certificate than the one that served it"
    );
    twinseal_worker::verify_receipt(receipt, cert_der).context("the receipt does not verify")?;
    Ok(())
}

/// An image file as the worker takes it: PNG/JPEG as sent; anything else
/// as raw grey pixels (the worker checks the size).
pub fn image_wire(path: &Path) -> Result<api::ImageWire> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(if bytes.starts_with(b"\x89PNG") {
        api::ImageWire::Png(B64.encode(&bytes))
    } else if bytes.starts_with(&[0xff, 0xd8]) {
        api::ImageWire::Jpeg(B64.encode(&bytes))
    } else {
        api::ImageWire::Raw(B64.encode(&bytes))
    })
}

/// `twinseal compare --worker URL A B`.
pub fn compare_remote(args: &WorkerClientArgs, a: &Path, b: &Path, json: bool) -> Result<()> {
    let client = WorkerClient::new(args)?;
    let req = api::CompareRequest {
        a: image_wire(a)?,
        b: image_wire(b)?,
    };
    let r: api::CompareResponse = block_on(client.post_verified("/v1/compare", &req))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{}  probability {:.4}  distance {:.4}  (threshold {:.4})",
            crate::model_cmd::verdict(r.result.verdict == api::Verdict::Similar),
            r.result.probability,
            r.result.distance,
            r.result.threshold
        );
        print_receipt(&r.receipt);
    }
    Ok(())
}

fn print_receipt(r: &api::Receipt) {
    println!(
        "receipt verified: {} at {}, model sha256 {}, evidence sha256 {}, certificate sha256 {}",
        r.operation,
        r.time,
        &r.model_sha256[..16],
        &r.evidence_sha256[..16],
        &r.certificate_sha256[..16]
    );
}

/// `twinseal enroll`.
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub worker: WorkerClientArgs,
    /// The identity to enrol the images under.
    #[arg(long)]
    pub identity: String,
    /// Reference images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run_enroll(a: EnrollArgs) -> Result<()> {
    let client = WorkerClient::new(&a.worker)?;
    let req = api::EnrollRequest {
        identity: a.identity,
        images: a
            .images
            .iter()
            .map(|p| image_wire(p))
            .collect::<Result<_>>()?,
    };
    let r: api::EnrollResponse = block_on(client.post_verified("/v1/enroll", &req))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "enrolled {} image(s) as {:?}: {} reference(s); {} identities in the gallery",
            r.result.enrolled, r.result.identity, r.result.references, r.result.identities
        );
        print_receipt(&r.receipt);
    }
    Ok(())
}

/// `twinseal verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub worker: WorkerClientArgs,
    /// The claimed identity (1:1); without it, search the gallery (1:N).
    #[arg(long)]
    pub identity: Option<String>,
    /// How many best matches a search shows.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// The probe image.
    pub probe: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run_verify(a: VerifyArgs) -> Result<()> {
    let client = WorkerClient::new(&a.worker)?;
    let req = api::VerifyRequest {
        probe: image_wire(&a.probe)?,
        identity: a.identity,
        top: Some(a.top),
    };
    let r: api::VerifyResponse = block_on(client.post_verified("/v1/verify", &req))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    match (&r.result.identity, r.result.matched) {
        (Some(id), true) => println!("MATCH: {id}"),
        (Some(id), false) => println!("NO MATCH: the probe is not {id}"),
        (None, _) => println!("NO MATCH in the gallery"),
    }
    for m in &r.result.matches {
        println!(
            "  {:<24} {}  probability {:.4}  distance {:.4}",
            m.identity,
            crate::model_cmd::verdict(m.result.verdict == api::Verdict::Similar),
            m.result.probability,
            m.result.distance
        );
    }
    print_receipt(&r.receipt);
    Ok(())
}
