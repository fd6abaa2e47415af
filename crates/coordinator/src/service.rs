//! The coordinator's state and operations, independent of HTTP: keys,
//! data keys, attestation and certificates, key release, manifest,
//! tokens and tokenization. The HTTP layer (`http`) only maps requests to
//! these calls.
//!
//! Hot paths (release, data keys) read in-memory state; the store is
//! written through its group-committing writer, and every decision is
//! audited in the same transaction as its effect before it is answered.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use twinseal_api as api;
use twinseal_attest::{
    Challenge, CollateralSource, DcapCollateral, DcapVerifier, Evidence, SimulatedVerifier,
    SnpVerifier, VerifiedClaims, Verifiers,
};
use twinseal_audit::{AuditLog, CheckpointSigner, Event, VerifierKey};
use twinseal_envelope::{Context, Header, Kek, KeyId, SecretKey};
use twinseal_policy::{Placements, Policy, Request as PolicyRequest};
use twinseal_sql::Db;
use zeroize::Zeroizing;

use crate::ca::{AppCertRequest, Ca};
use crate::challenge::{ChallengeKey, Spent};
use crate::config::{Config, SelfEvidence};
use crate::error::{Error, Result};
use crate::guard::{CpuPool, Failure, FailureSummaries, RateLimiter};
use crate::manifest::{KeyUse, Manifest, Permission, Role, valid_name};
use crate::master::MasterKey;
use crate::metrics::Metrics;
use crate::store::{self, Store, Target, state};

/// Prefix of the envelope key ids of coordinator keys: `kms/<name>/v<n>`.
pub const KEY_ID_PREFIX: &str = "kms/";
/// How often counted failures are written as summary entries.
pub const FAILURE_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Prefix of bearer tokens.
pub const TOKEN_PREFIX: &str = "tws_";

/// RFC 3339 UTC text of a time.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "invalid-time".into())
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    d.as_ref().try_into().expect("32 bytes")
}

/// The envelope key id of a key version.
pub fn key_id(name: &str, version: u32) -> String {
    format!("{KEY_ID_PREFIX}{name}/v{version}")
}

/// Parse `kms/<name>/v<n>`.
pub fn parse_key_id(id: &str) -> Option<(&str, u32)> {
    let rest = id.strip_prefix(KEY_ID_PREFIX)?;
    let (name, v) = rest.rsplit_once("/v")?;
    let version: u32 = v.parse().ok()?;
    (valid_name(name) && version > 0 && v == version.to_string()).then_some((name, version))
}

fn key_aad(name: &str, version: u32) -> Vec<u8> {
    format!("twinseal/v1 stored key {name} {version}").into_bytes()
}

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// A user with a bearer token.
    User(UserCaller),
    /// An attested app with its certificate (mutual TLS).
    App(Arc<AppRecord>),
}

/// A user and what the current manifest grants them.
#[derive(Clone, Debug)]
pub struct UserCaller {
    /// The user's name.
    pub name: String,
    /// Roles from the current manifest.
    pub roles: Vec<Role>,
    /// Permissions from the current manifest.
    pub permissions: Vec<Permission>,
}

impl Caller {
    /// A name for audit events.
    pub fn actor(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::User(u) => format!("user:{}", u.name),
            Caller::App(a) => format!("app:{}", a.app),
        }
    }

    /// Succeeds when the caller is a user holding one of `roles`.
    pub fn require_role(&self, roles: &[Role]) -> Result<&UserCaller> {
        match self {
            Caller::Anonymous => Err(Error::Unauthenticated),
            Caller::User(u) if u.roles.iter().any(|r| roles.contains(r)) => Ok(u),
            _ => Err(Error::Forbidden(format!(
                "needs one of the roles {}",
                roles
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// An issued app certificate and the claims it was issued on.
#[derive(Debug)]
pub struct AppRecord {
    /// Serial, hex.
    pub serial: String,
    /// App name.
    pub app: String,
    /// Expiry.
    pub not_after: SystemTime,
    /// Issued on simulated evidence.
    pub simulated: bool,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The verified claims.
    pub claims: VerifiedClaims,
    /// SHA-256 of the evidence, hex.
    pub evidence_digest: String,
    revoked: AtomicBool,
}

impl AppRecord {
    /// Whether an admin revoked it.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

/// A key's metadata (never material).
#[derive(Clone, Debug)]
struct KeyMeta {
    state: api::KeyState,
    current_version: u32,
    versions: BTreeMap<u32, String>,
    tags: BTreeMap<String, String>,
    required_context: BTreeMap<String, String>,
    created: String,
}

impl KeyMeta {
    fn info(&self, name: &str) -> api::KeyInfo {
        api::KeyInfo {
            name: name.to_string(),
            state: self.state,
            current_version: self.current_version,
            versions: self
                .versions
                .iter()
                .map(|(v, created)| api::KeyVersionInfo {
                    version: *v,
                    key_id: key_id(name, *v),
                    created: created.clone(),
                })
                .collect(),
            tags: self.tags.clone(),
            required_context: self.required_context.clone(),
            created: self.created.clone(),
        }
    }
}

fn state_str(s: api::KeyState) -> &'static str {
    match s {
        api::KeyState::Enabled => "enabled",
        api::KeyState::Disabled => "disabled",
        api::KeyState::Destroyed => "destroyed",
    }
}

fn parse_state(s: &str) -> Result<api::KeyState> {
    match s {
        "enabled" => Ok(api::KeyState::Enabled),
        "disabled" => Ok(api::KeyState::Disabled),
        "destroyed" => Ok(api::KeyState::Destroyed),
        other => Err(Error::Store(format!("unknown key state {other:?}"))),
    }
}

/// The manifest in force, with the policies built from it.
pub struct ActiveManifest {
    /// Version number.
    pub version: u64,
    /// SHA-256 of its text, hex.
    pub digest: String,
    /// The manifest.
    pub manifest: Manifest,
    policies: HashMap<String, Policy>,
}

impl std::fmt::Debug for ActiveManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActiveManifest(v{})", self.version)
    }
}

/// A bearer token, known by the SHA-256 of its text.
#[derive(Clone, Debug)]
struct TokenRecord {
    user: String,
    id: String,
    /// Unix seconds; `None` for tokens issued before tokens expired.
    expires: Option<i64>,
}

impl TokenRecord {
    fn valid_at(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|e| unix(now) < e)
    }
}

/// The public id of a token: the first 8 bytes of its hash, hex.
fn token_id(hash: &[u8; 32]) -> String {
    hex::encode(&hash[..8])
}

/// How long a worker may cache an inactive client token.
pub const CLIENT_NEGATIVE_CACHE_SECS: u64 = 5;
/// Default lifetime of a bearer token.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest lifetime of a bearer token.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// Delete the tokens of users who are not in `manifest` (left from
/// before a manifest's removal of a user deleted them), audited, so that a
/// user added again under the same name never inherits them.
fn revoke_orphan_tokens(db: &dyn Db, manifest: &Manifest, signer: &CheckpointSigner) -> Result<()> {
    db.begin()?;
    let result = (|| {
        let orphans: Vec<state::TokenRow> = state::tokens(db)?
            .into_iter()
            .filter(|t| !manifest.users.contains_key(&t.user))
            .collect();
        let now = SystemTime::now();
        if !orphans.is_empty() {
            state::notify(db, "tokens")?;
        }
        for t in &orphans {
            state::delete_token(db, &t.hash)?;
            AuditLog::append(
                db,
                now,
                &Event::CredentialRevoked {
                    actor: "coordinator".into(),
                    name: t.user.clone(),
                    token: Some(t.id.clone()),
                    reason: Some("the user is no longer in the manifest".into()),
                },
            )?;
        }
        if !orphans.is_empty() {
            tracing::warn!(
                count = orphans.len(),
                "deleted bearer tokens of users no longer in the manifest"
            );
            // Signed before anything can export it, like every store batch.
            AuditLog::checkpoint(db, signer, now)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(db.commit()?),
        Err(e) => {
            let _ = db.rollback();
            Err(e)
        }
    }
}

/// A secret AES-256 key held in memory.
struct Material(Zeroizing<[u8; 32]>);

/// The coordinator.
pub struct Coordinator {
    config: Config,
    store: Store,
    master: Box<dyn MasterKey>,
    ca: Ca,
    verifiers: Verifiers,
    challenge_key: ChallengeKey,
    spent: Spent,
    placement_keys: Vec<Vec<u8>>,
    manifest: RwLock<Arc<ActiveManifest>>,
    keys: RwLock<HashMap<String, KeyMeta>>,
    material: Mutex<HashMap<(String, u32), Arc<Material>>>,
    tokens: RwLock<HashMap<[u8; 32], TokenRecord>>,
    certs: RwLock<HashMap<String, Arc<AppRecord>>>,
    verifier_key: VerifierKey,
    /// Hash tiles above level 0, computed once (`/log/tile/...`).
    tile_cache: twinseal_audit::TileCache,
    /// The witnesses of `[transparency]`, if any.
    witnesses: Option<crate::transparency::Witnesses>,
    /// The largest checkpoint this replica saw cosigned by the quorum.
    cosigned_size: std::sync::atomic::AtomicU64,
    /// The log's tree in memory, grown from the store each witnessing
    /// round, for consistency proofs in O(log n) (64 bytes per entry).
    witness_tree: Mutex<twinseal_audit::MemoryTree>,
    /// Log indices of `measurements_approved` entries, by manifest version and app.
    approvals: Mutex<HashMap<(u64, String), u64>>,
    server_tls: (Vec<u8>, Zeroizing<Vec<u8>>),
    self_evidence: SelfEvidenceSource,
    /// Failed logins and unverified attestations, counted until the next
    /// summary entry.
    failures: FailureSummaries,
    /// Requests from one remote address without credentials, and failed
    /// logins, share one bucket per address.
    anonymous: RateLimiter<IpAddr>,
    /// Values tokenized or detokenized per key.
    tokenization: RateLimiter<String>,
    /// CPU-bound request work (tokenization) off the async threads.
    cpu: CpuPool,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

/// Where the coordinator's own evidence comes from, opened at start.
enum SelfEvidenceSource {
    None,
    Tee(twinseal_attest::collect::Collector),
    InsecureSimulated {
        platform: twinseal_attest::SimulatedPlatform,
        measurement: std::sync::OnceLock<[u8; 48]>,
    },
}

impl SelfEvidenceSource {
    fn open(config: &SelfEvidence) -> Result<SelfEvidenceSource> {
        Ok(match config {
            SelfEvidence::None => SelfEvidenceSource::None,
            SelfEvidence::Tee => {
                SelfEvidenceSource::Tee(twinseal_attest::collect::Collector::system())
            }
            SelfEvidence::InsecureSimulated {
                platform_key,
                platform_id,
            } => {
                tracing::warn!(
                    "INSECURE: self_evidence = insecure_simulated: the coordinator's own evidence is simulated and proves nothing about hardware"
                );
                let pkcs8 =
                    Zeroizing::new(std::fs::read(platform_key).map_err(|e| {
                        Error::io(format!("reading {}", platform_key.display()), e)
                    })?);
                let platform = twinseal_attest::SimulatedPlatform::from_pkcs8(&pkcs8, platform_id)
                    .map_err(|e| Error::Config(format!("{}: {e}", platform_key.display())))?;
                SelfEvidenceSource::InsecureSimulated {
                    platform,
                    measurement: std::sync::OnceLock::new(),
                }
            }
        })
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("store", &self.store)
            .field("master", &self.master.id())
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// What `init` reports once.
pub struct InitReport {
    /// The first admin's bearer token. Shown once; stored only as a hash.
    pub admin_token: Zeroizing<String>,
    /// SHA-256 of the root certificate: what clients pin.
    pub ca_fingerprint: String,
    /// The root certificate, PEM.
    pub ca_pem: String,
    /// The audit checkpoint verifier key.
    pub audit_verifier_key: String,
}

fn new_token() -> Result<(Zeroizing<String>, [u8; 32])> {
    let mut b = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut b[..]).map_err(|_| Error::Crypto("no randomness".into()))?;
    let token = Zeroizing::new(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b[..])
    ));
    let hash = sha256(token.as_bytes());
    Ok((token, hash))
}

/// Create the data directory readable by its owner only (0700), or
/// tighten an existing one: it holds the database (and usually the master
/// key file).
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("restricting {}", dir.display()), e))?;
    }
    Ok(())
}

