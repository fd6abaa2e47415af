//! Starting a worker: attest, obtain the certificate and the model key,
//! open the sealed model in memory.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use twinseal_api as api;
#[cfg(feature = "insecure-simulated-tee")]
use twinseal_attest::SimulatedPlatform;
use twinseal_attest::collect::Collector;
use twinseal_envelope::{Context, Kek, KeyId, SecretKey};
use twinseal_net::client::Client;
use twinseal_siamese::PairModel;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::gallery::Gallery;
use crate::receipt::ReceiptSigner;

/// Default largest request body, bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;
/// Default request timeout, seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default number of requests served at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;
/// Default largest number of images in one `embed` request.
pub const DEFAULT_MAX_IMAGES: usize = 256;
/// Default largest number of pairs in one `compare/batch` request.
pub const DEFAULT_MAX_PAIRS: usize = 1024;

/// Default pixel budget of one request: 32 Mpixel (e.g. 256 images of
/// 350x350, or two of 4000x4000).
pub const DEFAULT_MAX_PIXELS_PER_REQUEST: u64 = 32 << 20;

/// Where the worker's attestation evidence comes from.
pub enum EvidenceSource {
    /// The simulated TEE (INSECURE: no hardware guarantee; the coordinator
    /// accepts it only when configured to, and marks the certificate).
    /// Only in builds with the `insecure-simulated-tee` feature.
    #[cfg(feature = "insecure-simulated-tee")]
    InsecureSimulated {
        /// The simulated platform (its key must be trusted by the coordinator).
        platform: SimulatedPlatform,
        /// The measurement to claim.
        measurement: [u8; 48],
    },
    /// A real TEE through its evidence interface (configfs-tsm, Gramine).
    Collector(Collector),
}

impl std::fmt::Debug for EvidenceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "insecure-simulated-tee")]
            EvidenceSource::InsecureSimulated { measurement, .. } => f
                .debug_struct("InsecureSimulated")
                .field("measurement", &hex::encode(measurement))
                .finish_non_exhaustive(),
            EvidenceSource::Collector(c) => f.debug_tuple("Collector").field(c).finish(),
        }
    }
}

/// Serving limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Request timeout, seconds.
    pub request_timeout_secs: u64,
    /// Requests served at once.
    pub max_concurrent_requests: usize,
    /// Images in one `embed` request.
    pub max_images: usize,
    /// Pairs in one `compare/batch` request.
    pub max_pairs: usize,
    /// Pixels the images of one request may decode to, all together
    /// (checked from their headers before anything is decoded).
    pub max_pixels_per_request: u64,
    /// The accept loop's connection caps and timeouts.
    pub connections: twinseal_net::serve::ConnLimits,
    /// Requests per second, sustained, one client may send.
    pub client_requests_per_second: f64,
    /// Requests one client may send at once before the rate applies.
    pub client_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_images: DEFAULT_MAX_IMAGES,
            max_pairs: DEFAULT_MAX_PAIRS,
            max_pixels_per_request: DEFAULT_MAX_PIXELS_PER_REQUEST,
            connections: Default::default(),
            client_requests_per_second: crate::clients::DEFAULT_CLIENT_REQUESTS_PER_SECOND,
            client_burst: crate::clients::DEFAULT_CLIENT_BURST,
        }
    }
}

/// Where the worker keeps its enrolment gallery, sealed under a
/// coordinator key (the worker obtains the key by attested release).
#[derive(Clone, Debug)]
pub struct GalleryOptions {
    /// Where the sealed gallery lives; created on the first enrolment.
    pub location: GalleryLocation,
    /// The coordinator key it is sealed under (the app must be allowed it).
    pub key: String,
}

/// Where a sealed gallery lives.
#[derive(Clone)]
pub enum GalleryLocation {
    /// A file of this worker's.
    File(std::path::PathBuf),
    /// An object shared by every worker of the app: enrolments on any
    /// worker are written with optimistic concurrency on the object's
    /// version (retried), and each worker reloads the object when it
    /// changed, every `refresh`.
    Shared {
        /// The object store.
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        /// The object's path in it.
        path: String,
        /// How often to look for other workers' enrolments.
        refresh: std::time::Duration,
        /// The location as given, for messages.
        display: String,
    },
}

