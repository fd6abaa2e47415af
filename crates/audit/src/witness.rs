//! Witnesses: C2SP `tlog-cosignature` (Ed25519, `cosignature/v1`) and the
//! `add-checkpoint` call of C2SP `tlog-witness`, with the witness's state
//! in a database (the latest checkpoint it cosigned per log). Specification:
//! `docs/spec/witness.md`.
//!
//! A witness cosigns a checkpoint only if the log's own signature verifies
//! and a consistency proof from the last checkpoint it cosigned for that
//! log verifies, so two witnesses that cosigned checkpoints of one log have
//! seen one history: a log that forks (two different trees) or rolls back
//! gets no cosignature from a witness that saw the other branch.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use twinseal_sql::{Db, Dialect, params};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::merkle::{Hash, empty_root, sha256, verify_consistency};
use crate::note::{SIG_PREFIX, VerifierKey, parse_body, parse_note, valid_name, verify_checkpoint};

/// The signature type byte of Ed25519 cosignatures in key IDs and vkeys.
const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The most consistency proof lines an `add-checkpoint` body may carry.
pub const MAX_PROOF_LINES: usize = 63;

/// The largest `add-checkpoint` body [`parse_add_checkpoint`] reads, bytes.
pub const MAX_ADD_CHECKPOINT_LEN: usize = 64 * 1024 + 64 * 46;

fn cosigner_key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut buf = Vec::with_capacity(name.len() + 34);
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.push(ALG_COSIGNATURE_V1);
    buf.extend_from_slice(public_key);
    let d = sha256(&buf);
    [d[0], d[1], d[2], d[3]]
}

/// The message a `cosignature/v1` signs: the header line, the time line,
/// then the checkpoint's note text (signature lines excluded).
fn cosigned_message(timestamp: u64, text: &str) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// A witness's public key as clients and logs configure it: its name and
/// Ed25519 key. Text form (`Display`/`FromStr`): the C2SP vkey
/// `<name>+<8 hex key ID>+<base64(0x04 || public key)>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CosignerKey {
    name: String,
    public_key: [u8; 32],
    id: [u8; 4],
}

impl CosignerKey {
    /// A cosigner key from a name and a raw 32-byte Ed25519 public key.
    pub fn new(name: &str, public_key: &[u8]) -> Result<Self> {
        if !valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| Error::InvalidVerifierKey("an Ed25519 public key has 32 bytes"))?;
        Ok(CosignerKey {
            id: cosigner_key_id(name, &public_key),
            name: name.to_string(),
            public_key,
        })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cosignature of this key on `note`, if the note carries one that
    /// verifies: its timestamp (seconds since 1970). Other lines are ignored.
    pub fn verify(&self, note: &str) -> Option<u64> {
        let parsed = parse_note(note).ok()?;
        parsed.sigs.iter().find_map(|(name, id, sig)| {
            if *name != self.name || *id != self.id || sig.len() != 8 + 64 {
                return None;
            }
            let ts = u64::from_be_bytes(sig[..8].try_into().ok()?);
            if ts > i64::MAX as u64 {
                return None;
            }
            let msg = cosigned_message(ts, parsed.text);
            UnparsedPublicKey::new(&ED25519, &self.public_key)
                .verify(&msg, &sig[8..])
                .ok()
                .map(|_| ts)
        })
    }
}

impl fmt::Display for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = [0u8; 33];
        key[0] = ALG_COSIGNATURE_V1;
        key[1..].copy_from_slice(&self.public_key);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(key)
        )
    }
}

impl FromStr for CosignerKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = Error::InvalidVerifierKey;
        let (name, rest) = s.split_once('+').ok_or(bad("expected <name>+<id>+<key>"))?;
        let (id, key) = rest
            .split_once('+')
            .ok_or(bad("expected <name>+<id>+<key>"))?;
        let mut want = [0u8; 4];
        if id.len() != 8 || hex::decode_to_slice(id, &mut want).is_err() {
            return Err(bad("the key ID must be 8 hex digits"));
        }
        let key = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let Some((&alg, public_key)) = key.split_first() else {
            return Err(bad("empty key"));
        };
        if alg != ALG_COSIGNATURE_V1 {
            return Err(bad(
                "not a cosigner key (C2SP cosignature/v1 keys have type 0x04)",
            ));
        }
        let k = CosignerKey::new(name, public_key)
            .map_err(|_| bad("invalid name or an Ed25519 key that is not 32 bytes"))?;
        if k.id != want {
            return Err(bad("the key ID does not match the name and key"));
        }
        Ok(k)
    }
}

