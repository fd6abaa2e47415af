//! The model-file reader on arbitrary bytes: a model that loads must also
//! score a pair without panicking.
#![no_main]

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use twinseal_siamese::Siamese;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = Siamese::from_bytes(data, &Device::Cpu) {
        let t = &model.config().tower;
        // Keep a hostile config from asking for an absurd amount of work.
        if t.height * t.width <= 64 * 64 {
            let px = vec![0.5f32; t.height * t.width];
            let _ = model.score_pairs(&px, &px);
        }
    }
});
