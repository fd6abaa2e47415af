//! The durable store: one SQLite database (bundled SQLite, WAL journal,
//! `synchronous = FULL`, `secure_delete = ON`) written by a single writer
//! thread with group commit.
//!
//! Every state change runs as a job on the writer thread, inside a
//! savepoint of the current batch transaction, together with its audit
//! entries (`twinseal-audit` appends in the same transaction). After the
//! batch, the writer signs one audit checkpoint, commits (one fsync for the
//! whole batch) and only then answers each job. So an answer — a released
//! key, an issued certificate — is never sent before its audit entry is
//! durable, and a job whose audit append fails is rolled back and refused.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use twinseal_audit::{AuditLog, CheckpointSigner};

use crate::error::{Error, Result};

/// The database file name inside the data directory.
pub const DB_FILE: &str = "coordinator.db";
/// Most jobs committed together.
pub const MAX_BATCH: usize = 512;
/// Current schema version. Older versions are migrated on open
/// ([`migrate`]); newer ones are refused.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    tags TEXT NOT NULL,
    required_context TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_versions (
    name TEXT NOT NULL REFERENCES keys(name),
    version INTEGER NOT NULL,
    wrapped BLOB,
    created TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS manifests (
    version INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    digest TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    applied_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash BLOB PRIMARY KEY,
    user TEXT NOT NULL,
    created TEXT NOT NULL,
    id TEXT,
    expires INTEGER
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    not_after INTEGER NOT NULL,
    simulated INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    evidence_digest TEXT NOT NULL,
    challenge BLOB NOT NULL,
    der BLOB NOT NULL,
    issued INTEGER NOT NULL
);
";

/// Workflow runs (added after schema version 1 shipped: created on open
/// when missing, which changes nothing else).
const RUNS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS workflow_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow TEXT NOT NULL,
    kind TEXT NOT NULL,
    app TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    started_by TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    updated_unix INTEGER NOT NULL,
    serial TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    output_sha256 TEXT,
    receipt TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS workflow_runs_queue ON workflow_runs (state, app, id);
CREATE TABLE IF NOT EXISTS run_training (
    run INTEGER PRIMARY KEY REFERENCES workflow_runs(id),
    progress TEXT,
    record TEXT,
    app TEXT,
    model_header_sha256 TEXT UNIQUE
);
";

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&mut rusqlite::Transaction<'_>) -> Completion + Send>;

/// The store: a writer thread and a reader connection.
pub struct Store {
    path: PathBuf,
    jobs: Mutex<Option<tokio::sync::mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

/// Open a connection with the durability settings.
pub fn open_connection(path: &Path, create: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::Store(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Schema version 2: bearer tokens get an id and an expiry (tokens from
/// version 1 get an id from their hash and no expiry: they keep working
/// until revoked, as before).
const MIGRATE_1_TO_2: &str = "
ALTER TABLE tokens ADD COLUMN id TEXT;
ALTER TABLE tokens ADD COLUMN expires INTEGER;
UPDATE tokens SET id = lower(hex(substr(hash, 1, 8))) WHERE id IS NULL;
";

/// Bring a database of an older schema version to [`SCHEMA_VERSION`], in
/// one transaction, and return the version it had. Refuses versions it
/// does not know. Data is kept: migrations only add.
pub fn migrate(conn: &mut Connection) -> Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version = meta_get(&tx, "schema_version")?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| Error::Store("the database has no schema version".into()))?;
    match version {
        SCHEMA_VERSION => return Ok(version),
        1 => {
            tx.execute_batch(MIGRATE_1_TO_2)?;
            tracing::info!("store: migrated schema version 1 to 2 (token ids and expiry)");
        }
        v => {
            return Err(Error::Store(format!(
                "unsupported schema version {v} (this build knows 1 to {SCHEMA_VERSION})"
            )));
        }
    }
    tx.execute_batch(TOKENS_INDEX)?;
    meta_put(&tx, "schema_version", SCHEMA_VERSION.to_string().as_bytes())?;
    tx.commit()?;
    Ok(version)
}

const TOKENS_INDEX: &str = "CREATE UNIQUE INDEX IF NOT EXISTS tokens_by_user ON tokens (user, id);";

/// Create the schema (idempotent) in a fresh database.
pub fn create_schema(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(RUNS_SCHEMA)?;
    conn.execute_batch(TOKENS_INDEX)?;
    AuditLog::init(conn)?;
    conn.execute(
        "INSERT OR IGNORE INTO meta (k, v) VALUES ('schema_version', ?1)",
        [SCHEMA_VERSION.to_string().into_bytes()],
    )?;
    Ok(())
}

/// Read a `meta` value.
pub fn meta_get(conn: &Connection, k: &str) -> Result<Option<Vec<u8>>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
        .optional()?)
}

/// Write a `meta` value.
pub fn meta_put(conn: &Connection, k: &str, v: &[u8]) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        rusqlite::params![k, v],
    )?;
    Ok(())
}

