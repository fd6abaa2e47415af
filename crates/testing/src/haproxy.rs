//! A throwaway HAProxy (Debian's `haproxy`) in TCP mode: one frontend on
//! 127.0.0.1 passing connections through, round robin, to the given
//! backends, so TLS ends at the backends and clients verify each
//! backend's own certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running HAProxy.
pub struct TempHaproxy {
    port: u16,
    guard: Mutex<Option<crate::Shell>>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn find() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TWINSEAL_HAPROXY") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.into_iter()
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "HAProxy is not installed: `apt-get install haproxy`, or set TWINSEAL_HAPROXY".into()
        })
}

impl TempHaproxy {
    /// Start one in front of `backends` (each health-checked over TCP).
    pub fn start(backends: &[SocketAddr]) -> Result<TempHaproxy, String> {
        let bin = find()?;
        let dir = std::env::temp_dir().join(format!(
            "twinseal-haproxy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = crate::free_port();
        let mut cfg = format!(
            "global\n  maxconn 512\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend workers\n  bind 127.0.0.1:{port}\n  default_backend workers\n\
             backend workers\n  balance roundrobin\n"
        );
        for (i, b) in backends.iter().enumerate() {
            cfg.push_str(&format!("  server w{i} {b} check inter 500ms\n"));
        }
        std::fs::write(dir.join("haproxy.cfg"), cfg).map_err(|e| e.to_string())?;
        let script = format!(
            "'{bin}' -db -f '{d}/haproxy.cfg' >'{d}/log' 2>&1 &\npid=$!\nread _ignored\n\
             kill -TERM $pid 2>/dev/null\nwait $pid\nrm -rf '{d}'\n",
            bin = bin.display(),
            d = dir.display()
        );
        let shell = crate::Shell::spawn(&script, "HAProxy")?;
        let h = TempHaproxy {
            port,
            guard: Mutex::new(Some(shell)),
        };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                return Err(format!("HAProxy did not start: {log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(h)
    }

    /// The frontend's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TempHaproxy {
    fn drop(&mut self) {
        if let Some(shell) = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take() {
            shell.stop();
        }
    }
}
