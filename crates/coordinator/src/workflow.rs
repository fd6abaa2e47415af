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

use rusqlite::{Connection, OptionalExtension, params};
use twinseal_api as api;
use twinseal_audit::{AuditLog, Event};

use crate::error::{Error, Result};
use crate::manifest::Role;
use crate::service::{Caller, Coordinator, rfc3339};

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

const COLUMNS: &str = "id, workflow, kind, app, state, started_by, created, updated, serial, done, total, output, output_sha256, error, receipt, spec";

/// A run row.
struct Row {
    info: api::RunInfo,
    spec: api::Job,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(api::RunInfo, String, Option<String>, String)> {
    let info = api::RunInfo {
        id: r.get::<_, i64>(0)? as u64,
        workflow: r.get(1)?,
        kind: r.get(2)?,
        app: r.get(3)?,
        state: api::RunState::Queued,
        started_by: r.get(5)?,
        created: r.get(6)?,
        updated: r.get(7)?,
        serial: r.get(8)?,
        done: r.get::<_, i64>(9)? as u64,
        total: r.get::<_, i64>(10)? as u64,
        output: r.get(11)?,
        output_sha256: r.get(12)?,
        error: r.get(13)?,
        receipt: None,
        certificate: None,
        training: None,
        training_record: None,
    };
    Ok((info, r.get(4)?, r.get(14)?, r.get(15)?))
}

fn finish_row(
    (mut info, state, receipt, spec): (api::RunInfo, String, Option<String>, String),
) -> Result<Row> {
    info.state = parse_state(&state)?;
    info.receipt = receipt
        .map(|r| serde_json::from_str(&r))
        .transpose()
        .map_err(|e| Error::Store(format!("stored receipt: {e}")))?;
    let spec: api::Job =
        serde_json::from_str(&spec).map_err(|e| Error::Store(format!("stored job: {e}")))?;
    Ok(Row { info, spec })
}

fn load(c: &Connection, id: u64) -> Result<Option<Row>> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM workflow_runs WHERE id = ?1"),
        [id as i64],
        row,
    )
    .optional()?
    .map(finish_row)
    .transpose()
}

fn certificate_pem(c: &Connection, serial: &str) -> Result<Option<String>> {
    let der: Option<Vec<u8>> = c
        .query_row(
            "SELECT der FROM certificates WHERE serial = ?1",
            [serial],
            |r| r.get(0),
        )
        .optional()?;
    Ok(der.map(|d| crate::ca::pem_cert(&d)))
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
                let next: i64 = c.query_row(
                    "SELECT COALESCE(MAX(id), 0) + 1 FROM workflow_runs",
                    [],
                    |r| r.get(0),
                )?;
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
                let spec =
                    serde_json::to_string(&spec).map_err(|e| Error::Store(e.to_string()))?;
                c.execute(
                    "INSERT INTO workflow_runs (id, workflow, kind, app, spec, state, started_by, created, updated, updated_unix)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?7, ?8)",
                    params![next, workflow, w.kind, w.app, spec, actor, rfc3339(now), unix_now()],
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
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM workflow_runs ORDER BY id DESC LIMIT 1000"
            ))?;
            let rows = st
                .query_map([], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
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
                let id: Option<i64> = c
                    .query_row(
                        "SELECT id FROM workflow_runs WHERE state = 'queued' AND app = ?1 ORDER BY id LIMIT 1",
                        [&name],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(id) = id else { return Ok(None) };
                c.execute(
                    "UPDATE workflow_runs SET state = 'running', serial = ?2, updated = ?3, updated_unix = ?4 WHERE id = ?1",
                    params![id, serial, rfc3339(now), unix_now()],
                )?;
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
                let n = c.execute(
                    "UPDATE workflow_runs SET done = ?2, total = ?3, updated = ?4, updated_unix = ?5
                     WHERE id = ?1 AND state = 'running' AND app = ?6",
                    params![
                        id as i64,
                        p.done as i64,
                        p.total as i64,
                        rfc3339(SystemTime::now()),
                        unix_now(),
                        app
                    ],
                )?;
                if n == 0 {
                    return Err(Error::Conflict(format!("run {id} is not running")));
                }
                if let Some(t) = &p.training {
                    let t =
                        serde_json::to_string(t).map_err(|e| Error::BadRequest(e.to_string()))?;
                    c.execute(
                        "INSERT INTO run_training (run, progress) VALUES (?1, ?2)
                         ON CONFLICT(run) DO UPDATE SET progress = excluded.progress",
                        params![id as i64, t],
                    )?;
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
                c.execute(
                    "UPDATE workflow_runs SET state = ?2, done = ?3, output = ?4, output_sha256 = ?5,
                     error = ?6, receipt = ?7, serial = ?8, updated = ?9, updated_unix = ?10 WHERE id = ?1",
                    params![
                        id as i64,
                        if succeeded { "succeeded" } else { "failed" },
                        f.done as i64,
                        output,
                        f.output_sha256,
                        error,
                        receipt,
                        serial,
                        rfc3339(now),
                        unix_now()
                    ],
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
        let owner = self.store().read(|c| {
            Ok(c.query_row(
                "SELECT app FROM workflow_runs WHERE id = ?1",
                [id as i64],
                |r| r.get::<_, String>(0),
            )
            .optional()?)
        })?;
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
fn expire_stale(c: &Connection, now: SystemTime) -> Result<()> {
    let cutoff = unix_now() - JOB_LEASE_SECS;
    let mut st = c.prepare(
        "SELECT id, workflow, done FROM workflow_runs WHERE state = 'running' AND updated_unix < ?1",
    )?;
    let stale = st
        .query_map([cutoff], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (id, workflow, done) in stale {
        let error = format!("the worker stopped reporting for {JOB_LEASE_SECS} s");
        c.execute(
            "UPDATE workflow_runs SET state = 'failed', error = ?2, updated = ?3, updated_unix = ?4 WHERE id = ?1",
            params![id, error, rfc3339(now), unix_now()],
        )?;
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
    c: &Connection,
    id: u64,
) -> Result<(Option<api::TrainingProgress>, Option<api::TrainingRecord>)> {
    let row: Option<(Option<String>, Option<String>)> = c
        .query_row(
            "SELECT progress, record FROM run_training WHERE run = ?1",
            [id as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((progress, record)) = row else {
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
fn record_training(c: &Connection, now: SystemTime, t: &api::TrainingRecord) -> Result<()> {
    let json = serde_json::to_string(t).map_err(|e| Error::Store(e.to_string()))?;
    c.execute(
        "INSERT INTO run_training (run, record, app, model_header_sha256) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(run) DO UPDATE SET record = excluded.record, app = excluded.app,
         model_header_sha256 = excluded.model_header_sha256",
        params![t.run as i64, json, t.app, t.result.model_header_sha256],
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
pub(crate) fn trainer_of_model(c: &Connection, header_sha256: &str) -> Result<Option<String>> {
    Ok(c.query_row(
        "SELECT app FROM run_training WHERE model_header_sha256 = ?1 AND record IS NOT NULL",
        [header_sha256],
        |r| r.get(0),
    )
    .optional()?)
}
