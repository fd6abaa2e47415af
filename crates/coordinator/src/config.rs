//! The coordinator's typed TOML configuration (`coordinator.toml`).
//!
//! Unknown fields are errors. Relative paths resolve against the directory
//! of the configuration file. The configuration holds no secrets: the
//! master key lives in its own file or in a PKCS#11 token, whose PIN comes
//! from an environment variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::master::MasterKeyConfig;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Default lifetime of app certificates.
pub const DEFAULT_CERT_LIFETIME_SECS: u64 = 3600;
/// Default lifetime of attestation challenges.
pub const DEFAULT_CHALLENGE_TTL_SECS: u64 = 120;
/// Default request body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default per-request timeout.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default limit on requests served at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Name of the configuration file `coordinator init` writes.
pub const CONFIG_FILE: &str = "coordinator.toml";

/// The configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the state lives (the SQLite database unless `[store]` names
    /// PostgreSQL; the master key file; `ca.pem`, `audit.pub`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The database: SQLite in `data_dir` (default) or PostgreSQL.
    #[serde(default, skip_serializing_if = "StoreConfig::is_sqlite")]
    pub store: StoreConfig,
    /// Address to serve HTTPS on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// DNS names and IP addresses in the coordinator's own certificate.
    #[serde(default = "default_server_names")]
    pub server_names: Vec<String>,
    /// The master key backend.
    #[serde(default = "default_master_key")]
    pub master_key: MasterKeyConfig,
    /// INSECURE: accept simulated-TEE evidence. Development and CI only;
    /// logs a warning at start and on every use, and marks every
    /// certificate issued under it with a critical extension.
    #[serde(default)]
    pub insecure_allow_simulated_tee: bool,
    /// Simulated platforms' public keys (hex, 32-byte Ed25519) to trust when
    /// simulated evidence is allowed.
    #[serde(default)]
    pub simulated_platform_keys: Vec<String>,
    /// Operators' placement-signing public keys (hex Ed25519).
    #[serde(default)]
    pub placement_keys: Vec<String>,
    /// DCAP collateral (JSON, as `twinseal attest` reads) for SGX and TDX
    /// quotes; without it, SGX and TDX evidence is rejected.
    #[serde(default)]
    pub dcap_collateral: Option<PathBuf>,
    /// Lifetime of issued app certificates, seconds.
    #[serde(default = "default_cert_lifetime")]
    pub cert_lifetime_secs: u64,
    /// Lifetime of attestation challenges, seconds.
    #[serde(default = "default_challenge_ttl")]
    pub challenge_ttl_secs: u64,
    /// Largest request body, bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Per-request timeout, seconds.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Requests served at once; more wait.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_requests: usize,
    /// Connections open at once, all callers (lowered to what the
    /// open-file limit allows).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Time to receive a request's header, and the longest a kept-alive
    /// connection may sit idle between requests, seconds.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Longest a read or write may stall within a request, seconds.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Requests per second, sustained, that one remote address may send
    /// without credentials (challenges, attestations, health) or with
    /// credentials that fail; beyond it the answer is 429.
    #[serde(default = "default_anonymous_rate")]
    pub anonymous_requests_per_second: f64,
    /// Such requests one address may send at once before the rate applies.
    #[serde(default = "default_anonymous_burst")]
    pub anonymous_burst: u32,
    /// Values tokenized or detokenized per second, per key, all callers
    /// together (bursts of one full request are allowed); beyond it 429.
    #[serde(default = "default_tokenize_rate")]
    pub tokenize_values_per_second: f64,
    /// How long workers may cache what a client token may do, seconds: the
    /// longest a revoked token keeps working at a worker.
    #[serde(default = "default_client_cache")]
    pub client_cache_secs: u64,
    /// Where the coordinator's own evidence comes from (`POST /v1/evidence`,
    /// which `twinseal coordinator verify` checks before a client pins the
    /// root).
    #[serde(default)]
    pub self_evidence: SelfEvidence,
    /// The log as C2SP tiles, and the witnesses that cosign its checkpoints.
    #[serde(default)]
    pub transparency: TransparencyConfig,
}

/// `[transparency]`: who may read the log's tiles (`/log/...`), and the
/// witnesses (C2SP tlog-witness) asked to cosign each new checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransparencyConfig {
    /// Serve `/log/checkpoint` and `/log/tile/...` to anyone, without
    /// credentials (as public transparency logs do). Off: only users with
    /// the `auditor` role read them. Entries carry identifiers, names and
    /// digests, never key material; still, turning this on publishes the
    /// names of apps, keys and users in the log.
    #[serde(default)]
    pub public_log: bool,
    /// The witnesses to ask, each `{ url = "http://...", key = "<vkey>" }`
    /// (the witness's cosigner verifier key, `twinseal witness init`
    /// prints it).
    #[serde(default)]
    pub witnesses: Vec<WitnessConfig>,
    /// How many of `witnesses` must cosign a checkpoint before it is
    /// published as cosigned (default: all of them).
    #[serde(default)]
    pub quorum: Option<usize>,
}

