//! `twinseal train`, `eval`, `compare` (local model) and `embed`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail, ensure};
use candle_core::Device;
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use twinseal_api as api;
use twinseal_siamese::PairModel;
use twinseal_siamese::Siamese;
use twinseal_siamese::data::{self, Dataset};
use twinseal_siamese::train::{self, TrainOptions};

use crate::data::{DataDirArg, DatasetSpec};
use crate::progress::TrainProgress;

/// Where the network runs.
#[derive(Debug, Clone, Copy, clap::ValueEnum, Default)]
pub enum DeviceArg {
    /// The CPU (twinseal's fused kernels).
    #[default]
    Cpu,
    /// An NVIDIA GPU (needs a build with `--features cuda`).
    Cuda,
}

pub fn device(d: DeviceArg) -> Result<Device> {
    match d {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => {
            #[cfg(feature = "cuda")]
            {
                Ok(Device::new_cuda(0).context("opening CUDA device 0")?)
            }
            #[cfg(not(feature = "cuda"))]
            bail!(
                "this twinseal was built without CUDA: rebuild with `cargo build --release --features cuda`"
            )
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LossArg {
    Contrastive,
    Triplet,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OptimArg {
    Rmsprop,
    Adam,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HeadArg {
    /// Euclidean distance with a threshold and probability calibrated on training pairs.
    Distance,
    /// The seed's head: distance -> batch norm -> dense(1) -> sigmoid, threshold 0.5 (default).
    Sigmoid,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Training data: `mnist`, `idx:DIR` (MNIST IDX files) or `folder:DIR` (DIR/<identity>/<image>.png|jpg).
    #[arg(long, default_value = "mnist")]
    pub dataset: DatasetSpec,
    #[arg(long, value_enum, default_value = "contrastive")]
    pub loss: LossArg,
    /// Margin of the loss.
    #[arg(long, default_value_t = 1.0)]
    pub margin: f32,
    #[arg(long, value_enum, default_value = "sigmoid")]
    pub head: HeadArg,
    #[arg(long, value_enum, default_value = "rmsprop")]
    pub optimizer: OptimArg,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 11)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Tower as JSON (see TowerConfig); default: the seed's tower for 28x28 input.
    #[arg(long, value_name = "FILE")]
    pub tower: Option<PathBuf>,
    /// Use only the first N training images of each identity (quick runs).
    #[arg(long, value_name = "N")]
    pub max_per_class: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Contrastive loss on the sampled pairs only (as the seed), not on every pair of images in each batch.
    #[arg(long)]
    pub sampled_pairs_only: bool,
    /// Where to write the model (safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataDirArg,
}

impl TrainArgs {
    /// The options as a training workflow's spec: `twinseal train` and a
    /// manifest's `[workflows.NAME.train]` go through the same mapping
    /// (`twinseal_worker::training::options`).
    pub fn spec(&self) -> Result<api::TrainSpec> {
        let tower = match &self.tower {
            Some(p) => Some(
                serde_json::from_slice(
                    &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("parsing tower config {}", p.display()))?,
            ),
            None => None,
        };
        Ok(api::TrainSpec {
            loss: match self.loss {
                LossArg::Contrastive => "contrastive",
                LossArg::Triplet => "triplet",
            }
            .into(),
            margin: self.margin,
            head: match self.head {
                HeadArg::Distance => "distance",
                HeadArg::Sigmoid => "sigmoid",
            }
            .into(),
            optimizer: match self.optimizer {
                OptimArg::Rmsprop => "rmsprop",
                OptimArg::Adam => "adam",
            }
            .into(),
            lr: self.lr,
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            max_per_class: self.max_per_class,
            sampled_pairs_only: self.sampled_pairs_only,
            tower,
        })
    }

    pub fn options(&self) -> Result<TrainOptions> {
        Ok(twinseal_worker::training::options(&self.spec()?)?)
    }
}

/// Installs a Ctrl-C handler: the first press asks training to stop after
/// the current batch, the second exits at once.
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now");
            std::process::exit(130);
        }
        eprintln!("\nstopping after the current batch (Ctrl-C again to exit now)...");
    });
    flag
}

