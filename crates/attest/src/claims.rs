//! Normalized claims: what a verifier vouches for after checking evidence.
//!
//! [`VerifiedClaims`] has private fields and no public constructor: the only
//! way to obtain one is to run a verifier of this crate over evidence whose
//! signatures, chain, collateral window and report-data binding all checked
//! out. Policy code can therefore treat holding one as proof of verification.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// The kind of trusted execution environment that produced evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeeKind {
    /// Intel SGX enclave, DCAP quote v3.
    Sgx,
    /// Intel TDX trust domain, DCAP quote v4 or v5.
    Tdx,
    /// AMD SEV-SNP guest, attestation report signed by a VCEK.
    SevSnp,
    /// The simulated TEE: evidence signed by a local platform key. Never production.
    Simulated,
}

impl TeeKind {
    /// The stable lowercase name used in claims, policies and file formats.
    pub fn as_str(self) -> &'static str {
        match self {
            TeeKind::Sgx => "sgx",
            TeeKind::Tdx => "tdx",
            TeeKind::SevSnp => "sev-snp",
            TeeKind::Simulated => "simulated",
        }
    }
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Trusted computing base status of the platform, as far as the verifier can
/// tell. Whether anything other than `UpToDate` is acceptable is the policy's
/// decision, never the verifier's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum TcbStatus {
    /// The platform runs the latest TCB the vendor's collateral knows.
    UpToDate,
    /// Up to date, but software hardening is needed (Intel advisories).
    SWHardeningNeeded,
    /// Up to date, but the platform configuration needs attention.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// The platform TCB is older than the latest.
    OutOfDate,
    /// Out of date and configuration needed.
    OutOfDateConfigurationNeeded,
    /// TDX 1.5: launched out of date, current TCB fine; relaunch advised.
    TDRelaunchAdvised,
    /// TDX 1.5: relaunch advised and configuration needed.
    TDRelaunchAdvisedConfigurationNeeded,
    /// The platform's keys are revoked.
    Revoked,
    /// The verifier has no reference to judge the TCB against (SEV-SNP without
    /// an operator-supplied latest TCB).
    Unknown,
}

impl TcbStatus {
    /// The name used in claims and policies (the variant name).
    pub fn as_str(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::TDRelaunchAdvised => "TDRelaunchAdvised",
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded => {
                "TDRelaunchAdvisedConfigurationNeeded"
            }
            TcbStatus::Revoked => "Revoked",
            TcbStatus::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes that print and serialize as lowercase hex (measurements, ids).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HexBytes(pub(crate) Vec<u8>);

impl HexBytes {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl From<&[u8]> for HexBytes {
    fn from(b: &[u8]) -> Self {
        HexBytes(b.to_vec())
    }
}

/// The measurements and security versions of the attested code, per TEE kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Measurements {
    /// SGX enclave identity.
    Sgx {
        /// MRENCLAVE: hash of the enclave's initial contents.
        mr_enclave: HexBytes,
        /// MRSIGNER: hash of the enclave signer's public key.
        mr_signer: HexBytes,
        /// ISV product id.
        isv_prod_id: u16,
        /// ISV security version.
        isv_svn: u16,
    },
    /// TDX trust-domain identity.
    Tdx {
        /// MRTD: measurement of the initial TD contents.
        mr_td: HexBytes,
        /// RTMR0..RTMR3: runtime measurement registers.
        rtmrs: [HexBytes; 4],
        /// MRCONFIGID.
        mr_config_id: HexBytes,
        /// MROWNER.
        mr_owner: HexBytes,
        /// MROWNERCONFIG.
        mr_owner_config: HexBytes,
        /// MRSEAM: measurement of the TDX module.
        mr_seam: HexBytes,
        /// TEE_TCB_SVN: security versions of the TDX module.
        tee_tcb_svn: HexBytes,
    },
    /// SEV-SNP guest identity.
    SevSnp {
        /// The launch measurement (SHA-384).
        measurement: HexBytes,
        /// HOST_DATA supplied at launch.
        host_data: HexBytes,
        /// Guest security version.
        guest_svn: u32,
        /// The guest policy (raw 64-bit value).
        policy: u64,
        /// The VMPL the report was requested from.
        vmpl: u32,
        /// Reported TCB (raw 64-bit value: boot loader, TEE, SNP, microcode SVNs).
        reported_tcb: u64,
    },
    /// The simulated TEE.
    Simulated {
        /// SHA-384 of the executable that produced the evidence.
        executable_sha384: HexBytes,
        /// Security version configured for the simulated platform.
        svn: u32,
    },
}

impl Measurements {
    /// The primary measurement that allow-lists name: MRENCLAVE, MRTD, the SNP
    /// launch measurement, or the simulated executable digest.
    pub fn primary(&self) -> &HexBytes {
        match self {
            Measurements::Sgx { mr_enclave, .. } => mr_enclave,
            Measurements::Tdx { mr_td, .. } => mr_td,
            Measurements::SevSnp { measurement, .. } => measurement,
            Measurements::Simulated {
                executable_sha384, ..
            } => executable_sha384,
        }
    }
}

/// Identity of the hardware platform, used for placement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlatformIdentity {
    /// SEV-SNP CHIP_ID (64 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chip_id: Option<HexBytes>,
    /// SGX/TDX PPID from the PCK certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<HexBytes>,
    /// SGX/TDX FMSPC (platform family) from the PCK certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmspc: Option<HexBytes>,
    /// The simulated platform's configured id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulated_platform_id: Option<String>,
}

impl PlatformIdentity {
    /// Identity strings in placement-endorsement form, most specific first:
    /// `snp-chip-id:HEX`, `ppid:HEX`, `fmspc:HEX`, `simulated:ID`.
    pub fn references(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.chip_id {
            out.push(format!("snp-chip-id:{c}"));
        }
        if let Some(p) = &self.ppid {
            out.push(format!("ppid:{p}"));
        }
        if let Some(f) = &self.fmspc {
            out.push(format!("fmspc:{f}"));
        }
        if let Some(s) = &self.simulated_platform_id {
            out.push(format!("simulated:{s}"));
        }
        out
    }
}

/// Claims about attested code that a verifier of this crate has checked.
///
/// Only this crate's verifiers construct it. It derives `Serialize` (for
/// printing and for the policy's input) but not `Deserialize`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedClaims {
    tee: TeeKind,
    simulated: bool,
    measurement: HexBytes,
    measurements: Measurements,
    debug: bool,
    tcb_status: TcbStatus,
    advisory_ids: Vec<String>,
    platform: PlatformIdentity,
    platform_references: Vec<String>,
    report_data: HexBytes,
    verified_at: u64,
}

