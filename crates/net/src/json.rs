//! JSON bodies of the `/v1` APIs: the [`ApiJson`] extractor, whose
//! rejections are the stable JSON error body, and [`error_response`], the
//! one way twinseal servers answer with an error.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use twinseal_api::{ErrorBody, error_type};

/// The stable error answer `{"type", "detail"}` with `status`.
pub fn error_response(status: StatusCode, kind: &str, detail: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            kind: kind.to_string(),
            detail: detail.into(),
        }),
    )
        .into_response()
}

/// Why a JSON body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyRejection {
    /// Larger than the route's body limit.
    #[error("request body too large")]
    TooLarge,
    /// Not the JSON the route takes (the detail says where).
    #[error("bad request: {0}")]
    Bad(String),
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        // Never logged with its detail: it can quote the request body.
        match self {
            BodyRejection::TooLarge => {
                tracing::debug!(status = 413, "request refused");
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    error_type::PAYLOAD_TOO_LARGE,
                    "request body too large",
                )
            }
            BodyRejection::Bad(d) => {
                tracing::debug!(status = 400, "request refused");
                error_response(StatusCode::BAD_REQUEST, error_type::BAD_REQUEST, d)
            }
        }
    }
}

/// A JSON body whose rejections are stable JSON errors.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, BodyRejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(BodyRejection::TooLarge),
            Err(r) => Err(BodyRejection::Bad(r.body_text())),
        }
    }
}
