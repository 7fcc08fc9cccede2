//! The Stack controller end to end against the in-process API server: apply,
//! no-op passes, updates, prune, self-heal via watches, status, controls.

#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "reconcile_support/mod.rs"]
mod support;
#[path = "workload_status/mod.rs"]
mod workload_status;

use std::time::Duration;

use axum::http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use pretty_assertions::assert_eq;
use serde_json::json;
use stackd::crd::{Stack, StackPhase};
use stackd::reconcile::DesiredStack;

use workload_status::deployment_ready;

use support::{
    Harness, PRUNE, desired, needs_fake, object_writes, test_options, web_and_db, with_image,
    without, write_paths,
};

const NS: &str = "shop";
fn image(h: &Harness, kind: &str, name: &str) -> Option<String> {
    let api_version = "apps/v1";
    let object = h.object(api_version, kind, NS, name)?;
    object
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

async fn deployed(h: &Harness, project: serde_json::Value, revision: &str) {
    h.deployed(desired(NS, "shop", project, revision)).await;
}

/// The plan of the last pass over the `shop` stack, as the status page shows it.
fn last_plan(h: &Harness) -> stackd::state::PlanSummary {
    h.handles
        .state
        .stack(NS, "shop")
        .and_then(|view| view.last_plan)
        .expect("a plan for the shop stack")
}

#[tokio::test]
async fn a_fresh_stack_is_applied_and_progressing() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;

    assert!(h.object("apps/v1", "Deployment", NS, "web").is_some());
    assert!(h.object("apps/v1", "Deployment", NS, "db").is_some());
    let status = h.status(NS, "shop").unwrap();
    assert_eq!(status.phase, Some(StackPhase::Progressing));
    assert_eq!(status.service_count, Some(2));
    assert_eq!(status.ready.as_deref(), Some("0/2"));
    assert_eq!(status.last_error, None);
    let kinds: Vec<_> = status
        .inventory
        .iter()
        .map(|e| format!("{}/{}", e.kind, e.name))
        .collect();
    assert!(kinds.contains(&"Deployment/web".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"Namespace/shop".to_string()), "{kinds:?}");
    let conditions: Vec<_> = status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.observed_generation))
        .collect();
    assert_eq!(
        conditions,
        [
            ("Ready", "False", Some(1)),
            ("Reconciling", "True", Some(1)),
            ("Stalled", "False", Some(1))
        ]
    );

    let view = h.handles.state.stack(NS, "shop").unwrap();
    assert_eq!(view.phase, StackPhase::Progressing);
    assert_eq!((view.services_ready, view.services_total), (0, 2));
    assert_eq!(view.revision.as_deref(), Some("r1"));
    let plan = view.last_plan.unwrap();
    assert!(plan.created.contains(&"Deployment/web".to_string()));
    assert!(!plan.dry_run);

    let metrics = h.handles.metrics.render();
    assert!(
        metrics
            .contains(r#"stackd_stack_info{namespace="shop",phase="Progressing",stack="shop"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"stackd_objects_applied_total{kind="Deployment"} 2"#));
    let events = h.fake.objects_of("events.k8s.io/v1", "Event");
    assert!(
        events.iter().any(|e| e["reason"] == "Applied"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_reconcile_with_nothing_changed_makes_zero_writes_and_no_object_reads() {
    let mut h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;

    // A restarted controller reconciles every Stack from its initial list.
    h.stop().await;
    h.fake.clear_requests();
    let before = h.reconciles(NS, "shop");
    h.start(test_options());
    h.wait_for("a reconcile after restart", |h| {
        h.reconciles(NS, "shop") > before
    })
    .await;
    h.settle().await;
    assert_eq!(write_paths(&h.fake.writes()), Vec::<String>::new());
    // Reads are the reflectors' lists and watches only: no per-object GET.
    let gets: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::GET && !r.watch && r.path.split('/').count() > 6)
        .map(|r| r.path)
        .collect();
    assert_eq!(gets, Vec::<String>::new());

    // Syncing the same Git content again changes nothing either.
    h.sync(vec![desired(NS, "shop", web_and_db(), "r1")], PRUNE)
        .await
        .unwrap();
    h.settle().await;
    assert_eq!(write_paths(&h.fake.writes()), Vec::<String>::new());
}

#[tokio::test]
async fn a_changed_compose_file_updates_exactly_the_changed_objects() {
    let h = needs_fake!(Harness::started(test_options()).await);
    // Each commit's subject comes with the Stack, as the Git source writes it.
    let with_subject = |project, revision: &str, subject: &str| {
        let mut stack = desired(NS, "shop", project, revision);
        stack.source.subject = Some(subject.into());
        stack
    };
    h.deployed(with_subject(web_and_db(), "r1", "Add the shop"))
        .await;
    h.fake.clear_requests();

    let bumped = with_image(web_and_db(), "web", "nginx:1.28");
    h.deployed(with_subject(bumped, "r2", "Bump nginx to 1.28"))
        .await;
    assert_eq!(
        image(&h, "Deployment", "web").as_deref(),
        Some("nginx:1.28")
    );
    assert_eq!(
        object_writes(&h.fake.writes()),
        ["PATCH /apis/apps/v1/namespaces/shop/deployments/web"]
    );
    let view = h.handles.state.stack(NS, "shop").unwrap();
    let plan = view.last_plan.unwrap();
    assert_eq!(plan.updated, ["Deployment/web"]);
    assert!(plan.created.is_empty() && plan.pruned.is_empty());
    // The page's field diff: the image, old → new, read before the write.
    let image_change = plan
        .diffs
        .iter()
        .find(|d| d.object == "Deployment/web")
        .and_then(|d| {
            d.changes
                .iter()
                .find(|c| c.path == "/spec/template/spec/containers/0/image")
        })
        .unwrap_or_else(|| panic!("{:#?}", plan.diffs));
    assert_eq!(image_change.old, Some(serde_json::json!("nginx:1.27")));
    assert_eq!(image_change.new, Some(serde_json::json!("nginx:1.28")));
    // status.history on the Stack: both revisions, the newest last, with counts.
    let history = h.status(NS, "shop").unwrap().history;
    let revisions: Vec<_> = history.iter().map(|e| e.revision.as_str()).collect();
    assert_eq!(revisions, ["r1", "r2"]);
    let subjects: Vec<_> = history.iter().map(|e| e.subject.as_deref()).collect();
    assert_eq!(subjects, [Some("Add the shop"), Some("Bump nginx to 1.28")]);
    assert_eq!(history[1].outcome, stackd::crd::HistoryOutcome::Applied);
    assert_eq!(
        (history[1].created, history[1].updated, history[1].pruned),
        (0, 1, 0)
    );
    assert!(history[0].created > 0, "{history:#?}");
    assert_eq!(view.history, history);
}

#[tokio::test]
async fn a_removed_service_is_pruned() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    deployed(&h, without(web_and_db(), "db"), "r2").await;

    assert!(h.object("apps/v1", "Deployment", NS, "db").is_none());
    assert!(h.object("apps/v1", "Deployment", NS, "web").is_some());
    let status = h.status(NS, "shop").unwrap();
    assert!(!status.inventory.iter().any(|e| e.name == "db"));
    assert_eq!(status.service_count, Some(1));
    let plan = last_plan(&h);
    assert!(
        plan.pruned.contains(&"Deployment/db".to_string()),
        "{plan:?}"
    );
    assert!(
        h.handles
            .metrics
            .render()
            .contains(r#"stackd_objects_pruned_total{kind="Deployment"} 1"#)
    );
}

/// The shop stack with `spec.prune: false`, as a repository with `prune: false` gives it.
fn unpruned(project: serde_json::Value, revision: &str) -> DesiredStack {
    DesiredStack {
        prune: false,
        ..desired(NS, "shop", project, revision)
    }
}

#[tokio::test]
async fn with_pruning_off_a_removed_service_is_kept_until_pruning_is_on_again() {
    let h = needs_fake!(Harness::started(test_options()).await);
    h.deployed(unpruned(web_and_db(), "r1")).await;
    let stack = h
        .object("stackd.dev/v1alpha1", "Stack", NS, "shop")
        .unwrap();
    assert_eq!(stack["spec"]["prune"], json!(false));
    h.fake.clear_requests();

    h.deployed(unpruned(without(web_and_db(), "db"), "r2"))
        .await;
    assert!(h.object("apps/v1", "Deployment", NS, "db").is_some());
    assert!(h.object("v1", "Service", NS, "db").is_some());
    // Nothing deleted, and nothing listed to look for leftovers either.
    let requests = write_paths(&h.fake.requests());
    assert!(
        !requests.iter().any(
            |r| r.starts_with("DELETE") || r == "GET /apis/apps/v1/namespaces/shop/deployments"
        ),
        "{requests:#?}"
    );
    let status = h.status(NS, "shop").unwrap();
    assert_eq!(
        status.kept,
        ["Deployment/db", "NetworkPolicy/db", "Service/db"]
    );
    assert_eq!(status.service_count, Some(1));
    assert!(
        status
            .inventory
            .iter()
            .any(|e| e.kind == "Deployment" && e.name == "db"),
        "{:?}",
        status.inventory
    );
    let plan = last_plan(&h);
    assert_eq!(
        plan.kept,
        ["Deployment/db", "NetworkPolicy/db", "Service/db"]
    );
    assert!(plan.pruned.is_empty(), "{plan:?}");
    let events = h.fake.objects_of("events.k8s.io/v1", "Event");
    let skipped = events
        .iter()
        .find(|e| e["reason"] == "PruneSkipped")
        .unwrap_or_else(|| panic!("{events:#?}"));
    let note = skipped["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("Deployment/db") && note.contains("spec.prune: false"),
        "{note}"
    );

    // Kept objects cost nothing on later reconciles.
    h.fake.clear_requests();
    let stacks: Api<Stack> = Api::namespaced(h.client.clone(), NS);
    let nudge = json!({"metadata": {"annotations": {"example.com/nudge": "1"}}});
    stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&nudge))
        .await
        .unwrap();
    h.settle().await;
    assert_eq!(object_writes(&h.fake.writes()), Vec::<String>::new());

    // Pruning on again (the repository's setting changed): now they go.
    h.sync(
        vec![desired(NS, "shop", without(web_and_db(), "db"), "r2")],
        PRUNE,
    )
    .await
    .unwrap();
    h.wait_for("the kept Deployment to be pruned", |h| {
        h.object("apps/v1", "Deployment", NS, "db").is_none()
    })
    .await;
    h.settle().await;
    assert!(h.object("v1", "Service", NS, "db").is_none());
    let status = h.status(NS, "shop").unwrap();
    assert!(status.kept.is_empty(), "{status:?}");
    assert!(!status.inventory.iter().any(|e| e.name == "db"));
    let plan = last_plan(&h);
    assert_eq!(
        plan.pruned,
        ["Deployment/db", "NetworkPolicy/db", "Service/db"]
    );
    assert!(plan.kept.is_empty());
}

#[tokio::test]
async fn a_failed_render_prunes_nothing_and_says_failure() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    h.fake.clear_requests();

    let mut broken = desired(NS, "shop", web_and_db(), "r2");
    if let Some(web) = broken.project.services.get_mut("web") {
        web.image = None;
    }
    h.sync(vec![broken], PRUNE).await.unwrap();
    h.wait_for("the Failure status", |h| {
        h.status(NS, "shop").and_then(|s| s.phase) == Some(StackPhase::Failure)
    })
    .await;
    h.settle().await;

    let status = h.status(NS, "shop").unwrap();
    let message = status.message.unwrap();
    assert!(
        message.contains("service \"web\": image: a service needs an image"),
        "{message}"
    );
    assert_eq!(status.last_applied_revision.as_deref(), Some("r1"));
    assert!(status.inventory.iter().any(|e| e.name == "web"));
    assert_eq!(object_writes(&h.fake.writes()), Vec::<String>::new());
    assert!(h.object("apps/v1", "Deployment", NS, "web").is_some());
    // Waits for a change: no retries of the same broken input.
    let count = h.fake.writes().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.fake.writes().len(), count);
}

