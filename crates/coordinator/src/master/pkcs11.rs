//! The PKCS#11 master key (feature `pkcs11`): an AES-256 key on a token,
//! used through `cryptoki`, with a pool of sessions.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::Ulong;
use zeroize::Zeroizing;

use super::*;

/// The process-wide context for a PKCS#11 module, loaded and initialised on
/// first use.
///
/// A module is initialised once per process (`C_Initialize`), and finalising
/// it closes every session of every user in the process, so everything in
/// the process that talks to a module should share this context rather than
/// load its own. Contexts live until the process exits. If something else in
/// the process already initialised the module, the context is used as it is
/// (with a warning): finalising it is then that other user's business.
///
/// The module reads its own configuration when it is first initialised
/// (SoftHSM2: the `SOFTHSM2_CONF` environment variable), so that must be in
/// place before the first call.
pub fn pkcs11_context(module: &Path) -> Result<Pkcs11, MasterKeyError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = lock(CONTEXTS.get_or_init(Default::default));
    if let Some(context) = contexts.get(module) {
        return Ok(context.clone());
    }
    let module_error = |source| MasterKeyError::Module {
        module: module.to_owned(),
        source,
    };
    let context = Pkcs11::new(module).map_err(module_error)?;
    match context.initialize(CInitializeArgs::OsThreads) {
        Ok(()) => {}
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            tracing::warn!(
                module = %module.display(),
                "pkcs11 module already initialised elsewhere in this process; sharing it"
            );
        }
        Err(err) => return Err(module_error(err)),
    }
    contexts.insert(module.to_owned(), context.clone());
    Ok(context)
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (a map of contexts, a list of idle sessions).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The slot holding the token labelled `label`.
fn find_token(context: &Pkcs11, label: &str) -> Result<Slot, MasterKeyError> {
    let slots = context
        .get_slots_with_token()
        .map_err(MasterKeyError::pkcs11("slot listing"))?;
    let mut matching = Vec::new();
    let mut present = Vec::new();
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(MasterKeyError::pkcs11("token info"))?;
        if info.label() == label {
            matching.push(slot);
        }
        present.push(format!("`{}`", info.label()));
    }
    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(MasterKeyError::TokenNotFound {
            label: label.to_owned(),
            present,
        }),
        _ => Err(MasterKeyError::AmbiguousToken {
            label: label.to_owned(),
            count: matching.len(),
        }),
    }
}

