//! The manifest: who may do what. A TOML document applied by an admin,
//! versioned in the store (every version kept).
//!
//! ```toml
//! [users.admin]
//! roles = ["admin"]
//!
//! [users.alice]
//! roles = ["data_owner"]
//!
//! [apps.siamese-worker]
//! tee = ["sgx", "simulated"]
//! measurements = ["<hex>"]        # MRENCLAVE / MRTD / SNP measurement / simulated digest
//! signers = ["<hex MRSIGNER>"]    # optional, SGX only
//! keys = ["model-key"]            # keys it may receive
//!
//! [keys.model-key]
//! allowed_locations = ["eu-west"] # empty or absent: anywhere
//!
//! [keys.dataset-key]
//! owners = ["alice"]              # may seal and open with it
//! grants = { alice = ["tokenize", "detokenize"] }   # finer uses, per user
//!
//! [policy]
//! accepted_tcb_statuses = ["UpToDate"]
//!
//! [[placements]]                  # operator-signed endorsements
//! platform = "simulated:laptop-1"
//! location = "eu-west"
//! signature = "<hex>"
//!
//! [datasets.mnist-pairs]
//! location = "datasets/mnist-pairs"   # a sealed directory in the workers' object store
//! key = "dataset-key"
//! context = { purpose = "pairs" }     # the context it was sealed with
//!
//! [workflows.score-mnist]
//! input = "mnist-pairs"
//! app = "siamese-worker"              # must be given dataset-key and results-key
//! output = "results/score-mnist"      # run N writes results/score-mnist/run-N.sealed
//! output_key = "results-key"
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use twinseal_attest::TeeKind;
use twinseal_policy::{KeyRule, PlacementEndorsement, PolicyConfig};

use crate::error::{Error, Result};

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_LEN: usize = 1 << 20;

/// A role a user holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages keys, the manifest, users' tokens and certificates.
    Admin,
    /// Seals data with named keys and opens their own data; never sees key material.
    DataOwner,
    /// Reads the audit log, certificates and evidence.
    Auditor,
    /// Starts workflows and reads their metrics; never obtains data keys.
    MlEngineer,
    /// Calls workers (compare, embed, verify, identify, enroll) as each
    /// app's `clients` table allows; nothing on the coordinator.
    Client,
}

/// An extra permission beside the roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Formerly: may reverse tokenization under every key. Replaced by the
    /// per-key `detokenize` grant: still read in stored manifests (where it
    /// grants nothing), refused in a manifest being applied.
    Detokenize,
}

/// What a user may do with one key (the manifest's per-key grants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyUse {
    /// Obtain data keys to seal files under it (`datakey`).
    Seal,
    /// Have file keys of files sealed under it unwrapped (`unwrap`).
    Open,
    /// Tokenize values with it.
    Tokenize,
    /// Reverse its tokens.
    Detokenize,
}

impl KeyUse {
    /// The name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUse::Seal => "seal",
            KeyUse::Open => "open",
            KeyUse::Tokenize => "tokenize",
            KeyUse::Detokenize => "detokenize",
        }
    }
}

/// A user (holder of bearer tokens).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Roles.
    #[serde(default)]
    pub roles: BTreeSet<Role>,
    /// Extra permissions.
    #[serde(default)]
    pub permissions: BTreeSet<Permission>,
}

/// An attested app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// TEE kinds it may run in (`sgx`, `tdx`, `sev-snp`, `simulated`).
    pub tee: Vec<String>,
    /// Allowed primary measurements, hex.
    #[serde(default)]
    pub measurements: Vec<String>,
    /// Allowed SGX signers (MRSIGNER), hex.
    #[serde(default)]
    pub signers: Vec<String>,
    /// Keys it may receive (release, data keys, tokenization).
    #[serde(default)]
    pub keys: Vec<String>,
    /// DNS names and IP addresses its certificates may carry (exact, or
    /// `*.suffix` for one more label); empty: any name but the
    /// coordinator's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Worker clients (users with the `client` role) and what each may ask
    /// of this app's workers. Nobody else may call them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clients: BTreeMap<String, BTreeSet<twinseal_api::WorkerPermission>>,
}

