//! The apply engine against the in-process API server.

#[path = "fake_api/mod.rs"]
mod fake_api;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use stackd::crd::InventoryEntry;
use stackd::reconcile::apply::{Action, Applier, ApplyOptions, Outcome, StackRef, entry_for, plan};
use stackd::render::object::{Object, Rendered};

use fake_api::FakeApiServer;

const STACK: StackRef<'static> = StackRef {
    name: "shop",
    namespace: "apps",
};

fn labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("stackd.dev/stack".to_string(), "shop".to_string())]);
    labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    labels
}

fn config_map(name: &str, value: &str) -> Object {
    Object::ConfigMap(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "apps", "labels": labels(&[])},
            "data": {"value": value},
        }))
        .unwrap(),
    )
}

fn deployment(name: &str, selector: &str, image: &str) -> Object {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "apps", "labels": labels(&[])},
        "spec": {
            "selector": {"matchLabels": {"app": selector}},
            "template": {
                "metadata": {"labels": labels(&[("app", selector)])},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        },
    }))
    .unwrap();
    Object::Deployment(deployment)
}

fn service(name: &str) -> Object {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "apps", "labels": labels(&[])},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    Object::Service(service)
}

fn rendered(objects: Vec<Object>) -> Rendered {
    let mut rendered = Rendered {
        objects,
        warnings: vec![],
    };
    rendered.sort();
    rendered
}

fn summary(plan: &stackd::reconcile::apply::Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| format!("{:?} {} {}", s.action, s.target.kind, s.target.name))
        .collect()
}

async fn started() -> (FakeApiServer, Applier) {
    let (server, client) = FakeApiServer::start().await;
    server.seed_namespace("apps");
    (server, Applier::new(client, ApplyOptions::default()))
}

fn stored(server: &FakeApiServer, api_version: &str, kind: &str, name: &str) -> Option<Value> {
    server.object(api_version, kind, "apps", name)
}

#[test]
fn plan_compares_content_hashes_with_the_inventory() {
    let web = deployment("web", "web", "nginx:1");
    let objects = rendered(vec![
        config_map("settings", "a"),
        web.clone(),
        config_map("new", "n"),
    ]);
    let mut stale_web = entry_for("apps", &web);
    stale_web.hash = Some("0000000000".into());
    let inventory = vec![
        entry_for("apps", &config_map("settings", "a")),
        stale_web,
        entry_for("apps", &service("old")),
        entry_for("apps", &config_map("gone", "g")),
    ];
    let plan = plan("apps", &objects, &inventory);
    assert_eq!(
        summary(&plan),
        [
            "Create ConfigMap new",
            "Unchanged ConfigMap settings",
            "Update Deployment web",
            "Delete Service old",
            "Delete ConfigMap gone",
        ]
    );
    assert_eq!(plan.count(Action::Delete), 2);
}

#[tokio::test]
async fn first_apply_creates_and_a_repeat_writes_nothing() {
    let (server, applier) = started().await;
    let objects = rendered(vec![
        config_map("settings", "a"),
        service("web"),
        deployment("web", "web", "nginx:1"),
    ]);
    let report = applier.apply(STACK, &objects, &[]).await;
    assert!(report.is_success(), "{:?}", report.errors);
    assert_eq!(report.plan.count(Action::Create), 3);
    assert_eq!(report.inventory.len(), 3);
    let deployment =
        stored(&server, "apps/v1", "Deployment", "web").expect("the Deployment exists");
    assert_eq!(
        deployment["metadata"]["managedFields"][0]["manager"],
        "stackd"
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
    assert!(stored(&server, "v1", "Service", "web").unwrap()["spec"]["clusterIP"].is_string());

    server.clear_requests();
    let again = applier.apply(STACK, &objects, &report.inventory).await;
    assert!(again.is_success(), "{:?}", again.errors);
    assert_eq!(again.plan.count(Action::Unchanged), 3);
    assert_eq!(again.inventory, report.inventory);
    assert_eq!(
        server.writes(),
        vec![],
        "a no-op reconcile performs no writes"
    );
}

#[tokio::test]
async fn changed_objects_are_applied_and_removed_ones_pruned() {
    let (server, applier) = started().await;
    let first = rendered(vec![
        config_map("settings", "a"),
        config_map("extra", "x"),
        deployment("web", "web", "nginx:1"),
    ]);
    let report = applier.apply(STACK, &first, &[]).await;
    let second = rendered(vec![
        config_map("settings", "b"),
        deployment("web", "web", "nginx:1"),
    ]);
    let report = applier.apply(STACK, &second, &report.inventory).await;
    assert!(report.is_success(), "{:?}", report.errors);
    assert_eq!(
        report.outcome("ConfigMap", "settings"),
        Some(Outcome::Applied)
    );
    assert_eq!(
        report.outcome("Deployment", "web"),
        Some(Outcome::Unchanged)
    );
    assert_eq!(report.outcome("ConfigMap", "extra"), Some(Outcome::Deleted));
    assert_eq!(
        stored(&server, "v1", "ConfigMap", "settings").unwrap()["data"]["value"],
        "b"
    );
    assert!(stored(&server, "v1", "ConfigMap", "extra").is_none());
    let names: Vec<&str> = report.inventory.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["web", "settings"]);
}