/// Whether a failed operation left the session unusable, in which case it
/// is closed rather than returned to the pool.
fn session_broken(err: &CkError) -> bool {
    matches!(
        err,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::OperationActive
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// Whether a failed decryption means the token refused the wrapped bytes
/// (wrong key, wrong `aad`, modified bytes), as opposed to a failure of the
/// token or the session. Tokens disagree on the code for a failed GCM tag:
/// the specification says `CKR_ENCRYPTED_DATA_INVALID` (3.0:
/// `CKR_AEAD_DECRYPT_FAILED`, which cryptoki 0.10 does not know and reports
/// as `CKR_GENERAL_ERROR`), and SoftHSM2 2.6 returns `CKR_GENERAL_ERROR`.
fn refused_by_token(err: &CkError) -> bool {
    matches!(
        err,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
            _
        )
    )
}

/// Logged-in sessions with one token, reused across calls. `Session` is
/// `Send` but not `Sync`, so a session is taken out of the pool by one
/// thread, used, and put back.
struct SessionPool {
    context: Pkcs11,
    slot: Slot,
    idle: Mutex<Vec<Session>>,
}

impl SessionPool {
    /// Runs `op` on an idle session, or on a new one if all are busy. The
    /// session is put back unless the pool is full or the session broke.
    /// The outer error is a failure to open a session; the inner one is
    /// `op`'s.
    fn run<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<Result<T, CkError>, MasterKeyError> {
        let pooled = lock(&self.idle).pop();
        let session = match pooled {
            Some(session) => session,
            // Login state belongs to the application, not the session: a
            // new session with a token this process is logged in to is
            // logged in too (the anchor session keeps the login alive).
            None => self
                .context
                .open_ro_session(self.slot)
                .map_err(MasterKeyError::pkcs11("session opening"))?,
        };
        let result = op(&session);
        let keep = match &result {
            Ok(_) => true,
            Err(err) => !session_broken(err),
        };
        if keep {
            let mut idle = lock(&self.idle);
            if idle.len() < PKCS11_POOL_SIZE {
                idle.push(session);
            }
        }
        Ok(result)
    }
}

/// A master key on a PKCS#11 token: an AES-256 key that never leaves it.
///
/// Holds the context, the key's handle, the session that logged in (kept
/// open so the login lasts as long as this value) and a pool of up to
/// [`PKCS11_POOL_SIZE`] idle sessions, so that [`MasterKey::wrap`] and
/// [`MasterKey::unwrap`] can run from several threads at once. Dropping it
/// closes its sessions; the token logs the process out when its last
/// session closes. The PIN is not kept.
pub struct Pkcs11MasterKey {
    id: String,
    key: ObjectHandle,
    pool: SessionPool,
    // Never used after `open`; held so that the token keeps this process
    // logged in even when no pooled session is open. A mutex only to make
    // the type `Sync`.
    _login: Mutex<Session>,
}

impl fmt::Debug for Pkcs11MasterKey {
    // Only the public id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Pkcs11MasterKey {
    /// Logs in to the configured token with `pin` and finds the AES key
    /// labelled `key_label`. Fails with [`MasterKeyError::KeyNotFound`] if
    /// there is none, and refuses a key that is extractable, not sensitive,
    /// not 256 bits long or not allowed to encrypt and decrypt.
    ///
    /// PKCS#11 logs in an application, not a session: while another
    /// [`Pkcs11MasterKey`] of this process is open on the same token, the
    /// token answers `CKR_USER_ALREADY_LOGGED_IN` without checking `pin`,
    /// and this key shares that login.
    pub fn open(config: &Pkcs11Config, pin: Pin) -> Result<Self, MasterKeyError> {
        Self::connect(config, pin, false)
    }

    /// As [`Pkcs11MasterKey::open`], but generates the key on the token if
    /// there is none yet: AES-256, a token object that is private,
    /// sensitive, not extractable, and usable only to encrypt and decrypt.
    /// An existing key is used as it is. Two processes running `init` on
    /// the same token at the same moment could each generate a key; the
    /// next `open` then refuses with [`MasterKeyError::AmbiguousKey`].
    pub fn init(config: &Pkcs11Config, pin: Pin) -> Result<Self, MasterKeyError> {
        Self::connect(config, pin, true)
    }

    fn connect(config: &Pkcs11Config, pin: Pin, create: bool) -> Result<Self, MasterKeyError> {
        config.validate()?;
        let token = config.token_label.as_str();
        let context = pkcs11_context(&config.module)?;
        let slot = find_token(&context, token)?;
        let login = context
            .open_ro_session(slot)
            .map_err(MasterKeyError::pkcs11("session opening"))?;
        match login.login(UserType::User, Some(&pin.to_auth_pin())) {
            Ok(()) => {}
            // Another key in this process is logged in to the same token;
            // the login is shared, so this session is logged in already.
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                tracing::debug!(token, "pkcs11 token already logged in by this process");
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(MasterKeyError::WrongPin(token.to_owned()));
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(MasterKeyError::PinLocked(token.to_owned()));
            }
            Err(err) => return Err(MasterKeyError::pkcs11("login")(err)),
        }
        drop(pin);

        let key = match find_key(&login, config)? {
            Some(key) => key,
            None if create => generate_key(&context, slot, config)?,
            None => {
                return Err(MasterKeyError::KeyNotFound {
                    token: token.to_owned(),
                    key: config.key_label.clone(),
                });
            }
        };
        check_key(&login, key, config)?;
        let id = format!("pkcs11:{}/{}", config.token_label, config.key_label);
        tracing::info!(id, "opened the pkcs11 master key");
        Ok(Pkcs11MasterKey {
            id,
            key,
            pool: SessionPool {
                context,
                slot,
                idle: Mutex::new(Vec::new()),
            },
            _login: Mutex::new(login),
        })
    }
}

/// The search template for the master key: an AES secret key with the
/// configured label.
fn key_template(config: &Pkcs11Config) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(config.key_label.as_bytes().to_vec()),
    ]
}