#[tokio::test]
async fn pruning_every_object_of_a_stack_is_refused_unless_allowed() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    h.fake.clear_requests();

    deployed_expecting_failure(&h, json!({"services": {}})).await;
    let status = h.status(NS, "shop").unwrap();
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("refusing to prune all"),
        "{status:?}"
    );
    assert_eq!(object_writes(&h.fake.writes()), Vec::<String>::new());
    assert!(h.object("apps/v1", "Deployment", NS, "web").is_some());
}

async fn deployed_expecting_failure(h: &Harness, project: serde_json::Value) {
    h.sync(vec![desired(NS, "shop", project, "r2")], PRUNE)
        .await
        .unwrap();
    h.wait_for("the Failure status", |h| {
        h.status(NS, "shop").and_then(|s| s.phase) == Some(StackPhase::Failure)
    })
    .await;
    h.settle().await;
}

#[tokio::test]
async fn a_deleted_deployment_comes_back_through_the_watch() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;

    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    api.delete("web", &DeleteParams::default()).await.unwrap();
    let started = tokio::time::Instant::now();
    h.wait_for("the Deployment to be restored", |h| {
        h.object("apps/v1", "Deployment", NS, "web").is_some()
    })
    .await;
    // The resync is an hour away: only the watch can have done this.
    assert!(started.elapsed() < Duration::from_secs(5));
    // Counted once the apply returns, just after the write lands.
    h.wait_for("the drift to be counted", |h| {
        h.handles
            .metrics
            .render()
            .contains(r#"stackd_drift_corrected_total{kind="Deployment"} 1"#)
    })
    .await;
}

