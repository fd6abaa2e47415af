//! The twinseal coordinator: key manager (key lifecycle, master-key
//! wrapping, durable store, attested release, tokenization), certificate
//! authority for attested apps, manifest, and audit.

pub mod master;
