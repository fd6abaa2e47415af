//! The worker end to end on loopback with the simulated TEE: a coordinator
//! serving HTTPS, a model sealed under its key, a worker that attests,
//! obtains the key, opens the model in memory and serves compare/embed
//! with receipts; and the refusals at start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use twinseal_api as api;
use twinseal_attest::SimulatedPlatform;
use twinseal_coordinator::client::Client;
use twinseal_coordinator::{Config, Coordinator, init};
use twinseal_envelope::{Context, FileKey};
use twinseal_siamese::{HeadKind, ModelConfig, Siamese};
use twinseal_worker::receipt::{InputKind, inputs_digest};
use twinseal_worker::{Error, EvidenceSource, Limits, Worker, WorkerOptions, verify_receipt};

const MEASUREMENT: [u8; 48] = [0x11; 48];
const APP: &str = "siamese-worker";
const KEY: &str = "model-key";
const GALLERY_KEY: &str = "gallery-key";
/// Worker clients: carl may do everything, eve only compare; dora is a
/// data owner (not a client).
const CLIENTS: &str = r#"
[users.dora]
roles = ["data_owner"]
[users.carl]
roles = ["client"]
[users.eve]
roles = ["client"]
[keys.model-key]
owners = ["dora"]
"#;

struct Coord {
    _dir: tempfile::TempDir,
    url: String,
    root: String,
    platform: SimulatedPlatform,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<twinseal_coordinator::Result<()>>>,
    model: Vec<u8>,
    sealed: Vec<u8>,
    admin: Client,
    admin_token: String,
    /// Bearer tokens by user: carl, eve, dora.
    tokens: BTreeMap<&'static str, String>,
}

impl Coord {
    /// A coordinator on loopback with the manifest applied, `model-key`
    /// created and a fresh model sealed under it.
    async fn start() -> Coord {
        Coord::start_with_lifetime(3600).await
    }

    /// Like [`Coord::start`], issuing certificates valid `lifetime` seconds.
    async fn start_with_lifetime(lifetime: u64) -> Coord {
        Coord::start_with(|c| c.cert_lifetime_secs = lifetime).await
    }

    /// Like [`Coord::start`], with the configuration changed by `edit`.
    async fn start_with(edit: impl FnOnce(&mut Config)) -> Coord {
        Coord::start_measured(edit, MEASUREMENT).await
    }

