//! Model configuration: the tower's layers, the head, and how pixels are fed.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest input side accepted (bounds what a model file's config can make
/// image decoding and inference allocate).
pub const MAX_SIDE: usize = 4096;

/// One convolution block: `filters` kernels of `kernel x kernel` (stride 1, no
/// padding), tanh, then average pooling with a `pool x pool` window (1 = none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayer {
    /// Number of filters (output channels).
    pub filters: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Average-pooling window and stride after the activation (1 = no pooling).
    pub pool: usize,
}

/// The shared tower: convolution blocks, then dense tanh layers, the last of
/// which is the embedding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TowerConfig {
    /// Input height in pixels.
    pub height: usize,
    /// Input width in pixels.
    pub width: usize,
    /// Convolution blocks, in order.
    pub convs: Vec<ConvLayer>,
    /// Hidden dense tanh layers between the convolutions and the embedding.
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Size of the embedding (the last dense tanh layer).
    pub embedding_dim: usize,
}

impl TowerConfig {
    /// The seed's tower: 28x28x1; conv 4@5x5 tanh; avg-pool 2x2; conv 16@5x5
    /// tanh; avg-pool 2x2; flatten; dense 10 tanh.
    pub fn seed() -> Self {
        Self {
            height: 28,
            width: 28,
            convs: vec![
                ConvLayer {
                    filters: 4,
                    kernel: 5,
                    pool: 2,
                },
                ConvLayer {
                    filters: 16,
                    kernel: 5,
                    pool: 2,
                },
            ],
            hidden: Vec::new(),
            embedding_dim: 10,
        }
    }

    /// The (channels, height, width) after each convolution block, and the
    /// flattened size feeding the dense layers; errors when a layer does not fit.
    pub fn shapes(&self) -> Result<(Vec<Chw>, usize)> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.height == 0 || self.width == 0 {
            return bad("input size must be at least 1x1".into());
        }
        if self.height > MAX_SIDE || self.width > MAX_SIDE {
            return bad(format!(
                "input size {}x{} exceeds {MAX_SIDE}x{MAX_SIDE}",
                self.height, self.width
            ));
        }
        if self.embedding_dim == 0 {
            return bad("embedding_dim must be at least 1".into());
        }
        let (mut c, mut h, mut w) = (1, self.height, self.width);
        let mut out = Vec::new();
        for (i, l) in self.convs.iter().enumerate() {
            if l.filters == 0 || l.kernel == 0 || l.pool == 0 {
                return bad(format!(
                    "conv layer {i}: filters, kernel and pool must be at least 1"
                ));
            }
            if l.kernel > h || l.kernel > w {
                return bad(format!(
                    "conv layer {i}: kernel {k} does not fit a {h}x{w} input",
                    k = l.kernel
                ));
            }
            let (ho, wo) = (h + 1 - l.kernel, w + 1 - l.kernel);
            if ho % l.pool != 0 || wo % l.pool != 0 {
                return bad(format!(
                    "conv layer {i}: output {ho}x{wo} is not a multiple of the pool window {}",
                    l.pool
                ));
            }
            (c, h, w) = (l.filters, ho / l.pool, wo / l.pool);
            out.push((c, h, w));
        }
        if self.hidden.contains(&0) {
            return bad("hidden layer sizes must be at least 1".into());
        }
        Ok((out, c * h * w))
    }
}

/// What sits on top of the two embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// The Euclidean distance between the embeddings, compared with a
    /// threshold calibrated after training; the probability comes from a
    /// logistic fit of the distance.
    Distance,
    /// The seed's head (the Keras example): distance -> batch norm -> dense(1)
    /// -> sigmoid (the default). The sigmoid is a *dissimilarity* (trained with matching
    /// pairs labelled 0), so P(same) = 1 - output, threshold 0.5.
    Sigmoid,
}

impl std::str::FromStr for HeadKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "distance" => Ok(Self::Distance),
            "sigmoid" => Ok(Self::Sigmoid),
            _ => Err(format!("unknown head {s:?} (expected distance or sigmoid)")),
        }
    }
}

/// How raw grey pixels in 0..1 are standardised before the tower: `(x - mean) / std`.
///
/// The Keras example does this with a batch norm on the input; a fixed
/// standardisation measured on the training set does the same job at
/// inference and keeps the seed's tower exactly as listed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelNorm {
    /// Mean pixel value of the training images.
    pub mean: f32,
    /// Standard deviation of the training pixels.
    pub std: f32,
}

impl Default for PixelNorm {
    fn default() -> Self {
        Self {
            mean: 0.0,
            std: 1.0,
        }
    }
}

/// `P(same) = sigmoid(a * score + b)`, fitted after training (distance head).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Slope (negative: a larger distance means less likely the same).
    pub a: f32,
    /// Intercept.
    pub b: f32,
}

/// (channels, height, width) of a layer's output.
pub type Chw = (usize, usize, usize);

/// Everything needed to rebuild and use a model, stored in the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The tower.
    pub tower: TowerConfig,
    /// The head.
    pub head: HeadKind,
    /// Input standardisation.
    pub pixels: PixelNorm,
    /// Decision threshold on the head's score (distance, or the sigmoid's
    /// dissimilarity): a pair is Similar when `score <= threshold`.
    pub threshold: f32,
    /// Distance -> probability calibration (distance head).
    pub calibration: Option<Calibration>,
}

impl ModelConfig {
    /// This configuration with another tower.
    pub fn with_tower(self, tower: TowerConfig) -> Self {
        Self { tower, ..self }
    }

    /// The seed's model with the given head.
    pub fn seed(head: HeadKind) -> Self {
        Self {
            tower: TowerConfig::seed(),
            head,
            pixels: PixelNorm::default(),
            threshold: 0.5,
            calibration: None,
        }
    }
}
