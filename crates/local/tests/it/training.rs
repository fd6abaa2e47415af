//! Confidential training end to end, in one process on loopback with the
//! simulated TEE: the data owner seals an image folder under a coordinator
//! key, the ML engineer starts the training workflow, an attested trainer
//! trains from the sealed dataset into a sealed model with a training
//! record, and an attested worker serves that model. Then each role's
//! limits and the denials: a trainer with a wrong measurement, the ML
//! engineer's and the operator's credentials on the dataset key, and a
//! model without an approved training record.
//!
//! And no plaintext image or weight file is written anywhere during a
//! training workflow: the trainer's temporary directory (`TMPDIR`), its
//! working directory and the object store are watched with inotify while
//! it runs; every file created or changed must be one of the run's sealed
//! outputs, and no file left in them holds a PNG, a tar archive or a model.
//! That test reruns this binary as a child process with `TMPDIR` and the
//! working directory pointed at watched folders, so that everything the
//! process writes lands where it is seen.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::json;
use sha2::{Digest, Sha256};
use twinseal_api as api;
use twinseal_coordinator::client::Client;
use twinseal_local::{APP, MODEL_KEY, Served, seal, unseal};
use twinseal_siamese::Siamese;
use twinseal_worker::{Error as WorkerError, Worker, verify_receipt};

