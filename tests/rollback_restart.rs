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
#[path = "live_support/mod.rs"]
mod live_support;
#[path = "workload_status/mod.rs"]
mod workload_status;

use common::eventually;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use live_support::Setup;
use stackd::crd::{Stack, StackPhase};
use workload_status::deployment_ready;

const R1: &str = "services:\n  web:\n    image: nginx:1.27\n";
const R2: &str = "services:\n  web:\n    image: nginx:broken\n  worker:\n    image: busybox:1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_stackd_rolls_back_to_the_healthy_revision_from_the_mirror() {
    let setup = Setup::new("rollback").await;
    let (cluster, upstream) = (&setup.cluster, &setup.upstream);
    let stack = setup.stack("web");
    upstream.write(&format!("stacks/{stack}/compose.yaml"), R1);
    let r1 = upstream.commit("r1");
    // The deadline leaves time to stop and restart stackd before it passes.
    let stackd = setup.stackd("    interval: 1s\n    healthTimeout: 8s\n    rollback: true\n");
    let stacks: Api<Stack> = Api::namespaced(cluster.client.clone(), &stack);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &stack);

    let mut daemon = stackd.start("first.log");
    live_support::applied(&cluster.client, &stack, &r1).await;
    deployment_ready(&cluster.client, &stack, "web").await;
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
    daemon.stop().await;
    // The first process stopped before the deadline: no rollback happened yet.
    let before = stacks.get(&stack).await.unwrap().status.unwrap();
    assert_ne!(before.phase, Some(StackPhase::RolledBack));
    assert_eq!(before.held_revision, None);

    let mut daemon = stackd.start("second.log");
    let log = || stackd.log("second.log");
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

    daemon.stop().await;
    cluster.delete_namespaces(&[stack]).await;
}
