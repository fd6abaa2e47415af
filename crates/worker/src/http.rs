//! The worker's HTTP surface: `app(state) -> Router` with `/v1/compare`,
//! `/v1/embed`, `/v1/enroll`, `/v1/verify`, `/v1/info` and `/v1/openapi.json`. Handlers decode the
//! wire types of `twinseal-api`, run the model on a blocking thread and
//! sign a receipt for every answer.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use twinseal_api::{self as api, WorkerPermission};

use crate::clients::ClientCaller;
use crate::error::{Error, Result};
use crate::gallery::check_identity;
use crate::receipt::{InputKind, inputs_digest};
pub use crate::worker::AppState;
use twinseal_net::guard::Cancel;
pub use twinseal_net::json::ApiJson;

/// The router with every worker route and the layers for body size,
/// timeouts, concurrency and tracing.
pub fn app(state: AppState) -> Router {
    let limits = state.limits.clone();
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/compare", post(compare))
        .route("/v1/compare/batch", post(compare_batch))
        .route("/v1/embed", post(embed))
        .route("/v1/enroll", post(enroll))
        .route("/v1/verify", post(verify))
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
    bytes: axum::body::Bytes,
}

fn decode_wire(img: &api::ImageWire, name: &str) -> Result<Input> {
    let (kind, b64) = match img {
        api::ImageWire::Png(s) | api::ImageWire::Jpeg(s) => (InputKind::Encoded, s),
        api::ImageWire::Raw(s) => (InputKind::Raw, s),
    };
    let bytes = B64
        .decode(b64.as_bytes())
        .map_err(|_| Error::BadRequest(format!("image {name} is not valid base64")))?;
    Ok(Input {
        kind,
        bytes: bytes.into(),
    })
}

/// Pixels in 0..1 of the model's input size, converted as its config says.
fn pixels(state: &AppState, input: &Input, name: &str) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    pixels_into(state, input, name, &mut out)?;
    Ok(out)
}

/// Appends the pixels of `input` to `out` (raw bytes convert in place,
/// without an intermediate buffer).
fn pixels_into(state: &AppState, input: &Input, name: &str, out: &mut Vec<f32>) -> Result<()> {
    let (height, width) = state.served()?.input_size();
    match input.kind {
        InputKind::Raw => {
            if input.bytes.len() != height * width {
                return Err(Error::BadRequest(format!(
                    "raw image {name} has {} bytes; the model takes {height}x{width} = {} grey pixels",
                    input.bytes.len(),
                    height * width
                )));
            }
            out.extend(input.bytes.iter().map(|&b| b as f32 * (1.0 / 255.0)));
        }
        InputKind::Encoded => out.extend(
            twinseal_siamese::data::decode_image(&input.bytes, height, width, name)
                .map_err(|e| Error::BadRequest(e.to_string()))?,
        ),
    }
    Ok(())
}

fn digest(inputs: &[Input]) -> String {
    inputs_digest(inputs.iter().map(|i| (i.kind, &i.bytes[..])))
}

/// Requests of at most this many pairs, all raw pixels, are scored on the
/// async thread: the model takes tens of microseconds for them, less than
/// handing them to the blocking pool and back (measured with
/// `twinseal bench worker`). Larger or encoded (PNG/JPEG) inputs go to
/// the blocking pool.
const INLINE_PAIRS: usize = 8;

/// Runs `f` on the calling thread when `inline`, else on the blocking pool.
/// Larger requests wait for one of the state's compute permits (one per
/// core), held until the work ends, so that concurrent requests take turns
/// on the cores instead of oversubscribing them; a request that times out
/// or goes away has its work told to stop (checked between images).
async fn on_model<T: Send + 'static>(
    s: &AppState,
    inline: bool,
    f: impl FnOnce(&Cancel) -> Result<T> + Send + 'static,
) -> Result<T> {
    if inline {
        return f(&Cancel::default());
    }
    s.compute.run(f).await
}

