//! Bounds on what callers, anonymous ones above all, can make the
//! coordinator spend: the summaries that replace one durable audit entry
//! per failed login or unverified attestation. The rate limiter and the CPU
//! pool are the transport's ([`twinseal_net::guard`]), re-exported here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use twinseal_audit::Event;
pub use twinseal_net::guard::{Cancel, CpuPool, CpuPoolError, MAX_TRACKED_KEYS, RateLimiter};

/// What kind of failure a summary counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// A bearer token or client certificate that names nobody.
    Login,
    /// Attestation evidence rejected before it was shown genuine (unknown
    /// challenge, kind not enabled, bad signature or binding): counted
    /// with its digest and size, never stored.
    Attestation,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Login => "login",
            Failure::Attestation => "attestation",
        }
    }
}

/// Most distinct remote addresses summarized per interval; the others
/// are counted together under `remote = "other"`.
pub const MAX_SUMMARY_REMOTES: usize = 256;
/// Most distinct reasons kept per summary; the others count as `other`.
pub const MAX_SUMMARY_REASONS: usize = 16;
/// Most evidence digests kept per summary.
pub const MAX_SUMMARY_EVIDENCE: usize = 8;

#[derive(Debug)]
struct Pending {
    count: u64,
    first: SystemTime,
    last: SystemTime,
    reasons: BTreeMap<String, u64>,
    evidence: BTreeMap<String, u64>,
}

/// Failures counted per (kind, remote) until the next [`Self::take`],
/// which turns them into one `failures_summarized` audit event each. Memory
/// is bounded by [`MAX_SUMMARY_REMOTES`] and the per-summary caps.
#[derive(Debug, Default)]
pub struct FailureSummaries {
    pending: Mutex<BTreeMap<(Failure, Option<String>), Pending>>,
}

impl FailureSummaries {
    /// Count one failure.
    pub fn record(
        &self,
        what: Failure,
        remote: Option<IpAddr>,
        reason: &str,
        evidence: Option<(String, u64)>,
    ) {
        let now = SystemTime::now();
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut remote = remote.map(|r| r.to_string());
        if !map.contains_key(&(what, remote.clone())) && map.len() >= MAX_SUMMARY_REMOTES {
            remote = Some("other".into());
        }
        let p = map.entry((what, remote)).or_insert(Pending {
            count: 0,
            first: now,
            last: now,
            reasons: BTreeMap::new(),
            evidence: BTreeMap::new(),
        });
        p.count += 1;
        p.last = now;
        let reason = if p.reasons.contains_key(reason) || p.reasons.len() < MAX_SUMMARY_REASONS {
            reason
        } else {
            "other"
        };
        *p.reasons
            .entry(reason.chars().take(200).collect())
            .or_insert(0) += 1;
        if let Some((digest, size)) = evidence
            && p.evidence.len() < MAX_SUMMARY_EVIDENCE
        {
            p.evidence.insert(digest, size);
        }
    }

    /// The counted failures as audit events, and a fresh count.
    pub fn take(&self) -> Vec<Event> {
        let map = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        map.into_iter()
            .map(|((what, remote), p)| Event::FailuresSummarized {
                what: what.as_str().to_string(),
                remote,
                count: p.count,
                first: crate::service::rfc3339(p.first),
                last: crate::service::rfc3339(p.last),
                reasons: p.reasons,
                evidence: p.evidence,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_per_remote_and_stay_bounded() {
        let s = FailureSummaries::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        for i in 0..1000 {
            s.record(
                Failure::Attestation,
                Some(a),
                &format!("reason {}", i % 40),
                Some((format!("{i:064x}"), 100)),
            );
        }
        for i in 0..(MAX_SUMMARY_REMOTES as u32 + 10) {
            s.record(
                Failure::Login,
                Some(IpAddr::from(i.to_be_bytes())),
                "unknown bearer token",
                None,
            );
        }
        let events = s.take();
        assert_eq!(events.len(), 1 + MAX_SUMMARY_REMOTES);
        match &events[0] {
            Event::FailuresSummarized {
                what,
                count,
                reasons,
                evidence,
                ..
            } => {
                assert_eq!(what, "login");
                assert!(*count >= 1);
                assert!(reasons.len() <= MAX_SUMMARY_REASONS + 1);
                assert!(evidence.is_empty());
            }
            e => panic!("{e:?}"),
        }
        let attest = events
            .iter()
            .find(|e| matches!(e, Event::FailuresSummarized { what, .. } if what == "attestation"))
            .unwrap();
        let Event::FailuresSummarized {
            count,
            reasons,
            evidence,
            ..
        } = attest
        else {
            unreachable!()
        };
        assert_eq!(*count, 1000);
        assert_eq!(reasons.len(), MAX_SUMMARY_REASONS + 1);
        assert_eq!(evidence.len(), MAX_SUMMARY_EVIDENCE);
        assert!(s.take().is_empty());
    }
}
