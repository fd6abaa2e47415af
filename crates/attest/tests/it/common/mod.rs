//! Locating the real attestation samples (`testdata/attestation` in the
//! repository, with their sources and licences in its README).

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The samples directory (`TWINSEAL_ATTESTATION_SAMPLES` overrides it);
/// a missing one fails the test with what to do.
pub fn samples() -> PathBuf {
    let dir = std::env::var_os("TWINSEAL_ATTESTATION_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/attestation")
        });
    assert!(
        dir.join("dcap/sgx_quote").is_file(),
        "the attestation samples are missing at {}: testdata/ is part of the repository: restore it with `git checkout -- testdata`",
        dir.display()
    );
    dir
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