impl std::fmt::Debug for GalleryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GalleryLocation::File(p) => write!(f, "File({})", p.display()),
            GalleryLocation::Shared { display, .. } => write!(f, "Shared({display})"),
        }
    }
}

impl std::fmt::Display for GalleryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GalleryLocation::File(p) => write!(f, "{}", p.display()),
            GalleryLocation::Shared { display, .. } => f.write_str(display),
        }
    }
}

/// How often a shared gallery is checked for other workers' enrolments.
pub const DEFAULT_GALLERY_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

impl GalleryLocation {
    /// A location from the command line: `s3://BUCKET/PATH/NAME.sealed` (a
    /// shared gallery) or a file path.
    pub fn parse(location: &str) -> Result<GalleryLocation> {
        match location.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() || path.trim_matches('/').is_empty() {
                    return Err(Error::Config(format!(
                        "gallery {location:?}: name the object, s3://BUCKET/PATH/NAME.sealed"
                    )));
                }
                Ok(GalleryLocation::Shared {
                    store: crate::jobs::open_store(&format!("s3://{bucket}"))?,
                    path: path.trim_matches('/').to_string(),
                    refresh: DEFAULT_GALLERY_REFRESH,
                    display: location.to_string(),
                })
            }
            None if location.contains("://") => Err(Error::Config(format!(
                "gallery {location:?}: give a file path or an s3:// URL"
            ))),
            None => Ok(GalleryLocation::File(location.into())),
        }
    }
}

/// What a worker needs to start. `Debug` shows the sealed model's size,
/// not its bytes.
pub struct WorkerOptions {
    /// The coordinator's base URL (`https://host:port`).
    pub coordinator_url: String,
    /// The coordinator's root certificate, PEM (pinned).
    pub coordinator_root_pem: String,
    /// The app name in the manifest.
    pub app: String,
    /// DNS names and IP addresses the worker's certificate serves.
    pub names: Vec<String>,
    /// The coordinator key the model is sealed under (e.g. `model-key`).
    pub model_key: String,
    /// The sealed model file (an envelope), bytes; `None` starts a
    /// trainer, which serves no model and only runs workflow jobs.
    pub sealed_model: Option<Vec<u8>>,
    /// The encryption context the model was sealed with.
    pub model_context: Context,
    /// The evidence source.
    pub evidence: EvidenceSource,
    /// Serving limits.
    pub limits: Limits,
    /// The enrolment gallery (`/v1/enroll`, `/v1/verify`); `None` disables both.
    pub gallery: Option<GalleryOptions>,
    /// INSECURE, for a public demo: `/v1/compare` (and its batch form)
    /// answers callers without credentials. Every other operation still
    /// needs a client token with its permission. Off by default; warned
    /// about at start and shown in `/v1/info`.
    pub insecure_public_compare: bool,
    /// How long before its certificate expires the worker attests again;
    /// `None`: a third of the certificate's lifetime.
    pub renew_before: Option<Duration>,
}

impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("coordinator_url", &self.coordinator_url)
            .field("app", &self.app)
            .field("names", &self.names)
            .field("model_key", &self.model_key)
            .field(
                "sealed_model_bytes",
                &self.sealed_model.as_ref().map(Vec::len),
            )
            .field("model_context", &self.model_context)
            .field("evidence", &self.evidence)
            .field("limits", &self.limits)
            .field("gallery", &self.gallery)
            .field("insecure_public_compare", &self.insecure_public_compare)
            .field("renew_before", &self.renew_before)
            .finish_non_exhaustive()
    }
}

