//! Intel SGX and TDX DCAP quotes, verified by `dcap-qvl` (pure-Rust crypto
//! backend) against collateral the caller supplies, and an on-disk
//! collateral cache with a maximum age.
//!
//! Nothing here fetches collateral: the source is configuration (a file the
//! operator provides, or entries an explicit fetcher put in the cache).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::configs::RustCryptoConfig;
use dcap_qvl::policy::QuoteClaims;
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
#[derive(Clone, PartialEq, Eq)]
pub struct DcapCollateral(pub(crate) QuoteCollateralV3);

impl std::fmt::Debug for DcapCollateral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DcapCollateral(..)")
    }
}

impl DcapCollateral {
    /// Parse collateral JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map(DcapCollateral)
            .map_err(|e| Error::Collateral(format!("invalid DCAP collateral JSON: {e}")))
    }
    /// Serialize to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("collateral serializes")
    }
}

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
    /// `None`: Intel's production root as shipped by `dcap-qvl`.
    root_ca_der: Option<Vec<u8>>,
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
            root_ca_der: None,
        }
    }
    /// Trust another root CA (tests with a private PKI only).
    pub fn with_root_ca_der(mut self, der: Vec<u8>) -> Self {
        self.root_ca_der = Some(der);
        self
    }

    /// Verify `evidence` with explicitly given collateral, as of `at`.
    pub fn verify_with_collateral(
        &self,
        evidence: &Evidence,
        collateral: &DcapCollateral,
        expected_report_data: &[u8; 64],
        at: SystemTime,
    ) -> Result<VerifiedClaims> {
        let quote = self.quote_bytes(evidence)?;
        let now = unix_secs(at);
        let verifier = match &self.root_ca_der {
            Some(der) => QuoteVerifier::<RustCryptoConfig>::new_with_config(der.clone()),
            // Pin the pure-Rust backend even if another crate enables `ring`.
            None => QuoteVerifier::new_prod().with_config::<RustCryptoConfig>(),
        }
        // The debug flag becomes a claim; refusing it is the policy's job.
        .allow_debug(true);
        // dcap-qvl matches TCB levels only after every signature, chain, CRL
        // and collateral-time check has passed. A platform below every level
        // Intel still lists is older than all of them, i.e. out of date:
        // report that as a claim (policy decides) by appending a floor level
        // below all listed ones, which only such a platform reaches (levels
        // are matched in order and dcap-qvl's canonical order keeps an
        // all-zero level last). This gives the result the verifier used to
        // get by rerunning on dcap-qvl's "no matching TCB level" error text.
        let qc = verifier
            .dangerous_verify_claims_with_tcb_override(
                quote,
                &collateral.0,
                now,
                append_out_of_date_floor,
            )
            .map_err(|e| Error::rejected(self.kind, format!("DCAP verification failed: {e:#}")))?;
        let claims = self.claims(&qc, at)?;
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

    fn claims(&self, qc: &QuoteClaims, at: SystemTime) -> Result<ClaimsParts> {
        let pck = &qc.platform.pck;
        let platform = PlatformIdentity {
            ppid: (!pck.ppid.is_empty()).then(|| HexBytes(pck.ppid.clone())),
            fmspc: Some(HexBytes(pck.fmspc.to_vec())),
            ..Default::default()
        };
        let (measurements, debug, report_data) = match (&qc.report, self.kind) {
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
            tcb_status: map_status(qc.tcb.status),
            advisory_ids: qc.tcb.advisory_ids.clone(),
            platform,
            report_data,
            verified_at: at,
        })
    }
}

/// Append a level that every platform meets (all SVNs zero) below the
/// listed ones, rated `OutOfDate` (or `Revoked` if the oldest listed level is
/// revoked), dated and advised like the oldest listed level. Levels are
/// matched in order, so it only applies to platforms that meet none of
/// Intel's levels.
fn append_out_of_date_floor(mut info: dcap_qvl::TcbInfo) -> dcap_qvl::TcbInfo {
    if let Some(oldest) = info.tcb_levels.last().cloned() {
        let mut floor = oldest;
        for c in floor
            .tcb
            .sgx_components
            .iter_mut()
            .chain(floor.tcb.tdx_components.iter_mut())
        {
            c.svn = 0;
        }
        floor.tcb.pce_svn = 0;
        if floor.tcb_status != dcap_qvl::TcbStatus::Revoked {
            floor.tcb_status = dcap_qvl::TcbStatus::OutOfDate;
        }
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
            collateral: collateral.0.clone(),
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
        Ok(Some(DcapCollateral(entry.collateral)))
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}
