//! Workflow runs and training records: every statement the workflow
//! service runs, written once for both engines.

use twinseal_sql::{Db, Dialect, Row, params};

use crate::error::Result;

const COLUMNS: &str = "id, workflow, kind, app, state, started_by, created, updated, serial, \
                       done, total, output, output_sha256, error, receipt, spec";

/// A stored run.
#[derive(Debug)]
pub struct RunRow {
    /// Its number.
    pub id: i64,
    /// The manifest workflow.
    pub workflow: String,
    /// `inference`, `train`, ...
    pub kind: String,
    /// The app that runs it.
    pub app: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub state: String,
    /// Who queued it.
    pub started_by: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339.
    pub updated: String,
    /// The certificate of the worker that claimed it.
    pub serial: Option<String>,
    /// Items done.
    pub done: i64,
    /// Items in all.
    pub total: i64,
    /// Where the output was written.
    pub output: Option<String>,
    /// SHA-256 of the sealed output.
    pub output_sha256: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The worker's receipt, JSON.
    pub receipt: Option<String>,
    /// The job, JSON.
    pub spec: String,
}

fn run_row(r: &Row) -> Result<RunRow> {
    Ok(RunRow {
        id: r.int(0)?,
        workflow: r.text(1)?,
        kind: r.text(2)?,
        app: r.text(3)?,
        state: r.text(4)?,
        started_by: r.text(5)?,
        created: r.text(6)?,
        updated: r.text(7)?,
        serial: r.opt_text(8)?,
        done: r.int(9)?,
        total: r.int(10)?,
        output: r.opt_text(11)?,
        output_sha256: r.opt_text(12)?,
        error: r.opt_text(13)?,
        receipt: r.opt_text(14)?,
        spec: r.text(15)?,
    })
}

/// The number the next run gets (inside the writing transaction, which
/// holds the store's write lock).
pub fn next_id(db: &dyn Db) -> Result<i64> {
    Ok(db
        .query_one(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM workflow_runs",
            params![],
        )?
        .int(0)?)
}

/// A run to queue.
#[derive(Debug)]
pub struct NewRun<'a> {
    /// From [`next_id`].
    pub id: i64,
    /// The manifest workflow.
    pub workflow: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// The app that runs it.
    pub app: &'a str,
    /// The job, JSON.
    pub spec: &'a str,
    /// Who queues it.
    pub started_by: &'a str,
    /// Now, RFC 3339.
    pub now: &'a str,
    /// Now, Unix seconds.
    pub now_unix: i64,
}

/// Queue a run.
pub fn insert(db: &dyn Db, r: &NewRun<'_>) -> Result<()> {
    db.execute(
        "INSERT INTO workflow_runs (id, workflow, kind, app, spec, state, started_by, created, \
         updated, updated_unix) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $7, $8)",
        params![
            r.id,
            r.workflow,
            r.kind,
            r.app,
            r.spec,
            r.started_by,
            r.now,
            r.now_unix
        ],
    )?;
    Ok(())
}

/// One run.
pub fn get(db: &dyn Db, id: i64) -> Result<Option<RunRow>> {
    db.query_opt(
        &format!("SELECT {COLUMNS} FROM workflow_runs WHERE id = $1"),
        params![id],
    )?
    .map(|r| run_row(&r))
    .transpose()
}

/// The newest `limit` runs, newest first.
pub fn newest(db: &dyn Db, limit: i64) -> Result<Vec<RunRow>> {
    db.query(
        &format!("SELECT {COLUMNS} FROM workflow_runs ORDER BY id DESC LIMIT $1"),
        params![limit],
    )?
    .iter()
    .map(run_row)
    .collect()
}

/// The app whose workflow run `id` is.
pub fn app_of(db: &dyn Db, id: i64) -> Result<Option<String>> {
    Ok(db
        .query_opt("SELECT app FROM workflow_runs WHERE id = $1", params![id])?
        .map(|r| r.text(0))
        .transpose()?)
}

/// The oldest queued run of `app`, locked for the claiming transaction
/// (`FOR UPDATE SKIP LOCKED` on PostgreSQL: a run another replica is
/// claiming is passed over, not waited for).
pub fn oldest_queued(db: &dyn Db, app: &str) -> Result<Option<i64>> {
    let sql = match db.dialect() {
        Dialect::Sqlite => {
            "SELECT id FROM workflow_runs WHERE state = 'queued' AND app = $1 ORDER BY id LIMIT 1"
        }
        Dialect::Postgres => {
            "SELECT id FROM workflow_runs WHERE state = 'queued' AND app = $1 ORDER BY id LIMIT 1 \
             FOR UPDATE SKIP LOCKED"
        }
    };
    Ok(db
        .query_opt(sql, params![app])?
        .map(|r| r.int(0))
        .transpose()?)
}

