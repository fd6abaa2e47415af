//! Training jobs: a sealed dataset -> this attested trainer -> a sealed
//! model and sealed evaluation metrics.
//!
//! # The input: a sealed dataset
//!
//! A folder in the object store (the manifest dataset's `location`) with
//! two objects:
//!
//! - [`DATASET_INDEX`]: the public index (identities and image counts, see
//!   [`twinseal_siamese::data::archive`]), readable without a key
//!   (`twinseal dataset inspect`);
//! - [`DATASET_DATA`]: one envelope sealed under the dataset's coordinator
//!   key, whose plaintext is the dataset archive (the index again, then the
//!   images or the MNIST tarball).
//!
//! The data owner makes it with `twinseal seal --coordinator URL --key
//! NAME DIR` (an image folder) or `... --mnist-dataset TARBALL`.
//!
//! # What the trainer does
//!
//! It has the coordinator unwrap the sealed archive's file key (the
//! attested release path for one file, checked against the manifest and
//! policy: the trainer never holds the dataset key), decrypts the archive
//! as a stream into the tar reader, decodes images straight into memory,
//! checks the archive against the public index, trains with
//! [`twinseal_siamese::train::train`] (the code `twinseal train` runs, with
//! the options [`options`] maps from the workflow's [`api::TrainSpec`]),
//! reports each epoch (loss and accuracy only), records its attestation in
//! the model's provenance, and seals the model and the metrics under data
//! keys for the workflow's output key. Nothing in plaintext is written to
//! disk.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use twinseal_api as api;
use twinseal_envelope::{Header, Opener};
use twinseal_siamese::AttestedTraining;
use twinseal_siamese::config::{HeadKind, TowerConfig};
use twinseal_siamese::data::archive::{ArchiveIndex, read_archive};
use twinseal_siamese::loss::LossKind;
use twinseal_siamese::optim::OptimizerKind;
use twinseal_siamese::train::{self, TrainOptions};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::jobs::{Reporter, context_of, get, job_err, open_object, seal_and_put};
use crate::worker::AppState;
use std::io::Read as _;

/// The public index of a sealed dataset, inside its folder.
pub const DATASET_INDEX: &str = "index.json";
/// The sealed dataset archive, inside its folder.
pub const DATASET_DATA: &str = "data.twseal";

/// The training options of a workflow's spec: the same mapping `twinseal
/// train` uses for its flags (the CLI builds a spec from its flags and
/// calls this).
pub fn options(spec: &api::TrainSpec) -> Result<TrainOptions> {
    spec.check().map_err(Error::Config)?;
    let tower = match &spec.tower {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| Error::Config(format!("tower configuration: {e}")))?,
        None => TowerConfig::seed(),
    };
    Ok(TrainOptions {
        tower,
        head: match spec.head.as_str() {
            "distance" => HeadKind::Distance,
            _ => HeadKind::Sigmoid,
        },
        loss: match spec.loss.as_str() {
            "triplet" => LossKind::Triplet {
                margin: spec.margin,
            },
            _ => LossKind::Contrastive {
                margin: spec.margin,
            },
        },
        optimizer: match spec.optimizer.as_str() {
            "adam" => OptimizerKind::Adam {
                lr: spec.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-7,
            },
            _ => OptimizerKind::RmsProp {
                lr: spec.lr,
                rho: 0.9,
                eps: 1e-7,
            },
        },
        epochs: spec.epochs,
        batch_size: spec.batch_size,
        seed: spec.seed,
        max_images_per_class: spec.max_per_class,
        all_pairs: !spec.sampled_pairs_only,
        ..TrainOptions::default()
    })
}

fn progress(stage: &str, epoch: usize, epochs: usize) -> api::TrainingProgress {
    api::TrainingProgress {
        stage: stage.into(),
        epoch,
        epochs,
        loss: None,
        accuracy: None,
        metrics: BTreeMap::new(),
    }
}

fn metrics_of(r: &twinseal_siamese::metrics::Report) -> BTreeMap<String, f64> {
    [
        ("accuracy", r.accuracy),
        ("roc_auc", r.roc_auc),
        ("eer", r.eer),
        ("far", r.far),
        ("frr", r.frr),
        ("threshold", f64::from(r.threshold)),
        ("test_pairs", r.pairs as f64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Largest sealed dataset archive a trainer reads (it streams: only the
/// decoded images stay in memory), bytes.
pub const MAX_DATASET_BYTES: u64 = 64 << 30;

/// A sealed object streaming from the object store into blocking code.
struct SealedStream {
    reader: StreamReader,
    feeder: tokio::task::JoinHandle<()>,
}

impl SealedStream {
    async fn open(store: &dyn ObjectStore, location: &str) -> Result<SealedStream> {
        use futures_util::StreamExt;
        let got = open_object(store, location, "the sealed dataset", MAX_DATASET_BYTES).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
        let mut stream = got.into_stream();
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    tracing::warn!(error = %e, "object store read failed");
                    std::io::Error::other("reading from the object store failed")
                });
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        Ok(SealedStream {
            reader: StreamReader {
                rx,
                chunk: bytes::Bytes::new(),
                hasher: Sha256::new(),
            },
            feeder,
        })
    }
}

/// `Read` over the chunks the feeder sends (from blocking code only),
/// hashing every byte it hands out.
struct StreamReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    hasher: Sha256,
}

impl std::io::Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        let part = self.chunk.split_to(n);
        buf[..n].copy_from_slice(&part);
        self.hasher.update(&part);
        Ok(n)
    }
}