/// Refuse a request whose images would decode to more pixels than the
/// per-request budget, from their headers, before decoding anything.
fn check_pixel_budget(s: &AppState, inputs: &[Input]) -> Result<()> {
    let (height, width) = s.served()?.input_size();
    let budget = s.limits.max_pixels_per_request;
    let mut total: u64 = 0;
    for (i, input) in inputs.iter().enumerate() {
        total += match input.kind {
            InputKind::Raw => (height * width) as u64,
            InputKind::Encoded => {
                twinseal_siamese::data::image_pixels(&input.bytes, height, width, &format!("#{i}"))
                    .map_err(|e| Error::BadRequest(e.to_string()))?
            }
        };
        if total > budget {
            return Err(Error::BadRequest(format!(
                "the images of this request decode to more than {budget} pixels (the per-request budget); send fewer or smaller images"
            )));
        }
    }
    Ok(())
}

/// The request went away: stop.
fn stop_if_cancelled(cancel: &Cancel) -> Result<()> {
    if cancel.is_cancelled() {
        return Err(Error::Unavailable("the request was abandoned".into()));
    }
    Ok(())
}

/// Scores consecutive pairs of `inputs` (`a0, b0, a1, b1, ...`).
fn score_inputs(
    s: &AppState,
    inputs: &[Input],
    cancel: &Cancel,
) -> Result<Vec<api::CompareResult>> {
    let n = inputs.len() / 2;
    let (height, width) = s.served()?.input_size();
    let mut a = Vec::with_capacity(n * height * width);
    let mut b = Vec::with_capacity(n * height * width);
    for (i, pair) in inputs.chunks_exact(2).enumerate() {
        stop_if_cancelled(cancel)?;
        if n == 1 {
            pixels_into(s, &pair[0], "a", &mut a)?;
            pixels_into(s, &pair[1], "b", &mut b)?;
        } else {
            pixels_into(s, &pair[0], &format!("#{i}.a"), &mut a)?;
            pixels_into(s, &pair[1], &format!("#{i}.b"), &mut b)?;
        }
    }
    let threshold = s.served()?.threshold();
    Ok(s.served()?
        .score_pairs(&a, &b)
        .map_err(|e| Error::Internal(e.to_string()))?
        .into_iter()
        .map(|score| api::CompareResult {
            distance: score.distance,
            score: score.score,
            probability: score.probability,
            verdict: verdict(score.similar),
            threshold,
        })
        .collect())
}

/// The model's embedding length, or a clear refusal for pair-only models.
fn embedding_dim(s: &AppState) -> Result<usize> {
    s.served()?.embedding_dim().ok_or_else(|| {
        Error::BadRequest(
            "this model scores pairs only (an imported two-input graph); it has no embeddings"
                .into(),
        )
    })
}

fn all_raw_and_few(inputs: &[Input]) -> bool {
    inputs.len() <= 2 * INLINE_PAIRS && inputs.iter().all(|i| i.kind == InputKind::Raw)
}

async fn compare(
    State(s): State<AppState>,
    caller: ClientCaller,
    ApiJson(req): ApiJson<api::CompareRequest>,
) -> Result<Json<api::CompareResponse>> {
    caller.require(WorkerPermission::Compare)?;
    let inputs = vec![decode_wire(&req.a, "a")?, decode_wire(&req.b, "b")?];
    drop(req);
    check_pixel_budget(&s, &inputs)?;
    on_model(&s.clone(), all_raw_and_few(&inputs), move |cancel| {
        let result = score_inputs(&s, &inputs, cancel)?
            .pop()
            .ok_or_else(|| Error::Internal("no score".into()))?;
        let output = serde_json::to_string(&result).map_err(|e| Error::Internal(e.to_string()))?;
        let receipt = sign(&s, "compare", digest(&inputs), output)?;
        Ok(Json(api::CompareResponse { result, receipt }))
    })
    .await
}

/// The binary form of a batch: `Content-Type: application/octet-stream`,
/// the body `a0 b0 a1 b1 ...`, each image exactly the model's
/// `height * width` raw grey bytes. The same pairs as raw images in JSON,
/// without base64 and JSON parsing (the receipt is the same).
pub const BINARY_PAIRS: &str = "application/octet-stream";

