//! The durable store, behind one seam with two engines:
//!
//! - SQLite (the embedded default: one file in the data directory, bundled
//!   SQLite, WAL journal, `synchronous = FULL`, `secure_delete = ON`);
//! - PostgreSQL (`[store] url = "postgres://..."`: any number of
//!   coordinator replicas on one database).
//!
//! Every SQL statement lives in this module ([`state`], [`runs`],
//! [`schema`]) and in the audit log, written once for both engines
//! through `twinseal_sql::Db`.
//!
//! Every state change runs as a job on the writer thread, inside a
//! savepoint of the current batch transaction, together with its audit
//! entries (`twinseal-audit` appends in the same transaction). After the
//! batch, the writer signs one audit checkpoint, commits (one fsync for the
//! whole batch) and only then answers each job. So an answer — a released
//! key, an issued certificate — is never sent before its audit entry is
//! durable, and a job whose audit append fails is rolled back and refused.
//!
//! Several replicas on one PostgreSQL database: each batch begins by
//! locking the audit log's head row (`SELECT ... FOR UPDATE`), so batches
//! from all replicas commit one after another, each costing its replica
//! one lock wait and one commit, and the log stays one totally ordered
//! log. A batch's decisive checks (a key still enabled, a certificate not
//! revoked, a run still queued) read what other replicas committed before
//! it, because they run after the lock. A broken connection is replaced
//! before the next batch or read; requests meanwhile fail with
//! [`Error::StoreUnavailable`] (503).

pub mod runs;
pub mod schema;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use twinseal_audit::{AuditLog, CheckpointSigner};
use twinseal_sql::{Db, Dialect, ErrorKind, params};
use zeroize::Zeroizing;

use crate::config::{Config, StoreConfig};
use crate::error::{Error, Result};

pub use schema::{SCHEMA_VERSION, meta_get, meta_put};

/// The database file name inside the data directory (SQLite).
pub const DB_FILE: &str = "coordinator.db";
/// Most jobs committed together.
pub const MAX_BATCH: usize = 512;

/// A connection of either engine.
pub type Conn = Box<dyn Db + Send>;

/// Where the state lives.
#[derive(Clone, Debug)]
pub enum Target {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(twinseal_sql::pg::PgOptions),
}

impl Target {
    /// The target a configuration names (reads the database password from
    /// its environment variable or file).
    pub fn from_config(config: &Config) -> Result<Target> {
        Self::resolve(&config.store, &config.data_dir)
    }

    fn resolve(store: &StoreConfig, data_dir: &Path) -> Result<Target> {
        let Some(url) = &store.url else {
            return Ok(Target::Sqlite(data_dir.join(DB_FILE)));
        };
        let mut o = twinseal_sql::pg::PgOptions::new(url);
        o.ca_file = store.ca_file.clone();
        o.password = match (&store.password_env, &store.password_file) {
            (Some(var), None) => Some(std::env::var(var).map_err(|_| {
                Error::Config(format!(
                    "[store] password_env: the environment variable {var} is not set"
                ))
            })?),
            (None, Some(file)) => {
                let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
                    Error::io(
                        format!("reading the database password {}", file.display()),
                        e,
                    )
                })?);
                Some(text.trim_end_matches(['\n', '\r']).to_string())
            }
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "[store] names both password_env and password_file: name one".into(),
                ));
            }
        };
        // Checks the URL (no password in it, TLS to remote hosts).
        o.config()?;
        Ok(Target::Postgres(o))
    }

    /// What the target is, for messages (no password).
    pub fn describe(&self) -> String {
        match self {
            Target::Sqlite(p) => format!("SQLite database {}", p.display()),
            Target::Postgres(o) => format!("PostgreSQL database {}", o.url),
        }
    }

    /// Connect the store writer's connection: on PostgreSQL one that the
    /// calling thread (the writer, never a Tokio worker) drives itself.
    fn connect_writer(&self) -> Result<Conn> {
        match self {
            Target::Sqlite(_) => self.connect(false),
            Target::Postgres(o) => Ok(Box::new(
                twinseal_sql::pg::PgConn::connect_dedicated(o).map_err(|e| pg_error(o, e))?,
            )),
        }
    }

    /// Connect (SQLite: open the file, creating it if `create`).
    pub fn connect(&self, create: bool) -> Result<Conn> {
        match self {
            Target::Sqlite(p) => {
                if !create && !p.exists() {
                    return Err(Error::Config(format!(
                        "{} does not exist: run `twinseal coordinator init` first",
                        p.display()
                    )));
                }
                Ok(Box::new(twinseal_sql::sqlite::SqliteConn::open(p, create)?))
            }
            Target::Postgres(o) => Ok(Box::new(
                twinseal_sql::pg::PgConn::connect(o).map_err(|e| pg_error(o, e))?,
            )),
        }
    }
}