/// Writes `bytes` to `path` atomically (temporary file + rename), so that a
/// failure never leaves a half-written model or destroys the previous one.
/// Writes `bytes` to a new file at `path`, appearing only when complete;
/// an existing file is never replaced.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| {
        anyhow::anyhow!(
            "writing {}: {} (an existing file is never replaced)",
            path.display(),
            e.error
        )
    })?;
    Ok(())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn run_train(args: TrainArgs) -> Result<()> {
    let opts = args.options()?;
    let dev = device(args.device)?;
    let ds = crate::data::load(
        &args.dataset,
        &args.data.dir(),
        opts.tower.height,
        opts.tower.width,
    )?;
    let outcome = train_with_progress(&ds, &opts, &dev, false)?;
    write_atomic(&args.output, &outcome.model.to_bytes()?)?;
    print_report(&outcome.test, args.json, Some(&args.output))?;
    Ok(())
}

pub fn train_with_progress(
    ds: &Dataset,
    opts: &TrainOptions,
    dev: &Device,
    quiet: bool,
) -> Result<train::Outcome> {
    eprintln!(
        "training on {} ({} train / {} test images, {} identities): {} epochs, batch {}, {}, {}, seed {}",
        ds.name,
        ds.train.len(),
        ds.test.len(),
        ds.train.classes.len(),
        opts.epochs,
        opts.batch_size,
        opts.loss,
        opts.optimizer,
        opts.seed
    );
    let stop = stop_flag();
    let mut progress = TrainProgress::new(quiet);
    let outcome = train::train(ds, opts, dev, &mut |e| progress.event(e), &stop)?;
    if outcome.stopped {
        eprintln!("training was stopped early; the model holds the best complete epoch");
    }
    Ok(outcome)
}

pub fn print_report(
    r: &twinseal_siamese::metrics::Report,
    json: bool,
    model: Option<&Path>,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    if let Some(m) = model {
        println!("model:       {}", m.display());
    }
    println!("test pairs:  {} ({} same)", r.pairs, r.same_pairs);
    println!(
        "accuracy:    {:.4} at threshold {:.4}",
        r.accuracy, r.threshold
    );
    println!("FAR / FRR:   {:.4} / {:.4}", r.far, r.frr);
    println!("ROC-AUC:     {:.4}", r.roc_auc);
    println!(
        "EER:         {:.4} (threshold {:.4})",
        r.eer, r.eer_threshold
    );
    if let (Some(t), Some(th), Some(frr)) =
        (r.target_far, r.threshold_at_target_far, r.frr_at_target_far)
    {
        println!("FAR <= {t}: threshold {th:.4}, FRR {frr:.4}");
    }
    Ok(())
}

pub fn load_model(path: &Path, dev: &Device) -> Result<Siamese> {
    let bytes = std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
    Siamese::from_bytes(&bytes, dev).with_context(|| format!("loading model {}", path.display()))
}

/// A model file of either kind (native or imported ONNX).
pub fn load_any(path: &Path, dev: &Device) -> Result<Box<dyn PairModel>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
    twinseal_siamese::load_model(&bytes, dev)
        .with_context(|| format!("loading model {}", path.display()))
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Evaluation data (its test split is used): `mnist`, `idx:DIR` or `folder:DIR`.
    #[arg(long, default_value = "mnist")]
    pub dataset: DatasetSpec,
    /// Also report the threshold for this false accept rate.
    #[arg(long, default_value_t = 0.001)]
    pub target_far: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write ROC and DET curves to this PNG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Evaluate on the test images and pairs of the Keras reference's
    /// prep_data.py (its `data/` directory) instead of `--dataset`: the
    /// same 20,000 pairs Keras reports its accuracy on.
    #[arg(long, value_name = "DIR", conflicts_with = "dataset")]
    pub peer_data: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataDirArg,
}

pub fn run_eval(args: EvalArgs) -> Result<()> {
    let dev = device(args.device)?;
    let model = load_any(&args.model, &dev)?;
    let (height, width) = model.input_size();
    let (set, pairs) = match &args.peer_data {
        Some(dir) => (
            crate::bench::read_set(dir, "test")?,
            crate::bench::read_pairs(&dir.join("test_pairs.bin"))?,
        ),
        None => {
            let ds = crate::data::load(&args.dataset, &args.data.dir(), height, width)?;
            let pairs = train::test_pairs(&ds.test);
            (ds.test, pairs)
        }
    };
    set.expect_size(height, width)?;
    let scores = train::score_pairs(model.as_ref(), &set, &pairs)?;
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    let report =
        twinseal_siamese::metrics::report(&scores, &same, model.threshold(), Some(args.target_far));
    if let Some(p) = &args.plot {
        crate::plot::roc_det(
            p,
            &twinseal_siamese::metrics::curve(&scores, &same),
            &report,
        )?;
        eprintln!("wrote {}", p.display());
    }
    print_report(&report, args.json, Some(&args.model))
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// A local model file (or ask an attested worker with `--worker`).
    #[arg(long, required_unless_present = "worker", conflicts_with = "worker")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub remote: crate::worker_cmd::WorkerClientArgs,
    /// Two images (PNG/JPEG of any size, or raw grey bytes of the model's size).
    #[arg(num_args = 0..=2)]
    pub images: Vec<PathBuf>,
    /// Instead of two images: a dataset whose test split supplies random pairs.
    #[arg(long)]
    pub dataset: Option<DatasetSpec>,
    /// How many random test pairs to show (with `--dataset`).
    #[arg(long, default_value_t = 10)]
    pub random_pairs: usize,
    /// Seed of the random pairs.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataDirArg,
}

