//! The sealed-file format of twinseal (specification:
//! `docs/spec/envelope-v1.md`).
//!
//! A sealed file is a public header (magic, version, per-file salt, recipient
//! stanzas that each wrap the random file key under a named key-encryption
//! key, an authenticated encryption context, a key commitment and a header
//! MAC) followed by the plaintext in 64 KiB AES-256-GCM segments with STREAM
//! nonces. This crate owns those bytes and nothing else: no network, no
//! configuration, no policy.
//!
//! - Streams: [`Sealer`] (a `Write`) and [`Opener`] (a `Read`), memory bounded
//!   by one batch of 16 segments (1 MiB) whatever the length.
//! - Random access: [`SeekableOpener`] (`Read + Seek`).
//! - Small objects: [`seal_bytes`] and [`open_bytes`].
//! - Files and trees: [`AtomicOutput`] (plaintext reaches its final path only
//!   after authentication), [`seal_dir`] and [`open_dir`].
//!
//! ```
//! use twinseal_envelope::{Context, Kek, SecretKey, open_bytes, seal_bytes};
//!
//! let key = Kek::local(SecretKey::generate()?);
//! let context = Context::from_pairs([("purpose", "model")])?;
//! let sealed = seal_bytes(b"weights", std::slice::from_ref(&key), &context)?;
//! let opened = open_bytes(&sealed, &[key], &context)?;
//! assert_eq!(opened, b"weights");
//! # Ok::<(), twinseal_envelope::Error>(())
//! ```

mod context;
mod dir;
mod error;
mod fs;
mod header;
mod keys;
mod stream;

pub use context::{
    Context, MAX_CONTEXT_KEY, MAX_CONTEXT_PAIRS, MAX_CONTEXT_VALUE, RESERVED_PREFIX,
};
pub use dir::{DirSummary, INDEX_FILE, OBJECTS_DIR, dir_header, is_sealed_dir, open_dir, seal_dir};
pub use error::{Error, Result};
pub use fs::{AtomicOutput, IO_BUFFER_SIZE, Inspection, inspect};
pub use header::{Header, MAGIC, MAX_HEADER_LEN, MAX_STANZAS, STANZA_AES256GCM, Stanza, VERSION};
pub use keys::{KEY_LEN, Kek, KeyId, SecretKey};
pub use stream::{
    BATCH_SEGMENTS, Layout, Opener, SEALED_SEGMENT_SIZE, SEGMENT_SIZE, Sealer, SeekableOpener,
    TAG_SIZE, open_bytes, open_bytes_into, seal_bytes, seal_bytes_into,
};
