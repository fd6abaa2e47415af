//! Imported ONNX Siamese models, run with `tract-onnx` (pure Rust: no C
//! runtime to trust inside the TEE).
//!
//! Two shapes of export are supported, described by a small sidecar
//! configuration ([`OnnxConfig`], TOML) that the user writes:
//!
//! - `kind = "pair"`: two image inputs, one score per pair (the Keras
//!   example: two images -> sigmoid). `output` says what the score means:
//!   `dissimilarity_probability` (P(different), the Keras 3 example's
//!   convention), `similarity_probability` (P(same)) or `distance`.
//! - `kind = "tower"`: one image input, one embedding per image; twinseal
//!   computes the Euclidean distance and applies `threshold`.
//!
//! Inputs are grey images `height x width`, in `layout` `nhwc` or `nchw`
//! with one channel; a pixel `p` in 0..1 is fed as `p * scale + offset`
//! (`scale = 255` for a model that takes raw 0..255 values).
//!
//! Everything is checked when the model is loaded ([`OnnxModel::from_bytes`]),
//! not at the first request: the graph parses from bytes (no file access:
//! external data is refused), every op is one tract can run (the unknown
//! ones are named), the declared inputs and outputs agree with the
//! configuration, and the memory the graph needs for one batch of
//! [`MAX_BATCH`] pairs stays under [`MAX_GRAPH_BYTES`].

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::{DimLike, Factoid};

use crate::error::{Error, Result};
use crate::model::PairScore;

/// Largest ONNX graph accepted, bytes.
pub const MAX_ONNX_BYTES: usize = 256 << 20;
/// Largest batch (pairs) one call runs; larger calls are split.
pub const MAX_BATCH: usize = 1024;
/// Most memory (weights plus every intermediate tensor of one batch of
/// [`MAX_BATCH`] pairs) an imported graph may need.
pub const MAX_GRAPH_BYTES: u64 = 2 << 30;
/// Batches at least this large are split into parts of [`PART`] pairs,
/// run in parallel on every core.
pub const PARALLEL_BATCH: usize = 16;
/// Pairs per part of a split batch. Small parts keep each run's tensors in
/// cache: on the Keras export, batch 1024 ran at 11.7k pairs/s as one run,
/// 22.7k as two parts of 512 on 2 cores, 27-28k with parts of 64, 28-31k
/// with 32, and 31-32k with 8 (`twinseal bench onnx`, 2-core machine).
/// Parts of 16 were as fast but fell to about 18k in some processes (tract's
/// im2col then took 2.5 times as long); parts of 8 did not in 7 runs.
pub const PART: usize = 8;
/// Largest input image side.
pub const MAX_SIDE: usize = 1024;

/// What the model's inputs and output are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnnxKind {
    /// Two images in, one score per pair out.
    Pair,
    /// One image in, one embedding per image out.
    Tower,
}

/// The input tensor layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `[N, H, W, 1]` (Keras, TensorFlow).
    #[default]
    Nhwc,
    /// `[N, 1, H, W]` (PyTorch).
    Nchw,
}

/// What a pair model's score means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// A probability that the two images differ (Keras 3 example).
    DissimilarityProbability,
    /// A probability that the two images show the same identity.
    SimilarityProbability,
    /// A distance: lower is more alike.
    Distance,
}

/// The sidecar configuration of an imported model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxConfig {
    /// `pair` or `tower`.
    pub kind: OnnxKind,
    /// Input layout (default `nhwc`).
    #[serde(default)]
    pub layout: Layout,
    /// Input height, pixels.
    pub height: usize,
    /// Input width, pixels.
    pub width: usize,
    /// Input value = pixel (0..1) * scale + offset.
    #[serde(default = "one")]
    pub scale: f32,
    /// See `scale`.
    #[serde(default)]
    pub offset: f32,
    /// What a pair model's output means (required for `pair`, not allowed
    /// for `tower`).
    #[serde(default)]
    pub output: Option<Output>,
    /// The decision threshold: on the probability output (default 0.5), or
    /// on the distance (required for `distance` and `tower`).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// For distances: P(similar) = 1 / (1 + exp(slope * (d - threshold))),
    /// an uncalibrated mapping (default 10).
    #[serde(default)]
    pub probability_slope: Option<f32>,
}

