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
//! - Keys held by a key manager (specification, section 9), with no change
//!   to the bytes on disk: the key manager, which holds the [`Kek`]s, builds
//!   a header with [`new_header`] or releases the [`FileKey`] of an existing
//!   header with [`Header::unwrap_file_key`] (which verifies the commitment
//!   and the header MAC first, so [`Header::context`] is authentic); the
//!   client, which holds only the file key, seals with
//!   [`Sealer::with_header`] or [`seal_bytes_with_header`] and opens with
//!   [`Opener::with_file_key`], [`SeekableOpener::with_file_key`] or
//!   [`open_bytes_with_file_key`]. [`Header::verify_with_file_key`] checks
//!   that a key belongs to a header. Sealed directories have no such entry
//!   points: every object has a file key of its own (see [`seal_dir`]).
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
//!
//! With a key manager, the KEK stays on the key manager's side:
//!
//! ```
//! use twinseal_envelope::{
//!     Context, FileKey, Header, Kek, SecretKey, new_header, open_bytes_with_file_key,
//!     seal_bytes_with_header,
//! };
//!
//! let kek = Kek::local(SecretKey::generate()?); // held by the key manager
//! let context = Context::from_pairs([("purpose", "model")])?;
//!
//! // Sealing: the key manager returns a header and its file key ...
//! let (header, file_key) = new_header(std::slice::from_ref(&kek), &context)?;
//! // ... and the client seals the payload with them.
//! let sealed = seal_bytes_with_header(b"weights", &header, &file_key)?;
//! drop(file_key);
//!
//! // Opening: the client sends the header; the key manager verifies it,
//! // checks the now authentic context against its policy, releases the key.
//! let header = Header::parse(&sealed)?;
//! let file_key = header.unwrap_file_key(std::slice::from_ref(&kek))?;
//! assert_eq!(header.context().get("purpose"), Some("model"));
//! let sent = *file_key.expose(); // over the authenticated channel only
//!
//! let file_key = FileKey::from_bytes(sent);
//! let opened = open_bytes_with_file_key(&sealed, &file_key, &context)?;
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
pub use header::{
    Header, MAGIC, MAX_HEADER_LEN, MAX_STANZAS, STANZA_AES256GCM, Stanza, VERSION, new_header,
};
pub use keys::{FileKey, KEY_LEN, Kek, KeyId, SecretKey};
pub use stream::{
    BATCH_SEGMENTS, Layout, Opener, SEALED_SEGMENT_SIZE, SEGMENT_SIZE, Sealer, SeekableOpener,
    TAG_SIZE, open_bytes, open_bytes_into, open_bytes_with_file_key, seal_bytes, seal_bytes_into,
    seal_bytes_with_header,
};
