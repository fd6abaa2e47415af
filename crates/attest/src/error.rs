//! The crate's error type.
//!
//! Verification failures are deliberately coarse when displayed
//! (`attestation rejected`): an unauthenticated peer must not learn which
//! check failed. The specific reason is kept as the error's `source()` and is
//! logged at `warn` level by the verifier, for the operator only.

use std::path::PathBuf;

use crate::claims::TeeKind;

/// Errors of the attestation crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Evidence did not verify (bad signature, chain, collateral, time,
    /// binding, replayed challenge, malformed bytes...). Detail in `source()`.
    #[error("attestation rejected")]
    Rejected(#[source] Reason),
    /// No verifier is enabled for this kind of evidence (for example
    /// simulated evidence without the explicit insecure option).
    #[error("attestation rejected")]
    NotEnabled(#[source] Reason),
    /// Collateral could not be read, parsed or found (an operator problem,
    /// not a verdict on the evidence).
    #[error("collateral unavailable: {0}")]
    Collateral(String),
    /// A file of the TEE interface or of the collateral cache could not be used.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No supported TEE interface was found under the given root.
    #[error("no TEE found: {0}")]
    NoTee(String),
    /// The TEE interface answered something unexpected.
    #[error("TEE interface error: {0}")]
    Interface(String),
    /// A certificate could not be built or parsed.
    #[error("certificate error: {0}")]
    Certificate(String),
    /// A key (simulated platform key) could not be generated or loaded. The
    /// message never contains key material.
    #[error("simulated platform key error: {0}")]
    Key(&'static str),
}

/// The detailed reason behind a rejection (for logs and internal callers).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reason(pub(crate) String);

impl Reason {
    /// The reason text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Error {
    /// Build a rejection for `kind`, logging the detail for the operator.
    pub(crate) fn rejected(kind: TeeKind, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        tracing::warn!(tee = %kind, reason = %detail, "attestation rejected");
        Error::Rejected(Reason(detail))
    }

    /// The detailed reason of a rejection, if this is one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Rejected(r) | Error::NotEnabled(r) => Some(r.as_str()),
            _ => None,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