/// One attested identity of the worker: its certificate, private key
/// (inside the TLS signer and the receipt signer), and a mutual-TLS client
/// to the coordinator. Replaced as a whole when the worker attests again.
pub(crate) struct Identity {
    pub(crate) attest: api::AttestResponse,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) signer: ReceiptSigner,
    pub(crate) certified: Arc<rustls::sign::CertifiedKey>,
    pub(crate) client: Client,
    pub(crate) attested_at: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

impl Identity {
    /// Fails once the certificate has expired (the worker then answers 503
    /// instead of signing receipts with an expired certificate).
    pub(crate) fn check_valid(&self) -> Result<()> {
        if OffsetDateTime::now_utc() >= self.not_after {
            return Err(Error::Unavailable(
                "the worker's certificate has expired and it could not attest again".into(),
            ));
        }
        Ok(())
    }
}

/// How the worker attests (again).
struct Attester {
    anon: Client,
    root_pem: String,
    app: String,
    names: Vec<String>,
    evidence: EvidenceSource,
}

/// A fresh attestation, before the model is known.
struct Attested {
    response: api::AttestResponse,
    cert_der: Vec<u8>,
    key_pkcs8: Zeroizing<Vec<u8>>,
    evidence_sha256: [u8; 32],
    client: Client,
    attested_at: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Attester {
    /// Make a key in memory, collect evidence bound to the coordinator's
    /// challenge and that key, and obtain a certificate and an mTLS client.
    async fn attest(&self) -> Result<Attested> {
        #[cfg(feature = "insecure-simulated-tee")]
        if matches!(self.evidence, EvidenceSource::InsecureSimulated { .. }) {
            tracing::warn!("INSECURE: attesting with the simulated TEE (no hardware guarantee)");
        }
        let attested_at = OffsetDateTime::now_utc();
        let mut evidence_bytes = Vec::new();
        let evidence = &self.evidence;
        let identity = self
            .anon
            .attest(&self.app, &self.names, |rd| {
                let ev = match evidence {
                    #[cfg(feature = "insecure-simulated-tee")]
                    EvidenceSource::InsecureSimulated {
                        platform,
                        measurement,
                    } => platform.attest_with_measurement(
                        measurement,
                        rd,
                        std::time::SystemTime::now(),
                    )?,
                    EvidenceSource::Collector(c) => c.collect(rd)?,
                };
                evidence_bytes = ev.bytes().to_vec();
                Ok(ev)
            })
            .await
            .map_err(Error::Attestation)?;
        let evidence_sha256: [u8; 32] = Sha256::digest(&evidence_bytes).into();
        let cert_der = crate::tls::root_der_from_pem(&identity.response.certificate)
            .map_err(|_| Error::Crypto("the coordinator's certificate is not PEM".into()))?;
        let not_after = OffsetDateTime::parse(&identity.response.not_after, &Rfc3339)
            .map_err(|_| Error::Crypto("the certificate's expiry is not RFC 3339".into()))?;
        tracing::info!(
            app = %self.app,
            serial = %identity.response.serial,
            not_after = %identity.response.not_after,
            simulated = identity.response.simulated,
            "attested; certificate issued"
        );
        let client = self
            .anon
            .with_identity(&self.root_pem, identity.identity())
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Attested {
            response: identity.response,
            cert_der,
            key_pkcs8: identity.key_pkcs8,
            evidence_sha256,
            client,
            attested_at,
            not_after,
        })
    }
}

impl Attested {
    fn into_identity(self, root_der: &[u8], model_sha256: [u8; 32]) -> Result<Identity> {
        let signer = ReceiptSigner::new(
            &self.key_pkcs8,
            &self.cert_der,
            model_sha256,
            self.evidence_sha256,
        )?;
        let certified = crate::tls::certified_key(&self.cert_der, root_der, &self.key_pkcs8)?;
        Ok(Identity {
            attest: self.response,
            cert_der: self.cert_der,
            signer,
            certified,
            client: self.client,
            attested_at: self.attested_at,
            not_after: self.not_after,
        })
    }
}

/// How often a worker fetches a fresh proof of its approval (clients
/// refuse checkpoints older than they allow, 24 h by default).
const TRANSPARENCY_REFRESH: Duration = Duration::from_secs(60);

