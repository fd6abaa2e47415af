//! The file master key through the public API: wrapping, rejection of
//! modified or misbound values, and the rules on the key file itself.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use twinseal_coordinator::master::{
    FileMasterKey, KEY_LEN, MasterKey, MasterKeyConfig, MasterKeyError, WRAP_FORMAT_V1,
    WRAP_OVERHEAD,
};

const AAD: &[u8] = b"key=payments/v3";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every way the key bytes could be spelled in a message.
fn spellings(key: &[u8]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    vec![
        hex::encode(key),
        hex::encode_upper(key),
        STANDARD.encode(key),
        STANDARD_NO_PAD.encode(key),
        URL_SAFE.encode(key),
        URL_SAFE_NO_PAD.encode(key),
        format!("{key:?}"),
    ]
}

fn assert_no_key_in(message: &str, key: &[u8]) {
    for spelling in spellings(key) {
        // A prefix long enough that it cannot appear by chance.
        let probe = &spelling[..spelling.len().min(16)];
        assert!(
            !message.contains(probe),
            "message leaks key material: {message}"
        );
    }
}

#[test]
fn types_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<MasterKeyError>();
    assert_send_sync::<FileMasterKey>();
    assert_send_sync::<twinseal_coordinator::master::Pkcs11MasterKey>();
    assert_send_sync::<Box<dyn MasterKey>>();
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let key = FileMasterKey::create(&path).unwrap();
    assert_eq!(key.backend(), "file");
    assert!(key.id().starts_with("file:"), "{}", key.id());
    assert_eq!(key.id().len(), "file:".len() + 16);

    for len in [0, 1, 16, 32, 1000] {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let wrapped = key.wrap(&plaintext, AAD).unwrap();
        assert_eq!(wrapped.len(), plaintext.len() + WRAP_OVERHEAD);
        assert_eq!(wrapped[0], WRAP_FORMAT_V1);
        if len >= 16 {
            assert!(!wrapped.windows(16).any(|w| w == &plaintext[..16]));
        }
        assert_eq!(key.unwrap(&wrapped, AAD).unwrap().as_slice(), plaintext);
    }

    // A fresh nonce each time: the same input never wraps to the same bytes.
    assert_ne!(
        key.wrap(b"same", AAD).unwrap(),
        key.wrap(b"same", AAD).unwrap()
    );

    // Reopening the file gives the same key, hence the same id.
    let reopened = FileMasterKey::open(&path).unwrap();
    assert_eq!(reopened.id(), key.id());
    let wrapped = key.wrap(b"secret", AAD).unwrap();
    assert_eq!(
        reopened.unwrap(&wrapped, AAD).unwrap().as_slice(),
        b"secret"
    );
}

#[test]
fn other_key_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileMasterKey::create(&dir.path().join("a.key")).unwrap();
    let b = FileMasterKey::create(&dir.path().join("b.key")).unwrap();
    assert_ne!(a.id(), b.id());
    let wrapped = a.wrap(b"secret", AAD).unwrap();
    assert!(matches!(
        b.unwrap(&wrapped, AAD),
        Err(MasterKeyError::UnwrapFailed)
    ));
}

#[test]
fn wrong_aad_rejected() {
    let key = FileMasterKey::from_bytes(&[7; KEY_LEN]).unwrap();
    let wrapped = key.wrap(b"secret", AAD).unwrap();
    for aad in [
        &b""[..],
        b"key=payments/v4",
        b"key=payments/v3\0",
        b"key=payments/v",
    ] {
        let err = key.unwrap(&wrapped, aad).unwrap_err();
        assert!(matches!(err, MasterKeyError::UnwrapFailed), "{err:?}");
        assert_eq!(err.to_string(), "unwrap failed");
    }
    // Empty aad is an aad like any other.
    let wrapped = key.wrap(b"secret", b"").unwrap();
    assert_eq!(key.unwrap(&wrapped, b"").unwrap().as_slice(), b"secret");
    assert!(key.unwrap(&wrapped, b"\0").is_err());
}

#[test]
fn every_tampered_byte_rejected() {
    let key = FileMasterKey::from_bytes(&[9; KEY_LEN]).unwrap();
    let wrapped = key.wrap(b"thirty-two bytes of a data key!!", AAD).unwrap();
    for i in 0..wrapped.len() {
        for flip in [0x01, 0x80] {
            let mut tampered = wrapped.clone();
            tampered[i] ^= flip;
            assert!(
                key.unwrap(&tampered, AAD).is_err(),
                "flipping bit {flip:#x} of byte {i} was accepted"
            );
        }
    }
    // Truncated and extended values.
    for len in 0..wrapped.len() {
        assert!(key.unwrap(&wrapped[..len], AAD).is_err(), "length {len}");
    }
    let mut extended = wrapped.clone();
    extended.push(0);
    assert!(key.unwrap(&extended, AAD).is_err());
    // An unknown format byte is named as such.
    let mut future = wrapped.clone();
    future[0] = 0x02;
    assert!(matches!(
        key.unwrap(&future, AAD),
        Err(MasterKeyError::UnsupportedFormat(0x02))
    ));
}

#[test]
fn create_sets_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    FileMasterKey::create(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs::metadata(&path).unwrap().len(), KEY_LEN as u64);
}

#[test]
fn create_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let first = FileMasterKey::create(&path).unwrap();
    let before = fs::read(&path).unwrap();
    let err = FileMasterKey::create(&path).unwrap_err();
    assert!(matches!(err, MasterKeyError::KeyFileExists(_)), "{err:?}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(FileMasterKey::open(&path).unwrap().id(), first.id());

    // Not even a file that is not a key.
    let other = dir.path().join("notes.txt");
    fs::write(&other, b"hello").unwrap();
    assert!(FileMasterKey::create(&other).is_err());
    assert_eq!(fs::read(&other).unwrap(), b"hello");
}

