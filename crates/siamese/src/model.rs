//! The Siamese network: a [`Tower`] shared by both inputs, a head, and the
//! model file (one safetensors file whose metadata holds the configuration and
//! the provenance).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::config::{HeadKind, ModelConfig, TowerConfig};
use crate::kernels::{self, ConvGeom, simd};
use crate::ops::ConvTanhPool;
use crate::{Error, Result};

/// Value of the `format` metadata key of a twinseal model file.
pub const MODEL_FORMAT: &str = "twinseal-siamese/1";

/// Keras's `epsilon()`, the floor under the squared distance before the root.
const DIST_EPS: f64 = 1e-7;
/// Batch-norm constants of the seed's head (Keras defaults).
const BN_MOMENTUM: f32 = 0.99;
const BN_EPS: f64 = 1e-3;

/// Where a model came from: written into the model file at training time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Provenance {
    /// Dataset name as given on the command line (e.g. `mnist`).
    pub dataset: String,
    /// SHA-256 of the dataset's source bytes (tarball, IDX files, or the
    /// sorted list of image files and their digests), hex.
    pub dataset_sha256: String,
    /// How train and test were split.
    pub split: String,
    /// Training seed.
    pub seed: u64,
    /// Epochs trained.
    pub epochs: usize,
    /// Batch size (pairs, or images for the triplet loss).
    pub batch_size: usize,
    /// Loss, with its margin.
    pub loss: String,
    /// Optimiser and learning rate.
    pub optimizer: String,
    /// Metrics on the test split after training, by name.
    pub metrics: BTreeMap<String, f64>,
    /// Software that trained the model.
    pub trainer: String,
    /// Free-form extra facts (restarts after a stall, early stop, ...).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Set when an attested trainer made the model in a training workflow:
    /// which one, from which sealed dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested: Option<AttestedTraining>,
}

/// The attested training that produced a model (see [`Provenance`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AttestedTraining {
    /// The coordinator workflow.
    pub workflow: String,
    /// The run's id.
    pub run: u64,
    /// The trainer app.
    pub app: String,
    /// Its TEE kind (`simulated` means no hardware guarantee).
    pub tee: String,
    /// Its primary measurement, hex.
    pub measurement: String,
    /// SHA-256 of its attestation evidence, hex.
    pub evidence_sha256: String,
    /// Its certificate, PEM.
    pub certificate: String,
    /// The sealed dataset's object path.
    pub dataset_location: String,
    /// SHA-256 of the sealed dataset archive, hex.
    pub sealed_dataset_sha256: String,
    /// SHA-256 of the dataset's public index, hex.
    pub dataset_index_sha256: String,
}

/// The score of one pair of images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairScore {
    /// Euclidean distance between the two embeddings.
    pub distance: f32,
    /// The head's decision score (distance, or the sigmoid's dissimilarity):
    /// lower means more alike.
    pub score: f32,
    /// Calibrated probability that both images show the same identity.
    pub probability: f32,
    /// `score <= threshold`.
    pub similar: bool,
}

/// One convolution block's parameters and geometry.
struct ConvBlock {
    weight: Tensor,
    bias: Tensor,
    geom: ConvGeom,
    pool: usize,
}

/// The tower shared by both inputs of the Siamese network.
pub struct Tower {
    convs: Vec<ConvBlock>,
    dense: Vec<candle_nn::Linear>,
    flat: usize,
}