pub fn run_compare(args: CompareArgs) -> Result<()> {
    let Some(model_path) = &args.model else {
        ensure!(
            args.images.len() == 2 && args.dataset.is_none(),
            "with --worker, give two images"
        );
        return crate::worker_cmd::compare_remote(
            &args.remote,
            &args.images[0],
            &args.images[1],
            args.json,
        );
    };
    let model = load_any(model_path, &Device::Cpu)?;
    let (height, width) = model.input_size();
    match (&args.dataset, args.images.len()) {
        (None, 2) => {
            let read = |p: &PathBuf| -> Result<Vec<f32>> {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                Ok(data::decode_image(
                    &bytes,
                    height,
                    width,
                    &p.display().to_string(),
                )?)
            };
            let (a, b) = (read(&args.images[0])?, read(&args.images[1])?);
            let s = model.score_pairs(&a, &b)?[0];
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"verdict": verdict(s.similar), "probability": s.probability, "distance": s.distance, "score": s.score, "threshold": model.threshold()})
                );
            } else {
                println!(
                    "{}  probability {:.4}  distance {:.4}  (threshold {:.4})",
                    verdict(s.similar),
                    s.probability,
                    s.distance,
                    model.threshold()
                );
            }
            Ok(())
        }
        (Some(spec), 0) => {
            let ds = crate::data::load(spec, &args.data.dir(), height, width)?;
            random_pairs(model.as_ref(), &ds, args.random_pairs, args.seed, args.json)
        }
        _ => bail!("give either two images or --dataset (with --random-pairs N)"),
    }
}

pub fn verdict(similar: bool) -> &'static str {
    if similar { "Similar" } else { "Dissimilar" }
}

