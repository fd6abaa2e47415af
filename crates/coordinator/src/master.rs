//! The coordinator's master key: the key-encryption key that wraps every
//! key the coordinator stores.
//!
//! The key store never holds a key in the clear: it holds the output of
//! [`MasterKey::wrap`], bound by the caller's additional authenticated data
//! (for instance the key's name and version), and calls
//! [`MasterKey::unwrap`] when it needs the key again. Two backends implement
//! [`MasterKey`]:
//!
//! - [`FileMasterKey`] (`backend = "file"`): 32 random bytes in a file of
//!   mode 0600, read into memory at start. Wrapping and unwrapping run in
//!   the process, with aws-lc.
//! - [`Pkcs11MasterKey`] (`backend = "pkcs11"`): an AES-256 key generated on
//!   a PKCS#11 token (an HSM, a cloud HSM, SoftHSM2 in tests), marked
//!   sensitive and non-extractable. Wrapping and unwrapping run on the token
//!   (`CKM_AES_GCM`); the process only holds a handle to the key and a pool
//!   of logged-in sessions.
//!
//! [`MasterKeyConfig`] is the `[master_key]` table of the coordinator's
//! configuration and opens (or, once, initialises) either backend.
//!
//! # Wrap format
//!
//! Both backends write the same bytes, so a wrapped key does not say which
//! backend made it (the key store records [`MasterKey::id`] beside it):
//!
//! ```text
//! format (1 byte) = 0x01 || nonce (12 bytes) || ciphertext || tag (16 bytes)
//! ```
//!
//! Format `0x01` is AES-256-GCM with a random 96-bit nonce and a 128-bit tag.
//! The GCM additional data is the format byte followed by the caller's
//! `aad`, so the format byte is authenticated too and a later format can
//! never be confused with this one. Output made under one `aad` is refused
//! under any other. With random nonces a single master key should wrap at
//! most 2^32 values (NIST SP 800-38D), far beyond what a key store holds.
//!
//! # Threat model
//!
//! - **File backend**: the master key is at rest on disk in the clear,
//!   protected only by the file's permissions (and whatever protects the
//!   disk). Anyone who can read the file, or the coordinator's memory, can
//!   unwrap every stored key. [`FileMasterKey::open`] refuses a file that
//!   group or others may access, so a copy made with a careless `cp` or an
//!   umask of 022 is caught at start rather than silently trusted. The key
//!   bytes are zeroised when the key is dropped and never appear in a log,
//!   an error or a `Debug` output.
//! - **PKCS#11 backend**: the master key never leaves the token: it is
//!   generated there with `CKA_SENSITIVE = true` and
//!   `CKA_EXTRACTABLE = false`, and an existing key that lacks either is
//!   refused. An attacker who controls the coordinator can unwrap keys while
//!   it runs (the sessions are logged in), but cannot copy the master key
//!   out, and loses that power once the coordinator stops or the PIN
//!   changes. The PIN comes from an environment variable (never from the
//!   configuration file), is used once to log in and then zeroised.
//!
//! Errors never contain key bytes or the PIN; a failed authentication is the
//! single coarse [`MasterKeyError::UnwrapFailed`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::{hmac, rand};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Length in bytes of a master key (AES-256).
pub const KEY_LEN: usize = 32;

/// The format byte of the only wrap format so far: AES-256-GCM, 96-bit
/// random nonce, 128-bit tag.
pub const WRAP_FORMAT_V1: u8 = 0x01;

/// Length in bytes of the GCM nonce in a wrapped value.
pub const NONCE_LEN: usize = 12;

/// Length in bytes of the GCM tag at the end of a wrapped value.
pub const TAG_LEN: usize = 16;

/// Bytes a wrapped value adds to its plaintext (format byte, nonce, tag).
pub const WRAP_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// The environment variable the PKCS#11 PIN is read from, unless the
/// configuration names another.
pub const DEFAULT_PIN_ENV: &str = "TWINSEAL_PKCS11_PIN";

/// Sessions kept open for reuse by one [`Pkcs11MasterKey`]. More threads may
/// wrap at once: each extra one opens a session and closes it afterwards.
pub const PKCS11_POOL_SIZE: usize = 4;

/// The longest token label PKCS#11 can store (`CK_TOKEN_INFO.label`).
const MAX_TOKEN_LABEL: usize = 32;

/// The message [`FileMasterKey`] ids are derived from.
const FILE_ID_LABEL: &[u8] = b"twinseal/v1 master key id";

