//! The HTTP surface: `app(state) -> Router`, the caller extractor and the
//! handlers. Handlers only translate between the wire types of
//! `twinseal-api` and [`Coordinator`] calls.
//!
//! Identities: a `Authorization: Bearer <token>` header names a user; a
//! client certificate from mutual TLS (put into the request's extensions
//! by the TLS layer as [`PeerCertificate`]) names an app. A request with
//! neither is anonymous.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use twinseal_api as api;

use crate::error::{Error, Result};
use crate::manifest::Role;
use crate::service::{Caller, Coordinator};
use twinseal_net::wipe::SecretJson;

/// The shared state of the router.
pub type AppState = Arc<Coordinator>;

pub use twinseal_net::serve::{PeerCertificate, RemoteAddr};

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let remote = parts.extensions.get::<RemoteAddr>().map(|r| r.0.ip());
        if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
            let token = h
                .to_str()
                .ok()
                .and_then(|s| s.strip_prefix("Bearer "))
                .map(str::trim);
            return match token {
                Some(t) if !t.is_empty() && t.len() <= 256 => {
                    state.authenticate_token(t, remote).await
                }
                _ => Err(Error::Unauthenticated),
            };
        }
        if let Some(pc) = parts.extensions.get::<PeerCertificate>() {
            let der = pc.0.clone();
            return state.authenticate_app(&der, remote).await;
        }
        Ok(Caller::Anonymous)
    }
}

pub use twinseal_net::json::ApiJson;

/// The router with every `/v1` route, `/metrics`, and the layers for
/// body size, timeouts, concurrency and tracing.
pub fn app(state: AppState) -> Router {
    let config = state.config().clone();
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/ca", get(ca))
        .route("/v1/attest/challenge", post(challenge))
        .route("/v1/attest", post(attest))
        .route("/v1/evidence", post(own_evidence))
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{name}", get(show_key).delete(destroy_key))
        .route("/v1/keys/{name}/rotate", post(rotate_key))
        .route("/v1/keys/{name}/disable", post(disable_key))
        .route("/v1/keys/{name}/enable", post(enable_key))
        .route("/v1/keys/{name}/datakey", post(data_key))
        .route("/v1/keys/{name}/unwrap", post(unwrap))
        .route("/v1/keys/{name}/release", post(release))
        .route("/v1/manifest", get(show_manifest).put(apply_manifest))
        .route("/v1/manifest/versions", get(manifest_versions))
        .route("/v1/users/{name}/token", post(create_token))
        .route("/v1/users/{name}/tokens", get(list_tokens))
        .route("/v1/clients/introspect", post(introspect_client))
        .route(
            "/v1/users/{name}/tokens/{id}",
            axum::routing::delete(revoke_token),
        )
        .route("/v1/certificates", get(list_certificates))
        .route("/v1/certificates/{serial}/revoke", post(revoke_certificate))
        .route("/v1/tokenize", post(tokenize))
        .route("/v1/detokenize", post(detokenize))
        .route("/v1/audit/checkpoint", get(audit_checkpoint))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/log/proof/{index}", get(log_proof))
        .route("/log/checkpoint", get(log_checkpoint))
        .route("/log/tile/{*path}", get(log_tile))
        .route("/v1/workflows/{name}/runs", post(start_run))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(run_info))
        .route("/v1/jobs/claim", post(claim_job))
        .route("/v1/jobs/{id}/progress", post(job_progress))
        .route("/v1/jobs/{id}/finish", post(finish_job))
        .fallback(|| async { Error::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(api::ErrorBody {
                    kind: api::error_type::BAD_REQUEST.into(),
                    detail: "method not allowed".into(),
                }),
            )
        })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_anonymous,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), count_status))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.request_timeout_secs),
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.max_concurrent_requests,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Requests that carry no credentials at all take from their remote
/// address's rate limit (requests with failing credentials take from it
/// when they fail); over it they are answered 429 before any work.
/// Requests without a remote address come from inside the process.
async fn limit_anonymous(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let anonymous = !req.headers().contains_key(header::AUTHORIZATION)
        && req.extensions().get::<PeerCertificate>().is_none();
    if anonymous
        && let Some(remote) = req.extensions().get::<RemoteAddr>()
        && !s.admit_anonymous(remote.0.ip())
    {
        return Error::TooManyRequests.into_response();
    }
    next.run(req).await
}

async fn count_status(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    s.metrics.observe_status(resp.status().as_u16());
    resp
}

