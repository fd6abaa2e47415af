//! Receipts as COSE_Sign1 (RFC 9052) with CWT/EAT claims (RFC 8392,
//! RFC 9711): the same statement as the JSON receipt ([`crate::receipt`]),
//! in the standard form that COSE tools verify. Specification:
//! `docs/spec/receipt.md`.
//!
//! ```text
//! COSE_Sign1, tag 18:
//!   protected:   {1 (alg): -7 (ES256), 3 (content type): 61 (application/cwt),
//!                 4 (kid): SHA-256 of the worker's certificate (DER)}
//!   unprotected: {} (empty: everything is signed)
//!   payload:     CWT claims set (CBOR map), exactly these:
//!     1   (iss):         "twinseal-worker"
//!     6   (iat):         time of the output, seconds since 1970
//!     265 (eat_profile): "tag:twinseal.dev,2026:receipt/1"
//!     "operation":       text
//!     "time":            text, RFC 3339 (the JSON receipt's `time`)
//!     "inputs":          bytes (32), the request (inputs) digest
//!     "model":           bytes (32), SHA-256 of the plaintext model
//!     "evidence":        bytes (32), SHA-256 of the worker's evidence
//!     "certificate":     bytes (32), SHA-256 of the worker's certificate
//!     "output":          text, the output's exact JSON
//!   signature:   ECDSA P-256 / SHA-256, r || s (64 bytes), by the
//!                certificate's key, over Sig_structure
//!                ["Signature1", protected, h'', payload]
//! ```

use aws_lc_rs::signature;
use coset::cbor::value::Value;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};
use sha2::{Digest, Sha256};
use twinseal_api::Receipt;

use crate::error::{Error, Result};
use crate::receipt::{RECEIPT_FORMAT, cert_public_key, check_fields};

/// The EAT profile a COSE receipt names.
pub const COSE_RECEIPT_PROFILE: &str = "tag:twinseal.dev,2026:receipt/1";

/// The issuer a COSE receipt names.
pub const COSE_RECEIPT_ISSUER: &str = "twinseal-worker";

/// The largest COSE receipt [`verify_cose_receipt`] parses, in bytes.
pub const MAX_COSE_RECEIPT_LEN: usize = 16 * 1024 * 1024;

const LABEL_ISS: i64 = 1;
const LABEL_IAT: i64 = 6;
const LABEL_EAT_PROFILE: i64 = 265;

fn reject(why: &'static str) -> Error {
    Error::ReceiptRejected(why)
}

fn digest32(hex_digest: &str) -> Result<Vec<u8>> {
    let b = hex::decode(hex_digest).map_err(|_| reject("malformed digest"))?;
    if b.len() != 32 {
        return Err(reject("malformed digest"));
    }
    Ok(b)
}

/// The CWT claims set of `r` (whose fields [`check_fields`] accepts).
fn claims(r: &Receipt) -> Result<Vec<u8>> {
    let iat = time::OffsetDateTime::parse(&r.time, &time::format_description::well_known::Rfc3339)
        .map_err(|_| reject("malformed time"))?
        .unix_timestamp();
    let text = |s: &str| Value::Text(s.to_string());
    let map = Value::Map(vec![
        (Value::Integer(LABEL_ISS.into()), text(COSE_RECEIPT_ISSUER)),
        (Value::Integer(LABEL_IAT.into()), Value::Integer(iat.into())),
        (
            Value::Integer(LABEL_EAT_PROFILE.into()),
            text(COSE_RECEIPT_PROFILE),
        ),
        (text("operation"), text(&r.operation)),
        (text("time"), text(&r.time)),
        (text("inputs"), Value::Bytes(digest32(&r.inputs_sha256)?)),
        (text("model"), Value::Bytes(digest32(&r.model_sha256)?)),
        (
            text("evidence"),
            Value::Bytes(digest32(&r.evidence_sha256)?),
        ),
        (
            text("certificate"),
            Value::Bytes(digest32(&r.certificate_sha256)?),
        ),
        (text("output"), text(&r.output)),
    ]);
    let mut out = Vec::new();
    coset::cbor::ser::into_writer(&map, &mut out).map_err(|_| reject("unencodable claims"))?;
    Ok(out)
}

