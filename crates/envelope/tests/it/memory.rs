//! Sealing and opening 4 GiB keeps the process's peak memory under 64 MiB.
//!
//! This file holds a single test, so its binary is a process of its own and
//! `VmHWM` (the peak resident set size) in `/proc/self/status` measures
//! exactly this test. The 4 GiB never touch the disk: a thread seals
//! generated plaintext into a pipe and the test opens the other end,
//! checking every byte.

use std::io::{self, Write};
use std::thread;

use crate::common::{ctx, key, plaintext};
use twinseal_envelope::{Opener, Sealer};

const TOTAL: u64 = 4 << 30;
const CHUNK: usize = 1 << 20;
const LIMIT_KIB: u64 = 64 << 10;

/// Checks that the bytes it receives repeat `pattern`.
struct Check<'a> {
    pattern: &'a [u8],
    offset: u64,
}

impl Write for Check<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let at = (self.offset % self.pattern.len() as u64) as usize;
            let n = rest.len().min(self.pattern.len() - at);
            assert!(
                rest[..n] == self.pattern[at..at + n],
                "wrong plaintext at {}",
                self.offset
            );
            self.offset += n as u64;
            rest = &rest[n..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn sealing_and_opening_4_gib_peaks_under_64_mib() {
    let pattern = plaintext(CHUNK);
    let context = ctx(&[("purpose", "memory-test")]);
    let (reader, writer) = io::pipe().unwrap();
    let sealing = {
        let pattern = pattern.clone();
        let context = context.clone();
        thread::spawn(move || {
            let mut sealer = Sealer::new(writer, &[key(4)], &context).unwrap();
            for _ in 0..TOTAL / CHUNK as u64 {
                sealer.write_all(&pattern).unwrap();
            }
            drop(sealer.finish().unwrap());
        })
    };
    let mut opener = Opener::new(reader, &[key(4)], &context).unwrap();
    let mut check = Check {
        pattern: &pattern,
        offset: 0,
    };
    let opened = opener.copy_to(&mut check).unwrap();
    sealing.join().unwrap();
    assert_eq!(opened, TOTAL);
    assert_eq!(check.offset, TOTAL);
    let peak = peak_rss_kib();
    eprintln!("peak resident memory after sealing and opening 4 GiB: {peak} KiB");
    assert!(
        peak < LIMIT_KIB,
        "peak memory {peak} KiB is over {LIMIT_KIB} KiB"
    );
}
