//! Release transparency, the client's side: before sending data to a
//! worker, check that the log approves what the worker attested (its app,
//! TEE kind and measurement) in an entry included under a checkpoint that
//! the log signed and enough witnesses cosigned recently. A measurement the
//! coordinator never logged fails here even if the coordinator issued the
//! worker a certificate. Specification: `docs/spec/release-transparency.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Entry, Event};
use crate::merkle::{Hash, leaf_hash, verify_inclusion};
use crate::note::{VerifierKey, verify_checkpoint};
use crate::witness::{CosignerKey, count_cosignatures};

/// The proof a worker serves of the log entry that approved it: the entry
/// (its leaf data), its index, the inclusion proof and the checkpoint it
/// is included under (with the witnesses' cosignatures).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalProof {
    /// The entry's index in the log.
    pub index: u64,
    /// The entry's leaf data (canonical JSON), base64.
    pub entry: String,
    /// The inclusion proof, leaf to root, each hash base64.
    pub proof: Vec<String>,
    /// The checkpoint: the log's signed note with cosignature lines.
    pub checkpoint: String,
}

/// What a client requires.
#[derive(Clone, Debug)]
pub struct ReleasePolicy {
    /// The log's checkpoint key.
    pub log_key: VerifierKey,
    /// The witnesses whose cosignatures count.
    pub witnesses: Vec<CosignerKey>,
    /// How many of them must have cosigned (0: none needed, INSECURE
    /// against a coordinator that shows clients a view of its own).
    pub quorum: usize,
    /// The oldest acceptable cosignature (default 24 h).
    pub max_age: Duration,
}

/// What the worker attested, read from its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attested {
    /// The app name.
    pub app: String,
    /// The TEE kind (`sgx`, `tdx`, `sev-snp`, `simulated`).
    pub tee: String,
    /// The primary measurement, hex.
    pub measurement: String,
    /// The log index the certificate names, if it names one.
    pub log_index: Option<u64>,
}

/// An approval that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// The manifest version that approved the measurement.
    pub manifest_version: u64,
    /// The entry's index.
    pub index: u64,
    /// The size of the checkpoint it is included under.
    pub checkpoint_size: u64,
    /// Valid cosignatures counted.
    pub cosignatures: usize,
}

fn refuse(why: String) -> Error {
    Error::NotApproved(why)
}

