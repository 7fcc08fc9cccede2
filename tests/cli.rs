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
