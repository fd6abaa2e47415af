//! Collectors driven against directory trees imitating Gramine's
//! `/dev/attestation` and the kernel's configfs-tsm interface.

use crate::common;

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use twinseal_attest::collect::{Collector, TeeInterface, cert_table_with_vcek};
use twinseal_attest::{Error, Evidence, SnpVerifier, Verifier};

const TSM: &str = "sys/kernel/config/tsm/report";

/// A synthetic DCAP quote header: version, key type 2, TEE type.
fn quote_header(version: u16, tee: u32) -> Vec<u8> {
    let mut q = vec![0u8; 1024];
    q[..2].copy_from_slice(&version.to_le_bytes());
    q[2..4].copy_from_slice(&2u16.to_le_bytes());
    q[4..8].copy_from_slice(&tee.to_le_bytes());
    q
}

/// Imitate the kernel: when the collector creates `entry`, create its
/// attributes; when 64 bytes of inblob arrive, publish generation, provider,
/// auxblob and finally outblob. Returns the inblob the "kernel" saw.
fn fake_kernel(
    root: &Path,
    entry: &str,
    provider: &'static str,
    generation: &'static str,
    outblob: Vec<u8>,
    auxblob: Option<Vec<u8>>,
) -> JoinHandle<Vec<u8>> {
    let dir: PathBuf = root.join(TSM).join(entry);
    std::thread::spawn(move || {
        for _ in 0..4000 {
            if let Ok(inblob) = std::fs::read(dir.join("inblob"))
                && inblob.len() == 64
            {
                std::fs::write(dir.join("generation"), generation).unwrap();
                std::fs::write(dir.join("provider"), provider).unwrap();
                if let Some(aux) = &auxblob {
                    std::fs::write(dir.join("auxblob"), aux).unwrap();
                }
                std::fs::write(dir.join("outblob"), &outblob).unwrap();
                return inblob;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("collector never wrote inblob");
    })
}

#[test]
fn no_tee_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let err = Collector::with_root(root.path())
        .collect(&[0; 64])
        .unwrap_err();
    assert!(matches!(err, Error::NoTee(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("configfs-tsm") && msg.contains("Gramine"),
        "{msg}"
    );
}

#[test]
fn gramine_sgx_quote_is_collected_with_our_report_data() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dev/attestation");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("attestation_type"), "dcap\n").unwrap();
    std::fs::write(dir.join("user_report_data"), b"").unwrap();
    let quote = quote_header(3, 0);
    std::fs::write(dir.join("quote"), &quote).unwrap();
    let c = Collector::with_root(root.path());
    assert_eq!(c.detect().unwrap(), TeeInterface::GramineSgx);
    let e = c.collect(&[9; 64]).unwrap();
    assert_eq!(e, Evidence::SgxQuote(quote));
    assert_eq!(
        std::fs::read(dir.join("user_report_data")).unwrap(),
        [9; 64]
    );

    std::fs::write(dir.join("attestation_type"), "epid\n").unwrap();
    assert!(matches!(c.collect(&[9; 64]), Err(Error::NoTee(_))));
}

#[test]
fn configfs_tsm_tdx_quote_is_collected() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(TSM)).unwrap();
    let quote = quote_header(4, 0x81);
    let kernel = fake_kernel(root.path(), "t1", "tdx_guest\n", "1\n", quote.clone(), None);
    let c = Collector::with_root(root.path()).with_entry_name("t1");
    assert_eq!(c.detect().unwrap(), TeeInterface::ConfigFsTsm);
    let e = c.collect(&[5; 64]).unwrap();
    assert_eq!(kernel.join().unwrap(), [5; 64]);
    assert_eq!(e, Evidence::TdxQuote(quote));
}

#[test]
fn configfs_tsm_concurrent_writer_and_unknown_provider_are_errors() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(TSM)).unwrap();
    let k = fake_kernel(
        root.path(),
        "t2",
        "tdx_guest\n",
        "2\n",
        quote_header(4, 0x81),
        None,
    );
    let err = Collector::with_root(root.path())
        .with_entry_name("t2")
        .collect(&[1; 64])
        .unwrap_err();
    k.join().unwrap();
    assert!(err.to_string().contains("concurrently"), "{err}");

    let k = fake_kernel(
        root.path(),
        "t3",
        "arm_cca_guest\n",
        "1\n",
        vec![1; 100],
        None,
    );
    let err = Collector::with_root(root.path())
        .with_entry_name("t3")
        .collect(&[1; 64])
        .unwrap_err();
    k.join().unwrap();
    assert!(matches!(err, Error::NoTee(_)), "{err}");
}

#[test]
fn configfs_tsm_sev_snp_report_and_vcek_are_collected_and_verify() {
    let samples = common::samples();
    let Evidence::SevSnp { report, .. } =
        Evidence::detect(&common::read(&samples, "snp/report_milan.hex")).unwrap()
    else {
        panic!("SEV-SNP sample")
    };
    let vcek = common::read(&samples, "snp/vcek_milan.der");
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(TSM)).unwrap();
    let k = fake_kernel(
        root.path(),
        "s1",
        "sev_guest\n",
        "1\n",
        report.clone(),
        Some(cert_table_with_vcek(&vcek)),
    );
    let expected: [u8; 64] = report[0x50..0x90].try_into().unwrap();
    let e = Collector::with_root(root.path())
        .with_entry_name("s1")
        .collect(&expected)
        .unwrap();
    k.join().unwrap();
    assert_eq!(
        e,
        Evidence::SevSnp {
            report,
            vcek_der: Some(vcek)
        }
    );
    // What the collector returns is what the verifier needs.
    SnpVerifier::new()
        .unwrap()
        .verify(&e, &expected, common::at("2025-07-01T00:00:00Z"))
        .unwrap();
}
