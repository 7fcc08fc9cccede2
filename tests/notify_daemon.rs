//! The real `stackd run` binary posts commit statuses and notifications for a
//! stack's commits (issue 17): pending then success when it becomes Ready, a
//! failure for a commit that does not load, recovery after the fix; one status
//! per (commit, state), and no notification for a state that did not change.
//!
//! Needs the in-process API server (the test makes the Deployment ready through
//! its status), so `KUBECONFIG_E2E` does not apply.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;
#[path = "workload_status/mod.rs"]
mod workload_status;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use common::{Stackd, eventually};
use fake_api::FakeApiServer;
use serde_json::Value;
use workload_status::deployment_ready;

#[derive(Clone, Debug)]
struct Received {
    path: String,
    authorization: String,
    body: Value,
}

async fn mock() -> (String, Arc<Mutex<Vec<Received>>>) {
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let recorded = received.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: String| {
        let recorded = recorded.clone();
        async move {
            recorded.lock().unwrap().push(Received {
                path: uri.path().to_string(),
                authorization: headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body: serde_json::from_str(&body).unwrap_or(Value::Null),
            });
            axum::http::StatusCode::CREATED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// (sha, state) of every status posted, in order.
fn statuses(received: &Arc<Mutex<Vec<Received>>>) -> Vec<(String, String)> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.starts_with("/repos/"))
        .map(|r| {
            (
                r.path.rsplit('/').next().unwrap().to_string(),
                r.body["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Events of every notification, in order.
fn events(received: &Arc<Mutex<Vec<Received>>>) -> Vec<(String, String)> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/hook")
        .map(|r| {
            (
                r.body["revision"].as_str().unwrap_or("").to_string(),
                r.body["event"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

const WEB: &str = "services:\n  web:\n    image: nginx:1.27\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_s_commits_get_statuses_and_notifications() {
    let (api, client) = FakeApiServer::start().await;
    let (forge, received) = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = git_support::Upstream::new(dir.path(), "apps");
    upstream.write("stacks/web/compose.yaml", WEB);
    upstream.commit("web");
    let first = upstream.head();
    let git = git_support::HttpServer::start(dir.path(), None).await;

    let token = git_support::secret_file(dir.path(), "token", "ghp_daemon\n");
    let hook = git_support::secret_file(dir.path(), "hook", &format!("{forge}/hook\n"));
    let api_token = git_support::secret_file(dir.path(), "api-token", "sync-token\n");
    let stackd = Stackd::new(
        dir.path(),
        api.write_kubeconfig(dir.path()),
        &format!(
            "apiTokenFile: {api_token}\nexternalUrl: https://stackd.example.com\nnotifications:\n  - {{name: ops, type: webhook, urlFile: {hook}}}\nrepositories:\n  - name: apps\n    url: {url}\n    paths: [\"stacks/*\"]\n    interval: 1h\n    commitStatus: {{provider: github, tokenFile: {token}, apiUrl: \"{forge}\", repository: acme/apps}}\n",
            hook = hook.display(),
            api_token = api_token.display(),
            token = token.display(),
            url = git.url("apps"),
        ),
    );
    let mut daemon = stackd.start("stackd.log");

    // Applied, waiting for health: pending. Then Ready: success, and `applied`.
    eventually("a pending status", 60, async || {
        statuses(&received)
            .contains(&(first.clone(), "pending".into()))
            .then_some(())
    })
    .await;
    deployment_ready(&client, "web", "web").await;
    eventually("a success status", 30, async || {
        statuses(&received)
            .contains(&(first.clone(), "success".into()))
            .then_some(())
    })
    .await;
    {
        let received = received.lock().unwrap();
        let status = received
            .iter()
            .find(|r| r.path.starts_with("/repos/"))
            .unwrap();
        assert_eq!(status.path, format!("/repos/acme/apps/statuses/{first}"));
        assert_eq!(status.authorization, "Bearer ghp_daemon");
        assert_eq!(status.body["context"], "stackd/web/web");
        assert_eq!(
            status.body["target_url"],
            "https://stackd.example.com/stacks/web/web"
        );
    }
    eventually("the applied notification", 30, async || {
        events(&received)
            .contains(&(first.clone(), "applied".into()))
            .then_some(())
    })
    .await;

    // A commit that does not load: failure, with a one-line description.
    upstream.write("stacks/web/compose.yaml", "services:\n  web: [\n");
    upstream.commit("broken");
    let broken = upstream.head();
    assert_eq!(stackd.sync_now("sync-token"), Some(202));
    let failure = eventually("a failure status", 60, async || {
        let received = received.lock().unwrap();
        received
            .iter()
            .find(|r| r.path.ends_with(&broken) && r.body["state"] == "failure")
            .cloned()
    })
    .await;
    let description = failure.body["description"].as_str().unwrap();
    assert!(
        description.starts_with("LoadFailed: stacks/web/compose.yaml:"),
        "{description}"
    );
    assert!(description.chars().count() <= 140 && !description.contains('\n'));
    eventually("the failure notification", 30, async || {
        events(&received)
            .contains(&(broken.clone(), "failure".into()))
            .then_some(())
    })
    .await;

    // The fix: pending, Ready, success, and `recovery`.
    upstream.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx:1.28\n",
    );
    upstream.commit("fixed");
    let fixed = upstream.head();
    assert_eq!(stackd.sync_now("sync-token"), Some(202));
    eventually("a pending status for the fix", 60, async || {
        statuses(&received)
            .contains(&(fixed.clone(), "pending".into()))
            .then_some(())
    })
    .await;
    deployment_ready(&client, "web", "web").await;
    eventually("recovery", 30, async || {
        (statuses(&received).contains(&(fixed.clone(), "success".into()))
            && events(&received).contains(&(fixed.clone(), "recovery".into())))
        .then_some(())
    })
    .await;

    // Settled: each (commit, state) posted once, each change notified once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let posted = statuses(&received);
    let mut unique = posted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        posted.len(),
        unique.len(),
        "a status posted twice: {posted:?}"
    );
    let told = events(&received);
    assert_eq!(
        told,
        vec![
            (first.clone(), "applied".to_string()),
            (broken, "failure".to_string()),
            (fixed, "recovery".to_string()),
        ],
        "{told:?}"
    );
    daemon.stop().await;
}
