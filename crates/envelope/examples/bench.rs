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

    // (a) The limit: one AES-256-GCM call over the whole buffer, in place.
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes)?);
    let mut work = plain.clone();
    let mut tag = None;
    let t = best(runs, |setup| {
        if setup {
            work.copy_from_slice(&plain);
            return Ok(());
        }
        let n = Nonce::assume_unique_for_key([0; 12]);
        tag = Some(raw.seal_in_place_separate_tag(n, Aad::empty(), &mut work)?);
        Ok(())
    })?;
    rows.push((
        "raw aws-lc-rs AES-256-GCM seal, in memory".into(),
        mib_s(len, t),
    ));
    let sealed_raw = work.clone();
    let tag = tag.context("no run")?;
    let t = best(runs, |setup| {
        if setup {
            work.copy_from_slice(&sealed_raw);
            return Ok(());
        }
        let n = Nonce::assume_unique_for_key([0; 12]);
        raw.open_separate_gather(n, Aad::empty(), &sealed_raw, tag.as_ref(), &mut work)?;
        Ok(())
    })?;
    rows.push((
        "raw aws-lc-rs AES-256-GCM open, in memory".into(),
        mib_s(len, t),
    ));
    ensure!(work == plain);
    drop((work, sealed_raw));

    // Ours in memory, like (a): into a buffer that already exists (the first
    // run faults its pages in; the best run does not pay for that).
    let mut sealed = Vec::new();
    let t = best(runs, |setup| {
        if !setup {
            seal_bytes_into(&plain, &keys, &context, &mut sealed)?;
        }
        Ok(())
    })?;
    rows.push(("twinseal seal_bytes_into, in memory".into(), mib_s(len, t)));
    let mut opened = Vec::new();
    let t = best(runs, |setup| {
        if !setup {
            open_bytes_into(&sealed, &keys, &context, &mut opened)?;
        }
        Ok(())
    })?;
    rows.push(("twinseal open_bytes_into, in memory".into(), mib_s(len, t)));
    ensure!(opened == plain);
    drop(opened);
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
    // The floor for any tool that reads one file and writes another in
    // user space: a read/write loop (1 MiB buffer) with no crypto at all.
    let t = best(runs, |setup| {
        if setup {
            rm(&o);
            return Ok(());
        }
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
    })?;
    rows.push((
        "no crypto: read/write copy loop, file to file".into(),
        mib_s(len, t),
    ));
    let t = best(runs, |setup| {
        if setup {
            rm(&s);
            return Ok(());
        }
        let mut sealer = Sealer::new(AtomicOutput::create(&s)?, &keys, &context)?;
        sealer.copy_from(&mut BufReader::with_capacity(
            IO_BUFFER_SIZE,
            File::open(&p)?,
        ))?;
        sealer.finish()?.commit()?;
        Ok(())
    })?;
    rows.push(("twinseal library seal, file to file".into(), mib_s(len, t)));
    let t = best(runs, |setup| {
        if setup {
            rm(&o);
            return Ok(());
        }
        let mut out = AtomicOutput::create(&o)?;
        let input = BufReader::with_capacity(IO_BUFFER_SIZE, File::open(&s)?);
        Opener::new(input, &keys, &context)?.copy_to(&mut out)?;
        out.commit()?;
        Ok(())
    })?;
    rows.push((
        "twinseal library unseal, file to file".into(),
        mib_s(len, t),
    ));
    ensure!(fs::metadata(&o)?.len() == len as u64);

    let exe = std::env::current_exe()?;
    let cli = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("twinseal"));
    let cli = cli.filter(|c| c.is_file());
    if let Some(cli) = &cli {
        let t = best(runs, |setup| {
            if setup {
                rm(&s);
                return Ok(());
            }
            run(Command::new(cli)
                .arg("seal")
                .args([
                    "-k",
                    "key",
                    "-c",
                    "purpose=bench",
                    "plain.bin",
                    "-o",
                    "sealed.twseal",
                ])
                .current_dir(d))
        })?;
        rows.push(("twinseal seal CLI, file to file".into(), mib_s(len, t)));
        let t = best(runs, |setup| {
            if setup {
                rm(&o);
                return Ok(());
            }
            run(Command::new(cli)
                .arg("unseal")
                .args([
                    "-k",
                    "key",
                    "-c",
                    "purpose=bench",
                    "sealed.twseal",
                    "-o",
                    "opened.bin",
                ])
                .current_dir(d))
        })?;
        rows.push(("twinseal unseal CLI, file to file".into(), mib_s(len, t)));
    } else {
        eprintln!(
            "note: no twinseal binary next to {}; build it with --release to include the CLI rows",
            exe.display()
        );
    }

    if args.age {
        run(Command::new("age-keygen")
            .args(["-o", "age-id.txt"])
            .current_dir(d))?;
        let out = Command::new("age-keygen")
            .args(["-y", "age-id.txt"])
            .current_dir(d)
            .output()?;
        let recipient = String::from_utf8(out.stdout)?.trim().to_owned();
        let a = d.join("sealed.age");
        let t = best(runs, |setup| {
            if setup {
                rm(&a);
                return Ok(());
            }
            run(Command::new("age")
                .args(["-r", &recipient, "-o", "sealed.age", "plain.bin"])
                .current_dir(d))
        })?;
        rows.push(("age encrypt (X25519), file to file".into(), mib_s(len, t)));
        let t = best(runs, |setup| {
            if setup {
                rm(&o);
                return Ok(());
            }
            run(Command::new("age")
                .args(["-d", "-i", "age-id.txt", "-o", "opened.bin", "sealed.age"])
                .current_dir(d))
        })?;
        rows.push(("age decrypt (X25519), file to file".into(), mib_s(len, t)));
        ensure!(fs::metadata(&o)?.len() == len as u64);
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
    ratio("twinseal seal_bytes_into", "raw aws-lc-rs AES-256-GCM seal");
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
