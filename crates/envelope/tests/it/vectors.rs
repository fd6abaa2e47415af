//! Conformance vectors (specification, section 8) and an independent encoder
//! written from the specification with raw aws-lc-rs calls.
//!
//! Regenerate the vectors (random salts and nonces, so the bytes change):
//!
//! ```sh
//! cargo test -p twinseal-envelope --test vectors -- --ignored generate_vectors
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{ctx, open_seek, open_stream, plaintext, rejected};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac, rand};
use twinseal_envelope::{
    Context, Header, Kek, SEALED_SEGMENT_SIZE, SEGMENT_SIZE, SecretKey, open_bytes,
    open_bytes_with_file_key, seal_bytes,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

const KEY_A: [u8; 32] = *b"twinseal test key A, never use!!";
const KEY_B: [u8; 32] = *b"twinseal test key B, never use!!";

fn kek(bytes: [u8; 32]) -> Kek {
    Kek::local(SecretKey::from_bytes(bytes))
}

fn read_context(path: &Path) -> Context {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut context = Context::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (k, v) = Context::parse_pair(line).unwrap();
        context.insert(k, v).unwrap();
    }
    context
}

fn write_context(path: &Path, pairs: &[(&str, &str)]) {
    let text: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    fs::write(path, text).unwrap();
}

#[test]
fn every_vector_conforms() {
    let key_a = fs::read(dir().join("key-a.bin")).unwrap();
    let keys = [Kek::local(SecretKey::from_slice(&key_a).unwrap())];
    let (mut ok, mut fail) = (0, 0);
    for item in fs::read_dir(dir()).unwrap() {
        let path = item.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".twseal") else {
            continue;
        };
        let sealed = fs::read(&path).unwrap();
        let context = read_context(&dir().join(format!("{stem}.context")));
        if stem.starts_with("ok_") {
            let expected = fs::read(dir().join(format!("{stem}.plain"))).unwrap();
            assert_eq!(
                open_bytes(&sealed, &keys, &context).unwrap(),
                expected,
                "{name}"
            );
            assert_eq!(
                open_stream(&sealed, &keys, &context).unwrap(),
                expected,
                "{name}"
            );
            assert_eq!(
                open_seek(&sealed, &keys, &context).unwrap(),
                expected,
                "{name}"
            );
            // The key manager's path: release the key, open with it.
            let file_key = Header::parse(&sealed)
                .unwrap()
                .unwrap_file_key(&keys)
                .unwrap();
            assert_eq!(
                open_bytes_with_file_key(&sealed, &file_key, &context).unwrap(),
                expected,
                "{name}"
            );
            ok += 1;
        } else if stem.starts_with("fail_") {
            rejected(&sealed, &keys, &context);
            fail += 1;
        } else {
            panic!("vector {name} is neither ok_ nor fail_");
        }
    }
    assert!(
        ok >= 8 && fail >= 15,
        "too few vectors: {ok} ok, {fail} fail"
    );
}

/// Deviations from the specification the independent encoder can make.
#[derive(Default, Clone, Copy)]
struct Tweak {
    wrong_commitment: bool,
    empty_trailing_segment: bool,
    unsorted_context: bool,
    unknown_stanza_first: bool,
}

fn expand(prk: &hkdf::Prk, info: &[u8]) -> [u8; 32] {
    struct L;
    impl hkdf::KeyType for L {
        fn len(&self) -> usize {
            32
        }
    }
    let mut out = [0u8; 32];
    prk.expand(&[info], L).unwrap().fill(&mut out).unwrap();
    out
}

fn gcm(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap())
}

