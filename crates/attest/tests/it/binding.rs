//! The challenge/public-key binding: replayed evidence and evidence lifted
//! onto another key are rejected; the honest flow passes.

use std::time::{Duration, SystemTime};

use twinseal_attest::{
    ChallengeStore, Error, SimulatedPlatform, SimulatedVerifier, TeeKind, Verifiers, report_data,
};

fn setup() -> (SimulatedPlatform, Verifiers, ChallengeStore) {
    let platform = SimulatedPlatform::generate("laptop").unwrap();
    let verifiers =
        Verifiers::new().insecure_allow_simulated_tee(SimulatedVerifier::insecure_new(vec![
            platform.public_key().to_vec(),
        ]));
    (
        platform,
        verifiers,
        ChallengeStore::new(Duration::from_secs(60)),
    )
}

const SPKI_A: &[u8] = b"spki of the app's TLS key A (DER in real use)";
const SPKI_B: &[u8] = b"spki of an attacker's key B";

#[test]
fn honest_flow_verifies_and_claims_are_simulated() {
    let (platform, verifiers, store) = setup();
    let now = SystemTime::now();
    let challenge = store.issue(now);
    let evidence = platform
        .attest(&report_data(challenge.as_bytes(), SPKI_A), now)
        .unwrap();
    let claims = verifiers
        .verify_bound(&store, &challenge, SPKI_A, &evidence, now)
        .unwrap();
    assert_eq!(claims.tee(), TeeKind::Simulated);
    assert!(claims.is_simulated());
    assert_eq!(
        claims.platform().simulated_platform_id.as_deref(),
        Some("laptop")
    );
    // The measurement is the SHA-384 of this test executable.
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    use sha2::Digest;
    assert_eq!(
        claims.measurement().as_bytes(),
        &sha2::Sha384::digest(&exe)[..]
    );
    assert_eq!(
        evidence.unverified_measurement().unwrap(),
        claims.measurement().as_bytes()
    );
}

#[test]
fn replayed_evidence_is_rejected() {
    let (platform, verifiers, store) = setup();
    let now = SystemTime::now();
    let challenge = store.issue(now);
    let evidence = platform
        .attest(&report_data(challenge.as_bytes(), SPKI_A), now)
        .unwrap();
    verifiers
        .verify_bound(&store, &challenge, SPKI_A, &evidence, now)
        .unwrap();
    // Same evidence, same challenge, same key: the challenge is spent.
    let err = verifiers
        .verify_bound(&store, &challenge, SPKI_A, &evidence, now)
        .unwrap_err();
    assert_eq!(err.to_string(), "attestation rejected");
    assert!(err.reason().unwrap().contains("already used"));
    // Same evidence answered to a fresh challenge: report data does not bind it.
    let fresh = store.issue(now);
    let err = verifiers
        .verify_bound(&store, &fresh, SPKI_A, &evidence, now)
        .unwrap_err();
    assert!(err.reason().unwrap().contains("report data"));
}

#[test]
fn key_substitution_is_rejected() {
    let (platform, verifiers, store) = setup();
    let now = SystemTime::now();
    let challenge = store.issue(now);
    let evidence = platform
        .attest(&report_data(challenge.as_bytes(), SPKI_A), now)
        .unwrap();
    // Right evidence, right challenge, other public key.
    let err = verifiers
        .verify_bound(&store, &challenge, SPKI_B, &evidence, now)
        .unwrap_err();
    assert_eq!(err.to_string(), "attestation rejected");
    assert!(err.reason().unwrap().contains("report data"));
}

#[test]
fn simulated_evidence_is_rejected_unless_explicitly_enabled() {
    let platform = SimulatedPlatform::generate("laptop").unwrap();
    let now = SystemTime::now();
    let store = ChallengeStore::new(Duration::from_secs(60));
    let challenge = store.issue(now);
    let evidence = platform
        .attest(&report_data(challenge.as_bytes(), SPKI_A), now)
        .unwrap();
    // `with` refuses a simulated verifier; only the insecure_ method enables it.
    let verifiers = Verifiers::new().with(SimulatedVerifier::insecure_new(vec![
        platform.public_key().to_vec(),
    ]));
    let err = verifiers
        .verify_bound(&store, &challenge, SPKI_A, &evidence, now)
        .unwrap_err();
    assert!(matches!(err, Error::NotEnabled(_)));
    assert_eq!(err.to_string(), "attestation rejected");
}

#[test]
fn untrusted_platform_key_and_future_evidence_are_rejected() {
    let (_, verifiers, _) = setup();
    let other = SimulatedPlatform::generate("laptop").unwrap();
    let now = SystemTime::now();
    let rd = report_data(b"c", SPKI_A);
    let e = other.attest(&rd, now).unwrap();
    assert!(verifiers.verify(&e, &rd, now).is_err());

    let (platform, verifiers, _) = setup();
    let e = platform
        .attest(&rd, now + Duration::from_secs(3600))
        .unwrap();
    assert!(verifiers.verify(&e, &rd, now).is_err());
}

#[test]
fn platform_key_never_appears_in_debug_output() {
    let platform = SimulatedPlatform::generate("laptop").unwrap();
    // The Ed25519 seed sits in `OCTET STRING { OCTET STRING(32) }` (RFC 8410).
    let der = platform.pkcs8().as_slice();
    let at = der
        .windows(4)
        .position(|w| w == [0x04, 0x22, 0x04, 0x20])
        .expect("Ed25519 private key in PKCS#8");
    let scalar = hex::encode(&der[at + 4..at + 4 + 32]);
    let dbg = format!("{platform:?}");
    assert!(!dbg.contains(&scalar));
    assert!(!dbg.contains(&scalar.to_uppercase()));
    assert!(dbg.contains("laptop"));
    // Persisted and reloaded, it is the same platform.
    let again = SimulatedPlatform::from_pkcs8(platform.pkcs8(), "laptop").unwrap();
    assert_eq!(again.public_key(), platform.public_key());
}

#[test]
fn debug_flag_is_a_claim() {
    let platform = SimulatedPlatform::generate("laptop")
        .unwrap()
        .with_debug(true);
    let verifiers =
        Verifiers::new().insecure_allow_simulated_tee(SimulatedVerifier::insecure_new(vec![
            platform.public_key().to_vec(),
        ]));
    let now = SystemTime::now();
    let rd = report_data(b"c", SPKI_A);
    let claims = verifiers
        .verify(&platform.attest(&rd, now).unwrap(), &rd, now)
        .unwrap();
    assert!(claims.is_debug());
}

#[test]
fn simulated_evidence_version_1_is_rejected_with_a_clear_reason() {
    let (_, verifiers, _) = setup();
    // Version 1: magic, version 1, then the 361-byte ECDSA P-384 layout.
    let mut v1 = b"TWSIMTEE".to_vec();
    v1.extend_from_slice(&1u16.to_be_bytes());
    v1.resize(361, 0);
    let rd = [0u8; 64];
    let err = verifiers
        .verify(
            &twinseal_attest::Evidence::Simulated(v1),
            &rd,
            SystemTime::now(),
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "attestation rejected");
    assert!(err.reason().unwrap().contains("version 1"), "{err:?}");

    // A version-1 (P-384) platform key is refused with the same explanation.
    let p384 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let err = SimulatedPlatform::from_pkcs8(p384.as_ref(), "laptop").unwrap_err();
    assert!(err.to_string().contains("version 1"), "{err}");
}