/// Release rules for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPlacement {
    /// Locations where it may be released; empty: anywhere.
    #[serde(default)]
    pub allowed_locations: Vec<String>,
    /// Models only from these trainer apps: when not empty, an app gets
    /// the file key of a model sealed under this key only if the
    /// coordinator holds a training record of that very file (its header)
    /// made by a run of one of these apps, and the key's whole material is
    /// never released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trained_by: Vec<String>,
    /// Users who may seal and open files with this key (shorthand for
    /// grants of `seal` and `open`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// What each user may do with this key. Users use only the keys and
    /// uses granted here or in `owners`; nothing is granted by default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<String, BTreeSet<KeyUse>>,
    /// Allow tokenizing values of small domains (fewer than 10^8 possible
    /// values, e.g. 6-digit codes) with this key. Whoever may tokenize
    /// with it can then reverse such tokens by trying every value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub small_token_domains: bool,
}

/// Policy settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// TCB statuses accepted (default: only `UpToDate`).
    #[serde(default = "default_tcb")]
    pub accepted_tcb_statuses: Vec<String>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            accepted_tcb_statuses: default_tcb(),
        }
    }
}

fn default_tcb() -> Vec<String> {
    vec![twinseal_policy::DEFAULT_ACCEPTED_TCB_STATUS.to_string()]
}

/// A sealed dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Where it is stored: a sealed directory's path in the workers' object
    /// store (relative, `/`-separated).
    pub location: String,
    /// The key it is sealed under.
    pub key: String,
    /// The encryption context it was sealed with (public).
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// A workflow: sealed input -> attested app -> sealed output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// What the app does: `score` (pairs in, sealed verdicts out) or
    /// `train` (a sealed dataset in, a sealed model and metrics out).
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The input dataset's name.
    pub input: String,
    /// The app that runs it; the manifest must give it the input dataset's
    /// key and `output_key`.
    pub app: String,
    /// Where the sealed outputs go: a folder in the object store; run `N`
    /// writes `<output>/run-N.sealed` and never replaces an object.
    pub output: String,
    /// The key the output is sealed under.
    pub output_key: String,
    /// `train` workflows: the training options (`twinseal train`'s, with
    /// its defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<twinseal_api::TrainSpec>,
}

/// True for object-store locations: relative, `/`-separated, 1 to 512
/// bytes, every part a valid name (no `.` or `..`, no empty part).
pub fn valid_location(s: &str) -> bool {
    !s.is_empty() && s.len() <= 512 && s.split('/').all(valid_name)
}

fn default_kind() -> String {
    "score".to_string()
}

/// The whole manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Users by name.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Apps by name.
    #[serde(default)]
    pub apps: BTreeMap<String, App>,
    /// Placement rules by key name.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyPlacement>,
    /// Policy settings.
    #[serde(default)]
    pub policy: PolicySettings,
    /// Operator-signed placement endorsements.
    #[serde(default)]
    pub placements: Vec<PlacementEndorsement>,
    /// Datasets by name.
    #[serde(default)]
    pub datasets: BTreeMap<String, Dataset>,
    /// Workflows by name.
    #[serde(default)]
    pub workflows: BTreeMap<String, Workflow>,
}

/// True for names of keys, apps, users, datasets and workflows:
/// 1 to 64 of `a-z A-Z 0-9 . _ -`, not starting with `.` or `-`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn tee_kind(s: &str) -> Option<TeeKind> {
    [
        TeeKind::Sgx,
        TeeKind::Tdx,
        TeeKind::SevSnp,
        TeeKind::Simulated,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
}

