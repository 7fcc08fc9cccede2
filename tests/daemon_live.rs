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

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use fake_api::{FakeApiServer, FaultAction, FaultRule};

fn stackd_run(config: &Path, data_dir: &Path, port: u16, kubeconfig: &Path) -> Command {
    common::stackd_run(
        env!("CARGO_BIN_EXE_stackd").as_ref(),
        config,
        data_dir,
        port,
        kubeconfig,
    )
}

async fn eventually<T>(what: &str, seconds: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config(url: &str, replicas_var: &str) -> String {
    format!(
        "repositories:\n  - name: apps\n    url: {url}\n    ref: main\n    paths: [\"stacks/*\"]\n    interval: 1h\n    variables:\n      REPLICAS: \"{replicas_var}\"\n"
    )
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

    let kubeconfig = common::write_kubeconfig(dir.path(), api.url());
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config_file = config_dir.join("stackd.yaml");
    std::fs::write(&config_file, config(&git.url("apps"), "2")).unwrap();

    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = stackd_run(&config_file, &dir.path().join("data"), port, &kubeconfig)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = common::Daemon(child);

    // The commit becomes a Stack, and the Stack becomes a Deployment.
    let deployment = eventually("the Deployment", 60, || {
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
    eventually("the stack on the status page", 30, || {
        get_text(&base)
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
    std::fs::write(&config_file, config(&git.url("apps"), "3")).unwrap();
    eventually("the new image and replicas", 60, || {
        let d = api.object("apps/v1", "Deployment", "web", "web")?;
        (d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
            && d["spec"]["replicas"] == 3)
            .then_some(())
    })
    .await;

    // An invalid edit is refused: the previous configuration stays, and the page says why.
    std::fs::write(
        &config_file,
        "repositories:\n  - name: apps\n    url: x\n    interval: soon\n",
    )
    .unwrap();
    let error = eventually("the refused configuration", 30, || {
        let body: serde_json::Value = get_json(&format!("{base}/api/v1/repositories"))?;
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

    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
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
    let kubeconfig = common::write_kubeconfig(dir.path(), api.url());
    let config_file = dir.path().join("stackd.yaml");
    std::fs::write(
        &config_file,
        format!(
            "repositories:\n  - name: apps\n    url: {}\n    paths: [\"stacks/*\"]\n    interval: 1h\n    prune: false\n",
            git.url("apps")
        ),
    )
    .unwrap();

    let port = common::free_port();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let child = stackd_run(&config_file, &dir.path().join("data"), port, &kubeconfig)
        // A file, not a pipe: nobody reads the retries' log lines, and a full
        // pipe would block the daemon.
        .stderr(std::fs::File::create(dir.path().join("stackd.log")).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = common::Daemon(child);

    // The repository is polled, its Stack applied and every other kind listed:
    // only the Deployment cache is missing, with its error.
    let expected = "not ready:\n- the Stack controller's caches have not had their initial list: Deployment (last error: list: 500 InternalError: injected fault)\n";
    eventually(
        "readiness waiting for the Deployment cache alone",
        60,
        || {
            let (status, body) = get_text(&readyz)?;
            (status == 503 && body == expected).then_some(())
        },
    )
    .await;
    // The repository's `prune: false` is on the Stack for the controller to read.
    let stack = eventually("the Stack", 30, || {
        api.object("stackd.dev/v1alpha1", "Stack", "web", "web")
    })
    .await;
    assert_eq!(stack["spec"]["prune"], false);
    // Without its caches the controller applies nothing: it cannot tell what drifted.
    assert!(api.object("apps/v1", "Deployment", "web", "web").is_none());

    api.clear_faults();
    let (_, body) = eventually("readiness once the list succeeds", 60, || {
        get_text(&readyz).filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(body, "ready\n");
    eventually("the Deployment", 60, || {
        api.object("apps/v1", "Deployment", "web", "web")
    })
    .await;

    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
}

/// A plain synchronous GET: the status code and the body.
fn get_text(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A plain synchronous GET of JSON, for use inside `eventually`'s closure.
fn get_json(url: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&get_text(url)?.1).ok()
}
