//! Locating the real attestation samples (`../shared/testdata/attestation`
//! beside the repository root) and the skip-or-fail rule when they are absent.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The samples directory, or `None` (after printing why) when absent outside
/// CI. Under `CI=true` a missing directory fails the test.
pub fn samples() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TWINSEAL_ATTESTATION_SAMPLES").map(PathBuf::from),
        // crates/attest -> repository root -> its parent holds shared/.
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/attestation"),
        ),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/attestation")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.join("dcap/sgx_quote").is_file() {
            return Some(c);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("attestation samples (../shared/testdata/attestation) are missing under CI=true");
    }
    eprintln!(
        "SKIPPED: attestation samples not found (../shared/testdata/attestation beside the repository); set TWINSEAL_ATTESTATION_SAMPLES to run these tests"
    );
    None
}

pub fn read(dir: &std::path::Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("read sample {rel}: {e}"))
}

/// Seconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SSZ`.
pub fn at(rfc3339: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("valid RFC 3339 time");
    UNIX_EPOCH + Duration::from_secs(t.unix_timestamp() as u64)
}
