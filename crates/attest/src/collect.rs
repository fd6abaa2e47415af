//! Evidence collectors: the attesting side.
//!
//! - SGX under Gramine: write the report data to
//!   `/dev/attestation/user_report_data`, read `/dev/attestation/quote`.
//! - TDX and SEV-SNP under Linux configfs-tsm: create an entry under
//!   `/sys/kernel/config/tsm/report/`, write `inblob`, read `outblob`,
//!   `provider` and `generation` (and `auxblob` for the SEV-SNP VCEK).
//! - The simulated TEE: [`crate::SimulatedPlatform::attest`].
//!
//! The root path is injectable, so tests drive this exact code against a
//! directory tree that imitates the kernel's interface.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::evidence::Evidence;

const GRAMINE_DIR: &str = "dev/attestation";
const TSM_DIR: &str = "sys/kernel/config/tsm/report";
/// GUID of the VCEK entry in the SEV-SNP certificate table (GHCB spec).
const VCEK_GUID: [u8; 16] = guid_le("63da758d-e664-4564-adc5-f4b93be8accd");

/// Encode a GUID string in the mixed-endian byte order used by the table.
const fn guid_le(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    const fn nib(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("bad GUID"),
        }
    }
    let mut raw = [0u8; 16];
    let mut i = 0;
    let mut j = 0;
    while i < b.len() {
        if b[i] == b'-' {
            i += 1;
            continue;
        }
        raw[j] = nib(b[i]) << 4 | nib(b[i + 1]);
        j += 1;
        i += 2;
    }
    [
        raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], raw[8], raw[9], raw[10],
        raw[11], raw[12], raw[13], raw[14], raw[15],
    ]
}

/// Which attestation interface was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TeeInterface {
    /// Gramine's `/dev/attestation` with DCAP (SGX).
    GramineSgx,
    /// Linux configfs-tsm (TDX or SEV-SNP guest; the provider tells which).
    ConfigFsTsm,
}

/// Collects evidence from the TEE interfaces under a root directory.
#[derive(Debug, Clone)]
pub struct Collector {
    root: PathBuf,
    entry_name: Option<String>,
    timeout: Duration,
}

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

impl Collector {
    /// The real system (root `/`).
    pub fn system() -> Self {
        Self::with_root("/")
    }

    /// Interfaces under `root` (tests pass a temporary directory).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Collector {
            root: root.into(),
            entry_name: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Use this configfs-tsm entry name instead of a generated one.
    pub fn with_entry_name(mut self, name: &str) -> Self {
        self.entry_name = Some(name.to_string());
        self
    }

    /// Detect the interface present, or fail with a clear error.
    pub fn detect(&self) -> Result<TeeInterface> {
        let gramine = self.root.join(GRAMINE_DIR);
        if gramine.join("user_report_data").exists() && gramine.join("quote").exists() {
            let kind =
                std::fs::read_to_string(gramine.join("attestation_type")).unwrap_or_default();
            if kind.trim() == "dcap" {
                return Ok(TeeInterface::GramineSgx);
            }
            return Err(Error::NoTee(format!(
                "Gramine attestation type is {:?}, only \"dcap\" is supported",
                kind.trim()
            )));
        }
        if self.root.join(TSM_DIR).is_dir() {
            return Ok(TeeInterface::ConfigFsTsm);
        }
        Err(Error::NoTee(format!(
            "neither {GRAMINE_DIR} (Gramine SGX) nor {TSM_DIR} (configfs-tsm: TDX, SEV-SNP) exists under {}; use the simulated TEE for development",
            self.root.display()
        )))
    }

    /// Collect evidence binding `report_data` from the detected interface.
    pub fn collect(&self, report_data: &[u8; 64]) -> Result<Evidence> {
        match self.detect()? {
            TeeInterface::GramineSgx => self.collect_gramine(report_data),
            TeeInterface::ConfigFsTsm => self.collect_tsm(report_data),
        }
    }

    fn collect_gramine(&self, report_data: &[u8; 64]) -> Result<Evidence> {
        let dir = self.root.join(GRAMINE_DIR);
        let urd = dir.join("user_report_data");
        std::fs::write(&urd, report_data).map_err(io("write", &urd))?;
        let qpath = dir.join("quote");
        let quote = std::fs::read(&qpath).map_err(io("read", &qpath))?;
        match Evidence::detect(&quote) {
            Ok(e @ Evidence::SgxQuote(_)) => Ok(e),
            _ => Err(Error::Interface(
                "Gramine returned something that is not an SGX DCAP quote".into(),
            )),
        }
    }

