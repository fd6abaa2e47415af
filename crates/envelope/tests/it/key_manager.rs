//! Keys held by a key manager (specification, section 9): the key manager
//! builds the header with `new_header` or releases the file key of an existing
//! header with `Header::unwrap_file_key`; the client seals or opens the payload
//! with the file key alone. Files made either way are the same format.

use std::io::{Cursor, Read, Write};

use crate::common::{ctx, impostor, key, open_seek, open_stream, plaintext};
use aws_lc_rs::{hkdf, hmac};
use twinseal_envelope::{
    Context, Error, FileKey, Header, Kek, Opener, SEGMENT_SIZE, Sealer, SeekableOpener, new_header,
    open_bytes, open_bytes_with_file_key, seal_bytes, seal_bytes_with_header,
};

const SIZES: [usize; 6] = [
    0,
    1,
    SEGMENT_SIZE - 1,
    SEGMENT_SIZE,
    SEGMENT_SIZE + 1,
    3 * SEGMENT_SIZE + 5,
];

/// What a client does with the bytes of a key sent over the wire.
fn transported(file_key: &FileKey) -> FileKey {
    FileKey::from_bytes(*file_key.expose())
}

fn seal_stream(plain: &[u8], header: &[u8], file_key: &FileKey) -> Vec<u8> {
    let mut sealer = Sealer::with_header(Vec::new(), header, file_key).unwrap();
    for chunk in plain.chunks(1000) {
        sealer.write_all(chunk).unwrap();
    }
    sealer.finish().unwrap()
}

fn open_stream_with(
    sealed: &[u8],
    file_key: &FileKey,
    context: &Context,
) -> Result<Vec<u8>, Error> {
    let mut opener = Opener::with_file_key(Cursor::new(sealed), file_key, context)?;
    let mut out = Vec::new();
    opener.read_to_end(&mut out)?;
    Ok(out)
}

fn open_seek_with(sealed: &[u8], file_key: &FileKey, context: &Context) -> Result<Vec<u8>, Error> {
    let mut opener = SeekableOpener::with_file_key(Cursor::new(sealed), file_key, context)?;
    let mut out = Vec::new();
    opener.read_to_end(&mut out)?;
    Ok(out)
}

/// Every way of opening with a file key fails; returns the three errors.
#[track_caller]
fn rejected_with(sealed: &[u8], file_key: &FileKey, context: &Context) -> [Error; 3] {
    [
        open_bytes_with_file_key(sealed, file_key, context).expect_err("open_bytes_with_file_key"),
        open_stream_with(sealed, file_key, context).expect_err("Opener::with_file_key"),
        open_seek_with(sealed, file_key, context).expect_err("SeekableOpener::with_file_key"),
    ]
}

/// A small header for one key, with a context.
fn small_header() -> (Vec<u8>, FileKey, Kek, Context) {
    let kek = key(1);
    let context = ctx(&[("purpose", "alpha")]);
    let (header, file_key) = new_header(std::slice::from_ref(&kek), &context).unwrap();
    (header, file_key, kek, context)
}

#[test]
fn a_key_manager_header_opens_with_the_kek() {
    let keys = [key(1), key(2)];
    let context = ctx(&[("name", "siamese"), ("purpose", "model")]);
    for len in SIZES {
        let plain = plaintext(len);
        let (header, file_key) = new_header(&keys, &context).unwrap();
        // The key manager's header releases the key it returned.
        let parsed = Header::parse(&header).unwrap();
        assert_eq!(parsed.len(), header.len());
        assert_eq!(parsed.context(), &context);
        for kek in &keys {
            let released = parsed.unwrap_file_key(std::slice::from_ref(kek)).unwrap();
            assert_eq!(released.expose(), file_key.expose());
        }
        parsed.verify_with_file_key(&file_key).unwrap();

        let file_key = transported(&file_key);
        let by_stream = seal_stream(&plain, &header, &file_key);
        let by_bytes = seal_bytes_with_header(&plain, &header, &file_key).unwrap();
        let mut sealer = Sealer::with_header(Vec::new(), &header, &file_key).unwrap();
        assert_eq!(
            sealer.copy_from(&mut Cursor::new(&plain)).unwrap(),
            len as u64
        );
        let by_copy = sealer.finish().unwrap();
        // One header, one key, deterministic STREAM nonces: the same bytes.
        assert_eq!(by_stream, by_bytes, "len {len}");
        assert_eq!(by_copy, by_bytes, "len {len}");
        assert_eq!(&by_bytes[..header.len()], &header[..]);
        for kek in &keys {
            let kek = std::slice::from_ref(kek);
            assert_eq!(
                open_bytes(&by_bytes, kek, &context).unwrap(),
                plain,
                "len {len}"
            );
            assert_eq!(
                open_stream(&by_bytes, kek, &context).unwrap(),
                plain,
                "len {len}"
            );
            assert_eq!(
                open_seek(&by_bytes, kek, &context).unwrap(),
                plain,
                "len {len}"
            );
        }
        assert_eq!(
            open_bytes_with_file_key(&by_bytes, &file_key, &context).unwrap(),
            plain
        );
    }
}

