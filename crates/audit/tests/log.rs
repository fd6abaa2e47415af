//! The audit log through its public API: append in transactions, export,
//! verify, and tamper with the export in every way the verifier must name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rusqlite::Connection;
use twinseal_audit::{
    AuditLog, Bundle, CheckpointSigner, Entry, Error, Event, MAX_BUNDLE_LEN, ProblemKind, Report,
    VerifierKey, VerifyOptions, verify_bundle, verify_bundle_with, verify_checkpoint,
    verify_consistency, verify_inclusion,
};

const ORIGIN: &str = "twinseal.coordinator/test";
const BATCHES: u64 = 6;
const PER_BATCH: u64 = 10;
const TOTAL: u64 = BATCHES * PER_BATCH;

fn at(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000 + i)
}

/// Entry `i`'s event: every seventh an attestation with its evidence (so the
/// log holds evidence), the others key releases and tokenizations.
fn event(i: u64, evidence_digest: Option<String>) -> Event {
    match (i % 7, evidence_digest) {
        (0, Some(d)) => Event::AttestationVerified {
            app: format!("app{i}"),
            tee: "simulated".into(),
            measurement: format!("{i:064x}"),
            simulated: true,
            evidence_digest: d,
            location: Some("eu-west".into()),
        },
        (1..=3, _) => Event::KeyReleased {
            app: format!("app{i}"),
            serial: format!("{i:x}"),
            key: "model-key".into(),
            version: 1,
            location: None,
        },
        _ => Event::Tokenized {
            actor: "svc".into(),
            key: "tok".into(),
            count: i,
        },
    }
}

struct Log {
    conn: Connection,
    signer: CheckpointSigner,
    /// Index of every entry that names evidence, with the digest.
    evidence: Vec<(u64, String)>,
}

/// `BATCHES` transactions of `PER_BATCH` appends, each closed by a checkpoint.
fn build(conn: Connection) -> Log {
    AuditLog::init(&conn).unwrap();
    let (signer, _pkcs8) = CheckpointSigner::generate(ORIGIN).unwrap();
    let mut log = Log {
        conn,
        signer,
        evidence: vec![],
    };
    for b in 0..BATCHES {
        let tx = log.conn.transaction().unwrap();
        for i in b * PER_BATCH..(b + 1) * PER_BATCH {
            let digest = (i % 7 == 0)
                .then(|| AuditLog::append_evidence(&tx, format!("quote {i}").as_bytes()).unwrap());
            if let Some(d) = &digest {
                log.evidence.push((i, d.clone()));
            }
            assert_eq!(AuditLog::append(&tx, at(i), &event(i, digest)).unwrap(), i);
        }
        let cp = AuditLog::checkpoint(&tx, &log.signer, at(1000 + b)).unwrap();
        assert_eq!(cp.size, (b + 1) * PER_BATCH);
        tx.commit().unwrap();
    }
    log
}

fn memory_log() -> Log {
    build(Connection::open_in_memory().unwrap())
}

fn export(log: &Log) -> Bundle {
    // Through the bytes, as an auditor receives it.
    Bundle::from_json(&AuditLog::export(&log.conn).unwrap().to_json()).unwrap()
}

fn key(log: &Log) -> VerifierKey {
    // Through the text form, as an auditor configures it.
    log.signer.verifier_key().to_string().parse().unwrap()
}

/// The (kind, index) pairs of a report's problems.
fn found(report: &Report) -> Vec<(ProblemKind, Option<u64>)> {
    report.problems.iter().map(|p| (p.kind, p.index)).collect()
}

/// The options with a checkpoint obtained out of band.
fn trusting(note: &str) -> VerifyOptions<'_> {
    VerifyOptions {
        trusted: Some(note),
        ..VerifyOptions::default()
    }
}

/// The lenient options: entries no signed checkpoint covers are a warning.
const LENIENT: VerifyOptions<'static> = VerifyOptions {
    trusted: None,
    allow_unsigned_tail: true,
    without_evidence: false,
};

fn assert_has(report: &Report, kind: ProblemKind, index: Option<u64>) {
    assert!(
        found(report).contains(&(kind, index)),
        "expected {kind:?} at {index:?} in\n{report}"
    );
}

