//! Workflow runs: sealed input -> attested app -> sealed output.
//!
//! An ML engineer (or an admin) queues a run of a manifest workflow; an
//! attested worker of the workflow's app claims it over mutual TLS,
//! obtains the input and output keys by the ordinary attested release
//! (checked against the manifest and policy again), computes, writes the
//! sealed output to the object store and reports the outcome with a signed
//! receipt. The coordinator never touches the data: it records who asked,
//! who ran it, on which certificate, and the digest of what was written.
//! Queueing, claiming and finishing are audited in the same transaction as
//! the change they record.
//!
//! A claimed run whose worker stops reporting for [`JOB_LEASE_SECS`] is
//! failed (and audited) the next time any worker claims a job, so a dead
//! worker cannot hold a run forever.

use std::time::SystemTime;

use twinseal_api as api;
use twinseal_audit::{AuditLog, Event};
use twinseal_sql::Db;

use crate::error::{Error, Result};
use crate::manifest::Role;
use crate::service::{Caller, Coordinator, rfc3339};
use crate::store::{runs, state};

/// Seconds without progress after which a claimed run is failed.
pub const JOB_LEASE_SECS: i64 = 600;

/// Who may queue runs.
const STARTERS: &[Role] = &[Role::Admin, Role::MlEngineer];
/// Who may read runs.
const READERS: &[Role] = &[Role::Admin, Role::MlEngineer, Role::Auditor];

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn parse_state(s: &str) -> Result<api::RunState> {
    Ok(match s {
        "queued" => api::RunState::Queued,
        "running" => api::RunState::Running,
        "succeeded" => api::RunState::Succeeded,
        "failed" => api::RunState::Failed,
        other => return Err(Error::Store(format!("unknown run state {other:?}"))),
    })
}

/// A run row.
struct Row {
    info: api::RunInfo,
    spec: api::Job,
}

fn finish_row(r: runs::RunRow) -> Result<Row> {
    let info = api::RunInfo {
        id: r.id as u64,
        workflow: r.workflow,
        kind: r.kind,
        app: r.app,
        state: parse_state(&r.state)?,
        started_by: r.started_by,
        created: r.created,
        updated: r.updated,
        serial: r.serial,
        done: r.done as u64,
        total: r.total as u64,
        output: r.output,
        output_sha256: r.output_sha256,
        error: r.error,
        receipt: r
            .receipt
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| Error::Store(format!("stored receipt: {e}")))?,
        certificate: None,
        training: None,
        training_record: None,
    };
    let spec: api::Job =
        serde_json::from_str(&r.spec).map_err(|e| Error::Store(format!("stored job: {e}")))?;
    Ok(Row { info, spec })
}

fn load(c: &dyn Db, id: u64) -> Result<Option<Row>> {
    runs::get(c, id as i64)?.map(finish_row).transpose()
}

fn certificate_pem(c: &dyn Db, serial: &str) -> Result<Option<String>> {
    Ok(state::certificate_der(c, serial)?.map(|d| crate::ca::pem_cert(&d)))
}