fn find_key(
    session: &Session,
    config: &Pkcs11Config,
) -> Result<Option<ObjectHandle>, MasterKeyError> {
    let found = session
        .find_objects(&key_template(config))
        .map_err(MasterKeyError::pkcs11("key search"))?;
    match found.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(*key)),
        _ => Err(MasterKeyError::AmbiguousKey {
            token: config.token_label.clone(),
            key: config.key_label.clone(),
            count: found.len(),
        }),
    }
}

/// Generates the master key on the token, in a read-write session (token
/// objects can only be created in one).
fn generate_key(
    context: &Pkcs11,
    slot: Slot,
    config: &Pkcs11Config,
) -> Result<ObjectHandle, MasterKeyError> {
    let session = context
        .open_rw_session(slot)
        .map_err(MasterKeyError::pkcs11("read-write session opening"))?;
    let mut template = key_template(config);
    template.extend([
        Attribute::ValueLen(Ulong::from(KEY_LEN as u64)),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]);
    let key = session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(MasterKeyError::pkcs11("key generation"))?;
    tracing::info!(
        token = config.token_label,
        key = config.key_label,
        "generated a new pkcs11 master key"
    );
    Ok(key)
}

/// Refuses a key that could leave the token, or that is not AES-256 or not
/// allowed to encrypt and decrypt.
fn check_key(
    session: &Session,
    key: ObjectHandle,
    config: &Pkcs11Config,
) -> Result<(), MasterKeyError> {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
            ],
        )
        .map_err(MasterKeyError::pkcs11("key attribute reading"))?;
    let (mut len, mut sensitive, mut extractable, mut encrypt, mut decrypt) =
        (None, false, true, false, false);
    for attribute in attributes {
        match attribute {
            Attribute::ValueLen(n) => len = Some(*n),
            Attribute::Sensitive(b) => sensitive = b,
            Attribute::Extractable(b) => extractable = b,
            Attribute::Encrypt(b) => encrypt = b,
            Attribute::Decrypt(b) => decrypt = b,
            _ => {}
        }
    }
    let unsuitable = |reason| {
        Err(MasterKeyError::UnsuitableKey {
            token: config.token_label.clone(),
            key: config.key_label.clone(),
            reason,
        })
    };
    if len != Some(KEY_LEN as u64) {
        return unsuitable("it is not a 256-bit key");
    }
    if !sensitive || extractable {
        return unsuitable("it is extractable or not sensitive, so it could leave the token");
    }
    if !encrypt || !decrypt {
        return unsuitable("it is not allowed to encrypt and decrypt");
    }
    Ok(())
}

impl MasterKey for Pkcs11MasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn backend(&self) -> &'static str {
        "pkcs11"
    }

    fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, MasterKeyError> {
        // The nonce comes from aws-lc's generator rather than the token's:
        // some tokens' generators are slow, and the caller-supplied IV is
        // what `CKM_AES_GCM` single-part encryption expects.
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce).map_err(|_| MasterKeyError::Crypto)?;
        let full_aad = gcm_aad(aad);
        let sealed = self
            .pool
            .run(|session| {
                let mut iv = nonce;
                let params = GcmParams::new(&mut iv, &full_aad, Ulong::from(TAG_LEN as u64 * 8))?;
                session.encrypt(&Mechanism::AesGcm(params), self.key, plaintext)
            })?
            .map_err(MasterKeyError::pkcs11("encryption"))?;
        if sealed.len() != plaintext.len() + TAG_LEN {
            // A token that appends something else than a 16-byte tag would
            // produce values nothing could unwrap.
            return Err(MasterKeyError::Crypto);
        }
        let mut out = Vec::with_capacity(sealed.len() + 1 + NONCE_LEN);
        out.push(WRAP_FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
        let (nonce, sealed) = parse_wrapped(wrapped)?;
        let full_aad = gcm_aad(aad);
        self.pool
            .run(|session| {
                let mut iv = nonce;
                let params = GcmParams::new(&mut iv, &full_aad, Ulong::from(TAG_LEN as u64 * 8))?;
                session
                    .decrypt(&Mechanism::AesGcm(params), self.key, sealed)
                    .map(Zeroizing::new)
            })?
            .map_err(|err| {
                if refused_by_token(&err) {
                    // The detail stays in the log: outside, every
                    // authentication failure is the same error.
                    tracing::debug!(error = %err, "pkcs11 unwrap failed");
                    MasterKeyError::UnwrapFailed
                } else {
                    MasterKeyError::pkcs11("decryption")(err)
                }
            })
    }
}
