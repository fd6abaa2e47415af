//! The coordinator's parsers of untrusted bytes: every request body type of
//! the API, the manifest (TOML), and certificate signing requests (PEM).
//! None may panic; whatever parses must re-validate consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinseal_api as api;
use twinseal_coordinator::ca::parse_csr;
use twinseal_coordinator::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<api::AttestRequest>(data);
    let _ = serde_json::from_slice::<api::CreateKeyRequest>(data);
    let _ = serde_json::from_slice::<api::DataKeyRequest>(data);
    let _ = serde_json::from_slice::<api::UnwrapRequest>(data);
    let _ = serde_json::from_slice::<api::ManifestApplyRequest>(data);
    let _ = serde_json::from_slice::<api::TokenizeRequest>(data);
    let _ = serde_json::from_slice::<api::CoordinatorEvidenceRequest>(data);
    let _ = serde_json::from_slice::<api::JobProgress>(data);
    let _ = serde_json::from_slice::<api::JobFinish>(data);
    let _ = serde_json::from_slice::<api::CreateTokenRequest>(data);
    let _ = serde_json::from_slice::<api::IntrospectRequest>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = Manifest::parse(text) {
            // A parsed manifest is valid by construction.
            m.validate().expect("a parsed manifest validates");
            let _ = m.check_grants();
            let _ = m.data_owners_without_grants();
            for (name, app) in &m.apps {
                let _ = m.policy_config(app);
                let _ = m.app_allows_name(name, text);
            }
        }
        if let Ok(csr) = parse_csr(text) {
            let _ = csr.names();
        }
    }
    // CSRs also arrive as PEM around arbitrary DER.
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_encode(data)
    );
    let _ = parse_csr(&pem);
});

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
