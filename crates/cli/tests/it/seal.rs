//! `twinseal key`, `seal`, `unseal` and `inspect` through the real binary.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn twinseal(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinseal"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = twinseal(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = twinseal(dir, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn key_generate_writes_a_private_key_once() {
    let tmp = tempfile::tempdir().unwrap();
    let id = ok(tmp.path(), &["key", "generate", "-o", "k"]);
    assert!(id.trim().starts_with("local-"), "{id}");
    assert_eq!(fs::read(tmp.path().join("k")).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(tmp.path().join("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = fs::read(tmp.path().join("k")).unwrap();
    let err = fails(tmp.path(), &["key", "generate", "-o", "k"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(tmp.path().join("k")).unwrap(), before);
    assert_eq!(ok(tmp.path(), &["key", "id", "k"]), id);
}

#[test]
fn files_round_trip_and_failures_leave_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["key", "generate", "-o", "k"]);
    ok(d, &["key", "generate", "-o", "other"]);
    let plain = data(300_000);
    fs::write(d.join("p"), &plain).unwrap();
    ok(
        d,
        &["seal", "-k", "k", "-c", "purpose=model", "p", "-o", "s"],
    );
    ok(
        d,
        &["unseal", "-k", "k", "-c", "purpose=model", "s", "-o", "out"],
    );
    assert_eq!(fs::read(d.join("out")).unwrap(), plain);

    let err = fails(d, &["unseal", "-k", "k", "s", "-o", "o1"]);
    assert!(err.contains("context mismatch"), "{err}");
    let err = fails(
        d,
        &[
            "unseal",
            "-k",
            "other",
            "-c",
            "purpose=model",
            "s",
            "-o",
            "o2",
        ],
    );
    assert!(err.contains("no stanza for this key"), "{err}");
    let err = fails(
        d,
        &["unseal", "-k", "k", "-c", "purpose=model", "p", "-o", "o3"],
    );
    assert!(err.contains("not a twinseal file"), "{err}");
    // Tamper with the last byte: the first segments authenticate and are
    // written to the temporary file before the failure, which must vanish.
    let mut sealed = fs::read(d.join("s")).unwrap();
    *sealed.last_mut().unwrap() ^= 1;
    fs::write(d.join("bad"), &sealed).unwrap();
    let err = fails(
        d,
        &[
            "unseal",
            "-k",
            "k",
            "-c",
            "purpose=model",
            "bad",
            "-o",
            "o4",
        ],
    );
    assert!(err.contains("decryption failed"), "{err}");
    let names: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in &names {
        assert!(
            !["o1", "o2", "o3", "o4"].contains(&name.as_str()),
            "left behind: {name}"
        );
        assert!(!name.starts_with(".twinseal"), "left behind: {name}");
    }
    // Never overwrites.
    let err = fails(
        d,
        &["unseal", "-k", "k", "-c", "purpose=model", "s", "-o", "out"],
    );
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn stdin_and_stdout_work_and_truncation_fails_the_exit_status() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["key", "generate", "-o", "k"]);
    let plain = data(200_000);
    let pipe = |args: &[&str], input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_twinseal"))
            .current_dir(d)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    };
    let sealed = pipe(&["seal", "-k", "k", "-", "-o", "-"], &plain);
    assert!(sealed.status.success());
    let opened = pipe(&["unseal", "-k", "k", "-", "-o", "-"], &sealed.stdout);
    assert!(opened.status.success());
    assert_eq!(opened.stdout, plain);
    // Cut at a segment boundary (header + one sealed segment).
    let header = sealed.stdout.len() - (200_000 + 4 * 16);
    let cut = &sealed.stdout[..header + 65_536 + 16];
    let truncated = pipe(&["unseal", "-k", "k", "-", "-o", "-"], cut);
    assert!(!truncated.status.success(), "truncated stream accepted");
    assert!(String::from_utf8_lossy(&truncated.stderr).contains("decryption failed"));
}

#[test]
fn directories_round_trip_and_inspect_needs_no_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["key", "generate", "-o", "k"]);
    fs::create_dir_all(d.join("set/0")).unwrap();
    fs::create_dir_all(d.join("set/1")).unwrap();
    fs::write(d.join("set/0/a.png"), data(1000)).unwrap();
    fs::write(d.join("set/1/b.png"), data(70_000)).unwrap();
    let digest = ok(
        d,
        &[
            "seal",
            "-k",
            "k",
            "-c",
            "purpose=dataset",
            "set",
            "-o",
            "sealed",
        ],
    );
    assert_eq!(digest.trim().len(), 64);
    let info = ok(d, &["inspect", "sealed"]);
    assert!(
        info.contains("objects: 2") && info.contains("purpose=dataset"),
        "{info}"
    );
    ok(
        d,
        &[
            "unseal",
            "-k",
            "k",
            "-c",
            "purpose=dataset",
            "sealed",
            "-o",
            "back",
        ],
    );
    assert_eq!(fs::read(d.join("back/1/b.png")).unwrap(), data(70_000));
    assert_eq!(fs::read(d.join("back/0/a.png")).unwrap(), data(1000));

    ok(
        d,
        &[
            "seal",
            "-k",
            "k",
            "-c",
            "name=siamese",
            "set/0/a.png",
            "-o",
            "one",
        ],
    );
    let info = ok(d, &["inspect", "one"]);
    let id = ok(d, &["key", "id", "k"]);
    assert!(info.contains(id.trim()), "{info}");
    assert!(
        info.contains("name=siamese") && info.contains("plaintext size: 1000 bytes"),
        "{info}"
    );
}