/// The COSE_Sign1 form of the receipt `r` (its `signature` and `cose` are
/// ignored), signed by `sign` (ECDSA P-256 / SHA-256 with a fixed-length
/// `r || s` signature, by the key of the certificate `r` names). Tagged
/// CBOR bytes.
pub fn sign_cose_receipt(
    r: &Receipt,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    check_fields(r)?;
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .content_format(iana::CoapContentFormat::Cwt)
        .key_id(digest32(&r.certificate_sha256)?)
        .build();
    let payload = claims(r)?;
    let mut failed = None;
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(b"", |tbs| match sign(tbs) {
            Ok(s) => s,
            Err(e) => {
                failed = Some(e);
                Vec::new()
            }
        })
        .build();
    if let Some(e) = failed {
        return Err(e);
    }
    sign1
        .to_tagged_vec()
        .map_err(|_| reject("unencodable COSE receipt"))
}

/// What a verified COSE receipt states, as the JSON receipt's fields.
pub type CoseClaims = Receipt;

/// Verify a COSE receipt (tagged COSE_Sign1 bytes) with the worker's
/// certificate (DER): exactly the profile's headers and claims, the key ID
/// and certificate digest of this certificate, the evidence digest of the
/// evidence the certificate carries, and the signature by its key. Returns
/// the statement as a JSON receipt (without signature). Untrusted bytes:
/// anything else is refused.
pub fn verify_cose_receipt(bytes: &[u8], cert_der: &[u8]) -> Result<CoseClaims> {
    if bytes.len() > MAX_COSE_RECEIPT_LEN {
        return Err(reject("the COSE receipt is too large"));
    }
    let sign1 =
        CoseSign1::from_tagged_slice(bytes).map_err(|_| reject("not a tagged COSE_Sign1"))?;
    // Canonical form only: re-encoding gives the same bytes.
    if sign1.clone().to_tagged_vec().ok().as_deref() != Some(bytes) {
        return Err(reject("the COSE receipt is not in canonical form"));
    }
    let p = &sign1.protected.header;
    if p.alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::ES256,
        ))
        || p.content_type != Some(coset::ContentType::Assigned(iana::CoapContentFormat::Cwt))
        || !p.crit.is_empty()
        || !p.iv.is_empty()
        || !p.partial_iv.is_empty()
        || p.counter_signatures.len() + p.rest.len() != 0
    {
        return Err(reject("unexpected protected header"));
    }
    if !sign1.unprotected.is_empty() {
        return Err(reject("the unprotected header must be empty"));
    }
    let cert_digest = Sha256::digest(cert_der).to_vec();
    if p.key_id != cert_digest {
        return Err(reject("the receipt names another certificate"));
    }
    let key = cert_public_key(cert_der).map_err(|_| reject("unparsable certificate"))?;
    sign1
        .verify_signature(b"", |sig, tbs| {
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &key)
                .verify(tbs, sig)
        })
        .map_err(|_| reject("bad signature"))?;
    let payload = sign1.payload.as_deref().ok_or(reject("no payload"))?;
    let r = parse_claims(payload)?;
    if r.certificate_sha256 != hex::encode(&cert_digest) {
        return Err(reject("the receipt names another certificate"));
    }
    let carried = twinseal_attest::cert::extract(cert_der)
        .map_err(|_| reject("the certificate carries no evidence"))?;
    if hex::encode(Sha256::digest(carried.evidence.bytes())) != r.evidence_sha256 {
        return Err(reject(
            "the evidence digest differs from the certificate's evidence",
        ));
    }
    Ok(r)
}

