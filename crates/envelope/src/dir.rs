//! Sealed directories (specification, section 7): one envelope per file plus
//! a sealed index that binds paths, sizes and the digests of the sealed
//! objects, so that files cannot be swapped, renamed, dropped, added or
//! replayed from an older version without detection.
//!
//! There are no key-manager variants (`seal_dir_with_header`,
//! `open_dir_with_file_key`): a sealed directory has no directory file key
//! from which object keys are derived. The index and every object are
//! envelopes of their own, each with its own header, salt and file key, so a
//! key manager would have to build or unwrap one header per file, and one
//! caller-supplied header and file key cannot seal a tree. Deriving object
//! keys from one directory key would change the format (a v2 matter).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::fs::IO_BUFFER_SIZE;
use crate::header::Header;
use crate::keys::Kek;
use crate::stream::{Opener, Sealer, open_bytes, seal_bytes};

/// Name of the sealed index inside a sealed directory.
pub const INDEX_FILE: &str = "index.twseal";
/// Name of the folder of sealed objects inside a sealed directory.
pub const OBJECTS_DIR: &str = "objects";

const KIND: &str = "twinseal.kind";
const DIR: &str = "twinseal.dir";
/// Largest index a reader loads into memory.
const MAX_INDEX_LEN: u64 = 256 << 20;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    version: u32,
    dir: String,
    entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    path: String,
    size: u64,
    object: String,
    sealed_sha256: String,
}

/// What sealing or opening a directory did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirSummary {
    /// Number of files.
    pub files: usize,
    /// Total plaintext bytes.
    pub bytes: u64,
    /// The random directory id.
    pub dir_id: String,
    /// SHA-256 (hex) of `index.twseal`: pins this exact version of the tree.
    /// Record it when sealing and compare it when opening to detect rollback
    /// of the whole directory.
    pub index_digest: String,
}

fn with_reserved(context: &Context, kind: &str, dir_id: &str) -> Result<Context> {
    if context.has_reserved_keys() {
        return Err(Error::InvalidContext(
            "keys starting with \"twinseal.\" are reserved".into(),
        ));
    }
    let mut full = context.clone();
    full.insert(KIND, kind)?;
    full.insert(DIR, dir_id)?;
    Ok(full)
}

/// Whether `path` looks like a sealed directory (holds an index file).
pub fn is_sealed_dir(path: &Path) -> bool {
    path.join(INDEX_FILE).is_file()
}

/// Seals the regular files under `input` into a new sealed directory at
/// `output` (which must not exist). The tree is built beside `output` and
/// renamed into place when complete.
///
/// The index and every object are envelopes of their own, each with its own
/// header and file key; there is no directory key. Hence there is no variant
/// for a key manager's header and file key (specification, section 9): a
/// tree of `n` files needs `n + 1` headers, not one.
pub fn seal_dir(
    input: &Path,
    output: &Path,
    keys: &[Kek],
    context: &Context,
) -> Result<DirSummary> {
    let mut files = Vec::new();
    walk(input, input, &mut files)?;
    files.sort();
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id)?;
    let dir_id = hex::encode(id);
    let object_context = with_reserved(context, "dir-object", &dir_id)?;
    let index_context = with_reserved(context, "dir-index", &dir_id)?;

    let temp = temp_dir_beside(output)?;
    let objects = temp.path().join(OBJECTS_DIR);
    fs::create_dir(&objects).map_err(Error::at(&objects))?;
    let mut entries = Vec::with_capacity(files.len());
    let mut bytes = 0;
    for (i, (rel, path)) in files.iter().enumerate() {
        let object = format!("{i:08}.twseal");
        let object_path = objects.join(&object);
        let source = File::open(path).map_err(Error::at(path))?;
        let mut source = BufReader::with_capacity(IO_BUFFER_SIZE, source);
        let sink = File::create_new(&object_path).map_err(Error::at(&object_path))?;
        let sink = BufWriter::with_capacity(IO_BUFFER_SIZE, sink);
        let mut sealer = Sealer::new(HashWriter::new(sink), keys, &object_context)?;
        let size = sealer
            .copy_from(&mut source)
            .map_err(Error::in_file(path))?;
        let sealed = sealer.finish().map_err(Error::in_file(&object_path))?;
        bytes += size;
        entries.push(Entry {
            path: rel.clone(),
            size,
            object,
            sealed_sha256: sealed.hex_digest(),
        });
    }
    let index = Index {
        version: 1,
        dir: dir_id.clone(),
        entries,
    };
    let json = serde_json::to_vec(&index).map_err(|e| Error::Io(e.into()))?;
    let sealed_index = seal_bytes(&json, keys, &index_context)?;
    let index_path = temp.path().join(INDEX_FILE);
    fs::write(&index_path, &sealed_index).map_err(Error::at(&index_path))?;
    commit_dir(temp, output)?;
    Ok(DirSummary {
        files: index.entries.len(),
        bytes,
        dir_id,
        index_digest: hex::encode(digest::digest(&digest::SHA256, &sealed_index)),
    })
}

