//! A whole twinseal deployment in one process, on loopback: a coordinator
//! serving HTTPS with real keys, certificates and audit log, the INSECURE
//! simulated TEE for its workers, and helpers to seal data the way a data
//! owner does (a data key from the coordinator, never the key itself).
//!
//! `twinseal demo`, the worker benchmarks and the end-to-end tests all
//! start from [`Local`], so that what the demo shows is what the tests
//! check. Nothing here is for production: the simulated TEE proves nothing
//! about hardware, and every certificate issued under it says so.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use twinseal_api as api;
use twinseal_attest::SimulatedPlatform;
use twinseal_coordinator::client::Client;
use twinseal_coordinator::config::SelfEvidence;
use twinseal_coordinator::{Config, Coordinator};
use twinseal_envelope::{Context, FileKey, Header};
use twinseal_worker::{EvidenceSource, Limits, Worker, WorkerOptions};

/// What can go wrong setting a local deployment up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The coordinator refused or failed.
    #[error(transparent)]
    Coordinator(#[from] twinseal_coordinator::Error),
    /// A worker failed.
    #[error(transparent)]
    Worker(#[from] twinseal_worker::Error),
    /// A coordinator or worker client call failed.
    #[error(transparent)]
    Net(#[from] twinseal_net::Error),
    /// Sealing or opening failed.
    #[error(transparent)]
    Envelope(#[from] twinseal_envelope::Error),
    /// The simulated TEE failed.
    #[error(transparent)]
    Attest(#[from] twinseal_attest::Error),
    /// Local I/O (temporary directory, sockets).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The coordinator answered something unusable.
    #[error("{0}")]
    Protocol(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The app name workers of a local deployment attest as by default.
pub const APP: &str = "siamese-worker";
/// The key models are sealed under by default.
pub const MODEL_KEY: &str = "model-key";
/// The data owner of [`Local::prepare_model_serving`].
pub const DATA_OWNER: &str = "dora";
/// The worker client of [`Local::prepare_model_serving`]: a user with the
/// `client` role allowed every worker operation on [`APP`].
pub const CLIENT: &str = "carl";
/// The name the coordinator of a local deployment answers as (workers
/// answer as 127.0.0.1; an app certificate never names the coordinator).
pub const COORDINATOR_NAME: &str = "localhost";
/// The id of the simulated platform workers run on.
pub const PLATFORM_ID: &str = "local-1";

/// How to start a local deployment.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Lifetime of app certificates, seconds.
    pub cert_lifetime_secs: u64,
    /// Operators' placement-signing public keys the coordinator trusts.
    pub placement_keys: Vec<Vec<u8>>,
    /// Give the coordinator simulated evidence of its own (for
    /// `coordinator verify`), signed by the same simulated platform.
    pub self_evidence: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            cert_lifetime_secs: 3600,
            placement_keys: Vec::new(),
            self_evidence: false,
        }
    }
}

/// A coordinator on loopback, its state in a temporary directory.
pub struct Local {
    dir: tempfile::TempDir,
    /// The coordinator's state (for audit export, direct calls).
    pub coordinator: Arc<Coordinator>,
    /// Its base URL, `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its root certificate, PEM (what clients pin).
    pub root_pem: String,
    /// A client with the first admin's token.
    pub admin: Client,
    admin_token: String,
    platform: SimulatedPlatform,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<twinseal_coordinator::Result<()>>>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Local {
    /// Initialize a coordinator in a temporary directory (INSECURE: it
    /// accepts the simulated platform this deployment creates) and serve it
    /// on a free loopback port. Must run inside a Tokio runtime.
    pub async fn start(opts: LocalOptions) -> Result<Local> {
        let dir = tempfile::tempdir()?;
        let platform = SimulatedPlatform::generate(PLATFORM_ID)?;
        let self_evidence = if opts.self_evidence {
            let key = dir.path().join("coordinator-platform.key");
            std::fs::write(&key, platform.pkcs8().as_slice())?;
            SelfEvidence::InsecureSimulated {
                platform_key: key,
                platform_id: PLATFORM_ID.into(),
            }
        } else {
            SelfEvidence::None
        };
        let config = Config {
            insecure_allow_simulated_tee: true,
            simulated_platform_keys: vec![hex::encode(platform.public_key())],
            placement_keys: opts.placement_keys.iter().map(hex::encode).collect(),
            cert_lifetime_secs: opts.cert_lifetime_secs,
            self_evidence,
            // The coordinator answers as `localhost`, workers as 127.0.0.1:
            // an app certificate never carries the coordinator's names.
            server_names: vec![COORDINATOR_NAME.into()],
            ..Config::for_data_dir(dir.path())
        };
        let report = twinseal_coordinator::init(&config)?;
        let coordinator = Coordinator::open(config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!(
            "https://{COORDINATOR_NAME}:{}",
            listener.local_addr()?.port()
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(twinseal_coordinator::tls::serve(
            coordinator.clone(),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let root_pem = coordinator.ca().cert_pem();
        let admin_token = report.admin_token.to_string();
        let admin = Client::new(&url, &root_pem, Some(admin_token.clone()), None)?;
        Ok(Local {
            dir,
            coordinator,
            url,
            root_pem,
            admin,
            admin_token,
            platform,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// The temporary directory holding the coordinator's state.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The simulated platform's public key (hex), for verifiers.
    pub fn platform_public_key_hex(&self) -> String {
        hex::encode(self.platform.public_key())
    }

    /// The first admin's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Apply a manifest. The first admin must stay in it as `admin`.
    pub async fn apply_manifest(&self, manifest: &str) -> Result<api::ManifestInfo> {
        Ok(self
            .admin
            .put(
                "/v1/manifest",
                &api::ManifestApplyRequest {
                    manifest: manifest.to_string(),
                },
            )
            .await?)
    }

    /// Create AES-256 keys.
    pub async fn create_keys(&self, names: &[&str]) -> Result<()> {
        for name in names {
            let _: api::KeyInfo = self
                .admin
                .post(
                    "/v1/keys",
                    &api::CreateKeyRequest {
                        name: name.to_string(),
                        tags: BTreeMap::new(),
                        required_context: BTreeMap::new(),
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// The manifest and key for serving one model: users `admin`,
    /// [`DATA_OWNER`] (who may seal and open with [`MODEL_KEY`]) and
    /// [`CLIENT`], app [`APP`] with `measurement` given [`MODEL_KEY`] and
    /// callable by [`CLIENT`]; creates [`MODEL_KEY`].
    pub async fn prepare_model_serving(&self, measurement: &[u8; 48]) -> Result<()> {
        self.apply_manifest(&format!(
            "[users.admin]\nroles = [\"admin\"]\n[users.{DATA_OWNER}]\nroles = [\"data_owner\"]\n\
             [keys.{MODEL_KEY}]\nowners = [\"{DATA_OWNER}\"]\n{}{}",
            Local::app_entry(APP, measurement, &[MODEL_KEY]),
            Local::client_entry(&[APP]),
        ))
        .await?;
        self.create_keys(&[MODEL_KEY]).await
    }

    /// The manifest entries of user [`CLIENT`] (role `client`) allowed
    /// every worker operation on each of `apps` (whose entries must be in
    /// the same manifest).
    pub fn client_entry(apps: &[&str]) -> String {
        let mut s = format!("[users.{CLIENT}]\nroles = [\"client\"]\n");
        for app in apps {
            s.push_str(&format!(
                "[apps.{app}.clients]\n{CLIENT} = [\"compare\", \"embed\", \"verify\", \"identify\", \"enroll\"]\n"
            ));
        }
        s
    }

    /// A new bearer token of [`CLIENT`], for calling workers.
    pub async fn client_token(&self) -> Result<String> {
        self.user_token(CLIENT).await
    }

    /// A client with a new token of manifest user `user`.
    pub async fn user(&self, user: &str) -> Result<Client> {
        let mut t: api::TokenResponse = self
            .admin
            .post(&format!("/v1/users/{user}/token"), &())
            .await?;
        Ok(Client::new(
            &self.url,
            &self.root_pem,
            Some(std::mem::take(&mut t.token)),
            None,
        )?)
    }

    /// A new token of manifest user `user` (for tools that take a token).
    pub async fn user_token(&self, user: &str) -> Result<String> {
        let mut t: api::TokenResponse = self
            .admin
            .post(&format!("/v1/users/{user}/token"), &())
            .await?;
        Ok(std::mem::take(&mut t.token))
    }

    /// The manifest entry of an app that runs on this deployment's
    /// simulated platform with `measurement` and may receive `keys`.
    pub fn app_entry(name: &str, measurement: &[u8; 48], keys: &[&str]) -> String {
        let keys = keys
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[apps.{name}]\ntee = [\"simulated\"]\nmeasurements = [\"{}\"]\nkeys = [{keys}]\n",
            hex::encode(measurement)
        )
    }

    /// Options for a worker of `app` on this deployment's simulated
    /// platform, claiming `measurement`, serving `sealed_model` (sealed
    /// under [`MODEL_KEY`] with `purpose=model`).
    pub fn worker_options(
        &self,
        app: &str,
        measurement: [u8; 48],
        sealed_model: Vec<u8>,
    ) -> Result<WorkerOptions> {
        Ok(WorkerOptions {
            coordinator_url: self.url.clone(),
            coordinator_root_pem: self.root_pem.clone(),
            app: app.to_string(),
            names: vec!["127.0.0.1".into()],
            model_key: MODEL_KEY.into(),
            sealed_model: Some(sealed_model),
            model_context: Context::from_pairs([("purpose", "model")])?,
            evidence: EvidenceSource::InsecureSimulated {
                platform: SimulatedPlatform::from_pkcs8(self.platform.pkcs8(), PLATFORM_ID)?,
                measurement,
            },
            limits: Limits::default(),
            gallery: None,
            insecure_public_compare: false,
            renew_before: None,
        })
    }

    /// Options for a trainer of `app` (a worker without a model, which only
    /// runs workflow jobs) on this deployment's simulated platform.
    pub fn trainer_options(&self, app: &str, measurement: [u8; 48]) -> Result<WorkerOptions> {
        let mut o = self.worker_options(app, measurement, Vec::new())?;
        o.sealed_model = None;
        Ok(o)
    }

    /// Stop the coordinator and wait for it.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .map_err(|e| Error::Protocol(format!("coordinator task: {e}")))??;
        }
        Ok(())
    }
}

/// Seal `plaintext` under coordinator key `key` the way a data owner does:
/// the coordinator issues a header and a file key for `context`; the key
/// itself never leaves it.
pub async fn seal(
    client: &Client,
    key: &str,
    context: &[(&str, &str)],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let dk: api::DataKeyResponse = client
        .post(
            &format!("/v1/keys/{key}/datakey"),
            &api::DataKeyRequest {
                context: context
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        )
        .await?;
    let header = B64
        .decode(&dk.header)
        .map_err(|_| Error::Protocol("the data key header is not base64".into()))?;
    let fk = file_key(&dk.file_key)?;
    Ok(twinseal_envelope::seal_bytes_with_header(
        plaintext, &header, &fk,
    )?)
}

/// Open `sealed` with coordinator key `key`: the coordinator checks the
/// caller may, and unwraps this file's key only.
pub async fn unseal(
    client: &Client,
    key: &str,
    context: &[(&str, &str)],
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let header = Header::parse(sealed)?;
    let uk: api::UnwrapResponse = client
        .post(
            &format!("/v1/keys/{key}/unwrap"),
            &api::UnwrapRequest {
                header: B64.encode(header.as_bytes()),
            },
        )
        .await?;
    let fk = file_key(&uk.file_key)?;
    Ok(twinseal_envelope::open_bytes_with_file_key(
        sealed,
        &fk,
        &Context::from_pairs(context.iter().copied())?,
    )?)
}

/// Seal a dataset archive (see [`twinseal_siamese::data::archive`]) the
/// way `twinseal seal --coordinator` does, into the object-store folder
/// `store/location`: the public `index.json` beside `data.twseal`, sealed
/// under coordinator key `key` with `context`.
pub async fn seal_dataset(
    client: &Client,
    key: &str,
    context: &[(&str, &str)],
    index: &twinseal_siamese::data::archive::ArchiveIndex,
    archive: &[u8],
    store: &std::path::Path,
    location: &str,
) -> Result<()> {
    use twinseal_worker::training::{DATASET_DATA, DATASET_INDEX};
    let sealed = seal(client, key, context, archive).await?;
    let dir = store.join(location);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(DATASET_INDEX), index.to_json())?;
    std::fs::write(dir.join(DATASET_DATA), sealed)?;
    Ok(())
}

fn file_key(b64: &str) -> Result<FileKey> {
    let raw = B64
        .decode(b64)
        .map_err(|_| Error::Protocol("the file key is not base64".into()))?;
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| Error::Protocol("the file key is not 32 bytes".into()))?;
    Ok(FileKey::from_bytes(bytes))
}

/// A started worker served on a free loopback port.
pub struct Served {
    /// The worker.
    pub worker: Worker,
    /// Its base URL.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<twinseal_worker::Result<()>>>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Served {
    /// Serve `worker` over HTTPS on 127.0.0.1.
    pub async fn start(worker: Worker) -> Result<Served> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let w = worker.clone();
        let task = tokio::spawn(async move {
            w.serve(listener, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Served {
            worker,
            url,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stop serving and wait; the worker's own error, if it stopped by
    /// itself.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await
                .map_err(|e| Error::Protocol(format!("worker task: {e}")))??;
        }
        Ok(())
    }
}

/// A reqwest client that trusts workers certified by `root_pem` and
/// sends `token` (a worker client's) as the bearer token of every request.
pub fn worker_http_client_with_token(
    root_pem: &str,
    allow_simulated: bool,
    token: Option<&str>,
) -> Result<reqwest::Client> {
    let cfg =
        twinseal_net::tls::PeerVerifier::worker(root_pem, allow_simulated)?.client_config()?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::Protocol("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .tls_info(true)
        .default_headers(headers)
        .build()
        .map_err(|e| Error::Protocol(e.to_string()))
}

/// A reqwest client that trusts workers certified by `root_pem`
/// (simulated ones only when `allow_simulated`) and exposes the serving
/// certificate for receipt checks.
pub fn worker_http_client(root_pem: &str, allow_simulated: bool) -> Result<reqwest::Client> {
    worker_http_client_with_token(root_pem, allow_simulated, None)
}
