//! The certificate authority for attested apps: a root (ECDSA P-256) made
//! at `coordinator init`, the coordinator's own TLS certificate, and short-
//! lived app certificates issued from a CSR after attestation.
//!
//! An app certificate carries:
//! - the subject `CN=<app>` and the URI SAN `twinseal://app/<app>`, plus the
//!   DNS/IP names the CSR asked for (so a worker can serve TLS with it);
//! - both server and client authentication purposes, never CA rights (a
//!   CSR's own basic constraints, key usages and purposes are ignored);
//! - the evidence in the interoperable RA-TLS extension (OID 2.23.133.5.4.9);
//! - the critical extension [`APP_CERT_OID`], which marks it as an app
//!   certificate: generic TLS stacks refuse it, so no client takes an app
//!   certificate for the coordinator, and twinseal's clients require it of
//!   workers and refuse it from the coordinator;
//! - when the evidence was simulated, the critical extension
//!   [`SIMULATED_TEE_OID`], which generic TLS stacks refuse to accept
//!   because they do not know it — exactly what is wanted of a certificate
//!   that proves nothing about hardware.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;
use twinseal_attest::Evidence;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub use twinseal_net::tls::{
    APP_CERT_OID, APP_CERT_OID_STR, SIMULATED_TEE_OID, SIMULATED_TEE_OID_STR, is_app_certificate,
};

/// Largest CSR accepted, bytes.
pub const MAX_CSR_LEN: usize = 16 * 1024;

fn crypto(e: impl std::fmt::Display) -> Error {
    Error::Crypto(e.to_string())
}

/// The root CA: its certificate and signing key.
pub struct Ca {
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca(sha256 {})", self.fingerprint())
    }
}

/// A freshly made key pair and certificate (the coordinator's own).
pub struct Issued {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER. Secret.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
}

/// What an app certificate needs besides the CSR.
pub struct AppCertRequest<'a> {
    /// The app's name.
    pub app: &'a str,
    /// The verified evidence to embed.
    pub evidence: &'a Evidence,
    /// Whether the evidence was simulated.
    pub simulated: bool,
    /// Issue time.
    pub now: SystemTime,
    /// Lifetime.
    pub lifetime: Duration,
    /// The manifest version and the log index of the entry that approved
    /// the app's measurement (release transparency), if known.
    pub approval: Option<(u64, u64)>,
}

/// An issued app certificate.
pub struct AppCert {
    /// DER.
    pub der: Vec<u8>,
    /// Serial, lowercase hex.
    pub serial: String,
    /// Expiry.
    pub not_after: SystemTime,
}

impl Ca {
    /// Make a new root; returns it with its PKCS#8 key (to be wrapped by
    /// the master key before storage).
    pub fn generate(now: SystemTime) -> Result<(Ca, Zeroizing<Vec<u8>>)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "twinseal coordinator root");
        dn.push(DnType::OrganizationName, "twinseal");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = (now - Duration::from_secs(300)).into();
        params.not_after = (now + Duration::from_secs(10 * 365 * 86_400)).into();
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(crypto)?;
        let pkcs8 = Zeroizing::new(key.serialize_der());
        let ca = Ca::from_parts(cert.der().to_vec(), &pkcs8)?;
        Ok((ca, pkcs8))
    }

    /// Load a root from its certificate and PKCS#8 key.
    pub fn from_parts(cert_der: Vec<u8>, key_pkcs8: &[u8]) -> Result<Ca> {
        let key = KeyPair::try_from(key_pkcs8).map_err(crypto)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).map_err(crypto)?;
        Ok(Ca { cert_der, issuer })
    }

    /// The root certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The root certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem_cert(&self.cert_der)
    }

    /// SHA-256 of the root's DER, hex: what clients pin.
    pub fn fingerprint(&self) -> String {
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &self.cert_der,
        ))
    }

    /// A TLS server certificate for the coordinator itself.
    pub fn issue_server(&self, names: &[String], now: SystemTime) -> Result<Issued> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(crypto)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "twinseal coordinator");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = (now - Duration::from_secs(300)).into();
        params.not_after = (now + Duration::from_secs(2 * 365 * 86_400)).into();
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &self.issuer).map_err(crypto)?;
        Ok(Issued {
            cert_der: cert.der().to_vec(),
            key_pkcs8: Zeroizing::new(key.serialize_der()),
        })
    }

    /// Issue an app certificate for a CSR (PEM) whose public key the
    /// evidence binds. The CSR's signature is checked; its requested
    /// extensions other than subject alternative names are ignored.
    pub fn issue_app(&self, csr: &ParsedCsr, req: &AppCertRequest<'_>) -> Result<AppCert> {
        let mut params = csr.params.params.clone();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.app);
        dn.push(DnType::OrganizationName, "twinseal attested app");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params
            .subject_alt_names
            .retain(|s| matches!(s, SanType::DnsName(_) | SanType::IpAddress(_)));
        params.subject_alt_names.push(SanType::URI(
            format!("twinseal://app/{}", req.app)
                .try_into()
                .map_err(crypto)?,
        ));
        let not_after = req.now + req.lifetime;
        params.not_before = (req.now - Duration::from_secs(60)).into();
        params.not_after = not_after.into();
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        params.custom_extensions = twinseal_attest::cert::extensions(req.evidence, None);
        let mut app_ext = CustomExtension::from_oid_content(
            APP_CERT_OID,
            der_utf8(&format!("twinseal attested app {}", req.app)),
        );
        app_ext.set_criticality(true);
        params.custom_extensions.push(app_ext);
        if let Some((version, index)) = req.approval {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    twinseal_net::tls::TRANSPARENCY_OID,
                    der_utf8(&twinseal_net::tls::transparency_text(version, index)),
                ));
        }
        if req.simulated {
            let mut ext = CustomExtension::from_oid_content(
                SIMULATED_TEE_OID,
                // DER UTF8String: a human-readable warning.
                der_utf8("twinseal simulated TEE: no hardware guarantee"),
            );
            ext.set_criticality(true);
            params.custom_extensions.push(ext);
        }
        let cert = params
            .signed_by(&csr.params.public_key, &self.issuer)
            .map_err(crypto)?;
        Ok(AppCert {
            der: cert.der().to_vec(),
            serial: serial_hex,
            not_after,
        })
    }
}

