//! TLS for the coordinator: rustls with the aws-lc-rs provider, optional
//! client certificates (mutual TLS for apps), the accept loop that hands
//! each request its peer certificate, and graceful shutdown.
//!
//! App certificates issued on simulated evidence carry a *critical*
//! extension that generic verifiers (webpki) refuse by design. So the
//! client-certificate verifier here checks what it needs itself: the
//! certificate's signature by this coordinator's root (with x509-parser on
//! aws-lc-rs), its validity period, and the handshake signature made with
//! its key. Which certificates are acceptable for which request (issued
//! here, unrevoked, allowed by the manifest) is decided per request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::TcpListener;
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::http::{AppState, PeerCertificate, RemoteAddr, app};

/// The rustls provider used everywhere: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Verify a handshake signature with the key of `cert_der` (ECDSA P-256,
/// P-384 or Ed25519).
pub fn verify_handshake_signature(
    cert_der: &[u8],
    scheme: SignatureScheme,
    message: &[u8],
    signature: &[u8],
) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
    use aws_lc_rs::signature as sig;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let key = cert.public_key().subject_public_key.data.as_ref();
    let alg: &dyn sig::VerificationAlgorithm = match scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 => &sig::ECDSA_P256_SHA256_ASN1,
        SignatureScheme::ECDSA_NISTP384_SHA384 => &sig::ECDSA_P384_SHA384_ASN1,
        SignatureScheme::ED25519 => &sig::ED25519,
        _ => {
            return Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::NoSignatureSchemesInCommon,
            ));
        }
    };
    sig::UnparsedPublicKey::new(alg, key)
        .verify(message, signature)
        .map(|_| HandshakeSignatureValid::assertion())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))
}

/// The signature schemes [`verify_handshake_signature`] supports.
pub const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
];

/// Accepts client certificates signed by one root and valid now;
/// connections without a client certificate are allowed (users).
#[derive(Debug)]
pub struct AppCertVerifier {
    root_der: Vec<u8>,
    subjects: Vec<DistinguishedName>,
}

impl AppCertVerifier {
    /// A verifier for certificates issued under `root_der`.
    pub fn new(root_der: &[u8]) -> Result<Self> {
        let (_, root) = x509_parser::certificate::X509Certificate::from_der(root_der)
            .map_err(|_| Error::Crypto("unparsable root certificate".into()))?;
        let subjects = vec![DistinguishedName::from(root.subject().as_raw().to_vec())];
        Ok(AppCertVerifier {
            root_der: root_der.to_vec(),
            subjects,
        })
    }

    /// Whether `der` is signed by the root and valid at `now` (Unix seconds).
    pub fn check(&self, der: &[u8], now: i64) -> std::result::Result<(), rustls::Error> {
        let bad = |e| rustls::Error::InvalidCertificate(e);
        let (_, root) = x509_parser::certificate::X509Certificate::from_der(&self.root_der)
            .map_err(|_| bad(rustls::CertificateError::UnknownIssuer))?;
        let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|_| bad(rustls::CertificateError::BadEncoding))?;
        if !rest.is_empty() {
            return Err(bad(rustls::CertificateError::BadEncoding));
        }
        if cert.issuer().as_raw() != root.subject().as_raw()
            || cert.verify_signature(Some(root.public_key())).is_err()
        {
            return Err(bad(rustls::CertificateError::UnknownIssuer));
        }
        if cert.validity().not_before.timestamp() > now {
            return Err(bad(rustls::CertificateError::NotValidYet));
        }
        if cert.validity().not_after.timestamp() < now {
            return Err(bad(rustls::CertificateError::Expired));
        }
        if cert.is_ca() {
            return Err(bad(rustls::CertificateError::BadEncoding));
        }
        Ok(())
    }
}

impl ClientCertVerifier for AppCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, now.as_secs() as i64)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(cert, dss.scheme, message, dss.signature())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(cert, dss.scheme, message, dss.signature())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

/// The coordinator's rustls server configuration.
pub fn server_config(state: &AppState) -> Result<ServerConfig> {
    let (cert, key) = state.server_tls();
    let chain = vec![
        CertificateDer::from(cert.to_vec()),
        CertificateDer::from(state.ca().cert_der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
    let verifier = Arc::new(AppCertVerifier::new(state.ca().cert_der())?);
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
    serve_router(
        server_config(&state)?,
        app(state.clone()),
        listener,
        shutdown,
    )
    .await;
    state.shutdown();
    Ok(())
}

/// The accept loop shared by the coordinator and workers: TLS with
/// `config`, HTTP/1.1 with keep-alive, each request given its connection's
/// [`PeerCertificate`] (if any) and [`RemoteAddr`]; on `shutdown`, stop
/// accepting and let open requests finish (up to 30 s).
pub async fn serve_router(
    config: ServerConfig,
    router: axum::Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, remote) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let router = router.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    serve_connection(acceptor, router, watcher, tcp, remote).await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for open requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!("open connections did not finish within 30 s");
        }
    }
    tracing::info!("stopped");
}

async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
) {
    use tower::ServiceExt;
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| PeerCertificate(Arc::new(c.to_vec())));
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if let Some(p) = &peer {
            req.extensions_mut().insert(p.clone());
        }
        req.extensions_mut().insert(RemoteAddr(remote));
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
