//! Offline checks of the Kubernetes manifests (`deploy/`; docs/kubernetes.md): no API
//! server can run here, so what can be checked without one is checked.
//!
//! - `kubectl kustomize` renders every overlay (skipped, saying so, without kubectl);
//! - `kubernetes-validate --strict` against Kubernetes 1.33 on every rendered object;
//! - `yamllint --strict` on `deploy/`, and `checkov` on the rendered manifests with no
//!   failed check but the skips of `deploy/checkov.yaml`, each explained in the docs;
//! - and what no schema knows: each ringside container runs a service the binary has,
//!   with settings that service reads and its own NATS user's password only; the HPA
//!   is the local autoscaler's configuration on the collector's series; only the
//!   watcher (and the two aggregated API servers) mount an API token; every container
//!   runs locked down; the copies the base carries equal their sources.
//!
//! The tools of `.venv/` (`./dev setup` installs them) are required; kubectl is not.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ringside_autoscale::{AutoscalerConfig, shared};
use ringside_bridge::BridgeService;
use ringside_collector::CollectorService;
use ringside_events::ServiceUser;
use ringside_kit::{Schema, Service};
use ringside_node::NodeService;
use ringside_reducer::Reducer;
use ringside_testkit::tool::{ToolOutput, run_within};
use ringside_testkit::workspace_root;
use ringside_watcher::KubernetesWatcher;
use serde_json::{Value, json};

/// What `kubectl kustomize` renders: the overlays, and the load generator.
const RENDERED: [&str; 3] = ["deploy/overlays/kind", "deploy/overlays/ha", "deploy/load"];
/// The Kubernetes version the manifests are validated against (the oldest the
/// watcher's k8s-openapi supports).
const KUBERNETES_VERSION: &str = "1.33.0";
/// The namespace of ringside's own objects.
const NAMESPACE: &str = "ringside";
/// The aggregated API servers: they check callers' credentials with the API server,
/// so they need a token (kube-system).
const API_SERVERS: [&str; 2] = ["prometheus-adapter", "metrics-server"];
/// The user every container runs as.
const NONROOT: u64 = 65532;

fn tool(name: &str) -> PathBuf {
    let path = workspace_root().join(".venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run ./dev setup",
        path.display()
    );
    path
}

fn run(command: &mut Command, stdin: &str, within: Duration) -> ToolOutput {
    run_within(command.current_dir(workspace_root()), stdin, within)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One rendered kustomization: its YAML and its objects.
struct Rendered {
    dir: &'static str,
    yaml: String,
    objects: Vec<Value>,
}

/// Every kustomization rendered (once per test binary), or `None` without kubectl.
fn rendered() -> Option<&'static [Rendered]> {
    static RENDERS: OnceLock<Option<Vec<Rendered>>> = OnceLock::new();
    RENDERS
        .get_or_init(|| {
            if Command::new("kubectl")
                .arg("version")
                .arg("--client")
                .output()
                .is_err()
            {
                eprintln!(
                    "SKIPPED: kubectl is not installed, so the overlays cannot be rendered \
                     (https://kubernetes.io/docs/tasks/tools/)"
                );
                return None;
            }
            Some(RENDERED.iter().map(|dir| render(dir)).collect())
        })
        .as_deref()
}

fn render(dir: &'static str) -> Rendered {
    let out = run(
        Command::new("kubectl").args(["kustomize", dir]),
        "",
        Duration::from_secs(60),
    );
    assert!(out.success, "kubectl kustomize {dir}:\n{}", out.said());
    Rendered {
        dir,
        objects: yaml_documents(&out.stdout),
        yaml: out.stdout,
    }
}

/// YAML documents as JSON values, through PyYAML (yamllint's own parser) in `.venv`.
fn yaml_documents(yaml: &str) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)";
    let out = run(
        Command::new(tool("python")).args(["-c", script]),
        yaml,
        Duration::from_secs(60),
    );
    assert!(out.success, "parsing YAML:\n{}", out.said());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("PyYAML wrote no JSON ({e})"))
}

