//! The DCAP fast path (collateral and PCK chain verified once, per-quote
//! checks only) and the reference path (`dcap-qvl`'s full verification on
//! every call) agree: same accept/reject and same claims, for every sample,
//! collateral and time the other tests use, and at each second around every
//! date that bounds a collateral's validity.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{at, read, samples};
use twinseal_attest::{
    CollateralSource, DcapCollateral, DcapVerifier, Evidence, FastPathStats, TcbStatus, TeeKind,
};

const QUOTES: [&str; 3] = [
    "dcap/sgx_quote",
    "dcap/tdx_quote",
    "dcap/tdx_quote_outdated",
];
const COLLATERALS: [&str; 3] = [
    "dcap/sgx_quote_collateral.json",
    "dcap/tdx_quote_collateral.json",
    "dcap/tdx_quote_outdated_collateral.json",
];
/// Every time the real-sample and tamper tests use.
const TIMES: [&str; 7] = [
    "2025-06-01T00:00:00Z",
    "2025-07-01T00:00:00Z",
    "2025-08-01T00:00:00Z",
    "2026-02-01T00:00:00Z",
    "2026-03-01T00:00:00Z",
    "2026-04-01T00:00:00Z",
    "2030-01-01T00:00:00Z",
];

fn report_data(q: &[u8], e: &Evidence) -> [u8; 64] {
    let off = match (u16::from_le_bytes([q[0], q[1]]), e.kind()) {
        (_, TeeKind::Sgx) => 48 + 320,
        (5, _) => 48 + 6 + 520,
        _ => 48 + 520,
    };
    q[off..off + 64].try_into().unwrap()
}

fn verifier(e: &Evidence, c: &DcapCollateral) -> DcapVerifier {
    match e.kind() {
        TeeKind::Sgx => DcapVerifier::sgx(CollateralSource::Fixed(c.clone())),
        _ => DcapVerifier::tdx(CollateralSource::Fixed(c.clone())),
    }
}

/// Compare both paths on one case; returns whether it was accepted.
fn agree(v: &DcapVerifier, e: &Evidence, c: &DcapCollateral, when: SystemTime, what: &str) -> bool {
    let rd = report_data(e.bytes(), e);
    let fast = v.verify_with_collateral(e, c, &rd, when);
    let reference = v.verify_with_collateral_reference(e, c, &rd, when);
    match (&fast, &reference) {
        (Ok(f), Ok(r)) => {
            assert_eq!(f, r, "{what}: claims differ");
            true
        }
        (Err(_), Err(_)) => false,
        _ => panic!(
            "{what}: fast path {:?} but reference path {:?}",
            fast.as_ref()
                .map(|c| c.tcb_status())
                .map_err(|e| e.reason().map(str::to_owned)),
            reference
                .as_ref()
                .map(|c| c.tcb_status())
                .map_err(|e| e.reason().map(str::to_owned)),
        ),
    }
}

#[test]
fn fast_and_reference_paths_agree_on_every_sample_collateral_and_time() {
    let dir = samples();
    let mut accepted = Vec::new();
    for q in QUOTES {
        let e = Evidence::detect(&read(&dir, q)).unwrap();
        for col in COLLATERALS {
            let c = DcapCollateral::from_json(&read(&dir, col)).unwrap();
            // One verifier per pair, so its caches fill and are then reused.
            let v = verifier(&e, &c);
            for t in TIMES {
                for _ in 0..2 {
                    if agree(&v, &e, &c, at(t), &format!("{q} with {col} at {t}")) {
                        accepted.push((q, col, t));
                    }
                }
            }
        }
    }
    accepted.dedup();
    assert_eq!(
        accepted,
        [
            (
                "dcap/sgx_quote",
                "dcap/sgx_quote_collateral.json",
                "2025-07-01T00:00:00Z"
            ),
            (
                "dcap/tdx_quote",
                "dcap/tdx_quote_collateral.json",
                "2025-07-01T00:00:00Z"
            ),
            (
                "dcap/tdx_quote_outdated",
                "dcap/tdx_quote_outdated_collateral.json",
                "2026-03-01T00:00:00Z"
            ),
        ]
    );
}

