//! `twinseal bench coordinator`: attestation + certificate issuance and
//! key release over mutual TLS, from concurrent clients on loopback with
//! simulated evidence. Server and clients share this machine (and its
//! cores); every release is durably audited before it is answered, and the
//! benchmark checks the audit log afterwards.
//!
//! `--store postgres --replicas N` runs N coordinator replicas (in this
//! process, each on its own port) on one PostgreSQL database, client i
//! talking to replica i mod N; without `--postgres-url` it starts a
//! throwaway PostgreSQL server on 127.0.0.1 (Debian's `postgresql`
//! binaries) and stops it afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, ensure};
use serde::Serialize;
use twinseal_api as api;
use twinseal_attest::SimulatedPlatform;
use twinseal_coordinator::client::Client;
use twinseal_coordinator::{Config, Coordinator};

/// Arguments of `twinseal bench coordinator`.
#[derive(Debug, clap::Args)]
pub struct CoordinatorBench {
    /// Concurrent clients (each with its own TLS connection).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where the state lives.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// Coordinator replicas on the one database (PostgreSQL only).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// An empty PostgreSQL database to use (no password in the URL),
    /// instead of a throwaway server.
    #[arg(long, value_name = "URL")]
    pub postgres_url: Option<String>,
    /// Witnesses to configure (`twinseal witness serve` processes started
    /// on 127.0.0.1 by the benchmark, quorum all of them): the coordinator
    /// asks them to cosign each new checkpoint while the phases run.
    #[arg(long, default_value_t = 0)]
    pub witnesses: usize,
}

/// A witness process started for the benchmark, killed when dropped.
struct WitnessProc(std::process::Child);

impl Drop for WitnessProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `n` witnesses of the log whose key is in `log_key` (files under
/// `dir`): their processes and their `[transparency]` entries.
fn start_witnesses(
    n: usize,
    dir: &std::path::Path,
    log_key: &std::path::Path,
) -> Result<(
    Vec<WitnessProc>,
    Vec<twinseal_coordinator::config::WitnessConfig>,
)> {
    let exe = std::env::current_exe()?;
    let (mut procs, mut configs) = (Vec::new(), Vec::new());
    for i in 0..n {
        let wdir = dir.join(format!("witness-{i}"));
        let out = std::process::Command::new(&exe)
            .args(["witness", "init", "--dir"])
            .arg(&wdir)
            .args(["--name", &format!("witness.bench/w{i}")])
            .output()?;
        ensure!(
            out.status.success(),
            "witness init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout)?.trim().to_string();
        let port = twinseal_testing::free_port();
        let mut child = std::process::Command::new(&exe)
            .args(["witness", "serve", "--dir"])
            .arg(&wdir)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log"])
            .arg(log_key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(child.try_wait()?.is_none(), "a witness exited");
            ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "a witness did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        procs.push(WitnessProc(child));
        configs.push(twinseal_coordinator::config::WitnessConfig {
            url: format!("http://127.0.0.1:{port}"),
            key,
        });
    }
    Ok((procs, configs))
}

/// The store of a benchmark run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// SQLite in a temporary directory (one coordinator).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

#[derive(Debug, Serialize)]
struct Phase {
    name: &'static str,
    ok: usize,
    failed: usize,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn phase(name: &'static str, mut lat: Vec<Duration>, failed: usize, took: Duration) -> Phase {
    lat.sort();
    let q = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3
        }
    };
    Phase {
        name,
        ok: lat.len(),
        failed,
        per_s: lat.len() as f64 / took.as_secs_f64(),
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        max_ms: lat.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
    }
}

const MEASUREMENT: [u8; 48] = [0x42; 48];

/// Runs the benchmark.
pub fn run(a: CoordinatorBench) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(a))
}

