//! The log as C2SP `tlog-tiles`: tile paths, tiles of hashes and entry
//! bundles, computing tiles from leaf hashes, and verifying a whole log
//! from its tiles (served by the coordinator or copied to a directory).
//! Specification: `docs/spec/tiles.md`.
//!
//! A tile at level `L` with index `N` holds up to 256 consecutive Merkle
//! tree hashes: at level 0 the leaf hashes of entries `N*256 ..`, at level
//! `L` the heads of the perfect subtrees of `256^L` leaves starting at
//! `(N*256 + i) * 256^L`. Full tiles hold 256 hashes; the rightmost tiles of
//! a tree are partial (`.p/<W>`, 1 to 255 hashes). An entry bundle holds the
//! entries of a level-0 tile, each as a big-endian `u16` length and the
//! entry's bytes (its canonical JSON, the leaf data).

use std::path::PathBuf;

use crate::bundle::{BUNDLE_VERSION, Bundle};
use crate::error::{Error, Result};
use crate::event::Entry;
use crate::merkle::{Hash, leaf_hash, node_hash};
use crate::note::{VerifierKey, verify_checkpoint};
use crate::verify::{Problem, ProblemKind, Report, VerifyOptions, verify_bundle_with};

/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 256;

/// The highest tile level a path may name (C2SP: 0 to 63).
pub const MAX_TILE_LEVEL: u8 = 63;

/// The longest tile path [`Tile::parse_path`] reads, in bytes.
pub const MAX_TILE_PATH_LEN: usize = 128;

/// The largest tile or entry bundle a reader accepts, in bytes: 256
/// entries of at most 65,535 bytes with their length prefixes.
pub const MAX_TILE_LEN: usize = 256 * (2 + 65_535);

/// What a tile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileKind {
    /// Merkle tree hashes at this level (0: leaf hashes).
    Hashes(u8),
    /// The entries of the level-0 tile of the same index.
    Entries,
}

/// One tile of the log: its kind, index and width (1 to 256; 256 is full).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    /// Hashes at a level, or an entry bundle.
    pub kind: TileKind,
    /// The index of the tile within its level.
    pub index: u64,
    /// How many hashes or entries it holds (1 to 256).
    pub width: u16,
}

fn bad_path(why: &str) -> Error {
    Error::InvalidTile(format!("tile path: {why}"))
}

/// `256^level` as leaves, or `None` beyond 64 bits.
fn leaves_per_hash(level: u8) -> Option<u64> {
    1u64.checked_shl(8 * u32::from(level)).filter(|_| level < 8)
}

impl Tile {
    /// The level of its hashes (0 for an entry bundle).
    pub fn level(&self) -> u8 {
        match self.kind {
            TileKind::Hashes(l) => l,
            TileKind::Entries => 0,
        }
    }

    /// Whether it holds 256 hashes or entries.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The leaves it spans, `start..end`, or `None` when that range is
    /// beyond 64-bit indices.
    pub fn span(&self) -> Option<(u64, u64)> {
        let per = leaves_per_hash(self.level())?;
        let start = self.index.checked_mul(TILE_WIDTH)?.checked_mul(per)?;
        let end = start.checked_add(u64::from(self.width).checked_mul(per)?)?;
        Some((start, end))
    }

    /// Its path under the log's prefix: `tile/<L>/<N>[.p/<W>]` or
    /// `tile/entries/<N>[.p/<W>]`, `<N>` in zero-padded groups of three
    /// digits, all but the last prefixed with `x`.
    pub fn path(&self) -> String {
        let mut groups = Vec::new();
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        let mut out = match self.kind {
            TileKind::Hashes(l) => format!("tile/{l}"),
            TileKind::Entries => "tile/entries".to_string(),
        };
        for (i, g) in groups.iter().enumerate().rev() {
            if i == 0 {
                out.push_str(&format!("/{g:03}"));
            } else {
                out.push_str(&format!("/x{g:03}"));
            }
        }
        if !self.is_full() {
            out.push_str(&format!(".p/{}", self.width));
        }
        out
    }

