//! `twinseal bench worker` and `twinseal bench load`: the attested worker
//! measured over TLS on loopback against the same model in process, on
//! the same pairs, in the same run.
//!
//! Both start a whole deployment in this process (`twinseal-local`: a
//! coordinator, a worker attested with the INSECURE simulated TEE, the
//! model sealed and opened in memory) on a runtime of its own, and drive
//! it from a second runtime, so that client and server tasks do not share
//! scheduler queues (they do share the machine's cores, as a load
//! generator on the same host does). Request bodies are built before the
//! clock starts; every answer's status is checked, and the first answer
//! of every client has its receipt verified.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use twinseal_api as api;
use twinseal_local::{APP, DATA_OWNER, Local, LocalOptions, MODEL_KEY, Served};
use twinseal_siamese::data::ImageSet;
use twinseal_siamese::data::pairs::Pair;
use twinseal_siamese::{HeadKind, ModelConfig, Siamese};
use twinseal_worker::Worker;

use crate::data::{DataDirArg, DatasetSpec};

/// `twinseal bench worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerBench {
    /// The `data/` directory of the peer's prep_data.py (its 20,000 test
    /// pairs); without it, the MNIST test pairs of `twinseal eval`.
    #[arg(long)]
    pub peer_data: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataDirArg,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Requests in flight over TLS.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Rounds per batch size; each runs in process, then over TLS.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Batch sizes (pairs per call / per request).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub batches: Vec<usize>,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `twinseal bench load`.
