//! The schema, its versions and the `meta` table, for both engines.
//!
//! The tables are the same on both; only the column types are spelled
//! each engine's way (`BIGINT` and `BYTEA` on PostgreSQL). Databases of
//! older versions are migrated on open (SQLite from 1, PostgreSQL from 2),
//! in one transaction that only adds.
//!
//! Versions: 1, the first; 2, token ids and expiry; 3, redeemed
//! attestation challenges (so that a challenge issued by one replica is
//! redeemed once across all of them).

use twinseal_audit::AuditLog;
use twinseal_sql::{Db, Dialect, params};

use crate::error::{Error, Result};

/// Current schema version. Older versions are migrated on open
/// ([`migrate`]); newer ones are refused.
pub const SCHEMA_VERSION: i64 = 3;

const SQLITE: &str = "
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
const SQLITE_RUNS: &str = "
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

const POSTGRES: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    current_version BIGINT NOT NULL,
    tags TEXT NOT NULL,
    required_context TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_versions (
    name TEXT NOT NULL REFERENCES keys(name),
    version BIGINT NOT NULL,
    wrapped BYTEA,
    created TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS manifests (
    version BIGINT PRIMARY KEY,
    text TEXT NOT NULL,
    digest TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    applied_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash BYTEA PRIMARY KEY,
    "user" TEXT NOT NULL,
    created TEXT NOT NULL,
    id TEXT,
    expires BIGINT
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    simulated BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    evidence_digest TEXT NOT NULL,
    challenge BYTEA NOT NULL,
    der BYTEA NOT NULL,
    issued BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS workflow_runs (
    id BIGINT PRIMARY KEY,
    workflow TEXT NOT NULL,
    kind TEXT NOT NULL,
    app TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    started_by TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    updated_unix BIGINT NOT NULL,
    serial TEXT,
    done BIGINT NOT NULL DEFAULT 0,
    total BIGINT NOT NULL DEFAULT 0,
    output TEXT,
    output_sha256 TEXT,
    receipt TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS workflow_runs_queue ON workflow_runs (state, app, id);
CREATE TABLE IF NOT EXISTS run_training (
    run BIGINT PRIMARY KEY REFERENCES workflow_runs(id),
    progress TEXT,
    record TEXT,
    app TEXT,
    model_header_sha256 TEXT UNIQUE
);
"#;

/// Version 3: challenges redeemed by an attestation, kept until they
/// expire (a replay within the lifetime hits the primary key).
const SQLITE_CHALLENGES: &str = "
CREATE TABLE IF NOT EXISTS redeemed_challenges (
    challenge BLOB PRIMARY KEY,
    expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS redeemed_challenges_expiry ON redeemed_challenges (expires);
";

const POSTGRES_CHALLENGES: &str = "
CREATE TABLE IF NOT EXISTS redeemed_challenges (
    challenge BYTEA PRIMARY KEY,
    expires BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS redeemed_challenges_expiry ON redeemed_challenges (expires);
";

fn challenges_ddl(db: &dyn Db) -> &'static str {
    match db.dialect() {
        Dialect::Sqlite => SQLITE_CHALLENGES,
        Dialect::Postgres => POSTGRES_CHALLENGES,
    }
}

const TOKENS_INDEX: &str =
    r#"CREATE UNIQUE INDEX IF NOT EXISTS tokens_by_user ON tokens ("user", id);"#;

/// Schema version 2: bearer tokens get an id and an expiry (tokens from
/// version 1 get an id from their hash and no expiry: they keep working
/// until revoked, as before). SQLite only: PostgreSQL starts at 2.
const SQLITE_MIGRATE_1_TO_2: &str = "
ALTER TABLE tokens ADD COLUMN id TEXT;
ALTER TABLE tokens ADD COLUMN expires INTEGER;
UPDATE tokens SET id = lower(hex(substr(hash, 1, 8))) WHERE id IS NULL;
";

/// Whether the database holds a coordinator's state (a `meta` table with
/// a schema version).
pub fn is_initialized(db: &dyn Db) -> Result<bool> {
    let has_meta = match db.dialect() {
        Dialect::Sqlite => db.exists(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            params![],
        )?,
        Dialect::Postgres => db.exists(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() \
             AND table_name = 'meta'",
            params![],
        )?,
    };
    Ok(has_meta && meta_get(db, "schema_version")?.is_some())
}

/// Create the schema (idempotent) in the caller's transaction.
pub fn create(db: &dyn Db) -> Result<()> {
    match db.dialect() {
        Dialect::Sqlite => {
            db.batch(SQLITE)?;
            db.batch(SQLITE_RUNS)?;
        }
        Dialect::Postgres => db.batch(POSTGRES)?,
    }
    db.batch(challenges_ddl(db))?;
    db.batch(TOKENS_INDEX)?;
    AuditLog::init(db)?;
    db.execute(
        "INSERT INTO meta (k, v) VALUES ('schema_version', $1) ON CONFLICT DO NOTHING",
        params![SCHEMA_VERSION.to_string().as_bytes()],
    )?;
    Ok(())
}

fn stored_version(db: &dyn Db) -> Result<Option<i64>> {
    Ok(meta_get(db, "schema_version")?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse::<i64>().ok()))
}

/// Bring a database of an older schema version to [`SCHEMA_VERSION`], in
/// one transaction, and return the version it had. Refuses versions it
/// does not know, and databases that hold no coordinator state. Data is
/// kept: migrations only add.
pub fn migrate(db: &dyn Db) -> Result<i64> {
    if !is_initialized(db)? {
        return Err(Error::Config(
            "the database holds no coordinator state: run `twinseal coordinator init` first".into(),
        ));
    }
    db.begin()?;
    let result = (|| {
        let version = stored_version(db)?
            .ok_or_else(|| Error::Store("the database has no schema version".into()))?;
        match (version, db.dialect()) {
            (SCHEMA_VERSION, _) => {
                if db.dialect() == Dialect::Sqlite {
                    // Tables added without a version change.
                    db.batch(SQLITE_RUNS)?;
                }
                // The audit tables added since (cosigned checkpoints).
                AuditLog::init(db)?;
                return Ok(version);
            }
            (1, Dialect::Sqlite) => {
                db.batch(SQLITE_MIGRATE_1_TO_2)?;
                db.batch(TOKENS_INDEX)?;
                db.batch(SQLITE_RUNS)?;
                tracing::info!("store: migrated schema version 1 to 2 (token ids and expiry)");
            }
            (2, _) => {}
            (v, _) => {
                return Err(Error::Store(format!(
                    "unsupported schema version {v} (this build knows 1 to {SCHEMA_VERSION}); \
                     nothing was changed"
                )));
            }
        }
        if db.dialect() == Dialect::Sqlite {
            db.batch(SQLITE_RUNS)?;
        }
        db.batch(challenges_ddl(db))?;
        AuditLog::init(db)?;
        tracing::info!("store: migrated schema version 2 to 3 (redeemed challenges)");
        meta_put(db, "schema_version", SCHEMA_VERSION.to_string().as_bytes())?;
        Ok(version)
    })();
    match result {
        Ok(v) => {
            db.commit()?;
            Ok(v)
        }
        Err(e) => {
            let _ = db.rollback();
            Err(e)
        }
    }
}

/// Refuse a database whose schema version is not this build's.
pub fn check_version(db: &dyn Db) -> Result<()> {
    let version = stored_version(db)?;
    if version != Some(SCHEMA_VERSION) {
        return Err(Error::Store(format!(
            "unsupported schema version {version:?} (this build knows {SCHEMA_VERSION})"
        )));
    }
    Ok(())
}

/// Read a `meta` value.
pub fn meta_get(db: &dyn Db, k: &str) -> Result<Option<Vec<u8>>> {
    db.query_opt("SELECT v FROM meta WHERE k = $1", params![k])?
        .map(|r| r.blob(0))
        .transpose()
        .map_err(Into::into)
}

/// Write a `meta` value unless one is stored, and return the stored one
/// (replicas starting at once agree on the first writer's value).
pub fn meta_put_if_absent(db: &dyn Db, k: &str, v: &[u8]) -> Result<Vec<u8>> {
    db.execute(
        "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING",
        params![k, v],
    )?;
    meta_get(db, k)?.ok_or_else(|| Error::Store(format!("meta {k} vanished")))
}

/// Write a `meta` value.
pub fn meta_put(db: &dyn Db, k: &str, v: &[u8]) -> Result<()> {
    db.execute(
        "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        params![k, v],
    )?;
    Ok(())
}
