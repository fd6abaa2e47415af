//! The worker's parsers of untrusted bytes: every request body type of its
//! API (JSON), and a workflow job's input once opened: the tar archive and
//! its `pairs.csv`. None may panic; an accepted archive's pairs name files
//! the archive holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinseal_api as api;
use twinseal_worker::jobs::{Input, parse_pairs};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<api::CompareRequest>(data);
    let _ = serde_json::from_slice::<api::CompareBatchRequest>(data);
    let _ = serde_json::from_slice::<api::EmbedRequest>(data);
    let _ = serde_json::from_slice::<api::EnrollRequest>(data);
    let _ = serde_json::from_slice::<api::VerifyRequest>(data);
    if let Ok(pairs) = parse_pairs(data) {
        assert!(!pairs.is_empty());
        assert!(pairs.iter().all(|p| !p.left.is_empty() && !p.right.is_empty()));
    }
    if let Ok(input) = Input::from_tar(data) {
        assert!(!input.pairs().is_empty());
        assert!(input.file_count() >= 1);
    }
});
