//! Simulated-evidence parsing and verification must never panic, and never
//! accept bytes other than the genuine evidence. Inputs are used as raw
//! evidence, and also as (offset, xor) edits of a genuine evidence so the
//! fuzzer reaches the signature check rather than stopping at the magic.
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use twinseal_attest::{Evidence, SimulatedPlatform, SimulatedVerifier, Verifier, simulated};

struct Fixture {
    verifier: SimulatedVerifier,
    genuine: Vec<u8>,
    now: SystemTime,
}

fuzz_target!(|data: &[u8]| {
    static F: OnceLock<Fixture> = OnceLock::new();
    let f = F.get_or_init(|| {
        let p = SimulatedPlatform::generate("fuzz").expect("key");
        let now = SystemTime::now();
        let genuine = p
            .attest_with_measurement(&[1; 48], &[2; 64], now)
            .expect("attest");
        Fixture {
            verifier: SimulatedVerifier::insecure_new(vec![p.public_key().to_vec()]),
            genuine: genuine.bytes().to_vec(),
            now,
        }
    });
    let _ = simulated::parse(data);
    let e = Evidence::Simulated(data.to_vec());
    let rd = e.unverified_report_data().unwrap_or([0; 64]);
    assert!(f.verifier.verify(&e, &rd, f.now).is_err());

    let mut edited = f.genuine.clone();
    for pair in data.chunks_exact(3) {
        let off = u16::from_le_bytes([pair[0], pair[1]]) as usize % edited.len();
        edited[off] ^= pair[2];
    }
    let result = f
        .verifier
        .verify(&Evidence::Simulated(edited.clone()), &[2; 64], f.now);
    assert_eq!(
        result.is_ok(),
        edited == f.genuine,
        "an edited evidence verified"
    );
});
