//! The worker's command line (`twinseal-worker serve|measurement`, also
//! `twinseal worker ...`): the options of a deployment, where the evidence
//! comes from, and serving until a signal. Built with the `bin` feature.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};
use twinseal_attest::collect::{Collector, TeeInterface};
use twinseal_envelope::Context;

use crate::{EvidenceSource, GalleryOptions, Limits, Worker, WorkerOptions};

/// Log to stderr: `TWINSEAL_LOG` if set, else warnings, and more with
/// each `-v` (info, debug, trace). The `twinseal` binary logs the same way.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWINSEAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Parse repeated `KEY=VALUE` encryption-context pairs.
pub fn parse_context(pairs: &[String]) -> Result<Context> {
    let mut context = Context::new();
    for pair in pairs {
        let (key, value) = Context::parse_pair(pair)?;
        context.insert(key, value)?;
    }
    Ok(context)
}

/// `twinseal-worker ...` (and `twinseal worker ...`).
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

/// The options of `serve`.
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
    /// The sealed model: a file, or an object `s3://BUCKET/PATH` (S3
    /// settings from the environment as for --gallery). Without it the
    /// worker is a trainer: it runs the workflow jobs of its app (needs
    /// --jobs) and serves no model.
    #[arg(long, value_name = "SEALED_MODEL", required_unless_present = "jobs")]
    pub model: Option<String>,
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
    /// /v1/enroll and /v1/verify. A file, or `s3://BUCKET/PATH/NAME.sealed`
    /// for one gallery shared by every worker of the app (S3 endpoint and
    /// credentials from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY).
    #[arg(long, value_name = "FILE|S3_URL", requires = "gallery_key")]
    pub gallery: Option<String>,
    /// The coordinator key the gallery is sealed under.
    #[arg(long, value_name = "KEY")]
    pub gallery_key: Option<String>,
    /// INSECURE, for a public demo: answer /v1/compare without client
    /// credentials. embed, verify, identify and enroll still need a client
    /// token with that permission (`[apps.<app>.clients]` in the manifest).
    #[arg(long)]
    pub insecure_public_compare: bool,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = crate::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Requests per second each client may send, sustained; its burst is
    /// twice that.
    #[arg(long, default_value_t = crate::clients::DEFAULT_CLIENT_REQUESTS_PER_SECOND)]
    pub client_requests_per_second: f64,
    /// Also run workflow jobs of this app: claim queued runs from the
    /// coordinator, read sealed inputs from and write sealed results to
    /// this object store (a directory, a file:// URL, or s3://BUCKET/PREFIX
    /// with the S3 settings from the environment as for --gallery).
    #[arg(long, value_name = "DIR|URL")]
    pub jobs: Option<String>,
    /// Seconds between polls for queued workflow runs.
    #[arg(long, default_value_t = 2, requires = "jobs")]
    pub poll_secs: u64,
}

/// Run a worker command.
pub fn run(cmd: WorkerCommand) -> Result<()> {
    match cmd {
        WorkerCommand::Serve(a) => serve(*a),
        WorkerCommand::Measurement => {
            println!(
                "{}",
                hex::encode(twinseal_attest::measure::executable_measurement()?)
            );
            Ok(())
        }
    }
}

#[cfg(not(feature = "insecure-simulated-tee"))]
fn simulated_source(_key: Option<&Path>, _platform_id: &str) -> Result<EvidenceSource> {
    anyhow::bail!(
        "this twinseal-worker was built without the simulated TEE (cargo feature \
         `insecure-simulated-tee`), so it cannot produce simulated evidence: run it in a TEE \
         (--tee auto|sgx|tdx|snp), or use a development build (`twinseal worker serve`, or \
         `cargo build -p twinseal-worker --features bin,insecure-simulated-tee`)"
    )
}

#[cfg(feature = "insecure-simulated-tee")]
fn simulated_source(key: Option<&Path>, platform_id: &str) -> Result<EvidenceSource> {
    let path = key.context(
        "--tee simulated needs --insecure-simulated-platform-key (see `twinseal attest simulate`)",
    )?;
    let pkcs8 = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    eprintln!(
        "WARNING: INSECURE simulated TEE: this worker's evidence proves nothing about hardware"
    );
    Ok(EvidenceSource::InsecureSimulated {
        platform: twinseal_attest::SimulatedPlatform::from_pkcs8(&pkcs8, platform_id)?,
        measurement: twinseal_attest::measure::executable_measurement()?,
    })
}

fn evidence_source(tee: Tee, key: Option<&Path>, platform_id: &str) -> Result<EvidenceSource> {
    Ok(match tee {
        Tee::Simulated => simulated_source(key, platform_id)?,
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

/// `serve`: attest, open the model, serve until Ctrl-C or SIGTERM.
pub fn serve(a: ServeArgs) -> Result<()> {
    ensure!(
        a.client_requests_per_second.is_finite() && a.client_requests_per_second > 0.0,
        "--client-requests-per-second must be a positive number"
    );
    let root =
        std::fs::read_to_string(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
    let rt = tokio::runtime::Runtime::new()?;
    let sealed = match a.model.as_deref() {
        Some(m) if m.starts_with("s3://") => Some(rt.block_on(read_object(m))?),
        Some(m) => Some(std::fs::read(m).with_context(|| format!("reading {m}"))?),
        None => None,
    };
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
        model_context: parse_context(&a.model_context)?,
        evidence: evidence_source(
            a.tee,
            a.insecure_simulated_platform_key.as_deref(),
            &a.insecure_simulated_platform_id,
        )?,
        limits: Limits {
            max_body_bytes: a.max_body_bytes,
            client_requests_per_second: a.client_requests_per_second,
            client_burst: (2.0 * a.client_requests_per_second).clamp(1.0, u32::MAX as f64) as u32,
            ..Limits::default()
        },
        gallery: a
            .gallery
            .as_deref()
            .map(|g| -> Result<GalleryOptions> {
                Ok(GalleryOptions {
                    location: crate::GalleryLocation::parse(g)?,
                    key: a.gallery_key.clone().unwrap_or_default(),
                })
            })
            .transpose()?,
        insecure_public_compare: a.insecure_public_compare,
        renew_before: None,
    };
    let store = a.jobs.as_deref().map(crate::jobs::open_store).transpose()?;
    rt.block_on(async move {
        if let (Some(store), Some(location)) = (&store, a.jobs.as_deref()) {
            crate::jobs::check_store(store.as_ref(), location).await?;
        }
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
            .serve(listener, twinseal_net::serve::shutdown_signal())
            .await?;
        Ok(())
    })
}

/// Largest sealed model read from an object store, bytes.
const MAX_MODEL_OBJECT_BYTES: u64 = 4 << 30;

/// Reads an object `s3://BUCKET/PATH` whole.
async fn read_object(url: &str) -> Result<Vec<u8>> {
    let rest = url.strip_prefix("s3://").unwrap_or(url);
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    ensure!(
        !bucket.is_empty() && !path.is_empty(),
        "{url}: name the object, s3://BUCKET/PATH"
    );
    let store = crate::jobs::open_store(&format!("s3://{bucket}"))?;
    crate::jobs::check_store(store.as_ref(), url).await?;
    let r = crate::jobs::open_object(store.as_ref(), path, url, MAX_MODEL_OBJECT_BYTES).await?;
    Ok(r.bytes()
        .await
        .with_context(|| format!("reading {url}"))?
        .to_vec())
}
