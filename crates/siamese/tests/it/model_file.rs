//! The model-file reader against hostile metadata: configs that would make it
//! allocate without bound, and tensors of the wrong shape.

use std::collections::HashMap;

use candle_core::Device;
use twinseal_siamese::Siamese;
use twinseal_siamese::config::{HeadKind, ModelConfig};
use twinseal_siamese::model::MODEL_FORMAT;

fn file_with(config: &ModelConfig, tensors: Vec<(&str, Vec<usize>)>) -> Vec<u8> {
    let meta: HashMap<String, String> = [
        ("format".to_string(), MODEL_FORMAT.to_string()),
        ("config".to_string(), serde_json::to_string(config).unwrap()),
    ]
    .into();
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|(n, shape)| {
            (
                n.to_string(),
                vec![0u8; 4 * shape.iter().product::<usize>()],
                shape,
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn a_model_round_trips_and_a_wrong_shape_is_refused() {
    let model = Siamese::new(ModelConfig::seed(HeadKind::Distance), 1, &Device::Cpu).unwrap();
    let bytes = model.to_bytes().unwrap();
    assert!(Siamese::from_bytes(&bytes, &Device::Cpu).is_ok());
    let mut tensors = vec![
        ("tower.conv0.weight", vec![4, 1, 5, 5]),
        ("tower.conv0.bias", vec![4]),
        ("tower.conv1.weight", vec![16, 4, 5, 5]),
        ("tower.conv1.bias", vec![16]),
        ("tower.dense0.weight", vec![10, 256]),
        ("tower.dense0.bias", vec![10]),
    ];
    assert!(Siamese::from_bytes(&file_with(model.config(), tensors.clone()), &Device::Cpu).is_ok());
    tensors[4].1 = vec![10, 255];
    let e = Siamese::from_bytes(&file_with(model.config(), tensors), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong shape"), "{e}");
}

#[test]
fn configs_that_would_allocate_without_bound_are_refused() {
    let mut huge = ModelConfig::seed(HeadKind::Distance);
    huge.tower.height = 1 << 20;
    let e = Siamese::from_bytes(&file_with(&huge, vec![]), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exceeds"), "{e}");
    let mut wide = ModelConfig::seed(HeadKind::Distance);
    wide.tower.hidden = vec![1 << 30];
    let e = Siamese::from_bytes(&file_with(&wide, vec![]), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameters"), "{e}");
    assert!(Siamese::new(wide, 1, &Device::Cpu).is_err());
}
