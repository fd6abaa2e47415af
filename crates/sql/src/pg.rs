//! The PostgreSQL backend: tokio-postgres, prepared statements cached per
//! connection, TLS to the database with rustls (aws-lc-rs) when a CA file
//! is named.
//!
//! A connection from [`PgConn::connect`] has its I/O run by one small
//! runtime of this module's own (one thread for every such connection of
//! the process); a call waits for its answer with
//! `futures_executor::block_on`, which needs no runtime, so the connection
//! works from any thread, a Tokio worker included, the same way a SQLite
//! connection does. The wait blocks the calling thread for one round trip.
//!
//! A connection from [`PgConn::connect_dedicated`] drives its own I/O on
//! the thread that uses it (a current-thread runtime of its own): no
//! thread hop per round trip, for a thread that does nothing else (the
//! coordinator's store writer). It must not be used on a Tokio runtime's
//! thread.
//!
//! The password never appears in the URL: it comes from the caller (the
//! coordinator reads it from an environment variable or a file).
//! Without a CA file the connection is plain text, which is accepted only
//! to a loopback address or a Unix socket.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use futures_executor::block_on;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

use crate::{Db, Dialect, Error, ErrorKind, Param, Result, Row, Value};

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/dbname` (no password), or the key-value
    /// form (`host=... user=... dbname=...`).
    pub url: String,
    /// The password, if the server asks for one.
    pub password: Option<String>,
    /// PEM file of the CA that signed the server's certificate: TLS is
    /// then required and verified.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// The server cancels any statement running longer than this.
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PgOptions {
    /// Options for `url` with the default timeouts (5 s to connect, 30 s
    /// per statement) and no password or CA.
    pub fn new(url: &str) -> PgOptions {
        PgOptions {
            url: url.to_owned(),
            password: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }

    /// Parse and check the URL without connecting.
    pub fn config(&self) -> Result<tokio_postgres::Config> {
        let mut c = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| Error::Config(format!("the database URL does not parse: {e}")))?;
        if c.get_password().is_some() {
            return Err(Error::Config(
                "the database URL holds a password: give it in an environment variable or a \
                 file instead"
                    .into(),
            ));
        }
        if c.get_hosts().is_empty() {
            return Err(Error::Config("the database URL names no host".into()));
        }
        if self.ca_file.is_none() {
            if c.get_ssl_mode() == SslMode::Require {
                return Err(Error::Config(
                    "sslmode=require needs a CA file to verify the database's certificate".into(),
                ));
            }
            for h in c.get_hosts() {
                if let Host::Tcp(name) = h
                    && !is_loopback(name)
                {
                    return Err(Error::Config(format!(
                        "the database at {name} is not on this machine: name the CA of its \
                         certificate so the connection uses verified TLS"
                    )));
                }
            }
            c.ssl_mode(SslMode::Disable);
        } else {
            c.ssl_mode(SslMode::Require);
        }
        if let Some(p) = &self.password {
            c.password(p.as_bytes());
        }
        c.connect_timeout(self.connect_timeout);
        c.keepalives(true);
        c.keepalives_idle(Duration::from_secs(30));
        c.application_name("twinseal");
        c.options(format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis()
        ));
        Ok(c)
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn tls(ca_file: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| Error::Config(format!("reading {}: {e}", ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| Error::Config(format!("{}: {e}", ca_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| Error::Config(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no certificate",
            ca_file.display()
        )));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Connect, and spawn the connection's I/O on the runtime this runs on.
async fn open_client(
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
) -> std::result::Result<Client, tokio_postgres::Error> {
    fn drive<F>(conn: F)
    where
        F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
            + Send
            + 'static,
    {
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "database connection closed");
            }
        });
    }
    Ok(match tls {
        Some(tls) => {
            let (client, conn) = config.connect(tls).await?;
            drive(conn);
            client
        }
        None => {
            let (client, conn) = config.connect(NoTls).await?;
            drive(conn);
            client
        }
    })
}

/// The runtime that drives every connection's I/O.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("twinseal-pg")
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("starting the database runtime: {e}")))?;
    Ok(RT.get_or_init(|| rt))
}

/// How a connection's I/O is driven.
enum Driver {
    /// By the module's runtime thread.
    Shared,
    /// By the calling thread, on this runtime.
    Own(tokio::runtime::Runtime),
}

/// A PostgreSQL connection.
pub struct PgConn {
    driver: Driver,
    client: Client,
    statements: RefCell<HashMap<String, Statement>>,
    in_tx: Cell<bool>,
    /// Statements of `batch_deferred` not sent yet.
    pending: RefCell<Option<String>>,
    /// A statement failed in the open transaction, which PostgreSQL has
    /// therefore aborted (until a `ROLLBACK TO SAVEPOINT`).
    aborted: Cell<bool>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgConn")
    }
}

impl PgConn {
    /// Connect (from any thread).
    pub fn connect(options: &PgOptions) -> Result<PgConn> {
        let config = options.config()?;
        let tls = options.ca_file.as_deref().map(tls).transpose()?;
        let rt = runtime()?;
        let task = rt.spawn(async move { open_client(config, tls).await });
        let client = block_on(task)
            .map_err(|e| Error::Config(format!("the database runtime failed: {e}")))?
            .map_err(|e| {
                let mut err = convert(e);
                if let Error::Postgres { message, kind } = &mut err
                    && *kind == ErrorKind::Other
                {
                    // A refused login is a configuration error, not an outage
                    // to wait out.
                    *message = format!("connecting: {message}");
                }
                err
            })?;
        Ok(PgConn {
            driver: Driver::Shared,
            client,
            statements: RefCell::new(HashMap::new()),
            in_tx: Cell::new(false),
            pending: RefCell::new(None),
            aborted: Cell::new(false),
        })
    }

    /// Connect a connection that the calling thread drives itself (see
    /// the module's documentation). Not on a Tokio runtime's thread.
    pub fn connect_dedicated(options: &PgOptions) -> Result<PgConn> {
        let config = options.config()?;
        let tls = options.ca_file.as_deref().map(tls).transpose()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("starting the database runtime: {e}")))?;
        let client = rt
            .block_on(async { open_client(config, tls).await })
            .map_err(convert)?;
        Ok(PgConn {
            driver: Driver::Own(rt),
            client,
            statements: RefCell::new(HashMap::new()),
            in_tx: Cell::new(false),
            pending: RefCell::new(None),
            aborted: Cell::new(false),
        })
    }

    /// Wait for `f`, driving the connection if this thread does.
    fn wait<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.driver {
            Driver::Shared => block_on(f),
            Driver::Own(rt) => rt.block_on(f),
        }
    }

    /// Whether the connection is broken (reconnect before using it).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self.wait(self.client.prepare(sql)).map_err(convert)?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// Classify a client error.
fn convert(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let kind = if *code == SqlState::UNIQUE_VIOLATION {
            ErrorKind::UniqueViolation
        } else if *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            ErrorKind::Contention
        } else if *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || code.code().starts_with("08")
        {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Other
        };
        return Error::Postgres {
            message: format!("{} ({})", db.message(), code.code()),
            kind,
        };
    }
    let source = std::error::Error::source(&e);
    let io = source.is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
    let timed_out = e.to_string().contains("timeout") || e.to_string().contains("timed out");
    let kind = if e.is_closed() || io || timed_out {
        // Closed connections and I/O failures (refused, reset, timed out).
        ErrorKind::Unavailable
    } else {
        ErrorKind::Other
    };
    // The source says what (e.g. "password missing"); it never holds
    // parameters or the password.
    let message = match source {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    Error::Postgres { message, kind }
}

#[derive(Debug)]
struct Bind<'a>(&'a Param<'a>);

impl ToSql for Bind<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self.0 {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                _ => Err(format!("an integer for a {ty} parameter").into()),
            },
            Param::Text(s) => s.to_sql(ty, out),
            Param::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Value::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::BYTEA => Value::Blob(Vec::<u8>::from_sql(ty, raw)?),
            _ => Value::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::BOOL
                | Type::BYTEA
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
        )
    }
}

fn binds<'a>(params: &'a [Param<'a>]) -> Vec<Bind<'a>> {
    params.iter().map(Bind).collect()
}

impl PgConn {
    /// Remember that a statement failed inside a transaction (PostgreSQL
    /// has then aborted it).
    fn note<T>(&self, r: &Result<T>) {
        if r.is_err() && self.in_tx.get() {
            self.aborted.set(true);
        }
    }

    fn execute_inner(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let st = self.statement(sql)?;
        let b = binds(params);
        let refs: Vec<&(dyn ToSql + Sync)> = b.iter().map(|b| b as _).collect();
        match self.pending.borrow_mut().take() {
            // Both requests go out before either answer is awaited.
            Some(p) => self.wait(async {
                let (first, this) = tokio::join!(
                    self.client.batch_execute(&p),
                    self.client.execute(&st, &refs)
                );
                first.map_err(convert)?;
                this.map_err(convert)
            }),
            None => self.wait(self.client.execute(&st, &refs)).map_err(convert),
        }
    }

    fn query_inner(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let st = self.statement(sql)?;
        let b = binds(params);
        let refs: Vec<&(dyn ToSql + Sync)> = b.iter().map(|b| b as _).collect();
        let rows = match self.pending.borrow_mut().take() {
            Some(p) => self.wait(async {
                let (first, this) =
                    tokio::join!(self.client.batch_execute(&p), self.client.query(&st, &refs));
                first.map_err(convert)?;
                this.map_err(convert)
            })?,
            None => self.wait(self.client.query(&st, &refs)).map_err(convert)?,
        };
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<_, Value>(i).map_err(|e| Error::Postgres {
                            message: format!("column {i}: {e}"),
                            kind: ErrorKind::Other,
                        })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Row::new)
            })
            .collect()
    }
}

impl Db for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let r = self.execute_inner(sql, params);
        self.note(&r);
        r
    }

    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let r = self.query_inner(sql, params);
        self.note(&r);
        r
    }

    fn batch(&self, sql: &str) -> Result<()> {
        let upper = sql.trim_start().to_ascii_uppercase();
        let ends =
            upper.starts_with("COMMIT") || upper.starts_with("ROLLBACK") && !upper.contains(" TO ");
        let pending = self.pending.borrow_mut().take();
        let r = match pending {
            // Before a transaction's end, deferred statements go alone: if
            // one fails, the transaction is still open (aborted) and its
            // end must still be sent.
            Some(p) if ends => {
                let first = self.wait(self.client.batch_execute(&p)).map_err(convert);
                if let Err(e) = first {
                    if self.in_tx.get() {
                        self.aborted.set(true);
                    }
                    return Err(e);
                }
                self.wait(self.client.batch_execute(sql)).map_err(convert)
            }
            Some(p) => self
                .wait(self.client.batch_execute(&format!("{p}; {sql}")))
                .map_err(convert),
            None => self.wait(self.client.batch_execute(sql)).map_err(convert),
        };
        if ends {
            // COMMIT and ROLLBACK end the transaction, failed or not.
            self.in_tx.set(false);
            self.aborted.set(false);
        } else if r.is_ok() && upper.starts_with("ROLLBACK TO") {
            self.aborted.set(false);
        } else {
            self.note(&r);
        }
        r
    }

    fn batch_deferred(&self, sql: &str) -> Result<()> {
        let mut pending = self.pending.borrow_mut();
        match pending.as_mut() {
            Some(p) => {
                p.push_str("; ");
                p.push_str(sql);
            }
            None => *pending = Some(sql.to_owned()),
        }
        Ok(())
    }

    fn in_transaction(&self) -> bool {
        self.in_tx.get()
    }

    fn failed_in_transaction(&self) -> bool {
        self.aborted.get()
    }

    fn is_broken(&self) -> bool {
        self.client.is_closed()
    }

    fn begin(&self) -> Result<()> {
        self.batch("BEGIN")?;
        self.in_tx.set(true);
        self.aborted.set(false);
        Ok(())
    }

    fn commit(&self) -> Result<()> {
        if self.aborted.get() {
            // PostgreSQL would answer COMMIT with a silent ROLLBACK.
            let _ = self.batch("ROLLBACK");
            return Err(Error::Postgres {
                message: "the transaction was aborted by an earlier error; nothing was committed"
                    .into(),
                kind: ErrorKind::Other,
            });
        }
        self.batch("COMMIT")
    }
}

/// What a [`Listener`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A `NOTIFY` on the channel, with its payload.
    Payload(String),
    /// The listening connection was (re)established: notifications sent
    /// while it was down are lost, so listeners reload what they cache.
    Resync,
}

/// A connection that `LISTEN`s on one channel and hands every
/// notification to the caller, reconnecting (every half second) when the
/// connection breaks. Dropping it stops it within a second.
pub struct Listener {
    notices: std::sync::mpsc::Receiver<Notice>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Listener")
    }
}

impl Listener {
    /// Start listening on `channel` (an SQL identifier of letters, digits
    /// and underscores).
    pub fn start(options: &PgOptions, channel: &str) -> Result<Listener> {
        if channel.is_empty()
            || !channel
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::Config(format!("invalid channel name {channel:?}")));
        }
        let config = options.config()?;
        let tls = options.ca_file.as_deref().map(tls).transpose()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let listen = format!("LISTEN {channel}");
        runtime()?.spawn(async move {
            use std::sync::atomic::Ordering;
            while !stopped.load(Ordering::Relaxed) {
                let connected = match &tls {
                    Some(tls) => config.connect(tls.clone()).await.map(|(c, conn)| {
                        (c, Box::pin(conn) as std::pin::Pin<Box<dyn PollMessages>>)
                    }),
                    None => config
                        .connect(NoTls)
                        .await
                        .map(|(c, conn)| (c, Box::pin(conn) as std::pin::Pin<Box<dyn PollMessages>>)),
                };
                if let Ok((client, mut conn)) = connected {
                    let mut listening = Box::pin(client.batch_execute(&listen));
                    let mut listened = false;
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tokio::select! {
                            r = &mut listening, if !listened => {
                                listened = true;
                                if r.is_err() || tx.send(Notice::Resync).is_err() {
                                    break;
                                }
                            }
                            m = std::future::poll_fn(|cx| conn.as_mut().poll_messages(cx)) => match m {
                                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                    if tx.send(Notice::Payload(n.payload().to_string())).is_err() {
                                        return;
                                    }
                                }
                                Some(Ok(_)) => {}
                                Some(Err(_)) | None => break,
                            },
                            _ = tick.tick() => {
                                if stopped.load(Ordering::Relaxed) {
                                    return;
                                }
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(Listener { notices: rx, stop })
    }

    /// The next notice, waiting at most `timeout` (none: nothing came, or
    /// the listener stopped).
    pub fn next(&self, timeout: Duration) -> Option<Notice> {
        self.notices.recv_timeout(timeout).ok()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connection's message pump, whatever its TLS.
trait PollMessages: Send {
    fn poll_messages(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>>;
}

impl<S, T> PollMessages for tokio_postgres::Connection<S, T>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    fn poll_messages(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>> {
        self.get_mut().poll_message(cx)
    }
}