#[test]
fn an_untouched_export_verifies() {
    let log = memory_log();
    let bundle = export(&log);
    assert_eq!(bundle.entries.len() as u64, TOTAL);
    assert_eq!(bundle.checkpoints.len() as u64, BATCHES);
    assert_eq!(bundle.evidence.len(), log.evidence.len());
    let report = verify_bundle(&bundle, &key(&log));
    assert!(report.is_ok(), "{report}");
    assert!(report.warnings.is_empty(), "{report}");
    assert_eq!(report.uncovered, None);
    assert_eq!(report.entries, TOTAL);
    assert_eq!(report.checkpoints, BATCHES);

    // The latest checkpoint, as served out of band, agrees.
    let latest = AuditLog::latest_checkpoint(&log.conn).unwrap().unwrap();
    assert_eq!(latest.size, TOTAL);
    assert_eq!(latest.root, AuditLog::root(&log.conn).unwrap());
    let report = verify_bundle_with(&bundle, &key(&log), &trusting(&latest.note));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.checkpoints, BATCHES + 1);
}

#[test]
fn proofs_verify_against_signed_checkpoints() {
    let log = memory_log();
    let vk = key(&log);
    let bundle = export(&log);
    let cps: Vec<_> = bundle
        .checkpoints
        .iter()
        .map(|n| verify_checkpoint(n, &vk).unwrap())
        .collect();
    let last = cps.last().unwrap();
    for e in &bundle.entries {
        let proof = AuditLog::inclusion_proof(&log.conn, e.index, last.size).unwrap();
        assert!(verify_inclusion(
            &e.leaf_hash(),
            e.index,
            last.size,
            &proof,
            &last.root
        ));
    }
    for pair in cps.windows(2) {
        let proof = AuditLog::consistency_proof(&log.conn, pair[0].size, pair[1].size).unwrap();
        assert!(verify_consistency(
            pair[0].size,
            pair[1].size,
            &pair[0].root,
            &pair[1].root,
            &proof
        ));
        assert!(!verify_consistency(
            pair[0].size,
            pair[1].size,
            &pair[1].root,
            &pair[1].root,
            &proof
        ));
    }
}

#[test]
fn a_removed_entry_is_named() {
    let log = memory_log();
    let mut bundle = export(&log);
    bundle.entries.remove(25);
    let report = verify_bundle(&bundle, &key(&log));
    assert!(!report.is_ok());
    assert_has(&report, ProblemKind::Removed, Some(25));
    // The gap explains the chain break after it: nothing else is named.
    assert_eq!(found(&report), vec![(ProblemKind::Removed, Some(25))]);
}

#[test]
fn an_altered_field_is_named_and_localised_by_the_checkpoints() {
    let log = memory_log();
    let mut bundle = export(&log);
    // A key release made to look like a release of another key version.
    let Event::KeyReleased { version, .. } = &mut bundle.entries[17].event else {
        panic!("entry 17 is a key release");
    };
    *version = 2;
    let report = verify_bundle(&bundle, &key(&log));
    assert_has(&report, ProblemKind::Altered, Some(17));
    // Checkpoints at 10, 20, ...: the first mismatch narrows it to 10..20.
    assert_has(&report, ProblemKind::CheckpointMismatch, Some(10));
    let altered: Vec<_> = found(&report)
        .into_iter()
        .filter(|(k, _)| *k == ProblemKind::Altered)
        .collect();
    assert_eq!(altered, vec![(ProblemKind::Altered, Some(17))]);
}

#[test]
fn an_altered_last_entry_is_caught_by_the_checkpoint() {
    let log = memory_log();
    let mut bundle = export(&log);
    let last = bundle.entries.last_mut().unwrap();
    last.time = "2000-01-01T00:00:00.000000Z".into();
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::CheckpointMismatch, Some(TOTAL - PER_BATCH))]
    );
}

#[test]
fn an_altered_prev_is_named() {
    let log = memory_log();
    let mut bundle = export(&log);
    bundle.entries[30].prev = bundle.entries[29].prev.clone();
    let report = verify_bundle(&bundle, &key(&log));
    assert_has(&report, ProblemKind::Altered, Some(30));
    assert!(
        !found(&report).contains(&(ProblemKind::Altered, Some(29))),
        "{report}"
    );
}

#[test]
fn swapped_entries_are_named() {
    let log = memory_log();
    let mut bundle = export(&log);
    bundle.entries.swap(12, 40);
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![
            (ProblemKind::Reordered, Some(12)),
            (ProblemKind::Reordered, Some(40))
        ],
        "{report}"
    );
}

