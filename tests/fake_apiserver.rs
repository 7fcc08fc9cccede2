//! The fake API server, exercised through the real kube client. With
//! `KUBECONFIG_E2E` set the same tests run against a real cluster (the Stack
//! CRD must be installed), skipping the checks that need the fake's internals.

#[path = "fake_api/mod.rs"]
mod fake_api;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    PropagationPolicy, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube::{Client, Discovery};
use serde_json::{Value, json};
use stackd::crd::{Stack, StackPhase, StackSpec, StackStatus};

use fake_api::{FakeApiServer, TestCluster, test_client};

/// A fresh namespace with a unique name, so tests can share a real cluster.
async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let name = fake_api::unique(prefix);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    name
}

async fn cleanup(cluster: &TestCluster, namespace: &str) {
    cluster.delete_namespaces(&[namespace.to_string()]).await;
}

fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": labels.iter().copied().collect::<BTreeMap<_, _>>(),
        },
        "data": data.iter().copied().collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

fn deployment(name: &str, app: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }))
    .unwrap()
}

fn apply_as(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

fn rv<K: kube::Resource>(object: &K) -> String {
    object.meta().resource_version.clone().unwrap_or_default()
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// An update (PUT) by `kubectl` setting `key` in a ConfigMap's data.
async fn kubectl_sets(api: &Api<ConfigMap>, name: &str, key: &str, value: &str) {
    let mut current = api.get(name).await.unwrap();
    let data = current.data.get_or_insert_default();
    data.insert(key.into(), value.into());
    let params = PostParams {
        field_manager: Some("kubectl".into()),
        ..Default::default()
    };
    api.replace(name, &params, &current).await.unwrap();
}

#[tokio::test]
async fn discovery_lists_every_served_kind() {
    let (_server, client) = FakeApiServer::start().await;
    let discovery = Discovery::new(client).run().await.unwrap();
    let mut found: Vec<String> = discovery
        .groups()
        .flat_map(|group| group.recommended_resources())
        .map(|(resource, _)| format!("{}/{}", resource.api_version, resource.kind))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "apps/v1/DaemonSet",
            "apps/v1/Deployment",
            "apps/v1/StatefulSet",
            "batch/v1/Job",
            "coordination.k8s.io/v1/Lease",
            "events.k8s.io/v1/Event",
            "networking.k8s.io/v1/Ingress",
            "networking.k8s.io/v1/NetworkPolicy",
            "stackd.dev/v1alpha1/Stack",
            "v1/ConfigMap",
            "v1/Event",
            "v1/Namespace",
            "v1/Secret",
            "v1/Service",
        ]
    );
}

