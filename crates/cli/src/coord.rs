//! `twinseal coordinator`, `manifest`, `key` (coordinator keys), `user`,
//! `audit`, `tokenize`, and the coordinator side of `seal`/`unseal`:
//! argument parsing and printing around `twinseal-coordinator`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use twinseal_api as api;
use twinseal_audit::{Bundle, VerifierKey, verify_bundle};
use twinseal_coordinator::client::Client;
use twinseal_coordinator::config::{CONFIG_FILE, Config};
use twinseal_coordinator::master::{DEFAULT_PIN_ENV, MasterKeyConfig, Pkcs11Config};
use twinseal_envelope::{Context, FileKey, Header};

/// How to reach a coordinator.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// The coordinator's URL, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "TWINSEAL_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    /// The coordinator's root certificate (PEM) to pin; `coordinator init`
    /// writes it as DATA_DIR/ca.pem.
    #[arg(long, env = "TWINSEAL_CA", value_name = "ROOT.pem")]
    pub ca: Option<PathBuf>,
    /// File holding the bearer token. Without it, the token is read from
    /// the TWINSEAL_TOKEN environment variable (never pass tokens as
    /// arguments: other users can read process arguments).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl RemoteArgs {
    /// Whether a coordinator was named.
    pub fn is_set(&self) -> bool {
        self.coordinator.is_some()
    }

    /// A client for the named coordinator.
    pub fn client(&self) -> Result<Client> {
        let url = self
            .coordinator
            .as_deref()
            .context("no coordinator: give --coordinator URL or set TWINSEAL_COORDINATOR")?;
        let ca = self
            .ca
            .as_deref()
            .context("no root certificate: give --ca ROOT.pem or set TWINSEAL_CA")?;
        let root =
            std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
        let token = match &self.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("TWINSEAL_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        Ok(Client::new(url, &root, token, None)?)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `twinseal coordinator ...`
#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Create the state: database, master key, root CA, audit signing key,
    /// and the first admin token (printed once, stored only as a hash).
    Init {
        /// Where the state lives.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Address to serve on (written into the configuration).
        #[arg(long, default_value = twinseal_coordinator::config::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// DNS names and IP addresses of the coordinator's own certificate
        /// (repeatable; default: localhost and 127.0.0.1). No app
        /// certificate is ever issued for them, so workers on the same
        /// host need other names.
        #[arg(long = "server-name", value_name = "NAME")]
        server_names: Vec<String>,
        /// INSECURE, development only: accept simulated-TEE evidence from
        /// the platforms whose public keys (hex) are given with
        /// --simulated-platform-key.
        #[arg(long)]
        insecure_allow_simulated_tee: bool,
        /// A simulated platform's public key (hex; repeatable).
        #[arg(long, value_name = "HEX")]
        simulated_platform_key: Vec<String>,
        /// Keep the master key on a PKCS#11 token: the module (shared
        /// library). The PIN is read from TWINSEAL_PKCS11_PIN.
        #[arg(long, value_name = "MODULE.so", requires_all = ["pkcs11_token", "pkcs11_key"])]
        pkcs11_module: Option<PathBuf>,
        /// The token's label.
        #[arg(long, value_name = "LABEL")]
        pkcs11_token: Option<String>,
        /// The label of the AES key on the token (generated if absent).
        #[arg(long, value_name = "LABEL")]
        pkcs11_key: Option<String>,
        /// Keep the state in PostgreSQL instead of SQLite in the data
        /// directory, so that several coordinator replicas serve it:
        /// postgres://USER@HOST:PORT/DB (never with a password in it).
        #[arg(long, value_name = "URL")]
        store_url: Option<String>,
        /// The environment variable holding the database password.
        #[arg(long, value_name = "VAR", requires = "store_url")]
        store_password_env: Option<String>,
        /// A file holding the database password.
        #[arg(
            long,
            value_name = "FILE",
            requires = "store_url",
            conflicts_with = "store_password_env"
        )]
        store_password_file: Option<PathBuf>,
        /// The CA (PEM) of the database server's certificate: TLS to the
        /// database is then required and verified (needed for any database
        /// not on this machine).
        #[arg(long, value_name = "FILE", requires = "store_url")]
        store_ca_file: Option<PathBuf>,
    },
    /// Serve HTTPS with the given configuration until Ctrl-C or SIGTERM.
    Serve {
        /// The configuration file (`coordinator init` writes DATA_DIR/coordinator.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Serve on this address instead of the configuration's (replicas
        /// sharing one configuration on one host).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check a coordinator's own attestation before trusting it: its
    /// evidence must be bound to a fresh nonce and to the root certificate
    /// it presents, and its TLS certificate must be issued by that root.
    /// Prints the root's fingerprint to pin (and writes the root with -o).
    Verify(CoordinatorVerifyArgs),
}

