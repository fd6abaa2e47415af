//! The default policy against real and simulated claims.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use twinseal_attest::{
    CollateralSource, DcapCollateral, DcapVerifier, Evidence, SimulatedPlatform, SimulatedVerifier,
    TcbStatus, VerifiedClaims, Verifier,
};
use twinseal_policy::{KeyRule, PlacementSigner, Placements, Policy, PolicyConfig, Request};

fn simulated(debug: bool, platform_id: &str) -> VerifiedClaims {
    let p = SimulatedPlatform::generate(platform_id)
        .unwrap()
        .with_debug(debug);
    let v = SimulatedVerifier::insecure_new(vec![p.public_key().to_vec()]);
    let rd = [1u8; 64];
    let now = SystemTime::now();
    v.verify(
        &p.attest_with_measurement(&[0xab; 48], &rd, now).unwrap(),
        &rd,
        now,
    )
    .unwrap()
}

const SIM_MEASUREMENT: &str = "abababababababababababababababababababababababababababababababababababababababababababababababab";

fn config() -> PolicyConfig {
    let mut c = PolicyConfig {
        allowed_measurements: vec![SIM_MEASUREMENT.to_string()],
        ..Default::default()
    };
    c.keys.insert(
        "model-key".into(),
        KeyRule {
            allowed_locations: vec!["eu-west".into()],
        },
    );
    c
}

fn dev_request(key: Option<&str>) -> Request {
    Request {
        key_id: key.map(String::from),
        insecure_allow_simulated_tee: true,
    }
}

#[test]
fn simulated_claims_are_rejected_without_the_dangerous_option() {
    let policy = Policy::default_policy(&config(), &Placements::none()).unwrap();
    let claims = simulated(false, "laptop");
    let d = policy.evaluate(&claims, &Request::default()).unwrap();
    assert!(!d.allow);
    assert_eq!(d.reasons, ["simulated TEE evidence is not accepted"]);
    let d = policy.evaluate(&claims, &dev_request(None)).unwrap();
    assert!(d.allow, "{:?}", d.reasons);
}

#[test]
fn debug_and_unlisted_measurements_are_rejected() {
    let policy = Policy::default_policy(&config(), &Placements::none()).unwrap();
    let d = policy
        .evaluate(&simulated(true, "laptop"), &dev_request(None))
        .unwrap();
    assert!(!d.allow);
    assert!(d.reasons.iter().any(|r| r.contains("debug")));

    let empty = Policy::default_policy(&PolicyConfig::default(), &Placements::none()).unwrap();
    let d = empty
        .evaluate(&simulated(false, "laptop"), &dev_request(None))
        .unwrap();
    assert_eq!(
        d.reasons,
        [format!(
            "measurement {SIM_MEASUREMENT} is not on the allow-list"
        )]
    );
}

#[test]
fn placement_is_enforced_per_key() {
    let operator = PlacementSigner::generate().unwrap();
    let placements = Placements::verify(
        &[
            operator.endorse("simulated:paris-1", "eu-west").unwrap(),
            operator.endorse("simulated:ohio-1", "us-east").unwrap(),
        ],
        &[operator.public_key().to_vec()],
    )
    .unwrap();
    let policy = Policy::default_policy(&config(), &placements).unwrap();

    let d = policy
        .evaluate(
            &simulated(false, "paris-1"),
            &dev_request(Some("model-key")),
        )
        .unwrap();
    assert!(d.allow, "{:?}", d.reasons);
    assert_eq!(d.location.as_deref(), Some("eu-west"));

    let d = policy
        .evaluate(&simulated(false, "ohio-1"), &dev_request(Some("model-key")))
        .unwrap();
    assert_eq!(
        d.reasons,
        ["location us-east is not allowed for key model-key"]
    );

    let d = policy
        .evaluate(
            &simulated(false, "unknown-1"),
            &dev_request(Some("model-key")),
        )
        .unwrap();
    assert!(!d.allow);
    assert!(d.reasons[0].contains("no placement endorsement"));

    let d = policy
        .evaluate(
            &simulated(false, "paris-1"),
            &dev_request(Some("other-key")),
        )
        .unwrap();
    assert_eq!(d.reasons, ["unknown key other-key"]);

    // A key whose rule names no locations has no placement rule.
    let mut open = config();
    open.keys.insert("open-key".into(), KeyRule::default());
    let policy = Policy::default_policy(&open, &placements).unwrap();
    let d = policy
        .evaluate(
            &simulated(false, "unknown-1"),
            &dev_request(Some("open-key")),
        )
        .unwrap();
    assert!(d.allow, "{:?}", d.reasons);
}

