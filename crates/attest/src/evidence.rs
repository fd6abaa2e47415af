//! Evidence: the raw, signed statements a TEE produces, before verification.

use crate::claims::TeeKind;
use crate::error::{Error, Reason, Result};

/// Magic bytes that open simulated-TEE evidence (recognised in every
/// build, so that a build without the simulated TEE can refuse it by name).
pub const SIM_MAGIC: &[u8; 8] = b"TWSIMTEE";

/// Size of an SEV-SNP attestation report (ABI spec, table "ATTESTATION_REPORT").
pub const SNP_REPORT_LEN: usize = 0x4A0;

/// Raw evidence of one of the supported kinds.
#[derive(Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Intel SGX DCAP quote (v3, or v4 with TEE type SGX).
    SgxQuote(Vec<u8>),
    /// Intel TDX DCAP quote (v4 or v5).
    TdxQuote(Vec<u8>),
    /// AMD SEV-SNP attestation report with, when the collector had it, the
    /// VCEK certificate (DER) that signed it.
    SevSnp {
        /// The 1184-byte report.
        report: Vec<u8>,
        /// The VCEK certificate, DER.
        vcek_der: Option<Vec<u8>>,
    },
    /// Simulated-TEE evidence (format in `docs/spec/attestation.md`).
    Simulated(Vec<u8>),
}

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Evidence is public data, but dumping kilobytes into logs helps nobody.
        write!(f, "Evidence({}, {} bytes)", self.kind(), self.bytes().len())
    }
}

impl Evidence {
    /// The TEE kind.
    pub fn kind(&self) -> TeeKind {
        match self {
            Evidence::SgxQuote(_) => TeeKind::Sgx,
            Evidence::TdxQuote(_) => TeeKind::Tdx,
            Evidence::SevSnp { .. } => TeeKind::SevSnp,
            Evidence::Simulated(_) => TeeKind::Simulated,
        }
    }

    /// The primary evidence bytes (quote, report or simulated evidence).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Evidence::SgxQuote(b) | Evidence::TdxQuote(b) | Evidence::Simulated(b) => b,
            Evidence::SevSnp { report, .. } => report,
        }
    }

    /// The report data the evidence claims, read without any verification
    /// (for display, or for auditors who do not know the challenge). `None`
    /// when the evidence is too short.
    pub fn unverified_report_data(&self) -> Option<[u8; 64]> {
        let b = self.bytes();
        let off = match self {
            Evidence::SgxQuote(_) => 48 + 320,
            Evidence::TdxQuote(_) if b.first() == Some(&5) => 48 + 6 + 520,
            Evidence::TdxQuote(_) => 48 + 520,
            Evidence::SevSnp { .. } => 0x50,
            Evidence::Simulated(_) => 104,
        };
        b.get(off..off + 64)?.try_into().ok()
    }

    /// The primary measurement the evidence claims (SGX MRENCLAVE, TDX
    /// MRTD, SEV-SNP MEASUREMENT, the simulated measurement), read without
    /// any verification: for a client that checks a certificate's evidence
    /// against the transparency log after the TLS chain, which already
    /// vouches that the coordinator verified it. `None` when too short.
    pub fn unverified_measurement(&self) -> Option<Vec<u8>> {
        let b = self.bytes();
        let (off, len) = match self {
            // Quote header (48), then the report body: CPUSVN 16,
            // MISCSELECT 4, reserved 28, ATTRIBUTES 16, MRENCLAVE 32.
            Evidence::SgxQuote(_) => (48 + 64, 32),
            // Quote header (48; version 5 adds type and size, 6), then the
            // TD report: TEE_TCB_SVN 16, MRSEAM 48, MRSIGNERSEAM 48,
            // SEAMATTRIBUTES 8, TDATTRIBUTES 8, XFAM 8, MRTD 48.
            Evidence::TdxQuote(_) if b.first() == Some(&5) => (48 + 6 + 136, 48),
            Evidence::TdxQuote(_) => (48 + 136, 48),
            // ATTESTATION_REPORT: MEASUREMENT at 0x90.
            Evidence::SevSnp { .. } => (0x90, 48),
            Evidence::Simulated(_) => (44, 48),
        };
        b.get(off..off + len).map(<[u8]>::to_vec)
    }

    /// Recognise the kind of `bytes` from their header. Accepts binary
    /// evidence, or the same as hex text (as SEV-SNP reports are often
    /// stored). Does not verify anything.
    pub fn detect(bytes: &[u8]) -> Result<Evidence> {
        if let Some(decoded) = decode_hex_text(bytes) {
            return Self::detect_binary(decoded);
        }
        Self::detect_binary(bytes.to_vec())
    }

    fn detect_binary(b: Vec<u8>) -> Result<Evidence> {
        if b.starts_with(SIM_MAGIC) {
            return Ok(Evidence::Simulated(b));
        }
        if b.len() >= 48 {
            let version = u16::from_le_bytes([b[0], b[1]]);
            let key_type = u16::from_le_bytes([b[2], b[3]]);
            let tee_type = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            // Attestation key type 2 is ECDSA-256-with-P-256, the only DCAP key type.
            if (3..=5).contains(&version) && key_type == 2 {
                match tee_type {
                    0x0000_0000 => return Ok(Evidence::SgxQuote(b)),
                    0x0000_0081 if version >= 4 => return Ok(Evidence::TdxQuote(b)),
                    _ => {}
                }
            }
        }
        if b.len() == SNP_REPORT_LEN {
            let version = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if (2..=5).contains(&version) {
                return Ok(Evidence::SevSnp {
                    report: b,
                    vcek_der: None,
                });
            }
        }
        Err(Error::Rejected(Reason(
            "unrecognised evidence format".to_string(),
        )))
    }
}

