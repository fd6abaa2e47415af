//! Intel SGX and TDX DCAP quotes, verified against collateral the caller
//! supplies, and an on-disk collateral cache with a maximum age.
//!
//! Two paths reach the same verdict. The fast path ([`fast`]) verifies a
//! collateral set and a PCK chain once, caches the result for the window in
//! which it holds, and per quote makes only the quote's own checks (two
//! P-256 signatures, the QE identity, TCB-level matching). The reference path
//! is `dcap-qvl`'s complete verification (pure-Rust crypto backend), which
//! re-verifies the whole collateral on every call; it decides whatever the
//! fast path leaves open (a verification time outside the cached window) and
//! is available as [`DcapVerifier::verify_with_collateral_reference`] for
//! cross-checking.
//!
//! Nothing here fetches collateral: the source is configuration (a file the
//! operator provides, or entries an explicit fetcher put in the cache).

mod fast;

pub use fast::FastPathStats;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::configs::RustCryptoConfig;
use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::verify::QuoteVerifier;

use crate::Verifier;
use crate::binding::check_expected;
use crate::claims::{
    ClaimsParts, HexBytes, Measurements, PlatformIdentity, TcbStatus, TeeKind, VerifiedClaims,
    unix_secs,
};
use crate::error::{Error, Result};
use crate::evidence::Evidence;

/// DCAP collateral for one platform family: PCK CRL and chain, root CA CRL,
/// TCB info and QE identity with their signatures and chains. JSON keys as
/// `dcap_qvl::QuoteCollateralV3`.
#[derive(Clone)]
pub struct DcapCollateral {
    inner: Box<QuoteCollateralV3>,
    /// SHA-256 over every field, computed on first use: the key of the
    /// verified-collateral cache. Never changes, since `inner` cannot.
    digest: OnceLock<[u8; 32]>,
}

impl PartialEq for DcapCollateral {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}
impl Eq for DcapCollateral {}

impl std::fmt::Debug for DcapCollateral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DcapCollateral(..)")
    }
}

impl DcapCollateral {
    /// Parse collateral JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map(Self::new)
            .map_err(|e| Error::Collateral(format!("invalid DCAP collateral JSON: {e}")))
    }
    /// Serialize to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.inner).expect("collateral serializes")
    }
    fn new(inner: QuoteCollateralV3) -> Self {
        DcapCollateral {
            inner: Box::new(inner),
            digest: OnceLock::new(),
        }
    }
    fn digest(&self) -> &[u8; 32] {
        self.digest
            .get_or_init(|| fast::collateral_digest(&self.inner))
    }
}

/// Intel's SGX Provisioning Certification Root CA (DER), the root
/// `dcap-qvl` ships (`TrustedRootCA.der`), SHA-256
/// 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3.
const INTEL_ROOT_CA_DER: &[u8] = include_bytes!("dcap/intel_root_ca.der");

/// Where a [`DcapVerifier`] gets collateral from.
#[derive(Debug)]
pub enum CollateralSource {
    /// One collateral set for every quote (a file the operator provided).
    Fixed(DcapCollateral),
    /// An on-disk cache keyed by TEE type, FMSPC and PCK CA.
    Cache(CollateralCache),
}

/// Verifies SGX or TDX quotes.
#[derive(Debug)]
pub struct DcapVerifier {
    kind: TeeKind,
    source: CollateralSource,
    /// The trusted root (Intel's production root unless replaced) and its
    /// SHA-256, which keys the caches with the collateral's digest.
    root_ca_der: Vec<u8>,
    root_digest: [u8; 32],
    /// Verified collateral sets and PCK chains (bounded).
    caches: fast::Caches,
}

