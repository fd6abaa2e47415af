//! Audit bundles and checkpoints on arbitrary bytes: parsing and verification
//! never panic; the genuine bundle verifies cleanly; and an edited bundle
//! that keeps the signed checkpoints but changes the entries is never
//! reported clean. Inputs are used as raw JSON, as raw checkpoint and
//! verifier-key text, and as (offset, xor) edits of a genuine bundle so the
//! fuzzer gets past the JSON syntax to the verifier.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use rusqlite::Connection;
use twinseal_audit::{
    AuditLog, Bundle, CheckpointSigner, Event, VerifierKey, verify_bundle, verify_checkpoint,
};

struct Fixture {
    key: VerifierKey,
    genuine: Bundle,
    json: Vec<u8>,
}

fn fixture() -> Fixture {
    let mut conn = Connection::open_in_memory().expect("sqlite");
    AuditLog::init(&conn).expect("init");
    let (signer, _) = CheckpointSigner::generate("twinseal.coordinator/fuzz").expect("key");
    for batch in 0..3u64 {
        let tx = conn.transaction().expect("tx");
        for i in batch * 4..batch * 4 + 4 {
            let at = UNIX_EPOCH + Duration::from_secs(1_750_000_000 + i);
            let event = if i % 4 == 0 {
                let digest = AuditLog::append_evidence(&tx, &i.to_be_bytes()).expect("evidence");
                Event::AttestationVerified {
                    app: "app".into(),
                    tee: "simulated".into(),
                    measurement: "00".into(),
                    simulated: true,
                    evidence_digest: digest,
                    location: None,
                }
            } else {
                Event::KeyReleased {
                    app: "app".into(),
                    serial: format!("{i:x}"),
                    key: "k".into(),
                    version: 1,
                    location: None,
                }
            };
            AuditLog::append(&tx, at, &event).expect("append");
        }
        AuditLog::checkpoint(&tx, &signer, UNIX_EPOCH).expect("checkpoint");
        tx.commit().expect("commit");
    }
    let genuine = AuditLog::export(&conn).expect("export");
    let json = genuine.to_json();
    Fixture {
        key: signer.verifier_key(),
        genuine,
        json,
    }
}

fuzz_target!(|data: &[u8]| {
    static F: OnceLock<Fixture> = OnceLock::new();
    let f = F.get_or_init(fixture);

    if let Ok(bundle) = Bundle::from_json(data) {
        let _ = verify_bundle(&bundle, &f.key);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verify_checkpoint(text, &f.key);
        let _ = text.parse::<VerifierKey>();
    }

    let mut edited = f.json.clone();
    for e in data.chunks_exact(3) {
        let off = u16::from_le_bytes([e[0], e[1]]) as usize % edited.len();
        edited[off] ^= e[2];
    }
    if let Ok(bundle) = Bundle::from_json(&edited) {
        let report = verify_bundle(&bundle, &f.key);
        if bundle == f.genuine {
            assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
        } else if bundle.checkpoints == f.genuine.checkpoints && bundle.entries != f.genuine.entries
        {
            // Every genuine entry is under a signed checkpoint: a change is a
            // problem, and an addition at least a warning.
            assert!(!report.is_ok() || !report.warnings.is_empty(), "{report}");
        }
    }
});
