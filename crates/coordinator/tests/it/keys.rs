//! Key lifecycle, data keys for the envelope format, tokenization, and
//! the store never holding plaintext key material.

use crate::common::{Auth, Harness};
use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use twinseal_envelope::{Context, FileKey};

fn file_key(v: &serde_json::Value) -> FileKey {
    let b: [u8; 32] = B64.decode(v.as_str().unwrap()).unwrap().try_into().unwrap();
    FileKey::from_bytes(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_seal_and_open_through_rotation_and_context_rules() {
    let h = Harness::new();
    let (alice, _, mallory) = h.setup_users().await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/keys",
            &h.admin(),
            Some(json!({"name": "model-key", "required_context": {"purpose": "model"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ctx = Context::from_pairs([("purpose", "model"), ("name", "seed")]).unwrap();
    let (s, dk) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/datakey",
            &alice,
            Some(json!({"context": {"purpose": "model", "name": "seed"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{dk}");
    let header = B64.decode(dk["header"].as_str().unwrap()).unwrap();
    let sealed =
        twinseal_envelope::seal_bytes_with_header(b"weights", &header, &file_key(&dk["file_key"]))
            .unwrap();

    // Rotate; the old file still opens (its stanza names v1).
    h.call(Method::POST, "/v1/keys/model-key/rotate", &h.admin(), None)
        .await;
    let (s, uk) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/unwrap",
            &alice,
            Some(json!({"header": dk["header"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{uk}");
    assert_eq!(uk["key_id"], "kms/model-key/v1");
    assert_eq!(uk["context"]["name"], "seed");
    let opened =
        twinseal_envelope::open_bytes_with_file_key(&sealed, &file_key(&uk["file_key"]), &ctx)
            .unwrap();
    assert_eq!(opened, b"weights");
    // New data keys use v2.
    let (_, dk2) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/datakey",
            &alice,
            Some(json!({"context": {"purpose": "model"}})),
        )
        .await;
    assert_eq!(dk2["key_id"], "kms/model-key/v2");

    // The required context is enforced.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/datakey",
            &alice,
            Some(json!({"context": {"purpose": "other"}})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A tampered header does not unwrap; an ML engineer may not unwrap.
    let mut bad = header.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/unwrap",
            &alice,
            Some(json!({"header": B64.encode(&bad)})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/unwrap",
            &mallory,
            Some(json!({"header": dk["header"]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Disabled keys refuse; destroyed keys are gone for good.
    h.call(Method::POST, "/v1/keys/model-key/disable", &h.admin(), None)
        .await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/unwrap",
            &alice,
            Some(json!({"header": dk["header"]})),
        )
        .await;
    assert_eq!(
        (s, v["type"].as_str()),
        (StatusCode::CONFLICT, Some("key_unavailable"))
    );
    h.call(Method::POST, "/v1/keys/model-key/enable", &h.admin(), None)
        .await;
    let (s, v) = h
        .call(Method::DELETE, "/v1/keys/model-key", &h.admin(), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "destroyed");
    assert_eq!(v["versions"].as_array().unwrap().len(), 0);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/unwrap",
            &alice,
            Some(json!({"header": dk["header"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = h
        .call(Method::POST, "/v1/keys/model-key/enable", &h.admin(), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "a destroyed key cannot come back");
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/keys",
            &h.admin(),
            Some(json!({"name": "model-key"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "names are never reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_never_holds_plaintext_keys() {
    let h = Harness::new();
    h.setup_users().await;
    h.create_key("model-key").await;
    h.call(Method::POST, "/v1/keys/model-key/rotate", &h.admin(), None)
        .await;
    let cert = h.app_cert("worker").await;
    let (s, r) = h
        .call(
            Method::POST,
            "/v1/keys/model-key/release",
            &Auth::Cert(cert),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let mut secrets: Vec<Vec<u8>> = r["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| B64.decode(v["material"].as_str().unwrap()).unwrap())
        .collect();
    secrets.push(h.admin.as_bytes().to_vec());
    assert_eq!(secrets.len(), 3);
    h.state.shutdown();
    let mut haystack = Vec::new();
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "master.key" {
            haystack.extend(std::fs::read(&p).unwrap());
        }
    }
    for s in &secrets {
        for needle in [
            s.clone(),
            hex::encode(s).into_bytes(),
            B64.encode(s).into_bytes(),
        ] {
            assert!(
                !haystack
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice()),
                "a secret appears in the data directory"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_stable_error_and_changes_nothing() {
    let h = Harness::new();
    let (alice, _, _) = h.setup_users().await;
    h.create_key("model-key").await;
    let before = h.audit_kinds().await.len();
    let keys_before = h.state.list_keys().keys.len();
    let big = "x".repeat(2 << 20);
    for (method, path, body, want) in [
        (
            Method::POST,
            "/v1/keys",
            json!({"name": big}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            "/v1/keys",
            json!({"name": "a b"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/keys",
            json!({"name": "k", "colour": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/keys",
            json!("not an object"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/manifest",
            json!({"manifest": "[users"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/keys/model-key/unwrap",
            json!({"header": "!!"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/keys/model-key/unwrap",
            json!({"header": B64.encode(b"TWINSEAL")}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/tokenize",
            json!({"key": "model-key", "alphabet": "digits", "values": ["12"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/tokenize",
            json!({"key": "model-key", "alphabet": "hex", "values": []}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let auth = if path.contains("unwrap") || path.contains("tokenize") {
            alice.clone()
        } else {
            h.admin()
        };
        let (s, v) = h.call(method.clone(), path, &auth, Some(body)).await;
        assert_eq!(s, want, "{method} {path}: {v}");
        assert!(v["type"].is_string() && v["detail"].is_string(), "{v}");
    }
    // Not JSON at all.
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/keys")
        .header("authorization", format!("Bearer {}", h.admin))
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{\"name\":"))
        .unwrap();
    let (s, v) = h.send(req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = h.call(Method::GET, "/v1/nowhere", &Auth::None, None).await;
    assert_eq!(
        (s, v["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    assert_eq!(h.state.list_keys().keys.len(), keys_before);
    // The only trace is the admin's refused manifest, which is audited.
    let kinds = h.audit_kinds().await;
    assert_eq!(
        kinds[before..],
        ["manifest_rejected"],
        "bad input changes nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenization_round_trips_and_detokenize_needs_its_own_grant() {
    let h = Harness::new();
    let (alice, audrey, _) = h.setup_users().await;
    let bob = h.token_of("bob").await;
    h.create_key("model-key").await;
    h.create_key("bob-key").await;
    let req = json!({"key": "model-key", "alphabet": "digits", "values": ["4111111111111111", "00012345"], "tweak": "pan"});
    let (s, t) = h
        .call(Method::POST, "/v1/tokenize", &alice, Some(req.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let tokens = t["values"].clone();
    assert_eq!(tokens[0].as_str().unwrap().len(), 16);
    assert_ne!(tokens[0], "4111111111111111");
    let back = json!({"key": "model-key", "alphabet": "digits", "values": tokens, "tweak": "pan"});
    // Neither an auditor, nor an admin, nor a data owner without the grant
    // on this key, may reverse it.
    for who in [&audrey, &h.admin(), &bob] {
        let (s, _) = h
            .call(Method::POST, "/v1/detokenize", who, Some(back.clone()))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = h
            .call(Method::POST, "/v1/tokenize", who, Some(req.clone()))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let (s, d) = h
        .call(Method::POST, "/v1/detokenize", &alice, Some(back))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["values"], json!(["4111111111111111", "00012345"]));
    let kinds = h.audit_kinds().await;
    assert!(kinds.iter().any(|k| k == "tokenized") && kinds.iter().any(|k| k == "detokenized"));
    assert!(kinds.iter().any(|k| k == "tokenization_denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_is_not_a_detokenize_oracle() {
    // Bob may tokenize with bob-key but not detokenize. The attack: learn
    // a 6-digit value from its token by tokenizing every candidate.
    let h = Harness::with_config(|c| c.tokenize_values_per_second = 100.0);
    h.setup_users().await;
    let bob = h.token_of("bob").await;
    h.create_key("bob-key").await;
    let candidates: Vec<String> = (0..10_000).map(|i| format!("{:06}", 420_000 + i)).collect();
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/tokenize",
            &bob,
            Some(json!({"key": "bob-key", "alphabet": "digits", "values": candidates})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "small domains need a marked key: {v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("small_token_domains"),
        "{v}"
    );
    // Longer values pass, within the key's rate: one full request, then
    // the bucket refills at 100 values per second.
    let long: Vec<String> = (0..10_000)
        .map(|i| format!("{:010}", 4_200_000_000u64 + i))
        .collect();
    let body = json!({"key": "bob-key", "alphabet": "digits", "values": long});
    let (s, v) = h
        .call(Method::POST, "/v1/tokenize", &bob, Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h.call(Method::POST, "/v1/tokenize", &bob, Some(body)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    // A tweak too long to be a field name is refused before any work.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/tokenize",
            &bob,
            Some(json!({"key": "bob-key", "alphabet": "digits", "values": ["12345678"], "tweak": "t".repeat(900_000)})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_data_owner_is_refused_on_another_owners_data_the_gallery_and_results() {
    let h = Harness::new();
    let (alice, _, _) = h.setup_users().await;
    let bob = h.token_of("bob").await;
    for k in ["data-key", "gallery-key", "out-key", "model-key", "bob-key"] {
        h.create_key(k).await;
    }
    // Headers of files under each key: alice's dataset, and the gallery and
    // a workflow result, sealed by the worker app that owns those keys.
    let worker = Auth::Cert(h.app_cert("worker").await);
    let mut headers = Vec::new();
    for (key, who) in [
        ("data-key", &alice),
        ("gallery-key", &worker),
        ("out-key", &worker),
        ("model-key", &alice),
    ] {
        let (s, dk) = h
            .call(
                Method::POST,
                &format!("/v1/keys/{key}/datakey"),
                who,
                Some(json!({"context": {}})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{key}: {dk}");
        headers.push((key, dk["header"].clone()));
    }
    for (key, header) in &headers {
        let (s, v) = h
            .call(
                Method::POST,
                &format!("/v1/keys/{key}/unwrap"),
                &bob,
                Some(json!({"header": header})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "bob opened {key}: {v}");
        let (s, _) = h
            .call(
                Method::POST,
                &format!("/v1/keys/{key}/datakey"),
                &bob,
                Some(json!({"context": {}})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "bob sealed under {key}");
    }
    // App-owned keys are out of reach of users without a grant, even their
    // owner's other data owner... and alice's own dataset still opens.
    for key in ["gallery-key", "out-key"] {
        let header = &headers.iter().find(|(k, _)| *k == key).unwrap().1;
        let (s, _) = h
            .call(
                Method::POST,
                &format!("/v1/keys/{key}/unwrap"),
                &alice,
                Some(json!({"header": header})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "alice opened {key}");
    }
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/keys/data-key/unwrap",
            &alice,
            Some(json!({"header": headers[0].1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Bob's own key works for him.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/keys/bob-key/datakey",
            &bob,
            Some(json!({"context": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let denied = h.audit_events("data_key_denied").await;
    assert!(denied.len() >= 10, "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_without_grants_is_refused_with_what_to_add() {
    let h = Harness::new();
    h.setup_users().await;
    let old = "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\npermissions = [\"detokenize\"]\n";
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &h.admin(),
            Some(json!({"manifest": old})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("grants = { dora"),
        "{v}"
    );
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &h.admin(),
            Some(json!({"manifest": old.replace("permissions = [\"detokenize\"]\n", "")})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("owners = [\"dora\"]"),
        "{v}"
    );
}

/// Copy the coordinator state written by the code of schema version 1
/// (`tests/data/v1-state`, made by twinseal 678b47d: before per-key grants
/// and token expiry) into a temporary directory, with the modes a real one
/// has.
fn v1_state() -> (tempfile::TempDir, Value) {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-state");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("master.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let fixture: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("fixture.json")).unwrap()).unwrap();
    (dir, fixture)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_from_before_this_change_opens_and_loses_nothing() {
    let (dir, fixture) = v1_state();
    let config = twinseal_coordinator::Config::for_data_dir(dir.path());
    let state = twinseal_coordinator::Coordinator::open(config).unwrap();
    let h = Harness {
        router: twinseal_coordinator::app(state.clone()),
        state,
        admin: fixture["admin_token"].as_str().unwrap().to_string(),
        platform: twinseal_attest::SimulatedPlatform::generate("unused").unwrap(),
        dir,
    };
    let token = |k: &str| Auth::Token(fixture[k].as_str().unwrap().to_string());
    let (dora, audrey) = (token("dora_token"), token("audrey_token"));
    // Keys, users and their tokens from before are all there.
    let (s, keys) = h.call(Method::GET, "/v1/keys", &h.admin(), None).await;
    assert_eq!(s, StatusCode::OK, "{keys}");
    assert!(keys.to_string().contains("dataset-key"), "{keys}");
    let (s, _) = h.call(Method::GET, "/v1/manifest", &audrey, None).await;
    assert_eq!(s, StatusCode::OK, "an old token still authenticates");
    let (_, list) = h
        .call(Method::GET, "/v1/users/dora/tokens", &h.admin(), None)
        .await;
    assert_eq!(list["tokens"].as_array().unwrap().len(), 1, "{list}");
    assert!(
        list["tokens"][0]["expires"].is_null(),
        "old tokens do not expire: {list}"
    );
    // The manifest in force predates grants: it grants dora nothing (not
    // silently everything), and applying it again says what to add.
    let sealed = std::fs::read(h.dir.path().join("pairs.sealed")).unwrap();
    let header = twinseal_envelope::Header::parse(&sealed).unwrap();
    let unwrap = json!({"header": B64.encode(header.as_bytes())});
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/keys/dataset-key/unwrap",
            &dora,
            Some(unwrap.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, current) = h.call(Method::GET, "/v1/manifest", &audrey, None).await;
    let old_text = current["manifest"].as_str().unwrap().to_string();
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &h.admin(),
            Some(json!({"manifest": old_text})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("grants = { dora"),
        "{v}"
    );
    // With the lines it names, everything sealed before opens again.
    let migrated = old_text.replace("permissions = [\"detokenize\"]\n", "")
        + "[keys.dataset-key]\nowners = [\"dora\"]\ngrants = { dora = [\"tokenize\", \"detokenize\"] }\n";
    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/manifest",
            &h.admin(),
            Some(json!({"manifest": migrated})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, uk) = h
        .call(
            Method::POST,
            "/v1/keys/dataset-key/unwrap",
            &dora,
            Some(unwrap),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{uk}");
    let ctx = Context::from_pairs([("purpose", "pairs")]).unwrap();
    let plain =
        twinseal_envelope::open_bytes_with_file_key(&sealed, &file_key(&uk["file_key"]), &ctx)
            .unwrap();
    assert_eq!(plain, b"pairs sealed before the upgrade");
    let (s, d) = h
        .call(
            Method::POST,
            "/v1/detokenize",
            &dora,
            Some(
                json!({"key": "dataset-key", "alphabet": "digits", "tweak": "pan",
                "values": [fixture["token_of_4111111111111111"]]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["values"][0], "4111111111111111");
    // The whole log, old entries and new, verifies under the old key.
    h.state.flush_failures().await.unwrap();
    let bundle = twinseal_audit::Bundle::from_json(&h.state.audit_export().unwrap()).unwrap();
    let key: twinseal_audit::VerifierKey = fixture["audit_verifier_key"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let report = twinseal_audit::verify_bundle(&bundle, &key);
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let config = twinseal_coordinator::Config::for_data_dir(&dir);
    twinseal_coordinator::init(&config).unwrap();
    let state = twinseal_coordinator::Coordinator::open(config).unwrap();
    state.audit_start().await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the data directory");
    for f in ["coordinator.db", "coordinator.db-wal", "master.key"] {
        let p = dir.join(f);
        assert!(p.exists(), "{f}");
        assert_eq!(mode(&p), 0o600, "{f}");
    }
    state.shutdown();
}

/// A `Write` into a shared buffer, for capturing log lines.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn refusals_are_logged_without_the_values_of_the_request() {
    // The process-wide subscriber: a scoped one can miss events whose
    // callsites other tests of this binary registered first.
    let logs = Captured::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("no other test of this binary sets a global subscriber");
    tracing::callsite::rebuild_interest_cache();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let h = Harness::new();
        let (alice, _, _) = h.setup_users().await;
        // A value of the wrong type: serde's error quotes it.
        for body in [
            json!({"key": "model-key", "alphabet": "digits", "values": [987654321012u64]}),
            json!({"key": "model-key", "alphabet": "digits", "values": ["987654321012"], "tweak": 987654321012u64}),
        ] {
            let (s, v) = h.call(Method::POST, "/v1/tokenize", &alice, Some(body)).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        }
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("request refused"),
        "the refusal is logged: {text}"
    );
    assert!(
        !text.contains("987654321012"),
        "a request value reached the log: {text}"
    );
}
