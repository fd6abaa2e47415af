//! Checkpoints (C2SP tlog-checkpoint) in signed notes (C2SP signed-note),
//! signed with Ed25519, and verifier keys in the note "vkey" text form.
//!
//! A checkpoint body is `<origin>\n<size>\n<base64 root>\n`. The signed note
//! is the body, a blank line, and one line per signature:
//! `— <key name> <base64(key hash || signature)>\n` (U+2014 em dash, then a
//! space). The key hash is the first four bytes of
//! `SHA-256(name || 0x0A || 0x01 || public key)`, the `0x01` naming Ed25519.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::merkle::{Hash, sha256};

/// The longest signed note [`verify_checkpoint`] parses, in bytes.
pub const MAX_NOTE_LEN: usize = 64 * 1024;

/// The most signature lines a note may carry (as in Go's `sumdb/note`).
const MAX_SIGNATURES: usize = 100;

/// The prefix of a signature line: an em dash and a space.
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";

/// The signature type byte of Ed25519 in key hashes and verifier keys.
const ALG_ED25519: u8 = 0x01;

/// Whether `name` is a valid key name: non-empty, no Unicode white space, no
/// plus sign (the separator of the verifier key form).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

/// The key hash of an Ed25519 key of that name.
fn key_hash(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut buf = Vec::with_capacity(name.len() + 34);
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.push(ALG_ED25519);
    buf.extend_from_slice(public_key);
    let d = sha256(&buf);
    [d[0], d[1], d[2], d[3]]
}

/// A checkpoint verifier key: the log's name and its Ed25519 public key.
///
/// Its text form (`Display`/`FromStr`) is the signed-note verifier key
/// `<name>+<8 hex digits of key hash>+<base64(0x01 || public key)>`, as
/// Go's `golang.org/x/mod/sumdb/note` and the C2SP tools read it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VerifierKey {
    name: String,
    public_key: [u8; 32],
    hash: [u8; 4],
}

impl VerifierKey {
    /// A verifier key from a name and a raw 32-byte Ed25519 public key.
    pub fn new(name: &str, public_key: &[u8]) -> Result<Self> {
        if !valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| Error::InvalidVerifierKey("an Ed25519 public key has 32 bytes"))?;
        Ok(VerifierKey {
            hash: key_hash(name, &public_key),
            name: name.to_string(),
            public_key,
        })
    }

    /// The key name, which is also the origin line of the log's checkpoints.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The four-byte key hash that signature lines carry.
    pub fn key_hash(&self) -> [u8; 4] {
        self.hash
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(msg, sig)
            .is_ok()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = [0u8; 33];
        key[0] = ALG_ED25519;
        key[1..].copy_from_slice(&self.public_key);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.hash),
            B64.encode(key)
        )
    }
}

impl FromStr for VerifierKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        // The name holds no '+', the hash is hex: the first two '+' split;
        // the base64 key may contain more.
        let (name, rest) = s
            .split_once('+')
            .ok_or(Error::InvalidVerifierKey("expected <name>+<hash>+<key>"))?;
        let (hash, key) = rest
            .split_once('+')
            .ok_or(Error::InvalidVerifierKey("expected <name>+<hash>+<key>"))?;
        if !valid_name(name) {
            return Err(Error::InvalidVerifierKey("invalid key name"));
        }
        let mut want = [0u8; 4];
        if hash.len() != 8 || hex::decode_to_slice(hash, &mut want).is_err() {
            return Err(Error::InvalidVerifierKey(
                "the key hash must be 8 hex digits",
            ));
        }
        let key = B64
            .decode(key)
            .map_err(|_| Error::InvalidVerifierKey("the key is not base64"))?;
        let Some((&alg, public_key)) = key.split_first() else {
            return Err(Error::InvalidVerifierKey("empty key"));
        };
        if alg != ALG_ED25519 {
            return Err(Error::InvalidVerifierKey(
                "unsupported key type (only Ed25519, 0x01)",
            ));
        }
        if public_key.len() != 32 {
            return Err(Error::InvalidVerifierKey(
                "an Ed25519 public key has 32 bytes",
            ));
        }
        let vk = VerifierKey::new(name, public_key)?;
        if vk.hash != want {
            return Err(Error::InvalidVerifierKey(
                "the key hash does not match the name and key",
            ));
        }
        Ok(vk)
    }
}