#[derive(Debug, clap::Args)]
pub struct LoadBench {
    /// Concurrent clients, each with its own connection, one request at a time.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// How long to run, seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Pairs per request (1: `/v1/compare`; more: `/v1/compare/batch`).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The `data/` directory of the peer's prep_data.py; without it, MNIST.
    #[arg(long)]
    pub peer_data: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataDirArg,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The pairs to score, as images.
struct Pairs {
    set: ImageSet,
    pairs: Vec<Pair>,
}

fn load_pairs(peer_data: &Option<PathBuf>, data: &DataDirArg) -> Result<Pairs> {
    match peer_data {
        Some(dir) => Ok(Pairs {
            set: crate::bench::read_set(dir, "test")?,
            pairs: crate::bench::read_pairs(&dir.join("test_pairs.bin"))?,
        }),
        None => {
            let ds = crate::data::load(&DatasetSpec::Mnist, &data.dir(), 28, 28)?;
            let pairs = twinseal_siamese::train::test_pairs(&ds.test);
            Ok(Pairs {
                set: ds.test,
                pairs,
            })
        }
    }
}

fn raw(px: &[f32]) -> api::ImageWire {
    api::ImageWire::Raw(
        B64.encode(
            px.iter()
                .map(|&x| (x * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect::<Vec<u8>>(),
        ),
    )
}

/// The model served: the seed's network with seeded weights (inference
/// costs the same whatever the weights).
fn bench_model() -> Result<Siamese> {
    Ok(Siamese::new(
        ModelConfig::seed(HeadKind::Sigmoid),
        42,
        &candle_core::Device::Cpu,
    )?)
}

/// Pixels as the worker sees them after decoding the raw wire bytes.
fn quantized(px: &[f32]) -> Vec<f32> {
    px.iter()
        .map(|&x| (x * 255.0).round().clamp(0.0, 255.0) / 255.0)
        .collect()
}

/// A deployment with a served worker, on its own runtime.
struct Deployment {
    rt: tokio::runtime::Runtime,
    local: Option<Local>,
    served: Option<Served>,
    root_pem: String,
    url: String,
    /// The client's bearer token: the benchmark runs with client
    /// authentication on, as a deployment does.
    token: String,
}

impl Deployment {
    fn start(model: &Siamese) -> Result<Deployment> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-server")
            .enable_all()
            .build()?;
        let bytes = model.to_bytes()?;
        let (local, served, token) = rt.block_on(async {
            let local = Local::start(LocalOptions::default()).await?;
            let m = twinseal_attest::simulated::executable_measurement()?;
            local.prepare_model_serving(&m).await?;
            let dora = local.user(DATA_OWNER).await?;
            let sealed =
                twinseal_local::seal(&dora, MODEL_KEY, &[("purpose", "model")], &bytes).await?;
            let mut opts = local.worker_options(APP, m, sealed)?;
            opts.limits.max_concurrent_requests = 256;
            // One client token drives the whole load: the benchmark measures
            // capacity with client authentication on, not the per-client
            // rate limit (200 requests per second by default).
            opts.limits.client_requests_per_second = 1e9;
            opts.limits.client_burst = u32::MAX;
            let worker = Worker::start(opts).await?;
            let served = Served::start(worker).await?;
            let token = local.client_token().await?;
            anyhow::Ok((local, served, token))
        })?;
        Ok(Deployment {
            token,
            url: served.url.clone(),
            root_pem: local.root_pem.clone(),
            rt,
            local: Some(local),
            served: Some(served),
        })
    }

    fn stop(mut self) -> Result<()> {
        let (served, local) = (self.served.take(), self.local.take());
        self.rt.block_on(async {
            if let Some(s) = served {
                s.stop().await?;
            }
            if let Some(l) = local {
                l.stop().await?;
            }
            anyhow::Ok(())
        })
    }
}

/// How a batch travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Wire {
    /// JSON with base64 raw images (`/v1/compare` for one pair).
    Json,
    /// `application/octet-stream` raw pairs (`/v1/compare/batch`).
    Binary,
}

/// Request bodies: `batch` pairs each, cycling through the pairs.
fn bodies(p: &Pairs, batch: usize, count: usize, wire: Wire) -> Result<Vec<bytes_body::Body>> {
    let mut out = Vec::with_capacity(count);
    let mut next = 0usize;
    for _ in 0..count {
        let chosen: Vec<Pair> = (0..batch)
            .map(|_| {
                let pr = p.pairs[next % p.pairs.len()];
                next += 1;
                pr
            })
            .collect();
        if wire == Wire::Binary {
            let mut body = Vec::with_capacity(batch * 2 * 784);
            for pr in &chosen {
                for img in [pr.a, pr.b] {
                    body.extend(
                        p.set
                            .image(img as usize)
                            .iter()
                            .map(|&x| (x * 255.0).round().clamp(0.0, 255.0) as u8),
                    );
                }
            }
            out.push(bytes_body::Body::new(
                "/v1/compare/batch",
                twinseal_worker::http::BINARY_PAIRS,
                body,
            ));
            continue;
        }
        let mut pairs: Vec<api::PairWire> = chosen
            .iter()
            .map(|pr| api::PairWire {
                a: raw(p.set.image(pr.a as usize)),
                b: raw(p.set.image(pr.b as usize)),
            })
            .collect();
        out.push(if batch == 1 {
            let pw = pairs.pop().expect("one pair");
            bytes_body::Body::new(
                "/v1/compare",
                "application/json",
                serde_json::to_vec(&api::CompareRequest { a: pw.a, b: pw.b })?,
            )
        } else {
            bytes_body::Body::new(
                "/v1/compare/batch",
                "application/json",
                serde_json::to_vec(&api::CompareBatchRequest { pairs })?,
            )
        });
    }
    Ok(out)
}

mod bytes_body {
    /// A prepared request: path, content type and body.
    #[derive(Clone)]
    pub struct Body {
        pub path: &'static str,
        pub content_type: &'static str,
        pub bytes: bytes::Bytes,
    }

