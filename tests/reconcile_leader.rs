//! Leader election on a Lease: one writer at a time, handover on release or
//! expiry, and a replica that loses the lease stops writing at once.

#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "reconcile_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use stackd::reconcile::leader::LeaderElection;
use tokio_util::sync::CancellationToken;

use support::{
    Harness, PRUNE, desired, fast_lease, lead, needs_fake, object_writes, take_lease, web_and_db,
    with_image,
};

/// Counts replicas that are currently running their writing loop.
#[derive(Clone, Default)]
struct Writers {
    active: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

impl Writers {
    fn work(
        &self,
    ) -> impl FnMut(CancellationToken) -> futures::future::BoxFuture<'static, ()> + use<> {
        let writers = self.clone();
        move |token: CancellationToken| {
            let writers = writers.clone();
            Box::pin(async move {
                let now = writers.active.fetch_add(1, Ordering::SeqCst) + 1;
                writers.most.fetch_max(now, Ordering::SeqCst);
                writers.runs.fetch_add(1, Ordering::SeqCst);
                token.cancelled().await;
                writers.active.fetch_sub(1, Ordering::SeqCst);
            })
        }
    }
}

async fn holder(client: &kube::Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "stackd");
    api.get_opt("stackd-leader")
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_replicas_never_both_lead_and_hand_over_on_release() {
    let h = needs_fake!(Harness::new().await);
    h.fake.seed_namespace("stackd");
    let writers = Writers::default();
    let a = LeaderElection::new(
        h.client.clone(),
        "stackd",
        "stackd-leader",
        "a",
        fast_lease(),
    );
    let b = LeaderElection::new(
        h.client.clone(),
        "stackd",
        "stackd-leader",
        "b",
        fast_lease(),
    );
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let task_a = tokio::spawn({
        let (stop, work) = (stop_a.clone(), writers.work());
        async move { a.lead(stop, work).await }
    });
    let task_b = tokio::spawn({
        let (stop, work) = (stop_b.clone(), writers.work());
        async move { b.lead(stop, work).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(writers.active.load(Ordering::SeqCst), 1);
    let first = holder(&h.client).await.unwrap();

    // The leader shuts down and releases: the other takes over without waiting for expiry.
    let started = tokio::time::Instant::now();
    if first == "a" {
        stop_a.cancel()
    } else {
        stop_b.cancel()
    }
    let expected = if first == "a" { "b" } else { "a" };
    eventually("the other replica to lead", async || {
        holder(&h.client).await.as_deref() == Some(expected)
            && writers.active.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(writers.most.load(Ordering::SeqCst), 1);
    assert_eq!(writers.runs.load(Ordering::SeqCst), 2);
    stop_a.cancel();
    stop_b.cancel();
    let _ = tokio::join!(task_a, task_b);
    assert_eq!(holder(&h.client).await, None);
}

#[tokio::test]
async fn a_replica_that_loses_the_lease_stops_writing_and_another_takes_over() {
    let h = needs_fake!(Harness::new().await);
    h.fake.seed_namespace("stackd");
    let policy = PRUNE;

    // Replica "a" leads and runs the controller.
    let (stop_a, task_a) = lead(&h, "a", fast_lease());
    h.sync(vec![desired("shop", "shop", web_and_db(), "r1")], policy)
        .await
        .unwrap();
    h.wait_for("replica a to apply", |h| {
        h.object("apps/v1", "Deployment", "shop", "web").is_some()
    })
    .await;
    h.settle().await;

    // Someone else takes the lease (as after a network partition): "a" must stop.
    take_lease(&h, "stackd", "stackd-leader", "intruder", 2).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    h.fake.clear_requests();
    h.sync(
        vec![desired(
            "shop",
            "shop",
            with_image(web_and_db(), "web", "nginx:1.28"),
            "r2",
        )],
        policy,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        object_writes(&h.fake.writes()),
        Vec::<String>::new(),
        "a replica without the lease wrote"
    );

    // "a" shuts down (without the lease there is nothing to release); the
    // intruder's lease expires; replica "b" takes over and applies the change.
    stop_a.cancel();
    let _ = task_a.await;
    assert_eq!(holder(&h.client).await.as_deref(), Some("intruder"));
    let (stop_b, task_b) = lead(&h, "b", fast_lease());
    h.wait_for("the change to be applied", |h| {
        h.object("apps/v1", "Deployment", "shop", "web")
            .and_then(|d| d.pointer("/spec/template/spec/containers/0/image").cloned())
            == Some(json!("nginx:1.28"))
    })
    .await;
    assert_eq!(holder(&h.client).await.as_deref(), Some("b"));
    stop_b.cancel();
    let _ = task_b.await;
}
