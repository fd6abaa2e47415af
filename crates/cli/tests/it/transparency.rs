//! Witnesses as separate processes (`twinseal witness serve`) cosigning the
//! coordinator's checkpoints (`[transparency] witnesses`, quorum 2), the
//! client checking the cosignatures (`audit verify --tiles --witness`),
//! and a coordinator that forks its log (a copy of its state appending
//! another history under the same key) or rolls it back getting no
//! cosignature, with the witnesses keeping the log-signed evidence.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn twinseal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_twinseal"));
    c.env_remove("TWINSEAL_TOKEN")
        .env_remove("TWINSEAL_COORDINATOR")
        .env_remove("TWINSEAL_CA");
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
    twinseal_testing::free_port()
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, child: &mut Child) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the process exited");
        assert!(t0.elapsed() < Duration::from_secs(30), "it did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn witness(dir: &Path, name: &str, log_key: &Path) -> (Proc, String, u16) {
    let wdir = dir.join(name);
    let key = ok(twinseal()
        .args(["witness", "init", "--dir"])
        .arg(&wdir)
        .args(["--name", &format!("witness.test/{name}")])
        .output()
        .unwrap());
    let port = free_port();
    let mut child = twinseal()
        .args(["witness", "serve", "--dir"])
        .arg(&wdir)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--log"])
        .arg(log_key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, &mut child);
    (Proc(child), key.trim().to_string(), port)
}

