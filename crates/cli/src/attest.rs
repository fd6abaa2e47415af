//! `twinseal attest ...`: offline verification of evidence for auditors, and
//! simulated evidence for development. Parsing and printing only; the work
//! is done by `twinseal-attest` and `twinseal-policy`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use twinseal_attest::{
    CollateralSource, DcapCollateral, DcapVerifier, Evidence, SimulatedPlatform, SimulatedVerifier,
    SnpVerifier, TeeKind, Verifier,
};
use twinseal_policy::{Placements, Policy, PolicyConfig, Request};

/// Verify attestation evidence or produce simulated evidence.
#[derive(Debug, Args)]
pub struct AttestArgs {
    #[command(subcommand)]
    command: AttestCommand,
}

#[derive(Debug, Subcommand)]
enum AttestCommand {
    /// Verify evidence offline and appraise it with a policy; prints the
    /// claims and the decision with reasons. Exits non-zero when rejected.
    Verify(VerifyArgs),
    /// Produce simulated-TEE evidence (development and CI only).
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Evidence file: SGX/TDX quote, SEV-SNP report (binary or hex), or simulated evidence.
    #[arg(long)]
    evidence: PathBuf,
    /// Collateral: DCAP collateral JSON (SGX/TDX), the VCEK certificate DER
    /// (SEV-SNP), or the simulated platform's public key file (hex).
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// Policy configuration JSON for the default policy
    /// (accepted_tcb_statuses, allowed_measurements, keys).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// A Rego module replacing the default policy (package twinseal.policy).
    #[arg(long)]
    rego: Option<PathBuf>,
    /// Verify "as of" this time (RFC 3339), e.g. inside the collateral's window. Default: now.
    #[arg(long)]
    at: Option<String>,
    /// Expected report data (hex, 64 bytes). Without it the binding is not
    /// checked: the evidence's own report data is shown.
    #[arg(long)]
    report_data: Option<String>,
    /// Key id to appraise placement for.
    #[arg(long)]
    key_id: Option<String>,
    /// DANGEROUS: accept simulated-TEE evidence (never in production).
    #[arg(long)]
    insecure_allow_simulated_tee: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// Report data to embed (hex, up to 64 bytes; zero-padded).
    #[arg(long)]
    report_data: String,
    /// Output file for the evidence.
    #[arg(short, long)]
    output: PathBuf,
    /// The simulated platform's private key (PKCS#8 DER); created if absent.
    /// Its public key is written beside it with `.pub` appended (hex).
    #[arg(long, default_value = "twinseal-simulated-platform.key")]
    platform_key: PathBuf,
    /// Platform id (placement refers to it as `simulated:ID`).
    #[arg(long, default_value = "simulated-dev")]
    platform_id: String,
    /// Mark the evidence as coming from a debug-mode environment.
    #[arg(long)]
    debug: bool,
}

/// Run `twinseal attest`.
pub fn run(args: AttestArgs) -> Result<()> {
    match args.command {
        AttestCommand::Verify(a) => verify(a),
        AttestCommand::Simulate(a) => simulate(a),
    }
}

fn parse_time(s: &str) -> Result<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--at {s:?} is not an RFC 3339 time"))?;
    let secs = u64::try_from(t.unix_timestamp()).context("--at is before 1970")?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn hex64(s: &str) -> Result<[u8; 64]> {
    let b = hex::decode(s.trim()).context("report data is not hex")?;
    if b.len() > 64 {
        bail!("report data is longer than 64 bytes");
    }
    let mut out = [0u8; 64];
    out[..b.len()].copy_from_slice(&b);
    Ok(out)
}

