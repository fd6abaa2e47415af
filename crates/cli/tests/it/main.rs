//! The integration tests of this crate, in one test binary (one link
//! instead of one per file).

mod attest_cli;
mod cli;
mod coordinator_cli;
mod coordinator_crash;
mod coordinator_replicas;
mod deploy;
mod onnx_cli;
mod seal;
mod training_cli;
mod transparency;
mod worker_cli;
mod worker_serve_cli;
