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
use twinseal_local::{APP, Local, LocalOptions, MODEL_KEY, Served};
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
}

impl Deployment {
    fn start(model: &Siamese) -> Result<Deployment> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-server")
            .enable_all()
            .build()?;
        let bytes = model.to_bytes()?;
        let (local, served) = rt.block_on(async {
            let local = Local::start(LocalOptions::default()).await?;
            let m = twinseal_attest::simulated::executable_measurement()?;
            local
                .apply_manifest(&format!(
                    "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\n{}",
                    Local::app_entry(APP, &m, &[MODEL_KEY])
                ))
                .await?;
            local.create_keys(&[MODEL_KEY]).await?;
            let dora = local.user("dora").await?;
            let sealed =
                twinseal_local::seal(&dora, MODEL_KEY, &[("purpose", "model")], &bytes).await?;
            let mut opts = local.worker_options(APP, m, sealed)?;
            opts.limits.max_concurrent_requests = 256;
            let worker = Worker::start(opts).await?;
            let served = Served::start(worker).await?;
            anyhow::Ok((local, served))
        })?;
        Ok(Deployment {
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

/// Request bodies: `batch` pairs each, cycling through the pairs.
fn bodies(p: &Pairs, batch: usize, count: usize) -> Result<Vec<bytes_body::Body>> {
    let mut out = Vec::with_capacity(count);
    let mut next = 0usize;
    for _ in 0..count {
        let mut pairs = Vec::with_capacity(batch);
        for _ in 0..batch {
            let pr = p.pairs[next % p.pairs.len()];
            next += 1;
            pairs.push(api::PairWire {
                a: raw(p.set.image(pr.a as usize)),
                b: raw(p.set.image(pr.b as usize)),
            });
        }
        out.push(if batch == 1 {
            let pw = pairs.pop().expect("one pair");
            bytes_body::Body::new(
                "/v1/compare",
                serde_json::to_vec(&api::CompareRequest { a: pw.a, b: pw.b })?,
            )
        } else {
            bytes_body::Body::new(
                "/v1/compare/batch",
                serde_json::to_vec(&api::CompareBatchRequest { pairs })?,
            )
        });
    }
    Ok(out)
}

mod bytes_body {
    /// A prepared request: path and JSON body.
    #[derive(Clone)]
    pub struct Body {
        pub path: &'static str,
        pub json: bytes::Bytes,
    }

    impl Body {
        pub fn new(path: &'static str, json: Vec<u8>) -> Body {
            Body {
                path,
                json: bytes::Bytes::from(json),
            }
        }
    }
}

/// What a client run saw.
#[derive(Default)]
struct Seen {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

/// Runs `clients` tasks, each sending the prepared bodies in turn (one
/// request in flight per task), for `duration`; returns requests, errors
/// and per-request latencies.
fn drive(
    d: &Deployment,
    bodies: Arc<Vec<bytes_body::Body>>,
    clients: usize,
    duration: Duration,
    first_error: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<(Seen, f64)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let http = twinseal_local::worker_http_client(&d.root_pem, true)?;
    let url = d.url.clone();
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
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
                            .header("content-type", "application/json")
                            .body(body.json.clone())
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
        anyhow::Ok((all, secs))
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

#[derive(Debug, Serialize)]
struct ThroughputRow {
    batch: usize,
    in_process_pairs_per_s: f64,
    tls_pairs_per_s: f64,
    tls_requests_per_s: f64,
    tls_over_in_process: f64,
    overhead: f64,
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
    for &batch in &a.batches {
        ensure!(
            (1..=twinseal_worker::DEFAULT_MAX_PAIRS).contains(&batch),
            "batch sizes run from 1 to {}",
            twinseal_worker::DEFAULT_MAX_PAIRS
        );
        let duration = Duration::from_secs(a.seconds);
        let count = (4096 / batch).max(64);
        let bodies = Arc::new(bodies(&p, batch, count)?);
        // Warm-up: connections, TLS sessions, allocator.
        let first_error = Arc::new(std::sync::Mutex::new(None));
        drive(
            &d,
            bodies.clone(),
            a.concurrency,
            Duration::from_secs(1),
            first_error.clone(),
        )?;
        let inproc = in_process(&model, &p, batch, threads, duration)?;
        let (seen, secs) = drive(&d, bodies, a.concurrency, duration, first_error.clone())?;
        if let Some(e) = first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            eprintln!("first error: {e}");
        }
        let tls = (seen.requests - seen.errors) as f64 * batch as f64 / secs;
        let row = ThroughputRow {
            batch,
            in_process_pairs_per_s: inproc,
            tls_pairs_per_s: tls,
            tls_requests_per_s: (seen.requests - seen.errors) as f64 / secs,
            tls_over_in_process: tls / inproc,
            overhead: 1.0 - tls / inproc,
            errors: seen.errors,
        };
        eprintln!(
            "batch {batch:>4}: in process {:>9.0} pairs/s, over attested TLS {:>9.0} pairs/s ({:.0} requests/s), overhead {:>5.1}%, errors {}",
            row.in_process_pairs_per_s,
            row.tls_pairs_per_s,
            row.tls_requests_per_s,
            100.0 * row.overhead,
            row.errors
        );
        rows.push(row);
    }
    d.stop()?;
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "pairs": p.pairs.len(),
        "in_process_threads": threads,
        "concurrency": a.concurrency,
        "seconds": a.seconds,
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
    let bodies = Arc::new(bodies(&p, a.batch, 4096)?);
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let (mut seen, secs) = drive(
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
