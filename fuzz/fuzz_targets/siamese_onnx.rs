//! Imported models on arbitrary bytes: the ONNX graph reader (tract's
//! protobuf decoding and graph checks) under a fixed pair config, the
//! sidecar config parser (TOML), and the model-file dispatcher that reads
//! either kind of model file. None may panic; a graph that loads must
//! score a pair.
#![no_main]

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use twinseal_siamese::onnx::{OnnxConfig, OnnxModel};

const CONFIG: &str = "kind = \"pair\"\nheight = 28\nwidth = 28\nscale = 255.0\noutput = \"dissimilarity_probability\"\n";

static UNWIND: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    // tract panics on some malformed graphs; `OnnxModel` catches those
    // panics and returns an error. libFuzzer's panic hook would abort
    // before the catch, so put the default hook back: a panic that escapes
    // twinseal's guard still reaches libFuzzer's own catch and aborts.
    UNWIND.call_once(|| drop(std::panic::take_hook()));
    let config = OnnxConfig::from_toml(CONFIG).expect("the fixed config parses");
    if let Ok(m) = OnnxModel::from_bytes(data, config) {
        let px = vec![0.5f32; 784];
        let _ = m.score_pairs(&px, &px);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = OnnxConfig::from_toml(text)
    {
        c.validate().expect("a parsed config validates");
    }
    if let Ok(m) = twinseal_siamese::load_model(data, &Device::Cpu) {
        let (h, w) = m.input_size();
        if h * w <= 64 * 64 {
            let px = vec![0.5f32; h * w];
            let _ = m.score_pairs(&px, &px);
        }
    }
});