    /// Parse a path that [`Tile::path`] writes (untrusted input: a request
    /// path or a file name). Only the canonical form is accepted: no
    /// leading `x000` groups, no leading zeros in the level or width, a
    /// width of 1 to 255 after `.p/`, a level of 0 to 63.
    pub fn parse_path(path: &str) -> Result<Tile> {
        if path.len() > MAX_TILE_PATH_LEN {
            return Err(bad_path("too long"));
        }
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| bad_path("must start with tile/"))?;
        let (kind_s, rest) = rest
            .split_once('/')
            .ok_or_else(|| bad_path("no tile index"))?;
        let kind = if kind_s == "entries" {
            TileKind::Entries
        } else {
            let level = parse_small(kind_s).ok_or_else(|| bad_path("invalid level"))?;
            let level = u8::try_from(level)
                .ok()
                .filter(|l| *l <= MAX_TILE_LEVEL)
                .ok_or_else(|| bad_path("level above 63"))?;
            TileKind::Hashes(level)
        };
        let mut parts: Vec<&str> = rest.split('/').collect();
        let mut width = TILE_WIDTH as u16;
        if parts.len() >= 2 && parts[parts.len() - 2].ends_with(".p") {
            let w = parts.pop().unwrap_or_default();
            width = parse_small(w)
                .and_then(|w| u16::try_from(w).ok())
                .filter(|w| (1..TILE_WIDTH as u16).contains(w))
                .ok_or_else(|| bad_path("a partial width must be 1 to 255"))?;
            let last = parts.len() - 1;
            parts[last] = &parts[last][..parts[last].len() - 2];
        }
        let mut index: u64 = 0;
        for (i, part) in parts.iter().enumerate() {
            let digits = if i + 1 < parts.len() {
                part.strip_prefix('x')
                    .ok_or_else(|| bad_path("index groups before the last start with x"))?
            } else {
                part
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad_path("index groups are three digits"));
            }
            let g: u64 = digits.parse().map_err(|_| bad_path("index group"))?;
            index = index
                .checked_mul(1000)
                .and_then(|v| v.checked_add(g))
                .ok_or_else(|| bad_path("index beyond 64 bits"))?;
        }
        let tile = Tile { kind, index, width };
        if tile.path() != path {
            return Err(bad_path("not in canonical form"));
        }
        Ok(tile)
    }
}

/// A decimal without sign or leading zeros, at most three digits.
fn parse_small(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// Every tile of the tree of `size` leaves: the hash tiles of each level
/// (full, then the partial one if any) and the entry bundles, in an order
/// that fetches level 0 and the entries first.
pub fn tiles_for_size(size: u64) -> Vec<Tile> {
    let mut out = Vec::new();
    let mut level: u8 = 0;
    let mut n = size; // hashes at this level: size / 256^level
    while n > 0 {
        let full = n / TILE_WIDTH;
        let partial = (n % TILE_WIDTH) as u16;
        let mut push = |kind| {
            for index in 0..full {
                out.push(Tile {
                    kind,
                    index,
                    width: TILE_WIDTH as u16,
                });
            }
            if partial > 0 {
                out.push(Tile {
                    kind,
                    index: full,
                    width: partial,
                });
            }
        };
        push(TileKind::Hashes(level));
        if level == 0 {
            push(TileKind::Entries);
        }
        n = full;
        level += 1;
    }
    out
}

/// The head of a perfect subtree over `hashes` (a power of two of them).
fn perfect_root(hashes: &[Hash]) -> Hash {
    debug_assert!(hashes.len().is_power_of_two());
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
    }
    level[0]
}

/// The hashes of a hash tile computed from the leaf hashes it spans
/// (`leaves.len()` must be `width * 256^level`).
pub fn tile_from_leaves(level: u8, leaves: &[Hash]) -> Result<Vec<Hash>> {
    let per = leaves_per_hash(level)
        .and_then(|p| usize::try_from(p).ok())
        .ok_or_else(|| Error::InvalidTile(format!("level {level} is beyond this log")))?;
    if leaves.is_empty() || !leaves.len().is_multiple_of(per) || leaves.len() / per > 256 {
        return Err(Error::InvalidTile(format!(
            "{} leaves do not make a tile at level {level}",
            leaves.len()
        )));
    }
    Ok(leaves.chunks_exact(per).map(perfect_root).collect())
}

/// The hashes of a level-`level + 1` tile from the full tiles of
/// `level` below it, in order (each 256 hashes).
pub fn tile_from_children(children: &[Vec<Hash>]) -> Result<Vec<Hash>> {
    if children.is_empty() || children.len() > 256 {
        return Err(Error::InvalidTile("a tile has 1 to 256 children".into()));
    }
    children
        .iter()
        .map(|c| {
            if c.len() as u64 != TILE_WIDTH {
                return Err(Error::InvalidTile("a child tile is not full".into()));
            }
            Ok(perfect_root(c))
        })
        .collect()
}

/// A hash tile's bytes: its hashes concatenated.
pub fn encode_hash_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