fn one() -> f32 {
    1.0
}

impl OnnxConfig {
    /// Parses and checks the TOML sidecar.
    pub fn from_toml(text: &str) -> Result<OnnxConfig> {
        let c: OnnxConfig = toml_parse(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values and combinations.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(1..=MAX_SIDE).contains(&self.height) || !(1..=MAX_SIDE).contains(&self.width) {
            return bad(format!("height and width must be 1 to {MAX_SIDE}"));
        }
        if !self.scale.is_finite() || !self.offset.is_finite() || self.scale == 0.0 {
            return bad("scale must be finite and non-zero, offset finite".into());
        }
        match (self.kind, self.output) {
            (OnnxKind::Pair, None) => {
                return bad("a pair model needs `output` (dissimilarity_probability, similarity_probability or distance)".into());
            }
            (OnnxKind::Tower, Some(_)) => {
                return bad("a tower model outputs embeddings: `output` does not apply".into());
            }
            _ => {}
        }
        let needs_threshold =
            matches!(self.kind, OnnxKind::Tower) || matches!(self.output, Some(Output::Distance));
        match self.threshold {
            None if needs_threshold => {
                return bad("a distance needs a `threshold` (the distance at or below which a pair is similar)".into());
            }
            Some(t) if !t.is_finite() => return bad("threshold must be finite".into()),
            Some(t) if !needs_threshold && !(0.0..=1.0).contains(&t) => {
                return bad("a probability threshold lies in 0..1".into());
            }
            _ => {}
        }
        if let Some(s) = self.probability_slope
            && (!s.is_finite() || s <= 0.0)
        {
            return bad("probability_slope must be positive".into());
        }
        Ok(())
    }

    /// The threshold on twinseal's score (lower = more alike; similar when
    /// `score <= threshold`).
    pub fn score_threshold(&self) -> f32 {
        match (self.kind, self.output) {
            (OnnxKind::Pair, Some(Output::SimilarityProbability)) => {
                1.0 - self.threshold.unwrap_or(0.5)
            }
            _ => self.threshold.unwrap_or(0.5),
        }
    }

    fn input_shape(&self, n: usize) -> [usize; 4] {
        match self.layout {
            Layout::Nhwc => [n, self.height, self.width, 1],
            Layout::Nchw => [n, 1, self.height, self.width],
        }
    }
}

fn toml_parse(text: &str) -> Result<OnnxConfig> {
    toml::from_str(text).map_err(|e| Error::Config(format!("model config: {e}")))
}

type Plan = std::sync::Arc<TypedSimplePlan>;

/// An imported ONNX model, loaded and checked.
pub struct OnnxModel {
    config: OnnxConfig,
    /// The parsed graph, from which a plan per batch size is built.
    graph: InferenceModel,
    inputs: usize,
    /// Plans by batch size (powers of two up to [`MAX_BATCH`]).
    plans: std::sync::Mutex<std::collections::HashMap<usize, Plan>>,
    /// Output width: 1 for pair models, the embedding size for towers.
    output_dim: usize,
    summary: GraphSummary,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("config", &self.config)
            .field("output_dim", &self.output_dim)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// What `twinseal model inspect` shows of a graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphSummary {
    /// Declared inputs: name and shape as the file declares them.
    pub inputs: Vec<(String, String)>,
    /// Declared outputs.
    pub outputs: Vec<(String, String)>,
    /// Op types and how often each appears, sorted by name.
    pub ops: Vec<(String, usize)>,
    /// Bytes of constants (weights) in the graph.
    pub weight_bytes: u64,
    /// Bytes of every tensor of one batch of [`MAX_BATCH`] pairs, weights included.
    pub batch_bytes: u64,
}

fn tract_err(what: &str) -> impl Fn(TractError) -> Error + '_ {
    move |e| Error::Format(format!("{what}: {e:#}"))
}