/// Mark a run claimed by the worker with certificate `serial`.
pub fn claim(db: &dyn Db, id: i64, serial: &str, now: &str, now_unix: i64) -> Result<()> {
    db.execute(
        "UPDATE workflow_runs SET state = 'running', serial = $2, updated = $3, \
         updated_unix = $4 WHERE id = $1",
        params![id, serial, now, now_unix],
    )?;
    Ok(())
}

/// Record progress of a running run of `app`; returns false if no such
/// run is running.
pub fn progress(
    db: &dyn Db,
    id: i64,
    app: &str,
    done: i64,
    total: i64,
    now: &str,
    now_unix: i64,
) -> Result<bool> {
    Ok(db.execute(
        "UPDATE workflow_runs SET done = $2, total = $3, updated = $4, updated_unix = $5 \
         WHERE id = $1 AND state = 'running' AND app = $6",
        params![id, done, total, now, now_unix, app],
    )? > 0)
}

/// A finished run's outcome.
#[derive(Debug)]
pub struct Finish<'a> {
    /// The run.
    pub id: i64,
    /// `succeeded` or `failed`.
    pub state: &'a str,
    /// Items done.
    pub done: i64,
    /// Where the output was written.
    pub output: Option<&'a str>,
    /// SHA-256 of the sealed output.
    pub output_sha256: Option<&'a str>,
    /// Why it failed.
    pub error: Option<&'a str>,
    /// The receipt, JSON.
    pub receipt: Option<&'a str>,
    /// The reporting worker's certificate.
    pub serial: &'a str,
    /// Now, RFC 3339.
    pub now: &'a str,
    /// Now, Unix seconds.
    pub now_unix: i64,
}

/// Record a run's outcome.
pub fn finish(db: &dyn Db, f: &Finish<'_>) -> Result<()> {
    db.execute(
        "UPDATE workflow_runs SET state = $2, done = $3, output = $4, output_sha256 = $5, \
         error = $6, receipt = $7, serial = $8, updated = $9, updated_unix = $10 WHERE id = $1",
        params![
            f.id,
            f.state,
            f.done,
            f.output,
            f.output_sha256,
            f.error,
            f.receipt,
            f.serial,
            f.now,
            f.now_unix
        ],
    )?;
    Ok(())
}

/// Running runs not updated since `cutoff` (Unix seconds): id, workflow,
/// items done.
pub fn stale(db: &dyn Db, cutoff: i64) -> Result<Vec<(i64, String, i64)>> {
    db.query(
        "SELECT id, workflow, done FROM workflow_runs WHERE state = 'running' AND updated_unix < $1",
        params![cutoff],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.text(1)?, r.int(2)?)))
    .collect()
}

/// Fail a run.
pub fn fail(db: &dyn Db, id: i64, error: &str, now: &str, now_unix: i64) -> Result<()> {
    db.execute(
        "UPDATE workflow_runs SET state = 'failed', error = $2, updated = $3, updated_unix = $4 \
         WHERE id = $1",
        params![id, error, now, now_unix],
    )?;
    Ok(())
}

/// A training run's progress and record, JSON (none: nothing reported).
pub fn training(db: &dyn Db, id: i64) -> Result<Option<(Option<String>, Option<String>)>> {
    db.query_opt(
        "SELECT progress, record FROM run_training WHERE run = $1",
        params![id],
    )?
    .map(|r| Ok((r.opt_text(0)?, r.opt_text(1)?)))
    .transpose()
}

/// Store a training run's latest progress, JSON.
pub fn set_training_progress(db: &dyn Db, id: i64, progress: &str) -> Result<()> {
    db.execute(
        "INSERT INTO run_training (run, progress) VALUES ($1, $2) \
         ON CONFLICT (run) DO UPDATE SET progress = excluded.progress",
        params![id, progress],
    )?;
    Ok(())
}

/// Store a training run's record, JSON.
pub fn set_training_record(
    db: &dyn Db,
    id: i64,
    record: &str,
    app: &str,
    model_header_sha256: &str,
) -> Result<()> {
    db.execute(
        "INSERT INTO run_training (run, record, app, model_header_sha256) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (run) DO UPDATE SET record = excluded.record, app = excluded.app, \
         model_header_sha256 = excluded.model_header_sha256",
        params![id, record, app, model_header_sha256],
    )?;
    Ok(())
}

/// The app whose recorded training produced the model with this header
/// digest.
pub fn trainer_of_model(db: &dyn Db, header_sha256: &str) -> Result<Option<String>> {
    Ok(db
        .query_opt(
            "SELECT app FROM run_training WHERE model_header_sha256 = $1 AND record IS NOT NULL",
            params![header_sha256],
        )?
        .map(|r| r.text(0))
        .transpose()?)
}
