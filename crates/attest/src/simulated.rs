//! The simulated TEE, for laptops and CI. Never production.
//!
//! Evidence is signed by a local platform key (Ed25519) and carries the
//! SHA-384 of the running executable as its measurement, so a rebuilt or
//! patched binary measures differently. The verifier exists only when a
//! caller builds it through [`SimulatedVerifier::insecure_new`], and its
//! claims are always marked simulated.
//!
//! Format version 2 (all integers big-endian; documented in
//! `docs/spec/attestation.md`):
//!
//! | offset | len | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `TWSIMTEE` |
//! | 8 | 2 | version, 2 |
//! | 10 | 2 | flags: bit 0 debug; other bits zero |
//! | 12 | 32 | platform id, UTF-8, zero padded |
//! | 44 | 48 | measurement: SHA-384 of the executable |
//! | 92 | 4 | security version |
//! | 96 | 8 | creation time, Unix seconds |
//! | 104 | 64 | report data |
//! | 168 | 32 | platform public key, Ed25519 |
//! | 200 | 64 | signature over bytes 0..200: Ed25519 |
//!
//! Version 1 (361 bytes, ECDSA P-384) is rejected with a message saying so:
//! Ed25519 verification costs a fraction of a P-384 one (see
//! `BENCHMARKS.md`), and nothing durable is signed with simulated evidence,
//! so there is no reason to keep accepting it.

use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    UnparsedPublicKey,
};
use zeroize::Zeroizing;

use crate::Verifier;
use crate::binding::check_expected;
use crate::claims::{
    ClaimsParts, HexBytes, Measurements, PlatformIdentity, TcbStatus, TeeKind, VerifiedClaims,
    unix_secs,
};
use crate::error::{Error, Result};
use crate::evidence::Evidence;

pub use crate::evidence::SIM_MAGIC;
pub use crate::measure::executable_measurement;
/// Format version.
pub const SIM_VERSION: u16 = 2;
/// Total length of simulated evidence.
pub const SIM_EVIDENCE_LEN: usize = 264;
/// Length of the signed prefix.
pub const SIM_SIGNED_LEN: usize = 200;
const PLATFORM_ID_LEN: usize = 32;
const PUBLIC_KEY_LEN: usize = 32;
/// How far in the future (clock skew) a creation time may lie.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
const K: TeeKind = TeeKind::Simulated;

/// A simulated platform: its signing key, identity and settings. The key is
/// never printed: `Debug` shows only the platform id and public key.
pub struct SimulatedPlatform {
    key: Ed25519KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    platform_id: String,
    debug: bool,
    svn: u32,
}

impl std::fmt::Debug for SimulatedPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedPlatform")
            .field("platform_id", &self.platform_id)
            .field("public_key", &hex::encode(self.public_key()))
            .field("debug", &self.debug)
            .finish_non_exhaustive()
    }
}

impl SimulatedPlatform {
    /// A platform with a freshly generated key.
    pub fn generate(platform_id: &str) -> Result<Self> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| Error::Key("key generation failed"))?;
        Self::from_pkcs8(doc.as_ref(), platform_id)
    }

    /// A platform whose key is the PKCS#8 document `pkcs8` (from [`Self::pkcs8`]).
    pub fn from_pkcs8(pkcs8: &[u8], platform_id: &str) -> Result<Self> {
        if platform_id.is_empty()
            || platform_id.len() > PLATFORM_ID_LEN
            || platform_id.contains('\0')
        {
            return Err(Error::Key("platform id must be 1 to 32 bytes without NUL"));
        }
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| {
            if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8).is_ok() {
                Error::Key(
                    "a P-384 platform key signs simulated evidence version 1, which is no longer \
                     accepted: generate a new (Ed25519) platform key",
                )
            } else {
                Error::Key("not an Ed25519 PKCS#8 private key")
            }
        })?;
        Ok(SimulatedPlatform {
            key,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            platform_id: platform_id.to_string(),
            debug: false,
            svn: 0,
        })
    }

    /// The private key as PKCS#8 DER, to persist the platform (handle as a secret).
    pub fn pkcs8(&self) -> &Zeroizing<Vec<u8>> {
        &self.pkcs8
    }

    /// The platform public key (Ed25519, 32 bytes), what verifiers trust.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// Mark evidence as coming from a debug-mode environment.
    pub fn with_debug(mut self, debug: bool) -> Self {
        self.debug = debug;
        self
    }

    /// Set the security version reported in evidence.
    pub fn with_svn(mut self, svn: u32) -> Self {
        self.svn = svn;
        self
    }

    /// The platform id.
    pub fn platform_id(&self) -> &str {
        &self.platform_id
    }

    /// Evidence for `report_data`, measuring the running executable.
    pub fn attest(&self, report_data: &[u8; 64], now: SystemTime) -> Result<Evidence> {
        self.attest_with_measurement(&executable_measurement()?, report_data, now)
    }

    /// Evidence with an explicit measurement (tests and tools that attest on
    /// behalf of another binary).
    pub fn attest_with_measurement(
        &self,
        measurement: &[u8; 48],
        report_data: &[u8; 64],
        now: SystemTime,
    ) -> Result<Evidence> {
        let mut b = Vec::with_capacity(SIM_EVIDENCE_LEN);
        b.extend_from_slice(SIM_MAGIC);
        b.extend_from_slice(&SIM_VERSION.to_be_bytes());
        b.extend_from_slice(&u16::from(self.debug).to_be_bytes());
        let mut id = [0u8; PLATFORM_ID_LEN];
        id[..self.platform_id.len()].copy_from_slice(self.platform_id.as_bytes());
        b.extend_from_slice(&id);
        b.extend_from_slice(measurement);
        b.extend_from_slice(&self.svn.to_be_bytes());
        b.extend_from_slice(&unix_secs(now).to_be_bytes());
        b.extend_from_slice(report_data);
        b.extend_from_slice(self.public_key());
        debug_assert_eq!(b.len(), SIM_SIGNED_LEN);
        let sig = self.key.sign(&b);
        b.extend_from_slice(sig.as_ref());
        debug_assert_eq!(b.len(), SIM_EVIDENCE_LEN);
        Ok(Evidence::Simulated(b))
    }
}