/// Parse a hash tile of `width` hashes (untrusted bytes).
pub fn decode_hash_tile(bytes: &[u8], width: u16) -> Result<Vec<Hash>> {
    if bytes.len() != usize::from(width) * 32 {
        return Err(Error::InvalidTile(format!(
            "a tile of {width} hashes is {} bytes, not {}",
            usize::from(width) * 32,
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0; 32];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// An entry bundle: each entry as a big-endian `u16` length and its bytes.
/// Entries longer than 65,535 bytes cannot be bundled.
pub fn encode_entry_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for e in entries {
        let len = u16::try_from(e.len()).map_err(|_| Error::EntryTooLarge {
            len: e.len(),
            max: usize::from(u16::MAX),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Parse an entry bundle of exactly `width` entries (untrusted bytes): no
/// truncated entry, no bytes after the last.
pub fn decode_entry_bundle(bytes: &[u8], width: u16) -> Result<Vec<&[u8]>> {
    let mut out = Vec::with_capacity(usize::from(width));
    let mut rest = bytes;
    while !rest.is_empty() {
        if out.len() == usize::from(width) {
            return Err(Error::InvalidTile(format!(
                "the entry bundle has bytes after its {width} entries"
            )));
        }
        let [a, b, tail @ ..] = rest else {
            return Err(Error::InvalidTile(
                "the entry bundle ends inside a length".into(),
            ));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len {
            return Err(Error::InvalidTile(format!(
                "entry {} of the bundle is cut short",
                out.len()
            )));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    if out.len() != usize::from(width) {
        return Err(Error::InvalidTile(format!(
            "the entry bundle holds {} entries, not {width}",
            out.len()
        )));
    }
    Ok(out)
}

/// Where tiles come from: the coordinator over HTTPS, a directory, an S3
/// mirror. `fetch` takes `checkpoint` or a tile path and returns its bytes.
pub trait TileSource {
    /// The bytes at `path` under the log's prefix.
    fn fetch(&mut self, path: &str) -> Result<Vec<u8>>;
}

/// Tiles copied to a directory: `DIR/checkpoint`, `DIR/tile/...` (what
/// `twinseal audit mirror` writes, servable by any static web server).
#[derive(Clone, Debug)]
pub struct DirSource(pub PathBuf);

impl TileSource for DirSource {
    fn fetch(&mut self, path: &str) -> Result<Vec<u8>> {
        if path != "checkpoint" {
            Tile::parse_path(path)?;
        }
        let file = self.0.join(path);
        let meta = std::fs::metadata(&file)
            .map_err(|e| Error::TileUnavailable(format!("{}: {e}", file.display())))?;
        if meta.len() > MAX_TILE_LEN as u64 {
            return Err(Error::InvalidTile(format!(
                "{} is larger than any tile",
                file.display()
            )));
        }
        std::fs::read(&file).map_err(|e| Error::TileUnavailable(format!("{}: {e}", file.display())))
    }
}

/// Copy a log's tiles to a directory (`DIR/checkpoint`, `DIR/tile/...`),
/// which any static web server or object store can then serve. The
/// checkpoint must verify with `key`; it is written last, so the directory
/// never names a size whose tiles it lacks. Full tiles already in the
/// directory are kept (they never change), so mirroring again copies only
/// what is new. Returns the checkpoint's size. Nothing is verified beyond
/// the checkpoint's signature: run [`verify_tiles`] on the copy.
pub fn mirror(
    source: &mut dyn TileSource,
    key: &VerifierKey,
    dir: &std::path::Path,
) -> Result<u64> {
    let note_bytes = source.fetch("checkpoint")?;
    let note = std::str::from_utf8(&note_bytes)
        .map_err(|_| Error::InvalidTile("the checkpoint is not UTF-8".into()))?;
    let cp = verify_checkpoint(note, key)?;
    let io = |what: &std::path::Path, e: std::io::Error| {
        Error::TileUnavailable(format!("writing {}: {e}", what.display()))
    };
    for tile in tiles_for_size(cp.size) {
        let path = tile.path();
        let file = dir.join(&path);
        if tile.is_full() && file.is_file() {
            continue;
        }
        let bytes = source.fetch(&path)?;
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        write_replacing(&file, &bytes).map_err(|e| io(&file, e))?;
    }
    let file = dir.join("checkpoint");
    write_replacing(&file, &note_bytes).map_err(|e| io(&file, e))?;
    Ok(cp.size)
}

/// Write through a temporary file and a rename, so a reader never sees half a file.
fn write_replacing(file: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp-mirror");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

/// Verify a whole log from its tiles: the served checkpoint's signature;
/// every entry bundle up to its size (each entry strictly parsed and in
/// canonical form); then everything [`verify_bundle_with`] checks (indices,
/// hash chain, the checkpoint's tree head against the entries, and with
/// [`VerifyOptions::trusted`] consistency with a checkpoint obtained out of
/// band, which detects a rollback or a fork); and every hash tile against
/// the hashes of the entries it spans. Evidence is not in tiles and is not
/// checked.
///
/// Findings are in the report; `Err` only when a tile or the checkpoint
/// cannot be fetched or is malformed as a whole (wrong length, bad bundle
/// framing), which names the tile.
pub fn verify_tiles(
    source: &mut dyn TileSource,
    key: &VerifierKey,
    options: &VerifyOptions,
) -> Result<Report> {
    let note = String::from_utf8(source.fetch("checkpoint")?)
        .map_err(|_| Error::InvalidTile("the checkpoint is not UTF-8".into()))?;
    let cp = match verify_checkpoint(&note, key) {
        Ok(cp) => cp,
        Err(e) => {
            return Ok(Report {
                entries: 0,
                checkpoints: 0,
                problems: vec![Problem {
                    index: None,
                    kind: ProblemKind::BadCheckpointSignature,
                    detail: format!("the served checkpoint: {e}"),
                }],
                warnings: Vec::new(),
                uncovered: None,
            });
        }
    };
    let tiles = tiles_for_size(cp.size);
    let mut entries = Vec::new();
    let mut leaves: Vec<Hash> = Vec::new();
    let mut problems = Vec::new();
    for tile in tiles.iter().filter(|t| t.kind == TileKind::Entries) {
        let path = tile.path();
        let bytes = source.fetch(&path)?;
        let raw = decode_entry_bundle(&bytes, tile.width)
            .map_err(|e| Error::InvalidTile(format!("{path}: {e}")))?;
        for data in raw {
            let index = leaves.len() as u64;
            leaves.push(leaf_hash(data));
            match serde_json::from_slice::<Entry>(data) {
                Ok(entry) => {
                    if entry.canonical_bytes() != data {
                        problems.push(Problem {
                            index: Some(index),
                            kind: ProblemKind::TileMismatch,
                            detail: format!("{path} holds entry {index} not in canonical form"),
                        });
                    }
                    entries.push(entry);
                }
                Err(e) => problems.push(Problem {
                    index: Some(index),
                    kind: ProblemKind::Altered,
                    detail: format!("{path}: entry {index} does not parse: {e}"),
                }),
            }
        }
    }
    let bundle = Bundle {
        version: BUNDLE_VERSION,
        entries,
        checkpoints: vec![note],
        evidence: Default::default(),
    };
    let options = VerifyOptions {
        without_evidence: true,
        ..*options
    };
    let mut report = verify_bundle_with(&bundle, key, &options);
    for tile in tiles.iter().filter(|t| t.kind != TileKind::Entries) {
        let path = tile.path();
        let served = decode_hash_tile(&source.fetch(&path)?, tile.width)
            .map_err(|e| Error::InvalidTile(format!("{path}: {e}")))?;
        let (start, end) = tile
            .span()
            .ok_or_else(|| Error::InvalidTile(format!("{path} is beyond 64-bit indices")))?;
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            continue;
        };
        let Some(span) = leaves.get(start..end) else {
            continue; // the entries are short: reported as removed
        };
        let expected = tile_from_leaves(tile.level(), span)?;
        if let Some(i) = (0..expected.len()).find(|&i| expected[i] != served[i]) {
            let per = span.len() / expected.len();
            problems.push(Problem {
                index: Some((start + i * per) as u64),
                kind: ProblemKind::TileMismatch,
                detail: format!("{path}: hash {i} differs from the head of the entries it spans"),
            });
        }
    }
    report.problems.extend(problems);
    report.problems.sort_by_key(|p| p.index.unwrap_or(u64::MAX));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{Tree, root_from_leaves};

    fn t(kind: TileKind, index: u64, width: u16) -> Tile {
        Tile { kind, index, width }
    }

    #[test]
    fn paths_follow_the_c2sp_examples() {
        assert_eq!(
            t(TileKind::Hashes(0), 1_234_067, 256).path(),
            "tile/0/x001/x234/067"
        );
        assert_eq!(t(TileKind::Hashes(1), 0, 17).path(), "tile/1/000.p/17");
        assert_eq!(t(TileKind::Entries, 5, 256).path(), "tile/entries/005");
        assert_eq!(
            t(TileKind::Entries, 1000, 3).path(),
            "tile/entries/x001/000.p/3"
        );
        for tile in [
            t(TileKind::Hashes(0), 1_234_067, 256),
            t(TileKind::Hashes(63), u64::MAX, 255),
            t(TileKind::Entries, 1000, 3),
            t(TileKind::Hashes(2), 0, 1),
        ] {
            assert_eq!(Tile::parse_path(&tile.path()).unwrap(), tile);
        }
    }

    #[test]
    fn non_canonical_or_malformed_paths_are_refused() {
        for bad in [
            "",
            "checkpoint",
            "tile/",
            "tile/0",
            "tile/0/",
            "tile/00/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/0/0",
            "tile/0/0000",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/x1/002",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/07",
            "tile/0/000.p/",
            "tile/0/000.p",
            "tile/entry/000",
            "tile/entries/000.p/1/2",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/../../etc/passwd",
            "tile/0/ 01",
        ] {
            assert!(Tile::parse_path(bad).is_err(), "{bad:?} parsed");
        }
        let long = format!("tile/0/{}000", "x000/".repeat(40));
        assert!(Tile::parse_path(&long).is_err());
    }

    #[test]
    fn a_tree_of_70000_has_the_tiles_the_spec_lists() {
        let tiles = tiles_for_size(70_000);
        let count = |kind, full: bool| {
            tiles
                .iter()
                .filter(|t| t.kind == kind && t.is_full() == full)
                .count()
        };
        assert_eq!(count(TileKind::Hashes(0), true), 273);
        assert_eq!(count(TileKind::Entries, true), 273);
        let partial = |kind| {
            tiles
                .iter()
                .find(|t| t.kind == kind && !t.is_full())
                .unwrap()
                .width
        };
        assert_eq!(partial(TileKind::Hashes(0)), 112);
        assert_eq!(count(TileKind::Hashes(1), true), 1);
        assert_eq!(partial(TileKind::Hashes(1)), 17);
        assert_eq!(partial(TileKind::Hashes(2)), 1);
        assert_eq!(tiles.iter().filter(|t| t.level() == 3).count(), 0);
        let t256 = tiles_for_size(256);
        assert_eq!(
            t256,
            vec![
                t(TileKind::Hashes(0), 0, 256),
                t(TileKind::Entries, 0, 256),
                t(TileKind::Hashes(1), 0, 1)
            ]
        );
        assert!(tiles_for_size(0).is_empty());
    }

    #[test]
    fn tiles_hold_the_subtree_heads_the_tree_has() {
        let leaves: Vec<Hash> = (0..70_000u32)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        let tree = Tree::new(leaves.clone());
        let level1 = tile_from_leaves(1, &leaves[..65_536]).unwrap();
        assert_eq!(level1.len(), 256);
        assert_eq!(perfect_root(&level1), tree.root(65_536));
        assert_eq!(level1[3], root_from_leaves(&leaves[768..1024]));
        let children: Vec<Vec<Hash>> = leaves[..65_536]
            .chunks(256)
            .map(|c| tile_from_leaves(0, c).unwrap())
            .collect();
        assert_eq!(tile_from_children(&children).unwrap(), level1);
        assert!(tile_from_leaves(1, &leaves[..300]).is_err());
        assert!(tile_from_leaves(8, &leaves[..1]).is_err());
    }

    #[test]
    fn entry_bundles_round_trip_and_refuse_bad_bytes() {
        let entries: Vec<&[u8]> = vec![b"a", b"", b"hello"];
        let b = encode_entry_bundle(entries.iter().copied()).unwrap();
        assert_eq!(b, b"\x00\x01a\x00\x00\x00\x05hello");
        assert_eq!(decode_entry_bundle(&b, 3).unwrap(), entries);
        assert!(decode_entry_bundle(&b, 2).is_err(), "extra bytes");
        assert!(decode_entry_bundle(&b, 4).is_err(), "too few");
        assert!(decode_entry_bundle(&b[..b.len() - 1], 3).is_err(), "cut");
        assert!(decode_entry_bundle(b"\x00", 1).is_err(), "half a length");
        let big = vec![0u8; 65_536];
        assert!(encode_entry_bundle([big.as_slice()]).is_err());
        assert!(decode_hash_tile(&[0; 63], 2).is_err());
        assert_eq!(decode_hash_tile(&[7; 64], 2).unwrap(), vec![[7; 32]; 2]);
    }
}