impl DcapVerifier {
    /// A verifier for SGX quotes trusting Intel's production root.
    pub fn sgx(source: CollateralSource) -> Self {
        Self::new(TeeKind::Sgx, source)
    }
    /// A verifier for TDX quotes trusting Intel's production root.
    pub fn tdx(source: CollateralSource) -> Self {
        Self::new(TeeKind::Tdx, source)
    }
    fn new(kind: TeeKind, source: CollateralSource) -> Self {
        DcapVerifier {
            kind,
            source,
            root_ca_der: INTEL_ROOT_CA_DER.to_vec(),
            root_digest: fast::root_digest(INTEL_ROOT_CA_DER),
            caches: fast::Caches::default(),
        }
    }
    /// Trust another root CA (tests with a private PKI only).
    pub fn with_root_ca_der(mut self, der: Vec<u8>) -> Self {
        self.root_digest = fast::root_digest(&der);
        self.root_ca_der = der;
        self
    }

    /// Verify `evidence` with explicitly given collateral, as of `at`, by
    /// the fast path (collateral and PCK chain verified once and cached;
    /// see [`fast`]).
    pub fn verify_with_collateral(
        &self,
        evidence: &Evidence,
        collateral: &DcapCollateral,
        expected_report_data: &[u8; 64],
        at: SystemTime,
    ) -> Result<VerifiedClaims> {
        let quote = self.quote_bytes(evidence)?;
        let now = unix_secs(at);
        let facts = match self.caches.verify(
            quote,
            &collateral.inner,
            collateral.digest(),
            &self.root_ca_der,
            &self.root_digest,
            now,
        ) {
            fast::Outcome::Verified(facts) => *facts,
            fast::Outcome::Rejected(detail) => {
                return Err(Error::rejected(
                    self.kind,
                    format!("DCAP verification failed: {detail}"),
                ));
            }
            fast::Outcome::Defer(why) => {
                tracing::debug!(tee = %self.kind, %why, "DCAP fast path defers to dcap-qvl");
                self.reference_facts(quote, collateral, now)?
            }
        };
        self.finish(facts, expected_report_data, at)
    }

    /// Verify `evidence` like [`Self::verify_with_collateral`] but by the
    /// reference path: `dcap-qvl`'s complete verification, which re-verifies
    /// the whole collateral on every call (about 25 times slower). Same
    /// claims and verdicts; kept to cross-check the fast path.
    pub fn verify_with_collateral_reference(
        &self,
        evidence: &Evidence,
        collateral: &DcapCollateral,
        expected_report_data: &[u8; 64],
        at: SystemTime,
    ) -> Result<VerifiedClaims> {
        let quote = self.quote_bytes(evidence)?;
        let facts = self.reference_facts(quote, collateral, unix_secs(at))?;
        self.finish(facts, expected_report_data, at)
    }

    /// How this verifier's verifications were decided so far (fast path or
    /// handed to the reference path).
    pub fn fast_path_stats(&self) -> FastPathStats {
        self.caches.stats()
    }

    fn reference_facts(
        &self,
        quote: &[u8],
        collateral: &DcapCollateral,
        now: u64,
    ) -> Result<fast::Facts> {
        let verifier = QuoteVerifier::<RustCryptoConfig>::new_with_config(self.root_ca_der.clone())
            // The debug flag becomes a claim; refusing it is the policy's job.
            .allow_debug(true);
        // dcap-qvl matches TCB levels only after every signature, chain, CRL
        // and collateral-time check has passed. A platform below every level
        // Intel still lists is older than all of them, i.e. out of date:
        // report that as a claim (policy decides) by appending a floor level
        // below all listed ones, which only such a platform reaches.
        let qc = verifier
            .dangerous_verify_claims_with_tcb_override(
                quote,
                &*collateral.inner,
                now,
                append_out_of_date_floor,
            )
            .map_err(|e| Error::rejected(self.kind, format!("DCAP verification failed: {e:#}")))?;
        Ok(fast::Facts {
            report: qc.report,
            ppid: qc.platform.pck.ppid,
            fmspc: qc.platform.pck.fmspc,
            status: qc.tcb.status,
            advisory_ids: qc.tcb.advisory_ids,
        })
    }

    fn finish(
        &self,
        facts: fast::Facts,
        expected_report_data: &[u8; 64],
        at: SystemTime,
    ) -> Result<VerifiedClaims> {
        let claims = self.claims(facts, at)?;
        check_expected(self.kind, &claims.report_data, expected_report_data)?;
        Ok(VerifiedClaims::from_parts(claims))
    }

