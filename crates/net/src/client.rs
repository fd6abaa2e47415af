//! An HTTPS client for the coordinator's API, used by the CLI, workers
//! and tests. It trusts only the root certificate it is given (pinned),
//! and optionally presents an app certificate (mutual TLS) or a bearer
//! token.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use twinseal_api as api;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
pub use crate::tls::{KEY_PIN_PREFIX, key_sha256};
use crate::tls::{PeerVerifier, is_app_certificate};
use crate::wipe::{WipingBuf, wipe_chunk};

/// A coordinator client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<Arc<Zeroizing<String>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Always presents one certificate.
#[derive(Debug)]
struct FixedClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// An app identity for mutual TLS: certificate chain and key, PEM.
pub struct Identity {
    /// Certificate(s), PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8), PEM or DER. Secret.
    pub key_der: Zeroizing<Vec<u8>>,
}

/// Most bytes of an answer reserved up front from its `Content-Length`.
const MAX_PRESIZE: u64 = 1 << 20;

/// The whole body of `resp` in a buffer wiped when dropped (answers may
/// carry key material); each received chunk is wiped too where this
/// client holds it alone (see [`crate::wipe`]).
async fn read_wiping(mut resp: reqwest::Response) -> Result<WipingBuf> {
    let presize = resp.content_length().unwrap_or(0).min(MAX_PRESIZE) as usize;
    let mut buf = WipingBuf::with_capacity(presize);
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        buf.extend(&chunk);
        wipe_chunk(chunk);
    }
    Ok(buf)
}

/// The DER certificate the server of `resp` presented (the client must be
/// built with `tls_info(true)`); `who` names it in the error.
pub(crate) fn peer_certificate(resp: &reqwest::Response, who: &str) -> Result<Vec<u8>> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Error::Http(format!("{who} presented no certificate")))
}

/// The SubjectPublicKeyInfo (DER) of a certificate request: what the
/// evidence's report data binds.
fn csr_spki(der: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|_| Error::Crypto("unparsable certificate request".into()))?;
    Ok(parsed.certification_request_info.subject_pki.raw.to_vec())
}

fn http(e: impl std::fmt::Display) -> Error {
    Error::Http(e.to_string())
}

impl Client {
    /// A client for `base_url` (e.g. `https://127.0.0.1:8443`) trusting
    /// only `root_pem`.
    pub fn new(
        base_url: &str,
        root_pem: &str,
        token: Option<String>,
        identity: Option<Identity>,
    ) -> Result<Client> {
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(http)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier::coordinator(root_pem)?));
        let mut cfg = match identity {
            Some(id) => {
                let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| Error::Config("client certificate is not PEM".into()))?;
                let key = PrivateKeyDer::from_pem_slice(&id.key_der)
                    .or_else(|_| PrivateKeyDer::try_from(id.key_der.to_vec()))
                    .map_err(|_| {
                        Error::Config("client key is neither PEM nor PKCS#8 DER".into())
                    })?;
                // Not `with_client_auth_cert`: it re-parses the certificate
                // with webpki, which refuses the critical simulated-TEE
                // extension (see `tls`). The key is loaded by the provider.
                let signer = crate::tls::provider()
                    .key_provider
                    .load_private_key(key)
                    .map_err(http)?;
                let certified = rustls::sign::CertifiedKey::new(chain, signer);
                builder.with_client_cert_resolver(Arc::new(FixedClientCert(Arc::new(certified))))
            }
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(http)?;
        Ok(Client {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token: token.map(|t| Arc::new(Zeroizing::new(t))),
        })
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let bytes = self.send_raw(req).await?;
        if bytes.is_empty() {
            return serde_json::from_slice(b"null").map_err(http);
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Http(format!("bad answer: {e}")))
    }

    /// Send; the body of a success, or the error the answer names.
    async fn send_raw(&self, req: reqwest::RequestBuilder) -> Result<Zeroizing<Vec<u8>>> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t.as_str()),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Http(format!("{e:#}")))?;
        let status = resp.status();
        let bytes = read_wiping(resp).await?;
        let bytes = bytes.as_slice();
        if !status.is_success() {
            let body: Option<api::ErrorBody> = serde_json::from_slice(bytes).ok();
            return Err(Error::Remote {
                status: status.as_u16(),
                kind: body.as_ref().map(|b| b.kind.clone()).unwrap_or_default(),
                detail: body
                    .map(|b| b.detail)
                    .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned()),
            });
        }
        Ok(Zeroizing::new(bytes.to_vec()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    /// POST a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// PUT a JSON body.
    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    /// DELETE.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// GET a JSON answer as its bytes (the audit export).
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let v: serde_json::Value = self.get(path).await?;
        serde_json::to_vec(&v).map_err(http)
    }

    /// GET an answer as it is sent (the log's checkpoint and tiles).
    pub async fn get_raw(&self, path: &str) -> Result<Vec<u8>> {
        Ok(self.send_raw(self.http.get(self.url(path))).await?.to_vec())
    }
}

/// An app's attested identity: its certificate and in-memory key.
pub struct AttestedIdentity {
    /// The coordinator's answer (certificate PEM, serial, expiry, claims).
    pub response: api::AttestResponse,
    /// The private key (PKCS#8 DER), generated in memory. Secret.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
}

impl AttestedIdentity {
    /// The mutual-TLS identity.
    pub fn identity(&self) -> Identity {
        Identity {
            cert_pem: self.response.certificate.clone(),
            key_der: self.key_pkcs8.clone(),
        }
    }
}