#[test]
fn a_moved_entry_is_named_alone() {
    let log = memory_log();
    let mut bundle = export(&log);
    let moved = bundle.entries.remove(7);
    bundle.entries.push(moved);
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Reordered, Some(7))],
        "{report}"
    );
    assert!(
        report.problems[0].detail.contains("after entry 59"),
        "{report}"
    );
}

#[test]
fn a_duplicated_entry_is_named() {
    let log = memory_log();
    let mut bundle = export(&log);
    let copy = bundle.entries[5].clone();
    bundle.entries.insert(6, copy);
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Inserted, Some(5))],
        "{report}"
    );

    // A forged entry claiming an index already taken, placed before the
    // genuine one: the genuine one is kept, the forgery named.
    let mut bundle = export(&log);
    let mut forged = bundle.entries[8].clone();
    forged.event = Event::KeyDisabled {
        actor: "mallory".into(),
        key: "model-key".into(),
    };
    forged.prev = "ff".repeat(32);
    bundle.entries.insert(8, forged);
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Inserted, Some(8))],
        "{report}"
    );
}

#[test]
fn a_dropped_signature_byte_is_named() {
    let log = memory_log();
    let mut bundle = export(&log);
    let note = &bundle.checkpoints[2];
    let (head, b64) = note.trim_end().rsplit_once(' ').unwrap();
    let mut sig = B64.decode(b64).unwrap();
    sig.pop();
    bundle.checkpoints[2] = format!("{head} {}\n", B64.encode(sig));
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::BadCheckpointSignature, None)],
        "{report}"
    );
    assert!(report.problems[0].detail.contains("checkpoint 2"));
    assert_eq!(report.checkpoints, BATCHES - 1);
}

#[test]
fn a_checkpoint_of_another_key_is_refused() {
    let log = memory_log();
    let bundle = export(&log);
    let other = CheckpointSigner::generate(ORIGIN).unwrap().0;
    let report = verify_bundle(&bundle, &other.verifier_key());
    assert_eq!(report.checkpoints, 0);
    let bad = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::BadCheckpointSignature)
        .count() as u64;
    assert_eq!(bad, BATCHES, "{report}");
    // Nothing signed vouches for the entries.
    assert_eq!(report.problems.len() as u64, BATCHES + 1, "{report}");
    assert_has(&report, ProblemKind::Uncovered, Some(0));
    assert_eq!(report.uncovered, Some(0..TOTAL));
}

#[test]
fn removed_or_altered_evidence_is_named() {
    let log = memory_log();
    let (index, digest) = log.evidence[3].clone();
    let mut bundle = export(&log);
    bundle.evidence.remove(&digest);
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::MissingEvidence, Some(index))],
        "{report}"
    );

    let mut bundle = export(&log);
    bundle.evidence.insert(digest, B64.encode(b"another quote"));
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::EvidenceAltered, Some(index))],
        "{report}"
    );
}

#[test]
fn truncation_needs_a_checkpoint_to_be_seen() {
    let log = memory_log();
    let latest = AuditLog::latest_checkpoint(&log.conn).unwrap().unwrap();

    // Entries cut from the end while their checkpoint stays: named.
    let mut bundle = export(&log);
    bundle.entries.truncate(55);
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Removed, Some(55))],
        "{report}"
    );

    // The last batch cut with its checkpoint: the bundle alone looks fine...
    let mut bundle = export(&log);
    bundle.entries.truncate((TOTAL - PER_BATCH) as usize);
    bundle.checkpoints.pop();
    assert!(verify_bundle(&bundle, &key(&log)).is_ok());
    // ...and a checkpoint obtained out of band shows it.
    let report = verify_bundle_with(&bundle, &key(&log), &trusting(&latest.note));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Removed, Some(TOTAL - PER_BATCH))],
        "{report}"
    );
    // A forged "trusted" checkpoint is refused, not trusted.
    let forged = latest.note.replacen("\n60\n", "\n61\n", 1);
    let report = verify_bundle_with(&export(&log), &key(&log), &trusting(&forged));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::BadCheckpointSignature, None)]
    );
}

