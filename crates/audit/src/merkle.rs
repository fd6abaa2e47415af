//! Merkle tree hashing of RFC 6962 / RFC 9162 section 2.1: tree heads,
//! inclusion and consistency proofs, and their verification.
//!
//! A leaf hash is `SHA-256(0x00 || data)`, an interior node
//! `SHA-256(0x01 || left || right)`, the empty tree hashes to `SHA-256("")`,
//! and a tree of `n > 1` leaves splits at the largest power of two below `n`.

use aws_lc_rs::digest::{self, SHA256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// `SHA-256(data)`.
pub(crate) fn sha256(data: &[u8]) -> Hash {
    let mut out = [0; 32];
    out.copy_from_slice(digest::digest(&SHA256, data).as_ref());
    out
}

/// The leaf hash of `data`: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The interior node over two children: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The roots of the perfect subtrees of a tree of `size` leaves, left to
/// right (largest first): one per set bit of `size`. Appending a leaf and
/// computing the root both take O(log n); this is what the log stores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// Rebuild from the stored size and concatenated node hashes; `None`
    /// when the length does not fit the size.
    pub(crate) fn from_parts(size: u64, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size.count_ones() as usize * 32 {
            return None;
        }
        let nodes = bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        Some(Frontier { size, nodes })
    }

    /// The node hashes, concatenated, for storage.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.nodes.concat()
    }

    /// The number of leaves.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf hash: merge equal-sized subtrees like a binary carry.
    pub(crate) fn push(&mut self, leaf: Hash) {
        let mut carry = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            // One node per set bit of `size` (checked by `from_parts` and kept
            // by this loop), so a set bit always has its node.
            let left = self.nodes.pop().expect("frontier node for a set bit");
            carry = node_hash(&left, &carry);
            s >>= 1;
        }
        self.nodes.push(carry);
        self.size += 1;
    }

    /// The tree head: the subtrees folded from the right.
    pub(crate) fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, n| node_hash(n, &acc))
    }
}

/// The tree head of the given leaf hashes (O(n)), through the frontier.
#[cfg(test)]
pub(crate) fn root_from_leaves(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::default();
    for l in leaves {
        f.push(*l);
    }
    f.root()
}