impl Coordinator {
    /// Queue a run of the manifest workflow `name` (admin, ML engineer).
    pub async fn start_run(&self, caller: &Caller, name: &str) -> Result<api::RunInfo> {
        caller.require_role(STARTERS)?;
        let m = self.manifest();
        let w = m
            .manifest
            .workflows
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("workflow {name} is not in the manifest")))?
            .clone();
        let input = m
            .manifest
            .datasets
            .get(&w.input)
            .ok_or_else(|| Error::NotFound(format!("dataset {}", w.input)))?
            .clone();
        let (actor, workflow) = (caller.actor(), name.to_string());
        let id = self
            .store()
            .write(move |c| {
                let now = SystemTime::now();
                let next = runs::next_id(c)?;
                let context = |purpose: &str| -> std::collections::BTreeMap<String, String> {
                    [
                        ("purpose".to_string(), purpose.to_string()),
                        ("workflow".to_string(), workflow.clone()),
                        ("run".to_string(), next.to_string()),
                    ]
                    .into()
                };
                let training = w.kind == "train";
                let spec = api::Job {
                    run: next as u64,
                    workflow: workflow.clone(),
                    kind: w.kind.clone(),
                    input: api::SealedLocation {
                        location: input.location,
                        key: input.key,
                        context: input.context,
                    },
                    output: if training {
                        api::SealedLocation {
                            location: format!("{}/run-{next}/model.sealed", w.output),
                            key: w.output_key.clone(),
                            context: context("model"),
                        }
                    } else {
                        api::SealedLocation {
                            location: format!("{}/run-{next}.sealed", w.output),
                            key: w.output_key.clone(),
                            context: context("workflow-output"),
                        }
                    },
                    train: training.then(|| w.train.clone().unwrap_or_default()),
                    metrics: training.then(|| api::SealedLocation {
                        location: format!("{}/run-{next}/metrics.sealed", w.output),
                        key: w.output_key.clone(),
                        context: context("metrics"),
                    }),
                };
                let spec = serde_json::to_string(&spec).map_err(|e| Error::Store(e.to_string()))?;
                runs::insert(
                    c,
                    &runs::NewRun {
                        id: next,
                        workflow: &workflow,
                        kind: &w.kind,
                        app: &w.app,
                        spec: &spec,
                        started_by: &actor,
                        now: &rfc3339(now),
                        now_unix: unix_now(),
                    },
                )?;
                AuditLog::append(
                    c,
                    now,
                    &Event::WorkflowRunQueued {
                        actor,
                        workflow,
                        run: next as u64,
                    },
                )?;
                Ok(next as u64)
            })
            .await?;
        tracing::info!(workflow = name, run = id, "workflow run queued");
        self.run_info(caller, id)
    }

    /// Runs, newest first (admin, ML engineer, auditor).
    pub fn list_runs(&self, caller: &Caller) -> Result<api::RunList> {
        caller.require_role(READERS)?;
        self.store().read(|c| {
            let rows = runs::newest(c, 1000)?;
            let runs = rows
                .into_iter()
                .map(|r| {
                    let mut info = finish_row(r)?.info;
                    if info.kind == "train" {
                        info.training = training_of(c, info.id)?.0;
                    }
                    Ok(info)
                })
                .collect::<Result<_>>()?;
            Ok(api::RunList { runs })
        })
    }

    /// One run: readers, or the app whose workflow it is.
    pub fn run_info(&self, caller: &Caller, id: u64) -> Result<api::RunInfo> {
        let app = match caller {
            Caller::App(a) => Some(a.app.clone()),
            _ => {
                caller.require_role(READERS)?;
                None
            }
        };
        self.store().read(|c| {
            let r = load(c, id)?.ok_or_else(|| Error::NotFound(format!("run {id}")))?;
            if let Some(app) = app
                && app != r.info.app
            {
                return Err(Error::Forbidden(format!(
                    "run {id} belongs to another app's workflow"
                )));
            }
            let mut info = r.info;
            if info.receipt.is_some()
                && let Some(serial) = &info.serial
            {
                info.certificate = certificate_pem(c, serial)?;
            }
            if info.kind == "train" {
                let (progress, record) = training_of(c, id)?;
                info.training = progress;
                info.training_record = record;
            }
            Ok(info)
        })
    }

    /// Claim the oldest queued run of a workflow the calling app runs
    /// (attested apps only). Fails runs whose worker stopped reporting.
    pub async fn claim_job(&self, caller: &Caller) -> Result<api::ClaimResponse> {
        let app = match caller {
            Caller::App(a) => a.clone(),
            Caller::Anonymous => return Err(Error::Unauthenticated),
            Caller::User(_) => {
                return Err(Error::Forbidden("only attested apps claim jobs".into()));
            }
        };
        let (name, serial) = (app.app.clone(), app.serial.clone());
        let job = self
            .store()
            .write(move |c| {
                let now = SystemTime::now();
                expire_stale(c, now)?;
                let Some(id) = runs::oldest_queued(c, &name)? else {
                    return Ok(None);
                };
                runs::claim(c, id, &serial, &rfc3339(now), unix_now())?;
                let r = load(c, id as u64)?.ok_or_else(|| Error::Store("run vanished".into()))?;
                AuditLog::append(
                    c,
                    now,
                    &Event::WorkflowRunClaimed {
                        app: name,
                        serial,
                        workflow: r.info.workflow.clone(),
                        run: id as u64,
                    },
                )?;
                Ok(Some(r.spec))
            })
            .await?;
        if let Some(j) = &job {
            tracing::info!(app = %app.app, run = j.run, workflow = %j.workflow, "workflow run claimed");
        }
        Ok(api::ClaimResponse { job })
    }

    /// The app running `id` reports progress.
    pub async fn job_progress(
        &self,
        caller: &Caller,
        id: u64,
        p: api::JobProgress,
    ) -> Result<api::RunInfo> {
        let app = self.running_app(caller, id)?;
        self.store()
            .write(move |c| {
                let running = runs::progress(
                    c,
                    id as i64,
                    &app,
                    p.done as i64,
                    p.total as i64,
                    &rfc3339(SystemTime::now()),
                    unix_now(),
                )?;
                if !running {
                    return Err(Error::Conflict(format!("run {id} is not running")));
                }
                if let Some(t) = &p.training {
                    let t =
                        serde_json::to_string(t).map_err(|e| Error::BadRequest(e.to_string()))?;
                    runs::set_training_progress(c, id as i64, &t)?;
                }
                Ok(())
            })
            .await?;
        self.run_info(caller, id)
    }

    /// The app running `id` reports its outcome.
    pub async fn finish_job(
        &self,
        caller: &Caller,
        id: u64,
        f: api::JobFinish,
    ) -> Result<api::RunInfo> {
        let app = self.running_app(caller, id)?;
        let record = match caller {
            Caller::App(a) => a.clone(),
            _ => unreachable!("running_app accepts apps only"),
        };
        let serial = record.serial.clone();
        let succeeded = f.error.is_none();
        if let Some(t) = &f.training {
            let digests = [
                &t.model_sha256,
                &t.model_header_sha256,
                &t.model_plain_sha256,
                &t.metrics_sha256,
                &t.dataset_sha256,
                &t.sealed_dataset_sha256,
                &t.dataset_index_sha256,
            ];
            if digests
                .iter()
                .any(|d| d.len() != 64 || hex::decode(d).is_err())
            {
                return Err(Error::BadRequest(
                    "training digests must be 64 hex digits".into(),
                ));
            }
            if f.output_sha256.as_ref() != Some(&t.model_sha256) {
                return Err(Error::BadRequest(
                    "output_sha256 must be the sealed model's digest".into(),
                ));
            }
            if t.metrics.len() > 64 || t.metrics_output.len() > 600 {
                return Err(Error::BadRequest("the training report is too large".into()));
            }
        }
        if succeeded && (f.output_sha256.is_none() || f.receipt.is_none()) {
            return Err(Error::BadRequest(
                "a successful run reports its output digest and receipt".into(),
            ));
        }
        if let Some(d) = &f.output_sha256
            && (d.len() != 64 || hex::decode(d).is_err())
        {
            return Err(Error::BadRequest(
                "output_sha256 must be 64 hex digits".into(),
            ));
        }
        let error = f.error.map(|e| e.chars().take(1000).collect::<String>());
        let receipt = f
            .receipt
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        self.store()
            .write(move |c| {
                let now = SystemTime::now();
                let r = load(c, id)?.ok_or_else(|| Error::NotFound(format!("run {id}")))?;
                if r.info.state != api::RunState::Running || r.info.app != app {
                    return Err(Error::Conflict(format!("run {id} is not running")));
                }
                let training = match (&r.spec.train, succeeded, f.training) {
                    (Some(options), true, Some(result)) => {
                        let m = r.spec.metrics.as_ref().map(|m| m.location.as_str());
                        if m != Some(result.metrics_output.as_str()) {
                            return Err(Error::BadRequest(
                                "the metrics were not written where the run said".into(),
                            ));
                        }
                        Some(api::TrainingRecord {
                            run: id,
                            workflow: r.info.workflow.clone(),
                            app: app.clone(),
                            serial: serial.clone(),
                            evidence_sha256: record.evidence_digest.clone(),
                            measurement: record.claims.measurement().to_hex(),
                            tee: record.claims.tee().to_string(),
                            simulated: record.simulated,
                            dataset: r.spec.input.location.clone(),
                            options: options.clone(),
                            result,
                            model: r.spec.output.location.clone(),
                            recorded: rfc3339(now),
                        })
                    }
                    (Some(_), true, None) => {
                        return Err(Error::BadRequest(
                            "a successful training run reports what it trained".into(),
                        ));
                    }
                    (None, _, Some(_)) => {
                        return Err(Error::BadRequest(
                            "only training runs report training results".into(),
                        ));
                    }
                    _ => None,
                };
                let output = succeeded.then(|| r.spec.output.location.clone());
                runs::finish(
                    c,
                    &runs::Finish {
                        id: id as i64,
                        state: if succeeded { "succeeded" } else { "failed" },
                        done: f.done as i64,
                        output: output.as_deref(),
                        output_sha256: f.output_sha256.as_deref(),
                        error: error.as_deref(),
                        receipt: receipt.as_deref(),
                        serial: &serial,
                        now: &rfc3339(now),
                        now_unix: unix_now(),
                    },
                )?;
                AuditLog::append(
                    c,
                    now,
                    &Event::WorkflowRunFinished {
                        app,
                        serial: Some(serial),
                        workflow: r.info.workflow,
                        run: id,
                        succeeded,
                        items: f.done,
                        output,
                        output_sha256: f.output_sha256,
                        error,
                    },
                )?;
                if let Some(t) = training {
                    record_training(c, now, &t)?;
                }
                Ok(())
            })
            .await?;
        self.run_info(caller, id)
    }

    /// The app name of a caller that may report on run `id`: an attested
    /// app whose workflow it is (any attested instance of that app, since a
    /// worker's certificate is renewed while it runs).
    fn running_app(&self, caller: &Caller, id: u64) -> Result<String> {
        let app = match caller {
            Caller::App(a) => a.app.clone(),
            Caller::Anonymous => return Err(Error::Unauthenticated),
            Caller::User(_) => {
                return Err(Error::Forbidden(
                    "only the app running a job reports on it".into(),
                ));
            }
        };
        let owner = self.store().read(|c| runs::app_of(c, id as i64))?;
        match owner {
            None => Err(Error::NotFound(format!("run {id}"))),
            Some(o) if o != app => Err(Error::Forbidden(format!(
                "run {id} belongs to another app's workflow"
            ))),
            Some(_) => Ok(app),
        }
    }
}

