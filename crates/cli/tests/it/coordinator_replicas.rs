//! Faults with two coordinator replicas (child processes of the real
//! `twinseal` binary) on one PostgreSQL database (a throwaway server this
//! test starts on 127.0.0.1 and stops):
//!
//! - 32 clients release a key and attest, spread over both replicas (a
//!   client whose replica fails moves to the other, as behind a load
//!   balancer), while one replica chosen at random is killed with SIGKILL
//!   at random moments and started again. Every acknowledged release and
//!   attestation must be in the audit log, the log must verify as one log
//!   and export the same from both replicas, the surviving replica must
//!   keep answering, and no challenge is redeemed twice.
//! - PostgreSQL is restarted under load: requests during the outage fail
//!   with 503, none hangs, and the replicas reconnect by themselves.
//!
//! CI runs 20 kill cycles; the soak run is
//! `TWINSEAL_REPLICA_CRASH_CYCLES=500 cargo test --release -p twinseal-cli --test it coordinator_replicas`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use rand::Rng;
use twinseal_api as api;
use twinseal_attest::SimulatedPlatform;
use twinseal_coordinator::client::Client;
use twinseal_testing::{TempPostgres, free_port};

const MEASUREMENT: [u8; 48] = [0x44; 48];

/// One deployment: its state directory, the replicas' ports and clients.
struct Deployment {
    data: PathBuf,
    ports: [u16; 2],
    root: String,
    admin: [Client; 2],
    anon: [Client; 2],
    platform: SimulatedPlatform,
    _dir: tempfile::TempDir,
}

