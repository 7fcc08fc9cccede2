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
#[path = "live_support/mod.rs"]
mod live_support;

use common::{Stackd, apps_config, eventually};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use live_support::Setup;
use serde_json::{Value, json};
use stackd::crd::Stack;

const FIRST: &str = "services:\n  web:\n    image: nginx:1.27\n";
const SECOND: &str = "services:\n  web:\n    image: nginx:1.28\n";
const HOSTILE: &str = "<script>alert('web')</script> Back-off pulling image";

/// The body of a GET of `path` that answered 200.
fn get_body(stackd: &Stackd, path: &str) -> Option<String> {
    let (status, body) = stackd.get(path)?;
    (status == 200).then_some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_each_commits_subject_and_the_events_of_the_stacks_objects() {
    // Unique: on a real cluster earlier runs' namespaces may still be there.
    let setup = Setup::new("page").await;
    let (cluster, upstream) = (&setup.cluster, &setup.upstream);
    let name = setup.stack("shop");
    let ns = name.clone();

    upstream.write(&format!("stacks/{name}/compose.yaml"), FIRST);
    let first = upstream.commit("Add the shop");
    let token = "page-test-token";
    let token_file = setup.dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let config = format!(
        "apiTokenFile: {}\n{}",
        token_file.display(),
        apps_config(&setup.git.url("apps"), "    interval: 1h\n")
    );
    let stackd = setup.stackd_with(&config);
    let mut daemon = stackd.start("first.log");

    let stacks: Api<Stack> = Api::namespaced(cluster.client.clone(), &ns);
    live_support::applied(&cluster.client, &name, &first).await;
    upstream.write(&format!("stacks/{name}/compose.yaml"), SECOND);
    let second = upstream.commit("Bump nginx to 1.28");
    assert_eq!(stackd.sync_now(token), Some(202));
    live_support::applied(&cluster.client, &name, &second).await;

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

    let api_path = format!("/api/v1/stacks/{ns}/{name}");
    let view_with_event = async || -> Value {
        eventually("the object's Event in the API", 30, async || {
            let view: Value = serde_json::from_str(&get_body(&stackd, &api_path)?).ok()?;
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

    let page = get_body(&stackd, &format!("/stacks/{ns}/{name}")).expect("the stack's page");
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
    daemon.stop().await;
    let mut daemon = stackd.start("second.log");
    view_with_event().await;
    daemon.stop().await;
}
