//! Bounds on what callers, anonymous ones above all, can make the services
//! spend: a keyed token-bucket rate limiter, and the summaries that
//! replace one durable audit entry per failed login or unverified
//! attestation.
//!
//! The rate limiter is written here rather than taken from `governor`:
//! it is forty lines, has no clock or map dependency beyond std, and the
//! worker (the binary a TEE measures) uses it too, so every crate it
//! would bring in is code users must trust.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use twinseal_audit::Event;

/// Most distinct keys a [`RateLimiter`] tracks; beyond it, idle buckets
/// are dropped, and if none is idle, new keys are refused until some are.
pub const MAX_TRACKED_KEYS: usize = 65_536;

/// A token bucket per key: `burst` requests at once, refilled at
/// `per_second`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter allowing `burst` requests at once and `per_second` after.
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second: per_second.max(0.0),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `key`: false when its bucket is empty.
    pub fn check(&self, key: &K) -> bool {
        self.take(key, 1)
    }

    /// Take `n` tokens for `key` at once: false (taking nothing) when its
    /// bucket holds fewer. A request larger than the burst never passes.
    pub fn take(&self, key: &K, n: u32) -> bool {
        let n = f64::from(n);
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(key) && map.len() >= MAX_TRACKED_KEYS {
            // Buckets that have refilled to `burst` carry no state worth
            // keeping.
            let (rate, burst) = (self.per_second, self.burst);
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_TRACKED_KEYS {
                return false;
            }
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= n {
            *tokens -= n;
            true
        } else {
            false
        }
    }
}

/// CPU-bound work off the async threads: each job runs on Tokio's
/// blocking pool under one of a fixed number of permits, held until the
/// job ends (even if its request was abandoned), and is told to stop when
/// its request goes away, so that abandoned work ends at its next check.
#[derive(Debug)]
pub struct CpuPool {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A job's view of whether its request is still waiting for it.
#[derive(Clone, Debug, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    /// Whether the request went away: stop at the next item.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Cancels its job when dropped (the request future was dropped).
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        (self.0).0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl CpuPool {
    /// A pool running at most `permits` jobs at once.
    pub fn new(permits: usize) -> Self {
        CpuPool {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(permits.max(1))),
        }
    }

    /// A pool with one permit per available CPU.
    pub fn per_cpu() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, usize::from))
    }

    /// Run `job` on the blocking pool once a permit is free; it should
    /// check [`Cancel::is_cancelled`] between items of work.
    pub async fn run<T, E>(
        &self,
        job: impl FnOnce(&Cancel) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Send + 'static + From<CpuPoolError>,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| E::from(CpuPoolError))?;
        let cancel = Cancel::default();
        let on_drop = CancelOnDrop(cancel.clone());
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job(&cancel)
        })
        .await
        .map_err(|_| E::from(CpuPoolError))?;
        drop(on_drop);
        out
    }
}

/// A job could not run (the pool closed, or the job panicked).
#[derive(Debug, thiserror::Error)]
#[error("a CPU job failed to run")]
pub struct CpuPoolError;

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_job_is_told_to_stop_and_holds_its_permit_until_it_does() {
        let pool = std::sync::Arc::new(CpuPool::new(1));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        let p = pool.clone();
        let request = tokio::spawn(async move {
            p.run(move |c: &Cancel| {
                started_tx.send(()).unwrap();
                let t0 = std::time::Instant::now();
                while !c.is_cancelled() && t0.elapsed() < std::time::Duration::from_secs(10) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                stopped_tx.send(c.is_cancelled()).unwrap();
                Ok::<(), CpuPoolError>(())
            })
            .await
        });
        started_rx.recv().unwrap();
        request.abort();
        let cancelled = tokio::task::spawn_blocking(move || stopped_rx.recv().unwrap())
            .await
            .unwrap();
        assert!(cancelled, "the job saw its request go away");
        // The permit came back once the job ended.
        let v = pool.run(|_| Ok::<_, CpuPoolError>(7)).await.unwrap();
        assert_eq!(v, 7);
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_and_keys_are_apart() {
        let l = RateLimiter::new(0.0, 3);
        assert!((0..3).all(|_| l.check(&1u8)));
        assert!(!l.check(&1u8));
        assert!(l.check(&2u8));
        assert!(!l.take(&3u8, 4), "more than the burst never passes");
        assert!(l.take(&3u8, 3));
    }

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