/// The claims set, strictly: exactly the profile's claims, each once, of
/// the right type, and canonical (re-encoding gives the same bytes).
fn parse_claims(payload: &[u8]) -> Result<Receipt> {
    let value: Value =
        coset::cbor::de::from_reader(payload).map_err(|_| reject("claims are not CBOR"))?;
    let Value::Map(entries) = value else {
        return Err(reject("claims are not a map"));
    };
    let mut iss = None;
    let mut iat = None;
    let mut profile = None;
    let mut texts: std::collections::BTreeMap<&str, String> = Default::default();
    let mut digests: std::collections::BTreeMap<&str, String> = Default::default();
    for (k, v) in &entries {
        let dup = || reject("a claim is repeated");
        match (k, v) {
            (Value::Integer(i), Value::Text(t)) if i128::from(*i) == LABEL_ISS as i128 => {
                if iss.replace(t.clone()).is_some() {
                    return Err(dup());
                }
            }
            (Value::Integer(i), Value::Integer(n)) if i128::from(*i) == LABEL_IAT as i128 => {
                if iat.replace(i128::from(*n)).is_some() {
                    return Err(dup());
                }
            }
            (Value::Integer(i), Value::Text(t)) if i128::from(*i) == LABEL_EAT_PROFILE as i128 => {
                if profile.replace(t.clone()).is_some() {
                    return Err(dup());
                }
            }
            (Value::Text(name), Value::Text(t))
                if ["operation", "time", "output"].contains(&name.as_str()) =>
            {
                let key = ["operation", "time", "output"]
                    .into_iter()
                    .find(|k| *k == name)
                    .unwrap_or_default();
                if texts.insert(key, t.clone()).is_some() {
                    return Err(dup());
                }
            }
            (Value::Text(name), Value::Bytes(b))
                if ["inputs", "model", "evidence", "certificate"].contains(&name.as_str()) =>
            {
                if b.len() != 32 {
                    return Err(reject("a digest claim is not 32 bytes"));
                }
                let key = ["inputs", "model", "evidence", "certificate"]
                    .into_iter()
                    .find(|k| *k == name)
                    .unwrap_or_default();
                if digests.insert(key, hex::encode(b)).is_some() {
                    return Err(dup());
                }
            }
            _ => return Err(reject("an unknown claim, or a claim of the wrong type")),
        }
    }
    if iss.as_deref() != Some(COSE_RECEIPT_ISSUER) {
        return Err(reject("wrong or missing issuer"));
    }
    if profile.as_deref() != Some(COSE_RECEIPT_PROFILE) {
        return Err(reject("wrong or missing EAT profile"));
    }
    let (Some(iat), 3, 4) = (iat, texts.len(), digests.len()) else {
        return Err(reject("a claim is missing"));
    };
    let take =
        |m: &mut std::collections::BTreeMap<&str, String>, k| m.remove(k).unwrap_or_default();
    let r = Receipt {
        format: RECEIPT_FORMAT.into(),
        operation: take(&mut texts, "operation"),
        time: take(&mut texts, "time"),
        inputs_sha256: take(&mut digests, "inputs"),
        model_sha256: take(&mut digests, "model"),
        evidence_sha256: take(&mut digests, "evidence"),
        certificate_sha256: take(&mut digests, "certificate"),
        output: take(&mut texts, "output"),
        signature: String::new(),
        cose: None,
    };
    check_fields(&r)?;
    // iat is the time claim in whole seconds, and the map is canonical.
    if claims(&r)? != payload {
        return Err(reject("claims are not in canonical form"));
    }
    let _ = iat;
    Ok(r)
}

/// Whether a verified COSE statement and a JSON receipt say the same.
pub fn same_statement(cose: &Receipt, json: &Receipt) -> bool {
    (
        &cose.operation,
        &cose.time,
        &cose.inputs_sha256,
        &cose.model_sha256,
        &cose.evidence_sha256,
        &cose.certificate_sha256,
        &cose.output,
    ) == (
        &json.operation,
        &json.time,
        &json.inputs_sha256,
        &json.model_sha256,
        &json.evidence_sha256,
        &json.certificate_sha256,
        &json.output,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::EcdsaKeyPair;

    pub(crate) fn fixture() -> (Receipt, Vec<u8>, EcdsaKeyPair) {
        let (r, cert, pkcs8) = fixture_pkcs8();
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap();
        (r, cert, pair)
    }

    /// A receipt (unsigned), its certificate and the key's PKCS#8.
    pub(crate) fn fixture_pkcs8() -> (Receipt, Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let platform = twinseal_attest::SimulatedPlatform::generate("test").unwrap();
        let evidence = platform
            .attest(&[7; 64], std::time::SystemTime::now())
            .unwrap();
        let cert = twinseal_attest::cert::self_signed_attested_certificate(
            &key,
            vec!["localhost".into()],
            &evidence,
            None,
        )
        .unwrap();
        let r = Receipt {
            format: RECEIPT_FORMAT.into(),
            operation: "compare".into(),
            time: "2026-12-03T20:00:00.123456Z".into(),
            inputs_sha256: "11".repeat(32),
            model_sha256: "22".repeat(32),
            evidence_sha256: hex::encode(Sha256::digest(evidence.bytes())),
            certificate_sha256: hex::encode(Sha256::digest(&cert)),
            output: r#"{"probability":0.93,"verdict":"similar"}"#.into(),
            signature: String::new(),
            cose: None,
        };
        (r, cert, key.serialize_der())
    }

    fn sign(r: &Receipt, pair: &EcdsaKeyPair) -> Vec<u8> {
        sign_cose_receipt(r, |tbs| {
            Ok(pair
                .sign(&SystemRandom::new(), tbs)
                .unwrap()
                .as_ref()
                .to_vec())
        })
        .unwrap()
    }

    #[test]
    fn a_cose_receipt_verifies_and_states_what_the_json_one_does() {
        let (r, cert, pair) = fixture();
        let cose = sign(&r, &pair);
        assert_eq!(cose[0], 0xd2, "tag 18");
        let got = verify_cose_receipt(&cose, &cert).unwrap();
        assert!(same_statement(&got, &r));
    }

    #[test]
    fn every_mutated_byte_of_a_cose_receipt_is_rejected() {
        let (r, cert, pair) = fixture();
        let cose = sign(&r, &pair);
        for i in 0..cose.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut m = cose.clone();
                m[i] ^= x;
                assert!(
                    verify_cose_receipt(&m, &cert).is_err(),
                    "byte {i} ^ {x:#x} accepted"
                );
            }
        }
        // Cut or extended.
        assert!(verify_cose_receipt(&cose[..cose.len() - 1], &cert).is_err());
        let mut longer = cose.clone();
        longer.push(0);
        assert!(verify_cose_receipt(&longer, &cert).is_err());
        // Another certificate.
        let (_, other, _) = fixture();
        assert!(verify_cose_receipt(&cose, &other).is_err());
    }
}

