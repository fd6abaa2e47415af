//! Imported ONNX models: the Keras example's export (fixture in
//! `testdata/models/keras-siamese/`, see its README) gives
//! Keras's scores within 1e-4, and every misfit between graph and
//! configuration, every unknown op and every damaged file is refused at
//! load with a clear error.

use std::path::PathBuf;

use twinseal_siamese::onnx::{OnnxConfig, OnnxModel};

fn fixture() -> PathBuf {
    let dir = std::env::var_os("TWINSEAL_KERAS_SIAMESE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models/keras-siamese")
        });
    assert!(
        dir.join("siamese.onnx").is_file(),
        "the keras-siamese fixture is missing at {}: testdata/ is part of the repository: restore it with `git checkout -- testdata`",
        dir.display()
    );
    dir
}

const KERAS_CONFIG: &str = r#"
kind = "pair"
layout = "nhwc"
height = 28
width = 28
scale = 255.0
output = "dissimilarity_probability"
threshold = 0.5
"#;

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn the_keras_export_gives_keras_scores() {
    let dir = fixture();
    let onnx = std::fs::read(dir.join("siamese.onnx")).unwrap();
    let model = OnnxModel::from_bytes(&onnx, OnnxConfig::from_toml(KERAS_CONFIG).unwrap()).unwrap();
    // The fixture's pixels are 0..255 (what Keras was fed); twinseal takes 0..1.
    let a: Vec<f32> = f32s(&std::fs::read(dir.join("pairs_a.f32")).unwrap())
        .iter()
        .map(|v| v / 255.0)
        .collect();
    let b: Vec<f32> = f32s(&std::fs::read(dir.join("pairs_b.f32")).unwrap())
        .iter()
        .map(|v| v / 255.0)
        .collect();
    let keras = f32s(&std::fs::read(dir.join("keras_scores.f32")).unwrap());
    let different = std::fs::read(dir.join("labels_different.u8")).unwrap();
    assert_eq!(keras.len(), 512);
    // All at once, and one pair at a time: the same scores.
    let scores = model.score_pairs(&a, &b).unwrap();
    let mut worst = 0f32;
    for (s, k) in scores.iter().zip(&keras) {
        worst = worst.max((s.score - k).abs());
    }
    assert!(worst < 1e-4, "largest difference from Keras: {worst}");
    for i in [0usize, 7, 511] {
        let one = model
            .score_pairs(&a[i * 784..(i + 1) * 784], &b[i * 784..(i + 1) * 784])
            .unwrap();
        assert!((one[0].score - scores[i].score).abs() < 1e-5);
    }
    let correct = scores
        .iter()
        .zip(&different)
        .filter(|(s, d)| s.similar == (**d == 0))
        .count();
    assert_eq!(correct, 497, "the README's 0.9707 on these 512 pairs");
    for s in &scores {
        assert!((s.probability - (1.0 - s.score)).abs() < 1e-6);
    }
    let summary = model.summary();
    assert_eq!(summary.inputs.len(), 2);
    assert!(
        summary.ops.iter().any(|(op, _)| op.contains("Conv")),
        "{:?}",
        summary.ops
    );
    assert!(summary.weight_bytes > 0);
}

#[test]
fn fail_configs_that_do_not_fit_the_graph() {
    let dir = fixture();
    let onnx = std::fs::read(dir.join("siamese.onnx")).unwrap();
    for (config, why) in [
        (KERAS_CONFIG.replace("\"pair\"", "\"tower\""), "output"),
        (
            KERAS_CONFIG
                .replace("\"pair\"", "\"tower\"")
                .replace("output = \"dissimilarity_probability\"\n", ""),
            "takes 1 input",
        ),
        (
            KERAS_CONFIG.replace("height = 28", "height = 32"),
            "declared",
        ),
        (KERAS_CONFIG.replace("\"nhwc\"", "\"nchw\""), "declared"),
        (
            KERAS_CONFIG.replace("threshold = 0.5", "threshold = 7.0"),
            "0..1",
        ),
        (
            KERAS_CONFIG.replace("kind = \"pair\"", "kind = \"triple\""),
            "model config",
        ),
        (format!("{KERAS_CONFIG}\ncolour = 1"), "unknown field"),
    ] {
        let e = OnnxConfig::from_toml(&config)
            .and_then(|c| OnnxModel::from_bytes(&onnx, c))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{why}: {e}");
    }
}

