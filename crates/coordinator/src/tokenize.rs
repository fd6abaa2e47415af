//! Format-preserving tokenization: NIST SP 800-38G FF1 (the `fpe` crate)
//! over AES-256, so an account number stays 16 digits and a signer id
//! stays alphanumeric of the same length.
//!
//! The FF1 key is derived from a key version's material with
//! HKDF-SHA-256 (`info = "twinseal/v1 ff1"`), so the named key itself is
//! never used for two purposes. FF1's own length rules apply: at least
//! 6 digits or 4 alphanumerics (radix^length ≥ 1,000,000).

use aws_lc_rs::hkdf;
use fpe::ff1::{FF1, FlexibleNumeralString};
use twinseal_api::Alphabet;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Longest value accepted, in characters.
pub const MAX_VALUE_LEN: usize = 256;
/// Most values per request.
pub const MAX_VALUES: usize = 10_000;
/// Longest tweak, in bytes (FF1's cost grows with the tweak's length).
pub const MAX_TWEAK_LEN: usize = 256;
/// Domains with fewer values than this (radix^length: 6 or 7 digits, 4
/// alphanumerics) are small: whoever may tokenize can reverse a token by
/// tokenizing every candidate, so keys must be marked
/// (`small_token_domains = true`) to tokenize them. FF1 itself refuses
/// domains under 10^6.
pub const SMALL_DOMAIN: u64 = 100_000_000;

/// FF1's smallest domain (NIST SP 800-38G: radix^length at least 10^6).
pub const FF1_MIN_DOMAIN: u64 = 1_000_000;

/// The number of values of `len` symbols of `alphabet`, saturating at
/// [`SMALL_DOMAIN`].
fn domain_size(alphabet: Alphabet, len: usize) -> u64 {
    let radix = symbols(alphabet).len() as u64;
    let mut size: u64 = 1;
    for _ in 0..len {
        size = size.saturating_mul(radix);
        if size >= SMALL_DOMAIN {
            return SMALL_DOMAIN;
        }
    }
    size
}

/// Whether values of `len` symbols of `alphabet` form a small domain.
pub fn is_small_domain(alphabet: Alphabet, len: usize) -> bool {
    domain_size(alphabet, len) < SMALL_DOMAIN
}

const ALPHANUMERIC: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn symbols(a: Alphabet) -> &'static [u8] {
    match a {
        Alphabet::Digits => &ALPHANUMERIC[..10],
        Alphabet::Alphanumeric => ALPHANUMERIC,
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn ff1_key(material: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"twinseal/v1 tokenization").extract(material);
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&[b"twinseal/v1 ff1"], Len32)
        .and_then(|okm| okm.fill(&mut out[..]))
        .map_err(|_| Error::Crypto("key derivation failed".into()))?;
    Ok(out)
}

/// Check a request's sizes before any work: value count, value lengths
/// and tweak length; and, unless `allow_small`, that no value lies in a
/// small domain ([`is_small_domain`]). Errors name a value's position,
/// never its content.
pub fn check_request(
    alphabet: Alphabet,
    tweak: &[u8],
    values: &[String],
    allow_small: bool,
) -> Result<()> {
    if values.len() > MAX_VALUES {
        return Err(Error::BadRequest(format!(
            "at most {MAX_VALUES} values per request"
        )));
    }
    if tweak.len() > MAX_TWEAK_LEN {
        return Err(Error::BadRequest(format!(
            "the tweak is longer than {MAX_TWEAK_LEN} bytes"
        )));
    }
    for (i, v) in values.iter().enumerate() {
        if v.len() > MAX_VALUE_LEN {
            return Err(Error::BadRequest(format!(
                "value {i} is longer than {MAX_VALUE_LEN} characters"
            )));
        }
        if domain_size(alphabet, v.len()) < FF1_MIN_DOMAIN {
            return Err(Error::BadRequest(format!(
                "value {i} is too short for FF1 (at least 6 digits or 4 alphanumerics)"
            )));
        }
        if !allow_small && is_small_domain(alphabet, v.len()) {
            return Err(Error::Forbidden(format!(
                "value {i} lies in a small domain (fewer than {SMALL_DOMAIN} possible values), \
                 whose tokens anyone who may tokenize can reverse by trying every value; \
                 the key must be marked small_token_domains = true in the manifest"
            )));
        }
    }
    Ok(())
}

