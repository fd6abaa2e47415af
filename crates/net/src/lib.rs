//! TLS and HTTP between twinseal parts, with no state and no keys: what
//! the coordinator and the worker (the binary a TEE measures) share.
//!
//! - [`tls`]: the rustls provider (aws-lc-rs), handshake-signature checks,
//!   the certificate marks, and [`tls::PeerVerifier`], the one certificate
//!   verifier of servers and clients.
//! - [`serve`]: the accept loop (connection caps, timeouts, graceful
//!   shutdown) that hands each request its peer certificate and address.
//! - [`json`]: the [`json::ApiJson`] extractor and the JSON error body.
//! - [`wipe`]: body buffers carrying key material, wiped after use.
//! - [`guard`]: the keyed rate limiter and the CPU pool with cancellation.
//! - [`client`]: the coordinator client: pinned root and key, mutual TLS,
//!   the attestation handshake, the coordinator's own evidence.
//! - [`receipt`]: the signed-receipt format and its check.
//! - [`worker_client`]: the worker client: certificate checked as a
//!   worker's, bearer token, every receipt checked and bound to the
//!   exchange.
//! - [`error`]: the client-side error type.

pub mod client;
pub mod cose_receipt;
pub mod error;
pub mod guard;
pub mod json;
pub mod receipt;
pub mod serve;
pub mod tls;
pub mod wipe;
pub mod worker_client;

pub use error::{Error, Result};
