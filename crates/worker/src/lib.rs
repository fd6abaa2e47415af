//! The attested twinseal worker: the app that serves Siamese verification
//! inside a TEE.
//!
//! [`Worker::start`] makes a TLS key in memory, attests with the
//! coordinator (evidence bound to the coordinator's challenge and that
//! key) and gets a certificate; over mutual TLS with it, it obtains the
//! model key, opens the sealed model in memory only (the plaintext
//! weights never touch disk) and loads it.
//!
//! - [`http::app`]: `app(state) -> Router` with `POST /v1/compare`,
//!   `POST /v1/compare/batch`, `POST /v1/embed`, `POST /v1/enroll`, `POST /v1/verify`, `GET /v1/info`,
//!   `GET /v1/openapi.json`.
//! - [`gallery`]: enrolled identities' embeddings, sealed at rest under a
//!   coordinator key.
//! - [`Worker::serve`] attests again before the certificate expires and
//!   stops serving if it cannot.
//! - [`tls`]: HTTPS with the worker's certificate ([`serve`]); clients
//!   check a worker's certificate with
//!   [`twinseal_net::tls::PeerVerifier::worker`].
//! - [`jobs`]: workflow jobs: a sealed dataset of pairs read from the
//!   object store, scored, and written back sealed, with a receipt.
//! - [`receipt`]: every answer carries a receipt signed with the
//!   certificate's key; [`verify_receipt`] checks one with the certificate.

#[cfg(feature = "bin")]
pub mod cli;
pub mod clients;
pub mod error;
pub mod gallery;
pub mod http;
pub mod jobs;
pub mod receipt;
pub mod tls;
pub mod training;
mod worker;

pub use error::{Error, Result};
pub use http::app;
pub use receipt::{ReceiptSigner, verify_receipt};
pub use tls::serve;
pub use worker::{
    AppState, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_IMAGES,
    DEFAULT_MAX_PAIRS, DEFAULT_REQUEST_TIMEOUT_SECS, EvidenceSource, GalleryLocation,
    GalleryOptions, Limits, Worker, WorkerOptions, WorkerState,
};
