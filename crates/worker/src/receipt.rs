//! Signed receipts: a worker's statement "with this model, inside this
//! attested TEE, these inputs gave this output at this time", signed with
//! the private key of its TLS certificate, so that anyone holding the
//! certificate can check it later ([`verify_receipt`]).
//!
//! # Canonical inputs digest
//!
//! `inputs_sha256` is SHA-256 over
//!
//! ```text
//! "twinseal-receipt-inputs/1" 0x00
//! u32 big-endian: number of images
//! per image, in request order:
//!     one byte: 'e' (encoded PNG/JPEG, as sent) or 'r' (raw grey pixels)
//!     u64 big-endian: length of the image bytes (after base64 decoding)
//!     the image bytes
//! ```
//!
//! For `compare` the images are `a` then `b`; for `embed` the list as sent.
//!
//! # Signed bytes
//!
//! The signature (ECDSA P-256 with SHA-256, ASN.1 DER, base64 in the
//! receipt) is over these UTF-8 lines, each ended by `\n`:
//!
//! ```text
//! twinseal-receipt/1
//! operation=<operation>
//! time=<time>
//! inputs_sha256=<hex>
//! model_sha256=<hex>
//! evidence_sha256=<hex>
//! certificate_sha256=<hex>
//! output_sha256=<hex of SHA-256 of the output's UTF-8 bytes>
//! ```
//!
//! Digests are 64 lowercase hex digits; the operation is lowercase ASCII
//! letters and `_` (`compare`, `compare_batch`, `embed`, `enroll`,
//! `verify`, `workflow`); the time is RFC 3339 and is checked to parse, so no field can
//! smuggle a line break. The output is carried as the exact JSON text that
//! was signed, so a verifier needs no JSON canonicalisation.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use twinseal_api::Receipt;

use crate::error::{Error, Result};

use twinseal_net::receipt::cert_public_key;
pub use twinseal_net::receipt::{
    InputKind, RECEIPT_FORMAT, check_fields, inputs_digest, signed_bytes, verify_receipt,
};

/// Signs receipts with the worker's certificate key; knows the digests of
/// the model, the evidence and the certificate.
pub struct ReceiptSigner {
    key: EcdsaKeyPair,
    /// The same key for COSE's fixed-length `r || s` signatures.
    cose_key: EcdsaKeyPair,
    rng: SystemRandom,
    model_sha256: String,
    evidence_sha256: String,
    certificate_sha256: String,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("model_sha256", &self.model_sha256)
            .field("evidence_sha256", &self.evidence_sha256)
            .field("certificate_sha256", &self.certificate_sha256)
            .finish_non_exhaustive()
    }
}