#[test]
fn a_file_sealed_with_the_kek_opens_with_its_released_key() {
    let keys = [key(3)];
    let context = ctx(&[("purpose", "model")]);
    for len in SIZES {
        let plain = plaintext(len);
        let mut sealer = Sealer::new(Vec::new(), &keys, &context).unwrap();
        sealer.write_all(&plain).unwrap();
        let sealed = sealer.finish().unwrap();
        // The key manager sees only the header (the client may send more).
        let header = Header::parse(&sealed).unwrap();
        let released = header.unwrap_file_key(&keys).unwrap();
        assert_eq!(header.context(), &context);
        let file_key = transported(&released);
        header.verify_with_file_key(&file_key).unwrap();
        assert_eq!(
            open_bytes_with_file_key(&sealed, &file_key, &context).unwrap(),
            plain
        );
        assert_eq!(
            open_stream_with(&sealed, &file_key, &context).unwrap(),
            plain
        );
        assert_eq!(open_seek_with(&sealed, &file_key, &context).unwrap(), plain);
        let mut opener = Opener::with_file_key(Cursor::new(&sealed), &file_key, &context).unwrap();
        assert_eq!(opener.header().as_bytes(), header.as_bytes());
        let mut out = Vec::new();
        assert_eq!(opener.copy_to(&mut out).unwrap(), len as u64);
        assert_eq!(out, plain, "len {len}");
        let opener = SeekableOpener::with_file_key(Cursor::new(&sealed), &file_key, &context);
        assert_eq!(opener.unwrap().len(), len as u64);
    }
}

/// `Sealer::with_header` and `seal_bytes_with_header` both refuse; the
/// sealer wrote nothing.
#[track_caller]
fn refused(header: &[u8], file_key: &FileKey) -> Error {
    let mut out = Vec::new();
    let err = match Sealer::with_header(&mut out, header, file_key) {
        Ok(_) => panic!("Sealer::with_header accepted a bad header"),
        Err(err) => err,
    };
    assert!(
        out.is_empty(),
        "Sealer::with_header wrote {} bytes",
        out.len()
    );
    assert!(seal_bytes_with_header(b"x", header, file_key).is_err());
    err
}

#[test]
fn sealing_refuses_a_header_that_does_not_match_its_key() {
    let (header, file_key, kek, context) = small_header();
    // Another key, and the key of another header for the same KEK and context.
    let err = refused(&header, &FileKey::from_bytes([7; 32]));
    assert!(matches!(err, Error::DecryptionFailed), "{err}");
    let (_, other_key) = new_header(std::slice::from_ref(&kek), &context).unwrap();
    let err = refused(&header, &other_key);
    assert!(matches!(err, Error::DecryptionFailed), "{err}");

    // Every byte of the header modified, in three ways.
    let mut bad = header.clone();
    for i in 0..header.len() {
        for mask in [0x01, 0x80, 0xff] {
            bad[i] ^= mask;
            let err = refused(&bad, &file_key);
            bad[i] ^= mask;
            if i >= 13 && i < header.len() - 64 {
                // Structure still valid or not, never accepted: past the
                // prefix the error is a structure error or the coarse one.
                assert!(
                    matches!(err, Error::InvalidHeader(_) | Error::DecryptionFailed),
                    "byte {i} mask {mask:#x}: {err}"
                );
            }
            if i >= header.len() - 64 {
                assert!(matches!(err, Error::DecryptionFailed), "byte {i}: {err}");
            }
        }
    }
    assert_eq!(bad, header);

    // Truncated anywhere, or followed by anything (such as a whole file).
    for cut in 0..header.len() {
        refused(&header[..cut], &file_key);
    }
    let err = refused(&[header.as_slice(), b"\0"].concat(), &file_key);
    assert!(matches!(err, Error::InvalidHeader(_)), "{err}");
    let sealed = seal_bytes_with_header(b"payload", &header, &file_key).unwrap();
    refused(&sealed, &file_key);

    // The untouched header still works.
    let mut out = Vec::new();
    Sealer::with_header(&mut out, &header, &file_key)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(open_bytes(&out, &[kek], &context).unwrap(), b"");
}