impl Tower {
    /// Builds the tower from `vb` with the parameter names
    /// `tower.conv{i}.{weight,bias}` and `tower.dense{j}.{weight,bias}` (the
    /// last dense layer is the embedding).
    pub fn new(cfg: &TowerConfig, vb: VarBuilder) -> Result<Self> {
        let (shapes, flat) = cfg.shapes()?;
        let mut convs = Vec::new();
        let (mut cin, mut h, mut w) = (1, cfg.height, cfg.width);
        for (i, (l, &(c, ho, wo))) in cfg.convs.iter().zip(&shapes).enumerate() {
            let weight = vb.get(
                (l.filters, cin, l.kernel, l.kernel),
                &format!("tower.conv{i}.weight"),
            )?;
            let bias = vb.get(l.filters, &format!("tower.conv{i}.bias"))?;
            let geom = ConvGeom {
                cin,
                cout: l.filters,
                k: l.kernel,
                h,
                w,
            };
            convs.push(ConvBlock {
                weight,
                bias,
                geom,
                pool: l.pool,
            });
            (cin, h, w) = (c, ho, wo);
        }
        let mut dense = Vec::new();
        let mut fan_in = flat;
        for (j, &out) in cfg
            .hidden
            .iter()
            .chain(std::iter::once(&cfg.embedding_dim))
            .enumerate()
        {
            let weight = vb.get((out, fan_in), &format!("tower.dense{j}.weight"))?;
            let bias = vb.get(out, &format!("tower.dense{j}.bias"))?;
            dense.push(candle_nn::Linear::new(weight, Some(bias)));
            fan_in = out;
        }
        Ok(Self { convs, dense, flat })
    }

    /// Embeds standardised images `[n, 1, h, w]` to `[n, embedding_dim]`.
    ///
    /// On the CPU the convolution blocks run as twinseal's fused custom ops;
    /// elsewhere (CUDA) as candle's stock conv2d, tanh and avg_pool2d. Both
    /// compute the same function (checked in the tests).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, x.device().is_cpu())
    }

    /// The same function through candle's stock ops only (conv2d, tanh,
    /// avg_pool2d), on any device: the reference the fused kernels are tested
    /// against, and the path taken on CUDA.
    pub fn forward_stock(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, false)
    }

    fn forward_with(&self, x: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for block in &self.convs {
            x = if fast {
                let op = ConvTanhPool {
                    geom: block.geom,
                    pool: block.pool,
                    saved: Default::default(),
                };
                x.contiguous()?.apply_op3_arc(
                    &block.weight,
                    &block.bias,
                    std::sync::Arc::new(Box::new(op)),
                )?
            } else {
                let y = x.conv2d(&block.weight, 0, 1, 1, 1)?;
                let y = y
                    .broadcast_add(&block.bias.reshape((1, block.geom.cout, 1, 1))?)?
                    .tanh()?;
                if block.pool > 1 {
                    y.avg_pool2d(block.pool)?
                } else {
                    y
                }
            };
        }
        let mut x = x.reshape((x.dim(0)?, self.flat))?;
        for layer in &self.dense {
            x = candle_core::Module::forward(layer, &x)?;
            x = if fast { fast_tanh(&x)? } else { x.tanh()? };
        }
        Ok(x)
    }
}

/// tanh through the vectorised approximation (candle's CPU tanh is a scalar loop).
fn fast_tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    struct Tanh;
    impl candle_core::CustomOp1 for Tanh {
        fn name(&self) -> &'static str {
            "twinseal-tanh"
        }
        fn cpu_fwd(
            &self,
            s: &candle_core::CpuStorage,
            l: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            let data = s.as_slice::<f32>()?;
            let mut v = match l.contiguous_offsets() {
                Some((a, b)) => data[a..b].to_vec(),
                None => candle_core::bail!("twinseal-tanh needs a contiguous input"),
            };
            simd::tanh_in_place(&mut v);
            Ok((candle_core::CpuStorage::F32(v), l.shape().clone()))
        }
        fn bwd(
            &self,
            _arg: &Tensor,
            res: &Tensor,
            grad_res: &Tensor,
        ) -> candle_core::Result<Option<Tensor>> {
            let one_minus = (1.0 - res.sqr()?)?;
            Ok(Some(grad_res.mul(&one_minus)?))
        }
    }
    x.contiguous()?.apply_op1(Tanh)
}

/// The head on top of the distance.
enum Head {
    Distance,
    Sigmoid {
        gamma: Tensor,
        beta: Tensor,
        weight: Tensor,
        bias: Tensor,
        /// Batch-norm moving mean and variance (not trained by gradient).
        running: Mutex<(f32, f32)>,
    },
}

/// Folds one batch's distance statistics into the batch norm's moving
/// averages (Keras's momentum).
fn record_batch_stats(running: &Mutex<(f32, f32)>, mean: f32, var: f32) {
    let mut r = running.lock().expect("bn lock");
    r.0 = BN_MOMENTUM * r.0 + (1.0 - BN_MOMENTUM) * mean;
    r.1 = BN_MOMENTUM * r.1 + (1.0 - BN_MOMENTUM) * var;
}