#[tokio::test]
async fn create_get_and_list_with_label_selectors() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "list").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let pp = PostParams::default();
    api.create(
        &pp,
        &config_map("a", &[("tier", "web"), ("env", "prod")], &[]),
    )
    .await
    .unwrap();
    api.create(
        &pp,
        &config_map("b", &[("tier", "db"), ("env", "prod")], &[]),
    )
    .await
    .unwrap();
    api.create(&pp, &config_map("c", &[("tier", "web")], &[]))
        .await
        .unwrap();

    let fetched = api.get("a").await.unwrap();
    assert_eq!(fetched.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert!(fetched.metadata.uid.is_some() && fetched.metadata.creation_timestamp.is_some());

    let names = |selector: &'static str| {
        let api = api.clone();
        async move {
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap();
            assert!(list.items.iter().all(|cm| !rv(cm).is_empty()));
            let mut names: Vec<String> = list
                .items
                .into_iter()
                .filter_map(|cm| cm.metadata.name)
                .collect();
            names.retain(|n| n != "kube-root-ca.crt");
            names
        }
    };
    assert_eq!(names("tier=web").await, ["a", "c"]);
    assert_eq!(names("tier==web,env=prod").await, ["a"]);
    assert_eq!(names("tier!=web,tier").await, ["b"]);
    assert_eq!(names("env").await, ["a", "b"]);
    assert_eq!(names("!env,tier").await, ["c"]);
    assert_eq!(names("tier in (db, web),env notin (prod)").await, ["c"]);
    assert_eq!(names("tier notin (web)").await, ["b"]);

    let list = api.list(&ListParams::default()).await.unwrap();
    assert!(
        list.metadata
            .resource_version
            .is_some_and(|v| !v.is_empty())
    );
    let everywhere: Api<ConfigMap> = Api::all(cluster.client.clone());
    let all = everywhere
        .list(&ListParams::default().labels("tier"))
        .await
        .unwrap();
    assert!(
        all.items
            .iter()
            .filter(|cm| cm.metadata.namespace.as_deref() == Some(&ns))
            .count()
            == 3
    );

    let paged = api
        .list(&ListParams::default().labels("tier").limit(2))
        .await
        .unwrap();
    assert_eq!(paged.items.len(), 2);
    let token = paged.metadata.continue_.clone().expect("a continue token");
    let rest = api
        .list(
            &ListParams::default()
                .labels("tier")
                .limit(2)
                .continue_token(&token),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);

    let exists = api_error(api.create(&pp, &config_map("a", &[], &[])).await);
    assert_eq!(
        (exists.code, exists.reason.as_str()),
        (409, "AlreadyExists")
    );
    let missing = api_error(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    let invalid = api_error(api.create(&pp, &config_map("Not_Valid", &[], &[])).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    let nowhere: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "no-such-namespace-x1");
    let no_ns = api_error(nowhere.create(&pp, &config_map("a", &[], &[])).await);
    assert_eq!((no_ns.code, no_ns.reason.as_str()), (404, "NotFound"));
    cleanup(&cluster, &ns).await;
}

#[tokio::test]
async fn server_side_apply_creates_and_a_repeat_is_a_no_op() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "ssa").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let params = apply_as("stackd").force();
    let created = api
        .patch("web", &params, &Patch::Apply(deployment("web", "web", 2)))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let entry = &created.metadata.managed_fields.as_ref().unwrap()[0];
    assert_eq!(
        (entry.manager.as_deref(), entry.operation.as_deref()),
        (Some("stackd"), Some("Apply"))
    );

    if let Some(fake) = cluster.fake_or_skip("request log") {
        fake.clear_requests();
    }
    let again = api
        .patch("web", &params, &Patch::Apply(deployment("web", "web", 2)))
        .await
        .unwrap();
    assert_eq!(rv(&again), rv(&created));
    assert_eq!(again.metadata.generation, Some(1));
    if let Some(fake) = cluster.fake_or_skip("request log") {
        let logged = fake.requests();
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0].method, "PATCH");
        assert!(
            logged[0].query.contains("fieldManager=stackd"),
            "{}",
            logged[0].query
        );
    }

    let scaled = api
        .patch("web", &params, &Patch::Apply(deployment("web", "web", 3)))
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
    assert_ne!(rv(&scaled), rv(&created));
    let relabelled = {
        let mut d = deployment("web", "web", 3);
        d.metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "a".into());
        api.patch("web", &params, &Patch::Apply(d)).await.unwrap()
    };
    assert_eq!(
        relabelled.metadata.generation,
        Some(2),
        "metadata changes do not bump generation"
    );
    cleanup(&cluster, &ns).await;
}

