//! End to end, in one process on loopback with the simulated TEE: the
//! coordinator attests itself and the worker, the worker opens a sealed
//! model and answers over attested TLS with receipts, a workflow turns a
//! sealed dataset into sealed results only the output key's holders read,
//! and the audit log verifies. Then the denials: wrong measurement, wrong
//! place, revoked certificate, tampered model, foreign or simulated
//! certificates at the client, and broken workflow inputs.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use sha2::{Digest, Sha256};
use twinseal_api as api;
use twinseal_local::{APP, Local, LocalOptions, MODEL_KEY, Served, seal, unseal};
use twinseal_siamese::{HeadKind, ModelConfig, Siamese};
use twinseal_worker::{Error as WorkerError, Worker, verify_receipt};

const M: [u8; 48] = [0x5a; 48];

fn manifest(extra: &str) -> String {
    format!(
        r#"
[users.admin]
roles = ["admin"]
[users.dora]
roles = ["data_owner"]
[users.mel]
roles = ["ml_engineer"]
[users.audrey]
roles = ["auditor"]
{app}
[datasets.pairs]
location = "datasets/pairs.sealed"
key = "dataset-key"
context = {{ purpose = "pairs" }}
[workflows.score-pairs]
input = "pairs"
app = "{APP}"
output = "results/score-pairs"
output_key = "results-key"
{client}
[keys.{MODEL_KEY}]
owners = ["dora"]
[keys.dataset-key]
owners = ["dora"]
[keys.results-key]
grants = {{ dora = ["open"] }}
{extra}
"#,
        app = Local::app_entry(APP, &M, &[MODEL_KEY, "dataset-key", "results-key"]),
        client = Local::client_entry(&[APP]),
    )
}

fn model() -> Siamese {
    Siamese::new(
        ModelConfig::seed(HeadKind::Sigmoid),
        7,
        &candle_core::Device::Cpu,
    )
    .unwrap()
}

/// A 28x28 grey test image.
fn digit(seed: u32) -> Vec<u8> {
    (0..784u32)
        .map(|i| ((i * seed + i / 28 * (seed % 7)) % 256) as u8)
        .collect()
}