/// The log's checkpoint signing key: an Ed25519 key and the origin (key
/// name) it signs as, e.g. `twinseal.coordinator/<id>`. `Debug` shows the
/// verifier key only.
pub struct CheckpointSigner {
    key: Ed25519KeyPair,
    verifier: VerifierKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointSigner({})", self.verifier)
    }
}

impl CheckpointSigner {
    /// A fresh key for `origin`, with its PKCS#8 v2 encoding for the caller
    /// to store (sealed) and reload with [`CheckpointSigner::from_pkcs8`].
    pub fn generate(origin: &str) -> Result<(Self, Zeroizing<Vec<u8>>)> {
        if !valid_name(origin) {
            return Err(Error::InvalidName(origin.to_string()));
        }
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| Error::Crypto)?;
        // `Document` zeroes its bytes on drop; the copy handed out is zeroed
        // on drop too.
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        let signer = Self::from_pkcs8(origin, &pkcs8)?;
        Ok((signer, pkcs8))
    }

    /// The key from a PKCS#8 (v1 or v2) Ed25519 document.
    pub fn from_pkcs8(origin: &str, pkcs8: &[u8]) -> Result<Self> {
        if !valid_name(origin) {
            return Err(Error::InvalidName(origin.to_string()));
        }
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| Error::InvalidSigningKey)?;
        Self::from_key(origin, key)
    }

    fn from_key(origin: &str, key: Ed25519KeyPair) -> Result<Self> {
        let verifier = VerifierKey::new(origin, key.public_key().as_ref())?;
        Ok(CheckpointSigner { key, verifier })
    }

    /// The origin (key name) the checkpoints carry.
    pub fn origin(&self) -> &str {
        self.verifier.name()
    }

    /// The key auditors verify checkpoints with.
    pub fn verifier_key(&self) -> VerifierKey {
        self.verifier.clone()
    }

    /// Sign a checkpoint of a tree of `size` leaves with head `root`.
    pub fn sign_checkpoint(&self, size: u64, root: &Hash) -> Checkpoint {
        let body = checkpoint_body(self.origin(), size, root);
        let note = self.sign_note(&body);
        Checkpoint {
            origin: self.origin().to_string(),
            size,
            root: *root,
            note,
        }
    }

    /// The signed note of `text` (which ends with a newline).
    fn sign_note(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.verifier.hash);
        blob.extend_from_slice(sig.as_ref());
        format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.origin(),
            B64.encode(blob)
        )
    }
}

/// A signed checkpoint: the log's origin, its size and tree head, and the
/// full signed-note text that carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (the signing key's name).
    pub origin: String,
    /// The number of entries the checkpoint covers.
    pub size: u64,
    /// The Merkle tree head of the first `size` entries.
    pub root: Hash,
    /// The signed note, as served and exported.
    pub note: String,
}

/// The checkpoint body: origin, decimal size, base64 root, each ending in a
/// newline, and no extension lines.
fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// A signed note split into its text and its signature lines (name, key
/// hash, signature), with the structural rules of C2SP signed-note checked.
pub(crate) struct ParsedNote<'a> {
    pub(crate) text: &'a str,
    pub(crate) sigs: Vec<(&'a str, [u8; 4], Vec<u8>)>,
}

