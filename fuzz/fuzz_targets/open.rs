//! The openers on arbitrary input under a fixed key and context: never
//! panic, and all three agree on accept or reject. Seed the corpus with
//! `crates/envelope/tests/vectors/*.twseal` (sealed under key-a.bin and the
//! context name=siamese, purpose=model) so the fuzzer starts past the header.
#![no_main]

use std::io::{Cursor, Read};

use libfuzzer_sys::fuzz_target;
use twinseal_envelope::{Context, Kek, Opener, SecretKey, SeekableOpener, open_bytes};

const KEY_A: [u8; 32] = *b"twinseal test key A, never use!!";

fuzz_target!(|data: &[u8]| {
    let keys = [Kek::local(SecretKey::from_bytes(KEY_A))];
    let context = Context::from_pairs([("name", "siamese"), ("purpose", "model")]).unwrap();
    let in_memory = open_bytes(data, &keys, &context);
    let streamed = Opener::new(Cursor::new(data), &keys, &context).and_then(|mut o| {
        let mut out = Vec::new();
        o.read_to_end(&mut out)?;
        Ok(out)
    });
    let seeked = SeekableOpener::new(Cursor::new(data), &keys, &context).and_then(|mut o| {
        let mut out = Vec::new();
        o.read_to_end(&mut out)?;
        Ok(out)
    });
    match (in_memory, streamed, seeked) {
        (Ok(a), Ok(b), Ok(c)) => assert!(a == b && b == c),
        (Err(_), Err(_), Err(_)) => {}
        _ => panic!("openers disagree"),
    }
});
