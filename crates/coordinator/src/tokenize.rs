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

/// Tokenize (`encrypt = true`) or detokenize `values` under `material`.
/// Errors name the offending value's position, never its content.
pub fn apply(
    material: &[u8; 32],
    alphabet: Alphabet,
    tweak: &[u8],
    values: &[String],
    encrypt: bool,
) -> Result<Vec<String>> {
    if values.len() > MAX_VALUES {
        return Err(Error::BadRequest(format!(
            "at most {MAX_VALUES} values per request"
        )));
    }
    let syms = symbols(alphabet);
    let key = ff1_key(material)?;
    let ff1 = FF1::<aes::Aes256>::new(&key[..], syms.len() as u32)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if v.len() > MAX_VALUE_LEN {
                return Err(Error::BadRequest(format!(
                    "value {i} is longer than {MAX_VALUE_LEN} characters"
                )));
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
        let t = apply(&k, Alphabet::Digits, b"pan", &values, true).unwrap();
        assert_ne!(t, values);
        for (a, b) in t.iter().zip(&values) {
            assert_eq!(a.len(), b.len());
            assert!(a.bytes().all(|c| c.is_ascii_digit()));
        }
        assert_eq!(
            apply(&k, Alphabet::Digits, b"pan", &t, false).unwrap(),
            values
        );
        // Another tweak or key gives other tokens.
        assert_ne!(apply(&k, Alphabet::Digits, b"x", &values, true).unwrap(), t);
        assert_ne!(
            apply(&[8u8; 32], Alphabet::Digits, b"pan", &values, true).unwrap(),
            t
        );
        let ids = vec!["Signer42xY".to_string()];
        let t = apply(&k, Alphabet::Alphanumeric, b"", &ids, true).unwrap();
        assert!(t[0].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            apply(&k, Alphabet::Alphanumeric, b"", &t, false).unwrap(),
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
            let e = apply(&k, a, b"", &[v.to_string()], true)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{v}: {e}");
            assert!(!e.contains(v), "the value must not be echoed: {e}");
        }
        let long = vec!["1".repeat(MAX_VALUE_LEN + 1)];
        assert!(apply(&k, Alphabet::Digits, b"", &long, true).is_err());
    }
}
