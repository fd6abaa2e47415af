//! Seal and unseal throughput, side by side in one run with the peers the
//! issue names: raw aws-lc-rs AES-256-GCM over the same bytes in memory (the
//! limit) and the `age` CLI on files (X25519 recipient, no passphrase).
//!
//! ```sh
//! cargo build --release -p twinseal-cli
//! cargo build --release -p twinseal-envelope --example bench
//! taskset -c 0 target/release/examples/bench --mib 1024 --runs 3
//! ```
//!
//! Each figure is the best of `--runs` runs (the machine is shared, so the
//! minimum is the least disturbed one). Files go to `--dir` (default: the
//! system temp dir); `twinseal` is looked up next to this binary's folder
//! (`target/release/twinseal`).

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use twinseal_envelope::{
    AtomicOutput, Context, IO_BUFFER_SIZE, Kek, Opener, Sealer, SecretKey, open_bytes,
    open_bytes_into, seal_bytes, seal_bytes_into,
};

struct Args {
    mib: usize,
    runs: usize,
    dir: PathBuf,
    age: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        mib: 1024,
        runs: 3,
        dir: std::env::temp_dir(),
        age: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mib" => args.mib = it.next().context("--mib N")?.parse()?,
            "--runs" => args.runs = it.next().context("--runs N")?.parse()?,
            "--dir" => args.dir = it.next().context("--dir PATH")?.into(),
            "--no-age" => args.age = false,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

/// Best wall time of `runs` runs of `f`; `f` gets a flag telling it to do
/// its untimed setup (true) or its timed work (false).
fn best(runs: usize, mut f: impl FnMut(bool) -> Result<()>) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        f(true)?;
        let start = Instant::now();
        f(false)?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

fn mib_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.as_secs_f64()
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn rm(path: &Path) {
    let _ = fs::remove_file(path);
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let len = args.mib << 20;
    let runs = args.runs;
    let mut plain = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut plain)?;
    let mut key_bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key_bytes)?;
    let keys = [Kek::local(SecretKey::from_bytes(key_bytes))];
    let context = Context::from_pairs([("purpose", "bench")])?;
    let mut rows: Vec<(String, f64)> = Vec::new();

    // (a) The limit, and ours in memory, interleaved round by round so that
    // both see the same load on a shared machine. The limit is one
    // AES-256-GCM call over the whole buffer, in place; the out-of-place row
    // shows what writing to a second buffer costs by itself (ours is
    // out-of-place: the plaintext is borrowed). All outputs exist before the
    // timed calls (the first round faults their pages in).
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes)?);
    let mut work = plain.clone();
    work.extend_from_slice(&[0; 16]);
    let mut other = work.clone();
    let (mut sealed, mut opened) = (Vec::new(), Vec::new());
    let mut t = [Duration::MAX; 5];
    let nonce = || Nonce::assume_unique_for_key([0; 12]);
    let time = |slot: &mut Duration, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let start = Instant::now();
        f()?;
        *slot = (*slot).min(start.elapsed());
        Ok(())
    };
    for _ in 0..runs {
        work[..len].copy_from_slice(&plain);
        time(&mut t[0], &mut || {
            let tag = raw.seal_in_place_separate_tag(nonce(), Aad::empty(), &mut work[..len])?;
            work[len..].copy_from_slice(tag.as_ref());
            Ok(())
        })?;
        time(&mut t[1], &mut || {
            let (ct, tag) = other.split_at_mut(len);
            raw.seal_out_of_place_scatter(nonce(), Aad::empty(), &plain, ct, &[], tag)?;
            Ok(())
        })?;
        time(&mut t[2], &mut || {
            seal_bytes_into(&plain, &keys, &context, &mut sealed)?;
            Ok(())
        })?;
        time(&mut t[3], &mut || {
            raw.open_in_place(nonce(), Aad::empty(), &mut work)?;
            Ok(())
        })?;
        time(&mut t[4], &mut || {
            open_bytes_into(&sealed, &keys, &context, &mut opened)?;
            Ok(())
        })?;
        ensure!(work[..len] == plain[..] && opened == plain);
    }
    drop((work, other, opened));
    for (name, t) in [
        ("raw aws-lc-rs AES-256-GCM seal, in memory, in place", t[0]),
        (
            "raw aws-lc-rs AES-256-GCM seal, in memory, out of place",
            t[1],
        ),
        ("raw aws-lc-rs AES-256-GCM open, in memory, in place", t[3]),
        ("twinseal seal_bytes_into, in memory", t[2]),
        ("twinseal open_bytes_into, in memory", t[4]),
    ] {
        rows.push((name.into(), mib_s(len, t)));
    }
    // The same with a fresh output allocation each time: on a VM, faulting in
    // new pages costs more than the encryption.
    let t = best(runs, |setup| {
        if !setup {
            drop(seal_bytes(&plain, &keys, &context)?);
        }
        Ok(())
    })?;
    rows.push((
        "twinseal seal_bytes (fresh output Vec), in memory".into(),
        mib_s(len, t),
    ));
    let t = best(runs, |setup| {
        if !setup {
            drop(open_bytes(&sealed, &keys, &context)?);
        }
        Ok(())
    })?;
    rows.push((
        "twinseal open_bytes (fresh output Vec), in memory".into(),
        mib_s(len, t),
    ));
    let t = best(runs, |setup| {
        if setup {
            return Ok(());
        }
        let mut sealer = Sealer::new(std::io::sink(), &keys, &context)?;
        sealer.write_all(&plain)?;
        sealer.finish()?;
        Ok(())
    })?;
    rows.push((
        "twinseal Sealer stream, memory to sink".into(),
        mib_s(len, t),
    ));
    let t = best(runs, |setup| {
        if setup {
            return Ok(());
        }
        let mut opener = Opener::new(sealed.as_slice(), &keys, &context)?;
        opener.copy_to(&mut std::io::sink())?;
        Ok(())
    })?;
    rows.push((
        "twinseal Opener stream, memory to sink".into(),
        mib_s(len, t),
    ));
    drop(sealed);

    // Files: the same plaintext on disk (page cache), every tool writing a
    // new file next to it.
    let dir = tempfile::tempdir_in(&args.dir)?;
    let d = dir.path();
    let (p, s, o) = (
        d.join("plain.bin"),
        d.join("sealed.twseal"),
        d.join("opened.bin"),
    );
    fs::write(&p, &plain)?;
    fs::write(d.join("key"), key_bytes)?;
    drop(plain);
    // One round runs every file row once, so that all tools see the same
    // load; each row keeps its best round. Outputs are deleted (untimed)
    // before each timed step.
    let exe = std::env::current_exe()?;
    let cli = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("twinseal"));
    let cli = cli.filter(|c| c.is_file());
    if cli.is_none() {
        eprintln!(
            "note: no twinseal binary next to {}; build it with --release to include the CLI rows",
            exe.display()
        );
    }
    let recipient = if args.age {
        run(Command::new("age-keygen")
            .args(["-o", "age-id.txt"])
            .current_dir(d))?;
        let out = Command::new("age-keygen")
            .args(["-y", "age-id.txt"])
            .current_dir(d)
            .output()?;
        Some(String::from_utf8(out.stdout)?.trim().to_owned())
    } else {
        None
    };
    let a = d.join("sealed.age");
    let mut file_rows: Vec<(&str, Duration)> = Vec::new();
    let mut record =
        |name: &'static str, clean: &Path, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            rm(clean);
            let start = Instant::now();
            f()?;
            let t = start.elapsed();
            match file_rows.iter_mut().find(|(n, _)| *n == name) {
                Some((_, best)) => *best = (*best).min(t),
                None => file_rows.push((name, t)),
            }
            Ok(())
        };
    for _ in 0..runs {
        // The floor for any tool that reads one file and writes another in
        // user space: a read/write loop (1 MiB buffer) with no crypto at all.
        record(
            "no crypto: read/write copy loop, file to file",
            &o,
            &mut || {
                let (mut src, mut dst) = (File::open(&p)?, File::create_new(&o)?);
                let mut buf = vec![0u8; IO_BUFFER_SIZE];
                loop {
                    let n = src.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    dst.write_all(&buf[..n])?;
                }
                Ok(())
            },
        )?;
        record("twinseal library seal, file to file", &s, &mut || {
            let mut sealer = Sealer::new(AtomicOutput::create(&s)?, &keys, &context)?;
            sealer.copy_from(&mut BufReader::with_capacity(
                IO_BUFFER_SIZE,
                File::open(&p)?,
            ))?;
            sealer.finish()?.commit()?;
            Ok(())
        })?;
        record("twinseal library unseal, file to file", &o, &mut || {
            let mut out = AtomicOutput::create(&o)?;
            let input = BufReader::with_capacity(IO_BUFFER_SIZE, File::open(&s)?);
            Opener::new(input, &keys, &context)?.copy_to(&mut out)?;
            out.commit()?;
            Ok(())
        })?;
        ensure!(fs::metadata(&o)?.len() == len as u64);
        if let Some(cli) = &cli {
            let seal = [
                "seal",
                "-k",
                "key",
                "-c",
                "purpose=bench",
                "plain.bin",
                "-o",
                "sealed.twseal",
            ];
            record("twinseal seal CLI, file to file", &s, &mut || {
                run(Command::new(cli).args(seal).current_dir(d))
            })?;
            let unseal = [
                "unseal",
                "-k",
                "key",
                "-c",
                "purpose=bench",
                "sealed.twseal",
                "-o",
                "opened.bin",
            ];
            record("twinseal unseal CLI, file to file", &o, &mut || {
                run(Command::new(cli).args(unseal).current_dir(d))
            })?;
            ensure!(fs::metadata(&o)?.len() == len as u64);
        }
        if let Some(recipient) = &recipient {
            record("age encrypt (X25519), file to file", &a, &mut || {
                run(Command::new("age")
                    .args(["-r", recipient, "-o", "sealed.age", "plain.bin"])
                    .current_dir(d))
            })?;
            record("age decrypt (X25519), file to file", &o, &mut || {
                run(Command::new("age")
                    .args(["-d", "-i", "age-id.txt", "-o", "opened.bin", "sealed.age"])
                    .current_dir(d))
            })?;
            ensure!(fs::metadata(&o)?.len() == len as u64);
        }
    }
    for (name, t) in file_rows {
        rows.push((name.into(), mib_s(len, t)));
    }

    let get = |name: &str| rows.iter().find(|(n, _)| n.starts_with(name)).map(|r| r.1);
    println!("| {} MiB, best of {runs} | MiB/s |", args.mib);
    println!("| --- | ---: |");
    for (name, v) in &rows {
        println!("| {name} | {v:.0} |");
    }
    println!();
    let ratio = |a: &str, b: &str| {
        if let (Some(x), Some(y)) = (get(a), get(b)) {
            println!("- {a} / {b}: {:.2}x", x / y);
        }
    };
    ratio(
        "twinseal seal_bytes_into",
        "raw aws-lc-rs AES-256-GCM seal, in memory, in place",
    );
    ratio(
        "twinseal seal_bytes_into",
        "raw aws-lc-rs AES-256-GCM seal, in memory, out of place",
    );
    ratio("twinseal open_bytes_into", "raw aws-lc-rs AES-256-GCM open");
    ratio("twinseal seal_bytes (", "raw aws-lc-rs AES-256-GCM seal");
    ratio("twinseal open_bytes (", "raw aws-lc-rs AES-256-GCM open");
    ratio("twinseal Sealer stream", "raw aws-lc-rs AES-256-GCM seal");
    ratio("twinseal Opener stream", "raw aws-lc-rs AES-256-GCM open");
    ratio("twinseal seal CLI", "age encrypt");
    ratio("twinseal unseal CLI", "age decrypt");
    ratio("twinseal library seal", "age encrypt");
    ratio("twinseal library unseal", "age decrypt");
    ratio("no crypto", "age encrypt");
    Ok(())
}