impl Manifest {
    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Manifest> {
        if text.len() > MAX_MANIFEST_LEN {
            return Err(Error::BadRequest(format!(
                "manifest is larger than {MAX_MANIFEST_LEN} bytes"
            )));
        }
        let m: Manifest =
            toml::from_str(text).map_err(|e| Error::BadRequest(format!("manifest: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// Check names and references.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadRequest(format!("manifest: {m}")));
        for name in self
            .users
            .keys()
            .chain(self.apps.keys())
            .chain(self.keys.keys())
            .chain(self.datasets.keys())
            .chain(self.workflows.keys())
        {
            if !valid_name(name) {
                return bad(format!("invalid name {name:?}"));
            }
        }
        for (name, app) in &self.apps {
            if app.tee.is_empty() {
                return bad(format!("app {name} names no TEE kind"));
            }
            for t in &app.tee {
                if tee_kind(t).is_none() {
                    return bad(format!(
                        "app {name}: unknown TEE kind {t:?} (sgx, tdx, sev-snp, simulated)"
                    ));
                }
            }
            if app.measurements.is_empty() && app.signers.is_empty() {
                return bad(format!("app {name} allows no measurement or signer"));
            }
            for m in app.measurements.iter().chain(&app.signers) {
                if m.is_empty()
                    || hex::decode(m).is_err()
                    || m.chars().any(|c| c.is_ascii_uppercase())
                {
                    return bad(format!(
                        "app {name}: measurement {m:?} is not lowercase hex"
                    ));
                }
            }
            for k in &app.keys {
                if !valid_name(k) {
                    return bad(format!("app {name}: invalid key name {k:?}"));
                }
            }
            for n in &app.names {
                let host = n.strip_prefix("*.").unwrap_or(n);
                if host.is_empty() || host.contains('*') || host.len() > 253 {
                    return bad(format!("app {name}: invalid certificate name {n:?}"));
                }
            }
            for client in app.clients.keys() {
                self.require_role(client, Role::Client, &format!("app {name}: clients"))?;
            }
        }
        for (name, d) in &self.datasets {
            if !valid_location(&d.location) {
                return bad(format!(
                    "dataset {name}: location {:?} is not a relative object path",
                    d.location
                ));
            }
            if !valid_name(&d.key) {
                return bad(format!("dataset {name}: invalid key name {:?}", d.key));
            }
        }
        for (name, k) in &self.keys {
            for app in &k.trained_by {
                if !self.apps.contains_key(app) {
                    return bad(format!("key {name}: trained_by names unknown app {app}"));
                }
            }
            for user in k.owners.iter().chain(k.grants.keys()) {
                self.require_role(user, Role::DataOwner, &format!("key {name}: grants"))?;
            }
        }
        for (name, w) in &self.workflows {
            let Some(input) = self.datasets.get(&w.input) else {
                return bad(format!("workflow {name}: unknown dataset {}", w.input));
            };
            if !self.apps.contains_key(&w.app) {
                return bad(format!("workflow {name}: unknown app {}", w.app));
            }
            if !matches!(w.kind.as_str(), "score" | "train") {
                return bad(format!("workflow {name}: unknown kind {:?}", w.kind));
            }
            if w.train.is_some() && w.kind != "train" {
                return bad(format!(
                    "workflow {name}: training options belong to kind \"train\" only"
                ));
            }
            if let Some(t) = &w.train
                && let Err(e) = t.check()
            {
                return bad(format!("workflow {name}: train: {e}"));
            }
            if !valid_location(&w.output) {
                return bad(format!(
                    "workflow {name}: output {:?} is not a relative object path",
                    w.output
                ));
            }
            for key in [&input.key, &w.output_key] {
                if !self.app_may_use_key(&w.app, key) {
                    return bad(format!(
                        "workflow {name}: app {} is not given key {key} (add it to the app's keys)",
                        w.app
                    ));
                }
            }
        }
        Ok(())
    }

    /// `user` is in the manifest and holds `role` (`place` says where the
    /// manifest names them, for the error).
    fn require_role(&self, user: &str, role: Role, place: &str) -> Result<()> {
        let role_name = match role {
            Role::Admin => "admin",
            Role::DataOwner => "data_owner",
            Role::Auditor => "auditor",
            Role::MlEngineer => "ml_engineer",
            Role::Client => "client",
        };
        match self.users.get(user) {
            None => Err(Error::BadRequest(format!(
                "manifest: {place} name unknown user {user}"
            ))),
            Some(u) if !u.roles.contains(&role) => Err(Error::BadRequest(format!(
                "manifest: {place} name user {user}, who lacks the {role_name} role"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Whether user `user` may use `key` for `what` (per-key grants).
    pub fn user_may(&self, user: &str, key: &str, what: KeyUse) -> bool {
        self.keys.get(key).is_some_and(|k| {
            (matches!(what, KeyUse::Seal | KeyUse::Open) && k.owners.iter().any(|o| o == user))
                || k.grants.get(user).is_some_and(|g| g.contains(&what))
        })
    }

    /// The stricter checks for a manifest being applied (stored manifests
    /// from before per-key grants still load without them, granting
    /// nothing): no user holds the retired global `detokenize` permission,
    /// and every data owner is granted some use of some key. The errors say
    /// what to add.
    pub fn check_grants(&self) -> Result<()> {
        for (name, u) in &self.users {
            if u.permissions.contains(&Permission::Detokenize) {
                return Err(Error::BadRequest(format!(
                    "manifest: user {name}: permissions = [\"detokenize\"] no longer applies to every key; \
                     grant it per key instead, e.g. [keys.<key>] grants = {{ {name} = [\"tokenize\", \"detokenize\"] }}, \
                     and remove the permissions line"
                )));
            }
        }
        if let Some(name) = self.data_owners_without_grants().first() {
            return Err(Error::BadRequest(format!(
                "manifest: data owner {name} is granted no key: data owners use only the keys \
                 the manifest grants them; add e.g. [keys.<key>] owners = [\"{name}\"] (seal and open) \
                 or grants = {{ {name} = [\"seal\"] }} (uses: seal, open, tokenize, detokenize)"
            )));
        }
        Ok(())
    }

    /// Data owners without any grant (a stored manifest from before
    /// per-key grants): they can use no key until a manifest with grants
    /// is applied.
    pub fn data_owners_without_grants(&self) -> Vec<&str> {
        self.users_with(Role::DataOwner)
            .filter(|n| {
                !self
                    .keys
                    .values()
                    .any(|k| k.owners.iter().any(|o| o == n) || k.grants.contains_key(*n))
            })
            .collect()
    }

    /// Whether `app`'s certificates may carry `name` (see [`App::names`]).
    pub fn app_allows_name(&self, app: &str, name: &str) -> bool {
        let Some(a) = self.apps.get(app) else {
            return false;
        };
        a.names.is_empty()
            || a.names.iter().any(|n| match n.strip_prefix("*.") {
                Some(suffix) => name.split_once('.').is_some_and(|(first, rest)| {
                    !first.is_empty() && rest.eq_ignore_ascii_case(suffix)
                }),
                None => n.eq_ignore_ascii_case(name),
            })
    }

    /// What user `user` may ask of `app`'s workers.
    pub fn client_permissions(&self, app: &str, user: &str) -> Vec<twinseal_api::WorkerPermission> {
        self.apps
            .get(app)
            .and_then(|a| a.clients.get(user))
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether `app` may run in `tee`.
    pub fn app_allows_tee(&self, app: &str, tee: TeeKind) -> bool {
        self.apps
            .get(app)
            .is_some_and(|a| a.tee.iter().any(|t| tee_kind(t) == Some(tee)))
    }

    /// Whether `app` may receive `key`.
    pub fn app_may_use_key(&self, app: &str, key: &str) -> bool {
        self.apps
            .get(app)
            .is_some_and(|a| a.keys.iter().any(|k| k == key))
    }

    /// The policy configuration for `app`: its measurements and signers,
    /// and the placement rules of the keys it may receive.
    pub fn policy_config(&self, app: &App) -> PolicyConfig {
        let mut keys = BTreeMap::new();
        for k in &app.keys {
            let rule = self.keys.get(k).cloned().unwrap_or_default();
            keys.insert(
                k.clone(),
                KeyRule {
                    allowed_locations: rule.allowed_locations,
                },
            );
        }
        PolicyConfig {
            accepted_tcb_statuses: self.policy.accepted_tcb_statuses.clone(),
            allowed_measurements: app.measurements.clone(),
            allowed_signers: app.signers.clone(),
            keys,
        }
    }

    /// Users holding `role`.
    pub fn users_with(&self, role: Role) -> impl Iterator<Item = &str> {
        self.users
            .iter()
            .filter(move |(_, u)| u.roles.contains(&role))
            .map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[users.admin]
roles = ["admin"]
[users.alice]
roles = ["data_owner"]
[users.bob]
roles = ["data_owner"]
[apps.worker]
tee = ["simulated"]
measurements = ["00ff"]
keys = ["model-key", "data-key", "out-key"]
[keys.model-key]
allowed_locations = ["eu-west"]
[keys.data-key]
owners = ["alice"]
grants = { bob = ["tokenize"] }
[datasets.pairs]
location = "datasets/pairs.sealed"
key = "data-key"
context = { purpose = "pairs" }
[workflows.score]
input = "pairs"
app = "worker"
output = "results/score"
output_key = "out-key"
"#;

    #[test]
    fn parses_and_builds_policy_config() {
        let m = Manifest::parse(GOOD).unwrap();
        assert!(m.app_may_use_key("worker", "model-key"));
        assert!(!m.app_may_use_key("worker", "other"));
        assert!(m.app_allows_tee("worker", TeeKind::Simulated));
        assert!(!m.app_allows_tee("worker", TeeKind::Sgx));
        let c = m.policy_config(&m.apps["worker"]);
        assert_eq!(c.keys["model-key"].allowed_locations, ["eu-west"]);
        assert_eq!(m.users_with(Role::Admin).collect::<Vec<_>>(), ["admin"]);
        m.check_grants().unwrap();
        assert!(
            m.app_allows_name("worker", "anything.example"),
            "no list: any name"
        );
        let listed = Manifest::parse(&GOOD.replace(
            "keys = [\"model-key\", \"data-key\", \"out-key\"]",
            "keys = [\"model-key\", \"data-key\", \"out-key\"]\nnames = [\"*.workers.example\", \"10.0.0.5\"]",
        ))
        .unwrap();
        assert!(listed.app_allows_name("worker", "w1.workers.example"));
        assert!(listed.app_allows_name("worker", "10.0.0.5"));
        assert!(!listed.app_allows_name("worker", "workers.example"));
        assert!(!listed.app_allows_name("worker", "a.b.workers.example"));
        assert!(!listed.app_allows_name("worker", "coordinator.example"));
        assert!(m.user_may("alice", "data-key", KeyUse::Seal));
        assert!(m.user_may("alice", "data-key", KeyUse::Open));
        assert!(!m.user_may("alice", "data-key", KeyUse::Detokenize));
        assert!(!m.user_may("alice", "model-key", KeyUse::Open));
        assert!(m.user_may("bob", "data-key", KeyUse::Tokenize));
        assert!(!m.user_may("bob", "data-key", KeyUse::Open));
    }

    #[test]
    fn fail_manifests_from_before_grants_on_apply_with_what_to_add() {
        let old = "[users.admin]\nroles = [\"admin\"]\n[users.dora]\nroles = [\"data_owner\"]\npermissions = [\"detokenize\"]\n";
        // A stored manifest still loads, granting nothing...
        let m = Manifest::parse(old).unwrap();
        assert_eq!(m.data_owners_without_grants(), ["dora"]);
        assert!(!m.user_may("dora", "any-key", KeyUse::Detokenize));
        // ...but applying it says what to add.
        let e = m.check_grants().unwrap_err().to_string();
        assert!(
            e.contains("grants = { dora = [\"tokenize\", \"detokenize\"] }"),
            "{e}"
        );
        let m = Manifest::parse(&old.replace("permissions = [\"detokenize\"]\n", "")).unwrap();
        let e = m.check_grants().unwrap_err().to_string();
        assert!(e.contains("owners = [\"dora\"]"), "{e}");
    }

    #[test]
    fn fail_bad_manifests() {
        for (bad, why) in [
            ("[users.admin]\nroles = [\"root\"]", "unknown variant"),
            (
                "[apps.w]\ntee = [\"sgx\"]\nmeasurements = [\"zz\"]",
                "not lowercase hex",
            ),
            (
                "[apps.w]\ntee = [\"nitro\"]\nmeasurements = [\"00\"]",
                "unknown TEE kind",
            ),
            (
                "[apps.w]\ntee = []\nmeasurements = [\"00\"]",
                "names no TEE kind",
            ),
            (
                "[apps.\"a b\"]\ntee = [\"sgx\"]\nmeasurements = [\"00\"]",
                "invalid name",
            ),
            ("colour = \"red\"", "unknown field"),
            (
                "[workflows.w]\ninput = \"nope\"\napp = \"a\"\noutput = \"o\"\noutput_key = \"k\"",
                "unknown dataset",
            ),
            ("[users", "manifest:"),
            (
                GOOD.replace("owners = [\"alice\"]", "owners = [\"ghost\"]")
                    .as_str(),
                "unknown user ghost",
            ),
            (
                GOOD.replace("owners = [\"alice\"]", "owners = [\"admin\"]")
                    .as_str(),
                "lacks the data_owner role",
            ),
            (
                GOOD.replace("bob = [\"tokenize\"]", "bob = [\"launch\"]")
                    .as_str(),
                "unknown variant",
            ),
            (
                GOOD.replace("\"datasets/pairs.sealed\"", "\"../etc/passwd\"")
                    .as_str(),
                "not a relative object path",
            ),
            (
                GOOD.replace("\"results/score\"", "\"/abs/out\"").as_str(),
                "not a relative object path",
            ),
            (
                GOOD.replace(
                    "\"model-key\", \"data-key\", \"out-key\"",
                    "\"model-key\", \"data-key\"",
                )
                .as_str(),
                "is not given key out-key",
            ),
        ] {
            let e = Manifest::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
