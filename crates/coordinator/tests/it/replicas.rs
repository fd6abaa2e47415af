//! Two coordinator replicas on one PostgreSQL database (a throwaway server
//! this test process starts): a challenge issued by one is redeemed at the
//! other exactly once, certificates and revocations are honoured by both,
//! a disable or destroy committed on one stops releases on the other at
//! once, changes reach the other's caches, and the audit log written by
//! both verifies as one log.

use std::time::{Duration, SystemTime};

use axum::http::{Method, StatusCode};
use serde_json::Value;
use twinseal_attest::SimulatedPlatform;
use twinseal_coordinator::config::StoreConfig;
use twinseal_coordinator::{Config, Coordinator, app, init};
use twinseal_testing::TempPostgres;

use crate::common::{self, Auth, Harness, MEASUREMENT};

/// Replicas A and B of one deployment (same data directory for the master
/// key, same database).
fn two_replicas() -> (Harness, Harness, Config) {
    let dir = tempfile::tempdir().unwrap();
    let platform = SimulatedPlatform::generate("paris-1").unwrap();
    let config = Config {
        store: StoreConfig {
            url: Some(TempPostgres::shared().database()),
            ..StoreConfig::default()
        },
        ..common::config_for(dir.path(), &platform)
    };
    let report = init(&config).unwrap();
    let a = Coordinator::open(config.clone()).unwrap();
    let b = Coordinator::open(config.clone()).unwrap();
    let admin = report.admin_token.to_string();
    let ha = Harness {
        router: app(a.clone()),
        state: a,
        dir,
        admin: admin.clone(),
        platform,
    };
    let hb = Harness {
        router: app(b.clone()),
        state: b,
        dir: tempfile::tempdir().unwrap(),
        admin,
        platform: SimulatedPlatform::generate("unused").unwrap(),
    };
    (ha, hb, config)
}

/// Wait (at most 10 s) until `f` holds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Evidence for `challenge` (from any replica) and a fresh CSR.
fn evidence_for(h: &Harness, challenge: &str) -> (Vec<u8>, String) {
    let (_, csr, spki) = Harness::csr();
    let rd = twinseal_attest::report_data(&hex::decode(challenge).unwrap(), &spki);
    let ev = h
        .platform
        .attest_with_measurement(&MEASUREMENT, &rd, SystemTime::now())
        .unwrap();
    (ev.bytes().to_vec(), csr)
}

