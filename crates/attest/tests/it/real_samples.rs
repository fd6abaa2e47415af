//! Verification of genuine SGX, TDX and SEV-SNP evidence with its real
//! collateral, "as of" a time inside the collateral's validity window.

use std::path::Path;
use std::time::SystemTime;

use crate::common::{at, read, samples};
use twinseal_attest::{
    CollateralSource, DcapCollateral, DcapVerifier, Evidence, SnpVerifier, TcbStatus, TeeKind,
    Verifier,
};

/// Times inside each sample's collateral window (TCB info, QE identity, CRLs
/// and certificates all valid).
const SGX_AT: &str = "2025-07-01T00:00:00Z";
const TDX_AT: &str = "2025-07-01T00:00:00Z";
const TDX_OUTDATED_AT: &str = "2026-03-01T00:00:00Z";
const SNP_AT: &str = "2025-07-01T00:00:00Z";

/// Offset of report data in a DCAP quote: 48-byte header, then the body.
const SGX_REPORT_DATA: usize = 48 + 320;
const TDX_REPORT_DATA: usize = 48 + 520;
const SNP_REPORT_DATA: usize = 0x50;

/// The report data of a sample. Quote v5 has a 6-byte body descriptor
/// (type, size) between header and body.
fn rd(bytes: &[u8], off: usize) -> [u8; 64] {
    let off = if off != SNP_REPORT_DATA && bytes[0] == 5 {
        off + 6
    } else {
        off
    };
    bytes[off..off + 64].try_into().unwrap()
}

fn dcap(dir: &Path, quote: &str, collateral: &str) -> (Evidence, DcapCollateral) {
    let evidence = Evidence::detect(&read(dir, quote)).unwrap();
    let c = DcapCollateral::from_json(&read(dir, collateral)).unwrap();
    (evidence, c)
}

fn verifier_for(e: &Evidence, c: DcapCollateral) -> DcapVerifier {
    match e.kind() {
        TeeKind::Sgx => DcapVerifier::sgx(CollateralSource::Fixed(c)),
        TeeKind::Tdx => DcapVerifier::tdx(CollateralSource::Fixed(c)),
        k => panic!("not DCAP: {k}"),
    }
}

fn snp(dir: &Path) -> Evidence {
    let Evidence::SevSnp { report, .. } =
        Evidence::detect(&read(dir, "snp/report_milan.hex")).unwrap()
    else {
        panic!("the Milan sample is detected as SEV-SNP")
    };
    Evidence::SevSnp {
        report,
        vcek_der: Some(read(dir, "snp/vcek_milan.der")),
    }
}

#[test]
fn sgx_quote_verifies_with_its_collateral() {
    let dir = samples();
    let (e, c) = dcap(&dir, "dcap/sgx_quote", "dcap/sgx_quote_collateral.json");
    assert_eq!(e.kind(), TeeKind::Sgx);
    let v = verifier_for(&e, c);
    let claims = v
        .verify(&e, &rd(e.bytes(), SGX_REPORT_DATA), at(SGX_AT))
        .unwrap();
    assert_eq!(claims.tee(), TeeKind::Sgx);
    assert!(!claims.is_simulated());
    assert_eq!(
        claims.tcb_status(),
        TcbStatus::ConfigurationAndSWHardeningNeeded
    );
    for id in ["INTEL-SA-00289", "INTEL-SA-00615"] {
        assert!(claims.advisory_ids().iter().any(|a| a == id), "{id}");
    }
    assert_eq!(claims.measurement().as_bytes().len(), 32);
    assert_eq!(
        e.unverified_measurement().unwrap(),
        claims.measurement().as_bytes()
    );
    assert!(claims.platform().fmspc.is_some());
    assert_eq!(claims.verified_at(), at(SGX_AT));
}

#[test]
fn tdx_quote_verifies_up_to_date() {
    let dir = samples();
    let (e, c) = dcap(&dir, "dcap/tdx_quote", "dcap/tdx_quote_collateral.json");
    assert_eq!(e.kind(), TeeKind::Tdx);
    let claims = verifier_for(&e, c)
        .verify(&e, &rd(e.bytes(), TDX_REPORT_DATA), at(TDX_AT))
        .unwrap();
    assert_eq!(claims.tee(), TeeKind::Tdx);
    assert_eq!(claims.tcb_status(), TcbStatus::UpToDate);
    assert_eq!(claims.measurement().as_bytes().len(), 48);
    assert_eq!(
        e.unverified_measurement().unwrap(),
        claims.measurement().as_bytes()
    );
}

