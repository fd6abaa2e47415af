//! Every way of tampering with a sealed file that the issue lists is rejected.

use crate::common;

use crate::common::{ctx, impostor, key, open_stream, plaintext, rejected};
use twinseal_envelope::{
    Context, Error, Header, Kek, SEALED_SEGMENT_SIZE, SEGMENT_SIZE, open_bytes, seal_bytes,
};

/// A small 3-segment file: two full segments and a short last one.
fn three_segments() -> (Vec<u8>, Vec<u8>, Kek, Context) {
    let k = key(7);
    let context = ctx(&[("purpose", "test")]);
    let plain = plaintext(2 * SEGMENT_SIZE + 100);
    let sealed = seal_bytes(&plain, std::slice::from_ref(&k), &context).unwrap();
    (plain, sealed, k, context)
}

fn header_len(sealed: &[u8]) -> usize {
    Header::parse(sealed).unwrap().len()
}

/// The payload split into its sealed segments.
fn segments(sealed: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let h = header_len(sealed);
    let segs = sealed[h..]
        .chunks(SEALED_SEGMENT_SIZE)
        .map(<[u8]>::to_vec)
        .collect();
    (sealed[..h].to_vec(), segs)
}

fn join(header: &[u8], segs: &[&Vec<u8>]) -> Vec<u8> {
    let mut out = header.to_vec();
    for s in segs {
        out.extend_from_slice(s);
    }
    out
}

#[test]
fn the_untouched_file_opens_with_every_opener() {
    let (plain, sealed, k, context) = three_segments();
    let keys = [k];
    assert_eq!(segments(&sealed).1.len(), 3);
    assert_eq!(open_bytes(&sealed, &keys, &context).unwrap(), plain);
    assert_eq!(open_stream(&sealed, &keys, &context).unwrap(), plain);
    assert_eq!(common::open_seek(&sealed, &keys, &context).unwrap(), plain);
}

/// Exhaustive: every single-bit flip of every byte of the file.
#[test]
fn every_single_bit_flip_is_rejected() {
    let (_, mut sealed, k, context) = three_segments();
    let keys = [k];
    let h = header_len(&sealed);
    for i in 0..sealed.len() {
        for bit in 0..8 {
            sealed[i] ^= 1 << bit;
            let result = open_bytes(&sealed, &keys, &context);
            sealed[i] ^= 1 << bit;
            let Err(err) = result else {
                panic!("flip of bit {bit} of byte {i} was accepted");
            };
            // Past the public fields (salt onward is covered by the MAC;
            // the last 64 header bytes and the payload are secret-checked),
            // the error must be the single coarse one.
            if i >= h - 64 {
                assert!(
                    matches!(err, Error::DecryptionFailed),
                    "byte {i} bit {bit}: {err}"
                );
            }
        }
    }
    // The streaming opener on every flip would double the run time; check it
    // on one flip per byte, a different bit each time.
    for i in 0..sealed.len() {
        sealed[i] ^= 1 << (i % 8);
        assert!(open_stream(&sealed, &keys, &context).is_err(), "byte {i}");
        sealed[i] ^= 1 << (i % 8);
    }
}

#[test]
fn truncation_at_every_header_byte_is_rejected() {
    let (_, sealed, k, context) = three_segments();
    let keys = [k];
    for cut in 0..=header_len(&sealed) {
        rejected(&sealed[..cut], &keys, &context);
    }
}

#[test]
fn truncation_at_every_segment_boundary_is_rejected() {
    let (_, sealed, k, context) = three_segments();
    let keys = [k];
    let h = header_len(&sealed);
    for n in 0..3 {
        let cut = h + n * SEALED_SEGMENT_SIZE;
        for cut in [cut, cut + 1, cut + 16, cut + 17] {
            let err = rejected(&sealed[..cut], &keys, &context);
            assert!(
                matches!(err, Error::DecryptionFailed),
                "cut at {cut}: {err}"
            );
        }
    }
    // And one byte short of the full file.
    rejected(&sealed[..sealed.len() - 1], &keys, &context);
}

