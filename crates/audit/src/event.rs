//! Typed audit events and log entries, and the canonical bytes an entry is
//! hashed as.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::merkle::{Hash, leaf_hash};

/// One thing that happened, as the coordinator records it.
///
/// Fields are identifiers, names, numbers and reasons: never key material,
/// tokens, plaintext or secrets. JSON form: an object whose `type` is the
/// variant name in snake case (the same string as [`Event::kind`]) and whose
/// other members are the variant's fields, in declaration order. Unknown
/// members are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// Attestation evidence verified and the policy accepted it.
    AttestationVerified {
        /// The application (manifest name) that attested.
        app: String,
        /// The TEE kind (`sgx`, `tdx`, `sev-snp`, `simulated`).
        tee: String,
        /// The primary measurement, hex.
        measurement: String,
        /// Whether the evidence came from the simulated TEE.
        simulated: bool,
        /// SHA-256 of the raw evidence, hex (stored in the log's evidence table).
        evidence_digest: String,
        /// The endorsed location of the platform, if any.
        location: Option<String>,
    },
    /// Attestation evidence was rejected (by a verifier or by the policy).
    AttestationRejected {
        /// The application, when the request named one.
        app: Option<String>,
        /// Why, as the policy or verifier says it.
        reasons: Vec<String>,
        /// SHA-256 of the raw evidence, hex, when it was stored.
        evidence_digest: Option<String>,
    },
    /// A certificate was issued to an attested application.
    CertificateIssued {
        /// The application.
        app: String,
        /// The certificate serial number, hex.
        serial: String,
        /// The end of validity, RFC 3339.
        not_after: String,
        /// Whether the attestation behind it was simulated.
        simulated: bool,
        /// SHA-256 of the evidence the certificate carries, hex.
        evidence_digest: String,
    },
    /// A certificate was revoked.
    CertificateRevoked {
        /// The application.
        app: String,
        /// The certificate serial number, hex.
        serial: String,
        /// Who revoked it.
        actor: String,
    },
    /// A key was created.
    KeyCreated {
        /// Who created it.
        actor: String,
        /// The key id.
        key: String,
        /// Its first version.
        version: u32,
        /// Public tags.
        tags: BTreeMap<String, String>,
    },
    /// A key got a new version.
    KeyRotated {
        /// Who rotated it.
        actor: String,
        /// The key id.
        key: String,
        /// The new version.
        version: u32,
    },
    /// A key was disabled: no release, no data key operations.
    KeyDisabled {
        /// Who disabled it.
        actor: String,
        /// The key id.
        key: String,
    },
    /// A disabled key was enabled again.
    KeyEnabled {
        /// Who enabled it.
        actor: String,
        /// The key id.
        key: String,
    },
    /// Key versions were destroyed.
    KeyDestroyed {
        /// Who destroyed them.
        actor: String,
        /// The key id.
        key: String,
        /// The destroyed versions.
        versions: Vec<u32>,
    },
    /// A key was released to an attested application.
    KeyReleased {
        /// The application.
        app: String,
        /// The serial of the certificate it authenticated with.
        serial: String,
        /// The key id.
        key: String,
        /// The released version.
        version: u32,
        /// The location of the platform, if endorsed.
        location: Option<String>,
    },
    /// A key release was refused.
    KeyReleaseDenied {
        /// The application, if it authenticated.
        app: Option<String>,
        /// The certificate serial, if any.
        serial: Option<String>,
        /// The key id asked for.
        key: String,
        /// Why.
        reasons: Vec<String>,
    },
    /// A data key was generated (and returned wrapped) under a key.
    DataKeyGenerated {
        /// Who asked.
        actor: String,
        /// The key id.
        key: String,
        /// The key version used.
        version: u32,
        /// The encryption context (public).
        context: BTreeMap<String, String>,
    },
    /// A wrapped data key was unwrapped.
    DataKeyUnwrapped {
        /// Who asked.
        actor: String,
        /// The key id.
        key: String,
        /// The key version used.
        version: u32,
        /// The encryption context (public).
        context: BTreeMap<String, String>,
    },
    /// A data key operation was refused.
    DataKeyDenied {
        /// Who asked.
        actor: String,
        /// The key id.
        key: String,
        /// Why.
        reasons: Vec<String>,
    },
    /// A manifest was applied.
    ManifestApplied {
        /// Who applied it.
        actor: String,
        /// Its version.
        version: u64,
        /// Its SHA-256, hex.
        digest: String,
    },
    /// What a manifest version approves for one app to receive keys: its
    /// TEE kinds, measurements and SGX signers (release transparency). One
    /// entry per app of each applied manifest version, appended in the
    /// transaction that applies it, so an approved measurement is in the
    /// log before any key can reach it; app certificates name the entry.
    MeasurementsApproved {
        /// The manifest version.
        manifest_version: u64,
        /// The app.
        app: String,
        /// TEE kinds it may run in.
        tee: Vec<String>,
        /// Approved primary measurements, hex.
        measurements: Vec<String>,
        /// Approved SGX signers (MRSIGNER), hex.
        signers: Vec<String>,
    },
    /// A manifest was refused.
    ManifestRejected {
        /// Who submitted it.
        actor: String,
        /// Why.
        reason: String,
    },
    /// An API credential was created.
    CredentialCreated {
        /// Who created it.
        actor: String,
        /// The credential's name.
        name: String,
        /// Its role.
        role: String,
        /// The token's public id (absent in entries from before token ids).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// When the token expires, RFC 3339 (absent in entries from before
        /// token expiry).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires: Option<String>,
    },
    /// An API credential was revoked.
    CredentialRevoked {
        /// Who revoked it.
        actor: String,
        /// The credential's name.
        name: String,
        /// The token's public id (absent in entries from before token ids).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Why (absent in entries from before token ids).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An authentication attempt failed.
    LoginFailed {
        /// Why (coarse).
        reason: String,
        /// The peer address, if known.
        remote: Option<String>,
    },
    /// Failed logins, or attestations rejected before their evidence was
    /// shown genuine, from one remote address, counted over an interval
    /// instead of recorded one by one (so that anonymous callers cannot
    /// grow the log): the rejected evidence itself is never stored.
    FailuresSummarized {
        /// What failed: `login` or `attestation`.
        what: String,
        /// The remote IP address; `other` for addresses beyond the
        /// per-interval cap; absent when unknown.
        remote: Option<String>,
        /// How many failures.
        count: u64,
        /// The first one, RFC 3339.
        first: String,
        /// The last one, RFC 3339.
        last: String,
        /// Count per coarse reason (at most 16, the rest as `other`).
        reasons: BTreeMap<String, u64>,
        /// Up to 8 rejected evidence digests (SHA-256 hex) with their size
        /// in bytes.
        evidence: BTreeMap<String, u64>,
    },
    /// Values were tokenized.
    Tokenized {
        /// Who asked.
        actor: String,
        /// The tokenization key id.
        key: String,
        /// How many values.
        count: u64,
    },
    /// Tokens were detokenized.
    Detokenized {
        /// Who asked.
        actor: String,
        /// The tokenization key id.
        key: String,
        /// How many values.
        count: u64,
    },
    /// A tokenization request was refused.
    TokenizationDenied {
        /// Who asked.
        actor: String,
        /// The tokenization key id.
        key: String,
        /// Why.
        reason: String,
    },
    /// A workflow run was queued.
    WorkflowRunQueued {
        /// Who started it.
        actor: String,
        /// The workflow's name.
        workflow: String,
        /// The run's id.
        run: u64,
    },
    /// An attested app claimed a queued workflow run.
    WorkflowRunClaimed {
        /// The application.
        app: String,
        /// Its certificate serial, hex.
        serial: String,
        /// The workflow's name.
        workflow: String,
        /// The run's id.
        run: u64,
    },
    /// A workflow run ended.
    WorkflowRunFinished {
        /// The application that reported it (or `coordinator` when its
        /// claim expired).
        app: String,
        /// The reporting certificate's serial, hex, if any.
        serial: Option<String>,
        /// The workflow's name.
        workflow: String,
        /// The run's id.
        run: u64,
        /// Whether the sealed output was written.
        succeeded: bool,
        /// Items processed.
        items: u64,
        /// The output's object path, on success.
        output: Option<String>,
        /// SHA-256 of the sealed output, hex, on success.
        output_sha256: Option<String>,
        /// Why it failed.
        error: Option<String>,
    },
    /// A training run's model was recorded: which attested trainer made
    /// which model from which sealed dataset with which options.
    TrainingRecorded {
        /// The trainer app.
        app: String,
        /// Its certificate serial, hex.
        serial: String,
        /// SHA-256 of its evidence, hex (the bundle carries the evidence).
        evidence_digest: String,
        /// Its primary measurement, hex.
        measurement: String,
        /// The workflow's name.
        workflow: String,
        /// The run's id.
        run: u64,
        /// The input dataset's manifest name.
        dataset: String,
        /// SHA-256 of the sealed dataset archive, hex.
        sealed_dataset_sha256: String,
        /// SHA-256 of the dataset's content, hex.
        dataset_sha256: String,
        /// The training options, JSON.
        options: String,
        /// The sealed model's object path.
        model: String,
        /// SHA-256 of the sealed model, hex.
        model_sha256: String,
        /// SHA-256 of the sealed model's header, hex.
        model_header_sha256: String,
        /// SHA-256 of the plaintext model, hex.
        model_plain_sha256: String,
        /// Test metrics, as decimal text by name.
        metrics: BTreeMap<String, String>,
    },
    /// The coordinator started.
    CoordinatorStarted {
        /// Its version.
        version: String,
        /// Whether simulated TEE evidence is accepted (dangerous).
        insecure_allow_simulated_tee: bool,
    },
}

