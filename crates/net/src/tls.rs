//! TLS between twinseal parts: the rustls provider (aws-lc-rs), the
//! handshake-signature check, the certificate marks (app certificates,
//! simulated-TEE certificates), and [`PeerVerifier`], the one certificate
//! verifier that servers and clients use.
//!
//! App certificates issued on simulated evidence carry a *critical*
//! extension that generic verifiers (webpki) refuse by design, so the
//! verifier checks what it needs itself: the certificate's signature by
//! the coordinator's root (x509-parser on aws-lc-rs), its validity period,
//! that it is not a CA, the name the client connects to, what kind of
//! peer it is, and the handshake signature made with its key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};

/// The rustls provider used everywhere: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The critical extension marking a certificate issued on simulated-TEE
/// evidence. Registration-free OIDs live under 2.25 with a UUID as the
/// arc; rcgen's encoder takes 64-bit arcs only, so this one uses a random
/// 63-bit arc under 2.25 (collision odds are negligible). It is meant to be
/// unknown to every generic TLS stack.
pub const SIMULATED_TEE_OID: &[u64] = &[2, 25, 5410305570973032867];
/// The same OID as dotted text.
pub const SIMULATED_TEE_OID_STR: &str = "2.25.5410305570973032867";

/// The critical extension every app certificate carries, so that no
/// client takes an app for the coordinator and only app certificates
/// serve as workers; a registration-free OID under 2.25 like
/// [`SIMULATED_TEE_OID`].
pub const APP_CERT_OID: &[u64] = &[2, 25, 7316427781063504121];
/// The same OID as dotted text.
pub const APP_CERT_OID_STR: &str = "2.25.7316427781063504121";

/// The line `twinseal coordinator verify` writes above the root in the PEM
/// file it saves: the SHA-256 of the coordinator's own TLS key
/// (SubjectPublicKeyInfo), which clients then pin.
pub const KEY_PIN_PREFIX: &str = "twinseal-coordinator-key-sha256: ";

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

/// The non-critical extension naming the log entry that approved an app
/// certificate's measurement (release transparency): a DER UTF8String
/// `manifest_version=<N>;log_index=<I>`.
pub const TRANSPARENCY_OID: &[u64] = &[2, 25, 2908472617503371129];
/// The same OID as dotted text.
pub const TRANSPARENCY_OID_STR: &str = "2.25.2908472617503371129";

/// The text of [`TRANSPARENCY_OID`] for a manifest version and log index.
pub fn transparency_text(manifest_version: u64, log_index: u64) -> String {
    format!("manifest_version={manifest_version};log_index={log_index}")
}

/// What an app certificate's [`TRANSPARENCY_OID`] extension says:
/// `(manifest version, log index)`; `None` when it has none or it does
/// not parse.
pub fn transparency_claims(der: &[u8]) -> Option<(u64, u64)> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == TRANSPARENCY_OID_STR)?;
    // DER UTF8String, short length form (the text is under 128 bytes).
    let v = ext.value;
    let text = match v {
        [0x0c, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => {
            std::str::from_utf8(rest).ok()?
        }
        _ => return None,
    };
    let (a, b) = text.split_once(';')?;
    let version = a.strip_prefix("manifest_version=")?.parse().ok()?;
    let index = b.strip_prefix("log_index=")?.parse().ok()?;
    Some((version, index))
}

/// The app an app certificate names (its `twinseal://app/<app>` URI).
pub fn app_of_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => {
            u.strip_prefix("twinseal://app/").map(str::to_string)
        }
        _ => None,
    })
}

fn has_extension(cert: &x509_parser::certificate::X509Certificate<'_>, oid: &str) -> bool {
    cert.extensions()
        .iter()
        .any(|e| e.oid.to_id_string() == oid)
}

/// A peer's certificate, DER with nothing after it.
fn parse_peer(
    der: &[u8],
) -> std::result::Result<x509_parser::certificate::X509Certificate<'_>, rustls::Error> {
    let bad = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding);
    match x509_parser::certificate::X509Certificate::from_der(der) {
        Ok((&[], cert)) => Ok(cert),
        _ => Err(bad()),
    }
}