fn model_context(run: u64) -> twinseal_envelope::Context {
    let run = run.to_string();
    twinseal_envelope::Context::from_pairs([
        ("purpose", "model"),
        ("workflow", WORKFLOW),
        ("run", run.as_str()),
    ])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_from_a_sealed_folder_then_serve_the_sealed_model() {
    let ds = mnist();
    let d = deployment(&ds).await;
    let local = &d.local;

    // The public index shows identities and counts without any key.
    assert_eq!(d.index.identities.len(), 4);
    assert_eq!(d.index.images, 160);

    // 1. The ML engineer starts the workflow; the data owner may not.
    let dora = local.user("dora").await.unwrap();
    let e = dora
        .post::<_, api::RunInfo>(&format!("/v1/workflows/{WORKFLOW}/runs"), &())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("403"), "{e}");
    let queued = start_training(local).await;
    assert_eq!(queued.kind, "train");
    assert_eq!(queued.state, api::RunState::Queued);

    // 2. The attested trainer claims and runs it.
    let trainer = Worker::start(local.trainer_options(TRAINER, TRAINER_M).unwrap())
        .await
        .unwrap();
    let (run, outcome) = trainer
        .run_next_job(d.store.as_ref())
        .await
        .unwrap()
        .expect("a queued run");
    let info = outcome.unwrap();
    assert_eq!(run, queued.id);
    assert_eq!(info.state, api::RunState::Succeeded);
    // A trainer serves no model.
    assert!(trainer.state().model().is_none());

    // 3. The ML engineer reads progress and metrics, and the record.
    let mel = local.user("mel").await.unwrap();
    let info: api::RunInfo = mel.get(&format!("/v1/runs/{run}")).await.unwrap();
    let p = info.training.as_ref().expect("training progress");
    assert_eq!((p.stage.as_str(), p.epoch, p.epochs), ("done", 2, 2));
    assert!(p.loss.is_some() && p.metrics.contains_key("accuracy"));
    let record = info.training_record.as_ref().expect("a training record");
    assert_eq!(record.app, TRAINER);
    assert_eq!(record.evidence_sha256, trainer.state().evidence_sha256());
    assert_eq!(record.measurement, hex::encode(TRAINER_M));
    assert_eq!(record.options.epochs, 2);
    assert!(record.simulated);
    // The dataset digest is what `twinseal train --dataset folder:DIR`
    // records for the same folder.
    let plain_ds = twinseal_siamese::data::load_folder(d.folder.path(), 28, 28).unwrap();
    assert_eq!(record.result.dataset_sha256, plain_ds.sha256);
    assert_eq!(record.result.images, [128, 32, 4]);
    let sealed_data =
        std::fs::read(d.store_dir.path().join("datasets/digits/data.twseal")).unwrap();
    assert_eq!(
        record.result.sealed_dataset_sha256,
        hex::encode(Sha256::digest(&sealed_data))
    );

    // The audit log holds the training record next to the trainer's
    // evidence, and verifies.
    let b = twinseal_audit::Bundle::from_json(&local.coordinator.audit_export().unwrap()).unwrap();
    let report = twinseal_audit::verify_bundle(&b, local.coordinator.verifier_key());
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(
        b.entries.iter().any(|e| matches!(&e.event,
            twinseal_audit::Event::TrainingRecorded { evidence_digest, run: r, .. }
                if *evidence_digest == record.evidence_sha256 && *r == run)),
        "the audit log holds the training record"
    );

    // 4. The sealed model: the data owner can open it (not the ML
    // engineer), and its provenance names the attested training.
    let model_loc = d.store_dir.path().join(&record.model);
    let sealed_model = std::fs::read(&model_loc).unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&sealed_model)),
        record.result.model_sha256
    );
    let ctx = [
        ("purpose", "model"),
        ("workflow", WORKFLOW),
        ("run", &run.to_string()),
    ];
    assert!(unseal(&mel, MODEL_KEY, &ctx, &sealed_model).await.is_err());
    let plain = unseal(&dora, MODEL_KEY, &ctx, &sealed_model).await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&plain)),
        record.result.model_plain_sha256
    );
    let in_process = Siamese::from_bytes(&plain, &candle_core::Device::Cpu).unwrap();
    let prov = in_process.provenance().unwrap();
    let att = prov.attested.as_ref().expect("attested provenance");
    assert_eq!(att.app, TRAINER);
    assert_eq!(att.run, run);
    assert_eq!(att.evidence_sha256, record.evidence_sha256);
    assert_eq!(att.certificate, trainer.state().certificate_pem());
    assert_eq!(prov.dataset_sha256, plain_ds.sha256);
    assert_eq!(prov.epochs, 2);

    // 5. A serving worker opens it (the coordinator checks the record)
    // and compares two images like the in-process model.
    let mut opts = local
        .worker_options(APP, SERVER_M, sealed_model.clone())
        .unwrap();
    opts.model_context = model_context(run);
    let served = Served::start(Worker::start(opts).await.unwrap())
        .await
        .unwrap();
    // It shows which attested training produced its model.
    let client = twinseal_local::worker_http_client_with_token(
        &local.root_pem,
        true,
        Some(&local.client_token().await.unwrap()),
    )
    .unwrap();
    let info: api::WorkerInfo = client
        .get(format!("{}/v1/info", served.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by = info.trained_by.expect("the model's attested training");
    assert_eq!((by.app.as_str(), by.run), (TRAINER, run));
    assert_eq!(by.evidence_sha256, record.evidence_sha256);
    // Its whole key is never released: only this file's key was unwrapped.
    let e = served.worker.state().release(MODEL_KEY).await.unwrap_err();
    assert!(e.to_string().contains("denied"), "{e}");
    assert_denied_in_audit(local, "training record");
    let (a, b) = (ds.test.image(0).to_vec(), ds.test.image(1).to_vec());
    let resp = client
        .post(format!("{}/v1/compare", served.url))
        .json(&json!({"a": {"png": B64.encode(png(&a))}, "b": {"png": B64.encode(png(&b))}}))
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
    assert_eq!(r.receipt.model_sha256, record.result.model_plain_sha256);
    let q = |v: &[f32]| {
        v.iter()
            .map(|&x| (x * 255.0).round() / 255.0)
            .collect::<Vec<f32>>()
    };
    let want = in_process.score_pairs(&q(&a), &q(&b)).unwrap()[0];
    assert!((r.result.probability - want.probability).abs() < 1e-5);
    served.stop().await.unwrap();
    local_stop(d).await;
}

/// The audit log holds a refusal whose reasons mention `why`.
fn assert_denied_in_audit(local: &twinseal_local::Local, why: &str) {
    let b = twinseal_audit::Bundle::from_json(&local.coordinator.audit_export().unwrap()).unwrap();
    let found = b.entries.iter().any(|e| match &e.event {
        twinseal_audit::Event::KeyReleaseDenied { reasons, .. }
        | twinseal_audit::Event::DataKeyDenied { reasons, .. }
        | twinseal_audit::Event::AttestationRejected { reasons, .. } => {
            reasons.iter().any(|r| r.contains(why))
        }
        _ => false,
    });
    assert!(found, "no audited refusal mentions {why:?}");
}

async fn local_stop(d: Deployment) {
    d.local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_meets_its_limits() {
    let ds = mnist();
    let d = deployment(&ds).await;
    let local = &d.local;
    let sealed_data =
        std::fs::read(d.store_dir.path().join("datasets/digits/data.twseal")).unwrap();
    let header = twinseal_envelope::Header::parse(&sealed_data).unwrap();
    let unwrap_body = api::UnwrapRequest {
        header: B64.encode(header.as_bytes()),
    };
    let path = format!("/v1/keys/{DATASET_KEY}/unwrap");

    // The ML engineer: may start training, never obtains the dataset key,
    // a data key under it, or the plaintext.
    let mel = local.user("mel").await.unwrap();
    for e in [
        mel.post::<_, api::UnwrapResponse>(&path, &unwrap_body)
            .await
            .unwrap_err(),
        mel.post::<_, api::DataKeyResponse>(
            &format!("/v1/keys/{DATASET_KEY}/datakey"),
            &api::DataKeyRequest {
                context: [("purpose".to_string(), "training".to_string())].into(),
            },
        )
        .await
        .unwrap_err(),
        mel.post::<_, api::ReleaseResponse>(&format!("/v1/keys/{DATASET_KEY}/release"), &())
            .await
            .unwrap_err(),
    ] {
        assert!(e.to_string().contains("403"), "{e}");
    }
    assert!(
        unseal(&mel, DATASET_KEY, &[("purpose", "training")], &sealed_data)
            .await
            .is_err()
    );
    // The operator runs workers but holds no coordinator credentials: an
    // anonymous call is refused outright; the auditor reads, never unwraps.
    let anon = Client::new(&local.url, &local.root_pem, None, None).unwrap();
    let e = anon
        .post::<_, api::UnwrapResponse>(&path, &unwrap_body)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    let audrey = local.user("audrey").await.unwrap();
    let e = audrey
        .post::<_, api::UnwrapResponse>(&path, &unwrap_body)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("403"), "{e}");
    // The data owner can open her own data (the coordinator unwraps it).
    let dora = local.user("dora").await.unwrap();
    unseal(&dora, DATASET_KEY, &[("purpose", "training")], &sealed_data)
        .await
        .unwrap();

    // A trainer with a measurement the manifest does not list is refused
    // a certificate, so it never reaches the dataset key.
    let run = start_training(local).await;
    let e = Worker::start(local.trainer_options(TRAINER, [0x11; 48]).unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("attestation rejected"), "{e}");
    assert_denied_in_audit(local, "measurement");
    // The serving app's attested worker holds no dataset key either: were
    // it to claim, it would find no job of its own, and its unwrap of the
    // dataset is refused.
    let dora_model = seal(
        &dora,
        MODEL_KEY,
        &[("purpose", "model")],
        &twinseal_siamese::Siamese::new(
            twinseal_siamese::ModelConfig::seed(twinseal_siamese::HeadKind::Sigmoid),
            1,
            &candle_core::Device::Cpu,
        )
        .unwrap()
        .to_bytes()
        .unwrap(),
    )
    .await
    .unwrap();

    // A model without an approved training record (sealed by the data
    // owner, not trained by the trainer) is refused by the key's policy.
    let e = Worker::start(
        local
            .worker_options(APP, SERVER_M, dora_model.clone())
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, WorkerError::ModelRefused(_)), "{e}");
    assert_denied_in_audit(local, "serves only models with a training record");

    // A model from another attested trainer, which `trained_by` does not
    // name, is refused too, though its training is recorded.
    let mel = local.user("mel").await.unwrap();
    let rogue_run: api::RunInfo = mel
        .post("/v1/workflows/train-rogue/runs", &())
        .await
        .unwrap();
    let rogue = Worker::start(local.trainer_options(ROGUE, ROGUE_M).unwrap())
        .await
        .unwrap();
    let (id, outcome) = rogue.run_next_job(d.store.as_ref()).await.unwrap().unwrap();
    assert_eq!(id, rogue_run.id);
    let info = outcome.unwrap();
    assert_eq!(info.training_record.unwrap().app, ROGUE);
    let rogue_model = std::fs::read(
        d.store_dir
            .path()
            .join(format!("models/rogue/run-{id}/model.sealed")),
    )
    .unwrap();
    let mut opts = local.worker_options(APP, SERVER_M, rogue_model).unwrap();
    let rogue_id = id.to_string();
    opts.model_context = twinseal_envelope::Context::from_pairs([
        ("purpose", "model"),
        ("workflow", "train-rogue"),
        ("run", rogue_id.as_str()),
    ])
    .unwrap();
    let e = Worker::start(opts).await.unwrap_err();
    assert!(matches!(e, WorkerError::ModelRefused(_)), "{e}");
    assert_denied_in_audit(local, "this one was trained by rogue-trainer");

    // The run is still queued for the right trainer, which then succeeds.
    let trainer = Worker::start(local.trainer_options(TRAINER, TRAINER_M).unwrap())
        .await
        .unwrap();
    let (id, outcome) = trainer
        .run_next_job(d.store.as_ref())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, run.id);
    outcome.unwrap();
    // The trainer cannot obtain the whole model key either.
    let e = trainer.state().release(MODEL_KEY).await.unwrap_err();
    assert!(e.to_string().contains("denied"), "{e}");

    // Every refusal is in the audit log.
    let bundle = String::from_utf8(local.coordinator.audit_export().unwrap()).unwrap();
    assert!(bundle.contains("data_key_denied"));
    assert!(bundle.contains("attestation_rejected"));
    d.local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_training_on_bad_sealed_datasets_and_keep_what_was_stored() {
    let ds = mnist();
    let d = deployment(&ds).await;
    let local = &d.local;
    let trainer = Worker::start(local.trainer_options(TRAINER, TRAINER_M).unwrap())
        .await
        .unwrap();
    let dir = d.store_dir.path().join("datasets/digits");
    let good_index = std::fs::read(dir.join("index.json")).unwrap();
    let good_data = std::fs::read(dir.join("data.twseal")).unwrap();
    let run_once = async |why: &str| {
        start_training(local).await;
        let (_, outcome) = trainer
            .run_next_job(d.store.as_ref())
            .await
            .unwrap()
            .unwrap();
        let e = outcome.unwrap_err().to_string();
        assert!(e.contains(why), "{why}: {e}");
    };
    // An edited public index.
    let mut edited = d.index.clone();
    edited.identities[0].images -= 1;
    edited.images -= 1;
    std::fs::write(dir.join("index.json"), edited.to_json()).unwrap();
    run_once("does not match the sealed one").await;
    std::fs::write(dir.join("index.json"), &good_index).unwrap();
    // A tampered archive.
    let mut bad = good_data.clone();
    let n = bad.len() - 100;
    bad[n] ^= 1;
    std::fs::write(dir.join("data.twseal"), &bad).unwrap();
    run_once("cannot be used").await;
    // A truncated archive.
    std::fs::write(dir.join("data.twseal"), &good_data[..good_data.len() / 2]).unwrap();
    run_once("cannot be used").await;
    // Missing.
    std::fs::remove_file(dir.join("data.twseal")).unwrap();
    run_once("not found").await;
    // Nothing was written for the failed runs; the run list says why.
    assert!(!d.store_dir.path().join("models").exists());
    std::fs::write(dir.join("data.twseal"), &good_data).unwrap();
    let mel = local.user("mel").await.unwrap();
    let runs: api::RunList = mel.get("/v1/runs").await.unwrap();
    assert_eq!(runs.runs.len(), 4);
    assert!(runs.runs.iter().all(|r| r.state == api::RunState::Failed));
    // An output already there is never replaced.
    let occupied = d.store_dir.path().join("models/digits/run-5");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("model.sealed"), b"earlier").unwrap();
    run_once("already exists").await;
    assert_eq!(
        std::fs::read(occupied.join("model.sealed")).unwrap(),
        b"earlier"
    );
    d.local.stop().await.unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn holds(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const CHILD: &str = "TWINSEAL_DISK_WATCH_CHILD";

#[test]
fn no_plaintext_reaches_disk_during_training() {
    // The child trains on MNIST: fail here, clearly, if it is missing.
    drop(mnist());
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "training::watched_training",
            "--ignored",
            "--nocapture",
        ])
        .env("TMPDIR", tmp.path())
        .env(CHILD, "1")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the watched training failed:\n{log}");
    assert!(
        log.contains("1 passed"),
        "the watched training did not run:\n{log}"
    );
}

