//! A stack's page and `/api/v1/stacks/{ns}/{name}` from the real `stackd run`:
//! each revision's commit subject in the history, as Git wrote it, and the
//! Events of the stack's objects beside the Stack's own, a hostile message
//! escaped. Runs against the in-process API server, or the cluster named by
//! `KUBECONFIG_E2E`.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;

use std::time::Duration;

use common::eventually;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use stackd::crd::Stack;

const FIRST: &str = "services:\n  web:\n    image: nginx:1.27\n";
const SECOND: &str = "services:\n  web:\n    image: nginx:1.28\n";
const HOSTILE: &str = "<script>alert('web')</script> Back-off pulling image";

/// A plain synchronous GET's body.
fn get_body(url: &str) -> Option<String> {
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
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Asks for a poll now, with the API token.
fn trigger_sync(base: &str, token: &str) {
    use std::io::{Read, Write};
    let host = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "POST /api/v1/repositories/apps/sync HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
}

async fn applied(api: &Api<Stack>, name: &str, revision: &str) {
    eventually("the revision applied", 90, async || {
        let status = api.get_opt(name).await.ok()??.status?;
        (status.last_applied_revision.as_deref() == Some(revision)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_each_commits_subject_and_the_events_of_the_stacks_objects() {
    let cluster = fake_api::test_client().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = common::daemon_kubeconfig(dir.path(), cluster.fake.as_ref().map(|f| f.url()));
    // Unique: on a real cluster earlier runs' namespaces may still be there.
    let name = format!("page-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let ns = name.clone();

    let upstream = git_support::Upstream::new(dir.path(), "apps");
    upstream.write(&format!("stacks/{name}/compose.yaml"), FIRST);
    let first = upstream.commit("Add the shop");
    let git = git_support::HttpServer::start(dir.path(), None).await;
    let token = "page-test-token";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let config = dir.path().join("stackd.yaml");
    std::fs::write(
        &config,
        format!(
            "apiTokenFile: {}\nrepositories:\n  - name: apps\n    url: {}\n    paths: [\"stacks/*\"]\n    interval: 1h\n",
            token_file.display(),
            git.url("apps")
        ),
    )
    .unwrap();

    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let binary = env!("CARGO_BIN_EXE_stackd");
    let start = |log: &str| {
        let child = common::stackd_run(
            binary.as_ref(),
            &config,
            &dir.path().join("data"),
            port,
            &kubeconfig,
        )
        .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
        .spawn()
        .unwrap();
        common::Daemon(child)
    };
    let mut daemon = start("first.log");

    let stacks: Api<Stack> = Api::namespaced(cluster.client.clone(), &ns);
    applied(&stacks, &name, &first).await;
    upstream.write(&format!("stacks/{name}/compose.yaml"), SECOND);
    let second = upstream.commit("Bump nginx to 1.28");
    trigger_sync(&base, token);
    applied(&stacks, &name, &second).await;

    // status.history: each revision with its own commit's subject.
    let status = stacks.get(&name).await.unwrap().status.unwrap();
    let history: Vec<_> = status
        .history
        .iter()
        .map(|e| (e.revision.as_str(), e.subject.as_deref()))
        .collect();
    assert_eq!(
        history,
        [
            (first.as_str(), Some("Add the shop")),
            (second.as_str(), Some("Bump nginx to 1.28"))
        ]
    );

    // An Event about the stack's Deployment, as the cluster's controllers write them.
    let now = k8s_openapi::jiff::Timestamp::now();
    let event: Event = serde_json::from_value(json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "web.pull-failed", "namespace": ns},
        "eventTime": now.to_string(),
        "reportingController": "kubelet",
        "reportingInstance": "node-1",
        "action": "Pulling",
        "reason": "BackOff",
        "type": "Warning",
        "note": HOSTILE,
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns, "name": "web"},
    }))
    .unwrap();
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &ns);
    events.create(&PostParams::default(), &event).await.unwrap();

    let api_url = format!("{base}/api/v1/stacks/{ns}/{name}");
    let view_with_event = async || -> Value {
        eventually("the object's Event in the API", 30, async || {
            let view: Value = serde_json::from_str(&get_body(&api_url)?).ok()?;
            let found = view["events"]
                .as_array()?
                .iter()
                .any(|e| e["object"] == "Deployment/web" && e["reason"] == "BackOff");
            found.then_some(view)
        })
        .await
    };
    let view = view_with_event().await;
    let event = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["object"] == "Deployment/web")
        .unwrap();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["note"], HOSTILE);
    // The Stack's own Events are there too, with no object.
    let own: Vec<_> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("object").is_none())
        .map(|e| e["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(own.contains(&"Applied"), "{view:#}");
    let subjects: Vec<_> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str())
        .collect();
    assert_eq!(subjects, [Some("Add the shop"), Some("Bump nginx to 1.28")]);

    let page = get_body(&format!("{base}/stacks/{ns}/{name}")).expect("the stack's page");
    let events_section = page
        .split("id=\"events\"")
        .nth(1)
        .expect("an Events section");
    assert!(
        events_section.contains("<td data-label=\"Object\">Deployment/web</td>"),
        "{events_section}"
    );
    assert!(events_section.contains("BackOff"), "{events_section}");
    assert!(
        events_section.contains("&lt;script&gt;alert(&#39;web&#39;)&lt;/script&gt;"),
        "{events_section}"
    );
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("Add the shop"), "{page}");
    assert!(page.contains("Bump nginx to 1.28"), "{page}");

    // A restarted stackd shows it again: its watch lists the Event before the
    // stack's first reconcile, which takes it.
    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    let mut daemon = start("second.log");
    view_with_event().await;
    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
}
