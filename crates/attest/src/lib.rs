//! Attestation for twinseal: evidence, verifiers and normalized claims.
//!
//! - [`Evidence`]: raw SGX/TDX DCAP quotes, SEV-SNP reports (with their
//!   VCEK) and simulated-TEE evidence.
//! - [`Verifier`]: one per kind ([`DcapVerifier`]: collateral verified once
//!   and cached, `dcap-qvl`'s full verification as the reference,
//!   [`SnpVerifier`] via `sev`, [`SimulatedVerifier`] only through its
//!   `insecure_` constructor) turns evidence plus the expected report data
//!   into [`VerifiedClaims`], which nothing else can construct.
//! - [`binding`]: the rule that puts a one-time challenge and the app's
//!   public key into the report data, and the single-use challenge store.
//! - [`collect`]: the attesting side (Gramine `/dev/attestation`, Linux
//!   configfs-tsm, simulated), with an injectable root path.
//! - [`cert`]: evidence in X.509 extensions (RA-TLS OIDs).
//!
//! Trust decisions about *acceptable* claims (TCB status, debug,
//! measurements, placement) belong to `twinseal-policy`, not here: a
//! verifier only establishes what is true.
//!
//! This crate does no network I/O and reads no configuration files;
//! collateral and roots are passed in.
//!
//! Features: the attester half (evidence types, report-data binding,
//! collectors, certificate extension extraction, the executable's
//! measurement) is always built; `verify` (default) adds the DCAP and
//! SEV-SNP verifiers (`dcap-qvl`, `sev`) and certificate issuance helpers;
//! `insecure-simulated-tee` adds the simulated TEE (platform and verifier),
//! which production worker builds leave out.

pub mod binding;
pub mod cert;
pub mod claims;
pub mod collect;
#[cfg(feature = "verify")]
pub mod dcap;
mod error;
pub mod evidence;
pub mod measure;
#[cfg(feature = "insecure-simulated-tee")]
pub mod simulated;
#[cfg(feature = "verify")]
pub mod snp;

use std::time::SystemTime;

pub use binding::{Challenge, ChallengeStore, report_data};
pub use claims::{HexBytes, Measurements, PlatformIdentity, TcbStatus, TeeKind, VerifiedClaims};
#[cfg(feature = "verify")]
pub use dcap::{CollateralCache, CollateralSource, DcapCollateral, DcapVerifier, FastPathStats};
pub use error::{Error, Reason, Result};
pub use evidence::Evidence;
#[cfg(feature = "insecure-simulated-tee")]
pub use simulated::{SimulatedPlatform, SimulatedVerifier};
#[cfg(feature = "verify")]
pub use snp::{SnpTcb, SnpVerifier};

/// Turns evidence of one kind into verified claims.
pub trait Verifier: Send + Sync {
    /// The kind of evidence this verifier accepts.
    fn kind(&self) -> TeeKind;

    /// Verify `evidence` as of time `at`: signatures, certificate chain,
    /// collateral validity at `at`, and that its report data equals
    /// `expected_report_data` (see [`binding::report_data`]).
    fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8; 64],
        at: SystemTime,
    ) -> Result<VerifiedClaims>;
}

/// A set of verifiers, one per enabled kind, dispatching on the evidence.
#[derive(Default)]
pub struct Verifiers {
    verifiers: Vec<Box<dyn Verifier>>,
}

impl std::fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.verifiers.iter().map(|v| v.kind()))
            .finish()
    }
}

impl Verifiers {
    /// An empty set: rejects everything until verifiers are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a hardware verifier (replacing one of the same kind). Simulated
    /// verifiers are refused here: use [`Self::insecure_allow_simulated_tee`].
    pub fn with(mut self, v: impl Verifier + 'static) -> Self {
        if v.kind() == TeeKind::Simulated {
            tracing::error!("simulated verifier ignored: use insecure_allow_simulated_tee");
            return self;
        }
        self.verifiers.retain(|x| x.kind() != v.kind());
        self.verifiers.push(Box::new(v));
        self
    }

    /// INSECURE: also accept simulated-TEE evidence from these platforms.
    /// Claims from it are marked simulated; the default policy still
    /// rejects them unless its own dangerous option is set.
    #[cfg(feature = "insecure-simulated-tee")]
    pub fn insecure_allow_simulated_tee(mut self, v: SimulatedVerifier) -> Self {
        self.verifiers.retain(|x| x.kind() != TeeKind::Simulated);
        self.verifiers.push(Box::new(v));
        self
    }

    /// Whether a verifier for `kind` is enabled: evidence of any other kind
    /// is rejected without being parsed.
    pub fn is_enabled(&self, kind: TeeKind) -> bool {
        self.verifiers.iter().any(|v| v.kind() == kind)
    }

    /// Verify with the verifier for the evidence's kind.
    pub fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8; 64],
        at: SystemTime,
    ) -> Result<VerifiedClaims> {
        let kind = evidence.kind();
        match self.verifiers.iter().find(|v| v.kind() == kind) {
            Some(v) => v.verify(evidence, expected_report_data, at),
            None => {
                tracing::warn!(tee = %kind, "attestation rejected: no verifier enabled");
                Err(Error::NotEnabled(Reason(format!(
                    "no verifier enabled for {kind} evidence"
                ))))
            }
        }
    }

    /// Redeem `challenge` (single use) and verify that `evidence` binds it
    /// and `spki_der` (see [`binding`]). The challenge is consumed even if
    /// verification then fails, so a rejected attempt cannot be retried
    /// with the same challenge.
    pub fn verify_bound(
        &self,
        store: &ChallengeStore,
        challenge: &Challenge,
        spki_der: &[u8],
        evidence: &Evidence,
        at: SystemTime,
    ) -> Result<VerifiedClaims> {
        store.redeem(challenge, at)?;
        let expected = report_data(challenge.as_bytes(), spki_der);
        self.verify(evidence, &expected, at)
    }
}
