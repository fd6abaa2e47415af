//! The log's C2SP tiles on arbitrary bytes: tile paths, entry bundles and
//! hash tiles never panic their parsers, a parsed path is canonical, and a
//! genuine 300-entry log whose tiles get (tile, offset, xor) edits never
//! verifies clean unless the edits left every tile as it was.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use rusqlite::Connection;
use twinseal_audit::{
    AuditLog, CheckpointSigner, Event, Tile, TileCache, TileSource, VerifierKey, VerifyOptions,
    decode_entry_bundle, decode_hash_tile, tiles_for_size, verify_tiles,
};

struct Fixture {
    key: VerifierKey,
    /// `checkpoint` and every tile path, with its bytes.
    files: BTreeMap<String, Vec<u8>>,
}

fn fixture() -> Fixture {
    let mut conn = Connection::open_in_memory().expect("sqlite");
    AuditLog::init(&conn).expect("init");
    let (signer, _) = CheckpointSigner::generate("twinseal.coordinator/fuzz").expect("key");
    let tx = conn.transaction().expect("tx");
    for i in 0..300u64 {
        let event = Event::KeyReleased {
            app: "app".into(),
            serial: format!("{i:x}"),
            key: "k".into(),
            version: 1,
            location: None,
        };
        AuditLog::append(&tx, UNIX_EPOCH + Duration::from_secs(i), &event).expect("append");
    }
    AuditLog::checkpoint(&tx, &signer, UNIX_EPOCH).expect("checkpoint");
    tx.commit().expect("commit");
    let cache = TileCache::default();
    let mut files = BTreeMap::new();
    let paths = std::iter::once("checkpoint".to_string())
        .chain(tiles_for_size(300).into_iter().map(|t| t.path()));
    for p in paths {
        let bytes = AuditLog::serve(&conn, &p, &cache).expect("serve");
        files.insert(p, bytes);
    }
    Fixture {
        key: signer.verifier_key(),
        files,
    }
}

struct Mem(BTreeMap<String, Vec<u8>>);

impl TileSource for Mem {
    fn fetch(&mut self, path: &str) -> twinseal_audit::Result<Vec<u8>> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| twinseal_audit::Error::TileUnavailable(path.into()))
    }
}

fuzz_target!(|data: &[u8]| {
    static F: OnceLock<Fixture> = OnceLock::new();
    let f = F.get_or_init(fixture);

    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(tile) = Tile::parse_path(text)
    {
        assert_eq!(tile.path(), text, "a parsed path is canonical");
    }
    if let Some((&w, rest)) = data.split_first() {
        let width = u16::from(w).max(1);
        let _ = decode_entry_bundle(rest, width);
        let _ = decode_hash_tile(rest, width);
    }

    let mut files = f.files.clone();
    let names: Vec<String> = files.keys().cloned().collect();
    for e in data.chunks_exact(4) {
        let name = &names[usize::from(e[0]) % names.len()];
        let bytes = files.get_mut(name).expect("file");
        if bytes.is_empty() {
            continue;
        }
        let off = usize::from(u16::from_le_bytes([e[1], e[2]])) % bytes.len();
        bytes[off] ^= e[3];
    }
    let changed = files != f.files;
    if let Ok(report) = verify_tiles(&mut Mem(files), &f.key, &VerifyOptions::default()) {
        if !changed {
            assert!(report.is_ok(), "{report}");
        } else {
            assert!(!report.is_ok(), "edited tiles verified clean: {report}");
        }
    }
});
