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
        if w.kind != "score" {
            return Err(Error::BadRequest(format!(
                "workflow {name}: kind {:?} cannot run yet (only score)",
                w.kind
            )));
        }
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
                let spec = api::Job {
                    run: next as u64,
                    workflow: workflow.clone(),
                    kind: w.kind.clone(),
                    input: api::SealedLocation {
                        location: input.location,
                        key: input.key,
                        context: input.context,
                    },
                    output: api::SealedLocation {
                        location: format!("{}/run-{next}.sealed", w.output),
                        key: w.output_key,
                        context: [
                            ("purpose".to_string(), "workflow-output".to_string()),
                            ("workflow".to_string(), workflow.clone()),
                            ("run".to_string(), next.to_string()),
                        ]
                        .into(),
                    },
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
                .map(|r| finish_row(r).map(|r| r.info))
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
        let serial = match caller {
            Caller::App(a) => a.serial.clone(),
            _ => unreachable!("running_app accepts apps only"),
        };
        let succeeded = f.error.is_none();
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