/// `twinseal coordinator verify`.
#[derive(Debug, Args)]
pub struct CoordinatorVerifyArgs {
    /// The coordinator's URL, e.g. https://coordinator.example:8443.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Collateral for its evidence: DCAP collateral JSON (SGX/TDX), the VCEK
    /// certificate DER (SEV-SNP, if the evidence lacks it), or the
    /// simulated platform's public key file (hex).
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// The measurement the coordinator must have (hex); without it the
    /// measurement is printed for you to compare with a reproducible build.
    #[arg(long, value_name = "HEX")]
    pub expect_measurement: Option<String>,
    /// Write the verified root certificate (PEM) here, to pin with --ca.
    #[arg(short, long, value_name = "ROOT.pem")]
    pub output: Option<PathBuf>,
    /// INSECURE, development only: accept a coordinator whose evidence is
    /// simulated.
    #[arg(long)]
    pub insecure_allow_simulated_tee: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `twinseal coordinator ...`.
pub fn run_coordinator(cmd: CoordinatorCommand) -> Result<()> {
    match cmd {
        CoordinatorCommand::Init {
            data_dir,
            listen,
            server_names,
            insecure_allow_simulated_tee,
            simulated_platform_key,
            pkcs11_module,
            pkcs11_token,
            pkcs11_key,
            store_url,
            store_password_env,
            store_password_file,
            store_ca_file,
        } => {
            let absolute = |p: PathBuf| -> Result<PathBuf> {
                Ok(if p.is_relative() {
                    std::env::current_dir()?.join(p)
                } else {
                    p
                })
            };
            let defaults = Config::for_data_dir(&data_dir);
            let mut config = Config {
                listen,
                server_names: if server_names.is_empty() {
                    defaults.server_names.clone()
                } else {
                    server_names
                },
                insecure_allow_simulated_tee,
                simulated_platform_keys: simulated_platform_key,
                store: twinseal_coordinator::config::StoreConfig {
                    url: store_url,
                    password_env: store_password_env,
                    password_file: store_password_file.map(absolute).transpose()?,
                    ca_file: store_ca_file.map(absolute).transpose()?,
                },
                ..Config::for_data_dir(&data_dir)
            };
            if let (Some(module), Some(token_label), Some(key_label)) =
                (pkcs11_module, pkcs11_token, pkcs11_key)
            {
                config.master_key = MasterKeyConfig::Pkcs11(Pkcs11Config {
                    module,
                    token_label,
                    key_label,
                    pin_env: DEFAULT_PIN_ENV.to_string(),
                });
            }
            config.validate()?;
            let report = twinseal_coordinator::init(&config)
                .with_context(|| format!("initializing {}", data_dir.display()))?;
            // The configuration file sits in the data directory, whose
            // paths are then relative to it.
            let file_config = Config {
                data_dir: PathBuf::from("."),
                ..config
            };
            let config_path = data_dir.join(CONFIG_FILE);
            std::fs::write(&config_path, file_config.to_toml())
                .with_context(|| format!("writing {}", config_path.display()))?;
            eprintln!("initialized the coordinator in {}", data_dir.display());
            eprintln!("  configuration: {}", config_path.display());
            eprintln!(
                "  root certificate: {} (sha256 {})",
                data_dir.join("ca.pem").display(),
                report.ca_fingerprint
            );
            eprintln!(
                "  audit verifier key: {}",
                data_dir.join("audit.pub").display()
            );
            if insecure_allow_simulated_tee {
                eprintln!("  WARNING: insecure_allow_simulated_tee = true (development only)");
            }
            eprintln!("the first admin token follows; it is shown once and stored only as a hash:");
            println!("{}", report.admin_token.as_str());
            Ok(())
        }
        CoordinatorCommand::Verify(a) => verify_coordinator(a),
        CoordinatorCommand::Serve { config, listen } => {
            let mut config = Config::load(&config)?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let rt = runtime()?;
            rt.block_on(async move {
                let state = twinseal_coordinator::Coordinator::open(config)?;
                twinseal_coordinator::tls::run(state).await
            })?;
            Ok(())
        }
    }
}

/// `twinseal coordinator verify`: fetch the evidence without trusting the
/// server, then check it (bound to our nonce and the root it presents), the
/// server certificate's issuer, and the expected measurement.
fn verify_coordinator(a: CoordinatorVerifyArgs) -> Result<()> {
    if a.insecure_allow_simulated_tee {
        eprintln!(
            "WARNING: INSECURE: accepting simulated evidence (--insecure-allow-simulated-tee)"
        );
    }
    let nonce: [u8; 32] = *twinseal_attest::Challenge::random().as_bytes();
    let got = runtime()?
        .block_on(twinseal_coordinator::client::fetch_own_evidence(
            &a.url, &nonce,
        ))
        .with_context(|| format!("asking {} for its evidence", a.url))?;
    let root_der = twinseal_worker::tls::root_der_from_pem(&got.answer.ca)
        .context("the coordinator's root certificate is not PEM")?;
    let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&root_der));
    if fingerprint != got.answer.ca_sha256 {
        bail!("the coordinator's answer names another fingerprint than its root's");
    }
    twinseal_coordinator::client::check_server_cert(&got.server_cert_der, &root_der)
        .context("the TLS server is not certified by the root it presents")?;
    let Some(wire) = &got.answer.evidence else {
        bail!(
            "the coordinator at {} gives no evidence (it does not run in a TEE, or its \
             self_evidence is not configured): its root {fingerprint} could only be trusted on first use",
            a.url
        );
    };
    let bytes = B64
        .decode(&wire.evidence)
        .context("the evidence is not base64")?;
    let mut evidence = twinseal_attest::Evidence::detect(&bytes)
        .map_err(|_| anyhow::anyhow!("the coordinator's evidence is in no known format"))?;
    if let (Some(v), twinseal_attest::Evidence::SevSnp { vcek_der, .. }) =
        (&wire.vcek, &mut evidence)
    {
        *vcek_der = Some(B64.decode(v).context("the VCEK is not base64")?);
    }
    let expected = twinseal_coordinator::client::own_evidence_report_data(&nonce, &root_der)?;
    let collateral = a
        .collateral
        .as_deref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let claims = crate::attest::verify_evidence(
        &evidence,
        collateral,
        &expected,
        std::time::SystemTime::now(),
        a.insecure_allow_simulated_tee,
    )?;
    let measurement = claims.measurement().to_hex();
    if let Some(want) = &a.expect_measurement
        && !want.trim().eq_ignore_ascii_case(&measurement)
    {
        bail!("the coordinator's measurement is {measurement}, not the expected {want}");
    }
    if claims.is_debug() {
        bail!("the coordinator runs in a debug-mode TEE (its memory is readable)");
    }
    if let Some(out) = &a.output {
        use std::io::Write as _;
        let mut file = twinseal_envelope::AtomicOutput::create(out)
            .with_context(|| format!("creating {}", out.display()))?;
        // The coordinator's own key, as explanatory text above the root:
        // clients that read this file pin it (an app certificate, or
        // another certificate of the same root, is refused).
        let pin = format!(
            "{}{}\n",
            twinseal_coordinator::client::KEY_PIN_PREFIX,
            twinseal_coordinator::client::key_sha256(&got.server_cert_der)?
        );
        file.write_all(pin.as_bytes())
            .and_then(|()| file.write_all(got.answer.ca.as_bytes()))
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", out.display()))?;
        file.commit()
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if a.json {
        return print_json(&serde_json::json!({
            "url": a.url,
            "root_sha256": fingerprint,
            "tee": claims.tee().as_str(),
            "simulated": claims.is_simulated(),
            "measurement": measurement,
            "tcb_status": claims.tcb_status(),
            "version": got.answer.version,
        }));
    }
    println!("coordinator {} verified:", a.url);
    println!(
        "  evidence: {}{}, bound to a fresh nonce and to its root certificate",
        claims.tee(),
        if claims.is_simulated() {
            " (SIMULATED: proves nothing about hardware)"
        } else {
            ""
        }
    );
    println!("  measurement: {measurement}");
    println!("  TCB status: {:?}", claims.tcb_status());
    println!("  TLS certificate issued by that root");
    println!("root certificate sha256 (pin this): {fingerprint}");
    if let Some(out) = &a.output {
        println!(
            "root certificate written to {}, with the coordinator's key pinned",
            out.display()
        );
    }
    Ok(())
}

