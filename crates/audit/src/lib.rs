//! Typed audit events, an append-only Merkle log (RFC 6962 hashing) with
//! signed checkpoints (C2SP checkpoint format, Ed25519), export bundles and
//! the offline verifier. Specification: `docs/spec/audit-log.md`.
//!
//! - [`Event`]: what the coordinator records (attestations, certificates,
//!   key lifecycle and releases, data keys, manifests, credentials,
//!   tokenization). Identifiers and reasons only, never key material.
//! - [`AuditLog`]: the log in the coordinator's database (SQLite or
//!   PostgreSQL, through `twinseal_sql::Db`). Every write takes the
//!   caller's open transaction, so an entry commits or rolls back with the
//!   state change it records. An append costs O(log n):
//!   the tree is kept as its frontier (the roots of its perfect subtrees).
//! - [`Entry`]: index, time (RFC 3339 UTC), `prev` (the leaf hash of the
//!   entry before, a hash chain that lets the verifier name the entry that
//!   changed) and the event. Leaf data is the entry's canonical JSON
//!   ([`Entry::canonical_bytes`]); leaf hash `SHA-256(0x00 || data)`, node
//!   hash `SHA-256(0x01 || left || right)`.
//! - [`CheckpointSigner`], [`Checkpoint`], [`VerifierKey`],
//!   [`verify_checkpoint`]: checkpoints `<origin>\n<size>\n<base64 root>\n`
//!   in C2SP signed notes, and verifier keys in the note `vkey` form
//!   (`<name>+<hash>+<base64 key>`).
//! - [`Bundle`], [`verify_bundle`], [`verify_bundle_with`], [`Report`]: the
//!   export and its verification, naming the kind and index of every
//!   problem. Entries that no signed checkpoint covers are a problem unless
//!   [`VerifyOptions::allow_unsigned_tail`] says otherwise. Entries cut from
//!   the end of a log along with the checkpoints that cover them are only
//!   detectable against a checkpoint obtained out of band, which
//!   [`verify_bundle_with`] accepts ([`VerifyOptions::trusted`]).
//! - [`verify_inclusion`], [`verify_consistency`]: RFC 9162 proof checks.
//!
//! ```
//! use std::time::SystemTime;
//! use twinseal_audit::{AuditLog, Bundle, CheckpointSigner, Event, verify_bundle};
//!
//! let mut conn = rusqlite::Connection::open_in_memory()?;
//! AuditLog::init(&conn)?;
//! let (signer, _pkcs8) = CheckpointSigner::generate("twinseal.coordinator/example")?;
//!
//! let tx = conn.transaction()?;
//! // ... the state change itself goes here, in the same transaction ...
//! let event = Event::KeyDisabled { actor: "admin".into(), key: "k1".into() };
//! AuditLog::append(&tx, SystemTime::now(), &event)?;
//! AuditLog::checkpoint(&tx, &signer, SystemTime::now())?;
//! tx.commit()?;
//!
//! let bundle = Bundle::from_json(&AuditLog::export(&conn)?.to_json())?;
//! let report = verify_bundle(&bundle, &signer.verifier_key());
//! assert!(report.is_ok(), "{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bundle;
mod error;
mod event;
mod log;
mod merkle;
mod note;
mod release;
mod tiles;
mod verify;
mod witness;

pub use bundle::{BUNDLE_VERSION, Bundle, MAX_BUNDLE_LEN};
pub use error::{Error, Result};
pub use event::{Entry, Event};
pub use log::{AuditLog, MAX_ENTRY_LEN, MAX_EVIDENCE_LEN, TileCache};
pub use merkle::{
    Hash, MemoryTree, empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion,
};
pub use note::{Checkpoint, CheckpointSigner, MAX_NOTE_LEN, VerifierKey, verify_checkpoint};
pub use release::{
    Approval, ApprovalProof, Attested, ReleasePolicy, approval_proof, check_approval,
};
pub use tiles::{
    DirSource, MAX_TILE_LEN, MAX_TILE_LEVEL, MAX_TILE_PATH_LEN, TILE_WIDTH, Tile, TileKind,
    TileSource, decode_entry_bundle, decode_hash_tile, encode_entry_bundle, encode_hash_tile,
    mirror, tile_from_children, tile_from_leaves, tiles_for_size, verify_tiles,
};
pub use verify::{Problem, ProblemKind, Report, VerifyOptions, verify_bundle, verify_bundle_with};
pub use witness::{
    AddCheckpoint, Cosigner, CosignerKey, MAX_ADD_CHECKPOINT_LEN, MAX_KEPT_REFUSALS,
    MAX_PROOF_LINES, Refusal, Witness, count_cosignatures, parse_add_checkpoint,
};
