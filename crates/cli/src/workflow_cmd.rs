//! `twinseal workflow ...`: queue runs of manifest workflows, follow their
//! progress, and check the worker's signed receipt when they finish.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use twinseal_api as api;

use crate::coord::RemoteArgs;

/// `twinseal workflow ...`
#[derive(Debug, clap::Subcommand)]
pub enum WorkflowCommand {
    /// Queue a run of a manifest workflow (admin, ML engineer) and follow
    /// it until an attested worker of its app has written the sealed
    /// output; then verify the worker's receipt.
    Run {
        /// The workflow's name in the manifest.
        name: String,
        /// Return once queued instead of following the run.
        #[arg(long)]
        no_wait: bool,
        /// Give up following after this many seconds (the run goes on).
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        /// Print the final run as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show one run (admin, ML engineer, auditor).
    Show {
        /// The run's id.
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List runs, newest first (admin, ML engineer, auditor).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Runs `twinseal workflow ...`.
pub fn run(cmd: WorkflowCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cmd {
        WorkflowCommand::Run {
            name,
            no_wait,
            timeout_secs,
            json,
            remote,
        } => rt.block_on(async {
            let client = remote.client()?;
            let run: api::RunInfo = client
                .post(&format!("/v1/workflows/{name}/runs"), &())
                .await
                .with_context(|| format!("queueing workflow {name}"))?;
            eprintln!(
                "queued run {} of workflow {name} (app {}); waiting for an attested worker",
                run.id, run.app
            );
            if no_wait {
                return print_run(&run, json);
            }
            let run = follow(&client, run.id, Duration::from_secs(timeout_secs)).await?;
            print_run(&run, json)?;
            match run.state {
                api::RunState::Succeeded => Ok(()),
                _ => bail!(
                    "run {} failed: {}",
                    run.id,
                    run.error.as_deref().unwrap_or("no reason given")
                ),
            }
        }),
        WorkflowCommand::Show { id, json, remote } => rt.block_on(async {
            let run: api::RunInfo = remote.client()?.get(&format!("/v1/runs/{id}")).await?;
            print_run(&run, json)
        }),
        WorkflowCommand::List { json, remote } => rt.block_on(async {
            let list: api::RunList = remote.client()?.get("/v1/runs").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:>5}  {:<20} {:<10} {:>15}  {:<20}  output",
                "run", "workflow", "state", "done/total", "updated"
            );
            for r in &list.runs {
                println!(
                    "{:>5}  {:<20} {:<10} {:>15}  {:<20}  {}",
                    r.id,
                    r.workflow,
                    state(r.state),
                    format!("{}/{}", r.done, r.total),
                    r.updated,
                    r.output.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }),
    }
}

fn state(s: api::RunState) -> &'static str {
    match s {
        api::RunState::Queued => "queued",
        api::RunState::Running => "running",
        api::RunState::Succeeded => "succeeded",
        api::RunState::Failed => "failed",
    }
}

/// Polls the run until it ends, with a progress bar on a terminal.
pub(crate) async fn follow(
    client: &twinseal_coordinator::client::Client,
    id: u64,
    timeout: Duration,
) -> Result<api::RunInfo> {
    let mut bar = crate::progress::bar(0, "pairs");
    let started = std::time::Instant::now();
    let mut last_state = None;
    let mut last_training: Option<(String, usize)> = None;
    loop {
        let run: api::RunInfo = client.get(&format!("/v1/runs/{id}")).await?;
        if last_state.is_none() && run.kind == "train" {
            bar = crate::progress::bar(0, "epochs");
        }
        if last_state != Some(run.state) {
            crate::progress::line(&bar, format!("run {id}: {}", state(run.state)));
            last_state = Some(run.state);
        }
        // Training: one line per stage and per finished epoch (the
        // trainer reports aggregates only: loss, accuracy, metrics).
        if let Some(t) = &run.training {
            let key = (t.stage.clone(), t.epoch);
            if last_training.as_ref() != Some(&key) {
                let line = match (t.stage.as_str(), t.loss, t.accuracy) {
                    ("training", Some(l), Some(a)) => format!(
                        "  epoch {}/{}: loss {l:.4}, training accuracy {a:.4}",
                        t.epoch, t.epochs
                    ),
                    ("training", _, _) => "  training".into(),
                    ("done", _, _) => String::new(),
                    (stage, _, _) => format!("  {stage}"),
                };
                if !line.is_empty() {
                    crate::progress::line(&bar, line);
                }
                bar.set_length(t.epochs as u64);
                bar.set_position(t.epoch as u64);
                last_training = Some(key);
            }
        }
        if run.total > 0 {
            bar.set_length(run.total);
            bar.set_position(run.done);
        }
        if matches!(run.state, api::RunState::Succeeded | api::RunState::Failed) {
            bar.finish_and_clear();
            return Ok(run);
        }
        if started.elapsed() > timeout {
            bar.abandon();
            bail!(
                "run {id} is still {} after {} s; follow it with `twinseal workflow show {id}`",
                state(run.state),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn print_run(run: &api::RunInfo, json: bool) -> Result<()> {
    let verified = match (&run.receipt, &run.certificate) {
        (Some(r), Some(pem)) => {
            let der = twinseal_worker::tls::root_der_from_pem(pem)
                .context("the run's certificate is not PEM")?;
            twinseal_worker::verify_receipt(r, &der)
                .context("the run's receipt does not verify with its worker's certificate")?;
            let signed: api::WorkflowOutput = serde_json::from_str(&r.output)
                .context("the run's receipt does not carry a workflow output")?;
            if Some(&signed.output_sha256) != run.output_sha256.as_ref()
                || Some(&signed.output) != run.output.as_ref()
                || signed.run != run.id
            {
                bail!("the run's receipt names another output than the coordinator records");
            }
            true
        }
        _ => false,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(run)?);
        return Ok(());
    }
    println!(
        "run {} of {} ({}): {}, {}/{} {}, by {}, updated {}",
        run.id,
        run.workflow,
        run.kind,
        state(run.state),
        run.done,
        run.total,
        if run.kind == "train" {
            "epochs"
        } else {
            "pairs"
        },
        run.started_by,
        run.updated
    );
    if let Some(o) = &run.output {
        println!(
            "  sealed output: {o} (sha256 {})",
            run.output_sha256.as_deref().unwrap_or("?")
        );
    }
    if let Some(e) = &run.error {
        println!("  error: {e}");
    }
    if let Some(t) = &run.training
        && let (Some(l), Some(a)) = (t.loss, t.accuracy)
    {
        println!(
            "  last epoch {}/{}: loss {l:.4}, training accuracy {a:.4}",
            t.epoch, t.epochs
        );
    }
    if let Some(t) = &run.training
        && !t.metrics.is_empty()
    {
        let m = |k: &str| t.metrics.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "  test metrics: accuracy {:.4}, ROC-AUC {:.4}, EER {:.4} ({} pairs)",
            m("accuracy"),
            m("roc_auc"),
            m("eer"),
            m("test_pairs")
        );
    }
    if let Some(r) = &run.training_record {
        println!(
            "  training record (audit log): trainer {} ({}{}, measurement {}), evidence sha256 {}",
            r.app,
            r.tee,
            if r.simulated {
                ", INSECURE simulated"
            } else {
                ""
            },
            &r.measurement[..16.min(r.measurement.len())],
            r.evidence_sha256
        );
        println!(
            "  dataset {} (content sha256 {}, sealed sha256 {}), {} train / {} test images, {} identities",
            r.dataset,
            &r.result.dataset_sha256[..16],
            &r.result.sealed_dataset_sha256[..16],
            r.result.images[0],
            r.result.images[1],
            r.result.images[2]
        );
        println!(
            "  sealed model {} (plaintext sha256 {}); sealed metrics {}",
            r.model, r.result.model_plain_sha256, r.result.metrics_output
        );
    }
    if let Some(r) = &run.receipt {
        println!(
            "  receipt {}: worker certificate sha256 {}, model sha256 {}, input sha256 {}",
            if verified { "verified" } else { "NOT verified" },
            &r.certificate_sha256[..16],
            &r.model_sha256[..16],
            &r.inputs_sha256[..16]
        );
    }
    Ok(())
}
