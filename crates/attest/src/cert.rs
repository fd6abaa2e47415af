//! Evidence in X.509 certificates, following the interoperable RA-TLS
//! convention: the evidence in an extension with OID 2.23.133.5.4.9
//! (TCG DICE conceptual message wrapper) and endorsements (DCAP collateral,
//! or the SEV-SNP VCEK) in one with OID 2.23.133.5.4.2. Each extension value
//! is a CBOR-encoded CMW array `[media-type, bytes]` (two elements, definite
//! lengths, nothing after).
//!
//! The report data of evidence in a certificate binds the certificate's own
//! public key with [`crate::binding::report_data`]; with an empty challenge
//! a third party can verify the certificate from its contents alone.

#[cfg(feature = "verify")]
use std::time::SystemTime;

#[cfg(feature = "verify")]
use rcgen::CustomExtension;
use x509_parser::prelude::*;

#[cfg(feature = "verify")]
use crate::binding::report_data;
#[cfg(feature = "verify")]
use crate::claims::VerifiedClaims;
#[cfg(feature = "verify")]
use crate::dcap::{CollateralSource, DcapCollateral, DcapVerifier};
use crate::error::{Error, Reason, Result};
use crate::evidence::Evidence;
#[cfg(feature = "verify")]
use crate::{Verifier, Verifiers};

/// OID of the evidence extension (tcg-dice-conceptual-message-wrapper).
pub const EVIDENCE_OID: &[u64] = &[2, 23, 133, 5, 4, 9];
/// OID of the endorsements extension (tcg-dice-endorsement-manifest).
pub const ENDORSEMENTS_OID: &[u64] = &[2, 23, 133, 5, 4, 2];
const EVIDENCE_OID_STR: &str = "2.23.133.5.4.9";
const ENDORSEMENTS_OID_STR: &str = "2.23.133.5.4.2";

/// Media type of an SGX DCAP quote.
pub const MT_SGX_QUOTE: &str = "application/vnd.twinseal.sgx-quote";
/// Media type of a TDX DCAP quote.
pub const MT_TDX_QUOTE: &str = "application/vnd.twinseal.tdx-quote";
/// Media type of an SEV-SNP report.
pub const MT_SNP_REPORT: &str = "application/vnd.twinseal.sev-snp-report";
/// Media type of simulated-TEE evidence.
pub const MT_SIMULATED: &str = "application/vnd.twinseal.simulated-evidence";
/// Media type of DCAP collateral (JSON as `dcap_qvl::QuoteCollateralV3`).
pub const MT_DCAP_COLLATERAL: &str = "application/vnd.twinseal.dcap-collateral+json";
/// Media type of a DER certificate (the SEV-SNP VCEK).
pub const MT_PKIX_CERT: &str = "application/pkix-cert";

/// Largest CMW value accepted when parsing (evidence plus collateral are ~20 KiB).
const MAX_CMW_LEN: usize = 1 << 20;

/// Encode a CMW `[media_type, value]` as CBOR.
pub fn encode_cmw(media_type: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + media_type.len() + 12);
    out.push(0x82); // array(2)
    cbor_head(&mut out, 3, media_type.len());
    out.extend_from_slice(media_type.as_bytes());
    cbor_head(&mut out, 2, value.len());
    out.extend_from_slice(value);
    out
}

fn cbor_head(out: &mut Vec<u8>, major: u8, len: usize) {
    let m = major << 5;
    if len < 24 {
        out.push(m | len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[m | 24, len as u8]);
    } else if len <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 26);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Read a definite-length CBOR head of `major`, in shortest form.
fn read_head(b: &[u8], major: u8) -> std::result::Result<(usize, &[u8]), String> {
    let (&first, rest) = b.split_first().ok_or("truncated CBOR")?;
    if first >> 5 != major {
        return Err(format!("expected CBOR major type {major}"));
    }
    let info = first & 0x1f;
    let (len, rest, min) = match info {
        0..=23 => (info as usize, rest, 0),
        24 if !rest.is_empty() => (rest[0] as usize, &rest[1..], 24),
        25 if rest.len() >= 2 => (
            u16::from_be_bytes([rest[0], rest[1]]) as usize,
            &rest[2..],
            0x100,
        ),
        26 if rest.len() >= 4 => (
            u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize,
            &rest[4..],
            0x1_0000,
        ),
        _ => return Err("unsupported or truncated CBOR length".into()),
    };
    if len < min {
        return Err("non-canonical CBOR length".into());
    }
    Ok((len, rest))
}

