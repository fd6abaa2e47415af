//! The offline verifier of export bundles.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;

use crate::bundle::Bundle;
use crate::event::Entry;
use crate::merkle::{Hash, Tree, sha256, verify_consistency};
use crate::note::{VerifierKey, verify_checkpoint};

/// What is wrong with a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// Entries are missing: a gap in the indices, or the bundle ends before
    /// a signed checkpoint's size.
    Removed,
    /// An entry's content differs from what was logged (the hash chain
    /// breaks at it).
    Altered,
    /// An entry is out of index order in the bundle. The entries named are
    /// the fewest whose moving explains the order (those outside a longest
    /// ordered run): a swap names both, a moved entry names itself.
    Reordered,
    /// A second entry claims an index already taken.
    Inserted,
    /// A checkpoint is malformed or its signature does not verify.
    BadCheckpointSignature,
    /// A verified checkpoint's tree head differs from the head of the
    /// entries it covers.
    CheckpointMismatch,
    /// Two verified checkpoints contradict each other: the later one, which
    /// matches the entries, does not extend the earlier one.
    Inconsistent,
    /// An entry names evidence the bundle lacks.
    MissingEvidence,
    /// Evidence in the bundle does not hash to its digest.
    EvidenceAltered,
    /// Entries after the last verified checkpoint, or every entry when no
    /// checkpoint verified: nothing signed vouches for them, so they could
    /// have been rewritten, hash chain included. A problem, or only a
    /// warning under [`VerifyOptions::allow_unsigned_tail`].
    Uncovered,
    /// A tile of hashes served with the log (C2SP tlog-tiles) differs from
    /// the hashes of the entries it spans, or an entry bundle holds an
    /// entry that is not in canonical form: clients that compute proofs
    /// from those tiles would be misled.
    TileMismatch,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Removed => "removed",
            ProblemKind::Altered => "altered",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Inserted => "inserted",
            ProblemKind::BadCheckpointSignature => "bad checkpoint signature",
            ProblemKind::CheckpointMismatch => "checkpoint mismatch",
            ProblemKind::Inconsistent => "inconsistent checkpoints",
            ProblemKind::MissingEvidence => "missing evidence",
            ProblemKind::EvidenceAltered => "evidence altered",
            ProblemKind::Uncovered => "not covered by a signed checkpoint",
            ProblemKind::TileMismatch => "tile mismatch",
        })
    }
}

/// One finding of the verifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The entry it concerns. For [`ProblemKind::Removed`] and
    /// [`ProblemKind::Uncovered`] the first of a range, for
    /// [`ProblemKind::CheckpointMismatch`] the first entry of the range the
    /// checkpoints narrow the change to; `None` when no entry is singled out.
    pub index: Option<u64>,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// A sentence saying what was found.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "entry {i}: {}: {}", self.kind, self.detail),
            None => write!(f, "{}: {}", self.kind, self.detail),
        }
    }
}

/// The result of verifying a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The number of entries in the bundle.
    pub entries: u64,
    /// The number of checkpoints whose signature verified (the trusted one
    /// included).
    pub checkpoints: u64,
    /// Everything found wrong, by entry index (findings without an index last).
    pub problems: Vec<Problem>,
    /// Findings accepted by the options but limiting what the bundle
    /// proves: the [`ProblemKind::Uncovered`] finding under
    /// [`VerifyOptions::allow_unsigned_tail`].
    pub warnings: Vec<Problem>,
    /// The indices of the bundle's entries that no verified checkpoint
    /// covers (from the largest verified size to the last entry), whether
    /// reported as a problem or, when allowed, as a warning.
    pub uncovered: Option<Range<u64>>,
}

impl Report {
    /// No problems (warnings allowed). Entries no signed checkpoint covers
    /// are a problem unless [`VerifyOptions::allow_unsigned_tail`] was set.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How to verify a bundle. The default is the strict check with nothing
/// obtained out of band.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions<'a> {
    /// A checkpoint obtained out of band (from the coordinator's
    /// `/v1/audit/checkpoint`, a witness, an earlier audit), as signed-note
    /// text: the bundle must then hold at least that many entries, and their
    /// head must be the one it signs.
    pub trusted: Option<&'a str>,
    /// Accept entries that no verified checkpoint covers, reporting them as
    /// a warning instead of a problem. Dangerous: nothing signed vouches for
    /// those entries, so whoever handled the bundle could have rewritten
    /// them (hash chain included), or stripped the checkpoints of a whole
    /// log to do so. Only for a log known to have appended since its last
    /// checkpoint, over a channel trusted as much as the key.
    pub allow_unsigned_tail: bool,
    /// Do not check evidence: for a log read from its tiles, which carry
    /// entries and hashes but not the raw evidence the entries name.
    pub without_evidence: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries, {} verified checkpoints: ",
            self.entries, self.checkpoints
        )?;
        if self.is_ok() {
            f.write_str("ok")?;
        } else {
            let n = self.problems.len();
            write!(f, "{n} problem{}", if n == 1 { "" } else { "s" })?;
        }
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}