impl ReceiptSigner {
    /// A signer with the certificate's private key (PKCS#8, ECDSA P-256)
    /// and the raw digests it vouches for.
    pub fn new(
        key_pkcs8: &[u8],
        cert_der: &[u8],
        model_sha256: [u8; 32],
        evidence_sha256: [u8; 32],
    ) -> Result<Self> {
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, key_pkcs8)
            .map_err(|_| {
            Error::Crypto("the certificate key is not a P-256 PKCS#8 key".into())
        })?;
        let cose_key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, key_pkcs8)
                .map_err(|_| {
                    Error::Crypto("the certificate key is not a P-256 PKCS#8 key".into())
                })?;
        let cert_key = cert_public_key(cert_der)?;
        if cert_key != key.public_key().as_ref() {
            return Err(Error::Crypto(
                "the certificate is not for the signing key".into(),
            ));
        }
        Ok(ReceiptSigner {
            key,
            cose_key,
            rng: SystemRandom::new(),
            model_sha256: hex::encode(model_sha256),
            evidence_sha256: hex::encode(evidence_sha256),
            certificate_sha256: hex::encode(Sha256::digest(cert_der)),
        })
    }

    /// SHA-256 of the plaintext model, hex.
    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// SHA-256 of the evidence, hex.
    pub fn evidence_sha256(&self) -> &str {
        &self.evidence_sha256
    }

    /// A signed receipt for `operation` on inputs with digest
    /// `inputs_sha256` (from [`inputs_digest`]) giving `output` (JSON text).
    pub fn sign(&self, operation: &str, inputs_sha256: String, output: String) -> Result<Receipt> {
        let time = time::OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut r = Receipt {
            format: RECEIPT_FORMAT.into(),
            operation: operation.into(),
            time,
            inputs_sha256,
            model_sha256: self.model_sha256.clone(),
            evidence_sha256: self.evidence_sha256.clone(),
            certificate_sha256: self.certificate_sha256.clone(),
            output,
            signature: String::new(),
            cose: None,
        };
        check_fields(&r)?;
        let sig = self
            .key
            .sign(&self.rng, &signed_bytes(&r))
            .map_err(|_| Error::Internal("signing a receipt failed".into()))?;
        r.signature = B64.encode(sig.as_ref());
        let cose = twinseal_net::cose_receipt::sign_cose_receipt(&r, |tbs| {
            self.cose_key
                .sign(&self.rng, tbs)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| twinseal_net::Error::Crypto("signing a COSE receipt failed".into()))
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        r.cose = Some(B64.encode(cose));
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn fixture() -> (ReceiptSigner, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let platform = twinseal_attest::SimulatedPlatform::generate("test").unwrap();
        let evidence = platform.attest(&[7; 64], SystemTime::now()).unwrap();
        let cert = twinseal_attest::cert::self_signed_attested_certificate(
            &key,
            vec!["localhost".into()],
            &evidence,
            None,
        )
        .unwrap();
        let ev_digest: [u8; 32] = Sha256::digest(evidence.bytes()).into();
        let signer = ReceiptSigner::new(&key.serialize_der(), &cert, [9; 32], ev_digest).unwrap();
        (signer, cert)
    }

    #[test]
    fn receipts_verify_and_every_field_is_covered() {
        let (signer, cert) = fixture();
        let inputs = inputs_digest([(InputKind::Raw, &[1u8, 2, 3][..])].into_iter());
        let r = signer
            .sign("compare", inputs, r#"{"verdict":"similar"}"#.into())
            .unwrap();
        verify_receipt(&r, &cert).unwrap();
        let flip = |s: &str| {
            let mut c: Vec<char> = s.chars().collect();
            c[0] = if c[0] == '0' { '1' } else { '0' };
            c.into_iter().collect::<String>()
        };
        let mut bad = Vec::new();
        for i in 0..9 {
            let mut t = r.clone();
            match i {
                0 => t.format = "twinseal-receipt/2".into(),
                1 => t.operation = "embed".into(),
                2 => t.time = "2000-01-01T00:00:00Z".into(),
                3 => t.inputs_sha256 = flip(&t.inputs_sha256),
                4 => t.model_sha256 = flip(&t.model_sha256),
                5 => t.evidence_sha256 = flip(&t.evidence_sha256),
                6 => t.certificate_sha256 = flip(&t.certificate_sha256),
                7 => t.output = r#"{"verdict":"dissimilar"}"#.into(),
                _ => t.signature = B64.encode([0u8; 70]),
            }
            bad.push(t);
        }
        for (i, t) in bad.iter().enumerate() {
            assert!(verify_receipt(t, &cert).is_err(), "field {i} not covered");
        }
    }

    #[test]
    fn fail_a_receipt_under_another_certificate() {
        let (signer, _) = fixture();
        let (_, other) = fixture();
        let r = signer
            .sign("embed", inputs_digest(std::iter::empty()), "{}".into())
            .unwrap();
        assert!(verify_receipt(&r, &other).is_err());
    }

    #[test]
    fn inputs_digest_separates_kind_and_boundaries() {
        let a =
            inputs_digest([(InputKind::Raw, &b"ab"[..]), (InputKind::Raw, &b"c"[..])].into_iter());
        let b =
            inputs_digest([(InputKind::Raw, &b"a"[..]), (InputKind::Raw, &b"bc"[..])].into_iter());
        let c = inputs_digest(
            [
                (InputKind::Encoded, &b"ab"[..]),
                (InputKind::Raw, &b"c"[..]),
            ]
            .into_iter(),
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 64);
    }
}