#[test]
fn sgx_signer_allow_list_admits_only_listed_signers() {
    // The simulated TEE has no MRSIGNER, so a signer list never admits it.
    let mut c = config();
    c.allowed_measurements.clear();
    c.allowed_signers = vec!["00".repeat(32)];
    let policy = Policy::default_policy(&c, &Placements::none()).unwrap();
    let d = policy
        .evaluate(&simulated(false, "paris-1"), &dev_request(None))
        .unwrap();
    assert!(!d.allow);
    assert!(
        d.reasons[0].contains("not on the allow-list"),
        "{:?}",
        d.reasons
    );
}

#[test]
fn forged_or_conflicting_placement_endorsements_are_refused() {
    let operator = PlacementSigner::generate().unwrap();
    let mallory = PlacementSigner::generate().unwrap();
    let keys = [operator.public_key().to_vec()];
    assert!(
        Placements::verify(&[mallory.endorse("simulated:x", "eu-west").unwrap()], &keys).is_err()
    );
    let mut moved = operator.endorse("simulated:x", "us-east").unwrap();
    moved.location = "eu-west".into();
    assert!(Placements::verify(&[moved], &keys).is_err());
    let both = [
        operator.endorse("simulated:x", "eu-west").unwrap(),
        operator.endorse("simulated:x", "us-east").unwrap(),
    ];
    assert!(Placements::verify(&both, &keys).is_err());
}

fn samples() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/attestation");
    assert!(
        dir.join("dcap").is_dir(),
        "the attestation samples are missing at {}: testdata/ is part of the repository: restore it with `git checkout -- testdata`",
        dir.display()
    );
    dir
}

#[test]
fn outdated_tdx_quote_is_rejected_by_the_default_policy() {
    let dir = samples();
    let quote = std::fs::read(dir.join("dcap/tdx_quote_outdated")).unwrap();
    let c = DcapCollateral::from_json(
        &std::fs::read(dir.join("dcap/tdx_quote_outdated_collateral.json")).unwrap(),
    )
    .unwrap();
    let e = Evidence::detect(&quote).unwrap();
    // Quote v5: 48-byte header, 6-byte body descriptor, report data at 520 in the body.
    let rd: [u8; 64] = quote[48 + 6 + 520..48 + 6 + 584].try_into().unwrap();
    let when = UNIX_EPOCH + Duration::from_secs(1_772_323_200); // 2026-03-01T00:00:00Z
    let claims = DcapVerifier::tdx(CollateralSource::Fixed(c))
        .verify(&e, &rd, when)
        .unwrap();
    assert_eq!(claims.tcb_status(), TcbStatus::OutOfDate);

    let cfg = PolicyConfig {
        allowed_measurements: vec![claims.measurement().to_hex()],
        ..Default::default()
    };
    let d = Policy::default_policy(&cfg, &Placements::none())
        .unwrap()
        .evaluate(&claims, &Request::default())
        .unwrap();
    assert!(!d.allow);
    assert_eq!(d.reasons, ["TCB status OutOfDate is not accepted"]);

    // Accepting OutOfDate is a configuration choice of the operator.
    let lenient = PolicyConfig {
        accepted_tcb_statuses: vec!["UpToDate".into(), "OutOfDate".into()],
        ..cfg
    };
    let d = Policy::default_policy(&lenient, &Placements::none())
        .unwrap()
        .evaluate(&claims, &Request::default())
        .unwrap();
    assert!(d.allow, "{:?}", d.reasons);
}

#[test]
fn a_broken_custom_policy_is_an_error_not_an_allow() {
    assert!(
        Policy::new(
            "package twinseal.policy\n deny contains",
            &config(),
            &Placements::none()
        )
        .is_err()
    );
}
