//! Test harness: a coordinator in a temporary directory with the simulated
//! TEE enabled, driven through `app(state)` without sockets.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tower::ServiceExt;
use twinseal_attest::SimulatedPlatform;
use twinseal_coordinator::config::StoreConfig;
use twinseal_coordinator::http::PeerCertificate;
use twinseal_coordinator::{Config, Coordinator, app, init};
use twinseal_testing::TempPostgres;

/// The measurement the test apps claim.
pub const MEASUREMENT: [u8; 48] = [0x11; 48];

pub fn measurement_hex() -> String {
    hex::encode(MEASUREMENT)
}

/// A manifest with an admin, two data owners (alice owns `model-key` and
/// `data-key` and may tokenize and detokenize with `model-key`; bob owns
/// `bob-key`), an auditor, an ML engineer, a worker client (carl: compare
/// and verify on `worker`), and two apps: `worker` (gets `model-key`,
/// `data-key`, `out-key`, `gallery-key`) and `other` (gets `other-key`).
pub fn manifest() -> String {
    format!(
        r#"
[users.admin]
roles = ["admin"]
[users.alice]
roles = ["data_owner"]
[users.bob]
roles = ["data_owner"]
[users.audrey]
roles = ["auditor"]
[users.mallory]
roles = ["ml_engineer"]
[users.carl]
roles = ["client"]
[keys.model-key]
owners = ["alice"]
grants = {{ alice = ["tokenize", "detokenize"] }}
[keys.data-key]
owners = ["alice"]
[keys.bob-key]
owners = ["bob"]
grants = {{ bob = ["tokenize"] }}
[apps.worker]
tee = ["simulated"]
measurements = ["{m}"]
keys = ["model-key", "data-key", "out-key", "gallery-key"]
[apps.worker.clients]
carl = ["compare", "verify"]
[apps.other]
tee = ["simulated"]
measurements = ["{m}"]
keys = ["other-key"]
[datasets.d1]
location = "datasets/d1.sealed"
key = "data-key"
[workflows.w1]
input = "d1"
app = "worker"
output = "results/w1"
output_key = "out-key"
"#,
        m = measurement_hex()
    )
}

#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Token(String),
    Cert(Vec<u8>),
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub state: Arc<Coordinator>,
    pub router: Router,
    pub admin: String,
    pub platform: SimulatedPlatform,
}

/// Which store the tests run on: SQLite in the data directory (default),
/// or with `TWINSEAL_TEST_STORE=postgres` a fresh database on a
/// throwaway PostgreSQL server that this test process starts (and stops
/// when it ends). `scripts/test` runs this binary both ways.
pub fn test_store() -> StoreConfig {
    match std::env::var("TWINSEAL_TEST_STORE").as_deref() {
        Ok("postgres") => StoreConfig {
            url: Some(TempPostgres::shared().database()),
            ..StoreConfig::default()
        },
        Ok("sqlite") | Err(_) => StoreConfig::default(),
        Ok(other) => panic!("TWINSEAL_TEST_STORE={other}: use sqlite or postgres"),
    }
}

