//! `twinseal bench train-workflow`: the seed's training as a confidential
//! workflow (sealed MNIST in, attested trainer, sealed model out) against
//! plain `twinseal train` on the same data, alternating in one process.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Result, ensure};
use candle_core::Device;
use serde::Serialize;
use twinseal_api as api;
use twinseal_local::{DATA_OWNER, Local, LocalOptions, MODEL_KEY};
use twinseal_siamese::data::parse_mnist_tarball;
use twinseal_siamese::train;

use crate::bench_worker::median;
use crate::data::DataDirArg;
use crate::demo::{DATASET_KEY, TRAINER, WORKFLOW};

#[derive(Debug, clap::Args)]
pub struct TrainWorkflowBench {
    /// Sittings; each times both, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    pub sittings: usize,
    /// Epochs (the seed's 11).
    #[arg(long, default_value_t = 11)]
    pub epochs: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Serialize)]
struct Results {
    epochs: usize,
    sittings: usize,
    plain_s: Vec<f64>,
    workflow_s: Vec<f64>,
    plain_median_s: f64,
    workflow_median_s: f64,
    overhead_pct: f64,
    plain_accuracy: f64,
    workflow_accuracy: f64,
    /// Wall time outside the epochs (loading, calibration, evaluation,
    /// writing; for the workflow also queueing, claiming, fetching,
    /// unwrapping, decrypting, sealing, reporting), per sitting.
    plain_outside_epochs_s: Vec<f64>,
    workflow_outside_epochs_s: Vec<f64>,
    plain_outside_epochs_median_s: f64,
    workflow_outside_epochs_median_s: f64,
    /// workflow / plain within each sitting (the two ran back to back).
    paired_ratios: Vec<f64>,
    paired_ratio_median: f64,
    seal_dataset_s: f64,
    trainer_attest_s: f64,
}