impl Deployment {
    fn init(pg: &TempPostgres) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("coord");
        let platform = SimulatedPlatform::generate("replica-1").unwrap();
        let ports = [free_port(), free_port()];
        let out = Command::new(env!("CARGO_BIN_EXE_twinseal"))
            .args(["coordinator", "init", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
            .args(["--store-url", &pg.database()])
            .arg("--insecure-allow-simulated-tee")
            .args([
                "--simulated-platform-key",
                &hex::encode(platform.public_key()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let root = std::fs::read_to_string(data.join("ca.pem")).unwrap();
        let url = |i: usize| format!("https://127.0.0.1:{}", ports[i]);
        let admin = [0, 1].map(|i| Client::new(&url(i), &root, Some(token.clone()), None).unwrap());
        let anon = [0, 1].map(|i| Client::new(&url(i), &root, None, None).unwrap());
        Deployment {
            data,
            ports,
            root,
            admin,
            anon,
            platform,
            _dir: dir,
        }
    }

    fn start(&self, i: usize) -> Child {
        Command::new(env!("CARGO_BIN_EXE_twinseal"))
            .args(["coordinator", "serve", "--config"])
            .arg(self.data.join("coordinator.toml"))
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[i])])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a replica")
    }

    async fn wait_healthy(&self, i: usize, child: &mut Child) {
        let t0 = Instant::now();
        while self.anon[i].get::<api::Health>("/v1/health").await.is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("replica {i} exited during start: {status}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "replica {i} did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Manifest, key `hot`, an auditor client and an attested app's
    /// clients for both replicas (the certificate works at both).
    async fn provision(&self) -> (String, [Client; 2]) {
        let manifest = format!(
            "[users.admin]\nroles = [\"admin\"]\n[users.audrey]\nroles = [\"auditor\"]\n\
             [apps.worker]\ntee = [\"simulated\"]\nmeasurements = [\"{}\"]\nkeys = [\"hot\"]\n",
            hex::encode(MEASUREMENT)
        );
        let _: api::ManifestInfo = self.admin[0]
            .put("/v1/manifest", &api::ManifestApplyRequest { manifest })
            .await
            .unwrap();
        let t: api::TokenResponse = self.admin[0]
            .post("/v1/users/audrey/token", &())
            .await
            .unwrap();
        let auditor = t.token.to_string();
        let req = api::CreateKeyRequest {
            name: "hot".into(),
            tags: Default::default(),
            required_context: Default::default(),
        };
        let _: api::KeyInfo = self.admin[0].post("/v1/keys", &req).await.unwrap();
        let id = self.anon[0]
            .attest("worker", &[], |rd| {
                Ok(self
                    .platform
                    .attest_with_measurement(&MEASUREMENT, rd, SystemTime::now())
                    .unwrap())
            })
            .await
            .unwrap();
        let apps = [0, 1].map(|i| {
            self.anon[i]
                .with_identity(&self.root, id.identity())
                .unwrap()
        });
        (auditor, apps)
    }

    /// The audit log as exported by replica `i`, verified.
    async fn verified_log(&self, auditor: &str, i: usize) -> twinseal_audit::Bundle {
        let c = Client::new(
            &format!("https://127.0.0.1:{}", self.ports[i]),
            &self.root,
            Some(auditor.to_string()),
            None,
        )
        .unwrap();
        let bytes = c.get_bytes("/v1/audit/export").await.unwrap();
        let bundle = twinseal_audit::Bundle::from_json(&bytes).unwrap();
        let vkey: twinseal_audit::VerifierKey =
            std::fs::read_to_string(self.data.join("audit.pub"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
        let report = twinseal_audit::verify_bundle(&bundle, &vkey);
        assert!(report.is_ok(), "the audit log does not verify: {report}");
        bundle
    }
}

/// An attestation request made by hand, to replay it.
fn attest_request(anon_challenge: &str, platform: &SimulatedPlatform) -> api::AttestRequest {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let spki = twinseal_coordinator::ca::parse_csr(&csr).unwrap().spki_der;
    let rd = twinseal_attest::report_data(&hex::decode(anon_challenge).unwrap(), &spki);
    let ev = platform
        .attest_with_measurement(&MEASUREMENT, &rd, SystemTime::now())
        .unwrap();
    api::AttestRequest {
        app: "worker".into(),
        challenge: anon_challenge.to_string(),
        evidence: api::EvidenceWire {
            evidence: base64::engine::general_purpose::STANDARD.encode(ev.bytes()),
            vcek: None,
        },
        csr,
    }
}

fn count(bundle: &twinseal_audit::Bundle, f: impl Fn(&twinseal_audit::Event) -> bool) -> u64 {
    bundle.entries.iter().filter(|e| f(&e.event)).count() as u64
}

#[test]
fn replicas_killed_at_random_lose_nothing_acknowledged_and_keep_one_log() {
    let cycles: usize = std::env::var("TWINSEAL_REPLICA_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let pg = TempPostgres::shared();
    let d = Arc::new(Deployment::init(pg));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut children = [d.start(0), d.start(1)];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (auditor, apps) = rt.block_on(async {
            for (i, c) in children.iter_mut().enumerate() {
                d.wait_healthy(i, c).await;
            }
            d.provision().await
        });
        let apps = Arc::new(apps);
        let releases = Arc::new(AtomicU64::new(0));
        let attests = Arc::new(AtomicU64::new(0));
        let redeemed = Arc::new(Mutex::new(Vec::<api::AttestRequest>::new()));
        let mut rng = rand::rng();
        for cycle in 0..cycles {
            let victim = rng.random_range(0..2usize);
            let survivor = 1 - victim;
            let run_for = Duration::from_millis(rng.random_range(30..300));
            rt.block_on(async {
                let stop = Instant::now() + run_for + Duration::from_millis(300);
                let mut tasks = Vec::new();
                for client in 0..32usize {
                    let (d, apps) = (d.clone(), apps.clone());
                    let (releases, attests, redeemed) =
                        (releases.clone(), attests.clone(), redeemed.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut at = client % 2;
                        let mut n = 0u64;
                        while Instant::now() < stop {
                            n += 1;
                            let t0 = Instant::now();
                            let ok = if (n + client as u64).is_multiple_of(8) {
                                let ch: Result<api::ChallengeResponse, _> =
                                    d.anon[at].post("/v1/attest/challenge", &()).await;
                                match ch {
                                    Ok(ch) => {
                                        let req = attest_request(&ch.challenge, &d.platform);
                                        // Redeemed at the other replica.
                                        let other = 1 - at;
                                        let r: Result<api::AttestResponse, _> =
                                            d.anon[other].post("/v1/attest", &req).await;
                                        if r.is_ok() {
                                            attests.fetch_add(1, Ordering::SeqCst);
                                            redeemed.lock().unwrap().push(req);
                                        }
                                        r.is_ok()
                                    }
                                    Err(_) => false,
                                }
                            } else {
                                let r: Result<api::ReleaseResponse, _> =
                                    apps[at].post("/v1/keys/hot/release", &()).await;
                                if r.is_ok() {
                                    releases.fetch_add(1, Ordering::SeqCst);
                                }
                                r.is_ok()
                            };
                            assert!(
                                t0.elapsed() < Duration::from_secs(15),
                                "a request hung for {:?}",
                                t0.elapsed()
                            );
                            if !ok {
                                // As a load balancer would: the other one.
                                at = 1 - at;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }));
                }
                tokio::time::sleep(run_for).await;
                // SIGKILL while the clients are still writing.
                children[victim].kill().unwrap();
                children[victim].wait().unwrap();
                // The survivor keeps answering.
                let t0 = Instant::now();
                loop {
                    let r: Result<api::ReleaseResponse, _> =
                        apps[survivor].post("/v1/keys/hot/release", &()).await;
                    if r.is_ok() {
                        releases.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    assert!(
                        t0.elapsed() < Duration::from_secs(10),
                        "cycle {cycle}: replica {survivor} stopped answering after {victim} was killed: {r:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                for t in tasks {
                    t.await.unwrap();
                }
                children[victim] = d.start(victim);
                d.wait_healthy(victim, &mut children[victim]).await;
                // No acknowledged challenge can be redeemed again, at either replica.
                let last = redeemed.lock().unwrap().last().cloned();
                if let Some(req) = last {
                    for i in 0..2 {
                        let r: Result<api::AttestResponse, _> =
                            d.anon[i].post("/v1/attest", &req).await;
                        let e = r.expect_err("a challenge was redeemed twice");
                        assert_eq!(e.status(), Some(403), "{e}");
                    }
                }
            });
        }
        rt.block_on(async {
            let a = d.verified_log(&auditor, 0).await;
            let b = d.verified_log(&auditor, 1).await;
            assert_eq!(a.to_json(), b.to_json(), "both replicas export one log");
            let acked_r = releases.load(Ordering::SeqCst);
            let acked_a = attests.load(Ordering::SeqCst);
            assert!(
                acked_r > 0 && acked_a > 0,
                "{acked_r} releases, {acked_a} attestations"
            );
            let released = count(&a, |e| {
                matches!(e, twinseal_audit::Event::KeyReleased { .. })
            });
            let issued = count(&a, |e| {
                matches!(e, twinseal_audit::Event::CertificateIssued { .. })
            });
            assert!(
                released >= acked_r,
                "{released} releases audited, {acked_r} acknowledged"
            );
            // The first attestation (provisioning) is not counted.
            assert!(
                issued > acked_a,
                "{issued} certificates audited, {acked_a} acknowledged"
            );
            eprintln!(
                "{cycles} SIGKILL cycles over 2 replicas: {acked_r} releases and {acked_a} \
                 attestations acknowledged, all audited; {} audit entries verify as one log",
                a.entries.len()
            );
        });
    }));
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_postgres_restart_under_load_fails_requests_clearly_and_the_replicas_reconnect() {
    // A server of its own: this test stops it.
    let pg = TempPostgres::start().unwrap();
    let d = Arc::new(Deployment::init(&pg));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut children = [d.start(0), d.start(1)];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            for (i, c) in children.iter_mut().enumerate() {
                d.wait_healthy(i, c).await;
            }
            let (auditor, apps) = d.provision().await;
            let apps = Arc::new(apps);
            let acked = Arc::new(AtomicU64::new(0));
            let unavailable = Arc::new(AtomicU64::new(0));
            let other = Arc::new(Mutex::new(Vec::<String>::new()));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut tasks = Vec::new();
            for client in 0..8usize {
                let (apps, acked, unavailable, other, stop) = (
                    apps.clone(),
                    acked.clone(),
                    unavailable.clone(),
                    other.clone(),
                    stop.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let t0 = Instant::now();
                        let r: Result<api::ReleaseResponse, _> =
                            apps[client % 2].post("/v1/keys/hot/release", &()).await;
                        assert!(
                            t0.elapsed() < Duration::from_secs(15),
                            "a request during the outage hung for {:?}",
                            t0.elapsed()
                        );
                        match r {
                            Ok(_) => {
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) if e.status() == Some(503) => {
                                unavailable.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(e) => {
                                other.lock().unwrap().push(e.to_string());
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = acked.load(Ordering::SeqCst);
            assert!(before > 0, "no release before the outage");
            pg.stop();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let during = unavailable.load(Ordering::SeqCst);
            assert!(during > 0, "no request failed with 503 during the outage");
            pg.restart().unwrap();
            // Both replicas answer again, without being restarted.
            for (i, app) in apps.iter().enumerate() {
                let t0 = Instant::now();
                loop {
                    let r: Result<api::ReleaseResponse, _> =
                        app.post("/v1/keys/hot/release", &()).await;
                    if r.is_ok() {
                        acked.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    assert!(
                        t0.elapsed() < Duration::from_secs(20),
                        "replica {i} did not recover after PostgreSQL came back: {r:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, Ordering::SeqCst);
            for t in tasks {
                t.await.unwrap();
            }
            let acked = acked.load(Ordering::SeqCst);
            let bundle = d.verified_log(&auditor, 1).await;
            let released = count(&bundle, |e| {
                matches!(e, twinseal_audit::Event::KeyReleased { .. })
            });
            assert!(
                released >= acked,
                "{released} releases audited, {acked} acknowledged"
            );
            let other = other.lock().unwrap().clone();
            assert!(
                other.iter().all(|e| !e.contains("internal")),
                "errors other than 503 during the outage: {other:?}"
            );
            eprintln!(
                "PostgreSQL restarted under load: {acked} releases acknowledged and audited, \
                 {} refused with 503 during the outage, {} other errors",
                unavailable.load(Ordering::SeqCst),
                other.len()
            );
        });
    }));
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