/// Every object of every rendering, with the rendering's folder.
fn objects() -> Option<impl Iterator<Item = (&'static str, &'static Value)>> {
    Some(
        rendered()?
            .iter()
            .flat_map(|r| r.objects.iter().map(move |o| (r.dir, o))),
    )
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The pod template of a workload (Deployment, StatefulSet, Job).
fn pod_spec(object: &Value) -> Option<&Value> {
    matches!(
        object["kind"].as_str(),
        Some("Deployment" | "StatefulSet" | "Job")
    )
    .then(|| &object["spec"]["template"]["spec"])
}

/// Every workload with its pod spec.
fn workloads() -> Option<impl Iterator<Item = (&'static str, &'static Value, &'static Value)>> {
    Some(objects()?.filter_map(|(dir, o)| Some((dir, o, pod_spec(o)?))))
}

fn containers(spec: &Value) -> &[Value] {
    spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn is_ringside(container: &Value) -> bool {
    container["image"]
        .as_str()
        .is_some_and(|image| image.starts_with("ringside:"))
}

/// The service words of a ringside container's command: `["watcher", "kubernetes"]`.
fn service_words(container: &Value) -> Vec<&str> {
    let command: Vec<&str> = container["command"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        command.first(),
        Some(&"/ringside"),
        "a ringside container runs /ringside: {container}"
    );
    command[1..]
        .iter()
        .take_while(|w| !w.starts_with('-'))
        .copied()
        .collect()
}

/// The settings of the service a command runs, or `None` for `provision` (a tool).
fn schema_of(words: &[&str]) -> Option<&'static Schema> {
    match words {
        ["reducer"] => Some(Reducer::SCHEMA),
        ["watcher", "kubernetes"] => Some(KubernetesWatcher::SCHEMA),
        ["node"] => Some(NodeService::SCHEMA),
        ["collector"] => Some(CollectorService::SCHEMA),
        ["bridge"] => Some(BridgeService::SCHEMA),
        ["provision"] => None,
        other => panic!("no service for the command words {other:?}"),
    }
}

fn env_names(container: &Value) -> Vec<&str> {
    container["env"]
        .as_array()
        .map(|env| env.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default()
}

/// The Secret key each `RINGSIDE_NATS_PASSWORD_*` variable is read from.
fn passwords(container: &Value) -> Vec<(&str, &str)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e["name"].as_str()?;
            name.starts_with("RINGSIDE_NATS_PASSWORD_").then(|| {
                let key = &e["valueFrom"]["secretKeyRef"];
                assert_eq!(key["name"], "ringside-nats", "{name} comes from the Secret");
                (name, key["key"].as_str().unwrap_or_default())
            })
        })
        .collect()
}

#[test]
fn every_rendered_object_passes_kubernetes_validate_strict() {
    let Some(rendered) = rendered() else { return };
    let dir = tempfile::tempdir().unwrap();
    for r in rendered {
        assert!(!r.objects.is_empty(), "{} renders nothing", r.dir);
        let file = dir.path().join(format!("{}.yaml", r.dir.replace('/', "-")));
        std::fs::write(&file, &r.yaml).unwrap();
        let out = run(
            Command::new(tool("kubernetes-validate"))
                .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
                .arg(&file),
            "",
            Duration::from_secs(120),
        );
        assert!(
            out.success,
            "kubernetes-validate {}:\n{}",
            r.dir,
            out.said()
        );
    }
}

#[test]
fn yamllint_passes_on_deploy() {
    let out = run(
        Command::new(tool("yamllint")).args(["--strict", "-c", ".yamllint.yaml", "deploy"]),
        "",
        Duration::from_secs(60),
    );
    assert!(out.success, "yamllint deploy:\n{}", out.said());
}

#[test]
fn checkov_fails_no_check_but_the_documented_skips() {
    let config = workspace_root().join("deploy/checkov.yaml");
    let skips = yaml_documents(&std::fs::read_to_string(&config).unwrap()).remove(0)["skip-check"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let docs = std::fs::read_to_string(workspace_root().join("docs/kubernetes.md")).unwrap();
    for id in &skips {
        let row = format!("| `{}` |", id.as_str().unwrap());
        assert!(
            docs.contains(&row),
            "docs/kubernetes.md must explain the skip:\n{row}"
        );
    }
    let Some(rendered) = rendered() else { return };
    let dir = tempfile::tempdir().unwrap();
    for r in rendered {
        let file = dir.path().join(format!("{}.yaml", r.dir.replace('/', "-")));
        std::fs::write(file, &r.yaml).unwrap();
    }
    let out = run(
        Command::new(tool("checkov"))
            .arg("--config-file")
            .arg(&config)
            .arg("--directory")
            .arg(dir.path())
            .args(["--compact", "--quiet", "--skip-download"]),
        "",
        Duration::from_secs(300),
    );
    assert!(out.success, "checkov:\n{}", out.said());
}

#[test]
fn the_base_carries_equal_copies_of_its_sources() {
    let root = workspace_root();
    for (copy, source) in [
        ("deploy/base/nats/local.conf", "nats/local.conf"),
        ("deploy/base/nats/cluster.conf", "nats/cluster.conf"),
        ("deploy/base/nats/permissions.conf", "nats/permissions.conf"),
        (
            "deploy/base/prometheus/rules.yaml",
            "deploy/prometheus/rules.yaml",
        ),
    ] {
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert!(
            read(copy) == read(source),
            "{copy} must equal {source}: cp {source} {copy}"
        );
    }
    let adapter: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/base/adapter/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        adapter,
        shared::adapter_config(),
        "deploy/base/adapter/config.json must be shared::adapter_config():\n{:#}",
        shared::adapter_config()
    );
}

