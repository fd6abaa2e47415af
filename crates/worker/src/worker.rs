//! Starting a worker: attest, obtain the certificate and the model key,
//! open the sealed model in memory.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use twinseal_api as api;
use twinseal_attest::{SimulatedPlatform, collect::Collector};
use twinseal_coordinator::client::Client;
use twinseal_envelope::{Context, Kek, KeyId, SecretKey};
use twinseal_siamese::Siamese;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::receipt::ReceiptSigner;

/// Default largest request body, bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;
/// Default request timeout, seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default number of requests served at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;
/// Default largest number of images in one `embed` request.
pub const DEFAULT_MAX_IMAGES: usize = 256;

/// Where the worker's attestation evidence comes from.
pub enum EvidenceSource {
    /// The simulated TEE (INSECURE: no hardware guarantee; the coordinator
    /// accepts it only when configured to, and marks the certificate).
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_images: DEFAULT_MAX_IMAGES,
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
    /// The sealed model file (an envelope), bytes.
    pub sealed_model: Vec<u8>,
    /// The encryption context the model was sealed with.
    pub model_context: Context,
    /// The evidence source.
    pub evidence: EvidenceSource,
    /// Serving limits.
    pub limits: Limits,
}

impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("coordinator_url", &self.coordinator_url)
            .field("app", &self.app)
            .field("names", &self.names)
            .field("model_key", &self.model_key)
            .field("sealed_model_bytes", &self.sealed_model.len())
            .field("model_context", &self.model_context)
            .field("evidence", &self.evidence)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A started worker's state: its identity, its model and its signer.
pub struct WorkerState {
    pub(crate) model: Siamese,
    pub(crate) signer: ReceiptSigner,
    pub(crate) limits: Limits,
    app: String,
    attest: api::AttestResponse,
    cert_der: Vec<u8>,
    root_der: Vec<u8>,
    key_pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerState")
            .field("app", &self.app)
            .field("serial", &self.attest.serial)
            .field("signer", &self.signer)
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

    /// The loaded model.
    pub fn model(&self) -> &Siamese {
        &self.model
    }

    /// The coordinator's answer to the attestation (certificate PEM,
    /// serial, expiry, TEE, measurement).
    pub fn attestation(&self) -> &api::AttestResponse {
        &self.attest
    }

    /// The worker's certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The worker's certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.attest.certificate
    }

    /// The coordinator's root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// SHA-256 of the plaintext model, hex.
    pub fn model_sha256(&self) -> &str {
        self.signer.model_sha256()
    }

    /// SHA-256 of the worker's evidence, hex.
    pub fn evidence_sha256(&self) -> &str {
        self.signer.evidence_sha256()
    }

    pub(crate) fn key_pkcs8(&self) -> &[u8] {
        &self.key_pkcs8
    }

    pub(crate) fn info(&self) -> api::WorkerInfo {
        api::WorkerInfo {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            app: self.app.clone(),
            simulated: self.attest.simulated,
            tee: self.attest.tee.clone(),
            measurement: self.attest.measurement.clone(),
            model_sha256: self.model_sha256().into(),
            evidence_sha256: self.evidence_sha256().into(),
            certificate: self.attest.certificate.clone(),
            not_after: self.attest.not_after.clone(),
        }
    }
}

/// A started worker.
#[derive(Clone, Debug)]
pub struct Worker {
    state: AppState,
}

impl Worker {
    /// Attest with the coordinator, obtain a certificate, obtain the model
    /// key over mutual TLS, and open the sealed model in memory.
    pub async fn start(opts: WorkerOptions) -> Result<Worker> {
        let root_der = crate::tls::root_der_from_pem(&opts.coordinator_root_pem)?;
        let anon = Client::new(
            &opts.coordinator_url,
            &opts.coordinator_root_pem,
            None,
            None,
        )
        .map_err(|e| Error::Config(e.to_string()))?;

        if matches!(opts.evidence, EvidenceSource::InsecureSimulated { .. }) {
            tracing::warn!("INSECURE: attesting with the simulated TEE (no hardware guarantee)");
        }
        let mut evidence_bytes = Vec::new();
        let evidence = &opts.evidence;
        let identity = anon
            .attest(&opts.app, &opts.names, |rd| {
                let ev = match evidence {
                    EvidenceSource::InsecureSimulated {
                        platform,
                        measurement,
                    } => platform.attest_with_measurement(measurement, rd, SystemTime::now())?,
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
        tracing::info!(
            app = %opts.app,
            serial = %identity.response.serial,
            not_after = %identity.response.not_after,
            simulated = identity.response.simulated,
            "attested; certificate issued"
        );

        let app_client = anon
            .with_identity(&opts.coordinator_root_pem, identity.identity())
            .map_err(|e| Error::Config(e.to_string()))?;
        let key_error = |source| Error::KeyRelease {
            key: opts.model_key.clone(),
            source,
        };
        let mut released: api::ReleaseResponse = app_client
            .post(&format!("/v1/keys/{}/release", opts.model_key), &())
            .await
            .map_err(key_error)?;
        let keks = keks_from_release(&mut released)?;

        let plaintext = Zeroizing::new(
            twinseal_envelope::open_bytes(&opts.sealed_model, &keks, &opts.model_context)
                .map_err(|e| Error::ModelRefused(e.to_string()))?,
        );
        let model_sha256: [u8; 32] = Sha256::digest(&plaintext[..]).into();
        let model = Siamese::from_bytes(&plaintext, &candle_core::Device::Cpu)
            .map_err(|e| Error::ModelRefused(e.to_string()))?;
        drop(plaintext);
        tracing::info!(model_sha256 = %hex::encode(model_sha256), "model opened in memory");

        let signer = ReceiptSigner::new(
            &identity.key_pkcs8,
            &cert_der,
            model_sha256,
            evidence_sha256,
        )?;
        Ok(Worker {
            state: Arc::new(WorkerState {
                model,
                signer,
                limits: opts.limits,
                app: opts.app,
                attest: identity.response,
                cert_der,
                root_der,
                key_pkcs8: identity.key_pkcs8,
            }),
        })
    }

    /// The state to build the router ([`crate::app`]) or serve ([`crate::serve`]).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serve HTTPS on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        crate::tls::serve(self.state(), listener, shutdown).await
    }
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
