//! The real `stackd run` binary against a Git repository over smart HTTP, the
//! in-process API server (reached through a kubeconfig, as kube finds a real
//! cluster) and a configuration file: a commit becomes a Stack and its objects,
//! a configuration edit is reloaded, an invalid edit is refused and shown, and
//! SIGTERM ends the process cleanly; `/readyz` waits for the controller's caches.
//!
//! These need the in-process API server (a kubeconfig pointing at it, and fault
//! injection), so `KUBECONFIG_E2E` does not apply to them.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;

use axum::http::Method;
use common::{Stackd, apps_config, eventually};
use fake_api::{FakeApiServer, FaultAction, FaultRule};

fn config(url: &str, replicas_var: &str) -> String {
    let settings = format!(
        "    ref: main\n    interval: 1h\n    variables:\n      REPLICAS: \"{replicas_var}\"\n"
    );
    apps_config(url, &settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_become_objects_and_the_configuration_reloads() {
    let (api, _client) = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = git_support::Upstream::new(dir.path(), "apps");
    upstream.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx:1.27\n    deploy:\n      replicas: ${REPLICAS}\n",
    );
    upstream.commit("web");
    let git = git_support::HttpServer::start(dir.path(), None).await;

    let kubeconfig = api.write_kubeconfig(dir.path());
    let stackd = Stackd::new(dir.path(), kubeconfig, &config(&git.url("apps"), "2"));
    let config_file = &stackd.config;
    let base = stackd.base();
    let mut daemon = stackd.start("stackd.log");

    // The commit becomes a Stack, and the Stack becomes a Deployment.
    let deployment = eventually("the Deployment", 60, async || {
        api.object("apps/v1", "Deployment", "web", "web")
    })
    .await;
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    let stack = api
        .object("stackd.dev/v1alpha1", "Stack", "web", "web")
        .expect("the Stack");
    assert_eq!(stack["spec"]["source"]["revision"], upstream.head());

    // The status page shows it once the controller has finished the stack (the
    // Deployment is written before the stack's status).
    let client = reqwest::Client::new();
    eventually("the stack on the status page", 30, async || {
        stackd
            .get("/")
            .map(|(_, page)| page)
            .filter(|page| page.contains(">web/web</a>"))
    })
    .await;

    // A new commit, triggered through the API's webhook-free path: a sync poll.
    upstream.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx:1.28\n    deploy:\n      replicas: ${REPLICAS}\n",
    );
    upstream.commit("bump");
    // Reloading the configuration with a new variable restarts the source, which polls at once.
    std::fs::write(config_file, config(&git.url("apps"), "3")).unwrap();
    eventually("the new image and replicas", 60, async || {
        let d = api.object("apps/v1", "Deployment", "web", "web")?;
        (d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
            && d["spec"]["replicas"] == 3)
            .then_some(())
    })
    .await;

    // An invalid edit is refused: the previous configuration stays, and the page says why.
    std::fs::write(
        config_file,
        "repositories:\n  - name: apps\n    url: x\n    interval: soon\n",
    )
    .unwrap();
    let error = eventually("the refused configuration", 30, async || {
        let body: serde_json::Value =
            serde_json::from_str(&stackd.get("/api/v1/repositories")?.1).ok()?;
        body["configError"].as_str().map(str::to_string)
    })
    .await;
    assert!(error.contains("repositories[0].interval"), "{error}");
    let repositories: serde_json::Value = client
        .get(format!("{base}/api/v1/repositories"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(repositories["repositories"][0]["url"], git.url("apps"));

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_controllers_caches_and_says_which() {
    let (api, _client) = FakeApiServer::start().await;
    // The Deployment reflector's initial list fails until the fault is cleared.
    api.inject(FaultRule::new(
        Some(Method::GET),
        "/apis/apps/v1/deployments",
        FaultAction::Fail(500),
    ));
    let dir = tempfile::tempdir().unwrap();
    let upstream = git_support::Upstream::new(dir.path(), "apps");
    upstream.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx:1.27\n",
    );
    upstream.commit("web");
    let git = git_support::HttpServer::start(dir.path(), None).await;
    let config = apps_config(&git.url("apps"), "    interval: 1h\n    prune: false\n");
    let stackd = Stackd::new(dir.path(), api.write_kubeconfig(dir.path()), &config);
    let mut daemon = stackd.start("stackd.log");

    // The repository is polled, its Stack applied and every other kind listed:
    // only the Deployment cache is missing, with its error.
    let expected = "not ready:\n- the Stack controller's caches have not had their initial list: Deployment (last error: list: 500 InternalError: injected fault)\n";
    eventually(
        "readiness waiting for the Deployment cache alone",
        60,
        async || {
            let (status, body) = stackd.get("/readyz")?;
            (status == 503 && body == expected).then_some(())
        },
    )
    .await;
    // The repository's `prune: false` is on the Stack for the controller to read.
    let stack = eventually("the Stack", 30, async || {
        api.object("stackd.dev/v1alpha1", "Stack", "web", "web")
    })
    .await;
    assert_eq!(stack["spec"]["prune"], false);
    // Without its caches the controller applies nothing: it cannot tell what drifted.
    assert!(api.object("apps/v1", "Deployment", "web", "web").is_none());

    api.clear_faults();
    let (_, body) = eventually("readiness once the list succeeds", 60, async || {
        stackd.get("/readyz").filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(body, "ready\n");
    eventually("the Deployment", 60, async || {
        api.object("apps/v1", "Deployment", "web", "web")
    })
    .await;

    daemon.stop().await;
}
