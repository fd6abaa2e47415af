//! Attestation, certificates and key release: what is accepted, what is
//! rejected, and that every decision is audited.

use crate::common;

use std::time::SystemTime;

use crate::common::{Auth, Harness, MEASUREMENT, test_store};
use axum::http::{Method, StatusCode};
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

    // Evidence shown genuine but refused by the manifest or policy is
    // stored with its rejection (measurement, debug, unknown app); evidence
    // that never verified (replay, key substitution, untrusted platform) is
    // only counted, by digest and size, in a failure summary.
    let kinds = h.audit_kinds().await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "attestation_rejected")
            .count(),
        3,
        "{kinds:?}"
    );
    let summary = h.audit_events("failures_summarized").await;
    let attest_summary = summary
        .iter()
        .find(|e| e["what"] == "attestation")
        .expect("an attestation failure summary");
    assert_eq!(attest_summary["count"], rejected - 3, "{attest_summary}");
    assert_eq!(
        attest_summary["evidence"].as_object().unwrap().len(),
        rejected - 3,
        "each unverified evidence is named by digest and size: {attest_summary}"
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
    let config = twinseal_coordinator::Config {
        store: test_store(),
        ..twinseal_coordinator::Config::for_data_dir(dir.path())
    };
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
    let kinds = h.audit_kinds().await;
    assert!(
        !kinds.iter().any(|k| k == "attestation_rejected"),
        "simulated evidence is not even verified here: {kinds:?}"
    );
    let summary = h.audit_events("failures_summarized").await;
    assert!(
        summary[0]["reasons"]
            .as_object()
            .unwrap()
            .keys()
            .any(|r| r.contains("no verifier enabled for simulated")),
        "{summary:?}"
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
    let pinned = common::manifest().replace(
        "[keys.model-key]\n",
        "[keys.model-key]\nallowed_locations = [\"eu-west\"]\n",
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
    assert!(
        h.audit_events("failures_summarized")
            .await
            .iter()
            .any(|e| e["what"] == "login" && e["count"].as_u64().unwrap() >= 2)
    );
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

/// Bytes of the coordinator's database files (the database and its WAL).
fn db_bytes(h: &Harness) -> u64 {
    ["coordinator.db", "coordinator.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(h.dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// 64 KiB of junk that evidence detection takes for `kind`.
fn junk_evidence(kind: &str, seed: u32) -> Vec<u8> {
    let mut b: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect();
    match kind {
        // An SGX DCAP quote header: version 3, ECDSA-P256 key, SGX.
        "sgx" => b[..8].copy_from_slice(&[3, 0, 2, 0, 0, 0, 0, 0]),
        _ => b[..8].copy_from_slice(twinseal_attest::simulated::SIM_MAGIC),
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_junk_attestations_and_bad_tokens_leave_the_database_within_64_kib() {
    for allow_simulated in [true, false] {
        let h = Harness::with_config(|c| {
            if !allow_simulated {
                c.insecure_allow_simulated_tee = false;
                c.simulated_platform_keys.clear();
            }
        });
        h.setup_users().await;
        h.state.flush_failures().await.unwrap();
        let entries_before = h.audit_kinds().await.len();
        let bytes_before = db_bytes(&h);
        let (_, csr, _) = Harness::csr();
        for i in 0..1000u32 {
            let kind = if i % 2 == 0 { "sgx" } else { "simulated" };
            // A fresh, never-issued challenge each time.
            let challenge = hex::encode(i.to_be_bytes()).repeat(8);
            let (s, v) = h
                .attest_raw("worker", &challenge, &junk_evidence(kind, i), &csr)
                .await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
            let (s, _) = h
                .call(
                    Method::GET,
                    "/v1/keys",
                    &Auth::Token(format!("tws_guess{i}")),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
        let kinds = h.audit_kinds().await;
        let grown = db_bytes(&h).saturating_sub(bytes_before);
        assert!(
            grown <= 64 * 1024,
            "2,000 anonymous failures grew the database by {grown} bytes (allow_simulated {allow_simulated})"
        );
        assert!(
            kinds.len() - entries_before <= 2,
            "at most one summary per kind and address: {:?}",
            &kinds[entries_before..]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_are_rate_limited_per_address() {
    let h = Harness::with_config(|c| {
        c.anonymous_burst = 10;
        c.anonymous_requests_per_second = 1.0;
    });
    let from = |ip: &str| {
        let remote: std::net::SocketAddr = format!("{ip}:4000").parse().unwrap();
        let mut req = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/v1/attest/challenge")
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(twinseal_coordinator::http::RemoteAddr(remote));
        req
    };
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(h.send(from("192.0.2.7")).await.0);
    }
    assert!(
        statuses[..10].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(
        statuses[10..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Another address is not affected; nor are callers with credentials.
    assert_eq!(h.send(from("192.0.2.8")).await.0, StatusCode::OK);
    let (s, _) = h.call(Method::GET, "/v1/keys", &h.admin(), None).await;
    assert_eq!(s, StatusCode::OK);
    // Failed logins take from the same bucket.
    let mut bad = axum::http::Request::builder()
        .method(Method::GET)
        .uri("/v1/keys")
        .header("authorization", "Bearer tws_guess")
        .body(axum::body::Body::empty())
        .unwrap();
    bad.extensions_mut()
        .insert(twinseal_coordinator::http::RemoteAddr(
            "192.0.2.7:4001".parse().unwrap(),
        ));
    assert_eq!(h.send(bad).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_are_refused_and_a_user_added_again_inherits_nothing() {
    let h = Harness::new();
    h.setup_users().await;
    let admin = h.admin();
    // A token with an id and an expiry.
    let (s, t) = h
        .call(
            Method::POST,
            "/v1/users/audrey/token",
            &admin,
            Some(json!({"expires_in_secs": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let short = Auth::Token(t["token"].as_str().unwrap().into());
    assert!(t["expires"].is_string() && t["id"].is_string(), "{t}");
    let (s, _) = h.call(Method::GET, "/v1/manifest", &short, None).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (s, _) = h.call(Method::GET, "/v1/manifest", &short, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "an expired token");

    // Listing shows ids and dates, never tokens; revoking works at once.
    let (s, t) = h
        .call(Method::POST, "/v1/users/audrey/token", &admin, None)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let long = Auth::Token(t["token"].as_str().unwrap().into());
    let id = t["id"].as_str().unwrap().to_string();
    let (s, list) = h
        .call(Method::GET, "/v1/users/audrey/tokens", &admin, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let text = list.to_string();
    assert!(text.contains(&id) && !text.contains(t["token"].as_str().unwrap()));
    assert_eq!(list["tokens"].as_array().unwrap().len(), 3, "{list}");
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/users/audrey/tokens/{id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call(Method::GET, "/v1/manifest", &long, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a revoked token");
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/users/audrey/tokens/{id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Removing a user deletes their tokens; the same name added again does
    // not bring them back (nor their old roles' access).
    let (s, t) = h
        .call(Method::POST, "/v1/users/audrey/token", &admin, None)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let old = Auth::Token(t["token"].as_str().unwrap().into());
    let without = common::manifest().replace("[users.audrey]\nroles = [\"auditor\"]\n", "");
    assert_ne!(without, common::manifest());
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &admin,
            Some(json!({"manifest": without})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &admin,
            Some(json!({"manifest": common::manifest()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.call(Method::GET, "/v1/manifest", &old, None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "an old token of a re-added user"
    );
    let (_, list) = h
        .call(Method::GET, "/v1/users/audrey/tokens", &admin, None)
        .await;
    assert!(list["tokens"].as_array().unwrap().is_empty(), "{list}");
    let revoked = h.audit_events("credential_revoked").await;
    assert!(revoked.len() >= 3, "{revoked:?}");
    // The last admin token cannot be revoked.
    let (_, list) = h
        .call(Method::GET, "/v1/users/admin/tokens", &admin, None)
        .await;
    let admin_id = list["tokens"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/users/admin/tokens/{admin_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_naming_the_coordinator_or_outside_the_apps_names_is_refused() {
    // The default server names are localhost and 127.0.0.1.
    let h = Harness::new();
    h.setup_users().await;
    let before = h.state.list_certificates().unwrap().certificates.len();
    let attest_for = |names: Vec<String>| {
        let h = &h;
        async move {
            let (s, v, _) = h.attest_names("worker", names).await;
            (s, v)
        }
    };
    for names in [
        vec!["localhost".to_string()],
        vec!["worker.test".into(), "127.0.0.1".into()],
        vec!["LOCALHOST".into()],
    ] {
        let (s, v) = attest_for(names.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{names:?}: {v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("coordinator's own names"),
            "{v}"
        );
    }
    // An app with a names list gets only those.
    let listed = common::manifest().replace(
        "keys = [\"model-key\", \"data-key\", \"out-key\", \"gallery-key\"]\n",
        "keys = [\"model-key\", \"data-key\", \"out-key\", \"gallery-key\"]\nnames = [\"*.workers.test\"]\n",
    );
    assert_ne!(listed, common::manifest());
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &h.admin(),
            Some(json!({"manifest": listed})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = attest_for(vec!["elsewhere.test".into()]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = attest_for(vec!["w1.workers.test".into()]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        h.state.list_certificates().unwrap().certificates.len(),
        before + 1
    );
}