#[test]
fn every_command_names_a_service_the_binary_has() {
    let Some(workloads) = workloads() else { return };
    let mut seen = BTreeSet::new();
    for (dir, workload, spec) in workloads {
        for container in containers(spec).iter().filter(|c| is_ringside(c)) {
            let words = service_words(container);
            let out = run(
                Command::new(env!("CARGO_BIN_EXE_ringside"))
                    .args(&words)
                    .arg("--help"),
                "",
                Duration::from_secs(30),
            );
            assert!(
                out.success,
                "{dir} {}: `ringside {} --help` fails:\n{}",
                name(workload),
                words.join(" "),
                out.said()
            );
            seen.insert(words.join(" "));
        }
    }
    let expected = [
        "bridge",
        "collector",
        "node",
        "provision",
        "reducer",
        "watcher kubernetes",
    ];
    assert_eq!(seen, expected.into_iter().map(str::to_owned).collect());
}

#[test]
fn each_service_reads_only_its_settings_and_its_own_nats_user() {
    let Some(workloads) = workloads() else { return };
    for (dir, workload, spec) in workloads {
        let what = format!("{dir} {}", name(workload));
        for container in containers(spec) {
            if is_ringside(container) {
                let words = service_words(container);
                let schema = schema_of(&words);
                for key in env_names(container) {
                    let known = match schema {
                        Some(schema) => schema.knows(key),
                        None => {
                            ["RINGSIDE_NATS_URL", "RINGSIDE_NATS_PASSWORD_ADMIN"].contains(&key)
                        }
                    };
                    let ringside_key = key.starts_with("RINGSIDE_") || key == "HOSTNAME";
                    assert!(
                        !ringside_key || known,
                        "{what}: `{}` does not read {key}",
                        words.join(" ")
                    );
                }
                // Exactly one password: the one the service reads is its user's.
                let passwords = passwords(container);
                assert_eq!(
                    passwords.len(),
                    1,
                    "{what}: one NATS password, got {passwords:?}"
                );
                let (env, key) = passwords[0];
                let user = ServiceUser::ALL
                    .into_iter()
                    .find(|u| u.password_env() == env)
                    .unwrap_or_else(|| panic!("{what}: {env} is no user's password"));
                assert_eq!(
                    key,
                    user.name(),
                    "{what}: {env} from the Secret key of its user"
                );
                let expected = if schema.is_none() {
                    ServiceUser::Admin
                } else {
                    user
                };
                assert_eq!(user, expected, "{what}: provisioning is the admin's");
            } else if name(workload) == "nats" {
                // The server knows every user (nats/permissions.conf).
                let mut all: Vec<(String, String)> = ServiceUser::ALL
                    .iter()
                    .map(|u| (u.password_env(), u.name().to_owned()))
                    .collect();
                let mut got: Vec<(String, String)> = passwords(container)
                    .into_iter()
                    .map(|(e, k)| (e.to_owned(), k.to_owned()))
                    .collect();
                all.sort();
                got.sort();
                assert_eq!(got, all, "{what}: every user's password");
            }
        }
    }
}

