//! The coordinator's state tables: keys and their versions, manifests,
//! bearer tokens and issued certificates. Every statement the service
//! runs on them is here, written once for both engines.

use std::collections::BTreeMap;

use twinseal_sql::{Db, Dialect, ErrorKind, Row, params};

use crate::error::{Error, Result};

/// The channel replicas on one PostgreSQL database hear each other's
/// changes on.
pub const CHANNEL: &str = "twinseal_state";

/// Tell the other replicas, when this transaction commits, that cached
/// state changed: `manifest`, `tokens`, `keys:<name>` or `certs:<serial>`.
/// Nothing on SQLite (one process).
pub fn notify(db: &dyn Db, what: &str) -> Result<()> {
    if db.dialect() == Dialect::Postgres {
        // `execute`: the result (void) is not read.
        db.execute(&format!("SELECT pg_notify('{CHANNEL}', $1)"), params![what])?;
    }
    Ok(())
}

// ----- attestation challenges -----

/// Record that `challenge` was redeemed; refused if it already was.
/// `purge`: also drop records of challenges that expired before `now`.
pub fn redeem_challenge(
    db: &dyn Db,
    challenge: &[u8],
    expires: i64,
    now: i64,
    purge: bool,
) -> Result<()> {
    if purge {
        db.execute(
            "DELETE FROM redeemed_challenges WHERE expires < $1",
            params![now],
        )?;
    }
    match db.execute(
        "INSERT INTO redeemed_challenges (challenge, expires) VALUES ($1, $2)",
        params![challenge, expires],
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::UniqueViolation => Err(Error::AttestationRejected(vec![
            "challenge unknown or already used".into(),
        ])),
        Err(e) => Err(e.into()),
    }
}

fn u32_of(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Store(format!("stored {what} {v} is out of range")))
}

// ----- keys -----

/// A key's row.
#[derive(Debug)]
pub struct KeyRow {
    /// `enabled`, `disabled` or `destroyed`.
    pub state: String,
    /// The version new data is sealed under.
    pub current_version: u32,
    /// Tags, JSON.
    pub tags: String,
    /// Required encryption context, JSON.
    pub required_context: String,
    /// RFC 3339 creation time.
    pub created: String,
}

/// A key's row, if the key exists.
pub fn key(db: &dyn Db, name: &str) -> Result<Option<KeyRow>> {
    db.query_opt(
        "SELECT state, current_version, tags, required_context, created FROM keys WHERE name = $1",
        params![name],
    )?
    .map(|r| {
        Ok(KeyRow {
            state: r.text(0)?,
            current_version: u32_of(r.int(1)?, "key version")?,
            tags: r.text(2)?,
            required_context: r.text(3)?,
            created: r.text(4)?,
        })
    })
    .transpose()
}

/// The versions of a key that still hold material, with their creation
/// times.
pub fn live_versions(db: &dyn Db, name: &str) -> Result<BTreeMap<u32, String>> {
    db.query(
        "SELECT version, created FROM key_versions WHERE name = $1 AND wrapped IS NOT NULL \
         ORDER BY version",
        params![name],
    )?
    .iter()
    .map(|r| Ok((u32_of(r.int(0)?, "key version")?, r.text(1)?)))
    .collect()
}

/// Every key's name.
pub fn key_names(db: &dyn Db) -> Result<Vec<String>> {
    db.query("SELECT name FROM keys", params![])?
        .iter()
        .map(|r| Ok(r.text(0)?))
        .collect()
}

/// A key's state, if the key exists.
pub fn key_state(db: &dyn Db, name: &str) -> Result<Option<String>> {
    db.query_opt("SELECT state FROM keys WHERE name = $1", params![name])?
        .map(|r| r.text(0))
        .transpose()
        .map_err(Into::into)
}