/// Wraps and unwraps the coordinator's stored keys. Every stored key is
/// wrapped by it.
pub trait MasterKey: Send + Sync + 'static {
    /// A non-secret id of the key, for the key store and the logs:
    /// `file:<16 hex digits>` (a MAC of a fixed label under the key) or
    /// `pkcs11:<token label>/<key label>`.
    fn id(&self) -> &str;

    /// The backend's name as written in the configuration: `"file"` or
    /// `"pkcs11"`.
    fn backend(&self) -> &'static str;

    /// Encrypts `plaintext` bound to `aad` (see the module documentation
    /// for the output format). The same `aad` is needed to unwrap.
    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, MasterKeyError>;

    /// Decrypts the output of [`MasterKey::wrap`], which must have been made
    /// by this key under the same `aad`.
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, MasterKeyError>;
}

/// Everything that can go wrong with a master key.
///
/// No variant carries key bytes or the PIN. Failures that involve the secret
/// (wrong key, wrong `aad`, modified bytes) are the single coarse
/// [`MasterKeyError::UnwrapFailed`]; the variants about configuration, files
/// and tokens name public things only (paths, labels, PKCS#11 return codes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// The configuration is unusable (an empty or too long label, an empty
    /// variable name).
    #[error("invalid master key configuration: {0}")]
    InvalidConfig(String),
    /// An I/O error on a named path.
    #[error("master key file {}: {source}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// [`FileMasterKey::create`] found a file at the path; a master key is
    /// never overwritten.
    #[error("master key file {} already exists; refusing to overwrite it", .0.display())]
    KeyFileExists(PathBuf),
    /// The path is not a regular file.
    #[error("master key file {} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// The key file can be read or written by its group or by others.
    #[error(
        "master key file {} has mode {mode:03o}, which lets group or others access it; \
         restrict it with `chmod 600 {}` (and check who may have copied it)",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold exactly [`KEY_LEN`] bytes.
    #[error("master key file {} must hold exactly 32 bytes", .0.display())]
    InvalidKeyFile(PathBuf),
    /// A wrapped value is shorter than the format's overhead.
    #[error("wrapped value too short")]
    Truncated,
    /// A wrapped value starts with a format byte this library cannot read.
    #[error("unsupported wrap format {0:#04x}")]
    UnsupportedFormat(u8),
    /// Authentication failed: another key, another `aad` or modified bytes.
    /// Deliberately says nothing about which.
    #[error("unwrap failed")]
    UnwrapFailed,
    /// The random generator or a primitive failed unexpectedly.
    #[error("cryptographic primitive failed")]
    Crypto,
    /// The environment variable that should hold the PKCS#11 PIN is not set.
    #[error("the pkcs11 pin environment variable `{0}` is not set")]
    PinMissing(String),
    /// The environment variable that should hold the PKCS#11 PIN is not
    /// valid UTF-8.
    #[error("the pkcs11 pin environment variable `{0}` is not valid utf-8")]
    PinNotUnicode(String),
    /// The PKCS#11 module could not be loaded or initialised.
    #[cfg(feature = "pkcs11")]
    #[error("cannot load pkcs11 module {}: {source}", module.display())]
    Module {
        /// The module's path as given to the loader.
        module: PathBuf,
        /// The loader's or the module's error.
        source: cryptoki::error::Error,
    },
    /// No token of the module has the configured label.
    #[error(
        "no pkcs11 token labelled `{label}` (tokens present: {})",
        if present.is_empty() { "none".to_owned() } else { present.join(", ") }
    )]
    TokenNotFound {
        /// The configured label.
        label: String,
        /// The labels of the tokens that are present.
        present: Vec<String>,
    },
    /// Several tokens have the configured label.
    #[error("{count} pkcs11 tokens are labelled `{label}`; labels must be unique")]
    AmbiguousToken {
        /// The configured label.
        label: String,
        /// How many tokens have it.
        count: usize,
    },
    /// The token refused the PIN.
    #[error("wrong pin for pkcs11 token `{0}`")]
    WrongPin(String),
    /// The token's user PIN is locked after too many wrong attempts.
    #[error("the user pin of pkcs11 token `{0}` is locked")]
    PinLocked(String),
    /// No AES key on the token has the configured label.
    #[error("no aes key labelled `{key}` on pkcs11 token `{token}`; create one with `init`")]
    KeyNotFound {
        /// The token's label.
        token: String,
        /// The configured key label.
        key: String,
    },
    /// Several AES keys on the token have the configured label.
    #[error(
        "{count} aes keys are labelled `{key}` on pkcs11 token `{token}`; labels must be unique"
    )]
    AmbiguousKey {
        /// The token's label.
        token: String,
        /// The configured key label.
        key: String,
        /// How many keys have it.
        count: usize,
    },
    /// The key on the token cannot serve as a master key.
    #[error("aes key `{key}` on pkcs11 token `{token}` cannot be the master key: {reason}")]
    UnsuitableKey {
        /// The token's label.
        token: String,
        /// The configured key label.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Any other PKCS#11 failure, with the function that failed.
    #[cfg(feature = "pkcs11")]
    #[error("pkcs11 {operation} failed: {source}")]
    Pkcs11 {
        /// What was being done.
        operation: &'static str,
        /// The module's error.
        source: cryptoki::error::Error,
    },
    /// This coordinator was built without PKCS#11 support.
    #[cfg(not(feature = "pkcs11"))]
    #[error(
        "this coordinator was built without PKCS#11 support (cargo feature `pkcs11`, on in the `twinseal` binary)"
    )]
    Pkcs11Unsupported,
}

