//! A rendered Kubernetes object, typed with k8s-openapi.

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Every kind the renderer can emit, in apply order: a namespace first, then what
/// pods mount, then Services, then NetworkPolicies (so pods start isolated), then workloads, then Ingresses that point at Services.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    NetworkPolicy(NetworkPolicy),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
    Job(Job),
    Ingress(Ingress),
}

/// `(apiVersion, kind)` of every kind in [`Object`], in apply order. The ClusterRole
/// test checks that RBAC covers each.
pub const RENDERED_KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("networking.k8s.io/v1", "Ingress"),
];

macro_rules! each_object {
    ($value:expr, $inner:ident => $body:expr) => {
        match $value {
            Object::Namespace($inner) => $body,
            Object::ConfigMap($inner) => $body,
            Object::Secret($inner) => $body,
            Object::Service($inner) => $body,
            Object::NetworkPolicy($inner) => $body,
            Object::Deployment($inner) => $body,
            Object::StatefulSet($inner) => $body,
            Object::DaemonSet($inner) => $body,
            Object::Job($inner) => $body,
            Object::Ingress($inner) => $body,
        }
    };
}

fn type_of<T: Resource>(_: &T) -> (&'static str, &'static str) {
    (T::API_VERSION, T::KIND)
}

impl Object {
    pub fn api_version(&self) -> &'static str {
        each_object!(self, o => type_of(o).0)
    }

    pub fn kind(&self) -> &'static str {
        each_object!(self, o => type_of(o).1)
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each_object!(self, o => &o.metadata)
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each_object!(self, o => &mut o.metadata)
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// Position in apply order (see [`RENDERED_KINDS`]).
    pub fn apply_rank(&self) -> usize {
        RENDERED_KINDS
            .iter()
            .position(|(_, kind)| *kind == self.kind())
            .unwrap_or(usize::MAX)
    }

    /// The object as JSON with `apiVersion` and `kind` set, ready to apply.
    pub fn to_json(&self) -> serde_json::Value {
        each_object!(self, o => to_value_with_type(o))
    }

    /// A hash of the full rendered content, for "unchanged since last apply" checks.
    pub fn content_hash(&self) -> String {
        let bytes = serde_json::to_vec(&self.to_json()).expect("objects always serialise");
        short_hash(&bytes)
    }
}

fn to_value_with_type<T: Resource + Serialize>(object: &T) -> serde_json::Value {
    // k8s-openapi's Serialize impls already write apiVersion and kind.
    serde_json::to_value(object).expect("objects always serialise")
}

/// The first 10 hex digits of a SHA-256, as used in content-hash name suffixes.
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..5])
}

/// The result of rendering one stack.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendered {
    /// Sorted by apply rank, then namespace and name.
    pub objects: Vec<Object>,
    /// Human-readable warnings, e.g. `service "web": logging is ignored (...)`.
    pub warnings: Vec<String>,
}

impl Rendered {
    /// Sorts objects into the deterministic apply order.
    pub fn sort(&mut self) {
        self.objects.sort_by(|a, b| {
            (a.apply_rank(), a.namespace(), a.name()).cmp(&(
                b.apply_rank(),
                b.namespace(),
                b.name(),
            ))
        });
    }

    /// Multi-document YAML, one `---` document per object, as `stackd render` prints it.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(
                &serde_saphyr::to_string(&object.to_json()).expect("JSON values always serialise"),
            );
        }
        out
    }

    /// A `v1/List` of every object as pretty JSON, like `kubectl get -o json`.
    pub fn to_json_list(&self) -> String {
        let items: Vec<_> = self.objects.iter().map(Object::to_json).collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        serde_json::to_string_pretty(&list).expect("JSON values always serialise") + "\n"
    }
}
