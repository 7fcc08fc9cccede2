//! What a repository may do: namespaces refused before any write, allow lists,
//! the Pod Security labels of created namespaces, `NamespaceNotAllowed` on a
//! Stack whose namespace became refused, and impersonation of a repository's
//! ServiceAccount. The sync tests also run against a real cluster named by
//! `KUBECONFIG_E2E`; those that read the request log need the in-process server.

#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "reconcile_support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::json;
use stackd::crd::{Stack, StackPhase};
use stackd::reconcile::{DesiredStack, SecretStore, SyncReport, sync_repository};
use stackd::render::PodSecurity;
use stackd::tenancy::{NamespaceRules, Tenancy};

use fake_api::{test_client, unique};
use support::{Harness, PRUNE, desired, needs_fake, test_options, web_and_db, with_image, without};

/// A stack from `web/compose.yaml` with the given tenancy settings.
fn stack_in(namespace: &str, tenancy: Tenancy) -> DesiredStack {
    DesiredStack {
        tenancy: Tenancy {
            file: "web/compose.yaml".into(),
            ..tenancy
        },
        ..desired(namespace, "web", web_and_db(), "r1")
    }
}

fn allowing(globs: &[&str]) -> Tenancy {
    Tenancy {
        namespaces: NamespaceRules {
            allowed: globs.iter().map(|g| g.to_string()).collect(),
            own_namespace: Some("stackd-system".into()),
        },
        ..Tenancy::default()
    }
}

async fn sync(client: &kube::Client, repository: &str, stacks: Vec<DesiredStack>) -> SyncReport {
    sync_repository(client, &SecretStore::new(), repository, &stacks, PRUNE)
        .await
        .expect("the sync runs")
}

async fn create_foreign_namespace(client: &kube::Client, name: &str) {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "helm".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

async fn namespace_labels(client: &kube::Client, name: &str) -> BTreeMap<String, String> {
    let api: Api<Namespace> = Api::all(client.clone());
    api.get(name)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
}

async fn delete_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

#[tokio::test]
async fn kube_system_is_refused_before_any_write() {
    let cluster = test_client().await;
    let client = &cluster.client;
    for tenancy in [allowing(&[]), allowing(&["*"]), allowing(&["kube-*"])] {
        let report = sync(client, "apps", vec![stack_in("kube-system", tenancy)]).await;
        assert!(report.applied.is_empty(), "{report:?}");
        assert_eq!(report.refused.len(), 1, "{report:?}");
        let refused = &report.refused[0];
        assert_eq!(
            (refused.namespace.as_str(), refused.name.as_str()),
            ("kube-system", "web")
        );
        assert_eq!(refused.reason, stackd::reason::Reason::NamespaceNotAllowed);
        assert!(!refused.transient);
        let message = &refused.message;
        assert!(
            message.starts_with("web/compose.yaml: namespace \"kube-system\" is not allowed"),
            "{message}"
        );
    }
    let stacks: Api<Stack> = Api::namespaced(client.clone(), "kube-system");
    assert!(stacks.get_opt("web").await.unwrap().is_none());
    if let Some(fake) = &cluster.fake {
        // Lists only: not the Namespace, not the Stack, nothing.
        assert_eq!(fake.writes().len(), 0, "{:?}", fake.writes());
    }
}

#[tokio::test]
async fn a_foreign_namespace_is_refused_and_an_allow_list_admits_it() {
    let cluster = test_client().await;
    let client = &cluster.client;
    let namespace = unique("legacy");
    create_foreign_namespace(client, &namespace).await;

    let refused = sync(client, "apps", vec![stack_in(&namespace, allowing(&[]))]).await;
    assert_eq!(refused.refused.len(), 1, "{refused:?}");
    assert!(
        refused.refused[0]
            .message
            .contains("stackd did not create it"),
        "{refused:?}"
    );

    let admitted = sync(
        client,
        "apps",
        vec![stack_in(&namespace, allowing(&["legacy-*"]))],
    )
    .await;
    assert_eq!(admitted.applied, [format!("{namespace}/web")]);
    let stacks: Api<Stack> = Api::namespaced(client.clone(), &namespace);
    let stack = stacks.get("web").await.unwrap();
    assert_eq!(
        stack.metadata.annotations.unwrap()["stackd.dev/namespace-access"],
        "allowed"
    );
    // Someone else's namespace keeps its own labels: stackd does not take it over.
    let labels = namespace_labels(client, &namespace).await;
    assert_eq!(labels["app.kubernetes.io/managed-by"], "helm");
    assert!(!labels.contains_key("pod-security.kubernetes.io/enforce"));

    let _ = stacks.delete("web", &DeleteParams::default()).await;
    delete_namespace(client, &namespace).await;
}

#[tokio::test]
async fn a_new_namespace_is_created_as_stackds_with_the_pod_security_level() {
    let cluster = test_client().await;
    let client = &cluster.client;
    let namespace = unique("fresh");
    let tenancy = Tenancy {
        pod_security: Some(PodSecurity::Restricted),
        network_policies: Some(false),
        ..allowing(&[])
    };
    let report = sync(client, "apps", vec![stack_in(&namespace, tenancy)]).await;
    assert_eq!(report.applied, [format!("{namespace}/web")]);
    let labels = namespace_labels(client, &namespace).await;
    assert_eq!(labels["app.kubernetes.io/managed-by"], "stackd");
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    let stacks: Api<Stack> = Api::namespaced(client.clone(), &namespace);
    assert_eq!(
        stacks.get("web").await.unwrap().spec.pod_security,
        Some(PodSecurity::Restricted)
    );
    // networkPolicies reaches the Stack the same way.
    assert_eq!(
        stacks.get("web").await.unwrap().spec.network_policies,
        Some(false)
    );

    // Created by stackd, it stays admitted without any allow list.
    let again = sync(client, "apps", vec![stack_in(&namespace, allowing(&[]))]).await;
    assert!(again.refused.is_empty(), "{again:?}");

    let _ = stacks.delete("web", &DeleteParams::default()).await;
    delete_namespace(client, &namespace).await;
}

fn ready_condition(h: &Harness, ns: &str) -> Option<(String, String, String)> {
    let status = h.status(ns, "web")?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        ready.status.clone(),
        ready.reason.clone(),
        ready.message.clone(),
    ))
}