#[tokio::test]
async fn a_manually_edited_image_is_reverted_but_replicas_from_an_autoscaler_stay() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;

    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    let edit = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "evil:latest"}]}}},
    });
    api.patch(
        "web",
        &PatchParams::apply("kubectl").force(),
        &Patch::Apply(&edit),
    )
    .await
    .unwrap();
    h.wait_for("the image to be reverted", |h| {
        image(h, "Deployment", "web").as_deref() == Some("nginx:1.27")
    })
    .await;
    h.settle().await;

    // compose sets no replicas: scaling by someone else is not drift.
    h.fake.clear_requests();
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "db"}, "spec": {"replicas": 3}});
    api.patch(
        "db",
        &PatchParams::apply("hpa").force(),
        &Patch::Apply(&scale),
    )
    .await
    .unwrap();
    h.settle().await;
    // The only object write is the scaler's own; the status follows the live replicas.
    assert_eq!(
        object_writes(&h.fake.writes()),
        ["PATCH /apis/apps/v1/namespaces/shop/deployments/db"]
    );
    let db = h.object("apps/v1", "Deployment", NS, "db").unwrap();
    assert_eq!(db.pointer("/spec/replicas"), Some(&json!(3)));
    let status = h.status(NS, "shop").unwrap();
    let desired: Vec<_> = status
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.desired))
        .collect();
    assert_eq!(desired, [("db", 3), ("web", 1)]);
}