#[test]
fn fail_damaged_graphs_and_unknown_ops() {
    let config = || OnnxConfig::from_toml(KERAS_CONFIG).unwrap();
    for bad in [&b""[..], b"not an onnx graph at all", &[0xff; 64]] {
        let e = OnnxModel::from_bytes(bad, config())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ONNX"), "{e}");
    }
    // Found by the fuzz target siamese_onnx: a mutated export whose Gather
    // index is out of range made tract panic while folding constants.
    let found = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/onnx-rejects/gather-index-panic.onnx"),
    )
    .unwrap();
    let e = OnnxModel::from_bytes(&found, config())
        .unwrap_err()
        .to_string();
    assert!(e.contains("malformed"), "{e}");
    let dir = fixture();
    let onnx = std::fs::read(dir.join("siamese.onnx")).unwrap();
    // Truncated.
    for cut in [10, onnx.len() / 2, onnx.len() - 3] {
        assert!(
            OnnxModel::from_bytes(&onnx[..cut], config()).is_err(),
            "cut at {cut}"
        );
    }
    // An op tract does not know: a node's op_type field (protobuf field 4,
    // length 4) renamed from Conv to Cxnv, so the encoding stays valid.
    let field = [0x22u8, 0x04, b'C', b'o', b'n', b'v'];
    let mut patched = onnx.clone();
    let mut renamed = 0;
    let mut i = 0;
    while i + field.len() <= patched.len() {
        if patched[i..i + field.len()] == field {
            patched[i + 3] = b'x';
            renamed += 1;
        }
        i += 1;
    }
    assert!(renamed > 0, "the export has Conv nodes");
    let e = OnnxModel::from_bytes(&patched, config())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot run") && e.contains("Cxnv"), "{e}");
}

