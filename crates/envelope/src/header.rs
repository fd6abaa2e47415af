//! The public header: encoding, parsing and unlocking (specification, 4.1 to
//! 4.3 and section 6, steps 1 to 6).

use std::io::Read;

use aws_lc_rs::aead::{Aad, Nonce};
use aws_lc_rs::{constant_time, hmac, rand};
use zeroize::Zeroizing;

use crate::context::{Context, MAX_CONTEXT_KEY, MAX_CONTEXT_PAIRS, MAX_CONTEXT_VALUE};
use crate::error::{Error, Result};
use crate::keys::{FileKey, FileKeys, KEY_LEN, Kek, KeyId, derive_file_keys, wrap_key};

/// The magic bytes that open every sealed file.
pub const MAGIC: &[u8; 8] = b"TWINSEAL";
/// The only format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Largest header a reader accepts, in bytes.
pub const MAX_HEADER_LEN: usize = 1 << 20;
/// Most stanzas a header may hold.
pub const MAX_STANZAS: usize = 32;
/// Stanza type: AES-256-GCM wrap of the file key under a KEK.
pub const STANZA_AES256GCM: u8 = 0x01;

const PREFIX_LEN: usize = 13; // magic, version, header length
const SALT_LEN: usize = 32;
const WRAP_NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const WRAP_BODY_LEN: usize = WRAP_NONCE_LEN + KEY_LEN + TAG_LEN;
const TRAILER_LEN: usize = 64; // commitment and MAC

/// One recipient stanza as it appears in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stanza {
    /// The stanza type (`0x01` is the only one defined in v1).
    pub kind: u8,
    /// The key id it names.
    pub key_id: KeyId,
    body: Vec<u8>,
}

/// A parsed, *not yet authenticated* header. Everything in it is public.
#[derive(Clone, Debug)]
pub struct Header {
    salt: [u8; SALT_LEN],
    stanzas: Vec<Stanza>,
    context: Context,
    commitment: [u8; KEY_LEN],
    raw: Vec<u8>,
}

impl Header {
    /// The format version.
    pub fn version(&self) -> u8 {
        VERSION
    }

    /// Length of the header on disk; the payload starts here.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Always false: a header is never empty (present for clippy's sake).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The recipient stanzas.
    pub fn stanzas(&self) -> &[Stanza] {
        &self.stanzas
    }

