//! The `twinseal` binary end to end on a tiny IDX dataset made here: train,
//! eval, compare, embed, and the errors a user sees.

use std::path::Path;
use std::process::{Command, Output};

fn twinseal(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinseal"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two "identities" that a network can tell apart: a bright blob left or right.
fn tiny_idx(dir: &Path) {
    let n: i32 = 120;
    let mut img = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        img.extend(d.to_be_bytes());
    }
    let mut lab = vec![0, 0, 8, 1];
    lab.extend((n as u32).to_be_bytes());
    for i in 0..n {
        let class = i % 2;
        lab.push(class as u8);
        for y in 0..28i32 {
            for x in 0..28i32 {
                let cx = if class == 0 { 8 } else { 20 };
                let on = (x - cx).abs() < 4 + i % 3 && (y - 14).abs() < 6;
                img.push(if on { 230 } else { (i * 7 % 20) as u8 });
            }
        }
    }
    std::fs::write(dir.join("train-images-idx3-ubyte"), img).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), lab).unwrap();
}

fn png(path: &Path, left: bool) {
    image::GrayImage::from_fn(56, 56, |x, y| {
        let cx = if left { 16 } else { 40 };
        image::Luma(
            [if (x as i32 - cx).abs() < 8 && (y as i32 - 28).abs() < 12 {
                230
            } else {
                5
            }],
        )
    })
    .save(path)
    .unwrap();
}

#[test]
fn train_eval_compare_embed_on_idx_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_idx(d);
    let data = format!("idx:{}", d.display());
    let model = d.join("m.safetensors");
    let m = model.to_str().unwrap();
    ok(&twinseal(
        &[
            "train",
            "--dataset",
            &data,
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "-o",
            m,
        ],
        d,
    ));
    assert!(model.is_file());

    let report: serde_json::Value = serde_json::from_str(&ok(&twinseal(
        &[
            "eval",
            "--model",
            m,
            "--dataset",
            &data,
            "--json",
            "--plot",
            "roc.png",
        ],
        d,
    )))
    .unwrap();
    assert!(report["accuracy"].as_f64().unwrap() > 0.9, "{report}");
    assert!(d.join("roc.png").is_file());

    png(&d.join("a.png"), true);
    png(&d.join("b.png"), true);
    png(&d.join("c.png"), false);
    let same: serde_json::Value = serde_json::from_str(&ok(&twinseal(
        &["compare", "--model", m, "a.png", "b.png", "--json"],
        d,
    )))
    .unwrap();
    let diff: serde_json::Value = serde_json::from_str(&ok(&twinseal(
        &["compare", "--model", m, "a.png", "c.png", "--json"],
        d,
    )))
    .unwrap();
    assert_eq!(same["verdict"], "Similar", "{same}");
    assert_eq!(diff["verdict"], "Dissimilar", "{diff}");
    assert!(same["probability"].as_f64().unwrap() > diff["probability"].as_f64().unwrap());

    let text = ok(&twinseal(
        &[
            "compare",
            "--model",
            m,
            "--dataset",
            &data,
            "--random-pairs",
            "4",
        ],
        d,
    ));
    assert_eq!(text.lines().count(), 5, "{text}");

    let emb: serde_json::Value = serde_json::from_str(&ok(&twinseal(
        &["embed", "--model", m, "a.png", "c.png"],
        d,
    )))
    .unwrap();
    assert_eq!(emb[1]["embedding"].as_array().unwrap().len(), 10);
}

#[test]
fn bad_inputs_are_clear_errors_and_destroy_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("not-a-model"), b"hello").unwrap();
    std::fs::write(d.join("bad.png"), b"\x89PNG\r\n\x1a\ngarbage").unwrap();
    let out = twinseal(
        &["compare", "--model", "not-a-model", "bad.png", "bad.png"],
        d,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loading model not-a-model") && err.contains("invalid model file"),
        "{err}"
    );

    // A failed training run leaves an existing output file untouched.
    std::fs::write(d.join("keep.safetensors"), b"previous model").unwrap();
    let out = twinseal(
        &[
            "train",
            "--dataset",
            "folder:nowhere",
            "-o",
            "keep.safetensors",
        ],
        d,
    );
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read(d.join("keep.safetensors")).unwrap(),
        b"previous model"
    );

    let out = twinseal(&["train", "--dataset", "s3:bucket", "-o", "x"], d);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected mnist, idx:DIR or folder:DIR"));
}