/// The fields a verifier fills in; kept crate-private so that nothing outside
/// can assemble claims. (Only verifiers use it: unused in attester-only builds.)
#[cfg_attr(
    not(any(feature = "verify", feature = "insecure-simulated-tee")),
    allow(dead_code)
)]
pub(crate) struct ClaimsParts {
    pub tee: TeeKind,
    pub measurements: Measurements,
    pub debug: bool,
    pub tcb_status: TcbStatus,
    pub advisory_ids: Vec<String>,
    pub platform: PlatformIdentity,
    pub report_data: [u8; 64],
    pub verified_at: SystemTime,
}

impl VerifiedClaims {
    #[cfg_attr(
        not(any(feature = "verify", feature = "insecure-simulated-tee")),
        allow(dead_code)
    )]
    pub(crate) fn from_parts(p: ClaimsParts) -> Self {
        let platform_references = p.platform.references();
        VerifiedClaims {
            tee: p.tee,
            // Simulated evidence is always marked simulated; nothing else is.
            simulated: p.tee == TeeKind::Simulated,
            measurement: p.measurements.primary().clone(),
            measurements: p.measurements,
            debug: p.debug,
            tcb_status: p.tcb_status,
            advisory_ids: p.advisory_ids,
            platform: p.platform,
            platform_references,
            report_data: HexBytes(p.report_data.to_vec()),
            verified_at: unix_secs(p.verified_at),
        }
    }

    /// Which TEE produced the evidence.
    pub fn tee(&self) -> TeeKind {
        self.tee
    }
    /// True for the simulated TEE (never production).
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }
    /// The primary measurement (see [`Measurements::primary`]).
    pub fn measurement(&self) -> &HexBytes {
        &self.measurement
    }
    /// All measurements and security versions.
    pub fn measurements(&self) -> &Measurements {
        &self.measurements
    }
    /// True when the enclave/TD/guest runs in debug mode (its memory is readable).
    pub fn is_debug(&self) -> bool {
        self.debug
    }
    /// The TCB status.
    pub fn tcb_status(&self) -> TcbStatus {
        self.tcb_status
    }
    /// Vendor advisory ids that apply to the platform's TCB.
    pub fn advisory_ids(&self) -> &[String] {
        &self.advisory_ids
    }
    /// Platform identity.
    pub fn platform(&self) -> &PlatformIdentity {
        &self.platform
    }
    /// The 64 bytes of report data the evidence carried (already checked
    /// against the expected binding).
    pub fn report_data(&self) -> &[u8] {
        self.report_data.as_bytes()
    }
    /// When verification ran ("as of" time), in seconds since the Unix epoch.
    pub fn verified_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.verified_at)
    }
}

#[cfg_attr(
    not(any(feature = "verify", feature = "insecure-simulated-tee")),
    allow(dead_code)
)]
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
