//! Typed audit events, an append-only Merkle log (RFC 6962 hashing) with
//! signed checkpoints (C2SP checkpoint format, Ed25519), export bundles and
//! the offline verifier.