#[test]
fn open_refuses_group_or_world_access() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    FileMasterKey::create(&path).unwrap();
    let key = fs::read(&path).unwrap();
    for bad in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o610] {
        fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
        let err = FileMasterKey::open(&path).unwrap_err();
        assert!(
            matches!(err, MasterKeyError::InsecurePermissions { mode, .. } if mode == bad),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("chmod 600"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(&format!("{bad:03o}")), "{message}");
        assert_no_key_in(&message, &key);
    }
    // 0400 (read-only for the owner) is fine.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    FileMasterKey::open(&path).unwrap();
}

#[test]
fn wrong_length_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0, 1, 16, 31, 33, 64] {
        let path = dir.path().join(format!("len{len}.key"));
        let bytes: Vec<u8> = (0..len).map(|i| 0xa0 ^ i as u8).collect();
        fs::write(&path, &bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = FileMasterKey::open(&path).unwrap_err();
        assert!(matches!(err, MasterKeyError::InvalidKeyFile(_)), "{err:?}");
        assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
        if len >= 8 {
            assert_no_key_in(&err.to_string(), &bytes);
            assert_no_key_in(&format!("{err:?}"), &bytes);
        }
    }
}

#[test]
fn open_refuses_a_directory_and_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileMasterKey::open(&dir.path().join("absent.key")).unwrap_err();
    assert!(matches!(err, MasterKeyError::Io { .. }), "{err:?}");
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(FileMasterKey::open(&sub).is_err());
}

#[test]
fn errors_and_debug_never_show_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let key = FileMasterKey::create(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), KEY_LEN);

    let debug = format!("{key:?}");
    assert!(debug.contains(key.id()), "{debug}");
    assert_no_key_in(&debug, &bytes);

    let wrapped = key.wrap(b"secret", AAD).unwrap();
    let mut tampered = wrapped.clone();
    tampered[5] ^= 1;
    let errors = [
        key.unwrap(&tampered, AAD).unwrap_err(),
        key.unwrap(&wrapped, b"other").unwrap_err(),
        key.unwrap(&wrapped[..3], AAD).unwrap_err(),
        FileMasterKey::create(&path).unwrap_err(),
        {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            FileMasterKey::open(&path).unwrap_err()
        },
    ];
    for err in errors {
        assert_no_key_in(&err.to_string(), &bytes);
        assert_no_key_in(&format!("{err:?}"), &bytes);
    }
}

#[test]
fn config_resolves_relative_paths_and_denies_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let config: MasterKeyConfig =
        serde_json::from_str(r#"{"backend": "file", "path": "keys/master.key"}"#).unwrap();
    fs::create_dir(dir.path().join("keys")).unwrap();
    let created = config.init(dir.path()).unwrap();
    assert_eq!(created.backend(), "file");
    assert!(dir.path().join("keys/master.key").is_file());
    let opened = config.open(dir.path()).unwrap();
    assert_eq!(opened.id(), created.id());
    let wrapped = created.wrap(b"secret", AAD).unwrap();
    assert_eq!(opened.unwrap(&wrapped, AAD).unwrap().as_slice(), b"secret");
    // `init` on an existing key file refuses.
    assert!(matches!(
        config.init(dir.path()),
        Err(MasterKeyError::KeyFileExists(_))
    ));

    assert!(
        serde_json::from_str::<MasterKeyConfig>(r#"{"backend": "file", "path": "k", "mode": 420}"#)
            .is_err()
    );
    assert!(
        serde_json::from_str::<MasterKeyConfig>(r#"{"backend": "vault", "path": "k"}"#).is_err()
    );

    let pkcs11: MasterKeyConfig = serde_json::from_str(
        r#"{"backend": "pkcs11", "module": "libsofthsm2.so", "token_label": "t", "key_label": "k"}"#,
    )
    .unwrap();
    match &pkcs11 {
        MasterKeyConfig::Pkcs11(config) => assert_eq!(config.pin_env, "TWINSEAL_PKCS11_PIN"),
        other => panic!("{other:?}"),
    }
    // Labels PKCS#11 cannot hold are refused before any module is loaded.
    for (token, key, pin_env) in [
        ("", "k", "V"),
        ("a-label-that-is-longer-than-32-bytes", "k", "V"),
        ("trailing ", "k", "V"),
        ("t", "", "V"),
        ("t", "k", ""),
        ("t", "k", "A=B"),
    ] {
        let config = MasterKeyConfig::Pkcs11(twinseal_coordinator::master::Pkcs11Config {
            module: "/nonexistent/libpkcs11.so".into(),
            token_label: token.to_owned(),
            key_label: key.to_owned(),
            pin_env: pin_env.to_owned(),
        });
        let err = config.open(dir.path()).err().unwrap();
        assert!(matches!(err, MasterKeyError::InvalidConfig(_)), "{err:?}");
    }

    // The PIN never comes from the configuration.
    assert!(
        serde_json::from_str::<MasterKeyConfig>(
            r#"{"backend": "pkcs11", "module": "m.so", "token_label": "t", "key_label": "k", "pin": "1234"}"#,
        )
        .is_err()
    );
}

#[test]
fn keys_are_usable_from_several_threads() {
    let key: std::sync::Arc<dyn MasterKey> =
        std::sync::Arc::new(FileMasterKey::from_bytes(&[3; KEY_LEN]).unwrap());
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let key = key.clone();
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    let aad = [t, i];
                    let wrapped = key.wrap(&[t ^ i; 32], &aad).unwrap();
                    assert_eq!(key.unwrap(&wrapped, &aad).unwrap().as_slice(), [t ^ i; 32]);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}
