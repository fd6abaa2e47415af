//! The real TLS surface on loopback: server authentication with the pinned
//! root, mutual TLS for apps, and the client-certificate verifier's
//! rejections (expired, not yet valid, foreign root).

mod common;

use std::time::{Duration, SystemTime};

use common::{Harness, MEASUREMENT};
use twinseal_api as api;
use twinseal_coordinator::client::Client;
use twinseal_coordinator::tls::AppCertVerifier;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_release_keys_over_mutual_tls_and_foreign_certificates_fail_the_handshake() {
    let h = Harness::new();
    h.setup_users().await;
    h.create_key("model-key").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(twinseal_coordinator::tls::serve(
        h.state.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let root = h.state.ca().cert_pem();

    let anon = Client::new(&url, &root, None, None).unwrap();
    let health: api::Health = anon.get("/v1/health").await.unwrap();
    assert!(health.insecure_allow_simulated_tee);
    let platform = &h.platform;
    let id = anon
        .attest("worker", &["localhost".into()], |rd| {
            Ok(platform.attest_with_measurement(&MEASUREMENT, rd, SystemTime::now())?)
        })
        .await
        .unwrap();
    assert!(id.response.simulated);
    let app = anon.with_identity(&root, id.identity()).unwrap();
    let r: api::ReleaseResponse = app.post("/v1/keys/model-key/release", &()).await.unwrap();
    assert_eq!(r.versions.len(), 1);
    // The same request without the certificate is anonymous.
    let e = anon
        .post::<_, api::ReleaseResponse>("/v1/keys/model-key/release", &())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");

    // A client that pins another root refuses the server.
    let other = Harness::new();
    let wrong_root = Client::new(&url, &other.state.ca().cert_pem(), None, None).unwrap();
    assert!(wrong_root.get::<api::Health>("/v1/health").await.is_err());

    // A certificate from another coordinator fails the TLS handshake.
    other.setup_users().await;
    let foreign_anon = Client::new(&url, &root, None, None).unwrap();
    let foreign_id = {
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url2 = format!("https://{}", l2.local_addr().unwrap());
        let (s2, r2) = tokio::sync::oneshot::channel::<()>();
        let srv2 = tokio::spawn(twinseal_coordinator::tls::serve(
            other.state.clone(),
            l2,
            async {
                let _ = r2.await;
            },
        ));
        let c2 = Client::new(&url2, &other.state.ca().cert_pem(), None, None).unwrap();
        let p2 = &other.platform;
        let id = c2
            .attest("worker", &[], |rd| {
                Ok(p2.attest_with_measurement(&MEASUREMENT, rd, SystemTime::now())?)
            })
            .await
            .unwrap();
        let _ = s2.send(());
        srv2.await.unwrap().unwrap();
        id
    };
    let foreign = foreign_anon
        .with_identity(&root, foreign_id.identity())
        .unwrap();
    let e = foreign
        .post::<_, api::ReleaseResponse>("/v1/keys/model-key/release", &())
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("200"), "{e}");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_certificate_verifier_checks_issuer_and_validity() {
    let h = Harness::new();
    h.setup_users().await;
    let cert = h.app_cert("worker").await;
    let verifier = AppCertVerifier::new(h.state.ca().cert_der()).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    verifier.check(&cert, now).unwrap();
    let lifetime = h.state.config().cert_lifetime_secs as i64;
    assert!(
        verifier.check(&cert, now + lifetime + 120).is_err(),
        "expired"
    );
    assert!(verifier.check(&cert, now - 3600).is_err(), "not yet valid");
    let other = Harness::new();
    other.setup_users().await;
    let foreign = other.app_cert("worker").await;
    assert!(verifier.check(&foreign, now).is_err(), "another root");
    let mut tampered = cert.clone();
    let n = tampered.len();
    tampered[n - 5] ^= 1;
    assert!(verifier.check(&tampered, now).is_err(), "bad signature");
    // The root itself is not an app certificate.
    assert!(verifier.check(h.state.ca().cert_der(), now).is_err());
    let _ = Duration::ZERO;
}
