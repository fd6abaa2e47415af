//! The twinseal coordinator: key manager (key lifecycle, master-key
//! wrapping, durable store, attested release, tokenization), certificate
//! authority for attested apps, manifest, and audit.
//!
//! - [`service::Coordinator`]: the state and every operation, independent
//!   of HTTP; [`service::init`] creates the state.
//! - [`http::app`]: `app(state) -> Router`, the whole `/v1` surface.
//! - [`tls`]: rustls (aws-lc-rs) with optional mutual TLS for apps, the
//!   accept loop and graceful shutdown.
//! - [`store`]: SQLite with one group-committing writer; every state change
//!   commits together with its audit entry, before it is answered.
//! - [`master`]: the master key (key file or PKCS#11 token) that wraps
//!   every stored key.
//! - [`ca`]: the root CA and app certificates carrying evidence.
//! - [`manifest`]: users, apps, keys' placement, datasets, workflows.
//! - [`client`]: the HTTPS client for the API (the transport's,
//!   [`twinseal_net::client`], re-exported).

pub mod ca;
pub mod challenge;
pub mod config;
pub mod error;
pub mod guard;
pub mod http;
pub mod manifest;
pub mod master;
pub mod metrics;
pub mod service;
pub mod store;
pub mod tls;
pub mod tokenize;
pub mod transparency;
pub mod workflow;

pub use twinseal_net::client;

pub use config::Config;
pub use error::{Error, Result};
pub use http::app;
pub use service::{Caller, Coordinator, init};
