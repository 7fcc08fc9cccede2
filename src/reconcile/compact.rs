//! A watched object as the controller's caches keep it: the metadata that
//! identifies it and its owners, typed, and everything else as JSON text. A
//! typed `Deployment` is over 6 KB inline before its containers; its JSON is
//! about one. Labels and annotations are text too: a `BTreeMap` allocates a
//! node of eleven entries (544 bytes) for one label, and the caches hold every
//! object stackd manages, while drift and health read a stack's few at a time
//! and parse them then. The text is kept deflated: the Stack store holds
//! every Stack with its compose model and status (about 4 kB of JSON each,
//! 1.3 kB deflated). An owned object's is inflated once more, when its kind's
//! `ObjectCache` keeps it (about 3 % of the first apply's CPU, both together).
//!
//! `apiVersion` and `kind` come from `K`, not from what the server sent: a
//! LIST's items carry neither (only the list does), a watch event's do. Kept as
//! sent, every object that came through a (re-)list would look drifted at
//! `/apiVersion` and be applied again.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::deflate;

/// The metadata fields kept typed: what the reflector keys objects by and what
/// the Controller maps owned objects to their Stack with. The rest of the
/// metadata stays in the JSON text.
const TYPED_METADATA: [&str; 5] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "ownerReferences",
];

/// An object of kind `K`, kept compact.
pub struct Compact<K> {
    /// Only the [`TYPED_METADATA`] fields.
    metadata: ObjectMeta,
    /// The object without `apiVersion` and `kind`, and with only the rest of
    /// its metadata (labels, annotations, ...; `managedFields` dropped), as a
    /// JSON object, deflated.
    body: Box<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource<DynamicType = ()>> Compact<K> {
    /// The whole object as JSON, typed by `K`, metadata included.
    pub fn to_json(&self) -> Option<Value> {
        let mut object: Map<String, Value> = serde_json::from_slice(&self.body_text()?).ok()?;
        let Value::Object(mut metadata) = serde_json::to_value(&self.metadata).ok()? else {
            return None;
        };
        if let Some(Value::Object(rest)) = object.remove("metadata") {
            metadata.extend(rest);
        }
        object.insert("apiVersion".to_string(), K::api_version(&()).into());
        object.insert("kind".to_string(), K::kind(&()).into());
        object.insert("metadata".to_string(), Value::Object(metadata));
        Some(Value::Object(object))
    }

    /// The object as its typed Kubernetes kind.
    pub fn typed(&self) -> Option<K>
    where
        K: DeserializeOwned,
    {
        serde_json::from_value(self.to_json()?).ok()
    }
}

impl<K> Compact<K> {
    /// The value of one of its labels.
    pub fn label(&self, key: &str) -> Option<String> {
        self.metadata_entry("labels", key)
    }

    /// The value of one of its annotations.
    pub fn annotation(&self, key: &str) -> Option<String> {
        self.metadata_entry("annotations", key)
    }

    fn body_text(&self) -> Option<Vec<u8>> {
        deflate::inflate(&self.body)
    }

