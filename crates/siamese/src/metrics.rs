//! Verification metrics over scored pairs.
//!
//! Scores are distance-like (lower = more alike, see [`crate::loss`]); a pair
//! is accepted as Similar when `score <= threshold`. FAR is the fraction of
//! different pairs accepted, FRR the fraction of same pairs rejected.

use serde::Serialize;

/// One point of the ROC / DET curves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Threshold on the score.
    pub threshold: f32,
    /// False accept rate at that threshold.
    pub far: f64,
    /// False reject rate at that threshold.
    pub frr: f64,
}

/// The metrics of a model on a set of labelled pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Number of pairs.
    pub pairs: usize,
    /// Pairs of the same identity among them.
    pub same_pairs: usize,
    /// The threshold used for the decisions.
    pub threshold: f32,
    /// Fraction of pairs decided correctly at the threshold.
    pub accuracy: f64,
    /// False accept rate at the threshold.
    pub far: f64,
    /// False reject rate at the threshold.
    pub frr: f64,
    /// Area under the ROC curve (probability that a random same pair scores
    /// lower than a random different pair; ties count half).
    pub roc_auc: f64,
    /// Equal error rate (where FAR = FRR, interpolated).
    pub eer: f64,
    /// The threshold at the equal error rate.
    pub eer_threshold: f32,
    /// The target false accept rate asked for, if any.
    pub target_far: Option<f64>,
    /// The largest threshold whose FAR does not exceed the target.
    pub threshold_at_target_far: Option<f32>,
    /// FRR at that threshold.
    pub frr_at_target_far: Option<f64>,
}

/// FAR/FRR at every distinct threshold, from accepting nothing to accepting all.
pub fn curve(scores: &[f32], same: &[bool]) -> Vec<CurvePoint> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let pos = same.iter().filter(|&&s| s).count().max(1) as f64;
    let neg = same.iter().filter(|&&s| !s).count().max(1) as f64;
    let (mut acc_pos, mut acc_neg) = (0usize, 0usize);
    let mut out = vec![CurvePoint {
        threshold: f32::NEG_INFINITY,
        far: 0.0,
        frr: 1.0,
    }];
    let mut i = 0;
    while i < idx.len() {
        let t = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == t {
            if same[idx[i]] {
                acc_pos += 1;
            } else {
                acc_neg += 1;
            }
            i += 1;
        }
        out.push(CurvePoint {
            threshold: t,
            far: acc_neg as f64 / neg,
            frr: 1.0 - acc_pos as f64 / pos,
        });
    }
    out
}

/// ROC-AUC by the rank-sum (Mann-Whitney) statistic.
pub fn roc_auc(scores: &[f32], same: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks of ties, ascending score. Same pairs should have low scores.
    let mut rank = vec![0f64; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            rank[k] = r;
        }
        i = j + 1;
    }
    let n_pos = same.iter().filter(|&&s| s).count() as f64;
    let n_neg = same.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let rank_neg: f64 = (0..scores.len())
        .filter(|&k| !same[k])
        .map(|k| rank[k])
        .sum();
    (rank_neg - n_neg * (n_neg + 1.0) / 2.0) / (n_pos * n_neg)
}

/// The threshold that maximises accuracy (ties broken towards the lower score).
pub fn best_threshold(scores: &[f32], same: &[bool]) -> f32 {
    let pts = curve(scores, same);
    let pos = same.iter().filter(|&&s| s).count() as f64;
    let neg = same.len() as f64 - pos;
    let mut best = (f64::NEG_INFINITY, 0.0f32);
    for w in pts.windows(2) {
        let acc = pos * (1.0 - w[1].frr) + neg * (1.0 - w[1].far);
        if acc > best.0 {
            // Midway to the next distinct score keeps the decision stable.
            best = (acc, w[1].threshold);
        }
    }
    let sorted = {
        let mut s = scores.to_vec();
        s.sort_by(f32::total_cmp);
        s
    };
    match sorted.iter().find(|&&s| s > best.1) {
        Some(&next) => (best.1 + next) / 2.0,
        None => best.1,
    }
}

