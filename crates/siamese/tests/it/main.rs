//! The integration tests of this crate, in one test binary (one link
//! instead of one per file).

mod data;
mod layers;
mod model_file;
mod onnx;
mod training;
