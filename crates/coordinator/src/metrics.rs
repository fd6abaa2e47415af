//! Prometheus metrics served at `/metrics` (text exposition format). No
//! label ever carries a key name, token or app identity beyond counts.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Outcomes = Family<Vec<(String, String)>, Counter>;

/// The coordinator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Key releases by outcome.
    pub releases: Outcomes,
    /// Attestations by outcome.
    pub attestations: Outcomes,
    /// Release latency, seconds.
    pub release_seconds: Histogram,
    /// Attestation latency, seconds.
    pub attest_seconds: Histogram,
    /// Failed logins (bad tokens, bad app certificates).
    pub login_failures: Counter,
    /// HTTP responses by status class.
    pub responses: Outcomes,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn outcome(ok: bool) -> Vec<(String, String)> {
    vec![(
        "outcome".to_string(),
        if ok { "ok" } else { "refused" }.to_string(),
    )]
}

impl Metrics {
    /// Fresh, registered metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("twinseal");
        let releases = Outcomes::default();
        let attestations = Outcomes::default();
        let responses = Outcomes::default();
        let release_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let attest_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let login_failures = Counter::default();
        registry.register("key_releases", "Key releases by outcome", releases.clone());
        registry.register(
            "attestations",
            "Attestations by outcome",
            attestations.clone(),
        );
        registry.register(
            "key_release_seconds",
            "Key release latency (including the durable audit write)",
            release_seconds.clone(),
        );
        registry.register(
            "attest_seconds",
            "Attestation and certificate issuance latency",
            attest_seconds.clone(),
        );
        registry.register(
            "login_failures",
            "Rejected credentials",
            login_failures.clone(),
        );
        registry.register(
            "http_responses",
            "HTTP responses by status class",
            responses.clone(),
        );
        Metrics {
            registry,
            releases,
            attestations,
            release_seconds,
            attest_seconds,
            login_failures,
            responses,
        }
    }

    /// Record a release.
    pub fn observe_release(&self, ok: bool, took: Duration) {
        self.releases.get_or_create(&outcome(ok)).inc();
        self.release_seconds.observe(took.as_secs_f64());
    }

    /// Record an attestation.
    pub fn observe_attest(&self, ok: bool, took: Duration) {
        self.attestations.get_or_create(&outcome(ok)).inc();
        self.attest_seconds.observe(took.as_secs_f64());
    }

    /// Record an HTTP response status.
    pub fn observe_status(&self, status: u16) {
        let class = format!("{}xx", status / 100);
        self.responses
            .get_or_create(&vec![("class".to_string(), class)])
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