impl Client {
    /// Attest as `app`: make a key pair in memory, fetch a challenge, let
    /// `collect` produce evidence for `report_data(challenge, public key)`,
    /// and exchange it with a CSR for a certificate. `names` are the DNS
    /// names or IP addresses the certificate should also serve.
    pub async fn attest<F>(
        &self,
        app: &str,
        names: &[String],
        collect: F,
    ) -> Result<AttestedIdentity>
    where
        F: FnOnce(&[u8; 64]) -> Result<twinseal_attest::Evidence>,
    {
        use base64::Engine;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let params = rcgen::CertificateParams::new(names.to_vec())
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let csr = params
            .serialize_request(&key)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let csr_pem = csr.pem().map_err(|e| Error::Crypto(e.to_string()))?;
        let spki = csr_spki(csr.der())?;
        let ch: api::ChallengeResponse = self.post("/v1/attest/challenge", &()).await?;
        let challenge =
            hex::decode(&ch.challenge).map_err(|_| Error::Http("bad challenge".into()))?;
        let rd = twinseal_attest::report_data(&challenge, &spki);
        let evidence = collect(&rd)?;
        let vcek = match &evidence {
            twinseal_attest::Evidence::SevSnp {
                vcek_der: Some(v), ..
            } => Some(base64::engine::general_purpose::STANDARD.encode(v)),
            _ => None,
        };
        let req = api::AttestRequest {
            app: app.to_string(),
            challenge: ch.challenge,
            evidence: api::EvidenceWire {
                evidence: base64::engine::general_purpose::STANDARD.encode(evidence.bytes()),
                vcek,
            },
            csr: csr_pem,
        };
        let response: api::AttestResponse = self.post("/v1/attest", &req).await?;
        Ok(AttestedIdentity {
            response,
            key_pkcs8: Zeroizing::new(key.serialize_der()),
        })
    }

    /// The same client, presenting `identity` over mutual TLS and no token.
    pub fn with_identity(&self, root_pem: &str, identity: Identity) -> Result<Client> {
        Client::new(&self.base, root_pem, None, Some(identity))
    }
}

/// Accepts any server certificate (the root is not known yet) but checks
/// the handshake signature with the certificate presented, so the server
/// proves it holds that certificate's key; the certificate itself is
/// checked against the attested root afterwards ([`fetch_own_evidence`]).
#[derive(Debug)]
struct UnpinnedServer;

impl rustls::client::danger::ServerCertVerifier for UnpinnedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        crate::tls::verify_handshake_signature(cert, dss.scheme, message, dss.signature())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        crate::tls::verify_handshake_signature(cert, dss.scheme, message, dss.signature())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        crate::tls::SCHEMES.to_vec()
    }
}

/// What [`fetch_own_evidence`] got: the coordinator's answer and the
/// certificate its TLS server presented. Nothing in it is trusted yet.
#[derive(Debug)]
pub struct UnverifiedEvidence {
    /// The answer to `POST /v1/evidence`.
    pub answer: api::CoordinatorEvidence,
    /// The server's TLS certificate, DER.
    pub server_cert_der: Vec<u8>,
}

/// Ask a coordinator whose root is not trusted yet for its own evidence
/// bound to `nonce`. The connection accepts any server certificate; the
/// caller must then check, before trusting the root:
/// (1) the evidence with a verifier, against `report_data(nonce, SPKI of
/// the root in the answer)` ([`own_evidence_report_data`]), and
/// (2) that the server certificate was issued by that root
/// ([`check_server_cert`]), so the endpoint holds a key the attested root
/// certified.
pub async fn fetch_own_evidence(base_url: &str, nonce: &[u8; 32]) -> Result<UnverifiedEvidence> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(http)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnpinnedServer))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .tls_info(true)
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(http)?;
    let resp = client
        .post(format!("{}/v1/evidence", base_url.trim_end_matches('/')))
        .json(&api::CoordinatorEvidenceRequest {
            nonce: hex::encode(nonce),
        })
        .send()
        .await
        .map_err(|e| Error::Http(format!("{e:#}")))?;
    let server_cert_der = peer_certificate(&resp, "the server")?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(http)?;
    if !status.is_success() {
        return Err(Error::Remote {
            status: status.as_u16(),
            kind: String::new(),
            detail: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        });
    }
    let answer =
        serde_json::from_slice(&bytes).map_err(|e| Error::Http(format!("bad answer: {e}")))?;
    Ok(UnverifiedEvidence {
        answer,
        server_cert_der,
    })
}

/// The report data the coordinator's evidence must carry for `nonce` and
/// the root certificate `root_der`.
pub fn own_evidence_report_data(nonce: &[u8; 32], root_der: &[u8]) -> Result<[u8; 64]> {
    let (_, root) = x509_parser::parse_x509_certificate(root_der)
        .map_err(|_| Error::Crypto("unparsable root certificate".into()))?;
    Ok(twinseal_attest::report_data(nonce, root.public_key().raw))
}

/// Whether `server_der` was issued by `root_der`, is valid now, and is not
/// an app certificate (an attested app can never pass as the coordinator).
pub fn check_server_cert(server_der: &[u8], root_der: &[u8]) -> Result<()> {
    if is_app_certificate(server_der) {
        return Err(Error::Crypto(
            "the server presented an app certificate, not the coordinator's".into(),
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    PeerVerifier::clients(root_der)?
        .check_issued(server_der, now)
        .map_err(|e| Error::Crypto(format!("the server's certificate: {e}")))
}

/// A client for plain-HTTP peers whose answers are authenticated by
/// signatures rather than by the transport: C2SP witnesses and static
/// mirrors of the log's tiles. It trusts no certificate authority, so an
/// `https://` URL through it always fails.
pub fn plain_client(timeout: std::time::Duration) -> Result<reqwest::Client> {
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(http)?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .build()
        .map_err(http)
}