/// Create a key at version 1 with its wrapped material.
pub fn insert_key(
    db: &dyn Db,
    name: &str,
    tags: &str,
    required_context: &str,
    created: &str,
    wrapped: &[u8],
) -> Result<()> {
    db.execute(
        "INSERT INTO keys (name, state, current_version, tags, required_context, created) \
         VALUES ($1, 'enabled', 1, $2, $3, $4)",
        params![name, tags, required_context, created],
    )?;
    db.execute(
        "INSERT INTO key_versions (name, version, wrapped, created) VALUES ($1, 1, $2, $3)",
        params![name, wrapped, created],
    )?;
    Ok(())
}

/// The current version of a key that is not destroyed.
pub fn current_version_if_live(db: &dyn Db, name: &str) -> Result<Option<u32>> {
    db.query_opt(
        "SELECT current_version FROM keys WHERE name = $1 AND state != 'destroyed'",
        params![name],
    )?
    .map(|r| u32_of(r.int(0)?, "key version"))
    .transpose()
}

/// Add a version and make it current.
pub fn add_key_version(
    db: &dyn Db,
    name: &str,
    version: u32,
    wrapped: &[u8],
    created: &str,
) -> Result<()> {
    db.execute(
        "INSERT INTO key_versions (name, version, wrapped, created) VALUES ($1, $2, $3, $4)",
        params![name, version, wrapped, created],
    )?;
    db.execute(
        "UPDATE keys SET current_version = $2 WHERE name = $1",
        params![name, version],
    )?;
    Ok(())
}

/// Set a key's state (`enabled` or `disabled`).
pub fn set_key_state(db: &dyn Db, name: &str, state: &str) -> Result<()> {
    db.execute(
        "UPDATE keys SET state = $2 WHERE name = $1",
        params![name, state],
    )?;
    Ok(())
}

/// Delete every version's material and mark the key destroyed.
pub fn destroy_key(db: &dyn Db, name: &str) -> Result<()> {
    db.execute(
        "UPDATE key_versions SET wrapped = NULL WHERE name = $1",
        params![name],
    )?;
    db.execute(
        "UPDATE keys SET state = 'destroyed' WHERE name = $1",
        params![name],
    )?;
    Ok(())
}

/// The wrapped material of one version (none once destroyed).
pub fn wrapped_key(db: &dyn Db, name: &str, version: u32) -> Result<Option<Vec<u8>>> {
    Ok(db
        .query_opt(
            "SELECT wrapped FROM key_versions WHERE name = $1 AND version = $2",
            params![name, version],
        )?
        .map(|r| r.opt_blob(0))
        .transpose()?
        .flatten())
}

/// After a destruction: move overwritten pages out of SQLite's WAL (secure
/// delete already overwrote them in the database). PostgreSQL keeps dead
/// row versions until vacuum; `VACUUM` cannot run in a transaction, so
/// this runs it on the reader connection.
pub fn purge_deleted(db: &dyn Db) -> Result<()> {
    match db.dialect() {
        Dialect::Sqlite => {
            db.query("PRAGMA wal_checkpoint(TRUNCATE)", params![])?;
        }
        Dialect::Postgres => db.batch("VACUUM key_versions")?,
    }
    Ok(())
}

// ----- manifests -----

/// A stored manifest version.
#[derive(Debug)]
pub struct ManifestRow {
    /// Its version.
    pub version: i64,
    /// Its text (empty in listings).
    pub text: String,
    /// SHA-256 of the text, hex.
    pub digest: String,
    /// When it was applied, RFC 3339.
    pub applied_at: String,
    /// Who applied it.
    pub applied_by: String,
}

fn manifest_row(r: &Row, with_text: bool) -> Result<ManifestRow> {
    let o = usize::from(with_text);
    Ok(ManifestRow {
        version: r.int(0)?,
        text: if with_text { r.text(1)? } else { String::new() },
        digest: r.text(1 + o)?,
        applied_at: r.text(2 + o)?,
        applied_by: r.text(3 + o)?,
    })
}

/// The manifest in force (the latest version).
pub fn latest_manifest(db: &dyn Db) -> Result<ManifestRow> {
    let r = db
        .query_opt(
            "SELECT version, text, digest, applied_at, applied_by FROM manifests \
             ORDER BY version DESC LIMIT 1",
            params![],
        )?
        .ok_or_else(|| Error::Store("no manifest is stored".into()))?;
    manifest_row(&r, true)
}

