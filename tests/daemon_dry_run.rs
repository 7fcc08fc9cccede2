//! The real `stackd run --dry-run` binary against a real Git repository: stacks
//! appear on the API and page, a pushed commit changes the plan, and SIGTERM
//! ends the process cleanly.

mod common;
#[path = "git_support/mod.rs"]
mod git_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::eventually;

async fn stacks(client: &reqwest::Client, base: &str) -> Option<serde_json::Value> {
    let response = client
        .get(format!("{base}/api/v1/stacks"))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

#[tokio::test]
async fn dry_run_follows_commits_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = git_support::Upstream::new(dir.path(), "apps");
    upstream.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx:1.27\n    ports: [\"8080:80\"]\n",
    );
    upstream.write(
        "stacks/cache/compose.yaml",
        "services:\n  redis:\n    image: redis:7\n",
    );
    upstream.commit("two stacks");

    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_stackd"))
        .args([
            "run",
            "--dry-run",
            "--repo",
            &upstream.file_url(),
            "--path",
            "stacks/*",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = common::Daemon(child);
    let client = reqwest::Client::new();

    let listed = eventually("both stacks listed", 30, async || {
        let body = stacks(&client, &base).await?;
        let names: Vec<String> = body["stacks"]
            .as_array()?
            .iter()
            .map(|s| s["name"].as_str().unwrap_or("").to_string())
            .collect();
        (names.len() == 2).then_some(body)
    })
    .await;
    let web = listed["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap();
    assert_eq!(web["phase"], "ReconciliationPending");
    // No controller in a dry run: ready as soon as the repository is polled.
    let ready = eventually("readiness", 30, async || {
        let response = client.get(format!("{base}/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(response.text().await.ok()?)
    })
    .await;
    assert_eq!(ready, "ready\n");
    assert_eq!(web["lastPlan"]["dryRun"], true);
    assert_eq!(
        web["lastPlan"]["created"],
        // In apply order.
        serde_json::json!([
            "Namespace/web",
            "Service/web",
            "Service/web-published",
            "NetworkPolicy/web",
            "Deployment/web"
        ])
    );
    let page = client
        .get(&base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(">web/web</a>") && page.contains(">cache/cache</a>"),
        "{page}"
    );

    // A new commit: the local watch or the next trigger picks it up.
    upstream.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx:1.28\n    ports: [\"8080:80\"]\n",
    );
    let commit = upstream.commit("bump nginx");
    client
        .post(format!("{base}/api/v1/repositories/apps/sync"))
        .send()
        .await
        .unwrap();
    let updated = eventually("the pushed commit's plan", 30, async || {
        let body = stacks(&client, &base).await?;
        let web = body["stacks"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "web")?
            .clone();
        (web["revision"] == commit.as_str()).then_some(web)
    })
    .await;
    assert_eq!(
        updated["lastPlan"]["updated"],
        serde_json::json!(["Deployment/web"])
    );
    assert_eq!(updated["lastPlan"]["created"], serde_json::json!([]));

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"stackd_reconcile_total{namespace="web",result="success",stack="web"} 2"#),
        "{metrics}"
    );

    // SIGTERM: a clean exit, well within Kubernetes' grace period.
    let status = daemon.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(daemon.0.stderr.as_mut().unwrap(), &mut logs).unwrap();
    let last = logs.lines().last().unwrap_or_default();
    let last: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|_| panic!("JSON logs: {logs}"));
    assert_eq!(last["message"], "shutting down");
}
