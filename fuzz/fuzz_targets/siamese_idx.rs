//! The MNIST IDX parsers on arbitrary bytes: never panic, and whatever parses
//! is internally consistent (pixel count = n x rows x cols, values in 0..1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinseal_siamese::data::{parse_idx_images, parse_idx_labels};

fuzz_target!(|data: &[u8]| {
    if let Ok((n, rows, cols, px)) = parse_idx_images(data, "fuzz") {
        assert_eq!(px.len(), n * rows * cols);
        assert!(px.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    if let Ok(labels) = parse_idx_labels(data, "fuzz") {
        assert_eq!(labels.len() + 8, data.len());
    }
});
