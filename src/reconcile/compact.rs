//! A watched object as the controller's caches keep it: its metadata, typed,
//! and everything else as JSON text. A typed `Deployment` is over 6 KB inline
//! before its containers; its JSON is about one. The caches hold every object
//! stackd manages, while drift and health read a stack's few at a time and
//! parse them then.
//!
//! `apiVersion` and `kind` come from `K`, not from what the server sent: a
//! LIST's items carry neither (only the list does), a watch event's do. Kept as
//! sent, every object that came through a (re-)list would look drifted at
//! `/apiVersion` and be applied again.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// An object of kind `K`, kept compact.
pub struct Compact<K> {
    metadata: ObjectMeta,
    /// The object without `metadata`, `apiVersion` and `kind`, as a JSON object.
    body: Box<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource<DynamicType = ()>> Compact<K> {
    /// The whole object as JSON, typed by `K`, metadata included.
    pub fn to_json(&self) -> Option<Value> {
        let mut object: Map<String, Value> = serde_json::from_str(&self.body).ok()?;
        object.insert("apiVersion".to_string(), K::api_version(&()).into());
        object.insert("kind".to_string(), K::kind(&()).into());
        object.insert(
            "metadata".to_string(),
            serde_json::to_value(&self.metadata).ok()?,
        );
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
            metadata: ObjectMeta,
            #[serde(flatten)]
            rest: Map<String, Value>,
        }
        let mut parts = Parts::deserialize(deserializer)?;
        parts.rest.remove("apiVersion");
        parts.rest.remove("kind");
        let body = serde_json::to_string(&parts.rest).map_err(D::Error::custom)?;
        Ok(Compact {
            metadata: parts.metadata,
            body: body.into_boxed_str(),
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