impl Store {
    /// Open an initialized database and start the writer thread, which
    /// signs a checkpoint with `signer` after every batch that appended
    /// audit entries.
    pub fn open(data_dir: &Path, signer: CheckpointSigner) -> Result<Store> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Err(Error::Config(format!(
                "{} does not exist: run `twinseal coordinator init` first",
                path.display()
            )));
        }
        let writer_conn = open_connection(&path, false)?;
        let version = meta_get(&writer_conn, "schema_version")?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok());
        if version != Some(SCHEMA_VERSION) {
            return Err(Error::Store(format!(
                "unsupported schema version {version:?} (this build knows {SCHEMA_VERSION})"
            )));
        }
        writer_conn.execute_batch(RUNS_SCHEMA)?;
        let reader = open_connection(&path, false)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(4 * MAX_BATCH);
        let handle = std::thread::Builder::new()
            .name("twinseal-store-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, signer))
            .map_err(|e| Error::io("starting the store writer", e))?;
        Ok(Store {
            path,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            reader: Mutex::new(reader),
        })
    }

    /// Run `f` on the writer thread inside a savepoint of the next batch;
    /// resolves once the batch is durably committed. If `f` fails, its
    /// writes are rolled back and the other jobs of the batch still commit.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (done, wait) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |tx: &mut rusqlite::Transaction<'_>| {
            let result = (|| {
                let sp = tx.savepoint()?;
                let v = f(&sp)?;
                sp.commit()?;
                Ok(v)
            })();
            Box::new(move |committed: Result<(), String>| {
                let out = match committed {
                    Ok(()) => result,
                    Err(e) => Err(Error::Store(format!("commit failed: {e}"))),
                };
                let _ = done.send(out);
            })
        });
        let sender = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::ShuttingDown)?;
        // A full queue makes this task wait: back-pressure, not loss.
        sender.send(job).await.map_err(|_| Error::ShuttingDown)?;
        wait.await
            .map_err(|_| Error::Store("the store could not run the write".into()))?
    }

    /// Run a read on the reader connection (sees committed state only).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }

    /// Stop accepting jobs, let the writer drain and commit, and wait for it.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: tokio::sync::mpsc::Receiver<Job>,
    signer: CheckpointSigner,
) {
    let mut checkpointed = AuditLog::size(&conn).unwrap_or(0);
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::error!(error = %e, "store: cannot begin a transaction");
                // Dropping the jobs answers each with a store error;
                // nothing was written.
                drop(jobs);
                continue;
            }
        };
        let completions: Vec<Completion> = jobs.into_iter().map(|job| job(&mut tx)).collect();
        let outcome = (|| -> Result<u64> {
            let size = AuditLog::size(&tx)?;
            if size > checkpointed {
                AuditLog::checkpoint(&tx, &signer, SystemTime::now())?;
            }
            tx.commit()?;
            Ok(size)
        })();
        let result = match outcome {
            Ok(size) => {
                checkpointed = size;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "store: batch commit failed; every job in it is refused");
                Err(e.to_string())
            }
        };
        for c in completions {
            c(result.clone());
        }
    }
}
