//! The PKCS#11 master key against a real token: SoftHSM2, with a token
//! created by the test in a temporary directory.
//!
//! SoftHSM2 finds its configuration through the `SOFTHSM2_CONF` environment
//! variable, read once when the module is initialised. Setting a variable in
//! a running test process is `unsafe` in edition 2024 (and `unsafe_code` is
//! forbidden), and a module is initialised once per process, so the test
//! `softhsm` runs this same test binary again as a child with the variable
//! set, and the child runs every sub-case in `softhsm_child`, in order,
//! against one module instance.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cryptoki::context::Pkcs11;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use twinseal_coordinator::master::{
    MasterKey, MasterKeyConfig, MasterKeyError, Pin, Pkcs11Config, Pkcs11MasterKey, WRAP_FORMAT_V1,
    WRAP_OVERHEAD, pkcs11_context,
};

/// Where Debian and Ubuntu's `softhsm2` package puts the module.
const MODULES: [&str; 2] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
];
/// Set (to the module's path) only in the child process.
const CHILD_ENV: &str = "TWINSEAL_TEST_SOFTHSM_MODULE";
const PIN_ENV: &str = "TWINSEAL_TEST_PKCS11_PIN";
const TOKEN: &str = "twinseal-test";
const KEY: &str = "twinseal-master";
const SO_PIN: &str = "so-pin-8642";
const USER_PIN: &str = "user-pin-1357";
const AAD: &[u8] = b"key=payments/v3";

