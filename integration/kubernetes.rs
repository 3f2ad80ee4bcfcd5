//! deploy/kubernetes/: every manifest parses, the workloads probe
//! /-/healthy and /-/ready, per-pod values come from the pod, and the
//! ConfigMap's config passes `streamroute check config --offline`.

use std::path::Path;

use serde::Deserialize;

use crate::common::{show, streamroute, write_file};

fn documents() -> Vec<(String, serde_yaml::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/kubernetes") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.display().to_string(), value));
        }
    }
    out
}

fn kind<'a>(
    docs: &'a [(String, serde_yaml::Value)],
    kind: &str,
    name: &str,
) -> &'a serde_yaml::Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_manifest_parses_and_the_kustomization_lists_them_all() {
    let docs = documents();
    let kustomization = docs
        .iter()
        .find(|(_, d)| d["kind"] == "Kustomization")
        .map(|(_, d)| d)
        .expect("kustomization.yaml");
    let listed: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name"))
        .collect();
    let files: std::collections::BTreeSet<String> = docs
        .iter()
        .map(|(path, _)| path.rsplit('/').next().unwrap_or_default().to_string())
        .filter(|f| f != "kustomization.yaml")
        .collect();
    let listed_set: std::collections::BTreeSet<String> =
        listed.iter().map(|s| s.to_string()).collect();
    assert_eq!(listed_set, files);
    for (path, doc) in &docs {
        assert!(doc["apiVersion"].is_string(), "{path}: no apiVersion");
        assert!(doc["kind"].is_string(), "{path}: no kind");
    }
}

#[test]
fn workloads_probe_health_and_readiness_and_take_per_pod_values_from_the_pod() {
    let docs = documents();
    for (kind_name, name, role) in [
        ("Deployment", "streamroute-gateway", "gateway"),
        ("StatefulSet", "streamroute-router", "router"),
        ("StatefulSet", "streamroute-egress", "egress"),
    ] {
        let workload = kind(&docs, kind_name, name);
        let container = &workload["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"][0], role, "{name}");
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/-/healthy",
            "{name}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/-/ready",
            "{name}"
        );
        assert!(
            container["resources"]["requests"]["cpu"].is_string(),
            "{name}"
        );
        assert!(
            container["resources"]["requests"]["memory"].is_string(),
            "{name}"
        );
    }
    let env = |name: &str, var: &str| {
        kind(&docs, "StatefulSet", name)["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .find(|e| e["name"] == var)
            .cloned()
            .unwrap_or_else(|| panic!("{name} sets no {var}"))
    };
    assert_eq!(
        env("streamroute-router", "STREAMROUTE_ROUTER__INSTANCE_ID")["valueFrom"]["fieldRef"]
            ["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env("streamroute-egress", "STREAMROUTE_EGRESS__PARTITIONS")["valueFrom"]["fieldRef"]
            ["fieldPath"],
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    let egress = kind(&docs, "StatefulSet", "streamroute-egress");
    assert_eq!(
        egress["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "state"
    );
}

#[test]
fn the_configmap_config_passes_check_config_offline() {
    let docs = documents();
    let text = kind(&docs, "ConfigMap", "streamroute")["data"]["config.toml"]
        .as_str()
        .expect("config.toml")
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "config.toml", &text);
    let output = streamroute(
        &[
            "check",
            "config",
            path.to_str().expect("utf-8"),
            "--offline",
        ],
        &[
            // What the pods set; the check must pass with them too.
            ("STREAMROUTE_ROUTER__INSTANCE_ID", "streamroute-router-0"),
            ("STREAMROUTE_EGRESS__PARTITIONS", "3"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
}