    fn collect_tsm(&self, report_data: &[u8; 64]) -> Result<Evidence> {
        let name = self.entry_name.clone().unwrap_or_else(|| {
            format!(
                "twinseal-{}-{}",
                std::process::id(),
                ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        let entry = self.root.join(TSM_DIR).join(name);
        // On configfs, mkdir creates the entry with its attribute files.
        std::fs::create_dir(&entry).map_err(io("create configfs-tsm entry", &entry))?;
        let result = self.collect_tsm_entry(&entry, report_data);
        // The kernel frees the entry on rmdir; failure only leaks a directory.
        let _ = std::fs::remove_dir(&entry);
        result
    }

    fn collect_tsm_entry(&self, entry: &Path, report_data: &[u8; 64]) -> Result<Evidence> {
        let inblob = entry.join("inblob");
        std::fs::write(&inblob, report_data).map_err(io("write", &inblob))?;
        let outblob = entry.join("outblob");
        // The kernel produces the report on the first read of outblob. A
        // tree imitating it may need a moment, so an empty read is retried
        // until the timeout.
        let deadline = Instant::now() + self.timeout;
        let out = loop {
            let b = match std::fs::read(&outblob) {
                Ok(b) => b,
                // Not yet there in a tree imitating configfs: retry.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io("read", &outblob)(e)),
            };
            if !b.is_empty() {
                break b;
            }
            if Instant::now() > deadline {
                return Err(Error::Interface("configfs-tsm outblob stayed empty".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let gen_path = entry.join("generation");
        let generation = std::fs::read_to_string(&gen_path).map_err(io("read", &gen_path))?;
        // One write of inblob means generation 1; anything else means another
        // writer raced us and the report may not carry our report data.
        if generation.trim() != "1" {
            return Err(Error::Interface(format!(
                "configfs-tsm entry was written concurrently (generation {})",
                generation.trim()
            )));
        }
        let prov_path = entry.join("provider");
        let provider = std::fs::read_to_string(&prov_path).map_err(io("read", &prov_path))?;
        match provider.trim() {
            "tdx_guest" => match Evidence::detect(&out) {
                Ok(e @ Evidence::TdxQuote(_)) => Ok(e),
                _ => Err(Error::Interface(
                    "tdx_guest returned something that is not a TDX quote".into(),
                )),
            },
            "sev_guest" => {
                let aux = std::fs::read(entry.join("auxblob")).unwrap_or_default();
                match Evidence::detect(&out) {
                    Ok(Evidence::SevSnp { report, .. }) => Ok(Evidence::SevSnp {
                        report,
                        vcek_der: vcek_from_cert_table(&aux),
                    }),
                    _ => Err(Error::Interface(
                        "sev_guest returned something that is not an SEV-SNP report".into(),
                    )),
                }
            }
            other => Err(Error::NoTee(format!(
                "configfs-tsm provider {other:?} is not supported (tdx_guest, sev_guest)"
            ))),
        }
    }
}

/// The VCEK from an SEV-SNP certificate table (GUID, offset, length entries
/// terminated by an all-zero entry; offsets from the table start).
pub fn vcek_from_cert_table(table: &[u8]) -> Option<Vec<u8>> {
    for e in table.chunks_exact(24) {
        let (guid, rest) = e.split_at(16);
        if guid.iter().all(|&b| b == 0) {
            break;
        }
        let off = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
        let len = u32::from_le_bytes(rest[4..].try_into().ok()?) as usize;
        if guid == VCEK_GUID {
            return table.get(off..off.checked_add(len)?).map(<[u8]>::to_vec);
        }
    }
    None
}

/// Build a certificate table holding `vcek_der` (for tests and tools).
pub fn cert_table_with_vcek(vcek_der: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&VCEK_GUID);
    t.extend_from_slice(&48u32.to_le_bytes());
    t.extend_from_slice(&(vcek_der.len() as u32).to_le_bytes());
    t.extend_from_slice(&[0u8; 24]);
    t.extend_from_slice(vcek_der);
    t
}
