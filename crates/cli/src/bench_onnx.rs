//! `twinseal bench onnx`: pair throughput of an imported model at batch 1
//! and batch 1024, beside the native candle model, on the Keras
//! reference's 20,000 test pairs (`scripts/bench-onnx` runs Keras's
//! `model.predict` in the same sitting).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use candle_core::Device;
use serde::Serialize;
use twinseal_siamese::{HeadKind, ModelConfig, PairModel, Siamese};

/// `twinseal bench onnx`.
#[derive(Debug, clap::Args)]
pub struct OnnxBench {
    /// The imported model file (`twinseal model import`).
    #[arg(long)]
    pub model: PathBuf,
    /// The `data/` directory of the peer's prep_data.py.
    #[arg(long)]
    pub peer_data: PathBuf,
    /// Pairs timed one at a time.
    #[arg(long, default_value_t = 5000)]
    pub b1_pairs: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Row {
    backend: &'static str,
    pairs_per_s_b1024: f64,
    pairs_per_s_b1: f64,
    accuracy: Option<f64>,
}

/// Batch 1024: all pairs in chunks of 1024, median of 5 passes after a
/// warm-up; batch 1: `b1` pairs one call each.
fn measure(model: &dyn PairModel, a: &[f32], b: &[f32], n: usize, b1: usize) -> Result<(f64, f64)> {
    let px = 784;
    let pass = || -> Result<()> {
        for (x, y) in a.chunks(1024 * px).zip(b.chunks(1024 * px)) {
            std::hint::black_box(model.score_pairs(x, y)?);
        }
        Ok(())
    };
    pass()?;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        pass()?;
        runs.push(t.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    let b1024 = n as f64 / runs[2];
    let b1 = b1.min(n);
    for i in 0..8 {
        model.score_pairs(&a[i * px..(i + 1) * px], &b[i * px..(i + 1) * px])?;
    }
    let t = Instant::now();
    for i in 0..b1 {
        std::hint::black_box(
            model.score_pairs(&a[i * px..(i + 1) * px], &b[i * px..(i + 1) * px])?,
        );
    }
    Ok((b1024, b1 as f64 / t.elapsed().as_secs_f64()))
}

/// Runs the benchmark.
pub fn run(a: OnnxBench) -> Result<()> {
    let imported = crate::model_cmd::load_any(&a.model, &Device::Cpu)?;
    let set = crate::bench::read_set(&a.peer_data, "test")?;
    let pairs = crate::bench::read_pairs(&a.peer_data.join("test_pairs.bin"))?;
    let (pa, pb, _) = twinseal_siamese::data::pairs::gather(&set, &pairs);
    let native = Siamese::new(ModelConfig::seed(HeadKind::Sigmoid), 42, &Device::Cpu)?;
    let mut rows = Vec::new();
    for (backend, model) in [
        ("onnx (tract)", imported.as_ref()),
        ("native (candle)", &native as &dyn PairModel),
    ] {
        let (b1024, b1) = measure(model, &pa, &pb, pairs.len(), a.b1_pairs)?;
        let accuracy = (model.backend() == "onnx")
            .then(|| {
                twinseal_siamese::train::evaluate(model, &set, &pairs, None).map(|r| r.accuracy)
            })
            .transpose()?;
        eprintln!(
            "{backend:<16} batch 1024: {b1024:>9.0} pairs/s   batch 1: {b1:>9.0} pairs/s{}",
            accuracy.map_or(String::new(), |acc| format!("   accuracy {acc:.5}"))
        );
        rows.push(Row {
            backend,
            pairs_per_s_b1024: b1024,
            pairs_per_s_b1: b1,
            accuracy,
        });
    }
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "pairs": pairs.len(),
        "b1_pairs": a.b1_pairs.min(pairs.len()),
        "rows": rows,
    }))?;
    println!("{text}");
    if let Some(p) = &a.json {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