#[tokio::test]
async fn pruning_spares_opted_out_objects_and_volume_claims() {
    let (server, applier) = started().await;
    let keep = config_map("keep", "k");
    let report = applier
        .apply(
            STACK,
            &rendered(vec![config_map("settings", "a"), keep.clone()]),
            &[],
        )
        .await;
    let client = server.client();
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "apps");
    let annotate = json!({"metadata": {"annotations": {"stackd.dev/prune": "disabled"}}});
    api.patch(
        "keep",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&annotate),
    )
    .await
    .unwrap();
    let mut inventory = report.inventory.clone();
    inventory.push(InventoryEntry {
        api_version: "v1".into(),
        kind: "PersistentVolumeClaim".into(),
        namespace: Some("apps".into()),
        name: "data".into(),
        hash: None,
    });
    let report = applier
        .apply(
            STACK,
            &rendered(vec![config_map("settings", "a")]),
            &inventory,
        )
        .await;
    assert!(report.is_success(), "{:?}", report.errors);
    assert_eq!(
        report.outcome("ConfigMap", "keep"),
        Some(Outcome::KeptPruneDisabled)
    );
    assert_eq!(
        report.outcome("PersistentVolumeClaim", "data"),
        Some(Outcome::KeptVolumeClaim)
    );
    assert!(stored(&server, "v1", "ConfigMap", "keep").is_some());
    assert_eq!(
        report.inventory.len(),
        1,
        "kept objects leave the inventory"
    );
}

#[tokio::test]
async fn labelled_objects_missing_from_the_inventory_are_pruned() {
    let (server, applier) = started().await;
    let leftover = |name: &str, stack: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "apps", "labels": {"stackd.dev/stack": stack}}})
    };
    server.seed(&leftover("lost", "shop"));
    server.seed(&leftover("neighbour", "blog"));
    let report = applier
        .apply(STACK, &rendered(vec![config_map("settings", "a")]), &[])
        .await;
    assert!(report.is_success(), "{:?}", report.errors);
    assert_eq!(report.outcome("ConfigMap", "lost"), Some(Outcome::Deleted));
    assert!(stored(&server, "v1", "ConfigMap", "lost").is_none());
    assert!(stored(&server, "v1", "ConfigMap", "neighbour").is_some());
}

#[tokio::test]
async fn pruning_everything_is_refused_unless_allowed() {
    let (server, client) = FakeApiServer::start().await;
    server.seed_namespace("apps");
    let applier = Applier::new(client.clone(), ApplyOptions::default());
    let report = applier
        .apply(STACK, &rendered(vec![config_map("settings", "a")]), &[])
        .await;
    let refused = applier
        .apply(STACK, &rendered(vec![]), &report.inventory)
        .await;
    assert_eq!(
        refused.errors.iter().map(|e| e.label()).collect::<Vec<_>>(),
        ["would_prune_everything"]
    );
    assert!(stored(&server, "v1", "ConfigMap", "settings").is_some());
    assert_eq!(
        refused.inventory, report.inventory,
        "the inventory is kept for a later run"
    );

    let allowed = Applier::new(
        client,
        ApplyOptions {
            allow_prune_all: true,
            ..Default::default()
        },
    );
    let pruned = allowed
        .apply(STACK, &rendered(vec![]), &report.inventory)
        .await;
    assert!(pruned.is_success(), "{:?}", pruned.errors);
    assert!(stored(&server, "v1", "ConfigMap", "settings").is_none());
    assert!(pruned.inventory.is_empty());
}