fn pg_error(o: &twinseal_sql::pg::PgOptions, e: twinseal_sql::Error) -> Error {
    match e.kind() {
        ErrorKind::Unavailable => Error::StoreUnavailable(format!(
            "cannot reach the PostgreSQL database {}: {e}",
            o.url
        )),
        _ => Error::Config(format!("PostgreSQL database {}: {e}", o.url)),
    }
}

type Completion = Box<dyn FnOnce(Result<(), (ErrorKind, String)>) + Send>;
/// A write: run in the batch (`Some`; returns whether it succeeded, so
/// that the writer rolls a failed one back to its savepoint), or refused
/// without running (`None`: no connection); its completion answers the
/// caller.
type Job = Box<dyn FnOnce(Option<&dyn Db>) -> (bool, Completion) + Send>;

/// The store: a writer thread and a reader connection.
pub struct Store {
    target: Target,
    jobs: Mutex<Option<tokio::sync::mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    reader: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.target.describe())
    }
}

impl Store {
    /// Open an initialized database and start the writer thread, which
    /// signs a checkpoint with `signer` after every batch that appended
    /// audit entries.
    pub fn open(target: Target, signer: CheckpointSigner) -> Result<Store> {
        let reader = target.connect(false)?;
        schema::check_version(&*reader)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(4 * MAX_BATCH);
        let t = target.clone();
        // The writer connects on its own thread (a PostgreSQL writer
        // connection is driven by that thread), and says how it went.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let handle = std::thread::Builder::new()
            .name("twinseal-store-writer".into())
            .spawn(move || match t.connect_writer() {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    writer_loop(t, conn, rx, signer)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::io("starting the store writer", e))?;
        ready_rx
            .recv()
            .map_err(|_| Error::Store("the store writer did not start".into()))??;
        Ok(Store {
            target,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            reader: Mutex::new(Some(reader)),
        })
    }

    /// The engine.
    pub fn dialect(&self) -> Dialect {
        match self.target {
            Target::Sqlite(_) => Dialect::Sqlite,
            Target::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Run `f` on the writer thread inside a savepoint of the next batch;
    /// resolves once the batch is durably committed. If `f` fails, its
    /// writes are rolled back and the other jobs of the batch still commit.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Db) -> Result<T> + Send + 'static,
    {
        let (done, wait) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |db: Option<&dyn Db>| {
            let result = db.map(f);
            let ok = matches!(result, Some(Ok(_)));
            let completion: Completion =
                Box::new(move |committed: Result<(), (ErrorKind, String)>| {
                    let out = match (committed, result) {
                        (Ok(()), Some(result)) => result,
                        (Ok(()), None) => Err(Error::Store("the write did not run".into())),
                        (Err((ErrorKind::Unavailable, e)), _) => Err(Error::StoreUnavailable(e)),
                        (Err((_, e)), _) => Err(Error::Store(format!("commit failed: {e}"))),
                    };
                    let _ = done.send(out);
                });
            (ok, completion)
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
    /// Blocks the calling thread for the read (one round trip on
    /// PostgreSQL); reconnects first if the connection broke.
    pub fn read<T>(&self, f: impl FnOnce(&dyn Db) -> Result<T>) -> Result<T> {
        let mut guard = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(|c| c.is_broken()) {
            *guard = None;
            *guard = Some(self.target.connect(false)?);
        }
        let conn = guard.as_ref().ok_or(Error::ShuttingDown)?;
        let out = f(&**conn);
        if matches!(out, Err(Error::StoreUnavailable(_))) {
            *guard = None;
        }
        out
    }

    /// Run reads in one read-only transaction: a consistent snapshot.
    pub fn read_snapshot<T>(&self, f: impl FnOnce(&dyn Db) -> Result<T>) -> Result<T> {
        self.read(|db| {
            db.batch(match db.dialect() {
                Dialect::Sqlite => "BEGIN DEFERRED",
                Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            })?;
            let out = f(db);
            let end = db.rollback();
            let v = out?;
            end?;
            Ok(v)
        })
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

/// A batch's connection: the writer's, plus the audit head's row, read
/// (and locked) once at the start of the batch and kept current by the
/// appends (`Db::row_memo`), so that an append costs no read of it. Cleared
/// whenever a job's writes are rolled back.
struct BatchDb<'a> {
    db: &'a dyn Db,
    head: std::cell::RefCell<Option<twinseal_sql::Row>>,
}

impl Db for BatchDb<'_> {
    fn dialect(&self) -> Dialect {
        self.db.dialect()
    }
    fn execute(&self, sql: &str, params: &[twinseal_sql::Param<'_>]) -> twinseal_sql::Result<u64> {
        self.db.execute(sql, params)
    }
    fn query(
        &self,
        sql: &str,
        params: &[twinseal_sql::Param<'_>],
    ) -> twinseal_sql::Result<Vec<twinseal_sql::Row>> {
        self.db.query(sql, params)
    }
    fn batch(&self, sql: &str) -> twinseal_sql::Result<()> {
        self.db.batch(sql)
    }
    fn batch_deferred(&self, sql: &str) -> twinseal_sql::Result<()> {
        self.db.batch_deferred(sql)
    }
    fn in_transaction(&self) -> bool {
        self.db.in_transaction()
    }
    fn failed_in_transaction(&self) -> bool {
        self.db.failed_in_transaction()
    }
    fn is_broken(&self) -> bool {
        self.db.is_broken()
    }
    fn begin(&self) -> twinseal_sql::Result<()> {
        self.db.begin()
    }
    fn commit(&self) -> twinseal_sql::Result<()> {
        self.db.commit()
    }
    fn rollback(&self) -> twinseal_sql::Result<()> {
        self.db.rollback()
    }
    fn row_memo(&self) -> Option<&std::cell::RefCell<Option<twinseal_sql::Row>>> {
        Some(&self.head)
    }
}

/// Begin a batch: the write lock (SQLite) or the audit head's row lock
/// (PostgreSQL, which orders the batches of every replica); the head row
/// goes into the batch's memo. Returns the log's size.
fn begin_batch(db: &BatchDb<'_>) -> Result<u64> {
    db.begin()?;
    let sql = match db.dialect() {
        Dialect::Sqlite => "SELECT size, frontier, last_leaf FROM audit_tree WHERE id = 1",
        Dialect::Postgres => {
            "SELECT size, frontier, last_leaf FROM audit_tree WHERE id = 1 FOR UPDATE"
        }
    };
    let row = db.query_one(sql, params![])?;
    let size = row.int(0)?;
    *db.head.borrow_mut() = Some(row);
    u64::try_from(size).map_err(|_| Error::Store("negative audit log size".into()))
}

fn kind_of(e: &Error) -> ErrorKind {
    match e {
        Error::StoreUnavailable(_) => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    }
}

/// Answer jobs that did not run (nothing was written).
fn refuse(jobs: impl IntoIterator<Item = Job>, e: &Error) {
    let failure = (kind_of(e), e.to_string());
    for job in jobs {
        job(None).1(Err(failure.clone()));
    }
}

/// Run a batch's jobs, each in the savepoint `job` (the last one's
/// release and the next one's start go with the job's first statement);
/// a job that fails is rolled back to it. Returns the completions, or the
/// failure that ends the batch.
fn run_jobs(db: &BatchDb<'_>, jobs: Vec<Job>) -> (Vec<Completion>, Result<()>) {
    let mut completions = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    let mut first = true;
    while let Some(job) = jobs.next() {
        let step = if first {
            "SAVEPOINT job"
        } else {
            "RELEASE SAVEPOINT job; SAVEPOINT job"
        };
        first = false;
        // Sent with the job's first statement (PostgreSQL): one round trip.
        if let Err(e) = db.batch_deferred(step) {
            let e = Error::from(e);
            refuse(std::iter::once(job).chain(jobs), &e);
            return (completions, Err(e));
        }
        let (ok, completion) = job(Some(db));
        // A job that answered Ok although one of its statements failed
        // (the engine aborted the transaction): its writes are rolled
        // back and it is refused, so the batch still commits the others.
        let swallowed = ok && db.failed_in_transaction();
        if swallowed {
            completion(Err((
                ErrorKind::Other,
                "a statement of the write failed; it was rolled back".into(),
            )));
        } else {
            completions.push(completion);
        }
        if !ok || swallowed {
            // The head row may have changed in the job: read it again.
            db.head.borrow_mut().take();
            if let Err(e) = db.batch("ROLLBACK TO SAVEPOINT job") {
                let e = Error::from(e);
                refuse(jobs, &e);
                return (completions, Err(e));
            }
        }
    }
    (completions, Ok(()))
}

fn writer_loop(
    target: Target,
    conn: Conn,
    mut rx: tokio::sync::mpsc::Receiver<Job>,
    signer: CheckpointSigner,
) {
    let mut conn = Some(conn);
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut fresh = false;
        if conn.as_ref().is_none_or(|c| c.is_broken()) {
            conn = None;
            match target.connect_writer() {
                Ok(c) => {
                    tracing::info!("store: reconnected to the database");
                    conn = Some(c);
                    fresh = true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "store: the database is unreachable; refusing the batch");
                    refuse(jobs, &e);
                    continue;
                }
            }
        }
        // Begin; an idle connection the server dropped (a restart, a
        // failover) shows only now: reconnect once and begin again.
        let begun = loop {
            let attempt = match conn.as_deref() {
                Some(raw) => {
                    let probe = BatchDb {
                        db: raw,
                        head: std::cell::RefCell::new(None),
                    };
                    match begin_batch(&probe) {
                        Ok(size) => Ok((size, probe.head.into_inner())),
                        Err(e) => {
                            let _ = raw.rollback();
                            Err(e)
                        }
                    }
                }
                None => Err(Error::StoreUnavailable("no connection".into())),
            };
            match attempt {
                Ok(v) => break Some(v),
                Err(Error::StoreUnavailable(_)) if !fresh => {
                    fresh = true;
                    conn = None;
                    match target.connect_writer() {
                        Ok(c) => {
                            tracing::info!("store: reconnected to the database");
                            conn = Some(c);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "store: the database is unreachable; refusing the batch");
                            break None;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "store: cannot begin a transaction");
                    if matches!(e, Error::StoreUnavailable(_)) {
                        conn = None;
                    }
                    refuse(std::mem::take(&mut jobs), &e);
                    break None;
                }
            }
        };
        let Some((size, head)) = begun else {
            if !jobs.is_empty() {
                refuse(
                    jobs,
                    &Error::StoreUnavailable("the database is unreachable".into()),
                );
            }
            continue;
        };
        let Some(raw) = conn.as_deref() else { continue };
        let batch = BatchDb {
            db: raw,
            head: std::cell::RefCell::new(head),
        };
        let db = &batch;
        let (completions, ran) = run_jobs(db, jobs);
        let outcome = (|| -> Result<()> {
            ran?;
            if AuditLog::size(db)? > size {
                AuditLog::checkpoint(db, &signer, SystemTime::now())?;
            }
            db.commit()?;
            Ok(())
        })();
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "store: batch commit failed; every job in it is refused");
                if db.in_transaction() {
                    let _ = db.rollback();
                }
                Err((kind_of(&e), e.to_string()))
            }
        };
        if matches!(result, Err((ErrorKind::Unavailable, _))) {
            conn = None;
        }
        for c in completions {
            c(result.clone());
        }
    }
}