/// Opens a sealed directory into a new directory at `output` (which must not
/// exist), checking every object against the index. Nothing appears at
/// `output` unless every file authenticated.
pub fn open_dir(
    input: &Path,
    output: &Path,
    keys: &[Kek],
    context: &Context,
) -> Result<DirSummary> {
    let index_path = input.join(INDEX_FILE);
    let sealed_index = read_index_file(&index_path)?;
    let header = Header::parse(&sealed_index)?;
    let dir_id = header
        .context()
        .get(DIR)
        .ok_or(Error::NotSealedDirectory("the index names no directory id"))?
        .to_owned();
    let index_context = with_reserved(context, "dir-index", &dir_id)?;
    let object_context = with_reserved(context, "dir-object", &dir_id)?;
    let json = open_bytes(&sealed_index, keys, &index_context)?;
    let index: Index =
        serde_json::from_slice(&json).map_err(|_| Error::InvalidIndex("not the index format"))?;
    check_index(&index, &dir_id)?;
    check_listing(input, &index)?;

    let temp = temp_dir_beside(output)?;
    let mut bytes = 0;
    for entry in &index.entries {
        let object_path = input.join(OBJECTS_DIR).join(&entry.object);
        let source = File::open(&object_path).map_err(Error::at(&object_path))?;
        let mut reader = HashReader::new(BufReader::with_capacity(IO_BUFFER_SIZE, source));
        let mut opener = Opener::new(&mut reader, keys, &object_context)?;
        let target = entry
            .path
            .split('/')
            .fold(temp.path().to_path_buf(), |p, c| p.join(c));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(Error::at(parent))?;
        }
        let mut sink = File::create_new(&target).map_err(Error::at(&target))?;
        let size = opener
            .copy_to(&mut sink)
            .map_err(Error::in_file(&object_path))?;
        drop(opener);
        if size != entry.size || reader.hex_digest() != entry.sealed_sha256 {
            return Err(Error::DecryptionFailed);
        }
        bytes += size;
    }
    commit_dir(temp, output)?;
    Ok(DirSummary {
        files: index.entries.len(),
        bytes,
        dir_id,
        index_digest: hex::encode(digest::digest(&digest::SHA256, &sealed_index)),
    })
}

/// Reads the public header of a sealed directory's index.
pub fn dir_header(input: &Path) -> Result<Header> {
    Header::parse(&read_index_file(&input.join(INDEX_FILE))?)
}

fn read_index_file(path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => Error::NotSealedDirectory("no index file"),
        _ => Error::at(path)(err),
    })?;
    let mut data = Vec::new();
    file.take(MAX_INDEX_LEN + 1)
        .read_to_end(&mut data)
        .map_err(Error::at(path))?;
    if data.len() as u64 > MAX_INDEX_LEN {
        return Err(Error::InvalidIndex("index file too large"));
    }
    Ok(data)
}

