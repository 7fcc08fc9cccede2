//! A restarted `stackd run`, and one whose watches expire (410 Gone, so
//! kube-runtime lists again), write nothing when Git and the cluster agree.
//! A real API server's LIST items carry no `apiVersion` or `kind` (only watch
//! events do); the in-process one answers the same way, so an object cached
//! from a list must still compare equal to what stackd renders.
//!
//! Set `KUBECONFIG_E2E` to run the restart against a real cluster: there a
//! re-apply is seen in `/metrics` (`stackd_objects_applied_total`), in `drift`
//! log lines and as changed generations (an identical server-side apply changes
//! nothing stored, so only the fake's request log sees every write). Forcing a
//! re-list needs the in-process API server and is skipped there.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;
#[path = "live_support/mod.rs"]
mod live_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Stackd, eventually};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use live_support::{COMPOSE, Setup};

/// Kinds a stack renders here, with their API groups and versions.
const KINDS: [(&str, &str, &str); 5] = [
    ("", "v1", "ConfigMap"),
    ("", "v1", "Service"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("stackd.dev", "v1alpha1", "Stack"),
];

/// `kind namespace/name` → its `generation` where it has one (a status update,
/// say a Deployment becoming ready on a real cluster, does not change it), else
/// its `resourceVersion`, for every object of these stacks.
async fn versions(client: &kube::Client, namespaces: &[String]) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    for namespace in namespaces {
        for (group, version, kind) in KINDS {
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            for object in api.list(&ListParams::default()).await.unwrap() {
                versions.insert(
                    format!(
                        "{kind} {namespace}/{}",
                        object.metadata.name.unwrap_or_default()
                    ),
                    match object.metadata.generation {
                        Some(generation) => format!("generation {generation}"),
                        None => object.metadata.resource_version.unwrap_or_default(),
                    },
                );
            }
        }
    }
    versions
}

/// Objects this process applied, of every kind (`stackd_objects_applied_total`).
fn applied(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("stackd_objects_applied_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics(stackd: &Stackd) -> Option<String> {
    Some(stackd.get("/metrics")?.1)
}

/// Reconciles of `stack` this process finished, any result.
fn reconciles(metrics: &str, stack: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("stackd_reconcile_total{") && l.contains(&format!("stack=\"{stack}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until this process has reconciled every stack `more_than` times.
async fn reconciled(stackd: &Stackd, stacks: &[String], more_than: f64) -> String {
    eventually("a reconcile of every stack", 60, async || {
        let text = metrics(stackd)?;
        stacks
            .iter()
            .all(|s| reconciles(&text, s) > more_than)
            .then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_and_a_forced_relist_write_nothing() {
    // Unique names: on a real cluster earlier runs' namespaces may still be there.
    let setup = Setup::new("restart").await;
    let cluster = &setup.cluster;
    let stacks = [setup.stack("shop"), setup.stack("blog")];
    for stack in &stacks {
        setup
            .upstream
            .write(&format!("stacks/{stack}/compose.yaml"), COMPOSE);
    }
    let head = setup.upstream.commit("two stacks");
    let stackd = setup.stackd("    interval: 1h\n");
    let mut daemon = stackd.start("first.log");
    for stack in &stacks {
        live_support::applied(&cluster.client, stack, &head).await;
    }
    // The first pass may be followed by one that records the workloads' progress.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = versions(&cluster.client, &stacks).await;
    assert!(
        before.keys().any(|k| k.starts_with("Deployment ")),
        "{before:#?}"
    );
    daemon.stop().await;

    // Restart: every cache is filled by a list, every stack reconciled again.
    if let Some(fake) = &cluster.fake {
        fake.clear_requests();
    }
    let mut daemon = stackd.start("second.log");
    let text = reconciled(&stackd, &stacks, 0.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = || stackd.log("second.log");
    assert_eq!(applied(&text), 0.0, "{}", log());
    assert!(!log().contains("drift"), "{}", log());
    assert_eq!(versions(&cluster.client, &stacks).await, before);
    if let Some(fake) = &cluster.fake {
        assert_eq!(written(fake), Vec::<String>::new(), "{}", log());
    }

    // Every watch ends with 410 Gone: each cache lists again, and each stack is
    // reconciled from what that list returned.
    if let Some(fake) = cluster.fake_or_skip("forcing a re-list with 410 Gone") {
        let lists_before = deployment_lists(fake);
        let seen = reconciled(&stackd, &stacks, 0.0).await;
        let counts: Vec<f64> = stacks.iter().map(|s| reconciles(&seen, s)).collect();
        fake.expire_watches();
        eventually("a re-list of Deployments", 30, async || {
            (deployment_lists(fake) > lists_before).then_some(())
        })
        .await;
        eventually(
            "a reconcile of every stack after the re-list",
            60,
            async || {
                let text = metrics(&stackd)?;
                stacks
                    .iter()
                    .zip(&counts)
                    .all(|(s, n)| reconciles(&text, s) > *n)
                    .then_some(())
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(written(fake), Vec::<String>::new(), "{}", log());
        assert_eq!(applied(&metrics(&stackd).unwrap()), 0.0, "{}", log());
        assert!(!log().contains("drift"), "{}", log());
        assert_eq!(versions(&cluster.client, &stacks).await, before);
    }

    daemon.stop().await;
    cluster.delete_namespaces(&stacks).await;
}

/// `METHOD path` of every write the fake API server received.
fn written(fake: &fake_api::FakeApiServer) -> Vec<String> {
    fake.writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Non-watch lists of Deployments the fake API server answered.
fn deployment_lists(fake: &fake_api::FakeApiServer) -> usize {
    fake.requests()
        .iter()
        .filter(|r| !r.watch && r.path == "/apis/apps/v1/deployments")
        .count()
}
