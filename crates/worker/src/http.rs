//! The worker's HTTP surface: `app(state) -> Router` with `/v1/compare`,
//! `/v1/embed`, `/v1/info` and `/v1/openapi.json`. Handlers decode the
//! wire types of `twinseal-api`, run the model on a blocking thread and
//! sign a receipt for every answer.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use twinseal_api as api;

use crate::error::{Error, Result};
use crate::receipt::{InputKind, inputs_digest};
pub use crate::worker::AppState;

/// A JSON body whose rejections are stable JSON errors.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Error::PayloadTooLarge),
            Err(r) => Err(Error::BadRequest(r.body_text())),
        }
    }
}

/// The router with every worker route and the layers for body size,
/// timeouts, concurrency and tracing.
pub fn app(state: AppState) -> Router {
    let limits = state.limits.clone();
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/compare", post(compare))
        .route("/v1/embed", post(embed))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(api::ErrorBody {
                    kind: api::error_type::NOT_FOUND.into(),
                    detail: "no such endpoint".into(),
                }),
            )
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(api::ErrorBody {
                    kind: api::error_type::BAD_REQUEST.into(),
                    detail: "method not allowed".into(),
                }),
            )
        })
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(limits.request_timeout_secs),
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn info(State(s): State<AppState>) -> Json<api::WorkerInfo> {
    Json(s.info())
}

async fn openapi() -> Response {
    let body = serde_json::to_vec(&api::worker_openapi()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An image from the wire: its kind and bytes (after base64).
struct Input {
    kind: InputKind,
    bytes: Vec<u8>,
}

fn decode_wire(img: &api::ImageWire, name: &str) -> Result<Input> {
    let (kind, b64) = match img {
        api::ImageWire::Png(s) | api::ImageWire::Jpeg(s) => (InputKind::Encoded, s),
        api::ImageWire::Raw(s) => (InputKind::Raw, s),
    };
    let bytes = B64
        .decode(b64.as_bytes())
        .map_err(|_| Error::BadRequest(format!("image {name} is not valid base64")))?;
    Ok(Input { kind, bytes })
}

/// Pixels in 0..1 of the model's input size, converted as its config says.
fn pixels(state: &AppState, input: &Input, name: &str) -> Result<Vec<f32>> {
    let t = &state.model.config().tower;
    match input.kind {
        InputKind::Raw => {
            if input.bytes.len() != t.height * t.width {
                return Err(Error::BadRequest(format!(
                    "raw image {name} has {} bytes; the model takes {}x{} = {} grey pixels",
                    input.bytes.len(),
                    t.height,
                    t.width,
                    t.height * t.width
                )));
            }
            Ok(input.bytes.iter().map(|&b| b as f32 / 255.0).collect())
        }
        InputKind::Encoded => {
            twinseal_siamese::data::decode_image(&input.bytes, t.height, t.width, name)
                .map_err(|e| Error::BadRequest(e.to_string()))
        }
    }
}

fn digest(inputs: &[Input]) -> String {
    inputs_digest(inputs.iter().map(|i| (i.kind, i.bytes.as_slice())))
}

async fn compare(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<api::CompareRequest>,
) -> Result<Json<api::CompareResponse>> {
    let inputs = [decode_wire(&req.a, "a")?, decode_wire(&req.b, "b")?];
    drop(req);
    tokio::task::spawn_blocking(move || {
        let a = pixels(&s, &inputs[0], "a")?;
        let b = pixels(&s, &inputs[1], "b")?;
        let score = s
            .model
            .score_pairs(&a, &b)
            .map_err(|e| Error::Internal(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("no score".into()))?;
        let result = api::CompareResult {
            distance: score.distance,
            score: score.score,
            probability: score.probability,
            verdict: if score.similar {
                api::Verdict::Similar
            } else {
                api::Verdict::Dissimilar
            },
            threshold: s.model.config().threshold,
        };
        let output = serde_json::to_string(&result).map_err(|e| Error::Internal(e.to_string()))?;
        let receipt = s.signer.sign("compare", digest(&inputs), output)?;
        Ok(Json(api::CompareResponse { result, receipt }))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

async fn embed(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<api::EmbedRequest>,
) -> Result<Json<api::EmbedResponse>> {
    if req.images.is_empty() {
        return Err(Error::BadRequest("no images".into()));
    }
    if req.images.len() > s.limits.max_images {
        return Err(Error::BadRequest(format!(
            "{} images; at most {} per request",
            req.images.len(),
            s.limits.max_images
        )));
    }
    let inputs = req
        .images
        .iter()
        .enumerate()
        .map(|(i, img)| decode_wire(img, &format!("#{i}")))
        .collect::<Result<Vec<_>>>()?;
    drop(req);
    tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            all.extend(pixels(&s, input, &format!("#{i}"))?);
        }
        let flat = s
            .model
            .embed(&all)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let dim = s.model.config().tower.embedding_dim;
        let result = api::EmbedResult {
            dim,
            embeddings: flat.chunks_exact(dim).map(<[f32]>::to_vec).collect(),
        };
        let output = serde_json::to_string(&result).map_err(|e| Error::Internal(e.to_string()))?;
        let receipt = s.signer.sign("embed", digest(&inputs), output)?;
        Ok(Json(api::EmbedResponse { result, receipt }))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}
