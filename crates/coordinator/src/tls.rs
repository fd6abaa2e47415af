//! TLS for the coordinator: its server configuration (optional client
//! certificates for apps, checked by the transport's
//! [`PeerVerifier`]), and serving until shutdown on the transport's
//! accept loop ([`twinseal_net::serve`]). Which certificates are
//! acceptable for which request (issued here, unrevoked, allowed by the
//! manifest) is decided per request.

use std::future::Future;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::http::{AppState, app};

pub use twinseal_net::serve::{
    ConnLimits, DEFAULT_HANDSHAKE_TIMEOUT_SECS, DEFAULT_HEADER_READ_TIMEOUT_SECS,
    DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    FD_RESERVE, Throttle, serve_router, shutdown_signal,
};
pub use twinseal_net::tls::{PeerVerifier, SCHEMES, provider, verify_handshake_signature};

/// The coordinator's rustls server configuration.
pub fn server_config(state: &AppState) -> Result<ServerConfig> {
    let (cert, key) = state.server_tls();
    let chain = vec![
        CertificateDer::from(cert.to_vec()),
        CertificateDer::from(state.ca().cert_der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
    let verifier = Arc::new(PeerVerifier::clients(state.ca().cert_der())?);
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Crypto(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serve HTTPS on `listener` until `shutdown` resolves, then stop
/// accepting, let open requests finish (up to 30 s) and flush the store.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let summaries = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::service::FAILURE_SUMMARY_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = state.flush_failures().await {
                    tracing::error!(error = %e, "writing the failure summaries");
                }
            }
        })
    };
    let witnessing = state.has_witnesses().then(|| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::transparency::WITNESS_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = state.witness_round().await {
                    tracing::error!(error = %e, "witnessing the audit log");
                }
            }
        })
    });
    serve_router(
        server_config(&state)?,
        app(state.clone()),
        listener,
        &state.config().conn_limits(),
        shutdown,
    )
    .await;
    summaries.abort();
    if let Some(w) = witnessing {
        w.abort();
    }
    if let Err(e) = state.flush_failures().await {
        tracing::error!(error = %e, "writing the failure summaries");
    }
    state.shutdown();
    Ok(())
}

/// Bind `config.listen`, log the mode, record the start in the audit log,
/// and serve until Ctrl-C or SIGTERM.
pub async fn run(state: AppState) -> Result<()> {
    let addr = state.config().listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("binding {addr}"), e))?;
    if state.config().insecure_allow_simulated_tee {
        tracing::warn!(
            "INSECURE: simulated-TEE evidence is accepted (insecure_allow_simulated_tee = true)"
        );
    }
    state.audit_start().await?;
    tracing::info!(%addr, root_sha256 = %state.ca().fingerprint(), "coordinator serving HTTPS");
    serve(state, listener, shutdown_signal()).await
}
