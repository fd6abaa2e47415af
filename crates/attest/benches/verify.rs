//! Verification time per evidence kind with collateral already in memory
//! ("cached"), beside the cost of the signature checks alone (aws-lc-rs
//! ECDSA P-256 and P-384 and Ed25519 verify) measured in the same run. For
//! SGX/TDX also the reference path (dcap-qvl's full verification, the only
//! path before the fast one) and the fast path with cold caches.
//!
//! Run: `cargo bench -p twinseal-attest --bench verify`
//! (reads the real samples from testdata/attestation; kinds whose
//! samples are absent are skipped).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING, ED25519, EcdsaKeyPair, EcdsaSigningAlgorithm,
    EcdsaVerificationAlgorithm, Ed25519KeyPair, KeyPair, UnparsedPublicKey,
};
use twinseal_attest::{
    CollateralSource, DcapCollateral, DcapVerifier, Evidence, SimulatedPlatform, SimulatedVerifier,
    SnpVerifier, Verifier,
};

/// Median time per call of `f` over batches filling about `budget`.
fn measure(name: &str, budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f(); // warm caches (and the SNP verifier's VCEK chain cache)
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 11 {
        let t = Instant::now();
        for _ in 0..10 {
            f();
        }
        samples.push(t.elapsed() / 10);
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "{name:<40} {:>10.1} µs  (median of {} batches of 10)",
        median.as_secs_f64() * 1e6,
        samples.len()
    );
    median
}

fn ecdsa(
    name: &str,
    sign: &'static EcdsaSigningAlgorithm,
    verify: &'static EcdsaVerificationAlgorithm,
) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(sign, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(sign, pkcs8.as_ref()).unwrap();
    let msg = [0x42u8; 432];
    let sig = key.sign(&rng, &msg).unwrap();
    let public = UnparsedPublicKey::new(verify, key.public_key().as_ref().to_vec());
    measure(name, Duration::from_secs(2), || {
        public
            .verify(black_box(&msg), black_box(sig.as_ref()))
            .unwrap();
    });
}

fn ed25519(name: &str) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let msg = [0x42u8; 432];
    let sig = key.sign(&msg);
    let public = UnparsedPublicKey::new(&ED25519, key.public_key().as_ref().to_vec());
    measure(name, Duration::from_secs(2), || {
        public
            .verify(black_box(&msg), black_box(sig.as_ref()))
            .unwrap();
    });
}

fn samples() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/attestation");
    dir.join("dcap").is_dir().then_some(dir)
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn main() {
    println!("baseline: signature checks alone (aws-lc-rs)");
    ecdsa(
        "ECDSA P-256 verify",
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &ECDSA_P256_SHA256_FIXED,
    );
    ecdsa(
        "ECDSA P-384 verify",
        &ECDSA_P384_SHA384_FIXED_SIGNING,
        &ECDSA_P384_SHA384_FIXED,
    );
    ed25519("Ed25519 verify");

    println!("full verification, collateral in memory");
    let platform = SimulatedPlatform::generate("bench").unwrap();
    let sim = SimulatedVerifier::insecure_new(vec![platform.public_key().to_vec()]);
    let rd = [3u8; 64];
    let now = SystemTime::now();
    let e = platform
        .attest_with_measurement(&[1; 48], &rd, now)
        .unwrap();
    measure("simulated", Duration::from_secs(2), || {
        sim.verify(black_box(&e), &rd, now).unwrap();
    });

    let Some(dir) = samples() else {
        println!(
            "SKIPPED SGX/TDX/SEV-SNP: samples not found at testdata/attestation (restore with `git checkout -- testdata`)"
        );
        return;
    };
    let read = |p: &str| std::fs::read(dir.join(p)).unwrap();
    // 2025-07-01T00:00:00Z and 2026-03-01T00:00:00Z: inside the collateral windows.
    for (name, quote, collateral, when) in [
        (
            "SGX quote v3",
            "dcap/sgx_quote",
            "dcap/sgx_quote_collateral.json",
            1_751_328_000,
        ),
        (
            "TDX quote v4",
            "dcap/tdx_quote",
            "dcap/tdx_quote_collateral.json",
            1_751_328_000,
        ),
    ] {
        let e = Evidence::detect(&read(quote)).unwrap();
        let c = DcapCollateral::from_json(&read(collateral)).unwrap();
        let verifier = || {
            if name.starts_with("SGX") {
                DcapVerifier::sgx(CollateralSource::Fixed(c.clone()))
            } else {
                DcapVerifier::tdx(CollateralSource::Fixed(c.clone()))
            }
        };
        let v = verifier();
        let rd = e.unverified_report_data().unwrap();
        measure(
            &format!("{name} (fast path, cached)"),
            Duration::from_secs(3),
            || {
                v.verify(black_box(&e), &rd, at(when)).unwrap();
            },
        );
        let stats = v.fast_path_stats();
        assert_eq!(stats.deferred, 0, "{stats:?}");
        measure(
            &format!("{name} (dcap-qvl, reference)"),
            Duration::from_secs(3),
            || {
                v.verify_with_collateral_reference(black_box(&e), &c, &rd, at(when))
                    .unwrap();
            },
        );
        measure(
            &format!("{name} (fast path, cold caches)"),
            Duration::from_secs(3),
            || {
                verifier().verify(black_box(&e), &rd, at(when)).unwrap();
            },
        );
    }
    let Evidence::SevSnp { report, .. } = Evidence::detect(&read("snp/report_milan.hex")).unwrap()
    else {
        unreachable!()
    };
    let e = Evidence::SevSnp {
        report,
        vcek_der: Some(read("snp/vcek_milan.der")),
    };
    let v = SnpVerifier::new().unwrap();
    let rd = e.unverified_report_data().unwrap();
    measure(
        "SEV-SNP report (VCEK chain cached)",
        Duration::from_secs(2),
        || {
            v.verify(black_box(&e), &rd, at(1_751_328_000)).unwrap();
        },
    );
    measure(
        "SEV-SNP report (fresh verifier)",
        Duration::from_secs(3),
        || {
            let v = SnpVerifier::new().unwrap();
            v.verify(black_box(&e), &rd, at(1_751_328_000)).unwrap();
        },
    );
}
