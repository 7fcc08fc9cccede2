//! Every write stackd makes, counted per kind from the in-process API server's
//! request log: on the first apply of a repository, and on a one-line change in
//! one of its stacks. Each write must be needed: one Namespace apply per
//! namespace (the Git sync's, which the controller adopts), one apply per
//! rendered object, and nothing at all for a stack the change did not touch.
//!
//! With `KUBECONFIG_E2E` the same flow runs against a real cluster; there only
//! the outcome is checked, since the request log is the in-process server's.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;
#[path = "live_support/mod.rs"]
mod live_support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::Api;
use live_support::{COMPOSE, Setup, applied};

/// Writes per target, from the fake API server's log.
fn counts(fake: &fake_api::FakeApiServer) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for write in fake.writes() {
        *counts.entry(write.target()).or_default() += 1;
    }
    counts
}

/// Writes whose path names `namespace`.
fn writes_in(fake: &fake_api::FakeApiServer, namespace: &str) -> Vec<String> {
    fake.writes()
        .iter()
        .filter(|w| w.path.contains(&format!("/namespaces/{namespace}")))
        .map(|w| format!("{} {}", w.method, w.path))
        .collect()
}

fn target(method: &str, path: &str) -> String {
    fake_api::write_target(method, path)
}

#[test]
fn a_write_is_classified_by_kind() {
    assert_eq!(target("PATCH", "/api/v1/namespaces/shop"), "Namespace");
    assert_eq!(
        target("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web"),
        "Deployment"
    );
    assert_eq!(
        target(
            "PATCH",
            "/apis/stackd.dev/v1alpha1/namespaces/shop/stacks/shop/status"
        ),
        "Stack status"
    );
    assert_eq!(target("POST", "/api/v1/namespaces/shop/events"), "Event");
    assert_eq!(
        target("DELETE", "/api/v1/namespaces/shop/services/web"),
        "Service delete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_is_needed_on_a_first_apply_and_a_one_line_change() {
    let setup = Setup::new("writes").await;
    let (cluster, upstream) = (&setup.cluster, &setup.upstream);
    let stacks = [setup.stack("shop"), setup.stack("blog")];
    for stack in &stacks {
        upstream.write(&format!("stacks/{stack}/compose.yaml"), COMPOSE);
    }
    let head = upstream.commit("two stacks");
    let stackd = setup.stackd("    interval: 1s\n");
    let mut daemon = stackd.start("stackd.log");
    let read_log = || stackd.log("stackd.log");

    for stack in &stacks {
        applied(&cluster.client, stack, &head).await;
    }
    // Let the passes that record the workloads' progress finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Some(fake) = &cluster.fake {
        let first = counts(fake);
        eprintln!("writes on the first apply of 2 stacks: {first:#?}");
        let per_stack = |kind: &str| first.get(kind).copied().unwrap_or(0);
        // One Namespace write per namespace: the sync's, adopted by the controller.
        assert_eq!(per_stack("Namespace"), 2, "{first:#?}\n{}", read_log());
        assert_eq!(per_stack("Stack"), 2, "{first:#?}");
        // One apply per rendered object: a ConfigMap, two Services (web and
        // web-published), a Deployment and a StatefulSet per stack.
        assert_eq!(per_stack("ConfigMap"), 2, "{first:#?}");
        assert_eq!(per_stack("Deployment"), 2, "{first:#?}");
        assert_eq!(per_stack("StatefulSet"), 2, "{first:#?}");
        // One status write and one Event per stack for its apply.
        assert_eq!(per_stack("Stack status"), 2, "{first:#?}");
        assert_eq!(per_stack("Event"), 2, "{first:#?}");
        assert!(!first.keys().any(|k| k.ends_with(" delete")), "{first:#?}");
        fake.clear_requests();
    }

    // A one-line change in one stack: writes for that stack alone.
    let changed = &stacks[0];
    upstream.write(
        &format!("stacks/{changed}/compose.yaml"),
        &COMPOSE.replace("nginx:1.27", "nginx:1.28"),
    );
    let next = upstream.commit("web: nginx 1.28");
    applied(&cluster.client, changed, &next).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Some(fake) = &cluster.fake {
        let change = counts(fake);
        eprintln!("writes on a one-line change in one stack: {change:#?}");
        assert_eq!(change.get("Stack"), Some(&1), "{change:#?}");
        assert_eq!(change.get("Deployment"), Some(&1), "{change:#?}");
        assert_eq!(change.get("Stack status"), Some(&1), "{change:#?}");
        assert_eq!(change.get("Event"), Some(&1), "{change:#?}");
        for kind in ["Namespace", "ConfigMap", "Service", "StatefulSet"] {
            assert_eq!(change.get(kind), None, "{kind}: {change:#?}");
        }
        // Decided from what the last sync wrote: no list of Stacks or namespaces.
        let lists: Vec<String> = fake
            .requests()
            .iter()
            .filter(|r| !r.watch && r.method == http::Method::GET)
            .filter(|r| r.path.ends_with("/stacks") || r.path == "/api/v1/namespaces")
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(lists, Vec::<String>::new(), "lists on a change");
        assert_eq!(
            writes_in(fake, &stacks[1]),
            Vec::<String>::new(),
            "the untouched stack"
        );
    }

    daemon.stop().await;
    cluster.delete_namespaces(&stacks).await;
}

/// `--kube-qps` and `--kube-burst`: a burst goes at once, the rest are spaced
/// to the rate; a 429 with `Retry-After` is waited out and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_rate_limit_spaces_requests_and_429_is_retried() {
    let cluster = fake_api::test_client().await;
    let client = stackd::daemon::rate_limit::rate_limited(cluster.client.clone(), 20.0, 2);
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let started = std::time::Instant::now();
    let params = kube::api::ListParams::default();
    let lists = (0..10).map(|_| api.list_metadata(&params));
    for result in futures::future::join_all(lists).await {
        result.expect("a rate-limited list succeeds");
    }
    // Two go at once, eight wait 50 ms each in turn: at least 400 ms.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");

    if let Some(fake) = cluster.fake_or_skip("answering 429") {
        fake.clear_requests();
        fake.throttle(
            http::Method::GET,
            "/api/v1/namespaces",
            Duration::from_secs(1),
            2,
        );
        api.list_metadata(&Default::default())
            .await
            .expect("retried after Retry-After");
        let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![429, 429, 200]);
    }
}