#[tokio::test]
async fn a_stack_whose_namespace_becomes_refused_is_namespace_not_allowed() {
    let h = needs_fake!(Harness::started(test_options()).await);
    h.fake.seed(&json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "legacy", "labels": {"team": "ops"}}}));
    sync(
        &h.client,
        "apps",
        vec![stack_in("legacy", allowing(&["legacy"]))],
    )
    .await;
    h.wait_for("the stack to be applied", |h| {
        h.status("legacy", "web")
            .is_some_and(|s| s.last_applied_revision.as_deref() == Some("r1"))
    })
    .await;
    h.settle().await;
    // The allowed namespace's own object was never written.
    let namespace_writes = h
        .fake
        .writes()
        .iter()
        .filter(|r| r.path.ends_with("/namespaces/legacy"))
        .count();
    assert_eq!(namespace_writes, 0);
    assert_eq!(
        h.object("v1", "Namespace", "", "legacy").unwrap()["metadata"]["labels"],
        json!({"team": "ops"})
    );

    // The allow list no longer lists it: the next commit is refused.
    let before = h.fake.writes().len();
    let next = DesiredStack {
        project: serde_json::from_value(with_image(web_and_db(), "web", "nginx:1.28")).unwrap(),
        ..stack_in("legacy", allowing(&[]))
    };
    sync(&h.client, "apps", vec![next]).await;
    h.wait_for("Ready=False NamespaceNotAllowed", |h| {
        ready_condition(h, "legacy").is_some_and(|(_, reason, _)| reason == "NamespaceNotAllowed")
    })
    .await;
    h.settle().await;
    let (status, _, message) = ready_condition(&h, "legacy").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("web/compose.yaml"), "{message}");
    assert!(message.contains("namespace \"legacy\""), "{message}");
    assert_eq!(
        h.status("legacy", "web").unwrap().phase,
        Some(StackPhase::Failure)
    );
    // Nothing applied: the Stack (annotation) and its status are the only writes.
    let writes = support::object_writes(&h.fake.writes()[before..]);
    assert!(writes.is_empty(), "{writes:?}");
    let image = h.object("apps/v1", "Deployment", "legacy", "web").unwrap();
    assert_eq!(
        image.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("nginx:1.27"))
    );
}

const ACCOUNT: &str = "system:serviceaccount:imp-a:deployer";

