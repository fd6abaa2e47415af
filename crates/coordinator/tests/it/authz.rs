//! The authorization matrix: every endpoint x every kind of caller, with
//! the exact status each must get.

use crate::common;

use crate::common::{Auth, Harness};
use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::{Value, json};

const IDS: [&str; 8] = [
    "none",
    "admin",
    "data_owner",
    "auditor",
    "ml_engineer",
    "app",
    "wrong_app",
    "worker_client",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_each_identity_with_the_exact_status() {
    let h = Harness::new();
    let (alice, audrey, mallory) = h.setup_users().await;
    h.create_key("model-key").await;
    h.create_key("other-key").await;
    h.create_key("toggle").await;
    let worker = Auth::Cert(h.app_cert("worker").await);
    let other = Auth::Cert(h.app_cert("other").await);
    let carl = h.token_of("carl").await;
    let ids = [
        Auth::None,
        h.admin(),
        alice.clone(),
        audrey,
        mallory,
        worker,
        other,
        carl,
    ];

    // Per-identity resources so that a success for one row does not change
    // what the next identity sees.
    let mut serials = Vec::new();
    let mut bob_tokens = Vec::new();
    for i in 0..IDS.len() {
        h.create_key(&format!("doomed-{i}")).await;
        let cert = h.app_cert("worker").await;
        serials.push(twinseal_coordinator::ca::cert_facts(&cert).unwrap().serial);
        let (s, v) = h
            .call(Method::POST, "/v1/users/bob/token", &h.admin(), None)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        bob_tokens.push(v["id"].as_str().unwrap().to_string());
    }
    let (s, dk) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/datakey",
            &alice,
            Some(json!({"context": {"purpose": "model"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{dk}");
    let header = dk["header"].as_str().unwrap().to_string();
    // The log entry approving the worker app's measurements (release
    // transparency): the worker reads its proof, another app may not.
    let (s, export) = h.call(Method::GET, "/v1/audit/export", &ids[3], None).await;
    assert_eq!(s, StatusCode::OK);
    let approval = export["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["event"]["type"] == "measurements_approved" && e["event"]["app"] == "worker")
        .expect("the worker's approval is logged")["index"]
        .as_u64()
        .unwrap();
    let manifest = common::manifest();
    let tok = json!({"key": "model-key", "alphabet": "digits", "values": ["4111111111111111"]});

    use StatusCode as S;
    const OK: S = S::OK;
    const CREATED: S = S::CREATED;
    const NO_CONTENT: S = S::NO_CONTENT;
    const UNAUTH: S = S::UNAUTHORIZED;
    const FORBID: S = S::FORBIDDEN;
    // Columns: none, admin, data_owner, auditor, ml_engineer, app, wrong
    // app, worker client.
    let public = [OK; 8];
    let admin_only = [UNAUTH, OK, FORBID, FORBID, FORBID, FORBID, FORBID, FORBID];
    let readers = [UNAUTH, OK, FORBID, OK, FORBID, FORBID, FORBID, FORBID];
    type Row = (Method, String, Option<Value>, [S; 8]);
    let mut rows: Vec<Row> = vec![
        (Method::GET, "/v1/health".into(), None, public),
        (Method::GET, "/v1/openapi.json".into(), None, public),
        (Method::GET, "/metrics".into(), None, public),
        (Method::GET, "/v1/ca".into(), None, public),
        (Method::POST, "/v1/attest/challenge".into(), None, public),
        (Method::GET, "/v1/keys".into(), None, admin_only),
        (Method::GET, "/v1/keys/model-key".into(), None, admin_only),
        (
            Method::POST,
            "/v1/keys/toggle/disable".into(),
            None,
            admin_only,
        ),
        (
            Method::POST,
            "/v1/keys/toggle/enable".into(),
            None,
            admin_only,
        ),
        (
            Method::POST,
            "/v1/keys/toggle/rotate".into(),
            None,
            admin_only,
        ),
        (
            Method::POST,
            "/v1/keys/model-key/datakey".into(),
            Some(json!({"context": {"purpose": "model"}})),
            // Users seal only with keys the manifest grants them `seal` on.
            [UNAUTH, FORBID, OK, FORBID, FORBID, OK, FORBID, FORBID],
        ),
        (
            Method::POST,
            "/v1/keys/model-key/unwrap".into(),
            Some(json!({"header": header})),
            [UNAUTH, FORBID, OK, FORBID, FORBID, OK, FORBID, FORBID],
        ),
        (
            Method::POST,
            "/v1/keys/model-key/release".into(),
            None,
            [UNAUTH, FORBID, FORBID, FORBID, FORBID, OK, FORBID, FORBID],
        ),
        (Method::GET, "/v1/manifest".into(), None, readers),
        (
            Method::PUT,
            "/v1/manifest".into(),
            Some(json!({"manifest": manifest})),
            admin_only,
        ),
        (Method::GET, "/v1/manifest/versions".into(), None, readers),
        (Method::GET, "/v1/certificates".into(), None, readers),
        (
            Method::POST,
            "/v1/tokenize".into(),
            Some(tok.clone()),
            [UNAUTH, FORBID, OK, FORBID, FORBID, OK, FORBID, FORBID],
        ),
        (
            Method::POST,
            "/v1/detokenize".into(),
            Some(tok),
            [UNAUTH, FORBID, OK, FORBID, FORBID, FORBID, FORBID, FORBID],
        ),
        (Method::GET, "/v1/audit/checkpoint".into(), None, readers),
        (
            Method::GET,
            "/v1/audit/export".into(),
            None,
            [UNAUTH, FORBID, FORBID, OK, FORBID, FORBID, FORBID, FORBID],
        ),
        // The log as C2SP tiles: auditors only unless [transparency]
        // public_log (tests/it/transparency.rs covers that setting).
        (
            Method::GET,
            format!("/v1/log/proof/{approval}"),
            None,
            [UNAUTH, FORBID, FORBID, OK, FORBID, OK, FORBID, FORBID],
        ),
        (
            Method::GET,
            "/log/checkpoint".into(),
            None,
            [UNAUTH, FORBID, FORBID, OK, FORBID, FORBID, FORBID, FORBID],
        ),
        (
            Method::GET,
            "/log/tile/0/000.p/1".into(),
            None,
            [UNAUTH, FORBID, FORBID, OK, FORBID, FORBID, FORBID, FORBID],
        ),
        (
            Method::GET,
            "/log/tile/entries/000.p/1".into(),
            None,
            [UNAUTH, FORBID, FORBID, OK, FORBID, FORBID, FORBID, FORBID],
        ),
        (
            Method::POST,
            "/v1/evidence".into(),
            Some(json!({"nonce": "ab".repeat(32)})),
            public,
        ),
        // Workflows: ML engineers and admins queue runs; the app of the
        // workflow claims and reports; readers and that app read them.
        (
            Method::POST,
            "/v1/workflows/w1/runs".into(),
            None,
            [
                UNAUTH, CREATED, FORBID, FORBID, CREATED, FORBID, FORBID, FORBID,
            ],
        ),
        (
            Method::GET,
            "/v1/runs".into(),
            None,
            [UNAUTH, OK, FORBID, OK, OK, FORBID, FORBID, FORBID],
        ),
        (
            Method::GET,
            "/v1/runs/1".into(),
            None,
            [UNAUTH, OK, FORBID, OK, OK, OK, FORBID, FORBID],
        ),
        (
            Method::POST,
            "/v1/jobs/claim".into(),
            None,
            [UNAUTH, FORBID, FORBID, FORBID, FORBID, OK, OK, FORBID],
        ),
        (
            Method::POST,
            "/v1/jobs/1/progress".into(),
            Some(json!({"done": 0, "total": 1})),
            [UNAUTH, FORBID, FORBID, FORBID, FORBID, OK, FORBID, FORBID],
        ),
        (
            Method::POST,
            "/v1/jobs/1/finish".into(),
            Some(json!({"done": 0, "error": "stopped by the test"})),
            [UNAUTH, FORBID, FORBID, FORBID, FORBID, OK, FORBID, FORBID],
        ),
        // Worker client tokens are checked by attested apps only.
        (
            Method::POST,
            "/v1/clients/introspect".into(),
            Some(json!({"token": "tws_x"})),
            [UNAUTH, FORBID, FORBID, FORBID, FORBID, OK, OK, FORBID],
        ),
        (Method::GET, "/v1/users/bob/tokens".into(), None, admin_only),
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected) in rows.drain(..) {
        for (i, id) in ids.iter().enumerate() {
            let (got, answer) = h.call(method.clone(), &path, id, body.clone()).await;
            if got != expected[i] {
                failures.push(format!(
                    "{method} {path} as {}: {got} (want {}) {answer}",
                    IDS[i], expected[i]
                ));
            }
            if !got.is_success() && path != "/metrics" {
                // Every refusal is the stable JSON error body.
                assert!(
                    answer["type"].is_string() && answer["detail"].is_string(),
                    "{method} {path}: {answer}"
                );
            }
        }
    }
    // Rows whose success changes state use a resource per identity.
    for (i, id) in ids.iter().enumerate() {
        let want_create = if i == 1 { CREATED } else { admin_only[i] };
        let checks: [(Method, String, Option<Value>, S); 5] = [
            (
                Method::DELETE,
                format!("/v1/users/bob/tokens/{}", bob_tokens[i]),
                None,
                if i == 1 { NO_CONTENT } else { admin_only[i] },
            ),
            (
                Method::POST,
                "/v1/keys".into(),
                Some(json!({"name": format!("new-{i}")})),
                want_create,
            ),
            (
                Method::DELETE,
                format!("/v1/keys/doomed-{i}"),
                None,
                admin_only[i],
            ),
            (
                Method::POST,
                "/v1/users/alice/token".into(),
                None,
                want_create,
            ),
            (
                Method::POST,
                format!("/v1/certificates/{}/revoke", serials[i]),
                None,
                if i == 1 { NO_CONTENT } else { admin_only[i] },
            ),
        ];
        // Attestation authenticates by evidence alone: the same for everyone.
        let (_, csr, spki) = Harness::csr();
        let challenge = h.challenge().await;
        let rd = twinseal_attest::report_data(&hex::decode(&challenge).unwrap(), &spki);
        let ev = h
            .platform
            .attest_with_measurement(&common::MEASUREMENT, &rd, std::time::SystemTime::now())
            .unwrap();
        let body = json!({"app": "worker", "challenge": challenge, "csr": csr,
            "evidence": {"evidence": base64::engine::general_purpose::STANDARD.encode(ev.bytes())}});
        let (got, answer) = h.call(Method::POST, "/v1/attest", id, Some(body)).await;
        if got != OK {
            failures.push(format!("POST /v1/attest as {}: {got} {answer}", IDS[i]));
        }
        for (method, path, body, want) in checks {
            let (got, answer) = h.call(method.clone(), &path, id, body).await;
            if got != want {
                failures.push(format!(
                    "{method} {path} as {}: {got} (want {want}) {answer}",
                    IDS[i]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix mismatches:\n{}",
        failures.join("\n")
    );

    // An unknown bearer token is 401 and counted in a failure summary.
    let (s, _) = h
        .call(
            Method::GET,
            "/v1/keys",
            &Auth::Token("tws_forged".into()),
            None,
        )
        .await;
    assert_eq!(s, UNAUTH);
    assert!(
        h.audit_kinds()
            .await
            .iter()
            .any(|k| k == "failures_summarized")
    );
}
