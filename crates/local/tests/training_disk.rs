//! No plaintext image or weight file is written anywhere during a training
//! workflow: the trainer's temporary directory (`TMPDIR`), its working
//! directory and the object store are watched with inotify while it runs;
//! every file created or changed must be one of the run's sealed outputs,
//! and no file left in them holds a PNG, a tar archive or a model.
//!
//! The test runs the training in a child process of this test binary,
//! started with `TMPDIR` and the working directory pointed at watched
//! folders, so that everything the process writes lands where it is seen.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use notify::{EventKind, RecursiveMode, Watcher};
use twinseal_worker::Worker;

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
    if mnist().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "watched_training", "--ignored", "--nocapture"])
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
    let ds = mnist().unwrap();
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