/// The seed's demo: random test pairs with truth, verdict and probability.
pub fn random_pairs(
    model: &dyn PairModel,
    ds: &Dataset,
    n: usize,
    seed: u64,
    json: bool,
) -> Result<()> {
    let all = train::test_pairs(&ds.test);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let picked: Vec<_> = all.choose_multiple(&mut rng, n).copied().collect();
    let (a, b, _) = data::pairs::gather(&ds.test, &picked);
    let scores = model.score_pairs(&a, &b)?;
    let mut rows = Vec::new();
    if !json {
        println!(
            "{:>4}  {:>6} {:>6}  {:<10} {:<10} {:>11} {:>8}  ok",
            "#", "left", "right", "truth", "verdict", "P(similar)", "distance"
        );
    }
    for (i, (p, s)) in picked.iter().zip(&scores).enumerate() {
        let la = &ds.test.classes[ds.test.labels[p.a as usize] as usize];
        let lb = &ds.test.classes[ds.test.labels[p.b as usize] as usize];
        let ok = s.similar == p.same;
        if json {
            rows.push(serde_json::json!({"left": la, "right": lb, "truth": verdict(p.same), "verdict": verdict(s.similar), "probability": s.probability, "distance": s.distance, "correct": ok}));
        } else {
            println!(
                "{:>4}  {:>6} {:>6}  {:<10} {:<10} {:>11.4} {:>8.4}  {}",
                i + 1,
                la,
                lb,
                verdict(p.same),
                verdict(s.similar),
                s.probability,
                s.distance,
                if ok { "yes" } else { "NO" }
            );
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// The model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Images to embed.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run_embed(args: EmbedArgs) -> Result<()> {
    let model = load_any(&args.model, &Device::Cpu)?;
    let (height, width) = model.input_size();
    let dim = model.embedding_dim().context(
        "this model scores pairs only (an imported two-input graph); it has no embeddings",
    )?;
    let mut px = Vec::new();
    for p in &args.images {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        px.extend(data::decode_image(
            &bytes,
            height,
            width,
            &p.display().to_string(),
        )?);
    }
    let e = model.embed(&px)?;
    let rows: Vec<_> = args
        .images
        .iter()
        .zip(e.chunks_exact(dim))
        .map(|(p, v)| serde_json::json!({"image": p.display().to_string(), "embedding": v}))
        .collect();
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}

/// `twinseal model ...`
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Import a Siamese model exported to ONNX (from Keras, PyTorch, ...)
    /// unchanged: the graph and a sidecar config become one twinseal model
    /// file that seals, attests and serves like a native one. The graph is
    /// checked now (ops tract can run, inputs against the config, memory,
    /// one trial run), not at the first request.
    Import {
        /// The ONNX graph.
        #[arg(long, value_name = "FILE")]
        onnx: PathBuf,
        /// The sidecar config (TOML): kind (pair|tower), layout (nhwc|nchw),
        /// height, width, scale, offset, output, threshold, probability_slope.
        #[arg(long, value_name = "CONFIG.toml")]
        config: PathBuf,
        /// The model file to write (never overwritten).
        #[arg(short, long, value_name = "MODEL")]
        output: PathBuf,
    },
    /// Show a model file: format, digest, inputs, outputs, ops, threshold,
    /// provenance.
    Inspect {
        /// The model file.
        model: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `twinseal model ...`.
pub fn run_model(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Import {
            onnx,
            config,
            output,
        } => {
            let graph =
                std::fs::read(&onnx).with_context(|| format!("reading {}", onnx.display()))?;
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let cfg = twinseal_siamese::onnx::OnnxConfig::from_toml(&text)
                .with_context(|| format!("{}", config.display()))?;
            let (bytes, model) = twinseal_siamese::serving::import_onnx(&graph, &cfg)
                .with_context(|| format!("importing {}", onnx.display()))?;
            write_new(&output, &bytes)?;
            let s = model.summary();
            eprintln!(
                "imported {} ({} ops, {} KiB of weights) as {} (sha256 {})",
                onnx.display(),
                s.ops.iter().map(|(_, n)| n).sum::<usize>(),
                s.weight_bytes >> 10,
                output.display(),
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
            );
            Ok(())
        }
        ModelCommand::Inspect { model, json } => {
            let bytes =
                std::fs::read(&model).with_context(|| format!("reading {}", model.display()))?;
            let info = twinseal_siamese::serving::inspect(&bytes)
                .with_context(|| format!("loading {}", model.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(());
            }
            println!("{}: {} ({})", model.display(), info.format, info.backend);
            println!("  sha256      {}", info.sha256);
            println!(
                "  input       {}x{} grey{}",
                info.input.0,
                info.input.1,
                match info.embedding_dim {
                    Some(d) => format!(", embeddings of {d}"),
                    None => ", pair scores only".into(),
                }
            );
            println!(
                "  threshold   {} (similar when the score is at or below)",
                info.threshold
            );
            println!("  config      {}", info.config);
            if let Some(g) = &info.graph {
                for (name, fact) in &g.inputs {
                    println!("  input       {name}: {fact}");
                }
                for (name, fact) in &g.outputs {
                    println!("  output      {name}: {fact}");
                }
                let ops: Vec<String> = g.ops.iter().map(|(op, n)| format!("{op} x{n}")).collect();
                println!("  ops         {}", ops.join(", "));
                println!(
                    "  memory      {} KiB of weights; {} MiB for a batch of {} pairs",
                    g.weight_bytes >> 10,
                    g.batch_bytes >> 20,
                    twinseal_siamese::onnx::MAX_BATCH
                );
            }
            if let Some(p) = &info.provenance {
                let mut shown = p.clone();
                let attested = shown.as_object_mut().and_then(|o| o.remove("attested"));
                println!("  provenance  {shown}");
                if let Some(a) = attested {
                    let f = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
                    println!(
                        "  trained by  attested app {} ({}), workflow {} run {}",
                        f("app"),
                        f("tee"),
                        f("workflow"),
                        a.get("run").and_then(|v| v.as_u64()).unwrap_or(0)
                    );
                    println!("  trainer     measurement {}", f("measurement"));
                    println!("  trainer     evidence sha256 {}", f("evidence_sha256"));
                    println!(
                        "  dataset     {} (sealed sha256 {}, index sha256 {})",
                        f("dataset_location"),
                        f("sealed_dataset_sha256"),
                        f("dataset_index_sha256")
                    );
                    println!("  (the trainer's certificate is in --json)");
                }
            }
            Ok(())
        }
    }
}