impl MasterKeyError {
    fn at(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| MasterKeyError::Io {
            path: path.to_owned(),
            source,
        }
    }

    #[cfg(feature = "pkcs11")]
    fn pkcs11(operation: &'static str) -> impl FnOnce(cryptoki::error::Error) -> Self {
        move |source| MasterKeyError::Pkcs11 { operation, source }
    }
}

/// A PKCS#11 user PIN, zeroised on drop. Deliberately not `Debug`, `Clone`
/// or serializable.
#[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Takes ownership of a PIN.
    pub fn new(pin: String) -> Self {
        Pin(Zeroizing::new(pin))
    }

    /// Reads the PIN from the environment variable `var`. The variable
    /// itself stays set: clearing it is `unsafe` (other threads may read the
    /// environment), so the process that starts the coordinator should
    /// scope it to this process only.
    pub fn from_env(var: &str) -> Result<Self, MasterKeyError> {
        match std::env::var(var) {
            Ok(pin) => Ok(Pin::new(pin)),
            Err(std::env::VarError::NotPresent) => Err(MasterKeyError::PinMissing(var.to_owned())),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(MasterKeyError::PinNotUnicode(var.to_owned()))
            }
        }
    }

    #[cfg(feature = "pkcs11")]
    fn to_auth_pin(&self) -> cryptoki::types::AuthPin {
        // `AuthPin` is a `secrecy::Secret`, which zeroises its copy on drop.
        cryptoki::types::AuthPin::new(self.0.as_str().to_owned())
    }
}

impl From<String> for Pin {
    fn from(pin: String) -> Self {
        Pin::new(pin)
    }
}

/// Where the master key lives: the `[master_key]` table of the
/// configuration, tagged by `backend`.
///
/// ```toml
/// [master_key]
/// backend = "file"
/// path = "master.key"
/// ```
///
/// ```toml
/// [master_key]
/// backend = "pkcs11"
/// module = "/usr/lib/softhsm/libsofthsm2.so"
/// token_label = "twinseal"
/// key_label = "twinseal-master"
/// # pin_env = "TWINSEAL_PKCS11_PIN"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum MasterKeyConfig {
    /// A key file ([`FileMasterKey`]).
    File {
        /// The key file; a relative path is relative to the configuration's
        /// directory.
        path: PathBuf,
    },
    /// A key on a PKCS#11 token ([`Pkcs11MasterKey`]).
    Pkcs11(Pkcs11Config),
}

/// Which PKCS#11 module, token and key hold the master key. Holds no secret:
/// the PIN is read from the environment variable named by `pin_env`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The module (shared library). A bare file name is left to the dynamic
    /// loader's search path; another relative path is relative to the
    /// configuration's directory.
    pub module: PathBuf,
    /// The label of the token (1 to 32 bytes).
    pub token_label: String,
    /// The label (`CKA_LABEL`) of the AES key on the token.
    pub key_label: String,
    /// The environment variable holding the user PIN
    /// ([`DEFAULT_PIN_ENV`] unless given).
    #[serde(default = "default_pin_env")]
    pub pin_env: String,
}

fn default_pin_env() -> String {
    DEFAULT_PIN_ENV.to_owned()
}

