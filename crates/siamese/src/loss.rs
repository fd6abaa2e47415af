//! Losses: contrastive (pairs) and triplet with online semi-hard mining.
//!
//! **Label convention.** twinseal labels a pair `same = 1` when both images
//! show the same identity and `same = 0` otherwise, and every score is a
//! *distance-like* value (lower = more alike): the Euclidean distance, or the
//! seed head's sigmoid read as a dissimilarity. The contrastive loss is then
//! `same * s^2 + (1 - same) * max(margin - s, 0)^2` (Hadsell, Chopra, LeCun
//! 2006). The Keras example writes the same formula with the opposite label
//! (`y = 1` for *different* pairs) applied to its sigmoid output; both are
//! this loss, with the sigmoid trained towards 0 for matching pairs.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossKind {
    /// Contrastive loss on pairs.
    Contrastive {
        /// Distance beyond which different pairs cost nothing.
        margin: f32,
    },
    /// Triplet loss with online semi-hard negative mining (FaceNet).
    Triplet {
        /// Required gap between the anchor-negative and anchor-positive distances.
        margin: f32,
    },
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Contrastive { margin } => write!(f, "contrastive(margin={margin})"),
            Self::Triplet { margin } => write!(f, "triplet-semihard(margin={margin})"),
        }
    }
}

/// Mean contrastive loss of distance-like `score` `[n]` for labels `same` `[n]` (1 = same).
pub fn contrastive(score: &Tensor, same: &Tensor, margin: f32) -> candle_core::Result<Tensor> {
    let pos = same.mul(&score.sqr()?)?;
    let gap = (score.affine(-1.0, margin as f64))?.relu()?.sqr()?;
    let neg = (1.0 - same)?.mul(&gap)?;
    (pos + neg)?.mean_all()
}

/// Every pair `(i, j)`, `i < j`, of a batch of `m` images: the flat index
/// `i * m + j` into an `[m, m]` matrix, and 1.0 when both share an identity.
pub fn upper_pairs(labels: &[u32]) -> (Vec<u32>, Vec<f32>) {
    let m = labels.len();
    let mut idx = Vec::with_capacity(m * (m.saturating_sub(1)) / 2);
    let mut same = Vec::with_capacity(idx.capacity());
    for i in 0..m {
        for j in i + 1..m {
            idx.push((i * m + j) as u32);
            same.push(if labels[i] == labels[j] { 1.0 } else { 0.0 });
        }
    }
    (idx, same)
}

/// Contrastive loss over *every* pair of images in a batch (twinseal's
/// default), from their distance-like `score` `[p]` and labels `same`.
///
/// The same-identity term is averaged over the same pairs and the
/// different-identity term over the different pairs still inside the margin
/// (the only ones with a gradient), and the two are added. Averaging each
/// term over its own pairs keeps the many different pairs from drowning the
/// few same ones; averaging over the *active* different pairs keeps their
/// pull from fading as most of them clear the margin.
///
/// A batch of the seed's 128 pairs holds 256 images and so 32,640 pairs: the
/// tower still runs once per image, and the loss sees 255 times more
/// comparisons than the sampled pairs alone.
pub fn contrastive_balanced(score: &Tensor, same: &[f32], margin: f32) -> Result<Tensor> {
    let host: Vec<f32> = score.to_vec1()?;
    if host.len() != same.len() {
        return Err(Error::Training(
            "contrastive batch: labels and scores differ in count".into(),
        ));
    }
    let n_same = same.iter().filter(|&&y| y > 0.5).count();
    let n_active = same
        .iter()
        .zip(&host)
        .filter(|&(&y, &s)| y < 0.5 && s < margin)
        .count();
    let dev = score.device();
    let y = Tensor::new(same, dev)?;
    let pos = (y.mul(&score.sqr()?)?.sum_all()? / n_same.max(1) as f64)?;
    let gap = score.affine(-1.0, margin as f64)?.relu()?.sqr()?;
    let neg = ((1.0 - &y)?.mul(&gap)?.sum_all()? / n_active.max(1) as f64)?;
    Ok((pos + neg)?)
}

