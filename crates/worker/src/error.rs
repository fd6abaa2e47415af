//! The worker's error type and its HTTP mapping.
//!
//! Starting fails with an error that says which step failed (attestation,
//! key release, opening the model). Serving answers with the stable JSON
//! body `{"type", "detail"}`; 5xx details go to the log only.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use twinseal_api::{ErrorBody, error_type};

/// Result with the worker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Collecting evidence or attesting with the coordinator failed, or the
    /// coordinator refused the evidence (its reasons are in its audit log).
    #[error("attestation with the coordinator failed: {0}")]
    Attestation(#[source] twinseal_net::Error),
    /// The coordinator released no key material for the model key.
    #[error("the coordinator released no key {key:?} to this worker: {source}")]
    KeyRelease {
        /// The key name.
        key: String,
        /// The coordinator's answer.
        #[source]
        source: twinseal_net::Error,
    },
    /// The sealed model could not be opened with the released keys (wrong
    /// key, wrong context, or tampered bytes), or is not a model file.
    #[error("the sealed model was refused: {0}")]
    ModelRefused(String),
    /// The options are invalid.
    #[error("config: {0}")]
    Config(String),
    /// A crypto or certificate operation failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// A receipt does not verify under the given certificate.
    #[error("receipt rejected: {0}")]
    ReceiptRejected(&'static str),
    /// The request is malformed (JSON, base64, image).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The caller did not present a bearer token this operation accepts.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// The client may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The client sent more requests than its rate limit allows.
    #[error("too many requests")]
    TooManyRequests,
    /// The named thing (an enrolled identity, the gallery) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The worker cannot serve right now (its certificate expired).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Reading or writing the sealed gallery failed.
    #[error("gallery: {0}")]
    Gallery(String),
    /// A workflow job failed; the message names the step and never the
    /// data (it is reported to the coordinator, which ML engineers read).
    #[error("job: {0}")]
    Job(String),
    /// The request body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Something failed while serving; details are logged.
    #[error("internal: {0}")]
    Internal(String),
    /// Network I/O (binding, accepting).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<twinseal_net::guard::CpuPoolError> for Error {
    fn from(e: twinseal_net::guard::CpuPoolError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<twinseal_net::Error> for Error {
    fn from(e: twinseal_net::Error) -> Self {
        match e {
            twinseal_net::Error::Config(d) => Error::Config(d),
            twinseal_net::Error::Crypto(d) => Error::Crypto(d),
            twinseal_net::Error::ReceiptRejected(d) => Error::ReceiptRejected(d),
            e => Error::Internal(e.to_string()),
        }
    }
}

impl Error {
    /// The HTTP status and stable error body for this error.
    pub fn status_and_body(&self) -> (StatusCode, ErrorBody) {
        let (status, kind, detail) = match self {
            Error::BadRequest(d) => (StatusCode::BAD_REQUEST, error_type::BAD_REQUEST, d.clone()),
            Error::Unauthenticated(d) => (
                StatusCode::UNAUTHORIZED,
                error_type::UNAUTHENTICATED,
                (*d).to_string(),
            ),
            Error::NotFound(d) => (StatusCode::NOT_FOUND, error_type::NOT_FOUND, d.clone()),
            Error::Forbidden(d) => (StatusCode::FORBIDDEN, error_type::FORBIDDEN, d.clone()),
            Error::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                error_type::RATE_LIMITED,
                "too many requests: slow down".into(),
            ),
            Error::Unavailable(d) => (
                StatusCode::SERVICE_UNAVAILABLE,
                error_type::UNAVAILABLE,
                d.clone(),
            ),
            Error::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                error_type::PAYLOAD_TOO_LARGE,
                "request body too large".into(),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                error_type::INTERNAL,
                "internal error (see the worker's log)".into(),
            ),
        };
        (
            status,
            ErrorBody {
                kind: kind.into(),
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
        }
        (status, Json(body)).into_response()
    }
}
