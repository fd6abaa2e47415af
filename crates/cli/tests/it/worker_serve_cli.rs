//! `twinseal worker serve` as an operator runs it, against `twinseal
//! coordinator serve`, both as child processes on loopback with the
//! INSECURE simulated TEE: the worker attests, opens the sealed model (read
//! from S3: a throwaway SeaweedFS) and answers `twinseal compare --worker`;
//! a worker whose app the manifest does not know does not start; SIGTERM
//! stops it cleanly; a trainer reads its sealed dataset from S3 and writes
//! the sealed model back there.

use object_store::ObjectStoreExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha384};

fn twinseal(token: Option<&str>, url: &str, ca: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_twinseal"));
    c.env("TWINSEAL_COORDINATOR", url)
        .env("TWINSEAL_CA", ca)
        .env_remove("TWINSEAL_TOKEN")
        .env_remove("TWINSEAL_WORKER");
    if let Some(t) = token {
        c.env("TWINSEAL_TOKEN", t);
    }
    c
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, child: &mut Child, what: &str) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the {what} exited");
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the {what} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no graceful stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_operator_starts_a_worker_and_a_client_compares_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, wport) = (free_port(), free_port());
    // The coordinator answers as localhost; the workers as 127.0.0.1 (an
    // app certificate never carries the coordinator's names).
    let url = format!("https://localhost:{port}");
    let ca = d.join("coord/ca.pem");

    // The simulated platform (its key stays with the operator; its public
    // key goes to the coordinator's configuration).
    let platform_key = d.join("platform.key");
    ok(twinseal(None, &url, &ca)
        .args(["attest", "simulate", "--report-data", "00", "-o"])
        .arg(d.join("ev.bin"))
        .arg("--platform-key")
        .arg(&platform_key)
        .output()
        .unwrap());
    let platform_pub = std::fs::read_to_string(d.join("platform.key.pub")).unwrap();
    let admin = ok(twinseal(None, &url, &ca)
        .args(["coordinator", "init", "--data-dir"])
        .arg(d.join("coord"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--server-name", "localhost"])
        .args(["--insecure-allow-simulated-tee", "--simulated-platform-key"])
        .arg(platform_pub.trim())
        .output()
        .unwrap());
    let admin = admin.trim().to_string();
    let mut coordinator = twinseal(None, &url, &ca)
        .args(["coordinator", "serve", "--config"])
        .arg(d.join("coord/coordinator.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, &mut coordinator, "coordinator");

    // The manifest names this binary's measurement, as the simulated TEE
    // reports it; `worker measurement` prints the same.
    let measurement = hex::encode(Sha384::digest(
        std::fs::read(env!("CARGO_BIN_EXE_twinseal")).unwrap(),
    ));
    let printed = ok(twinseal(None, &url, &ca)
        .args(["worker", "measurement"])
        .output()
        .unwrap());
    assert_eq!(printed.trim(), measurement);
    let manifest = d.join("manifest.toml");
    std::fs::write(
        &manifest,
        format!(
            "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\n\
             [users.carl]\nroles = [\"client\"]\n[keys.model-key]\nowners = [\"dora\"]\n\
             [apps.siamese-worker]\ntee = [\"simulated\"]\nmeasurements = [\"{measurement}\"]\nkeys = [\"model-key\"]\n\
             [apps.siamese-worker.clients]\ncarl = [\"compare\"]\n"
        ),
    )
    .unwrap();
    ok(twinseal(Some(&admin), &url, &ca)
        .args(["manifest", "apply"])
        .arg(&manifest)
        .output()
        .unwrap());
    ok(twinseal(Some(&admin), &url, &ca)
        .args(["key", "create", "model-key"])
        .output()
        .unwrap());
    let dora = ok(twinseal(Some(&admin), &url, &ca)
        .args(["user", "token", "dora"])
        .output()
        .unwrap());
    let carl = ok(twinseal(Some(&admin), &url, &ca)
        .args(["user", "token", "carl", "--expires-in", "1h"])
        .output()
        .unwrap());
    let carl = carl.trim().to_string();

    // The data owner seals a model under the coordinator key.
    let model = d.join("model.safetensors");
    std::fs::write(
        &model,
        twinseal_siamese::Siamese::new(
            twinseal_siamese::ModelConfig::seed(twinseal_siamese::HeadKind::Sigmoid),
            5,
            &candle_core::Device::Cpu,
        )
        .unwrap()
        .to_bytes()
        .unwrap(),
    )
    .unwrap();
    let sealed = d.join("model.sealed");
    ok(twinseal(Some(dora.trim()), &url, &ca)
        .args(["seal", "--key", "model-key", "-c", "purpose=model"])
        .arg(&model)
        .arg("-o")
        .arg(&sealed)
        .output()
        .unwrap());

    // The sealed model goes to S3; workers read it from there.
    let s3 = twinseal_testing::TempS3::shared();
    let bucket = s3.bucket();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let objects = s3_store(&bucket);
    let upload = |local: &Path, key: &str| {
        let bytes = std::fs::read(local).unwrap();
        rt.block_on(objects.put(&object_store::path::Path::from(key), bytes.into()))
            .unwrap();
    };
    upload(&sealed, "models/model.sealed");
    let model_url = format!("s3://{bucket}/models/model.sealed");
    let worker = |app: &str| {
        let mut c = twinseal(None, &url, &ca);
        c.args(["worker", "serve", "--app", app, "--tee", "simulated"])
            .envs(s3.env())
            .args(["--model", &model_url])
            .arg("--insecure-simulated-platform-key")
            .arg(&platform_key)
            .args(["--listen", &format!("127.0.0.1:{wport}")]);
        c
    };
    // An app the manifest does not know gets no certificate: the worker
    // exits with the reason.
    let out = worker("stranger").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("attestation"), "{err}");
    assert!(err.contains("INSECURE"), "{err}");

    let mut served = worker("siamese-worker")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(wport, &mut served, "worker");
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    for (seed, p) in [(3u32, &a), (8, &b)] {
        let raw: Vec<u8> = (0..784u32)
            .map(|i| ((i * seed + i / 28) % 256) as u8)
            .collect();
        image::GrayImage::from_raw(28, 28, raw)
            .unwrap()
            .save(p)
            .unwrap();
    }
    // Without a client token the worker answers no one.
    let out = twinseal(None, &url, &ca)
        .args(["compare", "--worker", &format!("https://127.0.0.1:{wport}")])
        .arg("--allow-simulated")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = ok(twinseal(Some(&carl), &url, &ca)
        .args(["compare", "--worker", &format!("https://127.0.0.1:{wport}")])
        .arg("--allow-simulated")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap());
    assert!(out.contains("receipt verified"), "{out}");
    assert!(stop(served).success(), "the worker did not stop cleanly");

    // A trainer: the same binary started without --model runs the training
    // workflow of its app from a dataset the data owner sealed.
    std::fs::write(
        &manifest,
        format!(
            "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\n\
             [users.mel]\nroles = [\"ml_engineer\"]\n[users.carl]\nroles = [\"client\"]\n\
             [keys.dataset-key]\nowners = [\"dora\"]\n\
             [apps.siamese-worker]\ntee = [\"simulated\"]\nmeasurements = [\"{measurement}\"]\nkeys = [\"model-key\"]\n\
             [apps.siamese-trainer]\ntee = [\"simulated\"]\nmeasurements = [\"{measurement}\"]\nkeys = [\"dataset-key\", \"model-key\"]\n\
             [apps.siamese-trainer.clients]\ncarl = [\"compare\"]\n\
             [datasets.faces]\nlocation = \"datasets/faces\"\nkey = \"dataset-key\"\ncontext = {{ purpose = \"training\" }}\n\
             [workflows.train-faces]\nkind = \"train\"\ninput = \"faces\"\napp = \"siamese-trainer\"\n\
             output = \"models/faces\"\noutput_key = \"model-key\"\n\
             [workflows.train-faces.train]\nepochs = 1\nbatch_size = 16\n"
        ),
    )
    .unwrap();
    ok(twinseal(Some(&admin), &url, &ca)
        .args(["manifest", "apply"])
        .arg(&manifest)
        .output()
        .unwrap());
    ok(twinseal(Some(&admin), &url, &ca)
        .args(["key", "create", "dataset-key"])
        .output()
        .unwrap());
    let mel = ok(twinseal(Some(&admin), &url, &ca)
        .args(["user", "token", "mel"])
        .output()
        .unwrap());
    let faces = d.join("faces");
    for (who, base) in [("ada", 20u32), ("bob", 200)] {
        std::fs::create_dir_all(faces.join(who)).unwrap();
        for n in 0..6u32 {
            let raw: Vec<u8> = (0..784u32)
                .map(|i| (base + (i * (n + 1)) % 40) as u8)
                .collect();
            image::GrayImage::from_raw(28, 28, raw)
                .unwrap()
                .save(faces.join(who).join(format!("{n}.png")))
                .unwrap();
        }
    }
    let store = d.join("store");
    ok(twinseal(Some(dora.trim()), &url, &ca)
        .args(["seal", "--key", "dataset-key", "-c", "purpose=training"])
        .arg(&faces)
        .arg("-o")
        .arg(store.join("datasets/faces"))
        .output()
        .unwrap());
    // The sealed dataset goes to S3 under the prefix `store/`.
    for entry in walk(&store) {
        let key = entry
            .strip_prefix(&store)
            .unwrap()
            .to_string_lossy()
            .to_string();
        upload(&entry, &format!("store/{key}"));
    }
    let tport = free_port();
    let mut trainer = twinseal(None, &url, &ca)
        .args([
            "worker",
            "serve",
            "--app",
            "siamese-trainer",
            "--tee",
            "simulated",
        ])
        .arg("--insecure-simulated-platform-key")
        .arg(&platform_key)
        .args([
            "--listen",
            &format!("127.0.0.1:{tport}"),
            "--poll-secs",
            "1",
        ])
        .envs(s3.env())
        .args(["--jobs", &format!("s3://{bucket}/store")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(tport, &mut trainer, "trainer");
    let out = ok(twinseal(Some(mel.trim()), &url, &ca)
        .args(["workflow", "run", "train-faces", "--timeout-secs", "120"])
        .output()
        .unwrap());
    assert!(out.contains("succeeded, 1/1 epochs"), "{out}");
    assert!(
        out.contains("training record (audit log): trainer siamese-trainer"),
        "{out}"
    );
    let written = rt
        .block_on(objects.head(&object_store::path::Path::from(
            "store/models/faces/run-1/model.sealed",
        )))
        .unwrap();
    assert!(written.size > 0, "the trained model is in S3");
    // It serves no model.
    let out = twinseal(Some(&carl), &url, &ca)
        .args(["compare", "--worker", &format!("https://127.0.0.1:{tport}")])
        .arg("--allow-simulated")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trainer"), "{err}");
    assert!(stop(trainer).success(), "the trainer did not stop cleanly");
    assert!(stop(coordinator).success());
}

/// An S3 client of the throwaway SeaweedFS, for the test's own uploads.
fn s3_store(bucket: &str) -> std::sync::Arc<dyn object_store::ObjectStore> {
    twinseal_testing::TempS3::shared().store(bucket, twinseal_testing::s3::SECRET_KEY)
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