    /// The encryption context (authenticated only once the file is opened).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The raw header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Parses a complete header from the start of `bytes` (trailing bytes,
    /// the payload, are ignored).
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        let header_len = check_prefix(bytes)?;
        let raw = bytes
            .get(..header_len)
            .ok_or(Error::InvalidHeader("truncated header"))?;
        parse_body(raw)
    }

    /// Reads exactly the header from a stream, leaving it at the payload.
    pub fn read_from<R: Read + ?Sized>(reader: &mut R) -> Result<Header> {
        let mut prefix = [0u8; PREFIX_LEN];
        let got = read_full(reader, &mut prefix)?;
        let header_len = check_prefix(&prefix[..got])?;
        let mut raw = vec![0u8; header_len];
        raw[..PREFIX_LEN].copy_from_slice(&prefix);
        if read_full(reader, &mut raw[PREFIX_LEN..])? != header_len - PREFIX_LEN {
            return Err(Error::InvalidHeader("truncated header"));
        }
        parse_body(&raw)
    }

    /// Unwraps the file key from the stanza of one of `keys`, then verifies
    /// the key commitment and the header MAC, and only then returns the key
    /// (specification, section 6, steps 5 and 6). Once it returns, the
    /// header, and with it [`Header::context`], is authentic.
    ///
    /// This is the key manager's half of opening (specification, section 9):
    /// it does not compare the context with an expected one, because the key
    /// manager's policy inspects [`Header::context`] instead.
    ///
    /// # Errors
    ///
    /// [`Error::NoStanza`] if no stanza names one of `keys`, and the single
    /// coarse [`Error::DecryptionFailed`] for every failure that involves a
    /// secret (wrong key under a known id, a modified stanza, commitment,
    /// context or MAC), exactly as [`Opener::new`](crate::Opener::new).
    pub fn unwrap_file_key(&self, keys: &[Kek]) -> Result<FileKey> {
        let file_key = self.unwrap_stanza(keys)?;
        self.verify(&file_key)?;
        Ok(file_key)
    }

    /// Checks that `file_key` is this header's file key: the key commitment
    /// and the header MAC must verify under it (specification, section 6,
    /// step 6). After `Ok(())`, the header is authentic for the holder of
    /// `file_key`.
    ///
    /// # Errors
    ///
    /// [`Error::DecryptionFailed`] if the key does not match or the header
    /// was modified; it never says which.
    pub fn verify_with_file_key(&self, file_key: &FileKey) -> Result<()> {
        self.verify(file_key).map(drop)
    }

    /// Checks the caller's context, then gets the file key from `by` and
    /// verifies the commitment and the header MAC (specification, section 6,
    /// steps 4 to 6).
    pub(crate) fn unlock(&self, by: Unlock<'_>, context: &Context) -> Result<FileKeys> {
        if &self.context != context {
            return Err(Error::ContextMismatch);
        }
        match by {
            Unlock::Keks(keys) => self.verify(&self.unwrap_stanza(keys)?),
            Unlock::FileKey(file_key) => self.verify(file_key),
        }
    }

    /// Finds a stanza for one of `keys` and unwraps the file key from it,
    /// *without* verifying it against the header (step 5 and the first half
    /// of step 6). Callers must pass the result to [`Header::verify`].
    fn unwrap_stanza(&self, keys: &[Kek]) -> Result<FileKey> {
        let (kek, stanza) = self
            .stanzas
            .iter()
            .filter(|s| s.kind == STANZA_AES256GCM)
            .find_map(|s| keys.iter().find(|k| k.id() == &s.key_id).map(|k| (k, s)))
            .ok_or(Error::NoStanza)?;
        let wrap = wrap_key(kek, &self.salt)?;
        let (nonce, sealed) = stanza.body.split_at(WRAP_NONCE_LEN);
        let mut in_out = Zeroizing::new([0u8; KEY_LEN + TAG_LEN]);
        in_out.copy_from_slice(sealed);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::DecryptionFailed)?;
        let plain = wrap
            .open_in_place(
                nonce,
                Aad::from(stanza_aad(&stanza.key_id)),
                &mut in_out[..],
            )
            .map_err(|_| Error::DecryptionFailed)?;
        let bytes: [u8; KEY_LEN] = plain.try_into().map_err(|_| Error::DecryptionFailed)?;
        Ok(FileKey::from_bytes(bytes))
    }

    /// Derives the file's keys from `file_key` and verifies the commitment
    /// and the header MAC in constant time, both always computed, so the one
    /// error never tells which failed.
    fn verify(&self, file_key: &FileKey) -> Result<FileKeys> {
        let keys = derive_file_keys(file_key, &self.salt)?;
        let mac_start = self.raw.len() - KEY_LEN;
        let committed = constant_time::verify_slices_are_equal(&keys.commitment, &self.commitment);
        let mac = hmac::verify(&keys.mac, &self.raw[..mac_start], &self.raw[mac_start..]);
        match (committed, mac) {
            (Ok(()), Ok(())) => Ok(keys),
            _ => Err(Error::DecryptionFailed),
        }
    }
}

/// How a header is unlocked when opening: with KEKs, one of which unwraps the
/// file key from its stanza, or with the file key itself, released by a key
/// manager.
#[derive(Clone, Copy)]
pub(crate) enum Unlock<'a> {
    /// Key-encryption keys the caller holds.
    Keks(&'a [Kek]),
    /// A file key released by a key manager.
    FileKey(&'a FileKey),
}

/// Where the header of a file being sealed comes from.
#[derive(Clone, Copy)]
pub(crate) enum Seal<'a> {
    /// A fresh header built here for these KEKs and this context.
    Fresh(&'a [Kek], &'a Context),
    /// A complete header built by a key manager, with its file key.
    Given(&'a [u8], &'a FileKey),
}

