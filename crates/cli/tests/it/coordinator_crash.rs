//! Crash safety: the coordinator runs as a child process, clients create
//! keys and release a key in a loop, and the process is killed with
//! SIGKILL at random moments. After every restart, each acknowledged key
//! and each acknowledged release must be in the store and in the audit
//! log, and the Merkle log must verify.
//!
//! CI runs 50 cycles; the soak run is
//! `TWINSEAL_CRASH_CYCLES=1000 cargo test --release -p twinseal-cli --test coordinator_crash`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use twinseal_api as api;
use twinseal_attest::SimulatedPlatform;
use twinseal_coordinator::client::Client;

const MEASUREMENT: [u8; 48] = [0x33; 48];

fn twinseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_twinseal"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path) -> Child {
    twinseal()
        .args(["coordinator", "serve", "--config"])
        .arg(dir.join("coordinator.toml"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the coordinator")
}

async fn wait_healthy(c: &Client, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        if c.get::<api::Health>("/v1/health").await.is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the coordinator exited during start: {status}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the coordinator did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let cycles: usize = std::env::var("TWINSEAL_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coord");
    let platform = SimulatedPlatform::generate("crash-1").unwrap();
    let port = free_port();
    let out = twinseal()
        .args(["coordinator", "init", "--data-dir"])
        .arg(&data)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--insecure-allow-simulated-tee",
        ])
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
    let admin_token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let root = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let admin = Client::new(&url, &root, Some(admin_token), None).unwrap();
    let anon = Client::new(&url, &root, None, None).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut child = start(&data);
    let (app, auditor) = rt.block_on(async {
        wait_healthy(&anon, &mut child).await;
        let manifest = format!(
            "[users.admin]\nroles = [\"admin\"]\n[users.audrey]\nroles = [\"auditor\"]\n\
             [apps.worker]\ntee = [\"simulated\"]\nmeasurements = [\"{}\"]\nkeys = [\"hot\"]\n",
            hex::encode(MEASUREMENT)
        );
        let _: api::ManifestInfo = admin
            .put("/v1/manifest", &api::ManifestApplyRequest { manifest })
            .await
            .unwrap();
        let t: api::TokenResponse = admin.post("/v1/users/audrey/token", &()).await.unwrap();
        let auditor = Client::new(&url, &root, Some(t.token.clone()), None).unwrap();
        let req = api::CreateKeyRequest {
            name: "hot".into(),
            tags: Default::default(),
            required_context: Default::default(),
        };
        let _: api::KeyInfo = admin.post("/v1/keys", &req).await.unwrap();
        let id = anon
            .attest("worker", &[], |rd| {
                Ok(platform
                    .attest_with_measurement(&MEASUREMENT, rd, SystemTime::now())
                    .unwrap())
            })
            .await
            .unwrap();
        let app = anon.with_identity(&root, id.identity()).unwrap();
        (app, auditor)
    });

    let acked_keys = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_releases = Arc::new(AtomicU64::new(0));
    let mut rng = rand::rng();
    for cycle in 0..cycles {
        if cycle > 0 {
            child = start(&data);
        }
        let run_for = Duration::from_millis(rng.random_range(30..300));
        rt.block_on(async {
            wait_healthy(&anon, &mut child).await;
            let stop = Instant::now() + run_for;
            let mut tasks = Vec::new();
            for w in 0..2 {
                let (admin, keys) = (admin.clone(), acked_keys.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = 0;
                    while Instant::now() < stop + Duration::from_millis(200) {
                        let name = format!("c{cycle}-w{w}-{n}");
                        n += 1;
                        let req = api::CreateKeyRequest {
                            name: name.clone(),
                            tags: Default::default(),
                            required_context: Default::default(),
                        };
                        match admin.post::<_, api::KeyInfo>("/v1/keys", &req).await {
                            Ok(_) => keys.lock().unwrap().push(name),
                            Err(_) => break,
                        }
                    }
                }));
                let (app, count) = (app.clone(), acked_releases.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < stop + Duration::from_millis(200) {
                        match app
                            .post::<_, api::ReleaseResponse>("/v1/keys/hot/release", &())
                            .await
                        {
                            Ok(_) => {
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => break,
                        }
                    }
                }));
            }
            tokio::time::sleep_until(stop.into()).await;
            // SIGKILL while the clients are still writing.
            child.kill().unwrap();
            child.wait().unwrap();
            for t in tasks {
                t.await.unwrap();
            }
        });
    }

    let mut child = start(&data);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            wait_healthy(&anon, &mut child).await;
            let list: api::KeyList = admin.get("/v1/keys").await.unwrap();
            let present: std::collections::HashSet<_> = list.keys.iter().map(|k| k.name.clone()).collect();
            let acked = acked_keys.lock().unwrap().clone();
            assert!(!acked.is_empty(), "the workload acknowledged nothing");
            for k in &acked {
                assert!(present.contains(k), "acknowledged key {k} was lost");
            }
            let bytes = auditor.get_bytes("/v1/audit/export").await.unwrap();
            let bundle = twinseal_audit::Bundle::from_json(&bytes).unwrap();
            let vkey: twinseal_audit::VerifierKey =
                std::fs::read_to_string(data.join("audit.pub")).unwrap().trim().parse().unwrap();
            let report = twinseal_audit::verify_bundle(&bundle, &vkey);
            assert!(report.is_ok(), "audit log does not verify: {:?}", report.problems);
            let released = bundle
                .entries
                .iter()
                .filter(|e| matches!(e.event, twinseal_audit::Event::KeyReleased { .. }))
                .count() as u64;
            let acked_r = acked_releases.load(Ordering::SeqCst);
            assert!(acked_r > 0, "no release was acknowledged");
            assert!(released >= acked_r, "{released} releases audited, {acked_r} acknowledged");
            let created: std::collections::HashSet<_> = bundle
                .entries
                .iter()
                .filter_map(|e| match &e.event {
                    twinseal_audit::Event::KeyCreated { key, .. } => Some(key.clone()),
                    _ => None,
                })
                .collect();
            for k in &acked {
                assert!(created.contains(k), "the creation of {k} is not audited");
            }
            eprintln!(
                "{cycles} SIGKILL cycles: {} keys and {acked_r} releases acknowledged, all present; {} audit entries verify",
                acked.len(),
                bundle.entries.len()
            );
        })
    }));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