/// Check `proof` against `policy` for a worker that attested `attested`,
/// at time `now`. Every failure names what is wrong.
pub fn check_approval(
    proof: &ApprovalProof,
    attested: &Attested,
    policy: &ReleasePolicy,
    now: SystemTime,
) -> Result<Approval> {
    let cp = verify_checkpoint(&proof.checkpoint, &policy.log_key).map_err(|e| {
        refuse(format!(
            "the checkpoint does not verify with the log's key: {e}"
        ))
    })?;
    let (cosignatures, oldest) = count_cosignatures(&proof.checkpoint, &policy.witnesses);
    if cosignatures < policy.quorum {
        return Err(refuse(format!(
            "the checkpoint carries valid cosignatures of {cosignatures} of the configured witnesses, {} needed",
            policy.quorum
        )));
    }
    if policy.quorum > 0 {
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let oldest = oldest.unwrap_or(0);
        let age = now_s.saturating_sub(oldest);
        if age > policy.max_age.as_secs() {
            return Err(refuse(format!(
                "the checkpoint's cosignatures are {:.1} h old, more than the {:.1} h allowed",
                age as f64 / 3600.0,
                policy.max_age.as_secs_f64() / 3600.0
            )));
        }
    }
    if let Some(i) = attested.log_index
        && i != proof.index
    {
        return Err(refuse(format!(
            "the certificate names log entry {i}, the proof entry {}",
            proof.index
        )));
    }
    let data = B64
        .decode(&proof.entry)
        .map_err(|_| refuse("the entry is not base64".into()))?;
    let hashes = proof
        .proof
        .iter()
        .map(|h| {
            B64.decode(h)
                .ok()
                .and_then(|h| Hash::try_from(h.as_slice()).ok())
                .ok_or_else(|| refuse("a proof hash is not base64 of 32 bytes".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    if !verify_inclusion(&leaf_hash(&data), proof.index, cp.size, &hashes, &cp.root) {
        return Err(refuse(format!(
            "entry {} is not included in the log's checkpoint of {} entries",
            proof.index, cp.size
        )));
    }
    let entry: Entry = serde_json::from_slice(&data)
        .map_err(|e| refuse(format!("the entry does not parse: {e}")))?;
    if entry.index != proof.index {
        return Err(refuse("the entry names another index".into()));
    }
    let Event::MeasurementsApproved {
        manifest_version,
        app,
        tee,
        measurements,
        ..
    } = entry.event
    else {
        return Err(refuse(format!(
            "log entry {} is a {}, not an approval of measurements",
            proof.index,
            entry.event.kind()
        )));
    };
    if app != attested.app {
        return Err(refuse(format!(
            "log entry {} approves app {app}, the worker attested as {}",
            proof.index, attested.app
        )));
    }
    if !tee.iter().any(|t| t == &attested.tee) {
        return Err(refuse(format!(
            "the log approves TEE kinds {tee:?} for {app}, the worker runs in {}",
            attested.tee
        )));
    }
    let m = attested.measurement.to_ascii_lowercase();
    if !measurements.iter().any(|x| x.to_ascii_lowercase() == m) {
        return Err(refuse(format!(
            "measurement {} of {app} was never logged as approved (manifest version {manifest_version} approves {} others)",
            attested.measurement,
            measurements.len()
        )));
    }
    Ok(Approval {
        manifest_version,
        index: proof.index,
        checkpoint_size: cp.size,
        cosignatures,
    })
}

/// The proof of entry `index` under the checkpoint `note` of `size`
/// entries, from the log's leaf data and inclusion proof.
pub fn approval_proof(index: u64, entry: &[u8], proof: &[Hash], note: &str) -> ApprovalProof {
    ApprovalProof {
        index,
        entry: B64.encode(entry),
        proof: proof.iter().map(|h| B64.encode(h)).collect(),
        checkpoint: note.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::AuditLog;
    use crate::note::CheckpointSigner;
    use crate::witness::Cosigner;

    struct Fixture {
        conn: rusqlite::Connection,
        signer: CheckpointSigner,
        w1: Cosigner,
        w2: Cosigner,
        approval: u64,
    }

    fn fixture() -> Fixture {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        AuditLog::init(&conn).unwrap();
        let (signer, _) = CheckpointSigner::generate("twinseal.coordinator/t").unwrap();
        let tx = conn.transaction().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        AuditLog::append(
            &tx,
            at,
            &Event::KeyDisabled {
                actor: "a".into(),
                key: "k".into(),
            },
        )
        .unwrap();
        let approval = AuditLog::append(
            &tx,
            at,
            &Event::MeasurementsApproved {
                manifest_version: 2,
                app: "worker".into(),
                tee: vec!["tdx".into()],
                measurements: vec!["AB".repeat(48)],
                signers: vec![],
            },
        )
        .unwrap();
        AuditLog::append(
            &tx,
            at,
            &Event::KeyDisabled {
                actor: "a".into(),
                key: "j".into(),
            },
        )
        .unwrap();
        AuditLog::checkpoint(&tx, &signer, at).unwrap();
        tx.commit().unwrap();
        let (w1, _) = Cosigner::generate("w1").unwrap();
        let (w2, _) = Cosigner::generate("w2").unwrap();
        Fixture {
            conn,
            signer,
            w1,
            w2,
            approval,
        }
    }

    fn proof_at(f: &Fixture, index: u64, cosigned_at: u64, by: &[&Cosigner]) -> ApprovalProof {
        let cp = AuditLog::latest_checkpoint(&f.conn).unwrap().unwrap();
        let text_end = cp.note.find("\n\n").unwrap() + 1;
        let mut note = cp.note.clone();
        for w in by {
            note.push_str(&w.cosign(&cp.note[..text_end], cosigned_at));
        }
        let entry = AuditLog::entries(&f.conn, index, 1).unwrap().remove(0);
        let path = AuditLog::inclusion_proof(&f.conn, index, cp.size).unwrap();
        approval_proof(index, &entry.canonical_bytes(), &path, &note)
    }

    fn policy(f: &Fixture, quorum: usize) -> ReleasePolicy {
        ReleasePolicy {
            log_key: f.signer.verifier_key(),
            witnesses: vec![f.w1.public_key().clone(), f.w2.public_key().clone()],
            quorum,
            max_age: Duration::from_secs(24 * 3600),
        }
    }

    fn worker(measurement: &str) -> Attested {
        Attested {
            app: "worker".into(),
            tee: "tdx".into(),
            measurement: measurement.into(),
            log_index: Some(1),
        }
    }

    const NOW: u64 = 1_800_000_100;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[test]
    fn a_logged_measurement_under_a_cosigned_checkpoint_passes() {
        let f = fixture();
        let p = proof_at(&f, f.approval, NOW - 60, &[&f.w1, &f.w2]);
        let ok = check_approval(&p, &worker(&"ab".repeat(48)), &policy(&f, 2), now()).unwrap();
        assert_eq!(
            (
                ok.manifest_version,
                ok.index,
                ok.checkpoint_size,
                ok.cosignatures
            ),
            (2, 1, 3, 2)
        );
    }

    #[test]
    fn unlogged_measurements_stale_or_unwitnessed_checkpoints_and_bad_proofs_are_refused() {
        let f = fixture();
        let good = proof_at(&f, f.approval, NOW - 60, &[&f.w1, &f.w2]);
        let refused = |p: &ApprovalProof, a: &Attested, q: usize| {
            check_approval(p, a, &policy(&f, q), now())
                .unwrap_err()
                .to_string()
        };
        let m = "ab".repeat(48);
        assert!(refused(&good, &worker(&"cd".repeat(48)), 2).contains("never logged"));
        let mut other_app = worker(&m);
        other_app.app = "other".into();
        assert!(refused(&good, &other_app, 2).contains("approves app worker"));
        let mut sgx = worker(&m);
        sgx.tee = "sgx".into();
        assert!(refused(&good, &sgx, 2).contains("TEE kinds"));
        let one = proof_at(&f, f.approval, NOW - 60, &[&f.w1]);
        assert!(refused(&one, &worker(&m), 2).contains("1 of the configured witnesses"));
        let old = proof_at(&f, f.approval, NOW - 25 * 3600, &[&f.w1, &f.w2]);
        assert!(refused(&old, &worker(&m), 2).contains("h old"));
        // Another entry (not an approval), or the certificate naming another.
        let wrong = proof_at(&f, 0, NOW - 60, &[&f.w1, &f.w2]);
        let mut a = worker(&m);
        a.log_index = Some(0);
        assert!(refused(&wrong, &a, 2).contains("not an approval"));
        assert!(refused(&wrong, &worker(&m), 2).contains("names log entry 1"));
        // An entry that is not in the log: the proof of another entry, or
        // an edited entry.
        let mut forged = good.clone();
        forged.entry = B64.encode(
            String::from_utf8(B64.decode(&good.entry).unwrap())
                .unwrap()
                .replace(&"AB".repeat(48), &"cd".repeat(48)),
        );
        assert!(refused(&forged, &worker(&"cd".repeat(48)), 2).contains("not included"));
        // A checkpoint the log did not sign.
        let (other, _) = CheckpointSigner::generate("twinseal.coordinator/t").unwrap();
        let mut unsigned = good.clone();
        unsigned.checkpoint = other.sign_checkpoint(3, &[0; 32]).note;
        assert!(refused(&unsigned, &worker(&m), 0).contains("does not verify"));
    }
}
