//! The coordinator's error type and its HTTP mapping.
//!
//! Outside, errors are coarse: an unauthenticated caller learns only
//! "unauthenticated", an attestation failure only "attestation rejected".
//! The reasons go to the log and the audit log. 5xx details never leave
//! the server.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use twinseal_api::{ErrorBody, error_type};

/// Result with the coordinator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing, unknown or revoked credentials.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request conflicts with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The key is disabled or destroyed.
    #[error("key unavailable: {0}")]
    KeyUnavailable(String),
    /// Attestation failed; the reasons are audited and logged only.
    #[error("attestation rejected")]
    AttestationRejected(Vec<String>),
    /// Manifest or policy denied the request; the reasons are audited.
    #[error("denied")]
    Denied(Vec<String>),
    /// The master key could not wrap or unwrap.
    #[error(transparent)]
    MasterKey(#[from] crate::master::MasterKeyError),
    /// Producing or checking evidence failed (the attesting side).
    #[error(transparent)]
    Attest(#[from] twinseal_attest::Error),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The database cannot be reached (or is restarting): the request was
    /// not carried out; retry later (503).
    #[error("database unavailable: {0}")]
    StoreUnavailable(String),
    /// The audit log failed (every state change is refused then).
    #[error("audit: {0}")]
    Audit(String),
    /// Configuration is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A crypto or certificate operation failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// File-system I/O.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A client call (the transport's client) failed, or a remote
    /// coordinator answered with an error.
    #[error(transparent)]
    Client(#[from] twinseal_net::Error),
    /// The request body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The request was abandoned (its caller went away or it timed out)
    /// and its work stopped.
    #[error("cancelled")]
    Cancelled,
    /// The caller sent more requests than its rate limit allows.
    #[error("too many requests")]
    TooManyRequests,
}

impl From<twinseal_sql::Error> for Error {
    fn from(e: twinseal_sql::Error) -> Self {
        match e.kind() {
            twinseal_sql::ErrorKind::Unavailable => Error::StoreUnavailable(e.to_string()),
            _ => Error::Store(e.to_string()),
        }
    }
}

impl From<crate::guard::CpuPoolError> for Error {
    fn from(e: crate::guard::CpuPoolError) -> Self {
        Error::Crypto(e.to_string())
    }
}

impl From<twinseal_audit::Error> for Error {
    fn from(e: twinseal_audit::Error) -> Self {
        match e {
            twinseal_audit::Error::Database(e) => e.into(),
            e => Error::Audit(e.to_string()),
        }
    }
}

impl Error {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The HTTP status and stable error body for this error.
    pub fn status_and_body(&self) -> (StatusCode, ErrorBody) {
        let (status, kind, detail) = match self {
            Error::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                error_type::UNAUTHENTICATED,
                "missing or invalid credentials".to_string(),
            ),
            Error::Forbidden(d) => (StatusCode::FORBIDDEN, error_type::FORBIDDEN, d.clone()),
            Error::NotFound(d) => (StatusCode::NOT_FOUND, error_type::NOT_FOUND, d.clone()),
            Error::BadRequest(d) => (StatusCode::BAD_REQUEST, error_type::BAD_REQUEST, d.clone()),
            Error::Conflict(d) => (StatusCode::CONFLICT, error_type::CONFLICT, d.clone()),
            Error::KeyUnavailable(d) => {
                (StatusCode::CONFLICT, error_type::KEY_UNAVAILABLE, d.clone())
            }
            Error::AttestationRejected(_) => (
                StatusCode::FORBIDDEN,
                error_type::ATTESTATION_REJECTED,
                "attestation rejected".to_string(),
            ),
            Error::Denied(_) => (
                StatusCode::FORBIDDEN,
                error_type::DENIED,
                "denied by the manifest or policy".to_string(),
            ),
            Error::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                error_type::PAYLOAD_TOO_LARGE,
                "request body too large".to_string(),
            ),
            Error::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                error_type::RATE_LIMITED,
                "too many requests: slow down".to_string(),
            ),
            Error::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                error_type::UNAVAILABLE,
                "shutting down".to_string(),
            ),
            Error::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                error_type::UNAVAILABLE,
                "the database is unavailable: nothing was done; retry later".to_string(),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                error_type::INTERNAL,
                "internal error (see the coordinator's log)".to_string(),
            ),
        };
        (
            status,
            ErrorBody {
                kind: kind.to_string(),
                detail,
            },
        )
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            // Never the detail: a refusal's detail can quote the request
            // body (a JSON error names the offending value).
            tracing::debug!(status = status.as_u16(), kind = %body.kind, "request refused");
        }
        (status, Json(body)).into_response()
    }
}
