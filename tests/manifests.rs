//! The installation manifests: valid against the Kubernetes schemas, listed in the
//! kustomization, and RBAC that covers every kind the renderer can emit.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use stackd::render::object::RENDERED_KINDS;

fn manifest_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(common::repo_dir().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_manifest_validates() {
    let Some(validator) = common::kubernetes_validate() else {
        return;
    };
    let output = Command::new(validator)
        .args(["--kubernetes-version", "1.33.0", "--strict", "--quiet"])
        .args(manifest_files())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    // Only the two non-core kinds may lack a schema.
    for line in report.lines().filter(|l| l.starts_with("WARN")) {
        assert!(
            line.contains("kind Kustomization") || line.contains("kind ServiceMonitor"),
            "unexpected: {line}"
        );
    }
}

#[test]
fn kustomization_lists_every_manifest_but_the_optional_service_monitor() {
    let kustomization = &documents(&common::repo_dir().join("manifests/kustomization.yaml"))[0];
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = manifest_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "kustomization.yaml" && name != "servicemonitor.yaml")
        .collect();
    assert_eq!(listed, present);
}

/// The API resource (group, plural) behind each rendered kind.
fn resource_of(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Namespace" => ("", "namespaces"),
        "ConfigMap" => ("", "configmaps"),
        "Secret" => ("", "secrets"),
        "Service" => ("", "services"),
        "Deployment" => ("apps", "deployments"),
        "StatefulSet" => ("apps", "statefulsets"),
        "DaemonSet" => ("apps", "daemonsets"),
        "Job" => ("batch", "jobs"),
        "Ingress" => ("networking.k8s.io", "ingresses"),
        "NetworkPolicy" => ("networking.k8s.io", "networkpolicies"),
        other => panic!(
            "the RBAC test does not know kind {other}: add it here and to manifests/clusterrole.yaml"
        ),
    }
}

#[test]
fn cluster_role_covers_every_rendered_kind_and_nothing_more() {
    let role = &documents(&common::repo_dir().join("manifests/clusterrole.yaml"))[0];
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        let list = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                assert_ne!(resource, "*", "wildcard resources are not least privilege");
                let verbs = granted.entry((group.clone(), resource)).or_default();
                verbs.extend(list("verbs"));
            }
        }
    }
    assert!(granted.values().all(|v| !v.contains("*")), "wildcard verbs");

    let apply_and_prune = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    for (_, kind) in RENDERED_KINDS {
        let (group, plural) = resource_of(kind);
        let verbs = granted
            .get(&(group.to_string(), plural.to_string()))
            .unwrap_or_else(|| panic!("the ClusterRole does not cover {kind}"));
        // Namespaces are created but never deleted: deleting one would take user data with it.
        let needed: &[&str] = if *kind == "Namespace" {
            &apply_and_prune[..6]
        } else {
            &apply_and_prune
        };
        for verb in needed {
            assert!(verbs.contains(*verb), "{kind}: missing verb {verb}");
        }
    }
    assert!(
        !granted[&("".to_string(), "namespaces".to_string())].contains("delete"),
        "stackd must not delete namespaces"
    );
    let claims = &granted[&("".to_string(), "persistentvolumeclaims".to_string())];
    assert!(!claims.contains("delete"), "PVCs are never pruned");
    let stacks = &granted[&("stackd.dev".to_string(), "stacks/status".to_string())];
    assert!(stacks.contains("patch"));

    // Impersonation: ServiceAccounts only, and nothing else may be done to them.
    for ((group, resource), verbs) in &granted {
        if verbs.contains("impersonate") {
            assert_eq!(
                (group.as_str(), resource.as_str()),
                ("", "serviceaccounts"),
                "impersonate is granted on {group}/{resource}"
            );
        }
    }
    // Events: written on Stacks, and read only through one watch (the page's
    // object Events): never get, update or delete.
    let events = &granted[&("events.k8s.io".to_string(), "events".to_string())];
    assert_eq!(
        events.iter().collect::<Vec<_>>(),
        ["create", "list", "patch", "watch"]
    );
    let core_events = &granted[&("".to_string(), "events".to_string())];
    assert_eq!(core_events.iter().collect::<Vec<_>>(), ["create", "patch"]);
    let accounts = &granted[&("".to_string(), "serviceaccounts".to_string())];
    assert_eq!(accounts.iter().collect::<Vec<_>>(), ["impersonate"]);

    // Nothing more: every granted resource is a rendered kind or one the daemon
    // needs for itself.
    let mut expected: BTreeSet<(String, String)> = RENDERED_KINDS
        .iter()
        .map(|(_, kind)| resource_of(kind))
        .map(|(group, plural)| (group.to_string(), plural.to_string()))
        .collect();
    for (group, resource) in [
        ("stackd.dev", "stacks"),
        ("stackd.dev", "stacks/status"),
        ("", "persistentvolumeclaims"),
        ("", "events"),
        ("events.k8s.io", "events"),
        ("", "serviceaccounts"),
    ] {
        expected.insert((group.to_string(), resource.to_string()));
    }
    let granted_resources: BTreeSet<(String, String)> = granted.keys().cloned().collect();
    assert_eq!(granted_resources, expected);
}

/// `manifests/sharded/`: the base with three replicas and `--shards` in place
/// of `--leader-election`. No kustomize runs here, so the test applies the
/// overlay's JSON patch itself (replace and test, the two ops it uses), then
/// validates the result and checks that `stackd run` accepts its arguments.
#[test]
fn the_sharded_overlay_runs_three_replicas_with_shards() {
    let root = common::repo_dir().join("manifests");
    let overlay = &documents(&root.join("sharded/kustomization.yaml"))[0];
    assert_eq!(overlay["resources"], serde_json::json!([".."]));
    let patch = &overlay["patches"][0];
    assert_eq!(patch["target"]["kind"], "Deployment");
    let ops: Vec<serde_json::Value> =
        serde_saphyr::from_str(patch["patch"].as_str().unwrap()).unwrap();
    let mut deployment = documents(&root.join("deployment.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    for op in &ops {
        let path = op["path"].as_str().unwrap();
        let target = deployment
            .pointer_mut(path)
            .unwrap_or_else(|| panic!("no {path}"));
        match op["op"].as_str().unwrap() {
            "test" => assert_eq!(*target, op["value"], "{path}"),
            "replace" => *target = op["value"].clone(),
            other => panic!("unexpected op {other}"),
        }
    }
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(args.contains(&"--shards=6".to_string()), "{args:?}");
    assert!(!args.contains(&"--leader-election".to_string()), "{args:?}");

    // The arguments parse (`--help` after them stops before anything runs).
    let output = Command::new(env!("CARGO_BIN_EXE_stackd"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("--shards"));

    if let Some(validator) = common::kubernetes_validate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deployment.yaml");
        std::fs::write(&file, serde_json::to_string(&deployment).unwrap()).unwrap();
        let output = Command::new(validator)
            .args(["--kubernetes-version", "1.33.0", "--strict", "--quiet"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}
