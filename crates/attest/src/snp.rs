//! AMD SEV-SNP attestation reports, verified with the `sev` crate (pure-Rust
//! crypto): the VCEK certificate up to AMD's built-in ARK/ASK roots, the
//! report signature with the VCEK, the VCEK's validity at the "as of" time,
//! and that the VCEK was issued for this chip (hwID) at this TCB.
//!
//! The report signature is checked over the raw report bytes `[0, 0x2A0)`,
//! not over a re-encoding of the parsed structure, so that every byte of the
//! signed region counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use sev::certs::snp::{Certificate, Chain, Verifiable, builtin, ca};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::Verifier;
use crate::binding::check_expected;
use crate::claims::{
    ClaimsParts, HexBytes, Measurements, PlatformIdentity, TcbStatus, TeeKind, VerifiedClaims,
    unix_secs,
};
use crate::error::{Error, Result};
use crate::evidence::{Evidence, SNP_REPORT_LEN};

/// Length of the signed part of a report.
pub const SNP_SIGNED_LEN: usize = 0x2A0;
const K: TeeKind = TeeKind::SevSnp;

/// AMD product lines whose roots are built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnpProduct {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005.
    Turin,
}

/// TCB component security versions (SPLs), as in a VCEK and a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct SnpTcb {
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// CPU microcode SPL.
    pub microcode: u8,
    /// FMC SPL (Turin only).
    pub fmc: Option<u8>,
}

impl SnpTcb {
    fn from_raw(product: SnpProduct, raw: u64) -> Self {
        let b = raw.to_le_bytes();
        match product {
            SnpProduct::Milan | SnpProduct::Genoa => SnpTcb {
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
                fmc: None,
            },
            SnpProduct::Turin => SnpTcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }

    /// True when every component is at least `other`'s.
    pub fn at_least(&self, other: &SnpTcb) -> bool {
        self.bootloader >= other.bootloader
            && self.tee >= other.tee
            && self.snp >= other.snp
            && self.microcode >= other.microcode
            && self.fmc.unwrap_or(0) >= other.fmc.unwrap_or(0)
    }
}

/// What was learnt from a VCEK whose chain verified (cached per VCEK).
#[derive(Clone)]
struct VcekInfo {
    product: SnpProduct,
    public_key_sec1: Vec<u8>,
    not_before: i64,
    not_after: i64,
    hw_id: Option<Vec<u8>>,
    tcb: SnpTcb,
}

/// Verifies SEV-SNP reports.
pub struct SnpVerifier {
    chains: Vec<(SnpProduct, ca::Chain)>,
    /// The VCEK used when evidence does not carry one.
    default_vcek: Option<Vec<u8>>,
    latest_tcb: Option<SnpTcb>,
    verified_vceks: Mutex<HashMap<[u8; 32], VcekInfo>>,
}

impl std::fmt::Debug for SnpVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpVerifier")
            .field(
                "products",
                &self.chains.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            )
            .field("latest_tcb", &self.latest_tcb)
            .finish_non_exhaustive()
    }
}

impl SnpVerifier {
    /// A verifier trusting AMD's built-in ARK/ASK for Milan, Genoa and Turin.
    pub fn new() -> Result<Self> {
        let load = |p: SnpProduct,
                    ark: std::io::Result<Certificate>,
                    ask: std::io::Result<Certificate>|
         -> Result<(SnpProduct, ca::Chain)> {
            let ark = ark.map_err(|e| Error::Collateral(format!("built-in ARK {p:?}: {e}")))?;
            let ask = ask.map_err(|e| Error::Collateral(format!("built-in ASK {p:?}: {e}")))?;
            Ok((p, ca::Chain { ark, ask }))
        };
        Ok(SnpVerifier {
            chains: vec![
                load(
                    SnpProduct::Milan,
                    builtin::milan::ark(),
                    builtin::milan::ask(),
                )?,
                load(
                    SnpProduct::Genoa,
                    builtin::genoa::ark(),
                    builtin::genoa::ask(),
                )?,
                load(
                    SnpProduct::Turin,
                    builtin::turin::ark(),
                    builtin::turin::ask(),
                )?,
            ],
            default_vcek: None,
            latest_tcb: None,
            verified_vceks: Mutex::new(HashMap::new()),
        })
    }

