//! Labels, selectors and object metadata shared by every generated object.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::crd::{SERVICE_LABEL, STACK_LABEL};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const NAME: &str = "app.kubernetes.io/name";
/// Pod-template annotation whose change rolls the pods when mounted content changes.
pub const CONFIG_HASH: &str = "stackd.dev/config-hash";
/// Pod-template annotation with the template hash of each `restart: true`
/// dependency (`db=<hash>`), so the pods roll when the dependency's do.
pub const RESTART_ON: &str = "stackd.dev/restart-on";

/// Where every object of one stack goes and who owns it.
#[derive(Clone, Debug)]
pub struct Scope {
    pub stack: String,
    pub namespace: String,
    /// The Stack as owner; `None` when rendering offline (no uid yet).
    pub owner: Option<OwnerReference>,
}

impl Scope {
    /// Labels for an object that belongs to `service`, or to the stack as a whole.
    pub fn labels(&self, service: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (MANAGED_BY.to_string(), "stackd".to_string()),
            (PART_OF.to_string(), self.stack.clone()),
            (STACK_LABEL.to_string(), self.stack.clone()),
            (NAME.to_string(), service.unwrap_or(&self.stack).to_string()),
        ]);
        if let Some(service) = service {
            labels.insert(SERVICE_LABEL.to_string(), service.to_string());
        }
        labels
    }

    /// The immutable selector labels of a service's pods.
    pub fn selector_labels(&self, service: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (STACK_LABEL.to_string(), self.stack.clone()),
            (SERVICE_LABEL.to_string(), service.to_string()),
        ])
    }

    pub fn selector(&self, service: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector_labels(service)),
            ..LabelSelector::default()
        }
    }

    /// Metadata of a namespaced object: name, namespace, labels and the owner.
    pub fn meta(&self, name: &str, service: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(service)),
            owner_references: self.owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }
}

/// The owner reference to a Stack with this name and uid.
pub fn stack_owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "stackd.dev/v1alpha1".to_string(),
        kind: "Stack".to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `value` is a valid label value (node-affinity values must be).
pub fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
}

/// A `kompose.*` setting from the service's `labels`, else from `deploy.labels`
/// (where swarm-style files put service labels).
pub fn compose_label<'a>(service: &'a crate::render::model::Service, key: &str) -> Option<&'a str> {
    service
        .labels
        .get(key)
        .or_else(|| service.deploy.as_ref().and_then(|d| d.labels.get(key)))
        .map(String::as_str)
}