#[test]
fn entries_after_the_last_checkpoint_fail_unless_allowed() {
    // A log that appended after its last checkpoint (genuinely, not by an
    // attacker's hand): the same finding, since the bundle cannot tell.
    let mut log = memory_log();
    let tx = log.conn.transaction().unwrap();
    AuditLog::append(&tx, at(500), &event(500, None)).unwrap();
    AuditLog::append(&tx, at(501), &event(501, None)).unwrap();
    tx.commit().unwrap();
    let bundle = export(&log);
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Uncovered, Some(TOTAL))],
        "{report}"
    );
    assert_eq!(report.uncovered, Some(TOTAL..TOTAL + 2));

    // Allowed: a warning naming the same range, and nothing else.
    let report = verify_bundle_with(&bundle, &key(&log), &LENIENT);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(report.warnings[0].kind, ProblemKind::Uncovered);
    assert_eq!(report.warnings[0].index, Some(TOTAL));
    assert!(
        report.warnings[0].detail.contains(&format!(
            "entries {TOTAL} to {} are not covered by any signed checkpoint",
            TOTAL + 1
        )),
        "{report}"
    );
    assert_eq!(report.uncovered, Some(TOTAL..TOTAL + 2));
}

#[test]
fn a_rewritten_history_is_inconsistent() {
    // The key holder signs a checkpoint, then rewrites the log and signs
    // again: both signatures verify, and they contradict each other.
    let dir = tempfile::tempdir().unwrap();
    let (signer, pkcs8) = CheckpointSigner::generate(ORIGIN).unwrap();
    let old_note = {
        let mut conn = Connection::open(dir.path().join("a.db")).unwrap();
        AuditLog::init(&conn).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..10 {
            AuditLog::append(&tx, at(i), &event(i + 1, None)).unwrap();
        }
        let cp = AuditLog::checkpoint(&tx, &signer, at(100)).unwrap();
        tx.commit().unwrap();
        cp.note
    };
    let mut conn = Connection::open(dir.path().join("b.db")).unwrap();
    AuditLog::init(&conn).unwrap();
    let signer = CheckpointSigner::from_pkcs8(ORIGIN, &pkcs8).unwrap();
    let tx = conn.transaction().unwrap();
    for i in 0..25 {
        AuditLog::append(&tx, at(i), &event(i + 2, None)).unwrap();
    }
    AuditLog::checkpoint(&tx, &signer, at(100)).unwrap();
    tx.commit().unwrap();
    let mut bundle = AuditLog::export(&conn).unwrap();
    bundle.checkpoints.insert(0, old_note);
    let report = verify_bundle(&bundle, &signer.verifier_key());
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Inconsistent, None)],
        "{report}"
    );
}

#[test]
fn writes_outside_a_transaction_are_refused() {
    let log = memory_log();
    let size = AuditLog::size(&log.conn).unwrap();
    assert!(matches!(
        AuditLog::append(&log.conn, at(800), &event(800, None)),
        Err(twinseal_audit::Error::NotInTransaction)
    ));
    assert!(AuditLog::append_evidence(&log.conn, b"quote").is_err());
    assert!(AuditLog::checkpoint(&log.conn, &log.signer, at(801)).is_err());
    assert_eq!(AuditLog::size(&log.conn).unwrap(), size);
}

#[test]
fn a_savepoint_rolled_back_inside_a_committed_transaction_leaves_nothing() {
    let mut log = memory_log();
    let size = AuditLog::size(&log.conn).unwrap();
    let root = AuditLog::root(&log.conn).unwrap();
    let mut tx = log.conn.transaction().unwrap();
    {
        let sp = tx.savepoint().unwrap();
        AuditLog::append(&sp, at(900), &event(900, None)).unwrap();
        // Dropped without commit: the savepoint rolls back.
    }
    tx.commit().unwrap();
    assert_eq!(AuditLog::size(&log.conn).unwrap(), size);
    assert_eq!(AuditLog::root(&log.conn).unwrap(), root);
}

#[test]
fn a_rolled_back_transaction_leaves_nothing() {
    let mut log = memory_log();
    let size = AuditLog::size(&log.conn).unwrap();
    let root = AuditLog::root(&log.conn).unwrap();
    let latest = AuditLog::latest_checkpoint(&log.conn).unwrap();
    {
        let tx = log.conn.transaction().unwrap();
        let d = AuditLog::append_evidence(&tx, b"rolled back quote").unwrap();
        assert_eq!(
            AuditLog::append(&tx, at(700), &event(700, Some(d))).unwrap(),
            size
        );
        AuditLog::append(&tx, at(701), &event(701, None)).unwrap();
        AuditLog::checkpoint(&tx, &log.signer, at(702)).unwrap();
        assert_eq!(AuditLog::size(&tx).unwrap(), size + 2);
        assert_ne!(AuditLog::root(&tx).unwrap(), root);
        // Dropped without commit: rolled back.
    }
    assert_eq!(AuditLog::size(&log.conn).unwrap(), size);
    assert_eq!(AuditLog::root(&log.conn).unwrap(), root);
    assert_eq!(AuditLog::latest_checkpoint(&log.conn).unwrap(), latest);
    assert!(AuditLog::entries(&log.conn, size, 10).unwrap().is_empty());
    let bundle = export(&log);
    assert_eq!(bundle.entries.len() as u64, size);
    assert_eq!(bundle.evidence.len(), log.evidence.len());
    // The next append takes the index the rolled-back one had.
    let tx = log.conn.transaction().unwrap();
    assert_eq!(
        AuditLog::append(&tx, at(703), &event(703, None)).unwrap(),
        size
    );
    AuditLog::checkpoint(&tx, &log.signer, at(704)).unwrap();
    tx.commit().unwrap();
    assert!(verify_bundle(&export(&log), &key(&log)).is_ok());
}

