//! The encryption context: public key/value pairs bound into the header.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// Most pairs a context may hold.
pub const MAX_CONTEXT_PAIRS: usize = 64;
/// Longest context key, in bytes.
pub const MAX_CONTEXT_KEY: usize = 64;
/// Longest context value, in bytes.
pub const MAX_CONTEXT_VALUE: usize = 1024;
/// Keys with this prefix are reserved for the format itself.
pub const RESERVED_PREFIX: &str = "twinseal.";

/// Authenticated, *public* key/value pairs (`purpose=model`, `name=siamese`)
/// that must be given again to open a file. Kept sorted, which is the
/// canonical order on disk.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Context(BTreeMap<String, String>);

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl Context {
    /// The empty context.
    pub fn new() -> Self {
        Context::default()
    }

    /// Builds a context from pairs; a repeated key is an error.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut context = Context::new();
        for (key, value) in pairs {
            context.insert(key, value)?;
        }
        Ok(context)
    }

    /// Parses `key=value` (split at the first `=`).
    pub fn parse_pair(pair: &str) -> Result<(String, String)> {
        match pair.split_once('=') {
            Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
            None => Err(Error::InvalidContext(format!(
                "expected key=value, got {pair:?}"
            ))),
        }
    }

    /// Adds a pair after checking the rules of the specification (4.3).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Result<()> {
        let (key, value) = (key.into(), value.into());
        check_key(&key)?;
        if value.len() > MAX_CONTEXT_VALUE {
            return Err(Error::InvalidContext(format!(
                "value of {key:?} is longer than {MAX_CONTEXT_VALUE} bytes"
            )));
        }
        if self.0.contains_key(&key) {
            return Err(Error::InvalidContext(format!("key {key:?} given twice")));
        }
        if self.0.len() == MAX_CONTEXT_PAIRS {
            return Err(Error::InvalidContext(format!(
                "more than {MAX_CONTEXT_PAIRS} pairs"
            )));
        }
        self.0.insert(key, value);
        Ok(())
    }

    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The pairs in canonical (sorted) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any key uses the reserved `twinseal.` prefix.
    pub fn has_reserved_keys(&self) -> bool {
        self.0.keys().any(|k| k.starts_with(RESERVED_PREFIX))
    }
}

pub(crate) fn check_key(key: &str) -> Result<()> {
    let ok = (1..=MAX_CONTEXT_KEY).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidContext(format!(
            "key {key:?} must be 1 to {MAX_CONTEXT_KEY} ASCII letters, digits, '.', '_' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_checked_and_kept_sorted() {
        let c = Context::from_pairs([("purpose", "model"), ("name", "siamese")]).unwrap();
        let keys: Vec<_> = c.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["name", "purpose"]);
        assert!(Context::from_pairs([("a", "1"), ("a", "2")]).is_err());
        for bad in ["", "a=b", "sp ace", "é", &"k".repeat(65)] {
            assert!(Context::new().insert(bad, "v").is_err(), "{bad:?}");
        }
        assert!(Context::new().insert("k", "v".repeat(1025)).is_err());
        assert!(Context::new().insert("k", "v".repeat(1024)).is_ok());
        let mut full = Context::new();
        for i in 0..MAX_CONTEXT_PAIRS {
            full.insert(format!("k{i}"), "").unwrap();
        }
        assert!(full.insert("one-more", "").is_err());
        assert_eq!(
            Context::parse_pair("url=a=b").unwrap(),
            ("url".into(), "a=b".into())
        );
    }
}
