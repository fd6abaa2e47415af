//! The real TLS surface on loopback: server authentication with the pinned
//! root, mutual TLS for apps, and the client-certificate verifier's
//! rejections (expired, not yet valid, foreign root).

use crate::common;

use std::time::{Duration, SystemTime};

use crate::common::{Harness, MEASUREMENT};
use twinseal_api as api;
use twinseal_coordinator::client::Client;
use twinseal_coordinator::tls::PeerVerifier;

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
        .attest("worker", &["worker.test".into()], |rd| {
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
    let verifier = PeerVerifier::clients(h.state.ca().cert_der()).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    verifier.check_issued(&cert, now).unwrap();
    let lifetime = h.state.config().cert_lifetime_secs as i64;
    assert!(
        verifier.check_issued(&cert, now + lifetime + 120).is_err(),
        "expired"
    );
    assert!(
        verifier.check_issued(&cert, now - 3600).is_err(),
        "not yet valid"
    );
    let other = Harness::new();
    other.setup_users().await;
    let foreign = other.app_cert("worker").await;
    assert!(
        verifier.check_issued(&foreign, now).is_err(),
        "another root"
    );
    let mut tampered = cert.clone();
    let n = tampered.len();
    tampered[n - 5] ^= 1;
    assert!(
        verifier.check_issued(&tampered, now).is_err(),
        "bad signature"
    );
    // The root itself is not an app certificate.
    assert!(verifier.check_issued(h.state.ca().cert_der(), now).is_err());
    let _ = Duration::ZERO;
}

/// Open `n` plain TCP connections to `addr` from the loopback address `from`.
async fn idle_connections(
    from: std::net::Ipv4Addr,
    addr: std::net::SocketAddr,
    n: usize,
) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((from, 0).into()).unwrap();
        out.push(sock.connect(addr).await.unwrap());
    }
    out
}

