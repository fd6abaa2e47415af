//! Round trips over random sizes (including the segment edges), random write
//! and read chunkings, and every pairing of sealing and opening APIs.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use crate::common::{ctx, key, open_seek, open_stream, plaintext};
use proptest::prelude::*;
use twinseal_envelope::{Opener, SEGMENT_SIZE, Sealer, SeekableOpener, open_bytes, seal_bytes};

const EDGES: [usize; 12] = [
    0,
    1,
    SEGMENT_SIZE - 1,
    SEGMENT_SIZE,
    SEGMENT_SIZE + 1,
    2 * SEGMENT_SIZE - 1,
    2 * SEGMENT_SIZE,
    2 * SEGMENT_SIZE + 1,
    // Batch edges of the streaming Sealer and Opener (16 segments).
    16 * SEGMENT_SIZE - 1,
    16 * SEGMENT_SIZE,
    16 * SEGMENT_SIZE + 1,
    33 * SEGMENT_SIZE + 7,
];

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        proptest::sample::select(EDGES.to_vec()),
        0..40 * SEGMENT_SIZE,
    ]
}

/// Seals through `Sealer::write` in chunks of the given sizes (cycled).
fn seal_chunked(plain: &[u8], chunks: &[usize]) -> Vec<u8> {
    let keys = [key(5)];
    let mut sealer = Sealer::new(Vec::new(), &keys, &ctx(&[("k", "v")])).unwrap();
    let mut rest = plain;
    for &n in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = n.min(rest.len());
        sealer.write_all(&rest[..n]).unwrap();
        rest = &rest[n..];
    }
    sealer.finish().unwrap()
}

#[test]
fn edge_sizes_round_trip_through_every_api() {
    let keys = [key(5)];
    let context = ctx(&[("k", "v")]);
    for len in EDGES {
        let plain = plaintext(len);
        let by_bytes = seal_bytes(&plain, &keys, &context).unwrap();
        let by_write = seal_chunked(&plain, &[1000]);
        let mut sealer = Sealer::new(Vec::new(), &keys, &context).unwrap();
        sealer.copy_from(&mut Cursor::new(&plain)).unwrap();
        let by_copy = sealer.finish().unwrap();
        // Reusing a longer buffer gives the same plaintext back.
        let mut reused = vec![0x55; 5 * SEGMENT_SIZE];
        twinseal_envelope::seal_bytes_into(&plain, &keys, &context, &mut reused).unwrap();
        assert_eq!(reused.len(), by_bytes.len());
        let mut opened = vec![0x55; 5 * SEGMENT_SIZE];
        twinseal_envelope::open_bytes_into(&reused, &keys, &context, &mut opened).unwrap();
        assert_eq!(opened, plain, "len {len}");
        for sealed in [&by_bytes, &by_write, &by_copy] {
            assert_eq!(sealed.len(), by_bytes.len(), "len {len}");
            assert_eq!(
                open_bytes(sealed, &keys, &context).unwrap(),
                plain,
                "len {len}"
            );
            assert_eq!(
                open_stream(sealed, &keys, &context).unwrap(),
                plain,
                "len {len}"
            );
            assert_eq!(
                open_seek(sealed, &keys, &context).unwrap(),
                plain,
                "len {len}"
            );
            let mut opener = Opener::new(Cursor::new(sealed), &keys, &context).unwrap();
            let mut out = Vec::new();
            assert_eq!(opener.copy_to(&mut out).unwrap(), len as u64);
            assert_eq!(out, plain, "len {len}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_sizes_and_chunkings_round_trip(
        len in size(),
        write_chunks in proptest::collection::vec(1usize..3 * SEGMENT_SIZE, 1..5),
        read_chunk in 1usize..2 * SEGMENT_SIZE,
    ) {
        let keys = [key(5)];
        let context = ctx(&[("k", "v")]);
        let plain = plaintext(len);
        let sealed = seal_chunked(&plain, &write_chunks);
        prop_assert_eq!(&open_bytes(&sealed, &keys, &context).unwrap(), &plain);
        let mut opener = Opener::new(Cursor::new(&sealed), &keys, &context).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_chunk];
        loop {
            let n = opener.read(&mut buf).unwrap();
            if n == 0 { break; }
            out.extend_from_slice(&buf[..n]);
        }
        prop_assert_eq!(out, plain);
    }

    #[test]
    fn random_access_reads_any_range(
        len in 1usize..4 * SEGMENT_SIZE,
        reads in proptest::collection::vec((0.0f64..1.0, 0usize..SEGMENT_SIZE + 10), 1..8),
    ) {
        let keys = [key(5)];
        let context = ctx(&[]);
        let plain = plaintext(len);
        let sealed = seal_bytes(&plain, &keys, &context).unwrap();
        let mut opener = SeekableOpener::new(Cursor::new(&sealed), &keys, &context).unwrap();
        prop_assert_eq!(opener.len(), len as u64);
        for (at, n) in reads {
            let start = ((len as f64) * at) as usize;
            opener.seek(SeekFrom::Start(start as u64)).unwrap();
            let mut got = Vec::new();
            (&mut opener).take(n as u64).read_to_end(&mut got).unwrap();
            let end = (start + n).min(len);
            prop_assert_eq!(&got[..], &plain[start..end]);
        }
    }
}

#[test]
fn random_access_reads_a_middle_segment_without_the_ones_before() {
    // Corrupt segment 0: reading segment 2 still works, reading 0 fails.
    let keys = [key(5)];
    let context = ctx(&[]);
    let plain = plaintext(3 * SEGMENT_SIZE + 5);
    let mut sealed = seal_bytes(&plain, &keys, &context).unwrap();
    let h = twinseal_envelope::Header::parse(&sealed).unwrap().len();
    sealed[h + 10] ^= 1;
    let mut opener = SeekableOpener::new(Cursor::new(&sealed), &keys, &context).unwrap();
    opener
        .seek(SeekFrom::Start(2 * SEGMENT_SIZE as u64 + 7))
        .unwrap();
    let mut buf = [0u8; 100];
    opener.read_exact(&mut buf).unwrap();
    assert_eq!(
        &buf[..],
        &plain[2 * SEGMENT_SIZE + 7..2 * SEGMENT_SIZE + 107]
    );
    opener.seek(SeekFrom::Start(0)).unwrap();
    assert!(opener.read(&mut buf).is_err());
}
