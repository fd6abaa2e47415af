//! The client side through the `twinseal` binary, against a coordinator
//! and an attested worker running in this test's process on loopback
//! (simulated TEE): `coordinator verify`, `compare --worker` (and its
//! refusals), `enroll` and `verify`, and a workflow from `seal` through
//! `workflow run` to `unseal` of the results.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use twinseal_local::{APP, Local, LocalOptions, MODEL_KEY, Served, seal};

const M: [u8; 48] = [0x77; 48];

fn twinseal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_twinseal"));
    for v in [
        "TWINSEAL_TOKEN",
        "TWINSEAL_COORDINATOR",
        "TWINSEAL_CA",
        "TWINSEAL_WORKER",
        "TWINSEAL_ENROLL_TOKEN",
    ] {
        c.env_remove(v);
    }
    c
}

fn run(c: &mut Command) -> (bool, String, String) {
    let out: Output = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(c: &mut Command) -> String {
    let (success, stdout, stderr) = run(c);
    assert!(success, "failed:\n{stdout}\n{stderr}");
    stdout
}

fn fails(c: &mut Command, why: &str) {
    let (success, stdout, stderr) = run(c);
    assert!(!success, "succeeded:\n{stdout}");
    assert!(stderr.contains(why), "wanted {why:?} in:\n{stderr}");
}

fn png(seed: u32, path: &Path) {
    let raw: Vec<u8> = (0..784u32)
        .map(|i| ((i * seed + i / 28) % 256) as u8)
        .collect();
    image::GrayImage::from_raw(28, 28, raw)
        .unwrap()
        .save(path)
        .unwrap();
}

#[test]
fn clients_verify_the_coordinator_compare_enrol_and_run_a_workflow() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store_dir = d.join("store");
    std::fs::create_dir_all(store_dir.join("datasets")).unwrap();
    let (local, served, other_root, client_token) = rt.block_on(async {
        let local = Local::start(LocalOptions {
            self_evidence: true,
            ..LocalOptions::default()
        })
        .await
        .unwrap();
        local
            .apply_manifest(&format!(
                "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\n\
                 [users.mel]\nroles = [\"ml_engineer\"]\n{}{}\
                 [keys.{MODEL_KEY}]\nowners = [\"dora\"]\n[keys.dataset-key]\nowners = [\"dora\"]\n\
                 [keys.results-key]\ngrants = {{ dora = [\"open\"] }}\n\
                 [datasets.pairs]\nlocation = \"datasets/pairs.sealed\"\nkey = \"dataset-key\"\n\
                 context = {{ purpose = \"pairs\" }}\n\
                 [workflows.score-pairs]\ninput = \"pairs\"\napp = \"{APP}\"\n\
                 output = \"results/score-pairs\"\noutput_key = \"results-key\"\n",
                Local::app_entry(
                    APP,
                    &M,
                    &[MODEL_KEY, "dataset-key", "results-key", "gallery-key"]
                ),
                Local::client_entry(&[APP]),
            ))
            .await
            .unwrap();
        local
            .create_keys(&[MODEL_KEY, "dataset-key", "results-key", "gallery-key"])
            .await
            .unwrap();
        let model = twinseal_siamese::Siamese::new(
            twinseal_siamese::ModelConfig::seed(twinseal_siamese::HeadKind::Sigmoid),
            3,
            &candle_core::Device::Cpu,
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        let dora = local.user("dora").await.unwrap();
        let sealed = seal(&dora, MODEL_KEY, &[("purpose", "model")], &model)
            .await
            .unwrap();
        let mut opts = local.worker_options(APP, M, sealed).unwrap();
        opts.gallery = Some(twinseal_worker::GalleryOptions {
            location: twinseal_worker::GalleryLocation::File(store_dir.join("gallery.sealed")),
            key: "gallery-key".into(),
        });
        let worker = twinseal_worker::Worker::start(opts).await.unwrap();
        let store: Arc<dyn object_store::ObjectStore> =
            twinseal_worker::jobs::open_store(store_dir.to_str().unwrap()).unwrap();
        let w = worker.clone();
        tokio::spawn(async move {
            w.run_jobs(
                store,
                std::time::Duration::from_millis(100),
                std::future::pending(),
            )
            .await
        });
        let served = Served::start(worker).await.unwrap();
        let other = Local::start(LocalOptions::default()).await.unwrap();
        let other_root = other.root_pem.clone();
        other.stop().await.unwrap();
        let client_token = local.client_token().await.unwrap();
        (local, served, other_root, client_token)
    });
    let root = d.join("root.pem");
    std::fs::write(&root, &local.root_pem).unwrap();
    let other = d.join("other.pem");
    std::fs::write(&other, other_root).unwrap();
    let platform_pub = d.join("platform.pub");
    std::fs::write(&platform_pub, local.platform_public_key_hex()).unwrap();
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    png(3, &a);
    png(9, &b);

    // The coordinator's own evidence, checked before pinning its root.
    let pinned = d.join("pinned.pem");
    let out = ok(twinseal()
        .args(["coordinator", "verify", "--url", &local.url])
        .arg("--collateral")
        .arg(&platform_pub)
        .arg("--insecure-allow-simulated-tee")
        .arg("-o")
        .arg(&pinned));
    let fingerprint = hex::encode(Sha256::digest(
        twinseal_worker::tls::root_der_from_pem(&local.root_pem).unwrap(),
    ));
    assert!(out.contains(&fingerprint), "{out}");
    assert!(out.contains("SIMULATED"), "{out}");
    let saved = std::fs::read_to_string(&pinned).unwrap();
    assert!(saved.ends_with(&local.root_pem), "{saved}");
    assert!(
        saved.starts_with(twinseal_coordinator::client::KEY_PIN_PREFIX),
        "the coordinator's key is pinned: {saved}"
    );
    fails(
        twinseal()
            .args(["coordinator", "verify", "--url", &local.url])
            .arg("--collateral")
            .arg(&platform_pub),
        "only verified with --insecure-allow-simulated-tee",
    );
    fails(
        twinseal()
            .args(["coordinator", "verify", "--url", &local.url])
            .arg("--collateral")
            .arg(&platform_pub)
            .args([
                "--insecure-allow-simulated-tee",
                "--expect-measurement",
                "00",
            ]),
        "not the expected",
    );

    // compare --worker: simulated certificates only when allowed; another
    // root never.
    let compare = |ca: &Path, allow: bool| {
        let mut c = twinseal();
        c.env("TWINSEAL_TOKEN", &client_token)
            .args(["compare", "--worker", &served.url, "--ca"])
            .arg(ca)
            .arg(&a)
            .arg(&b);
        if allow {
            c.arg("--allow-simulated");
        }
        c
    };
    fails(&mut compare(&root, false), "cannot reach the worker");
    fails(&mut compare(&other, true), "cannot reach the worker");
    let out = ok(&mut compare(&root, true));
    assert!(out.contains("receipt verified"), "{out}");
    // Without the client's token the worker answers no one.
    fails(compare(&root, true).env_remove("TWINSEAL_TOKEN"), "401");
    assert!(out.contains("probability"), "{out}");
    let json = ok(compare(&root, true).arg("--json"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["receipt"]["signature"].is_string());

    // enroll / verify.
    fails(
        twinseal()
            .args(["enroll", "--worker", &served.url, "--allow-simulated"])
            .arg("--ca")
            .arg(&root)
            .args(["--identity", "ada"])
            .arg(&a)
            .env("TWINSEAL_TOKEN", "tws_wrong"),
        "401",
    );
    let token_file = d.join("client.token");
    std::fs::write(&token_file, &client_token).unwrap();
    let out = ok(twinseal()
        .args(["enroll", "--worker", &served.url, "--allow-simulated"])
        .arg("--ca")
        .arg(&root)
        .arg("--token-file")
        .arg(&token_file)
        .args(["--identity", "ada"])
        .arg(&a));
    assert!(out.contains("enrolled 1 image"), "{out}");
    let out = ok(twinseal()
        .args(["verify", "--worker", &served.url, "--allow-simulated"])
        .arg("--ca")
        .arg(&root)
        .env("TWINSEAL_TOKEN", &client_token)
        .args(["--identity", "ada"])
        .arg(&a));
    assert!(out.starts_with("MATCH: ada"), "{out}");

    // A workflow: the data owner seals a tar of images and pairs with the
    // coordinator key; the ML engineer runs it; the data owner reads it.
    let ds = d.join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    png(3, &ds.join("x.png"));
    png(5, &ds.join("y.png"));
    std::fs::write(
        ds.join("pairs.csv"),
        "left,right,same\nx.png,y.png,0\nx.png,x.png,1\n",
    )
    .unwrap();
    let tarball = d.join("pairs.tar");
    {
        let mut t = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
        t.append_dir_all(".", &ds).unwrap();
        t.finish().unwrap();
    }
    let (dora, mel) = rt.block_on(async {
        (
            local.user_token("dora").await.unwrap(),
            local.user_token("mel").await.unwrap(),
        )
    });
    let remote = |token: &str| {
        let mut c = twinseal();
        c.env("TWINSEAL_COORDINATOR", &local.url)
            .env("TWINSEAL_CA", &root)
            .env("TWINSEAL_TOKEN", token);
        c
    };
    ok(remote(&dora)
        .args(["seal", "--key", "dataset-key", "-c", "purpose=pairs"])
        .arg(&tarball)
        .arg("-o")
        .arg(store_dir.join("datasets/pairs.sealed")));
    fails(
        remote(&dora).args(["workflow", "run", "score-pairs"]),
        "403",
    );
    let out = ok(remote(&mel).args(["workflow", "run", "score-pairs", "--timeout-secs", "120"]));
    assert!(out.contains("succeeded, 2/2 pairs"), "{out}");
    assert!(out.contains("receipt verified"), "{out}");
    let results = d.join("results.csv");
    let sealed_out = store_dir.join("results/score-pairs/run-1.sealed");
    let unseal = |token: &str| {
        let mut c = remote(token);
        c.args(["unseal", "--key", "results-key"])
            .args([
                "-c",
                "purpose=workflow-output",
                "-c",
                "workflow=score-pairs",
            ])
            .args(["-c", "run=1"])
            .arg(&sealed_out)
            .arg("-o")
            .arg(&results);
        c
    };
    fails(&mut unseal(&mel), "403");
    ok(&mut unseal(&dora));
    let csv = std::fs::read_to_string(&results).unwrap();
    assert!(csv.starts_with("left,right,same,verdict"), "{csv}");
    assert!(csv.contains("\nx.png,x.png,1,similar,"), "{csv}");
    let listed = ok(remote(&mel).args(["workflow", "list"]));
    assert!(listed.contains("succeeded"), "{listed}");

    rt.block_on(async {
        served.stop().await.unwrap();
        local.stop().await.unwrap();
    });
}

#[test]
fn workflow_runs_spread_over_two_workers_sharing_one_s3_store() {
    use object_store::ObjectStoreExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s3 = twinseal_testing::TempS3::shared();
    let bucket = s3.bucket();
    let store = s3.store(&bucket, twinseal_testing::s3::SECRET_KEY);
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    png(3, &ds.join("x.png"));
    png(5, &ds.join("y.png"));
    std::fs::write(ds.join("pairs.csv"), "left,right,same\nx.png,y.png,0\n").unwrap();
    let mut tarball = Vec::new();
    {
        let mut t = tar::Builder::new(&mut tarball);
        t.append_dir_all(".", &ds).unwrap();
        t.finish().unwrap();
    }
    rt.block_on(async {
        let local = Local::start(LocalOptions::default()).await.unwrap();
        local
            .apply_manifest(&format!(
                "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\n\
                 [users.mel]\nroles = [\"ml_engineer\"]\n{}\
                 [keys.{MODEL_KEY}]\nowners = [\"dora\"]\n[keys.dataset-key]\nowners = [\"dora\"]\n\
                 [keys.results-key]\ngrants = {{ dora = [\"open\"] }}\n\
                 [datasets.pairs]\nlocation = \"datasets/pairs.sealed\"\nkey = \"dataset-key\"\n\
                 context = {{ purpose = \"pairs\" }}\n\
                 [workflows.score-pairs]\ninput = \"pairs\"\napp = \"{APP}\"\n\
                 output = \"results/score-pairs\"\noutput_key = \"results-key\"\n",
                Local::app_entry(APP, &M, &[MODEL_KEY, "dataset-key", "results-key"]),
            ))
            .await
            .unwrap();
        local
            .create_keys(&[MODEL_KEY, "dataset-key", "results-key"])
            .await
            .unwrap();
        let dora = local.user("dora").await.unwrap();
        let model = twinseal_siamese::Siamese::new(
            twinseal_siamese::ModelConfig::seed(twinseal_siamese::HeadKind::Sigmoid),
            3,
            &candle_core::Device::Cpu,
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        let sealed_model = seal(&dora, MODEL_KEY, &[("purpose", "model")], &model)
            .await
            .unwrap();
        let sealed_ds = seal(&dora, "dataset-key", &[("purpose", "pairs")], &tarball)
            .await
            .unwrap();
        store
            .put(
                &object_store::path::Path::from("datasets/pairs.sealed"),
                sealed_ds.into(),
            )
            .await
            .unwrap();
        let a = twinseal_worker::Worker::start(
            local.worker_options(APP, M, sealed_model.clone()).unwrap(),
        )
        .await
        .unwrap();
        let b = twinseal_worker::Worker::start(local.worker_options(APP, M, sealed_model).unwrap())
            .await
            .unwrap();
        let mel = local.user("mel").await.unwrap();
        for _ in 0..4 {
            let _: twinseal_api::RunInfo = mel
                .post("/v1/workflows/score-pairs/runs", &())
                .await
                .unwrap();
        }
        // The two workers take turns claiming: each run goes to exactly one.
        let mut done = Vec::new();
        for w in [&a, &b, &a, &b] {
            let (run, outcome) = w.run_next_job(store.as_ref()).await.unwrap().unwrap();
            let info = outcome.unwrap();
            assert_eq!(info.state, twinseal_api::RunState::Succeeded, "{info:?}");
            done.push((run, info.serial.clone().unwrap()));
        }
        assert!(a.run_next_job(store.as_ref()).await.unwrap().is_none());
        assert!(b.run_next_job(store.as_ref()).await.unwrap().is_none());
        let mut runs: Vec<u64> = done.iter().map(|d| d.0).collect();
        runs.sort();
        assert_eq!(runs, [1, 2, 3, 4], "each run once");
        let serials: std::collections::BTreeSet<&String> = done.iter().map(|d| &d.1).collect();
        assert_eq!(serials.len(), 2, "both workers ran runs: {done:?}");
        for run in 1..=4 {
            let meta = store
                .head(&object_store::path::Path::from(format!(
                    "results/score-pairs/run-{run}.sealed"
                )))
                .await
                .unwrap();
            assert!(meta.size > 0);
        }
        local.stop().await.unwrap();
    });
}
