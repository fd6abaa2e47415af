//! What the simulated TEE reports as a binary's measurement, available in
//! every build: `twinseal-worker measurement` prints it for a manifest, and
//! `scripts/measure-worker` recomputes it from a clean build.

use std::sync::OnceLock;

use sha2::{Digest, Sha384};

use crate::error::{Error, Result};

/// SHA-384 of the running executable, computed once per process.
pub fn executable_measurement() -> Result<[u8; 48]> {
    static MEASUREMENT: OnceLock<std::result::Result<[u8; 48], String>> = OnceLock::new();
    MEASUREMENT
        .get_or_init(|| {
            let path = std::env::current_exe().map_err(|e| format!("locate executable: {e}"))?;
            let mut file = std::fs::File::open(&path)
                .map_err(|e| format!("open executable {}: {e}", path.display()))?;
            let mut h = Sha384::new();
            std::io::copy(&mut file, &mut h)
                .map_err(|e| format!("read executable {}: {e}", path.display()))?;
            Ok(h.finalize().into())
        })
        .clone()
        .map_err(Error::Interface)
}