/// Create an empty file readable by its owner only (0600) before SQLite
/// opens it: SQLite gives its WAL and shared-memory files the same mode.
fn create_private_file(path: &std::path::Path) -> Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .map(drop)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

/// Most tags on one key.
pub const MAX_TAGS: usize = 32;
/// Longest tag name, bytes.
pub const MAX_TAG_NAME: usize = 64;
/// Longest tag value, bytes.
pub const MAX_TAG_VALUE: usize = 256;

/// The manifest `init` applies: one admin user.
pub const INITIAL_MANIFEST: &str =
    "# Applied by `twinseal coordinator init`.\n[users.admin]\nroles = [\"admin\"]\n";

/// Create the state in `config.data_dir`: database, master key, root CA,
/// server certificate, audit signing key, the first manifest and the
/// first admin token. Refuses to touch an existing database.
pub fn init(config: &Config) -> Result<InitReport> {
    config.validate()?;
    let dir = &config.data_dir;
    create_private_dir(dir)?;
    let target = Target::from_config(config)?;
    let conn = match &target {
        Target::Sqlite(db_path) => {
            if db_path.exists() {
                return Err(Error::Conflict(format!(
                    "{} already exists: the coordinator is initialized",
                    db_path.display()
                )));
            }
            None
        }
        Target::Postgres(_) => {
            let conn = target.connect(false)?;
            if store::schema::is_initialized(&*conn)? {
                return Err(Error::Conflict(format!(
                    "the {} already holds a coordinator's state: the coordinator is initialized",
                    target.describe()
                )));
            }
            Some(conn)
        }
    };
    let master = config.master_key.init(dir)?;
    let now = SystemTime::now();
    let (ca, ca_key) = Ca::generate(now)?;
    let server = ca.issue_server(&config.server_names, now)?;
    let origin = format!("twinseal.coordinator/{}", &ca.fingerprint()[..16]);
    let (signer, signer_pkcs8) = CheckpointSigner::generate(&origin)?;
    let vkey = signer.verifier_key();
    let (token, token_hash) = new_token()?;

    let conn = match (conn, &target) {
        (Some(c), _) => c,
        (None, Target::Sqlite(db_path)) => {
            create_private_file(db_path)?;
            target.connect(true)?
        }
        (None, Target::Postgres(_)) => unreachable!("connected above"),
    };
    let tx = &*conn;
    tx.begin()?;
    store::schema::create(tx)?;
    store::meta_put(tx, "master_key_id", master.id().as_bytes())?;
    store::meta_put(tx, "ca_cert", ca.cert_der())?;
    store::meta_put(tx, "ca_key", &master.wrap(&ca_key, b"twinseal/v1 ca key")?)?;
    store::meta_put(tx, "server_cert", &server.cert_der)?;
    store::meta_put(
        tx,
        "server_key",
        &master.wrap(&server.key_pkcs8, b"twinseal/v1 server key")?,
    )?;
    store::meta_put(tx, "audit_origin", origin.as_bytes())?;
    store::meta_put(
        tx,
        "audit_signer",
        &master.wrap(&signer_pkcs8, b"twinseal/v1 audit signer")?,
    )?;
    store::meta_put(tx, "audit_verifier_key", vkey.to_string().as_bytes())?;
    store::meta_put(tx, "challenge_key", &new_challenge_key(&*master)?)?;
    let digest = hex::encode(sha256(INITIAL_MANIFEST.as_bytes()));
    state::insert_manifest(tx, INITIAL_MANIFEST, &digest, &rfc3339(now), "init")?;
    state::insert_token(
        tx,
        &token_hash[..],
        "admin",
        &rfc3339(now),
        &token_id(&token_hash),
        Some(unix(now + DEFAULT_TOKEN_LIFETIME)),
    )?;
    AuditLog::append(
        tx,
        now,
        &Event::ManifestApplied {
            actor: "init".into(),
            version: 1,
            digest,
        },
    )?;
    AuditLog::append(
        tx,
        now,
        &Event::CredentialCreated {
            actor: "init".into(),
            name: "admin".into(),
            role: "admin".into(),
            token: Some(token_id(&token_hash)),
            expires: Some(rfc3339(now + DEFAULT_TOKEN_LIFETIME)),
        },
    )?;
    AuditLog::checkpoint(tx, &signer, now)?;
    tx.commit()?;
    drop(conn);
    // Auditors verify exports with this key; it is public.
    std::fs::write(dir.join("audit.pub"), format!("{vkey}\n"))
        .map_err(|e| Error::io("writing audit.pub", e))?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())
        .map_err(|e| Error::io("writing ca.pem", e))?;
    Ok(InitReport {
        admin_token: token,
        ca_fingerprint: ca.fingerprint(),
        ca_pem: ca.cert_pem(),
        audit_verifier_key: vkey.to_string(),
    })
}

impl Coordinator {
    /// Open an initialized coordinator. Must run inside a Tokio runtime.
    pub fn open(config: Config) -> Result<Arc<Coordinator>> {
        config.validate()?;
        let dir = config.data_dir.clone();
        let target = Target::from_config(&config)?;
        if let Target::Sqlite(db_path) = &target
            && !db_path.exists()
        {
            return Err(Error::Config(format!(
                "{} does not exist: run `twinseal coordinator init --data-dir {}` first",
                db_path.display(),
                dir.display()
            )));
        }
        let master = config.master_key.open(&dir)?;
        let conn = target.connect(false)?;
        store::schema::migrate(&*conn)?;
        let get = |k: &str| -> Result<Vec<u8>> {
            store::meta_get(&*conn, k)?.ok_or_else(|| Error::Store(format!("missing {k}")))
        };
        let stored_id = String::from_utf8(get("master_key_id")?).unwrap_or_default();
        if stored_id != master.id() {
            return Err(Error::Config(format!(
                "the master key {} is not the one this state was created with ({stored_id})",
                master.id()
            )));
        }
        let ca_key = master.unwrap(&get("ca_key")?, b"twinseal/v1 ca key")?;
        let ca = Ca::from_parts(get("ca_cert")?, &ca_key)?;
        let server_key = master.unwrap(&get("server_key")?, b"twinseal/v1 server key")?;
        let server_tls = (get("server_cert")?, Zeroizing::new(server_key.to_vec()));
        let origin = String::from_utf8(get("audit_origin")?)
            .map_err(|_| Error::Store("audit origin is not UTF-8".into()))?;
        let signer_pkcs8 = master.unwrap(&get("audit_signer")?, b"twinseal/v1 audit signer")?;
        let signer = CheckpointSigner::from_pkcs8(&origin, &signer_pkcs8)?;
        let verifier_key = signer.verifier_key();
        // States from before schema version 3 get their challenge key now
        // (the first replica to start stores it; the others read it).
        let wrapped_challenge_key = match store::meta_get(&*conn, "challenge_key")? {
            Some(k) => k,
            None => {
                conn.begin()?;
                let k = store::schema::meta_put_if_absent(
                    &*conn,
                    "challenge_key",
                    &new_challenge_key(&*master)?,
                );
                match k {
                    Ok(k) => {
                        conn.commit()?;
                        k
                    }
                    Err(e) => {
                        let _ = conn.rollback();
                        return Err(e);
                    }
                }
            }
        };
        let challenge_key =
            ChallengeKey::new(&master.unwrap(&wrapped_challenge_key, CHALLENGE_KEY_AAD)?);

        let mut verifiers = Verifiers::new();
        match SnpVerifier::new() {
            Ok(v) => verifiers = verifiers.with(v),
            Err(e) => tracing::warn!(error = %e, "SEV-SNP verification unavailable"),
        }
        if let Some(path) = &config.dcap_collateral {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let c = DcapCollateral::from_json(&bytes)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            let c2 = DcapCollateral::from_json(&bytes)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            verifiers = verifiers
                .with(DcapVerifier::sgx(CollateralSource::Fixed(c)))
                .with(DcapVerifier::tdx(CollateralSource::Fixed(c2)));
        }
        if config.insecure_allow_simulated_tee {
            tracing::warn!(
                "INSECURE: insecure_allow_simulated_tee = true: simulated-TEE evidence is accepted; \
                 certificates issued on it are marked, but it proves nothing about hardware"
            );
            let keys = config
                .simulated_platform_keys
                .iter()
                .map(|k| {
                    hex::decode(k).map_err(|_| Error::Config("simulated key is not hex".into()))
                })
                .collect::<Result<Vec<_>>>()?;
            verifiers =
                verifiers.insecure_allow_simulated_tee(SimulatedVerifier::insecure_new(keys));
        }
        let placement_keys = config
            .placement_keys
            .iter()
            .map(|k| hex::decode(k).map_err(|_| Error::Config("placement key is not hex".into())))
            .collect::<Result<Vec<_>>>()?;

        // In-memory state from the store.
        let latest = state::latest_manifest(&*conn)?;
        let (mversion, mdigest) = (latest.version, latest.digest);
        let manifest = Manifest::parse(&latest.text)?;
        let ungranted = manifest.data_owners_without_grants();
        if !ungranted.is_empty() {
            tracing::warn!(
                users = ?ungranted,
                "the manifest in force predates per-key grants: these data owners can use no key \
                 until an admin applies a manifest that grants them keys \
                 ([keys.<key>] owners = [...] or grants = {{ user = [\"seal\", \"open\", \"tokenize\", \"detokenize\"] }})"
            );
        }
        let active = build_active(mversion as u64, mdigest, manifest, &placement_keys)?;
        let keys = load_keys(&*conn)?;
        revoke_orphan_tokens(&*conn, &active.manifest, &signer)?;
        let mut tokens = HashMap::new();
        for t in state::tokens(&*conn)? {
            if let Ok(h) = <[u8; 32]>::try_from(t.hash.as_slice()) {
                tokens.insert(
                    h,
                    TokenRecord {
                        user: t.user,
                        id: t.id,
                        expires: t.expires,
                    },
                );
            }
        }
        drop(conn);
        let self_evidence = SelfEvidenceSource::open(&config.self_evidence)?;
        let witnesses = crate::transparency::Witnesses::from_config(&config.transparency)?;
        let listen_target = target.clone();
        let store = Store::open(target, signer)?;
        let config_tokenize_rate = config.tokenize_values_per_second;
        let config_anonymous = (config.anonymous_requests_per_second, config.anonymous_burst);
        let c = Arc::new(Coordinator {
            challenge_key,
            spent: Spent::default(),
            config,
            store,
            master,
            ca,
            verifiers,
            placement_keys,
            manifest: RwLock::new(Arc::new(active)),
            keys: RwLock::new(keys),
            material: Mutex::new(HashMap::new()),
            tokens: RwLock::new(tokens),
            certs: RwLock::new(HashMap::new()),
            verifier_key,
            tile_cache: twinseal_audit::TileCache::default(),
            witnesses,
            cosigned_size: std::sync::atomic::AtomicU64::new(0),
            witness_tree: Mutex::new(twinseal_audit::MemoryTree::default()),
            approvals: Mutex::new(HashMap::new()),
            server_tls,
            self_evidence,
            failures: FailureSummaries::default(),
            anonymous: RateLimiter::new(config_anonymous.0, config_anonymous.1),
            tokenization: RateLimiter::new(
                config_tokenize_rate,
                crate::tokenize::MAX_VALUES as u32,
            ),
            cpu: CpuPool::per_cpu(),
            metrics: Metrics::new(),
        });
        if let Target::Postgres(options) = &listen_target {
            start_replica_listener(options, Arc::downgrade(&c))?;
        }
        Ok(c)
    }

