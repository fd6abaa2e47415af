//! Every single-byte change inside the signed region of each real sample is
//! rejected (exhaustive loops over the signed bytes).
//!
//! "Signed region" for DCAP quotes: the bytes some signature or hash chain
//! covers, located from the quote's own framing: header and body (ISV
//! signature by the attestation key), the ISV signature, the attestation key
//! and QE authentication data (both hashed into the QE report's report
//! data), the QE report and its signature (by the PCK key). Length and type
//! fields are framing. The PCK leaf certificate in the PEM chain is covered by
//! its own test (every byte of its DER). For SEV-SNP: bytes 0..0x2A0
//! (signed by the VCEK) and the signature's r and s. For the simulated TEE:
//! all of its bytes.
//!
//! The DCAP cases also check that every verdict came from the fast path
//! (collateral verified once and cached), not from the full `dcap-qvl`
//! verification it falls back to outside the collateral's window.

use std::ops::Range;

use crate::common::{at, read, samples};
use twinseal_attest::{
    CollateralSource, DcapCollateral, DcapVerifier, Evidence, SimulatedPlatform, SimulatedVerifier,
    SnpVerifier, Verifier,
};

fn with_bytes(e: &Evidence, b: Vec<u8>) -> Evidence {
    match e {
        Evidence::SgxQuote(_) => Evidence::SgxQuote(b),
        Evidence::TdxQuote(_) => Evidence::TdxQuote(b),
        Evidence::SevSnp { vcek_der, .. } => Evidence::SevSnp {
            report: b,
            vcek_der: vcek_der.clone(),
        },
        Evidence::Simulated(_) => Evidence::Simulated(b),
    }
}

/// Assert that flipping each bit in `masks` of each byte in `ranges` is rejected.
fn assert_all_rejected(
    v: &dyn Verifier,
    e: &Evidence,
    ranges: &[Range<usize>],
    masks: &[u8],
    expected: &[u8; 64],
    when: std::time::SystemTime,
) -> usize {
    v.verify(e, expected, when)
        .expect("the untouched sample verifies");
    let mut checked = 0;
    let mut survivors = Vec::new();
    for r in ranges {
        for i in r.clone() {
            for &m in masks {
                let mut b = e.bytes().to_vec();
                b[i] ^= m;
                if v.verify(&with_bytes(e, b), expected, when).is_ok() {
                    survivors.push((i, m));
                }
                checked += 1;
            }
        }
    }
    assert!(
        survivors.is_empty(),
        "changes accepted at (offset, xor): {survivors:?}"
    );
    checked
}

fn u16le(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes([b[o], b[o + 1]]) as usize
}

/// The signed byte ranges of a DCAP quote (see the module comment).
fn dcap_signed_ranges(q: &[u8]) -> Vec<Range<usize>> {
    let version = u16le(q, 0);
    let is_sgx = q[4] == 0;
    let body = match (version, is_sgx) {
        (3, _) | (4, true) => 384,
        (4, false) => 584,
        (5, _) => 6 + u32::from_le_bytes(q[50..54].try_into().unwrap()) as usize,
        _ => panic!("unexpected quote version {version}"),
    };
    let h = 48 + body;
    let isv_sig = h + 4..h + 68;
    let att_key = h + 68..h + 132;
    let qe = if version == 3 { h + 132 } else { h + 132 + 6 };
    let qe_report = qe..qe + 384;
    let qe_sig = qe + 384..qe + 448;
    let auth_len = u16le(q, qe + 448);
    let auth = qe + 450..qe + 450 + auth_len;
    vec![0..h, isv_sig, att_key, qe_report, qe_sig, auth]
}

fn dcap_case(quote: &str, collateral: &str, when: &str) {
    let dir = samples();
    let e = Evidence::detect(&read(&dir, quote)).unwrap();
    let c = DcapCollateral::from_json(&read(&dir, collateral)).unwrap();
    let v = match e {
        Evidence::SgxQuote(_) => DcapVerifier::sgx(CollateralSource::Fixed(c)),
        _ => DcapVerifier::tdx(CollateralSource::Fixed(c)),
    };
    let q = e.bytes();
    let rd_off = match (u16le(q, 0), &e) {
        (_, Evidence::SgxQuote(_)) => 48 + 320,
        (5, _) => 48 + 6 + 520,
        _ => 48 + 520,
    };
    let expected: [u8; 64] = q[rd_off..rd_off + 64].try_into().unwrap();
    let ranges = dcap_signed_ranges(q);
    let n = assert_all_rejected(&v, &e, &ranges, &[0x01], &expected, at(when));
    assert!(n > 1000, "{quote}: only {n} changes checked");
    // Every verdict came from the fast path (collateral verified once), none
    // from handing the quote to dcap-qvl's full verification.
    let stats = v.fast_path_stats();
    assert_eq!((stats.verified, stats.deferred), (1, 0), "{stats:?}");
    assert_eq!(stats.rejected as usize, n);
    eprintln!("{quote}: {n} single-byte changes, all rejected");
}

