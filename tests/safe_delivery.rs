//! Safe delivery end to end: `depends_on` waves, health deadlines, rollback and
//! holds. Workload readiness is set the way the cluster's controllers set it,
//! through the status subresource. Every test runs against the in-process API
//! server, or against the cluster named by `KUBECONFIG_E2E` (a cluster without
//! workload controllers, like envtest, so that only the tests write workload
//! status). There each test gets its own namespace, the tests run one at a time
//! (each runs a controller for the whole cluster), and only the checks that read
//! the request log are skipped.

#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "reconcile_support/mod.rs"]
mod support;
#[path = "workload_status/mod.rs"]
mod workload_status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use stackd::crd::{Stack, StackPhase, StackSpec, StackStatus};
use stackd::reconcile::source::stack_object;
use stackd::reconcile::{DesiredStack, RevisionLoader};
use stackd::render::model::SecretValues;
use tokio::time::Instant;

use fake_api::FakeApiServer;
use support::{Cluster, PRUNE, REPOSITORY, desired, object_writes, test_options, write_paths};
use workload_status::{daemon_set_status, deployment_ready, job_ended};

/// The namespace the stacks are built for; [`Cluster::sync`] moves them to the test's own.
const NS: &str = "shop";

fn service(image: &str) -> Value {
    json!({"image": image})
}

fn depends(image: &str, on: Value) -> Value {
    json!({"image": image, "dependsOn": on})
}

fn job(image: &str) -> Value {
    json!({"image": image, "deploy": {"mode": "replicated-job"}})
}

/// db, and web once db is healthy.
fn web_after_db() -> Value {
    json!({
        "db": service("postgres:16"),
        "web": depends("nginx:1.27", json!({"db": {"condition": "service_healthy"}})),
    })
}

/// A migration Job, and an app once it succeeded.
fn app_after_migration() -> Value {
    json!({
        "migrate": job("flyway/flyway:10"),
        "app": depends("nginx:1.27", json!({"migrate": {"condition": "service_completed_successfully"}})),
    })
}

/// db, and web at nginx 1.28 with no dependency.
fn web_1_28() -> Value {
    json!({"db": service("postgres:16"), "web": service("nginx:1.28")})
}

fn stack(services: Value, revision: &str) -> DesiredStack {
    desired(NS, "shop", json!({ "services": services }), revision)
}

/// `stack` with a health deadline and rollback on or off.
fn with_deadline(mut stack: DesiredStack, timeout: &str, rollback: bool) -> DesiredStack {
    stack.tenancy.health_timeout = Some(timeout.to_string());
    stack.tenancy.rollback = Some(rollback);
    stack
}

fn exists(h: &Cluster, kind: &str, name: &str) -> bool {
    let api_version = if kind == "Job" { "batch/v1" } else { "apps/v1" };
    h.object(api_version, kind, name).is_some()
}

fn image(h: &Cluster, name: &str) -> Option<String> {
    h.object("apps/v1", "Deployment", name)?
        .pointer("/spec/template/spec/containers/0/image")?
        .as_str()
        .map(str::to_string)
}

