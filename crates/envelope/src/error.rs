//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while sealing or opening.
///
/// The variants before [`Error::DecryptionFailed`] describe public bytes only
/// (the magic, the version, the header structure, the context, the key ids),
/// so naming them leaks nothing. Every failure that involves a secret (wrong
/// key, modified header, commitment, modified, reordered, truncated or
/// extended payload, a sealed directory that does not match its index) is the
/// single coarse [`Error::DecryptionFailed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input does not start with the twinseal magic bytes.
    #[error("not a twinseal file")]
    NotTwinseal,
    /// The version byte names a format version this library cannot read.
    #[error("unsupported twinseal format version {0}")]
    UnsupportedVersion(u8),
    /// The public header breaks the structure rules of the specification.
    #[error("invalid header: {0}")]
    InvalidHeader(&'static str),
    /// The encryption context required by the caller is not the one in the
    /// header.
    #[error("encryption context mismatch")]
    ContextMismatch,
    /// No stanza of the header names a key the caller holds.
    #[error("no stanza for this key")]
    NoStanza,
    /// Authentication failed. Deliberately says nothing about which check.
    #[error("decryption failed")]
    DecryptionFailed,
    /// An encryption context pair breaks the rules of the specification.
    #[error("invalid encryption context: {0}")]
    InvalidContext(String),
    /// A key id is empty, too long or not printable ASCII.
    #[error("invalid key id (1 to 255 printable ASCII characters)")]
    InvalidKeyId,
    /// A key file does not hold exactly 32 bytes.
    #[error("invalid key file: {0}")]
    InvalidKeyFile(&'static str),
    /// The keys given for sealing are unusable (none, too many, duplicate ids).
    #[error("invalid recipients: {0}")]
    InvalidRecipients(&'static str),
    /// The directory is not a sealed directory (no index, or the index header
    /// lacks the directory id).
    #[error("not a sealed directory: {0}")]
    NotSealedDirectory(&'static str),
    /// The index of a sealed directory authenticated but breaks the rules
    /// (bad path, unsorted entries, bad object name).
    #[error("invalid sealed directory index: {0}")]
    InvalidIndex(&'static str),
    /// A file cannot be put in a sealed directory.
    #[error("cannot seal {}: {reason}", path.display())]
    UnsupportedFile {
        /// The offending path.
        path: PathBuf,
        /// Why it cannot be sealed.
        reason: &'static str,
    },
    /// The output path already exists; nothing is ever overwritten.
    #[error("{} already exists", .0.display())]
    OutputExists(PathBuf),
    /// The random number generator or a primitive failed unexpectedly.
    #[error("cryptographic primitive failed")]
    Crypto,
    /// An I/O error on a named path.
    #[error("{}: {source}", path.display())]
    File {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Any other I/O error.
    #[error("i/o error: {0}")]
    Io(io::Error),
}

impl Error {
    /// Attaches a path to an I/O error, keeping format errors as they are.
    pub(crate) fn at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        move |err| match Error::from(err) {
            Error::Io(source) => Error::File {
                path: path.into(),
                source,
            },
            other => other,
        }
    }

    /// Like [`Error::at`] for errors that are already ours.
    pub(crate) fn in_file(path: impl Into<PathBuf>) -> impl FnOnce(Error) -> Error {
        move |err| match err {
            Error::Io(source) => Error::File {
                path: path.into(),
                source,
            },
            other => other,
        }
    }

    /// Wraps the error for the `Read`/`Write` traits; [`From<io::Error>`]
    /// unwraps it again.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Error::Io(err) => err,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        if !err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Error::Io(err);
        }
        match err.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(ours)) => *ours,
            // Unreachable: the check above saw an `Error` inside.
            _ => Error::Crypto,
        }
    }
}

impl From<aws_lc_rs::error::Unspecified> for Error {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        Error::Crypto
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
