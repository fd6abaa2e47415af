//! The header parser on arbitrary bytes: never panics, and whatever parses
//! re-parses from a stream to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinseal_envelope::Header;

fuzz_target!(|data: &[u8]| {
    let parsed = Header::parse(data);
    let streamed = Header::read_from(&mut &data[..]);
    match (parsed, streamed) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.as_bytes(), b.as_bytes());
            assert!(a.len() <= data.len());
            assert!(!a.stanzas().is_empty());
        }
        (Err(_), Err(_)) => {}
        _ => panic!("slice and stream parsers disagree"),
    }
    let _ = twinseal_envelope::inspect(std::io::Cursor::new(data));
});