    impl Body {
        pub fn new(path: &'static str, content_type: &'static str, bytes: Vec<u8>) -> Body {
            Body {
                path,
                content_type,
                bytes: bytes::Bytes::from(bytes),
            }
        }
    }
}

/// CPU seconds used so far by this process's threads whose name starts
/// with `prefix` (Linux: `/proc/self/task/*/stat`; elsewhere `None`).
/// Threads that already ended are not counted, so call it around work
/// whose threads stay alive (the runtimes' workers and blocking pools).
fn thread_cpu_secs(prefix: &str) -> Option<f64> {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command name (which is in parentheses).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 12 {
            total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    Some(total as f64 / tick)
}

/// What a client run saw.
#[derive(Default)]
struct Seen {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

/// What [`drive`] measured.
struct Driven {
    seen: Seen,
    secs: f64,
    /// CPU seconds of the worker's threads and of the load generator's.
    server_cpu: Option<f64>,
    client_cpu: Option<f64>,
}

/// Runs `clients` tasks, each sending the prepared bodies in turn (one
/// request in flight per task), for `duration`; returns requests, errors,
/// per-request latencies and the CPU time each side used.
fn drive(
    d: &Deployment,
    bodies: Arc<Vec<bytes_body::Body>>,
    clients: usize,
    duration: Duration,
    first_error: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<Driven> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let http = twinseal_local::worker_http_client_with_token(&d.root_pem, true, Some(&d.token))?;
    let url = d.url.clone();
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let (s0, c0) = (
            thread_cpu_secs("bench-server"),
            thread_cpu_secs("bench-client"),
        );
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, url, bodies, stop) =
                (http.clone(), url.clone(), bodies.clone(), stop.clone());
            let first_error = first_error.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut i = c;
                let mut checked = false;
                while !stop.load(Ordering::Relaxed) {
                    let body = &bodies[i % bodies.len()];
                    i += clients;
                    let t = Instant::now();
                    let outcome = async {
                        let resp = http
                            .post(format!("{url}{}", body.path))
                            .header("content-type", body.content_type)
                            .body(body.bytes.clone())
                            .send()
                            .await?;
                        let status = resp.status();
                        let cert = resp
                            .extensions()
                            .get::<reqwest::tls::TlsInfo>()
                            .and_then(|i| i.peer_certificate())
                            .map(<[u8]>::to_vec);
                        let bytes = resp.bytes().await?;
                        ensure!(status.is_success(), "status {status}");
                        if !checked {
                            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
                            let receipt: api::Receipt =
                                serde_json::from_value(v["receipt"].clone())?;
                            crate::worker_cmd::check_receipt(
                                &receipt,
                                &cert.context("no certificate")?,
                            )?;
                            checked = true;
                        }
                        anyhow::Ok(())
                    }
                    .await;
                    let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    seen.requests += 1;
                    seen.latencies_us.push(us);
                    if let Err(e) = outcome {
                        seen.errors += 1;
                        let mut f = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        if f.is_none() {
                            *f = Some(format!("{e:#}"));
                        }
                    }
                }
                seen
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Seen::default();
        for t in tasks {
            let s = t.await?;
            all.requests += s.requests;
            all.errors += s.errors;
            all.latencies_us.extend(s.latencies_us);
        }
        let secs = started.elapsed().as_secs_f64();
        let (s1, c1) = (
            thread_cpu_secs("bench-server"),
            thread_cpu_secs("bench-client"),
        );
        let delta = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        anyhow::Ok(Driven {
            seen: all,
            secs,
            server_cpu: delta(s0, s1),
            client_cpu: delta(c0, c1),
        })
    })
}

