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
//! Every enrolment rewrites the sealed gallery before it is acknowledged;
//! if that fails the enrolment is rolled back in memory, so memory and
//! storage never disagree and nothing already stored is lost. Where:
//!
//! - a file of this worker's (temporary file, fsync, rename, fsync of the
//!   directory);
//! - or an object shared by every worker of the app (S3): an enrolment
//!   writes the object only if it is still the version this worker last
//!   read (`If-Match` on its ETag; `If-None-Match` for the first one);
//!   when another worker wrote first, it reads the new version, applies
//!   the enrolment to it and tries again (at most [`MAX_ATTEMPTS`] times),
//!   so concurrent enrolments on several workers all survive. Each worker
//!   checks the object's ETag every `refresh` (2 s by default) and reloads
//!   it when it changed: an enrolment on one worker is seen by the others
//!   within the refresh period plus one read.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use serde::{Deserialize, Serialize};
use twinseal_envelope::{Context, Kek};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::worker::{GalleryLocation, GalleryOptions};

/// Most tries of one enrolment into a shared gallery that other workers
/// keep writing first.
pub const MAX_ATTEMPTS: usize = 16;

/// Largest sealed gallery read from an object store, bytes.
const MAX_SEALED_BYTES: u64 = 1 << 30;

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

/// Where the sealed gallery is written.
enum Backend {
    File(PathBuf),
    Shared {
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
    },
}

/// The gallery in memory and the stored version it came from.
struct Current {
    file: GalleryFile,
    /// The shared object's version (none: not stored yet, or a file).
    version: Option<UpdateVersion>,
}

