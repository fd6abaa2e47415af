//! The wire types of every twinseal HTTP API (`/v1`): the only place that
//! derives `Serialize`/`Deserialize` for the network.
//!
//! Conventions: binary values travel as standard base64 (with padding),
//! digests and challenges as lowercase hex, times as RFC 3339 UTC strings.
//! Every error answer has the body [`ErrorBody`]. Request types reject
//! unknown fields, so a misspelt field is an error rather than ignored.
//!
//! [`openapi`] builds the OpenAPI 3.1 document the coordinator serves at
//! `/v1/openapi.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The stable JSON error body: `{"type": "...", "detail": "..."}`.
///
/// `type` is one of a fixed set of machine-readable names (see
/// [`error_type`]); `detail` is for humans and never says which
/// attestation or crypto check failed to an unauthenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable error class.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable detail.
    pub detail: String,
}

/// The machine-readable error classes of [`ErrorBody::kind`].
pub mod error_type {
    /// No or unusable credentials (HTTP 401).
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// Authenticated, but this identity may not do this (HTTP 403).
    pub const FORBIDDEN: &str = "forbidden";
    /// The named thing does not exist (HTTP 404).
    pub const NOT_FOUND: &str = "not_found";
    /// The request is malformed: JSON, base64, CSR, evidence, names (HTTP 400).
    pub const BAD_REQUEST: &str = "bad_request";
    /// The request conflicts with the current state (HTTP 409).
    pub const CONFLICT: &str = "conflict";
    /// The body is larger than the configured limit (HTTP 413).
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// Attestation evidence was rejected (HTTP 403; the reasons are logged
    /// and audited, not returned).
    pub const ATTESTATION_REJECTED: &str = "attestation_rejected";
    /// The policy or manifest denied a release (HTTP 403).
    pub const DENIED: &str = "denied";
    /// The key is disabled or destroyed (HTTP 409).
    pub const KEY_UNAVAILABLE: &str = "key_unavailable";
    /// Something failed on the server; details are in its log (HTTP 500).
    pub const INTERNAL: &str = "internal";
    /// The caller exceeded its rate limit (HTTP 429).
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The server is shutting down or overloaded (HTTP 503).
    pub const UNAVAILABLE: &str = "unavailable";
}

/// `GET /v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// True when the server accepts simulated-TEE evidence (INSECURE).
    pub insecure_allow_simulated_tee: bool,
}

/// `GET /v1/ca`: the root certificate clients pin.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CaInfo {
    /// The root certificate, PEM.
    pub certificate: String,
    /// SHA-256 of the root certificate's DER, hex: the value to pin.
    pub sha256: String,
}

/// `POST /v1/evidence` (coordinator): the coordinator's own attestation.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorEvidenceRequest {
    /// A fresh random nonce chosen by the client, 32 bytes hex.
    pub nonce: String,
}

/// The coordinator's evidence: its report data is
/// `report_data(nonce, SPKI of the root certificate)`, so a client that
/// verifies it knows the root it is about to pin belongs to the attested
/// coordinator.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CoordinatorEvidence {
    /// The TEE kind the coordinator runs in, or `none` when it has no
    /// evidence to give (then `evidence` is absent).
    pub tee: String,
    /// The evidence, when there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceWire>,
    /// The root certificate, PEM.
    pub ca: String,
    /// SHA-256 of the root certificate's DER, hex.
    pub ca_sha256: String,
    /// The coordinator's version.
    pub version: String,
}

/// `POST /v1/attest/challenge`: a one-time challenge.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ChallengeResponse {
    /// 32 random bytes, hex.
    pub challenge: String,
    /// Seconds until the challenge expires.
    pub ttl_secs: u64,
}

/// Attestation evidence on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceWire {
    /// The raw evidence (SGX/TDX quote, SEV-SNP report, simulated evidence), base64.
    pub evidence: String,
    /// For SEV-SNP: the VCEK certificate (DER), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcek: Option<String>,
}

/// `POST /v1/attest`: evidence bound to a challenge and the CSR's key.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The app name in the manifest.
    pub app: String,
    /// The challenge from `/v1/attest/challenge`, hex.
    pub challenge: String,
    /// The evidence, whose report data is `report_data(challenge, CSR public key)`.
    pub evidence: EvidenceWire,
    /// A PKCS#10 certificate signing request, PEM.
    pub csr: String,
}

/// The certificate issued to an attested app.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AttestResponse {
    /// The app's certificate, PEM.
    pub certificate: String,
    /// The coordinator's root certificate, PEM.
    pub ca: String,
    /// The certificate's serial number, hex.
    pub serial: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// True when the evidence was simulated (the certificate then carries
    /// the critical simulated-TEE extension).
    pub simulated: bool,
    /// The TEE kind.
    pub tee: String,
    /// The primary measurement, hex.
    pub measurement: String,
    /// The platform's endorsed location, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The manifest version that approved the measurement and the log
    /// index of its `measurements_approved` entry (also in the
    /// certificate), for the app to fetch its proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// Where the log approved an app's measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The manifest version.
    pub manifest_version: u64,
    /// The log index of its `measurements_approved` entry for the app.
    pub log_index: u64,
}

/// `GET /v1/log/proof/{index}`: a log entry with its inclusion proof under
/// the latest checkpoint clients accept (cosigned by the witness quorum when
/// the coordinator has witnesses). Workers serve the proof of the entry
/// that approved their measurement in [`WorkerInfo::transparency`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogProof {
    /// The entry's index.
    pub index: u64,
    /// The entry's leaf data (its canonical JSON), base64.
    pub entry: String,
    /// The RFC 9162 inclusion proof, leaf to root, each hash base64.
    pub proof: Vec<String>,
    /// The checkpoint (signed note, with witness cosignature lines).
    pub checkpoint: String,
}

/// `POST /v1/keys`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Key name: 1 to 64 of `a-z A-Z 0-9 . _ -`.
    pub name: String,
    /// Free-form tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Encryption-context pairs every data key under this key must carry.
    #[serde(default)]
    pub required_context: BTreeMap<String, String>,
}

/// A key's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Kept, but refuses every use until enabled again.
    Disabled,
    /// Crypto-shredded: the material of every version is gone.
    Destroyed,
}