#[tokio::test]
async fn an_immutable_field_change_recreates_the_object() {
    let (server, applier) = started().await;
    let report = applier
        .apply(
            STACK,
            &rendered(vec![deployment("web", "web", "nginx:1")]),
            &[],
        )
        .await;
    let before = stored(&server, "apps/v1", "Deployment", "web").unwrap();
    let moved = rendered(vec![deployment("web", "web-v2", "nginx:1")]);
    let report = applier.apply(STACK, &moved, &report.inventory).await;
    assert!(report.is_success(), "{:?}", report.errors);
    assert_eq!(
        report.outcome("Deployment", "web"),
        Some(Outcome::Recreated)
    );
    let after = stored(&server, "apps/v1", "Deployment", "web").unwrap();
    assert_ne!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["spec"]["selector"]["matchLabels"]["app"], "web-v2");
}

#[tokio::test]
async fn dry_run_plans_without_writing() {
    let (server, client) = FakeApiServer::start().await;
    server.seed_namespace("apps");
    let applier = Applier::new(
        client,
        ApplyOptions {
            dry_run: true,
            ..Default::default()
        },
    );
    server.clear_requests();
    let report = applier
        .apply(STACK, &rendered(vec![config_map("settings", "a")]), &[])
        .await;
    assert!(report.is_success(), "{:?}", report.errors);
    assert_eq!(summary(&report.plan), ["Create ConfigMap settings"]);
    assert_eq!(
        report.outcome("ConfigMap", "settings"),
        Some(Outcome::Planned)
    );
    assert_eq!(server.writes(), vec![]);
    assert!(stored(&server, "v1", "ConfigMap", "settings").is_none());
}

#[tokio::test]
async fn a_failed_apply_is_reported_and_skips_pruning() {
    let (server, applier) = started().await;
    let report = applier
        .apply(
            STACK,
            &rendered(vec![config_map("settings", "a"), config_map("old", "o")]),
            &[],
        )
        .await;
    server.fail(http::Method::PATCH, "/configmaps/settings", 500, 1);
    let failed = applier
        .apply(
            STACK,
            &rendered(vec![config_map("settings", "b")]),
            &report.inventory,
        )
        .await;
    assert_eq!(
        failed.errors.iter().map(|e| e.label()).collect::<Vec<_>>(),
        ["apply"]
    );
    assert_eq!(
        failed.outcome("ConfigMap", "settings"),
        Some(Outcome::Failed)
    );
    assert_eq!(failed.outcome("ConfigMap", "old"), Some(Outcome::Failed));
    assert!(
        stored(&server, "v1", "ConfigMap", "old").is_some(),
        "no pruning after a failure"
    );
    assert_eq!(
        failed.inventory, report.inventory,
        "the old entries stay so the next run retries"
    );
}

#[tokio::test]
async fn drift_repair_reapplies_unchanged_objects() {
    let (server, client) = FakeApiServer::start().await;
    server.seed_namespace("apps");
    let objects = rendered(vec![config_map("settings", "a"), config_map("other", "o")]);
    let report = Applier::new(client.clone(), ApplyOptions::default())
        .apply(STACK, &objects, &[])
        .await;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), "apps");
    api.delete("settings", &Default::default()).await.unwrap();
    let untouched_version =
        stored(&server, "v1", "ConfigMap", "other").unwrap()["metadata"]["resourceVersion"].clone();

    let resync = Applier::new(
        client,
        ApplyOptions {
            reapply_unchanged: true,
            ..Default::default()
        },
    );
    let repaired = resync.apply(STACK, &objects, &report.inventory).await;
    assert!(repaired.is_success(), "{:?}", repaired.errors);
    assert_eq!(repaired.plan.count(Action::Unchanged), 2);
    assert_eq!(
        repaired.outcome("ConfigMap", "settings"),
        Some(Outcome::Applied)
    );
    assert_eq!(
        stored(&server, "v1", "ConfigMap", "settings").unwrap()["data"]["value"],
        "a"
    );
    let other = stored(&server, "v1", "ConfigMap", "other").unwrap();
    assert_eq!(
        other["metadata"]["resourceVersion"], untouched_version,
        "re-applying identical content is a no-op"
    );
}