pub fn config_for(dir: &std::path::Path, platform: &SimulatedPlatform) -> Config {
    Config {
        insecure_allow_simulated_tee: true,
        simulated_platform_keys: vec![hex::encode(platform.public_key())],
        store: test_store(),
        ..Config::for_data_dir(dir)
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(|_| {})
    }

    /// A harness whose configuration `edit` changes first.
    pub fn with_config(edit: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let platform = SimulatedPlatform::generate("paris-1").unwrap();
        let mut config = config_for(dir.path(), &platform);
        edit(&mut config);
        let report = init(&config).unwrap();
        let state = Coordinator::open(config).unwrap();
        let router = app(state.clone());
        Harness {
            dir,
            state,
            router,
            admin: report.admin_token.to_string(),
            platform,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Auth::Token(t) = auth {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).unwrap();
        if let Auth::Cert(der) = auth {
            req.extensions_mut()
                .insert(PeerCertificate(Arc::new(der.clone())));
        }
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    /// Serve the real TLS surface on a loopback port; returns the URL and
    /// a handle that stops the server when dropped or `stop`ped.
    pub async fn serve(&self) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(twinseal_coordinator::tls::serve(
            self.state.clone(),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            url: format!("https://{addr}"),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn admin(&self) -> Auth {
        Auth::Token(self.admin.clone())
    }

    /// Apply the standard manifest and return tokens for alice, audrey, mallory.
    pub async fn setup_users(&self) -> (Auth, Auth, Auth) {
        let (s, v) = self
            .call(
                Method::PUT,
                "/v1/manifest",
                &self.admin(),
                Some(json!({"manifest": manifest()})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (
            self.token_of("alice").await,
            self.token_of("audrey").await,
            self.token_of("mallory").await,
        )
    }

    /// A new bearer token of manifest user `user`.
    pub async fn token_of(&self, user: &str) -> Auth {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/v1/users/{user}/token"),
                &self.admin(),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        Auth::Token(v["token"].as_str().unwrap().to_string())
    }

    pub async fn create_key(&self, name: &str) {
        let (s, v) = self
            .call(
                Method::POST,
                "/v1/keys",
                &self.admin(),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// A fresh key pair and its CSR (PEM) and SPKI.
    pub fn csr() -> (rcgen::KeyPair, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = rcgen::CertificateParams::new(vec!["worker.test".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let spki = twinseal_coordinator::ca::parse_csr(&pem).unwrap().spki_der;
        (key, pem, spki)
    }

    pub async fn challenge(&self) -> String {
        let (s, v) = self
            .call(Method::POST, "/v1/attest/challenge", &Auth::None, None)
            .await;
        assert_eq!(s, StatusCode::OK);
        v["challenge"].as_str().unwrap().to_string()
    }

    /// Attest as `app` with `platform` and `measurement`; returns the status
    /// and answer.
    pub async fn attest_with(
        &self,
        app: &str,
        platform: &SimulatedPlatform,
        measurement: &[u8; 48],
    ) -> (StatusCode, Value) {
        let (_, csr, spki) = Self::csr();
        let challenge = self.challenge().await;
        let rd = twinseal_attest::report_data(&hex::decode(&challenge).unwrap(), &spki);
        let ev = platform
            .attest_with_measurement(measurement, &rd, SystemTime::now())
            .unwrap();
        self.attest_raw(app, &challenge, ev.bytes(), &csr).await
    }

    /// Attest as `app` with a fresh key whose CSR asks for `names`; the
    /// answer and the key.
    pub async fn attest_names(
        &self,
        app: &str,
        names: Vec<String>,
    ) -> (StatusCode, Value, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(names)
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let spki = twinseal_coordinator::ca::parse_csr(&csr).unwrap().spki_der;
        let challenge = self.challenge().await;
        let rd = twinseal_attest::report_data(&hex::decode(&challenge).unwrap(), &spki);
        let ev = self
            .platform
            .attest_with_measurement(&MEASUREMENT, &rd, SystemTime::now())
            .unwrap();
        let (s, v) = self.attest_raw(app, &challenge, ev.bytes(), &csr).await;
        (s, v, key)
    }

    pub async fn attest_raw(
        &self,
        app: &str,
        challenge: &str,
        evidence: &[u8],
        csr: &str,
    ) -> (StatusCode, Value) {
        let body = json!({
            "app": app,
            "challenge": challenge,
            "evidence": {"evidence": B64.encode(evidence)},
            "csr": csr,
        });
        self.call(Method::POST, "/v1/attest", &Auth::None, Some(body))
            .await
    }

    /// Attest as `app` successfully; returns its certificate (DER).
    pub async fn app_cert(&self, app: &str) -> Vec<u8> {
        let (s, v) = self.attest_with(app, &self.platform, &MEASUREMENT).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        pem_to_der(v["certificate"].as_str().unwrap())
    }

    /// Every audit event, in order (counted failures are written as
    /// summary entries first).
    pub async fn audit_all_events(&self) -> Vec<Value> {
        self.state.flush_failures().await.unwrap();
        let bundle = self.state.audit_export().unwrap();
        let b: Value = serde_json::from_slice(&bundle).unwrap();
        b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].clone())
            .collect()
    }

    /// Every audit event's `type`, in order.
    pub async fn audit_kinds(&self) -> Vec<String> {
        self.audit_all_events()
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// The audit events of type `kind`, in order.
    pub async fn audit_events(&self, kind: &str) -> Vec<Value> {
        let mut events = self.audit_all_events().await;
        events.retain(|e| e["type"] == kind);
        events
    }
}

pub fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    B64.decode(b64).unwrap()
}

/// A coordinator served on loopback by [`Harness::serve`].
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<twinseal_coordinator::Result<()>>>,
}

impl Server {
    /// Stop accepting, let open requests finish, and wait.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
