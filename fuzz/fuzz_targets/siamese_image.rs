//! Image decoding (PNG, JPEG, raw grey) on arbitrary bytes: never panics,
//! and a decoded image has exactly the requested size with pixels in 0..1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinseal_siamese::data::decode_image;

fuzz_target!(|data: &[u8]| {
    if let Ok(px) = decode_image(data, 28, 28, "fuzz") {
        assert_eq!(px.len(), 784);
        assert!(px.iter().all(|v| (0.0..=1.0).contains(v)));
    }
});