/// One manifest version.
pub fn manifest(db: &dyn Db, version: i64) -> Result<Option<ManifestRow>> {
    db.query_opt(
        "SELECT version, text, digest, applied_at, applied_by FROM manifests WHERE version = $1",
        params![version],
    )?
    .map(|r| manifest_row(&r, true))
    .transpose()
}

/// Every manifest version, oldest first, without texts.
pub fn manifests(db: &dyn Db) -> Result<Vec<ManifestRow>> {
    db.query(
        "SELECT version, digest, applied_at, applied_by FROM manifests ORDER BY version",
        params![],
    )?
    .iter()
    .map(|r| manifest_row(r, false))
    .collect()
}

/// Store a manifest as the next version; returns the version.
pub fn insert_manifest(
    db: &dyn Db,
    text: &str,
    digest: &str,
    applied_at: &str,
    applied_by: &str,
) -> Result<i64> {
    let v = db
        .query_one(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM manifests",
            params![],
        )?
        .int(0)?;
    db.execute(
        "INSERT INTO manifests (version, text, digest, applied_at, applied_by) \
         VALUES ($1, $2, $3, $4, $5)",
        params![v, text, digest, applied_at, applied_by],
    )?;
    Ok(v)
}

// ----- bearer tokens -----

/// A stored bearer token (its hash, never the token).
#[derive(Debug)]
pub struct TokenRow {
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// The manifest user it belongs to.
    pub user: String,
    /// Its public id.
    pub id: String,
    /// When it was created, RFC 3339.
    pub created: String,
    /// When it expires, Unix seconds (none: never).
    pub expires: Option<i64>,
}

fn token_row(r: &Row) -> Result<TokenRow> {
    Ok(TokenRow {
        hash: r.blob(0)?,
        user: r.text(1)?,
        id: r.opt_text(2)?.unwrap_or_default(),
        created: r.text(3)?,
        expires: r.opt_int(4)?,
    })
}

/// Every token.
pub fn tokens(db: &dyn Db) -> Result<Vec<TokenRow>> {
    db.query(
        r#"SELECT hash, "user", id, created, expires FROM tokens"#,
        params![],
    )?
    .iter()
    .map(token_row)
    .collect()
}

/// One user's tokens, oldest first.
pub fn user_tokens(db: &dyn Db, user: &str) -> Result<Vec<TokenRow>> {
    db.query(
        r#"SELECT hash, "user", id, created, expires FROM tokens WHERE "user" = $1 ORDER BY created, id"#,
        params![user],
    )?
    .iter()
    .map(token_row)
    .collect()
}

/// Store a token.
pub fn insert_token(
    db: &dyn Db,
    hash: &[u8],
    user: &str,
    created: &str,
    id: &str,
    expires: Option<i64>,
) -> Result<()> {
    db.execute(
        r#"INSERT INTO tokens (hash, "user", created, id, expires) VALUES ($1, $2, $3, $4, $5)"#,
        params![hash, user, created, id, expires],
    )?;
    Ok(())
}

/// Delete a token; returns whether it existed.
pub fn delete_token(db: &dyn Db, hash: &[u8]) -> Result<bool> {
    Ok(db.execute("DELETE FROM tokens WHERE hash = $1", params![hash])? > 0)
}

// ----- certificates -----

/// An issued app certificate.
#[derive(Debug)]
pub struct CertRow {
    /// Serial number, hex.
    pub serial: String,
    /// The app it was issued to.
    pub app: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// Issued on simulated-TEE evidence.
    pub simulated: bool,
    /// Revoked.
    pub revoked: bool,
    /// SHA-256 of the evidence, hex.
    pub evidence_digest: String,
    /// The challenge it was issued on (empty in listings).
    pub challenge: Vec<u8>,
    /// The certificate (empty in listings).
    pub der: Vec<u8>,
}

