//! The one error type of the crate.

/// Everything that can go wrong while writing, reading, signing or parsing
/// the audit log.
///
/// Verification of an export bundle does not fail with an error: it returns
/// a [`crate::Report`] listing every problem found. Errors are for calls that
/// cannot produce their result at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database refused a statement (including "no such table" when
    /// [`crate::AuditLog::init`] was not called).
    #[error("audit database error: {0}")]
    Database(#[from] twinseal_sql::Error),
    /// The stored log contradicts itself (an entry that does not parse, a
    /// frontier of the wrong length, a missing tree row).
    #[error("corrupt audit log: {0}")]
    Corrupt(String),
    /// A write was attempted outside a transaction.
    #[error("audit writes must run inside a transaction")]
    NotInTransaction,
    /// A time before 1970 or after year 9999.
    #[error("time out of range for an audit entry")]
    InvalidTime,
    /// The encoded entry is larger than [`crate::MAX_ENTRY_LEN`].
    #[error("audit entry too large ({len} bytes, at most {max})")]
    EntryTooLarge {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The evidence is larger than [`crate::MAX_EVIDENCE_LEN`].
    #[error("evidence too large ({len} bytes, at most {max})")]
    EvidenceTooLarge {
        /// The evidence length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An event names an evidence digest that was not stored with
    /// [`crate::AuditLog::append_evidence`] first.
    #[error("event names evidence {0} that the audit log does not hold")]
    UnknownEvidence(String),
    /// A proof was asked for an index or tree size the log does not have.
    #[error("invalid proof range: {0}")]
    InvalidRange(String),
    /// A note or key name is empty, contains white space or a plus sign.
    #[error("invalid name {0:?}: must be non-empty, without spaces or '+'")]
    InvalidName(String),
    /// A verifier key string does not follow `<name>+<hash>+<base64 key>`.
    #[error("invalid verifier key: {0}")]
    InvalidVerifierKey(&'static str),
    /// The signing key is not a usable Ed25519 PKCS#8 document.
    #[error("invalid checkpoint signing key")]
    InvalidSigningKey,
    /// The text is not a well-formed signed note.
    #[error("malformed signed note: {0}")]
    MalformedNote(&'static str),
    /// The note carries a signature line for the key, and it does not verify.
    #[error("checkpoint signature does not verify")]
    BadSignature,
    /// The note carries no signature line for the key.
    #[error("checkpoint is not signed by {0}")]
    NotSigned(String),
    /// The signed text is not a checkpoint of this log.
    #[error("invalid checkpoint: {0}")]
    InvalidCheckpoint(String),
    /// The bundle is not valid JSON of the bundle schema.
    #[error("invalid audit bundle: {0}")]
    InvalidBundle(String),
    /// The bundle is larger than the limit it was parsed with.
    #[error("audit bundle too large ({len} bytes, at most {max})")]
    BundleTooLarge {
        /// The input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bundle declares a format version this library cannot read.
    #[error("unsupported audit bundle version {0}")]
    UnsupportedBundleVersion(u64),
    /// A tile, tile path or entry bundle is malformed (C2SP tlog-tiles).
    #[error("invalid tile: {0}")]
    InvalidTile(String),
    /// A tile or checkpoint could not be fetched from where the log is
    /// served or copied.
    #[error("tile unavailable: {0}")]
    TileUnavailable(String),
    /// An `add-checkpoint` request body is malformed (C2SP tlog-witness).
    #[error("invalid add-checkpoint request: {0}")]
    InvalidWitnessRequest(String),
    /// Release transparency: the log does not approve what the worker
    /// attested under a checkpoint the client accepts.
    #[error("the worker's measurement is not approved in the transparency log: {0}")]
    NotApproved(String),
    /// The random number generator or a primitive failed unexpectedly.
    #[error("cryptographic primitive failed")]
    Crypto,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