#[tokio::test]
async fn an_object_annotated_prune_disabled_survives() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    let api: Api<Service> = Api::namespaced(h.client.clone(), NS);
    let keep = json!({"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "db", "annotations": {"stackd.dev/prune": "disabled"}}});
    // db has no ports: find whichever Service of db exists.
    let services: Vec<String> = h
        .fake
        .objects_of("v1", "Service")
        .iter()
        .filter_map(|s| {
            s.pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
        })
        .collect();
    let protected = services
        .iter()
        .find(|n| n.starts_with("web"))
        .unwrap()
        .clone();
    let mut keep = keep;
    keep["metadata"]["name"] = json!(protected);
    api.patch(&protected, &PatchParams::apply("ops"), &Patch::Apply(&keep))
        .await
        .unwrap();

    deployed(&h, without(web_and_db(), "web"), "r2").await;
    assert!(h.object("apps/v1", "Deployment", NS, "web").is_none());
    assert!(h.object("v1", "Service", NS, &protected).is_some());
}

#[tokio::test]
async fn adding_a_volume_turns_the_deployment_into_a_statefulset() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    let mut with_volume = web_and_db();
    with_volume["services"]["db"]["volumes"] =
        json!([{"type": "volume", "source": "data", "target": "/var/lib/postgresql/data"}]);
    with_volume["volumes"] = json!({"data": {}});
    deployed(&h, with_volume, "r2").await;
    assert!(h.object("apps/v1", "StatefulSet", NS, "db").is_some());
    assert!(h.object("apps/v1", "Deployment", NS, "db").is_none());
    let status = h.status(NS, "shop").unwrap();
    let db = status.services.iter().find(|s| s.name == "db").unwrap();
    assert_eq!(db.kind, "StatefulSet");
}