async fn release(h: &Harness, der: &[u8]) -> (StatusCode, Value) {
    h.call(
        Method::POST,
        "/v1/keys/model-key/release",
        &Auth::Cert(der.to_vec()),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_challenges_certificates_revocations_and_one_log() {
    let (a, b, config) = two_replicas();
    // Users, tokens and a key made on A.
    let (_alice, audrey, _) = a.setup_users().await;
    a.create_key("model-key").await;
    // B follows: the manifest and tokens made on A work there.
    eventually("B knows the manifest and tokens made on A", || async {
        b.call(Method::GET, "/v1/manifest", &audrey, None).await.0 == StatusCode::OK
    })
    .await;

    // A challenge issued by A is redeemed at B, once across both.
    let challenge = a.challenge().await;
    let (ev, csr) = evidence_for(&a, &challenge);
    let (s, v) = b.attest_raw("worker", &challenge, &ev, &csr).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let der = common::pem_to_der(v["certificate"].as_str().unwrap());
    for h in [&a, &b] {
        let (_, csr2) = evidence_for(&a, &challenge);
        let (s, v) = h.attest_raw("worker", &challenge, &ev, &csr2).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "a replayed challenge: {v}");
        let (s, v) = h.attest_raw("worker", &challenge, &ev, &csr).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "a replayed attestation: {v}");
    }

    // A certificate issued by B is honoured by A.
    let (s, r) = release(&a, &der).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, r) = release(&b, &der).await;
    assert_eq!(s, StatusCode::OK, "{r}");

    // Revoked on A: the next release on B is refused.
    let serial = twinseal_coordinator::ca::cert_facts(&der).unwrap().serial;
    let (s, v) = a
        .call(
            Method::POST,
            &format!("/v1/certificates/{serial}/revoke"),
            &a.admin(),
            None,
        )
        .await;
    assert!(s.is_success(), "{v}");
    let (s, r) = release(&b, &der).await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED,
        "release on B after a revoke on A: {s} {r}"
    );
    assert!(r.get("versions").is_none(), "{r}");

    // A fresh certificate from A; disabled on B: refused on A at once.
    let fresh = {
        let (s, v) = a.attest_with("worker", &a.platform, &MEASUREMENT).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        common::pem_to_der(v["certificate"].as_str().unwrap())
    };
    assert_eq!(release(&b, &fresh).await.0, StatusCode::OK);
    let (s, v) = b
        .call(Method::POST, "/v1/keys/model-key/disable", &b.admin(), None)
        .await;
    assert!(s.is_success(), "{v}");
    let (s, r) = release(&a, &fresh).await;
    assert_ne!(s, StatusCode::OK, "release on A after a disable on B: {r}");
    assert!(r.get("versions").is_none(), "{r}");
    // Enabled again on A, destroyed on A: refused on B at once.
    let (s, _) = a
        .call(Method::POST, "/v1/keys/model-key/enable", &a.admin(), None)
        .await;
    assert!(s.is_success());
    eventually("B sees the key enabled again", || async {
        release(&b, &fresh).await.0 == StatusCode::OK
    })
    .await;
    let (s, v) = a
        .call(Method::DELETE, "/v1/keys/model-key", &a.admin(), None)
        .await;
    assert!(s.is_success(), "{v}");
    let (s, r) = release(&b, &fresh).await;
    assert_ne!(s, StatusCode::OK, "release on B after a destroy on A: {r}");
    assert!(r.get("versions").is_none(), "{r}");
    // And B's cache follows.
    eventually("B knows the key is destroyed", || async {
        b.call(Method::GET, "/v1/keys/model-key", &b.admin(), None)
            .await
            .1["state"]
            == "destroyed"
    })
    .await;

    // One log: both replicas' entries, one head, verified offline.
    a.state.flush_failures().await.unwrap();
    b.state.flush_failures().await.unwrap();
    let export_a = a.state.audit_export().unwrap();
    let export_b = b.state.audit_export().unwrap();
    assert_eq!(export_a, export_b, "both replicas export the same log");
    let bundle = twinseal_audit::Bundle::from_json(&export_b).unwrap();
    let report = twinseal_audit::verify_bundle(&bundle, a.state.verifier_key());
    assert!(report.is_ok(), "{report}");
    let kinds: Vec<String> = bundle
        .entries
        .iter()
        .map(|e| {
            serde_json::to_value(&e.event).unwrap()["type"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for k in [
        "certificate_issued",
        "certificate_revoked",
        "key_released",
        "key_disabled",
        "key_destroyed",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    drop(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_from_32_clients_over_two_replicas_form_one_log() {
    let (a, b, _) = two_replicas();
    a.setup_users().await;
    a.create_key("model-key").await;
    let der = a.app_cert("worker").await;
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        let der = der.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..10 {
                let (s, r) = release(&h, &der).await;
                assert_eq!(s, StatusCode::OK, "{r}");
                ok += 1;
            }
            ok
        }));
    }
    let mut acknowledged = 0;
    for t in tasks {
        acknowledged += t.await.unwrap();
    }
    assert_eq!(acknowledged, 320);
    let bundle = twinseal_audit::Bundle::from_json(&b.state.audit_export().unwrap()).unwrap();
    let report = twinseal_audit::verify_bundle(&bundle, a.state.verifier_key());
    assert!(report.is_ok(), "{report}");
    let released = bundle
        .entries
        .iter()
        .filter(|e| serde_json::to_value(&e.event).unwrap()["type"] == "key_released")
        .count();
    assert_eq!(released, 320, "every acknowledged release is audited once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_database_password_or_schema_version_is_one_clear_error_and_touches_nothing() {
    let pg = TempPostgres::shared();
    let url = pg.database_with_password("the-right-password");
    let dir = tempfile::tempdir().unwrap();
    let platform = SimulatedPlatform::generate("paris-1").unwrap();
    let secret = dir.path().join("db-password");
    let config = |password_file: &std::path::Path| Config {
        store: StoreConfig {
            url: Some(url.clone()),
            password_file: Some(password_file.to_path_buf()),
            ..StoreConfig::default()
        },
        ..common::config_for(&dir.path().join("state"), &platform)
    };

    // A wrong password: one clear error at init, nothing written anywhere.
    std::fs::write(&secret, "a-wrong-password\n").unwrap();
    let e = init_err(&config(&secret));
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("a-wrong-password"), "{e}");
    assert!(!dir.path().join("state/master.key").exists());
    // No password at all.
    let e = init_err(&Config {
        store: StoreConfig {
            url: Some(url.clone()),
            ..StoreConfig::default()
        },
        ..common::config_for(&dir.path().join("state"), &platform)
    });
    assert!(e.contains("password"), "{e}");

    // The right one (from the file, its newline dropped) works.
    std::fs::write(&secret, "the-right-password\n").unwrap();
    init(&config(&secret)).unwrap();
    let c = Coordinator::open(config(&secret)).unwrap();
    let size = c
        .store()
        .read(|db| Ok(twinseal_audit::AuditLog::size(db)?))
        .unwrap();
    c.shutdown();
    drop(c);
    // A second init refuses the initialized database.
    let e = init_err(&config(&secret));
    assert!(e.contains("already holds a coordinator's state"), "{e}");

    // A schema version this build does not know: refused at start, and the
    // database is left exactly as it was.
    let mut o = twinseal_sql::pg::PgOptions::new(&url);
    o.password = Some("the-right-password".into());
    let db = twinseal_sql::pg::PgConn::connect(&o).unwrap();
    use twinseal_sql::Db;
    db.execute(
        "UPDATE meta SET v = $1 WHERE k = 'schema_version'",
        twinseal_sql::params![&b"99"[..]],
    )
    .unwrap();
    let e = Coordinator::open(config(&secret)).unwrap_err().to_string();
    assert!(e.contains("unsupported schema version 99"), "{e}");
    let still = db
        .query_one(
            "SELECT v FROM meta WHERE k = 'schema_version'",
            twinseal_sql::params![],
        )
        .unwrap()
        .blob(0)
        .unwrap();
    assert_eq!(still, b"99");
    assert_eq!(
        twinseal_audit::AuditLog::size(&db).unwrap(),
        size,
        "nothing was appended"
    );

    // An unreachable database: one clear error (503 class), nothing written.
    let gone = Config {
        store: StoreConfig {
            url: Some("postgres://twinseal@127.0.0.1:1/nothing".into()),
            ..StoreConfig::default()
        },
        ..common::config_for(&dir.path().join("elsewhere"), &platform)
    };
    match init(&gone) {
        Err(twinseal_coordinator::Error::StoreUnavailable(_)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("init on an unreachable database succeeded"),
    }
    assert!(!dir.path().join("elsewhere/master.key").exists());
}

fn init_err(config: &Config) -> String {
    match init(config) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("init succeeded"),
    }
}

/// (Both engines, with the rest of this binary.) Jobs that append to the
/// audit log and then fail, batched with jobs that succeed: the failed
/// ones leave nothing, the log stays whole and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_fail_after_appending_leave_the_log_whole() {
    let h = Harness::new();
    let store = h.state.store();
    let event = |i: u64| twinseal_audit::Event::Tokenized {
        actor: "test".into(),
        key: format!("k{i}"),
        count: i,
    };
    let before = store
        .read(|db| Ok(twinseal_audit::AuditLog::size(db)?))
        .unwrap();
    let mut jobs = Vec::new();
    for i in 0..64u64 {
        let e = event(i);
        jobs.push(store.write(move |c| {
            twinseal_audit::AuditLog::append(c, SystemTime::now(), &e)?;
            if i % 3 == 0 {
                return Err(twinseal_coordinator::Error::Conflict("refused".into()));
            }
            Ok(i)
        }));
    }
    let results = futures_join_all(jobs).await;
    let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(ok, 64 - 22);
    let bundle = twinseal_audit::Bundle::from_json(&h.state.audit_export().unwrap()).unwrap();
    let report = twinseal_audit::verify_bundle(&bundle, h.state.verifier_key());
    assert!(report.is_ok(), "{report}");
    assert_eq!(bundle.entries.len() as u64, before + ok);
}

