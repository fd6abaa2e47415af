//! MNIST IDX files (`train-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, ...,
//! optionally gzipped), the format users of MNIST-like data already have.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Dataset, ImageSet};
use crate::{Error, Result};

/// Largest IDX image file accepted after decompression (1 GiB).
const MAX_IDX: u64 = 1 << 30;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an IDX image file (magic 0x00000803, unsigned bytes, n x rows x cols).
pub fn parse_idx_images(bytes: &[u8], name: &str) -> Result<(usize, usize, usize, Vec<f32>)> {
    if bytes.len() < 16 || be32(bytes, 0) != 0x0000_0803 {
        return Err(Error::dataset(
            name,
            "not an IDX image file (expected magic 0x00000803: unsigned bytes, 3 dimensions)",
        ));
    }
    let (n, rows, cols) = (
        be32(bytes, 4) as usize,
        be32(bytes, 8) as usize,
        be32(bytes, 12) as usize,
    );
    if rows == 0 || cols == 0 {
        return Err(Error::dataset(name, "IDX images have a zero dimension"));
    }
    let want = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .and_then(|v| v.checked_add(16));
    if want != Some(bytes.len()) {
        return Err(Error::dataset(
            name,
            format!(
                "header says {n} images of {rows}x{cols} but the file has {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok((
        n,
        rows,
        cols,
        bytes[16..].iter().map(|&b| b as f32 / 255.0).collect(),
    ))
}

/// Parses an IDX label file (magic 0x00000801, unsigned bytes).
pub fn parse_idx_labels(bytes: &[u8], name: &str) -> Result<Vec<u32>> {
    if bytes.len() < 8 || be32(bytes, 0) != 0x0000_0801 {
        return Err(Error::dataset(
            name,
            "not an IDX label file (expected magic 0x00000801)",
        ));
    }
    let n = be32(bytes, 4) as usize;
    if bytes.len() != 8 + n {
        return Err(Error::dataset(
            name,
            format!(
                "header says {n} labels but the file has {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(bytes[8..].iter().map(|&b| b as u32).collect())
}

fn find(dir: &Path, stem: &str, what: &str, idx: &str) -> Option<PathBuf> {
    // Both spellings in the wild: train-images-idx3-ubyte and train-images.idx3-ubyte.
    for sep in ["-", "."] {
        for gz in ["", ".gz"] {
            let p = dir.join(format!("{stem}-{what}{sep}{idx}-ubyte{gz}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The raw files of an IDX dataset (each plain or gzip), in memory.
#[derive(Debug, Clone, Default)]
pub struct IdxFiles {
    /// `train-images-idx3-ubyte` and `train-labels-idx1-ubyte`.
    pub train: (Vec<u8>, Vec<u8>),
    /// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, when present.
    pub test: Option<(Vec<u8>, Vec<u8>)>,
}

impl IdxFiles {
    /// Reads `DIR/train-*` and, when present, `DIR/t10k-*` (either
    /// spelling, plain or `.gz`).
    pub fn read_dir(dir: &Path) -> Result<IdxFiles> {
        let read = |stem: &str| -> Result<Option<(Vec<u8>, Vec<u8>)>> {
            let (Some(ip), Some(lp)) = (
                find(dir, stem, "images", "idx3"),
                find(dir, stem, "labels", "idx1"),
            ) else {
                return Ok(None);
            };
            Ok(Some((
                std::fs::read(&ip).map_err(|e| Error::io(&ip, e))?,
                std::fs::read(&lp).map_err(|e| Error::io(&lp, e))?,
            )))
        };
        let train = read("train")?.ok_or_else(|| {
            Error::dataset(
                dir,
                "no train-images-idx3-ubyte / train-labels-idx1-ubyte (optionally .gz) here",
            )
        })?;
        Ok(IdxFiles {
            train,
            test: read("t10k")?,
        })
    }
}

fn maybe_gz(raw: &[u8], name: &str) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw)
            .take(MAX_IDX)
            .read_to_end(&mut out)
            .map_err(|e| Error::dataset(name, format!("corrupt gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}

fn load_pair(
    (images, labels): &(Vec<u8>, Vec<u8>),
    name: &str,
    stem: &str,
    hasher: &mut Sha256,
) -> Result<ImageSet> {
    hasher.update(images);
    hasher.update(labels);
    let what = format!("{name} {stem} images");
    let (n, rows, cols, pixels) = parse_idx_images(&maybe_gz(images, &what)?, &what)?;
    let what = format!("{name} {stem} labels");
    let labels = parse_idx_labels(&maybe_gz(labels, &what)?, &what)?;
    if labels.len() != n {
        return Err(Error::dataset(
            name,
            format!("{stem}: {n} images but {} labels", labels.len()),
        ));
    }
    Ok(ImageSet {
        height: rows,
        width: cols,
        pixels,
        labels,
        classes: Vec::new(),
    })
}

/// Loads `DIR/train-*` and, when present, `DIR/t10k-*` (used as the test
/// split); without a t10k set the train set is split per class 80/20.
pub fn load_idx_dir(dir: &Path) -> Result<Dataset> {
    let files = IdxFiles::read_dir(dir)?;
    idx_dataset(&files, &format!("idx:{}", dir.display()))
}

/// An IDX dataset from its files in memory, named `name` (what
/// [`load_idx_dir`] does after reading them; the same digest).
pub fn idx_dataset(files: &IdxFiles, name: &str) -> Result<Dataset> {
    let mut hasher = Sha256::new();
    let train = load_pair(&files.train, name, "train", &mut hasher)?;
    let test = files
        .test
        .as_ref()
        .map(|t| load_pair(t, name, "t10k", &mut hasher))
        .transpose()?;
    let max_label = train
        .labels
        .iter()
        .chain(test.iter().flat_map(|t| t.labels.iter()))
        .copied()
        .max()
        .unwrap_or(0);
    if max_label > 100_000 {
        return Err(Error::dataset(
            name,
            format!("label {max_label} is out of range"),
        ));
    }
    let classes: Vec<String> = (0..=max_label).map(|l| l.to_string()).collect();
    let (train, test, split) = match test {
        Some(test) => {
            if (test.height, test.width) != (train.height, train.width) {
                return Err(Error::dataset(name, "train and t10k images differ in size"));
            }
            (
                ImageSet {
                    classes: classes.clone(),
                    ..train
                },
                ImageSet { classes, ..test },
                "the files' own train / t10k sets".to_string(),
            )
        }
        None => {
            let all = ImageSet { classes, ..train };
            let (a, b) = all.split_per_class(0.8);
            (
                a,
                b,
                "per class: first 80% train, the rest test".to_string(),
            )
        }
    };
    for (set, what) in [(&train, "train"), (&test, "test")] {
        if let Some(c) = set.class_counts().iter().position(|&c| c == 0) {
            return Err(Error::dataset(
                name,
                format!("class {c} has no {what} image"),
            ));
        }
    }
    Ok(Dataset {
        name: name.to_string(),
        sha256: hex::encode(hasher.finalize()),
        split,
        train,
        test,
    })
}