/// Where the first stanza's body starts.
fn stanza_body_start(header: &Header) -> usize {
    // Magic, version, length, salt, count; then type, id length, id, body length.
    13 + 32 + 1 + 1 + 1 + header.stanzas()[0].key_id.as_str().len() + 2
}

#[test]
fn unwrapping_rejects_missing_keys_and_modified_headers() {
    let (bytes, file_key, kek, _) = small_header();
    let header = Header::parse(&bytes).unwrap();
    let good = header.unwrap_file_key(std::slice::from_ref(&kek)).unwrap();
    assert_eq!(good.expose(), file_key.expose());

    // No stanza for the key, or no key at all.
    for keys in [vec![key(2)], vec![]] {
        let err = header.unwrap_file_key(&keys).err().unwrap();
        assert!(matches!(err, Error::NoStanza), "{err}");
    }
    // The right id under other key bytes.
    let err = header.unwrap_file_key(&[impostor(1, 9)]).err().unwrap();
    assert!(matches!(err, Error::DecryptionFailed), "{err}");

    let unwrap = |bytes: &[u8]| {
        let header = Header::parse(bytes).expect("still parses");
        header.unwrap_file_key(std::slice::from_ref(&kek))
    };
    // Every byte of the stanza body (nonce, wrapped key, tag).
    let start = stanza_body_start(&header);
    for i in start..start + 60 {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        let err = unwrap(&bad).err().expect("tampered stanza accepted");
        assert!(matches!(err, Error::DecryptionFailed), "byte {i}: {err}");
    }

    // The context altered: the key unwraps, the MAC does not verify.
    let at = bytes
        .windows(5)
        .position(|w| w == b"alpha")
        .expect("context value in the header");
    let mut bad = bytes.clone();
    bad[at + 4] = b'b';
    let altered = Header::parse(&bad).unwrap();
    assert_eq!(altered.context(), &ctx(&[("purpose", "alphb")]));
    let err = unwrap(&bad).err().expect("altered context accepted");
    assert!(matches!(err, Error::DecryptionFailed), "{err}");
    let err = altered.verify_with_file_key(&file_key).unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed), "{err}");

    // The commitment of another header, as is and with a MAC recomputed
    // under this header's MAC key (so that only the commitment is wrong).
    let (other, _, _, _) = small_header();
    let (h, c) = (bytes.len(), bytes.len() - 64);
    let mut swapped = bytes.clone();
    swapped[c..h - 32].copy_from_slice(&other[c..h - 32]);
    let err = unwrap(&swapped).err().expect("swapped commitment accepted");
    assert!(matches!(err, Error::DecryptionFailed), "{err}");
    let mac_key = header_mac_key(&file_key, &bytes[13..45]);
    let mac = hmac::sign(&mac_key, &swapped[..h - 32]);
    swapped[h - 32..].copy_from_slice(mac.as_ref());
    let err = unwrap(&swapped).err().expect("swapped commitment accepted");
    assert!(matches!(err, Error::DecryptionFailed), "{err}");
    let err = Header::parse(&swapped)
        .unwrap()
        .verify_with_file_key(&file_key)
        .unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed), "{err}");
    // The MAC key above is the header's own: recomputing the MAC of the
    // untouched header gives its MAC back, so the swapped header failed on
    // the commitment alone.
    let mut remac = bytes.clone();
    remac[h - 32..].copy_from_slice(hmac::sign(&mac_key, &bytes[..h - 32]).as_ref());
    assert_eq!(remac, bytes);
}

/// `MK = HKDF(S, K, "twinseal/v1 header", 32)` (specification, section 3).
fn header_mac_key(file_key: &FileKey, salt: &[u8]) -> hmac::Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(file_key.expose());
    hmac::Key::from(
        prk.expand(&[b"twinseal/v1 header"], hmac::HMAC_SHA256)
            .unwrap(),
    )
}

