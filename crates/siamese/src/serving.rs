//! One interface for every model twinseal serves: the native network
//! ([`Siamese`], candle) and imported ONNX graphs ([`OnnxModel`], tract).
//! The worker, `compare`, `eval` and the workflows use [`PairModel`], so an
//! imported model gets the same endpoints, receipts, metrics and sealing.
//!
//! Both kinds live in one file format, safetensors with twinseal metadata:
//! `format = twinseal-siamese/1` (native weights) or `format =
//! twinseal-onnx/1` (the ONNX graph's bytes as one `u8` tensor named
//! `onnx`, the sidecar configuration as JSON in `config`, and the graph's
//! SHA-256 in `onnx_sha256`). [`load`] reads either from bytes in memory.

use std::collections::HashMap;

use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{MODEL_FORMAT, PairScore, Siamese};
use crate::onnx::{OnnxConfig, OnnxModel};

/// The format name of imported ONNX model files.
pub const ONNX_FORMAT: &str = "twinseal-onnx/1";

/// A model that scores image pairs.
pub trait PairModel: Send + Sync + std::fmt::Debug {
    /// `native` or `onnx`.
    fn backend(&self) -> &'static str;
    /// Input height and width: images are grey, `height * width` pixels in
    /// 0..1, row-major.
    fn input_size(&self) -> (usize, usize);
    /// The decision threshold on [`PairScore::score`] (similar when at or below).
    fn threshold(&self) -> f32;
    /// Embedding length, for models that embed single images; `None` for
    /// models that only score pairs.
    fn embedding_dim(&self) -> Option<usize>;
    /// Scores pairs: `a` and `b` hold the same number of images.
    fn score_pairs(&self, a: &[f32], b: &[f32]) -> Result<Vec<PairScore>>;
    /// Embeds images (an error for pair-only models).
    fn embed(&self, pixels: &[f32]) -> Result<Vec<f32>>;
    /// Scores pairs of embeddings from [`PairModel::embed`].
    fn score_embeddings(&self, e1: &[f32], e2: &[f32]) -> Result<Vec<PairScore>>;
    /// The native network, when this is one (training, provenance).
    fn as_native(&self) -> Option<&Siamese> {
        None
    }
    /// The imported graph, when this is one.
    fn as_onnx(&self) -> Option<&OnnxModel> {
        None
    }
}

impl PairModel for Siamese {
    fn backend(&self) -> &'static str {
        "native"
    }
    fn input_size(&self) -> (usize, usize) {
        (self.config().tower.height, self.config().tower.width)
    }
    fn threshold(&self) -> f32 {
        self.config().threshold
    }
    fn embedding_dim(&self) -> Option<usize> {
        Some(self.config().tower.embedding_dim)
    }
    fn score_pairs(&self, a: &[f32], b: &[f32]) -> Result<Vec<PairScore>> {
        Siamese::score_pairs(self, a, b)
    }
    fn embed(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        Siamese::embed(self, pixels)
    }
    fn score_embeddings(&self, e1: &[f32], e2: &[f32]) -> Result<Vec<PairScore>> {
        Siamese::score_embeddings(self, e1, e2)
    }
    fn as_native(&self) -> Option<&Siamese> {
        Some(self)
    }
}

impl PairModel for OnnxModel {
    fn backend(&self) -> &'static str {
        "onnx"
    }
    fn input_size(&self) -> (usize, usize) {
        (self.config().height, self.config().width)
    }
    fn threshold(&self) -> f32 {
        self.config().score_threshold()
    }
    fn embedding_dim(&self) -> Option<usize> {
        OnnxModel::embedding_dim(self)
    }
    fn score_pairs(&self, a: &[f32], b: &[f32]) -> Result<Vec<PairScore>> {
        OnnxModel::score_pairs(self, a, b)
    }
    fn embed(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        OnnxModel::embed(self, pixels)
    }
    fn score_embeddings(&self, e1: &[f32], e2: &[f32]) -> Result<Vec<PairScore>> {
        match OnnxModel::embedding_dim(self) {
            Some(_) => Ok(OnnxModel::score_embeddings(self, e1, e2)),
            None => Err(Error::Input(
                "this imported model scores pairs; it has no embeddings".into(),
            )),
        }
    }
    fn as_onnx(&self) -> Option<&OnnxModel> {
        Some(self)
    }
}