#[test]
fn outdated_tdx_quote_verifies_as_out_of_date() {
    let dir = samples();
    let (e, c) = dcap(
        &dir,
        "dcap/tdx_quote_outdated",
        "dcap/tdx_quote_outdated_collateral.json",
    );
    let claims = verifier_for(&e, c)
        .verify(&e, &rd(e.bytes(), TDX_REPORT_DATA), at(TDX_OUTDATED_AT))
        .unwrap();
    assert_eq!(claims.tcb_status(), TcbStatus::OutOfDate);
}

#[test]
fn snp_milan_report_verifies_against_vcek_and_amd_chain() {
    let dir = samples();
    let e = snp(&dir);
    let v = SnpVerifier::new().unwrap();
    let claims = v
        .verify(&e, &rd(e.bytes(), SNP_REPORT_DATA), at(SNP_AT))
        .unwrap();
    assert_eq!(claims.tee(), TeeKind::SevSnp);
    assert_eq!(claims.tcb_status(), TcbStatus::Unknown);
    assert_eq!(
        claims.platform().chip_id.as_ref().unwrap().as_bytes().len(),
        64
    );
    assert_eq!(claims.measurement().as_bytes().len(), 48);
    assert_eq!(
        e.unverified_measurement().unwrap(),
        claims.measurement().as_bytes()
    );
}

#[test]
fn snp_sample_chain_is_amds_builtin_chain() {
    let dir = samples();
    // The ASK and ARK downloaded from AMD (PEM) are exactly the roots the verifier trusts.
    let pem = read(&dir, "snp/cert_chain_milan");
    let ders: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .map(|p| p.unwrap().contents)
        .collect();
    assert_eq!(ders.len(), 2);
    let (ark, ask) = SnpVerifier::new()
        .unwrap()
        .builtin_chain_der(twinseal_attest::snp::SnpProduct::Milan)
        .unwrap();
    assert!(ders.contains(&ark) && ders.contains(&ask));
}

#[test]
fn snp_latest_tcb_decides_up_to_date_or_out_of_date() {
    let dir = samples();
    let e = snp(&dir);
    let expected = rd(e.bytes(), SNP_REPORT_DATA);
    let low = twinseal_attest::SnpTcb::default();
    let v = SnpVerifier::new().unwrap().with_latest_tcb(low);
    assert_eq!(
        v.verify(&e, &expected, at(SNP_AT)).unwrap().tcb_status(),
        TcbStatus::UpToDate
    );
    let high = twinseal_attest::SnpTcb {
        bootloader: 255,
        tee: 255,
        snp: 255,
        microcode: 255,
        fmc: None,
    };
    let v = SnpVerifier::new().unwrap().with_latest_tcb(high);
    assert_eq!(
        v.verify(&e, &expected, at(SNP_AT)).unwrap().tcb_status(),
        TcbStatus::OutOfDate
    );
}

#[test]
fn wrong_report_data_is_rejected_for_every_kind() {
    let dir = samples();
    let (e, c) = dcap(&dir, "dcap/sgx_quote", "dcap/sgx_quote_collateral.json");
    let mut other = rd(e.bytes(), SGX_REPORT_DATA);
    other[0] ^= 1;
    let err = verifier_for(&e, c)
        .verify(&e, &other, at(SGX_AT))
        .unwrap_err();
    assert_eq!(err.to_string(), "attestation rejected");
    assert!(err.reason().unwrap().contains("report data"));

    let e = snp(&dir);
    let mut other = rd(e.bytes(), SNP_REPORT_DATA);
    other[63] ^= 1;
    assert!(
        SnpVerifier::new()
            .unwrap()
            .verify(&e, &other, at(SNP_AT))
            .is_err()
    );
}

