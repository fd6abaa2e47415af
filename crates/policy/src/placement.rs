//! Placement endorsements: operator-signed statements "platform P is in
//! location L". A platform reference is one of the strings of
//! `PlatformIdentity::references` (`snp-chip-id:HEX`, `ppid:HEX`,
//! `fmspc:HEX`, `simulated:ID`).
//!
//! Signature: Ed25519 over
//! `"twinseal/placement/v1" || 0x00 || platform || 0x00 || location`.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::Error;

const DOMAIN: &[u8] = b"twinseal/placement/v1";

/// One signed placement statement (JSON form for files and APIs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementEndorsement {
    /// Platform reference, e.g. `snp-chip-id:…`.
    pub platform: String,
    /// Location name, e.g. `eu-west/dc1`.
    pub location: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

fn message(platform: &str, location: &str) -> Result<Vec<u8>, Error> {
    if platform.is_empty()
        || location.is_empty()
        || platform.contains('\0')
        || location.contains('\0')
    {
        return Err(Error::Placement("empty field or NUL byte".into()));
    }
    let mut m = Vec::with_capacity(DOMAIN.len() + platform.len() + location.len() + 2);
    m.extend_from_slice(DOMAIN);
    m.push(0);
    m.extend_from_slice(platform.as_bytes());
    m.push(0);
    m.extend_from_slice(location.as_bytes());
    Ok(m)
}

/// The operator's placement signing key. `Debug` shows only the public key.
pub struct PlacementSigner {
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for PlacementSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlacementSigner({})", hex::encode(self.public_key()))
    }
}

impl PlacementSigner {
    /// A fresh key.
    pub fn generate() -> Result<Self, Error> {
        let key = Ed25519KeyPair::generate()
            .map_err(|_| Error::Placement("key generation failed".into()))?;
        Ok(PlacementSigner { key })
    }
    /// The public key operators distribute to coordinators.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }
    /// Endorse `platform` as being in `location`.
    pub fn endorse(&self, platform: &str, location: &str) -> Result<PlacementEndorsement, Error> {
        let sig = self.key.sign(&message(platform, location)?);
        Ok(PlacementEndorsement {
            platform: platform.to_string(),
            location: location.to_string(),
            signature: hex::encode(sig.as_ref()),
        })
    }
}

/// Verified placements: platform reference to location.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placements {
    map: BTreeMap<String, String>,
}

impl Placements {
    /// No placements: every key with a placement rule is refused.
    pub fn none() -> Self {
        Self::default()
    }

    /// Verify every endorsement against the trusted operator keys (raw
    /// Ed25519 public keys). Fails on the first invalid one, and on
    /// contradictory endorsements of one platform.
    pub fn verify(
        endorsements: &[PlacementEndorsement],
        operator_keys: &[Vec<u8>],
    ) -> Result<Self, Error> {
        let mut map = BTreeMap::new();
        for e in endorsements {
            let msg = message(&e.platform, &e.location)?;
            let sig = hex::decode(&e.signature)
                .map_err(|_| Error::Placement(format!("signature of {} is not hex", e.platform)))?;
            let ok = operator_keys.iter().any(|k| {
                UnparsedPublicKey::new(&ED25519, k)
                    .verify(&msg, &sig)
                    .is_ok()
            });
            if !ok {
                return Err(Error::Placement(format!(
                    "endorsement of {} is not signed by a trusted operator key",
                    e.platform
                )));
            }
            if let Some(prev) = map.insert(e.platform.clone(), e.location.clone())
                && prev != e.location
            {
                return Err(Error::Placement(format!(
                    "{} is endorsed in two locations",
                    e.platform
                )));
            }
        }
        Ok(Placements { map })
    }

    /// The verified map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.map
    }
}
