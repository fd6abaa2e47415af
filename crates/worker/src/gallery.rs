//! The enrolment gallery: embeddings of reference images by identity, kept
//! in memory and sealed at rest under a coordinator key.
//!
//! The sealed file is an envelope (context `purpose=gallery`, `app=<app>`)
//! around JSON:
//!
//! ```json
//! {"format":"twinseal-gallery/1","model_sha256":"<hex>","dim":10,
//!  "identities":{"alice":[[0.1, ...], ...]}}
//! ```
//!
//! Only embeddings are kept, never the images. Embeddings depend on the
//! model, so a gallery enrolled with another model is refused at start with
//! a clear error rather than giving wrong answers.
//!
//! Every enrolment rewrites the sealed file (temporary file, fsync, rename,
//! fsync of the directory) before it is acknowledged; if that fails the
//! enrolment is rolled back in memory, so memory and disk never disagree
//! and nothing already stored is lost.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use twinseal_envelope::{Context, Kek};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::worker::GalleryOptions;

/// The gallery file format this crate writes.
pub const GALLERY_FORMAT: &str = "twinseal-gallery/1";

/// Largest number of references the gallery holds.
pub const MAX_REFERENCES: usize = 100_000;

/// Longest identity name, in characters.
pub const MAX_IDENTITY_CHARS: usize = 128;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GalleryFile {
    format: String,
    model_sha256: String,
    dim: usize,
    identities: BTreeMap<String, Vec<Vec<f32>>>,
}

/// The open gallery.
pub(crate) struct Gallery {
    path: PathBuf,
    keks: Vec<Kek>,
    context: Context,
    dim: usize,
    data: Mutex<GalleryFile>,
}

/// The outcome of an enrolment.
pub(crate) struct Enrolled {
    pub(crate) references: usize,
    pub(crate) identities: usize,
}

/// An identity's closest reference to a probe.
pub(crate) struct Closest {
    pub(crate) identity: String,
    pub(crate) embedding: Vec<f32>,
}

/// Checks an identity name: 1 to 128 characters, no control characters.
pub(crate) fn check_identity(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_IDENTITY_CHARS || name.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!(
            "identity names have 1 to {MAX_IDENTITY_CHARS} characters and no control characters"
        )));
    }
    Ok(())
}

fn sq_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

