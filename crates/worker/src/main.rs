//! `twinseal-worker`: the attested worker on its own, the binary a TEE
//! measures. It links the worker, the network, the sealed-file format, the
//! attester half of attestation and the transport, and nothing of the
//! coordinator, the demo or the benchmarks (`scripts/check-tcb` checks).

use std::process::ExitCode;

use clap::Parser;

/// The attested twinseal worker.
#[derive(Debug, Parser)]
#[command(name = "twinseal-worker", version, about, long_about = None)]
struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: twinseal_worker::cli::WorkerCommand,
}

fn main() -> ExitCode {
    twinseal_siamese::prefer_single_threaded_candle();
    let cli = Cli::parse();
    twinseal_worker::cli::init_tracing(cli.verbose);
    match twinseal_worker::cli::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
