//! DCAP quote parsing: evidence detection, dcap-qvl's parser, the cache key
//! derivation (PCK certificate extension parsing) and full verification
//! against empty collateral must never panic.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use twinseal_attest::{
    CollateralCache, CollateralSource, DcapCollateral, DcapVerifier, Evidence, Verifier,
};

fuzz_target!(|data: &[u8]| {
    let _ = dcap_qvl::quote::Quote::parse(data);
    let _ = CollateralCache::key_for_quote(data);
    if let Ok(e) = Evidence::detect(data) {
        let _ = e.unverified_report_data();
        let empty = DcapCollateral::from_json(br#"{"pck_crl_issuer_chain":"","root_ca_crl":"","pck_crl":"","tcb_info_issuer_chain":"","tcb_info":"","tcb_info_signature":"","qe_identity_issuer_chain":"","qe_identity":"","qe_identity_signature":""}"#)
            .expect("empty collateral parses");
        let at = UNIX_EPOCH + Duration::from_secs(1_751_328_000);
        // Every kind goes to a DCAP verifier: the wrong kind must be rejected too.
        let v = match e {
            Evidence::SgxQuote(_) => DcapVerifier::sgx(CollateralSource::Fixed(empty)),
            _ => DcapVerifier::tdx(CollateralSource::Fixed(empty)),
        };
        assert!(v.verify(&e, &[0; 64], at).is_err());
    }
});
