//! `twinseal bench transparency`: what the log's transparency costs, in
//! one process on a log of `--entries` entries (SQLite, as the coordinator
//! keeps it): tiles served per second (`AuditLog::serve`, the code behind
//! `/log/tile/...`, without HTTP), and the client's release-transparency
//! check per connection (`check_approval`: the log's signature, two witness
//! cosignatures, the inclusion proof and the entry), with a fresh check
//! each time (nothing cached).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use twinseal_audit::{
    ApprovalProof, Attested, AuditLog, CheckpointSigner, Cosigner, Event, ReleasePolicy, Tile,
    TileCache, TileKind, approval_proof, check_approval, tiles_for_size,
};

/// Arguments of `twinseal bench transparency`.
#[derive(Debug, clap::Args)]
pub struct TransparencyBench {
    /// Entries in the log.
    #[arg(long, default_value_t = 100_000)]
    pub entries: u64,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Runs `twinseal bench transparency`.
pub fn run(a: TransparencyBench) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut conn = rusqlite::Connection::open(dir.path().join("log.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    AuditLog::init(&conn)?;
    let (signer, _) = CheckpointSigner::generate("twinseal.coordinator/bench")?;
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let t0 = Instant::now();
    let measurement = "ab".repeat(48);
    let approval_at = a.entries / 2;
    let mut i = 0;
    while i < a.entries {
        let tx = conn.transaction()?;
        for _ in 0..1000.min(a.entries - i) {
            let event = if i == approval_at {
                Event::MeasurementsApproved {
                    manifest_version: 7,
                    app: "worker".into(),
                    tee: vec!["tdx".into()],
                    measurements: vec![measurement.clone()],
                    signers: vec![],
                }
            } else {
                Event::KeyReleased {
                    app: "worker".into(),
                    serial: format!("{i:016x}"),
                    key: "model-key".into(),
                    version: 1,
                    location: None,
                }
            };
            AuditLog::append(&tx, at, &event)?;
            i += 1;
        }
        AuditLog::checkpoint(&tx, &signer, at)?;
        tx.commit()?;
    }
    eprintln!(
        "built a log of {} entries in {:.1} s",
        a.entries,
        t0.elapsed().as_secs_f64()
    );
    let d = Duration::from_secs(a.seconds);

    // Tiles: every tile of the tree once (cold cache), then random full
    // level-0 tiles and entry bundles for the rest of the time.
    let tiles = tiles_for_size(a.entries);
    let cache = TileCache::default();
    let t0 = Instant::now();
    let mut bytes = 0usize;
    for t in &tiles {
        bytes += AuditLog::serve(&conn, &t.path(), &cache)?.len();
    }
    let cold = t0.elapsed();
    println!(
        "| tiles, whole tree once (cold cache) | {} tiles, {:.1} MB | {:.2} s | {:.0} tiles/s |",
        tiles.len(),
        bytes as f64 / 1e6,
        cold.as_secs_f64(),
        tiles.len() as f64 / cold.as_secs_f64()
    );
    for (label, kind) in [
        ("full level-0 tiles (8 KiB)", TileKind::Hashes(0)),
        ("full entry bundles (256 entries)", TileKind::Entries),
    ] {
        let full: Vec<&Tile> = tiles
            .iter()
            .filter(|t| t.kind == kind && t.is_full())
            .collect();
        if full.is_empty() {
            continue;
        }
        let (mut n, mut bytes, mut k) = (0u64, 0usize, 0usize);
        let t0 = Instant::now();
        while t0.elapsed() < d {
            k = (k * 7919 + 13) % full.len();
            bytes += AuditLog::serve(&conn, &full[k].path(), &cache)?.len();
            n += 1;
        }
        let s = t0.elapsed().as_secs_f64();
        println!(
            "| {label}, random | {n} | {:.0} per second | {:.1} MB/s |",
            n as f64 / s,
            bytes as f64 / 1e6 / s
        );
    }

    // The client's check per connection.
    let (w1, _) = Cosigner::generate("witness.bench/w1")?;
    let (w2, _) = Cosigner::generate("witness.bench/w2")?;
    let cp = AuditLog::latest_checkpoint(&conn)?.expect("a checkpoint");
    let now = SystemTime::now();
    let ts = now.duration_since(UNIX_EPOCH)?.as_secs();
    let text_end = cp.note.find("\n\n").map_or(cp.note.len(), |p| p + 1);
    let mut note = cp.note.clone();
    for w in [&w1, &w2] {
        note.push_str(&w.cosign(&cp.note[..text_end], ts));
    }
    let entry = AuditLog::entries(&conn, approval_at, 1)?.remove(0);
    let path = AuditLog::inclusion_proof(&conn, approval_at, cp.size)?;
    let proof: ApprovalProof = approval_proof(approval_at, &entry.canonical_bytes(), &path, &note);
    let policy = ReleasePolicy {
        log_key: signer.verifier_key(),
        witnesses: vec![w1.public_key().clone(), w2.public_key().clone()],
        quorum: 2,
        max_age: Duration::from_secs(24 * 3600),
    };
    let attested = Attested {
        app: "worker".into(),
        tee: "tdx".into(),
        measurement,
        log_index: Some(approval_at),
    };
    let (mut n, t0) = (0u64, Instant::now());
    while t0.elapsed() < d {
        check_approval(&proof, &attested, &policy, now)?;
        n += 1;
    }
    let per = t0.elapsed().as_secs_f64() / n as f64;
    println!(
        "| client release-transparency check (signature, 2 cosignatures, inclusion in {} entries, entry) | {n} | {:.1} µs each |",
        cp.size,
        per * 1e6
    );
    Ok(())
}