/// Every aligned perfect subtree of a list of leaves, level by level, so the
/// hash of any subtree the RFC recursion visits is a lookup or a fold of
/// O(log n) lookups. Building it costs O(n) hashes and 2n hashes of memory;
/// then a tree head of any prefix costs O(log n) and a proof O(log² n).
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// Build the levels above the leaf hashes.
    pub(crate) fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(last) = levels.last()
            && last.len() >= 2
        {
            let next = last
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(next);
        }
        Tree { levels }
    }

    /// The number of leaves.
    pub(crate) fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Append leaves, hashing only the new interior nodes (O(new)).
    pub(crate) fn extend(&mut self, leaves: impl IntoIterator<Item = Hash>) {
        self.levels[0].extend(leaves);
        let mut l = 0;
        while self.levels[l].len() >= 2 {
            if self.levels.len() == l + 1 {
                self.levels.push(Vec::new());
            }
            let (lower, upper) = self.levels.split_at_mut(l + 1);
            let (below, above) = (&lower[l], &mut upper[0]);
            while above.len() < below.len() / 2 {
                let i = above.len();
                above.push(node_hash(&below[2 * i], &below[2 * i + 1]));
            }
            l += 1;
        }
    }

    /// MTH(D[start:end]) for a range the RFC recursion produces: `start` is
    /// a multiple of the largest power of two not above `end - start`.
    fn mth(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(start >> level) as usize];
        }
        let k = split(n);
        node_hash(&self.mth(start, start + k), &self.mth(start + k, end))
    }

    /// The tree head of the first `size` leaves (`size <= len`).
    pub(crate) fn root(&self, size: u64) -> Hash {
        self.mth(0, size)
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size`
    /// leaves (RFC 9162 2.1.3.1), leaf to root. `None` when out of range.
    pub(crate) fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.len() {
            return None;
        }
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out);
        Some(out)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.mth(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.mth(start, start + k));
        }
    }

    /// The consistency proof from the tree of `old` leaves to the tree of
    /// `new` leaves (RFC 9162 2.1.4.1). Empty when `old` is 0 or equals
    /// `new`; `None` when out of range.
    pub(crate) fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if old > new || new > self.len() {
            return None;
        }
        let mut out = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut out);
        }
        Some(out)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.mth(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.mth(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.mth(start, start + k));
        }
    }
}

/// A whole tree kept in memory and grown by appending leaves: tree heads
/// and proofs of any prefix in O(log n) after O(new) work per append. What
/// the coordinator keeps to prove consistency to its witnesses every round
/// without reading the whole log again.
#[derive(Clone, Debug)]
pub struct MemoryTree(Tree);

impl Default for MemoryTree {
    fn default() -> Self {
        MemoryTree(Tree::new(Vec::new()))
    }
}

impl MemoryTree {
    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether it has no leaves.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Append leaf hashes.
    pub fn extend(&mut self, leaves: impl IntoIterator<Item = Hash>) {
        self.0.extend(leaves);
    }

    /// The head of the first `size` leaves (`size <= len`).
    pub fn root(&self, size: u64) -> Option<Hash> {
        (size <= self.len()).then(|| self.0.root(size))
    }

    /// The RFC 9162 consistency proof from `old` to `new` leaves.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        self.0.consistency_proof(old, new)
    }
}

/// Verify that `leaf` is leaf `index` of the tree of `size` leaves whose
/// head is `root`, with the RFC 9162 2.1.3.2 algorithm.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Verify that the tree of `new_size` leaves with head `new_root` extends
/// the tree of `old_size` leaves with head `old_root`, with the RFC 9162
/// 2.1.4.2 algorithm. Equal sizes need equal roots and an empty proof; the
/// empty tree (whose head must be [`empty_root`]) is a prefix of every tree,
/// with an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    if proof.is_empty() {
        return false;
    }
    // When the old tree is a perfect subtree, the proof omits its head: it is
    // the first element of the path.
    let first: &[Hash] = if old_size.is_power_of_two() {
        std::slice::from_ref(old_root)
    } else {
        &[]
    };
    let mut path = first.iter().chain(proof);
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let Some(start) = path.next() else {
        return false;
    };
    let (mut fr, mut sr) = (*start, *start);
    for c in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *old_root && sr == *new_root && sn == 0
}

#[cfg(test)]
mod memory_tree_tests {
    use super::*;

    #[test]
    fn a_tree_grown_by_appends_equals_the_tree_built_at_once() {
        let leaves: Vec<Hash> = (0..1000u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let whole = Tree::new(leaves.clone());
        let mut grown = MemoryTree::default();
        let mut at = 0;
        for step in [1usize, 2, 3, 7, 100, 255, 256, 376] {
            grown.extend(leaves[at..at + step].iter().copied());
            at += step;
            assert_eq!(grown.root(at as u64), Some(whole.root(at as u64)));
        }
        assert_eq!(at, 1000);
        for (old, new) in [(1, 1000), (7, 300), (256, 1000), (999, 1000)] {
            assert_eq!(
                grown.consistency_proof(old, new),
                whole.consistency_proof(old, new)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let mut out = [0; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    /// The Certificate Transparency reference leaves (RFC 6962 test data, as
    /// published in certificate-transparency and transparency-dev/merkle).
    const CT_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// The reference tree heads for sizes 0 to 8.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn ct_leaves() -> Vec<Hash> {
        CT_LEAVES
            .iter()
            .map(|s| leaf_hash(&hex::decode(s).unwrap()))
            .collect()
    }

    /// MTH straight from RFC 6962 section 2.1, recursion and all: the
    /// reference the fast paths are compared with.
    fn naive_mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&naive_mth(&leaves[..k]), &naive_mth(&leaves[k..]))
            }
        }
    }

    fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return vec![];
        }
        let k = split(n as u64) as usize;
        if m < k {
            let mut p = naive_path(m, &leaves[..k]);
            p.push(naive_mth(&leaves[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &leaves[k..]);
            p.push(naive_mth(&leaves[..k]));
            p
        }
    }

    fn naive_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole {
                vec![]
            } else {
                vec![naive_mth(leaves)]
            };
        }
        let k = split(n as u64) as usize;
        if m <= k {
            let mut p = naive_subproof(m, &leaves[..k], whole);
            p.push(naive_mth(&leaves[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &leaves[k..], false);
            p.push(naive_mth(&leaves[..k]));
            p
        }
    }

    fn synthetic(n: usize) -> Vec<Hash> {
        (0..n as u32).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split(n), k, "n = {n}");
        }
        assert_eq!(split(u64::MAX), 1 << 63);
    }

    #[test]
    fn prefixes_are_those_of_rfc_6962() {
        assert_eq!(leaf_hash(b""), h(CT_ROOTS[1]));
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut buf = vec![1u8];
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&b);
        assert_eq!(node_hash(&a, &b), sha256(&buf));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    #[test]
    fn roots_match_the_reference_tree_heads() {
        let leaves = ct_leaves();
        let tree = Tree::new(leaves.clone());
        for (n, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(
                root_from_leaves(&leaves[..n]),
                h(want),
                "frontier, size {n}"
            );
            assert_eq!(tree.root(n as u64), h(want), "tree, size {n}");
            assert_eq!(naive_mth(&leaves[..n]), h(want), "naive, size {n}");
        }
    }

    #[test]
    fn proofs_match_the_reference_vectors() {
        let tree = Tree::new(ct_leaves());
        let leaves = ct_leaves();
        let inclusion = [
            (
                0,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                vec![
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, size, want) in inclusion {
            let want: Vec<Hash> = want.into_iter().map(h).collect();
            assert_eq!(tree.inclusion_proof(index, size).unwrap(), want);
            assert!(verify_inclusion(
                &leaves[index as usize],
                index,
                size,
                &want,
                &h(CT_ROOTS[size as usize])
            ));
        }
        let consistency = [
            (
                2,
                8,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in consistency {
            let want: Vec<Hash> = want.into_iter().map(h).collect();
            assert_eq!(tree.consistency_proof(old, new).unwrap(), want);
            assert!(verify_consistency(
                old,
                new,
                &h(CT_ROOTS[old as usize]),
                &h(CT_ROOTS[new as usize]),
                &want
            ));
        }
    }

    #[test]
    fn every_inclusion_proof_matches_the_naive_one_and_verifies() {
        let all = synthetic(70);
        let tree = Tree::new(all.clone());
        for n in 1..=70usize {
            let root = naive_mth(&all[..n]);
            assert_eq!(tree.root(n as u64), root);
            for m in 0..n {
                let proof = tree.inclusion_proof(m as u64, n as u64).unwrap();
                assert_eq!(proof, naive_path(m, &all[..n]), "leaf {m} of {n}");
                assert!(verify_inclusion(&all[m], m as u64, n as u64, &proof, &root));
                // Any other leaf, index, size or root is refused.
                let other = all[(m + 1) % n];
                if n > 1 {
                    assert!(!verify_inclusion(&other, m as u64, n as u64, &proof, &root));
                    assert!(!verify_inclusion(
                        &all[m],
                        ((m + 1) % n) as u64,
                        n as u64,
                        &proof,
                        &root
                    ));
                }
                assert!(!verify_inclusion(
                    &all[m],
                    m as u64,
                    n as u64,
                    &proof,
                    &[0xaa; 32]
                ));
                assert!(!verify_inclusion(
                    &all[m], n as u64, n as u64, &proof, &root
                ));
                // A flipped, truncated or extended proof is refused.
                if let Some(last) = proof.len().checked_sub(1) {
                    let mut bad = proof.clone();
                    bad[last][0] ^= 1;
                    assert!(!verify_inclusion(&all[m], m as u64, n as u64, &bad, &root));
                    assert!(!verify_inclusion(
                        &all[m],
                        m as u64,
                        n as u64,
                        &proof[..last],
                        &root
                    ));
                }
                let mut longer = proof.clone();
                longer.push([7; 32]);
                assert!(!verify_inclusion(
                    &all[m], m as u64, n as u64, &longer, &root
                ));
            }
        }
    }

    #[test]
    fn every_consistency_proof_matches_the_naive_one_and_verifies() {
        let all = synthetic(70);
        let tree = Tree::new(all.clone());
        let roots: Vec<Hash> = (0..=70).map(|n| naive_mth(&all[..n])).collect();
        for new in 0..=70usize {
            for old in 0..=new {
                let proof = tree.consistency_proof(old as u64, new as u64).unwrap();
                let naive = if old == 0 || old == new {
                    vec![]
                } else {
                    naive_subproof(old, &all[..new], true)
                };
                assert_eq!(proof, naive, "{old} -> {new}");
                let (o, n) = (old as u64, new as u64);
                assert!(verify_consistency(o, n, &roots[old], &roots[new], &proof));
                if old == new {
                    continue;
                }
                // Reversed sizes, wrong roots, mangled proofs: refused.
                assert!(!verify_consistency(n, o, &roots[new], &roots[old], &proof));
                if old > 0 {
                    assert!(!verify_consistency(
                        o,
                        n,
                        &roots[old - 1],
                        &roots[new],
                        &proof
                    ));
                }
                // (The empty tree is a prefix of every tree, whatever its head.)
                if old > 0 {
                    assert!(!verify_consistency(
                        o,
                        n,
                        &roots[old],
                        &roots[new - 1],
                        &proof
                    ));
                }
                if let Some(last) = proof.len().checked_sub(1) {
                    let mut bad = proof.clone();
                    bad[0][5] ^= 0x80;
                    assert!(!verify_consistency(o, n, &roots[old], &roots[new], &bad));
                    assert!(!verify_consistency(
                        o,
                        n,
                        &roots[old],
                        &roots[new],
                        &proof[..last]
                    ));
                }
                let mut longer = proof.clone();
                longer.push([9; 32]);
                assert!(!verify_consistency(o, n, &roots[old], &roots[new], &longer));
            }
        }
    }

    #[test]
    fn proofs_of_a_smaller_tree_do_not_pass_for_a_larger_one() {
        // The head of a one-leaf tree is that leaf; it is not the head of a
        // two-leaf tree containing it, whatever the (empty) path says.
        let all = synthetic(24);
        assert!(!verify_inclusion(&all[0], 0, 2, &[], &all[0]));
        assert!(!verify_inclusion(&all[1], 1, 2, &[], &all[1]));
        // A consistency proof from `old` to `mid` does not prove the same
        // heads consistent as trees of `old` and `new` leaves when the path
        // ends before reaching the root of a `new`-leaf tree (sn != 0).
        let tree = Tree::new(all);
        for (old, mid, new) in [(1, 2, 3), (1, 2, 4), (2, 3, 5), (1, 4, 5), (3, 4, 6)] {
            let proof = tree.consistency_proof(old, mid).unwrap();
            assert!(verify_consistency(
                old,
                mid,
                &tree.root(old),
                &tree.root(mid),
                &proof
            ));
            assert!(
                !verify_consistency(old, new, &tree.root(old), &tree.root(mid), &proof),
                "{old} -> {mid} passed as {old} -> {new}"
            );
        }
    }

    #[test]
    fn frontier_round_trips_and_refuses_wrong_lengths() {
        let mut f = Frontier::default();
        for (i, l) in synthetic(13).into_iter().enumerate() {
            f.push(l);
            let g = Frontier::from_parts(f.size(), &f.to_bytes()).unwrap();
            assert_eq!(g, f);
            assert_eq!(g.size(), i as u64 + 1);
        }
        assert!(Frontier::from_parts(13, &[0; 32]).is_none());
        assert!(Frontier::from_parts(0, &[0; 32]).is_none());
        assert_eq!(Frontier::from_parts(0, &[]).unwrap().root(), empty_root());
    }

    #[test]
    fn out_of_range_proofs_are_refused() {
        let tree = Tree::new(synthetic(5));
        assert!(tree.inclusion_proof(5, 5).is_none());
        assert!(tree.inclusion_proof(0, 6).is_none());
        assert!(tree.consistency_proof(3, 2).is_none());
        assert!(tree.consistency_proof(1, 6).is_none());
        assert!(tree.consistency_proof(0, 5).unwrap().is_empty());
        assert!(verify_consistency(0, 5, &empty_root(), &tree.root(5), &[]));
        assert!(!verify_consistency(0, 5, &tree.root(1), &tree.root(5), &[]));
        assert!(!verify_consistency(2, 5, &tree.root(2), &tree.root(5), &[]));
    }
}
