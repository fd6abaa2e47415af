//! The accept loop shared by the coordinator and workers: connection caps
//! (total and per address, before TLS), the TLS handshake under a timeout,
//! HTTP/1.1 with keep-alive under header-read and stall timeouts, each
//! request given its connection's [`PeerCertificate`] and [`RemoteAddr`],
//! and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpListener;

/// The DER client certificate of a mutual-TLS connection.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// The remote address of a connection.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// Limits of the shared accept loop: what one caller, or all of them,
/// can hold open. Every path an anonymous caller reaches goes through it,
/// before TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, all callers together. Capped further by
    /// the process's open-file limit (less [`FD_RESERVE`]) at start.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_address: usize,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time from waiting for a request (the first, or the next one on a
    /// kept-alive connection) to having its whole header: a connection
    /// idle between requests is closed after this long.
    pub header_read_timeout: Duration,
    /// Longest a read or write may stall while a request is in flight (a
    /// slow body upload or a caller that stops reading the answer).
    pub idle_timeout: Duration,
}

/// Default connections open at once, all callers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default connections open at once from one IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Default TLS handshake timeout, seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Default header-read (and keep-alive idle) timeout, seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default stall timeout for reads and writes within a request, seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// File descriptors kept back from connections for the database, files
/// and outgoing connections.
pub const FD_RESERVE: usize = 128;

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
        }
    }
}

impl ConnLimits {
    /// `max_connections`, lowered to what the process's open-file limit
    /// leaves after [`FD_RESERVE`] (at least one connection).
    pub fn effective_max_connections(&self) -> usize {
        match open_file_limit() {
            Some(n) => self
                .max_connections
                .min(n.saturating_sub(FD_RESERVE).max(1)),
            None => self.max_connections,
        }
    }
}

/// The soft open-file limit of this process (Linux: `/proc/self/limits`).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A log line at most once per interval, with the count of the ones left
/// out: a flood of refused or failed connections must not flood the log.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Call `log` with the number of events left out since the last line,
    /// unless a line was written less than `every` ago.
    pub fn hit(&self, log: impl FnOnce(u64)) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match st.0 {
            Some(t) if now.duration_since(t) < self.every => st.1 += 1,
            _ => {
                let left_out = std::mem::take(&mut st.1);
                st.0 = Some(now);
                drop(st);
                log(left_out);
            }
        }
    }
}

/// Admission of connections: the total and per-address caps.
#[derive(Debug)]
struct ConnGate {
    total: Arc<tokio::sync::Semaphore>,
    per_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    max_per_address: usize,
    refused: Throttle,
}

/// One admitted connection; frees its places when dropped.
struct ConnSlot {
    gate: Arc<ConnGate>,
    ip: std::net::IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl ConnGate {
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<ConnSlot> {
        let permit = self.total.clone().try_acquire_owned().ok()?;
        let mut map = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_address {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            gate: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut map = self
            .gate
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The accept loop shared by the coordinator and workers: connection caps
/// (total and per address; over them a connection is closed at once,
/// before TLS), TLS with `config` under a handshake timeout, HTTP/1.1 with
/// keep-alive under a header-read timeout and stall timeouts, each request
/// given its connection's [`PeerCertificate`] (if any) and [`RemoteAddr`];
/// on `shutdown`, stop accepting and let open requests finish (up to 30 s).
pub async fn serve_router(
    config: ServerConfig,
    router: axum::Router,
    listener: TcpListener,
    limits: &ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let max = limits.effective_max_connections();
    if max < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            allowed = max,
            "the open-file limit lowers the connection cap"
        );
    }
    let gate = Arc::new(ConnGate {
        total: Arc::new(tokio::sync::Semaphore::new(max)),
        per_address: Default::default(),
        max_per_address: limits.max_connections_per_address.max(1),
        refused: Throttle::new(Duration::from_secs(10)),
    });
    let accept_failed = Throttle::new(Duration::from_secs(10));
    let limits = Arc::new(limits.clone());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, remote) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, most often: back off
                        // and say so, but not once per attempt.
                        accept_failed.hit(|left_out| {
                            tracing::warn!(error = %e, left_out, "accept failed");
                        });
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Some(slot) = gate.admit(remote.ip()) else {
                    gate.refused.hit(|left_out| {
                        tracing::warn!(%remote, left_out, "connection refused: connection cap reached");
                    });
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let router = router.clone();
                let watcher = graceful.watcher();
                let limits = limits.clone();
                tokio::spawn(async move {
                    serve_connection(acceptor, router, watcher, tcp, remote, &limits).await;
                    drop(slot);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for open requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!("open connections did not finish within 30 s");
        }
    }
    tracing::info!("stopped");
}

async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    limits: &ConnLimits,
) {
    use tower::ServiceExt;
    let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
    io.set_read_timeout(Some(limits.idle_timeout));
    io.set_write_timeout(Some(limits.idle_timeout));
    let io = Box::pin(io);
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(io)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| PeerCertificate(Arc::new(c.to_vec())));
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if let Some(p) = &peer {
            req.extensions_mut().insert(p.clone());
        }
        req.extensions_mut().insert(RemoteAddr(remote));
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    // hyper's header-read timeout also runs while a kept-alive connection
    // waits for its next request, so it is the idle timeout between
    // requests too.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
