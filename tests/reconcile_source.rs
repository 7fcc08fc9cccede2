//! Source → Stack: applying a repository's Stacks, pruning vanished ones, and
//! keeping secret values out of the cluster's Stack objects.

#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "reconcile_support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use kube::api::{Api, Patch, PatchParams, PostParams};
use pretty_assertions::assert_eq;
use serde_json::json;
use stackd::crd::{Stack, StackPhase};
use stackd::reconcile::offline::plan_offline;
use stackd::reconcile::{ReconcileError, SyncPolicy, SyncReport};
use stackd::render::RenderOptions;
use stackd::render::model::SecretValues;

use support::{
    Harness, PRUNE, desired, needs_fake, object_writes, test_options, web_and_db, write_paths,
};

fn with_secret() -> serde_json::Value {
    let mut project = web_and_db();
    project["services"]["db"]["secrets"] = json!([{"source": "db-password"}]);
    project["secrets"] =
        json!({"db-password": {"file": "db/password.txt", "contentHash": "ff515e00d5"}});
    project
}

#[tokio::test]
async fn stacks_are_applied_with_their_namespace_and_repository_label() {
    let h = needs_fake!(Harness::new().await);
    let report = h
        .sync(
            vec![
                desired("shop", "shop", web_and_db(), "r1"),
                desired("blog", "blog", web_and_db(), "r1"),
            ],
            PRUNE,
        )
        .await
        .unwrap();
    assert_eq!(report.applied, ["shop/shop", "blog/blog"]);
    assert!(h.object("v1", "Namespace", "", "blog").is_some());
    let stack = h
        .object("stackd.dev/v1alpha1", "Stack", "shop", "shop")
        .unwrap();
    assert!(
        stack
            .pointer("/metadata/labels/stackd.dev~1repository")
            .is_some()
    );
    assert_eq!(stack["spec"]["source"]["revision"], "r1");
    assert_eq!(stack["metadata"]["managedFields"][0]["manager"], "stackd");

    // Same content again: listed, compared, nothing written.
    h.fake.clear_requests();
    let again = h
        .sync(
            vec![
                desired("shop", "shop", web_and_db(), "r1"),
                desired("blog", "blog", web_and_db(), "r1"),
            ],
            PRUNE,
        )
        .await
        .unwrap();
    assert_eq!(again.unchanged, ["shop/shop", "blog/blog"]);
    assert_eq!(write_paths(&h.fake.writes()), Vec::<String>::new());
}