/// One version of a key (metadata only).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyVersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// The envelope key id of this version (as it appears in stanzas).
    pub key_id: String,
    /// Creation time.
    pub created: String,
}

/// `GET /v1/keys/{name}`: metadata, never material.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// Lifecycle state.
    pub state: KeyState,
    /// The version new data keys are wrapped under.
    pub current_version: u32,
    /// Versions whose material still exists (empty once destroyed).
    pub versions: Vec<KeyVersionInfo>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Required encryption-context pairs.
    pub required_context: BTreeMap<String, String>,
    /// Creation time.
    pub created: String,
}

/// `GET /v1/keys`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// Every key, by name.
    pub keys: Vec<KeyInfo>,
}

/// `POST /v1/keys/{name}/datakey`: a fresh envelope header and file key.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataKeyRequest {
    /// The envelope encryption context (public, authenticated).
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// The answer to a data-key request.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct DataKeyResponse {
    /// A complete envelope header (one stanza under the named key), base64.
    pub header: String,
    /// The file key, base64. Secret: use it in memory and forget it.
    pub file_key: String,
    /// The stanza's key id.
    pub key_id: String,
}

/// `POST /v1/keys/{name}/unwrap`: the file key of an envelope header.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnwrapRequest {
    /// The envelope header, base64.
    pub header: String,
}

/// The answer to an unwrap request.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct UnwrapResponse {
    /// The file key, base64. Secret.
    pub file_key: String,
    /// The stanza's key id.
    pub key_id: String,
    /// The header's (authenticated) encryption context.
    pub context: BTreeMap<String, String>,
}

/// One released key version.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleasedVersion {
    /// Version number.
    pub version: u32,
    /// The envelope key id of this version.
    pub key_id: String,
    /// The AES-256 key, base64. Secret.
    pub material: String,
}

/// `POST /v1/keys/{name}/release` (mutual TLS, apps only).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReleaseResponse {
    /// The key's name.
    pub key: String,
    /// The current version.
    pub current_version: u32,
    /// Every version whose material exists, so old data still opens.
    pub versions: Vec<ReleasedVersion>,
}

/// `PUT /v1/manifest`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestApplyRequest {
    /// The manifest, TOML text.
    pub manifest: String,
}

/// A stored manifest version.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ManifestInfo {
    /// Version number, from 1.
    pub version: u64,
    /// SHA-256 of the TOML text, hex.
    pub digest: String,
    /// When it was applied.
    pub applied_at: String,
    /// Who applied it.
    pub applied_by: String,
    /// The TOML text (only in single-version answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

/// `GET /v1/manifest/versions`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ManifestVersions {
    /// Every version, oldest first.
    pub versions: Vec<ManifestInfo>,
}

/// `POST /v1/users/{name}/token` (optional body): how long the new token
/// lives.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Lifetime in seconds, 1 to 31,622,400 (366 days); default 90 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// `POST /v1/users/{name}/token`: a new bearer token for a manifest user.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The user.
    pub user: String,
    /// The token, shown once; the coordinator stores only its hash.
    pub token: String,
    /// The token's public id (for listing and revoking).
    #[serde(default)]
    pub id: String,
    /// When it was issued, RFC 3339.
    #[serde(default)]
    pub created: String,
    /// When it expires, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// What a worker client may ask of a worker app (granted per app in the
/// manifest: `[apps.<app>.clients] carl = ["compare", "verify"]`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkerPermission {
    /// `/v1/compare` and `/v1/compare/batch`.
    Compare,
    /// `/v1/embed`: embeddings, which could copy or invert the model.
    Embed,
    /// `/v1/verify` with an identity (1:1).
    Verify,
    /// `/v1/verify` without an identity (1:N search of the gallery).
    Identify,
    /// `/v1/enroll`: add references to the gallery.
    Enroll,
}

impl WorkerPermission {
    /// The name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerPermission::Compare => "compare",
            WorkerPermission::Embed => "embed",
            WorkerPermission::Verify => "verify",
            WorkerPermission::Identify => "identify",
            WorkerPermission::Enroll => "enroll",
        }
    }
}

/// `POST /v1/clients/introspect` (an attested app, over mutual TLS): what a
/// worker client's bearer token may do with the calling app.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectRequest {
    /// The bearer token the client presented to the worker.
    pub token: String,
}

/// The answer to [`IntrospectRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IntrospectResponse {
    /// Whether the token names a current user with the `client` role who
    /// holds some permission on the calling app.
    pub active: bool,
    /// The user, when active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// What the user may ask of the calling app.
    #[serde(default)]
    pub permissions: Vec<WorkerPermission>,
    /// How long the worker may cache this answer, seconds (a revoked token
    /// stops working at most this long after its revocation).
    pub cache_secs: u64,
}

/// `Debug` for types that carry a secret: every field but the secret ones,
/// which show as `<redacted>`.
macro_rules! redacted_debug {
    ($t:ty { $($field:ident),* } redacts { $($secret:ident),* }) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($field), &self.$field))*
                    $(.field(stringify!($secret), &"<redacted>"))*
                    .finish()
            }
        }
    };
}

/// Wipe the secret fields of a type when it is dropped, so that neither
/// the server that built an answer nor the client that read it leaves key
/// material or tokens behind in freed memory.
macro_rules! wipe_on_drop {
    ($t:ty { $($secret:ident),* }) => {
        impl Drop for $t {
            fn drop(&mut self) {
                $(zeroize::Zeroize::zeroize(&mut self.$secret);)*
            }
        }
    };
}

wipe_on_drop!(DataKeyResponse { file_key });
wipe_on_drop!(UnwrapResponse { file_key });
wipe_on_drop!(ReleasedVersion { material });
wipe_on_drop!(TokenResponse { token });
wipe_on_drop!(IntrospectRequest { token });

redacted_debug!(DataKeyResponse { header, key_id } redacts { file_key });
redacted_debug!(UnwrapResponse { key_id, context } redacts { file_key });
redacted_debug!(ReleasedVersion { version, key_id } redacts { material });
redacted_debug!(TokenResponse { user, id, created, expires } redacts { token });
redacted_debug!(IntrospectRequest {} redacts { token });

/// One of a user's tokens (never the token itself).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// The token's public id.
    pub id: String,
    /// When it was issued, RFC 3339.
    pub created: String,
    /// When it expires, RFC 3339; absent for tokens issued before tokens
    /// expired (they work until revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Whether it has expired.
    pub expired: bool,
}