#[test]
fn the_hpa_runs_the_local_autoscalers_configuration_on_the_collectors_series() {
    // What the adapter serves is a series the collector exports (the other shared
    // names are checked against the collector's in src/autoscale.rs).
    use ringside_collector::metrics;
    for rule in shared::ADAPTER_RULES {
        assert!(
            metrics::ALL.iter().any(|m| m.name == rule.series()),
            "the adapter serves {}, which the collector does not export",
            rule.series()
        );
    }
    let Some(objects) = objects() else { return };
    let mut hpas = 0;
    for (dir, hpa) in objects.filter(|(_, o)| o["kind"] == "HorizontalPodAutoscaler") {
        hpas += 1;
        let mut spec = hpa["spec"].clone();
        let target = spec.as_object_mut().unwrap().remove("scaleTargetRef");
        assert_eq!(
            target,
            Some(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "ringside-node"})),
            "{dir}"
        );
        let bound = |k: &str| {
            spec[k]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap()
        };
        let local = AutoscalerConfig::new(
            bound("minReplicas"),
            bound("maxReplicas"),
            shared::metrics(),
        );
        assert_eq!(
            spec,
            local.hpa_spec(),
            "{dir}: the HPA's spec must be hpa_spec():\n{:#}",
            local.hpa_spec()
        );
        // What the HPA asks for is what the adapter serves.
        assert_eq!(
            spec["metrics"][0]["external"]["metric"]["name"],
            shared::UNIQUE_CLIENT_IPS
        );
        assert_eq!(
            shared::UNIQUE_CLIENT_IPS_RULE.name_as,
            shared::UNIQUE_CLIENT_IPS
        );
    }
    assert_eq!(hpas, 2, "one HPA in each overlay");
}

#[test]
fn only_the_watcher_and_the_api_servers_mount_an_api_token() {
    let Some(workloads) = workloads() else { return };
    for (dir, workload, spec) in workloads {
        let namespace = workload["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let wants = match namespace {
            NAMESPACE => name(workload) == "ringside-watcher",
            "kube-system" => API_SERVERS.contains(&name(workload)),
            other => panic!("{dir} {}: unexpected namespace {other}", name(workload)),
        };
        assert_eq!(
            spec["automountServiceAccountToken"],
            json!(wants),
            "{dir} {}: automountServiceAccountToken must be {wants}, explicitly",
            name(workload)
        );
    }
    let Some(objects) = objects() else { return };
    for (dir, object) in objects {
        match object["kind"].as_str() {
            // A token only where a pod asks for one.
            Some("ServiceAccount") => {
                assert_eq!(
                    object["automountServiceAccountToken"],
                    false,
                    "{dir} {}",
                    name(object)
                )
            }
            Some("Role") if name(object) == "ringside-watcher" => assert_eq!(
                object["rules"],
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]),
                "{dir}: the watcher reads pods of its namespace, nothing else"
            ),
            _ => {}
        }
    }
}

#[test]
fn every_container_runs_locked_down() {
    let Some(workloads) = workloads() else { return };
    for (dir, workload, spec) in workloads {
        let what = format!("{dir} {}", name(workload));
        let pod = &spec["securityContext"];
        assert_eq!(pod["runAsNonRoot"], true, "{what}");
        assert_eq!(pod["runAsUser"], NONROOT, "{what}");
        assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{what}");
        for container in containers(spec) {
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{what}");
            for bound in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        container["resources"][bound][resource].is_string(),
                        "{what}: {bound}.{resource}"
                    );
                }
            }
            if is_ringside(container) && workload["kind"] != "Job" {
                assert_eq!(
                    container["livenessProbe"]["httpGet"]["path"], "/livez",
                    "{what}"
                );
                assert_eq!(
                    container["readinessProbe"]["httpGet"]["path"], "/readyz",
                    "{what}"
                );
            }
        }
    }
}

/// The node's client addresses reach it as the peer: its Service is headless, so a
/// client connects to a node pod itself (docs/kubernetes.md, "Many client addresses").
#[test]
fn the_node_is_reached_directly_and_announces_its_pod_ip() {
    let Some(objects) = objects() else { return };
    for (dir, object) in objects.filter(|(_, o)| name(o) == "ringside-node") {
        match object["kind"].as_str() {
            Some("Service") => assert_eq!(object["spec"]["clusterIP"], "None", "{dir}"),
            Some("Deployment") => {
                let container = &containers(&object["spec"]["template"]["spec"])[0];
                let env = container["env"].as_array().unwrap();
                let value = |k: &str| env.iter().find(|e| e["name"] == k);
                assert_eq!(
                    value("POD_IP").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
                    "status.podIP"
                );
                assert_eq!(
                    value("RINGSIDE_NODE_ADVERTISE").unwrap()["value"],
                    "$(POD_IP):8080"
                );
                assert_eq!(
                    value("RINGSIDE_NODE_ADDR").unwrap()["value"],
                    "0.0.0.0:8080"
                );
                // The watcher finds the member port by this name.
                assert_eq!(container["ports"][0]["name"], "ringside", "{dir}");
            }
            _ => {}
        }
    }
}