#[tokio::test]
async fn suspend_stops_reconciling() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    let stacks: Api<Stack> = Api::namespaced(h.client.clone(), NS);
    let suspend = json!({"metadata": {"annotations": {"stackd.dev/suspend": "true"}}});
    stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .unwrap();
    h.settle().await;
    h.fake.clear_requests();

    h.sync(
        vec![desired(
            NS,
            "shop",
            with_image(web_and_db(), "web", "nginx:1.28"),
            "r2",
        )],
        PRUNE,
    )
    .await
    .unwrap();
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    api.delete("db", &DeleteParams::default()).await.unwrap();
    h.settle().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        object_writes(&h.fake.writes()),
        ["DELETE /apis/apps/v1/namespaces/shop/deployments/db"]
    );
    assert_eq!(
        image(&h, "Deployment", "web").as_deref(),
        Some("nginx:1.27")
    );
    assert!(h.object("apps/v1", "Deployment", NS, "db").is_none());

    let resume = json!({"metadata": {"annotations": {"stackd.dev/suspend": null}}});
    stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .unwrap();
    h.wait_for("the update after resuming", |h| {
        image(h, "Deployment", "web").as_deref() == Some("nginx:1.28")
            && h.object("apps/v1", "Deployment", NS, "db").is_some()
    })
    .await;
}

