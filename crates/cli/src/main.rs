//! The `twinseal` binary: parses arguments, sets up logging, calls the
//! libraries and maps errors to an exit code. Each command group lives in its
//! own module; this file only dispatches.

mod attest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Verify attestation evidence offline, or produce simulated evidence.
    Attest(attest::AttestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result: anyhow::Result<()> = match cli.command {
        Command::Attest(args) => attest::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
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
}