#[test]
fn every_byte_of_the_sgx_quote_signed_region_matters() {
    dcap_case(
        "dcap/sgx_quote",
        "dcap/sgx_quote_collateral.json",
        "2025-07-01T00:00:00Z",
    );
}

#[test]
fn every_byte_of_the_tdx_quote_signed_region_matters() {
    dcap_case(
        "dcap/tdx_quote",
        "dcap/tdx_quote_collateral.json",
        "2025-07-01T00:00:00Z",
    );
}

#[test]
fn every_byte_of_the_outdated_tdx_quote_signed_region_matters() {
    dcap_case(
        "dcap/tdx_quote_outdated",
        "dcap/tdx_quote_outdated_collateral.json",
        "2026-03-01T00:00:00Z",
    );
}

#[test]
fn every_byte_of_the_snp_report_signed_region_matters() {
    let dir = samples();
    let Evidence::SevSnp { report, .. } =
        Evidence::detect(&read(&dir, "snp/report_milan.hex")).unwrap()
    else {
        panic!("SEV-SNP sample")
    };
    let e = Evidence::SevSnp {
        report,
        vcek_der: Some(read(&dir, "snp/vcek_milan.der")),
    };
    let expected: [u8; 64] = e.bytes()[0x50..0x90].try_into().unwrap();
    let v = SnpVerifier::new().unwrap();
    // Signed bytes, then r and s (72 little-endian bytes each).
    let ranges = [0..0x2A0, 0x2A0..0x2A0 + 144];

    let n = assert_all_rejected(
        &v,
        &e,
        &ranges,
        &[0x01, 0x80],
        &expected,
        at("2025-07-01T00:00:00Z"),
    );
    assert_eq!(n, (0x2A0 + 144) * 2);
}

#[test]
fn every_byte_of_simulated_evidence_matters() {
    let platform = SimulatedPlatform::generate("ci-runner-1").unwrap();
    let v = SimulatedVerifier::insecure_new(vec![platform.public_key().to_vec()]);
    let now = std::time::SystemTime::now();
    let rd = [7u8; 64];
    let e = platform.attest(&rd, now).unwrap();
    let len = e.bytes().len();
    let whole: Vec<Range<usize>> = std::iter::once(0..len).collect();
    let n = assert_all_rejected(&v, &e, &whole, &[0x01, 0x80], &rd, now);
    assert_eq!(n, len * 2);
}

/// Replace the first PEM certificate (the PCK leaf) in `quote` with
/// `leaf_der` re-encoded, keeping the PEM text the same length.
fn splice_leaf(quote: &[u8], start: usize, end: usize, leaf_der: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(leaf_der);
    let mut pem = Vec::new();
    for line in b64.as_bytes().chunks(64) {
        pem.extend_from_slice(line);
        pem.push(b'\n');
    }
    let mut out = quote[..start].to_vec();
    out.extend_from_slice(&pem);
    out.extend_from_slice(&quote[end..]);
    out
}

/// The PCK leaf certificate inside the quote's PEM chain is covered by the
/// PCK CA's signature: changing any byte of its DER (re-encoded into the
/// same PEM slot) is rejected.
#[test]
fn every_byte_of_the_pck_leaf_certificate_matters() {
    use base64::Engine;
    let dir = samples();
    let e = Evidence::detect(&read(&dir, "dcap/sgx_quote")).unwrap();
    let c = DcapCollateral::from_json(&read(&dir, "dcap/sgx_quote_collateral.json")).unwrap();
    let v = DcapVerifier::sgx(CollateralSource::Fixed(c));
    let q = e.bytes();
    let begin = b"-----BEGIN CERTIFICATE-----\n";
    let end_marker = b"-----END CERTIFICATE-----";
    let start = q.windows(begin.len()).position(|w| w == begin).unwrap() + begin.len();
    let end = start
        + q[start..]
            .windows(end_marker.len())
            .position(|w| w == end_marker)
            .unwrap();
    let text: Vec<u8> = q[start..end]
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .unwrap();
    let expected: [u8; 64] = q[368..432].try_into().unwrap();
    let when = at("2025-07-01T00:00:00Z");
    // The splice itself is faithful: the unmodified leaf still verifies.
    let same = splice_leaf(q, start, end, &der);
    assert_eq!(same, q, "PEM re-encoding reproduces the quote");
    let mut survivors = Vec::new();
    for i in 0..der.len() {
        let mut d = der.clone();
        d[i] ^= 0x01;
        let m = Evidence::SgxQuote(splice_leaf(q, start, end, &d));
        if v.verify(&m, &expected, when).is_ok() {
            survivors.push(i);
        }
    }
    assert!(
        survivors.is_empty(),
        "leaf DER changes accepted at {survivors:?}"
    );
    let stats = v.fast_path_stats();
    assert_eq!((stats.verified, stats.deferred), (0, 0), "{stats:?}");
}