#[tokio::test]
async fn transient_500s_and_429s_are_retried_until_they_succeed() {
    let h = needs_fake!(Harness::started(test_options()).await);
    h.fake.fail(Method::PATCH, "/deployments/web", 500, 2);
    h.fake.throttle(
        Method::PATCH,
        "/deployments/db",
        Duration::from_millis(10),
        2,
    );
    h.fake.fail(Method::PATCH, "/status", 503, 1);
    deployed(&h, web_and_db(), "r1").await;

    assert!(h.object("apps/v1", "Deployment", NS, "web").is_some());
    assert!(h.object("apps/v1", "Deployment", NS, "db").is_some());
    let status = h.status(NS, "shop").unwrap();
    assert_eq!(status.phase, Some(StackPhase::Progressing));
    assert_eq!(status.last_error, None);
    let failed: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.status >= 429)
        .map(|r| (r.status, r.path))
        .collect();
    assert!(failed.len() >= 4, "{failed:?}");
    let metrics = h.handles.metrics.render();
    assert!(
        metrics.contains(
            r#"stackd_reconcile_total{namespace="shop",result="apply_failed",stack="shop"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn dry_run_writes_nothing_and_reports_the_plan() {
    let h = needs_fake!(
        Harness::started(stackd::reconcile::ControllerOptions {
            dry_run: true,
            ..test_options()
        })
        .await
    );
    h.sync(vec![desired(NS, "shop", web_and_db(), "r1")], PRUNE)
        .await
        .unwrap();
    let sync_writes = h.fake.writes().len();
    h.wait_for("the dry-run plan", |h| {
        h.handles
            .state
            .stack(NS, "shop")
            .and_then(|v| v.last_plan)
            .is_some()
    })
    .await;
    h.settle().await;
    assert_eq!(
        h.fake.writes().len(),
        sync_writes,
        "{:?}",
        write_paths(&h.fake.writes())
    );
    assert!(h.object("apps/v1", "Deployment", NS, "web").is_none());
    let plan = last_plan(&h);
    assert!(plan.dry_run);
    assert!(
        plan.created.contains(&"Deployment/web".to_string()),
        "{plan:?}"
    );
    // The sync wrote the Namespace as rendered: the plan adopts it unchanged.
    assert!(
        !plan.created.contains(&"Namespace/shop".to_string()),
        "{plan:?}"
    );
    assert_eq!(plan.unchanged, 1, "{plan:?}");
    // The services that would run, with their desired counts, none ready.
    let services = h.handles.state.stack(NS, "shop").unwrap().services;
    let web = services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(
        (web.kind.as_str(), web.desired, web.ready),
        ("Deployment", 1, 0)
    );
}

#[tokio::test]
async fn a_reconcile_request_applies_everything_once() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    let objects = h.status(NS, "shop").unwrap().inventory.len();
    h.fake.clear_requests();

    let stacks: Api<Stack> = Api::namespaced(h.client.clone(), NS);
    let request = json!({"metadata": {"annotations": {"stackd.dev/reconcile-requested-at": "2026-11-22T05:00:00Z"}}});
    stacks
        .patch("shop", &PatchParams::default(), &Patch::Merge(&request))
        .await
        .unwrap();
    h.wait_for("the request to be handled", |h| {
        h.status(NS, "shop")
            .and_then(|s| s.last_handled_reconcile_at)
            .as_deref()
            == Some("2026-11-22T05:00:00Z")
    })
    .await;
    h.settle().await;
    let writes = object_writes(&h.fake.writes());
    assert_eq!(writes.len(), objects, "{writes:?}");
}

#[tokio::test]
async fn a_deleted_stack_leaves_the_status_page_and_the_metrics() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    assert!(h.handles.state.stack(NS, "shop").is_some());
    let stacks: Api<Stack> = Api::namespaced(h.client.clone(), NS);
    stacks
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_for("the view to go", |h| {
        h.handles.state.stack(NS, "shop").is_none()
    })
    .await;
    let metrics = h.handles.metrics.render();
    assert!(!metrics.contains(r#"stack="shop""#), "{metrics}");
    // Owned objects go with their owner (garbage collection).
    h.wait_for("the Deployment to be collected", |h| {
        h.object("apps/v1", "Deployment", NS, "web").is_none()
    })
    .await;
}

#[tokio::test]
async fn a_restored_deployment_is_reported_as_an_event() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    api.delete("db", &DeleteParams::default()).await.unwrap();
    h.wait_for("the Deployment to be restored", |h| {
        h.object("apps/v1", "Deployment", NS, "db").is_some()
    })
    .await;
    h.settle().await;
    let applied = h
        .fake
        .objects_of("events.k8s.io/v1", "Event")
        .into_iter()
        .filter(|e| e["reason"] == "Applied")
        .collect::<Vec<_>>();
    // A different note is a different Event (client-go keys a series by its
    // note too): the Event objects say what the page says.
    let mut notes: Vec<_> = applied.iter().map(|e| e["note"].clone()).collect();
    notes.sort_by_key(|n| n.to_string());
    assert_eq!(
        notes,
        ["created 0, updated 1", "created 7, updated 0"],
        "{applied:#?}"
    );
    assert!(
        applied.iter().all(|e| e["series"].is_null()),
        "{applied:#?}"
    );
    // The page keeps each one it published, for the stack's Events table.
    let events = h.handles.state.stack(NS, "shop").unwrap().events;
    let reasons: Vec<_> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["Applied", "Applied"], "{events:#?}");
    assert_eq!(events[1].kind, "Normal");
    assert_eq!(events[1].note, "created 0, updated 1", "{events:#?}");
}

