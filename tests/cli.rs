//! The `stackd` binary as a user runs it.

use std::path::Path;
use std::process::Command;

fn stackd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stackd"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the stackd binary runs")
}

#[test]
fn crd_manifest_matches_the_binary() {
    let output = stackd(&["crd"]);
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/crd.yaml"))
            .unwrap();
    assert_eq!(
        printed, committed,
        "manifests/crd.yaml is stale: run `cargo run -- crd > manifests/crd.yaml`"
    );
    assert!(printed.contains("name: stacks.stackd.dev"));
    assert!(
        printed.contains("subresources:\n      status: {}"),
        "status subresource: {printed}"
    );
}

#[test]
fn render_missing_path_fails_with_the_path_in_the_message() {
    let output = stackd(&["render", "examples/repo/does-not-exist"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: examples/repo/does-not-exist: "),
        "{stderr}"
    );
}

#[test]
fn render_rejects_a_malformed_var() {
    let output = stackd(&["render", "examples/repo/web", "--var", "NOEQUALS"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected KEY=VALUE"));
}

#[test]
fn version_prints_the_crate_version() {
    let output = stackd(&["version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("stackd {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn render_refuses_name_kube_system_and_a_privileged_host_pid_service() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    let compose = dir.path().join("compose.yaml");
    std::fs::write(
        &compose,
        "name: kube-system\nservices:\n  root:\n    image: alpine\n    privileged: true\n    pid: host\n",
    )
    .unwrap();
    let path = compose.to_str().unwrap();

    let output = stackd(&["render", path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{path}: namespace \"kube-system\" is not allowed")),
        "{stderr}"
    );

    // Listed by exact name, the namespace passes; the pod is still refused by
    // Pod Security `baseline`, naming the service and the field.
    let output = stackd(&["render", path, "--allow-namespace", "kube-system"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("service \"root\": pid: host: refused by Pod Security level \"baseline\""),
        "{stderr}"
    );

    let output = stackd(&[
        "render",
        path,
        "--namespace",
        "ops",
        "--pod-security",
        "privileged",
    ]);
    assert!(output.status.success(), "{output:?}");
}