#[test]
fn segment_swap_duplicate_and_drop_are_rejected() {
    let (_, sealed, k, context) = three_segments();
    let keys = [k];
    let (h, s) = segments(&sealed);
    let cases = [
        ("swap 0 and 1", join(&h, &[&s[1], &s[0], &s[2]])),
        ("duplicate 0", join(&h, &[&s[0], &s[0], &s[2]])),
        ("duplicate 1", join(&h, &[&s[0], &s[1], &s[1], &s[2]])),
        ("drop 0", join(&h, &[&s[1], &s[2]])),
        ("drop 1", join(&h, &[&s[0], &s[2]])),
        ("drop last", join(&h, &[&s[0], &s[1]])),
        ("last first", join(&h, &[&s[2], &s[0], &s[1]])),
    ];
    for (name, bad) in cases {
        let err = rejected(&bad, &keys, &context);
        assert!(matches!(err, Error::DecryptionFailed), "{name}: {err}");
    }
}

#[test]
fn segments_spliced_from_another_file_under_the_same_key_are_rejected() {
    let (_, a, k, context) = three_segments();
    let keys = [k];
    // Same key, same context, same plaintext: only the salt differs.
    let b = seal_bytes(&plaintext(2 * SEGMENT_SIZE + 100), &keys, &context).unwrap();
    let (ha, sa) = segments(&a);
    let (hb, sb) = segments(&b);
    for i in 0..3 {
        let mut mixed: Vec<&Vec<u8>> = sa.iter().collect();
        mixed[i] = &sb[i];
        let err = rejected(&join(&ha, &mixed), &keys, &context);
        assert!(matches!(err, Error::DecryptionFailed), "segment {i}: {err}");
    }
    // Header of one file with the payload of the other.
    let swapped = join(&hb, &sa.iter().collect::<Vec<_>>());
    assert!(matches!(
        rejected(&swapped, &keys, &context),
        Error::DecryptionFailed
    ));
}

#[test]
fn wrong_key_is_rejected() {
    let (_, sealed, _, context) = three_segments();
    // A key with another id has no stanza.
    let err = rejected(&sealed, &[key(8)], &context);
    assert!(matches!(err, Error::NoStanza), "{err}");
    // A key claiming the right id but with other bytes fails to authenticate.
    let err = rejected(&sealed, &[impostor(7, 9)], &context);
    assert!(matches!(err, Error::DecryptionFailed), "{err}");
    // No key at all.
    assert!(matches!(rejected(&sealed, &[], &context), Error::NoStanza));
}

#[test]
fn wrong_context_is_rejected() {
    let (_, sealed, k, _) = three_segments();
    let keys = [k];
    for bad in [
        ctx(&[]),
        ctx(&[("purpose", "model")]),
        ctx(&[("purpose", "test"), ("name", "siamese")]),
        ctx(&[("Purpose", "test")]),
    ] {
        let err = rejected(&sealed, &keys, &bad);
        assert!(matches!(err, Error::ContextMismatch), "{bad:?}: {err}");
    }
}

#[test]
fn trailing_garbage_is_rejected() {
    let (_, sealed, k, context) = three_segments();
    let keys = [k];
    for extra in [
        1,
        15,
        16,
        17,
        SEALED_SEGMENT_SIZE - 1,
        SEALED_SEGMENT_SIZE,
        SEALED_SEGMENT_SIZE + 1,
    ] {
        let mut bad = sealed.clone();
        bad.extend(std::iter::repeat_n(0u8, extra));
        let err = rejected(&bad, &keys, &context);
        assert!(
            matches!(err, Error::DecryptionFailed),
            "{extra} bytes: {err}"
        );
    }
    // Garbage that is a copy of the last segment, too.
    let (h, s) = segments(&sealed);
    let bad = join(&h, &[&s[0], &s[1], &s[2], &s[2]]);
    assert!(matches!(
        rejected(&bad, &keys, &context),
        Error::DecryptionFailed
    ));
}

