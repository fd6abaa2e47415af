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
    Ok(WorkerClient::with_root(&url, &root, args.allow_simulated)?.with_token(args.token()?))
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