#[test]
fn the_log_survives_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator.db");
    let log = build(Connection::open(&path).unwrap());
    let root = AuditLog::root(&log.conn).unwrap();
    let vk = key(&log);
    let signer = log.signer;
    drop(log.conn);

    let mut conn = Connection::open(&path).unwrap();
    AuditLog::init(&conn).unwrap();
    assert_eq!(AuditLog::size(&conn).unwrap(), TOTAL);
    assert_eq!(AuditLog::root(&conn).unwrap(), root);
    let tx = conn.transaction().unwrap();
    assert_eq!(
        AuditLog::append(&tx, at(900), &event(900, None)).unwrap(),
        TOTAL
    );
    AuditLog::checkpoint(&tx, &signer, at(901)).unwrap();
    tx.commit().unwrap();
    let report = verify_bundle(&AuditLog::export(&conn).unwrap(), &vk);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries, TOTAL + 1);
}

#[test]
fn from_json_rejects_garbage_truncation_and_oversize() {
    let log = memory_log();
    let json = AuditLog::export(&log.conn).unwrap().to_json();

    let err = Bundle::from_json(b"not json at all").unwrap_err();
    assert!(matches!(err, Error::InvalidBundle(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("invalid audit bundle: expected"),
        "{err}"
    );

    let err = Bundle::from_json(&json[..json.len() / 2]).unwrap_err();
    assert!(matches!(err, Error::InvalidBundle(_)), "{err}");
    assert!(err.to_string().contains("EOF while parsing"), "{err}");

    let err = Bundle::from_json_with_limit(&json, json.len() - 1).unwrap_err();
    assert!(
        matches!(err, Error::BundleTooLarge { len, max } if len == json.len() && max == json.len() - 1),
        "{err}"
    );
    let huge = vec![b' '; MAX_BUNDLE_LEN + 1];
    let err = Bundle::from_json(&huge).unwrap_err();
    assert!(matches!(err, Error::BundleTooLarge { .. }), "{err}");
    assert!(
        err.to_string().starts_with("audit bundle too large"),
        "{err}"
    );

    // Structurally valid JSON of the wrong shape: an unknown event type.
    let text = String::from_utf8(json.clone()).unwrap();
    let bad = text.replacen("\"type\":\"tokenized\"", "\"type\":\"teleported\"", 1);
    assert!(matches!(
        Bundle::from_json(bad.as_bytes()),
        Err(Error::InvalidBundle(_))
    ));
    // And it round-trips.
    assert_eq!(Bundle::from_json(&json).unwrap().to_json(), json);
}

#[test]
fn entries_read_back_as_appended() {
    let log = memory_log();
    let entries: Vec<Entry> = AuditLog::entries(&log.conn, 0, TOTAL).unwrap();
    assert_eq!(entries.len() as u64, TOTAL);
    for (i, e) in entries.iter().enumerate() {
        let i = i as u64;
        assert_eq!(e.index, i);
        let digest = log
            .evidence
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, d)| d.clone());
        assert_eq!(e.event, event(i, digest));
        assert!(e.time.ends_with('Z'));
    }
    assert_eq!(entries[0].prev, "0".repeat(64));
    assert_eq!(entries[1].prev, hex::encode(entries[0].leaf_hash()));
}

#[test]
fn shared_types_are_send_and_sync() {
    // The coordinator shares the signer across request tasks and hands
    // bundles and reports to other threads.
    fn check<T: Send + Sync>() {}
    check::<CheckpointSigner>();
    check::<VerifierKey>();
    check::<Bundle>();
    check::<Report>();
    check::<Error>();
}

