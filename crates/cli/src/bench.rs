//! `twinseal bench siamese`: the seed's training and inference measured on
//! exactly the data and pairs the Keras reference uses (the `data/*.bin`
//! files of `../shared/bench/peers/prep_data.py`), so that the two can be
//! compared side by side in one sitting (`scripts/bench-siamese`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use serde::Serialize;
use twinseal_siamese::data::pairs::Pair;
use twinseal_siamese::data::{Dataset, ImageSet};
use twinseal_siamese::train::{self, TrainOptions};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Train the seed's model 11 epochs and time pair inference at batch 1024 and 1.
    Siamese(SiameseBench),
    /// Attestation + certificate issuance and key release over mutual TLS,
    /// from concurrent clients on loopback (simulated evidence).
    Coordinator(crate::bench_coord::CoordinatorBench),
    /// The log's transparency: tiles served per second, and the client's
    /// release-transparency check per connection.
    Transparency(crate::bench_transparency::TransparencyBench),
    /// Pair throughput of an attested worker over TLS against the same
    /// model in process, at each batch size, on the same pairs.
    Worker(crate::bench_worker::WorkerBench),
    /// A bounded load test on loopback: concurrent clients against an
    /// attested worker; errors and latency percentiles.
    Load(crate::bench_worker::LoadBench),
    /// Pair throughput of an imported ONNX model at batch 1 and 1024,
    /// beside the native model, on the Keras reference's test pairs.
    Onnx(crate::bench_onnx::OnnxBench),
    /// The seed's training as a confidential workflow (sealed MNIST,
    /// attested trainer, sealed model) against plain `twinseal train` on
    /// the same data, alternating in one process.
    TrainWorkflow(crate::bench_train::TrainWorkflowBench),
}

#[derive(Debug, clap::Args)]
pub struct SiameseBench {
    /// The `data/` directory written by the peer's prep_data.py.
    #[arg(long)]
    pub peer_data: PathBuf,
    #[arg(long, default_value_t = 11)]
    pub epochs: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Pairs timed one at a time.
    #[arg(long, default_value_t = 20_000)]
    pub b1_pairs: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Results {
    epochs: usize,
    epoch_times_s: Vec<f64>,
    epoch_median_s: f64,
    fit_total_s: f64,
    test_pairs: usize,
    test_acc: f64,
    infer_pairs_per_s_b1024: f64,
    infer_pairs_per_s_b1: f64,
}

fn read_f32(p: &Path) -> Result<Vec<f32>> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub(crate) fn read_pairs(p: &Path) -> Result<Vec<Pair>> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    let v: Vec<u32> = b
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(v.chunks_exact(3)
        .map(|t| Pair {
            a: t[0],
            b: t[1],
            same: t[2] == 1,
        })
        .collect())
}

pub(crate) fn read_set(dir: &Path, split: &str) -> Result<ImageSet> {
    // prep_data.py stores pixels multiplied by 255 (the Keras model's input); twinseal takes 0..1.
    let pixels: Vec<f32> = read_f32(&dir.join(format!("{split}_x.bin")))?
        .into_iter()
        .map(|v| v / 255.0)
        .collect();
    let labels: Vec<u32> = std::fs::read(dir.join(format!("{split}_y.bin")))?
        .into_iter()
        .map(u32::from)
        .collect();
    if pixels.len() != labels.len() * 784 {
        bail!("{split}_x.bin and {split}_y.bin disagree on the number of images");
    }
    Ok(ImageSet {
        height: 28,
        width: 28,
        pixels,
        labels,
        classes: (0..10).map(|d| d.to_string()).collect(),
    })
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    let a = match cmd {
        BenchCommand::Siamese(a) => a,
        BenchCommand::Coordinator(a) => return crate::bench_coord::run(a),
        BenchCommand::Transparency(a) => return crate::bench_transparency::run(a),
        BenchCommand::Worker(a) => return crate::bench_worker::run_worker(a),
        BenchCommand::Load(a) => return crate::bench_worker::run_load(a),
        BenchCommand::Onnx(a) => return crate::bench_onnx::run(a),
        BenchCommand::TrainWorkflow(a) => return crate::bench_train::run(a),
    };
    let ds = Dataset {
        name: "peer-data".into(),
        sha256: String::new(),
        split: "prep_data.py".into(),
        train: read_set(&a.peer_data, "train")?,
        test: read_set(&a.peer_data, "test")?,
    };
    let train_pairs = read_pairs(&a.peer_data.join("train_pairs.bin"))?;
    let test_pairs = read_pairs(&a.peer_data.join("test_pairs.bin"))?;
    let opts = TrainOptions {
        epochs: a.epochs,
        seed: a.seed,
        fixed_pairs: Some(train_pairs),
        ..TrainOptions::default()
    };
    let t0 = Instant::now();
    let outcome = crate::model_cmd::train_with_progress(&ds, &opts, &Device::Cpu, false)?;
    let fit = t0.elapsed().as_secs_f64();
    let model = outcome.model;
    let report = train::evaluate(&model, &ds.test, &test_pairs, None)?;

    // Batch 1024: the 20,000 test pairs, median of 5 passes after a warm-up.
    let (pa, pb, _) = twinseal_siamese::data::pairs::gather(&ds.test, &test_pairs);
    let px = 784;
    let pass = || -> Result<()> {
        for (a, b) in pa.chunks(1024 * px).zip(pb.chunks(1024 * px)) {
            std::hint::black_box(model.score_pairs(a, b)?);
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
    let b1024 = test_pairs.len() as f64 / runs[2];

    // Batch 1: one pair per call.
    let n1 = a.b1_pairs.min(test_pairs.len());
    for i in 0..8 {
        model.score_pairs(&pa[i * px..(i + 1) * px], &pb[i * px..(i + 1) * px])?;
    }
    let t = Instant::now();
    for i in 0..n1 {
        std::hint::black_box(
            model.score_pairs(&pa[i * px..(i + 1) * px], &pb[i * px..(i + 1) * px])?,
        );
    }
    let b1 = n1 as f64 / t.elapsed().as_secs_f64();

    let mut times: Vec<f64> = outcome.history.iter().map(|e| e.seconds).collect();
    let epoch_times = times.clone();
    times.sort_by(f64::total_cmp);
    let res = Results {
        epochs: outcome.history.len(),
        epoch_times_s: epoch_times,
        epoch_median_s: times[times.len() / 2],
        fit_total_s: fit,
        test_pairs: test_pairs.len(),
        test_acc: report.accuracy,
        infer_pairs_per_s_b1024: b1024,
        infer_pairs_per_s_b1: b1,
    };
    let text = serde_json::to_string_pretty(&res)?;
    println!("{text}");
    if let Some(p) = &a.json {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