/// [`is_app_certificate`] of a parsed certificate.
fn is_app(cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    let app_uri = cert.subject_alternative_name().ok().flatten().is_some_and(|san| {
        san.value.general_names.iter().any(|n| {
            matches!(n, x509_parser::extensions::GeneralName::URI(u) if u.starts_with("twinseal://app/"))
        })
    });
    has_extension(cert, APP_CERT_OID_STR) || app_uri
}

/// Whether `der` is an app certificate: it carries [`APP_CERT_OID`], or
/// (certificates issued before that extension) a `twinseal://app/` URI.
/// Unparsable bytes count as one (refused wherever the coordinator is
/// expected).
pub fn is_app_certificate(der: &[u8]) -> bool {
    x509_parser::certificate::X509Certificate::from_der(der).map_or(true, |(_, cert)| is_app(&cert))
}

/// Whether `der` was issued on simulated-TEE evidence (carries
/// [`SIMULATED_TEE_OID`]).
pub fn is_simulated_certificate(der: &[u8]) -> bool {
    x509_parser::certificate::X509Certificate::from_der(der)
        .is_ok_and(|(_, cert)| has_extension(&cert, SIMULATED_TEE_OID_STR))
}

/// The SHA-256 (hex) of a certificate's SubjectPublicKeyInfo: what
/// [`KEY_PIN_PREFIX`] names.
pub fn key_sha256(cert_der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|_| Error::Crypto("unparsable certificate".into()))?;
    Ok(hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        cert.public_key().raw,
    )))
}

