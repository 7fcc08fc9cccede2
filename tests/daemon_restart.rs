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

use common::eventually;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use stackd::crd::Stack;

/// Kinds a stack renders here, with their API groups and versions.
const KINDS: [(&str, &str, &str); 5] = [
    ("", "v1", "ConfigMap"),
    ("", "v1", "Service"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("stackd.dev", "v1alpha1", "Stack"),
];

const COMPOSE: &str = "services:
  web:
    image: nginx:1.27
    ports: [\"8080:80\"]
    configs:
      - source: site
        target: /usr/share/nginx/html/index.html
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: example
    volumes: [\"data:/var/lib/postgresql/data\"]
volumes:
  data: {}
configs:
  site:
    content: hello
";

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

fn metrics(port: u16) -> Option<String> {
    get_body(&format!("http://127.0.0.1:{port}/metrics"))
}

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
    Some(response.split_once("\r\n\r\n")?.1.to_string())
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

fn start(config: &Path, dir: &Path, port: u16, kubeconfig: &Path, log: &str) -> common::Daemon {
    let binary = env!("CARGO_BIN_EXE_stackd").as_ref();
    common::start_stackd(binary, config, dir, port, kubeconfig, log)
}

/// Waits until this process has reconciled every stack `more_than` times.
async fn reconciled(port: u16, stacks: &[String], more_than: f64) -> String {
    eventually("a reconcile of every stack", 60, async || {
        let text = metrics(port)?;
        stacks
            .iter()
            .all(|s| reconciles(&text, s) > more_than)
            .then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_and_a_forced_relist_write_nothing() {
    let cluster = fake_api::test_client().await;
    let dir = tempfile::tempdir().unwrap();
    let fake_url = cluster.fake.as_ref().map(|f| f.url());
    let kubeconfig = common::daemon_kubeconfig(dir.path(), fake_url);
    // Unique names: on a real cluster earlier runs' namespaces may still be there.
    let suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let stacks: Vec<String> = ["shop", "blog"]
        .iter()
        .map(|s| format!("restart-{s}-{suffix}"))
        .collect();

    let upstream = git_support::Upstream::new(dir.path(), "apps");
    for stack in &stacks {
        upstream.write(&format!("stacks/{stack}/compose.yaml"), COMPOSE);
    }
    let head = upstream.commit("two stacks");
    let git = git_support::HttpServer::start(dir.path(), None).await;
    let config = dir.path().join("stackd.yaml");
    std::fs::write(
        &config,
        format!(
            "repositories:\n  - name: apps\n    url: {}\n    paths: [\"stacks/*\"]\n    interval: 1h\n",
            git.url("apps")
        ),
    )
    .unwrap();

    let port = common::free_port();
    let mut daemon = start(&config, dir.path(), port, &kubeconfig, "first.log");
    for stack in &stacks {
        let api: Api<Stack> = Api::namespaced(cluster.client.clone(), stack);
        eventually("the stack applied", 90, async || {
            let status = api.get_opt(stack).await.ok()??.status?;
            (status.last_applied_revision.as_deref() == Some(head.as_str())).then_some(())
        })
        .await;
    }
    // The first pass may be followed by one that records the workloads' progress.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = versions(&cluster.client, &stacks).await;
    assert!(
        before.keys().any(|k| k.starts_with("Deployment ")),
        "{before:#?}"
    );
    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");

    // Restart: every cache is filled by a list, every stack reconciled again.
    if let Some(fake) = &cluster.fake {
        fake.clear_requests();
    }
    let mut daemon = start(&config, dir.path(), port, &kubeconfig, "second.log");
    let text = reconciled(port, &stacks, 0.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = || std::fs::read_to_string(dir.path().join("second.log")).unwrap();
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
        let seen = reconciled(port, &stacks, 0.0).await;
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
                let text = metrics(port)?;
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
        assert_eq!(applied(&metrics(port).unwrap()), 0.0, "{}", log());
        assert!(!log().contains("drift"), "{}", log());
        assert_eq!(versions(&cluster.client, &stacks).await, before);
    }

    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    if cluster.fake.is_none() {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
            Api::all(cluster.client.clone());
        for stack in &stacks {
            let _ = namespaces.delete(stack, &DeleteParams::default()).await;
        }
    }
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