#[tokio::test]
async fn server_side_apply_removes_omitted_fields_and_keeps_other_managers_fields() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "own").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let stackd = apply_as("stackd").force();
    let first = config_map("cfg", &[("a", "1"), ("b", "2")], &[("x", "1"), ("y", "2")]);
    api.patch("cfg", &stackd, &Patch::Apply(first))
        .await
        .unwrap();

    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"c": "3"}}});
    api.patch("cfg", &apply_as("other"), &Patch::Apply(&other))
        .await
        .unwrap();

    let second = config_map("cfg", &[("a", "1")], &[("x", "1")]);
    let result = api
        .patch("cfg", &stackd, &Patch::Apply(second))
        .await
        .unwrap();
    let labels = result.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels,
        BTreeMap::from([("a".into(), "1".into()), ("c".into(), "3".into())])
    );
    assert_eq!(
        result.data,
        Some(BTreeMap::from([("x".into(), "1".into())]))
    );

    // Another manager changing stackd's field conflicts unless forced.
    let grab = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"x": "9"}});
    let conflict = api_error(
        api.patch("cfg", &apply_as("other"), &Patch::Apply(&grab))
            .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(conflict.message.contains(".data.x"), "{}", conflict.message);
    // Applying the same value is shared ownership, not a conflict.
    let same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"x": "1"}});
    api.patch("cfg", &apply_as("third"), &Patch::Apply(&same))
        .await
        .unwrap();
    let forced = api
        .patch("cfg", &apply_as("other").force(), &Patch::Apply(&grab))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["x"], "9");

    // An update (PUT) by someone else keeps stackd from removing fields it never owned.
    kubectl_sets(&api, "cfg", "manual", "yes").await;
    let third = config_map("cfg", &[("a", "1")], &[]);
    let result = api
        .patch("cfg", &stackd, &Patch::Apply(third))
        .await
        .unwrap();
    assert_eq!(
        result.data.unwrap().get("manual").map(String::as_str),
        Some("yes")
    );
    cleanup(&cluster, &ns).await;
}

#[tokio::test]
async fn ssa_dry_run_and_other_dry_runs_store_nothing() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "dry").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let dry_apply = apply_as("stackd").force().dry_run();
    let preview = api
        .patch(
            "cfg",
            &dry_apply,
            &Patch::Apply(config_map("cfg", &[], &[("k", "v")])),
        )
        .await
        .unwrap();
    assert_eq!(preview.data.unwrap()["k"], "v");
    assert!(api.get_opt("cfg").await.unwrap().is_none());

    let dry_create = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry_create, &config_map("cfg", &[], &[]))
        .await
        .unwrap();
    assert!(api.get_opt("cfg").await.unwrap().is_none());

    let stored = api
        .create(
            &PostParams::default(),
            &config_map("cfg", &[], &[("k", "v")]),
        )
        .await
        .unwrap();
    let merge = Patch::Merge(json!({"data": {"k": "changed"}}));
    api.patch("cfg", &PatchParams::default().dry_run(), &merge)
        .await
        .unwrap();
    api.delete("cfg", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    let after = api.get("cfg").await.unwrap();
    assert_eq!(
        (rv(&after), after.data.unwrap()["k"].clone()),
        (rv(&stored), "v".to_string())
    );

    if let Some(fake) = cluster.fake_or_skip("request log") {
        let dry: Vec<_> = fake.requests().into_iter().filter(|r| r.dry_run).collect();
        assert_eq!(dry.len(), 4, "{dry:?}");
        let namespace_path = format!("/namespaces/{ns}/");
        let writes: Vec<_> = fake
            .writes()
            .into_iter()
            .filter(|r| r.path.contains(&namespace_path))
            .collect();
        assert_eq!(
            writes.len(),
            1,
            "only the real create counts as a write: {writes:?}"
        );
    }
    cleanup(&cluster, &ns).await;
}