    fn quote_bytes<'e>(&self, evidence: &'e Evidence) -> Result<&'e [u8]> {
        match (self.kind, evidence) {
            (TeeKind::Sgx, Evidence::SgxQuote(q)) | (TeeKind::Tdx, Evidence::TdxQuote(q)) => Ok(q),
            _ => Err(Error::rejected(
                self.kind,
                format!(
                    "{} evidence given to the {} verifier",
                    evidence.kind(),
                    self.kind
                ),
            )),
        }
    }

    fn claims(&self, facts: fast::Facts, at: SystemTime) -> Result<ClaimsParts> {
        let platform = PlatformIdentity {
            ppid: (!facts.ppid.is_empty()).then(|| HexBytes(facts.ppid.clone())),
            fmspc: Some(HexBytes(facts.fmspc.to_vec())),
            ..Default::default()
        };
        let (measurements, debug, report_data) = match (&facts.report, self.kind) {
            (Report::SgxEnclave(r), TeeKind::Sgx) => (
                Measurements::Sgx {
                    mr_enclave: HexBytes(r.mr_enclave.to_vec()),
                    mr_signer: HexBytes(r.mr_signer.to_vec()),
                    isv_prod_id: r.isv_prod_id,
                    isv_svn: r.isv_svn,
                },
                // SGX ATTRIBUTES.FLAGS bit 1 is DEBUG.
                r.attributes[0] & 0x02 != 0,
                r.report_data,
            ),
            (report, TeeKind::Tdx) if report.as_td10().is_some() => {
                let r = report.as_td10().expect("checked");
                (
                    Measurements::Tdx {
                        mr_td: HexBytes(r.mr_td.to_vec()),
                        rtmrs: [
                            HexBytes(r.rt_mr0.to_vec()),
                            HexBytes(r.rt_mr1.to_vec()),
                            HexBytes(r.rt_mr2.to_vec()),
                            HexBytes(r.rt_mr3.to_vec()),
                        ],
                        mr_config_id: HexBytes(r.mr_config_id.to_vec()),
                        mr_owner: HexBytes(r.mr_owner.to_vec()),
                        mr_owner_config: HexBytes(r.mr_owner_config.to_vec()),
                        mr_seam: HexBytes(r.mr_seam.to_vec()),
                        tee_tcb_svn: HexBytes(r.tee_tcb_svn.to_vec()),
                    },
                    // TDX TD_ATTRIBUTES bit 0 is DEBUG.
                    r.td_attributes[0] & 0x01 != 0,
                    r.report_data,
                )
            }
            _ => {
                return Err(Error::rejected(
                    self.kind,
                    "quote body does not match the verifier's TEE kind",
                ));
            }
        };
        Ok(ClaimsParts {
            tee: self.kind,
            measurements,
            debug,
            tcb_status: map_status(facts.status),
            advisory_ids: facts.advisory_ids,
            platform,
            report_data,
            verified_at: at,
        })
    }
}

/// The reference path's TCB-info override: the listed levels plus
/// [`fast::out_of_date_floor`] after them (levels are matched in order, and
/// dcap-qvl's canonical order keeps an all-zero level last).
fn append_out_of_date_floor(mut info: dcap_qvl::TcbInfo) -> dcap_qvl::TcbInfo {
    if let Some(floor) = fast::out_of_date_floor(&info) {
        info.tcb_levels.push(floor);
    }
    info
}

fn map_status(s: dcap_qvl::TcbStatus) -> TcbStatus {
    use dcap_qvl::TcbStatus as D;
    match s {
        D::UpToDate => TcbStatus::UpToDate,
        D::SWHardeningNeeded => TcbStatus::SWHardeningNeeded,
        D::ConfigurationNeeded => TcbStatus::ConfigurationNeeded,
        D::ConfigurationAndSWHardeningNeeded => TcbStatus::ConfigurationAndSWHardeningNeeded,
        D::OutOfDate => TcbStatus::OutOfDate,
        D::OutOfDateConfigurationNeeded => TcbStatus::OutOfDateConfigurationNeeded,
        D::TDRelaunchAdvised => TcbStatus::TDRelaunchAdvised,
        D::TDRelaunchAdvisedConfigurationNeeded => TcbStatus::TDRelaunchAdvisedConfigurationNeeded,
        D::Revoked => TcbStatus::Revoked,
    }
}