#[test]
fn a_full_multiple_of_the_segment_size_has_no_empty_trailing_segment() {
    let k = key(3);
    let keys = [k];
    let sealed = seal_bytes(&plaintext(2 * SEGMENT_SIZE), &keys, &Context::new()).unwrap();
    let h = header_len(&sealed);
    assert_eq!(sealed.len() - h, 2 * SEALED_SEGMENT_SIZE);
    // Dropping the last full segment must not leave an acceptable file.
    rejected(&sealed[..h + SEALED_SEGMENT_SIZE], &keys, &Context::new());
}

#[test]
fn distinct_errors_for_public_problems() {
    let (_, sealed, k, context) = three_segments();
    let keys = [k];
    assert!(matches!(rejected(b"", &keys, &context), Error::NotTwinseal));
    assert!(matches!(
        rejected(b"PK\x03\x04 a zip file", &keys, &context),
        Error::NotTwinseal
    ));
    let mut v2 = sealed.clone();
    v2[8] = 2;
    assert!(matches!(
        rejected(&v2, &keys, &context),
        Error::UnsupportedVersion(2)
    ));
    let mut long = sealed.clone();
    long[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        rejected(&long, &keys, &context),
        Error::InvalidHeader(_)
    ));
}

#[test]
fn a_file_sealed_to_two_keys_opens_with_either() {
    let (a, b) = (key(1), key(2));
    let plain = plaintext(1000);
    let context = ctx(&[("name", "siamese")]);
    let keys = [a, b];
    let sealed = seal_bytes(&plain, &keys, &context).unwrap();
    let [a, b] = keys;
    assert_eq!(open_bytes(&sealed, &[a], &context).unwrap(), plain);
    assert_eq!(open_bytes(&sealed, &[b], &context).unwrap(), plain);
    let ids: Vec<_> = Header::parse(&sealed)
        .unwrap()
        .stanzas()
        .iter()
        .map(|s| s.key_id.to_string())
        .collect();
    assert_eq!(ids.len(), 2);
}

#[test]
fn sealing_refuses_bad_recipients() {
    let p = b"x";
    let c = Context::new();
    assert!(matches!(
        seal_bytes(p, &[], &c),
        Err(Error::InvalidRecipients(_))
    ));
    assert!(matches!(
        seal_bytes(p, &[key(1), key(1)], &c),
        Err(Error::InvalidRecipients(_))
    ));
}

#[test]
fn tampering_across_a_batch_boundary_of_the_streaming_opener_is_rejected() {
    // 40 segments: the streaming opener reads them in batches of 16.
    let k = key(11);
    let keys = [k];
    let context = Context::new();
    let plain = plaintext(39 * SEGMENT_SIZE + 3);
    let sealed = seal_bytes(&plain, &keys, &context).unwrap();
    assert_eq!(open_stream(&sealed, &keys, &context).unwrap(), plain);
    let (h, s) = segments(&sealed);
    assert_eq!(s.len(), 40);
    let all: Vec<&Vec<u8>> = s.iter().collect();
    for cut in [16, 32] {
        let err = rejected(&join(&h, &all[..cut]), &keys, &context);
        assert!(matches!(err, Error::DecryptionFailed), "cut {cut}: {err}");
    }
    for (a, b) in [(15, 16), (16, 17), (31, 32), (0, 39)] {
        let mut swapped = all.clone();
        swapped.swap(a, b);
        let err = rejected(&join(&h, &swapped), &keys, &context);
        assert!(
            matches!(err, Error::DecryptionFailed),
            "swap {a},{b}: {err}"
        );
    }
    let mut dropped = all.clone();
    dropped.remove(16);
    assert!(matches!(
        rejected(&join(&h, &dropped), &keys, &context),
        Error::DecryptionFailed
    ));
}
