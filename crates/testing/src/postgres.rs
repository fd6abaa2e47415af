//! A throwaway PostgreSQL server for tests and benchmarks.
//!
//! [`TempPostgres::shared`] starts one server per test process: `initdb`
//! in a temporary directory (as the user `nobody` when the tests run as
//! root, since PostgreSQL refuses to run as root), listening on 127.0.0.1
//! and a private Unix socket only, with `fsync` on. It is started through a
//! shell that holds a pipe from the test process: when the process ends,
//! however it ends, the pipe closes and the shell stops the server (fast
//! shutdown) and removes its directory. Each test takes a fresh database
//! with [`TempPostgres::database`].
//!
//! The server's binaries are found on `PATH`, else under
//! `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` packages).
//! Without them the call fails, naming what to install: tests fail
//! rather than skip.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use twinseal_sql::Db;
use twinseal_sql::params;
use twinseal_sql::pg::{PgConn, PgOptions};

/// A running throwaway server.
pub struct TempPostgres {
    port: u16,
    /// Extra server settings (`-c name=value ...`).
    extra: String,
    dir: PathBuf,
    bin: PathBuf,
    user: Option<&'static str>,
    guard: Mutex<Option<crate::Shell>>,
}

fn find_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TWINSEAL_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("initdb").is_file() && d.join("postgres").is_file() {
                return Ok(d);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|d| d.join("initdb").is_file())
        .ok_or_else(|| {
            "PostgreSQL's server binaries (initdb, postgres) are not installed: \
             `apt-get install postgresql`, or set TWINSEAL_PG_BIN"
                .to_string()
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

impl TempPostgres {
    /// The process's server, started on first use.
    pub fn shared() -> &'static TempPostgres {
        static PG: OnceLock<TempPostgres> = OnceLock::new();
        PG.get_or_init(|| TempPostgres::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Start a server of its own (for tests that stop and restart it).
    pub fn start() -> Result<TempPostgres, String> {
        let bin = find_bin()?;
        let dir = std::env::temp_dir().join(format!(
            "twinseal-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("sock")).map_err(|e| format!("{e}"))?;
        let user = is_root().then_some("nobody");
        if let Some(u) = user {
            run(
                Command::new("chown").arg("-R").arg(u).arg(&dir),
                "chown of the server's directory",
            )?;
        }
        let mut initdb = as_user(user, bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "twinseal", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .arg("--no-instructions");
        if let Err(e) = run(&mut initdb, "initdb") {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        // Roles in PASSWORD_GROUP log in over TCP with a password (SCRAM);
        // every other role is trusted on loopback.
        let hba = dir.join("data/pg_hba.conf");
        let rest = std::fs::read_to_string(&hba).map_err(|e| format!("{e}"))?;
        std::fs::write(
            &hba,
            format!("host all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256\n{rest}"),
        )
        .map_err(|e| format!("{e}"))?;
        let pg = TempPostgres {
            port: crate::free_port(),
            extra: String::new(),
            dir,
            bin,
            user,
            guard: Mutex::new(None),
        };
        pg.run_server()?;
        Ok(pg)
    }

    fn run_server(&self) -> Result<(), String> {
        let postgres = self.bin.join("postgres");
        let setpriv = match self.user {
            Some(u) => format!("setpriv --reuid={u} --regid=nogroup --clear-groups -- "),
            None => String::new(),
        };
        // The shell waits for the pipe to close (the test process ended, or
        // `stop`), then stops the server and, at the end, removes it all.
        let script = format!(
            "{setpriv}'{pg}' -D '{dir}/data' -h 127.0.0.1 -p {port} -k '{dir}/sock' \
             -c fsync=on -c synchronous_commit=on -c max_connections=200 \
             -c shared_buffers=32MB -c log_min_messages=fatal {extra} >'{dir}/log' 2>&1 &\n\
             pid=$!\nread _ignored\nkill -INT $pid 2>/dev/null\nwait $pid\n\
             [ \"$TWINSEAL_PG_KEEP\" = 1 ] || [ -f '{dir}/restart' ] || rm -rf '{dir}'\n",
            pg = postgres.display(),
            dir = self.dir.display(),
            port = self.port,
            extra = self.extra,
        );
        let shell = crate::Shell::spawn(&script, "postgres")?;
        *self.guard.lock().unwrap_or_else(|e| e.into_inner()) = Some(shell);
        let start = Instant::now();
        loop {
            match PgConn::connect(&self.options("postgres")) {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > Duration::from_secs(30) => {
                    let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                    return Err(format!("postgres did not start: {e}\n{log}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Start a server of its own that also speaks TLS, with a certificate
    /// for 127.0.0.1 and localhost from a fresh CA; returns it and the
    /// CA's certificate (PEM).
    pub fn start_tls() -> Result<(TempPostgres, String), String> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(e)?;
        let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .map_err(e)?
            .signed_by(&key, &issuer)
            .map_err(e)?;
        let mut pg = TempPostgres::start()?;
        pg.stop();
        let (crt, pem_key) = (pg.dir.join("server.crt"), pg.dir.join("server.key"));
        std::fs::write(&crt, server.pem()).map_err(|e| e.to_string())?;
        std::fs::write(&pem_key, key.serialize_pem()).map_err(|e| e.to_string())?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pem_key, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
        }
        if let Some(u) = pg.user {
            run(
                Command::new("chown").arg(u).arg(&crt).arg(&pem_key),
                "chown of the server's certificate",
            )?;
        }
        pg.extra = format!(
            "-c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
            crt.display(),
            pem_key.display()
        );
        pg.restart()?;
        Ok((pg, ca_cert.pem()))
    }

    /// Stop the server (fast shutdown: open connections are closed) and
    /// wait for it; [`TempPostgres::restart`] starts it again on the same
    /// port with the same data.
    pub fn stop(&self) {
        let _ = std::fs::write(self.dir.join("restart"), b"");
        if let Some(shell) = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take() {
            shell.stop();
        }
    }

    /// Start a stopped server again.
    pub fn restart(&self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.dir.join("restart"));
        self.run_server()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` (no password: the server trusts loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://twinseal@127.0.0.1:{}/{db}", self.port)
    }

    /// Options for database `db`.
    pub fn options(&self, db: &str) -> PgOptions {
        let mut o = PgOptions::new(&self.url(db));
        o.connect_timeout = Duration::from_secs(2);
        o
    }

    /// Create a fresh, empty database owned by a new role that must log
    /// in with `password`; returns its URL (without the password).
    pub fn database_with_password(&self, password: &str) -> String {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (role, name) = (
            format!("pw{}_{n}", std::process::id()),
            format!("tpw{}_{n}", std::process::id()),
        );
        let c = PgConn::connect(&self.options("postgres")).unwrap_or_else(|e| panic!("{e}"));
        let quoted = password.replace('\'', "''");
        c.batch(&format!(
            "DO $$ BEGIN CREATE ROLE {PASSWORD_GROUP} NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             CREATE ROLE {role} LOGIN PASSWORD '{quoted}' IN ROLE {PASSWORD_GROUP}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        // Not in the same batch: CREATE DATABASE runs outside transactions.
        c.batch(&format!("CREATE DATABASE {name} OWNER {role}"))
            .unwrap_or_else(|e| panic!("{e}"));
        format!("postgres://{role}@127.0.0.1:{}/{name}", self.port)
    }

    /// Create a fresh, empty database; returns its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let c = PgConn::connect(&self.options("postgres")).unwrap_or_else(|e| panic!("{e}"));
        c.execute(&format!("CREATE DATABASE {name}"), params![])
            .unwrap_or_else(|e| panic!("{e}"));
        self.url(&name)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("restart"));
        if let Some(shell) = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take() {
            shell.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The group whose member roles must log in with a password.
const PASSWORD_GROUP: &str = "twinseal_password_users";

fn as_user(user: Option<&str>, program: PathBuf) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={u}"))
                .arg("--regid=nogroup")
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}