fn png(raw: &[u8]) -> Vec<u8> {
    let img = image::GrayImage::from_raw(28, 28, raw.to_vec()).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

async fn started() -> (Local, Vec<u8>, Vec<u8>) {
    let local = Local::start(LocalOptions {
        self_evidence: true,
        ..LocalOptions::default()
    })
    .await
    .unwrap();
    local.apply_manifest(&manifest("")).await.unwrap();
    local
        .create_keys(&[MODEL_KEY, "dataset-key", "results-key"])
        .await
        .unwrap();
    let plain = model().to_bytes().unwrap();
    let dora = local.user("dora").await.unwrap();
    let sealed = seal(&dora, MODEL_KEY, &[("purpose", "model")], &plain)
        .await
        .unwrap();
    (local, plain, sealed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_on_loopback() {
    let (local, plain_model, sealed_model) = started().await;

    // 1. The client checks the coordinator's own evidence before pinning
    // its root: bound to a fresh nonce and to the root it presents.
    let nonce = [0x42u8; 32];
    let got = twinseal_coordinator::client::fetch_own_evidence(&local.url, &nonce)
        .await
        .unwrap();
    assert_eq!(got.answer.tee, "simulated");
    let root_der = twinseal_worker::tls::root_der_from_pem(&got.answer.ca).unwrap();
    assert_eq!(got.answer.ca, local.root_pem);
    assert_eq!(got.answer.ca_sha256, hex::encode(Sha256::digest(&root_der)));
    twinseal_coordinator::client::check_server_cert(&got.server_cert_der, &root_der).unwrap();
    let evidence = twinseal_attest::Evidence::detect(
        &B64.decode(&got.answer.evidence.as_ref().unwrap().evidence)
            .unwrap(),
    )
    .unwrap();
    let expected =
        twinseal_coordinator::client::own_evidence_report_data(&nonce, &root_der).unwrap();
    let verifier = twinseal_attest::SimulatedVerifier::insecure_new(vec![
        hex::decode(local.platform_public_key_hex()).unwrap(),
    ]);
    use twinseal_attest::Verifier as _;
    let claims = verifier
        .verify(&evidence, &expected, std::time::SystemTime::now())
        .unwrap();
    assert!(claims.is_simulated());
    // The same evidence does not verify for another nonce (no replay).
    let other =
        twinseal_coordinator::client::own_evidence_report_data(&[0u8; 32], &root_der).unwrap();
    assert!(
        verifier
            .verify(&evidence, &other, std::time::SystemTime::now())
            .is_err()
    );

    // 2. The worker attests, gets the model key, opens the model in memory.
    let worker = Worker::start(local.worker_options(APP, M, sealed_model).unwrap())
        .await
        .unwrap();
    assert_eq!(
        worker.state().model_sha256(),
        hex::encode(Sha256::digest(&plain_model))
    );
    let served = Served::start(worker.clone()).await.unwrap();
    let client = twinseal_local::worker_http_client_with_token(
        &local.root_pem,
        true,
        Some(&local.client_token().await.unwrap()),
    )
    .unwrap();

    // 3. A comparison over attested TLS gives the in-process answer, with
    // a receipt that verifies with the serving certificate.
    let (a, b) = (digit(3), digit(11));
    let resp = client
        .post(format!("{}/v1/compare", served.url))
        .json(&json!({"a": {"png": B64.encode(png(&a))}, "b": {"raw": B64.encode(&b)}}))
        .send()
        .await
        .unwrap();
    let cert = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .unwrap()
        .to_vec();
    assert_eq!(resp.status(), 200);
    let r: api::CompareResponse = resp.json().await.unwrap();
    verify_receipt(&r.receipt, &cert).unwrap();
    let px = |v: &[u8]| v.iter().map(|&x| x as f32 / 255.0).collect::<Vec<f32>>();
    let local_score = model().score_pairs(&px(&a), &px(&b)).unwrap()[0];
    assert!((r.result.probability - local_score.probability).abs() < 1e-6);
    assert!((r.result.distance - local_score.distance).abs() < 1e-6);

    // 4. A workflow: the data owner seals a dataset of pairs; the ML
    // engineer runs it; the attested worker writes sealed results.
    let store_dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> =
        twinseal_worker::jobs::open_store(store_dir.path().to_str().unwrap()).unwrap();
    let mut files = Vec::new();
    let mut csv = String::from("left,right,same\n");
    let mut expected = Vec::new();
    for i in 0..6u32 {
        files.push((format!("img/{i}.png"), png(&digit(i + 2))));
    }
    for (l, r, same) in [(0u32, 1u32, 0), (2, 2, 1), (3, 5, 0), (4, 1, 0)] {
        csv.push_str(&format!("img/{l}.png,img/{r}.png,{same}\n"));
        expected.push(
            model()
                .score_pairs(&px(&digit(l + 2)), &px(&digit(r + 2)))
                .unwrap()[0],
        );
    }
    files.push(("pairs.csv".into(), csv.into_bytes()));
    let dora = local.user("dora").await.unwrap();
    let sealed_input = seal(
        &dora,
        "dataset-key",
        &[("purpose", "pairs")],
        &tar_of(&files),
    )
    .await
    .unwrap();
    std::fs::create_dir_all(store_dir.path().join("datasets")).unwrap();
    std::fs::write(
        store_dir.path().join("datasets/pairs.sealed"),
        &sealed_input,
    )
    .unwrap();

    let mel = local.user("mel").await.unwrap();
    let queued: api::RunInfo = mel
        .post("/v1/workflows/score-pairs/runs", &())
        .await
        .unwrap();
    assert_eq!(queued.state, api::RunState::Queued);
    let (run, outcome) = worker.run_next_job(store.as_ref()).await.unwrap().unwrap();
    assert_eq!(run, queued.id);
    let finished = outcome.unwrap();
    assert_eq!(finished.state, api::RunState::Succeeded, "{finished:?}");
    assert!(worker.run_next_job(store.as_ref()).await.unwrap().is_none());

    let info: api::RunInfo = mel.get(&format!("/v1/runs/{run}")).await.unwrap();
    assert_eq!((info.done, info.total), (4, 4));
    let output = info.output.clone().unwrap();
    assert_eq!(output, format!("results/score-pairs/run-{run}.sealed"));
    let sealed_out = std::fs::read(store_dir.path().join(&output)).unwrap();
    assert_eq!(
        info.output_sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&sealed_out)).as_str())
    );
    let receipt = info.receipt.unwrap();
    let wcert = twinseal_worker::tls::root_der_from_pem(&info.certificate.unwrap()).unwrap();
    verify_receipt(&receipt, &wcert).unwrap();
    assert_eq!(receipt.operation, "workflow");
    assert_eq!(
        receipt.inputs_sha256,
        hex::encode(Sha256::digest(&sealed_input))
    );

    // Only holders of the output key read the results: the data owner
    // may, the ML engineer who ran it may not.
    let ctx = [
        ("purpose", "workflow-output"),
        ("workflow", "score-pairs"),
        ("run", &run.to_string()[..]),
    ];
    let refused = unseal(&mel, "results-key", &ctx, &sealed_out)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    let results = String::from_utf8(
        unseal(&dora, "results-key", &ctx, &sealed_out)
            .await
            .unwrap(),
    )
    .unwrap();
    let lines: Vec<&str> = results.lines().collect();
    assert_eq!(
        lines[0],
        "left,right,same,verdict,probability,distance,score"
    );
    assert_eq!(lines.len(), 5);
    for (line, want) in lines[1..].iter().zip(&expected) {
        let f: Vec<&str> = line.split(',').collect();
        let p: f32 = f[4].parse().unwrap();
        assert!((p - want.probability).abs() < 1e-6, "{line}");
        assert_eq!(f[3] == "similar", want.similar, "{line}");
    }
    assert!(lines[2].starts_with("img/2.png,img/2.png,1,"));

    // Nothing in the object store is plaintext.
    let mut stack = vec![store_dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            for needle in [&b"left,right"[..], b"\x89PNG", b"img/0.png"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds plaintext",
                    p.display()
                );
            }
        }
    }

    // 5. The audit log records it all and verifies offline.
    let bundle =
        twinseal_audit::Bundle::from_json(&local.coordinator.audit_export().unwrap()).unwrap();
    let report = twinseal_audit::verify_bundle(&bundle, local.coordinator.verifier_key());
    assert!(report.is_ok(), "{:?}", report.problems);
    // The same log verifies from the tiles the coordinator serves
    // (C2SP tlog-tiles), and from a copy of them in a plain directory.
    struct LogTiles<'a>(&'a twinseal_coordinator::Coordinator);
    impl twinseal_audit::TileSource for LogTiles<'_> {
        fn fetch(&mut self, path: &str) -> twinseal_audit::Result<Vec<u8>> {
            self.0
                .log_resource(path)
                .map_err(|e| twinseal_audit::Error::TileUnavailable(e.to_string()))
        }
    }
    let key = local.coordinator.verifier_key();
    let options = twinseal_audit::VerifyOptions::default();
    let from_tiles =
        twinseal_audit::verify_tiles(&mut LogTiles(&local.coordinator), key, &options).unwrap();
    assert!(from_tiles.is_ok(), "{from_tiles}");
    let copy = tempfile::tempdir().unwrap();
    twinseal_audit::mirror(&mut LogTiles(&local.coordinator), key, copy.path()).unwrap();
    let from_copy = twinseal_audit::verify_tiles(
        &mut twinseal_audit::DirSource(copy.path().into()),
        key,
        &options,
    )
    .unwrap();
    assert!(from_copy.is_ok(), "{from_copy}");
    assert_eq!(from_copy.entries, from_tiles.entries);
    assert!(from_copy.entries > 0 && from_copy.entries <= bundle.entries.len() as u64);
    let kinds: Vec<&str> = bundle.entries.iter().map(|e| e.event.kind()).collect();
    for k in [
        "attestation_verified",
        "certificate_issued",
        "workflow_run_queued",
        "workflow_run_claimed",
        "data_key_unwrapped",
        "data_key_generated",
        "workflow_run_finished",
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }

    served.stop().await.unwrap();
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_denials() {
    let (local, _, sealed_model) = started().await;

    // A build whose measurement is not in the manifest gets no certificate
    // and so no key.
    let e = Worker::start(
        local
            .worker_options(APP, [0x01; 48], sealed_model.clone())
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, WorkerError::Attestation(_)), "{e}");

    // A tampered sealed model is refused.
    let mut tampered = sealed_model.clone();
    let n = tampered.len();
    tampered[n / 2] ^= 0x10;
    let e = Worker::start(local.worker_options(APP, M, tampered).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, WorkerError::ModelRefused(_)), "{e}");

    // A revoked app's next release fails.
    let worker = Worker::start(local.worker_options(APP, M, sealed_model.clone()).unwrap())
        .await
        .unwrap();
    worker.state().release(MODEL_KEY).await.unwrap();
    let serial = worker.state().attestation().serial;
    let _: serde_json::Value = local
        .admin
        .post(&format!("/v1/certificates/{serial}/revoke"), &())
        .await
        .unwrap();
    assert!(worker.state().release(MODEL_KEY).await.is_err());

    // Clients: a certificate from another coordinator's root is refused,
    // and a simulated one unless simulated workers are allowed.
    let fresh = Worker::start(local.worker_options(APP, M, sealed_model).unwrap())
        .await
        .unwrap();
    let served = Served::start(fresh).await.unwrap();
    let other = Local::start(LocalOptions::default()).await.unwrap();
    let info = format!("{}/v1/info", served.url);
    let foreign = twinseal_local::worker_http_client(&other.root_pem, true).unwrap();
    assert!(foreign.get(&info).send().await.is_err());
    let strict = twinseal_local::worker_http_client(&local.root_pem, false).unwrap();
    assert!(strict.get(&info).send().await.is_err());
    let allowing = twinseal_local::worker_http_client(&local.root_pem, true).unwrap();
    assert_eq!(allowing.get(&info).send().await.unwrap().status(), 200);
    served.stop().await.unwrap();
    other.stop().await.unwrap();
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_outside_its_placement_gets_no_key() {
    let operator = twinseal_policy::PlacementSigner::generate().unwrap();
    let local = Local::start(LocalOptions {
        placement_keys: vec![operator.public_key().to_vec()],
        ..LocalOptions::default()
    })
    .await
    .unwrap();
    let platform = format!("simulated:{}", twinseal_local::PLATFORM_ID);
    let placed = |location: &str| {
        let e = operator.endorse(&platform, location).unwrap();
        manifest(&format!(
            "[[placements]]\nplatform = \"{}\"\nlocation = \"{}\"\nsignature = \"{}\"\n",
            e.platform, e.location, e.signature
        ))
        .replace(
            "[keys.model-key]\nowners = [\"dora\"]\n",
            "[keys.model-key]\nowners = [\"dora\"]\nallowed_locations = [\"eu-west\"]\n",
        )
    };
    local.apply_manifest(&placed("us-east")).await.unwrap();
    local
        .create_keys(&[MODEL_KEY, "dataset-key", "results-key"])
        .await
        .unwrap();
    let dora = local.user("dora").await.unwrap();
    let sealed = seal(
        &dora,
        MODEL_KEY,
        &[("purpose", "model")],
        &model().to_bytes().unwrap(),
    )
    .await
    .unwrap();
    let e = Worker::start(local.worker_options(APP, M, sealed.clone()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, WorkerError::ModelRefused(_)), "{e}");
    // The coordinator evaluated the placement for the model's file key and
    // audited why it refused.
    let b = twinseal_audit::Bundle::from_json(&local.coordinator.audit_export().unwrap()).unwrap();
    assert!(
        b.entries.iter().any(|e| matches!(&e.event,
            twinseal_audit::Event::DataKeyDenied { reasons, .. }
                if reasons.iter().any(|r| r.contains("location us-east is not allowed")))),
        "the placement refusal is audited"
    );
    // Endorsed inside the allowed place, the same worker starts.
    local.apply_manifest(&placed("eu-west")).await.unwrap();
    Worker::start(local.worker_options(APP, M, sealed).unwrap())
        .await
        .unwrap();
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_workflow_inputs_fail_the_run_and_replace_nothing() {
    let (local, _, sealed_model) = started().await;
    let worker = Worker::start(local.worker_options(APP, M, sealed_model).unwrap())
        .await
        .unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = twinseal_worker::jobs::open_store(store_dir.path().to_str().unwrap()).unwrap();
    let dora = local.user("dora").await.unwrap();
    let mel = local.user("mel").await.unwrap();
    std::fs::create_dir_all(store_dir.path().join("datasets")).unwrap();
    let input = store_dir.path().join("datasets/pairs.sealed");
    let good_tar = tar_of(&[
        ("a.png".into(), png(&digit(3))),
        ("pairs.csv".into(), b"left,right\na.png,a.png\n".to_vec()),
    ]);

    let run = |body: Option<Vec<u8>>| {
        let (mel, worker, store, input) = (&mel, &worker, &store, &input);
        async move {
            match body {
                Some(b) => std::fs::write(input, b).unwrap(),
                None => {
                    let _ = std::fs::remove_file(input);
                }
            }
            let q: api::RunInfo = mel
                .post("/v1/workflows/score-pairs/runs", &())
                .await
                .unwrap();
            let (id, out) = worker.run_next_job(store.as_ref()).await.unwrap().unwrap();
            assert_eq!(id, q.id);
            let info: api::RunInfo = mel.get(&format!("/v1/runs/{id}")).await.unwrap();
            (id, out, info)
        }
    };
    let sealed_with = |ctx: &'static str, tar: Vec<u8>| {
        let dora = &dora;
        async move {
            seal(dora, "dataset-key", &[("purpose", ctx)], &tar)
                .await
                .unwrap()
        }
    };
    // Missing input, wrong context, tampered bytes, no pairs.csv.
    let wrong_ctx = sealed_with("model", good_tar.clone()).await;
    let mut tampered = sealed_with("pairs", good_tar.clone()).await;
    let n = tampered.len();
    tampered[n - 20] ^= 1;
    let no_pairs = sealed_with("pairs", tar_of(&[("a.png".into(), png(&digit(3)))])).await;
    for (body, why) in [
        (None, "not found"),
        (Some(wrong_ctx), "does not open"),
        (Some(tampered), "does not open"),
        (Some(no_pairs), "no pairs.csv"),
    ] {
        let (id, out, info) = run(body).await;
        let e = out.unwrap_err().to_string();
        assert!(e.contains(why), "run {id}: {e}");
        assert_eq!(info.state, api::RunState::Failed);
        assert!(info.error.unwrap().contains(why));
        assert!(info.output.is_none());
        assert!(
            !store_dir
                .path()
                .join(format!("results/score-pairs/run-{id}.sealed"))
                .exists()
        );
    }
    // An object already at the next output location is never replaced.
    let good = sealed_with("pairs", good_tar).await;
    let next = 5;
    let occupied = store_dir
        .path()
        .join(format!("results/score-pairs/run-{next}.sealed"));
    std::fs::create_dir_all(occupied.parent().unwrap()).unwrap();
    std::fs::write(&occupied, b"precious").unwrap();
    let (id, out, info) = run(Some(good.clone())).await;
    assert_eq!(id, next);
    assert!(out.unwrap_err().to_string().contains("already exists"));
    assert_eq!(info.state, api::RunState::Failed);
    assert_eq!(std::fs::read(&occupied).unwrap(), b"precious");
    // And the next run succeeds.
    let (_, out, info) = run(Some(good)).await;
    out.unwrap();
    assert_eq!(info.state, api::RunState::Succeeded);
    local.stop().await.unwrap();
}