/// How many of `conns` the server has closed (a read sees end of file or
/// an error) within `wait`.
async fn closed_by_server(conns: &mut [tokio::net::TcpStream], wait: Duration) -> usize {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + wait;
    let mut closed = 0;
    for c in conns.iter_mut() {
        let mut b = [0u8; 16];
        match tokio::time::timeout_at(deadline, c.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_idle_connections_from_one_address_do_not_stop_a_health_check() {
    let h = Harness::new();
    let server = h.serve().await;
    let per_address = h.state.config().max_connections_per_address;
    // The attacker: 500 connections that never send a byte.
    let mut idle = idle_connections([127, 0, 0, 2].into(), server.addr, 500).await;
    let client = Client::new(&server.url, &h.state.ca().cert_pem(), None, None).unwrap();
    let t0 = std::time::Instant::now();
    let health: api::Health = client.get("/v1/health").await.unwrap();
    assert_eq!(health.status, "ok");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "health took {:?} under 500 idle connections",
        t0.elapsed()
    );
    // Every connection over the per-address cap was closed at once.
    let closed = closed_by_server(&mut idle, Duration::from_secs(2)).await;
    assert_eq!(
        closed,
        500 - per_address,
        "the server keeps at most {per_address} connections from one address"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_connections_are_closed_after_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::with_config(|c| c.header_read_timeout_secs = 1);
    let server = h.serve().await;
    // A connection that never starts TLS.
    let mut silent = idle_connections([127, 0, 0, 3].into(), server.addr, 1).await;
    // A TLS connection that sends half a request header and stalls.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            h.state.ca().cert_der().to_vec(),
        ))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(twinseal_coordinator::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut buf),
    )
    .await;
    assert!(
        read.is_ok(),
        "the stalled request was not closed within 5 s"
    );
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(
        closed_by_server(&mut silent, Duration::from_secs(3)).await,
        1,
        "a connection that never starts TLS is closed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_tokenize_request_does_not_delay_health_checks_by_100_ms() {
    let h = Harness::with_config(|c| c.max_body_bytes = 2 << 20);
    let (alice, _, _) = h.setup_users().await;
    h.create_key("model-key").await;
    let common::Auth::Token(alice) = alice else {
        unreachable!()
    };
    let server = h.serve().await;
    let root = h.state.ca().cert_pem();
    let owner = Client::new(&server.url, &root, Some(alice), None).unwrap();
    let anon = Client::new(&server.url, &root, None, None).unwrap();
    let _: api::Health = anon.get("/v1/health").await.unwrap();
    // 10,000 values of 100 digits: about 1 MB of JSON.
    let values: Vec<String> = (0..10_000u64)
        .map(|i| format!("{:0100}", i * 7_919))
        .collect();
    let req = api::TokenizeRequest {
        key: "model-key".into(),
        alphabet: api::Alphabet::Digits,
        values,
        tweak: String::new(),
        version: None,
    };
    assert!(serde_json::to_vec(&req).unwrap().len() > 1_000_000);
    let big = tokio::spawn(async move {
        let t0 = std::time::Instant::now();
        let r: api::TokenizeResponse = owner.post("/v1/tokenize", &req).await.unwrap();
        assert_eq!(r.values.len(), 10_000);
        t0.elapsed()
    });
    let mut worst = Duration::ZERO;
    let mut polls = 0;
    while !big.is_finished() {
        let t0 = std::time::Instant::now();
        let _: api::Health = anon.get("/v1/health").await.unwrap();
        worst = worst.max(t0.elapsed());
        polls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = big.await.unwrap();
    assert!(
        polls >= 5,
        "the tokenization took only {took:?}: too short to measure"
    );
    assert!(
        worst < Duration::from_millis(100),
        "a health check took {worst:?} while a 1 MB tokenization ran ({took:?}, {polls} polls)"
    );
    server.stop().await;
}

/// A certificate and key that always serve.
#[derive(Debug)]
struct Fixed(std::sync::Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Serve the coordinator's router with `cert_der` (chained to `root_der`)
/// and `key_pkcs8` as its TLS identity.
async fn serve_as(
    h: &Harness,
    cert_der: Vec<u8>,
    key_pkcs8: Vec<u8>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let signer = twinseal_coordinator::tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8)))
        .unwrap();
    let chain = vec![
        CertificateDer::from(cert_der),
        CertificateDer::from(h.state.ca().cert_der().to_vec()),
    ];
    let key = std::sync::Arc::new(rustls::sign::CertifiedKey::new(chain, signer));
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(twinseal_coordinator::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(std::sync::Arc::new(Fixed(key)));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = twinseal_coordinator::app(h.state.clone());
    tokio::spawn(async move {
        twinseal_coordinator::tls::serve_router(cfg, router, listener, &Default::default(), async {
            let _ = stopped.await;
        })
        .await
    });
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_accepts_an_app_certificate_as_the_coordinator() {
    // A coordinator whose own name is coordinator.test, so that an app may
    // get a certificate for 127.0.0.1: the attacker then serves the
    // coordinator's API with it, on the address clients reach.
    let h = Harness::with_config(|c| c.server_names = vec!["coordinator.test".into()]);
    h.setup_users().await;
    let (s, v, key) = h
        .attest_names("worker", vec!["127.0.0.1".to_string()])
        .await;
    assert_eq!(s, axum::http::StatusCode::OK, "{v}");
    let app_cert = common::pem_to_der(v["certificate"].as_str().unwrap());
    let (url, stop) = serve_as(&h, app_cert.clone(), key.serialize_der()).await;
    let root = h.state.ca().cert_pem();

    // twinseal's client, pinned to the right root, refuses it.
    let client = Client::new(&url, &root, None, None).unwrap();
    let e = client.get::<api::Health>("/v1/health").await.unwrap_err();
    assert!(e.to_string().contains("http"), "{e}");
    // So does `coordinator verify`'s check, and a generic client that only
    // pins the root (the app certificate's critical extension is unknown to it).
    assert!(
        twinseal_coordinator::client::check_server_cert(&app_cert, h.state.ca().cert_der())
            .is_err()
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            h.state.ca().cert_der().to_vec(),
        ))
        .unwrap();
    let generic =
        rustls::ClientConfig::builder_with_provider(twinseal_coordinator::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
        .await
        .unwrap();
    let generic_result = tokio_rustls::TlsConnector::from(std::sync::Arc::new(generic))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await;
    assert!(
        generic_result.is_err(),
        "a generic client took the app certificate"
    );
    let _ = stop.send(());

    // A client that pins the coordinator's key (the line `coordinator
    // verify` writes above the root) refuses another server certificate of
    // the same root; the pinned one passes.
    let issue = || {
        h.state
            .ca()
            .issue_server(&["127.0.0.1".into()], SystemTime::now())
            .unwrap()
    };
    let (mine, theirs) = (issue(), issue());
    let pin = twinseal_coordinator::client::key_sha256(&mine.cert_der).unwrap();
    let pinned_root = format!(
        "{}{pin}\n{root}",
        twinseal_coordinator::client::KEY_PIN_PREFIX
    );
    let (right, stop1) = serve_as(&h, mine.cert_der.clone(), mine.key_pkcs8.to_vec()).await;
    let (wrong, stop2) = serve_as(&h, theirs.cert_der.clone(), theirs.key_pkcs8.to_vec()).await;
    let health = |url: &str, root: &str| {
        let c = Client::new(url, root, None, None).unwrap();
        async move { c.get::<api::Health>("/v1/health").await }
    };
    health(&right, &pinned_root).await.unwrap();
    assert!(
        health(&wrong, &pinned_root).await.is_err(),
        "another key under the same root"
    );
    health(&wrong, &root).await.unwrap();
    let _ = (stop1.send(()), stop2.send(()));
}