#[tokio::test]
async fn stale_update_conflicts() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "stale").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let pp = PostParams::default();
    let original = api
        .create(&pp, &config_map("cfg", &[], &[("k", "1")]))
        .await
        .unwrap();
    let mut first = original.clone();
    first
        .data
        .get_or_insert_default()
        .insert("k".into(), "2".into());
    let updated = api.replace("cfg", &pp, &first).await.unwrap();
    assert_ne!(rv(&updated), rv(&original));

    let mut stale = original.clone();
    stale
        .data
        .get_or_insert_default()
        .insert("k".into(), "3".into());
    let conflict = api_error(api.replace("cfg", &pp, &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(api.get("cfg").await.unwrap().data.unwrap()["k"], "2");
    cleanup(&cluster, &ns).await;
}

#[tokio::test]
async fn merge_and_json_patches_apply() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "patch").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &config_map("cfg", &[("a", "1")], &[("k", "v"), ("gone", "x")]),
    )
    .await
    .unwrap();
    let merged = api
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"gone": null, "new": "n"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        BTreeMap::from([("k".into(), "v".into()), ("new".into(), "n".into())])
    );
    let ops = json!([
        {"op": "test", "path": "/data/k", "value": "v"},
        {"op": "replace", "path": "/data/k", "value": "w"},
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "remove", "path": "/data/new"},
    ]);
    let patched = api
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(ops).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap(),
        BTreeMap::from([("k".into(), "w".into())])
    );
    assert_eq!(patched.metadata.labels.unwrap()["b"], "2");
    let failing = json!([{"op": "test", "path": "/data/k", "value": "nope"}]);
    let error = api_error(
        api.patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(failing).unwrap()),
        )
        .await,
    );
    assert_eq!(error.code, 422);
    cleanup(&cluster, &ns).await;
}

#[tokio::test]
async fn immutable_fields_are_rejected() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "immut").await;
    let params = apply_as("stackd").force();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    deployments
        .patch("web", &params, &Patch::Apply(deployment("web", "web", 1)))
        .await
        .unwrap();
    let mut moved = deployment("web", "web", 1);
    moved.spec.as_mut().unwrap().selector.match_labels =
        Some(BTreeMap::from([("app".into(), "other".into())]));
    moved
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels = Some(BTreeMap::from([("app".into(), "other".into())]));
    let invalid = api_error(
        deployments
            .patch("web", &params, &Patch::Apply(moved))
            .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert!(
        invalid.message.contains("spec.selector"),
        "{}",
        invalid.message
    );

    let services: Api<Service> = Api::namespaced(cluster.client.clone(), &ns);
    let service = |ip: Option<&str>| {
        let mut spec = json!({"selector": {"app": "web"}, "ports": [{"port": 80}]});
        if let Some(ip) = ip {
            spec["clusterIP"] = json!(ip);
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec})
    };
    let created = services
        .patch("web", &params, &Patch::Apply(service(None)))
        .await
        .unwrap();
    let ip = created
        .spec
        .unwrap()
        .cluster_ip
        .expect("a clusterIP is assigned");
    assert!(!ip.is_empty() && ip != "None");
    let reapplied = services
        .patch("web", &params, &Patch::Apply(service(None)))
        .await
        .unwrap();
    assert_eq!(reapplied.spec.unwrap().cluster_ip, Some(ip.clone()));
    let moved_ip = api_error(
        services
            .patch("web", &params, &Patch::Apply(service(Some("None"))))
            .await,
    );
    assert_eq!(moved_ip.code, 422);
    let headless = services
        .patch(
            "db",
            &params,
            &Patch::Apply({
                let mut s = service(Some("None"));
                s["metadata"]["name"] = json!("db");
                s
            }),
        )
        .await
        .unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));

    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let job = |image: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"}, "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": image}]}}}})
    };
    jobs.patch("migrate", &params, &Patch::Apply(job("tool:1")))
        .await
        .unwrap();
    let changed = api_error(
        jobs.patch("migrate", &params, &Patch::Apply(job("tool:2")))
            .await,
    );
    assert_eq!((changed.code, changed.reason.as_str()), (422, "Invalid"));
    cleanup(&cluster, &ns).await;
}

fn stack(name: &str, suspend: bool) -> Stack {
    let mut stack = Stack::new(
        name,
        StackSpec {
            suspend,
            ..Default::default()
        },
    );
    stack.status = Some(StackStatus {
        message: Some("from the main resource".into()),
        ..Default::default()
    });
    stack
}