/// The key pin in a root PEM file's explanatory text, if any.
pub fn pinned_key(root_pem: &str) -> Result<Option<[u8; 32]>> {
    root_pem
        .lines()
        .find_map(|l| l.trim().strip_prefix(KEY_PIN_PREFIX))
        .map(|h| {
            hex::decode(h.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| Error::Config(format!("{KEY_PIN_PREFIX}: not 64 hex digits")))
        })
        .transpose()
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

/// What kind of peer a [`PeerVerifier`] accepts.
#[derive(Clone, Debug)]
pub enum Expect {
    /// A server's check of client certificates: any certificate of the
    /// root (which ones may do what is decided per request); connections
    /// without a client certificate are allowed (users with tokens).
    Clients,
    /// A client's check of the coordinator: never an app certificate,
    /// named for the server connected to, with the pinned key when the
    /// root file names one.
    Coordinator {
        /// SHA-256 of the coordinator's SubjectPublicKeyInfo.
        pinned_key: Option<[u8; 32]>,
    },
    /// A client's check of a worker: only app certificates, named for the
    /// server connected to, and not issued on simulated evidence unless
    /// `allow_simulated` (INSECURE: such a certificate proves nothing about
    /// hardware).
    Worker {
        /// Accept simulated-TEE certificates.
        allow_simulated: bool,
    },
}

/// The certificate verifier of every twinseal connection: the peer's
/// certificate is signed by the coordinator's root (x509-parser on
/// aws-lc-rs), valid now, not a CA, of the expected kind ([`Expect`]) and,
/// for servers, named for the name connected to; the handshake is signed
/// with its key.
#[derive(Debug)]
pub struct PeerVerifier {
    root_der: Vec<u8>,
    subjects: Vec<DistinguishedName>,
    expect: Expect,
}

impl PeerVerifier {
    /// A verifier for certificates issued under `root_der` (DER).
    pub fn new(root_der: &[u8], expect: Expect) -> Result<Self> {
        let (_, root) = x509_parser::certificate::X509Certificate::from_der(root_der)
            .map_err(|_| Error::Config("unparsable root certificate".into()))?;
        let subjects = vec![DistinguishedName::from(root.subject().as_raw().to_vec())];
        if matches!(
            expect,
            Expect::Worker {
                allow_simulated: true
            }
        ) {
            tracing::warn!("INSECURE: simulated-TEE worker certificates are accepted");
        }
        Ok(PeerVerifier {
            root_der: root_der.to_vec(),
            subjects,
            expect,
        })
    }

    /// A verifier for client certificates under `root_der`.
    pub fn clients(root_der: &[u8]) -> Result<Self> {
        Self::new(root_der, Expect::Clients)
    }

    /// A check of the coordinator under the root of `root_pem` (with the
    /// key pin it carries, if any).
    pub fn coordinator(root_pem: &str) -> Result<Self> {
        let pinned_key = pinned_key(root_pem)?;
        Self::new(
            &root_der_from_pem(root_pem)?,
            Expect::Coordinator { pinned_key },
        )
    }

    /// A check of workers under the root of `root_pem`.
    pub fn worker(root_pem: &str, allow_simulated: bool) -> Result<Self> {
        Self::new(
            &root_der_from_pem(root_pem)?,
            Expect::Worker { allow_simulated },
        )
    }

    /// Whether `der` is signed by the root, valid at `now` (Unix seconds)
    /// and not a CA: what every kind of peer must be.
    pub fn check_issued(&self, der: &[u8], now: i64) -> std::result::Result<(), rustls::Error> {
        self.check_parsed(&parse_peer(der)?, now)
    }

    /// [`Self::check_issued`] on a certificate parsed once by the caller.
    fn check_parsed(
        &self,
        cert: &x509_parser::certificate::X509Certificate<'_>,
        now: i64,
    ) -> std::result::Result<(), rustls::Error> {
        let bad = rustls::Error::InvalidCertificate;
        let (_, root) = x509_parser::certificate::X509Certificate::from_der(&self.root_der)
            .map_err(|_| bad(rustls::CertificateError::UnknownIssuer))?;
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

    /// Whether `der` is acceptable as the server `server` at `now`.
    pub fn check_server(
        &self,
        der: &[u8],
        server: &ServerName<'_>,
        now: i64,
    ) -> std::result::Result<(), rustls::Error> {
        let cert = parse_peer(der)?;
        self.check_parsed(&cert, now)?;
        let app = is_app(&cert);
        match &self.expect {
            Expect::Clients => {
                return Err(rustls::Error::General(
                    "a client-certificate verifier checks no servers".into(),
                ));
            }
            Expect::Coordinator { pinned_key } => {
                if app {
                    return Err(rustls::Error::General(
                        "the server presented an app certificate, not the coordinator's".into(),
                    ));
                }
                if let Some(pin) = pinned_key {
                    let got = aws_lc_rs::digest::digest(
                        &aws_lc_rs::digest::SHA256,
                        cert.public_key().raw,
                    );
                    if got.as_ref() != pin {
                        return Err(rustls::Error::General(
                            "the coordinator's key is not the pinned one".into(),
                        ));
                    }
                }
            }
            Expect::Worker { allow_simulated } => {
                // Only app certificates serve as workers: the coordinator's
                // own certificate (same root) is not one.
                if !has_extension(&cert, APP_CERT_OID_STR)
                    || (!allow_simulated && has_extension(&cert, SIMULATED_TEE_OID_STR))
                {
                    return Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    ));
                }
            }
        }
        if !names_server(&cert, server) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(())
    }

    /// A rustls client configuration (aws-lc-rs, HTTP/1.1) that trusts
    /// servers through this verifier only.
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

/// Whether a DNS name matches a certificate's DNS name (ASCII case
/// insensitive; a leading `*.` matches one whole label).
fn dns_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(rest) => name
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail.eq_ignore_ascii_case(rest)),
        None => pattern.eq_ignore_ascii_case(name),
    }
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
        (GeneralName::DNSName(d), ServerName::DnsName(s)) => dns_matches(d, s.as_ref()),
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

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.check_server(end_entity, server_name, now.as_secs() as i64)?;
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

impl ClientCertVerifier for PeerVerifier {
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
        self.check_issued(end_entity, now.as_secs() as i64)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label_only() {
        assert!(dns_matches("*.example.com", "a.example.com"));
        assert!(dns_matches("*.example.com", "A.Example.COM"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(!dns_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_matches("*.example.com", ".example.com"));
        assert!(dns_matches("localhost", "LOCALHOST"));
        assert!(!dns_matches("localhost", "localhost2"));
    }

    #[test]
    fn a_bad_pin_line_is_a_clear_error() {
        let pem = format!("{KEY_PIN_PREFIX}abcd\n");
        let e = pinned_key(&pem).unwrap_err().to_string();
        assert!(e.contains("not 64 hex digits"), "{e}");
        assert_eq!(pinned_key("no pin here").unwrap(), None);
    }
}
