//! The PostgreSQL backend against a real server (a throwaway one this test
//! process starts on 127.0.0.1 and stops).

use std::time::Duration;

use twinseal_sql::pg::{Listener, Notice, PgConn, PgOptions};
use twinseal_sql::{Db, Error, ErrorKind, params, savepoint};
use twinseal_testing::TempPostgres;

fn db() -> PgConn {
    let pg = TempPostgres::shared();
    PgConn::connect(&PgOptions::new(&pg.database())).unwrap()
}

#[test]
fn values_round_trip_with_the_same_sql_as_sqlite() {
    let db = db();
    db.batch("CREATE TABLE t (a BIGINT, b TEXT, c BYTEA, d TEXT, e INTEGER)")
        .unwrap();
    let none: Option<&str> = None;
    db.execute(
        "INSERT INTO t (c, b, a, d, e) VALUES ($3, $2, $1, $4, $5)",
        params![7_i64, "seven", &b"\x00\x07"[..], none, 3_i64],
    )
    .unwrap();
    let r = db
        .query_one(
            "SELECT a, b, c, d, e, 1, true FROM t WHERE b = $1",
            params!["seven"],
        )
        .unwrap();
    assert_eq!(r.int(0).unwrap(), 7);
    assert_eq!(r.text(1).unwrap(), "seven");
    assert_eq!(r.blob(2).unwrap(), b"\x00\x07");
    assert_eq!(r.opt_text(3).unwrap(), None);
    assert_eq!(r.int(4).unwrap(), 3);
    assert_eq!(r.int(5).unwrap(), 1);
    assert_eq!(r.int(6).unwrap(), 1);
    assert!(matches!(
        db.query_one("SELECT a FROM t WHERE a = 8", params![]),
        Err(Error::NoRow)
    ));
}

#[test]
fn a_failed_savepoint_rolls_back_only_its_writes() {
    let db = db();
    db.batch("CREATE TABLE t (a BIGINT PRIMARY KEY)").unwrap();
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
    assert!(!db.in_transaction());
    let rows = db.query("SELECT a FROM t ORDER BY a", params![]).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].int(0).unwrap(), 1);
}

#[test]
fn a_password_in_the_url_and_plain_text_to_a_remote_host_are_refused() {
    let e = PgOptions::new("postgres://u:secret@127.0.0.1/db")
        .config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds a password"), "{e}");
    assert!(!e.contains("secret"), "{e}");
    let e = PgOptions::new("postgres://u@db.example/db")
        .config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("not on this machine"), "{e}");
    assert!(PgOptions::new("postgres://u@localhost/db").config().is_ok());
    let e = PgOptions::new("mysql://x")
        .config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not parse"), "{e}");
}

#[test]
fn a_listener_hears_notifications_sent_in_committed_transactions_only() {
    let url = TempPostgres::shared().database();
    let listener = Listener::start(&PgOptions::new(&url), "twinseal").unwrap();
    assert_eq!(listener.next(Duration::from_secs(10)), Some(Notice::Resync));
    let db = PgConn::connect(&PgOptions::new(&url)).unwrap();
    db.begin().unwrap();
    db.execute("SELECT pg_notify('twinseal', 'rolled back')", params![])
        .unwrap();
    db.rollback().unwrap();
    db.begin().unwrap();
    db.execute("SELECT pg_notify('twinseal', $1)", params!["keys:k1"])
        .unwrap();
    db.commit().unwrap();
    assert_eq!(
        listener.next(Duration::from_secs(10)),
        Some(Notice::Payload("keys:k1".into()))
    );
    assert_eq!(listener.next(Duration::from_millis(200)), None);
    assert!(Listener::start(&PgOptions::new(&url), "x; DROP").is_err());
}

#[test]
fn an_unreachable_server_is_unavailable_and_a_restart_is_survived_by_reconnecting() {
    let pg = TempPostgres::start().unwrap();
    let url = pg.database();
    let db = PgConn::connect(&PgOptions::new(&url)).unwrap();
    db.batch("CREATE TABLE t (a BIGINT)").unwrap();
    pg.stop();
    let e = db
        .execute("INSERT INTO t VALUES (1)", params![])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(db.is_closed());
    let mut o = PgOptions::new(&url);
    o.connect_timeout = Duration::from_secs(1);
    let e = PgConn::connect(&o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    pg.restart().unwrap();
    let db = PgConn::connect(&o).unwrap();
    db.execute("INSERT INTO t VALUES (1)", params![]).unwrap();
}

#[test]
fn tls_to_the_database_is_required_and_verified_against_the_named_ca() {
    let (pg, ca_pem) = TempPostgres::start_tls().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let url = pg.database();
    let mut o = PgOptions::new(&url);
    o.ca_file = Some(ca.clone());
    let db = PgConn::connect(&o).unwrap();
    // The session is encrypted.
    let r = db
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            params![],
        )
        .unwrap();
    assert_eq!(r.int(0).unwrap(), 1, "the connection does not use TLS");
    // A CA that did not sign the server's certificate: refused.
    let (other, other_ca) = TempPostgres::start_tls().unwrap();
    drop(other);
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&wrong, other_ca).unwrap();
    let mut o = PgOptions::new(&url);
    o.ca_file = Some(wrong);
    let e = PgConn::connect(&o).unwrap_err().to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // A file without a certificate: a configuration error.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let mut o = PgOptions::new(&url);
    o.ca_file = Some(empty);
    let e = PgConn::connect(&o).unwrap_err().to_string();
    assert!(e.contains("holds no certificate"), "{e}");
}

#[test]
fn deferred_statements_go_with_the_next_one_and_keep_their_order() {
    let db = PgConn::connect(&PgOptions::new(&TempPostgres::shared().database())).unwrap();
    db.batch("CREATE TABLE t (a BIGINT PRIMARY KEY)").unwrap();
    db.begin().unwrap();
    db.batch_deferred("SAVEPOINT job").unwrap();
    db.execute("INSERT INTO t VALUES (1)", params![]).unwrap();
    db.batch_deferred("RELEASE SAVEPOINT job; SAVEPOINT job")
        .unwrap();
    let e = db
        .execute("INSERT INTO t VALUES (1)", params![])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UniqueViolation, "{e}");
    db.batch("ROLLBACK TO SAVEPOINT job").unwrap();
    db.batch_deferred("RELEASE SAVEPOINT job; SAVEPOINT job")
        .unwrap();
    // A deferred statement that fails is reported by the next one.
    db.batch_deferred("RELEASE SAVEPOINT nonexistent").unwrap();
    assert!(db.query("SELECT a FROM t", params![]).is_err());
    db.batch("ROLLBACK TO SAVEPOINT job").unwrap();
    db.batch_deferred("SELECT 1").unwrap();
    db.commit().unwrap();
    assert!(!db.in_transaction());
    let rows = db.query("SELECT a FROM t ORDER BY a", params![]).unwrap();
    assert_eq!(rows.len(), 1);
}