async fn futures_join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    // Polled together, so that the writes land in shared batches.
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, d) in pinned.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *d = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter()
        .map(|d| d.expect("polled to completion"))
        .collect()
}

/// (Both engines.) A write that swallows a failed statement: on
/// PostgreSQL, which then aborts the transaction, it is refused and rolled
/// back while the other writes of its batch commit; SQLite keeps the
/// transaction usable, so there it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_swallows_a_failed_statement_never_takes_its_batch_down() {
    let h = Harness::new();
    let store = h.state.store();
    let pg = store.dialect() == twinseal_sql::Dialect::Postgres;
    let event = |i: u64| twinseal_audit::Event::Tokenized {
        actor: "test".into(),
        key: format!("k{i}"),
        count: i,
    };
    let before = store
        .read(|db| Ok(twinseal_audit::AuditLog::size(db)?))
        .unwrap();
    let mut jobs = Vec::new();
    for i in 0..16u64 {
        let e = event(i);
        jobs.push(store.write(move |c| {
            twinseal_audit::AuditLog::append(c, SystemTime::now(), &e)?;
            if i % 4 == 0 {
                // A failing statement whose error the job ignores.
                let _ = c.execute("SELECT 1 / 0", twinseal_sql::params![]);
            }
            Ok(i)
        }));
    }
    let results = futures_join_all(jobs).await;
    let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(ok, if pg { 12 } else { 16 });
    let bundle = twinseal_audit::Bundle::from_json(&h.state.audit_export().unwrap()).unwrap();
    let report = twinseal_audit::verify_bundle(&bundle, h.state.verifier_key());
    assert!(report.is_ok(), "{report}");
    assert_eq!(bundle.entries.len() as u64, before + ok);
}
