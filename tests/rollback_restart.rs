//! `stackd run` restarted while a bad commit waits for its health deadline: the
//! new process has no healthy revision in memory, re-renders it from the Git
//! mirror and rolls back to it. Readiness is set through the status
//! subresource, as the cluster's Deployment controller does; with
//! `KUBECONFIG_E2E` the same steps run against a real cluster.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;

use std::path::Path;
use std::time::Duration;

use common::eventually;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use stackd::crd::{Stack, StackPhase};

const R1: &str = "services:\n  web:\n    image: nginx:1.27\n";
const R2: &str = "services:\n  web:\n    image: nginx:broken\n  worker:\n    image: busybox:1\n";

fn start(config: &Path, dir: &Path, port: u16, kubeconfig: &Path, log: &str) -> common::Daemon {
    let binary = env!("CARGO_BIN_EXE_stackd").as_ref();
    common::start_stackd(binary, config, dir, port, kubeconfig, log)
}

/// What the Deployment controller writes once the pods of the current generation are up.
async fn deployment_ready(api: &Api<Deployment>, name: &str) {
    let deployment = api.get(name).await.unwrap();
    let generation = deployment.metadata.generation.unwrap_or(1);
    let status = serde_json::json!({"status": {"observedGeneration": generation, "replicas": 1,
        "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_stackd_rolls_back_to_the_healthy_revision_from_the_mirror() {
    let cluster = fake_api::test_client().await;
    let dir = tempfile::tempdir().unwrap();
    let fake_url = cluster.fake.as_ref().map(|f| f.url());
    let kubeconfig = common::daemon_kubeconfig(dir.path(), fake_url);
    let stack = format!("rollback-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let upstream = git_support::Upstream::new(dir.path(), "apps");
    upstream.write(&format!("stacks/{stack}/compose.yaml"), R1);
    let r1 = upstream.commit("r1");
    let git = git_support::HttpServer::start(dir.path(), None).await;
    let config = dir.path().join("stackd.yaml");
    // The deadline leaves time to stop and restart stackd before it passes.
    std::fs::write(
        &config,
        format!(
            "repositories:\n  - name: apps\n    url: {}\n    paths: [\"stacks/*\"]\n    interval: 1s\n    healthTimeout: 8s\n    rollback: true\n",
            git.url("apps")
        ),
    )
    .unwrap();
    let stacks: Api<Stack> = Api::namespaced(cluster.client.clone(), &stack);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &stack);

    let port = common::free_port();
    let mut daemon = start(&config, dir.path(), port, &kubeconfig, "first.log");
    eventually("r1 applied", 90, async || {
        let status = stacks.get_opt(&stack).await.ok()??.status?;
        (status.last_applied_revision.as_deref() == Some(r1.as_str())).then_some(())
    })
    .await;
    deployment_ready(&deployments, "web").await;
    eventually("r1 healthy", 30, async || {
        let status = stacks.get_opt(&stack).await.ok()??.status?;
        (status.last_healthy_revision.as_deref() == Some(r1.as_str())).then_some(())
    })
    .await;
    let r1_web = deployments.get("web").await.unwrap();

    upstream.write(&format!("stacks/{stack}/compose.yaml"), R2);
    let r2 = upstream.commit("r2: broken web, a worker");
    eventually("r2 applied", 30, async || {
        deployments.get_opt("worker").await.ok()?.map(|_| ())
    })
    .await;
    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    // The first process stopped before the deadline: no rollback happened yet.
    let before = stacks.get(&stack).await.unwrap().status.unwrap();
    assert_ne!(before.phase, Some(StackPhase::RolledBack));
    assert_eq!(before.held_revision, None);

    let mut daemon = start(&config, dir.path(), port, &kubeconfig, "second.log");
    let log = || std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default();
    eventually("RolledBack after the restart", 60, async || {
        let status = stacks.get_opt(&stack).await.ok()??.status?;
        (status.phase == Some(StackPhase::RolledBack)).then_some(())
    })
    .await;
    let rolled = stacks.get(&stack).await.unwrap().status.unwrap();
    assert_eq!(rolled.held_revision.as_deref(), Some(r2.as_str()));
    assert_eq!(rolled.last_applied_revision.as_deref(), Some(r1.as_str()));
    let message = rolled.message.unwrap_or_default();
    assert!(
        message.contains(&format!("rolled back to revision {}", &r1[..8])),
        "{message}\n{}",
        log()
    );
    eventually("r2's worker pruned", 30, async || {
        deployments
            .get_opt("worker")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // The live Deployment is r1's again, field by field.
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec, r1_web.spec, "{}", log());
    assert_eq!(web.metadata.labels, r1_web.metadata.labels);
    assert_eq!(web.metadata.annotations, r1_web.metadata.annotations);

    let status = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    if cluster.fake.is_none() {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
            Api::all(cluster.client.clone());
        let _ = namespaces.delete(&stack, &DeleteParams::default()).await;
    }
}