#[tokio::test]
async fn a_commit_that_changes_one_stack_re_applies_only_that_stack() {
    let h = needs_fake!(Harness::new().await);
    let mut blog = desired("blog", "blog", with_secret(), "r1");
    blog.secrets = SecretValues(BTreeMap::from([(
        "db-password".to_string(),
        b"pw1".to_vec(),
    )]));
    let stacks = |blog: &stackd::reconcile::DesiredStack, revision: &str, image: &str| {
        let mut shop = web_and_db();
        shop["services"]["web"]["image"] = json!(image);
        let mut blog = blog.clone();
        blog.source.revision = revision.to_string();
        vec![desired("shop", "shop", shop, revision), blog]
    };
    h.sync(stacks(&blog, "r1", "nginx:1.27"), PRUNE)
        .await
        .unwrap();
    let blog_version = |h: &Harness| {
        h.object("stackd.dev/v1alpha1", "Stack", "blog", "blog")
            .unwrap()["metadata"]["resourceVersion"]
            .clone()
    };
    let before = blog_version(&h);

    // r2 changes shop only: blog keeps r1, its object is not written, and its
    // secret values stay reachable under r1.
    h.fake.clear_requests();
    let report = h
        .sync(stacks(&blog, "r2", "nginx:1.28"), PRUNE)
        .await
        .unwrap();
    assert_eq!(report.applied, ["shop/shop"]);
    assert_eq!(report.unchanged, ["blog/blog"]);
    assert_eq!(
        write_paths(&h.fake.writes()),
        ["PATCH /apis/stackd.dev/v1alpha1/namespaces/shop/stacks/shop"]
    );
    assert_eq!(blog_version(&h), before);
    let blog_stack = h
        .object("stackd.dev/v1alpha1", "Stack", "blog", "blog")
        .unwrap();
    assert_eq!(blog_stack["spec"]["source"]["revision"], "r1");
    let shop_stack = h
        .object("stackd.dev/v1alpha1", "Stack", "shop", "shop")
        .unwrap();
    assert_eq!(shop_stack["spec"]["source"]["revision"], "r2");
    assert!(h.handles.secrets.get("blog", "blog", "r1").is_some());

    // r3 changes only blog's secret value: blog moves to r3 so it renders again.
    blog.secrets = SecretValues(BTreeMap::from([(
        "db-password".to_string(),
        b"pw2".to_vec(),
    )]));
    let report = h
        .sync(stacks(&blog, "r3", "nginx:1.28"), PRUNE)
        .await
        .unwrap();
    assert_eq!(report.applied, ["blog/blog"]);
    assert_eq!(report.unchanged, ["shop/shop"]);
    let blog_stack = h
        .object("stackd.dev/v1alpha1", "Stack", "blog", "blog")
        .unwrap();
    assert_eq!(blog_stack["spec"]["source"]["revision"], "r3");
    assert_eq!(
        h.handles.secrets.get("blog", "blog", "r3"),
        Some(blog.secrets.clone())
    );
}

#[tokio::test]
async fn a_large_repository_is_listed_in_pages_and_compared_without_writes() {
    let h = needs_fake!(Harness::new().await);
    let stacks = |revision: &str| {
        (0..250)
            .map(|i| {
                let name = format!("s{i:03}");
                desired("many", &name, web_and_db(), revision)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        h.sync(stacks("r1"), PRUNE).await.unwrap().applied.len(),
        250
    );

    h.fake.clear_requests();
    let report = h.sync(stacks("r2"), PRUNE).await.unwrap();
    assert_eq!(report.unchanged.len(), 250);
    assert_eq!(write_paths(&h.fake.writes()), Vec::<String>::new());
    let lists: Vec<String> = h
        .fake
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.ends_with("/stacks"))
        .collect();
    assert_eq!(lists.len(), 3, "pages of 100: {lists:?}");
}

#[tokio::test]
async fn vanished_stacks_are_deleted_but_never_all_unless_allowed() {
    let h = needs_fake!(Harness::new().await);
    let both = || {
        vec![
            desired("shop", "shop", web_and_db(), "r1"),
            desired("shop", "blog", web_and_db(), "r1"),
        ]
    };
    h.sync(both(), PRUNE).await.unwrap();

    let report = h
        .sync(vec![desired("shop", "shop", web_and_db(), "r2")], PRUNE)
        .await
        .unwrap();
    assert_eq!(report.deleted, ["shop/blog"]);
    assert!(
        h.object("stackd.dev/v1alpha1", "Stack", "shop", "blog")
            .is_none()
    );

    // Nothing left in Git: refused, nothing deleted.
    h.fake.clear_requests();
    let refused = h.sync(vec![], PRUNE).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ReconcileError::WouldDeleteAllStacks { count: 1, .. }
        ),
        "{refused}"
    );
    assert_eq!(refused.label(), "would_delete_all_stacks");
    assert_eq!(write_paths(&h.fake.writes()), Vec::<String>::new());

    let allowed = SyncPolicy {
        prune: true,
        allow_prune_all: true,
        shards: 0,
    };
    let report = h.sync(vec![], allowed).await.unwrap();
    assert_eq!(report.deleted, ["shop/shop"]);

    // Pruning off: vanished Stacks are kept and said so.
    h.sync(both(), PRUNE).await.unwrap();
    let kept = h
        .sync(
            vec![desired("shop", "shop", web_and_db(), "r3")],
            SyncPolicy::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        kept,
        SyncReport {
            // Same content at r3: the Stack keeps r1 and is not written.
            unchanged: vec!["shop/shop".into()],
            kept: vec!["shop/blog".into()],
            ..SyncReport::default()
        }
    );
}