impl Gallery {
    /// Opens the sealed gallery at `opts.path` with `keks` (the current
    /// version last), or starts an empty one if the file does not exist.
    pub(crate) fn open(
        opts: &GalleryOptions,
        keks: Vec<Kek>,
        app: &str,
        model_sha256: [u8; 32],
        dim: usize,
    ) -> Result<Gallery> {
        let mut context = Context::new();
        context
            .insert("purpose", "gallery")
            .and_then(|_| context.insert("app", app))
            .map_err(|e| Error::Config(format!("gallery context: {e}")))?;
        let model_hex = hex::encode(model_sha256);
        let data = match std::fs::read(&opts.path) {
            Ok(sealed) => {
                let plain = Zeroizing::new(
                    twinseal_envelope::open_bytes(&sealed, &keks, &context).map_err(|e| {
                        Error::Gallery(format!(
                            "{} could not be opened with key {:?}: {e}",
                            opts.path.display(),
                            opts.key
                        ))
                    })?,
                );
                let file: GalleryFile = serde_json::from_slice(&plain).map_err(|e| {
                    Error::Gallery(format!("{} is not a gallery: {e}", opts.path.display()))
                })?;
                if file.format != GALLERY_FORMAT {
                    return Err(Error::Gallery(format!(
                        "{} has format {:?}; this worker reads {GALLERY_FORMAT}",
                        opts.path.display(),
                        file.format
                    )));
                }
                if file.model_sha256 != model_hex || file.dim != dim {
                    return Err(Error::Gallery(format!(
                        "{} was enrolled with model {}, but this worker serves model {model_hex}; \
                         embeddings of different models cannot be compared (enrol again into a new gallery)",
                        opts.path.display(),
                        file.model_sha256
                    )));
                }
                if file.identities.values().flatten().any(|e| e.len() != dim) {
                    return Err(Error::Gallery(format!(
                        "{} holds embeddings of the wrong length",
                        opts.path.display()
                    )));
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => GalleryFile {
                format: GALLERY_FORMAT.into(),
                model_sha256: model_hex,
                dim,
                identities: BTreeMap::new(),
            },
            Err(e) => {
                return Err(Error::Gallery(format!(
                    "reading {}: {e}",
                    opts.path.display()
                )));
            }
        };
        let refs: usize = data.identities.values().map(Vec::len).sum();
        tracing::info!(
            path = %opts.path.display(),
            identities = data.identities.len(),
            references = refs,
            "gallery opened"
        );
        Ok(Gallery {
            path: opts.path.clone(),
            keks,
            context,
            dim,
            data: Mutex::new(data),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GalleryFile> {
        self.data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `embeddings` (flat, `dim` each) under `identity`, then seals and
    /// writes the gallery; on a write failure the addition is undone.
    pub(crate) fn enroll(&self, identity: &str, embeddings: &[f32]) -> Result<Enrolled> {
        check_identity(identity)?;
        let new: Vec<Vec<f32>> = embeddings
            .chunks_exact(self.dim)
            .map(<[f32]>::to_vec)
            .collect();
        let mut data = self.lock();
        let total: usize = data.identities.values().map(Vec::len).sum();
        if total + new.len() > MAX_REFERENCES {
            return Err(Error::BadRequest(format!(
                "the gallery holds at most {MAX_REFERENCES} references"
            )));
        }
        let added = new.len();
        let entry = data.identities.entry(identity.to_string()).or_default();
        let before = entry.len();
        entry.extend(new);
        if let Err(e) = self.persist(&data) {
            let entry = data.identities.get_mut(identity).expect("just inserted");
            entry.truncate(before);
            if entry.is_empty() {
                data.identities.remove(identity);
            }
            return Err(e);
        }
        tracing::info!(identity_count = data.identities.len(), added, "enrolled");
        Ok(Enrolled {
            references: data.identities[identity].len(),
            identities: data.identities.len(),
        })
    }

    fn persist(&self, data: &GalleryFile) -> Result<()> {
        let plain = Zeroizing::new(
            serde_json::to_vec(data).map_err(|e| Error::Gallery(format!("encoding: {e}")))?,
        );
        let current = self
            .keks
            .last()
            .ok_or_else(|| Error::Gallery("no gallery key".into()))?;
        let sealed =
            twinseal_envelope::seal_bytes(&plain, std::slice::from_ref(current), &self.context)
                .map_err(|e| Error::Gallery(format!("sealing: {e}")))?;
        let io = |what: &str, e: std::io::Error| {
            Error::Gallery(format!("{what} {}: {e}", self.path.display()))
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("writing next to", e))?;
        tmp.write_all(&sealed).map_err(|e| io("writing", e))?;
        tmp.as_file().sync_all().map_err(|e| io("syncing", e))?;
        tmp.persist(&self.path)
            .map_err(|e| io("replacing", e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The closest reference of `identity` (1:1), or of every identity
    /// (1:N).
    ///
    /// A 1:1 probe of an identity that is not enrolled is scored the same
    /// way against a decoy: the closest reference of an enrolled identity
    /// picked by a hash of the asked name (or, in an empty gallery, the
    /// probe reversed), labelled with the asked name and flagged, so that
    /// the caller can answer exactly like a non-match and nobody learns who
    /// is enrolled by asking.
    pub(crate) fn closest(&self, probe: &[f32], identity: Option<&str>) -> (Vec<Closest>, bool) {
        let data = self.lock();
        let best = |name: &String, refs: &Vec<Vec<f32>>| {
            refs.iter()
                .min_by(|a, b| sq_distance(a, probe).total_cmp(&sq_distance(b, probe)))
                .map(|e| Closest {
                    identity: name.clone(),
                    embedding: e.clone(),
                })
        };
        match identity {
            Some(name) => match data.identities.get_key_value(name) {
                Some((n, refs)) => (best(n, refs).into_iter().collect(), false),
                None => {
                    use sha2::Digest;
                    let h = sha2::Sha256::digest(name.as_bytes());
                    let pick = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
                    let n = data.identities.len() as u64;
                    let embedding = data
                        .identities
                        .values()
                        .nth(if n == 0 { 0 } else { (pick % n) as usize })
                        .and_then(|refs| best(&String::new(), refs))
                        .map(|c| c.embedding)
                        .unwrap_or_else(|| probe.iter().map(|v| -v).collect());
                    let decoy = Closest {
                        identity: name.to_string(),
                        embedding,
                    };
                    (vec![decoy], true)
                }
            },
            None => (
                data.identities
                    .iter()
                    .filter_map(|(n, r)| best(n, r))
                    .collect(),
                false,
            ),
        }
    }
}
