//! The witness on arbitrary bytes: `add-checkpoint` bodies and cosigner
//! keys never panic their parsers, and a witness that cosigned a genuine
//! checkpoint never cosigns an arbitrary body whose checkpoint has the same
//! size and another root (a split view), nor goes back to a smaller size.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use twinseal_audit::{
    CheckpointSigner, Cosigner, CosignerKey, Witness, leaf_hash, parse_add_checkpoint,
};

struct Fixture {
    witness: Witness,
    db: Mutex<rusqlite::Connection>,
}

fn fixture() -> Fixture {
    let db = rusqlite::Connection::open_in_memory().expect("sqlite");
    Witness::init(&db).expect("init");
    let (log, _) = CheckpointSigner::generate("twinseal.coordinator/fuzz").expect("log key");
    let (cosigner, _) = Cosigner::generate("witness.fuzz/w1").expect("witness key");
    let witness = Witness::new(cosigner, vec![log.verifier_key()]);
    let root = leaf_hash(b"entry 0");
    let cp = log.sign_checkpoint(1, &root);
    let body = format!("old 0\n\n{}", cp.note);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    witness
        .add_checkpoint(&db, body.as_bytes(), now)
        .expect("state")
        .expect("the genuine checkpoint is cosigned");
    Fixture {
        witness,
        db: Mutex::new(db),
    }
}

fuzz_target!(|data: &[u8]| {
    static F: OnceLock<Fixture> = OnceLock::new();
    let f = F.get_or_init(fixture);
    let _ = parse_add_checkpoint(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<CosignerKey>();
    }
    let db = f.db.lock().expect("db");
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_001);
    if let Ok(Ok(_)) = f.witness.add_checkpoint(&*db, data, now) {
        // Only a checkpoint signed by the log's key can be cosigned, and
        // the fuzzer cannot sign: whatever was accepted is the genuine one.
        let req = parse_add_checkpoint(data).expect("accepted bodies parse");
        assert!(req.checkpoint.contains("\n1\n"), "cosigned another size");
    }
    let (size, _) = Witness::latest(&*db, "twinseal.coordinator/fuzz")
        .expect("state")
        .expect("the log is known");
    assert_eq!(size, 1, "the witness's state moved");
});