impl Seal<'_> {
    /// The header bytes to write and the keys to seal the payload with. A
    /// given header must be exactly one header and must verify under its
    /// file key, so that nothing is sealed under a key that does not open it.
    pub(crate) fn prepare(self) -> Result<(Vec<u8>, FileKeys)> {
        match self {
            Seal::Fresh(keys, context) => {
                let (bytes, _, derived) = build_header(keys, context)?;
                Ok((bytes, derived))
            }
            Seal::Given(bytes, file_key) => {
                let header = Header::parse(bytes)?;
                if header.len() != bytes.len() {
                    return Err(Error::InvalidHeader("bytes follow the header"));
                }
                let derived = header.verify(file_key)?;
                Ok((header.raw, derived))
            }
        }
    }
}

/// Builds a fresh header for `keys` and `context`, with a new salt and a new
/// random file key, and returns the header bytes and the file key
/// (specification, section 5, steps 1 to 3).
///
/// This is the key manager's half of sealing (specification, section 9): the
/// key manager, which holds `keys`, calls it and hands both values to the
/// client, which seals the payload with [`Sealer::with_header`] or
/// [`seal_bytes_with_header`]. Holders of their own keys just call
/// [`Sealer::new`] or [`seal_bytes`].
///
/// # Errors
///
/// [`Error::InvalidRecipients`] for no keys, more than [`MAX_STANZAS`] or a
/// repeated key id; [`Error::InvalidHeader`] if the header would be larger
/// than [`MAX_HEADER_LEN`]; [`Error::Crypto`] if the random generator fails.
///
/// [`Sealer::with_header`]: crate::Sealer::with_header
/// [`seal_bytes_with_header`]: crate::seal_bytes_with_header
/// [`Sealer::new`]: crate::Sealer::new
/// [`seal_bytes`]: crate::seal_bytes
pub fn new_header(keys: &[Kek], context: &Context) -> Result<(Vec<u8>, FileKey)> {
    build_header(keys, context).map(|(bytes, file_key, _)| (bytes, file_key))
}

/// [`new_header`], also returning the keys derived from the file key.
fn build_header(keys: &[Kek], context: &Context) -> Result<(Vec<u8>, FileKey, FileKeys)> {
    if keys.is_empty() {
        return Err(Error::InvalidRecipients("at least one key is needed"));
    }
    if keys.len() > MAX_STANZAS {
        return Err(Error::InvalidRecipients("at most 32 keys"));
    }
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].iter().any(|other| other.id() == key.id()) {
            return Err(Error::InvalidRecipients("the same key id is given twice"));
        }
    }
    let file_key = FileKey::generate()?;
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt)?;
    let derived = derive_file_keys(&file_key, &salt)?;

    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]); // header length, filled in below
    out.extend_from_slice(&salt);
    out.push(keys.len() as u8);
    for kek in keys {
        let id = kek.id().as_str().as_bytes();
        let mut nonce = [0u8; WRAP_NONCE_LEN];
        rand::fill(&mut nonce)?;
        let mut wrapped = Zeroizing::new(*file_key.expose());
        let tag = wrap_key(kek, &salt)?.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(stanza_aad(kek.id())),
            &mut wrapped[..],
        )?;
        out.push(STANZA_AES256GCM);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&(WRAP_BODY_LEN as u16).to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&wrapped[..]);
        out.extend_from_slice(tag.as_ref());
    }
    out.push(context.len() as u8);
    for (key, value) in context.iter() {
        out.push(key.len() as u8);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&derived.commitment);
    let header_len = out.len() + KEY_LEN;
    if header_len > MAX_HEADER_LEN {
        return Err(Error::InvalidHeader("header too large"));
    }
    out[9..13].copy_from_slice(&(header_len as u32).to_be_bytes());
    let mac = hmac::sign(&derived.mac, &out);
    out.extend_from_slice(mac.as_ref());
    debug_assert_eq!(out.len(), header_len);
    Ok((out, file_key, derived))
}