/// `GET /v1/users/{name}/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// The user.
    pub user: String,
    /// The user's tokens, oldest first.
    pub tokens: Vec<TokenInfo>,
}

/// An issued app certificate.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateInfo {
    /// Serial, hex.
    pub serial: String,
    /// The app it was issued to.
    pub app: String,
    /// Expiry.
    pub not_after: String,
    /// Issued on simulated evidence.
    pub simulated: bool,
    /// Revoked by an admin.
    pub revoked: bool,
    /// SHA-256 of the evidence, hex (the evidence is in the audit export).
    pub evidence_digest: String,
}

/// `GET /v1/certificates`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateList {
    /// Certificates, newest first.
    pub certificates: Vec<CertificateInfo>,
}

/// The alphabet a tokenized value keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Alphabet {
    /// `0-9` (radix 10).
    Digits,
    /// `0-9 a-z A-Z` (radix 62).
    Alphanumeric,
}

/// `POST /v1/tokenize` and `POST /v1/detokenize`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The key name.
    pub key: String,
    /// The alphabet of the values.
    pub alphabet: Alphabet,
    /// The values (each long enough for FF1: at least 6 digits or 4 alphanumerics).
    pub values: Vec<String>,
    /// Optional public tweak (e.g. a field name), UTF-8.
    #[serde(default)]
    pub tweak: String,
    /// For detokenize: the key version the tokens were made with (default: current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// The answer to tokenize and detokenize.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenizeResponse {
    /// The key version used.
    pub version: u32,
    /// The results, in request order.
    pub values: Vec<String>,
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditCheckpoint {
    /// The C2SP signed note.
    pub note: String,
    /// Number of entries it covers.
    pub size: u64,
    /// The verifier key (C2SP vkey form) to check it with.
    pub verifier_key: String,
}

// ---------------------------------------------------------------------------
// The worker's API (the attested Siamese service).
// ---------------------------------------------------------------------------

/// A workflow run's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for an attested worker of the workflow's app to claim it.
    Queued,
    /// A worker claimed it and is computing.
    Running,
    /// The sealed output was written.
    Succeeded,
    /// The worker reported a failure (nothing was written), or its claim
    /// expired.
    Failed,
}

/// A workflow run as the coordinator records it (`POST
/// /v1/workflows/{name}/runs`, `GET /v1/runs/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunInfo {
    /// The run's id.
    pub id: u64,
    /// The workflow's name.
    pub workflow: String,
    /// Its kind (`score`).
    pub kind: String,
    /// The app that runs it.
    pub app: String,
    /// Its state.
    pub state: RunState,
    /// Who started it.
    pub started_by: String,
    /// When it was queued, RFC 3339.
    pub created: String,
    /// When it last changed, RFC 3339.
    pub updated: String,
    /// The certificate serial of the worker that claimed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Items done (pairs scored).
    pub done: u64,
    /// Items in all (0 until the worker has read the input).
    pub total: u64,
    /// Where the sealed output was written (object path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// SHA-256 of the sealed output, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The worker's signed receipt for the run (operation `workflow`), on
    /// success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// The certificate (PEM) of the worker that signed the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Training runs: the latest progress the trainer reported (epoch,
    /// loss, accuracy; never data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingProgress>,
    /// Training runs, on success: the attestation-backed training record
    /// the coordinator wrote to the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_record: Option<TrainingRecord>,
}

/// The options of a training workflow (`[workflows.NAME.train]` in the
/// manifest): the same options, with the same defaults, as `twinseal
/// train` (the seed's: contrastive loss with margin 1, sigmoid head,
/// RMSprop at 1e-3, batch 128, 11 epochs, seed 42).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    /// `contrastive` or `triplet`.
    pub loss: String,
    /// Margin of the loss.
    pub margin: f32,
    /// `sigmoid` (the seed's) or `distance`.
    pub head: String,
    /// `rmsprop` or `adam`.
    pub optimizer: String,
    /// Learning rate.
    pub lr: f64,
    /// Passes over the training images.
    pub epochs: usize,
    /// Pairs per batch.
    pub batch_size: usize,
    /// Seed of the weights and the pairs.
    pub seed: u64,
    /// Use only the first N training images of each identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_class: Option<usize>,
    /// Contrastive loss on the sampled pairs only (as the seed).
    pub sampled_pairs_only: bool,
    /// A tower configuration (JSON, as `twinseal train --tower`); absent:
    /// the seed's tower for 28x28 input.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tower: Option<serde_json::Value>,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            loss: "contrastive".into(),
            margin: 1.0,
            head: "sigmoid".into(),
            optimizer: "rmsprop".into(),
            lr: 1e-3,
            epochs: 11,
            batch_size: 128,
            seed: 42,
            max_per_class: None,
            sampled_pairs_only: false,
            tower: None,
        }
    }
}

impl TrainSpec {
    /// Checks the options' vocabulary and ranges (the trainer maps them).
    pub fn check(&self) -> Result<(), String> {
        if !matches!(self.loss.as_str(), "contrastive" | "triplet") {
            return Err(format!("loss {:?}: contrastive or triplet", self.loss));
        }
        if !matches!(self.head.as_str(), "sigmoid" | "distance") {
            return Err(format!("head {:?}: sigmoid or distance", self.head));
        }
        if !matches!(self.optimizer.as_str(), "rmsprop" | "adam") {
            return Err(format!("optimizer {:?}: rmsprop or adam", self.optimizer));
        }
        if self.loss == "triplet" && self.head == "sigmoid" {
            return Err("the triplet loss trains embeddings: use head = \"distance\"".into());
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.lr) || !positive(f64::from(self.margin)) {
            return Err("lr and margin must be positive".into());
        }
        if self.epochs == 0
            || self.epochs > 10_000
            || self.batch_size == 0
            || self.batch_size > 1 << 20
        {
            return Err("epochs (1 to 10000) and batch_size (1 to 1048576)".into());
        }
        if self.max_per_class == Some(0) {
            return Err("max_per_class must be at least 1".into());
        }
        Ok(())
    }
}