/// A sealed file built from the text of the specification alone.
fn spec_seal(kek: &[u8; 32], context: &[(&str, &str)], plain: &[u8], tweak: Tweak) -> Vec<u8> {
    let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, kek);
    let id = format!(
        "local-{}",
        hex::encode(&hmac::sign(&hmac_key, b"twinseal/v1 key id").as_ref()[..8])
    );
    let mut file_key = [0u8; 32];
    let mut salt = [0u8; 32];
    rand::fill(&mut file_key).unwrap();
    rand::fill(&mut salt).unwrap();
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&file_key);
    let (pk, mk, mut c) = (
        expand(&prk, b"twinseal/v1 payload"),
        expand(&prk, b"twinseal/v1 header"),
        expand(&prk, b"twinseal/v1 commit"),
    );
    if tweak.wrong_commitment {
        c[0] ^= 1;
    }
    let wk = expand(
        &hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(kek),
        b"twinseal/v1 wrap",
    );

    let mut h = b"TWINSEAL\x01\0\0\0\0".to_vec();
    h.extend_from_slice(&salt);
    h.push(if tweak.unknown_stanza_first { 2 } else { 1 });
    if tweak.unknown_stanza_first {
        // Type 0x7f, id "future", 3-byte body: readers must skip it.
        h.extend_from_slice(b"\x7f\x06future\x00\x03abc");
    }
    let mut nonce = [0u8; 12];
    rand::fill(&mut nonce).unwrap();
    let mut aad = b"twinseal/v1 stanza".to_vec();
    aad.push(id.len() as u8);
    aad.extend_from_slice(id.as_bytes());
    let mut wrapped = file_key.to_vec();
    let tag = gcm(&wk)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut wrapped,
        )
        .unwrap();
    h.push(1);
    h.push(id.len() as u8);
    h.extend_from_slice(id.as_bytes());
    h.extend_from_slice(&60u16.to_be_bytes());
    h.extend_from_slice(&nonce);
    h.extend_from_slice(&wrapped);
    h.extend_from_slice(tag.as_ref());
    let mut pairs = context.to_vec();
    pairs.sort();
    if tweak.unsorted_context {
        pairs.reverse();
    }
    h.push(pairs.len() as u8);
    for (k, v) in pairs {
        h.push(k.len() as u8);
        h.extend_from_slice(k.as_bytes());
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    h.extend_from_slice(&c);
    let total = (h.len() + 32) as u32;
    h[9..13].copy_from_slice(&total.to_be_bytes());
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &mk), &h);
    h.extend_from_slice(mac.as_ref());

    let mut chunks: Vec<&[u8]> = plain.chunks(SEGMENT_SIZE).collect();
    if chunks.is_empty() || tweak.empty_trailing_segment {
        chunks.push(&[]);
    }
    let payload = gcm(&pk);
    for (i, chunk) in chunks.iter().enumerate() {
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&(i as u64).to_be_bytes());
        n[11] = u8::from(i + 1 == chunks.len());
        let mut seg = chunk.to_vec();
        payload
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::empty(), &mut seg)
            .unwrap();
        h.extend_from_slice(&seg);
    }
    h
}

#[test]
fn the_independent_encoder_and_the_crate_agree() {
    let keys = [kek(KEY_A)];
    let pairs = [("name", "siamese"), ("purpose", "model")];
    let context = ctx(&pairs);
    for len in [0, 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 3 * SEGMENT_SIZE - 1] {
        let plain = plaintext(len);
        let sealed = spec_seal(&KEY_A, &pairs, &plain, Tweak::default());
        assert_eq!(
            open_bytes(&sealed, &keys, &context).unwrap(),
            plain,
            "len {len}"
        );
        // Same header layout and length as the crate's own output.
        let ours = seal_bytes(&plain, &keys, &context).unwrap();
        assert_eq!(ours.len(), sealed.len());
        assert_eq!(
            Header::parse(&ours).unwrap().len(),
            Header::parse(&sealed).unwrap().len()
        );
    }
    let tweaked = Tweak {
        unknown_stanza_first: true,
        ..Tweak::default()
    };
    let sealed = spec_seal(&KEY_A, &pairs, b"hi", tweaked);
    assert_eq!(open_bytes(&sealed, &keys, &context).unwrap(), b"hi");
    for tweak in [
        Tweak {
            wrong_commitment: true,
            ..Tweak::default()
        },
        Tweak {
            empty_trailing_segment: true,
            ..Tweak::default()
        },
        Tweak {
            unsorted_context: true,
            ..Tweak::default()
        },
    ] {
        rejected(
            &spec_seal(&KEY_A, &pairs, &plaintext(SEGMENT_SIZE), tweak),
            &keys,
            &context,
        );
    }
}

