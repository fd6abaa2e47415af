//! The coordinator through the `twinseal` binary: init, serve, manifest,
//! keys, sealing with a coordinator key, tokens, tokenization, the audit
//! export and its offline verification, and graceful shutdown on SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn twinseal(token: Option<&str>, url: &str, ca: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_twinseal"));
    c.env("TWINSEAL_COORDINATOR", url)
        .env("TWINSEAL_CA", ca)
        .env_remove("TWINSEAL_TOKEN");
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

fn wait_port(port: u16, child: &mut Child) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the coordinator exited"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the coordinator did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_data_owner_seals_and_opens_with_a_coordinator_key_and_the_audit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coord");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let ca = data.join("ca.pem");
    let admin = ok(twinseal(None, &url, &ca)
        .args(["coordinator", "init", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap());
    let admin = admin.trim().to_string();
    assert!(admin.starts_with("tws_"));
    // A second init refuses to touch the state.
    let again = twinseal(None, &url, &ca)
        .args(["coordinator", "init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let mut server = twinseal(None, &url, &ca)
        .args(["coordinator", "serve", "--config"])
        .arg(data.join("coordinator.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, &mut server);

    let manifest = dir.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        "[users.admin]\nroles = [\"admin\"]\n[users.alice]\nroles = [\"data_owner\"]\n[users.audrey]\nroles = [\"auditor\"]\n\
         [keys.data-key]\nowners = [\"alice\"]\ngrants = { alice = [\"tokenize\", \"detokenize\"] }\n",
    )
    .unwrap();
    ok(twinseal(Some(&admin), &url, &ca)
        .args(["manifest", "apply"])
        .arg(&manifest)
        .output()
        .unwrap());
    let alice = ok(twinseal(Some(&admin), &url, &ca)
        .args(["user", "token", "alice"])
        .output()
        .unwrap());
    let audrey = ok(twinseal(Some(&admin), &url, &ca)
        .args(["user", "token", "audrey"])
        .output()
        .unwrap());
    let (alice, audrey) = (alice.trim(), audrey.trim());
    ok(twinseal(Some(&admin), &url, &ca)
        .args(["key", "create", "data-key", "--tag", "team=ml"])
        .output()
        .unwrap());

    // Seal and unseal through the coordinator; the plaintext key never
    // reaches the data owner's disk.
    let plain = dir.path().join("pairs.bin");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(&plain, &payload).unwrap();
    let sealed = dir.path().join("pairs.sealed");
    ok(twinseal(Some(alice), &url, &ca)
        .args([
            "seal",
            "--coordinator",
            &url,
            "--key",
            "data-key",
            "-c",
            "purpose=pairs",
        ])
        .arg(&plain)
        .arg("-o")
        .arg(&sealed)
        .output()
        .unwrap());
    let opened = dir.path().join("pairs.out");
    ok(twinseal(Some(alice), &url, &ca)
        .args([
            "unseal",
            "--coordinator",
            &url,
            "--key",
            "data-key",
            "-c",
            "purpose=pairs",
        ])
        .arg(&sealed)
        .arg("-o")
        .arg(&opened)
        .output()
        .unwrap());
    assert_eq!(std::fs::read(&opened).unwrap(), payload);
    // The auditor may not open it, and a wrong context fails.
    let denied = twinseal(Some(audrey), &url, &ca)
        .args(["unseal", "--key", "data-key", "-c", "purpose=pairs"])
        .arg(&sealed)
        .arg("-o")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403"));
    assert!(!dir.path().join("x").exists());

    // Tokenization round trip.
    let tokens = ok(twinseal(Some(alice), &url, &ca)
        .args([
            "tokenize",
            "--key",
            "data-key",
            "--tweak",
            "pan",
            "4111111111111111",
        ])
        .output()
        .unwrap());
    let token = tokens.trim();
    assert_eq!(token.len(), 16);
    let back = ok(twinseal(Some(alice), &url, &ca)
        .args(["detokenize", "--key", "data-key", "--tweak", "pan", token])
        .output()
        .unwrap());
    assert_eq!(back.trim(), "4111111111111111");

    // The audit export verifies offline; a removed entry is named.
    let bundle = dir.path().join("audit.json");
    ok(twinseal(Some(audrey), &url, &ca)
        .args(["audit", "export", "-o"])
        .arg(&bundle)
        .output()
        .unwrap());
    let key = data.join("audit.pub");
    let report = ok(twinseal(None, &url, &ca)
        .args(["audit", "verify"])
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap());
    assert!(report.contains("OK"), "{report}");
    let mut b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    b["entries"].as_array_mut().unwrap().remove(2);
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&b).unwrap()).unwrap();
    let out = twinseal(None, &url, &ca)
        .args(["audit", "verify"])
        .arg(&tampered)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PROBLEM") && text.to_lowercase().contains("removed"),
        "{text}"
    );

    // The log's tiles (C2SP tlog-tiles) at /log: auditors only, by default.
    let log_url = format!("{url}/log");
    let verify_tiles = |token: Option<&str>, tiles: &str| {
        twinseal(token, &url, &ca)
            .args(["audit", "verify", "--tiles", tiles, "--key"])
            .arg(&key)
            .output()
            .unwrap()
    };
    let report = ok(verify_tiles(Some(audrey), &log_url));
    assert!(report.contains("OK"), "{report}");
    for (who, status) in [(None, "401"), (Some(alice), "403")] {
        let out = verify_tiles(who, &log_url);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(status),
            "{who:?}: {err}"
        );
    }
    // A copy in a plain directory verifies too, and a changed entry in it
    // is found.
    let copy = dir.path().join("tiles");
    ok(twinseal(Some(audrey), &url, &ca)
        .args(["audit", "mirror", "--to"])
        .arg(&copy)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap());
    let report = ok(verify_tiles(None, copy.to_str().unwrap()));
    assert!(report.contains("OK"), "{report}");
    let first = copy.join("tile/entries/000.p/1");
    let bundle_file = std::fs::read_dir(copy.join("tile/entries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file() || p.is_dir())
        .unwrap_or(first);
    let bundle_file = if bundle_file.is_dir() {
        std::fs::read_dir(&bundle_file)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    } else {
        bundle_file
    };
    let mut bytes = std::fs::read(&bundle_file).unwrap();
    let at = bytes
        .windows(5)
        .position(|w| w == b"admin")
        .expect("an actor in the entries");
    bytes[at] = b'A';
    std::fs::write(&bundle_file, bytes).unwrap();
    let out = verify_tiles(None, copy.to_str().unwrap());
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PROBLEM"), "{text}");

    // SIGTERM: a graceful stop.
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    let code = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no graceful stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "{code}");
}