/// Pairwise Euclidean distances `[n, n]` of embeddings `[n, d]`.
pub fn pairwise_distances(e: &Tensor) -> candle_core::Result<Tensor> {
    let sq = e.sqr()?.sum_keepdim(1)?; // [n, 1]
    let dot = e.matmul(&e.t()?)?; // [n, n]
    let d2 = sq.broadcast_add(&sq.t()?)?.sub(&(dot * 2.0)?)?;
    d2.maximum(1e-12)?.sqrt()
}

/// Triplet loss with online semi-hard mining over one batch.
///
/// For every anchor-positive pair (same label) the negative is the closest
/// one that is still farther than the positive (semi-hard); when no negative
/// is farther, the farthest negative is used (as in TensorFlow Addons'
/// `triplet_semihard_loss`). Returns the loss and the fraction of triplets
/// already ordered correctly (`d(a,p) < d(a,n)`).
pub fn triplet_semihard(emb: &Tensor, labels: &[u32], margin: f32) -> Result<(Tensor, f32)> {
    let n = labels.len();
    if emb.dim(0)? != n {
        return Err(Error::Training(
            "triplet batch: labels and embeddings differ in count".into(),
        ));
    }
    let dist = pairwise_distances(emb)?;
    let host: Vec<f32> = dist.flatten_all()?.to_vec1()?;
    let (mut ap, mut an) = (Vec::new(), Vec::new());
    let mut ordered = 0usize;
    for a in 0..n {
        for p in 0..n {
            if p == a || labels[p] != labels[a] {
                continue;
            }
            let dap = host[a * n + p];
            let mut semi: Option<(usize, f32)> = None;
            let mut far: Option<(usize, f32)> = None;
            for k in 0..n {
                if labels[k] == labels[a] {
                    continue;
                }
                let dan = host[a * n + k];
                if dan > dap && semi.is_none_or(|(_, d)| dan < d) {
                    semi = Some((k, dan));
                }
                if far.is_none_or(|(_, d)| dan > d) {
                    far = Some((k, dan));
                }
            }
            if let Some((k, dan)) = semi.or(far) {
                if dap < dan {
                    ordered += 1;
                }
                ap.push((a * n + p) as u32);
                an.push((a * n + k) as u32);
            }
        }
    }
    if ap.is_empty() {
        return Err(Error::Training("triplet batch has no anchor-positive-negative triplet (needs at least two identities with two images each)".into()));
    }
    let count = ap.len();
    let flat = dist.flatten_all()?;
    let dev = emb.device();
    let dap = flat.index_select(&Tensor::from_vec(ap, count, dev)?, 0)?;
    let dan = flat.index_select(&Tensor::from_vec(an, count, dev)?, 0)?;
    let loss = (dap - dan)?
        .affine(1.0, margin as f64)?
        .relu()?
        .mean_all()?;
    Ok((loss.to_dtype(DType::F32)?, ordered as f32 / count as f32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn contrastive_follows_the_label_convention() {
        let dev = Device::Cpu;
        let s = Tensor::new(&[0.2f32, 0.2, 1.5, 0.5], &dev).unwrap();
        let same = Tensor::new(&[1f32, 0., 0., 0.], &dev).unwrap();
        let l = contrastive(&s, &same, 1.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // 0.04 (same, close) + 0.64 (different, inside margin) + 0 + 0.25
        assert!((l - (0.04 + 0.64 + 0.0 + 0.25) / 4.0).abs() < 1e-6, "{l}");
    }

    #[test]
    fn semihard_mining_picks_the_closest_farther_negative() {
        let dev = Device::Cpu;
        // 1-D embeddings: anchor 0.0, positive 0.1, negatives at 0.3 and 0.9.
        let e = Tensor::new(&[[0.0f32], [0.1], [0.3], [0.9]], &dev).unwrap();
        let (loss, ordered) = triplet_semihard(&e, &[0, 0, 1, 1], 0.5).unwrap();
        // anchor 0: d_ap=0.1, semi-hard n=0.3 -> 0.1-0.3+0.5=0.3
        // anchor 1: d_ap=0.1, negs at 0.2, 0.8 -> semi-hard 0.2 -> 0.4
        // anchor 2: d_ap=0.6, negs 0.3,0.2 -> none farther, farthest 0.3 -> 0.8
        // anchor 3: d_ap=0.6, negs 0.9,0.8 -> semi-hard 0.8 -> 0.3
        let want = (0.3 + 0.4 + 0.8 + 0.3) / 4.0;
        assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-5);
        assert_eq!(ordered, 0.75);
    }
}
