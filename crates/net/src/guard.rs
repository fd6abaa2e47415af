//! Bounds on what callers can make a service spend: a keyed token-bucket
//! rate limiter, and a pool that runs CPU-bound work off the async threads
//! under permits, with cancellation when the request goes away.
//!
//! The rate limiter is written here rather than taken from `governor`:
//! it is forty lines, has no clock or map dependency beyond std, and the
//! worker (the binary a TEE measures) uses it too, so every crate it
//! would bring in is code users must trust.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

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
}