    /// The DER of AMD's built-in ARK and ASK for `product` (to compare with a
    /// chain downloaded from AMD).
    pub fn builtin_chain_der(&self, product: SnpProduct) -> Result<(Vec<u8>, Vec<u8>)> {
        let (_, c) = self
            .chains
            .iter()
            .find(|(p, _)| *p == product)
            .ok_or_else(|| Error::Collateral(format!("no built-in chain for {product:?}")))?;
        let der = |c: &Certificate| {
            c.to_der()
                .map_err(|e| Error::Collateral(format!("encode built-in certificate: {e}")))
        };
        Ok((der(&c.ark)?, der(&c.ask)?))
    }

    /// Use `vcek_der` for evidence that carries no VCEK.
    pub fn with_vcek(mut self, vcek_der: Vec<u8>) -> Self {
        self.default_vcek = Some(vcek_der);
        self
    }

    /// The latest TCB the operator knows for the fleet (from AMD's key
    /// distribution service). With it, reports at or above it are
    /// `UpToDate` and others `OutOfDate`; without it the TCB status is
    /// `Unknown`.
    pub fn with_latest_tcb(mut self, tcb: SnpTcb) -> Self {
        self.latest_tcb = Some(tcb);
        self
    }

    fn vcek_info(&self, vcek_der: &[u8]) -> Result<VcekInfo> {
        let id: [u8; 32] = Sha256::digest(vcek_der).into();
        if let Some(info) = self
            .verified_vceks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(info.clone());
        }
        let vcek = Certificate::from_der(vcek_der)
            .map_err(|e| Error::rejected(K, format!("unparsable VCEK: {e}")))?;
        let product = self
            .chains
            .iter()
            .find(|(_, ca)| {
                let chain = Chain {
                    ca: ca.clone(),
                    vek: vcek.clone(),
                };
                (&chain).verify().is_ok()
            })
            .map(|(p, _)| *p)
            .ok_or_else(|| {
                Error::rejected(K, "VCEK does not chain to an AMD built-in root (ARK/ASK)")
            })?;
        let (_, cert) = X509Certificate::from_der(vcek_der)
            .map_err(|e| Error::rejected(K, format!("unparsable VCEK: {e}")))?;
        let validity = cert.validity();
        let mut tcb = SnpTcb::default();
        let mut hw_id = None;
        for ext in cert.extensions() {
            let oid = ext.oid.to_id_string();
            let int = || der_small_uint(ext.value);
            match oid.as_str() {
                "1.3.6.1.4.1.3704.1.3.1" => tcb.bootloader = int()?,
                "1.3.6.1.4.1.3704.1.3.2" => tcb.tee = int()?,
                "1.3.6.1.4.1.3704.1.3.3" => tcb.snp = int()?,
                "1.3.6.1.4.1.3704.1.3.8" => tcb.microcode = int()?,
                "1.3.6.1.4.1.3704.1.3.9" => tcb.fmc = Some(int()?),
                "1.3.6.1.4.1.3704.1.4" => hw_id = Some(der_octets(ext.value)),
                _ => {}
            }
        }
        if product != SnpProduct::Turin {
            tcb.fmc = None;
        }
        let info = VcekInfo {
            product,
            public_key_sec1: vcek.public_key_sec1().to_vec(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            hw_id,
            tcb,
        };
        self.verified_vceks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info.clone());
        Ok(info)
    }
}

/// A small DER INTEGER (the VCEK's SPL extensions) as u8.
fn der_small_uint(v: &[u8]) -> Result<u8> {
    match v {
        [0x02, 1, x] => Ok(*x),
        [0x02, 2, 0, x] => Ok(*x),
        _ => Err(Error::rejected(K, "malformed VCEK TCB extension")),
    }
}

/// The content of a DER OCTET STRING, or the raw value when not one.
fn der_octets(v: &[u8]) -> Vec<u8> {
    match v {
        [0x04, n, rest @ ..] if usize::from(*n) == rest.len() && *n < 0x80 => rest.to_vec(),
        [0x04, 0x81, n, rest @ ..] if usize::from(*n) == rest.len() => rest.to_vec(),
        _ => v.to_vec(),
    }
}