fn serve(config: &Path, port: u16) -> Proc {
    let mut child = twinseal()
        .args(["coordinator", "serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, &mut child);
    Proc(child)
}

fn create_key(port: u16, ca: &Path, admin: &str, name: &str) {
    ok(twinseal()
        .env("TWINSEAL_TOKEN", admin)
        .args(["key", "create", name, "--coordinator"])
        .arg(format!("https://127.0.0.1:{port}"))
        .arg("--ca")
        .arg(ca)
        .output()
        .unwrap());
}

/// `audit verify --tiles` of the coordinator at `port` with both witnesses.
fn verify(
    port: u16,
    ca: &Path,
    key: &Path,
    witnesses: &[String],
    trusted: Option<&Path>,
) -> Output {
    let mut c = twinseal();
    c.args(["audit", "verify", "--tiles"])
        .arg(format!("https://127.0.0.1:{port}/log"))
        .arg("--ca")
        .arg(ca)
        .arg("--key")
        .arg(key)
        .args(["--quorum", "2"]);
    for w in witnesses {
        c.args(["--witness", w]);
    }
    if let Some(t) = trusted {
        c.arg("--trusted-checkpoint").arg(t);
    }
    c.output().unwrap()
}

/// The size of the checkpoint the coordinator at `port` serves at /log/checkpoint.
fn served_size(port: u16, ca: &Path, key: &Path, witnesses: &[String]) -> Option<u64> {
    let out = verify(port, ca, key, witnesses, None);
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| {
        text.lines()
            .find_map(|l| l.strip_prefix("entries: "))
            .and_then(|l| l.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    })
}

fn wait_cosigned(port: u16, ca: &Path, key: &Path, witnesses: &[String], at_least: u64) -> u64 {
    let t0 = Instant::now();
    loop {
        if let Some(n) = served_size(port, ca, key, witnesses)
            && n >= at_least
        {
            return n;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no checkpoint of {at_least}+ entries cosigned by both witnesses"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn refusals(dir: &Path, name: &str) -> Vec<i64> {
    let db = rusqlite::Connection::open(dir.join(name).join("witness.db")).unwrap();
    let mut st = db
        .prepare("SELECT status FROM witness_refusals ORDER BY id")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn two_witnesses_cosign_the_log_and_refuse_a_fork_and_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("coord");
    let port = free_port();
    let admin = ok(twinseal()
        .args(["coordinator", "init", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap());
    let admin = admin.trim();
    let (ca, log_key, config) = (
        data.join("ca.pem"),
        data.join("audit.pub"),
        data.join("coordinator.toml"),
    );
    let (_w1, k1, p1) = witness(dir.path(), "w1", &log_key);
    let (_w2, k2, p2) = witness(dir.path(), "w2", &log_key);
    let text = std::fs::read_to_string(&config).unwrap();
    let section = "[transparency]\npublic_log = false\nwitnesses = []\n";
    assert!(text.contains(section), "{text}");
    std::fs::write(
        &config,
        text.replace(
            section,
            &format!(
                "[transparency]\npublic_log = true\nquorum = 2\nwitnesses = [\n  \
                 {{ url = \"http://127.0.0.1:{p1}\", key = \"{k1}\" }},\n  \
                 {{ url = \"http://127.0.0.1:{p2}\", key = \"{k2}\" }},\n]\n"
            ),
        ),
    )
    .unwrap();
    let witnesses = [k1.clone(), k2.clone()];

    // The normal path: every checkpoint cosigned by both witnesses; the
    // client checks the cosignatures, then the log from its tiles.
    let a = serve(&config, port);
    create_key(port, &ca, admin, "k-before");
    let before = wait_cosigned(port, &ca, &log_key, &witnesses, 2);
    let out = ok(verify(port, &ca, &log_key, &witnesses, None));
    assert!(
        out.contains("cosigned by 2 of 2 witnesses") && out.contains("OK"),
        "{out}"
    );
    // One witness's key is not enough for a quorum of two.
    let unknown = ok(twinseal()
        .args(["witness", "init", "--dir"])
        .arg(dir.path().join("w3"))
        .args(["--name", "witness.test/w3"])
        .output()
        .unwrap());
    let out = verify(
        port,
        &ca,
        &log_key,
        &[k1.clone(), unknown.trim().into()],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of the 2 witnesses"));

    // A fork: the coordinator's state copied while stopped, then both
    // copies append different histories under the same log key.
    drop(a);
    let fork_data = dir.path().join("fork");
    copy_dir(&data, &fork_data);
    let rolled = dir.path().join("rolled");
    copy_dir(&data, &rolled);
    let a = serve(&config, port);
    create_key(port, &ca, admin, "k-main");
    let main_size = wait_cosigned(port, &ca, &log_key, &witnesses, before + 1);
    let fork_port = free_port();
    let fork = serve(&fork_data.join("coordinator.toml"), fork_port);
    for k in ["k-fork", "k-fork-2", "k-fork-3", "k-fork-4"] {
        create_key(fork_port, &ca, admin, k);
    }
    // The witnesses refuse the fork's checkpoints (a proof that does not
    // verify, or another root at a size they cosigned) and keep them.
    let t0 = Instant::now();
    while refusals(dir.path(), "w1").is_empty() || refusals(dir.path(), "w2").is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the witnesses did not refuse the fork"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for w in ["w1", "w2"] {
        assert!(
            refusals(dir.path(), w)
                .iter()
                .all(|s| *s == 422 || *s == 409),
            "{w}: {:?}",
            refusals(dir.path(), w)
        );
    }
    // The fork serves no checkpoint of its own history cosigned: a client
    // that holds the fork's latest checkpoint (say from a receipt) finds its
    // entries missing from the witnessed log, and refuses.
    let fork_cp = dir.path().join("fork-checkpoint");
    let bytes = twinseal()
        .args(["audit", "mirror", "--tiles"])
        .arg(format!("https://127.0.0.1:{fork_port}/log"))
        .arg("--ca")
        .arg(&ca)
        .arg("--to")
        .arg(dir.path().join("fork-mirror"))
        .arg("--key")
        .arg(&log_key)
        .output()
        .unwrap();
    ok(bytes);
    let fork_served = std::fs::read_to_string(dir.path().join("fork-mirror/checkpoint")).unwrap();
    let fork_served_size: u64 = fork_served.lines().nth(1).unwrap().parse().unwrap();
    assert!(
        fork_served_size <= before,
        "the fork got a checkpoint of its own history cosigned"
    );
    let fork_latest = {
        let db = rusqlite::Connection::open(fork_data.join("coordinator.db")).unwrap();
        db.query_row(
            "SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap()
    };
    std::fs::write(&fork_cp, &fork_latest).unwrap();
    let out = verify(fork_port, &ca, &log_key, &witnesses, Some(&fork_cp));
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(fork);

    // A rollback: the main coordinator restarted on its state of before
    // the fork. The witnesses have cosigned more; nothing new is cosigned.
    drop(a);
    let n1 = refusals(dir.path(), "w1").len();
    let b = serve(&rolled.join("coordinator.toml"), port);
    std::thread::sleep(Duration::from_secs(3));
    let size = served_size(port, &ca, &log_key, &witnesses).unwrap_or(0);
    assert!(size < main_size, "a rolled-back log was cosigned at {size}");
    drop(b);
    // The rollback is a 409 (the witness is ahead of the log) that the
    // coordinator reports; the witness keeps only proofs of misbehaviour.
    assert!(refusals(dir.path(), "w1").len() >= n1);
}

/// Release transparency through the binaries: a client checks, before
/// sending anything, that the worker's attested measurement was logged as
/// approved under a checkpoint both witnesses cosigned recently. A
/// coordinator that cheats (its stored manifest edited to approve a
/// measurement it never logged) still certifies the worker, and the client
/// refuses it; so it does with too few witnesses or too old a checkpoint;
/// once the measurement is logged by a manifest and cosigned, it accepts.
#[test]
fn a_client_refuses_a_worker_whose_measurement_was_never_logged() {
    use sha2::{Digest, Sha384};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, wport) = (free_port(), free_port());
    let url = format!("https://localhost:{port}");
    let data = d.join("coord");
    let ca = data.join("ca.pem");
    let log_key = data.join("audit.pub");
    let cli = |token: Option<&str>| {
        let mut c = twinseal();
        c.env("TWINSEAL_COORDINATOR", &url).env("TWINSEAL_CA", &ca);
        if let Some(t) = token {
            c.env("TWINSEAL_TOKEN", t);
        }
        c
    };
    let platform_key = d.join("platform.key");
    ok(twinseal()
        .args(["attest", "simulate", "--report-data", "00", "-o"])
        .arg(d.join("ev.bin"))
        .arg("--platform-key")
        .arg(&platform_key)
        .output()
        .unwrap());
    let platform_pub = std::fs::read_to_string(d.join("platform.key.pub")).unwrap();
    let admin = ok(twinseal()
        .args(["coordinator", "init", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--server-name", "localhost"])
        .args(["--insecure-allow-simulated-tee", "--simulated-platform-key"])
        .arg(platform_pub.trim())
        .output()
        .unwrap());
    let admin = admin.trim().to_string();
    let (_w1, k1, p1) = witness(d, "w1", &log_key);
    let (_w2, k2, p2) = witness(d, "w2", &log_key);
    let config = data.join("coordinator.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let section = "[transparency]\npublic_log = false\nwitnesses = []\n";
    std::fs::write(
        &config,
        text.replace(
            section,
            &format!(
                "[transparency]\nquorum = 2\nwitnesses = [\n  \
                 {{ url = \"http://127.0.0.1:{p1}\", key = \"{k1}\" }},\n  \
                 {{ url = \"http://127.0.0.1:{p2}\", key = \"{k2}\" }},\n]\n"
            ),
        ),
    )
    .unwrap();
    let coordinator = serve(&config, port);

    // The manifest approves another measurement than this binary's.
    let measurement = hex::encode(Sha384::digest(
        std::fs::read(env!("CARGO_BIN_EXE_twinseal")).unwrap(),
    ));
    let other = "00".repeat(48);
    let manifest = |m: &str| {
        format!(
            "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\n\
             [users.carl]\nroles = [\"client\"]\n[keys.model-key]\nowners = [\"dora\"]\n\
             [apps.siamese-worker]\ntee = [\"simulated\"]\nmeasurements = [\"{m}\"]\nkeys = [\"model-key\"]\n\
             [apps.siamese-worker.clients]\ncarl = [\"compare\"]\n"
        )
    };
    let manifest_file = d.join("manifest.toml");
    std::fs::write(&manifest_file, manifest(&other)).unwrap();
    ok(cli(Some(&admin))
        .args(["manifest", "apply"])
        .arg(&manifest_file)
        .output()
        .unwrap());
    ok(cli(Some(&admin))
        .args(["key", "create", "model-key"])
        .output()
        .unwrap());
    let dora = ok(cli(Some(&admin))
        .args(["user", "token", "dora"])
        .output()
        .unwrap());
    let carl = ok(cli(Some(&admin))
        .args(["user", "token", "carl"])
        .output()
        .unwrap());
    let carl = carl.trim().to_string();
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
    ok(cli(Some(dora.trim()))
        .args(["seal", "--key", "model-key", "-c", "purpose=model"])
        .arg(&model)
        .arg("-o")
        .arg(&sealed)
        .output()
        .unwrap());

    // The coordinator cheats: its stored manifest is edited to approve this
    // binary's measurement, which the log never recorded.
    drop(coordinator);
    {
        let db = rusqlite::Connection::open(data.join("coordinator.db")).unwrap();
        let n = db
            .execute(
                "UPDATE manifests SET text = replace(text, ?1, ?2) \
                 WHERE version = (SELECT MAX(version) FROM manifests)",
                [&other, &measurement],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let coordinator = serve(&config, port);
    let start_worker = || {
        let mut c = cli(None);
        let mut child = c
            .args([
                "worker",
                "serve",
                "--app",
                "siamese-worker",
                "--tee",
                "simulated",
            ])
            .arg("--model")
            .arg(&sealed)
            .arg("--insecure-simulated-platform-key")
            .arg(&platform_key)
            .args(["--listen", &format!("127.0.0.1:{wport}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(wport, &mut child);
        Proc(child)
    };
    let worker = start_worker();
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
    let compare = |witnesses: &[&str], max_age_hours: &str| {
        let mut c = cli(Some(&carl));
        c.args(["compare", "--worker", &format!("https://127.0.0.1:{wport}")])
            .arg("--allow-simulated")
            .arg("--log-key")
            .arg(&log_key)
            .args(["--max-checkpoint-age-hours", max_age_hours]);
        for w in witnesses {
            c.args(["--witness", w]);
        }
        c.arg(&a).arg(&b).output().unwrap()
    };
    let both = [k1.as_str(), k2.as_str()];
    // Wait for the worker's proof (its approval under a cosigned checkpoint).
    let wait_for = |want: &str| {
        let t0 = Instant::now();
        loop {
            let out = compare(&both, "24");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if text.contains(want) {
                return (out.status.success(), text);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "never saw {want:?}; last: {text}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let (success, text) = wait_for("never logged");
    assert!(!success, "{text}");
    assert!(text.contains("refusing the worker"), "{text}");
    assert!(
        !text.contains("receipt verified"),
        "data went to the worker: {text}"
    );
    drop(worker);

    // The measurement logged by a manifest: a new worker is accepted once
    // the witnesses cosigned a checkpoint that covers the approval.
    std::fs::write(&manifest_file, manifest(&measurement)).unwrap();
    ok(cli(Some(&admin))
        .args(["manifest", "apply"])
        .arg(&manifest_file)
        .output()
        .unwrap());
    let _worker = start_worker();
    let (success, text) = wait_for("receipt verified");
    assert!(success, "{text}");
    assert!(
        text.contains("release transparency: measurement approved by manifest version"),
        "{text}"
    );

    // Too few witnesses, or a checkpoint older than allowed: refused.
    let (stranger, _, _) = witness(d, "w3", &log_key);
    drop(stranger);
    let k3 = ok(twinseal()
        .args(["witness", "key", "--dir"])
        .arg(d.join("w3"))
        .output()
        .unwrap());
    let out = compare(&[k1.as_str(), k3.trim()], "24");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of the configured witnesses, 2 needed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    let out = compare(&both, "0.0001");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("h old"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(coordinator);
}

/// `twinseal receipt verify` on the spec's vectors: the JSON receipt (with
/// its COSE form) and the COSE receipt alone verify; each fail vector is
/// refused with its reason.
#[test]
fn receipt_verify_checks_both_forms_against_the_spec_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/spec/vectors/receipt");
    let verify = |file: &str| {
        twinseal()
            .args(["receipt", "verify"])
            .arg(dir.join(file))
            .arg("--cert")
            .arg(dir.join("cert.der"))
            .output()
            .unwrap()
    };
    let out = ok(verify("ok_compare.json"));
    assert!(
        out.contains("OK: the JSON and COSE receipt verifies"),
        "{out}"
    );
    let out = ok(verify("ok_compare.cose"));
    assert!(out.contains("OK: the COSE receipt verifies"), "{out}");
    let list = std::fs::read_to_string(dir.join("vectors.txt")).unwrap();
    for line in list.lines().filter(|l| !l.starts_with('#')) {
        let (file, why) = line.split_once(": ").unwrap();
        let out = verify(file);
        assert!(!out.status.success(), "{file} verified");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{file}: {err}");
    }
}