/// Verifies simulated evidence signed by one of the trusted platform keys.
#[derive(Debug, Clone)]
pub struct SimulatedVerifier {
    trusted_keys: Vec<Vec<u8>>,
}

impl SimulatedVerifier {
    /// A verifier for simulated evidence. INSECURE: simulated evidence proves
    /// nothing about the hardware; enable only for development and CI. Logs a
    /// warning.
    pub fn insecure_new(trusted_platform_keys: Vec<Vec<u8>>) -> Self {
        tracing::warn!(
            "simulated TEE verifier enabled: simulated evidence is not a hardware guarantee"
        );
        SimulatedVerifier {
            trusted_keys: trusted_platform_keys,
        }
    }
}

impl Verifier for SimulatedVerifier {
    fn kind(&self) -> TeeKind {
        K
    }

    fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8; 64],
        at: SystemTime,
    ) -> Result<VerifiedClaims> {
        let Evidence::Simulated(b) = evidence else {
            return Err(Error::rejected(
                K,
                format!(
                    "{} evidence given to the simulated verifier",
                    evidence.kind()
                ),
            ));
        };
        let fields = parse(b).map_err(|d| Error::rejected(K, d))?;
        if !self
            .trusted_keys
            .iter()
            .any(|k| k.as_slice() == fields.public_key)
        {
            return Err(Error::rejected(K, "platform key is not trusted"));
        }
        // Every call verifies the signature: nothing is cached by evidence.
        UnparsedPublicKey::new(&ED25519, fields.public_key)
            .verify(&b[..SIM_SIGNED_LEN], &b[SIM_SIGNED_LEN..])
            .map_err(|_| Error::rejected(K, "signature does not verify"))?;
        if fields.created > unix_secs(at) + MAX_CLOCK_SKEW.as_secs() {
            return Err(Error::rejected(K, "evidence created in the future"));
        }
        let claims = ClaimsParts {
            tee: K,
            measurements: Measurements::Simulated {
                executable_sha384: HexBytes(fields.measurement.to_vec()),
                svn: fields.svn,
            },
            debug: fields.debug,
            tcb_status: TcbStatus::UpToDate,
            advisory_ids: Vec::new(),
            platform: PlatformIdentity {
                simulated_platform_id: Some(fields.platform_id),
                ..Default::default()
            },
            report_data: fields.report_data,
            verified_at: at,
        };
        check_expected(K, &claims.report_data, expected_report_data)?;
        Ok(VerifiedClaims::from_parts(claims))
    }
}

/// Fields of simulated evidence (parsed, not verified).
#[derive(Debug)]
pub struct SimulatedFields<'a> {
    /// Debug flag.
    pub debug: bool,
    /// Platform id.
    pub platform_id: String,
    /// Executable measurement.
    pub measurement: [u8; 48],
    /// Security version.
    pub svn: u32,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Report data.
    pub report_data: [u8; 64],
    /// Platform public key.
    pub public_key: &'a [u8],
}

/// Parse simulated evidence strictly (magic, version, length, flags, id).
pub fn parse(b: &[u8]) -> std::result::Result<SimulatedFields<'_>, String> {
    if b.len() < 10 || &b[..8] != SIM_MAGIC {
        return Err("bad magic".into());
    }
    match u16::from_be_bytes([b[8], b[9]]) {
        SIM_VERSION => {}
        1 => {
            return Err(
                "simulated evidence version 1 (ECDSA P-384) is no longer accepted: \
                 attest again with a current platform (version 2, Ed25519)"
                    .into(),
            );
        }
        v => return Err(format!("unsupported simulated evidence version {v}")),
    }
    if b.len() != SIM_EVIDENCE_LEN {
        return Err(format!("simulated evidence has length {}", b.len()));
    }
    let flags = u16::from_be_bytes([b[10], b[11]]);
    if flags & !1 != 0 {
        return Err("unknown flags".into());
    }
    let id = &b[12..44];
    let id_len = id.iter().position(|&c| c == 0).unwrap_or(PLATFORM_ID_LEN);
    if id_len == 0 || id[id_len..].iter().any(|&c| c != 0) {
        return Err("malformed platform id".into());
    }
    let platform_id = std::str::from_utf8(&id[..id_len])
        .map_err(|_| "platform id is not UTF-8".to_string())?
        .to_string();
    Ok(SimulatedFields {
        debug: flags & 1 == 1,
        platform_id,
        measurement: b[44..92].try_into().expect("48 bytes"),
        svn: u32::from_be_bytes(b[92..96].try_into().expect("4 bytes")),
        created: u64::from_be_bytes(b[96..104].try_into().expect("8 bytes")),
        report_data: b[104..168].try_into().expect("64 bytes"),
        public_key: &b[168..168 + PUBLIC_KEY_LEN],
    })
}
