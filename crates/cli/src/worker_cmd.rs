//! `twinseal worker serve` (the attested app, from the worker's own
//! command line) and the client side of the worker: `twinseal compare --worker`, `twinseal enroll`, `twinseal verify`.
//! Clients pin the coordinator's root, refuse simulated-TEE certificates
//! unless told otherwise, and verify every answer's signed receipt against
//! the certificate that served it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
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
        let cfg =
            twinseal_net::tls::PeerVerifier::worker(root_pem, allow_simulated)?.client_config()?;
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