/// A CSR whose signature verified.
pub struct ParsedCsr {
    params: CertificateSigningRequestParams,
    /// The SubjectPublicKeyInfo, DER (what the evidence must bind).
    pub spki_der: Vec<u8>,
}

impl ParsedCsr {
    /// The DNS names and IP addresses it asks for (the only names an app
    /// certificate gets).
    pub fn names(&self) -> Vec<String> {
        self.params
            .params
            .subject_alt_names
            .iter()
            .filter_map(|s| match s {
                SanType::DnsName(n) => Some(n.as_str().to_string()),
                SanType::IpAddress(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect()
    }
}

/// Parse a CSR (PEM) and check its self-signature.
pub fn parse_csr(pem_text: &str) -> Result<ParsedCsr> {
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    if pem_text.len() > MAX_CSR_LEN {
        return Err(Error::BadRequest("CSR is too large".into()));
    }
    let der = CertificateSigningRequestDer::from_pem_slice(pem_text.as_bytes())
        .map_err(|_| Error::BadRequest("CSR is not a PEM certificate request".into()))?;
    let params = CertificateSigningRequestParams::from_der(&der)
        .map_err(|e| Error::BadRequest(format!("CSR rejected: {e}")))?;
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|_| Error::BadRequest("CSR rejected: unparsable".into()))?;
    let spki_der = parsed.certification_request_info.subject_pki.raw.to_vec();
    Ok(ParsedCsr { params, spki_der })
}

fn random_serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(crypto)?;
    // Positive and without a leading zero byte, so the DER encoding is stable.
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

fn der_utf8(s: &str) -> Vec<u8> {
    let mut out = vec![0x0c, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// PEM of a DER certificate.
pub fn pem_cert(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Facts read from a DER certificate without trusting it.
pub struct CertFacts {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Expiry.
    pub not_after: SystemTime,
    /// Whether it carries the simulated-TEE extension.
    pub simulated: bool,
}

/// Read serial, expiry and the simulated marker from a DER certificate.
pub fn cert_facts(der: &[u8]) -> Result<CertFacts> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|_| Error::BadRequest("unparsable certificate".into()))?;
    let serial = hex::encode(cert.tbs_certificate.raw_serial());
    let ts = cert.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64);
    let simulated = cert
        .extensions()
        .iter()
        .any(|e| e.oid.to_id_string() == SIMULATED_TEE_OID_STR);
    Ok(CertFacts {
        serial,
        not_after,
        simulated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_certificates_carry_evidence_and_the_simulated_marker() {
        let now = SystemTime::now();
        let (ca, _) = Ca::generate(now).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        // A CSR asking to be a CA must not get CA rights.
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = parse_csr(&p.serialize_request(&key).unwrap().pem().unwrap()).unwrap();
        let evidence = Evidence::Simulated(vec![1, 2, 3]);
        let cert = ca
            .issue_app(
                &csr,
                &AppCertRequest {
                    app: "worker",
                    evidence: &evidence,
                    simulated: true,
                    now,
                    lifetime: Duration::from_secs(600),
                    approval: Some((3, 17)),
                },
            )
            .unwrap();
        let facts = cert_facts(&cert.der).unwrap();
        assert!(facts.simulated);
        // Release transparency: the approving log entry, readable by clients.
        assert_eq!(
            twinseal_net::tls::transparency_claims(&cert.der),
            Some((3, 17))
        );
        assert_eq!(
            twinseal_net::tls::app_of_certificate(&cert.der).as_deref(),
            Some("worker")
        );
        assert!(is_app_certificate(&cert.der));
        assert_eq!(csr.names(), ["localhost"]);
        let server = ca
            .issue_server(&["coordinator.example".into()], now)
            .unwrap();
        assert!(!is_app_certificate(&server.cert_der));
        assert_eq!(facts.serial, cert.serial);
        use x509_parser::prelude::FromDer;
        let (_, x) = x509_parser::certificate::X509Certificate::from_der(&cert.der).unwrap();
        assert!(!x.is_ca());
        let marker = x
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == SIMULATED_TEE_OID_STR)
            .unwrap();
        assert!(marker.critical);
        let app = x
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == APP_CERT_OID_STR)
            .unwrap();
        assert!(app.critical);
        let carried = twinseal_attest::cert::extract(&cert.der).unwrap();
        assert_eq!(carried.evidence, evidence);
        assert_eq!(carried.spki_der, csr.spki_der);
    }

    #[test]
    fn fail_bad_csrs() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let good = CertificateParams::new(vec!["a".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec();
        let mut tampered = good.clone();
        let n = tampered.len();
        tampered[n - 10] ^= 1; // inside the signature
        for (text, why) in [
            ("not a csr".to_string(), "PEM"),
            (pem("CERTIFICATE REQUEST", &tampered), "CSR rejected"),
            (
                pem("CERTIFICATE REQUEST", &good[..good.len() / 2]),
                "CSR rejected",
            ),
            ("x".repeat(MAX_CSR_LEN + 1), "too large"),
        ] {
            let e = parse_csr(&text).err().expect("rejected").to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    fn pem(label: &str, der: &[u8]) -> String {
        pem_cert(der).replace("CERTIFICATE", label)
    }
}