/// A witness's signing key. `Debug` shows the public key only.
pub struct Cosigner {
    key: Ed25519KeyPair,
    public: CosignerKey,
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cosigner")
            .field("key", &self.public.to_string())
            .finish()
    }
}

impl Cosigner {
    /// A new key named `name`; returns it and its PKCS#8 document (secret).
    pub fn generate(name: &str) -> Result<(Self, Zeroizing<Vec<u8>>)> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| Error::Crypto)?;
        let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
        Ok((Self::from_pkcs8(name, &pkcs8)?, pkcs8))
    }

    /// The key from its PKCS#8 document.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| Error::InvalidSigningKey)?;
        let public = CosignerKey::new(name, key.public_key().as_ref())?;
        Ok(Cosigner { key, public })
    }

    /// The public key, as logs and clients configure it.
    pub fn public_key(&self) -> &CosignerKey {
        &self.public
    }

    /// The cosignature line (ending in a newline) on a checkpoint's note
    /// text (its lines up to the blank line, each ending in a newline).
    pub fn cosign(&self, text: &str, timestamp: u64) -> String {
        let sig = self.key.sign(&cosigned_message(timestamp, text));
        let mut blob = Vec::with_capacity(4 + 8 + 64);
        blob.extend_from_slice(&self.public.id);
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(sig.as_ref());
        format!("{SIG_PREFIX}{} {}\n", self.public.name, B64.encode(blob))
    }
}

/// How many of `keys` have a valid cosignature on `note`, each counted
/// once, with the oldest of their timestamps.
pub fn count_cosignatures(note: &str, keys: &[CosignerKey]) -> (usize, Option<u64>) {
    let mut seen = std::collections::HashSet::new();
    let mut oldest: Option<u64> = None;
    for k in keys {
        if !seen.insert(k) {
            continue;
        }
        if let Some(ts) = k.verify(note) {
            oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
        } else {
            seen.remove(k);
        }
    }
    (seen.len(), oldest)
}

/// An `add-checkpoint` request: the size of the checkpoint the witness
/// last cosigned (as the log believes), the consistency proof from it, and
/// the new checkpoint (a signed note).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The old size.
    pub old: u64,
    /// The RFC 6962 consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The checkpoint, a signed note.
    pub checkpoint: String,
}

impl AddCheckpoint {
    /// The request body: `old <size>`, one base64 hash per line, a blank
    /// line, the checkpoint.
    pub fn to_body(&self) -> String {
        let mut out = format!("old {}\n", self.old);
        for h in &self.proof {
            out.push_str(&B64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }
}

/// Parse an `add-checkpoint` body (untrusted bytes).
pub fn parse_add_checkpoint(body: &[u8]) -> Result<AddCheckpoint> {
    let bad = |m: &str| Error::InvalidWitnessRequest(m.to_string());
    if body.len() > MAX_ADD_CHECKPOINT_LEN {
        return Err(bad("the body is too long"));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    let (head, checkpoint) = text
        .split_once("\n\n")
        .ok_or_else(|| bad("no blank line before the checkpoint"))?;
    let mut lines = head.split('\n');
    let old = lines
        .next()
        .and_then(|l| l.strip_prefix("old "))
        .ok_or_else(|| bad("the first line must be `old <size>`"))?;
    if old.is_empty()
        || !old.bytes().all(|b| b.is_ascii_digit())
        || (old.len() > 1 && old.starts_with('0'))
    {
        return Err(bad(
            "the old size must be a decimal number without leading zeros",
        ));
    }
    let old: u64 = old
        .parse()
        .map_err(|_| bad("the old size is out of range"))?;
    let mut proof = Vec::new();
    for l in lines {
        if proof.len() == MAX_PROOF_LINES {
            return Err(bad("more than 63 proof lines"));
        }
        let h: Hash = B64
            .decode(l)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| bad("a proof line must be base64 of 32 bytes"))?;
        proof.push(h);
    }
    Ok(AddCheckpoint {
        old,
        proof,
        checkpoint: checkpoint.to_string(),
    })
}

/// Why a witness refused a checkpoint, with the HTTP status C2SP
/// tlog-witness gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: malformed request, or an old size above the checkpoint's.
    BadRequest(String),
    /// 403: no signature by a key the witness trusts for the origin.
    Forbidden(String),
    /// 404: the witness does not know this log.
    UnknownLog(String),
    /// 409: the old size is not the size the witness last cosigned (which
    /// it returns), or the same size with another root: a split view.
    Conflict {
        /// The size of the latest checkpoint the witness cosigned.
        size: u64,
        /// What happened.
        detail: String,
        /// Same size, different root: two views of one log.
        split_view: bool,
    },
    /// 422: the consistency proof does not verify: a fork or a rollback.
    Inconsistent(String),
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Forbidden(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::Inconsistent(_) => 422,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadRequest(m)
            | Refusal::Forbidden(m)
            | Refusal::UnknownLog(m)
            | Refusal::Inconsistent(m) => f.write_str(m),
            Refusal::Conflict { detail, .. } => f.write_str(detail),
        }
    }
}