/// Convert one little-endian 72-byte signature component to 48 big-endian
/// bytes, requiring the unused high bytes to be zero.
fn sig_component(le72: &[u8]) -> Option<[u8; 48]> {
    if le72[48..].iter().any(|&b| b != 0) {
        return None;
    }
    let mut be = [0u8; 48];
    for (i, b) in le72[..48].iter().enumerate() {
        be[47 - i] = *b;
    }
    Some(be)
}

impl Verifier for SnpVerifier {
    fn kind(&self) -> TeeKind {
        K
    }

    fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8; 64],
        at: SystemTime,
    ) -> Result<VerifiedClaims> {
        let Evidence::SevSnp { report, vcek_der } = evidence else {
            return Err(Error::rejected(
                K,
                format!("{} evidence given to the SEV-SNP verifier", evidence.kind()),
            ));
        };
        if report.len() != SNP_REPORT_LEN {
            return Err(Error::rejected(K, "report has the wrong length"));
        }
        let vcek_der = vcek_der
            .as_deref()
            .or(self.default_vcek.as_deref())
            .ok_or_else(|| Error::rejected(K, "no VCEK with the report"))?;
        let parsed = AttestationReport::from_bytes(report)
            .map_err(|e| Error::rejected(K, format!("unparsable report: {e}")))?;
        // Signature algorithm 1 is ECDSA P-384 with SHA-384, the only one defined.
        let sig_algo = u32::from_le_bytes(report[0x34..0x38].try_into().expect("4 bytes"));
        if sig_algo != 1 {
            return Err(Error::rejected(K, "unsupported signature algorithm"));
        }
        let info = self.vcek_info(vcek_der)?;
        let now = unix_secs(at) as i64;
        if now < info.not_before || now > info.not_after {
            return Err(Error::rejected(
                K,
                "VCEK not valid at the verification time",
            ));
        }
        let sig = &report[SNP_SIGNED_LEN..SNP_SIGNED_LEN + 144];
        let (Some(r), Some(s)) = (sig_component(&sig[..72]), sig_component(&sig[72..])) else {
            return Err(Error::rejected(K, "malformed report signature"));
        };
        let mut rs = [0u8; 96];
        rs[..48].copy_from_slice(&r);
        rs[48..].copy_from_slice(&s);
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &info.public_key_sec1)
            .verify(&report[..SNP_SIGNED_LEN], &rs)
            .map_err(|_| Error::rejected(K, "report signature does not verify with the VCEK"))?;

        let chip_id = &report[0x1A0..0x1E0];
        if let Some(hw_id) = &info.hw_id
            && hw_id.as_slice() != chip_id
        {
            return Err(Error::rejected(K, "VCEK was issued for another chip"));
        }
        let raw_tcb = u64::from_le_bytes(report[0x180..0x188].try_into().expect("8 bytes"));
        let reported = SnpTcb::from_raw(info.product, raw_tcb);
        if reported != info.tcb {
            return Err(Error::rejected(
                K,
                "VCEK was issued for another TCB than the report's",
            ));
        }
        let policy = u64::from_le_bytes(report[0x08..0x10].try_into().expect("8 bytes"));
        let tcb_status = match &self.latest_tcb {
            None => TcbStatus::Unknown,
            Some(latest) if reported.at_least(latest) => TcbStatus::UpToDate,
            Some(_) => TcbStatus::OutOfDate,
        };
        let claims = ClaimsParts {
            tee: K,
            measurements: Measurements::SevSnp {
                measurement: HexBytes(parsed.measurement.to_vec()),
                host_data: HexBytes(parsed.host_data.to_vec()),
                guest_svn: parsed.guest_svn,
                policy,
                vmpl: parsed.vmpl,
                reported_tcb: raw_tcb,
            },
            // Guest policy bit 19: DEBUG allowed (the hypervisor may read guest memory).
            debug: policy & (1 << 19) != 0,
            tcb_status,
            advisory_ids: Vec::new(),
            platform: PlatformIdentity {
                chip_id: Some(HexBytes(chip_id.to_vec())),
                ..Default::default()
            },
            report_data: parsed.report_data,
            verified_at: at,
        };
        check_expected(K, &claims.report_data, expected_report_data)?;
        Ok(VerifiedClaims::from_parts(claims))
    }
}
