//! Bringing a model: `twinseal model import` of the Keras example's ONNX
//! export (fixture in testdata/models/keras-siamese), `model
//! inspect`, and `eval`/`compare`/`embed` on the imported model; the
//! refusals at import (config misfit, damaged graph, existing output).

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models/keras-siamese");
    assert!(
        dir.join("siamese.onnx").is_file(),
        "the keras-siamese fixture is missing at {}: testdata/ is part of the repository: restore it with `git checkout -- testdata`",
        dir.display()
    );
    dir
}

const CONFIG: &str = "kind = \"pair\"\nlayout = \"nhwc\"\nheight = 28\nwidth = 28\nscale = 255.0\noutput = \"dissimilarity_probability\"\nthreshold = 0.5\n";

fn twinseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_twinseal"))
}

fn run(c: &mut Command) -> (bool, String, String) {
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn import(onnx: &Path, config: &Path, out: &Path) -> Command {
    let mut c = twinseal();
    c.args(["model", "import", "--onnx"])
        .arg(onnx)
        .arg("--config")
        .arg(config)
        .arg("-o")
        .arg(out);
    c
}

#[test]
fn an_onnx_export_imports_inspects_and_evaluates() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("keras.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let model = d.join("keras.tws");
    let (ok, _, err) = run(&mut import(&fx.join("siamese.onnx"), &config, &model));
    assert!(ok, "{err}");
    assert!(err.contains("imported"), "{err}");

    let (ok, out, err) = run(twinseal().args(["model", "inspect"]).arg(&model));
    assert!(ok, "{err}");
    assert!(
        out.contains("twinseal-onnx/1") && out.contains("pair scores only"),
        "{out}"
    );
    assert!(
        out.contains("Conv") && out.contains("keras_tensor"),
        "{out}"
    );
    let (ok, out, _) = run(twinseal().args(["model", "inspect", "--json"]).arg(&model));
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["backend"], "onnx");
    assert_eq!(v["threshold"], 0.5);

    // Two images through the imported model; its embeddings do not exist.
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
    let (ok, out, err) = run(twinseal()
        .args(["compare", "--model"])
        .arg(&model)
        .arg(&a)
        .arg(&b)
        .arg("--json"));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["probability"].as_f64().unwrap() >= 0.0);
    let (ok, _, err) = run(twinseal().args(["embed", "--model"]).arg(&model).arg(&a));
    assert!(!ok && err.contains("pairs only"), "{err}");

    // Refusals: an existing output is kept; a misfit config and a damaged
    // graph are refused at import and write nothing.
    let before = std::fs::read(&model).unwrap();
    let (ok, _, err) = run(&mut import(&fx.join("siamese.onnx"), &config, &model));
    assert!(!ok && err.contains("never replaced"), "{err}");
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let misfit = d.join("misfit.toml");
    std::fs::write(&misfit, CONFIG.replace("\"nhwc\"", "\"nchw\"")).unwrap();
    let out2 = d.join("other.tws");
    let (ok, _, err) = run(&mut import(&fx.join("siamese.onnx"), &misfit, &out2));
    assert!(!ok && err.contains("declared"), "{err}");
    let damaged = d.join("damaged.onnx");
    let g = std::fs::read(fx.join("siamese.onnx")).unwrap();
    std::fs::write(&damaged, &g[..g.len() / 3]).unwrap();
    let (ok, _, err) = run(&mut import(&damaged, &config, &out2));
    assert!(!ok && err.contains("ONNX"), "{err}");
    assert!(!out2.exists());
    // A model file whose graph was altered after import is refused at load.
    let mut altered = before.clone();
    let n = altered.len();
    altered[n - 100] ^= 1;
    let bad = d.join("altered.tws");
    std::fs::write(&bad, altered).unwrap();
    let (ok, _, err) = run(twinseal().args(["model", "inspect"]).arg(&bad));
    assert!(!ok && err.contains("digest"), "{err}");
}