fn status(h: &Cluster) -> StackStatus {
    let stack = h.object("stackd.dev/v1alpha1", "Stack", "shop");
    let status = stack.and_then(|s| s.get("status").cloned());
    status
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// The Ready condition's (status, reason) and the Stalled condition's status.
fn conditions(h: &Cluster) -> (String, String, String) {
    let status = status(h);
    let find = |kind: &str| {
        let found = status.conditions.iter().find(|c| c.type_ == kind);
        found.map(|c| (c.status.clone(), c.reason.clone()))
    };
    let (ready, reason) = find("Ready").unwrap_or_default();
    let (stalled, _) = find("Stalled").unwrap_or_default();
    (ready, reason, stalled)
}

/// Every surface says the stack failed with `reason`: the Stack's Ready
/// condition, the view the page and `/api/v1/stacks` show (its reason and
/// Events), the `stackd_stack_ready` series, and a Warning Event in the cluster.
async fn every_surface_says(h: &Cluster, reason: &str) {
    assert_eq!(conditions(h).1, reason);
    let view = h.handles.state.stack(&h.ns, "shop").unwrap();
    assert_eq!(view.reason.map(|r| r.as_str()), Some(reason));
    let warned = |kind: &str, why: &str| kind == "Warning" && why == reason;
    assert!(
        view.events.iter().any(|e| warned(&e.kind, &e.reason)),
        "{:#?}",
        view.events
    );
    let metrics = h.handles.metrics.render();
    let namespace = format!("namespace=\"{}\"", h.ns);
    let series: Vec<_> = metrics
        .lines()
        .filter(|l| l.starts_with("stackd_stack_ready{") && l.contains(&namespace))
        .collect();
    assert_eq!(series.len(), 1, "{metrics}");
    assert!(
        series[0].contains(&format!("reason=\"{reason}\"")),
        "{}",
        series[0]
    );
    let events = h.events().await;
    let warning = |e: &Value| {
        warned(
            e["type"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or(""),
        )
    };
    assert!(events.iter().any(warning), "{events:#?}");
}

/// Index in the request log of the first write whose path ends with `suffix`.
fn first_write(fake: &FakeApiServer, suffix: &str) -> Option<usize> {
    write_paths(&fake.writes())
        .iter()
        .position(|p| p.ends_with(suffix) || p.contains(&format!("{suffix}?")))
}

#[tokio::test]
async fn web_is_written_only_after_db_is_ready_and_within_a_second_of_it() {
    let h = Cluster::started(NS).await;
    h.sync(vec![stack(web_after_db(), "r1")], PRUNE)
        .await
        .unwrap();
    h.wait_for("db", |h| exists(h, "Deployment", "db")).await;
    h.settle().await;
    // Everything but web's workload went at once; web waits and says what for.
    assert!(h.object("v1", "Service", "web").is_some());
    assert!(!exists(&h, "Deployment", "web"));
    let waiting = ["web: waiting for db (service_healthy): 0/1 ready".to_string()];
    assert_eq!(status(&h).waiting, waiting);
    let view = h.handles.state.stack(&h.ns, "shop").unwrap();
    assert!(view.message.unwrap().contains(&waiting[0]));

    deployment_ready(&h.client, &h.ns, "db").await;
    let ready_at = Instant::now();
    h.wait_for("web", |h| exists(h, "Deployment", "web")).await;
    let latency = ready_at.elapsed();
    eprintln!("db Ready → web written: {latency:?}");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    // The request log: db's status said Ready before web's first write.
    if let Some(fake) = h.fake_or_skip("the order of writes in the request log") {
        let db_ready = first_write(fake, "/deployments/db/status").unwrap();
        let web_written = first_write(fake, "/deployments/web").unwrap();
        let writes = write_paths(&fake.writes());
        assert!(db_ready < web_written, "{writes:#?}");
    }
    h.wait_for("waiting cleared", |h| status(h).waiting.is_empty())
        .await;
}

#[tokio::test]
async fn an_app_waits_for_its_migration_job_to_succeed() {
    let h = Cluster::started(NS).await;
    h.sync(vec![stack(app_after_migration(), "r1")], PRUNE)
        .await
        .unwrap();
    h.wait_for("the Job", |h| exists(h, "Job", "migrate")).await;
    h.settle().await;
    assert!(!exists(&h, "Deployment", "app"));
    assert_eq!(
        status(&h).waiting,
        ["app: waiting for migrate (service_completed_successfully): 0/1 succeeded"]
    );
    job_ended(&h.client, &h.ns, "migrate", true).await;
    let ended = Instant::now();
    h.wait_for("app", |h| exists(h, "Deployment", "app")).await;
    assert!(ended.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_failed_migration_fails_the_stack_naming_the_job() {
    let h = Cluster::started(NS).await;
    h.sync(vec![stack(app_after_migration(), "r1")], PRUNE)
        .await
        .unwrap();
    h.wait_for("the Job", |h| exists(h, "Job", "migrate")).await;
    job_ended(&h.client, &h.ns, "migrate", false).await;
    h.wait_for("DependencyFailed", |h| {
        conditions(h).1 == "DependencyFailed"
    })
    .await;
    h.settle().await;
    let status = status(&h);
    assert_eq!(status.phase, Some(StackPhase::Failure));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "app: dependency migrate (service_completed_successfully) failed: Job migrate failed: Job has reached the specified backoff limit"
        )
    );
    assert!(!exists(&h, "Deployment", "app"));
    every_surface_says(&h, "DependencyFailed").await;
}

#[tokio::test]
async fn an_optional_missing_dependency_does_not_block() {
    let h = Cluster::started(NS).await;
    let services = json!({
        "web": depends("nginx:1.27", json!({"cache": {"condition": "service_healthy", "required": false}})),
    });
    h.sync(vec![stack(services, "r1")], PRUNE).await.unwrap();
    h.wait_for("web", |h| exists(h, "Deployment", "web")).await;
    assert!(status(&h).waiting.is_empty());
}

#[tokio::test]
async fn a_three_level_chain_goes_one_level_per_wave() {
    let h = Cluster::started(NS).await;
    let healthy = |on: &str| json!({ on: {"condition": "service_healthy"} });
    let services = json!({
        "db": service("postgres:16"),
        "api": depends("api:1", healthy("db")),
        "web": depends("nginx:1.27", healthy("api")),
    });
    h.sync(vec![stack(services, "r1")], PRUNE).await.unwrap();
    h.wait_for("db", |h| exists(h, "Deployment", "db")).await;
    h.settle().await;
    assert!(!exists(&h, "Deployment", "api") && !exists(&h, "Deployment", "web"));
    deployment_ready(&h.client, &h.ns, "db").await;
    h.wait_for("api", |h| exists(h, "Deployment", "api")).await;
    h.settle().await;
    assert!(!exists(&h, "Deployment", "web"));
    assert_eq!(
        status(&h).waiting,
        ["web: waiting for api (service_healthy): 0/1 ready"]
    );
    deployment_ready(&h.client, &h.ns, "api").await;
    h.wait_for("web", |h| exists(h, "Deployment", "web")).await;
    deployment_ready(&h.client, &h.ns, "web").await;
    h.wait_for("Available", |h| {
        status(h).phase == Some(StackPhase::Available)
    })
    .await;
    assert_eq!(status(&h).last_healthy_revision.as_deref(), Some("r1"));
    assert_eq!(status(&h).rollout, None);
}

#[tokio::test]
async fn a_daemon_set_dependency_is_healthy_once_every_pod_is_ready() {
    let h = Cluster::started(NS).await;
    let services = json!({
        "agent": {"image": "fluent/fluent-bit:3", "deploy": {"mode": "global"}},
        "web": depends("nginx:1.27", json!({"agent": {"condition": "service_healthy"}})),
    });
    h.sync(vec![stack(services, "r1")], PRUNE).await.unwrap();
    h.wait_for("agent", |h| exists(h, "DaemonSet", "agent"))
        .await;
    daemon_set_status(&h.client, &h.ns, "agent", 1).await;
    h.settle().await;
    assert!(!exists(&h, "Deployment", "web"));
    assert_eq!(
        status(&h).waiting,
        ["web: waiting for agent (service_healthy): 1/2 ready"]
    );
    // numberReady = desiredNumberScheduled, though numberAvailable is still 0.
    daemon_set_status(&h.client, &h.ns, "agent", 2).await;
    let ready_at = Instant::now();
    h.wait_for("web", |h| exists(h, "Deployment", "web")).await;
    assert!(ready_at.elapsed() < Duration::from_secs(1));
}

fn restart_annotation(h: &Cluster, name: &str) -> Option<String> {
    h.object("apps/v1", "Deployment", name)?
        .pointer("/spec/template/metadata/annotations/stackd.dev~1restart-on")?
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn restart_true_rolls_the_dependent_once_the_dependency_is_ready_again() {
    let h = Cluster::started(NS).await;
    let services = |db: &str| {
        json!({
            "db": service(db),
            "web": depends("nginx:1.27", json!({"db": {"condition": "service_healthy", "restart": true}})),
        })
    };
    h.sync(vec![stack(services("postgres:16"), "r1")], PRUNE)
        .await
        .unwrap();
    h.wait_for("db", |h| exists(h, "Deployment", "db")).await;
    deployment_ready(&h.client, &h.ns, "db").await;
    h.wait_for("web", |h| exists(h, "Deployment", "web")).await;
    deployment_ready(&h.client, &h.ns, "web").await;
    h.wait_for("Available", |h| {
        status(h).phase == Some(StackPhase::Available)
    })
    .await;
    let before = restart_annotation(&h, "web").expect("the restart annotation");

    // A new db: web keeps its pods until db is Ready again, then rolls.
    h.sync(vec![stack(services("postgres:17"), "r2")], PRUNE)
        .await
        .unwrap();
    h.wait_for("db updated", |h| {
        image(h, "db").as_deref() == Some("postgres:17")
    })
    .await;
    h.settle().await;
    assert_eq!(restart_annotation(&h, "web").as_ref(), Some(&before));
    deployment_ready(&h.client, &h.ns, "db").await;
    let ready_at = Instant::now();
    h.wait_for("web rolled", |h| {
        restart_annotation(h, "web").is_some_and(|a| a != before)
    })
    .await;
    assert!(ready_at.elapsed() < Duration::from_secs(1));
}

/// r1 (web and db) deployed and Ready: the last healthy revision.
async fn healthy_r1(h: &Cluster, rollback: bool) -> DesiredStack {
    let services = json!({"db": service("postgres:16"), "web": service("nginx:1.27")});
    let r1 = with_deadline(stack(services, "r1"), "2s", rollback);
    h.sync(vec![r1.clone()], PRUNE).await.unwrap();
    h.wait_for("r1", |h| {
        exists(h, "Deployment", "web") && exists(h, "Deployment", "db")
    })
    .await;
    deployment_ready(&h.client, &h.ns, "db").await;
    deployment_ready(&h.client, &h.ns, "web").await;
    h.wait_for("r1 Available", |h| {
        status(h).last_healthy_revision.as_deref() == Some("r1")
    })
    .await;
    r1
}

/// The live objects are r1's again, field by field; r2's worker is pruned;
/// r2 is held and r1 is the last applied revision.
fn rolled_back_to_r1(h: &Cluster, r1_web: &Value) {
    let web = h.object("apps/v1", "Deployment", "web").unwrap();
    assert_eq!(web["spec"], r1_web["spec"]);
    assert_eq!(web["metadata"]["labels"], r1_web["metadata"]["labels"]);
    assert_eq!(
        web["metadata"]["annotations"],
        r1_web["metadata"]["annotations"]
    );
    assert!(!exists(h, "Deployment", "worker"));
    let held = status(h);
    assert_eq!(held.held_revision.as_deref(), Some("r2"));
    assert_eq!(held.last_applied_revision.as_deref(), Some("r1"));
}

/// r2: web's image is broken and a worker is added; neither becomes Ready.
fn bad_r2(rollback: bool) -> DesiredStack {
    let services = json!({
        "db": service("postgres:16"),
        "web": service("nginx:broken"),
        "worker": service("busybox:1"),
    });
    with_deadline(stack(services, "r2"), "2s", rollback)
}

#[tokio::test]
async fn a_revision_past_its_deadline_is_rolled_back_and_held() {
    let h = Cluster::started(NS).await;
    healthy_r1(&h, true).await;
    let r1_web = h.object("apps/v1", "Deployment", "web").unwrap();

    let applied = Instant::now();
    h.sync(vec![bad_r2(true)], PRUNE).await.unwrap();
    h.wait_for("r2 applied", |h| {
        image(h, "web").as_deref() == Some("nginx:broken")
    })
    .await;
    h.wait_for("RolledBack", |h| {
        status(h).phase == Some(StackPhase::RolledBack)
    })
    .await;
    assert!(applied.elapsed() >= Duration::from_secs(2));
    h.settle().await;

    rolled_back_to_r1(&h, &r1_web);
    let held = status(&h);
    assert_eq!(held.last_healthy_revision.as_deref(), Some("r1"));
    assert_eq!(
        conditions(&h),
        ("False".into(), "RolledBack".into(), "True".into())
    );
    let message = held.message.unwrap();
    assert!(
        message.starts_with(
            "revision r2 not Ready within 2s: web (rollout not finished), worker (0/1 ready)"
        ),
        "{message}"
    );
    assert!(message.contains("rolled back to revision r1"), "{message}");
    let metrics = h.handles.metrics.render();
    assert!(
        metrics.contains(&format!(
            r#"stackd_rollbacks_total{{namespace="{}",stack="shop"}} 1"#,
            h.ns
        )),
        "{metrics}"
    );
    let view = h.handles.state.stack(&h.ns, "shop").unwrap();
    assert_eq!(view.phase, StackPhase::RolledBack);
    // The history (Stack status, page, API) says the bad revision was rolled back.
    let history = status(&h).history;
    let last = history.last().expect("a history entry");
    assert_eq!(
        (last.revision.as_str(), last.outcome),
        ("r2", stackd::crd::HistoryOutcome::RolledBack),
        "{history:?}"
    );
    let events = h.events().await;
    let rolled_back: Vec<_> = events
        .iter()
        .filter(|e| e["reason"] == "RolledBack" && e["type"] == "Warning")
        .collect();
    assert_eq!(rolled_back.len(), 1, "{events:#?}");
    assert!(
        rolled_back[0]["note"]
            .as_str()
            .unwrap()
            .contains("commit r2: revision r2")
    );
    every_surface_says(&h, "RolledBack").await;

    // Later polls bring the held commit again: nothing of it is applied.
    let versions = h.versions().await;
    if let Some(fake) = h.fake_or_skip("the request log of the later polls") {
        fake.clear_requests();
    }
    for _ in 0..2 {
        h.sync(vec![bad_r2(true)], PRUNE).await.unwrap();
        h.settle().await;
    }
    if let Some(fake) = h.fake_or_skip("the request log of the later polls") {
        assert_eq!(object_writes(&fake.writes()), Vec::<String>::new());
    }
    assert_eq!(h.versions().await, versions);
    assert_eq!(image(&h, "web").as_deref(), Some("nginx:1.27"));

    // A newer commit releases the hold and is applied at once.
    let services = web_1_28();
    h.sync(
        vec![with_deadline(stack(services, "r3"), "2s", true)],
        PRUNE,
    )
    .await
    .unwrap();
    h.wait_for("r3", |h| image(h, "web").as_deref() == Some("nginx:1.28"))
        .await;
    h.wait_for("the hold released", |h| status(h).held_revision.is_none())
        .await;
    assert_eq!(status(&h).phase, Some(StackPhase::Progressing));
}

#[tokio::test]
async fn with_rollback_off_the_stack_stays_in_health_timeout() {
    let h = Cluster::started(NS).await;
    healthy_r1(&h, false).await;
    h.sync(vec![bad_r2(false)], PRUNE).await.unwrap();
    h.wait_for("HealthTimeout", |h| conditions(h).1 == "HealthTimeout")
        .await;
    h.settle().await;
    let status = status(&h);
    assert_eq!(status.phase, Some(StackPhase::Failure));
    assert_eq!(
        status.message.as_deref(),
        Some("revision r2 not Ready within 2s: web (rollout not finished), worker (0/1 ready)")
    );
    assert_eq!(status.held_revision, None);
    // The bad revision's objects stay.
    assert_eq!(image(&h, "web").as_deref(), Some("nginx:broken"));
    assert!(exists(&h, "Deployment", "worker"));
    assert_eq!(conditions(&h).2, "True");
    every_surface_says(&h, "HealthTimeout").await;
}

#[tokio::test]
async fn a_stack_that_was_never_ready_has_nothing_to_roll_back_to() {
    let h = Cluster::started(NS).await;
    h.sync(vec![bad_r2(true)], PRUNE).await.unwrap();
    h.wait_for("HealthTimeout", |h| conditions(h).1 == "HealthTimeout")
        .await;
    h.settle().await;
    assert_eq!(status(&h).last_healthy_revision, None);
    assert_eq!(status(&h).held_revision, None);
    assert!(exists(&h, "Deployment", "web") && exists(&h, "Deployment", "worker"));
    assert!(
        !h.handles
            .metrics
            .render()
            .contains("stackd_rollbacks_total{")
    );
    every_surface_says(&h, "HealthTimeout").await;
}

#[tokio::test]
async fn a_newer_commit_cancels_a_health_wait_within_a_second() {
    let h = Cluster::started(NS).await;
    let waiting = with_deadline(bad_r2(true), "10m", true);
    h.sync(vec![waiting], PRUNE).await.unwrap();
    h.wait_for("r2 applied", |h| exists(h, "Deployment", "worker"))
        .await;
    h.settle().await;
    assert_eq!(conditions(&h).1, "Progressing");

    let services = web_1_28();
    let seen = Instant::now();
    h.sync(
        vec![with_deadline(stack(services, "r3"), "10m", true)],
        PRUNE,
    )
    .await
    .unwrap();
    h.wait_for("r3", |h| image(h, "web").as_deref() == Some("nginx:1.28"))
        .await;
    let latency = seen.elapsed();
    eprintln!("newer commit seen → applied: {latency:?}");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    h.wait_for("worker pruned", |h| !exists(h, "Deployment", "worker"))
        .await;
    h.wait_for("the r3 rollout", |h| {
        status(h).rollout.map(|r| r.revision).as_deref() == Some("r3")
    })
    .await;
}

#[tokio::test]
async fn a_newer_commit_cancels_a_wave_wait_within_a_second() {
    let h = Cluster::started(NS).await;
    h.sync(vec![stack(web_after_db(), "r1")], PRUNE)
        .await
        .unwrap();
    h.wait_for("web waiting", |h| !status(h).waiting.is_empty())
        .await;
    h.settle().await;
    assert!(!exists(&h, "Deployment", "web"));

    // r2 drops the dependency: web no longer waits for db, which is still not Ready.
    let services = web_1_28();
    let seen = Instant::now();
    h.sync(vec![stack(services, "r2")], PRUNE).await.unwrap();
    h.wait_for("web", |h| image(h, "web").as_deref() == Some("nginx:1.28"))
        .await;
    let latency = seen.elapsed();
    eprintln!("newer commit seen → applied past the wave: {latency:?}");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    h.wait_for("waiting cleared", |h| status(h).waiting.is_empty())
        .await;
}

#[tokio::test]
async fn a_requested_reconcile_releases_the_hold() {
    let h = Cluster::started(NS).await;
    healthy_r1(&h, true).await;
    h.sync(vec![bad_r2(true)], PRUNE).await.unwrap();
    h.wait_for("RolledBack", |h| {
        status(h).phase == Some(StackPhase::RolledBack) && !exists(h, "Deployment", "worker")
    })
    .await;
    assert_eq!(status(&h).held_revision.as_deref(), Some("r2"));

    // `stackd.dev/reconcile-requested-at` applies the held commit again.
    let stacks: Api<Stack> = Api::namespaced(h.client.clone(), &h.ns);
    let at = "2026-12-04T23:00:00Z";
    let request = json!({"metadata": {"annotations": {"stackd.dev/reconcile-requested-at": at}}});
    stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&request))
        .await
        .unwrap();
    h.wait_for("r2 applied again", |h| {
        image(h, "web").as_deref() == Some("nginx:broken") && exists(h, "Deployment", "worker")
    })
    .await;
    // The status is written after the objects: wait for it rather than race it.
    h.wait_for("the request recorded as handled", |h| {
        status(h).last_handled_reconcile_at.as_deref() == Some(at)
    })
    .await;
}

#[tokio::test]
async fn a_restart_mid_deadline_counts_from_the_recorded_start() {
    let mut h = Cluster::started(NS).await;
    let slow = with_deadline(bad_r2(false), "4s", false);
    h.sync(vec![slow], PRUNE).await.unwrap();
    h.wait_for("the rollout recorded", |h| status(h).rollout.is_some())
        .await;
    let started_at = status(&h).rollout.unwrap().started_at;
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.stop().await;
    h.start(test_options());
    let restarted = Instant::now();
    h.wait_for("HealthTimeout", |h| conditions(h).1 == "HealthTimeout")
        .await;
    // Four seconds from the first apply, not from the restart.
    assert!(
        restarted.elapsed() < Duration::from_secs(4),
        "{:?}",
        restarted.elapsed()
    );
    assert_eq!(status(&h).rollout.unwrap().started_at, started_at);
}

#[tokio::test]
async fn after_a_restart_a_missed_deadline_says_it_cannot_roll_back() {
    let mut h = Cluster::started(NS).await;
    healthy_r1(&h, true).await;
    let slow = with_deadline(bad_r2(true), "3s", true);
    h.sync(vec![slow], PRUNE).await.unwrap();
    h.wait_for("r2 applied", |h| exists(h, "Deployment", "worker"))
        .await;
    h.stop().await;
    h.start(test_options());
    h.wait_for("HealthTimeout", |h| conditions(h).1 == "HealthTimeout")
        .await;
    let message = status(&h).message.unwrap();
    assert!(
        message
            .ends_with("cannot roll back: revision r1 is no longer in memory (stackd restarted)"),
        "{message}"
    );
    // Stays on the bad revision's objects; nothing is held.
    assert!(exists(&h, "Deployment", "worker"));
    assert_eq!(status(&h).held_revision, None);
}

/// What the daemon's mirror loader does, from a fixed set of revisions: the
/// Stack spec the Git sync made of each, and the revisions asked for.
struct Revisions {
    known: Vec<DesiredStack>,
    asked: Mutex<Vec<String>>,
}

impl RevisionLoader for Revisions {
    fn load(&self, stack: &Stack, revision: &str) -> Result<(StackSpec, SecretValues), String> {
        self.asked.lock().unwrap().push(revision.to_string());
        assert_eq!(stack.metadata.name.as_deref(), Some("shop"));
        let found = self.known.iter().find(|d| d.source.revision == revision);
        let found =
            found.ok_or_else(|| "commit not readable in the mirror: not found".to_string())?;
        Ok((stack_object(REPOSITORY, found).spec, found.secrets.clone()))
    }
}

fn loader(known: Vec<DesiredStack>) -> Arc<Revisions> {
    Arc::new(Revisions {
        known,
        asked: Mutex::default(),
    })
}

#[tokio::test]
async fn after_a_restart_a_missed_deadline_rolls_back_to_the_revision_loaded_from_git() {
    let mut h = Cluster::started(NS).await;
    let r1 = healthy_r1(&h, true).await;
    let r1_web = h.object("apps/v1", "Deployment", "web").unwrap();
    let slow = with_deadline(bad_r2(true), "3s", true);
    h.sync(vec![slow.clone()], PRUNE).await.unwrap();
    h.wait_for("r2 applied", |h| exists(h, "Deployment", "worker"))
        .await;
    // The restart forgets r1; the loader renders it again from Git.
    h.stop().await;
    let revisions = loader(vec![r1.clone(), slow]);
    h.handles.revisions = Some(revisions.clone());
    h.start(test_options());
    h.wait_for("RolledBack", |h| {
        status(h).phase == Some(StackPhase::RolledBack)
    })
    .await;
    h.settle().await;
    assert_eq!(*revisions.asked.lock().unwrap(), ["r1"]);
    rolled_back_to_r1(&h, &r1_web);
    let held = status(&h);
    let message = held.message.unwrap();
    assert!(message.contains("rolled back to revision r1"), "{message}");

    // Another restart while r2 is held: r1 is loaded again and r2 is not re-applied.
    h.stop().await;
    let again = loader(vec![r1]);
    h.handles.revisions = Some(again.clone());
    let deployments = |versions: BTreeMap<String, String>| -> BTreeMap<String, String> {
        let kept = versions.into_iter();
        kept.filter(|(key, _)| key.starts_with("Deployment/"))
            .collect()
    };
    let versions = deployments(h.versions().await);
    let log = h.fake_or_skip("the request log after the restart");
    let writes_before = log.map(|fake| fake.writes().len());
    h.start(test_options());
    h.settle().await;
    assert_eq!(*again.asked.lock().unwrap(), ["r1"]);
    assert!(!exists(&h, "Deployment", "worker"));
    assert_eq!(image(&h, "web").as_deref(), Some("nginx:1.27"));
    assert_eq!(deployments(h.versions().await), versions);
    if let (Some(fake), Some(before)) = (h.cluster.fake.as_ref(), writes_before) {
        let written = write_paths(&fake.writes()[before..]);
        assert!(
            !written.iter().any(|p| p.contains("/deployments")),
            "{written:?}"
        );
    }
    assert_eq!(status(&h).phase, Some(StackPhase::RolledBack));
}

#[tokio::test]
async fn after_a_restart_a_revision_git_no_longer_has_is_not_rolled_back_to() {
    let mut h = Cluster::started(NS).await;
    healthy_r1(&h, true).await;
    let slow = with_deadline(bad_r2(true), "3s", true);
    h.sync(vec![slow], PRUNE).await.unwrap();
    h.wait_for("r2 applied", |h| exists(h, "Deployment", "worker"))
        .await;
    h.stop().await;
    h.handles.revisions = Some(loader(Vec::new()));
    h.start(test_options());
    h.wait_for("HealthTimeout", |h| conditions(h).1 == "HealthTimeout")
        .await;
    let message = status(&h).message.unwrap();
    assert!(
        message.ends_with(
            "cannot roll back: revision r1 could not be loaded again: commit not readable in the mirror: not found"
        ),
        "{message}"
    );
    assert!(exists(&h, "Deployment", "worker"));
    assert_eq!(status(&h).held_revision, None);
}

#[tokio::test]
async fn a_restart_mid_wave_resumes_the_wave() {
    let mut h = Cluster::started(NS).await;
    h.sync(vec![stack(web_after_db(), "r1")], PRUNE)
        .await
        .unwrap();
    h.wait_for("db", |h| exists(h, "Deployment", "db")).await;
    h.settle().await;
    h.stop().await;
    h.start(test_options());
    h.settle().await;
    assert!(!exists(&h, "Deployment", "web"));
    deployment_ready(&h.client, &h.ns, "db").await;
    h.wait_for("web", |h| exists(h, "Deployment", "web")).await;
}