/// Verify a bundle against the log's checkpoint key, strictly: entries that
/// no verified checkpoint covers are a [`ProblemKind::Uncovered`] problem.
///
/// Without a checkpoint obtained out of band, entries cut from the end of
/// the log together with every checkpoint that covers them cannot be
/// detected; see [`verify_bundle_with`].
pub fn verify_bundle(bundle: &Bundle, key: &VerifierKey) -> Report {
    verify_bundle_with(bundle, key, &VerifyOptions::default())
}

/// Verify a bundle against the log's checkpoint key with options: a
/// checkpoint obtained out of band ([`VerifyOptions::trusted`]), and whether
/// entries that no verified checkpoint covers are only a warning
/// ([`VerifyOptions::allow_unsigned_tail`]).
///
/// Checks, in order: indices (gaps are [`ProblemKind::Removed`], entries out
/// of place [`ProblemKind::Reordered`], repeated indices
/// [`ProblemKind::Inserted`]); the hash chain of `prev` (breaks are
/// [`ProblemKind::Altered`], naming the entry most likely changed); every
/// checkpoint's signature; every checkpoint's head against the head
/// recomputed from the entries it covers, and RFC 9162 consistency proofs
/// computed from the entries between checkpoints; that the bundle holds the
/// entries its largest checkpoint covers; that every entry is covered by a
/// verified checkpoint ([`ProblemKind::Uncovered`]); and that every
/// evidence digest an event names is present and hashes right.
pub fn verify_bundle_with(bundle: &Bundle, key: &VerifierKey, options: &VerifyOptions) -> Report {
    let mut v = Findings::default();
    let log = v.order(&bundle.entries);
    v.chain(&log);
    let contiguous = log
        .iter()
        .enumerate()
        .take_while(|(i, (e, _))| e.index == *i as u64)
        .count();
    let tree = Tree::new(log[..contiguous].iter().map(|(_, h)| *h).collect());
    let complete = contiguous == log.len();
    let (checkpoints, covered) = v.checkpoints(bundle, key, options.trusted, &tree, complete);
    let uncovered = v.uncovered(covered, &log, options.allow_unsigned_tail);
    if !options.without_evidence {
        v.evidence(bundle, &log);
    }
    v.problems.sort_by_key(|p| p.index.unwrap_or(u64::MAX));
    Report {
        entries: bundle.entries.len() as u64,
        checkpoints,
        problems: v.problems,
        warnings: v.warnings,
        uncovered,
    }
}

/// Which positions are out of order: those outside one longest
/// non-decreasing subsequence of the indices (patience sorting, O(n log n)).
/// So a swap names the two swapped entries, and an entry moved elsewhere
/// names that entry alone, not every entry it jumped over.
fn misplaced(indices: &[u64]) -> Vec<bool> {
    let n = indices.len();
    // tails[k]: the position ending the best non-decreasing run of length k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut parent: Vec<Option<usize>> = vec![None; n];
    for (p, &v) in indices.iter().enumerate() {
        let k = tails.partition_point(|&t| indices[t] <= v);
        parent[p] = k.checked_sub(1).map(|j| tails[j]);
        if k == tails.len() {
            tails.push(p);
        } else {
            tails[k] = p;
        }
    }
    let mut out = vec![true; n];
    let mut at = tails.last().copied();
    while let Some(p) = at {
        out[p] = false;
        at = parent[p];
    }
    out
}

fn parse_hash(s: &str) -> Option<Hash> {
    let mut h = [0; 32];
    (s.len() == 64 && hex::decode_to_slice(s, &mut h).is_ok()).then_some(h)
}

const ZERO: Hash = [0; 32];

/// One checkpoint whose signature verified.
struct Signed {
    size: u64,
    root: Hash,
    label: String,
}

