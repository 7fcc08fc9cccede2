//! The live objects stackd manages, as the controller's reflectors last saw them:
//! drift checks and status read these stores, never the API server.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

use crate::crd::{InventoryEntry, STACK_LABEL};
use crate::reconcile::compact::Compact;
use crate::reconcile::health::Workload;
use crate::render::object::Object;

/// One reflector store per owned kind, of compact objects.
#[derive(Clone)]
pub struct LiveStores {
    pub config_maps: Store<Compact<ConfigMap>>,
    pub secrets: Store<Compact<Secret>>,
    pub services: Store<Compact<Service>>,
    pub deployments: Store<Compact<Deployment>>,
    pub stateful_sets: Store<Compact<StatefulSet>>,
    pub daemon_sets: Store<Compact<DaemonSet>>,
    pub jobs: Store<Compact<Job>>,
    pub ingresses: Store<Compact<Ingress>>,
    pub network_policies: Store<Compact<NetworkPolicy>>,
}

fn lookup<K>(
    store: &Store<Compact<K>>,
    namespace: &str,
    name: &str,
) -> Option<std::sync::Arc<Compact<K>>>
where
    K: kube::Resource<DynamicType = ()> + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

fn as_json<K: kube::Resource<DynamicType = ()>>(
    object: Option<std::sync::Arc<Compact<K>>>,
) -> Option<Value> {
    object.and_then(|o| o.to_json())
}

/// The live object typed, as health reads it.
fn typed<K>(store: &Store<Compact<K>>, namespace: &str, name: &str) -> Option<K>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + 'static,
{
    lookup(store, namespace, name).and_then(|o| o.typed())
}

/// Answers whether a kind is watched: Namespaces are not (cluster-scoped, not owned).
pub fn is_watched(kind: &str) -> bool {
    kind != "Namespace"
}

/// Names of the objects in `store` within `namespace` that carry `label=value`.
fn labelled<K>(store: &Store<Compact<K>>, namespace: &str, label: &str, value: &str) -> Vec<String>
where
    K: kube::Resource<DynamicType = ()> + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        // Labels are kept as text: parsed only for the namespace's objects.
        .filter(|o| o.label(label).is_some_and(|v| v == value))
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

impl LiveStores {
    /// Whether every store has had its initial list. Looks, never waits.
    pub fn listed(&self) -> bool {
        use futures::FutureExt;
        let ready = async {
            futures::join!(
                self.config_maps.wait_until_ready(),
                self.secrets.wait_until_ready(),
                self.services.wait_until_ready(),
                self.deployments.wait_until_ready(),
                self.stateful_sets.wait_until_ready(),
                self.daemon_sets.wait_until_ready(),
                self.jobs.wait_until_ready(),
                self.ingresses.wait_until_ready(),
                self.network_policies.wait_until_ready(),
            )
        };
        ready.now_or_never().is_some()
    }

    /// Names of the objects of `kind` in `namespace` labelled `label=value`, as
    /// the watch caches hold them; `None` for a kind that is not watched.
    pub fn labelled_names(
        &self,
        kind: &str,
        namespace: &str,
        label: &str,
        value: &str,
    ) -> Option<Vec<String>> {
        Some(match kind {
            "ConfigMap" => labelled(&self.config_maps, namespace, label, value),
            "Secret" => labelled(&self.secrets, namespace, label, value),
            "Service" => labelled(&self.services, namespace, label, value),
            "Deployment" => labelled(&self.deployments, namespace, label, value),
            "StatefulSet" => labelled(&self.stateful_sets, namespace, label, value),
            "DaemonSet" => labelled(&self.daemon_sets, namespace, label, value),
            "Job" => labelled(&self.jobs, namespace, label, value),
            "Ingress" => labelled(&self.ingresses, namespace, label, value),
            "NetworkPolicy" => labelled(&self.network_policies, namespace, label, value),
            _ => return None,
        })
    }

    /// The stack (its `stackd.dev/stack` label) of a live object the stores
    /// hold; `None` for an object stackd does not manage (or a kind not watched).
    pub fn stack_of(&self, kind: &str, namespace: &str, name: &str) -> Option<String> {
        fn label<K>(store: &Store<Compact<K>>, namespace: &str, name: &str) -> Option<String>
        where
            K: kube::Resource<DynamicType = ()> + 'static,
        {
            // Labels are kept as text in the compact object.
            lookup(store, namespace, name)?.label(STACK_LABEL)
        }
        match kind {
            "ConfigMap" => label(&self.config_maps, namespace, name),
            "Secret" => label(&self.secrets, namespace, name),
            "Service" => label(&self.services, namespace, name),
            "Deployment" => label(&self.deployments, namespace, name),
            "StatefulSet" => label(&self.stateful_sets, namespace, name),
            "DaemonSet" => label(&self.daemon_sets, namespace, name),
            "Job" => label(&self.jobs, namespace, name),
            "Ingress" => label(&self.ingresses, namespace, name),
            "NetworkPolicy" => label(&self.network_policies, namespace, name),
            _ => None,
        }
    }