/// The open gallery.
pub(crate) struct Gallery {
    backend: Backend,
    display: String,
    keks: Vec<Kek>,
    context: Context,
    dim: usize,
    model_hex: String,
    data: Mutex<Current>,
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
    /// Opens the sealed gallery `opts.location` with `keks` (the current
    /// version last), or starts an empty one if it does not exist yet.
    pub(crate) async fn open(
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
        let display = opts.location.to_string();
        let (backend, sealed, version) = match &opts.location {
            GalleryLocation::File(path) => {
                let sealed = match std::fs::read(path) {
                    Ok(b) => Some(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => {
                        return Err(Error::Gallery(format!("reading {display}: {e}")));
                    }
                };
                (Backend::File(path.clone()), sealed, None)
            }
            GalleryLocation::Shared { store, path, .. } => {
                let path = ObjectPath::parse(path)
                    .map_err(|e| Error::Config(format!("gallery {display}: {e}")))?;
                crate::jobs::check_store(store.as_ref(), &display).await?;
                let (sealed, version) = match fetch(store.as_ref(), &path, &display).await? {
                    Some((b, v)) => (Some(b), Some(v)),
                    None => (None, None),
                };
                (
                    Backend::Shared {
                        store: store.clone(),
                        path,
                    },
                    sealed,
                    version,
                )
            }
        };
        let model_hex = hex::encode(model_sha256);
        let mut gallery = Gallery {
            backend,
            display,
            keks,
            context,
            dim,
            model_hex,
            data: Mutex::new(Current {
                file: GalleryFile::default(),
                version: None,
            }),
        };
        let file = match sealed {
            Some(sealed) => gallery.decode(&sealed, &opts.key)?,
            None => gallery.empty(),
        };
        let refs: usize = file.identities.values().map(Vec::len).sum();
        tracing::info!(
            gallery = %gallery.display,
            identities = file.identities.len(),
            references = refs,
            "gallery opened"
        );
        gallery.data = Mutex::new(Current { file, version });
        Ok(gallery)
    }

    fn empty(&self) -> GalleryFile {
        GalleryFile {
            format: GALLERY_FORMAT.into(),
            model_sha256: self.model_hex.clone(),
            dim: self.dim,
            identities: BTreeMap::new(),
        }
    }

    /// Opens and checks a sealed gallery.
    fn decode(&self, sealed: &[u8], key: &str) -> Result<GalleryFile> {
        let display = &self.display;
        let plain = Zeroizing::new(
            twinseal_envelope::open_bytes(sealed, &self.keks, &self.context).map_err(|e| {
                Error::Gallery(format!(
                    "{display} could not be opened with key {key:?}: {e}"
                ))
            })?,
        );
        let file: GalleryFile = serde_json::from_slice(&plain)
            .map_err(|e| Error::Gallery(format!("{display} is not a gallery: {e}")))?;
        if file.format != GALLERY_FORMAT {
            return Err(Error::Gallery(format!(
                "{display} has format {:?}; this worker reads {GALLERY_FORMAT}",
                file.format
            )));
        }
        if file.model_sha256 != self.model_hex || file.dim != self.dim {
            return Err(Error::Gallery(format!(
                "{display} was enrolled with model {}, but this worker serves model {}; \
                 embeddings of different models cannot be compared (enrol again into a new gallery)",
                file.model_sha256, self.model_hex
            )));
        }
        if file
            .identities
            .values()
            .flatten()
            .any(|e| e.len() != self.dim)
        {
            return Err(Error::Gallery(format!(
                "{display} holds embeddings of the wrong length"
            )));
        }
        Ok(file)
    }

    /// Reloads a shared gallery if another worker changed it (a no-op for
    /// a file, or while this worker is enrolling).
    pub(crate) async fn refresh(&self) -> Result<()> {
        let Backend::Shared { store, path } = &self.backend else {
            return Ok(());
        };
        let seen = match self.data.try_lock() {
            Ok(d) => d.version.as_ref().and_then(|v| v.e_tag.clone()),
            Err(_) => return Ok(()),
        };
        let head = match store.head(path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, gallery = %self.display, "gallery refresh failed");
                return Err(Error::Gallery(format!(
                    "{}: the object store failed",
                    self.display
                )));
            }
        };
        if head.e_tag.is_some() && head.e_tag == seen {
            return Ok(());
        }
        let Some((sealed, version)) = fetch(store.as_ref(), path, &self.display).await? else {
            return Ok(());
        };
        let file = self.decode(&sealed, "(the gallery key)")?;
        if let Ok(mut d) = self.data.try_lock()
            && d.version.as_ref().and_then(|v| v.e_tag.clone()) == seen
        {
            let refs: usize = file.identities.values().map(Vec::len).sum();
            tracing::info!(gallery = %self.display, references = refs, "gallery reloaded: another worker enrolled");
            *d = Current {
                file,
                version: Some(version),
            };
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `embeddings` (flat, `dim` each) under `identity`, then seals and
    /// writes the gallery; on a write failure the addition is undone. On a
    /// shared gallery this blocks the calling thread for the object
    /// store's round trips: call it off the async threads (the handler
    /// runs it on the CPU pool).
    pub(crate) fn enroll(&self, identity: &str, embeddings: &[f32]) -> Result<Enrolled> {
        check_identity(identity)?;
        let new: Vec<Vec<f32>> = embeddings
            .chunks_exact(self.dim)
            .map(<[f32]>::to_vec)
            .collect();
        let mut current = self.lock();
        match &self.backend {
            Backend::File(path) => {
                let mut next = current.file.clone();
                add(&mut next, identity, &new)?;
                self.persist_file(path, &self.seal(&next)?)?;
                current.file = next;
            }
            Backend::Shared { store, path } => {
                let handle = tokio::runtime::Handle::try_current().map_err(|_| {
                    Error::Internal("a shared gallery enrols inside the runtime".into())
                })?;
                handle.block_on(self.enroll_shared(
                    store.as_ref(),
                    path,
                    &mut current,
                    identity,
                    &new,
                ))?;
            }
        }
        let data = &current.file;
        tracing::info!(
            identity_count = data.identities.len(),
            added = new.len(),
            "enrolled"
        );
        Ok(Enrolled {
            references: data.identities[identity].len(),
            identities: data.identities.len(),
        })
    }

    /// Write `current` plus the addition if the object is still the
    /// version `current` came from; else read the newer one and try again.
    async fn enroll_shared(
        &self,
        store: &dyn ObjectStore,
        path: &ObjectPath,
        current: &mut Current,
        identity: &str,
        new: &[Vec<f32>],
    ) -> Result<()> {
        for attempt in 1..=MAX_ATTEMPTS {
            let mut next = current.file.clone();
            add(&mut next, identity, new)?;
            let sealed = self.seal(&next)?;
            let mode = match &current.version {
                Some(v) => PutMode::Update(v.clone()),
                None => PutMode::Create,
            };
            let put = store
                .put_opts(
                    path,
                    PutPayload::from(sealed),
                    PutOptions {
                        mode,
                        ..Default::default()
                    },
                )
                .await;
            match put {
                Ok(r) => {
                    current.file = next;
                    current.version = Some(UpdateVersion {
                        e_tag: r.e_tag,
                        version: r.version,
                    });
                    return Ok(());
                }
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => {
                    tracing::debug!(attempt, gallery = %self.display, "another worker enrolled first; merging");
                    match fetch(store, path, &self.display).await? {
                        Some((sealed, version)) => {
                            current.file = self.decode(&sealed, "(the gallery key)")?;
                            current.version = Some(version);
                        }
                        None => {
                            current.file = self.empty();
                            current.version = None;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, gallery = %self.display, "writing the gallery failed");
                    return Err(Error::Gallery(format!(
                        "{}: the object store failed; the enrolment was not stored",
                        self.display
                    )));
                }
            }
        }
        Err(Error::Gallery(format!(
            "{}: {MAX_ATTEMPTS} tries lost to other workers' enrolments; retry",
            self.display
        )))
    }

    fn seal(&self, data: &GalleryFile) -> Result<Vec<u8>> {
        let plain = Zeroizing::new(
            serde_json::to_vec(data).map_err(|e| Error::Gallery(format!("encoding: {e}")))?,
        );
        let current = self
            .keks
            .last()
            .ok_or_else(|| Error::Gallery("no gallery key".into()))?;
        twinseal_envelope::seal_bytes(&plain, std::slice::from_ref(current), &self.context)
            .map_err(|e| Error::Gallery(format!("sealing: {e}")))
    }

    fn persist_file(&self, path: &std::path::Path, sealed: &[u8]) -> Result<()> {
        let io = |what: &str, e: std::io::Error| {
            Error::Gallery(format!("{what} {}: {e}", path.display()))
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("writing next to", e))?;
        tmp.write_all(sealed).map_err(|e| io("writing", e))?;
        tmp.as_file().sync_all().map_err(|e| io("syncing", e))?;
        tmp.persist(path).map_err(|e| io("replacing", e.error))?;
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
        let current = self.lock();
        let data = &current.file;
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

/// Adds `new` references under `identity`, within the gallery's limit.
fn add(data: &mut GalleryFile, identity: &str, new: &[Vec<f32>]) -> Result<()> {
    let total: usize = data.identities.values().map(Vec::len).sum();
    if total + new.len() > MAX_REFERENCES {
        return Err(Error::BadRequest(format!(
            "the gallery holds at most {MAX_REFERENCES} references"
        )));
    }
    data.identities
        .entry(identity.to_string())
        .or_default()
        .extend(new.iter().cloned());
    Ok(())
}

/// Reads a shared gallery's sealed bytes and version (none: not stored
/// yet).
async fn fetch(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    name: &str,
) -> Result<Option<(Vec<u8>, UpdateVersion)>> {
    let r = match store.get(path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, gallery = name, "reading the gallery failed");
            return Err(Error::Gallery(format!("{name}: the object store failed")));
        }
    };
    if r.meta.size > MAX_SEALED_BYTES {
        return Err(Error::Gallery(format!(
            "{name}: larger than {MAX_SEALED_BYTES} bytes"
        )));
    }
    let version = UpdateVersion {
        e_tag: r.meta.e_tag.clone(),
        version: r.meta.version.clone(),
    };
    let bytes = r.bytes().await.map_err(|e| {
        tracing::warn!(error = %e, gallery = name, "reading the gallery failed");
        Error::Gallery(format!("{name}: the object store failed"))
    })?;
    Ok(Some((bytes.to_vec(), version)))
}
