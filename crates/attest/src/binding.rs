//! The binding of a verifier's one-time challenge and the attesting app's
//! public key into the 64 bytes of report data.
//!
//! Rule (also in `docs/spec/attestation.md`):
//!
//! ```text
//! report_data = SHA-512( "twinseal/attest/report-data/v1" || 0x00
//!                        || u32be(len(challenge)) || challenge
//!                        || u32be(len(spki))      || spki )
//! ```
//!
//! where `challenge` is the verifier's one-time challenge (32 random bytes
//! from [`ChallengeStore::issue`]; empty for a self-contained RA-TLS
//! certificate, whose freshness then rests on the certificate's validity and
//! the collateral window) and `spki` is the DER `SubjectPublicKeyInfo` of the
//! key the app will use for TLS. Lengths make the encoding injective; the
//! domain string keeps the digest from meaning anything in another protocol.
//!
//! Verifiers compare the evidence's report data with [`report_data`] of the
//! expected challenge and key, so evidence lifted onto another key fails, and
//! [`ChallengeStore::redeem`] makes each challenge usable once, so replayed
//! evidence fails.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha512};

use crate::claims::TeeKind;
use crate::error::{Error, Reason, Result};

/// Domain separator of the report-data binding.
pub const REPORT_DATA_DOMAIN: &[u8] = b"twinseal/attest/report-data/v1";

/// Length of challenges issued by [`ChallengeStore`].
pub const CHALLENGE_LEN: usize = 32;

/// A one-time challenge issued by a verifier.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Challenge([u8; CHALLENGE_LEN]);

impl Challenge {
    /// A fresh random challenge.
    pub fn random() -> Self {
        let mut b = [0u8; CHALLENGE_LEN];
        aws_lc_rs::rand::fill(&mut b).expect("system random generator failed");
        Challenge(b)
    }
    /// Wrap received bytes.
    pub fn from_bytes(b: [u8; CHALLENGE_LEN]) -> Self {
        Challenge(b)
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; CHALLENGE_LEN] {
        &self.0
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Challenge({})", self.to_hex())
    }
}

/// The report data binding `challenge` (may be empty) and `spki_der`.
pub fn report_data(challenge: &[u8], spki_der: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(REPORT_DATA_DOMAIN);
    h.update([0u8]);
    h.update((challenge.len() as u32).to_be_bytes());
    h.update(challenge);
    h.update((spki_der.len() as u32).to_be_bytes());
    h.update(spki_der);
    h.finalize().into()
}

/// Check that evidence's `actual` report data binds `challenge` and
/// `spki_der`. Verifiers call this; it is public for callers that hold
/// report data from elsewhere.
pub fn check_report_data(
    kind: TeeKind,
    actual: &[u8],
    challenge: &[u8],
    spki_der: &[u8],
) -> Result<()> {
    let expected = report_data(challenge, spki_der);
    check_expected(kind, actual, &expected)
}

pub(crate) fn check_expected(kind: TeeKind, actual: &[u8], expected: &[u8; 64]) -> Result<()> {
    if actual != expected.as_slice() {
        return Err(Error::rejected(
            kind,
            "report data does not bind the expected challenge and public key",
        ));
    }
    Ok(())
}

/// Most challenges outstanding at once by default: beyond it, issuing a
/// new one drops the oldest outstanding one.
pub const DEFAULT_MAX_OUTSTANDING: usize = 100_000;

/// Issues one-time challenges and redeems each at most once, before it
/// expires. In memory: a coordinator restart invalidates outstanding
/// challenges, which only makes clients ask again.
///
/// Issuing and redeeming take constant time (amortized) whatever the load:
/// expired challenges leave from the front of an issue-ordered queue, and
/// at most `max_outstanding` are kept (the oldest go first), so a flood of
/// requests for challenges costs bounded memory.
#[derive(Debug)]
pub struct ChallengeStore {
    ttl: Duration,
    max_outstanding: usize,
    inner: Mutex<Outstanding>,
}

#[derive(Debug, Default)]
struct Outstanding {
    expiry: HashMap<Challenge, SystemTime>,
    /// Issue order; entries already redeemed are skipped when they reach
    /// the front.
    order: VecDeque<(SystemTime, Challenge)>,
}

impl ChallengeStore {
    /// A store whose challenges expire `ttl` after issue.
    pub fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, DEFAULT_MAX_OUTSTANDING)
    }

    /// A store keeping at most `max_outstanding` challenges.
    pub fn with_capacity(ttl: Duration, max_outstanding: usize) -> Self {
        ChallengeStore {
            ttl,
            max_outstanding: max_outstanding.max(1),
            inner: Mutex::new(Outstanding::default()),
        }
    }

    /// Issue a fresh challenge at time `now`.
    pub fn issue(&self, now: SystemTime) -> Challenge {
        let c = Challenge::random();
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        while let Some((exp, old)) = st.order.front() {
            let full = st.expiry.len() >= self.max_outstanding;
            if *exp >= now && !full && st.order.len() < 2 * self.max_outstanding {
                break;
            }
            if st.expiry.get(old) == Some(exp) {
                st.expiry.remove(old);
            }
            st.order.pop_front();
        }
        st.expiry.insert(c.clone(), now + self.ttl);
        st.order.push_back((now + self.ttl, c.clone()));
        c
    }

    /// Challenges outstanding now (issued, not redeemed, possibly expired
    /// but not yet dropped).
    pub fn outstanding(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expiry
            .len()
    }

    /// Consume `challenge`: succeeds once if it was issued here and has not
    /// expired at `now`; every later attempt is rejected.
    pub fn redeem(&self, challenge: &Challenge, now: SystemTime) -> Result<()> {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match st.expiry.remove(challenge) {
            Some(exp) if exp >= now => Ok(()),
            Some(_) => Err(reject("challenge expired")),
            None => Err(reject("challenge unknown or already used")),
        }
    }
}

fn reject(detail: &str) -> Error {
    tracing::warn!(reason = detail, "attestation rejected");
    Error::Rejected(Reason(detail.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_is_injective_in_lengths() {
        // Moving a byte between challenge and key must change the digest.
        assert_ne!(report_data(b"ab", b"c"), report_data(b"a", b"bc"));
        assert_ne!(report_data(b"", b"k"), report_data(b"k", b""));
    }

    #[test]
    fn challenge_is_single_use_and_expires() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let store = ChallengeStore::new(Duration::from_secs(60));
        let c = store.issue(t0);
        store.redeem(&c, t0 + Duration::from_secs(1)).unwrap();
        assert!(store.redeem(&c, t0 + Duration::from_secs(2)).is_err());
        let late = store.issue(t0);
        assert!(store.redeem(&late, t0 + Duration::from_secs(61)).is_err());
        assert!(
            store.redeem(&Challenge::random(), t0).is_err(),
            "a challenge never issued is rejected"
        );
    }

    #[test]
    fn outstanding_challenges_are_bounded_and_the_oldest_go_first() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let store = ChallengeStore::with_capacity(Duration::from_secs(60), 100);
        let first = store.issue(t0);
        let issued: Vec<_> = (0..1000).map(|_| store.issue(t0)).collect();
        assert_eq!(store.outstanding(), 100);
        assert!(store.redeem(&first, t0).is_err(), "the oldest was dropped");
        store.redeem(issued.last().unwrap(), t0).unwrap();
        // Expired ones leave as new ones are issued.
        store.issue(t0 + Duration::from_secs(61));
        assert_eq!(store.outstanding(), 1);
    }
}