#[tokio::test]
async fn a_stack_annotated_prune_disabled_is_kept() {
    let h = needs_fake!(Harness::new().await);
    h.sync(
        vec![
            desired("shop", "shop", web_and_db(), "r1"),
            desired("shop", "blog", web_and_db(), "r1"),
        ],
        PRUNE,
    )
    .await
    .unwrap();
    let stacks: Api<Stack> = Api::namespaced(h.client.clone(), "shop");
    let keep = json!({"metadata": {"annotations": {"stackd.dev/prune": "disabled"}}});
    stacks
        .patch("blog", &PatchParams::default(), &Patch::Merge(&keep))
        .await
        .unwrap();
    let report = h
        .sync(vec![desired("shop", "shop", web_and_db(), "r1")], PRUNE)
        .await
        .unwrap();
    assert_eq!(report.kept, ["shop/blog"]);
    assert!(
        h.object("stackd.dev/v1alpha1", "Stack", "shop", "blog")
            .is_some()
    );
}

#[tokio::test]
async fn secret_values_reach_the_secret_but_never_the_stack() {
    let mut h = needs_fake!(Harness::new().await);
    h.start(test_options());
    let mut stack = desired("shop", "shop", with_secret(), "r1");
    stack.secrets = SecretValues(BTreeMap::from([(
        "db-password".to_string(),
        b"hunter2".to_vec(),
    )]));
    h.sync(vec![stack], PRUNE).await.unwrap();
    h.wait_for("the stack to be applied", |h| {
        h.status("shop", "shop")
            .and_then(|s| s.last_applied_revision)
            .is_some()
    })
    .await;

    let secrets = h.fake.objects_of("v1", "Secret");
    let values: Vec<String> = secrets.iter().map(|s| s["data"].to_string()).collect();
    assert!(
        values.iter().any(|v| v.contains("aHVudGVyMg==")),
        "{values:?}"
    );
    let stack = h
        .object("stackd.dev/v1alpha1", "Stack", "shop", "shop")
        .unwrap()
        .to_string();
    assert!(
        !stack.contains("hunter2") && !stack.contains("aHVudGVyMg=="),
        "{stack}"
    );

    // The same project written by hand (no source): the Secret is only referenced.
    let by_hand: Stack = serde_json::from_value(json!({
        "apiVersion": "stackd.dev/v1alpha1", "kind": "Stack",
        "metadata": {"name": "copy", "namespace": "shop"},
        "spec": with_secret(),
    }))
    .unwrap();
    let api: Api<Stack> = Api::namespaced(h.client.clone(), "shop");
    api.create(&PostParams::default(), &by_hand).await.unwrap();
    h.wait_for("the hand-written stack to be applied", |h| {
        h.status("shop", "copy").and_then(|s| s.phase) == Some(StackPhase::Progressing)
    })
    .await;
    let copies = h
        .fake
        .objects_of("v1", "Secret")
        .into_iter()
        .filter(|s| s["metadata"]["labels"]["stackd.dev/stack"] == "copy")
        .count();
    assert_eq!(copies, 0);
}