/// Fail running runs whose worker has not reported for the lease.
fn expire_stale(c: &dyn Db, now: SystemTime) -> Result<()> {
    let cutoff = unix_now() - JOB_LEASE_SECS;
    for (id, workflow, done) in runs::stale(c, cutoff)? {
        let error = format!("the worker stopped reporting for {JOB_LEASE_SECS} s");
        runs::fail(c, id, &error, &rfc3339(now), unix_now())?;
        AuditLog::append(
            c,
            now,
            &Event::WorkflowRunFinished {
                app: "coordinator".into(),
                serial: None,
                workflow,
                run: id as u64,
                succeeded: false,
                items: done as u64,
                output: None,
                output_sha256: None,
                error: Some(error),
            },
        )?;
    }
    Ok(())
}

/// The training progress and record of run `id`.
fn training_of(
    c: &dyn Db,
    id: u64,
) -> Result<(Option<api::TrainingProgress>, Option<api::TrainingRecord>)> {
    let Some((progress, record)) = runs::training(c, id as i64)? else {
        return Ok((None, None));
    };
    let progress = progress
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .map_err(|e| Error::Store(format!("stored training progress: {e}")))?;
    let record = record
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .map_err(|e| Error::Store(format!("stored training record: {e}")))?;
    Ok((progress, record))
}

