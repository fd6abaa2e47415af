//! One portable SQL seam over SQLite and PostgreSQL.
//!
//! The coordinator and the audit log write their SQL once, in the subset
//! both engines speak (`$1`-style placeholders, `ON CONFLICT`, `RETURNING`,
//! 64-bit integers, text and byte strings), against [`Db`]. Two backends
//! implement it: [`sqlite::SqliteConn`] (rusqlite, bundled SQLite; the
//! embedded default) and, with the `postgres` feature, [`pg::PgConn`]
//! (tokio-postgres through its blocking client, TLS to the database with
//! rustls). Schemas (DDL) differ between the engines and stay with their
//! owners; everything else is shared.
//!
//! A connection is used from one thread at a time. The PostgreSQL client
//! runs its own small runtime, so it must not be called from inside a
//! Tokio runtime's worker: the coordinator's store gives each connection a
//! thread of its own.

use std::fmt;

pub mod sqlite;

#[cfg(feature = "postgres")]
pub mod pg;

/// A value read from a row.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Any integer column (and PostgreSQL booleans, as 0 or 1).
    Int(i64),
    /// A text column.
    Text(String),
    /// A byte-string column (SQLite `BLOB`, PostgreSQL `BYTEA`).
    Blob(Vec<u8>),
}

impl fmt::Debug for Value {
    // Values may be key material: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

/// A statement parameter, borrowed from the caller.
#[derive(Clone, Copy)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

impl fmt::Debug for Param<'_> {
    // Parameters may be key material: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Param::Null => "null",
            Param::Int(_) => "integer",
            Param::Text(_) => "text",
            Param::Blob(_) => "bytes",
        })
    }
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}
impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Param::Int(i64::from(v))
    }
}
impl From<i32> for Param<'_> {
    fn from(v: i32) -> Self {
        Param::Int(i64::from(v))
    }
}
impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Int(i64::from(v))
    }
}
impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Blob(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Param::Blob(v)
    }
}
impl<'a, const N: usize> From<&'a [u8; N]> for Param<'a> {
    fn from(v: &'a [u8; N]) -> Self {
        Param::Blob(v)
    }
}
impl<'a, T> From<Option<T>> for Param<'a>
where
    T: Into<Param<'a>>,
{
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}
impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Param::Null, Param::Text)
    }
}
impl<'a> From<&'a Option<Vec<u8>>> for Param<'a> {
    fn from(v: &'a Option<Vec<u8>>) -> Self {
        v.as_deref().map_or(Param::Null, Param::Blob)
    }
}

/// Parameters for [`Db::execute`] and [`Db::query`]:
/// `params![name, version]` is `&[Param::from(name), Param::from(version)]`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[$crate::Param<'_>] };
    ($($p:expr),+ $(,)?) => { &[$($crate::Param::from($p)),+][..] };
}

/// A row of a query's result.
#[derive(Clone, Debug)]
pub struct Row(Vec<Value>);

impl Row {
    /// Build a row from its values.
    pub fn new(values: Vec<Value>) -> Row {
        Row(values)
    }

    fn get(&self, i: usize) -> Result<&Value> {
        self.0.get(i).ok_or(Error::Column {
            column: i,
            expected: "a column",
            found: "none",
        })
    }

    fn wrong(i: usize, expected: &'static str, v: &Value) -> Error {
        Error::Column {
            column: i,
            expected,
            found: v.kind(),
        }
    }

    /// An integer column.
    pub fn int(&self, i: usize) -> Result<i64> {
        match self.get(i)? {
            Value::Int(v) => Ok(*v),
            v => Err(Self::wrong(i, "integer", v)),
        }
    }

    /// An integer column that may be NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.get(i)? {
            Value::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    /// A text column.
    pub fn text(&self, i: usize) -> Result<String> {
        match self.get(i)? {
            Value::Text(v) => Ok(v.clone()),
            v => Err(Self::wrong(i, "text", v)),
        }
    }

    /// A text column that may be NULL.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.get(i)? {
            Value::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    /// A byte-string column.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>> {
        match self.get(i)? {
            Value::Blob(v) => Ok(v.clone()),
            v => Err(Self::wrong(i, "bytes", v)),
        }
    }

    /// A byte-string column that may be NULL.
    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>> {
        match self.get(i)? {
            Value::Null => Ok(None),
            _ => self.blob(i).map(Some),
        }
    }
}