#[test]
fn random_edits_never_pass_as_the_signed_log() {
    // The invariant of the fuzz target `audit_bundle`, on a fixed sequence
    // of byte edits: whatever still parses verifies without panicking, and
    // if the entries changed while the signed checkpoints stayed, the
    // report is not clean.
    let log = memory_log();
    let vk = key(&log);
    let genuine = AuditLog::export(&log.conn).unwrap();
    let json = genuine.to_json();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut parsed = 0;
    for _ in 0..3000 {
        let mut edited = json.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % edited.len() as u64) as usize;
            edited[at] ^= 1 << (next() % 7);
        }
        let Ok(bundle) = Bundle::from_json(&edited) else {
            continue;
        };
        parsed += 1;
        let report = verify_bundle(&bundle, &vk);
        if bundle == genuine {
            assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
        } else if bundle.checkpoints == genuine.checkpoints && bundle.entries != genuine.entries {
            assert!(!report.is_ok() || !report.warnings.is_empty(), "{report}");
        }
    }
    // Enough edits survive parsing for the check to mean something.
    assert!(parsed > 300, "only {parsed} edited bundles parsed");
}

#[test]
fn a_bundle_stripped_of_every_checkpoint_does_not_verify() {
    // The attacker removes every checkpoint, so that nothing signed vouches
    // for any entry (and any entry could have been rewritten along with the
    // hash chain): the verifier must say so and fail.
    let log = memory_log();
    let mut bundle = export(&log);
    bundle.checkpoints.clear();
    let report = verify_bundle(&bundle, &key(&log));
    assert!(!report.is_ok(), "{report}");
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Uncovered, Some(0))],
        "{report}"
    );
    assert!(
        report.problems[0]
            .detail
            .contains(&format!("entries 0 to {} are not covered", TOTAL - 1)),
        "{report}"
    );
    assert_eq!(report.uncovered, Some(0..TOTAL));
    assert!(report.warnings.is_empty(), "{report}");

    // Explicitly allowed, it is still said, as a warning over every entry.
    let report = verify_bundle_with(&bundle, &key(&log), &LENIENT);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.uncovered, Some(0..TOTAL));
    assert_eq!(report.warnings.len(), 1, "{report}");
    assert_eq!(report.warnings[0].kind, ProblemKind::Uncovered);
    assert!(report.to_string().contains("warning: entry 0:"), "{report}");
}

#[test]
fn a_tail_stripped_of_its_checkpoints_does_not_verify() {
    // The attacker keeps the early checkpoints and strips the last two, so
    // that the entries they covered can be rewritten wholesale.
    let log = memory_log();
    let mut bundle = export(&log);
    bundle.checkpoints.truncate((BATCHES - 2) as usize);
    let signed = (BATCHES - 2) * PER_BATCH;
    let report = verify_bundle(&bundle, &key(&log));
    assert!(!report.is_ok(), "{report}");
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Uncovered, Some(signed))],
        "{report}"
    );
    assert!(
        report.problems[0].detail.contains(&format!(
            "entries {signed} to {} are not covered",
            TOTAL - 1
        )),
        "{report}"
    );
    assert_eq!(report.uncovered, Some(signed..TOTAL));

    // The unsigned tail rewritten outright, chain and all: still only the
    // uncovered finding, which is why it must fail by default.
    for i in signed as usize..TOTAL as usize {
        bundle.entries[i].event = Event::KeyDisabled {
            actor: "mallory".into(),
            key: format!("k{i}"),
        };
        bundle.entries[i].prev = hex::encode(bundle.entries[i - 1].leaf_hash());
    }
    let report = verify_bundle(&bundle, &key(&log));
    assert_eq!(
        found(&report),
        vec![(ProblemKind::Uncovered, Some(signed))],
        "{report}"
    );

    // A checkpoint obtained out of band covers the tail again and shows
    // the rewrite.
    let latest = AuditLog::latest_checkpoint(&log.conn).unwrap().unwrap();
    let report = verify_bundle_with(&bundle, &key(&log), &trusting(&latest.note));
    assert!(report.uncovered.is_none(), "{report}");
    assert_has(&report, ProblemKind::CheckpointMismatch, Some(signed));
}

// ---- The log as C2SP tiles -------------------------------------------------

mod tiles {
    use std::path::Path;

    use twinseal_audit::{
        AuditLog, CheckpointSigner, DirSource, Error, Event, ProblemKind, Report, TileCache,
        TileSource, VerifyOptions, decode_entry_bundle, encode_entry_bundle, mirror,
        tiles_for_size, verify_tiles,
    };

