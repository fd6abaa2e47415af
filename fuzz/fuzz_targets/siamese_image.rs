//! Image decoding (PNG, JPEG, raw grey) on arbitrary bytes: never panics,
//! and a decoded image has exactly the requested size with pixels in 0..1;
//! the header-only pixel count (the worker's per-request budget) never
//! panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinseal_siamese::data::{decode_image, image_pixels};

fuzz_target!(|data: &[u8]| {
    let _ = image_pixels(data, 28, 28, "fuzz");
    if let Ok(px) = decode_image(data, 28, 28, "fuzz") {
        assert_eq!(px.len(), 784);
        assert!(px.iter().all(|v| (0.0..=1.0).contains(v)));
    }
});
