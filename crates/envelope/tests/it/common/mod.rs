//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{Cursor, Read};

use twinseal_envelope::{
    Context, Error, Header, Kek, KeyId, Opener, SecretKey, SeekableOpener, open_bytes,
    open_bytes_into, open_bytes_with_file_key,
};

/// A local key from fixed bytes.
pub fn key(byte: u8) -> Kek {
    Kek::local(SecretKey::from_bytes([byte; 32]))
}

/// A key with the same id as `key(id_of)` but other key bytes.
pub fn impostor(id_of: u8, byte: u8) -> Kek {
    let id: KeyId = key(id_of).id().clone();
    Kek::new(id, SecretKey::from_bytes([byte; 32]))
}

/// Deterministic plaintext of `len` bytes.
pub fn plaintext(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ len as u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub fn ctx(pairs: &[(&str, &str)]) -> Context {
    Context::from_pairs(pairs.iter().copied()).unwrap()
}

/// Opens with the streaming opener, reading to the end.
pub fn open_stream(sealed: &[u8], keys: &[Kek], context: &Context) -> Result<Vec<u8>, Error> {
    let mut opener = Opener::new(Cursor::new(sealed), keys, context)?;
    let mut out = Vec::new();
    opener.read_to_end(&mut out)?;
    Ok(out)
}

/// Opens with the random-access opener, reading everything.
pub fn open_seek(sealed: &[u8], keys: &[Kek], context: &Context) -> Result<Vec<u8>, Error> {
    let mut opener = SeekableOpener::new(Cursor::new(sealed), keys, context)?;
    let mut out = Vec::new();
    opener.read_to_end(&mut out)?;
    Ok(out)
}

/// Asserts that every opener rejects `sealed`; returns the in-memory error.
#[track_caller]
pub fn rejected(sealed: &[u8], keys: &[Kek], context: &Context) -> Error {
    let err = match open_bytes(sealed, keys, context) {
        Ok(_) => panic!("open_bytes accepted a bad file"),
        Err(err) => err,
    };
    assert!(
        open_stream(sealed, keys, context).is_err(),
        "Opener accepted a bad file"
    );
    assert!(
        open_seek(sealed, keys, context).is_err(),
        "SeekableOpener accepted a bad file"
    );
    let mut reused = vec![0xAA; 1000];
    assert!(open_bytes_into(sealed, keys, context, &mut reused).is_err());
    assert!(
        reused.is_empty(),
        "open_bytes_into left bytes behind on failure"
    );
    // The key manager's path: where the header gives up a verified key, the
    // client's open with that key must still fail.
    let released = Header::parse(sealed).and_then(|h| h.unwrap_file_key(keys));
    if let Ok(file_key) = released {
        assert!(
            open_bytes_with_file_key(sealed, &file_key, context).is_err(),
            "open_bytes_with_file_key accepted a bad file"
        );
        assert!(
            Opener::with_file_key(Cursor::new(sealed), &file_key, context)
                .and_then(|mut o| Ok(o.read_to_end(&mut Vec::new())?))
                .is_err(),
            "Opener::with_file_key accepted a bad file"
        );
        assert!(
            SeekableOpener::with_file_key(Cursor::new(sealed), &file_key, context)
                .and_then(|mut o| Ok(o.read_to_end(&mut Vec::new())?))
                .is_err(),
            "SeekableOpener::with_file_key accepted a bad file"
        );
    }
    err
}