/// The keras-siamese fixture (`testdata/models/keras-siamese`).
fn keras_fixture() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/models/keras-siamese");
    assert!(
        dir.join("siamese.onnx").is_file(),
        "the keras-siamese fixture is missing at {}: testdata/ is part of the repository: restore it with `git checkout -- testdata`",
        dir.display()
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_onnx_model_is_sealed_attested_and_served_like_a_native_one() {
    let fx = keras_fixture();
    let config = twinseal_siamese::onnx::OnnxConfig::from_toml(
        "kind = \"pair\"\nheight = 28\nwidth = 28\nscale = 255.0\noutput = \"dissimilarity_probability\"\n",
    )
    .unwrap();
    let (file, in_process) = twinseal_siamese::serving::import_onnx(
        &std::fs::read(fx.join("siamese.onnx")).unwrap(),
        &config,
    )
    .unwrap();
    let local = Local::start(LocalOptions::default()).await.unwrap();
    local.prepare_model_serving(&M).await.unwrap();
    let dora = local.user(twinseal_local::DATA_OWNER).await.unwrap();
    let sealed = seal(&dora, MODEL_KEY, &[("purpose", "model")], &file)
        .await
        .unwrap();
    let worker = Worker::start(local.worker_options(APP, M, sealed).unwrap())
        .await
        .unwrap();
    assert_eq!(worker.state().model().unwrap().backend(), "onnx");
    assert_eq!(
        worker.state().model_sha256(),
        hex::encode(Sha256::digest(&file))
    );
    let served = Served::start(worker).await.unwrap();
    let client = twinseal_local::worker_http_client_with_token(
        &local.root_pem,
        true,
        Some(&local.client_token().await.unwrap()),
    )
    .unwrap();
    let raw = |name: &str, i: usize| -> Vec<u8> {
        let f: Vec<f32> = std::fs::read(fx.join(name))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        f[i * 784..(i + 1) * 784].iter().map(|&v| v as u8).collect()
    };
    for i in [0usize, 1, 2, 100] {
        let (a, b) = (raw("pairs_a.f32", i), raw("pairs_b.f32", i));
        let resp = client
            .post(format!("{}/v1/compare", served.url))
            .json(&json!({"a": {"raw": B64.encode(&a)}, "b": {"png": B64.encode(png(&b))}}))
            .send()
            .await
            .unwrap();
        let cert = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .unwrap()
            .to_vec();
        let r: api::CompareResponse = resp.json().await.unwrap();
        verify_receipt(&r.receipt, &cert).unwrap();
        assert_eq!(r.receipt.model_sha256, hex::encode(Sha256::digest(&file)));
        let px = |v: &[u8]| v.iter().map(|&x| x as f32 / 255.0).collect::<Vec<f32>>();
        let want = in_process.score_pairs(&px(&a), &px(&b)).unwrap()[0];
        assert!((r.result.score - want.score).abs() < 1e-6, "pair {i}");
        assert_eq!(r.result.verdict == api::Verdict::Similar, want.similar);
    }
    // Embeddings do not exist for a two-input graph: a clear 400.
    let r = client
        .post(format!("{}/v1/embed", served.url))
        .json(&json!({"images": [{"raw": B64.encode([0u8; 784])}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("pairs only"), "{v}");
    served.stop().await.unwrap();
    local.stop().await.unwrap();
}
