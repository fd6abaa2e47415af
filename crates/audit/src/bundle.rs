//! The export bundle: entries, signed checkpoints and evidence in one JSON
//! document that an auditor verifies offline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::Entry;

/// The bundle format version this library writes and reads.
pub const BUNDLE_VERSION: u32 = 1;

/// The largest bundle [`Bundle::from_json`] parses, in bytes (256 MiB).
pub const MAX_BUNDLE_LEN: usize = 256 * 1024 * 1024;

/// An export of the audit log.
///
/// JSON: `{"version": 1, "entries": [<entry>...], "checkpoints": [<signed
/// note>...], "evidence": {"<sha256 hex>": "<base64>"...}}`, unknown members
/// refused. Entries are in index order, checkpoints by increasing size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The format version, [`BUNDLE_VERSION`].
    pub version: u32,
    /// Every entry, in index order.
    pub entries: Vec<Entry>,
    /// Every stored checkpoint, as signed-note text, by increasing size.
    pub checkpoints: Vec<String>,
    /// Raw attestation evidence by SHA-256 (lowercase hex), base64.
    pub evidence: BTreeMap<String, String>,
}

/// Only the version, read first so that a bundle of a later format fails
/// with "unsupported version" rather than with a complaint about its entries.
#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

impl Bundle {
    /// Parse a bundle of at most [`MAX_BUNDLE_LEN`] bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        Self::from_json_with_limit(bytes, MAX_BUNDLE_LEN)
    }

    /// Parse a bundle of at most `max` bytes.
    pub fn from_json_with_limit(bytes: &[u8], max: usize) -> Result<Self> {
        if bytes.len() > max {
            return Err(Error::BundleTooLarge {
                len: bytes.len(),
                max,
            });
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidBundle(e.to_string()))?;
        if v.version != u64::from(BUNDLE_VERSION) {
            return Err(Error::UnsupportedBundleVersion(v.version));
        }
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidBundle(e.to_string()))
    }

    /// The bundle as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and string-keyed maps always serialise.
        serde_json::to_vec(self).expect("a bundle always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bundle_round_trips() {
        let b = Bundle {
            version: BUNDLE_VERSION,
            entries: vec![],
            checkpoints: vec!["x".into()],
            evidence: BTreeMap::from([("ab".into(), "AA==".into())]),
        };
        let json = b.to_json();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"version":1,"entries":[],"checkpoints":["x"],"evidence":{"ab":"AA=="}}"#
        );
        assert_eq!(Bundle::from_json(&json).unwrap(), b);
    }

    #[test]
    fn rejects_other_versions_and_unknown_members() {
        let v2 = br#"{"version":2,"entries":[{"whatever":1}],"checkpoints":[],"evidence":{}}"#;
        assert!(matches!(
            Bundle::from_json(v2),
            Err(Error::UnsupportedBundleVersion(2))
        ));
        let extra = br#"{"version":1,"entries":[],"checkpoints":[],"evidence":{},"more":0}"#;
        assert!(matches!(
            Bundle::from_json(extra),
            Err(Error::InvalidBundle(_))
        ));
        let missing = br#"{"version":1,"entries":[],"checkpoints":[]}"#;
        assert!(matches!(
            Bundle::from_json(missing),
            Err(Error::InvalidBundle(_))
        ));
    }
}