/// The witness: its key, the logs it follows, its state in a database.
#[derive(Debug)]
pub struct Witness {
    cosigner: Cosigner,
    logs: Vec<VerifierKey>,
}

const WITNESS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS witness_logs (
    origin TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    root BYTEA NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS witness_refusals (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    time TEXT NOT NULL,
    status INTEGER NOT NULL,
    detail TEXT NOT NULL,
    request TEXT NOT NULL
);
";

/// Log-signed requests a witness keeps as evidence of misbehaviour, at most.
pub const MAX_KEPT_REFUSALS: i64 = 1000;

impl Witness {
    /// A witness cosigning checkpoints of `logs` with `cosigner`.
    pub fn new(cosigner: Cosigner, logs: Vec<VerifierKey>) -> Self {
        Witness { cosigner, logs }
    }

    /// Create the witness's tables (idempotent).
    pub fn init(db: &dyn Db) -> Result<()> {
        let schema = match db.dialect() {
            Dialect::Sqlite => WITNESS_SCHEMA
                .replace("BIGINT", "INTEGER")
                .replace("BYTEA", "BLOB"),
            Dialect::Postgres => {
                WITNESS_SCHEMA.replace("id INTEGER PRIMARY KEY", "id BIGSERIAL PRIMARY KEY")
            }
        };
        db.batch(&schema)?;
        Ok(())
    }

    /// The witness's public key.
    pub fn public_key(&self) -> &CosignerKey {
        self.cosigner.public_key()
    }

    /// The latest checkpoint cosigned for `origin`: size and note.
    pub fn latest(db: &dyn Db, origin: &str) -> Result<Option<(u64, String)>> {
        db.query_opt(
            "SELECT size, note FROM witness_logs WHERE origin = $1",
            params![origin],
        )?
        .map(|r| Ok((u64::try_from(r.int(0)?).unwrap_or(0), r.text(1)?)))
        .transpose()
    }

    /// The `add-checkpoint` call: check the request against the log's key
    /// and the state, and on success record the new checkpoint and return
    /// the cosignature line. `db` must be a connection the caller holds
    /// exclusively for the call (the check and the update are one
    /// transaction, so two requests never roll the state back).
    /// Refusals that prove misbehaviour (a split view, a failing proof)
    /// are kept with the request, at most [`MAX_KEPT_REFUSALS`].
    pub fn add_checkpoint(
        &self,
        db: &dyn Db,
        body: &[u8],
        now: SystemTime,
    ) -> Result<std::result::Result<String, Refusal>> {
        let req = match parse_add_checkpoint(body) {
            Ok(r) => r,
            Err(e) => return Ok(Err(Refusal::BadRequest(e.to_string()))),
        };
        let text_end = match parse_note(&req.checkpoint) {
            Ok(p) => p.text.len(),
            Err(e) => return Ok(Err(Refusal::Forbidden(format!("the checkpoint: {e}")))),
        };
        let text = &req.checkpoint[..text_end];
        let origin = match parse_body(text) {
            Ok((origin, _, _)) => origin,
            Err(e) => return Ok(Err(Refusal::Forbidden(e.to_string()))),
        };
        let Some(key) = self.logs.iter().find(|k| k.name() == origin) else {
            return Ok(Err(Refusal::UnknownLog(format!("unknown log {origin:?}"))));
        };
        let cp = match verify_checkpoint(&req.checkpoint, key) {
            Ok(cp) => cp,
            Err(e) => return Ok(Err(Refusal::Forbidden(e.to_string()))),
        };
        if req.old > cp.size {
            return Ok(Err(Refusal::BadRequest(format!(
                "old size {} is above the checkpoint's {}",
                req.old, cp.size
            ))));
        }
        db.begin()?;
        let outcome = self.check_and_record(db, &req, &cp, text, now);
        match &outcome {
            Ok(Ok(_)) => db.commit()?,
            _ => {
                let _ = db.rollback();
            }
        }
        let outcome = outcome?;
        if let Err(r) = &outcome
            && matches!(
                r,
                Refusal::Inconsistent(_)
                    | Refusal::Conflict {
                        split_view: true,
                        ..
                    }
            )
        {
            self.keep_refusal(db, &origin, r, &req, now)?;
        }
        Ok(outcome)
    }

    fn check_and_record(
        &self,
        db: &dyn Db,
        req: &AddCheckpoint,
        cp: &crate::note::Checkpoint,
        text: &str,
        now: SystemTime,
    ) -> Result<std::result::Result<String, Refusal>> {
        let row = db.query_opt(
            "SELECT size, root FROM witness_logs WHERE origin = $1",
            params![&cp.origin],
        )?;
        let (size, root): (u64, Hash) = match row {
            Some(r) => (
                u64::try_from(r.int(0)?).map_err(|_| Error::Corrupt("negative size".into()))?,
                r.blob(1)?
                    .try_into()
                    .map_err(|_| Error::Corrupt("a stored root is not 32 bytes".into()))?,
            ),
            None => (0, empty_root()),
        };
        if req.old != size {
            return Ok(Err(Refusal::Conflict {
                size,
                detail: format!(
                    "the latest checkpoint cosigned is of size {size}, not {}",
                    req.old
                ),
                split_view: false,
            }));
        }
        if req.old == cp.size {
            if cp.size > 0 && root != cp.root {
                return Ok(Err(Refusal::Conflict {
                    size,
                    detail: format!(
                        "SPLIT VIEW: a checkpoint of size {size} with another root than the one cosigned"
                    ),
                    split_view: true,
                }));
            }
        } else if req.old == 0 {
            if !req.proof.is_empty() {
                return Ok(Err(Refusal::BadRequest(
                    "the proof from size 0 must be empty".into(),
                )));
            }
        } else if !verify_consistency(req.old, cp.size, &root, &cp.root, &req.proof) {
            return Ok(Err(Refusal::Inconsistent(format!(
                "the checkpoint of size {} does not extend the one of size {} cosigned before (a fork or a rollback)",
                cp.size, req.old
            ))));
        }
        if cp.size == 0 && cp.root != empty_root() {
            return Ok(Err(Refusal::Inconsistent(
                "an empty tree with a non-empty root".into(),
            )));
        }
        let ts = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::InvalidTime)?
            .as_secs();
        let line = self.cosigner.cosign(text, ts);
        let note = format!("{}{line}", req.checkpoint);
        let size_i = i64::try_from(cp.size).map_err(|_| Error::InvalidRange("size".into()))?;
        db.execute(
            "INSERT INTO witness_logs (origin, size, root, note) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (origin) DO UPDATE SET size = $2, root = $3, note = $4",
            params![&cp.origin, size_i, &cp.root, &note],
        )?;
        Ok(Ok(line))
    }

    fn keep_refusal(
        &self,
        db: &dyn Db,
        origin: &str,
        refusal: &Refusal,
        req: &AddCheckpoint,
        now: SystemTime,
    ) -> Result<()> {
        let kept = db
            .query_opt("SELECT COUNT(*) FROM witness_refusals", params![])?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0);
        if kept >= MAX_KEPT_REFUSALS {
            return Ok(());
        }
        let time = crate::event::format_time(now)?;
        db.execute(
            "INSERT INTO witness_refusals (origin, time, status, detail, request) \
             VALUES ($1, $2, $3, $4, $5)",
            params![
                origin,
                &time,
                i64::from(refusal.status()),
                &refusal.to_string(),
                &req.to_body()
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{Tree, leaf_hash};
    use crate::note::CheckpointSigner;

    fn leaves(n: u32, salt: u8) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&[salt, i as u8, (i >> 8) as u8]))
            .collect()
    }

    #[test]
    fn cosigner_keys_round_trip_and_cosignatures_verify() {
        let (w, _) = Cosigner::generate("witness.example/w1").unwrap();
        let k: CosignerKey = w.public_key().to_string().parse().unwrap();
        assert_eq!(&k, w.public_key());
        let text = "log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let note = format!("{text}\n{}", w.cosign(text, 1_700_000_000));
        assert_eq!(k.verify(&note), Some(1_700_000_000));
        assert_eq!(
            count_cosignatures(&note, &[k.clone(), k.clone()]),
            (1, Some(1_700_000_000))
        );
        // Another text, another key, a log key type: refused.
        assert_eq!(k.verify(&note.replacen('3', "4", 1)), None);
        let (other, _) = Cosigner::generate("witness.example/w1").unwrap();
        assert_eq!(other.public_key().verify(&note), None);
        let (log, _) = CheckpointSigner::generate("log").unwrap();
        assert!(
            log.verifier_key()
                .to_string()
                .parse::<CosignerKey>()
                .is_err()
        );
    }

    #[test]
    fn add_checkpoint_bodies_parse_strictly() {
        let req = AddCheckpoint {
            old: 20,
            proof: vec![[1; 32], [2; 32]],
            checkpoint: "log\n21\nAAAA\n\n\u{2014} log AAAA\n".into(),
        };
        assert_eq!(parse_add_checkpoint(req.to_body().as_bytes()).unwrap(), req);
        for bad in [
            "",
            "old 1\n",
            "old 01\n\nx",
            "old -1\n\nx",
            "old 1\nnot base64\n\nx",
            "old 1\nAQ==\n\nx",
            "olde 1\n\nx",
            "old 18446744073709551616\n\nx",
        ] {
            assert!(parse_add_checkpoint(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let many = format!(
            "old 1\n{}\nx",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n".repeat(64)
        );
        assert!(parse_add_checkpoint(many.as_bytes()).is_err());
    }

    #[test]
    fn a_witness_follows_one_history_and_refuses_forks_rollbacks_and_split_views() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        Witness::init(&db).unwrap();
        let (log, _) = CheckpointSigner::generate("twinseal.coordinator/t").unwrap();
        let (w, _) = Cosigner::generate("w1").unwrap();
        let wk = w.public_key().clone();
        let witness = Witness::new(w, vec![log.verifier_key()]);
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let main = Tree::new(leaves(40, 0));
        let add = |old: u64, new: u64, tree: &Tree| {
            let cp = log.sign_checkpoint(new, &tree.root(new));
            let req = AddCheckpoint {
                old,
                proof: if old == 0 {
                    vec![]
                } else {
                    tree.consistency_proof(old, new).unwrap_or_default()
                },
                checkpoint: cp.note.clone(),
            };
            witness
                .add_checkpoint(&db, req.to_body().as_bytes(), now)
                .unwrap()
                .map(|line| format!("{}{line}", cp.note))
        };
        let note = add(0, 10, &main).unwrap();
        assert_eq!(wk.verify(&note), Some(1_800_000_000));
        assert!(add(10, 30, &main).is_ok());
        // Stale old size: 409 with the size.
        assert!(matches!(
            add(10, 40, &main),
            Err(Refusal::Conflict {
                size: 30,
                split_view: false,
                ..
            })
        ));
        // A fork: another history of 40 entries, its proof from 30 fails.
        let mut forked = leaves(40, 0);
        forked[35] = [9; 32];
        forked[5] = [9; 32];
        let fork = Tree::new(forked);
        assert!(matches!(add(30, 40, &fork), Err(Refusal::Inconsistent(_))));
        // A split view: size 30 again with another root.
        let r = add(30, 30, &fork).unwrap_err();
        assert!(
            matches!(
                r,
                Refusal::Conflict {
                    split_view: true,
                    ..
                }
            ),
            "{r}"
        );
        // A rollback: size 20 from old 30 is a bad request (old above new).
        assert!(matches!(add(30, 20, &main), Err(Refusal::BadRequest(_))));
        // Both misbehaviours are kept with the log-signed request.
        let kept = db
            .query("SELECT status FROM witness_refusals ORDER BY id", params![])
            .unwrap();
        assert_eq!(
            kept.iter().map(|r| r.int(0).unwrap()).collect::<Vec<_>>(),
            [422, 409]
        );
        // The genuine history goes on.
        assert!(add(30, 40, &main).is_ok());
        assert_eq!(
            Witness::latest(&db, "twinseal.coordinator/t")
                .unwrap()
                .unwrap()
                .0,
            40
        );
        // Unknown log, bad signature.
        let (stranger, _) = CheckpointSigner::generate("other/log").unwrap();
        let body = AddCheckpoint {
            old: 0,
            proof: vec![],
            checkpoint: stranger.sign_checkpoint(1, &[0; 32]).note,
        };
        assert!(matches!(
            witness
                .add_checkpoint(&db, body.to_body().as_bytes(), now)
                .unwrap(),
            Err(Refusal::UnknownLog(_))
        ));
        let (impostor, _) = CheckpointSigner::generate("twinseal.coordinator/t").unwrap();
        let body = AddCheckpoint {
            old: 40,
            proof: vec![],
            checkpoint: impostor.sign_checkpoint(40, &main.root(40)).note,
        };
        assert!(matches!(
            witness
                .add_checkpoint(&db, body.to_body().as_bytes(), now)
                .unwrap(),
            Err(Refusal::Forbidden(_))
        ));
    }
}
