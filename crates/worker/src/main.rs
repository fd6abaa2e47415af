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
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWINSEAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match twinseal_worker::cli::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