#[test]
fn softhsm() {
    let Some(module) = MODULES.iter().map(Path::new).find(|m| m.is_file()) else {
        let message = format!(
            "SoftHSM2 is not installed (no module at {}); install it with \
             `apt-get install softhsm2`",
            MODULES.join(" or ")
        );
        panic!("{message}");
    };

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();

    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "master_pkcs11::softhsm_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD_ENV, module)
        .env(PIN_ENV, USER_PIN)
        .env("TWINSEAL_TEST_BASE_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "the softhsm child failed");
    // The child really ran the sub-cases (the filter matched one test).
    assert!(stdout.contains("1 passed"), "the softhsm child ran no test");
    assert!(stdout.contains("all pkcs11 sub-cases passed"));
}

/// The sub-cases; does nothing unless started by [`softhsm`].
#[test]
fn softhsm_child() {
    let Ok(module) = std::env::var(CHILD_ENV) else {
        return;
    };
    let module = PathBuf::from(module);
    let base_dir = PathBuf::from(std::env::var("TWINSEAL_TEST_BASE_DIR").unwrap());
    let config = Pkcs11Config {
        module: module.clone(),
        token_label: TOKEN.to_owned(),
        key_label: KEY.to_owned(),
        pin_env: PIN_ENV.to_owned(),
    };

    // The test uses the library's shared context: the module is initialised
    // once per process.
    let context = pkcs11_context(&module).unwrap();
    init_token(&context);

    // Before `init`, `open` says the key is missing.
    let err = Pkcs11MasterKey::open(&config, Pin::new(USER_PIN.to_owned())).unwrap_err();
    assert!(matches!(err, MasterKeyError::KeyNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(KEY), "{err}");

    let key = Pkcs11MasterKey::init(&config, Pin::new(USER_PIN.to_owned())).unwrap();
    assert_eq!(key.backend(), "pkcs11");
    assert_eq!(key.id(), format!("pkcs11:{TOKEN}/{KEY}"));
    assert!(format!("{key:?}").contains(key.id()));

    // Round trip.
    let mut kept = Vec::new();
    for len in [0usize, 1, 16, 32, 1000] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let wrapped = key.wrap(&plaintext, AAD).unwrap();
        assert_eq!(wrapped.len(), len + WRAP_OVERHEAD);
        assert_eq!(wrapped[0], WRAP_FORMAT_V1);
        assert_eq!(key.unwrap(&wrapped, AAD).unwrap().as_slice(), plaintext);
        kept.push((plaintext, wrapped));
    }
    assert_ne!(
        key.wrap(b"same", AAD).unwrap(),
        key.wrap(b"same", AAD).unwrap()
    );
    println!("round trip: ok");

    // Wrong aad and every tampered byte are rejected, coarsely.
    let (_, wrapped) = &kept[3];
    for aad in [&b""[..], b"key=payments/v4", b"key=payments/v3\0"] {
        let err = key.unwrap(wrapped, aad).unwrap_err();
        assert!(matches!(err, MasterKeyError::UnwrapFailed), "{err:?}");
    }
    for i in 0..wrapped.len() {
        let mut tampered = wrapped.clone();
        tampered[i] ^= 0x01;
        let err = key.unwrap(&tampered, AAD).unwrap_err();
        if i == 0 {
            assert!(
                matches!(err, MasterKeyError::UnsupportedFormat(_)),
                "{err:?}"
            );
        } else {
            assert!(
                matches!(err, MasterKeyError::UnwrapFailed),
                "byte {i}: {err:?}"
            );
        }
    }
    assert!(matches!(
        key.unwrap(&wrapped[..WRAP_OVERHEAD - 1], AAD),
        Err(MasterKeyError::Truncated)
    ));
    // The sessions survive failed unwraps.
    assert_eq!(key.unwrap(wrapped, AAD).unwrap().as_slice(), kept[3].0);
    println!("wrong aad and tampering: ok");

    // Several threads at once, more than the pool keeps.
    let shared: Arc<dyn MasterKey> = Arc::new(key);
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let key = shared.clone();
            std::thread::spawn(move || {
                for i in 0..25u8 {
                    let aad = [t, i];
                    let wrapped = key.wrap(&[t ^ i; 32], &aad).unwrap();
                    assert_eq!(key.unwrap(&wrapped, &aad).unwrap().as_slice(), [t ^ i; 32]);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    println!("threads: ok");

    // The key object cannot leave the token.
    {
        let slot = token_slot(&context);
        let session = context.open_ro_session(slot).unwrap();
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Label(KEY.as_bytes().to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1);
        let info = session
            .get_attribute_info(found[0], &[AttributeType::Value])
            .unwrap();
        assert!(matches!(info[0], AttributeInfo::Sensitive), "{info:?}");
        let values = session
            .get_attributes(found[0], &[AttributeType::Value])
            .unwrap();
        assert!(values.is_empty(), "the key value was readable");
        let flags = session
            .get_attributes(
                found[0],
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::ValueLen,
                ],
            )
            .unwrap();
        for flag in flags {
            match flag {
                Attribute::Sensitive(b) => assert!(b),
                Attribute::Extractable(b) => assert!(!b),
                Attribute::Token(b) => assert!(b),
                Attribute::Private(b) => assert!(b),
                Attribute::ValueLen(n) => assert_eq!(*n, 32),
                other => panic!("{other:?}"),
            }
        }
    }
    println!("non-extractable: ok");

    // Re-open after dropping every session: the same key, found by label,
    // through the configuration (PIN from the environment).
    drop(shared);
    let pkcs11: MasterKeyConfig = serde_json::from_value(serde_json::json!({
        "backend": "pkcs11",
        "module": module,
        "token_label": TOKEN,
        "key_label": KEY,
        "pin_env": PIN_ENV,
    }))
    .unwrap();
    let reopened = pkcs11.open(&base_dir).unwrap();
    assert_eq!(reopened.backend(), "pkcs11");
    assert_eq!(reopened.id(), format!("pkcs11:{TOKEN}/{KEY}"));
    for (plaintext, wrapped) in &kept {
        assert_eq!(reopened.unwrap(wrapped, AAD).unwrap().as_slice(), plaintext);
    }
    // `init` on an existing key uses it rather than making a second one,
    // and a second key in the same process shares the login.
    let again = pkcs11.init(&base_dir).unwrap();
    let wrapped = again.wrap(b"from the second handle", AAD).unwrap();
    assert_eq!(
        reopened.unwrap(&wrapped, AAD).unwrap().as_slice(),
        b"from the second handle"
    );
    assert_eq!(count_keys(&context, KEY), 1);
    drop(again);
    // The first handle still works after the second closed its sessions.
    assert_eq!(
        reopened.unwrap(&kept[1].1, AAD).unwrap().as_slice(),
        kept[1].0
    );
    drop(reopened);
    println!("re-open: ok");

    // An extractable key with the right label is refused.
    {
        let slot = token_slot(&context);
        let session = context.open_rw_session(slot).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::new(USER_PIN.to_owned())))
            .unwrap();
        session
            .generate_key(
                &cryptoki::mechanism::Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Label(b"extractable".to_vec()),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap();
        let loose = Pkcs11Config {
            key_label: "extractable".to_owned(),
            ..config.clone()
        };
        let err = Pkcs11MasterKey::open(&loose, Pin::new(USER_PIN.to_owned())).unwrap_err();
        assert!(
            matches!(err, MasterKeyError::UnsuitableKey { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("extractable"), "{err}");
        session.logout().unwrap();
    }
    println!("extractable key refused: ok");

    // A wrong PIN (no session of this process is logged in now).
    let wrong = "wrong-pin-0000";
    let err = Pkcs11MasterKey::open(&config, Pin::new(wrong.to_owned())).unwrap_err();
    assert!(matches!(err, MasterKeyError::WrongPin(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("wrong pin for pkcs11 token `{TOKEN}`")
    );
    assert!(!format!("{err} {err:?}").contains(wrong));
    // A correct PIN still works afterwards.
    let key = Pkcs11MasterKey::open(&config, Pin::new(USER_PIN.to_owned())).unwrap();
    assert_eq!(key.unwrap(&kept[2].1, AAD).unwrap().as_slice(), kept[2].0);
    drop(key);
    println!("wrong pin: ok");

    // A missing token is named, with the tokens that are there.
    let missing = Pkcs11Config {
        token_label: "no-such-token".to_owned(),
        ..config.clone()
    };
    let err = Pkcs11MasterKey::open(&missing, Pin::new(USER_PIN.to_owned())).unwrap_err();
    assert!(
        matches!(err, MasterKeyError::TokenNotFound { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("`no-such-token`"), "{message}");
    assert!(message.contains(TOKEN), "{message}");
    println!("missing token: ok");

    // A missing PIN variable is named.
    let unset: MasterKeyConfig = MasterKeyConfig::Pkcs11(Pkcs11Config {
        pin_env: "TWINSEAL_TEST_PIN_NOT_SET".to_owned(),
        ..config.clone()
    });
    let err = unset.open(&base_dir).err().unwrap();
    assert!(
        err.to_string().contains("TWINSEAL_TEST_PIN_NOT_SET"),
        "{err}"
    );

    // A module that does not exist.
    let err = pkcs11_context(Path::new("/nonexistent/libpkcs11.so")).unwrap_err();
    assert!(matches!(err, MasterKeyError::Module { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/libpkcs11.so"),
        "{err}"
    );

    println!("all pkcs11 sub-cases passed");
}

/// Initialises the token and its user PIN, as an operator would with
/// `softhsm2-util --init-token`.
fn init_token(context: &Pkcs11) {
    let slot = context.get_all_slots().unwrap()[0];
    let so_pin = AuthPin::new(SO_PIN.to_owned());
    context.init_token(slot, &so_pin, TOKEN).unwrap();
    // SoftHSM2 gives the initialised token a new slot id: find it again.
    let slot = token_slot(context);
    let session = context.open_rw_session(slot).unwrap();
    session.login(UserType::So, Some(&so_pin)).unwrap();
    session
        .init_pin(&AuthPin::new(USER_PIN.to_owned()))
        .unwrap();
    session.logout().unwrap();
}

fn token_slot(context: &Pkcs11) -> Slot {
    context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).unwrap().label() == TOKEN)
        .expect("the test token")
}

fn count_keys(context: &Pkcs11, label: &str) -> usize {
    let session = context.open_ro_session(token_slot(context)).unwrap();
    // Private objects are visible because another session of this process
    // is logged in.
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
        .len()
}
