//! Image folders: `ROOT/<identity>/<image>.png|jpg|jpeg`, the natural layout
//! for signatures or faces. Identities and files are taken in name order.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Dataset, ImageSet, decode_image};
use crate::{Error, Result};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// Loads every identity folder under `root`, converting images to grey
/// `height x width`; per identity, the first 80% of its images (name order)
/// train and the rest test. Errors name the file or folder at fault.
pub fn load_folder(root: &Path, height: usize, width: usize) -> Result<Dataset> {
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    dirs.sort_by_key(|e| e.file_name());
    if dirs.is_empty() {
        return Err(Error::dataset(
            root,
            "no identity folders (expected ROOT/<identity>/<image>.png|jpg)",
        ));
    }
    let mut all = ImageSet {
        height,
        width,
        ..Default::default()
    };
    let mut hasher = Sha256::new();
    for (label, dir) in dirs.iter().enumerate() {
        let name = dir.file_name().to_string_lossy().into_owned();
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .map_err(|e| Error::io(dir.path(), e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::dataset(
                dir.path(),
                format!("identity {name:?} has no PNG or JPEG image (empty class)"),
            ));
        }
        for f in &files {
            let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
            let rel = f
                .strip_prefix(root)
                .unwrap_or(f)
                .to_string_lossy()
                .into_owned();
            hasher.update((rel.len() as u64).to_le_bytes());
            hasher.update(rel.as_bytes());
            hasher.update(Sha256::digest(&bytes));
            all.pixels.extend(decode_image(
                &bytes,
                height,
                width,
                &f.display().to_string(),
            )?);
            all.labels.push(label as u32);
        }
        all.classes.push(name);
    }
    let (train, test) = all.split_per_class(0.8);
    Ok(Dataset {
        name: format!("folder:{}", root.display()),
        sha256: hex::encode(hasher.finalize()),
        split: "per identity: first 80% of its images (name order) train, the rest test".into(),
        train,
        test,
    })
}