/// `twinseal manifest ...`
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Apply a manifest (TOML) as the next version (admin).
    Apply {
        /// The manifest.
        file: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print the current manifest (admin, auditor).
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List every manifest version (admin, auditor).
    Versions {
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Runs `twinseal manifest ...`.
pub fn run_manifest(cmd: ManifestCommand) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        ManifestCommand::Apply { file, remote } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let c = remote.client()?;
            let info: api::ManifestInfo = rt.block_on(c.put(
                "/v1/manifest",
                &api::ManifestApplyRequest { manifest: text },
            ))?;
            eprintln!(
                "applied manifest version {} (sha256 {})",
                info.version, info.digest
            );
            Ok(())
        }
        ManifestCommand::Show { remote } => {
            let info: api::ManifestInfo = rt.block_on(remote.client()?.get("/v1/manifest"))?;
            eprintln!(
                "# version {} applied {} by {}",
                info.version, info.applied_at, info.applied_by
            );
            print!("{}", info.manifest.unwrap_or_default());
            Ok(())
        }
        ManifestCommand::Versions { remote } => {
            let v: api::ManifestVersions =
                rt.block_on(remote.client()?.get("/v1/manifest/versions"))?;
            for m in v.versions {
                println!(
                    "{}\t{}\t{}\t{}",
                    m.version, m.applied_at, m.applied_by, m.digest
                );
            }
            Ok(())
        }
    }
}