/// The conformance vectors of `docs/spec/receipt.md`
/// (`docs/spec/vectors/receipt/`): every `ok_*.cose` verifies with
/// `cert.der` and states what `ok_*.json` states; every `fail_*.cose` is
/// refused with the reason `vectors.txt` names. Regenerate with
/// `TWINSEAL_WRITE_RECEIPT_VECTORS=1 cargo test -p twinseal-net --lib receipt_vectors`.
#[cfg(test)]
mod vectors {
    use std::path::PathBuf;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::EcdsaKeyPair;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use coset::cbor::value::Value;
    use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};

    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/spec/vectors/receipt")
    }

    /// A COSE_Sign1 over `payload` with `protected`, signed by `pair`.
    fn signed(pair: &EcdsaKeyPair, protected: coset::Header, payload: Vec<u8>) -> CoseSign1 {
        CoseSign1Builder::new()
            .protected(protected)
            .payload(payload)
            .create_signature(b"", |tbs| {
                pair.sign(&SystemRandom::new(), tbs)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            })
            .build()
    }

    fn header(alg: iana::Algorithm, kid: Vec<u8>) -> coset::Header {
        HeaderBuilder::new()
            .algorithm(alg)
            .content_format(iana::CoapContentFormat::Cwt)
            .key_id(kid)
            .build()
    }

    /// The claims of `r` with `edit` applied to the map's entries.
    fn claims_with(r: &Receipt, edit: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
        let Value::Map(mut m) =
            coset::cbor::de::from_reader(claims(r).unwrap().as_slice()).unwrap()
        else {
            unreachable!()
        };
        edit(&mut m);
        let mut out = Vec::new();
        coset::cbor::ser::into_writer(&Value::Map(m), &mut out).unwrap();
        out
    }

    fn write_vectors() {
        let (mut r, cert, pkcs8) = super::tests::fixture_pkcs8();
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap();
        let asn1 =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8).unwrap();
        r.signature = B64.encode(
            asn1.sign(&SystemRandom::new(), &crate::receipt::signed_bytes(&r))
                .unwrap()
                .as_ref(),
        );
        let d = dir();
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cert.der"), &cert).unwrap();
        let kid = Sha256::digest(&cert).to_vec();
        let ok = sign_cose_receipt(&r, |tbs| {
            Ok(pair
                .sign(&SystemRandom::new(), tbs)
                .unwrap()
                .as_ref()
                .to_vec())
        })
        .unwrap();
        std::fs::write(d.join("ok_compare.cose"), &ok).unwrap();
        r.cose = Some(B64.encode(&ok));
        std::fs::write(
            d.join("ok_compare.json"),
            serde_json::to_vec_pretty(&r).unwrap(),
        )
        .unwrap();

        let mut fails: Vec<(&str, Vec<u8>, &str)> = Vec::new();
        let mut bad_sig = ok.clone();
        let n = bad_sig.len();
        bad_sig[n - 1] ^= 1;
        fails.push(("fail_signature", bad_sig, "bad signature"));
        let untagged =
            coset::CborSerializable::to_vec(CoseSign1::from_tagged_slice(&ok).unwrap()).unwrap();
        fails.push(("fail_untagged", untagged, "not a tagged COSE_Sign1"));
        let mut unprotected = CoseSign1::from_tagged_slice(&ok).unwrap();
        unprotected.unprotected = HeaderBuilder::new().key_id(b"x".to_vec()).build();
        fails.push((
            "fail_unprotected_header",
            unprotected.to_tagged_vec().unwrap(),
            "the unprotected header must be empty",
        ));
        let es384 = signed(
            &pair,
            header(iana::Algorithm::ES384, kid.clone()),
            claims(&r).unwrap(),
        );
        fails.push((
            "fail_algorithm",
            es384.to_tagged_vec().unwrap(),
            "unexpected protected header",
        ));
        let other_kid = signed(
            &pair,
            header(iana::Algorithm::ES256, vec![0; 32]),
            claims(&r).unwrap(),
        );
        fails.push((
            "fail_other_certificate",
            other_kid.to_tagged_vec().unwrap(),
            "the receipt names another certificate",
        ));
        let extra = claims_with(&r, |m| {
            m.push((Value::Text("extra".into()), Value::Bool(true)))
        });
        fails.push((
            "fail_unknown_claim",
            signed(&pair, header(iana::Algorithm::ES256, kid.clone()), extra)
                .to_tagged_vec()
                .unwrap(),
            "an unknown claim",
        ));
        let missing = claims_with(&r, |m| {
            m.retain(|(k, _)| *k != Value::Text("output".into()));
        });
        fails.push((
            "fail_missing_claim",
            signed(&pair, header(iana::Algorithm::ES256, kid.clone()), missing)
                .to_tagged_vec()
                .unwrap(),
            "a claim is missing",
        ));
        let mut wrong_evidence = r.clone();
        wrong_evidence.evidence_sha256 = "33".repeat(32);
        fails.push((
            "fail_evidence_digest",
            signed(
                &pair,
                header(iana::Algorithm::ES256, kid.clone()),
                claims(&wrong_evidence).unwrap(),
            )
            .to_tagged_vec()
            .unwrap(),
            "the evidence digest differs",
        ));
        let profile = claims_with(&r, |m| {
            for (k, v) in m.iter_mut() {
                if *k == Value::Integer(265.into()) {
                    *v = Value::Text("tag:example.org,2026:other".into());
                }
            }
        });
        fails.push((
            "fail_profile",
            signed(&pair, header(iana::Algorithm::ES256, kid.clone()), profile)
                .to_tagged_vec()
                .unwrap(),
            "wrong or missing EAT profile",
        ));
        let mut list =
            String::from("# fail vector: the reason a verifier gives (docs/spec/receipt.md)\n");
        for (name, bytes, why) in &fails {
            std::fs::write(d.join(format!("{name}.cose")), bytes).unwrap();
            list.push_str(&format!("{name}.cose: {why}\n"));
        }
        std::fs::write(d.join("vectors.txt"), list).unwrap();
    }

    #[test]
    fn receipt_vectors() {
        if std::env::var_os("TWINSEAL_WRITE_RECEIPT_VECTORS").is_some() {
            write_vectors();
        }
        let d = dir();
        let cert = std::fs::read(d.join("cert.der")).unwrap();
        let ok = std::fs::read(d.join("ok_compare.cose")).unwrap();
        let stated = verify_cose_receipt(&ok, &cert).unwrap();
        let json: Receipt =
            serde_json::from_slice(&std::fs::read(d.join("ok_compare.json")).unwrap()).unwrap();
        assert!(same_statement(&stated, &json));
        crate::receipt::verify_receipt(&json, &cert).unwrap();
        let list = std::fs::read_to_string(d.join("vectors.txt")).unwrap();
        let mut n = 0;
        for line in list.lines().filter(|l| !l.starts_with('#')) {
            let (file, why) = line.split_once(": ").unwrap();
            let bytes = std::fs::read(d.join(file)).unwrap();
            let err = verify_cose_receipt(&bytes, &cert).unwrap_err().to_string();
            assert!(err.contains(why), "{file}: {err}");
            n += 1;
        }
        assert!(n >= 9, "{n} fail vectors");
    }
}
