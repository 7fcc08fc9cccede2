//! The `stackd` binary as a user runs it.

mod common;

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

/// `stackd run` with `kubeconfig` and `env`, wrapped in `wrap` (e.g. `script` for
/// a terminal), ended by `timeout` after `seconds`; its combined output.
fn run_daemon_for(
    dir: &Path,
    kubeconfig: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    tty: bool,
) -> std::process::Output {
    let config = dir.join("stackd.yaml");
    std::fs::write(
        &config,
        "repositories:\n  - name: apps\n    url: file:///nonexistent/apps\n    interval: 1h\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut words = vec![
        "timeout".to_string(),
        "4".to_string(),
        env!("CARGO_BIN_EXE_stackd").to_string(),
        "run".to_string(),
        "--config".to_string(),
        config.display().to_string(),
        "--data-dir".to_string(),
        dir.join("data").display().to_string(),
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
    ];
    words.extend(extra.iter().map(|s| s.to_string()));
    let mut command = if tty {
        // `script` gives the daemon a terminal; its output comes back on stdout.
        let mut c = Command::new("script");
        c.args(["-qec", &words.join(" "), "/dev/null"]);
        c
    } else {
        let mut c = Command::new(&words[0]);
        c.args(&words[1..]);
        c
    };
    command
        .env("KUBECONFIG", kubeconfig)
        .env_remove("NO_COLOR")
        .env_remove("POD_NAMESPACE")
        .envs(env.iter().copied());
    command.output().expect("stackd runs")
}

fn kubeconfig_for(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\nusers: [{{name: u, user: {{}}}}]\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn with_no_cluster_the_error_names_the_server_and_the_cause_and_suggests_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let output = run_daemon_for(
        dir.path(),
        &kubeconfig_for(dir.path(), &server),
        &[],
        &[],
        false,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: no Kubernetes cluster is reachable at {server}: connection refused; run with --dry-run"
        )),
        "{stderr}"
    );
}

#[test]
fn logs_carry_colour_codes_only_at_a_terminal_without_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for(dir.path(), "http://127.0.0.1:1");
    let logs = |env: &[(&str, &str)], tty: bool| {
        let output = run_daemon_for(dir.path(), &kubeconfig, &["--dry-run"], env, tty);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains("serving the status page"), "{text}");
        text
    };
    assert!(!logs(&[], false).contains('\x1b'));
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: the terminal half needs `script` (util-linux)");
        return;
    }
    assert!(logs(&[], true).contains("\x1b["));
    assert!(!logs(&[("NO_COLOR", "1")], true).contains('\x1b'));
}

/// `stackd render` names a stack after its directory as Docker Compose names the
/// project (`my_appv21`), then `_` → `-` for Kubernetes.
#[test]
fn a_stack_is_named_after_its_directory_as_docker_compose_does() {
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("My_App@v2.1");
    std::fs::create_dir(&stack).unwrap();
    std::fs::write(
        stack.join("compose.yaml"),
        "services:\n  web:\n    image: nginx\n",
    )
    .unwrap();
    let output = stackd(&["render", &stack.display().to_string()]);
    assert!(output.status.success(), "{output:?}");
    let yaml = String::from_utf8(output.stdout).unwrap();
    assert!(
        yaml.contains("  name: my-appv21\n") && yaml.contains("  namespace: my-appv21\n"),
        "{yaml}"
    );
    if let Some(compose) = common::docker_compose() {
        let config = Command::new(compose)
            .args(["config", "--format", "json"])
            .current_dir(&stack)
            .output()
            .unwrap();
        let model: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
        assert_eq!(model["name"], "my_appv21");
    }
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

#[test]
fn render_emits_network_policies_unless_turned_off() {
    let on = stackd(&["render", "examples/repo/wordpress"]);
    assert!(on.status.success(), "{on:?}");
    let yaml = String::from_utf8(on.stdout).unwrap();
    assert!(yaml.contains("kind: NetworkPolicy\n"), "{yaml}");
    let off = stackd(&[
        "render",
        "examples/repo/wordpress",
        "--network-policies=false",
    ]);
    assert!(off.status.success(), "{off:?}");
    let yaml = String::from_utf8(off.stdout).unwrap();
    assert!(
        !yaml.contains("NetworkPolicy") && !yaml.contains("stackd.dev/network-"),
        "{yaml}"
    );
}
