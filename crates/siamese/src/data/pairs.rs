//! Pair and triplet sampling, seeded and reproducible (same seed, same
//! twinseal version: same pairs).

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use super::ImageSet;

/// Two image indices and whether they share an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// First image.
    pub a: u32,
    /// Second image.
    pub b: u32,
    /// Same identity.
    pub same: bool,
}

fn by_class(labels: &[u32]) -> Vec<Vec<u32>> {
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut v = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        v[l as usize].push(i as u32);
    }
    v
}

/// The Keras example's `make_pairs`: for every image, one pair with a random
/// image of the same identity and one with a random image of another
/// identity; exactly balanced, `2 * n` pairs. Identities with no image are
/// skipped; needs at least two non-empty identities.
pub fn make_pairs<R: Rng>(labels: &[u32], rng: &mut R) -> Vec<Pair> {
    let groups = by_class(labels);
    let nonempty: Vec<usize> = (0..groups.len())
        .filter(|&c| !groups[c].is_empty())
        .collect();
    if nonempty.len() < 2 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(labels.len() * 2);
    for (i, &l) in labels.iter().enumerate() {
        let same = *groups[l as usize]
            .choose(rng)
            .expect("own class is non-empty");
        out.push(Pair {
            a: i as u32,
            b: same,
            same: true,
        });
        let other = loop {
            let c = *nonempty.choose(rng).expect("two classes");
            if c != l as usize {
                break c;
            }
        };
        out.push(Pair {
            a: i as u32,
            b: *groups[other].choose(rng).expect("non-empty"),
            same: false,
        });
    }
    out
}

/// `rounds` rounds of [`make_pairs`], truncated to `limit` pairs when given.
pub fn make_pairs_rounds<R: Rng>(
    labels: &[u32],
    rounds: usize,
    limit: Option<usize>,
    rng: &mut R,
) -> Vec<Pair> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        out.extend(make_pairs(labels, rng));
    }
    if let Some(l) = limit {
        out.truncate(l);
    }
    out
}

/// Gathers the pixels of both sides of `pairs` and their `same` labels (1.0 / 0.0).
pub fn gather(set: &ImageSet, pairs: &[Pair]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let px = set.height * set.width;
    let mut a = Vec::with_capacity(pairs.len() * px);
    let mut b = Vec::with_capacity(pairs.len() * px);
    for p in pairs {
        a.extend_from_slice(set.image(p.a as usize));
        b.extend_from_slice(set.image(p.b as usize));
    }
    let y = pairs
        .iter()
        .map(|p| if p.same { 1.0 } else { 0.0 })
        .collect();
    (a, b, y)
}

/// Batches for the triplet loss ("PK" sampling, as FaceNet's online mining
/// needs): each batch holds `p` identities with `k` images each (fewer when an
/// identity has fewer images), drawn without replacement within an epoch
/// until `images` images have been used. Identities with one image cannot
/// form a positive and are skipped.
pub fn pk_batches<R: Rng>(
    labels: &[u32],
    p: usize,
    k: usize,
    images: usize,
    rng: &mut R,
) -> Vec<Vec<u32>> {
    let mut groups: Vec<Vec<u32>> = by_class(labels)
        .into_iter()
        .filter(|g| g.len() >= 2)
        .collect();
    for g in &mut groups {
        g.shuffle(rng);
    }
    let mut cursor = vec![0usize; groups.len()];
    let mut batches = Vec::new();
    let mut used = 0;
    let p = p.min(groups.len()).max(1);
    while used < images && groups.len() >= 2 {
        let mut ids: Vec<usize> = (0..groups.len()).collect();
        ids.shuffle(rng);
        let mut batch = Vec::with_capacity(p * k);
        for &c in ids.iter().take(p) {
            let g = &mut groups[c];
            for _ in 0..k.min(g.len()) {
                if cursor[c] >= g.len() {
                    g.shuffle(rng);
                    cursor[c] = 0;
                }
                batch.push(g[cursor[c]]);
                cursor[c] += 1;
            }
        }
        used += batch.len();
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn pairs_are_balanced_correct_and_reproducible() {
        let labels: Vec<u32> = (0..100).map(|i| i % 7).collect();
        let p1 = make_pairs(&labels, &mut StdRng::seed_from_u64(5));
        let p2 = make_pairs(&labels, &mut StdRng::seed_from_u64(5));
        let p3 = make_pairs(&labels, &mut StdRng::seed_from_u64(6));
        assert_eq!(p1, p2);
        assert_ne!(p1, p3);
        assert_eq!(p1.len(), 200);
        assert_eq!(p1.iter().filter(|p| p.same).count(), 100);
        for p in &p1 {
            assert_eq!(labels[p.a as usize] == labels[p.b as usize], p.same);
        }
    }

    #[test]
    fn pk_batches_hold_positives() {
        let labels: Vec<u32> = (0..200).map(|i| i % 10).collect();
        let b = pk_batches(&labels, 4, 8, 200, &mut StdRng::seed_from_u64(1));
        assert!(b.iter().map(Vec::len).sum::<usize>() >= 200);
        for batch in &b {
            assert_eq!(batch.len(), 32);
            let mut ids: Vec<u32> = batch.iter().map(|&i| labels[i as usize]).collect();
            ids.dedup();
            assert_eq!(ids.len(), 4);
        }
    }
}