#[test]
fn samples_with_another_samples_collateral_are_rejected() {
    let dir = samples();
    let cases = [
        (
            "dcap/sgx_quote",
            SGX_REPORT_DATA,
            SGX_AT,
            "dcap/tdx_quote_collateral.json",
        ),
        (
            "dcap/sgx_quote",
            SGX_REPORT_DATA,
            SGX_AT,
            "dcap/tdx_quote_outdated_collateral.json",
        ),
        (
            "dcap/tdx_quote",
            TDX_REPORT_DATA,
            TDX_AT,
            "dcap/sgx_quote_collateral.json",
        ),
        (
            "dcap/tdx_quote",
            TDX_REPORT_DATA,
            TDX_OUTDATED_AT,
            "dcap/tdx_quote_outdated_collateral.json",
        ),
        (
            "dcap/tdx_quote_outdated",
            TDX_REPORT_DATA,
            TDX_OUTDATED_AT,
            "dcap/sgx_quote_collateral.json",
        ),
        (
            "dcap/tdx_quote_outdated",
            TDX_REPORT_DATA,
            TDX_AT,
            "dcap/tdx_quote_collateral.json",
        ),
    ];
    for (quote, off, when, collateral) in cases {
        let (e, c) = dcap(&dir, quote, collateral);
        let r = verifier_for(&e, c).verify(&e, &rd(e.bytes(), off), at(when));
        assert!(
            r.is_err(),
            "{quote} with {collateral} at {when} must be rejected"
        );
    }
    // SEV-SNP: the report with a VCEK that did not sign it (the Milan ASK
    // is a certificate of the right chain but not the VCEK).
    let e = snp(&dir);
    let Evidence::SevSnp { report, .. } = e.clone() else {
        unreachable!()
    };
    let pem = read(&dir, "snp/cert_chain_milan");
    let ask = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .next()
        .unwrap()
        .unwrap()
        .contents;
    let wrong = Evidence::SevSnp {
        report,
        vcek_der: Some(ask),
    };
    assert!(
        SnpVerifier::new()
            .unwrap()
            .verify(&wrong, &rd(e.bytes(), SNP_REPORT_DATA), at(SNP_AT))
            .is_err()
    );
}

#[test]
fn samples_outside_their_window_are_rejected() {
    let dir = samples();
    let cases = [
        (
            "dcap/sgx_quote",
            "dcap/sgx_quote_collateral.json",
            SGX_REPORT_DATA,
            ["2025-06-01T00:00:00Z", "2025-08-01T00:00:00Z"],
        ),
        (
            "dcap/tdx_quote",
            "dcap/tdx_quote_collateral.json",
            TDX_REPORT_DATA,
            ["2025-06-01T00:00:00Z", "2025-08-01T00:00:00Z"],
        ),
        (
            "dcap/tdx_quote_outdated",
            "dcap/tdx_quote_outdated_collateral.json",
            TDX_REPORT_DATA,
            ["2026-02-01T00:00:00Z", "2026-04-01T00:00:00Z"],
        ),
    ];
    for (quote, collateral, off, times) in cases {
        let (e, c) = dcap(&dir, quote, collateral);
        let v = verifier_for(&e, c);
        for when in times {
            assert!(
                v.verify(&e, &rd(e.bytes(), off), at(when)).is_err(),
                "{quote} at {when} must be rejected"
            );
        }
    }
    // The VCEK is valid for years; before its notBefore and far after its notAfter it is not.
    let e = snp(&dir);
    let v = SnpVerifier::new().unwrap();
    for when in ["2015-01-01T00:00:00Z", "2099-01-01T00:00:00Z"] {
        assert!(
            v.verify(&e, &rd(e.bytes(), SNP_REPORT_DATA), at(when))
                .is_err(),
            "{when}"
        );
    }
}

#[test]
fn now_is_not_the_default() {
    // Guard against accidentally verifying "now": the SGX collateral expired in 2025.
    let dir = samples();
    let (e, c) = dcap(&dir, "dcap/sgx_quote", "dcap/sgx_quote_collateral.json");
    assert!(
        verifier_for(&e, c)
            .verify(&e, &rd(e.bytes(), SGX_REPORT_DATA), SystemTime::now())
            .is_err()
    );
}

#[test]
fn collateral_cache_serves_fresh_entries_and_drops_old_ones() {
    use std::time::Duration;
    use twinseal_attest::CollateralCache;
    let dir = samples();
    let (e, c) = dcap(&dir, "dcap/tdx_quote", "dcap/tdx_quote_collateral.json");
    let key = CollateralCache::key_for_quote(e.bytes()).unwrap();
    assert!(key.starts_with("tdx-"), "{key}");
    let tmp = tempfile::tempdir().unwrap();
    let cache = CollateralCache::new(tmp.path().join("dcap"), Duration::from_secs(3600));
    let when = at(TDX_AT);
    assert!(cache.get(&key, when).unwrap().is_none());
    cache.put(&key, &c, when).unwrap();
    assert_eq!(cache.get(&key, when).unwrap(), Some(c));
    let v = DcapVerifier::tdx(CollateralSource::Cache(cache.clone()));
    v.verify(&e, &rd(e.bytes(), TDX_REPORT_DATA), when).unwrap();
    // Past the maximum age the entry is not used, and verification says why.
    let later = when + Duration::from_secs(7200);
    assert!(cache.get(&key, later).unwrap().is_none());
    let err = v
        .verify(&e, &rd(e.bytes(), TDX_REPORT_DATA), later)
        .unwrap_err();
    assert!(err.to_string().contains("no fresh collateral"), "{err}");
    assert!(cache.get("../escape", when).is_err());
}