impl OnnxModel {
    /// Loads `onnx` (the graph's bytes, from memory) with `config`, and
    /// checks it (module documentation).
    pub fn from_bytes(onnx: &[u8], config: OnnxConfig) -> Result<OnnxModel> {
        // tract can panic on some malformed graphs while it analyses them
        // (found by the fuzz target `siamese_onnx`: an out-of-range Gather
        // index folded at load); an untrusted file must give an error.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::from_bytes_unguarded(onnx, config)
        }))
        .unwrap_or_else(|_| {
            Err(Error::Format(
                "the ONNX graph is malformed: tract failed while analysing it".into(),
            ))
        })
    }

    fn from_bytes_unguarded(onnx: &[u8], config: OnnxConfig) -> Result<OnnxModel> {
        config.validate()?;
        if onnx.len() > MAX_ONNX_BYTES {
            return Err(Error::Format(format!(
                "the ONNX graph is larger than {MAX_ONNX_BYTES} bytes"
            )));
        }
        let mut reader = onnx;
        let model = tract_onnx::onnx()
            .model_for_read(&mut reader)
            .map_err(tract_err("not a readable ONNX graph"))?;
        // Unknown ops parse as placeholders; refuse them by name.
        let mut unknown: Vec<String> = model
            .nodes()
            .iter()
            .filter_map(|n| {
                n.op_as::<tract_onnx::tract_hir::ops::unimpl::UnimplementedOp>()
                    .map(|_| n.op().name().to_string())
            })
            .collect();
        unknown.sort();
        unknown.dedup();
        if !unknown.is_empty() {
            return Err(Error::Format(format!(
                "the graph uses ops tract cannot run: {}",
                unknown.join(", ")
            )));
        }
        let wanted_inputs = match config.kind {
            OnnxKind::Pair => 2,
            OnnxKind::Tower => 1,
        };
        let inputs = model.input_outlets().map_err(tract_err("inputs"))?.to_vec();
        let outputs = model
            .output_outlets()
            .map_err(tract_err("outputs"))?
            .to_vec();
        let describe = |outlets: &[OutletId]| -> Vec<(String, String)> {
            outlets
                .iter()
                .map(|o| {
                    let node = &model.nodes()[o.node];
                    let fact = model
                        .outlet_fact(*o)
                        .map(|f| format!("{f:?}"))
                        .unwrap_or_default();
                    (node.name.clone(), fact)
                })
                .collect()
        };
        let (declared_in, declared_out) = (describe(&inputs), describe(&outputs));
        if inputs.len() != wanted_inputs {
            return Err(Error::Config(format!(
                "a {:?} model takes {wanted_inputs} input(s); the graph declares {}: {}",
                config.kind,
                inputs.len(),
                names(&declared_in)
            )));
        }
        if outputs.len() != 1 {
            return Err(Error::Config(format!(
                "the graph declares {} outputs ({}); twinseal uses one",
                outputs.len(),
                names(&declared_out)
            )));
        }
        // The configured input shape must agree with what the file declares
        // (where it declares anything): checked with batch 1.
        for (i, outlet) in inputs.iter().enumerate() {
            let declared = model
                .outlet_fact(*outlet)
                .map_err(tract_err("input fact"))?
                .clone();
            let want = config.input_shape(1);
            if let Some(shape) = declared.shape.concretize() {
                let dims: Vec<Option<usize>> = shape.iter().map(|d| d.to_usize().ok()).collect();
                let agrees = dims.len() == 4
                    && dims
                        .iter()
                        .zip(want)
                        .skip(1)
                        .all(|(d, w)| d.is_none_or(|d| d == w));
                if !agrees {
                    return Err(Error::Config(format!(
                        "input {} is declared {:?}; the config says {:?} {}x{} grey, i.e. [N, {}, {}, {}]",
                        declared_in[i].0,
                        dims,
                        config.layout,
                        config.height,
                        config.width,
                        want[1],
                        want[2],
                        want[3]
                    )));
                }
            }
        }
        // Plans are built per batch size (rounded up to a power of two):
        // exports such as Keras's compute reshapes from the input's shape,
        // which tract folds only when the batch is concrete.
        let largest = typed_for(&model, &config, MAX_BATCH, inputs.len())?;
        let (ops, weight_bytes, batch_bytes) = census(&largest)?;
        if batch_bytes > MAX_GRAPH_BYTES {
            return Err(Error::Format(format!(
                "the graph needs about {} MiB for a batch of {MAX_BATCH} pairs; at most {} MiB are allowed",
                batch_bytes >> 20,
                MAX_GRAPH_BYTES >> 20
            )));
        }
        let out_fact = largest
            .output_fact(0)
            .map_err(tract_err("output fact"))?
            .clone();
        let out_dims: Vec<Option<usize>> =
            out_fact.shape.iter().map(|d| d.to_usize().ok()).collect();
        let output_dim = match out_dims.as_slice() {
            [_, Some(d)] => *d,
            [_] => 1,
            _ => {
                return Err(Error::Config(format!(
                    "the output is {out_fact:?}; twinseal needs [N] or [N, D]"
                )));
            }
        };
        if config.kind == OnnxKind::Pair && output_dim != 1 {
            return Err(Error::Config(format!(
                "a pair model outputs one score per pair; this graph outputs {output_dim} values"
            )));
        }
        let plans = std::sync::Mutex::new(std::collections::HashMap::new());
        plans
            .lock()
            .expect("fresh lock")
            .insert(MAX_BATCH, optimize(largest)?);
        let summary = GraphSummary {
            inputs: declared_in,
            outputs: declared_out,
            ops,
            weight_bytes,
            batch_bytes,
        };
        let m = OnnxModel {
            config,
            graph: model,
            inputs: inputs.len(),
            plans,
            output_dim,
            summary,
        };
        // One run on blank images: a graph that loads but cannot run with
        // this configuration fails here, not at the first request.
        let h = m.config.height * m.config.width;
        let blank = vec![0.0f32; h];
        match m.config.kind {
            OnnxKind::Pair => m.score_pairs(&blank, &blank).map(|_| ())?,
            OnnxKind::Tower => m.embed(&blank).map(|_| ())?,
        }
        Ok(m)
    }

    /// The configuration.
    pub fn config(&self) -> &OnnxConfig {
        &self.config
    }

    /// What the graph declares and needs.
    pub fn summary(&self) -> &GraphSummary {
        &self.summary
    }

    /// Embedding size of a tower model (`None` for pair models).
    pub fn embedding_dim(&self) -> Option<usize> {
        (self.config.kind == OnnxKind::Tower).then_some(self.output_dim)
    }

    /// The input tensor of `n` images: `pixels` scaled, then blank images
    /// up to `n` (padding).
    fn input(&self, pixels: &[f32], n: usize) -> Result<Tensor> {
        let shape = self.config.input_shape(n);
        let (s, o) = (self.config.scale, self.config.offset);
        let mut v = Vec::with_capacity(n * self.config.height * self.config.width);
        v.extend(pixels.iter().map(|&p| p * s + o));
        v.resize(n * self.config.height * self.config.width, o);
        tract_ndarray::Array4::from_shape_vec(shape, v)
            .map(Tensor::from)
            .map_err(|e| Error::Input(e.to_string()))
    }

    fn images(&self, pixels: &[f32]) -> Result<usize> {
        let per = self.config.height * self.config.width;
        if pixels.is_empty() || !pixels.len().is_multiple_of(per) {
            return Err(Error::Input(format!(
                "{} values is not a whole number of {}x{} images",
                pixels.len(),
                self.config.height,
                self.config.width
            )));
        }
        Ok(pixels.len() / per)
    }

    /// The plan for batches of `n` (a power of two), built on first use.
    fn plan(&self, n: usize) -> Result<Plan> {
        if let Some(p) = self
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&n)
        {
            return Ok(p.clone());
        }
        let plan = optimize(typed_for(&self.graph, &self.config, n, self.inputs)?)?;
        self.plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(n, plan.clone());
        Ok(plan)
    }

    /// Runs `m` images per input. Batches of at least [`PARALLEL_BATCH`]
    /// are split into parts of [`PART`], run in parallel on rayon's threads
    /// (tract runs a plan on the calling thread; its own multithread
    /// executor made batch 1024 slower here, 8.6k against 11.7k pairs/s).
    fn run_batch(&self, sides: &[&[f32]], m: usize) -> Result<Vec<f32>> {
        let cores = rayon::current_num_threads().max(1);
        if m < PARALLEL_BATCH || cores == 1 {
            return self.run_padded(sides, m);
        }
        let per = self.config.height * self.config.width;
        let part = PART;
        use rayon::prelude::*;
        let outs: Vec<Result<Vec<f32>>> = (0..m.div_ceil(part))
            .into_par_iter()
            .map(|k| {
                let (start, end) = (k * part, ((k + 1) * part).min(m));
                let slices: Vec<&[f32]> =
                    sides.iter().map(|s| &s[start * per..end * per]).collect();
                self.run_padded(&slices, end - start)
            })
            .collect();
        let mut all = Vec::new();
        for o in outs {
            all.extend(o?);
        }
        Ok(all)
    }

    /// Runs `m` images per input, padded with blank images up to the next
    /// power of two; returns the values of the first `m` rows.
    fn run_padded(&self, sides: &[&[f32]], m: usize) -> Result<Vec<f32>> {
        let n = m.next_power_of_two().min(MAX_BATCH);
        let mut values = TVec::new();
        for side in sides {
            values.push(self.input(side, n)?.into_tvalue());
        }
        let mut out = self.run(&self.plan(n)?, values)?;
        let width = out.len() / n;
        out.truncate(m * width);
        Ok(out)
    }

    fn run(&self, plan: &Plan, inputs: TVec<TValue>) -> Result<Vec<f32>> {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plan.run(inputs)))
            .map_err(|_| Error::Input("the graph failed: tract panicked while running it".into()))?
            .map_err(|e| Error::Input(format!("the graph failed: {e:#}")))?;
        let view = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| Error::Input(format!("the graph's output is not f32: {e:#}")))?;
        Ok(view.iter().copied().collect())
    }

    /// Scores pairs of a pair model (`a` and `b`: pixels in 0..1, image after
    /// image).
    pub fn score_pairs(&self, a: &[f32], b: &[f32]) -> Result<Vec<PairScore>> {
        if a.len() != b.len() {
            return Err(Error::Input(
                "the two sides of the pairs differ in size".into(),
            ));
        }
        let n = self.images(a)?;
        if self.config.kind == OnnxKind::Tower {
            let (ea, eb) = (self.embed(a)?, self.embed(b)?);
            return Ok(self.score_embeddings(&ea, &eb));
        }
        let per = self.config.height * self.config.width;
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(MAX_BATCH) {
            let m = (n - start).min(MAX_BATCH);
            let (sa, sb) = (
                &a[start * per..(start + m) * per],
                &b[start * per..(start + m) * per],
            );
            let raw = self.run_batch(&[sa, sb], m)?;
            if raw.len() != m {
                return Err(Error::Input(format!(
                    "the graph gave {} scores for {m} pairs",
                    raw.len()
                )));
            }
            out.extend(raw.into_iter().map(|v| self.pair_score(v)));
        }
        Ok(out)
    }

    fn pair_score(&self, raw: f32) -> PairScore {
        let t = self.config.score_threshold();
        let (score, probability) = match self.config.output {
            Some(Output::DissimilarityProbability) => (raw, 1.0 - raw),
            Some(Output::SimilarityProbability) => (1.0 - raw, raw),
            _ => (raw, self.logistic(raw)),
        };
        PairScore {
            distance: score,
            score,
            probability,
            similar: score <= t,
        }
    }

    fn logistic(&self, d: f32) -> f32 {
        let slope = self.config.probability_slope.unwrap_or(10.0);
        1.0 / (1.0 + (slope * (d - self.config.score_threshold())).exp())
    }

    /// Embeddings of a tower model (pixels in 0..1, image after image).
    pub fn embed(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        if self.config.kind != OnnxKind::Tower {
            return Err(Error::Input(
                "this imported model scores pairs; it has no embeddings".into(),
            ));
        }
        let n = self.images(pixels)?;
        let per = self.config.height * self.config.width;
        let mut out = Vec::with_capacity(n * self.output_dim);
        for start in (0..n).step_by(MAX_BATCH) {
            let m = (n - start).min(MAX_BATCH);
            let raw = self.run_batch(&[&pixels[start * per..(start + m) * per]], m)?;
            if raw.len() != m * self.output_dim {
                return Err(Error::Input(
                    "the graph gave the wrong number of values".into(),
                ));
            }
            out.extend(raw);
        }
        Ok(out)
    }

    /// Scores pairs of embeddings (tower models).
    pub fn score_embeddings(&self, e1: &[f32], e2: &[f32]) -> Vec<PairScore> {
        let t = self.config.score_threshold();
        e1.chunks_exact(self.output_dim)
            .zip(e2.chunks_exact(self.output_dim))
            .map(|(x, y)| {
                let d = x
                    .iter()
                    .zip(y)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
                PairScore {
                    distance: d,
                    score: d,
                    probability: self.logistic(d),
                    similar: d <= t,
                }
            })
            .collect()
    }
}

