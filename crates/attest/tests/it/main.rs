//! The integration tests of this crate, in one test binary (one link
//! instead of one per file).

mod common;

mod binding;
mod certificate;
mod collect;
mod fast_path;
mod real_samples;
mod tamper;