impl Event {
    /// The event's type name: the `type` member of its JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AttestationVerified { .. } => "attestation_verified",
            Event::AttestationRejected { .. } => "attestation_rejected",
            Event::CertificateIssued { .. } => "certificate_issued",
            Event::CertificateRevoked { .. } => "certificate_revoked",
            Event::KeyCreated { .. } => "key_created",
            Event::KeyRotated { .. } => "key_rotated",
            Event::KeyDisabled { .. } => "key_disabled",
            Event::KeyEnabled { .. } => "key_enabled",
            Event::KeyDestroyed { .. } => "key_destroyed",
            Event::KeyReleased { .. } => "key_released",
            Event::KeyReleaseDenied { .. } => "key_release_denied",
            Event::DataKeyGenerated { .. } => "data_key_generated",
            Event::DataKeyUnwrapped { .. } => "data_key_unwrapped",
            Event::DataKeyDenied { .. } => "data_key_denied",
            Event::ManifestApplied { .. } => "manifest_applied",
            Event::MeasurementsApproved { .. } => "measurements_approved",
            Event::ManifestRejected { .. } => "manifest_rejected",
            Event::CredentialCreated { .. } => "credential_created",
            Event::CredentialRevoked { .. } => "credential_revoked",
            Event::LoginFailed { .. } => "login_failed",
            Event::FailuresSummarized { .. } => "failures_summarized",
            Event::Tokenized { .. } => "tokenized",
            Event::Detokenized { .. } => "detokenized",
            Event::TokenizationDenied { .. } => "tokenization_denied",
            Event::WorkflowRunQueued { .. } => "workflow_run_queued",
            Event::WorkflowRunClaimed { .. } => "workflow_run_claimed",
            Event::WorkflowRunFinished { .. } => "workflow_run_finished",
            Event::TrainingRecorded { .. } => "training_recorded",
            Event::CoordinatorStarted { .. } => "coordinator_started",
        }
    }

    /// The evidence digest the event names, if any: the log refuses events
    /// whose evidence it does not hold, and the verifier checks that a
    /// bundle carries it.
    pub fn evidence_digest(&self) -> Option<&str> {
        match self {
            Event::AttestationVerified {
                evidence_digest, ..
            }
            | Event::CertificateIssued {
                evidence_digest, ..
            }
            | Event::TrainingRecorded {
                evidence_digest, ..
            } => Some(evidence_digest),
            Event::AttestationRejected {
                evidence_digest, ..
            } => evidence_digest.as_deref(),
            _ => None,
        }
    }
}

