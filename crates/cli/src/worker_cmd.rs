//! `twinseal worker serve` (the attested app, from the worker's own
//! command line) and the client side of the worker: `twinseal compare --worker`, `twinseal enroll`, `twinseal verify`.
//! Clients pin the coordinator's root, refuse simulated-TEE certificates
//! unless told otherwise, and verify every answer's signed receipt against
//! the certificate that served it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use twinseal_api as api;

/// `twinseal worker ...`: the worker's own command line
/// ([`twinseal_worker::cli`], the same as the `twinseal-worker` binary's).
pub use twinseal_worker::cli::{WorkerCommand, run};

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
    /// Release transparency: the coordinator's audit log key (C2SP vkey
    /// text or a file such as DATA_DIR/audit.pub). With it, before sending
    /// any data the client checks that the worker's attested measurement
    /// was logged as approved, under a checkpoint cosigned by --witness-quorum
    /// of the --witness keys, not older than --max-checkpoint-age-hours.
    #[arg(long, env = "TWINSEAL_LOG_KEY", value_name = "PUBKEY")]
    pub log_key: Option<String>,
    /// A witness whose cosignature counts (cosigner vkey text or a file);
    /// repeat, or comma-separate in TWINSEAL_WITNESSES.
    #[arg(
        long = "witness",
        env = "TWINSEAL_WITNESSES",
        value_delimiter = ',',
        value_name = "PUBKEY"
    )]
    pub witnesses: Vec<String>,
    /// How many of the witnesses must have cosigned (default: all given).
    #[arg(long, env = "TWINSEAL_WITNESS_QUORUM")]
    pub witness_quorum: Option<usize>,
    /// The oldest acceptable witnessed checkpoint, hours.
    #[arg(
        long,
        env = "TWINSEAL_MAX_CHECKPOINT_AGE_HOURS",
        default_value_t = 24.0
    )]
    pub max_checkpoint_age_hours: f64,
}

impl WorkerClientArgs {
    /// The release-transparency policy, when a log key is given.
    pub fn release_policy(&self) -> Result<Option<twinseal_audit::ReleasePolicy>> {
        let Some(key) = &self.log_key else {
            return Ok(None);
        };
        let read = |v: &str| -> Result<String> {
            Ok(if Path::new(v).is_file() {
                std::fs::read_to_string(v).with_context(|| format!("reading {v}"))?
            } else {
                v.to_string()
            })
        };
        let log_key = read(key)?.trim().parse().context("invalid --log-key")?;
        let witnesses = self
            .witnesses
            .iter()
            .filter(|w| !w.trim().is_empty())
            .map(|w| {
                read(w)?
                    .trim()
                    .parse::<twinseal_audit::CosignerKey>()
                    .with_context(|| format!("invalid witness key {w}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let quorum = self.witness_quorum.unwrap_or(witnesses.len());
        if quorum > witnesses.len() {
            anyhow::bail!(
                "--witness-quorum {quorum} is more than the {} witnesses given",
                witnesses.len()
            );
        }
        if quorum == 0 {
            eprintln!(
                "WARNING: release transparency without witnesses: a coordinator that shows clients a log of its own is not detected"
            );
        }
        Ok(Some(twinseal_audit::ReleasePolicy {
            log_key,
            witnesses,
            quorum,
            max_age: std::time::Duration::from_secs_f64(
                (self.max_checkpoint_age_hours.max(0.0)) * 3600.0,
            ),
        }))
    }

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

/// The worker client (the transport's: [`twinseal_net::worker_client`]).
pub use twinseal_net::worker_client::{HasReceipt, SignedInputs, WorkerClient, check_receipt};

/// A worker client from the command line's options.
pub fn worker_client(args: &WorkerClientArgs) -> Result<WorkerClient> {
    let url = args
        .worker
        .clone()
        .context("no worker: give --worker URL or set TWINSEAL_WORKER")?;
    let ca = args
        .ca
        .as_deref()
        .context("no root certificate: give --ca ROOT.pem or set TWINSEAL_CA")?;
    let root = std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    if args.allow_simulated {
        eprintln!("WARNING: INSECURE: accepting a simulated-TEE worker (--allow-simulated)");
    }
    if let Some(policy) = args.release_policy()? {
        // A client of its own for the check: reqwest's pooled connections
        // belong to the runtime that made them.
        let checker = WorkerClient::with_root(&url, &root, args.allow_simulated)?;
        let (info, cert) = block_on(checker.info())?;
        let approval = check_worker_release(&info, &cert, &policy, std::time::SystemTime::now())?;
        eprintln!(
            "release transparency: measurement approved by manifest version {} (log entry {}, checkpoint of {} entries, {} cosignatures)",
            approval.manifest_version,
            approval.index,
            approval.checkpoint_size,
            approval.cosignatures
        );
    }
    Ok(WorkerClient::with_root(&url, &root, args.allow_simulated)?.with_token(args.token()?))
}

/// Release transparency, before any data goes to a worker: the app, TEE
/// kind and measurement of the certificate that served `info` (the
/// measurement read from the evidence the certificate carries), approved
/// by the log entry the certificate names, included under a checkpoint
/// the policy accepts.
pub fn check_worker_release(
    info: &api::WorkerInfo,
    cert_der: &[u8],
    policy: &twinseal_audit::ReleasePolicy,
    now: std::time::SystemTime,
) -> Result<twinseal_audit::Approval> {
    let proof = info.transparency.as_ref().ok_or_else(|| {
        anyhow::anyhow!("refusing the worker: it serves no proof of its approval in the log (yet)")
    })?;
    check_release_proof(proof, cert_der, policy, now)
}

/// [`check_worker_release`] with the proof at hand (a saved /v1/info).
pub fn check_release_proof(
    proof: &api::LogProof,
    cert_der: &[u8],
    policy: &twinseal_audit::ReleasePolicy,
    now: std::time::SystemTime,
) -> Result<twinseal_audit::Approval> {
    let refuse = |why: &str| anyhow::anyhow!("refusing the worker: {why}");
    let app = twinseal_net::tls::app_of_certificate(cert_der)
        .ok_or_else(|| refuse("its certificate names no app"))?;
    let carried = twinseal_attest::cert::extract(cert_der)
        .map_err(|e| refuse(&format!("its certificate carries no evidence: {e}")))?;
    let measurement = carried
        .evidence
        .unverified_measurement()
        .ok_or_else(|| refuse("its evidence is too short to hold a measurement"))?;
    let (_, log_index) = twinseal_net::tls::transparency_claims(cert_der).ok_or_else(|| {
        refuse("its certificate names no log entry approving its measurement (issued before release transparency, or by a coordinator that does not log releases)")
    })?;
    let attested = twinseal_audit::Attested {
        app,
        tee: carried.evidence.kind().as_str().to_string(),
        measurement: hex::encode(measurement),
        log_index: Some(log_index),
    };
    let proof = twinseal_audit::ApprovalProof {
        index: proof.index,
        entry: proof.entry.clone(),
        proof: proof.proof.clone(),
        checkpoint: proof.checkpoint.clone(),
    };
    twinseal_audit::check_approval(&proof, &attested, policy, now)
        .map_err(|e| refuse(&e.to_string()))
}

/// Runs one client call to completion on a small runtime of its own.
fn block_on<T, E>(f: impl std::future::Future<Output = std::result::Result<T, E>>) -> Result<T>
where
    anyhow::Error: From<E>,
{
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)?)
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
    let client = worker_client(args)?;
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
    let client = worker_client(&a.worker)?;
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
    let client = worker_client(&a.worker)?;
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