#[test]
fn opening_with_a_file_key_requires_the_context_and_the_key() {
    let keys = [key(4)];
    let context = ctx(&[("name", "siamese"), ("purpose", "model")]);
    let plain = plaintext(2 * SEGMENT_SIZE + 9);
    let sealed = seal_bytes(&plain, &keys, &context).unwrap();
    let file_key = Header::parse(&sealed)
        .unwrap()
        .unwrap_file_key(&keys)
        .unwrap();
    for bad in [
        ctx(&[]),
        ctx(&[("name", "siamese")]),
        ctx(&[("name", "siamese"), ("purpose", "dataset")]),
        ctx(&[("extra", "x"), ("name", "siamese"), ("purpose", "model")]),
    ] {
        for err in rejected_with(&sealed, &file_key, &bad) {
            assert!(matches!(err, Error::ContextMismatch), "{bad:?}: {err}");
        }
    }
    // A made-up key, and the key of another file under the same KEK and context.
    let other = seal_bytes(&plain, &keys, &context).unwrap();
    let other_key = Header::parse(&other)
        .unwrap()
        .unwrap_file_key(&keys)
        .unwrap();
    for wrong in [FileKey::from_bytes([9; 32]), other_key] {
        for err in rejected_with(&sealed, &wrong, &context) {
            assert!(matches!(err, Error::DecryptionFailed), "{err}");
        }
    }
    // A modified payload is still caught after the header checks.
    let mut bad = sealed.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    for err in rejected_with(&bad, &file_key, &context) {
        assert!(matches!(err, Error::DecryptionFailed), "{err}");
    }
    assert_eq!(
        open_bytes_with_file_key(&sealed, &file_key, &context).unwrap(),
        plain
    );
}

#[test]
fn errors_never_show_a_file_key() {
    let (bytes, file_key, kek, context) = small_header();
    let wrong = FileKey::from_bytes(*b"a wrong key that must not appear");
    let sealed = seal_bytes_with_header(&plaintext(SEGMENT_SIZE + 3), &bytes, &file_key).unwrap();
    let header = Header::parse(&bytes).unwrap();
    let mut tampered = sealed.clone();
    tampered[bytes.len() + 5] ^= 1;
    let mut bad_header = bytes.clone();
    bad_header[20] ^= 1;

    let mut errors: Vec<Error> = vec![
        header.unwrap_file_key(&[key(2)]).err().unwrap(),
        header.unwrap_file_key(&[impostor(1, 9)]).err().unwrap(),
        header.verify_with_file_key(&wrong).unwrap_err(),
        Header::parse(&bad_header)
            .unwrap()
            .unwrap_file_key(&[kek])
            .err()
            .unwrap(),
        refused(&bytes, &wrong),
        refused(&bad_header, &file_key),
        refused(&bytes[..40], &file_key),
    ];
    errors.extend(rejected_with(&sealed, &wrong, &context));
    errors.extend(rejected_with(&sealed, &file_key, &ctx(&[])));
    errors.extend(rejected_with(&tampered, &file_key, &context));

    for secret in [&file_key, &wrong] {
        let bytes = secret.expose();
        let needles = [
            hex::encode(bytes),
            hex::encode_upper(bytes),
            hex::encode(&bytes[..8]),
            format!("{:?}", &bytes[..8])
                .trim_matches(['[', ']'])
                .to_owned(),
            String::from_utf8_lossy(bytes).into_owned(),
        ];
        for err in &errors {
            for shown in [format!("{err}"), format!("{err:?}"), format!("{err:#?}")] {
                for needle in &needles {
                    assert!(
                        !shown.contains(needle.as_str()),
                        "{shown:?} shows key bytes"
                    );
                }
            }
        }
    }
}

#[test]
fn new_header_refuses_bad_recipients() {
    let c = Context::new();
    for keys in [vec![], vec![key(1), key(1)], (0..33).map(key).collect()] {
        let err = new_header(&keys, &c).err().unwrap();
        assert!(matches!(err, Error::InvalidRecipients(_)), "{err}");
    }
}

#[test]
fn every_header_gets_a_new_salt_and_file_key() {
    let (a, ka, _, _) = small_header();
    let (b, kb, _, _) = small_header();
    assert_ne!(ka.expose(), kb.expose());
    assert_ne!(a[13..45], b[13..45]);
    assert_eq!(a.len(), b.len());
}