#[tokio::test]
async fn a_new_published_service_type_reconciles_every_stack() {
    use stackd::render::{PublishedServiceType, RenderOptions};
    let (settings, receiver) = tokio::sync::watch::channel(RenderOptions::default());
    let h = needs_fake!(
        Harness::started(stackd::reconcile::ControllerOptions {
            render: receiver,
            ..test_options()
        })
        .await
    );
    deployed(&h, web_and_db(), "r1").await;
    let service_type = |h: &Harness| {
        h.object("v1", "Service", NS, "web-published")
            .map(|s| s["spec"]["type"].clone())
    };
    assert_eq!(service_type(&h), Some(serde_json::json!("LoadBalancer")));

    // A configuration reload: no commit, no Stack change, and still applied.
    settings.send_replace(RenderOptions {
        published_service_type: PublishedServiceType::NodePort,
        ..RenderOptions::default()
    });
    h.wait_for("the NodePort Service", |h| {
        service_type(h) == Some(serde_json::json!("NodePort"))
    })
    .await;
}

/// The Ready reason, and the Reconciling and Stalled conditions as (status, reason).
fn conditions(h: &Harness) -> Option<Vec<(String, String, String)>> {
    let status = h.status(NS, "shop")?;
    Some(
        status
            .conditions
            .into_iter()
            .map(|c| (c.type_, c.status, c.reason))
            .collect(),
    )
}

fn own(kind: &str, status: &str, reason: &str) -> (String, String, String) {
    (kind.into(), status.into(), reason.into())
}

#[tokio::test]
async fn a_rejected_object_stalls_and_a_failing_server_is_retried() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;

    // A 422 cannot pass by retrying: ApplyFailed and Stalled, until a change.
    h.fake.fail(Method::PATCH, "/deployments/web", 422, 1000);
    h.sync(
        vec![desired(
            NS,
            "shop",
            with_image(web_and_db(), "web", "nginx:1.28"),
            "r2",
        )],
        PRUNE,
    )
    .await
    .unwrap();
    let stalled = vec![
        own("Ready", "False", "ApplyFailed"),
        own("Reconciling", "False", "ApplyFailed"),
        own("Stalled", "True", "ApplyFailed"),
    ];
    h.wait_for("ApplyFailed and Stalled", |h| {
        conditions(h) == Some(stalled.clone())
    })
    .await;
    let status = h.status(NS, "shop").unwrap();
    assert_eq!(status.phase, Some(StackPhase::Failure));
    assert_eq!(status.last_applied_revision.as_deref(), Some("r1"));
    assert_eq!(status.last_attempted_revision.as_deref(), Some("r2"));
    let view = h.handles.state.stack(NS, "shop").unwrap();
    assert_eq!(view.reason, Some(stackd::reason::Reason::ApplyFailed));
    let metrics = h.handles.metrics.render();
    assert!(
        metrics.contains(
            r#"stackd_stack_ready{namespace="shop",reason="ApplyFailed",stack="shop"} 1"#
        ),
        "{metrics}"
    );

    // A server answering 500 may recover: Reconciling with retries, not Stalled.
    // (Not 503: kube's client retries those itself, with its own backoff.)
    h.fake.clear_faults();
    h.fake.fail(Method::PATCH, "/deployments/web", 500, 1000);
    h.sync(
        vec![desired(
            NS,
            "shop",
            with_image(web_and_db(), "web", "nginx:1.29"),
            "r3",
        )],
        PRUNE,
    )
    .await
    .unwrap();
    let retrying = vec![
        own("Ready", "False", "ApplyFailed"),
        own("Reconciling", "True", "ProgressingWithRetry"),
        own("Stalled", "False", "ApplyFailed"),
    ];
    h.wait_for("ApplyFailed while retrying", |h| {
        conditions(h) == Some(retrying.clone())
    })
    .await;

    // The server recovers: the stack does too.
    h.fake.clear_faults();
    h.wait_for("r3 applied", |h| {
        h.status(NS, "shop").and_then(|s| s.last_applied_revision) == Some("r3".into())
    })
    .await;
    assert_eq!(
        conditions(&h).unwrap()[0],
        own("Ready", "False", "Progressing")
    );
}