/// What a trainer reports while it trains: aggregates only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingProgress {
    /// `opening`, `training`, `evaluating`, `sealing` or `done`.
    pub stage: String,
    /// The last finished epoch (1-based; 0 before the first ends).
    pub epoch: usize,
    /// Epochs in all.
    pub epochs: usize,
    /// Mean loss of the last finished epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Training pair accuracy of the last finished epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Test metrics after training (accuracy, roc_auc, eer, far, frr, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// What a trainer reports when it finishes a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingResult {
    /// SHA-256 of the sealed model, hex (also `output_sha256`).
    pub model_sha256: String,
    /// SHA-256 of the sealed model's envelope header, hex: what a serving
    /// worker presents when it asks for the model's file key.
    pub model_header_sha256: String,
    /// SHA-256 of the plaintext model file, hex: what a serving worker
    /// reports as `model_sha256` in `/v1/info` and receipts.
    pub model_plain_sha256: String,
    /// Where the sealed metrics were written.
    pub metrics_output: String,
    /// SHA-256 of the sealed metrics, hex.
    pub metrics_sha256: String,
    /// SHA-256 of the dataset's content as `twinseal train` computes it.
    pub dataset_sha256: String,
    /// SHA-256 of the sealed dataset archive, hex.
    pub sealed_dataset_sha256: String,
    /// SHA-256 of the dataset's public index, hex.
    pub dataset_index_sha256: String,
    /// Training images, test images, identities.
    pub images: [u64; 3],
    /// Test metrics.
    pub metrics: BTreeMap<String, f64>,
}

/// A training record: which attested trainer produced which model from
/// which sealed dataset with which options. The coordinator writes it to
/// the audit log (event `training_recorded`, which names the trainer's
/// evidence, so the audit bundle carries that evidence) when the run
/// succeeds; a key placement with `trained_by` releases models only with
/// such a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    /// The run.
    pub run: u64,
    /// The workflow.
    pub workflow: String,
    /// The trainer app.
    pub app: String,
    /// Its certificate serial, hex.
    pub serial: String,
    /// SHA-256 of its attestation evidence, hex.
    pub evidence_sha256: String,
    /// Its primary measurement, hex.
    pub measurement: String,
    /// Its TEE kind.
    pub tee: String,
    /// True when the trainer ran on simulated evidence (INSECURE).
    pub simulated: bool,
    /// The input dataset's manifest name and location.
    pub dataset: String,
    /// The training options.
    pub options: TrainSpec,
    /// What the trainer reported.
    pub result: TrainingResult,
    /// The sealed model's object path.
    pub model: String,
    /// When the record was made, RFC 3339.
    pub recorded: String,
}

/// `GET /v1/runs`: runs, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// The runs.
    pub runs: Vec<RunInfo>,
}

/// A sealed object a job reads or writes: where it is, the key it is
/// sealed under and its encryption context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SealedLocation {
    /// The object path in the worker's object store.
    pub location: String,
    /// The coordinator key.
    pub key: String,
    /// The encryption context (public).
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// `POST /v1/jobs/claim` (attested app): the oldest queued run of a
/// workflow the app runs; `job` is absent when there is none.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    /// The job, if one was waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
}

/// A claimed job.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// The run's id.
    pub run: u64,
    /// The workflow's name.
    pub workflow: String,
    /// Its kind (`score`).
    pub kind: String,
    /// The sealed input dataset (a sealed directory).
    pub input: SealedLocation,
    /// Where to write the sealed output (one object; for training, the
    /// sealed model).
    pub output: SealedLocation,
    /// Training runs: the options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainSpec>,
    /// Training runs: where to write the sealed evaluation metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SealedLocation>,
}

/// `POST /v1/jobs/{id}/progress` (the app that claimed the run).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobProgress {
    /// Items done.
    pub done: u64,
    /// Items in all.
    pub total: u64,
    /// Training runs: the trainer's progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingProgress>,
}

/// `POST /v1/jobs/{id}/finish` (the app that claimed the run).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFinish {
    /// Items done.
    pub done: u64,
    /// The sealed output's SHA-256, hex, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
    /// Why it failed (no output was written); absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The worker's signed receipt for the run, on success: operation
    /// `workflow`, inputs = the sealed input's index digest, output =
    /// [`WorkflowOutput`] as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// Training runs, on success: what was trained from what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingResult>,
}

/// The signed output of a workflow run's receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowOutput {
    /// The run's id.
    pub run: u64,
    /// The workflow's name.
    pub workflow: String,
    /// Pairs scored.
    pub pairs: u64,
    /// Where the sealed output was written.
    pub output: String,
    /// SHA-256 of the sealed output, hex.
    pub output_sha256: String,
}

/// An image sent to a worker, base64 (standard, padded).
///
/// `{"png": ...}` (also `{"jpeg": ...}`) carries an encoded PNG or JPEG of
/// any size, converted to grey and resized as the model's configuration
/// says; `{"raw": ...}` carries exactly `height * width` grey bytes
/// (28 x 28 = 784 for the seed's model), row-major, 0 = black.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ImageWire {
    /// An encoded PNG (or JPEG) image, base64.
    Png(String),
    /// An encoded JPEG (or PNG) image, base64.
    Jpeg(String),
    /// Raw grey pixels of the model's input size, base64.
    Raw(String),
}

/// `POST /v1/compare` (worker): are `a` and `b` the same identity?
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    /// The first image.
    pub a: ImageWire,
    /// The second image.
    pub b: ImageWire,
}

/// One pair of images in a batch.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairWire {
    /// The first image.
    pub a: ImageWire,
    /// The second image.
    pub b: ImageWire,
}

/// `POST /v1/compare/batch` (worker): many pairs in one request, scored
/// together (the worker bounds how many).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareBatchRequest {
    /// The pairs (at least one).
    pub pairs: Vec<PairWire>,
}

/// The verdict on a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The head's score is at or below the threshold.
    Similar,
    /// The head's score is above the threshold.
    Dissimilar,
}

/// What a worker computed for one pair (also the signed output of its receipt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompareResult {
    /// Euclidean distance between the two embeddings.
    pub distance: f32,
    /// The head's decision score (lower means more alike).
    pub score: f32,
    /// Calibrated probability that both images show the same identity.
    pub probability: f32,
    /// `similar` when `score <= threshold`.
    pub verdict: Verdict,
    /// The model's decision threshold on `score`.
    pub threshold: f32,
}