/// `twinseal key ...` on a coordinator.
#[derive(Debug, Subcommand)]
pub enum RemoteKeyCommand {
    /// Create an AES-256 key (admin).
    Create {
        /// Key name.
        name: String,
        /// Tag (KEY=VALUE, repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Encryption-context pair every data key must carry (repeatable).
        #[arg(long = "require-context", value_name = "KEY=VALUE")]
        required_context: Vec<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List keys (metadata only).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show one key's metadata.
    Show {
        /// Key name.
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// New key version; old versions keep opening old data.
    Rotate {
        /// Key name.
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Refuse every use until enabled again.
    Disable {
        /// Key name.
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Allow use again.
    Enable {
        /// Key name.
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Crypto-shred: delete every version's material. Irreversible; every
    /// file sealed under the key becomes unreadable.
    Destroy {
        /// Key name.
        name: String,
        /// Repeat the key name to confirm.
        #[arg(long, value_name = "NAME")]
        confirm: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

fn pairs(v: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    v.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{p:?} is not KEY=VALUE"))
        })
        .collect()
}

/// Runs `twinseal key ...` against a coordinator.
pub fn run_remote_key(cmd: RemoteKeyCommand) -> Result<()> {
    let rt = runtime()?;
    let info: api::KeyInfo = match cmd {
        RemoteKeyCommand::Create {
            name,
            tags,
            required_context,
            remote,
        } => {
            let req = api::CreateKeyRequest {
                name,
                tags: pairs(&tags)?,
                required_context: pairs(&required_context)?,
            };
            rt.block_on(remote.client()?.post("/v1/keys", &req))?
        }
        RemoteKeyCommand::List { remote } => {
            let list: api::KeyList = rt.block_on(remote.client()?.get("/v1/keys"))?;
            return print_json(&list);
        }
        RemoteKeyCommand::Show { name, remote } => {
            rt.block_on(remote.client()?.get(&format!("/v1/keys/{name}")))?
        }
        RemoteKeyCommand::Rotate { name, remote } => rt.block_on(
            remote
                .client()?
                .post(&format!("/v1/keys/{name}/rotate"), &()),
        )?,
        RemoteKeyCommand::Disable { name, remote } => rt.block_on(
            remote
                .client()?
                .post(&format!("/v1/keys/{name}/disable"), &()),
        )?,
        RemoteKeyCommand::Enable { name, remote } => rt.block_on(
            remote
                .client()?
                .post(&format!("/v1/keys/{name}/enable"), &()),
        )?,
        RemoteKeyCommand::Destroy {
            name,
            confirm,
            remote,
        } => {
            if confirm != name {
                bail!("--confirm must repeat the key name ({name}) to destroy it");
            }
            rt.block_on(remote.client()?.delete(&format!("/v1/keys/{name}")))?
        }
    };
    print_json(&info)
}

/// `twinseal user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Issue a new bearer token for a user of the manifest (admin; printed
    /// once), or list or revoke the user's tokens.
    Token {
        /// User name.
        name: String,
        /// Lifetime of the new token: seconds, or a number with s, m, h or
        /// d (default 90d, at most 366d).
        #[arg(long, value_name = "DURATION", conflicts_with_all = ["list", "revoke"])]
        expires_in: Option<String>,
        /// List the user's tokens (ids, issue and expiry dates) instead.
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// Revoke the user's token with this id instead (audited).
        #[arg(long, value_name = "ID")]
        revoke: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Seconds in `30d`, `12h`, `90m`, `45s` or `3600`.
fn parse_duration_secs(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration (e.g. 3600, 90m, 12h, 30d)"))?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => bail!("{s:?}: the unit is one of s, m, h, d"),
    };
    n.checked_mul(unit).context("duration too long")
}

/// Runs `twinseal user ...`.
pub fn run_user(cmd: UserCommand) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        UserCommand::Token {
            name,
            list: true,
            remote,
            ..
        } => {
            let l: api::TokenList =
                rt.block_on(remote.client()?.get(&format!("/v1/users/{name}/tokens")))?;
            if l.tokens.is_empty() {
                println!("{name} has no tokens");
            }
            for t in &l.tokens {
                println!(
                    "{}  issued {}  {}",
                    t.id,
                    t.created,
                    match (&t.expires, t.expired) {
                        (Some(e), true) => format!("EXPIRED {e}"),
                        (Some(e), false) => format!("expires {e}"),
                        (None, _) => "never expires (issued before tokens expired)".into(),
                    }
                );
            }
            Ok(())
        }
        UserCommand::Token {
            name,
            revoke: Some(id),
            remote,
            ..
        } => {
            let _: serde_json::Value = rt.block_on(
                remote
                    .client()?
                    .delete(&format!("/v1/users/{name}/tokens/{id}")),
            )?;
            eprintln!("revoked token {id} of {name}");
            Ok(())
        }
        UserCommand::Token {
            name,
            expires_in,
            remote,
            ..
        } => {
            let req = api::CreateTokenRequest {
                expires_in_secs: expires_in.as_deref().map(parse_duration_secs).transpose()?,
            };
            let t: api::TokenResponse = rt.block_on(
                remote
                    .client()?
                    .post(&format!("/v1/users/{name}/token"), &req),
            )?;
            eprintln!(
                "token {} for {} (shown once; expires {}):",
                t.id,
                t.user,
                t.expires.as_deref().unwrap_or("never")
            );
            println!("{}", t.token);
            Ok(())
        }
    }
}

/// `twinseal audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Export the audit log (entries, signed checkpoints, evidence) as a bundle (auditor).
    Export {
        /// The bundle to write.
        #[arg(short, long, value_name = "BUNDLE")]
        output: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Verify the log offline, from an export bundle or from its tiles:
    /// every checkpoint's signature, every entry's inclusion, consistency
    /// between checkpoints, the hash chain, the evidence (bundles only) and
    /// every tile (tiles only). Exits non-zero on any problem, including
    /// entries that no signed checkpoint covers (unless --allow-unsigned-tail).
    Verify {
        /// The bundle (or give --tiles).
        #[arg(required_unless_present = "tiles", conflicts_with = "tiles")]
        bundle: Option<PathBuf>,
        /// Verify from C2SP tiles instead: a directory (`audit mirror`
        /// writes one), a static mirror `http://HOST/PREFIX`, or the
        /// coordinator's `https://HOST:PORT/log` (with --ca and an auditor
        /// token unless its log is public).
        #[arg(long, value_name = "DIR|URL")]
        tiles: Option<String>,
        /// The verifier key (C2SP vkey text, or a file holding it, such as DATA_DIR/audit.pub).
        #[arg(long, value_name = "PUBKEY")]
        key: String,
        /// A checkpoint obtained out of band (signed note file), such as one
        /// kept from an earlier audit: entries it covers must all be there,
        /// with the head it signs (detects truncation, rollback and forks).
        #[arg(long, value_name = "FILE")]
        trusted_checkpoint: Option<PathBuf>,
        /// Accept entries that no signed checkpoint covers (printing a
        /// WARNING naming them) instead of failing. Dangerous: nothing
        /// signed vouches for those entries, and stripping checkpoints
        /// from a bundle makes any entry uncovered.
        #[arg(long)]
        allow_unsigned_tail: bool,
        /// A witness whose cosignature counts (C2SP cosigner vkey text, or a
        /// file holding it). With --tiles, the served checkpoint must carry
        /// cosignatures of --quorum of them. Repeat for several.
        #[arg(long = "witness", value_name = "PUBKEY", requires = "tiles")]
        witnesses: Vec<String>,
        /// How many of the --witness keys must have cosigned (default: all).
        #[arg(long, requires = "witnesses")]
        quorum: Option<usize>,
        /// The oldest acceptable cosignature, in hours (with --witness).
        #[arg(
            long,
            value_name = "HOURS",
            default_value_t = 24.0,
            requires = "witnesses"
        )]
        max_age_hours: f64,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Copy the log's tiles (C2SP tlog-tiles) into a directory that any
    /// static web server or object store can serve: DIR/checkpoint and
    /// DIR/tile/... Only new tiles are fetched on later runs (auditor, or
    /// anyone when the coordinator's log is public).
    Mirror {
        /// The directory to write.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Where to copy from; by default the coordinator's /log.
        #[arg(long, value_name = "DIR|URL")]
        tiles: Option<String>,
        /// The verifier key: the checkpoint must verify before anything is copied.
        #[arg(long, value_name = "PUBKEY")]
        key: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// A verifier key given as text or as a file holding it.
fn read_vkey(key: String) -> Result<VerifierKey> {
    let key_text = if Path::new(&key).is_file() {
        std::fs::read_to_string(&key).with_context(|| format!("reading {key}"))?
    } else {
        key
    };
    key_text.trim().parse().context("invalid verifier key")
}

/// Tiles over HTTP(S): the coordinator's `/log` through the pinned client,
/// or a plain-HTTP static mirror (the signatures, not the transport, make
/// the tiles trustworthy).
struct HttpTiles {
    rt: tokio::runtime::Runtime,
    pinned: Option<Client>,
    plain: reqwest::Client,
    base: String,
}

impl twinseal_audit::TileSource for HttpTiles {
    fn fetch(&mut self, path: &str) -> twinseal_audit::Result<Vec<u8>> {
        let unavailable =
            |e: String| twinseal_audit::Error::TileUnavailable(format!("{path}: {e}"));
        match &self.pinned {
            Some(c) => self
                .rt
                .block_on(c.get_raw(&format!("/{path}")))
                .map_err(|e| unavailable(e.to_string())),
            None => self.rt.block_on(async {
                let resp = self
                    .plain
                    .get(format!("{}/{path}", self.base))
                    .send()
                    .await
                    .map_err(|e| unavailable(format!("{e:#}")))?;
                if !resp.status().is_success() {
                    return Err(unavailable(format!("HTTP {}", resp.status())));
                }
                if resp.content_length().unwrap_or(0) > twinseal_audit::MAX_TILE_LEN as u64 {
                    return Err(unavailable("larger than any tile".into()));
                }
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| unavailable(format!("{e:#}")))?;
                if bytes.len() > twinseal_audit::MAX_TILE_LEN {
                    return Err(unavailable("larger than any tile".into()));
                }
                Ok(bytes.to_vec())
            }),
        }
    }
}

/// A tile source that fetches the checkpoint once, so that what the
/// witness check saw is what the verifier verifies.
struct PinnedCheckpoint {
    inner: Box<dyn twinseal_audit::TileSource>,
    checkpoint: Option<Vec<u8>>,
}

impl twinseal_audit::TileSource for PinnedCheckpoint {
    fn fetch(&mut self, path: &str) -> twinseal_audit::Result<Vec<u8>> {
        if path != "checkpoint" {
            return self.inner.fetch(path);
        }
        if self.checkpoint.is_none() {
            self.checkpoint = Some(self.inner.fetch(path)?);
        }
        Ok(self.checkpoint.clone().unwrap_or_default())
    }
}

/// Refuse a served checkpoint without cosignatures of `quorum` of the
/// witnesses (all by default), or whose oldest counted cosignature is older
/// than `max_age_hours`.
fn check_cosigned(
    source: &mut PinnedCheckpoint,
    witnesses: &[String],
    quorum: Option<usize>,
    max_age_hours: f64,
) -> Result<()> {
    use twinseal_audit::TileSource as _;
    let keys = witnesses
        .iter()
        .map(|w| {
            let text = if Path::new(w).is_file() {
                std::fs::read_to_string(w).with_context(|| format!("reading {w}"))?
            } else {
                w.clone()
            };
            text.trim()
                .parse::<twinseal_audit::CosignerKey>()
                .with_context(|| format!("invalid witness key {w}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let quorum = quorum.unwrap_or(keys.len());
    if quorum == 0 || quorum > keys.len() {
        bail!(
            "--quorum {quorum} must be 1 to the {} witnesses",
            keys.len()
        );
    }
    let note = String::from_utf8(source.fetch("checkpoint")?)
        .context("the served checkpoint is not UTF-8")?;
    let (n, oldest) = twinseal_audit::count_cosignatures(&note, &keys);
    if n < quorum {
        bail!(
            "the served checkpoint carries valid cosignatures of {n} of the {} witnesses, {quorum} needed: \
             the witnesses did not confirm this view of the log (a fork, a rollback, or witnessing is behind)",
            keys.len()
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if let Some(ts) = oldest {
        let age_h = now.saturating_sub(ts) as f64 / 3600.0;
        if age_h > max_age_hours {
            bail!(
                "the served checkpoint's cosignatures are {age_h:.1} h old, more than --max-age-hours {max_age_hours}"
            );
        }
    }
    println!(
        "cosigned by {n} of {} witnesses (quorum {quorum})",
        keys.len()
    );
    Ok(())
}

/// Where tiles come from: a directory, `http://...` (a static mirror),
/// `https://...` (the coordinator, pinned with --ca), or by default the
/// coordinator's `/log`.
fn tile_source(
    tiles: Option<&str>,
    remote: &RemoteArgs,
) -> Result<Box<dyn twinseal_audit::TileSource>> {
    if let Some(t) = tiles
        && !t.starts_with("http://")
        && !t.starts_with("https://")
    {
        let dir = PathBuf::from(t);
        if !dir.is_dir() {
            bail!("{t} is neither a directory nor an http(s):// URL");
        }
        return Ok(Box::new(twinseal_audit::DirSource(dir)));
    }
    let rt = runtime()?;
    let plain = twinseal_net::client::plain_client(std::time::Duration::from_secs(60))?;
    let (pinned, base) = match tiles {
        Some(url) if url.starts_with("http://") => (None, url.trim_end_matches('/').to_string()),
        Some(url) => {
            let base = url.trim_end_matches('/').to_string();
            let mut r = remote.clone();
            r.coordinator = Some(base.clone());
            (Some(r.client()?), base)
        }
        None => {
            let url = remote
                .coordinator
                .as_deref()
                .context("no tiles: give --tiles DIR|URL, or --coordinator URL for its /log")?;
            let mut r = remote.clone();
            let base = format!("{}/log", url.trim_end_matches('/'));
            r.coordinator = Some(base.clone());
            (Some(r.client()?), base)
        }
    };
    Ok(Box::new(HttpTiles {
        rt,
        pinned,
        plain,
        base,
    }))
}

/// Runs `twinseal audit ...`.
pub fn run_audit(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Export { output, remote } => {
            let rt = runtime()?;
            let bytes = rt.block_on(remote.client()?.get_bytes("/v1/audit/export"))?;
            let bundle =
                Bundle::from_json(&bytes).context("the coordinator sent an invalid bundle")?;
            std::fs::write(&output, &bytes)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!(
                "wrote {} entries and {} checkpoints to {}",
                bundle.entries.len(),
                bundle.checkpoints.len(),
                output.display()
            );
            Ok(())
        }
        AuditCommand::Mirror {
            to,
            tiles,
            key,
            remote,
        } => {
            let vkey = read_vkey(key)?;
            let mut source = tile_source(tiles.as_deref(), &remote)?;
            std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
            let size = twinseal_audit::mirror(source.as_mut(), &vkey, &to)
                .context("mirroring the log's tiles")?;
            eprintln!("mirrored the tiles of {size} entries to {}", to.display());
            Ok(())
        }
        AuditCommand::Verify {
            bundle,
            tiles,
            key,
            trusted_checkpoint,
            allow_unsigned_tail,
            witnesses,
            quorum,
            max_age_hours,
            remote,
        } => {
            let vkey = read_vkey(key)?;
            let trusted = match trusted_checkpoint {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                ),
                None => None,
            };
            let options = twinseal_audit::VerifyOptions {
                trusted: trusted.as_deref(),
                allow_unsigned_tail,
                without_evidence: false,
            };
            let (report, what) = match bundle {
                Some(bundle) => {
                    let bytes = std::fs::read(&bundle)
                        .with_context(|| format!("reading {}", bundle.display()))?;
                    let b = Bundle::from_json(&bytes)
                        .with_context(|| format!("reading {}", bundle.display()))?;
                    let _ = verify_bundle; // the plain form is `verify_bundle_with` with default options
                    (
                        twinseal_audit::verify_bundle_with(&b, &vkey, &options),
                        "audit bundle",
                    )
                }
                None => {
                    let mut source = PinnedCheckpoint {
                        inner: tile_source(tiles.as_deref(), &remote)?,
                        checkpoint: None,
                    };
                    if !witnesses.is_empty() {
                        check_cosigned(&mut source, &witnesses, quorum, max_age_hours)?;
                    }
                    let report = twinseal_audit::verify_tiles(&mut source, &vkey, &options)
                        .context("reading the log's tiles")?;
                    (report, "log's tiles")
                }
            };
            println!(
                "entries: {}, checkpoints: {}",
                report.entries, report.checkpoints
            );
            // Only --allow-unsigned-tail makes warnings: uncovered entries.
            for w in &report.warnings {
                println!("WARNING: {w} (accepted because of --allow-unsigned-tail)");
            }
            if report.is_ok() {
                match &report.uncovered {
                    None => println!(
                        "OK: every entry is included and consistent with the signed checkpoints"
                    ),
                    Some(r) if r.start == 0 => {
                        println!("OK only as allowed: no entry is covered by a signed checkpoint")
                    }
                    Some(r) => println!(
                        "OK only as allowed: entries 0 to {} are included and consistent with the signed checkpoints, the rest are unsigned",
                        r.start - 1
                    ),
                }
                return Ok(());
            }
            for p in &report.problems {
                println!("PROBLEM: {p}");
            }
            bail!(
                "the {what} does not verify ({} problems)",
                report.problems.len()
            )
        }
    }
}

/// `twinseal tokenize` / `detokenize`
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The key name.
    #[arg(long)]
    key: String,
    /// The values' alphabet: digits or alphanumeric.
    #[arg(long, default_value = "digits")]
    alphabet: String,
    /// A public tweak, e.g. the field name.
    #[arg(long, default_value = "")]
    tweak: String,
    /// For detokenize: the key version the tokens were made with.
    #[arg(long)]
    version: Option<u32>,
    /// The values.
    values: Vec<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Runs `twinseal tokenize` (or `detokenize` when `reverse`).
pub fn run_tokenize(args: TokenizeArgs, reverse: bool) -> Result<()> {
    let alphabet = match args.alphabet.as_str() {
        "digits" => api::Alphabet::Digits,
        "alphanumeric" => api::Alphabet::Alphanumeric,
        other => bail!("unknown alphabet {other:?} (digits, alphanumeric)"),
    };
    let req = api::TokenizeRequest {
        key: args.key,
        alphabet,
        values: args.values,
        tweak: args.tweak,
        version: args.version,
    };
    let path = if reverse {
        "/v1/detokenize"
    } else {
        "/v1/tokenize"
    };
    let rt = runtime()?;
    let out: api::TokenizeResponse = rt.block_on(args.remote.client()?.post(path, &req))?;
    eprintln!("key version {}", out.version);
    for v in out.values {
        println!("{v}");
    }
    Ok(())
}

fn file_key(b64: &str) -> Result<FileKey> {
    let bytes = zeroize::Zeroizing::new(
        B64.decode(b64)
            .context("the coordinator sent a bad file key")?,
    );
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .context("the coordinator sent a bad file key")?;
    Ok(FileKey::from_bytes(arr))
}

/// Seal one file (or stdin) under a coordinator key: the coordinator makes
/// the header and file key; the payload never leaves this machine.
pub fn seal_remote<W: std::io::Write>(
    remote: &RemoteArgs,
    key: &str,
    context: &Context,
    input: &mut dyn Read,
    sink: W,
) -> Result<W> {
    let mut sealer = remote_sealer(remote, key, context, sink)?;
    sealer.copy_from(input)?;
    Ok(sealer.finish()?)
}

/// A streaming sealer into `sink` under a data key the coordinator issues
/// for `key` and `context` (the key itself never leaves the coordinator).
pub fn remote_sealer<W: std::io::Write>(
    remote: &RemoteArgs,
    key: &str,
    context: &Context,
    sink: W,
) -> Result<twinseal_envelope::Sealer<W>> {
    let rt = runtime()?;
    let req = api::DataKeyRequest {
        context: context
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let dk: api::DataKeyResponse = rt.block_on(
        remote
            .client()?
            .post(&format!("/v1/keys/{key}/datakey"), &req),
    )?;
    let header = B64
        .decode(&dk.header)
        .context("the coordinator sent a bad header")?;
    let fk = file_key(&dk.file_key)?;
    Ok(twinseal_envelope::Sealer::with_header(sink, &header, &fk)?)
}

/// Open a sealed stream whose key the coordinator holds: the header goes
/// to the coordinator, which checks it and returns the file key.
pub fn unseal_remote(
    remote: &RemoteArgs,
    key: &str,
    context: &Context,
    mut input: impl Read,
    sink: &mut dyn std::io::Write,
) -> Result<()> {
    let header = Header::read_from(&mut input).context("reading the sealed header")?;
    let rt = runtime()?;
    let req = api::UnwrapRequest {
        header: B64.encode(header.as_bytes()),
    };
    let uk: api::UnwrapResponse = rt.block_on(
        remote
            .client()?
            .post(&format!("/v1/keys/{key}/unwrap"), &req),
    )?;
    let fk = file_key(&uk.file_key)?;
    let chained = std::io::Cursor::new(header.as_bytes().to_vec()).chain(input);
    let mut opener = twinseal_envelope::Opener::with_file_key(chained, &fk, context)?;
    opener.copy_to(sink)?;
    Ok(())
}