/// Decode a CMW `[media_type, value]` strictly.
pub fn decode_cmw(b: &[u8]) -> std::result::Result<(&str, &[u8]), String> {
    let (n, rest) = read_head(b, 4)?;
    if n != 2 {
        return Err("CMW must be a two-element array".into());
    }
    let (tlen, rest) = read_head(rest, 3)?;
    if tlen > rest.len() || tlen > 255 {
        return Err("bad media type length".into());
    }
    let mt = std::str::from_utf8(&rest[..tlen]).map_err(|_| "media type is not UTF-8")?;
    let (vlen, rest) = read_head(&rest[tlen..], 2)?;
    if vlen > MAX_CMW_LEN || vlen != rest.len() {
        return Err("bad value length or trailing bytes".into());
    }
    Ok((mt, rest))
}

/// The extensions carrying `evidence` and, optionally, DCAP collateral. An
/// SEV-SNP VCEK carried by the evidence goes into the endorsements.
#[cfg(feature = "verify")]
pub fn extensions(
    evidence: &Evidence,
    collateral: Option<&DcapCollateral>,
) -> Vec<CustomExtension> {
    let (mt, bytes) = match evidence {
        Evidence::SgxQuote(q) => (MT_SGX_QUOTE, q.as_slice()),
        Evidence::TdxQuote(q) => (MT_TDX_QUOTE, q.as_slice()),
        Evidence::SevSnp { report, .. } => (MT_SNP_REPORT, report.as_slice()),
        Evidence::Simulated(b) => (MT_SIMULATED, b.as_slice()),
    };
    let mut out = vec![CustomExtension::from_oid_content(
        EVIDENCE_OID,
        encode_cmw(mt, bytes),
    )];
    let endorsement = match (evidence, collateral) {
        (
            Evidence::SevSnp {
                vcek_der: Some(v), ..
            },
            _,
        ) => Some(encode_cmw(MT_PKIX_CERT, v)),
        (Evidence::SgxQuote(_) | Evidence::TdxQuote(_), Some(c)) => {
            Some(encode_cmw(MT_DCAP_COLLATERAL, &c.to_json()))
        }
        _ => None,
    };
    if let Some(e) = endorsement {
        out.push(CustomExtension::from_oid_content(ENDORSEMENTS_OID, e));
    }
    out
}

/// What a certificate carries.
#[derive(Debug, Clone)]
pub struct CertificateEvidence {
    /// The evidence (with the VCEK for SEV-SNP when endorsed).
    pub evidence: Evidence,
    /// DCAP collateral (JSON), if embedded; parsed when verified
    /// ([`CertificateEvidence::collateral`]).
    pub collateral_json: Option<Vec<u8>>,
    /// The certificate's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::Rejected(Reason(detail.into()))
}

/// Parse the evidence extensions of a DER certificate (no verification).
pub fn extract(cert_der: &[u8]) -> Result<CertificateEvidence> {
    let (rest, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| bad(format!("bad certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the certificate"));
    }
    let mut ev = None;
    let mut en = None;
    for ext in cert.extensions() {
        let slot = match ext.oid.to_id_string().as_str() {
            EVIDENCE_OID_STR => &mut ev,
            ENDORSEMENTS_OID_STR => &mut en,
            _ => continue,
        };
        if slot.is_some() {
            return Err(bad("duplicate attestation extension"));
        }
        *slot = Some(ext.value);
    }
    let ev = ev.ok_or_else(|| bad("no evidence extension"))?;
    let (mt, bytes) = decode_cmw(ev).map_err(bad)?;
    let (endorsement_mt, endorsement) = match en {
        Some(e) => {
            let (m, b) = decode_cmw(e).map_err(bad)?;
            (Some(m), Some(b))
        }
        None => (None, None),
    };
    let mut collateral_json = None;
    let evidence = match mt {
        MT_SGX_QUOTE | MT_TDX_QUOTE => {
            if let (Some(MT_DCAP_COLLATERAL), Some(c)) = (endorsement_mt, endorsement) {
                collateral_json = Some(c.to_vec());
            } else if endorsement.is_some() {
                return Err(bad("unexpected endorsement type"));
            }
            if mt == MT_SGX_QUOTE {
                Evidence::SgxQuote(bytes.to_vec())
            } else {
                Evidence::TdxQuote(bytes.to_vec())
            }
        }
        MT_SNP_REPORT => {
            let vcek_der = match (endorsement_mt, endorsement) {
                (Some(MT_PKIX_CERT), Some(v)) => Some(v.to_vec()),
                (None, None) => None,
                _ => return Err(bad("unexpected endorsement type")),
            };
            Evidence::SevSnp {
                report: bytes.to_vec(),
                vcek_der,
            }
        }
        MT_SIMULATED => Evidence::Simulated(bytes.to_vec()),
        other => return Err(bad(format!("unknown evidence media type {other}"))),
    };
    Ok(CertificateEvidence {
        evidence,
        collateral_json,
        spki_der: cert.tbs_certificate.subject_pki.raw.to_vec(),
    })
}