fn raw_pairs(s: &AppState, body: &axum::body::Bytes) -> Result<Vec<Input>> {
    let (height, width) = s.served()?.input_size();
    let image = height * width;
    if body.is_empty() || !body.len().is_multiple_of(2 * image) {
        return Err(Error::BadRequest(format!(
            "an {BINARY_PAIRS} batch is pairs of {}x{} raw grey images: a positive multiple of {} bytes, not {}",
            height,
            width,
            2 * image,
            body.len()
        )));
    }
    Ok((0..body.len() / image)
        .map(|i| Input {
            kind: InputKind::Raw,
            bytes: body.slice(i * image..(i + 1) * image),
        })
        .collect())
}

async fn compare_batch(
    State(s): State<AppState>,
    caller: ClientCaller,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<api::CompareBatchResponse>> {
    caller.require(WorkerPermission::Compare)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::BadRequest(r.body_text())
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let inputs = if content_type.starts_with(BINARY_PAIRS) {
        raw_pairs(&s, &body)?
    } else if content_type.starts_with("application/json") {
        let req: api::CompareBatchRequest = serde_json::from_slice(&body)
            .map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))?;
        let mut inputs = Vec::with_capacity(2 * req.pairs.len());
        for (i, p) in req.pairs.iter().enumerate() {
            inputs.push(decode_wire(&p.a, &format!("#{i}.a"))?);
            inputs.push(decode_wire(&p.b, &format!("#{i}.b"))?);
        }
        inputs
    } else {
        return Err(Error::BadRequest(format!(
            "send application/json or {BINARY_PAIRS}"
        )));
    };
    drop(body);
    let pairs = inputs.len() / 2;
    if pairs == 0 || pairs > s.limits.max_pairs {
        return Err(Error::BadRequest(format!(
            "{pairs} pairs; send 1 to {} per request",
            s.limits.max_pairs
        )));
    }
    check_pixel_budget(&s, &inputs)?;
    on_model(&s.clone(), all_raw_and_few(&inputs), move |cancel| {
        let result = api::CompareBatchResult {
            results: score_inputs(&s, &inputs, cancel)?,
        };
        let output = serde_json::to_string(&result).map_err(|e| Error::Internal(e.to_string()))?;
        let receipt = sign(&s, "compare_batch", digest(&inputs), output)?;
        Ok(Json(api::CompareBatchResponse { result, receipt }))
    })
    .await
}

async fn embed(
    State(s): State<AppState>,
    caller: ClientCaller,
    ApiJson(req): ApiJson<api::EmbedRequest>,
) -> Result<Json<api::EmbedResponse>> {
    caller.require(WorkerPermission::Embed)?;
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
    let dim = embedding_dim(&s)?;
    check_pixel_budget(&s, &inputs)?;
    on_model(&s.clone(), false, move |cancel| {
        let mut all = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            stop_if_cancelled(cancel)?;
            all.extend(pixels(&s, input, &format!("#{i}"))?);
        }
        let flat = s
            .served()?
            .embed(&all)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let result = api::EmbedResult {
            dim,
            embeddings: flat.chunks_exact(dim).map(<[f32]>::to_vec).collect(),
        };
        let output = serde_json::to_string(&result).map_err(|e| Error::Internal(e.to_string()))?;
        let receipt = sign(&s, "embed", digest(&inputs), output)?;
        Ok(Json(api::EmbedResponse { result, receipt }))
    })
    .await
}

/// Sign a receipt with the current certificate, refusing once it expired.
pub(crate) fn sign(
    s: &AppState,
    operation: &str,
    inputs: String,
    output: String,
) -> Result<api::Receipt> {
    let id = s.identity();
    id.check_valid()?;
    id.signer.sign(operation, inputs, output)
}

fn verdict(similar: bool) -> api::Verdict {
    if similar {
        api::Verdict::Similar
    } else {
        api::Verdict::Dissimilar
    }
}

fn gallery(s: &AppState) -> Result<&crate::gallery::Gallery> {
    s.gallery.as_ref().ok_or_else(|| {
        Error::NotFound("this worker has no gallery (start it with a gallery file and key)".into())
    })
}