/// Tokenize (`encrypt = true`) or detokenize `values` under `material`,
/// stopping with an error as soon as `cancelled` says so (checked between
/// values). Errors name the offending value's position, never its content.
pub fn apply(
    material: &[u8; 32],
    alphabet: Alphabet,
    tweak: &[u8],
    values: &[String],
    encrypt: bool,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<String>> {
    check_request(alphabet, tweak, values, true)?;
    let syms = symbols(alphabet);
    let key = ff1_key(material)?;
    let ff1 = FF1::<aes::Aes256>::new(&key[..], syms.len() as u32)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let numerals = v
                .bytes()
                .map(|b| syms.iter().position(|&s| s == b).map(|p| p as u16))
                .collect::<Option<Vec<u16>>>()
                .ok_or_else(|| {
                    Error::BadRequest(format!("value {i} has characters outside the alphabet"))
                })?;
            let ns = FlexibleNumeralString::from(numerals);
            let out = if encrypt {
                ff1.encrypt(tweak, &ns)
            } else {
                ff1.decrypt(tweak, &ns)
            }
            .map_err(|e| Error::BadRequest(format!("value {i}: {e}")))?;
            Ok(Vec::<u16>::from(out)
                .into_iter()
                .map(|n| syms[n as usize] as char)
                .collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_format() {
        let k = [7u8; 32];
        let values = vec!["4111111111111111".to_string(), "000000".to_string()];
        let t = apply(&k, Alphabet::Digits, b"pan", &values, true, &|| false).unwrap();
        assert_ne!(t, values);
        for (a, b) in t.iter().zip(&values) {
            assert_eq!(a.len(), b.len());
            assert!(a.bytes().all(|c| c.is_ascii_digit()));
        }
        assert_eq!(
            apply(&k, Alphabet::Digits, b"pan", &t, false, &|| false).unwrap(),
            values
        );
        // Another tweak or key gives other tokens.
        assert_ne!(
            apply(&k, Alphabet::Digits, b"x", &values, true, &|| false).unwrap(),
            t
        );
        assert_ne!(
            apply(&[8u8; 32], Alphabet::Digits, b"pan", &values, true, &|| {
                false
            })
            .unwrap(),
            t
        );
        let ids = vec!["Signer42xY".to_string()];
        let t = apply(&k, Alphabet::Alphanumeric, b"", &ids, true, &|| false).unwrap();
        assert!(t[0].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            apply(&k, Alphabet::Alphanumeric, b"", &t, false, &|| false).unwrap(),
            ids
        );
    }

    #[test]
    fn fail_values_outside_the_rules() {
        let k = [1u8; 32];
        for (v, a, why) in [
            ("12345", Alphabet::Digits, "value 0"),
            ("12a456", Alphabet::Digits, "outside the alphabet"),
            ("ab-cd", Alphabet::Alphanumeric, "outside the alphabet"),
            ("abc", Alphabet::Alphanumeric, "value 0"),
        ] {
            let e = apply(&k, a, b"", &[v.to_string()], true, &|| false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{v}: {e}");
            assert!(!e.contains(v), "the value must not be echoed: {e}");
        }
        let long = vec!["1".repeat(MAX_VALUE_LEN + 1)];
        assert!(apply(&k, Alphabet::Digits, b"", &long, true, &|| false).is_err());
        let tweak = vec![b't'; MAX_TWEAK_LEN + 1];
        let e = apply(
            &k,
            Alphabet::Digits,
            &tweak,
            &["123456".into()],
            true,
            &|| false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tweak"), "{e}");
        // Cancellation stops between values.
        let many = vec!["12345678".to_string(); 100];
        let e = apply(&k, Alphabet::Digits, b"", &many, true, &|| true).unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
    }

    #[test]
    fn small_domains_need_a_marked_key() {
        assert!(is_small_domain(Alphabet::Digits, 6));
        assert!(is_small_domain(Alphabet::Digits, 7));
        assert!(!is_small_domain(Alphabet::Digits, 8));
        assert!(is_small_domain(Alphabet::Alphanumeric, 4));
        assert!(!is_small_domain(Alphabet::Alphanumeric, 5));
        let six = ["123456".to_string()];
        let e = check_request(Alphabet::Digits, b"", &six, false).unwrap_err();
        assert!(e.to_string().contains("small_token_domains"), "{e}");
        check_request(Alphabet::Digits, b"", &six, true).unwrap();
        check_request(Alphabet::Digits, b"", &["12345678".into()], false).unwrap();
    }
}