/// A started worker's state: its model, its current attested identity,
/// its gallery.
pub struct WorkerState {
    pub(crate) model: Option<Box<dyn PairModel>>,
    /// One permit per core for model work on the blocking pool, held
    /// until the work ends.
    pub(crate) compute: twinseal_net::guard::CpuPool,
    pub(crate) limits: Limits,
    pub(crate) gallery: Option<Gallery>,
    pub(crate) clients: crate::clients::ClientAuth,
    app: String,
    root_der: Vec<u8>,
    model_sha256: [u8; 32],
    identity: RwLock<Arc<Identity>>,
    attester: Attester,
    renew_before: Option<Duration>,
    /// The log entry that approved this worker's measurement, with its
    /// inclusion proof under a (cosigned) checkpoint: served in
    /// `/v1/info` for clients to check (release transparency).
    transparency: RwLock<Option<api::LogProof>>,
}

impl std::fmt::Debug for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.identity();
        f.debug_struct("WorkerState")
            .field("app", &self.app)
            .field("serial", &id.attest.serial)
            .field("signer", &id.signer)
            .finish_non_exhaustive()
    }
}

/// The shared state of the worker's router.
pub type AppState = Arc<WorkerState>;

impl WorkerState {
    /// The app name.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The loaded model; `None` for a trainer (a worker started without
    /// a model, which only runs workflow jobs).
    pub fn model(&self) -> Option<&dyn PairModel> {
        self.model.as_deref()
    }

    /// The model, or 503 for a trainer.
    pub(crate) fn served(&self) -> Result<&dyn PairModel> {
        self.model().ok_or_else(|| {
            Error::Unavailable(
                "this worker is a trainer: it runs workflow jobs and serves no model".into(),
            )
        })
    }

    pub(crate) fn identity(&self) -> Arc<Identity> {
        self.identity
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The coordinator's answer to the current attestation (certificate
    /// PEM, serial, expiry, TEE, measurement).
    pub fn attestation(&self) -> api::AttestResponse {
        self.identity().attest.clone()
    }

    /// The worker's current certificate, DER.
    pub fn certificate_der(&self) -> Vec<u8> {
        self.identity().cert_der.clone()
    }

    /// The worker's current certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        self.identity().attest.certificate.clone()
    }

    /// The coordinator's root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// SHA-256 of the plaintext model, hex.
    pub fn model_sha256(&self) -> String {
        hex::encode(self.model_sha256)
    }

    /// SHA-256 of the worker's current evidence, hex.
    pub fn evidence_sha256(&self) -> String {
        self.identity().signer.evidence_sha256().to_string()
    }

    /// A mutual-TLS client to the coordinator with the current certificate
    /// (for key releases and workflow jobs).
    pub fn coordinator(&self) -> Client {
        self.identity().client.clone()
    }

    /// Obtain every version of `key` by attested release; the last element
    /// is the current version.
    pub async fn release(&self, key: &str) -> Result<Vec<Kek>> {
        release_keys(&self.coordinator(), key).await
    }