/// Which engine a connection speaks, for the few statements that differ
/// (DDL, row locks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// What kind of failure an [`Error`] is, for callers that answer
/// differently (a conflict is the caller's, an outage is retryable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A unique or primary-key constraint refused the write.
    UniqueViolation,
    /// The database cannot be reached, or the connection broke.
    Unavailable,
    /// Two transactions collided (deadlock, serialization failure,
    /// SQLite busy): retrying may succeed.
    Contention,
    /// Anything else.
    Other,
}

/// A database error. The message names the statement's failure, never its
/// parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite refused a statement.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused a statement or the connection failed.
    #[error("postgresql: {message}")]
    Postgres {
        /// What failed.
        message: String,
        /// Its kind.
        kind: ErrorKind,
    },
    /// A column did not hold what the caller expected.
    #[error("column {column}: expected {expected}, found {found}")]
    Column {
        /// The column index.
        column: usize,
        /// What the caller asked for.
        expected: &'static str,
        /// What the row held.
        found: &'static str,
    },
    /// A query that must return a row returned none.
    #[error("the query returned no row")]
    NoRow,
    /// The database URL or options are invalid.
    #[error("database configuration: {0}")]
    Config(String),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => match e.code {
                rusqlite::ErrorCode::ConstraintViolation
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    ErrorKind::UniqueViolation
                }
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    ErrorKind::Contention
                }
                _ => ErrorKind::Other,
            },
            Error::Postgres { kind, .. } => *kind,
            _ => ErrorKind::Other,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connection, in or out of a transaction.
///
/// Statements use `$1`, `$2`, ... placeholders on both engines. Integers
/// are 64-bit (`BIGINT` columns on PostgreSQL).
pub trait Db {
    /// The engine.
    fn dialect(&self) -> Dialect;
    /// Run a statement; returns the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64>;
    /// Run a query; returns every row.
    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>>;
    /// Run statements without parameters, separated by `;` (DDL,
    /// transaction control).
    fn batch(&self, sql: &str) -> Result<()>;
    /// Like [`Db::batch`], but the statements may wait to be sent together
    /// with the next statement (one round trip for both on PostgreSQL;
    /// SQLite runs them at once). An error in them is reported by that
    /// next statement. For transaction control whose result only matters
    /// if what follows succeeds (a savepoint before a job).
    fn batch_deferred(&self, sql: &str) -> Result<()> {
        self.batch(sql)
    }
    /// Whether a transaction is open.
    fn in_transaction(&self) -> bool;
    /// Whether a statement failed in the open transaction so that the
    /// engine aborted it (PostgreSQL; until `ROLLBACK TO SAVEPOINT`).
    /// SQLite keeps a transaction usable after a failed statement.
    fn failed_in_transaction(&self) -> bool {
        false
    }
    /// Whether the connection is broken and must be replaced (a
    /// PostgreSQL connection the server closed).
    fn is_broken(&self) -> bool {
        false
    }
    /// A one-row memo that the connection's owner may offer for the length
    /// of one transaction in which it holds a row lock: the audit log keeps
    /// its locked head row there, so that consecutive appends read it once.
    /// The owner clears it whenever writes are rolled back. None by default.
    fn row_memo(&self) -> Option<&std::cell::RefCell<Option<Row>>> {
        None
    }
    /// Begin a transaction that writes (SQLite: `BEGIN IMMEDIATE`, which
    /// takes the write lock at once).
    fn begin(&self) -> Result<()>;
    /// Commit the open transaction.
    fn commit(&self) -> Result<()> {
        self.batch("COMMIT")
    }
    /// Roll the open transaction back.
    fn rollback(&self) -> Result<()> {
        self.batch("ROLLBACK")
    }

    /// The first row of a query, if any.
    fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    /// The first row of a query; [`Error::NoRow`] if there is none.
    fn query_one(&self, sql: &str, params: &[Param<'_>]) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or(Error::NoRow)
    }
    /// Whether a query returns a row.
    fn exists(&self, sql: &str, params: &[Param<'_>]) -> Result<bool> {
        Ok(self.query_opt(sql, params)?.is_some())
    }
}

/// Run `f` inside a savepoint: its writes are kept if it succeeds and
/// rolled back if it fails, leaving the enclosing transaction usable.
pub fn savepoint<T, E>(db: &dyn Db, f: impl FnOnce(&dyn Db) -> Result<T, E>) -> Result<T, E>
where
    E: From<Error>,
{
    db.batch("SAVEPOINT job")?;
    match f(db) {
        Ok(v) => {
            db.batch("RELEASE SAVEPOINT job")?;
            Ok(v)
        }
        Err(e) => {
            db.batch("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")?;
            Err(e)
        }
    }
}
