//! `stackd diff` against the API server (reached through a kubeconfig): creates,
//! no changes, an update with the field's old and new values (text and `-o json`), a prune, and `kubectl diff` exit codes.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;

use std::process::Command;

use fake_api::FakeApiServer;

/// `stackd diff` with extra arguments in examples/repo/shop, on a blocking
/// thread: the exit code, and stdout then stderr.
async fn diff(kubeconfig: &std::path::Path, extra: &'static [&'static str]) -> (i32, String) {
    let kubeconfig = kubeconfig.to_path_buf();
    let run = move || diff_with(&kubeconfig, extra);
    tokio::task::spawn_blocking(run).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_creates_updates_and_deletes_with_kubectl_exit_codes() {
    let (api, client) = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());

    let (code, text) = diff(&kubeconfig, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("+ create Deployment shop/app"), "{text}");
    assert!(text.contains("+ create Namespace shop"), "{text}");
    assert!(text.contains("11 of 11 objects would change"), "{text}");

    // The cluster now holds exactly what stackd renders.
    let rendered = common::render_example(&common::repo_dir().join("examples/repo/shop")).unwrap();
    for object in &rendered.objects {
        api.seed(&object.to_json());
    }
    let (code, text) = diff(&kubeconfig, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("0 of 11 objects would change"), "{text}");

    // Someone edits the image by hand, and an old labelled Service is left over.
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client, "shop");
    let mut app = deployments.get("app").await.unwrap();
    let pod = app.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers[0].image = Some("traefik/whoami:edited".into());
    deployments
        .replace("app", &kube::api::PostParams::default(), &app)
        .await
        .unwrap();
    api.seed(&serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "old", "namespace": "shop", "labels": {"stackd.dev/stack": "shop"}},
        "spec": {"ports": [{"port": 80}]}
    }));
    let (code, text) = diff(&kubeconfig, &[]).await;
    assert_eq!(code, 1, "{text}");
    // A unified diff of the field with its old and new values, no colour off a terminal.
    assert!(
        text.contains(
            "~ update Deployment shop/app (1 field)\n\
             --- live Deployment shop/app\n\
             +++ stackd Deployment shop/app\n\
             @@ /spec/template/spec/containers/0/image @@\n\
             -\"traefik/whoami:edited\"\n\
             +\"traefik/whoami:v1.10\"\n"
        ),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "{text}");
    assert!(text.contains("- delete Service shop/old"), "{text}");
    assert!(text.contains("2 of 12 objects would change"), "{text}");

    // The same for CI: a list of objects with actions and changed paths.
    let (code, json) = diff(&kubeconfig, &["-o", "json"]).await;
    assert_eq!(code, 1, "{json}");
    let objects: serde_json::Value = serde_json::from_str(&json).unwrap();
    let objects = objects.as_array().unwrap();
    assert_eq!(objects.len(), 12, "{json}");
    let app = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["name"] == "app")
        .unwrap();
    assert_eq!(app["action"], "update");
    assert_eq!(app["namespace"], "shop");
    assert_eq!(
        app["changes"],
        serde_json::json!([{"path": "/spec/template/spec/containers/0/image",
                            "old": "traefik/whoami:edited", "new": "traefik/whoami:v1.10"}])
    );
    let old = objects.iter().find(|o| o["name"] == "old").unwrap();
    assert_eq!(old["action"], "delete");
    assert_eq!(
        objects
            .iter()
            .filter(|o| o["action"] == "unchanged")
            .count(),
        10
    );
}

/// `stackd diff` with extra arguments, in examples/repo/shop.
fn diff_with(kubeconfig: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_stackd"))
        .args(["diff", "examples/repo/shop"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    (
        output.status.code().unwrap_or(-1),
        stdout + &String::from_utf8_lossy(&output.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_checks_the_namespace_rule_against_the_cluster() {
    let (api, _client) = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    // Someone else's namespace: stackd did not create it.
    api.seed(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "legacy", "labels": {"team": "ops"}}}));

    let (code, text) = diff(&kubeconfig, &["--namespace", "legacy"]).await;
    // An error, not a difference: exit codes above 1, as `kubectl diff`.
    assert!(code > 1, "{text}");
    assert!(
        text.contains(
            "namespace \"legacy\" is not allowed: it exists and stackd did not create it"
        ),
        "{text}"
    );
    assert!(text.contains("examples/repo/shop"), "{text}");

    let (code, text) = diff(
        &kubeconfig,
        &["--namespace", "legacy", "--allow-namespace", "leg*"],
    )
    .await;
    assert_eq!(code, 1, "{text}");
    // Allowed, but not stackd's: its Namespace object is left alone.
    assert!(text.contains("10 of 10 objects would change"), "{text}");
    assert!(!text.contains("Namespace legacy"), "{text}");
}