impl Verifier for DcapVerifier {
    fn kind(&self) -> TeeKind {
        self.kind
    }

    fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8; 64],
        at: SystemTime,
    ) -> Result<VerifiedClaims> {
        match &self.source {
            CollateralSource::Fixed(c) => {
                self.verify_with_collateral(evidence, c, expected_report_data, at)
            }
            CollateralSource::Cache(cache) => {
                let quote = self.quote_bytes(evidence)?;
                let key = CollateralCache::key_for_quote(quote)
                    .map_err(|e| Error::rejected(self.kind, e))?;
                let c = cache.get(&key, at)?.ok_or_else(|| {
                    Error::Collateral(format!("no fresh collateral cached for {key}"))
                })?;
                self.verify_with_collateral(evidence, &c, expected_report_data, at)
            }
        }
    }
}

/// An on-disk cache of DCAP collateral, one JSON file per
/// (TEE type, FMSPC, PCK CA), with a maximum age: entries older than
/// `max_age` (by the time they were stored) are not returned.
#[derive(Debug, Clone)]
pub struct CollateralCache {
    dir: PathBuf,
    max_age: Duration,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    stored_at: u64,
    collateral: QuoteCollateralV3,
}

impl CollateralCache {
    /// A cache in `dir` (created on first store) with entries valid for `max_age`.
    pub fn new(dir: impl Into<PathBuf>, max_age: Duration) -> Self {
        CollateralCache {
            dir: dir.into(),
            max_age,
        }
    }

    /// The cache key of a quote: `sgx-FMSPC-processor`, `tdx-FMSPC-platform`...
    pub fn key_for_quote(quote: &[u8]) -> std::result::Result<String, String> {
        let q = Quote::parse(quote).map_err(|e| format!("unparsable quote: {e:#}"))?;
        let tee = if q.header.is_sgx() { "sgx" } else { "tdx" };
        let fmspc = dcap_qvl::intel::quote_fmspc_with::<RustCryptoConfig>(&q)
            .map_err(|e| format!("no FMSPC in quote: {e:#}"))?;
        let ca = dcap_qvl::intel::quote_ca_with::<RustCryptoConfig>(&q)
            .map_err(|e| format!("no PCK CA in quote: {e:#}"))?;
        Ok(format!("{tee}-{}-{}", hex::encode(fmspc), ca.as_id_str()))
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::Collateral(format!("invalid cache key {key:?}")));
        }
        Ok(self.dir.join(format!("dcap-{key}.json")))
    }

    /// Store `collateral` under `key`, stamped with `now`. Written to a
    /// temporary file and renamed, so readers never see half an entry.
    pub fn put(&self, key: &str, collateral: &DcapCollateral, now: SystemTime) -> Result<()> {
        let path = self.path(key)?;
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Io {
            action: "create collateral cache",
            path: self.dir.clone(),
            source,
        })?;
        let entry = CacheEntry {
            stored_at: unix_secs(now),
            collateral: (*collateral.inner).clone(),
        };
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&entry).expect("entry serializes");
        write_file(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::Io {
            action: "rename",
            path: path.clone(),
            source,
        })
    }

    /// The entry under `key` if present and not older than the maximum age at `now`.
    pub fn get(&self, key: &str, now: SystemTime) -> Result<Option<DcapCollateral>> {
        let path = self.path(key)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Collateral(format!("corrupt cache entry {}: {e}", path.display()))
        })?;
        let age = unix_secs(now).saturating_sub(entry.stored_at);
        if entry.stored_at > unix_secs(now) || age > self.max_age.as_secs() {
            return Ok(None);
        }
        Ok(Some(DcapCollateral::new(entry.collateral)))
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}