/// The answer to `POST /v1/compare`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CompareResponse {
    /// The result.
    #[serde(flatten)]
    pub result: CompareResult,
    /// The signed receipt; its `output` is `result` as JSON text.
    pub receipt: Receipt,
}

/// What a worker computed for `POST /v1/compare/batch` (also the signed
/// output of its receipt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompareBatchResult {
    /// One result per pair, in request order.
    pub results: Vec<CompareResult>,
}

/// The answer to `POST /v1/compare/batch`: one receipt covers every pair
/// (its inputs digest runs over `a0, b0, a1, b1, ...`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CompareBatchResponse {
    /// The result.
    #[serde(flatten)]
    pub result: CompareBatchResult,
    /// The signed receipt; its `output` is `result` as JSON text.
    pub receipt: Receipt,
}

/// `POST /v1/embed` (worker): embeddings of images.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// The images (at least one; the worker bounds how many).
    pub images: Vec<ImageWire>,
}

/// What a worker computed for `POST /v1/embed` (also the signed output of
/// its receipt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbedResult {
    /// Length of each embedding.
    pub dim: usize,
    /// One embedding per image, in request order.
    pub embeddings: Vec<Vec<f32>>,
}

/// The answer to `POST /v1/embed`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbedResponse {
    /// The result.
    #[serde(flatten)]
    pub result: EmbedResult,
    /// The signed receipt; its `output` is `result` as JSON text.
    pub receipt: Receipt,
}

/// `POST /v1/enroll` (worker, bearer token): add reference images of an
/// identity to the worker's sealed gallery.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The identity's name: 1 to 128 characters, no control characters.
    pub identity: String,
    /// Its reference images (at least one; the worker bounds how many).
    pub images: Vec<ImageWire>,
}

/// What a worker did for `POST /v1/enroll` (also the signed output of its
/// receipt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnrollResult {
    /// The identity.
    pub identity: String,
    /// References added by this request.
    pub enrolled: usize,
    /// References the identity now has.
    pub references: usize,
    /// Identities in the gallery.
    pub identities: usize,
}

/// The answer to `POST /v1/enroll`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollResponse {
    /// The result.
    #[serde(flatten)]
    pub result: EnrollResult,
    /// The signed receipt; its `output` is `result` as JSON text.
    pub receipt: Receipt,
}

/// `POST /v1/verify` (worker): a probe against one enrolled identity (1:1,
/// when `identity` is given) or against the whole gallery (1:N search).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The probe image.
    pub probe: ImageWire,
    /// The claimed identity (1:1); absent: search the gallery (1:N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// How many best matches a search returns (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
}

/// One identity's match against a probe: its closest reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IdentityMatch {
    /// The identity.
    pub identity: String,
    /// The pair result of the probe and the identity's closest reference.
    #[serde(flatten)]
    pub result: CompareResult,
}

/// What a worker computed for `POST /v1/verify` (also the signed output of
/// its receipt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyResult {
    /// `one_to_one` or `search`.
    pub mode: String,
    /// The verified identity (1:1), or the best match when it is similar (1:N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// True when the (best) match's verdict is `similar`.
    pub matched: bool,
    /// Matches, best first: one for 1:1, up to `top` for a search.
    pub matches: Vec<IdentityMatch>,
}

/// The answer to `POST /v1/verify`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    /// The result.
    #[serde(flatten)]
    pub result: VerifyResult,
    /// The signed receipt; its `output` is `result` as JSON text.
    pub receipt: Receipt,
}

/// A worker's signed statement of one computation, verifiable by anyone
/// holding the worker's certificate (see the worker crate's `receipt`
/// module for the exact signed bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Format name and version: `twinseal-receipt/1`.
    pub format: String,
    /// The operation: `compare`, `compare_batch`, `embed`, `enroll` or `verify`.
    pub operation: String,
    /// When the worker computed the output, RFC 3339 UTC.
    pub time: String,
    /// SHA-256 of the canonical encoding of the inputs, hex.
    pub inputs_sha256: String,
    /// SHA-256 of the plaintext model file, hex.
    pub model_sha256: String,
    /// SHA-256 of the worker's attestation evidence (carried in its
    /// certificate), hex.
    pub evidence_sha256: String,
    /// SHA-256 of the worker's certificate (DER), hex.
    pub certificate_sha256: String,
    /// The output, exactly as signed: compact JSON text.
    pub output: String,
    /// ECDSA P-256 / SHA-256 signature (ASN.1 DER) by the certificate's
    /// key over the receipt's canonical bytes, base64.
    pub signature: String,
    /// The same statement as a COSE_Sign1 with CWT/EAT claims, signed by
    /// the same key (docs/spec/receipt.md), base64 of its tagged CBOR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cose: Option<String>,
}

/// `GET /v1/info` (worker): what is serving.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    /// Always `ok` when the worker answers.
    pub status: String,
    /// The worker's version.
    pub version: String,
    /// The app name it attested as.
    pub app: String,
    /// True when its evidence was simulated (INSECURE: no hardware guarantee).
    pub simulated: bool,
    /// The TEE kind.
    pub tee: String,
    /// The primary measurement, hex.
    pub measurement: String,
    /// SHA-256 of the plaintext model file, hex.
    pub model_sha256: String,
    /// SHA-256 of its evidence, hex.
    pub evidence_sha256: String,
    /// Its certificate, PEM (to verify receipts with).
    pub certificate: String,
    /// Certificate expiry, RFC 3339.
    pub not_after: String,
    /// When the model was made by an attested training workflow: which
    /// trainer, run and sealed dataset (from the model's provenance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_by: Option<TrainedBy>,
    /// INSECURE: `/v1/compare` answers callers without credentials (a
    /// public demo); every other operation still needs a client token.
    #[serde(default)]
    pub insecure_public_compare: bool,
    /// Release transparency: the log entry that approved this worker's
    /// measurement with its inclusion proof under a (cosigned) checkpoint,
    /// refreshed by the worker; clients check it before sending data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparency: Option<LogProof>,
}

