//! Evidence in certificates (RA-TLS extensions): round trip, verification
//! from the certificate alone, and key substitution.

use crate::common;

use std::time::SystemTime;

use rcgen::{KeyPair, PublicKeyData};
use twinseal_attest::cert::{self, ENDORSEMENTS_OID, EVIDENCE_OID};
use twinseal_attest::{
    DcapCollateral, Evidence, SimulatedPlatform, SimulatedVerifier, Verifiers, report_data,
};

fn sim() -> (SimulatedPlatform, Verifiers) {
    let p = SimulatedPlatform::generate("ci").unwrap();
    let v = Verifiers::new().insecure_allow_simulated_tee(SimulatedVerifier::insecure_new(vec![
        p.public_key().to_vec(),
    ]));
    (p, v)
}

#[test]
fn simulated_certificate_verifies_from_its_contents() {
    let (platform, verifiers) = sim();
    let key = KeyPair::generate().unwrap();
    let now = SystemTime::now();
    let evidence = platform
        .attest(&report_data(b"", &key.subject_public_key_info()), now)
        .unwrap();
    let der =
        cert::self_signed_attested_certificate(&key, vec!["worker.local".into()], &evidence, None)
            .unwrap();
    let extracted = cert::extract(&der).unwrap();
    assert_eq!(extracted.evidence, evidence);
    assert_eq!(extracted.spki_der, key.subject_public_key_info());
    let claims = cert::verify_certificate(&der, &verifiers, b"", now).unwrap();
    assert!(claims.is_simulated());
    // A challenge the evidence does not bind is rejected.
    assert!(cert::verify_certificate(&der, &verifiers, b"other challenge", now).is_err());
}

#[test]
fn evidence_lifted_onto_another_key_is_rejected() {
    let (platform, verifiers) = sim();
    let key = KeyPair::generate().unwrap();
    let now = SystemTime::now();
    let evidence = platform
        .attest(&report_data(b"", &key.subject_public_key_info()), now)
        .unwrap();
    let attacker = KeyPair::generate().unwrap();
    let der = cert::self_signed_attested_certificate(&attacker, vec!["x".into()], &evidence, None)
        .unwrap();
    let err = cert::verify_certificate(&der, &verifiers, b"", now).unwrap_err();
    assert_eq!(err.to_string(), "attestation rejected");
}

#[test]
fn certificates_without_or_with_garbled_extensions_are_rejected() {
    let (_, verifiers) = sim();
    let key = KeyPair::generate().unwrap();
    let plain = rcgen::CertificateParams::new(vec!["x".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert!(cert::extract(plain.der()).is_err());
    let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        EVIDENCE_OID,
        cert::encode_cmw("application/unknown", b"x"),
    )];
    let der = params.self_signed(&key).unwrap().der().to_vec();
    assert!(cert::verify_certificate(&der, &verifiers, b"", SystemTime::now()).is_err());
}

#[test]
fn dcap_quote_and_collateral_round_trip_through_a_certificate() {
    let dir = common::samples();
    let quote = common::read(&dir, "dcap/sgx_quote");
    let collateral =
        DcapCollateral::from_json(&common::read(&dir, "dcap/sgx_quote_collateral.json")).unwrap();
    let evidence = Evidence::detect(&quote).unwrap();
    let exts = cert::extensions(&evidence, Some(&collateral));
    assert_eq!(exts.len(), 2);
    let key = KeyPair::generate().unwrap();
    let der = cert::self_signed_attested_certificate(
        &key,
        vec!["x".into()],
        &evidence,
        Some(&collateral),
    )
    .unwrap();
    let parsed = x509_parser::parse_x509_certificate(&der).unwrap().1;
    let oids: Vec<String> = parsed
        .extensions()
        .iter()
        .map(|e| e.oid.to_id_string())
        .collect();
    assert!(oids.contains(&"2.23.133.5.4.9".to_string()));
    assert!(oids.contains(&"2.23.133.5.4.2".to_string()));
    assert_eq!(ENDORSEMENTS_OID, &[2, 23, 133, 5, 4, 2]);
    let extracted = cert::extract(&der).unwrap();
    assert_eq!(extracted.evidence, evidence);
    assert_eq!(extracted.collateral().unwrap().as_ref(), Some(&collateral));
    // The genuine quote verifies with the embedded collateral but does not
    // bind this certificate's key, so the certificate is rejected.
    let err = cert::verify_certificate(
        &der,
        &Verifiers::new(),
        b"",
        common::at("2025-07-01T00:00:00Z"),
    )
    .unwrap_err();
    assert!(err.reason().unwrap().contains("report data"), "{err:?}");
}