#[tokio::test]
async fn every_write_of_an_impersonating_repository_carries_impersonate_user() {
    let h = needs_fake!(Harness::started(test_options()).await);
    let impersonating = |project: serde_json::Value, revision: &str| DesiredStack {
        tenancy: Tenancy {
            service_account_name: Some("deployer".into()),
            ..Tenancy::default()
        },
        ..desired("imp-a", "web", project, revision)
    };
    sync(&h.client, "team-a", vec![impersonating(web_and_db(), "r1")]).await;
    sync(
        &h.client,
        "team-b",
        vec![desired("imp-b", "web", web_and_db(), "r1")],
    )
    .await;
    let applied = |ns: &'static str, revision: &'static str| {
        move |h: &Harness| {
            h.status(ns, "web")
                .is_some_and(|s| s.last_applied_revision.as_deref() == Some(revision))
        }
    };
    h.wait_for("team-a applied", applied("imp-a", "r1")).await;
    h.wait_for("team-b applied", applied("imp-b", "r1")).await;
    // An update and a prune go through the same client.
    sync(
        &h.client,
        "team-a",
        vec![impersonating(without(web_and_db(), "db"), "r2")],
    )
    .await;
    h.wait_for("team-a pruned", applied("imp-a", "r2")).await;
    h.settle().await;
    assert!(h.object("apps/v1", "Deployment", "imp-a", "db").is_none());

    let writes = h.fake.writes();
    let of_objects = |ns: &str| -> Vec<_> {
        writes
            .iter()
            .filter(|r| r.path.contains(&format!("/namespaces/{ns}/")))
            .filter(|r| !r.path.contains("/stacks") && !r.path.contains("/events"))
            .collect()
    };
    let team_a = of_objects("imp-a");
    assert!(
        team_a
            .iter()
            .any(|r| r.method == axum::http::Method::DELETE),
        "the prune is among them"
    );
    assert!(team_a.len() >= 4, "{team_a:?}");
    for write in &team_a {
        assert_eq!(
            write.impersonate_user.as_deref(),
            Some(ACCOUNT),
            "{write:?}"
        );
    }
    let team_b = of_objects("imp-b");
    assert!(!team_b.is_empty());
    for write in &team_b {
        assert_eq!(write.impersonate_user, None, "{write:?}");
    }
    // The daemon's own bookkeeping (Namespaces, Stacks, status, Events) is its own.
    for write in writes
        .iter()
        .filter(|r| !team_a.iter().any(|a| std::ptr::eq(*a, *r)))
    {
        assert_eq!(write.impersonate_user, None, "{write:?}");
    }
}

#[tokio::test]
async fn a_forbidden_write_is_the_stacks_apply_failure_with_the_servers_message() {
    let h = needs_fake!(Harness::started(test_options()).await);
    h.fake.forbid_user("system:serviceaccount:imp-c:nobody");
    let stack = DesiredStack {
        tenancy: Tenancy {
            service_account_name: Some("nobody".into()),
            ..Tenancy::default()
        },
        ..desired("imp-c", "web", web_and_db(), "r1")
    };
    sync(&h.client, "team-c", vec![stack]).await;
    h.wait_for("the failure in the status", |h| {
        h.status("imp-c", "web")
            .and_then(|s| s.last_error)
            .is_some_and(|e| e.contains("RBAC"))
    })
    .await;
    let status = h.status("imp-c", "web").unwrap();
    assert_eq!(status.phase, Some(StackPhase::Failure));
    let error = status.last_error.unwrap();
    assert!(
        error.contains("User \"system:serviceaccount:imp-c:nobody\" cannot PATCH"),
        "{error}"
    );
    assert!(h.fake.objects_of("apps/v1", "Deployment").is_empty());
    assert_eq!(status.last_applied_revision, None);
}

#[tokio::test]
async fn a_hand_written_stack_in_default_is_namespace_not_allowed() {
    let h = needs_fake!(Harness::started(test_options()).await);
    h.fake.seed_namespace("default");
    let mut stack = stackd::render::stack_for(
        "web",
        "default",
        serde_json::from_value(web_and_db()).unwrap(),
        None,
    );
    stack.spec.pod_security = Some(PodSecurity::Privileged);
    let api: Api<Stack> = Api::namespaced(h.client.clone(), "default");
    api.create(&PostParams::default(), &stack).await.unwrap();
    h.wait_for("Ready=False NamespaceNotAllowed", |h| {
        ready_condition(h, "default").is_some_and(|(_, reason, _)| reason == "NamespaceNotAllowed")
    })
    .await;
    let (status, _, message) = ready_condition(&h, "default").unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains("the Stack: namespace \"default\" is not allowed"),
        "{message}"
    );
    assert!(h.fake.objects_of("apps/v1", "Deployment").is_empty());
}

#[tokio::test]
async fn a_namespace_stackd_created_for_one_repository_is_refused_to_another() {
    let h = needs_fake!(Harness::started(test_options()).await);
    sync(&h.client, "team-a", vec![stack_in("shared", allowing(&[]))]).await;
    h.wait_for("team-a's stack applied", |h| {
        h.status("shared", "web")
            .is_some_and(|s| s.last_applied_revision.as_deref() == Some("r1"))
    })
    .await;
    h.settle().await;
    // The controller's own apply of the Namespace keeps the repository label.
    let labels = h.object("v1", "Namespace", "", "shared").unwrap()["metadata"]["labels"].clone();
    assert!(labels["stackd.dev/repository"].is_string(), "{labels}");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "stackd");

    let other = DesiredStack {
        name: "intruder".into(),
        ..stack_in("shared", allowing(&[]))
    };
    let report = sync(&h.client, "team-b", vec![other]).await;
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(
        report.refused[0]
            .message
            .contains("stackd created it for another repository"),
        "{report:?}"
    );
    assert!(
        h.object("stackd.dev/v1alpha1", "Stack", "shared", "intruder")
            .is_none()
    );
}
