//! TLS for the worker: rustls on aws-lc-rs serving the worker's attested
//! certificate, the accept loop with graceful shutdown, and
//! [`WorkerCertVerifier`], the client side's check of a worker's
//! certificate.
//!
//! Certificates issued on simulated evidence carry a *critical* extension
//! that webpki refuses by design, so the server certificate is handed to
//! rustls through a resolver (no webpki parse), and clients verify it with
//! x509-parser against the coordinator's root, like the coordinator's own
//! client-certificate verifier.

use std::future::Future;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, ServerConfig, SignatureScheme};
use tokio::net::TcpListener;
use twinseal_coordinator::tls::{AppCertVerifier, SCHEMES, provider, verify_handshake_signature};
use x509_parser::prelude::FromDer;

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
/// accepting and let open requests finish (up to 30 s). The accept loop is
/// the coordinator's ([`twinseal_coordinator::tls::serve_router`]).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let config = server_config(&state)?;
    let limits = state.limits.connections.clone();
    twinseal_coordinator::tls::serve_router(config, app(state), listener, &limits, shutdown).await;
    Ok(())
}

/// A client's check of a worker's certificate: issued by the pinned
/// coordinator root (signature checked with x509-parser on aws-lc-rs),
/// valid now, not a CA, naming the server the client connects to, and not
/// issued on simulated evidence unless `allow_simulated` (INSECURE: such a
/// certificate proves nothing about hardware).
#[derive(Debug)]
pub struct WorkerCertVerifier {
    root: AppCertVerifier,
    allow_simulated: bool,
}

impl WorkerCertVerifier {
    /// A verifier for worker certificates issued under `root_der` (the
    /// coordinator's root, DER).
    pub fn new(root_der: &[u8], allow_simulated: bool) -> Result<Self> {
        let root = AppCertVerifier::new(root_der)
            .map_err(|_| Error::Config("unparsable root certificate".into()))?;
        if allow_simulated {
            tracing::warn!("INSECURE: simulated-TEE worker certificates are accepted");
        }
        Ok(WorkerCertVerifier {
            root,
            allow_simulated,
        })
    }

    /// Like [`WorkerCertVerifier::new`] with the root as PEM.
    pub fn from_root_pem(root_pem: &str, allow_simulated: bool) -> Result<Self> {
        Self::new(&root_der_from_pem(root_pem)?, allow_simulated)
    }

    /// Whether `der` is acceptable for `server` at `now` (Unix seconds).
    pub fn check(
        &self,
        der: &[u8],
        server: &ServerName<'_>,
        now: i64,
    ) -> std::result::Result<(), rustls::Error> {
        self.root.check(der, now)?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        // Only app certificates serve as workers: the coordinator's own
        // certificate (same root) is not one.
        let app = cert
            .extensions()
            .iter()
            .any(|e| e.oid.to_id_string() == twinseal_coordinator::ca::APP_CERT_OID_STR);
        if !app {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        let simulated = cert
            .extensions()
            .iter()
            .any(|e| e.oid.to_id_string() == twinseal_coordinator::ca::SIMULATED_TEE_OID_STR);
        if simulated && !self.allow_simulated {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        if !names_server(&cert, server) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(())
    }

    /// A rustls client configuration (aws-lc-rs, HTTP/1.1) that trusts
    /// worker certificates through this verifier only.
    pub fn client_config(self) -> Result<rustls::ClientConfig> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Crypto(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// The first certificate of a PEM text, DER.
pub fn root_der_from_pem(pem: &str) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(|c| c.ok())
        .map(|c| c.to_vec())
        .ok_or_else(|| Error::Config("the root certificate is not PEM".into()))
}

fn names_server(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    server: &ServerName<'_>,
) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|n| match (n, server) {
        (GeneralName::DNSName(d), ServerName::DnsName(s)) => d.eq_ignore_ascii_case(s.as_ref()),
        (GeneralName::IPAddress(ip), ServerName::IpAddress(s)) => {
            let want: std::net::IpAddr = (*s).into();
            match want {
                std::net::IpAddr::V4(v4) => *ip == v4.octets().as_slice(),
                std::net::IpAddr::V6(v6) => *ip == v6.octets().as_slice(),
            }
        }
        _ => false,
    })
}

impl ServerCertVerifier for WorkerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, server_name, now.as_secs() as i64)?;
        Ok(ServerCertVerified::assertion())
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