#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Findings {
    fn problem(&mut self, index: Option<u64>, kind: ProblemKind, detail: String) {
        self.problems.push(Problem {
            index,
            kind,
            detail,
        });
    }

    /// Put the entries in index order, one per index, reporting entries out
    /// of place, repeated indices and gaps. Returns each kept entry with its
    /// leaf hash.
    fn order<'a>(&mut self, entries: &'a [Entry]) -> Vec<(&'a Entry, Hash)> {
        let n = entries.len();
        let indices: Vec<u64> = entries.iter().map(|e| e.index).collect();
        for (p, out) in misplaced(&indices).into_iter().enumerate() {
            if !out {
                continue;
            }
            let place = match (p.checked_sub(1).map(|q| indices[q]), indices.get(p + 1)) {
                (Some(a), Some(b)) => format!(", between entries {a} and {b}"),
                (Some(a), None) => format!(", after entry {a}"),
                (None, Some(b)) => format!(", before entry {b}"),
                (None, None) => String::new(),
            };
            self.problem(
                Some(indices[p]),
                ProblemKind::Reordered,
                format!(
                    "entry {} is at position {p} of the bundle{place}, out of index order",
                    indices[p]
                ),
            );
        }
        let mut sorted: Vec<usize> = (0..n).collect();
        sorted.sort_by_key(|&p| indices[p]);

        let mut log: Vec<(&Entry, Hash)> = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            let index = entries[sorted[i]].index;
            let mut j = i;
            while j < n && entries[sorted[j]].index == index {
                j += 1;
            }
            let group = &sorted[i..j];
            i = j;

            let expected = log.last().map_or(0, |(e, _)| e.index + 1);
            if index > expected {
                let detail = if index == expected + 1 {
                    format!("entry {expected} is missing")
                } else {
                    format!("entries {expected} to {} are missing", index - 1)
                };
                self.problem(Some(expected), ProblemKind::Removed, detail);
            }

            // Of several entries with one index, keep the one that links to
            // the entry before it; report the others.
            let want = if index == 0 {
                Some(ZERO)
            } else {
                log.last()
                    .filter(|(e, _)| e.index == index - 1)
                    .map(|(_, h)| *h)
            };
            let keep = want
                .and_then(|w| {
                    group
                        .iter()
                        .position(|&p| parse_hash(&entries[p].prev) == Some(w))
                })
                .unwrap_or(0);
            for (k, &p) in group.iter().enumerate() {
                if k != keep {
                    let copy = if entries[p] == entries[group[keep]] {
                        " (a copy)"
                    } else {
                        ""
                    };
                    self.problem(
                        Some(index),
                        ProblemKind::Inserted,
                        format!(
                            "a second entry with index {index}{copy} is at position {p} of the bundle"
                        ),
                    );
                }
            }
            let e = &entries[group[keep]];
            log.push((e, e.leaf_hash()));
        }
        log
    }

    /// Check every link of the hash chain between consecutive indices and
    /// name the entry most likely altered: when the links into and out of
    /// one entry both break, that entry (its `prev` was changed, so its hash
    /// changed too); when one link breaks, the entry before it (its content
    /// changed, or the `prev` after it did).
    fn chain(&mut self, log: &[(&Entry, Hash)]) {
        let mut broken = BTreeSet::new();
        for (j, (e, _)) in log.iter().enumerate() {
            let want = if e.index == 0 {
                Some(ZERO)
            } else if j > 0 && log[j - 1].0.index == e.index - 1 {
                Some(log[j - 1].1)
            } else {
                None // after a gap, already reported
            };
            if let Some(want) = want
                && parse_hash(&e.prev) != Some(want)
            {
                broken.insert(j);
            }
        }
        let mut skip = None;
        for &j in &broken {
            if skip == Some(j) {
                continue;
            }
            let e = log[j].0;
            let recorded = if parse_hash(&e.prev).is_some() {
                e.prev.clone()
            } else {
                format!("{:?} (not 64 hex digits)", e.prev)
            };
            if broken.contains(&(j + 1)) {
                skip = Some(j + 1);
                let next = log[j + 1].0;
                self.problem(
                    Some(e.index),
                    ProblemKind::Altered,
                    format!(
                        "entry {} records prev {recorded}, which is not the hash of the entry \
                         before it, and entry {} does not record the hash of entry {} \
                         ({}): entry {} was altered",
                        e.index,
                        next.index,
                        e.index,
                        hex::encode(log[j].1),
                        e.index
                    ),
                );
            } else if e.index == 0 {
                self.problem(
                    Some(0),
                    ProblemKind::Altered,
                    format!("entry 0 records prev {recorded} instead of 64 zeros"),
                );
            } else {
                let before = e.index - 1;
                self.problem(
                    Some(before),
                    ProblemKind::Altered,
                    format!(
                        "entry {} records prev {recorded}, but entry {before} hashes to {}: \
                         entry {before} (or the prev of entry {}) was altered",
                        e.index,
                        hex::encode(log[j - 1].1),
                        e.index
                    ),
                );
            }
        }
    }

    /// Verify the checkpoints and compare them with the entries; returns how
    /// many verified and the largest verified size (0 when none verified).
    fn checkpoints(
        &mut self,
        bundle: &Bundle,
        key: &VerifierKey,
        trusted: Option<&str>,
        tree: &Tree,
        complete: bool,
    ) -> (u64, u64) {
        let mut signed = Vec::new();
        for (n, note) in bundle.checkpoints.iter().enumerate() {
            match verify_checkpoint(note, key) {
                Ok(c) => signed.push(Signed {
                    size: c.size,
                    root: c.root,
                    label: format!("checkpoint {n} (size {})", c.size),
                }),
                Err(e) => self.problem(
                    None,
                    ProblemKind::BadCheckpointSignature,
                    format!("checkpoint {n} of the bundle: {e}"),
                ),
            }
        }
        if let Some(note) = trusted {
            match verify_checkpoint(note, key) {
                Ok(c) => signed.push(Signed {
                    size: c.size,
                    root: c.root,
                    label: format!("the trusted checkpoint (size {})", c.size),
                }),
                Err(e) => self.problem(
                    None,
                    ProblemKind::BadCheckpointSignature,
                    format!("the trusted checkpoint: {e}"),
                ),
            }
        }
        let count = signed.len() as u64;
        signed.sort_by_key(|c| c.size);
        let have = tree.len();

        // Entries cut from the end: only a checkpoint shows them. (After a
        // gap the missing entries are reported already, and heads beyond
        // the gap cannot be recomputed.)
        if complete && let Some(last) = signed.last().filter(|c| c.size > have) {
            self.problem(
                Some(have),
                ProblemKind::Removed,
                format!(
                    "{} is signed, but the bundle holds {have} entries: entries {have} to {} are missing",
                    last.label,
                    last.size - 1
                ),
            );
        }

        let checked: Vec<(&Signed, bool)> = signed
            .iter()
            .filter(|c| c.size <= have)
            .map(|c| (c, tree.root(c.size) == c.root))
            .collect();
        let last_match = checked.iter().rposition(|(_, ok)| *ok);
        let mut tail_mismatch: Option<(usize, u64, u64)> = None;
        for (i, &(cp, ok)) in checked.iter().enumerate() {
            if ok {
                // Consecutive matching checkpoints: the proof from the
                // entries must verify between the two signed heads.
                if let Some(&(prev, true)) = i.checked_sub(1).and_then(|k| checked.get(k)) {
                    self.consistent(tree, prev, cp);
                }
                continue;
            }
            // A mismatched checkpoint followed by one that matches the
            // entries: the entries are what the later one signs, so the two
            // signed heads contradict each other (a rewritten history).
            let later = checked
                .iter()
                .filter(|(c, ok)| *ok && c.size >= cp.size)
                .map(|(c, _)| *c)
                .next();
            if let Some(later) = later {
                self.consistent(tree, cp, later);
                continue;
            }
            // Beyond the last match: an entry after it changed. Report the
            // first such checkpoint with the range, and count the rest.
            match &mut tail_mismatch {
                Some((_, more, upto)) => {
                    *more += 1;
                    *upto = cp.size;
                }
                None => {
                    let from = last_match.map_or(0, |m| checked[m].0.size);
                    self.problem(
                        Some(from),
                        ProblemKind::CheckpointMismatch,
                        format!(
                            "{} signs head {}, but the first {} entries hash to {}: an entry from {from} to {} was altered, inserted or removed",
                            cp.label,
                            hex::encode(cp.root),
                            cp.size,
                            hex::encode(tree.root(cp.size)),
                            cp.size.saturating_sub(1)
                        ),
                    );
                    tail_mismatch = Some((self.problems.len() - 1, 0, cp.size));
                }
            }
        }
        if let Some((p, more, upto)) = tail_mismatch
            && more > 0
        {
            self.problems[p].detail +=
                &format!(" ({more} later checkpoints, up to size {upto}, do not match either)");
        }

        (count, signed.last().map_or(0, |c| c.size))
    }

    /// Report the entries at or after `covered`, the largest verified
    /// checkpoint size: a problem, or a warning when `allowed`. Returns
    /// their range, from `covered` to the last entry kept in index order.
    fn uncovered(
        &mut self,
        covered: u64,
        log: &[(&Entry, Hash)],
        allowed: bool,
    ) -> Option<Range<u64>> {
        let (last, _) = log.last()?;
        if last.index < covered {
            return None;
        }
        let (which, them) = if last.index == covered {
            (format!("entry {covered} is"), "it")
        } else {
            (format!("entries {covered} to {} are", last.index), "them")
        };
        let finding = Problem {
            index: Some(covered),
            kind: ProblemKind::Uncovered,
            detail: format!(
                "{which} not covered by any signed checkpoint: nothing signed vouches for \
                 {them}, and the hash chain alone does not stop a rewrite"
            ),
        };
        if allowed {
            self.warnings.push(finding);
        } else {
            self.problems.push(finding);
        }
        Some(covered..last.index + 1)
    }

    /// Verify the RFC 9162 consistency proof, computed from the entries,
    /// from `old` to `new`.
    fn consistent(&mut self, tree: &Tree, old: &Signed, new: &Signed) {
        let proof = tree
            .consistency_proof(old.size, new.size)
            .unwrap_or_default();
        if !verify_consistency(old.size, new.size, &old.root, &new.root, &proof) {
            self.problem(
                None,
                ProblemKind::Inconsistent,
                format!(
                    "{} signs head {}, and {} (which matches the entries) does not extend it: \
                     the log's key signed two different histories",
                    old.label,
                    hex::encode(old.root),
                    new.label
                ),
            );
        }
    }

    /// Check the evidence: every digest an event names is present, and
    /// every evidence hashes to its digest.
    fn evidence(&mut self, bundle: &Bundle, log: &[(&Entry, Hash)]) {
        let mut bad = BTreeMap::new();
        for (digest, b64) in &bundle.evidence {
            match B64.decode(b64) {
                Err(_) => {
                    bad.insert(digest.as_str(), "is not base64");
                }
                Ok(bytes) if hex::encode(sha256(&bytes)) != *digest => {
                    bad.insert(digest.as_str(), "does not hash to its digest");
                }
                Ok(_) => {}
            }
        }
        let mut named = BTreeSet::new();
        for (e, _) in log {
            let Some(d) = e.event.evidence_digest() else {
                continue;
            };
            if !bundle.evidence.contains_key(d) {
                self.problem(
                    Some(e.index),
                    ProblemKind::MissingEvidence,
                    format!(
                        "entry {} names evidence {d}, which the bundle lacks",
                        e.index
                    ),
                );
            } else if let Some(why) = bad.get(d) {
                named.insert(d);
                self.problem(
                    Some(e.index),
                    ProblemKind::EvidenceAltered,
                    format!("evidence {d}, named by entry {}, {why}", e.index),
                );
            }
        }
        for (d, why) in bad {
            if !named.contains(d) {
                self.problem(
                    None,
                    ProblemKind::EvidenceAltered,
                    format!("evidence {d} {why}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::misplaced;

    fn out(indices: &[u64]) -> Vec<u64> {
        misplaced(indices)
            .into_iter()
            .zip(indices)
            .filter(|(o, _)| *o)
            .map(|(_, i)| *i)
            .collect()
    }

    #[test]
    fn misplaced_names_the_moved_entries_only() {
        assert!(out(&[]).is_empty());
        assert!(out(&[0, 1, 2, 3]).is_empty());
        // A gap or a repeated index is not a reordering.
        assert!(out(&[0, 1, 3, 4, 4, 5]).is_empty());
        assert_eq!(out(&[0, 4, 2, 3, 1, 5]), vec![4, 1]);
        assert_eq!(out(&[0, 2, 3, 4, 5, 1]), vec![1]);
        assert_eq!(out(&[5, 0, 1, 2, 3, 4]), vec![5]);
        assert_eq!(out(&[1, 0]).len(), 1);
        assert_eq!(out(&[3, 2, 1, 0]).len(), 3);
    }
}