async fn bench(a: CoordinatorBench) -> Result<()> {
    ensure!(a.replicas >= 1, "--replicas must be at least 1");
    ensure!(
        a.replicas == 1 || a.store == StoreKind::Postgres,
        "several replicas need --store postgres"
    );
    let mut throwaway = None;
    let store = match (a.store, &a.postgres_url) {
        (StoreKind::Sqlite, _) => twinseal_coordinator::config::StoreConfig::default(),
        (StoreKind::Postgres, Some(url)) => twinseal_coordinator::config::StoreConfig {
            url: Some(url.clone()),
            ..Default::default()
        },
        (StoreKind::Postgres, None) => {
            let pg = tokio::task::spawn_blocking(twinseal_testing::TempPostgres::start)
                .await?
                .map_err(anyhow::Error::msg)?;
            let url = pg.database();
            eprintln!("started a throwaway PostgreSQL on 127.0.0.1:{}", pg.port());
            throwaway = Some(pg);
            twinseal_coordinator::config::StoreConfig {
                url: Some(url),
                ..Default::default()
            }
        }
    };
    let dir = tempfile::tempdir()?;
    let platform = Arc::new(SimulatedPlatform::generate("bench-1")?);
    let config = Config {
        insecure_allow_simulated_tee: true,
        simulated_platform_keys: vec![hex::encode(platform.public_key())],
        max_concurrent_requests: 4096,
        // Every client attests from 127.0.0.1 without credentials: the
        // benchmark measures capacity, not the per-address limit on
        // anonymous callers (which would hold this phase to 20/s).
        anonymous_requests_per_second: 1e9,
        anonymous_burst: u32::MAX,
        store,
        ..Config::for_data_dir(dir.path())
    };
    let report = twinseal_coordinator::init(&config)?;
    let mut config = config;
    let (_witnesses, witness_configs) =
        start_witnesses(a.witnesses, dir.path(), &dir.path().join("audit.pub"))?;
    config.transparency.witnesses = witness_configs;
    let mut replicas = Vec::new();
    for _ in 0..a.replicas {
        let state = Coordinator::open(config.clone())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(twinseal_coordinator::tls::serve(
            state.clone(),
            listener,
            async {
                let _ = stop_rx.await;
            },
        ));
        replicas.push((state, url, stop_tx, server));
    }
    let urls: Vec<String> = replicas.iter().map(|r| r.1.clone()).collect();
    let url = urls[0].clone();
    let state = replicas[0].0.clone();
    let root = report.ca_pem.clone();
    let admin = Client::new(&url, &root, Some(report.admin_token.to_string()), None)?;
    let manifest = format!(
        "[users.admin]\nroles = [\"admin\"]\n[users.audrey]\nroles = [\"auditor\"]\n\
         [apps.worker]\ntee = [\"simulated\"]\nmeasurements = [\"{}\"]\nkeys = [\"bench\"]\n",
        hex::encode(MEASUREMENT)
    );
    let _: api::ManifestInfo = admin
        .put("/v1/manifest", &api::ManifestApplyRequest { manifest })
        .await?;
    let req = api::CreateKeyRequest {
        name: "bench".into(),
        tags: Default::default(),
        required_context: Default::default(),
    };
    let _: api::KeyInfo = admin.post("/v1/keys", &req).await?;
    let d = Duration::from_secs(a.seconds);
    eprintln!(
        "{} coordinator replica(s) on {} ({urls:?}), {} witnesses; {} clients, {} s per phase",
        a.replicas,
        match a.store {
            StoreKind::Sqlite => "SQLite",
            StoreKind::Postgres => "PostgreSQL",
        },
        a.witnesses,
        a.clients,
        a.seconds
    );

    // Phase 1: attestation + certificate issuance.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let (c, p) = (
            Client::new(&urls[i % urls.len()], &root, None, None)?,
            platform.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed, mut last) = (Vec::new(), 0usize, None);
            while t0.elapsed() < d {
                let s = Instant::now();
                match c
                    .attest("worker", &[], |rd| {
                        Ok(p.attest_with_measurement(&MEASUREMENT, rd, SystemTime::now())?)
                    })
                    .await
                {
                    Ok(id) => {
                        lat.push(s.elapsed());
                        last = Some(id);
                    }
                    Err(_) => failed += 1,
                }
            }
            (lat, failed, last)
        }));
    }
    let (mut lat, mut failed, mut ids) = (Vec::new(), 0, Vec::new());
    for t in tasks {
        let (l, f, id) = t.await?;
        lat.extend(l);
        failed += f;
        ids.extend(id);
    }
    let attest = phase("attest + certificate", lat, failed, t0.elapsed());
    ensure!(!ids.is_empty(), "no attestation succeeded");

    // Phase 2: key release over mutual TLS.
    let mut apps = Vec::new();
    for i in 0..a.clients {
        let anon = Client::new(&urls[i % urls.len()], &root, None, None)?;
        apps.push(anon.with_identity(&root, ids[i % ids.len()].identity())?);
    }
    // Warm every connection (TLS handshakes are not what is measured).
    for c in &apps {
        let _: api::ReleaseResponse = c.post("/v1/keys/bench/release", &()).await?;
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in apps {
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0usize);
            while t0.elapsed() < d {
                let s = Instant::now();
                match c
                    .post::<_, api::ReleaseResponse>("/v1/keys/bench/release", &())
                    .await
                {
                    Ok(_) => lat.push(s.elapsed()),
                    Err(_) => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await?;
        lat.extend(l);
        failed += f;
    }
    let release = phase("key release (mTLS)", lat, failed, t0.elapsed());

    // Every acknowledged release is in the audit log, and the log verifies.
    let bundle = twinseal_audit::Bundle::from_json(&state.audit_export()?)?;
    let audited = bundle
        .entries
        .iter()
        .filter(|e| matches!(e.event, twinseal_audit::Event::KeyReleased { .. }))
        .count();
    let verified = twinseal_audit::verify_bundle(&bundle, state.verifier_key());
    ensure!(
        verified.is_ok(),
        "audit log does not verify: {:?}",
        verified.problems
    );
    let acked = release.ok + a.clients; // plus the warm-up releases
    ensure!(
        audited >= acked,
        "{audited} releases audited but {acked} acknowledged"
    );
    // With witnesses: how far the cosigned checkpoint kept up.
    let cosigned = if a.witnesses > 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let note = String::from_utf8(state.log_resource("checkpoint")?)?;
        let size: u64 = note.lines().nth(1).unwrap_or("0").parse().unwrap_or(0);
        Some((
            size,
            note.lines().filter(|l| l.starts_with('\u{2014}')).count() - 1,
        ))
    } else {
        None
    };
    for (state, _, stop_tx, server) in replicas {
        let _ = stop_tx.send(());
        server.await?.context("server")?;
        state.shutdown();
    }
    drop(state);
    if let Some(pg) = throwaway {
        tokio::task::spawn_blocking(move || drop(pg)).await?;
    }

    println!("| phase | ok | failed | per second | p50 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for p in [&attest, &release] {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            p.name, p.ok, p.failed, p.per_s, p.p50_ms, p.p99_ms, p.max_ms
        );
    }
    println!(
        "audit: {audited} releases audited (>= {acked} acknowledged), {} entries verify",
        bundle.entries.len()
    );
    if let Some((size, n)) = cosigned {
        println!(
            "witnesses: the served checkpoint covers {size} of {} entries, with {n} cosignatures",
            bundle.entries.len()
        );
    }
    if let Some(path) = a.json {
        let out = serde_json::json!({
            "store": format!("{:?}", a.store).to_lowercase(),
            "replicas": a.replicas,
            "witnesses": a.witnesses,
            "clients": a.clients,
            "phases": [&attest, &release],
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