/// If `bytes` are ASCII hex (whitespace allowed), decode them.
fn decode_hex_text(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.is_empty() || bytes.len() % 2 == 1 && !bytes.iter().any(u8::is_ascii_whitespace) {
        return None;
    }
    if !bytes
        .iter()
        .all(|c| c.is_ascii_hexdigit() || c.is_ascii_whitespace())
    {
        return None;
    }
    let compact: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    hex::decode(compact).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u16, key_type: u16, tee: u32) -> Vec<u8> {
        let mut q = vec![0u8; 64];
        q[..2].copy_from_slice(&version.to_le_bytes());
        q[2..4].copy_from_slice(&key_type.to_le_bytes());
        q[4..8].copy_from_slice(&tee.to_le_bytes());
        q
    }

    #[test]
    fn detects_each_kind_from_its_header() {
        assert_eq!(
            Evidence::detect(&header(3, 2, 0)).unwrap().kind(),
            TeeKind::Sgx
        );
        assert_eq!(
            Evidence::detect(&header(4, 2, 0x81)).unwrap().kind(),
            TeeKind::Tdx
        );
        assert_eq!(
            Evidence::detect(&header(5, 2, 0x81)).unwrap().kind(),
            TeeKind::Tdx
        );
        let mut snp = vec![0u8; SNP_REPORT_LEN];
        snp[0] = 2;
        assert_eq!(Evidence::detect(&snp).unwrap().kind(), TeeKind::SevSnp);
        // The same as hex text, with line breaks.
        let text = hex::encode(&snp)
            .as_bytes()
            .chunks(64)
            .flat_map(|c| c.iter().copied().chain(std::iter::once(b'\n')))
            .collect::<Vec<u8>>();
        assert_eq!(Evidence::detect(&text).unwrap().kind(), TeeKind::SevSnp);
    }

    #[test]
    fn fail_unrecognised_evidence() {
        let mut snp_v1 = vec![0u8; SNP_REPORT_LEN];
        snp_v1[0] = 1;
        for bad in [
            vec![],
            b"not evidence".to_vec(),
            header(2, 2, 0),                // quote v2 (EPID)
            header(3, 3, 0),                // unknown attestation key type
            header(3, 2, 0x81),             // TDX needs quote v4+
            header(4, 2, 0x42),             // unknown TEE type
            header(3, 2, 0)[..40].to_vec(), // truncated header
            snp_v1,
            vec![0u8; SNP_REPORT_LEN - 1],
        ] {
            assert!(
                Evidence::detect(&bad).is_err(),
                "{:02x?}",
                &bad[..bad.len().min(8)]
            );
        }
    }
}
