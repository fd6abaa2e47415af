//! The certificate-extension parsers: the CBOR CMW decoder and certificate
//! extraction must never panic; what decodes must re-encode identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinseal_attest::cert;

fuzz_target!(|data: &[u8]| {
    if let Ok((mt, value)) = cert::decode_cmw(data) {
        assert_eq!(cert::encode_cmw(mt, value), data);
    }
    let _ = cert::extract(data);
});
