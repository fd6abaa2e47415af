//! Signed receipts: a worker's statement "with this model, inside this
//! attested TEE, these inputs gave this output at this time", signed with
//! the private key of its TLS certificate, so that anyone holding the
//! certificate can check it later ([`verify_receipt`]). The worker signs
//! (`twinseal_worker::ReceiptSigner`); this module is the format and the
//! check, shared with every client.
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

use aws_lc_rs::signature;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use twinseal_api::Receipt;
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};

/// The receipt format workers write and clients verify.
pub const RECEIPT_FORMAT: &str = "twinseal-receipt/1";

const INPUTS_DOMAIN: &[u8] = b"twinseal-receipt-inputs/1\0";

/// How an input image was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// An encoded PNG or JPEG, as sent.
    Encoded,
    /// Raw grey pixels.
    Raw,
}

/// SHA-256 of the canonical encoding of `images` (see the module docs), hex.
pub fn inputs_digest<'a>(images: impl ExactSizeIterator<Item = (InputKind, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    h.update(INPUTS_DOMAIN);
    h.update((images.len() as u32).to_be_bytes());
    for (kind, bytes) in images {
        h.update([match kind {
            InputKind::Encoded => b'e',
            InputKind::Raw => b'r',
        }]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// The exact bytes a receipt's signature covers (see the module docs).
pub fn signed_bytes(r: &Receipt) -> Vec<u8> {
    let output = hex::encode(Sha256::digest(r.output.as_bytes()));
    format!(
        "{RECEIPT_FORMAT}\noperation={}\ntime={}\ninputs_sha256={}\nmodel_sha256={}\n\
         evidence_sha256={}\ncertificate_sha256={}\noutput_sha256={output}\n",
        r.operation,
        r.time,
        r.inputs_sha256,
        r.model_sha256,
        r.evidence_sha256,
        r.certificate_sha256,
    )
    .into_bytes()
}

/// The raw public key of a certificate (DER).
pub fn cert_public_key(cert_der: &[u8]) -> Result<Vec<u8>> {
    let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|_| Error::Crypto("unparsable certificate".into()))?;
    if !rest.is_empty() {
        return Err(Error::Crypto("trailing bytes after the certificate".into()));
    }
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The field rules that keep the signed bytes unambiguous.
pub fn check_fields(r: &Receipt) -> Result<()> {
    let reject = Error::ReceiptRejected;
    if r.format != RECEIPT_FORMAT {
        return Err(reject("unknown receipt format"));
    }
    if r.operation.is_empty()
        || !r
            .operation
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(reject("malformed operation"));
    }
    if time::OffsetDateTime::parse(&r.time, &Rfc3339).is_err() {
        return Err(reject("malformed time"));
    }
    for d in [
        &r.inputs_sha256,
        &r.model_sha256,
        &r.evidence_sha256,
        &r.certificate_sha256,
    ] {
        if !is_hex_digest(d) {
            return Err(reject("malformed digest"));
        }
    }
    Ok(())
}

/// Verify `receipt` with the worker's certificate (DER): the certificate is
/// the one named in the receipt, it carries the evidence whose digest the
/// receipt states, and its key signed the receipt's canonical bytes.
///
/// This checks the receipt against the certificate only; whether the
/// certificate itself is trustworthy (issued by the coordinator's root,
/// not simulated, not expired at the receipt's time) is the caller's
/// check, e.g. with [`crate::tls::PeerVerifier::worker`].
pub fn verify_receipt(receipt: &Receipt, cert_der: &[u8]) -> Result<()> {
    let reject = Error::ReceiptRejected;
    check_fields(receipt)?;
    if hex::encode(Sha256::digest(cert_der)) != receipt.certificate_sha256 {
        return Err(reject("the receipt names another certificate"));
    }
    let carried = twinseal_attest::cert::extract(cert_der)
        .map_err(|_| reject("the certificate carries no evidence"))?;
    if hex::encode(Sha256::digest(carried.evidence.bytes())) != receipt.evidence_sha256 {
        return Err(reject(
            "the evidence digest differs from the certificate's evidence",
        ));
    }
    let key = cert_public_key(cert_der).map_err(|_| reject("unparsable certificate"))?;
    let sig = B64
        .decode(&receipt.signature)
        .map_err(|_| reject("the signature is not base64"))?;
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, key)
        .verify(&signed_bytes(receipt), &sig)
        .map_err(|_| reject("bad signature"))?;
    // The COSE form, when present, must verify and state the same.
    if let Some(cose) = &receipt.cose {
        let bytes = B64
            .decode(cose)
            .map_err(|_| reject("the COSE receipt is not base64"))?;
        let stated = crate::cose_receipt::verify_cose_receipt(&bytes, cert_der)?;
        if !crate::cose_receipt::same_statement(&stated, receipt) {
            return Err(reject("the COSE receipt states something else"));
        }
    }
    Ok(())
}