#[cfg(feature = "verify")]
impl CertificateEvidence {
    /// The embedded DCAP collateral, parsed.
    pub fn collateral(&self) -> Result<Option<DcapCollateral>> {
        self.collateral_json
            .as_deref()
            .map(|c| DcapCollateral::from_json(c).map_err(|e| bad(e.to_string())))
            .transpose()
    }
}

/// Verify the evidence in a certificate: it must bind the certificate's own
/// public key and `challenge` (empty for a self-contained certificate).
/// Embedded DCAP collateral is used (it is signed by Intel, so embedding it
/// is safe); other kinds go to `verifiers` (SEV-SNP with the embedded VCEK).
#[cfg(feature = "verify")]
pub fn verify_certificate(
    cert_der: &[u8],
    verifiers: &Verifiers,
    challenge: &[u8],
    at: SystemTime,
) -> Result<VerifiedClaims> {
    let ce = extract(cert_der).inspect_err(|e| {
        tracing::warn!(reason = ?e.reason(), "attestation rejected: certificate evidence");
    })?;
    let expected = report_data(challenge, &ce.spki_der);
    let collateral = ce.collateral().inspect_err(|e| {
        tracing::warn!(reason = ?e.reason(), "attestation rejected: certificate collateral");
    })?;
    match (&ce.evidence, collateral) {
        (Evidence::SgxQuote(_), Some(c)) => {
            DcapVerifier::sgx(CollateralSource::Fixed(c)).verify(&ce.evidence, &expected, at)
        }
        (Evidence::TdxQuote(_), Some(c)) => {
            DcapVerifier::tdx(CollateralSource::Fixed(c)).verify(&ce.evidence, &expected, at)
        }
        (e, _) => verifiers.verify(e, &expected, at),
    }
}

/// A self-signed certificate for `key` carrying `evidence` (RA-TLS style).
#[cfg(feature = "verify")]
pub fn self_signed_attested_certificate(
    key: &rcgen::KeyPair,
    subject_alt_names: Vec<String>,
    evidence: &Evidence,
    collateral: Option<&DcapCollateral>,
) -> Result<Vec<u8>> {
    let mut params = rcgen::CertificateParams::new(subject_alt_names)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    params.custom_extensions = extensions(evidence, collateral);
    let cert = params
        .self_signed(key)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    Ok(cert.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmw_round_trips_at_every_length_class() {
        for len in [0usize, 23, 24, 255, 256, 65535, 65536] {
            let v = vec![0x5a; len];
            let enc = encode_cmw(MT_SGX_QUOTE, &v);
            assert_eq!(decode_cmw(&enc).unwrap(), (MT_SGX_QUOTE, v.as_slice()));
        }
    }

    #[test]
    fn fail_cmw_malformed() {
        let good = encode_cmw(MT_SIMULATED, b"abc");
        let mut trailing = good.clone();
        trailing.push(0);
        let mut three = good.clone();
        three[0] = 0x83;
        let non_canonical = [0x82, 0x78, 0x01, b'a', 0x41, 0x00];
        for bad in [
            &trailing[..],
            &three[..],
            &good[..good.len() - 1],
            &non_canonical[..],
            &[0x9f][..],
            &[][..],
        ] {
            assert!(decode_cmw(bad).is_err(), "{bad:02x?}");
        }
    }
}
