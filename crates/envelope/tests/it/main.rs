//! The integration tests of this crate, in one test binary (one link
//! instead of one per file).

mod common;

mod dir;
mod key_manager;
mod memory;
mod rejection;
mod roundtrip;
mod vectors;