/// The attested training a served model came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrainedBy {
    /// The trainer app.
    pub app: String,
    /// The workflow.
    pub workflow: String,
    /// The run.
    pub run: u64,
    /// The trainer's TEE kind.
    pub tee: String,
    /// The trainer's measurement, hex.
    pub measurement: String,
    /// SHA-256 of the trainer's evidence, hex.
    pub evidence_sha256: String,
    /// SHA-256 of the sealed dataset archive, hex.
    pub sealed_dataset_sha256: String,
}

/// The OpenAPI document of the coordinator's `/v1` surface.
pub fn openapi() -> utoipa::openapi::OpenApi {
    const OPS: &[Op] = &[
        (
            "get",
            "/v1/health",
            "Liveness and mode",
            "anyone",
            None,
            Some("Health"),
        ),
        (
            "get",
            "/v1/openapi.json",
            "This document",
            "anyone",
            None,
            None,
        ),
        (
            "get",
            "/metrics",
            "Prometheus metrics (text)",
            "anyone",
            None,
            None,
        ),
        (
            "get",
            "/v1/ca",
            "Root certificate to pin",
            "anyone",
            None,
            Some("CaInfo"),
        ),
        (
            "post",
            "/v1/attest/challenge",
            "One-time challenge",
            "anyone",
            None,
            Some("ChallengeResponse"),
        ),
        (
            "post",
            "/v1/attest",
            "Evidence + CSR -> app certificate",
            "anyone with valid evidence",
            Some("AttestRequest"),
            Some("AttestResponse"),
        ),
        (
            "get",
            "/v1/keys",
            "List keys",
            "admin",
            None,
            Some("KeyList"),
        ),
        (
            "post",
            "/v1/keys",
            "Create a key",
            "admin",
            Some("CreateKeyRequest"),
            Some("KeyInfo"),
        ),
        (
            "get",
            "/v1/keys/{name}",
            "Key metadata",
            "admin",
            None,
            Some("KeyInfo"),
        ),
        (
            "delete",
            "/v1/keys/{name}",
            "Destroy (crypto-shred) a key",
            "admin",
            None,
            Some("KeyInfo"),
        ),
        (
            "post",
            "/v1/keys/{name}/rotate",
            "New key version",
            "admin",
            None,
            Some("KeyInfo"),
        ),
        (
            "post",
            "/v1/keys/{name}/disable",
            "Disable a key",
            "admin",
            None,
            Some("KeyInfo"),
        ),
        (
            "post",
            "/v1/keys/{name}/enable",
            "Enable a key",
            "admin",
            None,
            Some("KeyInfo"),
        ),
        (
            "post",
            "/v1/keys/{name}/datakey",
            "Envelope header + file key",
            "admin, data_owner, app allowed the key",
            Some("DataKeyRequest"),
            Some("DataKeyResponse"),
        ),
        (
            "post",
            "/v1/keys/{name}/unwrap",
            "File key of an envelope header",
            "data_owner, app allowed the key",
            Some("UnwrapRequest"),
            Some("UnwrapResponse"),
        ),
        (
            "post",
            "/v1/keys/{name}/release",
            "Key material to an attested app",
            "app (mutual TLS)",
            None,
            Some("ReleaseResponse"),
        ),
        (
            "get",
            "/v1/manifest",
            "Current manifest",
            "admin, auditor",
            None,
            Some("ManifestInfo"),
        ),
        (
            "put",
            "/v1/manifest",
            "Apply a manifest",
            "admin",
            Some("ManifestApplyRequest"),
            Some("ManifestInfo"),
        ),
        (
            "get",
            "/v1/manifest/versions",
            "Every manifest version",
            "admin, auditor",
            None,
            Some("ManifestVersions"),
        ),
        (
            "post",
            "/v1/users/{name}/token",
            "New bearer token for a user",
            "admin",
            Some("CreateTokenRequest"),
            Some("TokenResponse"),
        ),
        (
            "post",
            "/v1/clients/introspect",
            "What a worker client's token may ask of the calling app",
            "attested apps (mutual TLS)",
            Some("IntrospectRequest"),
            Some("IntrospectResponse"),
        ),
        (
            "get",
            "/v1/users/{name}/tokens",
            "A user's tokens: ids, issue and expiry dates",
            "admin",
            None,
            Some("TokenList"),
        ),
        (
            "delete",
            "/v1/users/{name}/tokens/{id}",
            "Revoke one of a user's tokens (audited)",
            "admin",
            None,
            None,
        ),
        (
            "get",
            "/v1/certificates",
            "Issued app certificates",
            "admin, auditor",
            None,
            Some("CertificateList"),
        ),
        (
            "post",
            "/v1/certificates/{serial}/revoke",
            "Revoke an app certificate",
            "admin",
            None,
            None,
        ),
        (
            "post",
            "/v1/tokenize",
            "FF1 format-preserving tokenization",
            "admin, data_owner, app allowed the key",
            Some("TokenizeRequest"),
            Some("TokenizeResponse"),
        ),
        (
            "post",
            "/v1/detokenize",
            "Reverse tokenization",
            "users with the detokenize permission",
            Some("TokenizeRequest"),
            Some("TokenizeResponse"),
        ),
        (
            "get",
            "/v1/audit/checkpoint",
            "Latest signed checkpoint",
            "admin, auditor",
            None,
            Some("AuditCheckpoint"),
        ),
        (
            "get",
            "/v1/audit/export",
            "Audit bundle (entries, checkpoints, evidence; docs/spec/audit-log.md)",
            "auditor",
            None,
            None,
        ),
        (
            "get",
            "/v1/log/proof/{index}",
            "A log entry with its inclusion proof under the latest checkpoint clients accept (cosigned when witnessed; docs/spec/release-transparency.md)",
            "attested apps, auditors; anyone if [transparency] public_log",
            None,
            Some("LogProof"),
        ),
        (
            "get",
            "/log/checkpoint",
            "The log's latest (cosigned) checkpoint, C2SP signed note (docs/spec/tiles.md)",
            "auditors; anyone if [transparency] public_log",
            None,
            None,
        ),
        (
            "post",
            "/v1/evidence",
            "The coordinator's own evidence, bound to the client's nonce and the root certificate's key",
            "anyone",
            Some("CoordinatorEvidenceRequest"),
            Some("CoordinatorEvidence"),
        ),
        (
            "post",
            "/v1/workflows/{name}/runs",
            "Queue a run of a manifest workflow",
            "admin, ml_engineer",
            None,
            Some("RunInfo"),
        ),
        (
            "get",
            "/v1/runs",
            "Workflow runs, newest first",
            "admin, ml_engineer, auditor",
            None,
            Some("RunList"),
        ),
        (
            "get",
            "/v1/runs/{id}",
            "One workflow run: state, progress, output digest",
            "admin, ml_engineer, auditor, the app that claimed it",
            None,
            Some("RunInfo"),
        ),
        (
            "post",
            "/v1/jobs/claim",
            "Claim the oldest queued run of a workflow the app runs",
            "attested apps (mutual TLS)",
            None,
            Some("ClaimResponse"),
        ),
        (
            "post",
            "/v1/jobs/{id}/progress",
            "Report a claimed run's progress",
            "the app that claimed it (mutual TLS)",
            Some("JobProgress"),
            Some("RunInfo"),
        ),
        (
            "post",
            "/v1/jobs/{id}/finish",
            "Report a claimed run's outcome",
            "the app that claimed it (mutual TLS)",
            Some("JobFinish"),
            Some("RunInfo"),
        ),
    ];
    let schemas = vec![
        schema::<ErrorBody>(),
        schema::<Health>(),
        schema::<CaInfo>(),
        schema::<ChallengeResponse>(),
        schema::<EvidenceWire>(),
        schema::<AttestRequest>(),
        schema::<AttestResponse>(),
        schema::<Approval>(),
        schema::<LogProof>(),
        schema::<CreateKeyRequest>(),
        schema::<KeyState>(),
        schema::<KeyVersionInfo>(),
        schema::<KeyInfo>(),
        schema::<KeyList>(),
        schema::<DataKeyRequest>(),
        schema::<DataKeyResponse>(),
        schema::<UnwrapRequest>(),
        schema::<UnwrapResponse>(),
        schema::<ReleasedVersion>(),
        schema::<ReleaseResponse>(),
        schema::<ManifestApplyRequest>(),
        schema::<ManifestInfo>(),
        schema::<ManifestVersions>(),
        schema::<CreateTokenRequest>(),
        schema::<WorkerPermission>(),
        schema::<IntrospectRequest>(),
        schema::<IntrospectResponse>(),
        schema::<TokenResponse>(),
        schema::<TokenInfo>(),
        schema::<TokenList>(),
        schema::<CertificateInfo>(),
        schema::<CertificateList>(),
        schema::<Alphabet>(),
        schema::<TokenizeRequest>(),
        schema::<TokenizeResponse>(),
        schema::<AuditCheckpoint>(),
        schema::<CoordinatorEvidenceRequest>(),
        schema::<CoordinatorEvidence>(),
        schema::<RunState>(),
        schema::<RunInfo>(),
        schema::<RunList>(),
        schema::<SealedLocation>(),
        schema::<ClaimResponse>(),
        schema::<Job>(),
        schema::<TrainSpec>(),
        schema::<TrainingProgress>(),
        schema::<TrainingResult>(),
        schema::<TrainingRecord>(),
        schema::<JobProgress>(),
        schema::<JobFinish>(),
        schema::<WorkflowOutput>(),
        schema::<Receipt>(),
    ];
    build("twinseal coordinator", OPS, schemas)
}