async fn health(State(s): State<AppState>) -> Json<api::Health> {
    Json(api::Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        insecure_allow_simulated_tee: s.config().insecure_allow_simulated_tee,
    })
}

async fn openapi() -> Response {
    let body = serde_json::to_vec(&api::openapi()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn ca(State(s): State<AppState>) -> Json<api::CaInfo> {
    Json(api::CaInfo {
        certificate: s.ca().cert_pem(),
        sha256: s.ca().fingerprint(),
    })
}

async fn challenge(State(s): State<AppState>) -> Json<api::ChallengeResponse> {
    Json(s.challenge())
}

async fn own_evidence(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<api::CoordinatorEvidenceRequest>,
) -> Result<Json<api::CoordinatorEvidence>> {
    let ev = tokio::task::spawn_blocking(move || s.own_evidence(&req))
        .await
        .map_err(|e| Error::Crypto(format!("evidence task: {e}")))??;
    Ok(Json(ev))
}

async fn attest(
    State(s): State<AppState>,
    remote: Option<axum::Extension<RemoteAddr>>,
    ApiJson(req): ApiJson<api::AttestRequest>,
) -> Result<Json<api::AttestResponse>> {
    Ok(Json(s.attest(req, remote.map(|r| r.0.0.ip())).await?))
}

const ADMIN: &[Role] = &[Role::Admin];
const READERS: &[Role] = &[Role::Admin, Role::Auditor];

async fn list_keys(State(s): State<AppState>, caller: Caller) -> Result<Json<api::KeyList>> {
    caller.require_role(ADMIN)?;
    Ok(Json(s.list_keys()))
}

async fn create_key(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<api::CreateKeyRequest>,
) -> Result<(StatusCode, Json<api::KeyInfo>)> {
    caller.require_role(ADMIN)?;
    Ok((StatusCode::CREATED, Json(s.create_key(&caller, req).await?)))
}

async fn show_key(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<api::KeyInfo>> {
    caller.require_role(ADMIN)?;
    Ok(Json(s.key_info(&name)?))
}

async fn destroy_key(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<api::KeyInfo>> {
    caller.require_role(ADMIN)?;
    Ok(Json(s.destroy_key(&caller, &name).await?))
}

async fn rotate_key(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<api::KeyInfo>> {
    caller.require_role(ADMIN)?;
    Ok(Json(s.rotate_key(&caller, &name).await?))
}

async fn disable_key(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<api::KeyInfo>> {
    caller.require_role(ADMIN)?;
    Ok(Json(s.set_key_enabled(&caller, &name, false).await?))
}

async fn enable_key(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<api::KeyInfo>> {
    caller.require_role(ADMIN)?;
    Ok(Json(s.set_key_enabled(&caller, &name, true).await?))
}

async fn data_key(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<api::DataKeyRequest>,
) -> Result<SecretJson<api::DataKeyResponse>> {
    Ok(SecretJson(s.data_key(&caller, &name, req).await?))
}

async fn unwrap(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<api::UnwrapRequest>,
) -> Result<SecretJson<api::UnwrapResponse>> {
    Ok(SecretJson(s.unwrap(&caller, &name, req).await?))
}

async fn release(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<SecretJson<api::ReleaseResponse>> {
    Ok(SecretJson(s.release(&caller, &name).await?))
}

async fn show_manifest(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<api::ManifestInfo>> {
    caller.require_role(READERS)?;
    Ok(Json(s.manifest_version(None)?))
}

async fn apply_manifest(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<api::ManifestApplyRequest>,
) -> Result<Json<api::ManifestInfo>> {
    caller.require_role(ADMIN)?;
    Ok(Json(s.apply_manifest(&caller, req.manifest).await?))
}

async fn manifest_versions(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<api::ManifestVersions>> {
    caller.require_role(READERS)?;
    Ok(Json(s.manifest_versions()?))
}

async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, SecretJson<api::TokenResponse>)> {
    caller.require_role(ADMIN)?;
    // The body is optional: no body (or `null`) means the defaults.
    let req: api::CreateTokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        Default::default()
    } else {
        serde_json::from_slice::<Option<api::CreateTokenRequest>>(&body)
            .map_err(|e| Error::BadRequest(format!("token request: {e}")))?
            .unwrap_or_default()
    };
    Ok((
        StatusCode::CREATED,
        SecretJson(s.create_token(&caller, &name, req).await?),
    ))
}

async fn introspect_client(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<api::IntrospectRequest>,
) -> Result<Json<api::IntrospectResponse>> {
    Ok(Json(s.introspect_client(&caller, &req)?))
}

async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<api::TokenList>> {
    caller.require_role(ADMIN)?;
    Ok(Json(s.list_tokens(&name)?))
}

async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    caller.require_role(ADMIN)?;
    s.revoke_token(&caller, &name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_certificates(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<api::CertificateList>> {
    caller.require_role(READERS)?;
    Ok(Json(s.list_certificates()?))
}

async fn revoke_certificate(
    State(s): State<AppState>,
    caller: Caller,
    Path(serial): Path<String>,
) -> Result<StatusCode> {
    caller.require_role(ADMIN)?;
    s.revoke_certificate(&caller, &serial).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tokenize(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<api::TokenizeRequest>,
) -> Result<Json<api::TokenizeResponse>> {
    Ok(Json(s.tokenize(&caller, req, false).await?))
}

async fn detokenize(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<api::TokenizeRequest>,
) -> Result<SecretJson<api::TokenizeResponse>> {
    Ok(SecretJson(s.tokenize(&caller, req, true).await?))
}

async fn audit_checkpoint(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<api::AuditCheckpoint>> {
    caller.require_role(READERS)?;
    Ok(Json(s.audit_checkpoint()?))
}

async fn audit_export(State(s): State<AppState>, caller: Caller) -> Result<Response> {
    caller.require_role(&[Role::Auditor])?;
    let body = s.audit_export()?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The log's tiles are for auditors, or for anyone when
/// `[transparency] public_log` is set; returns the Cache-Control scope.
fn log_reader(s: &AppState, caller: &Caller) -> Result<&'static str> {
    if s.config().transparency.public_log {
        return Ok("public");
    }
    caller.require_role(&[Role::Auditor])?;
    Ok("private")
}

/// `GET /v1/log/proof/{index}`: an entry with its inclusion proof under the
/// checkpoint clients accept. Attested apps (the approvals of their own app
/// only), auditors, or anyone when the log is public.
async fn log_proof(
    State(s): State<AppState>,
    caller: Caller,
    Path(index): Path<u64>,
) -> Result<Json<api::LogProof>> {
    let only_app = match &caller {
        Caller::App(a) => Some(a.app.clone()),
        other => {
            log_reader(&s, other)?;
            None
        }
    };
    Ok(Json(s.approval_proof(index, only_app.as_deref())?))
}

/// `GET /log/checkpoint` (C2SP tlog-tiles): the latest checkpoint, a
/// signed note; mutable, so cached for seconds at most.
async fn log_checkpoint(State(s): State<AppState>, caller: Caller) -> Result<Response> {
    let scope = log_reader(&s, &caller)?;
    let body = s.log_resource("checkpoint")?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::CACHE_CONTROL, format!("{scope}, max-age=5")),
        ],
        body,
    )
        .into_response())
}

/// `GET /log/tile/...` (C2SP tlog-tiles): a tile of hashes or an entry
/// bundle of the latest checkpoint's tree; immutable.
async fn log_tile(
    State(s): State<AppState>,
    caller: Caller,
    Path(path): Path<String>,
) -> Result<Response> {
    let scope = log_reader(&s, &caller)?;
    let body = s.log_resource(&format!("tile/{path}"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CACHE_CONTROL,
                format!("{scope}, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
        .into_response())
}

async fn start_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<api::RunInfo>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.start_run(&caller, &name).await?),
    ))
}

async fn list_runs(State(s): State<AppState>, caller: Caller) -> Result<Json<api::RunList>> {
    Ok(Json(s.list_runs(&caller)?))
}

async fn run_info(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<api::RunInfo>> {
    Ok(Json(s.run_info(&caller, run_id(&id)?)?))
}

async fn claim_job(State(s): State<AppState>, caller: Caller) -> Result<Json<api::ClaimResponse>> {
    Ok(Json(s.claim_job(&caller).await?))
}

async fn job_progress(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(p): ApiJson<api::JobProgress>,
) -> Result<Json<api::RunInfo>> {
    Ok(Json(s.job_progress(&caller, run_id(&id)?, p).await?))
}

async fn finish_job(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(f): ApiJson<api::JobFinish>,
) -> Result<Json<api::RunInfo>> {
    Ok(Json(s.finish_job(&caller, run_id(&id)?, f).await?))
}

/// A run id from the path (a stable JSON error when it is not a number).
fn run_id(s: &str) -> Result<u64> {
    s.parse()
        .map_err(|_| Error::BadRequest(format!("run id {s:?} is not a number")))
}