/// The graph typed for batches of exactly `n` images per input.
fn typed_for(
    graph: &InferenceModel,
    config: &OnnxConfig,
    n: usize,
    inputs: usize,
) -> Result<TypedModel> {
    let mut model = graph.clone();
    for i in 0..inputs {
        model = model
            .with_input_fact(i, f32::fact(config.input_shape(n)).into())
            .map_err(tract_err("setting the input shape"))?;
    }
    model.into_typed().map_err(|e| {
        Error::Config(format!(
            "the graph does not run on the configured input shape: {e:#}"
        ))
    })
}

fn optimize(typed: TypedModel) -> Result<Plan> {
    typed
        .into_optimized()
        .map_err(tract_err("optimizing the graph"))?
        .into_runnable()
        .map_err(tract_err("planning the graph"))
}

fn names(v: &[(String, String)]) -> String {
    v.iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Op counts, bytes of weights, bytes of every tensor.
type Census = (Vec<(String, usize)>, u64, u64);

/// Op counts, bytes of constants, and bytes of every tensor (weights
/// included) of a graph typed for one batch of [`MAX_BATCH`] pairs.
fn census(model: &TypedModel) -> Result<Census> {
    let mut ops = std::collections::BTreeMap::<String, usize>::new();
    let mut weights = 0u64;
    let mut tensors = 0u64;
    for node in model.nodes() {
        *ops.entry(node.op().name().to_string()).or_default() += 1;
        for o in &node.outputs {
            let f = &o.fact;
            let size = f.datum_type.size_of() as u64;
            let volume = f
                .shape
                .iter()
                .map(|d| d.to_i64().unwrap_or(i64::MAX).max(0) as u64)
                .try_fold(1u64, |acc, d| acc.checked_mul(d))
                .unwrap_or(u64::MAX);
            let bytes = volume.saturating_mul(size);
            if f.konst.is_some() {
                weights = weights.saturating_add(bytes);
            }
            tensors = tensors.saturating_add(bytes);
        }
    }
    Ok((ops.into_iter().collect(), weights, tensors))
}