pub(crate) fn parse_note(note: &str) -> Result<ParsedNote<'_>> {
    if note.len() > MAX_NOTE_LEN {
        return Err(Error::MalformedNote("too long"));
    }
    if note.chars().any(|c| c < '\u{20}' && c != '\n') {
        return Err(Error::MalformedNote("control character"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or(Error::MalformedNote("no blank line before the signatures"))?;
    let text = &note[..split + 1];
    let block = &note[split + 2..];
    if block.is_empty() || !block.ends_with('\n') {
        return Err(Error::MalformedNote(
            "the signature block must be lines ending in a newline",
        ));
    }
    let mut sigs = Vec::new();
    for line in block.split_terminator('\n') {
        if sigs.len() == MAX_SIGNATURES {
            return Err(Error::MalformedNote("too many signatures"));
        }
        let rest = line.strip_prefix(SIG_PREFIX).ok_or(Error::MalformedNote(
            "a signature line must start with an em dash and a space",
        ))?;
        let (name, b64) = rest.split_once(' ').ok_or(Error::MalformedNote(
            "a signature line needs a name and a signature",
        ))?;
        if !valid_name(name) {
            return Err(Error::MalformedNote("invalid key name in a signature line"));
        }
        let blob = B64
            .decode(b64)
            .map_err(|_| Error::MalformedNote("signature is not base64"))?;
        if blob.len() < 5 {
            return Err(Error::MalformedNote("signature too short"));
        }
        let hash = [blob[0], blob[1], blob[2], blob[3]];
        sigs.push((name, hash, blob[4..].to_vec()));
    }
    Ok(ParsedNote { text, sigs })
}

/// Parse a checkpoint body: origin, size (decimal, no leading zeros), root
/// (base64 of 32 bytes), then optional extension lines, which are signed but
/// carry nothing this log uses.
pub(crate) fn parse_body(text: &str) -> Result<(String, u64, Hash)> {
    let bad = |m: &str| Error::InvalidCheckpoint(m.to_string());
    let mut lines = text.split('\n');
    let origin = lines.next().unwrap_or_default();
    if !valid_name(origin) {
        return Err(bad("invalid origin line"));
    }
    let size = lines.next().ok_or_else(|| bad("no size line"))?;
    if size.is_empty()
        || !size.bytes().all(|b| b.is_ascii_digit())
        || (size.len() > 1 && size.starts_with('0'))
    {
        return Err(bad("the size line must be a decimal number"));
    }
    let size: u64 = size.parse().map_err(|_| bad("size out of range"))?;
    let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
    let root: Hash = B64
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| bad("the root hash must be base64 of 32 bytes"))?;
    // `text` ends with a newline, so the last piece is empty; any other empty
    // piece is a blank line, which a checkpoint body cannot hold.
    let rest: Vec<&str> = lines.collect();
    match rest.split_last() {
        Some((last, ext)) if last.is_empty() && ext.iter().all(|l| !l.is_empty()) => {}
        _ => return Err(bad("malformed extension lines")),
    }
    Ok((origin.to_string(), size, root))
}

/// Verify a signed checkpoint against the log's key and parse it.
///
/// The note must be well formed (C2SP signed-note), carry a signature line
/// by `key` (name and key hash) that verifies, and its text must be a
/// checkpoint whose origin is the key's name. Signature lines by other keys
/// (witness cosignatures, say) are ignored; repeated lines by `key` are
/// ignored after the first, as in Go's `sumdb/note`.
pub fn verify_checkpoint(note: &str, key: &VerifierKey) -> Result<Checkpoint> {
    let parsed = parse_note(note)?;
    let mut verified = false;
    for (name, hash, sig) in &parsed.sigs {
        if *name != key.name || *hash != key.hash || verified {
            continue;
        }
        if !key.verify(parsed.text.as_bytes(), sig) {
            return Err(Error::BadSignature);
        }
        verified = true;
    }
    if !verified {
        return Err(Error::NotSigned(key.name.clone()));
    }
    let (origin, size, root) = parse_body(parsed.text)?;
    if origin != key.name {
        return Err(Error::InvalidCheckpoint(format!(
            "origin {origin:?} is not the key's name {:?}",
            key.name
        )));
    }
    Ok(Checkpoint {
        origin,
        size,
        root,
        note: note.to_string(),
    })
}

/// Parse a checkpoint this log stored itself, without a key: the database is
/// trusted storage; anything read from elsewhere goes through
/// [`verify_checkpoint`].
pub(crate) fn parse_stored_checkpoint(note: &str) -> Result<Checkpoint> {
    let parsed = parse_note(note)?;
    let (origin, size, root) = parse_body(parsed.text)?;
    Ok(Checkpoint {
        origin,
        size,
        root,
        note: note.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Go's `golang.org/x/mod/sumdb/note` (and of C2SP
    /// signed-note): key, text and the note Go produces.
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                              then you don't know what your problem is.\n";
    const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                              then you don't know what your problem is.\n\
                              \n\
                              \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn peter_signer() -> CheckpointSigner {
        // The Go signer key: PRIVATE+KEY+<name>+<hash>+base64(0x01 || seed).
        let b64 = PETER_SKEY.splitn(5, '+').nth(4).unwrap();
        let key = B64.decode(b64).unwrap();
        assert_eq!(key[0], ALG_ED25519);
        let pair = Ed25519KeyPair::from_seed_unchecked(&key[1..]).unwrap();
        CheckpointSigner::from_key("PeterNeumann", pair).unwrap()
    }

    fn signer() -> CheckpointSigner {
        CheckpointSigner::generate("twinseal.coordinator/test")
            .unwrap()
            .0
    }

    #[test]
    fn signs_byte_for_byte_like_go() {
        let s = peter_signer();
        assert_eq!(s.verifier_key().to_string(), PETER_VKEY);
        assert_eq!(s.sign_note(PETER_TEXT), PETER_NOTE);
        let vk: VerifierKey = PETER_VKEY.parse().unwrap();
        assert_eq!(vk, s.verifier_key());
        let parsed = parse_note(PETER_NOTE).unwrap();
        assert_eq!(parsed.text, PETER_TEXT);
    }

    #[test]
    fn parses_the_verifier_keys_of_other_implementations() {
        // From transparency-dev/formats (its base64 contains a '+') and the
        // C2SP signed-note example.
        for k in [
            "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6",
            "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            PETER_VKEY,
        ] {
            let vk: VerifierKey = k.parse().unwrap();
            assert_eq!(vk.to_string(), k);
        }
    }

    #[test]
    fn rejects_every_mangled_verifier_key() {
        // Every strict substring and every single-byte change is refused.
        let b = PETER_VKEY.as_bytes();
        for i in 0..b.len() {
            for j in i + 1..=b.len() {
                if (i, j) == (0, b.len()) {
                    continue;
                }
                if let Ok(s) = std::str::from_utf8(&b[i..j]) {
                    assert!(s.parse::<VerifierKey>().is_err(), "{s:?} parsed");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = m[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&m) {
                assert!(s.parse::<VerifierKey>().is_err(), "{s:?} parsed");
            }
        }
        for bad in [
            "",
            "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+",
            // A type byte other than Ed25519's.
            "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(bad.parse::<VerifierKey>().is_err(), "{bad:?} parsed");
        }
        assert!(VerifierKey::new("a+b", &[0; 32]).is_err());
        assert!(VerifierKey::new("ab", &[0; 31]).is_err());
    }

    #[test]
    fn checkpoint_round_trip() {
        let s = signer();
        let root = sha256(b"root");
        let cp = s.sign_checkpoint(42, &root);
        assert!(cp.note.starts_with(&format!(
            "twinseal.coordinator/test\n42\n{}\n\n\u{2014} twinseal.coordinator/test ",
            B64.encode(root)
        )));
        let vk: VerifierKey = s.verifier_key().to_string().parse().unwrap();
        let got = verify_checkpoint(&cp.note, &vk).unwrap();
        assert_eq!(got, cp);
        assert_eq!(parse_stored_checkpoint(&cp.note).unwrap(), cp);
        // Deterministic signatures: signing again gives the same note.
        assert_eq!(s.sign_checkpoint(42, &root).note, cp.note);
    }

    #[test]
    fn pkcs8_round_trip() {
        let (s, pkcs8) = CheckpointSigner::generate("log").unwrap();
        let t = CheckpointSigner::from_pkcs8("log", &pkcs8).unwrap();
        assert_eq!(s.verifier_key(), t.verifier_key());
        assert!(CheckpointSigner::from_pkcs8("log", &pkcs8[1..]).is_err());
        assert!(CheckpointSigner::from_pkcs8("bad name", &pkcs8).is_err());
        assert!(CheckpointSigner::generate("").is_err());
        assert!(!format!("{s:?}").contains(&hex::encode(&pkcs8[..])));
    }

    #[test]
    fn rejects_modified_or_foreign_checkpoints() {
        let s = signer();
        let vk = s.verifier_key();
        let cp = s.sign_checkpoint(7, &sha256(b"x"));
        let note = cp.note.as_str();

        // A changed body.
        let changed = note.replacen("\n7\n", "\n8\n", 1);
        assert!(matches!(
            verify_checkpoint(&changed, &vk),
            Err(Error::BadSignature)
        ));
        // Another key of the same name.
        let other = CheckpointSigner::generate(s.origin()).unwrap().0;
        assert!(matches!(
            verify_checkpoint(note, &other.verifier_key()),
            Err(Error::NotSigned(_))
        ));
        // The same key under another name.
        let renamed = VerifierKey::new("other.log", vk.public_key()).unwrap();
        assert!(matches!(
            verify_checkpoint(note, &renamed),
            Err(Error::NotSigned(_))
        ));
        // A checkpoint of another origin, signed by the key.
        let body = checkpoint_body("someone.else", 7, &sha256(b"x"));
        let wrong_origin = s.sign_note(&body);
        assert!(matches!(
            verify_checkpoint(&wrong_origin, &vk),
            Err(Error::InvalidCheckpoint(_))
        ));
        // One dropped signature byte.
        let (head, line) = note.rsplit_once(' ').unwrap();
        let mut blob = B64.decode(line.trim_end()).unwrap();
        blob.pop();
        let short = format!("{head} {}\n", B64.encode(&blob));
        assert!(matches!(
            verify_checkpoint(&short, &vk),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn rejects_malformed_notes() {
        let s = signer();
        let vk = s.verifier_key();
        let note = s.sign_checkpoint(3, &sha256(b"y")).note;
        let cases = [
            // No em dash: a hyphen, an en dash, no space after the dash.
            note.replace('\u{2014}', "-"),
            note.replace('\u{2014}', "\u{2013}"),
            note.replace("\u{2014} ", "\u{2014}"),
            // No blank line, no signature block, no final newline.
            note.replacen("\n\n", "\n", 1),
            note.split("\n\n").next().unwrap().to_string() + "\n\n",
            note.trim_end().to_string(),
            // Bad base64, a short blob, a name with a space.
            note.replace(
                " twinseal.coordinator/test ",
                " twinseal.coordinator/test !!",
            ),
            format!(
                "{}\u{2014} twinseal.coordinator/test AAAA\n",
                &note[..note.find("\u{2014}").unwrap()]
            ),
            note.replace("\u{2014} twinseal", "\u{2014} twin seal"),
            // A carriage return (control character), an extra empty line.
            note.replacen('\n', "\r\n", 1),
            note.clone() + "\n",
            // Too long.
            "a".repeat(MAX_NOTE_LEN) + &note,
            String::new(),
        ];
        for (i, bad) in cases.iter().enumerate() {
            assert!(
                verify_checkpoint(bad, &vk).is_err(),
                "case {i} verified: {bad:?}"
            );
        }
        // A well-formed, signed text that is not a checkpoint.
        for body in [
            "twinseal.coordinator/test\n",
            "twinseal.coordinator/test\n03\nAAAA\n",
            "twinseal.coordinator/test\n3\nAAAA\n",
            "twinseal.coordinator/test\n-3\nAAAA\n",
            "twinseal.coordinator/test\n18446744073709551616\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "twinseal.coordinator/test\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\nx\n",
        ] {
            let signed = s.sign_note(body);
            assert!(
                matches!(
                    verify_checkpoint(&signed, &vk),
                    Err(Error::InvalidCheckpoint(_))
                ),
                "{body:?} accepted"
            );
        }
        // Extension lines are signed text and accepted (and ignored).
        let ext = s.sign_note(&format!(
            "twinseal.coordinator/test\n3\n{}\nextension\n",
            B64.encode([1u8; 32])
        ));
        assert_eq!(verify_checkpoint(&ext, &vk).unwrap().size, 3);
    }

    #[test]
    fn cosignatures_by_other_keys_are_ignored() {
        let s = signer();
        let witness = CheckpointSigner::generate("witness.example").unwrap().0;
        let cp = s.sign_checkpoint(5, &sha256(b"z"));
        let body = checkpoint_body(s.origin(), 5, &sha256(b"z"));
        let cosig = witness.sign_note(&body);
        let line = cosig.rsplit_once("\n\n").unwrap().1;
        let both = cp.note.clone() + line;
        assert_eq!(verify_checkpoint(&both, &s.verifier_key()).unwrap().size, 5);
        // A garbage line by the verifier's own key is refused even when a
        // good one is also present.
        let mut forged = both.clone();
        let good_line = cp.note.rsplit_once("\n\n").unwrap().1;
        forged = forged.replacen(good_line, "", 1);
        let (name_part, b64) = good_line.trim_end().rsplit_once(' ').unwrap();
        let mut blob = B64.decode(b64).unwrap();
        blob[10] ^= 1;
        let bad_line = format!("{name_part} {}\n", B64.encode(blob));
        let forged = forged.replacen("\n\n", &format!("\n\n{bad_line}"), 1) + good_line;
        assert!(matches!(
            verify_checkpoint(&forged, &s.verifier_key()),
            Err(Error::BadSignature)
        ));
    }
}