async fn enroll(
    State(s): State<AppState>,
    caller: ClientCaller,
    ApiJson(req): ApiJson<api::EnrollRequest>,
) -> Result<Json<api::EnrollResponse>> {
    caller.require(WorkerPermission::Enroll)?;
    gallery(&s)?;
    check_identity(&req.identity)?;
    if req.images.is_empty() || req.images.len() > s.limits.max_images {
        return Err(Error::BadRequest(format!(
            "{} images; send 1 to {} per request",
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
    let identity = req.identity;
    check_pixel_budget(&s, &inputs)?;
    on_model(&s.clone(), false, move |cancel| {
        let mut all = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            stop_if_cancelled(cancel)?;
            all.extend(pixels(&s, input, &format!("#{i}"))?);
        }
        let flat = s
            .served()?
            .embed(&all)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let done = gallery(&s)?.enroll(&identity, &flat)?;
        let result = api::EnrollResult {
            identity,
            enrolled: inputs.len(),
            references: done.references,
            identities: done.identities,
        };
        let output = serde_json::to_string(&result).map_err(|e| Error::Internal(e.to_string()))?;
        let receipt = sign(&s, "enroll", digest(&inputs), output)?;
        Ok(Json(api::EnrollResponse { result, receipt }))
    })
    .await
}

/// Default number of matches a 1:N search returns.
const DEFAULT_TOP: usize = 5;

async fn verify(
    State(s): State<AppState>,
    caller: ClientCaller,
    ApiJson(req): ApiJson<api::VerifyRequest>,
) -> Result<Json<api::VerifyResponse>> {
    caller.require(if req.identity.is_some() {
        WorkerPermission::Verify
    } else {
        WorkerPermission::Identify
    })?;
    gallery(&s)?;
    if let Some(name) = &req.identity {
        check_identity(name)?;
    }
    let top = req.top.unwrap_or(DEFAULT_TOP);
    if top == 0 || top > s.limits.max_images {
        return Err(Error::BadRequest(format!(
            "top must be 1 to {}",
            s.limits.max_images
        )));
    }
    let input = decode_wire(&req.probe, "probe")?;
    let identity = req.identity;
    check_pixel_budget(&s, std::slice::from_ref(&input))?;
    on_model(&s.clone(), false, move |_| {
        let probe = s
            .served()?
            .embed(&pixels(&s, &input, "probe")?)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let (closest, decoy) = gallery(&s)?.closest(&probe, identity.as_deref());
        let mut refs = Vec::with_capacity(closest.len() * probe.len());
        for c in &closest {
            refs.extend_from_slice(&c.embedding);
        }
        let probes = probe.repeat(closest.len());
        let scores = s
            .served()?
            .score_embeddings(&probes, &refs)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let threshold = s.served()?.threshold();
        let mut matches: Vec<api::IdentityMatch> = closest
            .into_iter()
            .zip(scores)
            .map(|(c, sc)| api::IdentityMatch {
                identity: c.identity,
                result: api::CompareResult {
                    distance: sc.distance,
                    score: sc.score,
                    probability: sc.probability,
                    verdict: verdict(sc.similar),
                    threshold,
                },
            })
            .collect();
        matches.sort_by(|a, b| a.result.score.total_cmp(&b.result.score));
        matches.truncate(top);
        // An identity that is not enrolled was scored against a decoy
        // (Gallery::closest): it can only be a non-match.
        if decoy {
            for m in &mut matches {
                m.result.verdict = api::Verdict::Dissimilar;
            }
        }
        let matched = matches
            .first()
            .is_some_and(|m| m.result.verdict == api::Verdict::Similar);
        let result = api::VerifyResult {
            mode: if identity.is_some() {
                "one_to_one"
            } else {
                "search"
            }
            .into(),
            identity: match identity {
                Some(name) => Some(name),
                None if matched => matches.first().map(|m| m.identity.clone()),
                None => None,
            },
            matched,
            matches,
        };
        let output = serde_json::to_string(&result).map_err(|e| Error::Internal(e.to_string()))?;
        let receipt = sign(&s, "verify", digest(std::slice::from_ref(&input)), output)?;
        Ok(Json(api::VerifyResponse { result, receipt }))
    })
    .await
}
