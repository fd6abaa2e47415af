//! `deploy/kubernetes`: every overlay renders (`kubectl kustomize`, when a
//! kubectl with kustomize v5 or later is installed) and holds what the
//! deployment needs: three coordinator replicas whose PostgreSQL password
//! and master key come from Secrets, readiness on `/v1/health`, workers on
//! the Confidential Containers runtime class of their TEE with the
//! matching evidence source, Services, NetworkPolicies (deny by default),
//! PodDisruptionBudgets, and the simulated TEE only in the overlay marked
//! INSECURE. Without such a kubectl the same checks run on the base files
//! and the overlays' patches as written (and the test says so).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// kubectl, if it bundles kustomize v5 or later.
fn kubectl() -> Option<&'static str> {
    let out = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("Kustomize Version: v"))?;
    let major: u32 = v.split('.').next()?.parse().ok()?;
    (major >= 5).then_some("kubectl")
}

fn render(overlay: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join("overlays").join(overlay))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    docs(&String::from_utf8(out.stdout).unwrap())
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn args(d: &Value) -> Vec<String> {
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// What every overlay shares.
fn check_common(objects: &[Value], overlay: &str) {
    let coord = find(objects, "Deployment", "twinseal-coordinator");
    assert_eq!(coord["spec"]["replicas"], 3, "{overlay}");
    let pod = &coord["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/v1/health");
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    let secrets: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert!(secrets.contains(&"twinseal-master-key"), "{secrets:?}");
    assert!(secrets.contains(&"twinseal-postgres"), "{secrets:?}");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    for kind in ["Service", "PodDisruptionBudget"] {
        find(objects, kind, "twinseal-coordinator");
        find(objects, kind, "twinseal-worker");
    }
    let deny = find(objects, "NetworkPolicy", "default-deny");
    assert_eq!(
        deny["spec"]["podSelector"],
        Value::Mapping(Default::default())
    );
    find(objects, "NetworkPolicy", "twinseal-coordinator");
    find(objects, "NetworkPolicy", "twinseal-worker");
    find(objects, "Deployment", "twinseal-worker");
}

fn coordinator_toml(objects: &[Value]) -> String {
    objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("twinseal-coordinator-config"))
        })
        .expect("the coordinator's ConfigMap")["data"]["coordinator.toml"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_kubernetes_overlay_renders_with_replicas_secrets_runtime_classes_and_policies() {
    let overlays: Vec<String> = std::fs::read_dir(root().join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for want in ["tdx", "snp", "dev-simulated"] {
        assert!(overlays.iter().any(|o| o == want), "overlay {want} missing");
    }
    // Every configuration shipped parses as the coordinator's own.
    for toml in [
        root().join("base/coordinator.toml"),
        root().join("overlays/dev-simulated/coordinator.toml"),
    ] {
        let text = std::fs::read_to_string(&toml).unwrap();
        let c: twinseal_coordinator::Config = toml_parse(&text);
        assert_eq!(
            c.store.url.as_deref().map(|u| u.starts_with("postgres://")),
            Some(true)
        );
        assert!(c.store.password_file.is_some() && c.store.ca_file.is_some());
    }
    if kubectl().is_none() {
        eprintln!(
            "NOTE: no kubectl with kustomize v5: checking the base and the overlays as written, \
             not rendered"
        );
        let mut base = Vec::new();
        for f in [
            "namespace.yaml",
            "coordinator.yaml",
            "worker.yaml",
            "networkpolicy.yaml",
        ] {
            base.extend(docs(
                &std::fs::read_to_string(root().join("base").join(f)).unwrap(),
            ));
        }
        check_common(&base, "base");
        for (o, class) in [("tdx", "kata-qemu-tdx"), ("snp", "kata-qemu-snp")] {
            let k =
                std::fs::read_to_string(root().join("overlays").join(o).join("kustomization.yaml"))
                    .unwrap();
            assert!(
                k.contains(class) && k.contains(&format!("--tee={o}")),
                "{o}"
            );
        }
        let dev = std::fs::read_to_string(root().join("overlays/dev-simulated/kustomization.yaml"))
            .unwrap();
        assert!(dev.contains("INSECURE") && dev.contains("--tee=simulated"));
        return;
    }
    for overlay in &overlays {
        let objects = render(overlay);
        check_common(&objects, overlay);
        let worker = find(&objects, "Deployment", "twinseal-worker");
        let class = worker["spec"]["template"]["spec"]["runtimeClassName"].as_str();
        let tee = args(worker)
            .into_iter()
            .find_map(|a| a.strip_prefix("--tee=").map(str::to_string))
            .unwrap();
        let toml = coordinator_toml(&objects);
        let config: twinseal_coordinator::Config = toml_parse(&toml);
        match overlay.as_str() {
            "tdx" | "snp" => {
                assert_eq!(class, Some(format!("kata-qemu-{overlay}").as_str()));
                assert_eq!(tee, *overlay);
                assert!(!config.insecure_allow_simulated_tee, "{overlay}");
                assert!(!toml.contains("simulated_platform_keys"));
            }
            "dev-simulated" => {
                assert_eq!(class, None, "simulated workers run in ordinary pods");
                assert_eq!(tee, "simulated");
                assert!(config.insecure_allow_simulated_tee);
                // Marked on every object, and in a namespace of its own.
                for o in &objects {
                    assert_eq!(
                        o["metadata"]["labels"]["twinseal.dev/insecure-simulated-tee"],
                        "true",
                        "{}",
                        o["kind"].as_str().unwrap_or_default()
                    );
                    if o["kind"] != "Namespace" {
                        assert_eq!(o["metadata"]["namespace"], "twinseal-dev-insecure");
                    }
                }
            }
            other => panic!("an overlay this test does not know: {other}"),
        }
        // The simulated TEE appears nowhere else.
        if overlay != "dev-simulated" {
            for o in &objects {
                let text = serde_norway::to_string(o).unwrap();
                assert!(!text.contains("simulated"), "{overlay}: {text}");
            }
        }
    }
}

fn toml_parse(text: &str) -> twinseal_coordinator::Config {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("coordinator.toml");
    std::fs::write(&p, text).unwrap();
    twinseal_coordinator::Config::load(&p).unwrap_or_else(|e| panic!("{e}\n{text}"))
}
