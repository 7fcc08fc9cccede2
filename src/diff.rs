//! `stackd diff`: what applying a rendered stack would change in the live cluster,
//! like `kubectl diff`. Reads only.

use std::fmt;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::crd::{InventoryEntry, STACK_LABEL};
use crate::reconcile::apply::{PRUNE_ANNOTATION, PRUNE_DISABLED, api_for, entry_for};
use crate::reconcile::drift;
use crate::render::object::{RENDERED_KINDS, Rendered};
use crate::tenancy::{self, Access, NamespaceRefusal, NamespaceRules};

/// One object's change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    /// The first field (a JSON pointer) where the live object differs.
    Update(String),
    Unchanged,
    /// Labelled for the stack but no longer rendered: pruning would delete it.
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectChange {
    pub object: InventoryEntry,
    pub change: Change,
}

impl fmt::Display for ObjectChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let object = &self.object;
        let name = match &object.namespace {
            Some(namespace) => format!("{} {namespace}/{}", object.kind, object.name),
            None => format!("{} {}", object.kind, object.name),
        };
        match &self.change {
            Change::Create => write!(f, "+ create {name}"),
            Change::Update(field) => write!(f, "~ update {name} (first difference at {field})"),
            Change::Unchanged => write!(f, "  unchanged {name}"),
            Change::Delete => write!(f, "- delete {name}"),
        }
    }
}

/// Why `stackd diff` stops before comparing.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceCheckError {
    #[error("reading namespace {namespace}: {source}")]
    Read {
        namespace: String,
        source: kube::Error,
    },
    #[error(transparent)]
    Refused(#[from] NamespaceRefusal),
}

/// The daemon's namespace rule against the live cluster: whether a stack could
/// use `namespace`, and how.
pub async fn check_namespace(
    client: &Client,
    namespace: &str,
    rules: &NamespaceRules,
) -> Result<Access, NamespaceCheckError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let live =
        api.get_metadata_opt(namespace)
            .await
            .map_err(|source| NamespaceCheckError::Read {
                namespace: namespace.to_string(),
                source,
            })?;
    let labels = live.map(|n| n.metadata.labels.unwrap_or_default());
    Ok(tenancy::admit(namespace, labels.as_ref(), rules, None)?)
}

/// Compares `rendered` (the stack `stack` in `namespace`) with the live cluster.
pub async fn diff(
    client: &Client,
    stack: &str,
    namespace: &str,
    rendered: &Rendered,
) -> Result<Vec<ObjectChange>, kube::Error> {
    let mut changes = Vec::new();
    for object in &rendered.objects {
        let entry = entry_for(namespace, object);
        let change = match api_for(client, &entry).get_opt(&entry.name).await? {
            None => Change::Create,
            Some(live) => {
                let live = serde_json::to_value(live).unwrap_or_default();
                match drift::difference(&object.to_json(), &live) {
                    Some(field) => Change::Update(field),
                    None => Change::Unchanged,
                }
            }
        };
        changes.push(ObjectChange {
            object: entry,
            change,
        });
    }
    let selector = ListParams::default().labels(&format!("{STACK_LABEL}={stack}"));
    for (api_version, kind) in RENDERED_KINDS
        .iter()
        .filter(|(_, kind)| *kind != "Namespace")
    {
        let probe = InventoryEntry {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: Some(namespace.to_string()),
            name: String::new(),
            hash: None,
        };
        for live in api_for(client, &probe).list(&selector).await? {
            let name = live.metadata.name.clone().unwrap_or_default();
            let rendered_too = changes
                .iter()
                .any(|c| c.object.kind == *kind && c.object.name == name);
            let protected = live
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PRUNE_ANNOTATION))
                .is_some_and(|v| v == PRUNE_DISABLED);
            if !rendered_too && !protected {
                changes.push(ObjectChange {
                    object: InventoryEntry {
                        name,
                        ..probe.clone()
                    },
                    change: Change::Delete,
                });
            }
        }
    }
    Ok(changes)
}