/// Fits `P(same) = sigmoid(a * score + b)` by Newton's method (logistic
/// regression on one feature), for a probability to report with distances.
pub fn fit_logistic(scores: &[f32], same: &[bool]) -> (f32, f32) {
    let (mut a, mut b) = (-1.0f64, 0.0f64);
    for _ in 0..50 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for (&s, &y) in scores.iter().zip(same) {
            let x = s as f64;
            let p = 1.0 / (1.0 + (-(a * x + b)).exp());
            let e = p - if y { 1.0 } else { 0.0 };
            ga += e * x;
            gb += e;
            let w = p * (1.0 - p);
            haa += w * x * x;
            hab += w * x;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-12 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() + db.abs() < 1e-9 {
            break;
        }
    }
    (a as f32, b as f32)
}

/// All metrics at `threshold`, and the threshold for `target_far` when given.
pub fn report(scores: &[f32], same: &[bool], threshold: f32, target_far: Option<f64>) -> Report {
    assert_eq!(scores.len(), same.len());
    let pos = same.iter().filter(|&&s| s).count();
    let neg = same.len() - pos;
    let accepted_neg = scores
        .iter()
        .zip(same)
        .filter(|&(&s, &y)| !y && s <= threshold)
        .count();
    let rejected_pos = scores
        .iter()
        .zip(same)
        .filter(|&(&s, &y)| y && s > threshold)
        .count();
    let correct = same.len() - accepted_neg - rejected_pos;
    let pts = curve(scores, same);
    // EER: the first point where FAR >= FRR, interpolated with the one before.
    let (mut eer, mut eer_t) = (f64::NAN, f32::NAN);
    for w in pts.windows(2) {
        let (p, q) = (w[0], w[1]);
        if q.far >= q.frr {
            let (d0, d1) = (p.frr - p.far, q.frr - q.far);
            let t = if d0 - d1 == 0.0 { 0.0 } else { d0 / (d0 - d1) };
            eer = p.far + t * (q.far - p.far);
            eer_t = q.threshold;
            break;
        }
    }
    let (mut t_far, mut frr_far) = (None, None);
    if let Some(target) = target_far
        && let Some(p) = pts.iter().rev().find(|p| p.far <= target)
    {
        t_far = Some(p.threshold);
        frr_far = Some(p.frr);
    }
    Report {
        pairs: same.len(),
        same_pairs: pos,
        threshold,
        accuracy: correct as f64 / same.len().max(1) as f64,
        far: accepted_neg as f64 / neg.max(1) as f64,
        frr: rejected_pos as f64 / pos.max(1) as f64,
        roc_auc: roc_auc(scores, same),
        eer,
        eer_threshold: eer_t,
        target_far,
        threshold_at_target_far: t_far,
        frr_at_target_far: frr_far,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_separation() {
        let s = [0.1, 0.2, 0.3, 0.8, 0.9];
        let y = [true, true, true, false, false];
        let r = report(&s, &y, 0.5, Some(0.0));
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.roc_auc, 1.0);
        assert_eq!(r.eer, 0.0);
        assert_eq!(r.threshold_at_target_far, Some(0.3));
        let t = best_threshold(&s, &y);
        assert!(t > 0.3 && t < 0.8, "{t}");
    }

    #[test]
    fn auc_counts_ties_half_and_inversions() {
        // one inversion out of 4 pos/neg comparisons, one tie
        let s = [0.1, 0.5, 0.5, 0.3];
        let y = [true, true, false, false];
        // pairs (pos,neg): (0.1,0.5) ok, (0.1,0.3) ok, (0.5,0.5) tie, (0.5,0.3) wrong
        assert!((roc_auc(&s, &y) - 2.5 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn far_frr_and_eer() {
        let s = [0.1, 0.4, 0.6, 0.2, 0.7, 0.9];
        let y = [true, true, true, false, false, false];
        let r = report(&s, &y, 0.5, None);
        assert!((r.far - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.frr - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.eer - 1.0 / 3.0).abs() < 1e-12, "{}", r.eer);
    }

    #[test]
    fn logistic_fit_orders_probabilities() {
        let s: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let y: Vec<bool> = s.iter().map(|&v| v < 0.5).collect();
        let (a, b) = fit_logistic(&s, &y);
        assert!(a < 0.0);
        let p = |x: f32| 1.0 / (1.0 + (-(a * x + b)).exp());
        assert!(p(0.1) > 0.9 && p(0.9) < 0.1);
    }
}
