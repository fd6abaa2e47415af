//! The SQLite backend: bundled SQLite through rusqlite, WAL journal,
//! `synchronous = FULL`, `secure_delete = ON`, foreign keys on.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::{Db, Dialect, Error, Param, Result, Row, Value};

/// A SQLite connection.
pub struct SqliteConn(Connection);

impl std::fmt::Debug for SqliteConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteConn")
    }
}

impl SqliteConn {
    /// Open `path` with the durability settings (creating it if `create`).
    pub fn open(path: &Path, create: bool) -> Result<SqliteConn> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| Error::Config(format!("opening {}: {e}", path.display())))?;
        Self::configure(conn)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<SqliteConn> {
        Self::configure(Connection::open_in_memory()?)
    }

    fn configure(conn: Connection) -> Result<SqliteConn> {
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(SqliteConn(conn))
    }

    /// The rusqlite connection (for SQLite-only maintenance such as WAL
    /// checkpoints).
    pub fn connection(&self) -> &Connection {
        &self.0
    }
}

/// `$1` -> `?1` outside quoted text: SQLite reads `$1` as a named
/// parameter, numbered by first appearance, `?1` by its number.
fn placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '$' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

struct Bind<'a>(&'a Param<'a>);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self.0 {
            Param::Null => ValueRef::Null,
            Param::Int(v) => ValueRef::Integer(v),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn binds<'a>(params: &'a [Param<'a>]) -> Vec<Bind<'a>> {
    params.iter().map(Bind).collect()
}

fn value(v: ValueRef<'_>) -> Result<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(_) => {
            return Err(Error::Column {
                column: 0,
                expected: "integer, text or bytes",
                found: "real",
            });
        }
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|_| Error::Column {
                    column: 0,
                    expected: "UTF-8 text",
                    found: "invalid UTF-8",
                })?
                .to_owned(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

fn execute(c: &Connection, sql: &str, params: &[Param<'_>]) -> Result<u64> {
    let mut st = c.prepare_cached(&placeholders(sql))?;
    let b = binds(params);
    let n = st.execute(rusqlite::params_from_iter(b.iter()))?;
    Ok(n as u64)
}

fn query(c: &Connection, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
    let mut st = c.prepare_cached(&placeholders(sql))?;
    let columns = st.column_count();
    let b = binds(params);
    let mut rows = st.query(rusqlite::params_from_iter(b.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(value(r.get_ref(i)?).map_err(|e| match e {
                Error::Column {
                    expected, found, ..
                } => Error::Column {
                    column: i,
                    expected,
                    found,
                },
                e => e,
            })?);
        }
        out.push(Row::new(values));
    }
    Ok(out)
}

/// Also for rusqlite's own connections, transactions and savepoints, so
/// code that holds one (tests, tools) can pass it where a [`Db`] is asked.
macro_rules! sqlite_db {
    ($t:ty, $conn:ident => $e:expr) => {
        impl Db for $t {
            fn dialect(&self) -> Dialect {
                Dialect::Sqlite
            }
            fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
                let $conn = self;
                execute($e, sql, params)
            }
            fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
                let $conn = self;
                query($e, sql, params)
            }
            fn batch(&self, sql: &str) -> Result<()> {
                let $conn = self;
                Ok($e.execute_batch(sql)?)
            }
            fn in_transaction(&self) -> bool {
                let $conn = self;
                !$e.is_autocommit()
            }
            fn begin(&self) -> Result<()> {
                self.batch("BEGIN IMMEDIATE")
            }
        }
    };
}

sqlite_db!(SqliteConn, c => &c.0);
sqlite_db!(Connection, c => c);
sqlite_db!(rusqlite::Transaction<'_>, c => c);
sqlite_db!(rusqlite::Savepoint<'_>, c => c);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, params, savepoint};

    #[test]
    fn placeholders_become_numbered_outside_quotes() {
        assert_eq!(
            placeholders("SELECT $2, '$1', $10 FROM t WHERE a = $1"),
            "SELECT ?2, '$1', ?10 FROM t WHERE a = ?1"
        );
        assert!(matches!(placeholders("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn values_round_trip_and_placeholders_bind_by_number() {
        let db = SqliteConn::open_in_memory().unwrap();
        db.batch("CREATE TABLE t (a INTEGER, b TEXT, c BLOB, d TEXT)")
            .unwrap();
        let none: Option<&str> = None;
        db.execute(
            "INSERT INTO t (c, b, a, d) VALUES ($3, $2, $1, $4)",
            params![7_i64, "seven", &b"\x00\x07"[..], none],
        )
        .unwrap();
        let r = db
            .query_one("SELECT a, b, c, d FROM t WHERE b = $1", params!["seven"])
            .unwrap();
        assert_eq!(r.int(0).unwrap(), 7);
        assert_eq!(r.text(1).unwrap(), "seven");
        assert_eq!(r.blob(2).unwrap(), b"\x00\x07");
        assert_eq!(r.opt_text(3).unwrap(), None);
        assert!(matches!(
            r.text(0),
            Err(Error::Column {
                column: 0,
                found: "integer",
                ..
            })
        ));
        assert!(matches!(
            db.query_one("SELECT a FROM t WHERE a = 8", params![]),
            Err(Error::NoRow)
        ));
    }

    #[test]
    fn a_failed_savepoint_rolls_back_only_its_writes() {
        let db = SqliteConn::open_in_memory().unwrap();
        db.batch("CREATE TABLE t (a INTEGER PRIMARY KEY)").unwrap();
        db.begin().unwrap();
        assert!(db.in_transaction());
        savepoint(&db, |d| d.execute("INSERT INTO t VALUES (1)", params![])).unwrap();
        let e = savepoint(&db, |d| {
            d.execute("INSERT INTO t VALUES (2)", params![])?;
            d.execute("INSERT INTO t VALUES (1)", params![])
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UniqueViolation);
        db.commit().unwrap();
        let rows = db.query("SELECT a FROM t ORDER BY a", params![]).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].int(0).unwrap(), 1);
    }
}
