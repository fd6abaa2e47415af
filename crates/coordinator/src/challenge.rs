//! Attestation challenges that every replica can check.
//!
//! A challenge is 32 bytes: the time it was issued (Unix seconds, 8 bytes
//! big-endian), 8 random bytes, and the first 16 bytes of
//! HMAC-SHA256(challenge key, domain || the first 16 bytes). The challenge
//! key is random, wrapped by the master key in the store, and so the same
//! on every replica: any replica checks a challenge another issued,
//! without storing anything when it issues one (a flood of anonymous
//! challenge requests costs no memory and no disk).
//!
//! Single use: an attestation that gets as far as the store records its
//! challenge in `redeemed_challenges`, in the transaction that audits the
//! outcome, so the primary key refuses a second redemption on any replica.
//! Attempts refused earlier (evidence that does not verify) are remembered
//! by the replica that saw them ([`Spent`]), so they cannot be retried
//! there with the same challenge.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_lc_rs::{constant_time, hmac};
use twinseal_attest::Challenge;

const DOMAIN: &[u8] = b"twinseal/v1 attestation challenge\0";
/// Tolerated clock difference between replicas, seconds.
const SKEW_SECS: u64 = 5;
/// Most challenges a replica remembers as spent; beyond it the oldest go
/// first (the store still refuses their replay once redeemed).
pub const MAX_SPENT: usize = 100_000;

/// Issues and checks challenges.
pub struct ChallengeKey(hmac::Key);

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeKey")
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ChallengeKey {
    /// A key from its 32 secret bytes.
    pub fn new(secret: &[u8]) -> ChallengeKey {
        ChallengeKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn tag(&self, body: &[u8]) -> [u8; 16] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(DOMAIN);
        ctx.update(body);
        let full = ctx.sign();
        let mut t = [0u8; 16];
        t.copy_from_slice(&full.as_ref()[..16]);
        t
    }

    /// A fresh challenge issued at `now`.
    pub fn issue(&self, now: SystemTime) -> Challenge {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&unix(now).to_be_bytes());
        // A failing RNG leaves zeros: the challenge is then still unique
        // per second and MAC, and a replay is still refused.
        let _ = aws_lc_rs::rand::fill(&mut b[8..16]);
        let tag = self.tag(&b[..16]);
        b[16..].copy_from_slice(&tag);
        Challenge::from_bytes(b)
    }

    /// Check that `c` was issued with this key and has not expired at
    /// `now`; returns when it expires (Unix seconds).
    pub fn check(&self, c: &Challenge, now: SystemTime, ttl: Duration) -> Result<u64, String> {
        let b = c.as_bytes();
        if constant_time::verify_slices_are_equal(&self.tag(&b[..16]), &b[16..]).is_err() {
            return Err("challenge unknown or already used".into());
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        let issued = u64::from_be_bytes(t);
        let now = unix(now);
        let expires = issued.saturating_add(ttl.as_secs());
        if issued > now + SKEW_SECS {
            return Err("challenge issued in the future (clocks differ)".into());
        }
        if now > expires {
            return Err("challenge expired".into());
        }
        Ok(expires)
    }
}

/// Spent challenges with their expiry, and the order they were spent in.
type SpentSet = (HashMap<[u8; 32], u64>, VecDeque<(u64, [u8; 32])>);

/// The challenges this replica has seen used, until they expire.
#[derive(Debug, Default)]
pub struct Spent(Mutex<SpentSet>);

impl Spent {
    /// Mark `c` (expiring at `expires`) spent; false if it already was.
    pub fn spend(&self, c: &Challenge, expires: u64, now: SystemTime) -> bool {
        let now = unix(now);
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *g;
        while let Some((exp, old)) = order.front() {
            if *exp >= now && set.len() < MAX_SPENT {
                break;
            }
            if set.get(old) == Some(exp) {
                set.remove(old);
            }
            order.pop_front();
        }
        let key = *c.as_bytes();
        if set.contains_key(&key) {
            return false;
        }
        set.insert(key, expires);
        order.push_back((expires, key));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_checks_with_its_key_only_and_expires() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ttl = Duration::from_secs(120);
        let k = ChallengeKey::new(&[7; 32]);
        let c = k.issue(t0);
        assert_eq!(k.check(&c, t0, ttl), Ok(1_800_000_120));
        assert!(k.check(&c, t0 + ttl, ttl).is_ok());
        assert_eq!(
            k.check(&c, t0 + ttl + Duration::from_secs(1), ttl),
            Err("challenge expired".into())
        );
        // Another replica with the same key accepts it; another key does not.
        assert!(ChallengeKey::new(&[7; 32]).check(&c, t0, ttl).is_ok());
        assert!(ChallengeKey::new(&[8; 32]).check(&c, t0, ttl).is_err());
        // Any changed byte (time, nonce, tag) is refused.
        for i in 0..32 {
            let mut b = *c.as_bytes();
            b[i] ^= 1;
            assert!(k.check(&Challenge::from_bytes(b), t0, ttl).is_err(), "{i}");
        }
        assert!(k.check(&Challenge::random(), t0, ttl).is_err());
        // From the future beyond the skew.
        let late = k.issue(t0 + Duration::from_secs(60));
        assert!(k.check(&late, t0, ttl).is_err());
        assert_ne!(k.issue(t0), k.issue(t0), "two challenges differ");
    }

    #[test]
    fn spent_challenges_are_refused_and_bounded() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let k = ChallengeKey::new(&[1; 32]);
        let s = Spent::default();
        let c = k.issue(t0);
        assert!(s.spend(&c, 1_800_000_060, t0));
        assert!(!s.spend(&c, 1_800_000_060, t0));
        // Expired records leave as new ones come.
        let later = t0 + Duration::from_secs(61);
        assert!(s.spend(&k.issue(later), 1_800_000_200, later));
        assert_eq!(s.0.lock().unwrap().0.len(), 1);
        for _ in 0..MAX_SPENT + 10 {
            s.spend(&k.issue(later), 1_800_000_200, later);
        }
        assert!(s.0.lock().unwrap().0.len() <= MAX_SPENT);
    }
}