/// In process: `threads` threads calling `score_pairs` with `batch` pairs
/// at a time, over the same pairs, for `duration`. Pairs per second.
fn in_process(
    model: &Siamese,
    p: &Pairs,
    batch: usize,
    threads: usize,
    duration: Duration,
) -> Result<f64> {
    let px = 784;
    let n = p.pairs.len().min(20_000);
    let (mut a, mut b) = (Vec::with_capacity(n * px), Vec::with_capacity(n * px));
    for pr in &p.pairs[..n] {
        a.extend(quantized(p.set.image(pr.a as usize)));
        b.extend(quantized(p.set.image(pr.b as usize)));
    }
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let mut hs = Vec::new();
        for t in 0..threads {
            let (a, b, done) = (&a, &b, &done);
            hs.push(s.spawn(move || -> Result<()> {
                let mut i = t * batch;
                while started.elapsed() < duration {
                    let start = i % (n - batch + 1);
                    let r = model.score_pairs(
                        &a[start * px..(start + batch) * px],
                        &b[start * px..(start + batch) * px],
                    )?;
                    std::hint::black_box(r);
                    done.fetch_add(batch as u64, Ordering::Relaxed);
                    i += threads * batch;
                }
                Ok(())
            }));
        }
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[derive(Debug, Serialize)]
struct ThroughputRow {
    batch: usize,
    wire: Wire,
    in_process_pairs_per_s: f64,
    tls_pairs_per_s: f64,
    tls_requests_per_s: f64,
    tls_over_in_process: f64,
    overhead: f64,
    /// The TLS / in-process ratio of every round.
    rounds: Vec<f64>,
    /// CPU time per pair: in process (threads x wall time / pairs), and
    /// over TLS split into the worker's threads and the load generator's.
    in_process_cpu_us_per_pair: f64,
    server_cpu_us_per_pair: Option<f64>,
    client_cpu_us_per_pair: Option<f64>,
    /// The worker's CPU per pair over the in-process CPU per pair, minus 1:
    /// the attested TLS path's own cost, without the load generator's.
    server_cpu_overhead: Option<f64>,
    errors: u64,
}

/// `twinseal bench worker`.
pub fn run_worker(a: WorkerBench) -> Result<()> {
    let p = load_pairs(&a.peer_data, &a.data)?;
    let model = bench_model()?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!(
        "INSECURE bench deployment: simulated TEE; {} pairs; {threads} in-process threads; {} requests in flight over TLS; {} s per measurement",
        p.pairs.len(),
        a.concurrency,
        a.seconds
    );
    let d = Deployment::start(&model)?;
    let mut rows = Vec::new();
    let runs: Vec<(usize, Wire)> = a
        .batches
        .iter()
        .flat_map(|&b| {
            if b == 1 {
                vec![(1, Wire::Json)]
            } else {
                vec![(b, Wire::Json), (b, Wire::Binary)]
            }
        })
        .collect();
    for (batch, wire) in runs {
        ensure!(
            (1..=twinseal_worker::DEFAULT_MAX_PAIRS).contains(&batch),
            "batch sizes run from 1 to {}",
            twinseal_worker::DEFAULT_MAX_PAIRS
        );
        let duration = Duration::from_secs(a.seconds);
        let count = (4096 / batch).max(64);
        let bodies = Arc::new(bodies(&p, batch, count, wire)?);
        // Warm-up: connections, TLS sessions, allocator.
        let first_error = Arc::new(std::sync::Mutex::new(None));
        drive(
            &d,
            bodies.clone(),
            a.concurrency,
            Duration::from_secs(1),
            first_error.clone(),
        )?;
        // Alternate in process and over TLS, round by round, so that both
        // see the same machine; medians over the rounds.
        let mut inproc_runs = Vec::new();
        let mut tls_runs = Vec::new();
        let mut ratio_runs = Vec::new();
        let (mut requests, mut errors, mut tls_secs) = (0u64, 0u64, 0.0f64);
        let (mut server_cpu, mut client_cpu) = (Some(0.0f64), Some(0.0f64));
        for _ in 0..a.rounds.max(1) {
            let inproc = in_process(&model, &p, batch, threads, duration)?;
            let run = drive(
                &d,
                bodies.clone(),
                a.concurrency,
                duration,
                first_error.clone(),
            )?;
            let ok = run.seen.requests - run.seen.errors;
            let tls = ok as f64 * batch as f64 / run.secs;
            inproc_runs.push(inproc);
            tls_runs.push(tls);
            ratio_runs.push(tls / inproc);
            requests += ok;
            errors += run.seen.errors;
            tls_secs += run.secs;
            server_cpu = server_cpu.zip(run.server_cpu).map(|(a, b)| a + b);
            client_cpu = client_cpu.zip(run.client_cpu).map(|(a, b)| a + b);
        }
        if let Some(e) = first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            eprintln!("first error: {e}");
        }
        let inproc = median(&inproc_runs);
        let ratio = median(&ratio_runs);
        let pairs_done = (requests as f64 * batch as f64).max(1.0);
        let inproc_cpu = 1e6 * threads as f64 / inproc;
        let per_pair = |cpu: Option<f64>| cpu.map(|c| 1e6 * c / pairs_done);
        let server_cpu = per_pair(server_cpu);
        let row = ThroughputRow {
            batch,
            wire,
            in_process_pairs_per_s: inproc,
            tls_pairs_per_s: median(&tls_runs),
            tls_requests_per_s: requests as f64 / tls_secs,
            tls_over_in_process: ratio,
            overhead: 1.0 - ratio,
            rounds: ratio_runs,
            in_process_cpu_us_per_pair: inproc_cpu,
            server_cpu_us_per_pair: server_cpu,
            client_cpu_us_per_pair: per_pair(client_cpu),
            server_cpu_overhead: server_cpu.map(|c| c / inproc_cpu - 1.0),
            errors,
        };
        eprintln!(
            "batch {batch:>4} {wire:?} (medians of {} rounds): in process {:>9.0} pairs/s, over attested TLS {:>9.0} pairs/s ({:.0} requests/s), overhead {:>5.1}%, errors {}\n            CPU per pair: in process {:.1} us, worker {} us, load generator {} us",
            row.rounds.len(),
            row.in_process_pairs_per_s,
            row.tls_pairs_per_s,
            row.tls_requests_per_s,
            100.0 * row.overhead,
            row.errors,
            row.in_process_cpu_us_per_pair,
            row.server_cpu_us_per_pair
                .map_or("?".into(), |v| format!("{v:.1}")),
            row.client_cpu_us_per_pair
                .map_or("?".into(), |v| format!("{v:.1}")),
        );
        rows.push(row);
    }
    d.stop()?;
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "pairs": p.pairs.len(),
        "in_process_threads": threads,
        "concurrency": a.concurrency,
        "seconds": a.seconds,
        "rounds": a.rounds,
        "rows": rows,
    }))?;
    println!("{text}");
    if let Some(path) = &a.json {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    if rows.iter().any(|r| r.errors > 0) {
        bail!("some requests failed");
    }
    Ok(())
}

