//! Appraisal of verified attestation claims: `(VerifiedClaims, Request)` to
//! a [`Decision`] with reasons, evaluated in Rego by `regorus`.
//!
//! The shipped [`DEFAULT_POLICY`] rejects simulated evidence (unless the
//! request carries the explicit dangerous option), debug-mode TEEs, TCB
//! statuses not in [`PolicyConfig::accepted_tcb_statuses`] (by default only
//! `UpToDate`), measurements not on the allow-list, and platforms whose
//! location (from operator-signed [`placement`] endorsements) is not allowed
//! for the requested key.
//!
//! This crate trusts its input claims because only `twinseal-attest`
//! verifiers can construct [`VerifiedClaims`]. It does no I/O.

pub mod placement;

use std::collections::BTreeMap;

use serde::Serialize;
use twinseal_attest::VerifiedClaims;

pub use placement::{PlacementEndorsement, PlacementSigner, Placements};

/// The default policy (Rego, package `twinseal.policy`).
pub const DEFAULT_POLICY: &str = include_str!("default.rego");

/// The TCB status the default configuration accepts.
pub const DEFAULT_ACCEPTED_TCB_STATUS: &str = "UpToDate";

/// Errors of the policy crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Rego policy or its data could not be loaded.
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    /// Evaluation failed (a policy bug, not a rejection).
    #[error("policy evaluation failed: {0}")]
    Evaluation(String),
    /// A placement endorsement is malformed or not signed by a trusted operator key.
    #[error("invalid placement endorsement: {0}")]
    Placement(String),
}

/// Operator configuration the policy reads as `data.twinseal.config`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// TCB statuses accepted (names as in `twinseal_attest::TcbStatus`).
    #[serde(default = "default_statuses")]
    pub accepted_tcb_statuses: Vec<String>,
    /// Allowed primary measurements (hex): MRENCLAVE, MRTD, SNP measurement
    /// or simulated executable digest.
    #[serde(default)]
    pub allowed_measurements: Vec<String>,
    /// Allowed SGX enclave signers (MRSIGNER, hex): any enclave they sign
    /// passes the measurement rule.
    #[serde(default)]
    pub allowed_signers: Vec<String>,
    /// Per key id: where it may be released.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyRule>,
}

fn default_statuses() -> Vec<String> {
    vec![DEFAULT_ACCEPTED_TCB_STATUS.to_string()]
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            accepted_tcb_statuses: default_statuses(),
            allowed_measurements: Vec::new(),
            allowed_signers: Vec::new(),
            keys: BTreeMap::new(),
        }
    }
}

/// Release rule for one key.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyRule {
    /// Locations (from placement endorsements) where the key may be
    /// released. Empty: anywhere (no placement rule).
    #[serde(default)]
    pub allowed_locations: Vec<String>,
}

/// What is being asked for, beside the claims.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Request {
    /// The key to release, if any (placement rules apply per key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// DANGEROUS: accept simulated-TEE evidence. For development and CI only.
    pub insecure_allow_simulated_tee: bool,
}

/// The policy's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// True when no rule denied.
    pub allow: bool,
    /// Why not (sorted); empty when allowed.
    pub reasons: Vec<String>,
    /// The platform's endorsed location, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// A loaded policy with its data, ready to evaluate requests.
#[derive(Clone)]
pub struct Policy {
    engine: regorus::Engine,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Policy(..)")
    }
}

#[derive(Serialize)]
struct Input<'a> {
    claims: &'a VerifiedClaims,
    request: &'a Request,
}

impl Policy {
    /// The default policy with `config` and verified `placements`.
    pub fn default_policy(config: &PolicyConfig, placements: &Placements) -> Result<Self, Error> {
        Self::new(DEFAULT_POLICY, config, placements)
    }

    /// A custom Rego policy (package `twinseal.policy`, rules `deny` — a set
    /// of reason strings — and optionally `location`).
    pub fn new(rego: &str, config: &PolicyConfig, placements: &Placements) -> Result<Self, Error> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("twinseal.rego".to_string(), rego.to_string())
            .map_err(|e| Error::InvalidPolicy(e.to_string()))?;
        let data = serde_json::json!({
            "twinseal": { "config": config, "placement": placements.as_map() }
        });
        engine
            .add_data_json(&data.to_string())
            .map_err(|e| Error::InvalidPolicy(e.to_string()))?;
        Ok(Policy { engine })
    }

    /// Evaluate `claims` for `request`.
    pub fn evaluate(&self, claims: &VerifiedClaims, request: &Request) -> Result<Decision, Error> {
        let mut engine = self.engine.clone();
        let input = serde_json::to_string(&Input { claims, request })
            .map_err(|e| Error::Evaluation(e.to_string()))?;
        engine
            .set_input_json(&input)
            .map_err(|e| Error::Evaluation(e.to_string()))?;
        let deny = engine
            .eval_rule("data.twinseal.policy.deny".to_string())
            .map_err(|e| Error::Evaluation(e.to_string()))?;
        let mut reasons = Vec::new();
        match deny {
            regorus::Value::Undefined => {}
            regorus::Value::Set(set) => {
                for v in set.iter() {
                    match v {
                        regorus::Value::String(s) => reasons.push(s.to_string()),
                        other => reasons.push(other.to_string()),
                    }
                }
            }
            other => {
                return Err(Error::Evaluation(format!(
                    "deny must be a set of strings, got {other}"
                )));
            }
        }
        reasons.sort();
        let location = match engine.eval_rule("data.twinseal.policy.location".to_string()) {
            Ok(regorus::Value::String(s)) => Some(s.to_string()),
            _ => None,
        };
        let decision = Decision {
            allow: reasons.is_empty(),
            reasons,
            location,
        };
        if claims.is_simulated() && request.insecure_allow_simulated_tee {
            tracing::warn!("policy evaluated simulated TEE evidence under the insecure option");
        }
        Ok(decision)
    }
}
