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