/// `twinseal bench load`.
pub fn run_load(a: LoadBench) -> Result<()> {
    ensure!(
        a.clients > 0 && a.duration_secs > 0,
        "clients and duration must be positive"
    );
    ensure!(
        a.duration_secs <= 3600,
        "the load test runs at most an hour"
    );
    let p = load_pairs(&a.peer_data, &a.data)?;
    let model = bench_model()?;
    let d = Deployment::start(&model)?;
    eprintln!(
        "INSECURE bench deployment: simulated TEE; {} clients for {} s, {} pair(s) per request, against {}",
        a.clients, a.duration_secs, a.batch, d.url
    );
    let bodies = Arc::new(bodies(&p, a.batch, 4096, Wire::Json)?);
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let Driven { mut seen, secs, .. } = drive(
        &d,
        bodies,
        a.clients,
        Duration::from_secs(a.duration_secs),
        first_error.clone(),
    )?;
    d.stop()?;
    seen.latencies_us.sort_unstable();
    let q = |f: f64| -> f64 {
        let v = &seen.latencies_us;
        if v.is_empty() {
            return 0.0;
        }
        v[((v.len() - 1) as f64 * f).round() as usize] as f64 / 1000.0
    };
    let res = serde_json::json!({
        "clients": a.clients,
        "duration_s": secs,
        "batch": a.batch,
        "requests": seen.requests,
        "errors": seen.errors,
        "requests_per_s": seen.requests as f64 / secs,
        "latency_ms": {"p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": q(1.0)},
    });
    let text = serde_json::to_string_pretty(&res)?;
    println!("{text}");
    if let Some(path) = &a.json {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(e) = first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        bail!(
            "{} of {} requests failed; the first: {e}",
            seen.errors,
            seen.requests
        );
    }
    Ok(())
}