#[tokio::test]
async fn status_subresource_is_isolated() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "status").await;
    let api: Api<Stack> = Api::namespaced(cluster.client.clone(), &ns);
    let created = api
        .create(&PostParams::default(), &stack("shop", false))
        .await
        .unwrap();
    assert_eq!(created.status, None, "status is dropped on create");

    let status =
        json!({"status": {"phase": "Available", "message": "ok"}, "spec": {"suspend": true}});
    let patched = api
        .patch_status("shop", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.phase),
        Some(StackPhase::Available)
    );
    assert!(!patched.spec.suspend, "status writes do not touch spec");
    assert_eq!(patched.metadata.generation, Some(1));

    let mut replaced = patched.clone();
    replaced.spec.suspend = true;
    replaced.status = Some(StackStatus::default());
    let replaced = api
        .replace("shop", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert!(replaced.spec.suspend);
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        replaced.status.as_ref().and_then(|s| s.message.as_deref()),
        Some("ok"),
        "main writes keep status"
    );

    let applied_status = json!({
        "apiVersion": "stackd.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "shop"},
        "status": {"phase": "Progressing"},
    });
    let applied = api
        .patch_status(
            "shop",
            &apply_as("stackd").force(),
            &Patch::Apply(&applied_status),
        )
        .await
        .unwrap();
    let status = applied.status.unwrap();
    assert_eq!(
        (status.phase, status.message),
        (Some(StackPhase::Progressing), Some("ok".into()))
    );
    assert_eq!(
        api.get_status("shop").await.unwrap().metadata.generation,
        Some(2)
    );

    // Dynamic access sees the same object.
    let gvk = GroupVersionKind::gvk("stackd.dev", "v1alpha1", "Stack");
    let dynamic: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &ns, &ApiResource::from_gvk(&gvk));
    let object = dynamic.get("shop").await.unwrap();
    assert_eq!(object.data["status"]["phase"], "Progressing");
    cleanup(&cluster, &ns).await;
}

async fn next_event(
    stream: &mut (
             impl futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin
         ),
) -> watcher::Event<ConfigMap> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a watch event within 10s")
            .expect("the watcher stream does not end");
        match event {
            Ok(event) => return event,
            Err(error) => eprintln!("watcher error (it retries): {error}"),
        }
    }
}

fn describe(event: &watcher::Event<ConfigMap>) -> String {
    let name = |cm: &ConfigMap| cm.metadata.name.clone().unwrap_or_default();
    match event {
        watcher::Event::Apply(cm) => format!(
            "apply {} {:?}",
            name(cm),
            cm.data.clone().unwrap_or_default()
        ),
        watcher::Event::Delete(cm) => format!("delete {}", name(cm)),
        watcher::Event::Init => "init".into(),
        watcher::Event::InitApply(cm) => format!("init-apply {}", name(cm)),
        watcher::Event::InitDone => "init-done".into(),
    }
}

#[tokio::test]
async fn runtime_watcher_sees_create_modify_delete() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "watch").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let pp = PostParams::default();
    api.create(&pp, &config_map("before", &[("w", "1")], &[]))
        .await
        .unwrap();
    api.create(&pp, &config_map("unwatched", &[], &[]))
        .await
        .unwrap();

    let mut stream = watcher(api.clone(), watcher::Config::default().labels("w=1")).boxed();
    let mut initial = Vec::new();
    loop {
        let event = describe(&next_event(&mut stream).await);
        let done = event == "init-done";
        initial.push(event);
        if done {
            break;
        }
    }
    assert_eq!(initial, ["init", "init-apply before", "init-done"]);

    api.create(&pp, &config_map("new", &[("w", "1")], &[("k", "1")]))
        .await
        .unwrap();
    api.create(&pp, &config_map("ignored", &[("w", "2")], &[]))
        .await
        .unwrap();
    api.patch(
        "new",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.delete("new", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next_event(&mut stream).await));
    }
    assert_eq!(
        seen,
        [
            "apply new {\"k\": \"1\"}",
            "apply new {\"k\": \"2\"}",
            "delete new"
        ]
    );
    cleanup(&cluster, &ns).await;
}

