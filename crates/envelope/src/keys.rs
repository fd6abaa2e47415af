//! Key-encryption keys, key ids, file keys and the keys derived from them.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use aws_lc_rs::{hkdf, hmac, rand};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

/// Length in bytes of every key of the format (AES-256).
pub const KEY_LEN: usize = 32;

/// 32 secret bytes, zeroed on drop. Deliberately not `Debug`, `Clone` or
/// serializable: the bytes leave this type only to be handed to aws-lc.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A fresh key from the system's secure random generator.
    pub fn generate() -> Result<Self> {
        let mut key = SecretKey([0; KEY_LEN]);
        rand::fill(&mut key.0)?;
        Ok(key)
    }

    /// Takes ownership of key bytes (the caller should zero its own copies).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// Copies key bytes from a slice, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let array: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| Error::InvalidKeyFile("a key is exactly 32 bytes"))?;
        Ok(SecretKey(array))
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// A file's random key `K` (specification, section 3): the secret from which
/// the payload key, the header MAC key and the key commitment of one file are
/// derived. Zeroed on drop; deliberately not `Debug`, `Clone` or serializable.
///
/// Callers that hold their key-encryption keys never see it ([`Sealer::new`],
/// [`Opener::new`]). It is public for key managers that keep their KEKs to
/// themselves (specification, section 9): the key manager builds the header
/// with [`new_header`] or releases the key of an existing header with
/// [`Header::unwrap_file_key`], and the client seals or opens the payload
/// with it.
///
/// [`Sealer::new`]: crate::Sealer::new
/// [`Opener::new`]: crate::Opener::new
/// [`new_header`]: crate::new_header
/// [`Header::unwrap_file_key`]: crate::Header::unwrap_file_key
pub struct FileKey(SecretKey);

impl FileKey {
    /// A fresh file key from the system's secure random generator.
    pub(crate) fn generate() -> Result<Self> {
        SecretKey::generate().map(FileKey)
    }

    /// Takes ownership of file key bytes, for instance as received from a key
    /// manager (the caller should zero its own copies).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        FileKey(SecretKey::from_bytes(bytes))
    }

    /// The key bytes, **only** for transport to a holder authorized to read
    /// the file (a key manager answering a client over an authenticated,
    /// encrypted channel). Anyone with these bytes can read the file and
    /// forge segments: never log, store or display them.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        self.0.expose()
    }
}

/// The public name of a key-encryption key: 1 to 255 printable ASCII bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Checks the rules of the specification (section 3).
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let ok = (1..=255).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if ok {
            Ok(KeyId(id))
        } else {
            Err(Error::InvalidKeyId)
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key-encryption key with its id: what a recipient stanza names.
pub struct Kek {
    id: KeyId,
    key: SecretKey,
}

impl fmt::Debug for Kek {
    // Only the public id: key material never reaches Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// A key under an explicit id (for instance one the coordinator manages).
    pub fn new(id: KeyId, key: SecretKey) -> Self {
        Kek { id, key }
    }

    /// A local key, named by its `local-…` id (specification, section 3).
    pub fn local(key: SecretKey) -> Self {
        let id = local_key_id(&key);
        Kek { id, key }
    }

    /// Reads a local key file: exactly 32 raw bytes.
    pub fn read_key_file(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(Error::at(path))?;
        // One byte more than a key, to notice files that are too long.
        let mut buf = Zeroizing::new([0u8; KEY_LEN + 1]);
        let mut filled = 0;
        while filled < buf.len() {
            let n = file.read(&mut buf[filled..]).map_err(Error::at(path))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled != KEY_LEN {
            return Err(Error::InvalidKeyFile("a key file holds exactly 32 bytes"));
        }
        Ok(Kek::local(SecretKey::from_slice(&buf[..KEY_LEN])?))
    }

    /// Generates a local key and writes it to a new file with mode 0600.
    /// Refuses to overwrite an existing file.
    pub fn generate_key_file(path: &Path) -> Result<Self> {
        let key = SecretKey::generate()?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|err| {
            if err.kind() == std::io::ErrorKind::AlreadyExists {
                Error::OutputExists(path.to_owned())
            } else {
                Error::at(path)(err)
            }
        })?;
        file.write_all(key.expose()).map_err(Error::at(path))?;
        file.sync_all().map_err(Error::at(path))?;
        Ok(Kek::local(key))
    }

    /// The key's public id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.key
    }
}

fn local_key_id(key: &SecretKey) -> KeyId {
    let mac = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key.expose()),
        b"twinseal/v1 key id",
    );
    KeyId(format!("local-{}", hex::encode(&mac.as_ref()[..8])))
}

/// An HKDF output length, for expanding into plain byte arrays.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The keys and commitment derived from a file key and the file's salt.
pub(crate) struct FileKeys {
    pub(crate) payload: LessSafeKey,
    pub(crate) mac: hmac::Key,
    pub(crate) commitment: [u8; KEY_LEN],
}

/// Derives `PK`, `MK` and `C` (specification, section 3).
pub(crate) fn derive_file_keys(file_key: &FileKey, salt: &[u8; 32]) -> Result<FileKeys> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(file_key.expose());
    let payload = UnboundKey::from(prk.expand(&[b"twinseal/v1 payload"], &AES_256_GCM)?);
    let mac = hmac::Key::from(prk.expand(&[b"twinseal/v1 header"], hmac::HMAC_SHA256)?);
    let mut commitment = [0u8; KEY_LEN];
    prk.expand(&[b"twinseal/v1 commit"], Len(KEY_LEN))?
        .fill(&mut commitment)?;
    Ok(FileKeys {
        payload: LessSafeKey::new(payload),
        mac,
        commitment,
    })
}

/// Derives the per-file wrapping key `WK` of a KEK (specification, 4.2).
pub(crate) fn wrap_key(kek: &Kek, salt: &[u8; 32]) -> Result<LessSafeKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(kek.secret().expose());
    let key = UnboundKey::from(prk.expand(&[b"twinseal/v1 wrap"], &AES_256_GCM)?);
    Ok(LessSafeKey::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_the_id_and_never_the_key() {
        let kek = Kek::local(SecretKey::from_bytes([0xab; KEY_LEN]));
        let shown = format!("{kek:?}");
        assert!(shown.contains(kek.id().as_str()), "{shown}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn local_key_ids_are_stable_and_distinct() {
        let a = Kek::local(SecretKey::from_bytes([1; KEY_LEN]));
        let a2 = Kek::local(SecretKey::from_bytes([1; KEY_LEN]));
        let b = Kek::local(SecretKey::from_bytes([2; KEY_LEN]));
        assert_eq!(a.id(), a2.id());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().as_str().len(), "local-".len() + 16);
    }

    #[test]
    fn key_ids_must_be_printable_ascii() {
        assert!(KeyId::new("coordinator/key-7").is_ok());
        for bad in ["", "has space", "tab\t", "é", &"x".repeat(256)] {
            assert!(KeyId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_files_must_be_32_bytes_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let kek = Kek::generate_key_file(&path).unwrap();
        assert_eq!(Kek::read_key_file(&path).unwrap().id(), kek.id());
        assert!(matches!(
            Kek::generate_key_file(&path),
            Err(Error::OutputExists(_))
        ));
        for len in [0, 31, 33, 64] {
            std::fs::write(dir.path().join("bad"), vec![0u8; len]).unwrap();
            assert!(matches!(
                Kek::read_key_file(&dir.path().join("bad")),
                Err(Error::InvalidKeyFile(_))
            ));
        }
    }
}