#[tokio::test]
async fn a_git_stack_waits_for_its_secret_values_instead_of_pruning_its_secrets() {
    let mut h = needs_fake!(Harness::new().await);
    let mut stack = desired("shop", "shop", with_secret(), "r1");
    stack.secrets = SecretValues(BTreeMap::from([(
        "db-password".to_string(),
        b"pw".to_vec(),
    )]));
    h.sync(vec![stack.clone()], PRUNE).await.unwrap();
    // A restarted daemon: the Stack is there, its values are not (yet).
    h.handles.secrets.remove("shop", "shop");
    h.start(test_options());
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        object_writes(&h.fake.writes()),
        ["PATCH /api/v1/namespaces/shop"]
    );
    assert!(h.status("shop", "shop").is_none());
    h.sync(vec![stack], PRUNE).await.unwrap();
    h.wait_for("the stack to be applied", |h| {
        h.status("shop", "shop")
            .and_then(|s| s.last_applied_revision)
            .is_some()
    })
    .await;
}

#[test]
fn offline_dry_run_plans_every_object_as_a_create() {
    let views = plan_offline(
        &[desired("shop", "shop", web_and_db(), "r1")],
        &RenderOptions::default(),
    );
    assert_eq!(views.len(), 1);
    let view = &views[0];
    assert_eq!(view.phase, StackPhase::ReconciliationPending);
    assert_eq!(view.services_total, 2);
    let plan = view.last_plan.clone().unwrap();
    assert!(plan.dry_run);
    assert_eq!(plan.unchanged, 0);
    assert!(plan.pruned.is_empty());
    assert_eq!(plan.created[0], "Namespace/shop");
    for expected in ["Deployment/web", "Deployment/db"] {
        assert!(plan.created.contains(&expected.to_string()), "{plan:?}");
    }

    let mut broken = desired("shop", "bad", web_and_db(), "r1");
    if let Some(web) = broken.project.services.get_mut("web") {
        web.image = None;
    }
    let views = plan_offline(&[broken], &RenderOptions::default());
    assert_eq!(views[0].phase, StackPhase::Failure);
    assert!(
        views[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("needs an image")
    );
}

/// One Stack the API server refuses (over etcd's request limit) fails that
/// stack alone: the stacks before and after it are applied, and the refusal
/// says what the server said. Runs against `KUBECONFIG_E2E` too (a real
/// server refuses such a Stack as well).
#[tokio::test]
async fn a_refused_stack_fails_alone_and_the_others_are_applied() {
    let cluster = fake_api::test_client().await;
    let secrets = stackd::reconcile::SecretStore::new();
    let mut huge = web_and_db();
    // 2 MiB: over etcd's 1.5 MiB, under the API server's 3 MiB body limit.
    huge["services"]["web"]["labels"] = json!({"padding": "x".repeat(2 * 1024 * 1024)});
    let stacks = vec![
        desired("refuse-a", "refuse-a", web_and_db(), "r1"),
        desired("refuse-b", "refuse-b", huge, "r1"),
        desired("refuse-c", "refuse-c", web_and_db(), "r1"),
    ];
    let repository = format!("refused-{}", rand::random::<u32>());
    let report = stackd::reconcile::sync_repository(
        &cluster.client,
        &secrets,
        &repository,
        &stacks,
        SyncPolicy::default(),
    )
    .await
    .expect("a refused Stack is that stack's failure, not the sync's");
    assert_eq!(report.applied, ["refuse-a/refuse-a", "refuse-c/refuse-c"]);
    let refused: Vec<_> = report
        .refused
        .iter()
        .map(|r| (r.namespace.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(refused, [("refuse-b", "refuse-b")]);
    let message = &report.refused[0].message;
    assert!(
        message.starts_with("applying Stack refuse-b/refuse-b: "),
        "{message}"
    );
    assert!(message.contains("request is too large"), "{message}");
    if let Some(fake) = cluster.fake_or_skip("the stored objects") {
        assert!(
            fake.object("stackd.dev/v1alpha1", "Stack", "refuse-c", "refuse-c")
                .is_some()
        );
        assert!(
            fake.object("stackd.dev/v1alpha1", "Stack", "refuse-b", "refuse-b")
                .is_none()
        );
        assert!(!report.refused[0].transient);
    }
}
