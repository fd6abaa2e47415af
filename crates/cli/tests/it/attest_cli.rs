//! `twinseal attest simulate` and `twinseal attest verify` end to end.

use std::process::Command;

fn twinseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_twinseal"))
}

#[test]
fn simulate_then_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("platform.key");
    let ev = dir.path().join("evidence.bin");
    let rd = "ab".repeat(64);
    let out = twinseal()
        .args(["attest", "simulate", "--report-data", &rd, "-o"])
        .arg(&ev)
        .arg("--platform-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pubkey = dir.path().join("platform.key.pub");

    // Without the dangerous option simulated evidence is refused.
    let out = twinseal()
        .args(["attest", "verify", "--evidence"])
        .arg(&ev)
        .arg("--collateral")
        .arg(&pubkey)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // With it, it verifies; the default (empty) allow-list still denies.
    let out = twinseal()
        .args([
            "attest",
            "verify",
            "--json",
            "--insecure-allow-simulated-tee",
            "--report-data",
            &rd,
            "--evidence",
        ])
        .arg(&ev)
        .arg("--collateral")
        .arg(&pubkey)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["claims"]["simulated"], true);
    assert_eq!(v["decision"]["allow"], false);
    let measurement = v["claims"]["measurement"].as_str().unwrap().to_string();

    // Allow-listing the measurement lets it pass.
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({ "allowed_measurements": [measurement] }).to_string(),
    )
    .unwrap();
    let out = twinseal()
        .args([
            "attest",
            "verify",
            "--insecure-allow-simulated-tee",
            "--report-data",
            &rd,
            "--evidence",
        ])
        .arg(&ev)
        .arg("--collateral")
        .arg(&pubkey)
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("decision: allow"));

    // Other expected report data: rejected.
    let out = twinseal()
        .args([
            "attest",
            "verify",
            "--insecure-allow-simulated-tee",
            "--report-data",
            "00",
            "--evidence",
        ])
        .arg(&ev)
        .arg("--collateral")
        .arg(&pubkey)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("attestation rejected"));
}