impl Pkcs11Config {
    /// Checks the labels and the variable name.
    pub fn validate(&self) -> Result<(), MasterKeyError> {
        let bad = |what: &str| Err(MasterKeyError::InvalidConfig(what.to_owned()));
        if self.token_label.is_empty() || self.token_label.len() > MAX_TOKEN_LABEL {
            return bad("token_label must be 1 to 32 bytes");
        }
        if self.token_label.ends_with(' ') {
            // PKCS#11 pads labels with spaces, so a trailing space is lost.
            return bad("token_label must not end with a space");
        }
        if self.key_label.is_empty() {
            return bad("key_label must not be empty");
        }
        if self.pin_env.is_empty() || self.pin_env.contains('=') || self.pin_env.contains('\0') {
            return bad("pin_env must be an environment variable name");
        }
        if self.module.as_os_str().is_empty() {
            return bad("module must not be empty");
        }
        Ok(())
    }
}

impl MasterKeyConfig {
    /// Checks the configuration without touching files or tokens.
    pub fn validate(&self) -> Result<(), MasterKeyError> {
        match self {
            MasterKeyConfig::File { path } if path.as_os_str().is_empty() => Err(
                MasterKeyError::InvalidConfig("path must not be empty".to_owned()),
            ),
            MasterKeyConfig::File { .. } => Ok(()),
            MasterKeyConfig::Pkcs11(config) => config.validate(),
        }
    }

    /// Opens the existing master key. Relative paths are resolved against
    /// `base_dir` (the configuration file's directory); the PKCS#11 PIN is
    /// read from the configured environment variable.
    pub fn open(&self, base_dir: &Path) -> Result<Box<dyn MasterKey>, MasterKeyError> {
        self.validate()?;
        match self {
            MasterKeyConfig::File { path } => {
                Ok(Box::new(FileMasterKey::open(&base_dir.join(path))?))
            }
            #[cfg(feature = "pkcs11")]
            MasterKeyConfig::Pkcs11(config) => {
                let config = config.resolved(base_dir);
                let pin = Pin::from_env(&config.pin_env)?;
                Ok(Box::new(Pkcs11MasterKey::open(&config, pin)?))
            }
            #[cfg(not(feature = "pkcs11"))]
            MasterKeyConfig::Pkcs11(_) => Err(MasterKeyError::Pkcs11Unsupported),
        }
    }

    /// Creates the master key: a new key file (never overwriting one), or
    /// the key on the token if it does not exist yet (an existing one is
    /// used as it is). Paths and the PIN as for [`MasterKeyConfig::open`].
    pub fn init(&self, base_dir: &Path) -> Result<Box<dyn MasterKey>, MasterKeyError> {
        self.validate()?;
        match self {
            MasterKeyConfig::File { path } => {
                Ok(Box::new(FileMasterKey::create(&base_dir.join(path))?))
            }
            #[cfg(feature = "pkcs11")]
            MasterKeyConfig::Pkcs11(config) => {
                let config = config.resolved(base_dir);
                let pin = Pin::from_env(&config.pin_env)?;
                Ok(Box::new(Pkcs11MasterKey::init(&config, pin)?))
            }
            #[cfg(not(feature = "pkcs11"))]
            MasterKeyConfig::Pkcs11(_) => Err(MasterKeyError::Pkcs11Unsupported),
        }
    }
}

#[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
impl Pkcs11Config {
    /// The configuration with a relative module path (other than a bare
    /// file name) made relative to `base_dir`.
    fn resolved(&self, base_dir: &Path) -> Pkcs11Config {
        let mut config = self.clone();
        if self.module.is_relative() && self.module.components().count() > 1 {
            config.module = base_dir.join(&self.module);
        }
        config
    }
}

/// The additional data given to GCM: the format byte, then the caller's
/// `aad`.
fn gcm_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(WRAP_FORMAT_V1);
    full.extend_from_slice(aad);
    full
}

/// Splits a wrapped value into its nonce and its ciphertext with the tag.
fn parse_wrapped(wrapped: &[u8]) -> Result<([u8; NONCE_LEN], &[u8]), MasterKeyError> {
    let (&format, rest) = wrapped.split_first().ok_or(MasterKeyError::Truncated)?;
    if format != WRAP_FORMAT_V1 {
        return Err(MasterKeyError::UnsupportedFormat(format));
    }
    if wrapped.len() < WRAP_OVERHEAD {
        return Err(MasterKeyError::Truncated);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| MasterKeyError::Truncated)?;
    Ok((nonce, sealed))
}

/// A master key read from a file: 32 raw random bytes, mode 0600.
///
/// The key lives in memory in aws-lc's AES-GCM context; the bytes read from
/// the file are zeroised once it is built.
pub struct FileMasterKey {
    id: String,
    key: RandomizedNonceKey,
}