fn stanza_aad(id: &KeyId) -> Vec<u8> {
    let id = id.as_str().as_bytes();
    let mut aad = Vec::with_capacity(19 + id.len());
    aad.extend_from_slice(b"twinseal/v1 stanza");
    aad.push(id.len() as u8);
    aad.extend_from_slice(id);
    aad
}

/// Checks magic, version and header length on a prefix of up to 13 bytes.
fn check_prefix(bytes: &[u8]) -> Result<usize> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] || bytes.is_empty() {
        return Err(Error::NotTwinseal);
    }
    if bytes.len() < PREFIX_LEN {
        return Err(Error::InvalidHeader("truncated header"));
    }
    if bytes[8] != VERSION {
        return Err(Error::UnsupportedVersion(bytes[8]));
    }
    let header_len = u32::from_be_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(Error::InvalidHeader("header length too large"));
    }
    if header_len < PREFIX_LEN + SALT_LEN + 2 + TRAILER_LEN {
        return Err(Error::InvalidHeader("header length too small"));
    }
    Ok(header_len)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(filled)
}

/// A bounds-checked cursor over the header bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(Error::InvalidHeader("field runs past the header length"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
}

/// Parses a header whose prefix was checked and whose length is `raw.len()`.
fn parse_body(raw: &[u8]) -> Result<Header> {
    let body_end = raw.len() - TRAILER_LEN;
    let mut cur = Cursor {
        bytes: &raw[..body_end],
        pos: PREFIX_LEN,
    };
    let salt: [u8; SALT_LEN] = cur.take(SALT_LEN)?.try_into().expect("length checked");
    let count = cur.u8()? as usize;
    if count == 0 || count > MAX_STANZAS {
        return Err(Error::InvalidHeader("stanza count out of range"));
    }
    let mut stanzas: Vec<Stanza> = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = cur.u8()?;
        let id_len = cur.u8()? as usize;
        let id = std::str::from_utf8(cur.take(id_len)?)
            .ok()
            .and_then(|id| KeyId::new(id).ok())
            .ok_or(Error::InvalidHeader("invalid key id"))?;
        let body_len = cur.u16()?;
        let body = cur.take(body_len)?.to_vec();
        if kind == STANZA_AES256GCM && body_len != WRAP_BODY_LEN {
            return Err(Error::InvalidHeader("wrapped key has the wrong length"));
        }
        if stanzas.iter().any(|s| s.key_id == id) {
            return Err(Error::InvalidHeader("duplicate key id"));
        }
        stanzas.push(Stanza {
            kind,
            key_id: id,
            body,
        });
    }
    let pairs = cur.u8()? as usize;
    if pairs > MAX_CONTEXT_PAIRS {
        return Err(Error::InvalidHeader("too many context pairs"));
    }
    let mut context = Context::new();
    let mut previous: Option<&[u8]> = None;
    for _ in 0..pairs {
        let key_len = cur.u8()? as usize;
        let key = cur.take(key_len)?;
        let value_len = cur.u16()?;
        if key_len > MAX_CONTEXT_KEY || value_len > MAX_CONTEXT_VALUE {
            return Err(Error::InvalidHeader("context pair too long"));
        }
        let value = cur.take(value_len)?;
        if previous.is_some_and(|p| p >= key) {
            return Err(Error::InvalidHeader("context keys not in ascending order"));
        }
        previous = Some(key);
        let (Ok(key), Ok(value)) = (std::str::from_utf8(key), std::str::from_utf8(value)) else {
            return Err(Error::InvalidHeader("context pair is not UTF-8"));
        };
        context
            .insert(key, value)
            .map_err(|_| Error::InvalidHeader("invalid context pair"))?;
    }
    if cur.pos != body_end {
        return Err(Error::InvalidHeader(
            "header length does not match its fields",
        ));
    }
    let commitment = raw[body_end..body_end + KEY_LEN]
        .try_into()
        .expect("length checked");
    Ok(Header {
        salt,
        stanzas,
        context,
        commitment,
        raw: raw.to_vec(),
    })
}