/// The OpenAPI document of a worker's `/v1` surface (HTTPS with the
/// worker's attested certificate).
pub fn worker_openapi() -> utoipa::openapi::OpenApi {
    const OPS: &[Op] = &[
        (
            "get",
            "/v1/info",
            "What is serving: app, measurement, model and evidence digests, certificate",
            "anyone",
            None,
            Some("WorkerInfo"),
        ),
        (
            "get",
            "/v1/openapi.json",
            "This document",
            "anyone",
            None,
            None,
        ),
        (
            "post",
            "/v1/compare",
            "Two images -> distance, probability, verdict, threshold, signed receipt",
            "clients with `compare` on this app (bearer token); anyone if the worker runs with insecure_public_compare",
            Some("CompareRequest"),
            Some("CompareResponse"),
        ),
        (
            "post",
            "/v1/compare/batch",
            "Many pairs (JSON, or application/octet-stream: raw grey images a0 b0 a1 b1 ... of the model's size) -> one result per pair, one signed receipt",
            "clients with `compare` on this app (bearer token); anyone if the worker runs with insecure_public_compare",
            Some("CompareBatchRequest"),
            Some("CompareBatchResponse"),
        ),
        (
            "post",
            "/v1/embed",
            "Images -> embeddings, signed receipt",
            "clients with `embed` on this app (bearer token)",
            Some("EmbedRequest"),
            Some("EmbedResponse"),
        ),
        (
            "post",
            "/v1/enroll",
            "Add reference images of an identity to the sealed gallery, signed receipt",
            "clients with `enroll` on this app (bearer token)",
            Some("EnrollRequest"),
            Some("EnrollResponse"),
        ),
        (
            "post",
            "/v1/verify",
            "A probe against one identity (1:1) or the whole gallery (1:N), signed receipt; an identity that is not enrolled answers like a non-match",
            "clients with `verify` (1:1) or `identify` (1:N) on this app (bearer token)",
            Some("VerifyRequest"),
            Some("VerifyResponse"),
        ),
    ];
    let schemas = vec![
        schema::<ErrorBody>(),
        schema::<ImageWire>(),
        schema::<CompareRequest>(),
        schema::<Verdict>(),
        schema::<CompareResult>(),
        schema::<CompareResponse>(),
        schema::<PairWire>(),
        schema::<CompareBatchRequest>(),
        schema::<CompareBatchResult>(),
        schema::<CompareBatchResponse>(),
        schema::<EmbedRequest>(),
        schema::<EmbedResult>(),
        schema::<EmbedResponse>(),
        schema::<EnrollRequest>(),
        schema::<EnrollResult>(),
        schema::<EnrollResponse>(),
        schema::<VerifyRequest>(),
        schema::<IdentityMatch>(),
        schema::<VerifyResult>(),
        schema::<VerifyResponse>(),
        schema::<Receipt>(),
        schema::<WorkerInfo>(),
        schema::<TrainedBy>(),
        schema::<LogProof>(),
    ];
    build("twinseal worker", OPS, schemas)
}

// (method, path, summary, who may call it, request body, answer)
type Op = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