    /// Like [`Coord::start_with`], the manifest allowing `measurement`.
    async fn start_measured(edit: impl FnOnce(&mut Config), measurement: [u8; 48]) -> Coord {
        let dir = tempfile::tempdir().unwrap();
        let platform = SimulatedPlatform::generate("paris-1").unwrap();
        let mut config = Config {
            insecure_allow_simulated_tee: true,
            simulated_platform_keys: vec![hex::encode(platform.public_key())],
            // The coordinator answers as localhost; workers as 127.0.0.1.
            server_names: vec!["localhost".into()],
            ..Config::for_data_dir(dir.path())
        };
        edit(&mut config);
        let report = init(&config).unwrap();
        let state = Coordinator::open(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(twinseal_coordinator::tls::serve(
            state.clone(),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let root = state.ca().cert_pem();
        let admin = Client::new(&url, &root, Some(report.admin_token.to_string()), None).unwrap();
        let manifest = format!(
            r#"
[users.admin]
roles = ["admin"]
{CLIENTS}
[apps.{APP}]
tee = ["simulated"]
measurements = ["{m}"]
keys = ["{KEY}", "{GALLERY_KEY}"]
[apps.{APP}.clients]
carl = ["compare", "embed", "verify", "identify", "enroll"]
eve = ["compare"]
[apps.keyless]
tee = ["simulated"]
measurements = ["{m}"]
keys = ["other-key"]
"#,
            m = hex::encode(measurement)
        );
        let _: api::ManifestInfo = admin
            .put("/v1/manifest", &api::ManifestApplyRequest { manifest })
            .await
            .unwrap();
        for name in [KEY, GALLERY_KEY] {
            let _: api::KeyInfo = admin
                .post(
                    "/v1/keys",
                    &api::CreateKeyRequest {
                        name: name.into(),
                        tags: BTreeMap::new(),
                        required_context: BTreeMap::new(),
                    },
                )
                .await
                .unwrap();
        }
        let model = Siamese::new(
            ModelConfig::seed(HeadKind::Sigmoid),
            7,
            &candle_core::Device::Cpu,
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        let mut tokens = BTreeMap::new();
        for user in ["carl", "eve", "dora"] {
            let t: api::TokenResponse = admin
                .post(&format!("/v1/users/{user}/token"), &())
                .await
                .unwrap();
            tokens.insert(user, t.token.clone());
        }
        let dora = Client::new(&url, &root, Some(tokens["dora"].clone()), None).unwrap();
        let dk: api::DataKeyResponse = dora
            .post(
                &format!("/v1/keys/{KEY}/datakey"),
                &api::DataKeyRequest {
                    context: BTreeMap::from([("purpose".to_string(), "model".to_string())]),
                },
            )
            .await
            .unwrap();
        let header = B64.decode(&dk.header).unwrap();
        let file_key = FileKey::from_bytes(B64.decode(&dk.file_key).unwrap().try_into().unwrap());
        let sealed = twinseal_envelope::seal_bytes_with_header(&model, &header, &file_key).unwrap();
        Coord {
            _dir: dir,
            url,
            root,
            platform,
            stop: Some(stop),
            server: Some(server),
            model,
            sealed,
            admin,
            admin_token: report.admin_token.to_string(),
            tokens,
        }
    }

    /// A worker client sending `user`'s token.
    fn client_of(&self, user: &str) -> reqwest::Client {
        https_with(&self.root, true, Some(&self.tokens[user]))
    }

    /// The admin's token.
    fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The client allowed everything (carl).
    fn client(&self) -> reqwest::Client {
        self.client_of("carl")
    }

    fn options(&self, app: &str, measurement: [u8; 48], sealed: Vec<u8>) -> WorkerOptions {
        WorkerOptions {
            coordinator_url: self.url.clone(),
            coordinator_root_pem: self.root.clone(),
            app: app.into(),
            names: vec!["127.0.0.1".into()],
            model_key: KEY.into(),
            sealed_model: Some(sealed),
            model_context: Context::from_pairs([("purpose", "model")]).unwrap(),
            evidence: EvidenceSource::InsecureSimulated {
                platform: SimulatedPlatform::from_pkcs8(self.platform.pkcs8(), "paris-1").unwrap(),
                measurement,
            },
            limits: Limits::default(),
            gallery: None,
            insecure_public_compare: false,
            renew_before: None,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap().unwrap();
    }
}

/// A client of workers certified by `root`, without credentials.
fn https(root: &str, allow_simulated: bool) -> reqwest::Client {
    https_with(root, allow_simulated, None)
}

/// A client of workers certified by `root` sending `token` on every request.
fn https_with(root: &str, allow_simulated: bool, token: Option<&str>) -> reqwest::Client {
    let cfg = twinseal_net::tls::PeerVerifier::worker(root, allow_simulated)
        .unwrap()
        .client_config()
        .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .tls_info(true)
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = client.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn digit(seed: u8) -> Vec<u8> {
    (0..784u32)
        .map(|i| ((i * seed as u32 + i / 28) % 256) as u8)
        .collect()
}

fn png_of(raw: &[u8]) -> Vec<u8> {
    let img = image::GrayImage::from_raw(28, 28, raw.to_vec()).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_embed_over_attested_tls_with_verifiable_receipts() {
    let c = Coord::start().await;
    let worker = Worker::start(c.options(APP, MEASUREMENT, c.sealed.clone()))
        .await
        .unwrap();
    let state = worker.state();
    assert_eq!(
        state.model_sha256(),
        hex::encode(Sha256::digest(&c.model)),
        "the model opened is the one sealed"
    );
    assert!(state.attestation().simulated);
    let cert = state.certificate_der().to_vec();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let w = worker.clone();
    let server = tokio::spawn(async move {
        w.serve(listener, async {
            let _ = stopped.await;
        })
        .await
    });
    let client = c.client();

    // The same digit as raw pixels and as a PNG: distance 0.
    let a = digit(3);
    let b = digit(5);
    let (s, v) = post(
        &client,
        &format!("{url}/v1/compare"),
        &json!({"a": {"raw": B64.encode(&a)}, "b": {"png": B64.encode(png_of(&a))}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["distance"].as_f64().unwrap() < 1e-3, "{v}");
    let same: api::CompareResponse = serde_json::from_value(v).unwrap();
    assert_eq!(
        same.result.verdict == api::Verdict::Similar,
        same.result.score <= same.result.threshold
    );

    let (s, v) = post(
        &client,
        &format!("{url}/v1/compare"),
        &json!({"a": {"raw": B64.encode(&a)}, "b": {"raw": B64.encode(&b)}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r: api::CompareResponse = serde_json::from_value(v).unwrap();
    assert!(r.result.distance > 1e-3);
    assert!((0.0..=1.0).contains(&r.result.probability));
    assert_eq!(r.result.threshold, 0.5);

    // The receipt: verifies with the certificate, states what was computed.
    verify_receipt(&r.receipt, &cert).unwrap();
    assert_eq!(r.receipt.operation, "compare");
    assert_eq!(r.receipt.model_sha256, state.model_sha256());
    assert_eq!(r.receipt.evidence_sha256, state.evidence_sha256());
    assert_eq!(
        r.receipt.inputs_sha256,
        inputs_digest([(InputKind::Raw, &a[..]), (InputKind::Raw, &b[..])].into_iter())
    );
    let signed: api::CompareResult = serde_json::from_str(&r.receipt.output).unwrap();
    assert_eq!(signed, r.result);
    // ... and fails when anything in it changes.
    let mut tampered = Vec::new();
    let mut t = r.receipt.clone();
    t.output = t.output.replace("dissimilar", "similar");
    if t.output == r.receipt.output {
        t.output = t.output.replace("similar", "dissimilar");
    }
    tampered.push(t);
    let mut t = r.receipt.clone();
    t.inputs_sha256 = same.receipt.inputs_sha256.clone();
    tampered.push(t);
    let mut t = r.receipt.clone();
    t.model_sha256 = hex::encode([0u8; 32]);
    tampered.push(t);
    let mut t = r.receipt.clone();
    t.time = same.receipt.time.clone();
    if t.time == r.receipt.time {
        t.time = "2001-01-01T00:00:00Z".into();
    }
    tampered.push(t);
    let mut t = r.receipt.clone();
    t.signature = same.receipt.signature.clone();
    tampered.push(t);
    for (i, t) in tampered.iter().enumerate() {
        assert!(verify_receipt(t, &cert).is_err(), "tampered receipt {i}");
    }
    // Another certificate of the coordinator (not the worker's) does not verify it.
    assert!(verify_receipt(&r.receipt, state.root_der()).is_err());

    // A batch gives each pair the single-pair answer, under one receipt.
    let (s, v) = post(
        &client,
        &format!("{url}/v1/compare/batch"),
        &json!({"pairs": [
            {"a": {"raw": B64.encode(&a)}, "b": {"png": B64.encode(png_of(&a))}},
            {"a": {"raw": B64.encode(&a)}, "b": {"raw": B64.encode(&b)}},
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let batch: api::CompareBatchResponse = serde_json::from_value(v).unwrap();
    assert_eq!(
        batch.result.results,
        vec![same.result.clone(), r.result.clone()]
    );
    verify_receipt(&batch.receipt, &cert).unwrap();
    assert_eq!(batch.receipt.operation, "compare_batch");
    assert_eq!(
        batch.receipt.inputs_sha256,
        inputs_digest(
            [
                (InputKind::Raw, &a[..]),
                (InputKind::Encoded, &png_of(&a)[..]),
                (InputKind::Raw, &a[..]),
                (InputKind::Raw, &b[..]),
            ]
            .into_iter()
        )
    );
    // The binary form (raw pairs, no JSON) gives the same answer and the
    // same inputs digest as raw images in JSON.
    let raw_batch = |body: Vec<u8>, ct: &'static str| {
        let client = &client;
        let url = &url;
        async move {
            let r = client
                .post(format!("{url}/v1/compare/batch"))
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = raw_batch(
        [&a[..], &b[..], &b[..], &a[..]].concat(),
        "application/octet-stream",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let bin: api::CompareBatchResponse = serde_json::from_value(v).unwrap();
    verify_receipt(&bin.receipt, &cert).unwrap();
    assert_eq!(bin.result.results[0], r.result);
    assert_eq!(
        bin.receipt.inputs_sha256,
        inputs_digest(
            [&a, &b, &b, &a]
                .into_iter()
                .map(|x| (InputKind::Raw, &x[..]))
        )
    );
    for (body, ct) in [
        (a[..700].to_vec(), "application/octet-stream"),
        (Vec::new(), "application/octet-stream"),
        ([&a[..], &b[..]].concat(), "text/plain"),
        (b"{\"pairs\": [}".to_vec(), "application/json"),
    ] {
        let (s, v) = raw_batch(body, ct).await;
        assert_eq!(
            (s, v["type"].as_str()),
            (400, Some("bad_request")),
            "{ct}: {v}"
        );
    }

    let one = json!({"a": {"raw": B64.encode(&a)}, "b": {"raw": B64.encode(&b)}});
    for body in [
        json!({"pairs": []}),
        json!({"pairs": vec![one.clone(); twinseal_worker::DEFAULT_MAX_PAIRS + 1]}),
        json!({"pairs": [{"a": {"raw": B64.encode(&a)}}]}),
        json!({"pairs": [one.clone(), {"a": {"raw": B64.encode([0u8; 3])}, "b": {"raw": B64.encode(&a)}}]}),
    ] {
        let (s, v) = post(&client, &format!("{url}/v1/compare/batch"), &body).await;
        assert_eq!((s, v["type"].as_str()), (400, Some("bad_request")), "{v}");
    }

    // Embeddings.
    let (s, v) = post(
        &client,
        &format!("{url}/v1/embed"),
        &json!({"images": [{"raw": B64.encode(&a)}, {"raw": B64.encode(&b)}, {"png": B64.encode(png_of(&b))}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let e: api::EmbedResponse = serde_json::from_value(v).unwrap();
    assert_eq!(e.result.dim, 10);
    assert_eq!(e.result.embeddings.len(), 3);
    for (x, y) in e.result.embeddings[1].iter().zip(&e.result.embeddings[2]) {
        assert!((x - y).abs() < 1e-5);
    }
    verify_receipt(&e.receipt, &cert).unwrap();
    assert_eq!(e.receipt.operation, "embed");

    // Malformed input: stable 400 JSON errors.
    for body in [
        json!({"a": {"raw": B64.encode([1u8; 10])}, "b": {"raw": B64.encode(&a)}}),
        json!({"a": {"png": B64.encode(b"not an image at all")}, "b": {"raw": B64.encode(&a)}}),
        json!({"a": {"png": "%%% not base64"}, "b": {"raw": B64.encode(&a)}}),
        json!({"a": {"raw": B64.encode(&a)}}),
        json!({"a": {"gif": "AAAA"}, "b": {"raw": B64.encode(&a)}}),
    ] {
        let (s, v) = post(&client, &format!("{url}/v1/compare"), &body).await;
        assert_eq!(s, 400, "{body} -> {v}");
        assert_eq!(v["type"], "bad_request", "{v}");
        assert!(v["detail"].is_string());
    }
    let (s, v) = post(&client, &format!("{url}/v1/embed"), &json!({"images": []})).await;
    assert_eq!((s, v["type"].as_str()), (400, Some("bad_request")));
    let r = client
        .post(format!("{url}/v1/compare"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Info names what serves.
    let info: api::WorkerInfo = client
        .get(format!("{url}/v1/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info.app, APP);
    assert_eq!(info.model_sha256, state.model_sha256());
    assert!(info.simulated);

    // A client that does not allow simulated certificates refuses the worker.
    let strict = https(&c.root, false);
    assert!(strict.get(format!("{url}/v1/info")).send().await.is_err());

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_may_not_have_the_key_do_not_start() {
    let c = Coord::start().await;
    // A build whose measurement is not in the manifest is not attested.
    let e = Worker::start(c.options(APP, [0x22; 48], c.sealed.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Attestation(_)), "{e}");
    assert!(e.to_string().contains("attestation"), "{e}");
    // An app the manifest does not give the key gets no file key under it.
    let e = Worker::start(c.options("keyless", MEASUREMENT, c.sealed.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ModelRefused(_)), "{e}");
    assert!(e.to_string().contains(KEY), "{e}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_misdescribed_sealed_model_is_refused() {
    let c = Coord::start().await;
    let mut tampered = c.sealed.clone();
    let n = tampered.len();
    tampered[n - 40] ^= 1;
    let e = Worker::start(c.options(APP, MEASUREMENT, tampered))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ModelRefused(_)), "{e}");

    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.model_context = Context::from_pairs([("purpose", "training-data")]).unwrap();
    let e = Worker::start(opts).await.unwrap_err();
    assert!(matches!(e, Error::ModelRefused(_)), "{e}");
    c.stop().await;
}

/// Serves `worker` on loopback; returns its URL, a stop switch and the task.
async fn serve(
    worker: &Worker,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<twinseal_worker::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let w = worker.clone();
    let server = tokio::spawn(async move {
        w.serve(listener, async {
            let _ = stopped.await;
        })
        .await
    });
    (url, stop, server)
}

async fn enroll(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut r = client.post(format!("{url}/v1/enroll")).json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_and_verify_against_a_sealed_gallery() {
    let c = Coord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gallery.sealed");
    let gallery = || {
        Some(twinseal_worker::GalleryOptions {
            location: twinseal_worker::GalleryLocation::File(path.clone()),
            key: GALLERY_KEY.into(),
        })
    };
    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.gallery = gallery();
    let worker = Worker::start(opts).await.unwrap();
    let cert = worker.state().certificate_der();
    let (url, stop, server) = serve(&worker).await;
    let client = c.client();
    let anonymous = https(&c.root, true);
    let enroller = c.tokens["carl"].clone();
    let (alice, bob, carol) = (digit(3), digit(5), digit(11));
    let body = json!({"identity": "alice", "images": [{"raw": B64.encode(&alice)}, {"png": B64.encode(png_of(&alice))}]});

    // Enrolment: no token, a wrong token, then the right one.
    let (s, v) = enroll(&anonymous, &url, None, &body).await;
    assert_eq!(
        (s, v["type"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    let (s, v) = enroll(&anonymous, &url, Some("not-the-token"), &body).await;
    assert_eq!(
        (s, v["type"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    assert!(!path.exists(), "a refused enrolment writes nothing");
    let (s, v) = enroll(&client, &url, Some(&enroller), &body).await;
    assert_eq!(s, 200, "{v}");
    let e: api::EnrollResponse = serde_json::from_value(v).unwrap();
    assert_eq!(
        (e.result.enrolled, e.result.references, e.result.identities),
        (2, 2, 1)
    );
    verify_receipt(&e.receipt, &cert).unwrap();
    assert_eq!(e.receipt.operation, "enroll");
    let body = json!({"identity": "bob", "images": [{"raw": B64.encode(&bob)}]});
    let (s, v) = enroll(&client, &url, Some(&enroller), &body).await;
    assert_eq!((s, v["identities"].as_u64()), (200, Some(2)), "{v}");

    // Sealed at rest: neither names nor embeddings are readable.
    let sealed = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&sealed);
    assert!(!text.contains("alice") && !text.contains("twinseal-gallery"));

    // 1:1.
    let (s, v) = post(
        &client,
        &format!("{url}/v1/verify"),
        &json!({"probe": {"raw": B64.encode(&alice)}, "identity": "alice"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r: api::VerifyResponse = serde_json::from_value(v).unwrap();
    assert_eq!(r.result.mode, "one_to_one");
    assert_eq!(r.result.matches.len(), 1);
    assert!(r.result.matches[0].result.distance < 1e-3);
    assert_eq!(
        r.result.matched,
        r.result.matches[0].result.verdict == api::Verdict::Similar
    );
    verify_receipt(&r.receipt, &cert).unwrap();
    assert_eq!(r.receipt.operation, "verify");
    assert_eq!(
        r.receipt.inputs_sha256,
        inputs_digest([(InputKind::Raw, &alice[..])].into_iter())
    );
    // An identity that is not enrolled answers exactly like a non-match:
    // the same shape and mode, not matched, a plausible score.
    let (s, unknown) = post(
        &client,
        &format!("{url}/v1/verify"),
        &json!({"probe": {"raw": B64.encode(&alice)}, "identity": "mallory"}),
    )
    .await;
    assert_eq!(s, 200, "{unknown}");
    let (s, nonmatch) = post(
        &client,
        &format!("{url}/v1/verify"),
        &json!({"probe": {"raw": B64.encode(&carol)}, "identity": "alice"}),
    )
    .await;
    assert_eq!(s, 200, "{nonmatch}");
    let shape = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.extend(v["matches"][0].as_object().unwrap().keys().cloned());
        keys.sort();
        keys
    };
    assert_eq!(shape(&unknown), shape(&nonmatch));
    let unknown: api::VerifyResponse = serde_json::from_value(unknown).unwrap();
    assert_eq!(unknown.result.mode, "one_to_one");
    assert!(!unknown.result.matched);
    assert_eq!(unknown.result.identity.as_deref(), Some("mallory"));
    assert_eq!(unknown.result.matches.len(), 1);
    assert_eq!(
        unknown.result.matches[0].result.verdict,
        api::Verdict::Dissimilar
    );
    verify_receipt(&unknown.receipt, &cert).unwrap();

    // 1:N: bob's own image finds bob first.
    let (s, v) = post(
        &client,
        &format!("{url}/v1/verify"),
        &json!({"probe": {"raw": B64.encode(&bob)}, "top": 5}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r: api::VerifyResponse = serde_json::from_value(v).unwrap();
    assert_eq!(r.result.mode, "search");
    assert_eq!(r.result.matches.len(), 2);
    assert_eq!(r.result.matches[0].identity, "bob");
    assert!(r.result.matches[0].result.score <= r.result.matches[1].result.score);

    // Bad enrolments change nothing.
    for body in [
        json!({"identity": "", "images": [{"raw": B64.encode(&carol)}]}),
        json!({"identity": "x\ny", "images": [{"raw": B64.encode(&carol)}]}),
        json!({"identity": "carol", "images": []}),
        json!({"identity": "carol", "images": [{"raw": B64.encode([0u8; 3])}]}),
    ] {
        let (s, v) = enroll(&client, &url, Some(&enroller), &body).await;
        assert_eq!(
            (s, v["type"].as_str()),
            (400, Some("bad_request")),
            "{body}: {v}"
        );
    }
    assert_eq!(std::fs::read(&path).unwrap(), sealed);
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // A restarted worker opens the sealed gallery again.
    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.gallery = gallery();
    let again = Worker::start(opts).await.unwrap();
    let (url, stop, server) = serve(&again).await;
    let (s, v) = post(
        &client,
        &format!("{url}/v1/verify"),
        &json!({"probe": {"raw": B64.encode(&bob)}, "identity": "bob"}),
    )
    .await;
    assert_eq!(
        (s, v["matches"][0]["identity"].as_str()),
        (200, Some("bob")),
        "{v}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // A damaged gallery stops the worker from starting, and stays as it was.
    let mut damaged = sealed.clone();
    let n = damaged.len();
    damaged[n - 20] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.gallery = gallery();
    let e = Worker::start(opts).await.unwrap_err();
    assert!(matches!(e, Error::Gallery(_)), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), damaged);

    // A worker without a gallery says so.
    let plain = Worker::start(c.options(APP, MEASUREMENT, c.sealed.clone()))
        .await
        .unwrap();
    let (url, stop, server) = serve(&plain).await;
    let body = json!({"identity": "alice", "images": [{"raw": B64.encode(&alice)}]});
    let (s, v) = enroll(&client, &url, Some(&enroller), &body).await;
    assert_eq!((s, v["type"].as_str()), (404, Some("not_found")), "{v}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_attests_again_before_expiry_and_stops_when_it_cannot() {
    let c = Coord::start_with_lifetime(10).await;
    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.renew_before = Some(std::time::Duration::from_millis(9_000));
    let worker = Worker::start(opts).await.unwrap();
    let first = worker.state().attestation();
    let (url, stop, server) = serve(&worker).await;

    // About a second later it has a new certificate, and new connections get it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while worker.state().attestation().serial == first.serial {
        assert!(std::time::Instant::now() < deadline, "no renewal");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let info: api::WorkerInfo = c
        .client()
        .get(format!("{url}/v1/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(info.certificate, first.certificate);
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // Without the coordinator it cannot renew: it stops serving at expiry.
    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.renew_before = Some(std::time::Duration::from_millis(3_000));
    let worker = Worker::start(opts).await.unwrap();
    let root = c.root.clone();
    c.stop().await;
    let (url, _stop, server) = serve(&worker).await;
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(std::time::Duration::from_secs(30), server)
        .await
        .expect("the worker stopped by itself")
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(5),
        "{e}"
    );
    assert!(
        https(&root, true)
            .get(format!("{url}/v1/info"))
            .send()
            .await
            .is_err(),
        "nothing serves after the stop"
    );
}

/// Every worker endpoint for one caller: (name, method, path, body).
fn worker_calls(probe: &[u8]) -> Vec<(&'static str, reqwest::Method, &'static str, Option<Value>)> {
    let raw = json!({"raw": B64.encode(probe)});
    vec![
        ("info", reqwest::Method::GET, "/v1/info", None),
        ("openapi", reqwest::Method::GET, "/v1/openapi.json", None),
        (
            "compare",
            reqwest::Method::POST,
            "/v1/compare",
            Some(json!({"a": raw, "b": raw})),
        ),
        (
            "compare_batch",
            reqwest::Method::POST,
            "/v1/compare/batch",
            Some(json!({"pairs": [{"a": raw, "b": raw}]})),
        ),
        (
            "embed",
            reqwest::Method::POST,
            "/v1/embed",
            Some(json!({"images": [raw]})),
        ),
        (
            "enroll",
            reqwest::Method::POST,
            "/v1/enroll",
            Some(json!({"identity": "zed", "images": [raw]})),
        ),
        (
            "verify",
            reqwest::Method::POST,
            "/v1/verify",
            Some(json!({"probe": raw, "identity": "zed"})),
        ),
        (
            "identify",
            reqwest::Method::POST,
            "/v1/verify",
            Some(json!({"probe": raw})),
        ),
    ]
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &Option<Value>,
) -> (u16, Value) {
    let mut r = client.request(method, url);
    if let Some(b) = body {
        r = r.json(b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_endpoint_answers_each_caller_with_the_exact_status() {
    let c = Coord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.gallery = Some(twinseal_worker::GalleryOptions {
        location: twinseal_worker::GalleryLocation::File(dir.path().join("gallery.sealed")),
        key: GALLERY_KEY.into(),
    });
    let worker = Worker::start(opts).await.unwrap();
    let (url, stop, server) = serve(&worker).await;
    let probe = digit(3);
    // Columns: info, openapi, compare, compare_batch, embed, enroll, verify, identify.
    let callers: [(&str, reqwest::Client, [u16; 8]); 6] = [
        (
            "no credentials",
            https(&c.root, true),
            [200, 200, 401, 401, 401, 401, 401, 401],
        ),
        (
            "forged token",
            https_with(&c.root, true, Some("tws_forged")),
            [200, 200, 401, 401, 401, 401, 401, 401],
        ),
        (
            "a data owner (not a client)",
            c.client_of("dora"),
            [200, 200, 401, 401, 401, 401, 401, 401],
        ),
        (
            "the admin (not a client)",
            https_with(&c.root, true, Some(c.admin_token())),
            [200, 200, 401, 401, 401, 401, 401, 401],
        ),
        (
            "eve: compare only",
            c.client_of("eve"),
            [200, 200, 200, 200, 403, 403, 403, 403],
        ),
        (
            "carl: everything",
            c.client(),
            [200, 200, 200, 200, 200, 200, 200, 200],
        ),
    ];
    let mut failures = Vec::new();
    for (who, client, want) in &callers {
        for (i, (name, method, path, body)) in worker_calls(&probe).into_iter().enumerate() {
            let (got, answer) = call(client, method, &format!("{url}{path}"), &body).await;
            if got != want[i] {
                failures.push(format!(
                    "{name} as {who}: {got} (want {}) {answer}",
                    want[i]
                ));
            }
            if got >= 400 {
                assert!(answer["type"].is_string(), "{name} as {who}: {answer}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "worker authorization mismatches:\n{}",
        failures.join("\n")
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // The loudly named public-demo option opens compare, and nothing else.
    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.insecure_public_compare = true;
    let public = Worker::start(opts).await.unwrap();
    let (url, stop, server) = serve(&public).await;
    let anonymous = https(&c.root, true);
    let want = [200, 200, 200, 200, 401, 401, 401, 401];
    for (i, (name, method, path, body)) in worker_calls(&probe).into_iter().enumerate() {
        let (got, answer) = call(&anonymous, method, &format!("{url}{path}"), &body).await;
        assert_eq!(
            got, want[i],
            "{name} without credentials on a public-compare worker: {answer}"
        );
    }
    let info: api::WorkerInfo = anonymous
        .get(format!("{url}/v1/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(info.insecure_public_compare, "the option shows in /v1/info");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_client_tokens_are_refused_and_clients_are_rate_limited() {
    let c = Coord::start_with(|c| c.client_cache_secs = 1).await;
    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.limits.client_burst = 10;
    opts.limits.client_requests_per_second = 1.0;
    let worker = Worker::start(opts).await.unwrap();
    let (url, stop, server) = serve(&worker).await;
    let a = digit(3);
    let body = json!({"a": {"raw": B64.encode(&a)}, "b": {"raw": B64.encode(&a)}});
    let compare = format!("{url}/v1/compare");

    // A token that expires in a second.
    let t: api::TokenResponse = c
        .admin
        .post("/v1/users/eve/token", &json!({"expires_in_secs": 1}))
        .await
        .unwrap();
    let short = https_with(&c.root, true, Some(&t.token));
    assert_eq!(post(&short, &compare, &body).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(
        post(&short, &compare, &body).await.0,
        401,
        "an expired token"
    );

    // A revoked token stops working once the worker's cache (1 s here) runs out.
    let t: api::TokenResponse = c.admin.post("/v1/users/eve/token", &()).await.unwrap();
    let revoked = https_with(&c.root, true, Some(&t.token));
    assert_eq!(post(&revoked, &compare, &body).await.0, 200);
    let _: Value = c
        .admin
        .delete(&format!("/v1/users/eve/tokens/{}", t.id))
        .await
        .unwrap_or(Value::Null);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        post(&revoked, &compare, &body).await.0,
        401,
        "a revoked token"
    );

    // Carl's burst of 10, then 429; eve is not affected.
    let carl = c.client();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(post(&carl, &compare, &body).await.0);
    }
    assert_eq!(&statuses[..10], &[200; 10], "{statuses:?}");
    assert_eq!(statuses[11], 429, "{statuses:?}");
    assert_eq!(post(&c.client_of("eve"), &compare, &body).await.0, 200);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_from_their_headers_before_decoding() {
    let c = Coord::start().await;
    let worker = Worker::start(c.options(APP, MEASUREMENT, c.sealed.clone()))
        .await
        .unwrap();
    let (url, stop, server) = serve(&worker).await;
    let client = c.client();
    // 6000 x 6000 grey zeros: 36 Mpixel in a PNG of a few tens of kB.
    let bomb = {
        let img = image::GrayImage::new(6000, 6000);
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let a = digit(3);
    let t0 = std::time::Instant::now();
    let (s, v) = post(
        &client,
        &format!("{url}/v1/compare"),
        &json!({"a": {"png": B64.encode(&bomb)}, "b": {"raw": B64.encode(&a)}}),
    )
    .await;
    assert_eq!((s, v["type"].as_str()), (400, Some("bad_request")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("pixels"), "{v}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "refused from the header, not after decoding: {:?}",
        t0.elapsed()
    );
    // Many medium images add up to the same budget.
    let medium = {
        let img = image::GrayImage::new(1500, 1500);
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let images: Vec<Value> = (0..16)
        .map(|_| json!({"png": B64.encode(&medium)}))
        .collect();
    let (s, v) = post(
        &client,
        &format!("{url}/v1/embed"),
        &json!({"images": images}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("pixels"), "{v}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    c.stop().await;
}

/// `twinseal-worker serve`, the measured binary on its own, runs the same
/// deployment as `twinseal worker serve`: it attests with the measurement
/// `twinseal-worker measurement` prints, opens the sealed model, answers
/// only client tokens, and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twinseal_worker_binary_serves_a_deployment_and_stops_on_sigterm() {
    use sha2::Sha384;
    use std::process::{Command, Stdio};
    let exe = env!("CARGO_BIN_EXE_twinseal-worker");
    let measurement: [u8; 48] = Sha384::digest(std::fs::read(exe).unwrap()).into();
    let printed = Command::new(exe).arg("measurement").output().unwrap();
    assert!(printed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        hex::encode(measurement)
    );

    let c = Coord::start_measured(|_| {}, measurement).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, model, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("model.sealed"),
        dir.path().join("platform.key"),
    );
    std::fs::write(&ca, &c.root).unwrap();
    std::fs::write(&model, &c.sealed).unwrap();
    std::fs::write(&key, c.platform.pkcs8().as_slice()).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut worker = Command::new(exe)
        .args([
            "serve",
            "--coordinator",
            &c.url,
            "--app",
            APP,
            "--tee",
            "simulated",
        ])
        .arg("--ca")
        .arg(&ca)
        .arg("--model")
        .arg(&model)
        .arg("--insecure-simulated-platform-key")
        .arg(&key)
        .args(["--insecure-simulated-platform-id", "paris-1"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let body = json!({"a": {"raw": B64.encode(digit(3))}, "b": {"raw": B64.encode(digit(8))}});
    let mut answered = None;
    for _ in 0..300 {
        if let Some(status) = worker.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("twinseal-worker exited with {status}: {err}");
        }
        if let Ok(r) = c
            .client()
            .post(format!("{url}/v1/compare"))
            .json(&body)
            .send()
            .await
        {
            answered = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = answered.expect("twinseal-worker answered within 30 s");
    assert_eq!(r.status(), 200);
    let cert = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("the worker's certificate");
    let answer: api::CompareResponse = r.json().await.unwrap();
    verify_receipt(&answer.receipt, &cert).unwrap();
    assert_eq!(answer.receipt.operation, "compare");
    // Without a client token it answers no one.
    let (status, _) = post(&https(&c.root, true), &format!("{url}/v1/compare"), &body).await;
    assert_eq!(status, 401);

    let killed = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || worker.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "twinseal-worker stopped with {status}");
    c.stop().await;
}

/// An S3 store on the test process's throwaway SeaweedFS (a fresh
/// bucket), configured directly rather than through the environment.
fn s3_store(bucket: &str, secret: &str) -> Arc<dyn object_store::ObjectStore> {
    twinseal_testing::TempS3::shared().store(bucket, secret)
}

fn shared_gallery(store: &Arc<dyn object_store::ObjectStore>) -> twinseal_worker::GalleryOptions {
    twinseal_worker::GalleryOptions {
        location: twinseal_worker::GalleryLocation::Shared {
            store: store.clone(),
            path: "galleries/worker.sealed".into(),
            refresh: Duration::from_millis(250),
            display: "s3://test/galleries/worker.sealed".into(),
        },
        key: GALLERY_KEY.into(),
    }
}

/// The identities a worker's 1:N search finds.
async fn identities_seen(client: &reqwest::Client, url: &str, probe: &[u8]) -> Vec<String> {
    let (s, v) = post(
        client,
        &format!("{url}/v1/verify"),
        &json!({"probe": {"raw": B64.encode(probe)}, "top": 64}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r: api::VerifyResponse = serde_json::from_value(v).unwrap();
    let mut ids: Vec<String> = r.result.matches.into_iter().map(|m| m.identity).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enrolments_on_two_workers_of_one_shared_gallery_all_survive() {
    let bucket = tokio::task::spawn_blocking(|| twinseal_testing::TempS3::shared().bucket())
        .await
        .unwrap();
    let store = s3_store(&bucket, twinseal_testing::s3::SECRET_KEY);
    let c = Coord::start().await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
        opts.gallery = Some(shared_gallery(&store));
        let w = Worker::start(opts).await.unwrap();
        let (url, stop, server) = serve(&w).await;
        workers.push((w, url, stop, server));
    }
    let client = c.client();
    let enroller = c.tokens["carl"].clone();
    // 16 enrolments at once, 8 on each worker, every one a new identity.
    let mut tasks = Vec::new();
    for i in 0..16usize {
        let (client, url, token) = (client.clone(), workers[i % 2].1.clone(), enroller.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"identity": format!("id-{i:02}"), "images": [{"raw": B64.encode(digit(i as u8 + 1))}]});
            enroll(&client, &url, Some(&token), &body).await
        }));
    }
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
    }
    let want: Vec<String> = (0..16).map(|i| format!("id-{i:02}")).collect();
    // Every worker sees all 16 within its refresh period (250 ms here).
    let t0 = std::time::Instant::now();
    for (_, url, _, _) in &workers {
        loop {
            let seen = identities_seen(&client, url, &digit(1)).await;
            if seen == want {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{url} sees {} of 16 identities after 5 s: {seen:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let visible_after = t0.elapsed();
    // A worker started now opens the same gallery.
    let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
    opts.gallery = Some(shared_gallery(&store));
    let third = Worker::start(opts).await.unwrap();
    let (url3, stop3, server3) = serve(&third).await;
    assert_eq!(identities_seen(&client, &url3, &digit(1)).await, want);
    // One more enrolment on the new worker reaches the first two.
    let body = json!({"identity": "late", "images": [{"raw": B64.encode(digit(41))}]});
    assert_eq!(enroll(&client, &url3, Some(&enroller), &body).await.0, 200);
    let t1 = std::time::Instant::now();
    for (_, url, _, _) in &workers {
        while !identities_seen(&client, url, &digit(41))
            .await
            .contains(&"late".to_string())
        {
            assert!(
                t1.elapsed() < Duration::from_secs(5),
                "the late enrolment did not reach {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "16 concurrent enrolments on 2 workers: all stored; seen by both after {visible_after:?}; \
         a later one reached both after {:?}",
        t1.elapsed()
    );
    let _ = stop3.send(());
    server3.await.unwrap().unwrap();
    for (_, _, stop, server) in workers {
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_or_refused_credentials_stop_the_worker_at_start_with_one_clear_error() {
    let bucket = tokio::task::spawn_blocking(|| twinseal_testing::TempS3::shared().bucket())
        .await
        .unwrap();
    let c = Coord::start().await;
    for (store, want) in [
        (
            s3_store("no-such-bucket-here", twinseal_testing::s3::SECRET_KEY),
            "the bucket does not exist",
        ),
        (
            s3_store(&bucket, "a-wrong-secret"),
            "the credentials were refused",
        ),
    ] {
        let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
        opts.gallery = Some(shared_gallery(&store));
        let e = Worker::start(opts).await.unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
        assert!(!e.contains("a-wrong-secret"), "{e}");
    }
    // Nothing was written to the bucket by the refused starts.
    let right = s3_store(&bucket, twinseal_testing::s3::SECRET_KEY);
    let listed = right.list_with_delimiter(None).await.unwrap();
    assert!(listed.objects.is_empty() && listed.common_prefixes.is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_server_refuses_stale_and_duplicate_writes() {
    // What the shared gallery and create-only outputs rely on: the server
    // enforces If-Match and If-None-Match.
    use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
    let bucket = tokio::task::spawn_blocking(|| twinseal_testing::TempS3::shared().bucket())
        .await
        .unwrap();
    let store = s3_store(&bucket, twinseal_testing::s3::SECRET_KEY);
    let path = object_store::path::Path::from("x/obj");
    let create = |b: &'static [u8]| {
        let (store, path) = (store.clone(), path.clone());
        async move {
            store
                .put_opts(&path, b.into(), PutOptions::from(PutMode::Create))
                .await
        }
    };
    let first = create(b"one").await.unwrap();
    assert!(matches!(
        create(b"two").await,
        Err(object_store::Error::AlreadyExists { .. })
    ));
    let v1 = UpdateVersion {
        e_tag: first.e_tag.clone(),
        version: first.version.clone(),
    };
    store
        .put_opts(
            &path,
            b"three".as_slice().into(),
            PutOptions::from(PutMode::Update(v1.clone())),
        )
        .await
        .unwrap();
    let stale = store
        .put_opts(
            &path,
            b"four".as_slice().into(),
            PutOptions::from(PutMode::Update(v1)),
        )
        .await;
    assert!(
        matches!(stale, Err(object_store::Error::Precondition { .. })),
        "{stale:?}"
    );
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_behind_haproxy_answer_compare_and_share_one_gallery() {
    let bucket = tokio::task::spawn_blocking(|| twinseal_testing::TempS3::shared().bucket())
        .await
        .unwrap();
    let store = s3_store(&bucket, twinseal_testing::s3::SECRET_KEY);
    let c = Coord::start().await;
    let mut workers = Vec::new();
    let mut addrs = Vec::new();
    let mut certs = Vec::new();
    for _ in 0..2 {
        let mut opts = c.options(APP, MEASUREMENT, c.sealed.clone());
        opts.gallery = Some(shared_gallery(&store));
        let w = Worker::start(opts).await.unwrap();
        certs.push(hex::encode(Sha256::digest(w.state().certificate_der())));
        let (url, stop, server) = serve(&w).await;
        addrs.push(url.trim_start_matches("https://").parse().unwrap());
        workers.push((w, stop, server));
    }
    // TCP passthrough: TLS ends at each worker, and the client verifies
    // the attested certificate of whichever worker answers.
    let lb = tokio::task::spawn_blocking(move || twinseal_testing::TempHaproxy::start(&addrs))
        .await
        .unwrap()
        .unwrap();
    let url = format!("https://127.0.0.1:{}", lb.port());
    let token = c.tokens["carl"].clone();
    let fresh = || {
        // A new connection per request, so the balancer picks again.
        let cfg = twinseal_net::tls::PeerVerifier::worker(&c.root, true)
            .unwrap()
            .client_config()
            .unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .pool_max_idle_per_host(0)
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let mut answered_by = std::collections::BTreeMap::<String, usize>::new();
    let (a, b) = (digit(3), digit(5));
    for _ in 0..12 {
        let (s, v) = post(
            &fresh(),
            &format!("{url}/v1/compare"),
            &json!({"a": {"raw": B64.encode(&a)}, "b": {"raw": B64.encode(&b)}}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let r: api::CompareResponse = serde_json::from_value(v).unwrap();
        assert!(certs.contains(&r.receipt.certificate_sha256));
        *answered_by.entry(r.receipt.certificate_sha256).or_default() += 1;
    }
    assert_eq!(answered_by.len(), 2, "compare answered by {answered_by:?}");
    // Enrolments through the balancer land on both workers, into one gallery.
    let mut enrolled_by = std::collections::BTreeSet::new();
    for i in 0..8u8 {
        let body =
            json!({"identity": format!("lb-{i}"), "images": [{"raw": B64.encode(digit(i + 1))}]});
        let (s, v) = enroll(&fresh(), &url, None, &body).await;
        assert_eq!(s, 200, "{v}");
        let r: api::EnrollResponse = serde_json::from_value(v).unwrap();
        enrolled_by.insert(r.receipt.certificate_sha256);
    }
    assert_eq!(enrolled_by.len(), 2, "enrolments went to one worker only");
    let want: Vec<String> = (0..8).map(|i| format!("lb-{i}")).collect();
    let t0 = std::time::Instant::now();
    let mut verified_by = std::collections::BTreeSet::new();
    while verified_by.len() < 2 {
        let (s, v) = post(
            &fresh(),
            &format!("{url}/v1/verify"),
            &json!({"probe": {"raw": B64.encode(digit(1))}, "top": 64}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let r: api::VerifyResponse = serde_json::from_value(v).unwrap();
        let mut ids: Vec<String> = r.result.matches.into_iter().map(|m| m.identity).collect();
        ids.sort();
        if ids == want {
            verified_by.insert(r.receipt.certificate_sha256);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not every worker behind the balancer sees all 8 enrolments"
        );
    }
    drop(lb);
    for (_, stop, server) in workers {
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
    c.stop().await;
}