/// Plain host copies of the weights, for the allocation-light CPU inference path.
struct HostWeights {
    convs: Vec<(ConvGeom, usize, Vec<f32>, Vec<f32>)>,
    dense: Vec<(usize, usize, Vec<f32>, Vec<f32>)>,
    head: Option<[f32; 6]>,
}

/// A Siamese network: the same tower applied to both images of a pair, then a head.
pub struct Siamese {
    config: ModelConfig,
    provenance: Option<Provenance>,
    tower: Tower,
    head: Head,
    device: Device,
    vars: VarMap,
    host: OnceLock<HostWeights>,
}

impl std::fmt::Debug for Siamese {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Siamese")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Largest number of parameters a model may have (a bound on what a hostile
/// model file's config can make the loader allocate).
pub const MAX_PARAMS: usize = 50_000_000;

/// How a parameter starts.
enum Init {
    Glorot { fan_in: usize, fan_out: usize },
    Const(f32),
}

/// One trained parameter: its stable name, shape and initialisation.
struct ParamSpec {
    name: String,
    shape: Vec<usize>,
    init: Init,
}

/// Every trained parameter a configuration implies, in creation order
/// (the order fixes which random numbers each one gets from the seed).
fn param_specs(config: &ModelConfig) -> Result<Vec<ParamSpec>> {
    let (shapes, flat) = config.tower.shapes()?;
    let mut out = Vec::new();
    let mut spec =
        |name: String, shape: Vec<usize>, init: Init| out.push(ParamSpec { name, shape, init });
    let mut cin = 1;
    for (i, (l, &(c, _, _))) in config.tower.convs.iter().zip(&shapes).enumerate() {
        let (fan_in, fan_out) = (cin * l.kernel * l.kernel, l.filters * l.kernel * l.kernel);
        spec(
            format!("tower.conv{i}.weight"),
            vec![l.filters, cin, l.kernel, l.kernel],
            Init::Glorot { fan_in, fan_out },
        );
        spec(
            format!("tower.conv{i}.bias"),
            vec![l.filters],
            Init::Const(0.0),
        );
        cin = c;
    }
    let mut fan_in = flat;
    for (j, &o) in config
        .tower
        .hidden
        .iter()
        .chain(std::iter::once(&config.tower.embedding_dim))
        .enumerate()
    {
        spec(
            format!("tower.dense{j}.weight"),
            vec![o, fan_in],
            Init::Glorot { fan_in, fan_out: o },
        );
        spec(format!("tower.dense{j}.bias"), vec![o], Init::Const(0.0));
        fan_in = o;
    }
    if config.head == HeadKind::Sigmoid {
        spec("head.bn.gamma".into(), vec![1], Init::Const(1.0));
        spec("head.bn.beta".into(), vec![1], Init::Const(0.0));
        spec(
            "head.dense.weight".into(),
            vec![1, 1],
            Init::Glorot {
                fan_in: 1,
                fan_out: 1,
            },
        );
        spec("head.dense.bias".into(), vec![1], Init::Const(0.0));
    }
    let total = out.iter().try_fold(0usize, |acc, p| {
        p.shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| acc.checked_add(n))
    });
    match total {
        Some(t) if t <= MAX_PARAMS => Ok(out),
        _ => Err(Error::Config(format!(
            "the model would have more than {MAX_PARAMS} parameters"
        ))),
    }
}

/// Glorot-uniform initial values (Keras's default for kernels).
fn glorot(rng: &mut StdRng, n: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
    let dist = Uniform::new_inclusive(-limit, limit).expect("valid range");
    (0..n).map(|_| dist.sample(rng)).collect()
}