    pub(crate) fn info(&self) -> api::WorkerInfo {
        let id = self.identity();
        api::WorkerInfo {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            app: self.app.clone(),
            simulated: id.attest.simulated,
            tee: id.attest.tee.clone(),
            measurement: id.attest.measurement.clone(),
            model_sha256: self.model_sha256(),
            evidence_sha256: id.signer.evidence_sha256().into(),
            certificate: id.attest.certificate.clone(),
            not_after: id.attest.not_after.clone(),
            trained_by: self
                .model()
                .and_then(|m| m.as_native())
                .and_then(|m| m.provenance())
                .and_then(|p| p.attested.as_ref())
                .map(|a| api::TrainedBy {
                    app: a.app.clone(),
                    workflow: a.workflow.clone(),
                    run: a.run,
                    tee: a.tee.clone(),
                    measurement: a.measurement.clone(),
                    evidence_sha256: a.evidence_sha256.clone(),
                    sealed_dataset_sha256: a.sealed_dataset_sha256.clone(),
                }),
            insecure_public_compare: self.clients.insecure_public_compare(),
            transparency: self
                .transparency
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// Fetch the proof of the log entry that approved this worker's
    /// measurement (its certificate names it) from the coordinator, over
    /// the attested mTLS client. `Ok(false)` when the coordinator names no
    /// entry (one from before release transparency).
    pub async fn refresh_transparency(&self) -> Result<bool> {
        let id = self.identity();
        let Some(approval) = id.attest.approval else {
            return Ok(false);
        };
        let proof: api::LogProof = id
            .client
            .get(&format!("/v1/log/proof/{}", approval.log_index))
            .await
            .map_err(|e| Error::Unavailable(format!("the transparency proof: {e}")))?;
        *self
            .transparency
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(proof);
        Ok(true)
    }

    /// When to attest again: `renew_before` (default a third of the
    /// lifetime, at least 5 s) before expiry.
    fn renew_at(&self, id: &Identity) -> OffsetDateTime {
        let lifetime = (id.not_after - id.attested_at).max(time::Duration::ZERO);
        let before = match self.renew_before {
            Some(d) => time::Duration::try_from(d).unwrap_or(lifetime),
            None => (lifetime / 3_i32).max(time::Duration::seconds(5)),
        };
        id.not_after - before.min(lifetime)
    }
}

/// A started worker.
#[derive(Clone, Debug)]
pub struct Worker {
    state: AppState,
}

impl Worker {
    /// Attest with the coordinator, obtain a certificate, obtain the model
    /// key over mutual TLS, open the sealed model in memory, and open (or
    /// create) the sealed gallery.
    pub async fn start(opts: WorkerOptions) -> Result<Worker> {
        let root_der = crate::tls::root_der_from_pem(&opts.coordinator_root_pem)?;
        let anon = Client::new(
            &opts.coordinator_url,
            &opts.coordinator_root_pem,
            None,
            None,
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        let attester = Attester {
            anon,
            root_pem: opts.coordinator_root_pem,
            app: opts.app.clone(),
            names: opts.names,
            evidence: opts.evidence,
        };
        let attested = attester.attest().await?;

        let (model, model_sha256) = match &opts.sealed_model {
            Some(sealed) => {
                let (model, digest) = open_model(
                    &attested.client,
                    &opts.model_key,
                    sealed,
                    &opts.model_context,
                )
                .await?;
                (Some(model), digest)
            }
            None => {
                tracing::info!("no model: this worker is a trainer (workflow jobs only)");
                (None, [0u8; 32])
            }
        };

        let gallery = match (&opts.gallery, &model) {
            (Some(g), Some(model)) => {
                let keks = release_keys(&attested.client, &g.key).await?;
                Some(
                    Gallery::open(
                        g,
                        keks,
                        &opts.app,
                        model_sha256,
                        model.embedding_dim().ok_or_else(|| {
                            Error::Config(
                            "a gallery needs a model that embeds images; this one scores pairs only"
                                .into(),
                        )
                        })?,
                    )
                    .await?,
                )
            }
            (Some(_), None) => {
                return Err(Error::Config(
                    "a gallery needs a model to embed with".into(),
                ));
            }
            (None, _) => None,
        };
        let identity = attested.into_identity(&root_der, model_sha256)?;
        let refresh = match opts.gallery.as_ref().map(|g| &g.location) {
            Some(GalleryLocation::Shared { refresh, .. }) => Some(*refresh),
            _ => None,
        };
        let worker = Worker {
            state: Arc::new(WorkerState {
                model,
                compute: twinseal_net::guard::CpuPool::per_cpu(),
                clients: crate::clients::ClientAuth::new(
                    opts.limits.client_requests_per_second,
                    opts.limits.client_burst,
                    opts.insecure_public_compare,
                ),
                limits: opts.limits,
                gallery,
                app: opts.app,
                root_der,
                model_sha256,
                identity: RwLock::new(Arc::new(identity)),
                attester,
                renew_before: opts.renew_before,
                transparency: RwLock::new(None),
            }),
        };
        {
            // Release transparency: fetch the proof of the log entry that
            // approved this worker's measurement, quickly at first (the
            // checkpoint that covers it may still await its witnesses),
            // then every minute so that its checkpoint stays fresh; ends
            // when the worker is dropped.
            let state = Arc::downgrade(&worker.state);
            tokio::spawn(async move {
                let mut wait = Duration::from_millis(200);
                loop {
                    let Some(s) = state.upgrade() else { return };
                    match s.refresh_transparency().await {
                        Ok(true) => wait = TRANSPARENCY_REFRESH,
                        Ok(false) => return,
                        Err(e) => {
                            tracing::debug!(error = %e, "no transparency proof yet");
                            wait = (wait * 2).min(TRANSPARENCY_REFRESH);
                        }
                    }
                    drop(s);
                    tokio::time::sleep(wait).await;
                }
            });
        }
        if let Some(every) = refresh {
            // Other workers' enrolments into the shared gallery; ends when
            // the worker is dropped.
            let state = Arc::downgrade(&worker.state);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(s) = state.upgrade() else { return };
                    if let Some(g) = &s.gallery {
                        let _ = g.refresh().await;
                    }
                }
            });
        }
        Ok(worker)
    }

