//! TLS for the worker: rustls on aws-lc-rs serving the worker's attested
//! certificate on the transport's accept loop ([`twinseal_net::serve`]).
//! Clients check a worker's certificate with the transport's
//! [`twinseal_net::tls::PeerVerifier::worker`].
//!
//! Certificates issued on simulated evidence carry a *critical* extension
//! that webpki refuses by design, so the server certificate is handed to
//! rustls through a resolver (no webpki parse).

use std::future::Future;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use twinseal_net::tls::provider;
pub use twinseal_net::tls::root_der_from_pem;

use crate::error::{Error, Result};
use crate::http::{AppState, app};

/// Serves the worker's current certificate, so that a renewed one is used
/// for new connections as soon as the worker has attested again.
struct CurrentCert(AppState);

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl rustls::server::ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.identity().certified.clone())
    }
}

/// The TLS signing identity: the certificate, then the coordinator's root,
/// with the private key loaded into aws-lc-rs.
pub(crate) fn certified_key(
    cert_der: &[u8],
    root_der: &[u8],
    key_pkcs8: &[u8],
) -> Result<Arc<CertifiedKey>> {
    let chain = vec![
        CertificateDer::from(cert_der.to_vec()),
        CertificateDer::from(root_der.to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    // Not `with_single_cert`: it parses the certificate with webpki, which
    // refuses the critical simulated-TEE extension.
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// The worker's rustls server configuration: its current certificate, then
/// the coordinator's root; no client authentication.
pub fn server_config(state: &AppState) -> Result<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Crypto(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CurrentCert(state.clone())));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serve HTTPS on `listener` until `shutdown` resolves, then stop
/// accepting and let open requests finish (up to 30 s), on the transport's
/// accept loop ([`twinseal_net::serve::serve_router`]).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let config = server_config(&state)?;
    let limits = state.limits.connections.clone();
    twinseal_net::serve::serve_router(config, app(state), listener, &limits, shutdown).await;
    Ok(())
}
