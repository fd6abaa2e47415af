//! The error type of the transport: what a client call or a TLS setup can
//! fail with. Servers map their own errors to HTTP; this type never holds
//! key material.

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong between twinseal parts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The remote side answered with an error.
    #[error("{status} {kind}: {detail}")]
    Remote {
        /// HTTP status.
        status: u16,
        /// The error class (`twinseal_api::error_type`).
        kind: String,
        /// The detail.
        detail: String,
    },
    /// The HTTP client failed (connection, TLS, decoding).
    #[error("http: {0}")]
    Http(String),
    /// A crypto or certificate operation failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// A configuration value (a root file, a pin) is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A worker's receipt does not verify, or is not bound to the exchange.
    #[error("receipt rejected: {0}")]
    ReceiptRejected(&'static str),
    /// Producing evidence failed (the attesting side).
    #[error(transparent)]
    Attest(#[from] twinseal_attest::Error),
}

impl Error {
    /// The HTTP status of a [`Error::Remote`] answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Remote { status, .. } => Some(*status),
            _ => None,
        }
    }
}