/// The rules of section 7 that an authenticated index must still meet.
fn check_index(index: &Index, dir_id: &str) -> Result<()> {
    if index.version != 1 {
        return Err(Error::InvalidIndex("unknown index version"));
    }
    if index.dir != dir_id {
        return Err(Error::DecryptionFailed);
    }
    let mut objects = BTreeSet::new();
    for (i, entry) in index.entries.iter().enumerate() {
        if !valid_path(&entry.path) {
            return Err(Error::InvalidIndex("unsafe or malformed path"));
        }
        if i > 0 && index.entries[i - 1].path.as_bytes() >= entry.path.as_bytes() {
            return Err(Error::InvalidIndex("entries not sorted by path"));
        }
        if !valid_object_name(&entry.object) || !objects.insert(entry.object.as_str()) {
            return Err(Error::InvalidIndex("bad or repeated object name"));
        }
    }
    // A file path must not also be a directory of another path ("a" and "a/b").
    for pair in index.entries.windows(2) {
        if pair[1].path.starts_with(&format!("{}/", pair[0].path)) {
            return Err(Error::InvalidIndex("a path is both a file and a directory"));
        }
    }
    Ok(())
}

/// The sealed directory holds the index, the objects folder and exactly the
/// objects the index names: a dropped or added file fails.
fn check_listing(input: &Path, index: &Index) -> Result<()> {
    let names = |dir: &Path| -> Result<BTreeSet<String>> {
        let mut names = BTreeSet::new();
        for item in fs::read_dir(dir).map_err(Error::at(dir))? {
            let item = item.map_err(Error::at(dir))?;
            names.insert(item.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    };
    let top = names(input)?;
    let expected_top: BTreeSet<String> = [INDEX_FILE, OBJECTS_DIR].map(String::from).into();
    let objects = if top.contains(OBJECTS_DIR) {
        names(&input.join(OBJECTS_DIR))?
    } else {
        BTreeSet::new()
    };
    let expected: BTreeSet<String> = index.entries.iter().map(|e| e.object.clone()).collect();
    let top_ok = top == expected_top || (expected.is_empty() && top.len() == 1);
    if !top_ok || objects != expected {
        return Err(Error::DecryptionFailed);
    }
    Ok(())
}

fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(['\0', '\\'])
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn valid_object_name(name: &str) -> bool {
    name.len() == 15
        && name.ends_with(".twseal")
        && name.as_bytes()[..8].iter().all(u8::is_ascii_digit)
}

/// Collects the regular files under `dir` as (relative path, full path).
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for item in fs::read_dir(dir).map_err(Error::at(dir))? {
        let item = item.map_err(Error::at(dir))?;
        let path = item.path();
        let kind = item.file_type().map_err(Error::at(&path))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let mut parts = Vec::new();
            for part in rel.components() {
                let part = part.as_os_str().to_str().ok_or(Error::UnsupportedFile {
                    path: path.clone(),
                    reason: "file name is not UTF-8",
                })?;
                parts.push(part);
            }
            let rel = parts.join("/");
            if !valid_path(&rel) {
                return Err(Error::UnsupportedFile {
                    path,
                    reason: "file name cannot be recorded",
                });
            }
            out.push((rel, path));
        } else {
            return Err(Error::UnsupportedFile {
                path,
                reason: "only regular files and directories can be sealed (no symbolic links or special files)",
            });
        }
    }
    Ok(())
}

fn temp_dir_beside(output: &Path) -> Result<tempfile::TempDir> {
    if output.symlink_metadata().is_ok() {
        return Err(Error::OutputExists(output.to_owned()));
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".twinseal-partial-")
        .tempdir_in(parent)
        .map_err(Error::at(parent))
}

fn commit_dir(temp: tempfile::TempDir, output: &Path) -> Result<()> {
    // Checked again just before the rename: on Linux a rename onto an empty
    // directory would replace it.
    if output.symlink_metadata().is_ok() {
        return Err(Error::OutputExists(output.to_owned()));
    }
    fs::rename(temp.path(), output).map_err(Error::at(output))?;
    // Renamed away: nothing left for the guard to delete.
    let _ = temp.keep();
    Ok(())
}

struct HashWriter<W> {
    inner: W,
    hash: digest::Context,
}

impl<W> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: digest::Context::new(&digest::SHA256),
        }
    }

    fn hex_digest(self) -> String {
        hex::encode(self.hash.finish())
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashReader<R> {
    inner: R,
    hash: digest::Context,
}

impl<R> HashReader<R> {
    fn new(inner: R) -> Self {
        HashReader {
            inner,
            hash: digest::Context::new(&digest::SHA256),
        }
    }

    fn hex_digest(&self) -> String {
        hex::encode(self.hash.clone().finish())
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