/// One witness of `[transparency] witnesses`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// Its submission prefix: `add-checkpoint` is posted to `<url>/add-checkpoint`.
    pub url: String,
    /// Its cosigner verifier key, C2SP vkey text (`<name>+<hash>+<base64>`).
    pub key: String,
}

/// The database. Without `url`, the state is a SQLite file in the data
/// directory (one coordinator). With a PostgreSQL `url`, any number of
/// coordinator replicas serve the same database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user@host:port/dbname`. Never with a password: name
    /// `password_env` or `password_file` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The environment variable holding the database password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file holding the database password (a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA of the database server's certificate: the
    /// connection then requires TLS and verifies the server. Without it,
    /// only a database on this machine (loopback, Unix socket) is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl StoreConfig {
    /// Whether this is the embedded default (SQLite in the data directory).
    pub fn is_sqlite(&self) -> bool {
        self.url.is_none()
    }
}

/// The coordinator's own attestation evidence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum SelfEvidence {
    /// None: the coordinator does not run in a TEE; clients can only pin
    /// its root on trust (`coordinator verify` says so and fails).
    #[default]
    None,
    /// The TEE the coordinator runs in (configfs-tsm for TDX and SEV-SNP,
    /// Gramine's `/dev/attestation` for SGX).
    Tee,
    /// INSECURE, development only: evidence from a simulated platform whose
    /// private key (PKCS#8 DER, as `twinseal attest simulate` writes it) is
    /// in `platform_key`. Proves nothing about hardware.
    InsecureSimulated {
        /// The simulated platform's private key file.
        platform_key: PathBuf,
        /// The platform's id.
        #[serde(default = "default_platform_id")]
        platform_id: String,
    },
}

fn default_platform_id() -> String {
    "simulated-coordinator".into()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".")
}
fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}
fn default_server_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
fn default_master_key() -> MasterKeyConfig {
    MasterKeyConfig::File {
        path: PathBuf::from("master.key"),
    }
}
fn default_cert_lifetime() -> u64 {
    DEFAULT_CERT_LIFETIME_SECS
}
fn default_challenge_ttl() -> u64 {
    DEFAULT_CHALLENGE_TTL_SECS
}
fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_timeout() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_SECS
}
fn default_concurrency() -> usize {
    DEFAULT_MAX_CONCURRENT_REQUESTS
}
/// Default sustained rate of anonymous requests per remote address.
pub const DEFAULT_ANONYMOUS_REQUESTS_PER_SECOND: f64 = 20.0;
/// Default burst of anonymous requests per remote address.
pub const DEFAULT_ANONYMOUS_BURST: u32 = 100;
/// Default time workers may cache a client token's permissions, seconds.
pub const DEFAULT_CLIENT_CACHE_SECS: u64 = 30;
fn default_client_cache() -> u64 {
    DEFAULT_CLIENT_CACHE_SECS
}
/// Default values tokenized per second per key.
pub const DEFAULT_TOKENIZE_VALUES_PER_SECOND: f64 = 1000.0;
fn default_tokenize_rate() -> f64 {
    DEFAULT_TOKENIZE_VALUES_PER_SECOND
}
fn default_anonymous_rate() -> f64 {
    DEFAULT_ANONYMOUS_REQUESTS_PER_SECOND
}
fn default_anonymous_burst() -> u32 {
    DEFAULT_ANONYMOUS_BURST
}
fn default_max_connections() -> usize {
    crate::tls::DEFAULT_MAX_CONNECTIONS
}
fn default_max_connections_per_address() -> usize {
    crate::tls::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
}
fn default_header_read_timeout() -> u64 {
    crate::tls::DEFAULT_HEADER_READ_TIMEOUT_SECS
}
fn default_idle_timeout() -> u64 {
    crate::tls::DEFAULT_IDLE_TIMEOUT_SECS
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            store: StoreConfig::default(),
            listen: default_listen(),
            server_names: default_server_names(),
            master_key: default_master_key(),
            insecure_allow_simulated_tee: false,
            simulated_platform_keys: Vec::new(),
            placement_keys: Vec::new(),
            dcap_collateral: None,
            cert_lifetime_secs: DEFAULT_CERT_LIFETIME_SECS,
            challenge_ttl_secs: DEFAULT_CHALLENGE_TTL_SECS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            tokenize_values_per_second: default_tokenize_rate(),
            client_cache_secs: default_client_cache(),
            anonymous_requests_per_second: default_anonymous_rate(),
            anonymous_burst: default_anonymous_burst(),
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            header_read_timeout_secs: default_header_read_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            self_evidence: SelfEvidence::None,
            transparency: TransparencyConfig::default(),
        }
    }
}