pub fn run(a: TrainWorkflowBench) -> Result<()> {
    ensure!(
        a.sittings > 0 && a.epochs > 0,
        "sittings and epochs must be at least 1"
    );
    let tarball = crate::data::fetch_mnist(&a.data.dir())?;
    let spec = api::TrainSpec {
        epochs: a.epochs,
        ..api::TrainSpec::default()
    };
    let opts = twinseal_worker::training::options(&spec)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let m = twinseal_attest::simulated::executable_measurement()?;
    let store = tempfile::tempdir()?;
    let out_dir = tempfile::tempdir()?;

    // The deployment, once: coordinator, keys, the data owner's sealed
    // MNIST, an attested trainer. Timed apart from the runs.
    let started = Instant::now();
    let (local, mel, dora) = rt.block_on(async {
        let local = Local::start(LocalOptions::default()).await?;
        local
            .apply_manifest(&crate::demo::training_manifest(&m, Some(a.epochs)))
            .await?;
        local.create_keys(&[MODEL_KEY, DATASET_KEY]).await?;
        crate::demo::seal_mnist_dataset(&local, &tarball, store.path()).await?;
        let dora = local.user(DATA_OWNER).await?;
        let mel = local.user("mel").await?;
        anyhow::Ok((local, mel, dora))
    })?;
    let seal_dataset_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let trainer = rt.block_on(twinseal_worker::Worker::start(
        local.trainer_options(TRAINER, m)?,
    ))?;
    let trainer_attest_s = started.elapsed().as_secs_f64();
    let object_store = twinseal_worker::jobs::open_store(
        store
            .path()
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("the temporary directory's path is not UTF-8"))?,
    )?;

    // Plain `twinseal train`: read and check the tarball, train, write the
    // model file.
    let plain = |n: usize| -> Result<(f64, f64, f64)> {
        let t = Instant::now();
        let bytes = std::fs::read(&tarball)?;
        let ds = parse_mnist_tarball(&bytes, "mnist")?;
        let outcome = train::train(
            &ds,
            &opts,
            &Device::Cpu,
            &mut |_| {},
            &AtomicBool::new(false),
        )?;
        crate::model_cmd::write_atomic(
            &out_dir.path().join(format!("plain-{n}.safetensors")),
            &outcome.model.to_bytes()?,
        )?;
        let epochs: f64 = outcome.history.iter().map(|e| e.seconds).sum();
        Ok((t.elapsed().as_secs_f64(), outcome.test.accuracy, epochs))
    };
    // The workflow: the ML engineer queues the run; the trainer claims it,
    // fetches the sealed dataset, has its file key unwrapped, decrypts and
    // trains in memory, seals and writes the model and metrics, and
    // reports; the coordinator records the training.
    let workflow = || -> Result<(f64, f64, f64)> {
        rt.block_on(async {
            let t = Instant::now();
            let run: api::RunInfo = mel
                .post(&format!("/v1/workflows/{WORKFLOW}/runs"), &())
                .await?;
            let (id, outcome) = trainer
                .run_next_job(object_store.as_ref())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no queued run"))?;
            let info = outcome?;
            let secs = t.elapsed().as_secs_f64();
            ensure!(
                id == run.id && info.state == api::RunState::Succeeded,
                "the run failed"
            );
            let acc = info
                .training
                .and_then(|p| p.metrics.get("accuracy").copied())
                .unwrap_or(f64::NAN);
            // The data owner opens the sealed metrics for the epoch times.
            let record = info
                .training_record
                .ok_or_else(|| anyhow::anyhow!("no training record"))?;
            let sealed = std::fs::read(store.path().join(&record.result.metrics_output))?;
            let run = id.to_string();
            let json = twinseal_local::unseal(
                &dora,
                MODEL_KEY,
                &[
                    ("purpose", "metrics"),
                    ("workflow", WORKFLOW),
                    ("run", &run),
                ],
                &sealed,
            )
            .await?;
            let m: serde_json::Value = serde_json::from_slice(&json)?;
            let epochs: f64 = m["history"]
                .as_array()
                .map(|h| h.iter().filter_map(|e| e["seconds"].as_f64()).sum())
                .unwrap_or(f64::NAN);
            Ok((secs, acc, epochs))
        })
    };

    let (mut plain_s, mut workflow_s) = (Vec::new(), Vec::new());
    let (mut plain_out, mut workflow_out) = (Vec::new(), Vec::new());
    let (mut plain_acc, mut workflow_acc) = (0.0, 0.0);
    for s in 0..a.sittings {
        for which in if s % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (name, (t, acc, e)) = if which == 0 {
                ("plain train", plain(s)?)
            } else {
                ("workflow   ", workflow()?)
            };
            eprintln!(
                "sitting {}: {name} {t:.2} s, {:.2} s outside the epochs (accuracy {acc:.4})",
                s + 1,
                t - e
            );
            if which == 0 {
                plain_s.push(t);
                plain_out.push(t - e);
                plain_acc = acc;
            } else {
                workflow_s.push(t);
                workflow_out.push(t - e);
                workflow_acc = acc;
            }
        }
    }
    rt.block_on(local.stop())?;
    let (p, w) = (median(&plain_s), median(&workflow_s));
    let paired: Vec<f64> = workflow_s
        .iter()
        .zip(&plain_s)
        .map(|(w, p)| w / p)
        .collect();
    let r = Results {
        epochs: a.epochs,
        sittings: a.sittings,
        plain_median_s: p,
        workflow_median_s: w,
        overhead_pct: (w / p - 1.0) * 100.0,
        plain_s,
        workflow_s,
        paired_ratio_median: median(&paired),
        paired_ratios: paired,
        plain_outside_epochs_median_s: median(&plain_out),
        workflow_outside_epochs_median_s: median(&workflow_out),
        plain_outside_epochs_s: plain_out,
        workflow_outside_epochs_s: workflow_out,
        plain_accuracy: plain_acc,
        workflow_accuracy: workflow_acc,
        seal_dataset_s,
        trainer_attest_s,
    };
    println!(
        "training, {} epochs, median of {} sittings: plain {:.2} s, confidential workflow {:.2} s: overhead {:+.1}% (target <= 5%)",
        r.epochs, r.sittings, p, w, r.overhead_pct
    );
    println!(
        "test accuracy: plain {:.4}, workflow {:.4}; once per deployment: coordinator + seal the dataset {:.2} s, trainer attests {:.1} ms",
        r.plain_accuracy,
        r.workflow_accuracy,
        r.seal_dataset_s,
        r.trainer_attest_s * 1e3
    );
    println!(
        "workflow / plain within each sitting: {} -> median {:.3} ({:+.1}%)",
        r.paired_ratios
            .iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.paired_ratio_median,
        (r.paired_ratio_median - 1.0) * 100.0
    );
    println!(
        "outside the epochs (median): plain {:.2} s, workflow {:.2} s: the workflow's own cost is {:+.2} s = {:+.1}% of plain training",
        r.plain_outside_epochs_median_s,
        r.workflow_outside_epochs_median_s,
        r.workflow_outside_epochs_median_s - r.plain_outside_epochs_median_s,
        (r.workflow_outside_epochs_median_s - r.plain_outside_epochs_median_s) / p * 100.0
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(())
}