impl Siamese {
    /// A freshly initialised model: Glorot-uniform kernels and zero biases
    /// drawn from a `StdRng` seeded with `seed` (candle's CPU device has no
    /// seeded generator), so the same seed gives the same weights.
    pub fn new(config: ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let vars = VarMap::new();
        {
            let mut data = vars.data().lock().expect("fresh lock");
            for p in param_specs(&config)? {
                let n = p.shape.iter().product();
                let values = match p.init {
                    Init::Glorot { fan_in, fan_out } => glorot(&mut rng, n, fan_in, fan_out),
                    Init::Const(v) => vec![v; n],
                };
                let t = Tensor::from_vec(values, p.shape, device)?;
                data.insert(p.name, Var::from_tensor(&t)?);
            }
        }
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        Self::build(config, None, vb, vars, (0.0, 1.0), device)
    }

    fn build(
        config: ModelConfig,
        provenance: Option<Provenance>,
        vb: VarBuilder,
        vars: VarMap,
        running: (f32, f32),
        device: &Device,
    ) -> Result<Self> {
        let tower = Tower::new(&config.tower, vb.clone())?;
        let head = match config.head {
            HeadKind::Distance => Head::Distance,
            HeadKind::Sigmoid => Head::Sigmoid {
                gamma: vb.get(1, "head.bn.gamma")?,
                beta: vb.get(1, "head.bn.beta")?,
                weight: vb.get((1, 1), "head.dense.weight")?,
                bias: vb.get(1, "head.dense.bias")?,
                running: Mutex::new(running),
            },
        };
        Ok(Self {
            config,
            provenance,
            tower,
            head,
            device: device.clone(),
            vars,
            host: OnceLock::new(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Mutable configuration (threshold and calibration are set after training).
    pub fn config_mut(&mut self) -> &mut ModelConfig {
        &mut self.config
    }

    /// The provenance recorded in the model file, if any.
    pub fn provenance(&self) -> Option<&Provenance> {
        self.provenance.as_ref()
    }

    /// Sets the provenance written with the model.
    pub fn set_provenance(&mut self, p: Provenance) {
        self.provenance = Some(p);
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tower.
    pub fn tower(&self) -> &Tower {
        &self.tower
    }

    /// The parameters trained by gradient descent, in a stable order.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let data = self.vars.data().lock().expect("var map lock");
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Forgets the cached host copy of the weights (after an optimiser step).
    pub(crate) fn weights_changed(&mut self) {
        self.host = OnceLock::new();
    }

    /// Standardises raw pixels (0..1) as the configuration says.
    pub fn standardise(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = self.config.pixels;
        x.affine(1.0 / p.std as f64, -(p.mean / p.std) as f64)
    }

    /// Embeddings of raw images `[n, 1, h, w]` (pixels 0..1), through candle's graph.
    pub fn embed_tensor(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.tower.forward(&self.standardise(x)?)
    }

    /// Distances `[n]` between the rows of two embedding batches.
    pub fn distance(e1: &Tensor, e2: &Tensor) -> candle_core::Result<Tensor> {
        (e1 - e2)?.sqr()?.sum(1)?.maximum(DIST_EPS)?.sqrt()
    }

    /// The head's score `[n]` from distances `[n]`: the distance itself, or the
    /// seed head's sigmoid (batch statistics and a moving-average update when
    /// `train`).
    pub fn head_score(&self, d: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match &self.head {
            Head::Distance => Ok(d.clone()),
            Head::Sigmoid {
                gamma,
                beta,
                weight,
                bias,
                running,
            } => {
                let norm = if train {
                    let mean = d.mean_all()?;
                    let centred = d.broadcast_sub(&mean)?;
                    let var = centred.sqr()?.mean_all()?;
                    let (m, v) = (mean.to_scalar::<f32>()?, var.to_scalar::<f32>()?);
                    record_batch_stats(running, m, v);
                    centred.broadcast_div(&(var + BN_EPS)?.sqrt()?)?
                } else {
                    let (m, v) = *running.lock().expect("bn lock");
                    d.affine(
                        1.0 / (v as f64 + BN_EPS).sqrt(),
                        -(m as f64) / (v as f64 + BN_EPS).sqrt(),
                    )?
                };
                let z = norm.broadcast_mul(gamma)?.broadcast_add(beta)?;
                let z = z.broadcast_mul(&weight.reshape(1)?)?.broadcast_add(bias)?;
                candle_nn::ops::sigmoid(&z)
            }
        }
    }

    /// The contrastive loss over every pair of a batch of embeddings `[m, dim]`
    /// with identity `labels` (see [`crate::loss::contrastive_balanced`]),
    /// through the head, in training mode (batch statistics; the batch norm's
    /// moving averages are updated). Returns the loss and every pair's score
    /// and label, for progress reporting.
    ///
    /// On the CPU this is one fused op; elsewhere the same chain of candle ops
    /// the tests compare it with.
    pub fn all_pairs_loss(
        &self,
        e: &Tensor,
        labels: &[u32],
        margin: f32,
    ) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
        let (idx, same) = crate::loss::upper_pairs(labels);
        if !e.device().is_cpu() {
            let d = crate::loss::pairwise_distances(e)?
                .flatten_all()?
                .index_select(&Tensor::new(idx.as_slice(), e.device())?, 0)?;
            let s = self.head_score(&d, true)?;
            let l = crate::loss::contrastive_balanced(&s, &same, margin)?;
            return Ok((l, s.to_vec1()?, same));
        }
        let (params, sigmoid_head) = match &self.head {
            Head::Distance => (Tensor::zeros(4, DType::F32, e.device())?, false),
            Head::Sigmoid {
                gamma,
                beta,
                weight,
                bias,
                ..
            } => (
                Tensor::cat(&[gamma, beta, &weight.reshape(1)?, bias], 0)?,
                true,
            ),
        };
        let saved =
            std::sync::Arc::new(std::sync::Mutex::new(crate::ops::AllPairsSaved::default()));
        let op = crate::ops::AllPairsContrastive {
            same: same.iter().map(|&y| y > 0.5).collect(),
            margin,
            sigmoid_head,
            saved: saved.clone(),
        };
        let loss = e
            .contiguous()?
            .apply_op2_arc(&params, std::sync::Arc::new(Box::new(op)))?;
        let saved = saved.lock().expect("saved pairs");
        if let Head::Sigmoid { running, .. } = &self.head {
            record_batch_stats(running, saved.mean, saved.var);
        }
        Ok((loss, saved.s.clone(), same))
    }

    /// Distances and head scores of pairs of raw image batches, through candle's graph.
    pub fn forward_pairs(
        &self,
        a: &Tensor,
        b: &Tensor,
        train: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let both = self.standardise(&Tensor::cat(&[a, b], 0)?)?;
        self.forward_pairs_standardised(&both, train)
    }

    /// Like [`Siamese::forward_pairs`] for already standardised images, the
    /// first half of `both` paired with the second half.
    pub fn forward_pairs_standardised(
        &self,
        both: &Tensor,
        train: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let n = both.dim(0)? / 2;
        let e = self.tower.forward(both)?;
        let d = Self::distance(&e.narrow(0, 0, n)?, &e.narrow(0, n, n)?)?;
        let s = self.head_score(&d, train)?;
        Ok((d, s))
    }

    fn host(&self) -> Result<&HostWeights> {
        if let Some(h) = self.host.get() {
            return Ok(h);
        }
        let v = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let mut convs = Vec::new();
        for c in &self.tower.convs {
            convs.push((c.geom, c.pool, v(&c.weight)?, v(&c.bias)?));
        }
        let mut dense = Vec::new();
        for l in &self.tower.dense {
            let (o, i) = l.weight().dims2()?;
            dense.push((
                o,
                i,
                v(l.weight())?,
                v(l.bias().expect("dense layers have a bias"))?,
            ));
        }
        let head = match &self.head {
            Head::Distance => None,
            Head::Sigmoid {
                gamma,
                beta,
                weight,
                bias,
                running,
            } => {
                let s = |t: &Tensor| -> Result<f32> { Ok(t.flatten_all()?.to_vec1::<f32>()?[0]) };
                let (m, var) = *running.lock().expect("bn lock");
                Some([s(gamma)?, s(beta)?, s(weight)?, s(bias)?, m, var])
            }
        };
        let _ = self.host.set(HostWeights { convs, dense, head });
        Ok(self.host.get().expect("just set"))
    }

    /// Embeddings of `n` raw images (pixels 0..1, row-major `h x w` each),
    /// `n * embedding_dim` values.
    ///
    /// On the CPU this runs the kernels directly on host copies of the
    /// weights (no autograd graph, few allocations; single-threaded for small
    /// batches, where scheduling would cost more than it saves); elsewhere it
    /// goes through candle.
    pub fn embed(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        let t = &self.config.tower;
        let per = t.height * t.width;
        if !pixels.len().is_multiple_of(per) {
            return Err(Error::Input(format!(
                "{} pixels is not a whole number of {}x{} images",
                pixels.len(),
                t.height,
                t.width
            )));
        }
        let n = pixels.len() / per;
        if !self.device.is_cpu() {
            let x = Tensor::from_slice(pixels, (n, 1, t.height, t.width), &self.device)?;
            return Ok(self.embed_tensor(&x)?.flatten_all()?.to_vec1::<f32>()?);
        }
        let host = self.host()?;
        let p = self.config.pixels;
        let mut x: Vec<f32> = pixels.iter().map(|v| (v - p.mean) / p.std).collect();
        let serial = n <= 8;
        let mut cols = Vec::new();
        for (geom, pool, w, b) in &host.convs {
            x = if serial {
                let mut y = vec![0f32; n * geom.out_len()];
                kernels::conv_tanh_forward_serial(geom, &x, w, b, &mut y, &mut cols);
                if *pool > 1 {
                    let mut out = vec![0f32; y.len() / (pool * pool)];
                    simd::avg_pool(&y, n * geom.cout, geom.ho(), geom.wo(), *pool, &mut out);
                    out
                } else {
                    y
                }
            } else {
                kernels::conv_tanh_pool_infer(geom, *pool, &x, w, b)
            };
        }
        for (o, i, w, b) in &host.dense {
            let mut y = vec![0f32; n * o];
            for row in y.chunks_exact_mut(*o) {
                row.copy_from_slice(b);
            }
            simd::matmul(
                &mut y,
                simd::Mat::row_major(n, *o),
                &x,
                simd::Mat::row_major(n, *i),
                w,
                simd::Mat::row_major(*o, *i).t(),
                true,
            );
            simd::tanh_in_place(&mut y);
            x = y;
        }
        Ok(x)
    }

    /// Scores of pairs given as embeddings (`n * embedding_dim` each).
    pub fn score_embeddings(&self, e1: &[f32], e2: &[f32]) -> Result<Vec<PairScore>> {
        let dim = self.config.tower.embedding_dim;
        if e1.len() != e2.len() || !e1.len().is_multiple_of(dim) {
            return Err(Error::Input("embedding batches of different sizes".into()));
        }
        let head = self.host()?.head;
        Ok(e1
            .chunks_exact(dim)
            .zip(e2.chunks_exact(dim))
            .map(|(a, b)| {
                let sq: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                let distance = sq.max(DIST_EPS as f32).sqrt();
                self.score_distance(distance, head)
            })
            .collect())
    }

    fn score_distance(&self, distance: f32, head: Option<[f32; 6]>) -> PairScore {
        let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
        let (score, probability) = match head {
            None => {
                let p = match self.config.calibration {
                    Some(c) => sigmoid(c.a * distance + c.b),
                    None => {
                        if distance <= self.config.threshold {
                            1.0
                        } else {
                            0.0
                        }
                    }
                };
                (distance, p)
            }
            Some([g, be, w, b, m, v]) => {
                let norm = (distance - m) / (v + BN_EPS as f32).sqrt();
                let s = sigmoid(w * (g * norm + be) + b);
                (s, 1.0 - s)
            }
        };
        PairScore {
            distance,
            score,
            probability,
            similar: score <= self.config.threshold,
        }
    }

    /// Scores pairs of raw images (each `n` images of `h x w` pixels in 0..1).
    pub fn score_pairs(&self, a: &[f32], b: &[f32]) -> Result<Vec<PairScore>> {
        if a.len() != b.len() {
            return Err(Error::Input(
                "the two sides of the pairs differ in size".into(),
            ));
        }
        let mut both = Vec::with_capacity(a.len() * 2);
        both.extend_from_slice(a);
        both.extend_from_slice(b);
        let e = self.embed(&both)?;
        let half = e.len() / 2;
        self.score_embeddings(&e[..half], &e[half..])
    }

    /// Serialises the model: one safetensors file whose metadata holds
    /// `format`, `config` (JSON) and `provenance` (JSON).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Tensor)> = self
            .trainable()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        if let Head::Sigmoid { running, .. } = &self.head {
            let (m, v) = *running.lock().expect("bn lock");
            tensors.push((
                "head.bn.running_mean".into(),
                Tensor::new(&[m], &Device::Cpu)?,
            ));
            tensors.push((
                "head.bn.running_var".into(),
                Tensor::new(&[v], &Device::Cpu)?,
            ));
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), MODEL_FORMAT.to_string());
        meta.insert(
            "config".to_string(),
            serde_json::to_string(&self.config).map_err(|e| Error::Format(e.to_string()))?,
        );
        if let Some(p) = &self.provenance {
            meta.insert(
                "provenance".to_string(),
                serde_json::to_string(p).map_err(|e| Error::Format(e.to_string()))?,
            );
        }
        let host: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(k, t)| {
                let v = t.flatten_all()?.to_vec1::<f32>()?;
                Ok((
                    k.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    t.dims().to_vec(),
                ))
            })
            .collect::<Result<_>>()?;
        let views: Vec<(String, safetensors::tensor::TensorView)> = host
            .iter()
            .map(|(k, bytes, shape)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| Error::Format(e.to_string()))
            })
            .collect::<Result<_>>()?;
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Format(e.to_string()))
    }

    /// Reads a model from bytes in memory (the worker opens a decrypted model
    /// this way; nothing touches the disk).
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Format(format!("not a safetensors model file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get("format").map(String::as_str) {
            Some(MODEL_FORMAT) => {}
            Some(other) => {
                return Err(Error::Format(format!(
                    "unsupported model format {other:?} (expected {MODEL_FORMAT})"
                )));
            }
            None => {
                return Err(Error::Format(
                    "safetensors file without twinseal metadata".into(),
                ));
            }
        }
        let config: ModelConfig = serde_json::from_str(
            meta.get("config")
                .ok_or_else(|| Error::Format("model file has no config".into()))?,
        )
        .map_err(|e| Error::Format(format!("bad model config: {e}")))?;
        let provenance = match meta.get("provenance") {
            Some(p) => Some(
                serde_json::from_str(p)
                    .map_err(|e| Error::Format(format!("bad provenance: {e}")))?,
            ),
            None => None,
        };
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Format(e.to_string()))?;
        let vars = VarMap::new();
        let mut running = (0.0, 1.0);
        {
            let mut data = vars.data().lock().expect("fresh lock");
            for (name, view) in st.tensors() {
                if view.dtype() != safetensors::Dtype::F32 {
                    return Err(Error::Format(format!("tensor {name} is not f32")));
                }
                let values: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                match name.as_str() {
                    "head.bn.running_mean" => {
                        running.0 = *values
                            .first()
                            .ok_or_else(|| Error::Format("empty tensor".into()))?
                    }
                    "head.bn.running_var" => {
                        running.1 = *values
                            .first()
                            .ok_or_else(|| Error::Format("empty tensor".into()))?
                    }
                    _ => {
                        let t = Tensor::from_vec(values, view.shape(), device)?;
                        data.insert(name, Var::from_tensor(&t)?);
                    }
                }
            }
        }
        // Every parameter the config implies must be in the file with its
        // shape, and nothing else; checked before anything is built, so a
        // hostile config cannot make the loader allocate what the file lacks.
        {
            let data = vars.data().lock().expect("var map lock");
            let specs = param_specs(&config).map_err(|e| Error::Format(e.to_string()))?;
            let mismatch = specs.len() != data.len()
                || specs.iter().any(|p| {
                    data.get(&p.name)
                        .is_none_or(|v| v.dims() != p.shape.as_slice())
                });
            if mismatch {
                return Err(Error::Format("model file does not match its config: tensors are missing, extra or of the wrong shape".into()));
            }
        }
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        let model =
            Self::build(config, provenance, vb, vars, running, device).map_err(|e| match e {
                Error::Candle(c) => {
                    Error::Format(format!("model file does not match its config: {c}"))
                }
                other => other,
            })?;
        Ok(model)
    }
}