    use super::{ORIGIN, at};

    /// What the coordinator serves: `AuditLog::serve` over the database.
    struct Served<'a> {
        conn: &'a rusqlite::Connection,
        cache: TileCache,
    }

    impl TileSource for Served<'_> {
        fn fetch(&mut self, path: &str) -> twinseal_audit::Result<Vec<u8>> {
            AuditLog::serve(self.conn, path, &self.cache)
        }
    }

    /// 600 entries in three checkpointed transactions: two full level-0
    /// tiles and a partial one of 88, a partial level-1 tile of 2.
    fn log() -> (rusqlite::Connection, CheckpointSigner) {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        AuditLog::init(&conn).unwrap();
        let (signer, _) = CheckpointSigner::generate(ORIGIN).unwrap();
        for b in 0..3u64 {
            let tx = conn.transaction().unwrap();
            for i in b * 200..(b + 1) * 200 {
                let event = Event::KeyReleased {
                    app: format!("app{i}"),
                    serial: format!("{i:x}"),
                    key: "model-key".into(),
                    version: 1,
                    location: None,
                };
                AuditLog::append(&tx, at(i), &event).unwrap();
            }
            AuditLog::checkpoint(&tx, &signer, at(1000 + b)).unwrap();
            tx.commit().unwrap();
        }
        (conn, signer)
    }

    fn kinds(report: &Report) -> Vec<ProblemKind> {
        report.problems.iter().map(|p| p.kind).collect()
    }

    fn verify_dir(dir: &Path, signer: &CheckpointSigner, trusted: Option<&str>) -> Report {
        let options = VerifyOptions {
            trusted,
            ..VerifyOptions::default()
        };
        verify_tiles(&mut DirSource(dir.into()), &signer.verifier_key(), &options).unwrap()
    }

    #[test]
    fn a_log_verifies_from_served_tiles_and_from_a_copy_in_a_directory() {
        let (conn, signer) = log();
        let mut served = Served {
            conn: &conn,
            cache: TileCache::default(),
        };
        let report = verify_tiles(
            &mut served,
            &signer.verifier_key(),
            &VerifyOptions::default(),
        )
        .unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.entries, 600);
        let tiles: Vec<String> = tiles_for_size(600).iter().map(|t| t.path()).collect();
        assert_eq!(
            tiles,
            [
                "tile/0/000",
                "tile/0/001",
                "tile/0/002.p/88",
                "tile/entries/000",
                "tile/entries/001",
                "tile/entries/002.p/88",
                "tile/1/000.p/2"
            ]
        );

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            mirror(&mut served, &signer.verifier_key(), dir.path()).unwrap(),
            600
        );
        let report = verify_dir(dir.path(), &signer, None);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.entries, 600);
        // Mirroring again keeps the full tiles and replaces nothing else.
        assert_eq!(
            mirror(&mut served, &signer.verifier_key(), dir.path()).unwrap(),
            600
        );
        // A tile beyond the checkpoint is not served.
        assert!(matches!(
            AuditLog::serve(&conn, "tile/0/002", &served.cache),
            Err(Error::InvalidRange(_))
        ));
        assert!(matches!(
            AuditLog::serve(&conn, "tile/0/../../x", &served.cache),
            Err(Error::InvalidTile(_))
        ));
    }

    /// Rewrite entry bundle `file` of the mirror with `edit` applied to its entries.
    fn edit_bundle(dir: &Path, file: &str, width: u16, edit: impl FnOnce(&mut Vec<Vec<u8>>)) {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap();
        let mut entries: Vec<Vec<u8>> = decode_entry_bundle(&bytes, width)
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        edit(&mut entries);
        std::fs::write(
            &path,
            encode_entry_bundle(entries.iter().map(Vec::as_slice)).unwrap(),
        )
        .unwrap();
    }

    fn fresh_mirror(conn: &rusqlite::Connection, signer: &CheckpointSigner) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut served = Served {
            conn,
            cache: TileCache::default(),
        };
        mirror(&mut served, &signer.verifier_key(), dir.path()).unwrap();
        dir
    }

    #[test]
    fn an_altered_removed_or_reordered_entry_or_tile_is_detected() {
        let (conn, signer) = log();

        // Altered: one entry's app renamed.
        let dir = fresh_mirror(&conn, &signer);
        edit_bundle(dir.path(), "tile/entries/001", 256, |e| {
            e[5] = String::from_utf8(e[5].clone())
                .unwrap()
                .replace("app261", "app999")
                .into_bytes();
        });
        let report = verify_dir(dir.path(), &signer, None);
        assert!(kinds(&report).contains(&ProblemKind::Altered), "{report}");
        assert!(
            report.problems.iter().any(|p| p.index == Some(261)),
            "{report}"
        );

        // Reordered: two entries swapped inside a bundle.
        let dir = fresh_mirror(&conn, &signer);
        edit_bundle(dir.path(), "tile/entries/000", 256, |e| e.swap(10, 11));
        let report = verify_dir(dir.path(), &signer, None);
        assert!(kinds(&report).contains(&ProblemKind::Reordered), "{report}");

        // Removed: an entry cut from a bundle (the bundle no longer holds
        // the entries its name promises), or the whole bundle deleted.
        let dir = fresh_mirror(&conn, &signer);
        edit_bundle(dir.path(), "tile/entries/000", 256, |e| {
            e.remove(7);
        });
        let err = verify_tiles(
            &mut DirSource(dir.path().into()),
            &signer.verifier_key(),
            &VerifyOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tile/entries/000"), "{err}");
        let dir = fresh_mirror(&conn, &signer);
        std::fs::remove_file(dir.path().join("tile/entries/002.p/88")).unwrap();
        assert!(matches!(
            verify_tiles(
                &mut DirSource(dir.path().into()),
                &signer.verifier_key(),
                &VerifyOptions::default()
            ),
            Err(Error::TileUnavailable(_))
        ));

        // A hash tile altered at level 0 and at level 1.
        for (file, index) in [("tile/0/001", 256 + 3), ("tile/1/000.p/2", 256)] {
            let dir = fresh_mirror(&conn, &signer);
            let path = dir.path().join(file);
            let mut bytes = std::fs::read(&path).unwrap();
            let hash = (index % 256) / if file.starts_with("tile/1") { 256 } else { 1 };
            let at = if file.starts_with("tile/1") {
                32
            } else {
                hash * 32
            };
            bytes[at] ^= 1;
            std::fs::write(&path, bytes).unwrap();
            let report = verify_dir(dir.path(), &signer, None);
            assert_eq!(
                kinds(&report),
                [ProblemKind::TileMismatch],
                "{file}: {report}"
            );
            assert_eq!(report.problems[0].index, Some(index as u64), "{report}");
        }
    }

    #[test]
    fn an_inconsistent_forked_or_rolled_back_checkpoint_is_detected() {
        let (conn, signer) = log();
        let genuine = AuditLog::latest_checkpoint(&conn).unwrap().unwrap();

        // Same size, another root, signed with the log's own key: a fork.
        let dir = fresh_mirror(&conn, &signer);
        let fork = signer.sign_checkpoint(600, &[7; 32]);
        std::fs::write(dir.path().join("checkpoint"), &fork.note).unwrap();
        let report = verify_dir(dir.path(), &signer, None);
        assert!(
            kinds(&report).contains(&ProblemKind::CheckpointMismatch),
            "{report}"
        );

        // Rolled back to 400 entries (tiles and checkpoint consistent with
        // each other): only a checkpoint seen before reveals it.
        let mut small = rusqlite::Connection::open_in_memory().unwrap();
        AuditLog::init(&small).unwrap();
        let tx = small.transaction().unwrap();
        for e in AuditLog::entries(&conn, 0, 400).unwrap() {
            AuditLog::append(&tx, at(e.index), &e.event).unwrap();
        }
        AuditLog::checkpoint(&tx, &signer, at(2000)).unwrap();
        tx.commit().unwrap();
        let dir = fresh_mirror(&small, &signer);
        assert!(verify_dir(dir.path(), &signer, None).is_ok());
        let report = verify_dir(dir.path(), &signer, Some(&genuine.note));
        assert!(!report.is_ok(), "{report}");
        assert!(kinds(&report).contains(&ProblemKind::Removed), "{report}");

        // A checkpoint signed by another key is refused as a whole.
        let dir = fresh_mirror(&conn, &signer);
        let (other, _) = CheckpointSigner::generate(ORIGIN).unwrap();
        std::fs::write(
            dir.path().join("checkpoint"),
            other.sign_checkpoint(600, &genuine.root).note,
        )
        .unwrap();
        let report = verify_dir(dir.path(), &signer, None);
        assert_eq!(
            kinds(&report),
            [ProblemKind::BadCheckpointSignature],
            "{report}"
        );
    }
}