/// Stores a training record and audits it (in the caller's transaction).
fn record_training(c: &dyn Db, now: SystemTime, t: &api::TrainingRecord) -> Result<()> {
    let json = serde_json::to_string(t).map_err(|e| Error::Store(e.to_string()))?;
    runs::set_training_record(
        c,
        t.run as i64,
        &json,
        &t.app,
        &t.result.model_header_sha256,
    )?;
    AuditLog::append(
        c,
        now,
        &Event::TrainingRecorded {
            app: t.app.clone(),
            serial: t.serial.clone(),
            evidence_digest: t.evidence_sha256.clone(),
            measurement: t.measurement.clone(),
            workflow: t.workflow.clone(),
            run: t.run,
            dataset: t.dataset.clone(),
            sealed_dataset_sha256: t.result.sealed_dataset_sha256.clone(),
            dataset_sha256: t.result.dataset_sha256.clone(),
            options: serde_json::to_string(&t.options).map_err(|e| Error::Store(e.to_string()))?,
            model: t.model.clone(),
            model_sha256: t.result.model_sha256.clone(),
            model_header_sha256: t.result.model_header_sha256.clone(),
            model_plain_sha256: t.result.model_plain_sha256.clone(),
            metrics: t
                .result
                .metrics
                .iter()
                .map(|(k, v)| (k.clone(), format!("{v:.6}")))
                .collect(),
        },
    )?;
    Ok(())
}

/// The trainer app whose recorded training produced the sealed model with
/// this header digest, if any.
pub(crate) fn trainer_of_model(c: &dyn Db, header_sha256: &str) -> Result<Option<String>> {
    runs::trainer_of_model(c, header_sha256)
}