/// Unix seconds of an RFC 3339 time inside a JSON document.
fn json_time(doc: &str, field: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap();
    let s = v[field].as_str().unwrap();
    at(s).duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Every date that bounds a collateral's validity: TCB info and QE identity
/// issue date and next update, each CRL's this and next update, and every
/// certificate's notBefore and notAfter.
fn boundaries(dir: &Path, col: &str) -> Vec<u64> {
    let j: serde_json::Value = serde_json::from_slice(&read(dir, col)).unwrap();
    let mut out = Vec::new();
    for (doc, key) in [("tcb_info", "tcbInfo"), ("qe_identity", "enclaveIdentity")] {
        let text = j[doc].as_str().unwrap();
        let inner = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get(key).map(|x| x.to_string()))
            .unwrap_or_else(|| text.to_string());
        out.push(json_time(&inner, "issueDate"));
        out.push(json_time(&inner, "nextUpdate"));
    }
    for crl in ["root_ca_crl", "pck_crl"] {
        let der = hex::decode(j[crl].as_str().unwrap()).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        out.push(crl.last_update().timestamp() as u64);
        out.push(crl.next_update().unwrap().timestamp() as u64);
    }
    for chain in ["tcb_info_issuer_chain", "qe_identity_issuer_chain"] {
        for p in x509_parser::pem::Pem::iter_from_buffer(j[chain].as_str().unwrap().as_bytes()) {
            let p = p.unwrap();
            let cert = p.parse_x509().unwrap();
            out.push(cert.validity().not_before.timestamp() as u64);
            out.push(cert.validity().not_after.timestamp() as u64);
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn fast_and_reference_paths_agree_at_every_validity_boundary() {
    let dir = samples();
    for (q, col) in QUOTES.into_iter().zip(COLLATERALS) {
        let e = Evidence::detect(&read(&dir, q)).unwrap();
        let c = DcapCollateral::from_json(&read(&dir, col)).unwrap();
        let v = verifier(&e, &c);
        // A time inside the window first, so the caches are filled and the
        // boundary times meet a cached entry.
        let inside = if q.ends_with("outdated") {
            "2026-03-01T00:00:00Z"
        } else {
            "2025-07-01T00:00:00Z"
        };
        assert!(agree(&v, &e, &c, at(inside), q));
        let bounds = boundaries(&dir, col);
        assert!(bounds.len() >= 8, "{col}: {bounds:?}");
        for b in bounds {
            for t in [b.saturating_sub(1), b, b + 1] {
                let when = UNIX_EPOCH + Duration::from_secs(t);
                agree(&v, &e, &c, when, &format!("{q} at {t} (boundary {b})"));
            }
        }
    }
}

#[test]
fn in_window_verifications_are_decided_by_the_fast_path() {
    let dir = samples();
    let e = Evidence::detect(&read(&dir, "dcap/tdx_quote_outdated")).unwrap();
    let c =
        DcapCollateral::from_json(&read(&dir, "dcap/tdx_quote_outdated_collateral.json")).unwrap();
    let v = verifier(&e, &c);
    let rd = report_data(e.bytes(), &e);
    for _ in 0..3 {
        let claims = v
            .verify_with_collateral(&e, &c, &rd, at("2026-03-01T00:00:00Z"))
            .unwrap();
        assert_eq!(claims.tcb_status(), TcbStatus::OutOfDate);
    }
    // Outside the window the reference path decides (and rejects).
    assert!(
        v.verify_with_collateral(&e, &c, &rd, at("2026-04-01T00:00:00Z"))
            .is_err()
    );
    assert_eq!(
        v.fast_path_stats(),
        FastPathStats {
            verified: 3,
            rejected: 0,
            deferred: 1
        }
    );
    // Another sample's chain and collateral at a time inside that
    // collateral's window: rejected by the fast path itself.
    let other = Evidence::detect(&read(&dir, "dcap/tdx_quote")).unwrap();
    let rd = report_data(other.bytes(), &other);
    assert!(
        v.verify_with_collateral(&other, &c, &rd, at("2026-03-01T00:00:00Z"))
            .is_err()
    );
    assert_eq!(v.fast_path_stats().rejected, 1);
}