/// Run by [`no_plaintext_reaches_disk_during_training`] in a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by no_plaintext_reaches_disk_during_training in a child process"]
async fn watched_training() {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "run through no_plaintext_reaches_disk_during_training"
    );
    let ds = mnist();
    let tmp = std::env::temp_dir();
    let cwd = std::env::current_dir().unwrap();
    assert!(files_under(&tmp).is_empty() && files_under(&cwd).is_empty());
    let d = deployment(&ds).await;
    // The coordinator keeps its state under TMPDIR too: watch the rest.
    let coordinator_dir = d.local.dir().to_path_buf();
    let store_root = d.store_dir.path().to_path_buf();
    // The data owner's own image folder was written before training.
    let source = d.folder.path().to_path_buf();

    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).unwrap();
    watcher.watch(&tmp, RecursiveMode::Recursive).unwrap();
    watcher.watch(&cwd, RecursiveMode::Recursive).unwrap();

    start_training(&d.local).await;
    let trainer = Worker::start(d.local.trainer_options(TRAINER, TRAINER_M).unwrap())
        .await
        .unwrap();
    let (_, outcome) = trainer
        .run_next_job(d.store.as_ref())
        .await
        .unwrap()
        .expect("a queued run");
    outcome.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(watcher);

    // Every file created, written, renamed or removed while the trainer
    // ran is one of the run's two sealed outputs (or its staging copy).
    let outputs = d.store_dir.path().join("models/digits/run-1");
    let touched: BTreeSet<PathBuf> = rx
        .try_iter()
        .map(|e| e.unwrap())
        .filter(|e| !matches!(e.kind, EventKind::Access(_)))
        .flat_map(|e| e.paths)
        .filter(|p| !p.is_dir() && !p.starts_with(&coordinator_dir))
        .collect();
    assert!(!touched.is_empty(), "the watcher saw the outputs written");
    for p in &touched {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            p.parent() == Some(outputs.as_path())
                && (name.starts_with("model.sealed") || name.starts_with("metrics.sealed")),
            "written during training: {}",
            p.display()
        );
    }
    // What is there now: nothing in the temporary or working directory;
    // in the store, the public index and sealed envelopes, none holding a
    // PNG, a tar archive, or a model file.
    let left: Vec<_> = files_under(&tmp)
        .into_iter()
        .chain(files_under(&cwd))
        .filter(|p| {
            ![&coordinator_dir, &store_root, &source]
                .iter()
                .any(|d| p.starts_with(d))
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let files = files_under(&store_root);
    assert_eq!(files.len(), 4, "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        if f.file_name().unwrap() == "index.json" {
            twinseal_siamese::data::archive::ArchiveIndex::from_json(&bytes).unwrap();
            continue;
        }
        assert!(
            bytes.starts_with(twinseal_envelope::MAGIC),
            "{}",
            f.display()
        );
        for marker in [
            &b"\x89PNG"[..],
            b"ustar",
            b"twinseal-siamese/1",
            b"\"accuracy\"",
        ] {
            assert!(!holds(&bytes, marker), "{} holds {marker:?}", f.display());
        }
    }
    d.local.stop().await.unwrap();
}