fn verify(a: VerifyArgs) -> Result<()> {
    let evidence = Evidence::detect(&read(&a.evidence)?).map_err(|_| {
        anyhow::anyhow!("{}: not a recognised evidence format", a.evidence.display())
    })?;
    let at = match &a.at {
        Some(s) => parse_time(s)?,
        None => SystemTime::now(),
    };
    let expected = match &a.report_data {
        Some(h) => hex64(h)?,
        None => {
            eprintln!("warning: no --report-data given; the challenge/key binding is not checked");
            evidence
                .unverified_report_data()
                .context("evidence too short to hold report data")?
        }
    };
    let collateral = a.collateral.as_deref().map(read).transpose()?;
    let claims = match verify_evidence(
        &evidence,
        collateral,
        &expected,
        at,
        a.insecure_allow_simulated_tee,
    ) {
        Ok(c) => c,
        Err(why) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "error": why.to_string()})
                );
            }
            return Err(why);
        }
    };
    let config: PolicyConfig = match &a.policy {
        Some(p) => serde_json::from_slice(&read(p)?)
            .with_context(|| format!("{}: invalid policy configuration", p.display()))?,
        None => PolicyConfig::default(),
    };
    let policy = match &a.rego {
        Some(r) => {
            let rego = String::from_utf8(read(r)?).context("Rego file is not UTF-8")?;
            Policy::new(&rego, &config, &Placements::none())?
        }
        None => Policy::default_policy(&config, &Placements::none())?,
    };
    let request = Request {
        key_id: a.key_id.clone(),
        insecure_allow_simulated_tee: a.insecure_allow_simulated_tee,
    };
    let decision = policy.evaluate(&claims, &request)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "verified": true,
                "claims": claims,
                "decision": decision,
            }))?
        );
    } else {
        println!("verified: yes");
        println!(
            "{}",
            serde_json::to_string_pretty(&claims).context("serialize claims")?
        );
        println!(
            "decision: {}",
            if decision.allow { "allow" } else { "deny" }
        );
        for r in &decision.reasons {
            println!("  reason: {r}");
        }
    }
    if !decision.allow {
        bail!("policy denied the evidence");
    }
    Ok(())
}

/// Verifies `evidence` against `expected` report data at `at`, with the
/// collateral its kind needs: DCAP collateral JSON (SGX/TDX), the VCEK
/// certificate DER (SEV-SNP, when the evidence does not carry it), or the
/// simulated platform's public key file (hex; only with
/// `insecure_allow_simulated_tee`). The error carries the detailed reason:
/// the caller is the auditor or the client, not a remote party.
pub fn verify_evidence(
    evidence: &Evidence,
    collateral: Option<Vec<u8>>,
    expected: &[u8; 64],
    at: SystemTime,
    insecure_allow_simulated_tee: bool,
) -> Result<twinseal_attest::VerifiedClaims> {
    let verified = match evidence.kind() {
        TeeKind::Sgx | TeeKind::Tdx => {
            let c =
                collateral.context("SGX/TDX evidence needs --collateral (DCAP collateral JSON)")?;
            let c = DcapCollateral::from_json(&c)?;
            let v = if evidence.kind() == TeeKind::Sgx {
                DcapVerifier::sgx(CollateralSource::Fixed(c))
            } else {
                DcapVerifier::tdx(CollateralSource::Fixed(c))
            };
            v.verify(evidence, expected, at)
        }
        TeeKind::SevSnp => {
            let mut v = SnpVerifier::new()?;
            if let Some(vcek) = collateral {
                v = v.with_vcek(vcek);
            }
            v.verify(evidence, expected, at)
        }
        TeeKind::Simulated => {
            if !insecure_allow_simulated_tee {
                bail!("simulated evidence is only verified with --insecure-allow-simulated-tee");
            }
            let key = collateral
                .context("simulated evidence needs --collateral (the platform's .pub file)")?;
            let key = hex::decode(String::from_utf8_lossy(&key).trim())
                .context("platform public key file is not hex")?;
            SimulatedVerifier::insecure_new(vec![key]).verify(evidence, expected, at)
        }
    };
    verified.map_err(|e| {
        let why = e
            .reason()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        anyhow::anyhow!("attestation rejected: {why}")
    })
}

fn simulate(a: SimulateArgs) -> Result<()> {
    let report_data = hex64(&a.report_data)?;
    let platform = if a.platform_key.exists() {
        let der = read(&a.platform_key)?;
        SimulatedPlatform::from_pkcs8(&der, &a.platform_id)?
    } else {
        let p = SimulatedPlatform::generate(&a.platform_id)?;
        write_private(&a.platform_key, p.pkcs8())?;
        eprintln!(
            "created simulated platform key {}",
            a.platform_key.display()
        );
        p
    };
    let platform = platform.with_debug(a.debug);
    let mut pub_path = a.platform_key.clone().into_os_string();
    pub_path.push(".pub");
    std::fs::write(&pub_path, hex::encode(platform.public_key()) + "\n")
        .with_context(|| format!("write {}", PathBuf::from(&pub_path).display()))?;
    let evidence = platform.attest(&report_data, SystemTime::now())?;
    std::fs::write(&a.output, evidence.bytes())
        .with_context(|| format!("write {}", a.output.display()))?;
    eprintln!(
        "wrote simulated evidence to {} (platform public key in {})",
        a.output.display(),
        PathBuf::from(pub_path).display()
    );
    Ok(())
}

/// Write a secret file readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))
}