/// (phase, lastAppliedRevision, Ready condition status) of a Stack object.
fn summary(stack: &serde_json::Value) -> (Option<StackPhase>, Option<String>, Option<String>) {
    let status: stackd::crd::StackStatus = stack
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone());
    (status.phase, status.last_applied_revision, ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_just_written_is_not_available_until_the_watch_brings_it() {
    // Holding the watch back needs the in-process API server.
    let Some(h) = Harness::started(test_options()).await else {
        eprintln!("real cluster: skipping (holds the API server's watch events back)");
        return;
    };
    let web = json!({"services": {"web": {"image": "nginx:1.27"}}});
    deployed(&h, web.clone(), "r1").await;
    deployment_ready(&h.client, NS, "web").await;
    h.wait_for("r1 to be Available", |h| {
        h.status(NS, "shop").and_then(|s| s.phase) == Some(StackPhase::Available)
    })
    .await;

    // The controller's cache still holds r1's Deployment, Ready, when it
    // judges the health right after applying r2's.
    let mut changes = h.fake.changes();
    h.fake.hold_watch_events("Deployment");
    let r2 = desired(NS, "shop", with_image(web, "web", "nginx:1.28"), "r2");
    h.sync(vec![r2], PRUNE).await.unwrap();
    h.wait_for("r2 to be applied", |h| {
        h.status(NS, "shop")
            .and_then(|s| s.last_applied_revision)
            .as_deref()
            == Some("r2")
    })
    .await;
    // Released well within the controller's 2 s recheck, which (the watch
    // being this late only here) would read the cache's r1 status again.
    h.fake.release_watch_events();
    h.settle().await;
    assert_eq!(
        image(&h, "Deployment", "web").as_deref(),
        Some("nginx:1.28")
    );

    // Every state the Stack went through before r2's pods are up.
    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        if change.rt.kind == "Stack" {
            seen.push(summary(&change.object));
        }
    }
    let at_r2: Vec<_> = seen
        .iter()
        .filter(|(_, revision, _)| revision.as_deref() == Some("r2"))
        .collect();
    assert!(!at_r2.is_empty(), "no status for r2: {seen:?}");
    assert!(
        at_r2.iter().all(|(phase, _, ready)| {
            *phase != Some(StackPhase::Available) && ready.as_deref() != Some("True")
        }),
        "r2 read as Available before its Deployment was ready: {seen:?}"
    );
    assert_eq!(
        h.status(NS, "shop").and_then(|s| s.phase),
        Some(StackPhase::Progressing)
    );

    deployment_ready(&h.client, NS, "web").await;
    h.wait_for("r2 to be Available", |h| {
        h.status(NS, "shop").and_then(|s| s.phase) == Some(StackPhase::Available)
    })
    .await;
}
