//! The integration tests of this crate, in one test binary (one link
//! instead of one per file).

mod common;

mod attest_release;
mod authz;
mod keys;
mod master_file;
mod master_pkcs11;
mod replicas;
mod tls;
mod workflows;