#[test]
fn an_import_is_one_deterministic_file_that_loads_as_a_pair_model() {
    let dir = fixture();
    let onnx = std::fs::read(dir.join("siamese.onnx")).unwrap();
    let config = OnnxConfig::from_toml(KERAS_CONFIG).unwrap();
    let (first, _) = twinseal_siamese::serving::import_onnx(&onnx, &config).unwrap();
    let (second, _) = twinseal_siamese::serving::import_onnx(&onnx, &config).unwrap();
    assert_eq!(
        first, second,
        "the same graph and config give the same file"
    );
    let model = twinseal_siamese::load_model(&first, &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.backend(), "onnx");
    assert_eq!(model.input_size(), (28, 28));
    assert_eq!(model.embedding_dim(), None);
    assert!(model.embed(&[0.0; 784]).is_err());
    let info = twinseal_siamese::serving::inspect(&first).unwrap();
    assert_eq!(info.format, "twinseal-onnx/1");
    assert!(info.graph.is_some());
    // A native model file still loads through the same door.
    let native = twinseal_siamese::Siamese::new(
        twinseal_siamese::ModelConfig::seed(twinseal_siamese::HeadKind::Sigmoid),
        1,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    let m = twinseal_siamese::load_model(&native, &candle_core::Device::Cpu).unwrap();
    assert_eq!((m.backend(), m.embedding_dim()), ("native", Some(10)));
    // Anything else is refused.
    for bad in [&b"junk"[..], &first[..first.len() - 10]] {
        assert!(twinseal_siamese::load_model(bad, &candle_core::Device::Cpu).is_err());
    }
}

/// A one-input tower as an ONNX graph built in the test: the image
/// flattened and multiplied by a fixed 784x4 matrix (a linear embedding),
/// with the input declared `[N, 28, 28, 1]` or `[N, 1, 28, 28]`.
fn linear_tower(nchw: bool, w: &[f32]) -> Vec<u8> {
    use prost::Message;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension::Value as Dim};
    let dims: Vec<Dimension> = [None, Some(28), Some(28), Some(1)]
        .into_iter()
        .map(|d| Dimension {
            value: Some(match d {
                None => Dim::DimParam("N".into()),
                Some(v) => Dim::DimValue(v),
            }),
            ..Default::default()
        })
        .collect();
    let mut dims = dims;
    if nchw {
        let c = dims.remove(3);
        dims.insert(1, c);
    }
    let tensor_type = |dim: Vec<Dimension>| pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: 1,
            shape: Some(pb::TensorShapeProto { dim }),
        })),
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "tower".into(),
        node: vec![
            pb::NodeProto {
                input: vec!["x".into(), "shape".into()],
                output: vec!["flat".into()],
                op_type: "Reshape".into(),
                name: "flatten".into(),
                ..Default::default()
            },
            pb::NodeProto {
                input: vec!["flat".into(), "w".into()],
                output: vec!["y".into()],
                op_type: "MatMul".into(),
                name: "embed".into(),
                ..Default::default()
            },
        ],
        initializer: vec![
            pb::TensorProto {
                name: "w".into(),
                dims: vec![784, 4],
                data_type: 1,
                float_data: w.to_vec(),
                ..Default::default()
            },
            pb::TensorProto {
                name: "shape".into(),
                dims: vec![2],
                data_type: 7,
                int64_data: vec![-1, 784],
                ..Default::default()
            },
        ],
        input: vec![pb::ValueInfoProto {
            name: "x".into(),
            r#type: Some(tensor_type(dims)),
            ..Default::default()
        }],
        output: vec![pb::ValueInfoProto {
            name: "y".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn a_tower_export_embeds_and_twinseal_measures_the_distance() {
    let w: Vec<f32> = (0..784 * 4)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
        .collect();
    let tower = "kind = \"tower\"\nlayout = \"nhwc\"\nheight = 28\nwidth = 28\nthreshold = 1.0\n";
    for nchw in [false, true] {
        let config = if nchw {
            tower.replace("nhwc", "nchw")
        } else {
            tower.to_string()
        };
        let m = OnnxModel::from_bytes(
            &linear_tower(nchw, &w),
            OnnxConfig::from_toml(&config).unwrap(),
        )
        .unwrap();
        assert_eq!(m.embedding_dim(), Some(4));
        let img =
            |k: usize| -> Vec<f32> { (0..784).map(|i| ((i * k) % 17) as f32 / 17.0).collect() };
        let (a, b) = (img(3), img(5));
        let e = m.embed(&[a.clone(), b.clone()].concat()).unwrap();
        assert_eq!(e.len(), 8);
        // The embedding is the image times the matrix.
        for j in 0..4 {
            let want: f32 = (0..784).map(|i| a[i] * w[i * 4 + j]).sum();
            assert!((e[j] - want).abs() < 1e-3, "{} vs {want}", e[j]);
        }
        let d: f32 = (0..4)
            .map(|j| (e[j] - e[4 + j]).powi(2))
            .sum::<f32>()
            .sqrt();
        let s = m.score_pairs(&a, &b).unwrap()[0];
        assert!((s.distance - d).abs() < 1e-4);
        assert_eq!(s.similar, d <= 1.0);
        let same = m.score_pairs(&a, &a).unwrap()[0];
        assert!(same.distance < 1e-5 && same.similar && same.probability > 0.99);
        // A large batch (split across the cores) gives the same scores.
        let many_a: Vec<f32> = (0..300).flat_map(|k| img(k % 7 + 1)).collect();
        let many_b: Vec<f32> = (0..300).flat_map(|k| img(k % 5 + 2)).collect();
        let all = m.score_pairs(&many_a, &many_b).unwrap();
        for k in [0usize, 17, 299] {
            let one = m
                .score_pairs(
                    &many_a[k * 784..(k + 1) * 784],
                    &many_b[k * 784..(k + 1) * 784],
                )
                .unwrap()[0];
            assert!((one.distance - all[k].distance).abs() < 1e-4, "pair {k}");
        }
        // The other layout does not fit the declared input.
        let wrong = if nchw {
            tower.to_string()
        } else {
            tower.replace("nhwc", "nchw")
        };
        let e = OnnxModel::from_bytes(
            &linear_tower(nchw, &w),
            OnnxConfig::from_toml(&wrong).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("declared"), "{e}");
    }
}