/// Writes `tests/vectors/`. Ignored: run it on purpose (see the module docs).
#[test]
#[ignore = "regenerates the committed conformance vectors"]
fn generate_vectors() {
    let d = dir();
    if d.exists() {
        fs::remove_dir_all(&d).unwrap();
    }
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("key-a.bin"), KEY_A).unwrap();
    fs::write(d.join("key-b.bin"), KEY_B).unwrap();
    let (a, b) = (|| kek(KEY_A), || kek(KEY_B));
    let model = [("name", "siamese"), ("purpose", "model")];
    let ok = |name: &str, plain: &[u8], sealed: Vec<u8>, pairs: &[(&str, &str)]| {
        fs::write(d.join(format!("ok_{name}.twseal")), sealed).unwrap();
        fs::write(d.join(format!("ok_{name}.plain")), plain).unwrap();
        write_context(&d.join(format!("ok_{name}.context")), pairs);
    };
    let seal = |plain: &[u8], keys: &[Kek], pairs: &[(&str, &str)]| {
        seal_bytes(plain, keys, &ctx(pairs)).unwrap()
    };
    for (name, len) in [
        ("empty", 0),
        ("one_byte", 1),
        ("segment_minus_one", SEGMENT_SIZE - 1),
        ("one_segment", SEGMENT_SIZE),
        ("segment_plus_one", SEGMENT_SIZE + 1),
    ] {
        let plain = plaintext(len);
        ok(name, &plain, seal(&plain, &[a()], &[]), &[]);
    }
    let three = plaintext(2 * SEGMENT_SIZE + 100);
    let three_sealed = seal(&three, &[a()], &model);
    ok(
        "three_segments_context",
        &three,
        three_sealed.clone(),
        &model,
    );
    ok(
        "two_recipients",
        b"for a or b",
        seal(b"for a or b", &[b(), a()], &model),
        &model,
    );
    let future = Tweak {
        unknown_stanza_first: true,
        ..Tweak::default()
    };
    ok(
        "unknown_stanza_skipped",
        b"skip",
        spec_seal(&KEY_A, &model, b"skip", future),
        &model,
    );
    ok(
        "spec_encoder",
        &three,
        spec_seal(&KEY_A, &model, &three, Tweak::default()),
        &model,
    );

    let fail = |name: &str, sealed: &[u8], pairs: &[(&str, &str)]| {
        fs::write(d.join(format!("fail_{name}.twseal")), sealed).unwrap();
        write_context(&d.join(format!("fail_{name}.context")), pairs);
    };
    // Header and context failures on a one-segment file; segment failures on
    // a file of two full segments and a short third (kept small: these are
    // committed).
    let small = seal(b"a small sealed payload", &[a()], &model);
    let hs = Header::parse(&small).unwrap().len();
    let flip = |v: &[u8], at: usize| {
        let mut v = v.to_vec();
        v[at] ^= 0x01;
        v
    };
    let base = plaintext(2 * SEGMENT_SIZE + 1);
    let base_sealed = seal(&base, &[a()], &model);
    let h = Header::parse(&base_sealed).unwrap().len();
    let seg = |i: usize| {
        let start = h + i * SEALED_SEGMENT_SIZE;
        base_sealed[start..(start + SEALED_SEGMENT_SIZE).min(base_sealed.len())].to_vec()
    };
    let with = |segs: &[Vec<u8>]| [base_sealed[..h].to_vec(), segs.concat()].concat();
    fail(
        "bad_magic",
        &[b"TWINSEAX".as_slice(), &small[8..]].concat(),
        &model,
    );
    fail(
        "version_2",
        &{
            let mut v = small.clone();
            v[8] = 2;
            v
        },
        &model,
    );
    fail("header_length_off_by_one", &flip(&small, 12), &model);
    fail("flip_salt", &flip(&small, 20), &model);
    fail("flip_commitment", &flip(&small, hs - 40), &model);
    fail("flip_header_mac", &flip(&small, hs - 1), &model);
    fail("flip_payload", &flip(&small, hs + 3), &model);
    fail("flip_last_tag", &flip(&small, small.len() - 1), &model);
    fail("truncated_header", &small[..hs - 1], &model);
    fail("no_payload", &small[..hs], &model);
    fail(
        "trailing_garbage",
        &[small.as_slice(), b"x"].concat(),
        &model,
    );
    fail(
        "wrong_context",
        &small,
        &[("name", "siamese"), ("purpose", "dataset")],
    );
    fail("missing_context", &small, &[]);
    fail(
        "truncated_at_segment_boundary",
        &base_sealed[..h + 2 * SEALED_SEGMENT_SIZE],
        &model,
    );
    fail("swapped_segments", &with(&[seg(1), seg(0), seg(2)]), &model);
    fail(
        "duplicated_segment",
        &with(&[seg(0), seg(0), seg(1), seg(2)]),
        &model,
    );
    fail("dropped_segment", &with(&[seg(0), seg(2)]), &model);
    let other = seal(&base, &[a()], &model);
    let spliced = other[h + SEALED_SEGMENT_SIZE..h + 2 * SEALED_SEGMENT_SIZE].to_vec();
    fail("spliced_segment", &with(&[seg(0), spliced, seg(2)]), &model);
    fail(
        "no_stanza_for_key",
        &seal(b"for b only", &[b()], &model),
        &model,
    );
    let impostor = Kek::new(a().id().clone(), SecretKey::from_bytes(KEY_B));
    fail(
        "wrong_key_same_id",
        &seal(b"right id, wrong key", &[impostor], &model),
        &model,
    );
    let tweak = |t: Tweak| spec_seal(&KEY_A, &model, &plaintext(SEGMENT_SIZE), t);
    fail(
        "commitment_mismatch",
        &tweak(Tweak {
            wrong_commitment: true,
            ..Tweak::default()
        }),
        &model,
    );
    fail(
        "empty_trailing_segment",
        &tweak(Tweak {
            empty_trailing_segment: true,
            ..Tweak::default()
        }),
        &model,
    );
    fail(
        "unsorted_context",
        &tweak(Tweak {
            unsorted_context: true,
            ..Tweak::default()
        }),
        &model,
    );
    fs::write(d.join("README.md"), VECTORS_README).unwrap();
}