    /// The live object of an inventory entry as JSON; `None` when it does not exist
    /// (or its kind is not watched).
    pub fn get(&self, entry: &InventoryEntry) -> Option<Value> {
        let namespace = entry.namespace.as_deref()?;
        let name = entry.name.as_str();
        match entry.kind.as_str() {
            "ConfigMap" => as_json(lookup(&self.config_maps, namespace, name)),
            "Secret" => as_json(lookup(&self.secrets, namespace, name)),
            "Service" => as_json(lookup(&self.services, namespace, name)),
            "Deployment" => as_json(lookup(&self.deployments, namespace, name)),
            "StatefulSet" => as_json(lookup(&self.stateful_sets, namespace, name)),
            "DaemonSet" => as_json(lookup(&self.daemon_sets, namespace, name)),
            "Job" => as_json(lookup(&self.jobs, namespace, name)),
            "Ingress" => as_json(lookup(&self.ingresses, namespace, name)),
            "NetworkPolicy" => as_json(lookup(&self.network_policies, namespace, name)),
            _ => None,
        }
    }

    /// The live workload for a rendered one, only if the stores have it.
    pub fn existing_workload(&self, rendered: &Object, namespace: &str) -> Option<Workload> {
        let ns = rendered.namespace().unwrap_or(namespace);
        let name = rendered.name();
        match rendered {
            Object::Deployment(_) => typed(&self.deployments, ns, name).map(Workload::Deployment),
            Object::StatefulSet(_) => {
                typed(&self.stateful_sets, ns, name).map(Workload::StatefulSet)
            }
            Object::DaemonSet(_) => typed(&self.daemon_sets, ns, name).map(Workload::DaemonSet),
            Object::Job(_) => typed(&self.jobs, ns, name).map(Workload::Job),
            _ => None,
        }
    }

    /// The live workload for a rendered one, or the rendered one itself (no status
    /// yet: not ready) while the reflector has not seen it.
    pub fn workload(&self, rendered: &Object, namespace: &str) -> Option<Workload> {
        let ns = rendered.namespace().unwrap_or(namespace);
        let name = rendered.name();
        let live = |w: Option<Workload>, fallback: Workload| Some(w.unwrap_or(fallback));
        match rendered {
            Object::Deployment(d) => live(
                typed(&self.deployments, ns, name).map(Workload::Deployment),
                Workload::Deployment(d.clone()),
            ),
            Object::StatefulSet(s) => live(
                typed(&self.stateful_sets, ns, name).map(Workload::StatefulSet),
                Workload::StatefulSet(s.clone()),
            ),
            Object::DaemonSet(d) => live(
                typed(&self.daemon_sets, ns, name).map(Workload::DaemonSet),
                Workload::DaemonSet(d.clone()),
            ),
            Object::Job(j) => live(
                typed(&self.jobs, ns, name).map(Workload::Job),
                Workload::Job(j.clone()),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    use super::*;

    fn stores_with(config_maps: &[Value]) -> LiveStores {
        let (config_map_store, mut writer) = reflector::store::<Compact<ConfigMap>>();
        for object in config_maps {
            let compact = serde_json::from_value(object.clone()).unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(compact));
        }
        LiveStores {
            config_maps: config_map_store,
            secrets: reflector::store().0,
            services: reflector::store().0,
            deployments: reflector::store().0,
            stateful_sets: reflector::store().0,
            daemon_sets: reflector::store().0,
            jobs: reflector::store().0,
            ingresses: reflector::store().0,
            network_policies: reflector::store().0,
        }
    }

    fn config_map(namespace: &str, name: &str, stack: Option<&str>) -> Value {
        let mut object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": {"k": "v"}});
        if let Some(stack) = stack {
            object["metadata"]["labels"] = json!({"stackd.dev/stack": stack, "app": name});
        }
        object
    }

    #[test]
    fn labelled_names_read_the_labels_kept_as_text_within_the_namespace() {
        let live = stores_with(&[
            config_map("apps", "lost", Some("shop")),
            config_map("apps", "neighbour", Some("blog")),
            config_map("apps", "unlabelled", None),
            config_map("other", "elsewhere", Some("shop")),
        ]);
        let found = live.labelled_names("ConfigMap", "apps", "stackd.dev/stack", "shop");
        assert_eq!(found, Some(vec!["lost".to_string()]));
        assert_eq!(
            live.labelled_names("Deployment", "apps", "stackd.dev/stack", "shop"),
            Some(vec![])
        );
        assert_eq!(
            live.labelled_names("Namespace", "apps", "stackd.dev/stack", "shop"),
            None
        );
    }

    #[test]
    fn the_stack_of_an_object_is_read_from_its_labels_kept_as_text() {
        let live = stores_with(&[
            config_map("apps", "site", Some("shop")),
            config_map("apps", "unlabelled", None),
        ]);
        assert_eq!(
            live.stack_of("ConfigMap", "apps", "site"),
            Some("shop".into())
        );
        assert_eq!(live.stack_of("ConfigMap", "apps", "unlabelled"), None);
        assert_eq!(live.stack_of("ConfigMap", "other", "site"), None);
        assert_eq!(live.stack_of("Pod", "apps", "site"), None);
    }

    #[test]
    fn get_gives_the_whole_object_back_with_its_labels() {
        let object = config_map("apps", "lost", Some("shop"));
        let live = stores_with(std::slice::from_ref(&object));
        let entry = InventoryEntry {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("apps".into()),
            name: "lost".into(),
            hash: None,
        };
        assert_eq!(live.get(&entry), Some(object));
    }
}
