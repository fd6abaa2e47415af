//! Who may call the worker: client bearer tokens, checked with the
//! coordinator (`POST /v1/clients/introspect` over the worker's mutual-TLS
//! identity) and cached as long as the coordinator says, with permissions
//! per operation (compare, embed, verify, identify, enroll) and a rate
//! limit per caller. Deny by default: only an explicit, loudly named
//! option (`insecure_public_compare`) opens `compare` to callers without
//! credentials, never `embed`, `verify`, 1:N search or enrolment.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use twinseal_api::{self as api, WorkerPermission};
use twinseal_net::guard::RateLimiter;
use twinseal_net::serve::RemoteAddr;

use crate::error::{Error, Result};
use crate::worker::AppState;

/// Most client tokens cached at once; beyond it, expired entries are
/// dropped, then the whole cache.
pub const MAX_CACHED_TOKENS: usize = 10_000;
/// Default requests per second, sustained, per client.
pub const DEFAULT_CLIENT_REQUESTS_PER_SECOND: f64 = 200.0;
/// Default burst per client.
pub const DEFAULT_CLIENT_BURST: u32 = 400;
/// Requests per second that one address may send with credentials that
/// fail (or without any, to a public `compare`).
pub const FAILED_PER_SECOND: f64 = 5.0;
/// Burst of such requests.
pub const FAILED_BURST: u32 = 20;
/// Tokens one address may have looked up at the coordinator per second
/// (cache misses): a client's own token is looked up once per cache
/// period, so only floods of made-up tokens meet this.
pub const LOOKUPS_PER_SECOND: f64 = 10.0;
/// Burst of such look-ups.
pub const LOOKUP_BURST: u32 = 40;

/// What the caller of a request is allowed.
#[derive(Clone, Debug)]
pub enum ClientCaller {
    /// A client user and its permissions on this app.
    Client {
        /// The user's name.
        user: String,
        /// What it may ask.
        permissions: Vec<WorkerPermission>,
    },
    /// A caller without credentials, let in by `insecure_public_compare`
    /// (compare only).
    Public,
}

impl ClientCaller {
    /// Succeeds when the caller holds `what`.
    pub fn require(&self, what: WorkerPermission) -> Result<()> {
        let ok = match self {
            ClientCaller::Client { permissions, .. } => permissions.contains(&what),
            ClientCaller::Public => what == WorkerPermission::Compare,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this client may not {} on this worker (the manifest's [apps.<app>.clients] grants it)",
                what.as_str()
            )))
        }
    }

    /// A name for logs.
    pub fn name(&self) -> &str {
        match self {
            ClientCaller::Client { user, .. } => user,
            ClientCaller::Public => "public",
        }
    }
}

struct Cached {
    answer: api::IntrospectResponse,
    until: Instant,
}

/// The worker's client checks: the token cache and the rate limits.
pub struct ClientAuth {
    insecure_public_compare: bool,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    per_client: RateLimiter<String>,
    per_address: RateLimiter<Option<IpAddr>>,
    lookups: RateLimiter<Option<IpAddr>>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("insecure_public_compare", &self.insecure_public_compare)
            .finish_non_exhaustive()
    }
}

impl ClientAuth {
    /// Client checks with a per-client rate limit; `insecure_public_compare`
    /// opens `compare` to callers without credentials.
    pub fn new(requests_per_second: f64, burst: u32, insecure_public_compare: bool) -> Self {
        if insecure_public_compare {
            tracing::warn!(
                "INSECURE: insecure_public_compare: /v1/compare answers callers without credentials \
                 (embed, verify, identify and enroll still need a client token)"
            );
        }
        ClientAuth {
            insecure_public_compare,
            cache: Mutex::new(HashMap::new()),
            per_client: RateLimiter::new(requests_per_second, burst),
            per_address: RateLimiter::new(FAILED_PER_SECOND, FAILED_BURST),
            lookups: RateLimiter::new(LOOKUPS_PER_SECOND, LOOKUP_BURST),
        }
    }

    /// Whether `compare` is open to callers without credentials.
    pub fn insecure_public_compare(&self) -> bool {
        self.insecure_public_compare
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<api::IntrospectResponse> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(hash)
            .filter(|c| c.until > Instant::now())
            .map(|c| c.answer.clone())
    }

    fn remember(&self, hash: [u8; 32], answer: api::IntrospectResponse) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_TOKENS {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
        }
        let until = now + Duration::from_secs(answer.cache_secs);
        cache.insert(hash, Cached { answer, until });
    }

    /// Resolve a request's caller (see the module documentation).
    async fn caller(
        &self,
        state: &AppState,
        token: Option<&str>,
        remote: Option<IpAddr>,
        public_route: bool,
    ) -> Result<ClientCaller> {
        let Some(token) = token else {
            if self.insecure_public_compare && public_route {
                // Public callers share their address's bucket.
                if !self.per_address.check(&remote) {
                    return Err(Error::TooManyRequests);
                }
                return Ok(ClientCaller::Public);
            }
            return Err(Error::Unauthenticated(
                "this worker answers clients with a bearer token issued by its coordinator",
            ));
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let answer = match self.cached(&hash) {
            Some(a) => a,
            None => {
                // Tokens the worker has not seen lately cost a round trip to
                // the coordinator: bounded per address.
                if !self.lookups.check(&remote) {
                    return Err(Error::TooManyRequests);
                }
                let answer = state
                    .identity()
                    .client
                    .post::<_, api::IntrospectResponse>(
                        "/v1/clients/introspect",
                        &api::IntrospectRequest {
                            token: token.to_string(),
                        },
                    )
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "checking a client token with the coordinator failed");
                        Error::Unavailable(
                            "the worker could not check the client's token with its coordinator"
                                .into(),
                        )
                    })?;
                self.remember(hash, answer.clone());
                answer
            }
        };
        match answer.user {
            Some(user) if answer.active => {
                if !self.per_client.check(&user) {
                    return Err(Error::TooManyRequests);
                }
                Ok(ClientCaller::Client {
                    user,
                    permissions: answer.permissions,
                })
            }
            _ => {
                if !self.per_address.check(&remote) {
                    return Err(Error::TooManyRequests);
                }
                Err(Error::Unauthenticated(
                    "unknown, expired or revoked client token, or no permission on this app",
                ))
            }
        }
    }
}

impl FromRequestParts<AppState> for ClientCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let remote = parts.extensions.get::<RemoteAddr>().map(|r| r.0.ip());
        let token = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(h) => Some(
                h.to_str()
                    .ok()
                    .and_then(|s| s.strip_prefix("Bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && t.len() <= 256)
                    .ok_or(Error::Unauthenticated("malformed Authorization header"))?,
            ),
        };
        let public_route = matches!(parts.uri.path(), "/v1/compare" | "/v1/compare/batch");
        state
            .clients
            .caller(state, token, remote, public_route)
            .await
    }
}