impl StreamReader {
    /// Reads what is left and returns the SHA-256 of every byte, hex.
    fn finish(mut self) -> Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())
            .map_err(|e| job_err(format!("the sealed dataset: {e}")))?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

pub(crate) async fn run_train_job(
    state: &AppState,
    store: &dyn ObjectStore,
    job: &api::Job,
    reporter: &mut Reporter,
) -> Result<api::JobFinish> {
    let spec = job
        .train
        .clone()
        .ok_or_else(|| job_err("a training job without training options"))?;
    let metrics_to = job
        .metrics
        .clone()
        .ok_or_else(|| job_err("a training job without a place for its metrics"))?;
    let opts = options(&spec).map_err(|e| job_err(e.to_string()))?;
    let epochs = opts.epochs;
    reporter.training(progress("opening", 0, epochs)).await;

    let index_bytes = get(
        store,
        &format!("{}/{DATASET_INDEX}", job.input.location),
        "the dataset's index",
    )
    .await?;
    ArchiveIndex::from_json(&index_bytes).map_err(|e| job_err(e.to_string()))?;
    // The sealed archive streams from the object store: its header first
    // (for the coordinator to unwrap the file key), then the rest straight
    // through decryption into the archive reader, hashed on the way.
    let data_loc = format!("{}/{DATASET_DATA}", job.input.location);
    let mut sealed = SealedStream::open(store, &data_loc).await?;
    let dataset_index_sha256 = hex::encode(Sha256::digest(&index_bytes));
    let (header, sealed) = tokio::task::spawn_blocking(move || {
        let h = Header::read_from(&mut sealed.reader)
            .map_err(|e| job_err(format!("the dataset is not a sealed file: {e}")));
        h.map(|h| (h, sealed))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    let file_key =
        crate::worker::unwrap_file_key(&state.coordinator(), &job.input.key, header.as_bytes())
            .await?;
    let context = context_of(&job.input.context)?;

    // Decrypt, parse and train on the blocking pool; progress comes back
    // over a channel (aggregates only).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<api::TrainingProgress>();
    let name = job.input.location.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<_> {
        // The header was read off the stream; put it back in front.
        let SealedStream { reader, feeder } = sealed;
        let input = std::io::Cursor::new(header.as_bytes().to_vec()).chain(reader);
        let mut opener = Opener::with_file_key(input, &file_key, &context).map_err(|e| {
            job_err(format!(
                "the dataset does not open with its key and context: {e}"
            ))
        })?;
        drop(file_key);
        let (h, w) = (opts.tower.height, opts.tower.width);
        let ds = read_archive(&mut opener, &index_bytes, &name, h, w)
            .map_err(|e| job_err(format!("the sealed dataset cannot be used: {e}")))?;
        let (_, reader) = opener.into_inner().into_inner();
        let sealed_dataset_sha256 = reader.finish()?;
        feeder.abort();
        let counts = [
            ds.train.len() as u64,
            ds.test.len() as u64,
            ds.train.classes.len() as u64,
        ];
        let _ = tx.send(progress("training", 0, epochs));
        let mut last: Option<api::TrainingProgress> = None;
        let stop = AtomicBool::new(false);
        let outcome = train::train(
            &ds,
            &opts,
            &candle_core::Device::Cpu,
            &mut |e| {
                // One report per finished epoch: `epoch` is the last
                // finished one, with its loss and accuracy.
                if let train::Event::EpochEnd(s) = e {
                    let mut p = progress("training", s.epoch, epochs);
                    p.loss = Some(s.loss);
                    p.accuracy = Some(s.accuracy);
                    last = Some(p.clone());
                    let _ = tx.send(p);
                }
            },
            &stop,
        )
        .map_err(|e| job_err(format!("training failed: {e}")))?;
        // The training images: wiped before the memory is freed.
        let mut ds = ds;
        zeroize::Zeroize::zeroize(&mut ds.train.pixels);
        zeroize::Zeroize::zeroize(&mut ds.test.pixels);
        drop(ds);
        let mut p = last.unwrap_or_else(|| progress("training", 0, epochs));
        p.stage = "sealing".into();
        p.metrics = metrics_of(&outcome.test);
        let _ = tx.send(p.clone());
        Ok((outcome, counts, p, sealed_dataset_sha256))
    });
    while let Some(p) = rx.recv().await {
        reporter.training(p).await;
    }
    let (mut outcome, images, last, sealed_dataset_sha256) =
        task.await.map_err(|e| Error::Internal(e.to_string()))??;

    // Provenance: this trainer's attestation and the sealed dataset.
    let att = state.attestation();
    let mut provenance = outcome
        .model
        .provenance()
        .cloned()
        .ok_or_else(|| Error::Internal("training recorded no provenance".into()))?;
    let dataset_sha256 = provenance.dataset_sha256.clone();
    provenance.attested = Some(AttestedTraining {
        workflow: job.workflow.clone(),
        run: job.run,
        app: state.app().to_string(),
        tee: att.tee.clone(),
        measurement: att.measurement.clone(),
        evidence_sha256: state.evidence_sha256(),
        certificate: att.certificate.clone(),
        dataset_location: job.input.location.clone(),
        sealed_dataset_sha256: sealed_dataset_sha256.clone(),
        dataset_index_sha256: dataset_index_sha256.clone(),
    });
    outcome.model.set_provenance(provenance);
    let model_bytes = Zeroizing::new(
        outcome
            .model
            .to_bytes()
            .map_err(|e| Error::Internal(format!("serialising the model: {e}")))?,
    );
    let model_plain_sha256 = hex::encode(Sha256::digest(&model_bytes[..]));
    let metrics = metrics_of(&outcome.test);
    let metrics_json = serde_json::to_vec_pretty(&serde_json::json!({
        "format": "twinseal-training-metrics/1",
        "workflow": job.workflow,
        "run": job.run,
        "model_sha256": model_plain_sha256,
        "test": outcome.test,
        "history": outcome.history,
        "stopped": outcome.stopped,
        "images": { "train": images[0], "test": images[1], "identities": images[2] },
    }))
    .map_err(|e| Error::Internal(e.to_string()))?;

    let (model_sha256, model_header_sha256) =
        seal_and_put(state, store, &job.output, &model_bytes, "the model").await?;
    drop(model_bytes);
    let (metrics_sha256, _) =
        seal_and_put(state, store, &metrics_to, &metrics_json, "the metrics").await?;
    reporter
        .training(api::TrainingProgress {
            stage: "done".into(),
            ..last
        })
        .await;

    let output = api::WorkflowOutput {
        run: job.run,
        workflow: job.workflow.clone(),
        pairs: outcome.test.pairs as u64,
        output: job.output.location.clone(),
        output_sha256: model_sha256.clone(),
    };
    let output = serde_json::to_string(&output).map_err(|e| Error::Internal(e.to_string()))?;
    let receipt = crate::http::sign(state, "workflow", sealed_dataset_sha256.clone(), output)?;
    Ok(api::JobFinish {
        done: outcome.history.len() as u64,
        output_sha256: Some(model_sha256.clone()),
        error: None,
        receipt: Some(receipt),
        training: Some(api::TrainingResult {
            model_sha256,
            model_header_sha256,
            model_plain_sha256,
            metrics_output: metrics_to.location,
            metrics_sha256,
            dataset_sha256,
            sealed_dataset_sha256,
            dataset_index_sha256,
            images,
            metrics,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spec_is_the_seeds_training() {
        let o = options(&api::TrainSpec::default()).unwrap();
        let d = TrainOptions::default();
        assert_eq!(o.epochs, 11);
        assert_eq!(o.batch_size, 128);
        assert_eq!(o.seed, d.seed);
        assert_eq!(o.head, HeadKind::Sigmoid);
        assert_eq!(o.loss.to_string(), d.loss.to_string());
        assert_eq!(o.optimizer.to_string(), d.optimizer.to_string());
        assert_eq!(o.all_pairs, d.all_pairs);
    }

    #[test]
    fn fail_specs_that_cannot_train() {
        for (spec, why) in [
            (
                api::TrainSpec {
                    loss: "hinge".into(),
                    ..Default::default()
                },
                "loss",
            ),
            (
                api::TrainSpec {
                    loss: "triplet".into(),
                    ..Default::default()
                },
                "triplet",
            ),
            (
                api::TrainSpec {
                    epochs: 0,
                    ..Default::default()
                },
                "epochs",
            ),
            (
                api::TrainSpec {
                    tower: Some(serde_json::json!({"layers": "no"})),
                    ..Default::default()
                },
                "tower",
            ),
        ] {
            let e = options(&spec).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