/// One log entry: its position, when it was appended, the leaf hash of the
/// previous entry, and the event.
///
/// The leaf data of the Merkle tree is the entry's canonical bytes
/// ([`Entry::canonical_bytes`]): compact JSON (no white space) of the members
/// `index`, `time`, `prev`, `event` in that order, the event's members in
/// declaration order after `type`, map keys sorted, absent options as `null`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The position in the log, from 0.
    pub index: u64,
    /// When it was appended: RFC 3339, UTC, microseconds
    /// (`2025-01-31T12:00:00.000000Z`).
    pub time: String,
    /// The leaf hash of entry `index - 1`, hex; 64 zeros for entry 0.
    pub prev: String,
    /// What happened.
    pub event: Event,
}

/// The serialised shape of an entry, borrowing: the log hashes an event
/// without copying it, and [`Entry`] uses the same shape, so both give the
/// same bytes.
#[derive(Serialize)]
struct EntryRef<'a> {
    index: u64,
    time: &'a str,
    prev: &'a str,
    event: &'a Event,
}

impl EntryRef<'_> {
    fn to_bytes(&self) -> Vec<u8> {
        // Strings, integers, booleans and string-keyed maps always serialise.
        serde_json::to_vec(self).expect("an entry always serialises")
    }
}

impl Entry {
    /// The leaf data: the canonical JSON bytes described on [`Entry`].
    pub fn canonical_bytes(&self) -> Vec<u8> {
        self.as_ref().to_bytes()
    }