impl Config {
    /// A default configuration whose state lives in `data_dir`.
    pub fn for_data_dir(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            ..Config::default()
        }
    }

    /// Read and validate a configuration file; relative paths resolve
    /// against its directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut c: Config =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if c.data_dir.is_relative() {
            c.data_dir = base.join(&c.data_dir);
        }
        if let Some(p) = &c.dcap_collateral
            && p.is_relative()
        {
            c.dcap_collateral = Some(base.join(p));
        }
        for p in [&mut c.store.password_file, &mut c.store.ca_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let SelfEvidence::InsecureSimulated { platform_key, .. } = &mut c.self_evidence
            && platform_key.is_relative()
        {
            *platform_key = base.join(&*platform_key);
        }
        c.validate()?;
        Ok(c)
    }

    /// TOML text of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configuration serializes")
    }

    /// Check values and combinations.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.server_names.is_empty() {
            return bad("server_names must name at least one DNS name or IP address");
        }
        match &self.store.url {
            Some(u) if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) => {
                return bad("[store] url must be a postgres:// URL (leave it out for SQLite)");
            }
            None if self.store != StoreConfig::default() => {
                return bad("[store] names a password or CA but no url");
            }
            _ => {}
        }
        if !(10..=7 * 24 * 3600).contains(&self.cert_lifetime_secs) {
            return bad("cert_lifetime_secs must be between 10 and 604800");
        }
        if !(5..=3600).contains(&self.challenge_ttl_secs) {
            return bad("challenge_ttl_secs must be between 5 and 3600");
        }
        if !(1024..=64 << 20).contains(&self.max_body_bytes) {
            return bad("max_body_bytes must be between 1024 and 67108864");
        }
        if self.request_timeout_secs == 0 || self.max_concurrent_requests == 0 {
            return bad("request_timeout_secs and max_concurrent_requests must be positive");
        }
        if self.client_cache_secs > 600 {
            return bad("client_cache_secs must be at most 600");
        }
        if !self.tokenize_values_per_second.is_finite() || self.tokenize_values_per_second <= 0.0 {
            return bad("tokenize_values_per_second must be positive");
        }
        if !self.anonymous_requests_per_second.is_finite()
            || self.anonymous_requests_per_second <= 0.0
            || self.anonymous_burst == 0
        {
            return bad("anonymous_requests_per_second and anonymous_burst must be positive");
        }
        if self.max_connections == 0 || self.max_connections_per_address == 0 {
            return bad("max_connections and max_connections_per_address must be positive");
        }
        if !(1..=3600).contains(&self.header_read_timeout_secs)
            || !(1..=3600).contains(&self.idle_timeout_secs)
        {
            return bad(
                "header_read_timeout_secs and idle_timeout_secs must be between 1 and 3600",
            );
        }
        if !self.simulated_platform_keys.is_empty() && !self.insecure_allow_simulated_tee {
            return bad("simulated_platform_keys is set but insecure_allow_simulated_tee is false");
        }
        for k in self
            .simulated_platform_keys
            .iter()
            .chain(&self.placement_keys)
        {
            if hex::decode(k).is_err() {
                return bad("platform and placement keys must be hex");
            }
        }
        Ok(())
    }

    /// The accept loop's limits.
    pub fn conn_limits(&self) -> crate::tls::ConnLimits {
        crate::tls::ConnLimits {
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            handshake_timeout: Duration::from_secs(
                self.header_read_timeout_secs
                    .min(crate::tls::DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            ),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
        }
    }

    /// Lifetime of app certificates.
    pub fn cert_lifetime(&self) -> Duration {
        Duration::from_secs(self.cert_lifetime_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, Config::default().to_toml()).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.data_dir, dir.path().join("."));
        assert!(
            !c.insecure_allow_simulated_tee,
            "insecure mode is off by default"
        );
    }

    #[test]
    fn fail_unknown_fields_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        for (text, why) in [
            ("colour = 1", "unknown field"),
            ("cert_lifetime_secs = 1", "cert_lifetime_secs"),
            (
                "simulated_platform_keys = [\"00\"]",
                "insecure_allow_simulated_tee",
            ),
            ("listen = \"nowhere\"", "listen"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