#[tokio::test]
async fn watch_from_a_compacted_version_is_gone_and_the_watcher_relists() {
    let (server, client) = FakeApiServer::start().await;
    server.seed_namespace("w");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "w");
    let pp = PostParams::default();
    let first = api.create(&pp, &config_map("a", &[], &[])).await.unwrap();
    api.create(&pp, &config_map("b", &[], &[])).await.unwrap();
    server.compact();
    let mut raw = api
        .watch(&WatchParams::default().timeout(5), &rv(&first))
        .await
        .unwrap()
        .boxed();
    match raw.next().await {
        Some(Ok(WatchEvent::Error(status))) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // A watch that times out ends with a bookmark; the watcher resumes from it.
    let mut stream = watcher(api.clone(), watcher::Config::default().timeout(1)).boxed();
    while describe(&next_event(&mut stream).await) != "init-done" {}
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.create(&pp, &config_map("c", &[], &[])).await.unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "apply c {}");
    let watches = server.requests().into_iter().filter(|r| r.watch).count();
    assert!(
        watches >= 2,
        "the watcher re-watched after the timeout ({watches} watches)"
    );
}

#[tokio::test]
async fn injected_faults_are_observed() {
    let cluster = test_client().await;
    let Some(fake) = cluster.fake_or_skip("fault injection") else {
        return;
    };
    fake.seed_namespace("f");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "f");
    api.create(&PostParams::default(), &config_map("cfg", &[], &[]))
        .await
        .unwrap();

    fake.fail(http::Method::GET, "/configmaps/cfg", 500, 1);
    let failed = api_error(api.get("cfg").await);
    assert_eq!(
        (failed.code, failed.reason.as_str()),
        (500, "InternalError")
    );
    api.get("cfg").await.unwrap();

    // kube retries 429 after Retry-After by default: one call, two requests.
    fake.clear_requests();
    fake.throttle(
        http::Method::GET,
        "/configmaps/cfg",
        Duration::from_millis(200),
        1,
    );
    api.get("cfg").await.unwrap();
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);

    fake.inject(
        fake_api::FaultRule::new(
            None,
            "/configmaps/cfg",
            fake_api::FaultAction::Delay(Duration::from_millis(300)),
        )
        .times(1),
    );
    let started = std::time::Instant::now();
    api.get("cfg").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "gc").await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let owner = deployments
        .create(&PostParams::default(), &deployment("web", "web", 1))
        .await
        .unwrap();
    let owned_by = |cm: ConfigMap, controller: bool| {
        let mut value = serde_json::to_value(cm).unwrap();
        value["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
            "uid": owner.metadata.uid.clone().unwrap(), "controller": controller,
        }]);
        serde_json::from_value::<ConfigMap>(value).unwrap()
    };
    let pp = PostParams::default();
    config_maps
        .create(&pp, &owned_by(config_map("owned", &[], &[]), true))
        .await
        .unwrap();
    config_maps
        .create(&pp, &config_map("free", &[], &[]))
        .await
        .unwrap();

    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    deployments.delete("web", &dp).await.unwrap();
    let mut gone = false;
    for _ in 0..60 {
        if config_maps.get_opt("owned").await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(gone, "the owned ConfigMap is garbage-collected");
    assert!(config_maps.get_opt("free").await.unwrap().is_some());
    assert!(deployments.get_opt("web").await.unwrap().is_none());

    let owner2 = deployments
        .create(&pp, &deployment("web", "web", 1))
        .await
        .unwrap();
    let mut orphan = serde_json::to_value(config_map("orphan", &[], &[])).unwrap();
    orphan["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner2.metadata.uid.unwrap(),
    }]);
    config_maps
        .create(&pp, &serde_json::from_value(orphan).unwrap())
        .await
        .unwrap();
    let orphan_params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    deployments.delete("web", &orphan_params).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = config_maps.get("orphan").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    cleanup(&cluster, &ns).await;
}

