//! SEV-SNP report parsing (sev crate), the certificate-table parser and the
//! verifier with an attacker-chosen VCEK must never panic or accept.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use sev::parser::ByteParser;
use twinseal_attest::{Evidence, SnpVerifier, Verifier, collect::vcek_from_cert_table};

fuzz_target!(|data: &[u8]| {
    static V: OnceLock<SnpVerifier> = OnceLock::new();
    let v = V.get_or_init(|| SnpVerifier::new().expect("built-in roots"));
    let _ = sev::firmware::guest::AttestationReport::from_bytes(data);
    let _ = vcek_from_cert_table(data);
    let split = data.len().min(0x4A0);
    let (report, vcek) = data.split_at(split);
    let e = Evidence::SevSnp {
        report: report.to_vec(),
        vcek_der: Some(vcek.to_vec()),
    };
    let at = UNIX_EPOCH + Duration::from_secs(1_751_328_000);
    assert!(v.verify(&e, &[0; 64], at).is_err());
});