/// The metadata of a model file, read without loading it.
fn metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::Format(format!("not a safetensors model file: {e}")))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// Reads a model file of either kind from bytes in memory.
pub fn load(bytes: &[u8], device: &Device) -> Result<Box<dyn PairModel>> {
    let meta = metadata(bytes)?;
    match meta.get("format").map(String::as_str) {
        Some(MODEL_FORMAT) => Ok(Box::new(Siamese::from_bytes(bytes, device)?)),
        Some(ONNX_FORMAT) => {
            let (onnx, config) = onnx_parts(bytes, &meta)?;
            Ok(Box::new(OnnxModel::from_bytes(onnx, config)?))
        }
        Some(other) => Err(Error::Format(format!(
            "unsupported model format {other:?} (expected {MODEL_FORMAT} or {ONNX_FORMAT})"
        ))),
        None => Err(Error::Format(
            "safetensors file without twinseal metadata".into(),
        )),
    }
}

fn onnx_parts<'a>(
    bytes: &'a [u8],
    meta: &HashMap<String, String>,
) -> Result<(&'a [u8], OnnxConfig)> {
    let config: OnnxConfig = serde_json::from_str(
        meta.get("config")
            .ok_or_else(|| Error::Format("model file has no config".into()))?,
    )
    .map_err(|e| Error::Format(format!("bad model config: {e}")))?;
    let st =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Format(e.to_string()))?;
    let names = st.names();
    if names.len() != 1 {
        return Err(Error::Format(
            "an imported model file holds exactly one tensor, `onnx`".into(),
        ));
    }
    let view = st.tensor("onnx").map_err(|_| {
        Error::Format("an imported model file holds exactly one tensor, `onnx`".into())
    })?;
    if view.dtype() != safetensors::Dtype::U8 {
        return Err(Error::Format("the `onnx` tensor is not bytes".into()));
    }
    let onnx = view.data();
    let digest = hex::encode(Sha256::digest(onnx));
    if meta.get("onnx_sha256") != Some(&digest) {
        return Err(Error::Format(
            "the ONNX graph does not match the digest recorded beside it".into(),
        ));
    }
    Ok((onnx, config))
}

/// Packs an ONNX graph and its sidecar configuration into a twinseal model
/// file, after checking that they load together.
pub fn import_onnx(onnx: &[u8], config: &OnnxConfig) -> Result<(Vec<u8>, OnnxModel)> {
    let model = OnnxModel::from_bytes(onnx, config.clone())?;
    // The safetensors header written by hand with sorted keys (the crate's
    // serializer iterates a HashMap), so one graph and config always give
    // the same file, hence the same digest in receipts and policies.
    let meta = std::collections::BTreeMap::from([
        (
            "config".to_string(),
            serde_json::to_string(config).map_err(|e| Error::Format(e.to_string()))?,
        ),
        ("format".to_string(), ONNX_FORMAT.to_string()),
        ("onnx_sha256".to_string(), hex::encode(Sha256::digest(onnx))),
    ]);
    let header = serde_json::json!({
        "__metadata__": meta,
        "onnx": {"dtype": "U8", "shape": [onnx.len()], "data_offsets": [0, onnx.len()]},
    });
    let mut json = serde_json::to_vec(&header).map_err(|e| Error::Format(e.to_string()))?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + json.len() + onnx.len());
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(onnx);
    // What was written must read back as what it describes.
    let (read, _) = onnx_parts(&bytes, &metadata(&bytes)?)?;
    if read != onnx {
        return Err(Error::Format("the model file did not read back".into()));
    }
    Ok((bytes, model))
}

/// What `twinseal model inspect` shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    /// The file's format.
    pub format: String,
    /// SHA-256 of the whole file (what receipts name as the model digest).
    pub sha256: String,
    /// `native` or `onnx`.
    pub backend: String,
    /// Input height and width.
    pub input: (usize, usize),
    /// The decision threshold on the score.
    pub threshold: f32,
    /// Embedding length, if the model embeds images.
    pub embedding_dim: Option<usize>,
    /// The configuration, as stored.
    pub config: serde_json::Value,
    /// For imported graphs: inputs, outputs, ops and memory.
    pub graph: Option<crate::onnx::GraphSummary>,
    /// For native models: training provenance, if recorded.
    pub provenance: Option<serde_json::Value>,
}

/// Loads `bytes` and describes the model.
pub fn inspect(bytes: &[u8]) -> Result<ModelInfo> {
    let meta = metadata(bytes)?;
    let model = load(bytes, &Device::Cpu)?;
    let config = meta
        .get("config")
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(ModelInfo {
        format: meta.get("format").cloned().unwrap_or_default(),
        sha256: hex::encode(Sha256::digest(bytes)),
        backend: model.backend().into(),
        input: model.input_size(),
        threshold: model.threshold(),
        embedding_dim: model.embedding_dim(),
        config,
        graph: model.as_onnx().map(|m| m.summary().clone()),
        provenance: model
            .as_native()
            .and_then(|m| m.provenance())
            .and_then(|p| serde_json::to_value(p).ok()),
    })
}
