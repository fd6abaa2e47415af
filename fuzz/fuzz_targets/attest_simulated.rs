//! Simulated-evidence parsing and verification must never panic, and never
//! accept bytes not signed by the trusted platform key.
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use twinseal_attest::{Evidence, SimulatedPlatform, SimulatedVerifier, Verifier, simulated};

fuzz_target!(|data: &[u8]| {
    static V: OnceLock<SimulatedVerifier> = OnceLock::new();
    let v = V.get_or_init(|| {
        let p = SimulatedPlatform::generate("fuzz").expect("key");
        SimulatedVerifier::insecure_new(vec![p.public_key().to_vec()])
    });
    let _ = simulated::parse(data);
    let e = Evidence::Simulated(data.to_vec());
    let rd = e.unverified_report_data().unwrap_or([0; 64]);
    assert!(v.verify(&e, &rd, SystemTime::now()).is_err());
});