type NamedSchema = (
    String,
    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
);

fn build(title: &str, ops: &[Op], schemas: Vec<NamedSchema>) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{InfoBuilder, OpenApiBuilder, PathsBuilder};
    let json_ref = |name: &str| {
        utoipa::openapi::ContentBuilder::new()
            .schema(Some(utoipa::openapi::Ref::from_schema_name(name)))
            .build()
    };
    let mut paths = PathsBuilder::new();
    for (method, path, summary, who, request, answer) in ops {
        let method = match *method {
            "get" => HttpMethod::Get,
            "post" => HttpMethod::Post,
            "put" => HttpMethod::Put,
            _ => HttpMethod::Delete,
        };
        let ok = match answer {
            Some(name) => utoipa::openapi::ResponseBuilder::new()
                .description("success")
                .content("application/json", json_ref(name))
                .build(),
            None => utoipa::openapi::ResponseBuilder::new()
                .description("success")
                .build(),
        };
        let err = utoipa::openapi::ResponseBuilder::new()
            .description("refused: {\"type\", \"detail\"}")
            .content("application/json", json_ref("ErrorBody"))
            .build();
        let mut op = OperationBuilder::new()
            .summary(Some(*summary))
            .description(Some(format!("Who may call it: {who}.")))
            .response("200", ok)
            .response("default", err);
        if let Some(name) = request {
            op = op.request_body(Some(
                utoipa::openapi::request_body::RequestBodyBuilder::new()
                    .content("application/json", json_ref(name))
                    .required(Some(utoipa::openapi::Required::True))
                    .build(),
            ));
        }
        paths = paths.path(*path, PathItem::new(method, op.build()));
    }
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(title)
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .paths(paths.build())
        .build();
    let mut components = utoipa::openapi::ComponentsBuilder::new();
    for (name, s) in schemas {
        components = components.schema(name, s);
    }
    doc.components = Some(components.build());
    doc
}

fn schema<T: ToSchema>() -> NamedSchema {
    (T::name().into_owned(), T::schema())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bearing_types_redact_themselves_in_debug() {
        let shown = [
            format!(
                "{:?}",
                DataKeyResponse {
                    header: "h".into(),
                    file_key: "SECRET1".into(),
                    key_id: "k".into()
                }
            ),
            format!(
                "{:?}",
                UnwrapResponse {
                    file_key: "SECRET2".into(),
                    key_id: "k".into(),
                    context: BTreeMap::new()
                }
            ),
            format!(
                "{:?}",
                ReleasedVersion {
                    version: 1,
                    key_id: "k".into(),
                    material: "SECRET3".into()
                }
            ),
            format!(
                "{:?}",
                TokenResponse {
                    user: "u".into(),
                    token: "SECRET4".into(),
                    id: "i".into(),
                    created: String::new(),
                    expires: None
                }
            ),
            format!(
                "{:?}",
                IntrospectRequest {
                    token: "SECRET5".into()
                }
            ),
        ];
        for s in &shown {
            assert!(!s.contains("SECRET") && s.contains("<redacted>"), "{s}");
        }
    }

    #[test]
    fn openapi_lists_every_operation_and_schema() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert!(doc["paths"]["/v1/keys/{name}/release"]["post"].is_object());
        // Two methods on one path are both kept.
        assert!(doc["paths"]["/v1/keys"]["get"].is_object());
        assert_eq!(
            doc["paths"]["/v1/keys"]["post"]["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/CreateKeyRequest"
        );
        // Every referenced schema exists.
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
        assert!(doc["components"]["schemas"]["AttestRequest"].is_object());
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn worker_openapi_references_only_listed_schemas() {
        let doc = serde_json::to_value(worker_openapi()).unwrap();
        assert_eq!(
            doc["paths"]["/v1/compare"]["post"]["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/CompareRequest"
        );
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
        assert_eq!(doc["info"]["title"], "twinseal worker");
    }

    #[test]
    fn images_are_tagged_by_their_encoding() {
        let r: CompareRequest =
            serde_json::from_str(r#"{"a":{"png":"AAAA"},"b":{"raw":"AQID"}}"#).unwrap();
        assert_eq!(r.a, ImageWire::Png("AAAA".into()));
        assert_eq!(r.b, ImageWire::Raw("AQID".into()));
        assert_eq!(
            serde_json::to_string(&Verdict::Dissimilar).unwrap(),
            r#""dissimilar""#
        );
    }

    #[test]
    fn fail_images_with_two_encodings_or_unknown_ones() {
        for bad in [
            r#"{"a":{"png":"AA","raw":"AA"},"b":{"raw":"AA"}}"#,
            r#"{"a":{"gif":"AA"},"b":{"raw":"AA"}}"#,
            r#"{"a":{"raw":"AA"}}"#,
            r#"{"a":{"raw":"AA"},"b":{"raw":"AA"},"c":1}"#,
        ] {
            assert!(
                serde_json::from_str::<CompareRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn compare_response_flattens_its_result() {
        let receipt = Receipt {
            format: "twinseal-receipt/1".into(),
            operation: "compare".into(),
            time: "2025-01-01T00:00:00Z".into(),
            inputs_sha256: String::new(),
            model_sha256: String::new(),
            evidence_sha256: String::new(),
            certificate_sha256: String::new(),
            output: "{}".into(),
            signature: String::new(),
            cose: None,
        };
        let r = CompareResponse {
            result: CompareResult {
                distance: 0.25,
                score: 0.5,
                probability: 0.5,
                verdict: Verdict::Similar,
                threshold: 0.5,
            },
            receipt,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "similar");
        assert_eq!(v["distance"], 0.25);
        let back: CompareResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back.result, r.result);
    }

    #[test]
    fn fail_unknown_fields_in_requests() {
        let bad = r#"{"name":"k","tags":{},"colour":"red"}"#;
        assert!(serde_json::from_str::<CreateKeyRequest>(bad).is_err());
        let ok = r#"{"name":"k"}"#;
        assert_eq!(
            serde_json::from_str::<CreateKeyRequest>(ok).unwrap().name,
            "k"
        );
    }

    #[test]
    fn error_body_uses_type_field() {
        let e = ErrorBody {
            kind: error_type::FORBIDDEN.into(),
            detail: "no".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"forbidden","detail":"no"}"#
        );
    }
}