#[tokio::test]
async fn seeded_objects_are_readable_and_writes_are_counted() {
    let (server, client) = FakeApiServer::start().await;
    server.seed_namespace("apps");
    let seeded = server.seed(&{
        let mut d = deployment("web", "web", 1);
        d.metadata.namespace = Some("apps".into());
        d
    });
    assert_eq!(seeded["metadata"]["generation"], 1);
    let api: Api<Deployment> = Api::namespaced(client, "apps");
    let fetched = api.get("web").await.unwrap();
    assert_eq!(
        rv(&fetched),
        seeded["metadata"]["resourceVersion"].as_str().unwrap()
    );
    api.patch(
        "web",
        &apply_as("stackd").force(),
        &Patch::Apply(deployment("web", "web", 4)),
    )
    .await
    .unwrap();
    let stored: Value = server
        .object("apps/v1", "Deployment", "apps", "web")
        .unwrap();
    assert_eq!(stored["spec"]["replicas"], 4);
    assert_eq!(stored["metadata"]["generation"], 2);
    let writes = server.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        writes[0].path,
        "/apis/apps/v1/namespaces/apps/deployments/web"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn bad_input_is_rejected_like_a_real_server() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "bad").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let bad_selector = api_error(
        config_maps
            .list(&ListParams::default().labels("tier in (web"))
            .await,
    );
    assert_eq!(
        (bad_selector.code, bad_selector.reason.as_str()),
        (400, "BadRequest")
    );

    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let mut mismatched = deployment("web", "web", 1);
    mismatched
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels = Some(BTreeMap::from([("app".into(), "other".into())]));
    let invalid = api_error(
        deployments
            .create(&PostParams::default(), &mismatched)
            .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));

    let services: Api<Service> = Api::namespaced(cluster.client.clone(), &ns);
    let dotted = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a.b"},
                        "spec": {"ports": [{"port": 80}]}});
    let invalid = api_error(
        services
            .patch("a.b", &apply_as("stackd"), &Patch::Apply(&dotted))
            .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    cleanup(&cluster, &ns).await;
}