impl fmt::Debug for FileMasterKey {
    // Only the public id: key material never reaches Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileMasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl FileMasterKey {
    /// Generates a new random key and writes it to a new file at `path`
    /// with mode 0600 (set when the file is created, so it is never readable
    /// by others even briefly). Refuses to overwrite anything; syncs the
    /// file and its directory, so the key survives a crash once this
    /// returns.
    pub fn create(path: &Path) -> Result<Self, MasterKeyError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::fill(key.as_mut()).map_err(|_| MasterKeyError::Crypto)?;

        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|err| {
            if err.kind() == io::ErrorKind::AlreadyExists {
                MasterKeyError::KeyFileExists(path.to_owned())
            } else {
                MasterKeyError::at(path)(err)
            }
        })?;
        let written = file.write_all(key.as_ref()).and_then(|()| file.sync_all());
        if let Err(err) = written {
            drop(file);
            // A partial key file would only make the next `create` refuse;
            // the removal is best effort, the write error is what matters.
            let _ = std::fs::remove_file(path);
            return Err(MasterKeyError::at(path)(err));
        }
        sync_parent_dir(path)?;
        tracing::info!(path = %path.display(), "created a new master key file");
        Self::from_bytes(&key)
    }

    /// Reads the key file at `path`. Refuses a file that is not a regular
    /// file, that group or others may access (mode & 0o077 != 0), or that
    /// does not hold exactly 32 bytes.
    pub fn open(path: &Path) -> Result<Self, MasterKeyError> {
        let mut file = File::open(path).map_err(MasterKeyError::at(path))?;
        // The checks use the opened file's metadata, not the path's, so the
        // file cannot be swapped between the check and the read.
        let metadata = file.metadata().map_err(MasterKeyError::at(path))?;
        if !metadata.is_file() {
            return Err(MasterKeyError::NotAFile(path.to_owned()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(MasterKeyError::InsecurePermissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        // One byte more than a key, to notice files that are too long.
        let mut buf = Zeroizing::new([0u8; KEY_LEN + 1]);
        let mut filled = 0;
        while filled < buf.len() {
            let n = file
                .read(&mut buf[filled..])
                .map_err(MasterKeyError::at(path))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled != KEY_LEN {
            return Err(MasterKeyError::InvalidKeyFile(path.to_owned()));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&buf[..KEY_LEN]);
        Self::from_bytes(&key)
    }

    /// Builds the key from raw bytes (for tests and for migrating keys).
    pub fn from_bytes(key: &[u8; KEY_LEN]) -> Result<Self, MasterKeyError> {
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), FILE_ID_LABEL);
        let id = format!("file:{}", hex::encode(&mac.as_ref()[..8]));
        let key = RandomizedNonceKey::new(&AES_256_GCM, key).map_err(|_| MasterKeyError::Crypto)?;
        Ok(FileMasterKey { id, key })
    }
}

/// Syncs the directory holding `path`, so that a new entry in it survives a
/// crash.
fn sync_parent_dir(path: &Path) -> Result<(), MasterKeyError> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(MasterKeyError::at(dir))?;
    }
    #[cfg(not(unix))]
    let _ = path; // Directories cannot be opened for syncing elsewhere.
    Ok(())
}

impl MasterKey for FileMasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn backend(&self) -> &'static str {
        "file"
    }

    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, MasterKeyError> {
        // The buffer is allocated at its final size up front: growing it
        // would free a copy of the plaintext without zeroising it.
        let mut out = Vec::with_capacity(plaintext.len() + WRAP_OVERHEAD);
        out.push(WRAP_FORMAT_V1);
        out.extend_from_slice(&[0; NONCE_LEN]);
        out.extend_from_slice(plaintext);
        let (nonce, tag) = self
            .key
            .seal_in_place_separate_tag(Aad::from(gcm_aad(aad)), &mut out[1 + NONCE_LEN..])
            .map_err(|_| MasterKeyError::Crypto)?;
        out[1..1 + NONCE_LEN].copy_from_slice(nonce.as_ref());
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
        let (nonce, sealed) = parse_wrapped(wrapped)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(gcm_aad(aad)),
                &mut buf,
            )
            .map_err(|_| MasterKeyError::UnwrapFailed)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(feature = "pkcs11")]
mod pkcs11;
#[cfg(feature = "pkcs11")]
pub use pkcs11::{Pkcs11MasterKey, pkcs11_context};
