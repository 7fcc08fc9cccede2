//! `stackd diff`: what applying a rendered stack would change in the live cluster,
//! like `kubectl diff`. Reads only.

use std::fmt::{self, Write};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::crd::{InventoryEntry, STACK_LABEL};
use crate::field_diff::{self, FieldChange};
use crate::reconcile::apply::{PRUNE_ANNOTATION, PRUNE_DISABLED, api_for, entry_for};
use crate::render::object::{RENDERED_KINDS, Rendered};
use crate::tenancy::{self, Access, NamespaceRefusal, NamespaceRules};

/// One object's change.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Create,
    /// The managed fields where the live object differs, with old and new values
    /// (a Secret's values redacted).
    Update(Vec<FieldChange>),
    Unchanged,
    /// Labelled for the stack but no longer rendered: pruning would delete it.
    Delete,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObjectChange {
    pub object: InventoryEntry,
    pub change: Change,
}

impl ObjectChange {
    /// `Deployment shop/app`.
    pub fn title(&self) -> String {
        let object = &self.object;
        match &object.namespace {
            Some(namespace) => format!("{} {namespace}/{}", object.kind, object.name),
            None => format!("{} {}", object.kind, object.name),
        }
    }

    pub fn action(&self) -> &'static str {
        match self.change {
            Change::Create => "create",
            Change::Update(_) => "update",
            Change::Unchanged => "unchanged",
            Change::Delete => "delete",
        }
    }
}

/// The one-line header; [`text`] adds the changed fields below updates.
impl fmt::Display for ObjectChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.title();
        match &self.change {
            Change::Create => write!(f, "+ create {name}"),
            Change::Update(fields) => write!(
                f,
                "~ update {name} ({} field{})",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            ),
            Change::Unchanged => write!(f, "  unchanged {name}"),
            Change::Delete => write!(f, "- delete {name}"),
        }
    }
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// A unified diff of the managed fields, object by object, like `kubectl diff`:
/// `--- live` / `+++ stackd` per updated object, one `@@ path @@` hunk per field,
/// then a count. `colour` adds ANSI colours (only for a terminal).
pub fn text(changes: &[ObjectChange], colour: bool) -> String {
    let paint = |code: &str, line: &str| -> String {
        if colour {
            format!("{code}{line}{RESET}")
        } else {
            line.to_string()
        }
    };
    let mut out = String::new();
    for change in changes {
        let header = change.to_string();
        let _ = writeln!(
            out,
            "{}",
            match change.change {
                Change::Create => paint(GREEN, &header),
                Change::Delete => paint(RED, &header),
                Change::Update(_) => paint(BOLD, &header),
                Change::Unchanged => header,
            }
        );
        if let Change::Update(fields) = &change.change {
            let title = change.title();
            let _ = writeln!(out, "{}", paint(RED, &format!("--- live {title}")));
            let _ = writeln!(out, "{}", paint(GREEN, &format!("+++ stackd {title}")));
            for field in fields {
                let _ = writeln!(out, "{}", paint(CYAN, &format!("@@ {} @@", field.path)));
                let old = field_diff::show(field.old.as_ref());
                let new = field_diff::show(field.new.as_ref());
                let _ = writeln!(out, "{}", paint(RED, &format!("-{old}")));
                let _ = writeln!(out, "{}", paint(GREEN, &format!("+{new}")));
            }
        }
    }
    let changed = changes
        .iter()
        .filter(|c| c.change != Change::Unchanged)
        .count();
    let _ = writeln!(out, "{changed} of {} objects would change", changes.len());
    out
}

/// The machine-readable form (`stackd diff -o json`): a list of objects, each with
/// its action and, for updates, the changed paths with old and new values.
pub fn json(changes: &[ObjectChange]) -> serde_json::Value {
    serde_json::Value::Array(
        changes
            .iter()
            .map(|change| {
                let fields = match &change.change {
                    Change::Update(fields) => fields.as_slice(),
                    _ => &[],
                };
                serde_json::json!({
                    "action": change.action(),
                    "apiVersion": change.object.api_version,
                    "kind": change.object.kind,
                    "namespace": change.object.namespace,
                    "name": change.object.name,
                    "changes": fields,
                })
            })
            .collect(),
    )
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
                let fields = field_diff::changes(&object.to_json(), &live);
                if fields.is_empty() {
                    Change::Unchanged
                } else {
                    Change::Update(fields)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update() -> ObjectChange {
        ObjectChange {
            object: InventoryEntry {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: Some("shop".into()),
                name: "app".into(),
                hash: None,
            },
            change: Change::Update(vec![FieldChange {
                path: "/spec/replicas".into(),
                old: Some(json!(1)),
                new: Some(json!(2)),
                redacted: false,
            }]),
        }
    }

    #[test]
    fn colours_lines_only_when_asked() {
        let plain = text(&[update()], false);
        assert_eq!(
            plain,
            "~ update Deployment shop/app (1 field)\n--- live Deployment shop/app\n+++ stackd Deployment shop/app\n@@ /spec/replicas @@\n-1\n+2\n1 of 1 objects would change\n"
        );
        let coloured = text(&[update()], true);
        assert!(
            coloured.contains("\x1b[31m-1\x1b[0m\n\x1b[32m+2\x1b[0m"),
            "{coloured:?}"
        );
    }
}
