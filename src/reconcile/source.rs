//! Source → Stack: what the Git source found in one repository becomes `Stack`
//! objects (server-side apply), and Stacks that vanished from Git are deleted
//! when the repository prunes. Secret values go to the in-memory store only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::crd::{FIELD_MANAGER, SourceRef, Stack};
use crate::reconcile::apply::{PRUNE_ANNOTATION, PRUNE_DISABLED};
use crate::reconcile::error::ReconcileError;
use crate::reconcile::secrets::SecretStore;
use crate::render::model::{Project, SecretValues};
use crate::render::object::short_hash;
use crate::render::stack_for;

/// Label on every Stack stackd created from Git: a hash of the repository name
/// (a URL is not a valid label value).
pub const REPOSITORY_LABEL: &str = "stackd.dev/repository";
/// The repository name itself, for people.
pub const REPOSITORY_ANNOTATION: &str = "stackd.dev/repository";

/// One stack as the Git source rendered it.
#[derive(Clone, Debug)]
pub struct DesiredStack {
    pub name: String,
    pub namespace: String,
    pub project: Project,
    pub secrets: SecretValues,
    pub source: SourceRef,
    /// Becomes `spec.prune`: whether the controller deletes objects that left
    /// the compose file (the repository's `prune`).
    pub prune: bool,
}

/// Which Stacks a sync may delete (object pruning inside a stack is the
/// Stack's own `spec.prune`, set from [`DesiredStack::prune`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncPolicy {
    /// Delete Stacks of this repository that vanished from Git.
    pub prune: bool,
    /// Allow deleting every Stack of the repository (nothing left in Git), which
    /// is more often a broken checkout or a wrong path than an intent.
    pub allow_prune_all: bool,
}

/// What one sync did, each entry `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub applied: Vec<String>,
    pub unchanged: Vec<String>,
    pub deleted: Vec<String>,
    /// Vanished from Git but kept (pruning off, or `stackd.dev/prune: disabled`).
    pub kept: Vec<String>,
}

pub fn repository_label_value(repository: &str) -> String {
    short_hash(repository.as_bytes())
}

/// The Stack object stackd applies for a desired stack (no secret values).
pub fn stack_object(repository: &str, desired: &DesiredStack) -> Stack {
    let mut stack = stack_for(
        &desired.name,
        &desired.namespace,
        desired.project.clone(),
        Some(desired.source.clone()),
    );
    stack.spec.prune = desired.prune;
    stack.metadata.labels = Some(BTreeMap::from([(
        REPOSITORY_LABEL.to_string(),
        repository_label_value(repository),
    )]));
    stack.metadata.annotations = Some(BTreeMap::from([(
        REPOSITORY_ANNOTATION.to_string(),
        repository.to_string(),
    )]));
    stack
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Applies the Stacks of one repository and prunes the ones that vanished.
/// Secret values are put in `secrets` before the Stack is applied, so the
/// controller finds them when it sees the new revision.
pub async fn sync_repository(
    client: &Client,
    secret_store: &SecretStore,
    repository: &str,
    stacks: Vec<DesiredStack>,
    policy: SyncPolicy,
) -> Result<SyncReport, ReconcileError> {
    let all: Api<Stack> = Api::all(client.clone());
    let selector = format!("{REPOSITORY_LABEL}={}", repository_label_value(repository));
    let existing = all
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| ReconcileError::ListStacks {
            repository: repository.to_string(),
            source,
        })?;
    let live: BTreeMap<String, &Stack> = existing
        .items
        .iter()
        .map(|s| (key(&s.namespace().unwrap_or_default(), &s.name_any()), s))
        .collect();

    // Refuse before writing anything: a sync that would leave no Stack is suspicious.
    let vanished: Vec<&Stack> = live
        .iter()
        .filter(|(k, _)| !stacks.iter().any(|d| &key(&d.namespace, &d.name) == *k))
        .map(|(_, s)| *s)
        .collect();
    if policy.prune && stacks.is_empty() && !vanished.is_empty() && !policy.allow_prune_all {
        return Err(ReconcileError::WouldDeleteAllStacks {
            repository: repository.to_string(),
            count: vanished.len(),
        });
    }

    let mut report = SyncReport::default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut namespaces_done = Vec::<String>::new();
    for desired in &stacks {
        let id = key(&desired.namespace, &desired.name);
        secret_store.put(
            &desired.namespace,
            &desired.name,
            &desired.source.revision,
            desired.secrets.clone(),
        );
        let object = stack_object(repository, desired);
        let unchanged = live.get(&id).is_some_and(|current| {
            current.spec == object.spec
                && labels_include(
                    current.metadata.labels.as_ref(),
                    object.metadata.labels.as_ref(),
                )
        });
        if unchanged {
            report.unchanged.push(id);
            continue;
        }
        if !live.contains_key(&id) && !namespaces_done.contains(&desired.namespace) {
            apply_namespace(client, &desired.namespace).await?;
            namespaces_done.push(desired.namespace.clone());
        }
        let api: Api<Stack> = Api::namespaced(client.clone(), &desired.namespace);
        api.patch(&desired.name, &params, &Patch::Apply(&object))
            .await
            .map_err(|source| ReconcileError::ApplyStack {
                stack: id.clone(),
                source,
            })?;
        report.applied.push(id);
    }

    for stack in vanished {
        let namespace = stack.namespace().unwrap_or_default();
        let id = key(&namespace, &stack.name_any());
        let protected = stack
            .annotations()
            .get(PRUNE_ANNOTATION)
            .map(String::as_str)
            == Some(PRUNE_DISABLED);
        if !policy.prune || protected {
            report.kept.push(id);
            continue;
        }
        let api: Api<Stack> = Api::namespaced(client.clone(), &namespace);
        match api
            .delete(&stack.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(ReconcileError::DeleteStack { stack: id, source });
            }
        }
        secret_store.remove(&namespace, &stack.name_any());
        report.deleted.push(id);
    }
    Ok(report)
}

fn labels_include(
    live: Option<&BTreeMap<String, String>>,
    wanted: Option<&BTreeMap<String, String>>,
) -> bool {
    wanted
        .into_iter()
        .flatten()
        .all(|(k, v)| live.and_then(|l| l.get(k)) == Some(v))
}

async fn apply_namespace(client: &Client, name: &str) -> Result<(), ReconcileError> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&namespace),
    )
    .await
    .map(|_| ())
    .map_err(|source| ReconcileError::ApplyNamespace {
        namespace: name.to_string(),
        source,
    })
}