    /// The Merkle leaf hash, `SHA-256(0x00 || canonical bytes)`.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.canonical_bytes())
    }

    fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            index: self.index,
            time: &self.time,
            prev: &self.prev,
            event: &self.event,
        }
    }
}

/// The canonical bytes of an entry assembled from its parts.
pub(crate) fn encode_entry(index: u64, time: &str, prev: &str, event: &Event) -> Vec<u8> {
    EntryRef {
        index,
        time,
        prev,
        event,
    }
    .to_bytes()
}

/// `at` as RFC 3339 UTC with microseconds, the one form entries use.
pub(crate) fn format_time(at: SystemTime) -> Result<String> {
    let since = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::InvalidTime)?;
    let t = OffsetDateTime::from_unix_timestamp_nanos(since.as_nanos() as i128)
        .map_err(|_| Error::InvalidTime)?;
    if t.year() > 9999 {
        return Err(Error::InvalidTime);
    }
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    ))
}

/// The previous-hash of entry 0.
pub(crate) const ZERO_PREV: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// One event of every variant.
    pub(crate) fn every_event() -> Vec<Event> {
        let s = |v: &str| v.to_string();
        let map = BTreeMap::from([(s("purpose"), s("model")), (s("a"), s("b"))]);
        vec![
            Event::AttestationVerified {
                app: s("app"),
                tee: s("simulated"),
                measurement: s("ab"),
                simulated: true,
                evidence_digest: s("00"),
                location: Some(s("eu")),
            },
            Event::AttestationRejected {
                app: None,
                reasons: vec![s("debug")],
                evidence_digest: None,
            },
            Event::CertificateIssued {
                app: s("app"),
                serial: s("01"),
                not_after: s("2030-01-01T00:00:00Z"),
                simulated: false,
                evidence_digest: s("00"),
            },
            Event::CertificateRevoked {
                app: s("app"),
                serial: s("01"),
                actor: s("admin"),
            },
            Event::KeyCreated {
                actor: s("admin"),
                key: s("k"),
                version: 1,
                tags: map.clone(),
            },
            Event::KeyRotated {
                actor: s("admin"),
                key: s("k"),
                version: 2,
            },
            Event::KeyDisabled {
                actor: s("admin"),
                key: s("k"),
            },
            Event::KeyEnabled {
                actor: s("admin"),
                key: s("k"),
            },
            Event::KeyDestroyed {
                actor: s("admin"),
                key: s("k"),
                versions: vec![1, 2],
            },
            Event::KeyReleased {
                app: s("app"),
                serial: s("01"),
                key: s("k"),
                version: 2,
                location: None,
            },
            Event::KeyReleaseDenied {
                app: Some(s("app")),
                serial: None,
                key: s("k"),
                reasons: vec![s("location")],
            },
            Event::DataKeyGenerated {
                actor: s("svc"),
                key: s("k"),
                version: 2,
                context: map.clone(),
            },
            Event::DataKeyUnwrapped {
                actor: s("svc"),
                key: s("k"),
                version: 2,
                context: map,
            },
            Event::DataKeyDenied {
                actor: s("svc"),
                key: s("k"),
                reasons: vec![s("disabled")],
            },
            Event::ManifestApplied {
                actor: s("admin"),
                version: 3,
                digest: s("cd"),
            },
            Event::MeasurementsApproved {
                manifest_version: 3,
                app: s("worker"),
                tee: vec![s("tdx"), s("sev-snp")],
                measurements: vec![s("ab"), s("cd")],
                signers: vec![],
            },
            Event::ManifestRejected {
                actor: s("admin"),
                reason: s("stale"),
            },
            Event::CredentialCreated {
                actor: s("admin"),
                name: s("ci"),
                role: s("operator"),
                token: None,
                expires: None,
            },
            Event::CredentialCreated {
                actor: s("admin"),
                name: s("ci"),
                role: s("operator"),
                token: Some(s("00112233aabbccdd")),
                expires: Some(s("2026-03-01T00:00:00Z")),
            },
            Event::CredentialRevoked {
                actor: s("admin"),
                name: s("ci"),
                token: None,
                reason: None,
            },
            Event::CredentialRevoked {
                actor: s("admin"),
                name: s("ci"),
                token: Some(s("00112233aabbccdd")),
                reason: Some(s("revoked by an admin")),
            },
            Event::LoginFailed {
                reason: s("bad token"),
                remote: Some(s("127.0.0.1")),
            },
            Event::FailuresSummarized {
                what: s("login"),
                remote: Some(s("127.0.0.1")),
                count: 3,
                first: s("2026-01-01T00:00:00Z"),
                last: s("2026-01-01T00:00:59Z"),
                reasons: [(s("unknown bearer token"), 3)].into(),
                evidence: BTreeMap::new(),
            },
            Event::Tokenized {
                actor: s("svc"),
                key: s("t"),
                count: 10,
            },
            Event::Detokenized {
                actor: s("svc"),
                key: s("t"),
                count: 10,
            },
            Event::TokenizationDenied {
                actor: s("svc"),
                key: s("t"),
                reason: s("role"),
            },
            Event::WorkflowRunQueued {
                actor: s("user:mel"),
                workflow: s("score"),
                run: 1,
            },
            Event::WorkflowRunClaimed {
                app: s("app"),
                serial: s("01"),
                workflow: s("score"),
                run: 1,
            },
            Event::WorkflowRunFinished {
                app: s("app"),
                serial: Some(s("01")),
                workflow: s("score"),
                run: 1,
                succeeded: true,
                items: 20,
                output: Some(s("results/score/run-1.sealed")),
                output_sha256: Some(s("00")),
                error: None,
            },
            Event::CoordinatorStarted {
                version: s("0.1.0"),
                insecure_allow_simulated_tee: false,
            },
        ]
    }

    #[test]
    fn kind_is_the_json_type_and_events_round_trip() {
        let events = every_event();
        let mut kinds: Vec<&str> = events.iter().map(Event::kind).collect();
        for e in &events {
            let v = serde_json::to_value(e).unwrap();
            assert_eq!(v["type"], e.kind());
            let back: Event = serde_json::from_value(v).unwrap();
            assert_eq!(&back, e);
        }
        kinds.sort();
        kinds.dedup();
        // Some variants appear twice (with and without optional members).
        let variants: std::collections::HashSet<_> =
            events.iter().map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), variants.len(), "two variants share a kind");
    }

    #[test]
    fn canonical_bytes_are_fixed() {
        let e = Entry {
            index: 7,
            time: s("2025-01-02T03:04:05.000006Z"),
            prev: ZERO_PREV.to_string(),
            event: Event::KeyReleased {
                app: s("app"),
                serial: s("0a"),
                key: s("k1"),
                version: 3,
                location: None,
            },
        };
        let want = format!(
            r#"{{"index":7,"time":"2025-01-02T03:04:05.000006Z","prev":"{ZERO_PREV}","event":{{"type":"key_released","app":"app","serial":"0a","key":"k1","version":3,"location":null}}}}"#
        );
        assert_eq!(String::from_utf8(e.canonical_bytes()).unwrap(), want);
        assert_eq!(e.leaf_hash(), leaf_hash(want.as_bytes()));
        assert_eq!(
            encode_entry(e.index, &e.time, &e.prev, &e.event),
            e.canonical_bytes()
        );
        // Parsing the canonical bytes and encoding again is the identity.
        let back: Entry = serde_json::from_slice(want.as_bytes()).unwrap();
        assert_eq!(back.canonical_bytes(), want.as_bytes());
        // Map keys come out sorted whatever order they were given in.
        let e = Event::KeyCreated {
            actor: s("a"),
            key: s("k"),
            version: 1,
            tags: BTreeMap::from([(s("z"), s("1")), (s("b"), s("2"))]),
        };
        let json = String::from_utf8(encode_entry(0, "t", "p", &e)).unwrap();
        assert!(json.contains(r#""tags":{"b":"2","z":"1"}"#), "{json}");
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn unknown_members_and_types_are_refused() {
        let ok = r#"{"type":"key_enabled","actor":"a","key":"k"}"#;
        assert!(serde_json::from_str::<Event>(ok).is_ok());
        for bad in [
            r#"{"type":"key_enabled","actor":"a","key":"k","extra":1}"#,
            r#"{"type":"key_unknown","actor":"a","key":"k"}"#,
            r#"{"actor":"a","key":"k"}"#,
            r#"{"type":"key_enabled","actor":"a"}"#,
            r#"{"type":"key_rotated","actor":"a","key":"k","version":-1}"#,
        ] {
            assert!(serde_json::from_str::<Event>(bad).is_err(), "{bad}");
        }
        let entry = format!(r#"{{"index":0,"time":"t","prev":"p","event":{ok},"x":0}}"#);
        assert!(serde_json::from_str::<Entry>(&entry).is_err());
    }

    #[test]
    fn evidence_digest_is_named_by_attestation_events_only() {
        for e in every_event() {
            let named = e.evidence_digest().is_some();
            let expect = matches!(
                e,
                Event::AttestationVerified { .. } | Event::CertificateIssued { .. }
            );
            assert_eq!(named, expect, "{}", e.kind());
        }
    }

    #[test]
    fn times_are_rfc3339_utc_microseconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(format_time(t).unwrap(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(
            format_time(UNIX_EPOCH).unwrap(),
            "1970-01-01T00:00:00.000000Z"
        );
        let parsed = OffsetDateTime::parse(
            &format_time(t).unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(parsed.unix_timestamp(), 1_700_000_000);
        assert!(format_time(UNIX_EPOCH - Duration::from_secs(1)).is_err());
        assert!(format_time(UNIX_EPOCH + Duration::from_secs(300_000_000_000)).is_err());
    }
}