    /// The state to build the router ([`crate::app`]) or serve ([`crate::serve`]).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Attest again now: a new key, new evidence, a new certificate; the
    /// TLS server and receipts switch to it for new connections and
    /// requests.
    pub async fn renew(&self) -> Result<()> {
        let s = &self.state;
        let identity = s
            .attester
            .attest()
            .await?
            .into_identity(&s.root_der, s.model_sha256)?;
        *s.identity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(identity);
        if let Err(e) = s.refresh_transparency().await {
            tracing::debug!(error = %e, "no transparency proof yet for the new certificate");
        }
        Ok(())
    }

    /// Keep the certificate fresh: attest again before it expires, retrying
    /// with backoff; returns (with the last error) only when the
    /// certificate expired without a renewal.
    pub async fn keep_attested(&self) -> Error {
        loop {
            let id = self.state.identity();
            let renew_at = self.state.renew_at(&id);
            sleep_until(renew_at).await;
            let mut backoff = Duration::from_secs(1);
            loop {
                match self.renew().await {
                    Ok(()) => break,
                    Err(e) => {
                        let now = OffsetDateTime::now_utc();
                        if now + backoff >= id.not_after {
                            tracing::error!(error = %e, "could not attest again before the certificate expired; stopping");
                            return Error::Unavailable(format!(
                                "the certificate expired and attesting again failed: {e}"
                            ));
                        }
                        tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "attesting again failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    }

    /// Serve HTTPS on `listener` until `shutdown` resolves, attesting again
    /// before the certificate expires. Stops serving, with an error, when
    /// the certificate expired and the worker could not attest again.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let failure = Arc::new(std::sync::Mutex::new(None));
        let failed = failure.clone();
        let this = self.clone();
        let stop = async move {
            tokio::select! {
                _ = shutdown => {}
                e = this.keep_attested() => {
                    *failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                }
            }
        };
        crate::tls::serve(self.state(), listener, stop).await?;
        let failure = failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

async fn sleep_until(at: OffsetDateTime) {
    let wait = at - OffsetDateTime::now_utc();
    if wait.is_positive() {
        tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO)).await;
    }
}

/// Opens a sealed model in memory: the coordinator unwraps this one
/// file's key (never the model key itself) after checking the manifest and
/// the policy again and, where the key demands it, that an approved
/// trainer's training record names this very file. Returns the model and
/// the SHA-256 of its plaintext file.
async fn open_model(
    client: &Client,
    key: &str,
    sealed: &[u8],
    context: &Context,
) -> Result<(Box<dyn PairModel>, [u8; 32])> {
    let header = twinseal_envelope::Header::parse(sealed)
        .map_err(|e| Error::ModelRefused(format!("the model is not a sealed file: {e}")))?;
    let file_key = unwrap_file_key(client, key, header.as_bytes())
        .await
        .map_err(|e| match e {
            Error::Job(m) => Error::ModelRefused(m),
            other => other,
        })?;
    let plaintext = Zeroizing::new(
        twinseal_envelope::open_bytes_with_file_key(sealed, &file_key, context)
            .map_err(|e| Error::ModelRefused(e.to_string()))?,
    );
    drop(file_key);
    let digest: [u8; 32] = Sha256::digest(&plaintext[..]).into();
    let model = twinseal_siamese::load_model(&plaintext, &candle_core::Device::Cpu)
        .map_err(|e| Error::ModelRefused(e.to_string()))?;
    tracing::info!(backend = model.backend(), model_sha256 = %hex::encode(digest), "model opened in memory");
    if let Some(a) = model
        .as_native()
        .and_then(|m| m.provenance())
        .and_then(|p| p.attested.as_ref())
    {
        tracing::info!(
            workflow = %a.workflow,
            run = a.run,
            trainer = %a.app,
            trainer_evidence_sha256 = %a.evidence_sha256,
            "the model was trained by an attested trainer"
        );
    }
    Ok((model, digest))
}

/// The file key of one sealed file (its envelope header) under `key`,
/// unwrapped by the coordinator over `client` (mutual TLS) after its
/// manifest and policy checks; the worker never holds `key` itself.
pub(crate) async fn unwrap_file_key(
    client: &Client,
    key: &str,
    header: &[u8],
) -> Result<twinseal_envelope::FileKey> {
    use base64::Engine;
    let mut unwrapped: api::UnwrapResponse = client
        .post(
            &format!("/v1/keys/{key}/unwrap"),
            &api::UnwrapRequest {
                header: base64::engine::general_purpose::STANDARD.encode(header),
            },
        )
        .await
        .map_err(|e| {
            Error::Job(format!(
                "the coordinator did not unwrap the key of a file under {key}: {e}"
            ))
        })?;
    let key = crate::jobs::decode_file_key(&unwrapped.file_key);
    zeroize::Zeroize::zeroize(&mut unwrapped.file_key);
    key
}

/// Every version of `key` by attested release over `client` (mutual TLS).
async fn release_keys(client: &Client, key: &str) -> Result<Vec<Kek>> {
    let mut released: api::ReleaseResponse = client
        .post(&format!("/v1/keys/{key}/release"), &())
        .await
        .map_err(|source| Error::KeyRelease {
            key: key.to_string(),
            source,
        })?;
    let mut keks = keks_from_release(&mut released)?;
    // The current version last, so sealing uses it.
    let current = released.current_version;
    let pos = released
        .versions
        .iter()
        .position(|v| v.version == current)
        .ok_or_else(|| Error::Crypto("the current key version was not released".into()))?;
    let cur = keks.remove(pos);
    keks.push(cur);
    Ok(keks)
}

/// Key-encryption keys from a release answer; the base64 material in the
/// answer is wiped as it is decoded.
fn keks_from_release(released: &mut api::ReleaseResponse) -> Result<Vec<Kek>> {
    let mut keks = Vec::with_capacity(released.versions.len());
    for v in &mut released.versions {
        let raw = Zeroizing::new(
            B64.decode(v.material.as_bytes())
                .map_err(|_| Error::Crypto("the released key material is not base64".into()))?,
        );
        v.material.zeroize();
        let bytes: &[u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| Error::Crypto("the released key material is not 32 bytes".into()))?;
        let id = KeyId::new(v.key_id.clone())
            .map_err(|_| Error::Crypto("the released key id is invalid".into()))?;
        keks.push(Kek::new(id, SecretKey::from_bytes(*bytes)));
    }
    if keks.is_empty() {
        return Err(Error::Crypto(
            "the coordinator released no key versions".into(),
        ));
    }
    Ok(keks)
}
