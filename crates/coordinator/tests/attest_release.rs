//! Attestation, certificates and key release: what is accepted, what is
//! rejected, and that every decision is audited.

mod common;

use std::time::SystemTime;

use axum::http::{Method, StatusCode};
use common::{Auth, Harness, MEASUREMENT};
use serde_json::json;
use twinseal_attest::SimulatedPlatform;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_app_gets_a_marked_certificate_and_its_key() {
    let h = Harness::new();
    h.setup_users().await;
    h.create_key("model-key").await;
    let (s, v) = h.attest_with("worker", &h.platform, &MEASUREMENT).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["simulated"], true);
    assert_eq!(v["measurement"], common::measurement_hex());
    let der = common::pem_to_der(v["certificate"].as_str().unwrap());
    assert!(
        twinseal_coordinator::ca::cert_facts(&der)
            .unwrap()
            .simulated
    );
    // The certificate carries the evidence for third parties.
    let carried = twinseal_attest::cert::extract(&der).unwrap();
    assert_eq!(carried.evidence.kind(), twinseal_attest::TeeKind::Simulated);

    let (s, r) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/release",
            &Auth::Cert(der.clone()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["versions"][0]["version"], 1);
    // Rotation: both versions are released so old data still opens.
    let (s, _) = h
        .call(Method::POST, "/v1/keys/model-key/rotate", &h.admin(), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, r2) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/release",
            &Auth::Cert(der),
            None,
        )
        .await;
    assert_eq!(r2["current_version"], 2);
    assert_eq!(r2["versions"][0]["material"], r["versions"][0]["material"]);
    assert_ne!(r2["versions"][1]["material"], r["versions"][0]["material"]);
    let kinds = h.audit_kinds().await;
    for k in [
        "attestation_verified",
        "certificate_issued",
        "key_released",
        "key_rotated",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_attestations_are_audited_and_issue_nothing() {
    let h = Harness::new();
    h.setup_users().await;
    let before = h.state.list_certificates().unwrap().certificates.len();
    let mut rejected = 0;

    // Reused challenge: the first use succeeds, the replay is rejected.
    let (_, csr, spki) = Harness::csr();
    let challenge = h.challenge().await;
    let rd = twinseal_attest::report_data(&hex::decode(&challenge).unwrap(), &spki);
    let ev = h
        .platform
        .attest_with_measurement(&MEASUREMENT, &rd, SystemTime::now())
        .unwrap();
    let (s, _) = h.attest_raw("worker", &challenge, ev.bytes(), &csr).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.attest_raw("worker", &challenge, ev.bytes(), &csr).await;
    assert_eq!(
        (s, v["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("attestation_rejected")),
        "replay"
    );
    rejected += 1;

    // Evidence bound to another key (lifted onto this CSR).
    let (_, other_csr, _) = Harness::csr();
    let challenge = h.challenge().await;
    let rd = twinseal_attest::report_data(&hex::decode(&challenge).unwrap(), &spki);
    let ev = h
        .platform
        .attest_with_measurement(&MEASUREMENT, &rd, SystemTime::now())
        .unwrap();
    let (s, _) = h
        .attest_raw("worker", &challenge, ev.bytes(), &other_csr)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "key substitution");
    rejected += 1;

    // Measurement not in the manifest.
    let (s, _) = h.attest_with("worker", &h.platform, &[0x22; 48]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "unlisted measurement");
    rejected += 1;

    // Debug evidence.
    let debug = SimulatedPlatform::from_pkcs8(h.platform.pkcs8(), "paris-1")
        .unwrap()
        .with_debug(true);
    let (s, _) = h.attest_with("worker", &debug, &MEASUREMENT).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "debug");
    rejected += 1;

    // An untrusted simulated platform.
    let stranger = SimulatedPlatform::generate("paris-1").unwrap();
    let (s, _) = h.attest_with("worker", &stranger, &MEASUREMENT).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "untrusted platform");
    rejected += 1;

    // An app that is not in the manifest.
    let (s, _) = h.attest_with("ghost", &h.platform, &MEASUREMENT).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "unknown app");
    rejected += 1;

    // Malformed input: 400, nothing audited, nothing issued.
    let audit_before = h.audit_kinds().await.len();
    let challenge = h.challenge().await;
    for (evidence, csr) in [
        (b"garbage".to_vec(), Harness::csr().1),
        (vec![0u8; 361], Harness::csr().1),
        (
            b"TWSIMTEE".to_vec(),
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .to_string(),
        ),
    ] {
        let (s, v) = h.attest_raw("worker", &challenge, &evidence, &csr).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/attest",
            &Auth::None,
            Some(json!({"app": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.audit_kinds().await.len(),
        audit_before,
        "malformed input is not a decision"
    );

    let kinds = h.audit_kinds().await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "attestation_rejected")
            .count(),
        rejected
    );
    assert_eq!(
        h.state.list_certificates().unwrap().certificates.len(),
        before + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_evidence_is_rejected_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let platform = SimulatedPlatform::generate("paris-1").unwrap();
    let config = twinseal_coordinator::Config::for_data_dir(dir.path());
    let report = twinseal_coordinator::init(&config).unwrap();
    let state = twinseal_coordinator::Coordinator::open(config).unwrap();
    let h = Harness {
        router: twinseal_coordinator::app(state.clone()),
        state,
        dir,
        admin: report.admin_token.to_string(),
        platform,
    };
    h.setup_users().await;
    let (s, v) = h.attest_with("worker", &h.platform, &MEASUREMENT).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        h.audit_kinds()
            .await
            .iter()
            .any(|k| k == "attestation_rejected")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_is_denied_and_audited_for_every_broken_precondition() {
    let h = Harness::new();
    h.setup_users().await;
    h.create_key("model-key").await;
    h.create_key("other-key").await;
    let cert = h.app_cert("worker").await;
    let release = |der: Vec<u8>, key: &'static str| {
        let h = &h;
        async move {
            h.call(
                Method::POST,
                &format!("/v1/keys/{key}/release"),
                &Auth::Cert(der),
                None,
            )
            .await
        }
    };
    assert_eq!(release(cert.clone(), "model-key").await.0, StatusCode::OK);

    // A key the manifest does not give this app.
    assert_eq!(
        release(cert.clone(), "other-key").await.0,
        StatusCode::FORBIDDEN
    );
    // A disabled, then a destroyed key.
    h.call(Method::POST, "/v1/keys/model-key/disable", &h.admin(), None)
        .await;
    assert_eq!(
        release(cert.clone(), "model-key").await.0,
        StatusCode::FORBIDDEN
    );
    h.call(Method::POST, "/v1/keys/model-key/enable", &h.admin(), None)
        .await;
    assert_eq!(release(cert.clone(), "model-key").await.0, StatusCode::OK);

    // A foreign certificate (another coordinator's root) is unauthenticated.
    let other = Harness::new();
    other.setup_users().await;
    let foreign = other.app_cert("worker").await;
    assert_eq!(
        release(foreign, "model-key").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Placement: a manifest that pins model-key to eu-west, and no
    // endorsement for this platform.
    let pinned = format!(
        "{}\n[keys.model-key]\nallowed_locations = [\"eu-west\"]\n",
        common::manifest()
    );
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &h.admin(),
            Some(json!({"manifest": pinned})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        release(cert.clone(), "model-key").await.0,
        StatusCode::FORBIDDEN,
        "outside its placement"
    );
    let (s, _) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &h.admin(),
            Some(json!({"manifest": common::manifest()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // A revoked certificate.
    let serial = twinseal_coordinator::ca::cert_facts(&cert).unwrap().serial;
    let (s, _) = h
        .call(
            Method::POST,
            &format!("/v1/certificates/{serial}/revoke"),
            &h.admin(),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        release(cert.clone(), "model-key").await.0,
        StatusCode::UNAUTHORIZED
    );

    // A destroyed key, for a fresh certificate.
    let cert2 = h.app_cert("worker").await;
    let (s, _) = h
        .call(Method::DELETE, "/v1/keys/model-key", &h.admin(), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(release(cert2, "model-key").await.0, StatusCode::FORBIDDEN);

    let kinds = h.audit_kinds().await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "key_release_denied").count(),
        4,
        "{kinds:?}"
    );
    assert!(kinds.iter().filter(|k| *k == "login_failed").count() >= 2);
    assert!(kinds.iter().any(|k| k == "key_destroyed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_locks_out_every_admin_is_refused() {
    let h = Harness::new();
    let no_admin = "[users.alice]\nroles = [\"data_owner\"]\n";
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &h.admin(),
            Some(json!({"manifest": no_admin})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // An admin without any token also locks everyone out.
    let tokenless = "[users.root]\nroles = [\"admin\"]\n";
    let (s, _) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &h.admin(),
            Some(json!({"manifest": tokenless})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, versions) = h
        .call(Method::GET, "/v1/manifest/versions", &h.admin(), None)
        .await;
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "nothing was stored"
    );
    assert!(
        h.audit_kinds()
            .await
            .iter()
            .any(|k| k == "manifest_rejected")
    );
}
