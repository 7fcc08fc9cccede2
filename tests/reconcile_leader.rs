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
use kube::api::{Api, PostParams};
use serde_json::json;
use stackd::reconcile::SyncPolicy;
use stackd::reconcile::leader::{LeaderElection, LeaseTiming};
use tokio_util::sync::CancellationToken;

use support::{Harness, desired, needs_fake, object_writes, test_options, web_and_db, with_image};

fn fast() -> LeaseTiming {
    LeaseTiming {
        lease_duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(300),
        retry_every: Duration::from_millis(100),
    }
}

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
    let a = LeaderElection::new(h.client.clone(), "stackd", "stackd-leader", "a", fast());
    let b = LeaderElection::new(h.client.clone(), "stackd", "stackd-leader", "b", fast());
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
    let policy = SyncPolicy {
        prune: true,
        allow_prune_all: false,
        shards: 0,
    };

    // Replica "a" leads and runs the controller.
    let a = LeaderElection::new(h.client.clone(), "stackd", "stackd-leader", "a", fast());
    let stop_a = CancellationToken::new();
    let run_a = {
        let (client, handles) = (h.client.clone(), h.handles.clone());
        move |token: CancellationToken| {
            stackd::reconcile::run(client.clone(), test_options(), handles.clone(), token)
        }
    };
    let task_a = tokio::spawn({
        let stop = stop_a.clone();
        async move { a.lead(stop, run_a).await }
    });
    h.sync(vec![desired("shop", "shop", web_and_db(), "r1")], policy)
        .await
        .unwrap();
    h.wait_for("replica a to apply", |h| {
        h.object("apps/v1", "Deployment", "shop", "web").is_some()
    })
    .await;
    h.settle().await;

    // Someone else takes the lease (as after a network partition): "a" must stop.
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), "stackd");
    let mut lease = leases.get("stackd-leader").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(2);
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    leases
        .replace("stackd-leader", &PostParams::default(), &lease)
        .await
        .unwrap();
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
    let b = LeaderElection::new(h.client.clone(), "stackd", "stackd-leader", "b", fast());
    let stop_b = CancellationToken::new();
    let run_b = {
        let (client, handles) = (h.client.clone(), h.handles.clone());
        move |token: CancellationToken| {
            stackd::reconcile::run(client.clone(), test_options(), handles.clone(), token)
        }
    };
    let task_b = tokio::spawn({
        let stop = stop_b.clone();
        async move { b.lead(stop, run_b).await }
    });
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