#[tokio::test]
async fn managed_fields_record_what_each_manager_applied() {
    let (server, client) = FakeApiServer::start().await;
    server.seed_namespace("m");
    let api: Api<ConfigMap> = Api::namespaced(client, "m");
    api.patch(
        "cfg",
        &apply_as("stackd"),
        &Patch::Apply(config_map("cfg", &[("a", "1")], &[("x", "1")])),
    )
    .await
    .unwrap();
    kubectl_sets(&api, "cfg", "y", "2").await;
    let stored = server.object("v1", "ConfigMap", "m", "cfg").unwrap();
    let entries: Vec<Value> = stored["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["manager"], e["operation"], e["fieldsV1"]]))
        .collect();
    assert_eq!(
        entries,
        [
            json!(["stackd", "Apply", {"f:data": {"f:x": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}]),
            json!(["kubectl", "Update", {"f:data": {"f:y": {}}}]),
        ]
    );
}

#[tokio::test]
async fn watches_turn_selector_transitions_into_added_and_deleted() {
    let (server, client) = FakeApiServer::start().await;
    server.seed_namespace("t");
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    let created = api
        .create(
            &PostParams::default(),
            &config_map("cfg", &[("w", "1")], &[]),
        )
        .await
        .unwrap();
    let params = WatchParams::default().labels("w=1").timeout(5);
    let mut events = api.watch(&params, &rv(&created)).await.unwrap().boxed();
    let relabel = |value: &'static str| Patch::Merge(json!({"metadata": {"labels": {"w": value}}}));
    api.patch("cfg", &PatchParams::default(), &relabel("2"))
        .await
        .unwrap();
    api.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"unseen": "x"}})),
    )
    .await
    .unwrap();
    api.patch("cfg", &PatchParams::default(), &relabel("1"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
        {
            Some(Ok(WatchEvent::Added(_))) => seen.push("ADDED"),
            Some(Ok(WatchEvent::Deleted(_))) => seen.push("DELETED"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["DELETED", "ADDED"]);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let (server, client) = FakeApiServer::start().await;
    server.seed_namespace("doomed");
    server.seed_namespace("kept");
    for namespace in ["doomed", "kept"] {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        api.create(&PostParams::default(), &config_map("cfg", &[], &[]))
            .await
            .unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let left: Vec<Value> = server
        .objects()
        .into_iter()
        .map(|o| json!([o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]]))
        .collect();
    assert_eq!(
        left,
        [
            json!(["ConfigMap", "kept", "cfg"]),
            json!(["Namespace", null, "kept"])
        ]
    );
}

/// The benchmark's knobs (`STACKD_BENCH_LATENCY`, `STACKD_BENCH_MAX_INFLIGHT`):
/// every request waits the latency, and beyond the in-flight limit the answer is
/// 429 with `Retry-After`, as a loaded kube-apiserver's. Watches take no slot.
#[tokio::test]
async fn latency_and_an_in_flight_limit_like_a_loaded_server() {
    assert_eq!(
        fake_api::parse_duration("20ms"),
        Some(Duration::from_millis(20))
    );
    assert_eq!(
        fake_api::parse_duration("1.5s"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(fake_api::parse_duration("soon"), None);

    let settings = fake_api::Settings {
        latency: Duration::from_secs(1),
        max_in_flight: Some(2),
    };
    let (fake, _client) = FakeApiServer::start_with(settings).await;
    let base = format!("{}/api/v1/namespaces/default/configmaps", fake.url());
    let http = reqwest::Client::new();
    // A watch open the whole time does not count against the limit.
    let watch = http.get(format!("{base}?watch=true")).send().await.unwrap();
    assert_eq!(watch.status(), 200);

    let started = std::time::Instant::now();
    let responses = futures::future::join_all((0..5).map(|_| http.get(&base).send())).await;
    let mut answers: Vec<(u16, Option<String>)> = responses
        .into_iter()
        .map(|r| {
            let r = r.unwrap();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry_after)
        })
        .collect();
    answers.sort();
    let refused = (429, Some("1".to_string()));
    assert_eq!(
        answers,
        [
            (200, None),
            (200, None),
            refused.clone(),
            refused.clone(),
            refused
        ]
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The slots are given back.
    assert_eq!(http.get(&base).send().await.unwrap().status(), 200);
    drop(watch);
}

/// Pod validation beyond the schema, as the real server answers it: what the
/// renderer checks before applying, so that the corpus tests catch it.
#[tokio::test]
async fn pods_the_real_server_refuses_are_refused_with_422() {
    let cluster = test_client().await;
    let ns = fresh_namespace(&cluster.client, "pods").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let with_pod = |name: &str, pod: Value| {
        let mut value = serde_json::to_value(deployment(name, name, 1)).unwrap();
        value["spec"]["template"]["spec"] = pod;
        serde_json::from_value::<Deployment>(value).unwrap()
    };
    let cases = [
        (
            json!({"containers": [{"name": "web", "image": "nginx",
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": ""}}]}),
            "spec.template.spec.volumes[0].persistentVolumeClaim.claimName: Required value",
        ),
        (
            json!({"containers": [{"name": "web", "image": "nginx",
                "ports": [{"containerPort": 80, "name": "a-very-long-port-name"}]}]}),
            "spec.template.spec.containers[0].ports[0].name: Invalid value: \"a-very-long-port-name\"",
        ),
        (
            json!({"containers": [{"name": "web", "image": "nginx",
                "volumeMounts": [{"name": "missing", "mountPath": "/v"}]}]}),
            "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
        ),
    ];
    for (i, (pod, expected)) in cases.into_iter().enumerate() {
        let refused = api_error(
            api.create(&PostParams::default(), &with_pod(&format!("bad{i}"), pod))
                .await,
        );
        assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
        assert!(refused.message.contains(expected), "{}", refused.message);
    }
}