    /// Apply a change another replica committed (see
    /// [`start_replica_listener`]).
    fn on_replica_notice(&self, notice: twinseal_sql::pg::Notice) {
        use twinseal_sql::pg::Notice;
        let result = match &notice {
            Notice::Payload(p) => match p.split_once(':') {
                Some(("keys", name)) => {
                    self.forget_material(name);
                    self.reload_key(name)
                }
                Some(("certs", serial)) => self.reload_revocations(Some(serial)),
                _ if p == "manifest" => self.reload_manifest(),
                _ if p == "tokens" => self.reload_tokens(),
                _ => Ok(()),
            },
            Notice::Resync => self.resync(),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, ?notice, "replica: reloading state another replica changed failed");
        }
    }

    /// Reload everything cached from the store (after the listening
    /// connection was down, when notifications may have been missed).
    fn resync(&self) -> Result<()> {
        self.reload_manifest()?;
        self.reload_tokens()?;
        let keys = self.store.read(load_keys)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        self.material
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.reload_revocations(None)
    }

    /// Take the latest stored manifest if it is newer than the one in force.
    fn reload_manifest(&self) -> Result<()> {
        let latest = self.store.read(state::latest_manifest)?;
        let version = latest.version as u64;
        if version <= self.manifest().version {
            return Ok(());
        }
        let manifest = Manifest::parse(&latest.text)?;
        let active = build_active(version, latest.digest, manifest, &self.placement_keys)?;
        let mut current = self.manifest.write().unwrap_or_else(|e| e.into_inner());
        if current.version < version {
            tracing::info!(
                version,
                "replica: a manifest applied on another replica is in force"
            );
            *current = Arc::new(active);
        }
        Ok(())
    }

    /// Reload every bearer token (hashes only).
    fn reload_tokens(&self) -> Result<()> {
        let rows = self.store.read(state::tokens)?;
        let mut tokens = HashMap::new();
        for t in rows {
            if let Ok(h) = <[u8; 32]>::try_from(t.hash.as_slice()) {
                tokens.insert(
                    h,
                    TokenRecord {
                        user: t.user,
                        id: t.id,
                        expires: t.expires,
                    },
                );
            }
        }
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
        Ok(())
    }

    /// Mark cached certificates revoked that the store says are (one
    /// serial, or all).
    fn reload_revocations(&self, serial: Option<&str>) -> Result<()> {
        let revoked: Vec<String> = match serial {
            Some(s) => match self.store.read(|c| state::certificate_revoked(c, s))? {
                Some(true) => vec![s.to_string()],
                _ => Vec::new(),
            },
            None => self.store.read(state::revoked_serials)?,
        };
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner());
        for s in revoked {
            if let Some(r) = certs.get(&s) {
                r.revoked.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Record the start in the audit log (call once the server listens).
    pub async fn audit_start(&self) -> Result<()> {
        let insecure = self.config.insecure_allow_simulated_tee;
        self.audit(Event::CoordinatorStarted {
            version: env!("CARGO_PKG_VERSION").into(),
            insecure_allow_simulated_tee: insecure,
        })
        .await
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The root CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The coordinator's TLS certificate (DER) and key (PKCS#8).
    pub fn server_tls(&self) -> (&[u8], &[u8]) {
        (&self.server_tls.0, &self.server_tls.1)
    }

    /// The audit checkpoint verifier key.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier_key
    }

    /// The store (for the audit export and tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The manifest in force.
    pub fn manifest(&self) -> Arc<ActiveManifest> {
        self.manifest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Flush and stop the store writer.
    pub fn shutdown(&self) {
        self.store.close();
    }

    /// Append one event in its own job and wait until it is durable.
    pub async fn audit(&self, event: Event) -> Result<()> {
        self.store
            .write(move |c| {
                AuditLog::append(c, SystemTime::now(), &event)?;
                Ok(())
            })
            .await
    }

    // ----- identities -----

    /// Resolve a bearer token. Unknown tokens are counted as login
    /// failures (summarized in the audit log, see [`Self::flush_failures`])
    /// and take from the remote address's anonymous rate limit.
    pub async fn authenticate_token(&self, token: &str, remote: Option<IpAddr>) -> Result<Caller> {
        let hash = sha256(token.as_bytes());
        let record = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned();
        if record
            .as_ref()
            .is_some_and(|t| !t.valid_at(SystemTime::now()))
        {
            return Err(self.login_failed(remote, "expired bearer token"));
        }
        let user = record.map(|t| t.user);
        let m = self.manifest();
        match user
            .as_ref()
            .and_then(|u| m.manifest.users.get(u).map(|x| (u, x)))
        {
            Some((name, u)) => Ok(Caller::User(UserCaller {
                name: name.clone(),
                roles: u.roles.iter().copied().collect(),
                permissions: u.permissions.iter().copied().collect(),
            })),
            None => {
                let reason = if user.is_some() {
                    "token of a user no longer in the manifest"
                } else {
                    "unknown bearer token"
                };
                Err(self.login_failed(remote, reason))
            }
        }
    }

    /// Resolve an app's client certificate (DER). The certificate must be
    /// one this coordinator issued (exact bytes), unexpired and unrevoked.
    pub async fn authenticate_app(&self, der: &[u8], remote: Option<IpAddr>) -> Result<Caller> {
        match self.lookup_app(der).await {
            Ok(rec) => Ok(Caller::App(rec)),
            Err(reason) => {
                tracing::info!(?remote, %reason, "app certificate refused");
                Err(self.login_failed(remote, "app certificate refused"))
            }
        }
    }

    /// Count a failed login and answer it: 401, or 429 once the remote
    /// address has used up its anonymous rate limit.
    fn login_failed(&self, remote: Option<IpAddr>, reason: &str) -> Error {
        self.metrics.login_failures.inc();
        self.failures.record(Failure::Login, remote, reason, None);
        match remote {
            Some(ip) if !self.anonymous.check(&ip) => Error::TooManyRequests,
            _ => Error::Unauthenticated,
        }
    }

    /// Whether a request without credentials from `remote` is within the
    /// anonymous rate limit.
    pub fn admit_anonymous(&self, remote: IpAddr) -> bool {
        self.anonymous.check(&remote)
    }

    /// Write the failures counted since the last call as summary entries
    /// (`failures_summarized`, one per kind and remote address). The server
    /// calls it every [`FAILURE_SUMMARY_INTERVAL`] and at shutdown.
    pub async fn flush_failures(&self) -> Result<()> {
        let events = self.failures.take();
        if events.is_empty() {
            return Ok(());
        }
        self.store
            .write(move |c| {
                let now = SystemTime::now();
                for e in &events {
                    AuditLog::append(c, now, e)?;
                }
                Ok(())
            })
            .await
    }

    async fn lookup_app(&self, der: &[u8]) -> std::result::Result<Arc<AppRecord>, String> {
        let facts = crate::ca::cert_facts(der).map_err(|_| "unparsable".to_string())?;
        let cached = self
            .certs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&facts.serial)
            .cloned();
        let rec = match cached {
            Some(r) => r,
            None => self.load_app(&facts.serial).map_err(|e| e.to_string())?,
        };
        if rec.der != der {
            return Err("not issued by this coordinator".into());
        }
        if rec.is_revoked() {
            return Err(format!("serial {} is revoked", rec.serial));
        }
        if SystemTime::now() > rec.not_after {
            return Err(format!("serial {} has expired", rec.serial));
        }
        Ok(rec)
    }

    /// Load a certificate issued before a restart and re-verify the
    /// evidence it carries (with the challenge it was issued on).
    fn load_app(&self, serial: &str) -> Result<Arc<AppRecord>> {
        let row = self.store.read(|c| state::certificate(c, serial))?;
        let state::CertRow {
            app,
            not_after,
            simulated,
            revoked,
            evidence_digest,
            challenge,
            der,
            ..
        } = row.ok_or_else(|| Error::NotFound("not issued by this coordinator".into()))?;
        let claims = twinseal_attest::cert::verify_certificate(
            &der,
            &self.verifiers,
            &challenge,
            SystemTime::now(),
        )
        .map_err(|e| Error::AttestationRejected(vec![e.to_string()]))?;
        let rec = Arc::new(AppRecord {
            serial: serial.to_string(),
            app,
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64),
            simulated,
            der,
            claims,
            evidence_digest,
            revoked: AtomicBool::new(revoked),
        });
        self.certs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(serial.to_string(), rec.clone());
        Ok(rec)
    }

    // ----- attestation -----

    /// A one-time challenge.
    pub fn challenge(&self) -> api::ChallengeResponse {
        let c = self.challenge_key.issue(SystemTime::now());
        api::ChallengeResponse {
            challenge: c.to_hex(),
            ttl_secs: self.config.challenge_ttl_secs,
        }
    }

    /// Verify evidence bound to a challenge and the CSR's key, appraise it
    /// against the manifest and policy, and issue an app certificate.
    ///
    /// Nothing is stored for evidence that is not shown genuine first
    /// (challenge redeemed, kind enabled, signatures and binding checked):
    /// such a rejection is counted with the evidence's digest and size in
    /// the next failure summary. Evidence that verifies but that the
    /// manifest or policy refuses is stored with its rejection.
    pub async fn attest(
        &self,
        req: api::AttestRequest,
        remote: Option<IpAddr>,
    ) -> Result<api::AttestResponse> {
        let started = std::time::Instant::now();
        let out = self.attest_inner(req, remote).await;
        self.metrics.observe_attest(out.is_ok(), started.elapsed());
        out
    }

    async fn attest_inner(
        &self,
        req: api::AttestRequest,
        remote: Option<IpAddr>,
    ) -> Result<api::AttestResponse> {
        // Malformed input is a 400 and changes nothing (not even the challenge).
        let challenge: [u8; 32] = hex::decode(&req.challenge)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::BadRequest("challenge must be 64 hex digits".into()))?;
        let challenge = Challenge::from_bytes(challenge);
        let evidence = decode_evidence(&req.evidence)?;
        let unverified = |reason: String| {
            tracing::warn!(app = %req.app, ?remote, %reason, "attestation rejected before verification");
            self.failures.record(
                Failure::Attestation,
                remote,
                &reason,
                Some((
                    hex::encode(sha256(evidence.bytes())),
                    evidence.bytes().len() as u64,
                )),
            );
            Error::AttestationRejected(vec![reason])
        };
        // A kind no verifier is enabled for (simulated evidence on a
        // coordinator that does not allow it) is not parsed further.
        if !self.verifiers.is_enabled(evidence.kind()) {
            return Err(unverified(format!(
                "no verifier enabled for {} evidence",
                evidence.kind()
            )));
        }
        let csr = crate::ca::parse_csr(&req.csr)?;
        if !valid_name(&req.app) {
            return Err(Error::BadRequest("invalid app name".into()));
        }
        // An app certificate never names the coordinator, nor anything its
        // app's entry does not allow.
        {
            let m = self.manifest();
            for name in csr.names() {
                if self
                    .config
                    .server_names
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&name))
                {
                    return Err(Error::BadRequest(format!(
                        "the CSR asks for {name:?}, one of the coordinator's own names: an app certificate never names the coordinator (give the app other names)"
                    )));
                }
                if m.manifest.apps.contains_key(&req.app)
                    && !m.manifest.app_allows_name(&req.app, &name)
                {
                    return Err(Error::BadRequest(format!(
                        "the CSR asks for {name:?}, which the manifest's names for app {} do not allow",
                        req.app
                    )));
                }
            }
        }
        let now = SystemTime::now();
        let app = req.app.clone();
        let redeem = {
            let challenge = challenge.as_bytes().to_vec();
            let now_unix = unix(now);
            move |c: &dyn Db, expires: u64| {
                // About one attestation in sixteen also drops expired records.
                state::redeem_challenge(
                    c,
                    &challenge,
                    i64::try_from(expires).unwrap_or(i64::MAX),
                    now_unix,
                    challenge[8] & 0x0f == 0,
                )
            }
        };
        let redeem2 = redeem.clone();
        let reject = |reasons: Vec<String>, ev: Vec<u8>, expires: u64| async move {
            tracing::warn!(app = %app, reasons = ?reasons, "attestation rejected");
            let ev_reasons = reasons.clone();
            let app2 = app.clone();
            self.store
                .write(move |c| {
                    redeem2(c, expires)?;
                    let digest = AuditLog::append_evidence(c, &ev)?;
                    AuditLog::append(
                        c,
                        now,
                        &Event::AttestationRejected {
                            app: Some(app2),
                            reasons: ev_reasons,
                            evidence_digest: Some(digest),
                        },
                    )?;
                    Ok(())
                })
                .await?;
            Err::<api::AttestResponse, Error>(Error::AttestationRejected(reasons))
        };
        let ttl = Duration::from_secs(self.config.challenge_ttl_secs);
        let challenge_expires = match self.challenge_key.check(&challenge, now, ttl) {
            Ok(e) => e,
            Err(reason) => return Err(unverified(reason)),
        };
        // Spent here even if verification then fails: not retried here.
        if !self.spent.spend(&challenge, challenge_expires, now) {
            return Err(unverified("challenge unknown or already used".into()));
        }
        let expected = twinseal_attest::binding::report_data(challenge.as_bytes(), &csr.spki_der);
        let claims = match self.verifiers.verify(&evidence, &expected, now) {
            Ok(c) => c,
            Err(e) => {
                let reason = e
                    .reason()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string());
                return Err(unverified(reason));
            }
        };
        let evidence_digest = hex::encode(sha256(evidence.bytes()));
        if claims.is_simulated() {
            tracing::warn!(app = %req.app, "INSECURE: accepting simulated-TEE evidence (insecure_allow_simulated_tee)");
        }
        let m = self.manifest();
        let mut reasons = Vec::new();
        let mut location = None;
        match (m.manifest.apps.get(&req.app), m.policies.get(&req.app)) {
            (Some(_), Some(policy)) => {
                if !m.manifest.app_allows_tee(&req.app, claims.tee()) {
                    reasons.push(format!(
                        "TEE kind {} is not allowed for app {}",
                        claims.tee(),
                        req.app
                    ));
                }
                let d = policy
                    .evaluate(
                        &claims,
                        &PolicyRequest {
                            key_id: None,
                            insecure_allow_simulated_tee: self.config.insecure_allow_simulated_tee,
                        },
                    )
                    .map_err(|e| Error::Crypto(format!("policy: {e}")))?;
                reasons.extend(d.reasons);
                location = d.location;
            }
            _ => reasons.push(format!("app {} is not in the manifest", req.app)),
        }
        if !reasons.is_empty() {
            return reject(reasons, evidence.bytes().to_vec(), challenge_expires).await;
        }
        let simulated = claims.is_simulated();
        let approval_index = self.approval_index(&m, &req.app).await?;
        let cert = self.ca.issue_app(
            &csr,
            &AppCertRequest {
                app: &req.app,
                evidence: &evidence,
                simulated,
                now,
                lifetime: self.config.cert_lifetime(),
                approval: Some((m.version, approval_index)),
            },
        )?;
        let record = Arc::new(AppRecord {
            serial: cert.serial.clone(),
            app: req.app.clone(),
            not_after: cert.not_after,
            simulated,
            der: cert.der.clone(),
            evidence_digest: evidence_digest.clone(),
            revoked: AtomicBool::new(false),
            claims: claims.clone(),
        });
        let (app, serial, der, ev) = (
            req.app.clone(),
            cert.serial.clone(),
            cert.der.clone(),
            evidence.bytes().to_vec(),
        );
        let (tee, measurement, loc) = (
            claims.tee().to_string(),
            claims.measurement().to_hex(),
            location.clone(),
        );
        let not_after = cert.not_after;
        let challenge_bytes = challenge.as_bytes().to_vec();
        self.store
            .write(move |c| {
                redeem(c, challenge_expires)?;
                let digest = AuditLog::append_evidence(c, &ev)?;
                AuditLog::append(
                    c,
                    now,
                    &Event::AttestationVerified {
                        app: app.clone(),
                        tee,
                        measurement,
                        simulated,
                        evidence_digest: digest.clone(),
                        location: loc,
                    },
                )?;
                AuditLog::append(
                    c,
                    now,
                    &Event::CertificateIssued {
                        app: app.clone(),
                        serial: serial.clone(),
                        not_after: rfc3339(not_after),
                        simulated,
                        evidence_digest: digest.clone(),
                    },
                )?;
                state::insert_certificate(
                    c,
                    &state::CertRow {
                        serial,
                        app,
                        not_after: unix(not_after),
                        simulated,
                        revoked: false,
                        evidence_digest: digest,
                        challenge: challenge_bytes,
                        der,
                    },
                    unix(now),
                )?;
                Ok(())
            })
            .await?;
        self.certs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cert.serial.clone(), record);
        Ok(api::AttestResponse {
            certificate: crate::ca::pem_cert(&cert.der),
            ca: self.ca.cert_pem(),
            serial: cert.serial,
            not_after: rfc3339(cert.not_after),
            simulated,
            tee: claims.tee().to_string(),
            measurement: claims.measurement().to_hex(),
            location,
            approval: Some(api::Approval {
                manifest_version: m.version,
                log_index: approval_index,
            }),
        })
    }

    // ----- keys -----

    fn key_meta(&self, name: &str) -> Option<KeyMeta> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn reload_key(&self, name: &str) -> Result<()> {
        let meta = self.store.read(|c| load_key(c, name))?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        match meta {
            Some(m) => keys.insert(name.to_string(), m),
            None => keys.remove(name),
        };
        Ok(())
    }

    /// Unwrapped material of one version (cached in memory).
    fn material(&self, name: &str, version: u32) -> Result<Arc<Material>> {
        let k = (name.to_string(), version);
        if let Some(m) = self
            .material
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&k)
        {
            return Ok(m.clone());
        }
        let wrapped = self.store.read(|c| state::wrapped_key(c, name, version))?;
        let wrapped = wrapped
            .ok_or_else(|| Error::KeyUnavailable(format!("{name} v{version} has no material")))?;
        let plain = self.master.unwrap(&wrapped, &key_aad(name, version))?;
        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| {
            Error::Store(format!(
                "{name} v{version}: stored key has the wrong length"
            ))
        })?;
        let m = Arc::new(Material(Zeroizing::new(bytes)));
        self.material
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, m.clone());
        Ok(m)
    }

    fn forget_material(&self, name: &str) {
        self.material
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(n, _), _| n != name);
    }

    fn new_wrapped(&self, name: &str, version: u32) -> Result<Vec<u8>> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut k[..]).map_err(|_| Error::Crypto("no randomness".into()))?;
        Ok(self.master.wrap(&k[..], &key_aad(name, version))?)
    }

    /// Create a key (version 1).
    pub async fn create_key(
        &self,
        caller: &Caller,
        req: api::CreateKeyRequest,
    ) -> Result<api::KeyInfo> {
        let actor = caller.actor();
        if !valid_name(&req.name) {
            return Err(Error::BadRequest(
                "key names are 1 to 64 of a-z A-Z 0-9 . _ - (not starting with . or -)".into(),
            ));
        }
        if req.tags.len() > MAX_TAGS
            || req
                .tags
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > MAX_TAG_NAME || v.len() > MAX_TAG_VALUE)
        {
            return Err(Error::BadRequest(format!(
                "at most {MAX_TAGS} tags, names of 1 to {MAX_TAG_NAME} bytes, values of at most {MAX_TAG_VALUE}"
            )));
        }
        let ctx = Context::from_pairs(req.required_context.clone())
            .map_err(|e| Error::BadRequest(format!("required_context: {e}")))?;
        if ctx.has_reserved_keys() {
            return Err(Error::BadRequest(
                "required_context uses reserved keys".into(),
            ));
        }
        let wrapped = self.new_wrapped(&req.name, 1)?;
        let now = rfc3339(SystemTime::now());
        let name = req.name.clone();
        let tags = req.tags.clone();
        let tags_json =
            serde_json::to_string(&req.tags).map_err(|e| Error::BadRequest(e.to_string()))?;
        let ctx_json = serde_json::to_string(&req.required_context)
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        self.store
            .write(move |c| {
                if state::key_state(c, &name)?.is_some() {
                    return Err(Error::Conflict(format!(
                        "key {name} exists (names are never reused)"
                    )));
                }
                state::insert_key(c, &name, &tags_json, &ctx_json, &now, &wrapped)?;
                state::notify(c, &format!("keys:{name}"))?;
                AuditLog::append(
                    c,
                    SystemTime::now(),
                    &Event::KeyCreated {
                        actor,
                        key: name.clone(),
                        version: 1,
                        tags,
                    },
                )?;
                Ok(())
            })
            .await?;
        self.reload_key(&req.name)?;
        self.key_info(&req.name)
    }

    /// Metadata of one key.
    pub fn key_info(&self, name: &str) -> Result<api::KeyInfo> {
        self.key_meta(name)
            .map(|m| m.info(name))
            .ok_or_else(|| Error::NotFound(format!("key {name}")))
    }

    /// Metadata of every key.
    pub fn list_keys(&self) -> api::KeyList {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = keys.iter().map(|(n, m)| m.info(n)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        api::KeyList { keys: out }
    }

    /// Rotate: a new current version; old versions keep opening old data.
    pub async fn rotate_key(&self, caller: &Caller, name: &str) -> Result<api::KeyInfo> {
        let meta = self
            .key_meta(name)
            .ok_or_else(|| Error::NotFound(format!("key {name}")))?;
        if meta.state == api::KeyState::Destroyed {
            return Err(Error::KeyUnavailable(format!("key {name} is destroyed")));
        }
        let actor = caller.actor();
        let n = name.to_string();
        let version = meta.current_version + 1;
        let wrapped = self.new_wrapped(name, version)?;
        self.store
            .write(move |c| {
                let current = state::current_version_if_live(c, &n)?
                    .ok_or_else(|| Error::KeyUnavailable(format!("key {n} is destroyed")))?;
                if current + 1 != version {
                    return Err(Error::Conflict(format!("key {n} was rotated concurrently")));
                }
                state::add_key_version(c, &n, version, &wrapped, &rfc3339(SystemTime::now()))?;
                state::notify(c, &format!("keys:{n}"))?;
                AuditLog::append(
                    c,
                    SystemTime::now(),
                    &Event::KeyRotated {
                        actor,
                        key: n.clone(),
                        version,
                    },
                )?;
                Ok(())
            })
            .await?;
        self.reload_key(name)?;
        self.key_info(name)
    }

    /// Disable or enable a key.
    pub async fn set_key_enabled(
        &self,
        caller: &Caller,
        name: &str,
        enabled: bool,
    ) -> Result<api::KeyInfo> {
        let actor = caller.actor();
        let n = name.to_string();
        self.store
            .write(move |c| {
                let current =
                    state::key_state(c, &n)?.ok_or_else(|| Error::NotFound(format!("key {n}")))?;
                if current == "destroyed" {
                    return Err(Error::KeyUnavailable(format!("key {n} is destroyed")));
                }
                let new = if enabled { "enabled" } else { "disabled" };
                state::set_key_state(c, &n, new)?;
                state::notify(c, &format!("keys:{n}"))?;
                let ev = if enabled {
                    Event::KeyEnabled {
                        actor,
                        key: n.clone(),
                    }
                } else {
                    Event::KeyDisabled {
                        actor,
                        key: n.clone(),
                    }
                };
                AuditLog::append(c, SystemTime::now(), &ev)?;
                Ok(())
            })
            .await?;
        self.reload_key(name)?;
        self.key_info(name)
    }

    /// Destroy (crypto-shred): every version's wrapped material is deleted
    /// (SQLite's secure delete overwrites it, and the WAL is checkpointed
    /// and truncated), and the destruction is audited. Irreversible.
    pub async fn destroy_key(&self, caller: &Caller, name: &str) -> Result<api::KeyInfo> {
        let actor = caller.actor();
        let n = name.to_string();
        self.store
            .write(move |c| {
                let current =
                    state::key_state(c, &n)?.ok_or_else(|| Error::NotFound(format!("key {n}")))?;
                if current == "destroyed" {
                    return Err(Error::KeyUnavailable(format!(
                        "key {n} is already destroyed"
                    )));
                }
                let versions: Vec<u32> = state::live_versions(c, &n)?.into_keys().collect();
                state::destroy_key(c, &n)?;
                state::notify(c, &format!("keys:{n}"))?;
                AuditLog::append(
                    c,
                    SystemTime::now(),
                    &Event::KeyDestroyed {
                        actor,
                        key: n.clone(),
                        versions,
                    },
                )?;
                Ok(())
            })
            .await?;
        self.forget_material(name);
        self.reload_key(name)?;
        // Move the overwritten pages out of the WAL too (SQLite); vacuum
        // the dead row versions (PostgreSQL).
        self.store.read(state::purge_deleted)?;
        self.key_info(name)
    }

    /// Why the manifest and policy refuse `key` to the attested `app`
    /// (empty: they allow it): the key is given to the app, the TEE kind is
    /// allowed, and the app's policy, evaluated again with the
    /// certificate's claims and this key (placement, TCB, debug), passes.
    fn app_key_reasons(&self, app: &AppRecord, name: &str) -> Result<Vec<String>> {
        let m = self.manifest();
        let mut reasons = Vec::new();
        if !m.manifest.apps.contains_key(&app.app) {
            reasons.push(format!("app {} is not in the manifest", app.app));
        } else if !m.manifest.app_may_use_key(&app.app, name) {
            reasons.push(format!(
                "the manifest does not give key {name} to app {}",
                app.app
            ));
        } else {
            if !m.manifest.app_allows_tee(&app.app, app.claims.tee()) {
                reasons.push(format!(
                    "TEE kind {} is not allowed for app {}",
                    app.claims.tee(),
                    app.app
                ));
            }
            if let Some(policy) = m.policies.get(&app.app) {
                let d = policy
                    .evaluate(
                        &app.claims,
                        &PolicyRequest {
                            key_id: Some(name.to_string()),
                            insecure_allow_simulated_tee: self.config.insecure_allow_simulated_tee,
                        },
                    )
                    .map_err(|e| Error::Crypto(format!("policy: {e}")))?;
                reasons.extend(d.reasons);
            }
        }
        Ok(reasons)
    }

    /// For an app caller: the manifest and policy must allow it `key`
    /// (see [`Self::app_key_reasons`]); a refusal is audited. Users pass.
    async fn check_app_policy(&self, caller: &Caller, key: &str) -> Result<()> {
        if let Caller::App(a) = caller {
            let reasons = self.app_key_reasons(a, key)?;
            if !reasons.is_empty() {
                let err = Error::Denied(reasons);
                return Err(self.deny_data_key(caller, key, err).await);
            }
        }
        Ok(())
    }

    /// Whether a user caller is granted `what` on `key` by the manifest.
    fn user_granted(&self, caller: &Caller, key: &str, what: KeyUse) -> bool {
        match caller {
            Caller::User(u) => self.manifest().manifest.user_may(&u.name, key, what),
            _ => false,
        }
    }

    fn may_use_key_as_app(&self, caller: &Caller, key: &str) -> bool {
        match caller {
            Caller::App(a) => self.manifest().manifest.app_may_use_key(&a.app, key),
            _ => false,
        }
    }

    fn usable_key(&self, name: &str) -> Result<KeyMeta> {
        let meta = self
            .key_meta(name)
            .ok_or_else(|| Error::NotFound(format!("key {name}")))?;
        match meta.state {
            api::KeyState::Enabled => Ok(meta),
            s => Err(Error::KeyUnavailable(format!(
                "key {name} is {}",
                state_str(s)
            ))),
        }
    }

    fn check_required_context(meta: &KeyMeta, name: &str, ctx: &Context) -> Result<()> {
        for (k, v) in &meta.required_context {
            if ctx.get(k) != Some(v.as_str()) {
                return Err(Error::Forbidden(format!(
                    "key {name} requires the encryption context {k}={v}"
                )));
            }
        }
        Ok(())
    }

    /// A key placement with `trained_by` gives apps the file key of a
    /// model only when a training record of one of those trainer apps
    /// names this exact header; a refusal is audited.
    async fn check_trained_by(
        &self,
        caller: &Caller,
        app: &str,
        key: &str,
        header: &[u8],
    ) -> Result<()> {
        let m = self.manifest();
        let Some(trainers) = m
            .manifest
            .keys
            .get(key)
            .map(|k| k.trained_by.clone())
            .filter(|t| !t.is_empty())
        else {
            return Ok(());
        };
        let digest = hex::encode(sha256(header));
        let trainer = self
            .store
            .read(|c| crate::workflow::trainer_of_model(c, &digest))?;
        let reason = match trainer {
            Some(t) if trainers.contains(&t) => return Ok(()),
            Some(t) => format!(
                "key {key} serves only models trained by {}; this one was trained by {t}",
                trainers.join(", ")
            ),
            None => format!(
                "key {key} serves only models with a training record by {}; this file has none",
                trainers.join(", ")
            ),
        };
        tracing::warn!(
            app,
            key,
            "model without an approved training record refused"
        );
        Err(self
            .deny_data_key(caller, key, Error::Denied(vec![reason]))
            .await)
    }

    /// Audit a refused data-key operation on `key`, then return the error.
    async fn deny_data_key(&self, caller: &Caller, key: &str, err: Error) -> Error {
        let ev = Event::DataKeyDenied {
            actor: caller.actor(),
            key: key.into(),
            reasons: match &err {
                Error::Denied(reasons) => reasons.clone(),
                other => vec![other.to_string()],
            },
        };
        self.deny(ev, err).await
    }

    /// Audit a denial, then return it as the error.
    async fn deny(&self, ev: Event, err: Error) -> Error {
        match self.audit(ev).await {
            Ok(()) => err,
            Err(e) => e,
        }
    }

    /// A fresh envelope header with one stanza under the key's current
    /// version, and its file key. For users the manifest grants `seal` on
    /// the key, and apps the manifest gives the key.
    pub async fn data_key(
        &self,
        caller: &Caller,
        name: &str,
        req: api::DataKeyRequest,
    ) -> Result<api::DataKeyResponse> {
        let allowed =
            self.may_use_key_as_app(caller, name) || self.user_granted(caller, name, KeyUse::Seal);
        if !allowed {
            let err = match caller {
                Caller::Anonymous => return Err(Error::Unauthenticated),
                _ => Error::Forbidden(format!(
                    "may not seal with key {name} (the manifest grants no \"seal\" on it)"
                )),
            };
            return Err(self.deny_data_key(caller, name, err).await);
        }
        self.check_app_policy(caller, name).await?;
        let ctx = Context::from_pairs(req.context.clone())
            .map_err(|e| Error::BadRequest(format!("context: {e}")))?;
        let meta = self.usable_key(name)?;
        if let Err(e) = Self::check_required_context(&meta, name, &ctx) {
            return Err(self.deny_data_key(caller, name, e).await);
        }
        let version = meta.current_version;
        let m = self.material(name, version)?;
        let id = key_id(name, version);
        let kek = Kek::new(
            KeyId::new(id.clone()).map_err(|e| Error::Crypto(e.to_string()))?,
            SecretKey::from_bytes(*m.0),
        );
        let (header, file_key) = twinseal_envelope::new_header(&[kek], &ctx)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let ev = Event::DataKeyGenerated {
            actor: caller.actor(),
            key: name.into(),
            version,
            context: req.context,
        };
        self.audit_checked(name, ev).await?;
        Ok(api::DataKeyResponse {
            header: B64.encode(&header),
            file_key: B64.encode(file_key.expose()),
            key_id: id,
        })
    }

    /// Append `ev` only if `key` is still enabled at commit time.
    async fn audit_checked(&self, key: &str, ev: Event) -> Result<()> {
        let key = key.to_string();
        self.store
            .write(move |c| {
                let state = state::key_state(c, &key)?;
                if state.as_deref() != Some("enabled") {
                    return Err(Error::KeyUnavailable(format!("key {key} is not enabled")));
                }
                AuditLog::append(c, SystemTime::now(), &ev)?;
                Ok(())
            })
            .await
    }

    /// The file key of an envelope header with a stanza under one of this
    /// key's versions, after its commitment and MAC (and so its context)
    /// verified. For users the manifest grants `open` on the key, and
    /// apps the manifest gives the key.
    pub async fn unwrap(
        &self,
        caller: &Caller,
        name: &str,
        req: api::UnwrapRequest,
    ) -> Result<api::UnwrapResponse> {
        let allowed =
            self.may_use_key_as_app(caller, name) || self.user_granted(caller, name, KeyUse::Open);
        if !allowed {
            let err = match caller {
                Caller::Anonymous => return Err(Error::Unauthenticated),
                _ => Error::Forbidden(format!(
                    "may not open files under key {name} (the manifest grants no \"open\" on it)"
                )),
            };
            return Err(self.deny_data_key(caller, name, err).await);
        }
        self.check_app_policy(caller, name).await?;
        let bytes = B64
            .decode(&req.header)
            .map_err(|_| Error::BadRequest("header is not base64".into()))?;
        let header =
            Header::parse(&bytes).map_err(|e| Error::BadRequest(format!("header: {e}")))?;
        if let Caller::App(a) = caller {
            self.check_trained_by(caller, &a.app, name, header.as_bytes())
                .await?;
        }
        let meta = self.usable_key(name)?;
        let (version, id) = header
            .stanzas()
            .iter()
            .find_map(|s| {
                parse_key_id(s.key_id.as_str())
                    .filter(|(n, _)| *n == name)
                    .map(|(_, v)| (v, s.key_id.as_str().to_string()))
            })
            .ok_or_else(|| Error::BadRequest(format!("the header has no stanza for key {name}")))?;
        if !meta.versions.contains_key(&version) {
            return Err(Error::KeyUnavailable(format!(
                "{name} v{version} does not exist"
            )));
        }
        let m = self.material(name, version)?;
        let kek = Kek::new(
            KeyId::new(id.clone()).map_err(|e| Error::Crypto(e.to_string()))?,
            SecretKey::from_bytes(*m.0),
        );
        let file_key = match header.unwrap_file_key(&[kek]) {
            Ok(k) => k,
            Err(_) => {
                let err =
                    Error::BadRequest("the header does not authenticate under this key".into());
                return Err(self.deny_data_key(caller, name, err).await);
            }
        };
        let context: BTreeMap<String, String> = header
            .context()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Err(e) = Self::check_required_context(&meta, name, header.context()) {
            return Err(self.deny_data_key(caller, name, e).await);
        }
        let ev = Event::DataKeyUnwrapped {
            actor: caller.actor(),
            key: name.into(),
            version,
            context: context.clone(),
        };
        self.audit_checked(name, ev).await?;
        Ok(api::UnwrapResponse {
            file_key: B64.encode(file_key.expose()),
            key_id: id,
            context,
        })
    }

    /// Release a key's material to an attested app over mutual TLS: the
    /// certificate must be valid and unrevoked, the manifest must give the
    /// app the key, and the policy is evaluated again with the
    /// certificate's claims. Every decision is audited before the answer;
    /// if the audit write fails, the release is refused.
    pub async fn release(&self, caller: &Caller, name: &str) -> Result<api::ReleaseResponse> {
        let started = std::time::Instant::now();
        let out = self.release_inner(caller, name).await;
        self.metrics.observe_release(out.is_ok(), started.elapsed());
        out
    }

    async fn release_inner(&self, caller: &Caller, name: &str) -> Result<api::ReleaseResponse> {
        let app = match caller {
            Caller::App(a) => a.clone(),
            Caller::Anonymous => return Err(Error::Unauthenticated),
            Caller::User(_) => {
                return Err(Error::Forbidden("only attested apps receive keys".into()));
            }
        };
        let mut reasons = self.app_key_reasons(&app, name)?;
        if self
            .manifest()
            .manifest
            .keys
            .get(name)
            .is_some_and(|k| !k.trained_by.is_empty())
        {
            reasons.push(format!(
                "key {name} opens only models with a training record (trained_by): it is never released whole; ask for one model's file key"
            ));
        }
        let meta = self.key_meta(name);
        match &meta {
            None => reasons.push(format!("unknown key {name}")),
            Some(k) if k.state != api::KeyState::Enabled => {
                reasons.push(format!("key {name} is {}", state_str(k.state)))
            }
            _ => {}
        }
        let location = None::<String>;
        if reasons.is_empty() && app.simulated {
            tracing::warn!(app = %app.app, key = name, "INSECURE: releasing a key to a simulated-TEE app");
        }
        let mut versions = Vec::new();
        if reasons.is_empty() {
            let meta = meta.as_ref().expect("checked above");
            for v in meta.versions.keys() {
                match self.material(name, *v) {
                    Ok(mat) => versions.push(api::ReleasedVersion {
                        version: *v,
                        key_id: key_id(name, *v),
                        material: B64.encode(&mat.0[..]),
                    }),
                    Err(e) => reasons.push(format!("{e}")),
                }
            }
        }
        let (serial, app_name, key) = (app.serial.clone(), app.app.clone(), name.to_string());
        let current = meta.as_ref().map(|m| m.current_version).unwrap_or(0);
        let denied = !reasons.is_empty();
        // The decisive checks against committed state, in the same job as
        // the audit entry: the key is enabled and the certificate unrevoked.
        let outcome = self
            .store
            .write(move |c| {
                if denied {
                    AuditLog::append(
                        c,
                        SystemTime::now(),
                        &Event::KeyReleaseDenied {
                            app: Some(app_name),
                            serial: Some(serial),
                            key,
                            reasons: reasons.clone(),
                        },
                    )?;
                    return Ok(Err(reasons));
                }
                let (state, revoked) = state::release_checks(c, &key, &serial)?;
                let revoked = revoked.unwrap_or(true);
                let mut late = Vec::new();
                if state.as_deref() != Some("enabled") {
                    late.push(format!("key {key} is not enabled"));
                }
                if revoked {
                    late.push(format!("certificate {serial} is revoked"));
                }
                if !late.is_empty() {
                    AuditLog::append(
                        c,
                        SystemTime::now(),
                        &Event::KeyReleaseDenied {
                            app: Some(app_name),
                            serial: Some(serial),
                            key,
                            reasons: late.clone(),
                        },
                    )?;
                    return Ok(Err(late));
                }
                AuditLog::append(
                    c,
                    SystemTime::now(),
                    &Event::KeyReleased {
                        app: app_name,
                        serial,
                        key,
                        version: current,
                        location,
                    },
                )?;
                Ok(Ok(()))
            })
            .await?;
        match outcome {
            Ok(()) => Ok(api::ReleaseResponse {
                key: name.to_string(),
                current_version: current,
                versions,
            }),
            Err(reasons) => {
                tracing::warn!(app = %app.app, key = name, reasons = ?reasons, "key release denied");
                Err(Error::Denied(reasons))
            }
        }
    }

    // ----- release transparency -----

    /// The log index of the entry approving `app`'s measurements in the
    /// active manifest `m`. Manifests applied before release transparency
    /// have no such entries: they are appended (once) before the first
    /// certificate that names them.
    async fn approval_index(&self, m: &ActiveManifest, app: &str) -> Result<u64> {
        let version = m.version;
        let key = (version, app.to_string());
        if let Some(i) = self
            .approvals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(*i);
        }
        let stored = self.store.read(|c| read_approvals(c, version))?;
        let map = match stored {
            Some(map) if map.contains_key(app) => map,
            _ => {
                let manifest = m.manifest.clone();
                self.store
                    .write(move |c| {
                        if let Some(map) = read_approvals(c, version)?
                            && manifest.apps.keys().all(|a| map.contains_key(a))
                        {
                            return Ok(map);
                        }
                        log_approvals(c, SystemTime::now(), version, &manifest)
                    })
                    .await?
            }
        };
        let mut memo = self.approvals.lock().unwrap_or_else(|e| e.into_inner());
        for (a, i) in &map {
            memo.insert((version, a.clone()), *i);
        }
        map.get(app).copied().ok_or_else(|| {
            Error::Forbidden(format!("app {app} is not in manifest version {version}"))
        })
    }

    /// The proof of log entry `index` under the latest checkpoint clients
    /// accept (the latest cosigned by the witness quorum when witnesses are
    /// configured, else the latest signed): what a worker serves so that
    /// its clients can check that its measurement was logged.
    /// `only_app`: an attested app's caller may read only the approvals of
    /// its own app.
    pub fn approval_proof(&self, index: u64, only_app: Option<&str>) -> Result<api::LogProof> {
        let witnessed = self.witnesses.is_some();
        self.store.read_snapshot(|c| {
            let (size, note) = if witnessed {
                AuditLog::latest_cosigned(c)?.ok_or_else(|| {
                    Error::NotFound(
                        "no checkpoint has been cosigned by the witness quorum yet".into(),
                    )
                })?
            } else {
                let cp = AuditLog::latest_checkpoint(c)?
                    .ok_or_else(|| Error::NotFound("no checkpoint yet".into()))?;
                (cp.size, cp.note)
            };
            if index >= size {
                return Err(Error::NotFound(format!(
                    "entry {index} is not yet under a checkpoint clients accept (size {size})"
                )));
            }
            let entry = AuditLog::entries(c, index, 1)?
                .pop()
                .ok_or_else(|| Error::NotFound(format!("no entry {index}")))?;
            if let Some(own) = only_app
                && !matches!(&entry.event, Event::MeasurementsApproved { app, .. } if app == own)
            {
                return Err(Error::Forbidden(format!(
                    "entry {index} is not an approval of app {own}: apps read only their own"
                )));
            }
            let path = AuditLog::inclusion_proof(c, index, size)?;
            let p = twinseal_audit::approval_proof(index, &entry.canonical_bytes(), &path, &note);
            Ok(api::LogProof {
                index: p.index,
                entry: p.entry,
                proof: p.proof,
                checkpoint: p.checkpoint,
            })
        })
    }

    // ----- manifest and users -----

    /// Apply a manifest (admin). Refused when no admin with a token would
    /// remain, or when placements or policies do not load.
    pub async fn apply_manifest(&self, caller: &Caller, text: String) -> Result<api::ManifestInfo> {
        let actor = caller.actor();
        let result = self.check_manifest(&text);
        let (manifest, digest) = match result {
            Ok(v) => v,
            Err(e) => {
                let ev = Event::ManifestRejected {
                    actor,
                    reason: e.to_string(),
                };
                return Err(self.deny(ev, e).await);
            }
        };
        let now = SystemTime::now();
        // Removing a user deletes their tokens, in the same transaction: a
        // user added again later under the same name starts with none.
        let removed: Vec<([u8; 32], String, String)> = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, t)| !manifest.users.contains_key(&t.user))
            .map(|(h, t)| (*h, t.user.clone(), t.id.clone()))
            .collect();
        let (t, d, a) = (text.clone(), digest.clone(), actor.clone());
        let gone = removed.clone();
        let approved = manifest.clone();
        let (version, approvals) = self
            .store
            .write(move |c| {
                let v = state::insert_manifest(c, &t, &d, &rfc3339(now), &a)?;
                state::notify(c, "manifest")?;
                if !gone.is_empty() {
                    state::notify(c, "tokens")?;
                }
                AuditLog::append(
                    c,
                    now,
                    &Event::ManifestApplied {
                        actor: a.clone(),
                        version: v as u64,
                        digest: d,
                    },
                )?;
                // Release transparency: what this version approves is in
                // the log before any key can reach it.
                let approvals = log_approvals(c, now, v as u64, &approved)?;
                for (hash, user, id) in gone {
                    state::delete_token(c, &hash[..])?;
                    AuditLog::append(
                        c,
                        now,
                        &Event::CredentialRevoked {
                            actor: a.clone(),
                            name: user,
                            token: Some(id),
                            reason: Some(format!("user removed by manifest version {v}")),
                        },
                    )?;
                }
                Ok((v as u64, approvals))
            })
            .await?;
        {
            let mut memo = self.approvals.lock().unwrap_or_else(|e| e.into_inner());
            for (app, index) in approvals {
                memo.insert((version, app), index);
            }
        }
        {
            let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
            for (hash, _, _) in &removed {
                tokens.remove(hash);
            }
        }
        let active = build_active(version, digest.clone(), manifest, &self.placement_keys)?;
        *self.manifest.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(active);
        Ok(api::ManifestInfo {
            version,
            digest,
            applied_at: rfc3339(now),
            applied_by: actor,
            manifest: None,
        })
    }

    fn check_manifest(&self, text: &str) -> Result<(Manifest, String)> {
        let manifest = Manifest::parse(text)?;
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let admins_with_tokens = manifest
            .users_with(Role::Admin)
            .filter(|u| {
                tokens
                    .values()
                    .any(|t| t.user == *u && t.valid_at(SystemTime::now()))
            })
            .count();
        if admins_with_tokens == 0 {
            return Err(Error::Conflict(
                "the manifest would lock out every admin (no admin user with a token would remain)"
                    .into(),
            ));
        }
        drop(tokens);
        manifest.check_grants()?;
        let digest = hex::encode(sha256(text.as_bytes()));
        // Building it checks placements and policies.
        build_active(0, digest.clone(), manifest.clone(), &self.placement_keys)?;
        Ok((manifest, digest))
    }

    /// A stored manifest version (`None`: the current one).
    pub fn manifest_version(&self, version: Option<u64>) -> Result<api::ManifestInfo> {
        let v = version.unwrap_or(self.manifest().version) as i64;
        let m = self
            .store
            .read(|c| state::manifest(c, v))?
            .ok_or_else(|| Error::NotFound(format!("manifest version {v}")))?;
        Ok(api::ManifestInfo {
            version: m.version as u64,
            manifest: Some(m.text),
            digest: m.digest,
            applied_at: m.applied_at,
            applied_by: m.applied_by,
        })
    }

    /// Every manifest version (without texts).
    pub fn manifest_versions(&self) -> Result<api::ManifestVersions> {
        let versions = self
            .store
            .read(state::manifests)?
            .into_iter()
            .map(|m| api::ManifestInfo {
                version: m.version as u64,
                digest: m.digest,
                applied_at: m.applied_at,
                applied_by: m.applied_by,
                manifest: None,
            })
            .collect();
        Ok(api::ManifestVersions { versions })
    }

    /// A new bearer token for a manifest user (admin).
    pub async fn create_token(
        &self,
        caller: &Caller,
        user: &str,
        req: api::CreateTokenRequest,
    ) -> Result<api::TokenResponse> {
        let m = self.manifest();
        let u = m
            .manifest
            .users
            .get(user)
            .ok_or_else(|| Error::NotFound(format!("user {user} is not in the manifest")))?;
        let lifetime = match req.expires_in_secs {
            None => DEFAULT_TOKEN_LIFETIME,
            Some(s) if (1..=MAX_TOKEN_LIFETIME.as_secs()).contains(&s) => Duration::from_secs(s),
            Some(_) => {
                return Err(Error::BadRequest(format!(
                    "expires_in_secs must be between 1 and {}",
                    MAX_TOKEN_LIFETIME.as_secs()
                )));
            }
        };
        let role = u
            .roles
            .iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(",");
        let (token, hash) = new_token()?;
        let now = SystemTime::now();
        let record = TokenRecord {
            user: user.to_string(),
            id: token_id(&hash),
            expires: Some(unix(now + lifetime)),
        };
        let (actor, name, id, expires) = (
            caller.actor(),
            user.to_string(),
            record.id.clone(),
            record.expires,
        );
        let expires_text = rfc3339(now + lifetime);
        let ev_expires = expires_text.clone();
        self.store
            .write(move |c| {
                state::insert_token(c, &hash[..], &name, &rfc3339(now), &id, expires)?;
                state::notify(c, "tokens")?;
                AuditLog::append(
                    c,
                    now,
                    &Event::CredentialCreated {
                        actor,
                        name,
                        role,
                        token: Some(id),
                        expires: Some(ev_expires),
                    },
                )?;
                Ok(())
            })
            .await?;
        let id = record.id.clone();
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, record);
        Ok(api::TokenResponse {
            user: user.to_string(),
            token: token.to_string(),
            id,
            created: rfc3339(now),
            expires: Some(expires_text),
        })
    }

    /// For an attested app: what a worker client's bearer token may ask of
    /// it. Unknown, expired and non-client tokens are inactive (and counted
    /// as failed logins).
    pub fn introspect_client(
        &self,
        caller: &Caller,
        req: &api::IntrospectRequest,
    ) -> Result<api::IntrospectResponse> {
        let Caller::App(app) = caller else {
            return Err(match caller {
                Caller::Anonymous => Error::Unauthenticated,
                _ => Error::Forbidden("only attested apps introspect client tokens".into()),
            });
        };
        let inactive = api::IntrospectResponse {
            active: false,
            user: None,
            permissions: Vec::new(),
            cache_secs: CLIENT_NEGATIVE_CACHE_SECS,
        };
        if req.token.is_empty() || req.token.len() > 256 {
            return Ok(inactive);
        }
        let record = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sha256(req.token.as_bytes()))
            .cloned();
        let Some(record) = record.filter(|t| t.valid_at(SystemTime::now())) else {
            self.failures.record(
                Failure::Login,
                None,
                &format!("worker client token refused (via app {})", app.app),
                None,
            );
            return Ok(inactive);
        };
        let m = self.manifest();
        let is_client = m
            .manifest
            .users
            .get(&record.user)
            .is_some_and(|u| u.roles.contains(&Role::Client));
        let permissions = if is_client {
            m.manifest.client_permissions(&app.app, &record.user)
        } else {
            Vec::new()
        };
        if permissions.is_empty() {
            return Ok(inactive);
        }
        // Cache no longer than the token lives.
        let max = self.config.client_cache_secs;
        let cache_secs = match record.expires {
            Some(e) => (e - unix(SystemTime::now())).clamp(0, max as i64) as u64,
            None => max,
        };
        Ok(api::IntrospectResponse {
            active: true,
            user: Some(record.user),
            permissions,
            cache_secs,
        })
    }

    /// A user's tokens (ids and dates, never the tokens).
    pub fn list_tokens(&self, user: &str) -> Result<api::TokenList> {
        let rows: Vec<(String, String, Option<i64>)> = self
            .store
            .read(|c| state::user_tokens(c, user))?
            .into_iter()
            .map(|t| (t.id, t.created, t.expires))
            .collect();
        let now = unix(SystemTime::now());
        Ok(api::TokenList {
            user: user.to_string(),
            tokens: rows
                .into_iter()
                .map(|(id, created, expires)| api::TokenInfo {
                    id,
                    created,
                    expires: expires.map(|e| {
                        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(e.max(0) as u64))
                    }),
                    expired: expires.is_some_and(|e| e <= now),
                })
                .collect(),
        })
    }

    /// Revoke one of `user`'s tokens by id, audited; it stops working at
    /// once.
    pub async fn revoke_token(&self, caller: &Caller, user: &str, id: &str) -> Result<()> {
        let hash = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, t)| t.user == user && t.id == id)
            .map(|(h, _)| *h)
            .ok_or_else(|| Error::NotFound(format!("user {user} has no token {id}")))?;
        let own_last_admin = {
            let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
            let m = self.manifest();
            let now = SystemTime::now();
            let admins_left = tokens
                .iter()
                .filter(|(h, t)| {
                    **h != hash
                        && t.valid_at(now)
                        && m.manifest
                            .users
                            .get(&t.user)
                            .is_some_and(|u| u.roles.contains(&Role::Admin))
                })
                .count();
            admins_left == 0
        };
        if own_last_admin {
            return Err(Error::Conflict(
                "revoking this token would lock out every admin (no other valid admin token)"
                    .into(),
            ));
        }
        let (actor, name, tid) = (caller.actor(), user.to_string(), id.to_string());
        self.store
            .write(move |c| {
                state::delete_token(c, &hash[..])?;
                state::notify(c, "tokens")?;
                AuditLog::append(
                    c,
                    SystemTime::now(),
                    &Event::CredentialRevoked {
                        actor,
                        name,
                        token: Some(tid),
                        reason: Some("revoked by an admin".into()),
                    },
                )?;
                Ok(())
            })
            .await?;
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hash);
        Ok(())
    }

    // ----- the coordinator's own evidence -----

    /// The coordinator's own evidence, with report data
    /// `report_data(nonce, SPKI of the root certificate)`: a client that
    /// verifies it (and that the server it talks to chains to that root)
    /// may pin the root. Blocking (a TEE's evidence interface is a file
    /// system); call it off the async threads.
    pub fn own_evidence(
        &self,
        req: &api::CoordinatorEvidenceRequest,
    ) -> Result<api::CoordinatorEvidence> {
        let nonce = hex::decode(req.nonce.trim())
            .ok()
            .filter(|n| n.len() == 32)
            .ok_or_else(|| Error::BadRequest("nonce must be 32 bytes, hex".into()))?;
        let (_, root) = x509_parser::parse_x509_certificate(self.ca.cert_der())
            .map_err(|e| Error::Crypto(format!("root certificate: {e}")))?;
        let rd = twinseal_attest::report_data(&nonce, root.public_key().raw);
        let evidence = match &self.self_evidence {
            SelfEvidenceSource::None => None,
            SelfEvidenceSource::Tee(c) => Some(c.collect(&rd)?),
            SelfEvidenceSource::InsecureSimulated {
                platform,
                measurement,
            } => {
                let m = match measurement.get() {
                    Some(m) => *m,
                    None => {
                        let m = twinseal_attest::simulated::executable_measurement()?;
                        *measurement.get_or_init(|| m)
                    }
                };
                Some(platform.attest_with_measurement(&m, &rd, SystemTime::now())?)
            }
        };
        Ok(api::CoordinatorEvidence {
            tee: evidence
                .as_ref()
                .map(|e| e.kind().to_string())
                .unwrap_or_else(|| "none".into()),
            evidence: evidence.map(|e| {
                let (evidence, vcek) = match &e {
                    Evidence::SevSnp { report, vcek_der } => {
                        (B64.encode(report), vcek_der.as_ref().map(|v| B64.encode(v)))
                    }
                    other => (B64.encode(other.bytes()), None),
                };
                api::EvidenceWire { evidence, vcek }
            }),
            ca: self.ca.cert_pem(),
            ca_sha256: self.ca.fingerprint(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    // ----- certificates -----

    /// Issued certificates, newest first.
    pub fn list_certificates(&self) -> Result<api::CertificateList> {
        let certificates = self
            .store
            .read(state::certificates)?
            .into_iter()
            .map(|r| api::CertificateInfo {
                serial: r.serial,
                app: r.app,
                not_after: rfc3339(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(r.not_after.max(0) as u64),
                ),
                simulated: r.simulated,
                revoked: r.revoked,
                evidence_digest: r.evidence_digest,
            })
            .collect();
        Ok(api::CertificateList { certificates })
    }

    /// Revoke an app certificate (admin): its next request fails.
    pub async fn revoke_certificate(&self, caller: &Caller, serial: &str) -> Result<()> {
        let (actor, s) = (caller.actor(), serial.to_string());
        self.store
            .write(move |c| {
                let app = state::revoke_certificate(c, &s)?
                    .ok_or_else(|| Error::NotFound(format!("certificate {s}")))?;
                state::notify(c, &format!("certs:{s}"))?;
                AuditLog::append(
                    c,
                    SystemTime::now(),
                    &Event::CertificateRevoked {
                        app,
                        serial: s,
                        actor,
                    },
                )?;
                Ok(())
            })
            .await?;
        if let Some(r) = self
            .certs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(serial)
        {
            r.revoked.store(true, Ordering::Release);
        }
        Ok(())
    }

    // ----- tokenization -----

    /// FF1 tokenization under a named key: admins, data owners, and apps
    /// the manifest gives the key.
    pub async fn tokenize(
        &self,
        caller: &Caller,
        req: api::TokenizeRequest,
        reverse: bool,
    ) -> Result<api::TokenizeResponse> {
        let what = if reverse {
            KeyUse::Detokenize
        } else {
            KeyUse::Tokenize
        };
        // Apps tokenize (never detokenize) with the keys they are given.
        let allowed = (!reverse && self.may_use_key_as_app(caller, &req.key))
            || self.user_granted(caller, &req.key, what);
        let refuse = |err: Error| {
            let ev = Event::TokenizationDenied {
                actor: caller.actor(),
                key: req.key.clone(),
                reason: err.to_string(),
            };
            self.deny(ev, err)
        };
        if !allowed {
            if matches!(caller, Caller::Anonymous) {
                return Err(Error::Unauthenticated);
            }
            return Err(refuse(Error::Forbidden(format!(
                "the manifest grants no \"{}\" on key {}",
                what.as_str(),
                req.key
            )))
            .await);
        }
        let allow_small = self
            .manifest()
            .manifest
            .keys
            .get(&req.key)
            .is_some_and(|k| k.small_token_domains);
        if let Err(e) = crate::tokenize::check_request(
            req.alphabet,
            req.tweak.as_bytes(),
            &req.values,
            allow_small,
        ) {
            return Err(match e {
                Error::Forbidden(_) => refuse(e).await,
                e => e,
            });
        }
        let meta = self.usable_key(&req.key)?;
        let version = if reverse {
            req.version.unwrap_or(meta.current_version)
        } else {
            meta.current_version
        };
        if !meta.versions.contains_key(&version) {
            return Err(Error::NotFound(format!("{} v{version}", req.key)));
        }
        if !self
            .tokenization
            .take(&req.key, req.values.len().max(1) as u32)
        {
            return Err(Error::TooManyRequests);
        }
        let m = self.material(&req.key, version)?;
        let (alphabet, tweak, input) = (req.alphabet, req.tweak.clone(), req.values);
        let values = self
            .cpu
            .run(move |cancel| {
                crate::tokenize::apply(&m.0, alphabet, tweak.as_bytes(), &input, !reverse, &|| {
                    cancel.is_cancelled()
                })
            })
            .await?;
        let count = values.len() as u64;
        let ev = if reverse {
            Event::Detokenized {
                actor: caller.actor(),
                key: req.key.clone(),
                count,
            }
        } else {
            Event::Tokenized {
                actor: caller.actor(),
                key: req.key.clone(),
                count,
            }
        };
        self.audit_checked(&req.key, ev).await?;
        Ok(api::TokenizeResponse { version, values })
    }

    // ----- audit -----

    /// The latest signed checkpoint.
    pub fn audit_checkpoint(&self) -> Result<api::AuditCheckpoint> {
        let cp = self
            .store
            .read(|c| Ok(AuditLog::latest_checkpoint(c)?))?
            .ok_or_else(|| Error::NotFound("no checkpoint yet".into()))?;
        Ok(api::AuditCheckpoint {
            size: cp.size,
            note: cp.note,
            verifier_key: self.verifier_key.to_string(),
        })
    }

    /// What the log serves as C2SP tiles at `path` under `/log/`:
    /// `checkpoint` or a tile path (`tile/<L>/<N>[.p/<W>]`,
    /// `tile/entries/<N>[.p/<W>]`) of the tree of the latest checkpoint.
    pub fn log_resource(&self, path: &str) -> Result<Vec<u8>> {
        if path == "checkpoint" && self.witnesses.is_some() {
            // With witnesses, only checkpoints the quorum cosigned.
            return self
                .store
                .read(|c| Ok(AuditLog::latest_cosigned(c)?))?
                .map(|(_, note)| note.into_bytes())
                .ok_or_else(|| {
                    Error::NotFound(
                        "no checkpoint has been cosigned by the witness quorum yet".into(),
                    )
                });
        }
        self.store.read(|c| {
            AuditLog::serve(c, path, &self.tile_cache).map_err(|e| match e {
                twinseal_audit::Error::InvalidRange(m) => Error::NotFound(m),
                twinseal_audit::Error::InvalidTile(m) => Error::NotFound(m),
                e => e.into(),
            })
        })
    }

    /// Whether `[transparency] witnesses` are configured.
    pub fn has_witnesses(&self) -> bool {
        self.witnesses.is_some()
    }

    /// One round of witnessing: if the latest checkpoint is newer than the
    /// last one cosigned, ask every witness (with a consistency proof from
    /// the size each last cosigned) and keep it with the cosignatures once
    /// the quorum cosigned. Refusals are logged as errors: a witness that
    /// refuses a consistency proof or sees another root at a size it
    /// cosigned has seen another history of this log.
    pub async fn witness_round(&self) -> Result<()> {
        let Some(w) = &self.witnesses else {
            return Ok(());
        };
        let Some(cp) = self.store.read(|c| Ok(AuditLog::latest_checkpoint(c)?))? else {
            return Ok(());
        };
        if cp.size
            <= self
                .cosigned_size
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        let size = cp.size;
        {
            let mut tree = self.witness_tree.lock().unwrap_or_else(|e| e.into_inner());
            let have = tree.len();
            if have < size {
                let more = self
                    .store
                    .read(|c| Ok(AuditLog::leaf_hashes(c, have, size)?))?;
                tree.extend(more);
            }
            if tree.root(size) != Some(cp.root) {
                return Err(Error::Audit(format!(
                    "the stored leaves do not give the head of the checkpoint of size {size}"
                )));
            }
        }
        let proof = |old: u64| -> Result<Vec<twinseal_audit::Hash>> {
            self.witness_tree
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .consistency_proof(old, size)
                .ok_or_else(|| Error::Audit(format!("no consistency proof from {old} to {size}")))
        };
        let answers = w.ask(&cp.note, size, &proof).await;
        for (name, a) in &answers {
            if let crate::transparency::Answer::Refused(status, detail) = a {
                if matches!(status, 403 | 404 | 409 | 422) {
                    tracing::error!(witness = %name, status, %detail, size,
                        "a witness REFUSED the audit log's checkpoint: it may have seen another history of this log");
                } else {
                    tracing::warn!(witness = %name, status, %detail, size, "a witness did not cosign");
                }
            }
        }
        let (note, n) = crate::transparency::gather(&cp.note, &answers, &w.keys());
        if n < w.quorum() {
            tracing::error!(
                size,
                cosigned = n,
                quorum = w.quorum(),
                "the checkpoint lacks the witness quorum; /log/checkpoint keeps the last cosigned one"
            );
            return Ok(());
        }
        self.store
            .write(move |db| Ok(AuditLog::store_cosigned(db, size, &note)?))
            .await?;
        self.cosigned_size
            .fetch_max(size, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The full audit bundle (entries, checkpoints, evidence), JSON.
    pub fn audit_export(&self) -> Result<Vec<u8>> {
        let bundle = self.store.read_snapshot(|c| Ok(AuditLog::export(c)?))?;
        Ok(bundle.to_json())
    }
}

/// The `measurements_approved` entries of manifest `version`, one per app,
/// appended in the caller's transaction, with their indices kept in `meta`
/// (`approvals/<version>`, JSON `{app: index}`).
fn log_approvals(
    c: &dyn twinseal_sql::Db,
    now: SystemTime,
    version: u64,
    manifest: &crate::manifest::Manifest,
) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut map = std::collections::BTreeMap::new();
    for (name, app) in &manifest.apps {
        let index = AuditLog::append(
            c,
            now,
            &Event::MeasurementsApproved {
                manifest_version: version,
                app: name.clone(),
                tee: app.tee.clone(),
                measurements: app.measurements.clone(),
                signers: app.signers.clone(),
            },
        )?;
        map.insert(name.clone(), index);
    }
    let json = serde_json::to_vec(&map).map_err(|e| Error::Store(e.to_string()))?;
    store::meta_put(c, &format!("approvals/{version}"), &json)?;
    Ok(map)
}

/// The approvals of manifest `version` logged so far, if any.
fn read_approvals(
    c: &dyn twinseal_sql::Db,
    version: u64,
) -> Result<Option<std::collections::BTreeMap<String, u64>>> {
    store::meta_get(c, &format!("approvals/{version}"))?
        .map(|v| {
            serde_json::from_slice(&v)
                .map_err(|e| Error::Store(format!("approvals of manifest {version}: {e}")))
        })
        .transpose()
}

/// Replicas on one PostgreSQL database: a thread that listens for the
/// changes other replicas commit (manifest, keys, tokens, revocations;
/// `store::state::notify`) and reloads them, so that what this replica
/// caches follows within moments. The decisive checks of a key release
/// (key enabled, certificate unrevoked) do not wait for it: they read the
/// store in the transaction that audits the release. The thread ends
/// within a second of the coordinator being dropped.
fn start_replica_listener(
    options: &twinseal_sql::pg::PgOptions,
    coordinator: std::sync::Weak<Coordinator>,
) -> Result<()> {
    let listener = twinseal_sql::pg::Listener::start(options, state::CHANNEL)?;
    std::thread::Builder::new()
        .name("twinseal-replica-listener".into())
        .spawn(move || {
            loop {
                let notice = listener.next(Duration::from_secs(1));
                let Some(c) = coordinator.upgrade() else {
                    return;
                };
                if let Some(n) = notice {
                    c.on_replica_notice(n);
                }
            }
        })
        .map_err(|e| Error::io("starting the replica listener", e))?;
    Ok(())
}

/// Associated data of the wrapped challenge key.
const CHALLENGE_KEY_AAD: &[u8] = b"twinseal/v1 challenge key";

/// A random challenge key, wrapped by the master key.
fn new_challenge_key(master: &dyn MasterKey) -> Result<Vec<u8>> {
    let mut k = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut k[..]).map_err(|_| Error::Crypto("no randomness".into()))?;
    Ok(master.wrap(&k[..], CHALLENGE_KEY_AAD)?)
}

fn decode_evidence(w: &api::EvidenceWire) -> Result<Evidence> {
    const MAX: usize = 256 * 1024;
    let bytes = B64
        .decode(&w.evidence)
        .map_err(|_| Error::BadRequest("evidence is not base64".into()))?;
    if bytes.len() > MAX {
        return Err(Error::BadRequest("evidence is too large".into()));
    }
    let mut ev = Evidence::detect(&bytes)
        .map_err(|_| Error::BadRequest("unrecognised evidence format".into()))?;
    if let Some(v) = &w.vcek {
        let der = B64
            .decode(v)
            .map_err(|_| Error::BadRequest("vcek is not base64".into()))?;
        match &mut ev {
            Evidence::SevSnp { vcek_der, .. } => *vcek_der = Some(der),
            _ => {
                return Err(Error::BadRequest(
                    "a VCEK only goes with SEV-SNP evidence".into(),
                ));
            }
        }
    }
    Ok(ev)
}

fn build_active(
    version: u64,
    digest: String,
    manifest: Manifest,
    placement_keys: &[Vec<u8>],
) -> Result<ActiveManifest> {
    let placements = Placements::verify(&manifest.placements, placement_keys)
        .map_err(|e| Error::BadRequest(format!("manifest placements: {e}")))?;
    let mut policies = HashMap::new();
    for (name, app) in &manifest.apps {
        let p = Policy::default_policy(&manifest.policy_config(app), &placements)
            .map_err(|e| Error::BadRequest(format!("policy for app {name}: {e}")))?;
        policies.insert(name.clone(), p);
    }
    Ok(ActiveManifest {
        version,
        digest,
        manifest,
        policies,
    })
}

fn load_key(c: &dyn Db, name: &str) -> Result<Option<KeyMeta>> {
    let Some(row) = state::key(c, name)? else {
        return Ok(None);
    };
    let versions = state::live_versions(c, name)?;
    Ok(Some(KeyMeta {
        state: parse_state(&row.state)?,
        current_version: row.current_version,
        versions,
        tags: serde_json::from_str(&row.tags).map_err(|e| Error::Store(e.to_string()))?,
        required_context: serde_json::from_str(&row.required_context)
            .map_err(|e| Error::Store(e.to_string()))?,
        created: row.created,
    }))
}

fn load_keys(c: &dyn Db) -> Result<HashMap<String, KeyMeta>> {
    let mut out = HashMap::new();
    for n in state::key_names(c)? {
        if let Some(m) = load_key(c, &n)? {
            out.insert(n, m);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_round_trip_and_reject_lookalikes() {
        assert_eq!(
            parse_key_id(&key_id("model-key", 3)),
            Some(("model-key", 3))
        );
        for bad in [
            "kms/model/v0",
            "kms/model/v01",
            "kms//v1",
            "kms/a b/v1",
            "local-00/v1",
            "kms/model/vx",
        ] {
            assert_eq!(parse_key_id(bad), None, "{bad}");
        }
    }
}