const VECTORS_README: &str = "# Conformance vectors for envelope v1

Normative: see `docs/spec/envelope-v1.md`, section 8. Every `ok_*.twseal` opens
with `key-a.bin` and the pairs in `ok_*.context` (one `key=value` a line) to
exactly `ok_*.plain`; every `fail_*.twseal` must be rejected with `key-a.bin`
and `fail_*.context`. `key-a.bin` and `key-b.bin` are public test keys.

Regenerate (salts and nonces are random, so every byte changes):

    cargo test -p twinseal-envelope --test vectors -- --ignored generate_vectors

`every_vector_conforms` in `crates/envelope/tests/it/vectors.rs` checks them with
all three openers (in memory, streaming, random access) and, for `ok_*`,
through the key manager's path (`Header::unwrap_file_key`, then
`open_bytes_with_file_key`).

| vector | what it exercises |
| --- | --- |
| ok_empty, ok_one_byte | one final segment of 0 and 1 bytes |
| ok_segment_minus_one, ok_one_segment, ok_segment_plus_one | the 64 KiB edge: a full segment is final, no empty trailing segment |
| ok_three_segments_context | three segments and a two-pair context |
| ok_two_recipients | key-b's stanza first, key-a's second |
| ok_unknown_stanza_skipped | a stanza of unknown type 0x7f is skipped |
| ok_spec_encoder | built by the test's independent encoder from the spec text |
| fail_bad_magic, fail_version_2 | not a twinseal file; unsupported version |
| fail_header_length_off_by_one, fail_truncated_header, fail_unsorted_context | invalid header structure |
| fail_flip_salt, fail_flip_commitment, fail_flip_header_mac | header authentication |
| fail_commitment_mismatch | valid MAC, wrong commitment |
| fail_flip_payload, fail_flip_last_tag | segment authentication |
| fail_truncated_at_segment_boundary, fail_no_payload | truncation (no last flag) |
| fail_swapped_segments, fail_duplicated_segment, fail_dropped_segment | STREAM counter |
| fail_spliced_segment | a segment from another file under the same key and context |
| fail_trailing_garbage | a byte after the final segment |
| fail_empty_trailing_segment | an empty final segment after a full one |
| fail_wrong_context, fail_missing_context | context mismatch |
| fail_no_stanza_for_key | sealed to key-b only |
| fail_wrong_key_same_id | a stanza with key-a's id wrapping under other key bytes |
";