/// One certificate.
pub fn certificate(db: &dyn Db, serial: &str) -> Result<Option<CertRow>> {
    db.query_opt(
        "SELECT serial, app, not_after, simulated, revoked, evidence_digest, challenge, der \
         FROM certificates WHERE serial = $1",
        params![serial],
    )?
    .map(|r| {
        Ok(CertRow {
            serial: r.text(0)?,
            app: r.text(1)?,
            not_after: r.int(2)?,
            simulated: r.int(3)? != 0,
            revoked: r.int(4)? != 0,
            evidence_digest: r.text(5)?,
            challenge: r.blob(6)?,
            der: r.blob(7)?,
        })
    })
    .transpose()
}

/// Every certificate, newest first, without challenge and DER.
pub fn certificates(db: &dyn Db) -> Result<Vec<CertRow>> {
    db.query(
        "SELECT serial, app, not_after, simulated, revoked, evidence_digest FROM certificates \
         ORDER BY issued DESC, serial",
        params![],
    )?
    .iter()
    .map(|r| {
        Ok(CertRow {
            serial: r.text(0)?,
            app: r.text(1)?,
            not_after: r.int(2)?,
            simulated: r.int(3)? != 0,
            revoked: r.int(4)? != 0,
            evidence_digest: r.text(5)?,
            challenge: Vec::new(),
            der: Vec::new(),
        })
    })
    .collect()
}

/// Record an issued certificate.
pub fn insert_certificate(db: &dyn Db, c: &CertRow, issued: i64) -> Result<()> {
    db.execute(
        "INSERT INTO certificates (serial, app, not_after, simulated, evidence_digest, challenge, \
         der, issued) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        params![
            &c.serial,
            &c.app,
            c.not_after,
            c.simulated,
            &c.evidence_digest,
            &c.challenge,
            &c.der,
            issued
        ],
    )?;
    Ok(())
}

/// The decisive checks of a key release, in one round trip: the key's
/// state (none: no such key) and whether the certificate is revoked
/// (none: not issued here).
pub fn release_checks(
    db: &dyn Db,
    key: &str,
    serial: &str,
) -> Result<(Option<String>, Option<bool>)> {
    let r = db.query_one(
        "SELECT (SELECT state FROM keys WHERE name = $1), \
         (SELECT revoked FROM certificates WHERE serial = $2)",
        params![key, serial],
    )?;
    Ok((r.opt_text(0)?, r.opt_int(1)?.map(|v| v != 0)))
}

/// Whether a certificate is revoked (none: not issued here).
pub fn certificate_revoked(db: &dyn Db, serial: &str) -> Result<Option<bool>> {
    db.query_opt(
        "SELECT revoked FROM certificates WHERE serial = $1",
        params![serial],
    )?
    .map(|r| Ok(r.int(0)? != 0))
    .transpose()
}

/// Revoke a certificate; returns the app it was issued to (none: not
/// issued here).
pub fn revoke_certificate(db: &dyn Db, serial: &str) -> Result<Option<String>> {
    let app = db
        .query_opt(
            "SELECT app FROM certificates WHERE serial = $1",
            params![serial],
        )?
        .map(|r| r.text(0))
        .transpose()?;
    if app.is_some() {
        db.execute(
            "UPDATE certificates SET revoked = 1 WHERE serial = $1",
            params![serial],
        )?;
    }
    Ok(app)
}

/// The serials of every revoked certificate.
pub fn revoked_serials(db: &dyn Db) -> Result<Vec<String>> {
    db.query(
        "SELECT serial FROM certificates WHERE revoked != 0",
        params![],
    )?
    .iter()
    .map(|r| Ok(r.text(0)?))
    .collect()
}

/// A certificate's DER.
pub fn certificate_der(db: &dyn Db, serial: &str) -> Result<Option<Vec<u8>>> {
    db.query_opt(
        "SELECT der FROM certificates WHERE serial = $1",
        params![serial],
    )?
    .map(|r| r.blob(0))
    .transpose()
    .map_err(Into::into)
}