    /// `metadata.<map>.<key>`, read from the text.
    fn metadata_entry(&self, map: &str, key: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            metadata: BTreeMap<String, Value>,
        }
        let mut object: Object = serde_json::from_slice(&self.body_text()?).ok()?;
        match object.metadata.remove(map)? {
            Value::Object(mut entries) => match entries.remove(key)? {
                Value::String(value) => Some(value),
                _ => None,
            },
            _ => None,
        }
    }
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Compact {
            metadata: self.metadata.clone(),
            body: self.body.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Compact<K> {
    // The body may be a Secret's data: show only which object this is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compact")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .finish_non_exhaustive()
    }
}

impl<'de, K> Deserialize<'de> for Compact<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Parts {
            #[serde(default)]
            metadata: Map<String, Value>,
            #[serde(flatten)]
            rest: Map<String, Value>,
        }
        let mut parts = Parts::deserialize(deserializer)?;
        parts.rest.remove("apiVersion");
        parts.rest.remove("kind");
        // Drift and status never read them, and at thousands of objects they
        // would be a large share of the caches.
        parts.metadata.remove("managedFields");
        let typed: Map<String, Value> = TYPED_METADATA
            .iter()
            .filter_map(|key| Some((key.to_string(), parts.metadata.remove(*key)?)))
            .collect();
        let metadata: ObjectMeta =
            serde_json::from_value(Value::Object(typed)).map_err(D::Error::custom)?;
        if !parts.metadata.is_empty() {
            parts
                .rest
                .insert("metadata".to_string(), Value::Object(parts.metadata));
        }
        let body = serde_json::to_vec(&parts.rest).map_err(D::Error::custom)?;
        Ok(Compact {
            metadata,
            body: deflate::deflate(&body),
            kind: PhantomData,
        })
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }

    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }

    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }

    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"stackd.dev/stack": "shop"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
                }
            },
            "status": {"readyReplicas": 1}
        })
    }

    #[test]
    fn keeps_the_whole_object_and_types_it_on_demand() {
        let compact: Compact<Deployment> = serde_json::from_value(deployment()).unwrap();
        assert_eq!(compact.meta().name.as_deref(), Some("web"));
        assert_eq!(compact.to_json(), Some(deployment()));
        let typed = compact.typed().unwrap();
        assert_eq!(typed.spec.unwrap().replicas, Some(2));
        assert_eq!(typed.status.unwrap().ready_replicas, Some(1));
    }

    #[test]
    fn a_listed_item_without_api_version_and_kind_gets_them_from_its_kind() {
        // A real API server's LIST items carry neither; its watch events do.
        let mut listed = deployment();
        let object = listed.as_object_mut().unwrap();
        object.remove("apiVersion");
        object.remove("kind");
        let compact: Compact<Deployment> = serde_json::from_value(listed).unwrap();
        assert_eq!(compact.to_json(), Some(deployment()));
    }

    #[test]
    fn keeps_only_identity_and_owners_typed_and_the_rest_of_the_metadata_as_text() {
        let mut sent = deployment();
        sent["metadata"]["uid"] = json!("u-1");
        sent["metadata"]["resourceVersion"] = json!("7");
        sent["metadata"]["annotations"] = json!({"stackd.dev/prune": "disabled"});
        sent["metadata"]["creationTimestamp"] = json!("2026-01-02T03:04:05Z");
        sent["metadata"]["ownerReferences"] = json!([
            {"apiVersion": "stackd.dev/v1alpha1", "kind": "Stack", "name": "shop", "uid": "s-1"}
        ]);
        sent["metadata"]["managedFields"] = json!([{"manager": "stackd", "operation": "Apply"}]);
        let compact: Compact<Deployment> = serde_json::from_value(sent.clone()).unwrap();

        let meta = compact.meta();
        assert_eq!(meta.uid.as_deref(), Some("u-1"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(meta.owner_references.as_ref().unwrap()[0].name, "shop");
        assert_eq!(
            (meta.labels.as_ref(), meta.annotations.as_ref()),
            (None, None)
        );
        assert_eq!(compact.label("stackd.dev/stack").as_deref(), Some("shop"));
        assert_eq!(compact.label("app"), None);
        assert_eq!(
            compact.annotation("stackd.dev/prune").as_deref(),
            Some("disabled")
        );
        assert_eq!(compact.annotation("stackd.dev/stack"), None);

        // The whole object comes back, but for the managed fields.
        sent["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(compact.to_json(), Some(sent));
        let typed = compact.typed().unwrap();
        assert_eq!(
            typed.metadata.annotations.unwrap()["stackd.dev/prune"],
            "disabled"
        );
        assert!(typed.metadata.creation_timestamp.is_some());
    }

    #[test]
    fn an_object_without_labels_has_none() {
        let compact: Compact<Deployment> = serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {}}),
        )
        .unwrap();
        assert_eq!(compact.label("stackd.dev/stack"), None);
        assert_eq!(compact.meta().name.as_deref(), Some("web"));
    }

    #[test]
    fn speaks_for_its_kind() {
        assert_eq!(Compact::<Deployment>::kind(&()), "Deployment");
        assert_eq!(Compact::<Deployment>::api_version(&()), "apps/v1");
        assert_eq!(Compact::<Deployment>::plural(&()), "deployments");
    }

    #[test]
    fn debug_shows_no_content() {
        let secret: Compact<k8s_openapi::api::core::v1::Secret> = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"pw": "aHVudGVyMg=="}}),
        )
        .unwrap();
        let shown = format!("{secret:?}");
        assert!(
            shown.contains("db") && !shown.contains("aHVudGVyMg"),
            "{shown}"
        );
    }
}
