//! `twinseal receipt verify`: check a worker's receipt offline, in either
//! form (the JSON receipt, which may carry its COSE form, or the COSE_Sign1
//! alone), with the worker's certificate and, when given, the proof that
//! the log approved the worker's measurement.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Subcommand;
use twinseal_api as api;

use crate::worker_cmd::{WorkerClientArgs, check_release_proof};

/// `twinseal receipt ...`
#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Verify a receipt offline: a JSON receipt (as `compare --json` and the
    /// API return it; its `cose` form too when present) or a COSE_Sign1
    /// receipt (binary, or base64 text), with the worker's certificate.
    /// Exits non-zero, naming the reason, when it does not verify.
    Verify {
        /// The receipt file.
        receipt: PathBuf,
        /// The worker's certificate (PEM or DER), e.g. from its /v1/info.
        #[arg(long, value_name = "CERT")]
        cert: PathBuf,
        /// The worker's proof that the log approved its measurement (the
        /// `transparency` object of its /v1/info, or the whole /v1/info
        /// JSON); checked with --log-key and --witness.
        #[arg(long, value_name = "JSON", requires = "log_key")]
        proof: Option<PathBuf>,
        #[command(flatten)]
        log: WorkerClientArgs,
    },
}

/// Runs `twinseal receipt ...`.
pub fn run(cmd: ReceiptCommand) -> Result<()> {
    match cmd {
        ReceiptCommand::Verify {
            receipt,
            cert,
            proof,
            log,
        } => {
            let cert_bytes =
                std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?;
            let cert_der = match std::str::from_utf8(&cert_bytes) {
                Ok(t) if t.contains("-----BEGIN CERTIFICATE-----") => {
                    let b64: String = t.lines().filter(|l| !l.starts_with("-----")).collect();
                    B64.decode(b64.trim())
                        .context("the certificate PEM is not base64")?
                }
                _ => cert_bytes,
            };
            let bytes = std::fs::read(&receipt)
                .with_context(|| format!("reading {}", receipt.display()))?;
            let form = if bytes.first() == Some(&0xd2) {
                let stated = twinseal_net::cose_receipt::verify_cose_receipt(&bytes, &cert_der)?;
                println!("COSE receipt: {} at {}", stated.operation, stated.time);
                println!("output: {}", stated.output);
                "COSE"
            } else if let Ok(r) = serde_json::from_slice::<api::Receipt>(&bytes) {
                twinseal_net::receipt::verify_receipt(&r, &cert_der)?;
                println!("receipt: {} at {}", r.operation, r.time);
                println!("output: {}", r.output);
                if r.cose.is_some() {
                    "JSON and COSE"
                } else {
                    "JSON"
                }
            } else {
                let text = std::str::from_utf8(&bytes)
                    .ok()
                    .map(str::trim)
                    .unwrap_or_default();
                let Ok(cose) = B64.decode(text) else {
                    bail!(
                        "{} is neither a JSON receipt nor a COSE receipt",
                        receipt.display()
                    );
                };
                let stated = twinseal_net::cose_receipt::verify_cose_receipt(&cose, &cert_der)?;
                println!("COSE receipt: {} at {}", stated.operation, stated.time);
                println!("output: {}", stated.output);
                "COSE"
            };
            if let Some(p) = proof {
                let text = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                let proof: api::LogProof = match serde_json::from_slice::<api::WorkerInfo>(&text) {
                    Ok(info) => info
                        .transparency
                        .context("the worker info holds no transparency proof")?,
                    Err(_) => serde_json::from_slice(&text)
                        .with_context(|| format!("{} is not a log proof", p.display()))?,
                };
                let policy = log.release_policy()?.context("--proof needs --log-key")?;
                let approval =
                    check_release_proof(&proof, &cert_der, &policy, std::time::SystemTime::now())?;
                println!(
                    "release transparency: measurement approved by manifest version {} (log entry {}, checkpoint of {} entries, {} cosignatures)",
                    approval.manifest_version,
                    approval.index,
                    approval.checkpoint_size,
                    approval.cosignatures
                );
            }
            println!("OK: the {form} receipt verifies with the worker's certificate");
            Ok(())
        }
    }
}
