//! Sealed directories: round trip, and every tampering the issue lists.

use std::fs;
use std::path::Path;

use crate::common::{ctx, key, plaintext};
use twinseal_envelope::{Error, INDEX_FILE, OBJECTS_DIR, open_dir, seal_dir};

fn tree(root: &Path) {
    for (path, len) in [
        ("0/a.bin", 10),
        ("0/b.bin", 70_000),
        ("1/a.bin", 0),
        ("1/deep/c.bin", 3),
        ("top.txt", 5),
    ] {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, plaintext(len + path.len())).unwrap();
    }
}

fn same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((
                        p.strip_prefix(root).unwrap().to_owned(),
                        fs::read(&p).unwrap(),
                    ));
                }
            }
        }
        out.sort();
        out
    };
    assert_eq!(list(a), list(b));
}

struct Fixture {
    _tmp: tempfile::TempDir,
    plain: std::path::PathBuf,
    sealed: std::path::PathBuf,
    out: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    tree(&plain);
    let sealed = tmp.path().join("sealed");
    let summary = seal_dir(&plain, &sealed, &[key(1)], &ctx(&[("purpose", "dataset")])).unwrap();
    assert_eq!(summary.files, 5);
    let out = tmp.path().join("out");
    Fixture {
        plain,
        sealed,
        out,
        _tmp: tmp,
    }
}

fn open(f: &Fixture) -> Result<(), Error> {
    open_dir(
        &f.sealed,
        &f.out,
        &[key(1)],
        &ctx(&[("purpose", "dataset")]),
    )
    .map(|_| ())
}

#[track_caller]
fn assert_rejected(f: &Fixture) {
    let err = open(f).expect_err("tampered directory was accepted");
    assert!(!f.out.exists(), "partial output left behind after: {err}");
    let parent = f.out.parent().unwrap();
    let leftovers: Vec<_> = fs::read_dir(parent)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".twinseal")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary output left behind");
}

fn object(f: &Fixture, n: usize) -> std::path::PathBuf {
    f.sealed.join(OBJECTS_DIR).join(format!("{n:08}.twseal"))
}

#[test]
fn a_tree_round_trips() {
    let f = fixture();
    let summary = open(&f);
    summary.unwrap();
    same_tree(&f.plain, &f.out);
    // Names are not visible in the sealed tree.
    let names: Vec<_> = fs::read_dir(f.sealed.join(OBJECTS_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.to_string_lossy().ends_with(".twseal"))
    );
}

#[test]
fn swapped_objects_are_rejected() {
    let f = fixture();
    let (a, b) = (object(&f, 0), object(&f, 1));
    let tmp = f.sealed.join("swap");
    fs::rename(&a, &tmp).unwrap();
    fs::rename(&b, &a).unwrap();
    fs::rename(&tmp, &b).unwrap();
    assert_rejected(&f);
}

#[test]
fn a_renamed_object_is_rejected() {
    let f = fixture();
    fs::rename(object(&f, 4), object(&f, 5)).unwrap();
    assert_rejected(&f);
}

#[test]
fn a_dropped_object_is_rejected() {
    let f = fixture();
    fs::remove_file(object(&f, 2)).unwrap();
    assert_rejected(&f);
}

#[test]
fn an_added_object_is_rejected() {
    let f = fixture();
    fs::copy(object(&f, 2), object(&f, 9)).unwrap();
    assert_rejected(&f);
}

#[test]
fn an_object_replayed_from_an_older_version_is_rejected() {
    let f = fixture();
    // Seal the same tree again (same key, same context), then put an object
    // of the new version into the old one: it authenticates on its own but
    // not against the index.
    let newer = f.sealed.with_file_name("newer");
    seal_dir(&f.plain, &newer, &[key(1)], &ctx(&[("purpose", "dataset")])).unwrap();
    fs::copy(
        newer.join(OBJECTS_DIR).join("00000001.twseal"),
        object(&f, 1),
    )
    .unwrap();
    assert_rejected(&f);
    // Nor is the newer index with the older objects.
    fs::copy(
        newer.join(OBJECTS_DIR).join("00000001.twseal"),
        object(&f, 1),
    )
    .unwrap();
    fs::copy(newer.join(INDEX_FILE), f.sealed.join(INDEX_FILE)).unwrap();
    assert_rejected(&f);
}

#[test]
fn a_modified_object_fails_late_without_leaving_output() {
    let f = fixture();
    // The last object in path order, so earlier files were already written
    // into the temporary directory when the failure is found.
    let p = object(&f, 4);
    let mut bytes = fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x80;
    fs::write(&p, bytes).unwrap();
    assert_rejected(&f);
}

#[test]
fn wrong_context_and_wrong_key_are_rejected() {
    let f = fixture();
    let err = open_dir(&f.sealed, &f.out, &[key(1)], &ctx(&[("purpose", "model")])).unwrap_err();
    assert!(matches!(err, Error::ContextMismatch), "{err}");
    let err = open_dir(
        &f.sealed,
        &f.out,
        &[key(2)],
        &ctx(&[("purpose", "dataset")]),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NoStanza), "{err}");
    assert!(!f.out.exists());
}

#[test]
fn existing_outputs_are_never_overwritten() {
    let f = fixture();
    fs::create_dir(&f.out).unwrap();
    assert!(matches!(open(&f), Err(Error::OutputExists(_))));
    assert!(matches!(
        seal_dir(&f.plain, &f.sealed, &[key(1)], &ctx(&[])),
        Err(Error::OutputExists(_))
    ));
}

#[cfg(unix)]
#[test]
fn symbolic_links_are_refused_when_sealing() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    tree(&plain);
    std::os::unix::fs::symlink("/etc/hostname", plain.join("link")).unwrap();
    let err = seal_dir(&plain, &tmp.path().join("s"), &[key(1)], &ctx(&[])).unwrap_err();
    assert!(matches!(err, Error::UnsupportedFile { .. }), "{err}");
    assert!(!tmp.path().join("s").exists());
}

#[test]
fn reserved_context_keys_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = seal_dir(
        tmp.path(),
        &tmp.path().join("s"),
        &[key(1)],
        &ctx(&[("twinseal.dir", "x")]),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidContext(_)), "{err}");
}
