//! COSE receipts on arbitrary bytes: `verify_cose_receipt` never panics
//! and accepts nothing but the genuine vector, with the spec's vector
//! certificate; inputs are used raw and as (offset, xor) edits of the
//! genuine receipt so the fuzzer gets past the CBOR syntax.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinseal_net::cose_receipt::verify_cose_receipt;

const CERT: &[u8] = include_bytes!("../../docs/spec/vectors/receipt/cert.der");
const OK: &[u8] = include_bytes!("../../docs/spec/vectors/receipt/ok_compare.cose");

fuzz_target!(|data: &[u8]| {
    let _ = verify_cose_receipt(data, CERT);
    let mut edited = OK.to_vec();
    for e in data.chunks_exact(3) {
        let off = usize::from(u16::from_le_bytes([e[0], e[1]])) % edited.len();
        edited[off] ^= e[2];
    }
    if edited != OK {
        assert!(verify_cose_receipt(&edited, CERT).is_err(), "an edited receipt verified");
    }
});
