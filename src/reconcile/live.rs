//! The live objects stackd manages, as the controller's reflectors last saw them:
//! drift checks and status read these stores, never the API server.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use serde_json::Value;

use crate::crd::{InventoryEntry, STACK_LABEL};
use crate::reconcile::health::Workload;
use crate::reconcile::object_cache::ObjectCache;
use crate::render::object::Object;

/// One watch cache per owned kind.
#[derive(Clone, Default)]
pub struct LiveStores {
    pub config_maps: ObjectCache<ConfigMap>,
    pub secrets: ObjectCache<Secret>,
    pub services: ObjectCache<Service>,
    pub deployments: ObjectCache<Deployment>,
    pub stateful_sets: ObjectCache<StatefulSet>,
    pub daemon_sets: ObjectCache<DaemonSet>,
    pub jobs: ObjectCache<Job>,
    pub ingresses: ObjectCache<Ingress>,
    pub network_policies: ObjectCache<NetworkPolicy>,
}

/// Answers whether a kind is watched: Namespaces are not (cluster-scoped, not owned).
pub fn is_watched(kind: &str) -> bool {
    kind != "Namespace"
}

impl LiveStores {
    /// Whether every store has had its initial list. Looks, never waits.
    pub fn listed(&self) -> bool {
        self.config_maps.listed()
            && self.secrets.listed()
            && self.services.listed()
            && self.deployments.listed()
            && self.stateful_sets.listed()
            && self.daemon_sets.listed()
            && self.jobs.listed()
            && self.ingresses.listed()
            && self.network_policies.listed()
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
            "ConfigMap" => self.config_maps.labelled(namespace, label, value),
            "Secret" => self.secrets.labelled(namespace, label, value),
            "Service" => self.services.labelled(namespace, label, value),
            "Deployment" => self.deployments.labelled(namespace, label, value),
            "StatefulSet" => self.stateful_sets.labelled(namespace, label, value),
            "DaemonSet" => self.daemon_sets.labelled(namespace, label, value),
            "Job" => self.jobs.labelled(namespace, label, value),
            "Ingress" => self.ingresses.labelled(namespace, label, value),
            "NetworkPolicy" => self.network_policies.labelled(namespace, label, value),
            _ => return None,
        })
    }

    /// The stack (its `stackd.dev/stack` label) of a live object the stores
    /// hold; `None` for an object stackd does not manage (or a kind not watched).
    pub fn stack_of(&self, kind: &str, namespace: &str, name: &str) -> Option<String> {
        match kind {
            "ConfigMap" => self.config_maps.label(namespace, name, STACK_LABEL),
            "Secret" => self.secrets.label(namespace, name, STACK_LABEL),
            "Service" => self.services.label(namespace, name, STACK_LABEL),
            "Deployment" => self.deployments.label(namespace, name, STACK_LABEL),
            "StatefulSet" => self.stateful_sets.label(namespace, name, STACK_LABEL),
            "DaemonSet" => self.daemon_sets.label(namespace, name, STACK_LABEL),
            "Job" => self.jobs.label(namespace, name, STACK_LABEL),
            "Ingress" => self.ingresses.label(namespace, name, STACK_LABEL),
            "NetworkPolicy" => self.network_policies.label(namespace, name, STACK_LABEL),
            _ => None,
        }
    }

    /// The live object of an inventory entry as JSON; `None` when it does not exist
    /// (or its kind is not watched).
    pub fn get(&self, entry: &InventoryEntry) -> Option<Value> {
        let namespace = entry.namespace.as_deref()?;
        let name = entry.name.as_str();
        match entry.kind.as_str() {
            "ConfigMap" => self.config_maps.get(namespace, name),
            "Secret" => self.secrets.get(namespace, name),
            "Service" => self.services.get(namespace, name),
            "Deployment" => self.deployments.get(namespace, name),
            "StatefulSet" => self.stateful_sets.get(namespace, name),
            "DaemonSet" => self.daemon_sets.get(namespace, name),
            "Job" => self.jobs.get(namespace, name),
            "Ingress" => self.ingresses.get(namespace, name),
            "NetworkPolicy" => self.network_policies.get(namespace, name),
            _ => None,
        }
    }

    /// The live workload for a rendered one, only if the stores have it.
    pub fn existing_workload(&self, rendered: &Object, namespace: &str) -> Option<Workload> {
        let ns = rendered.namespace().unwrap_or(namespace);
        let name = rendered.name();
        match rendered {
            Object::Deployment(_) => self.deployments.typed(ns, name).map(Workload::Deployment),
            Object::StatefulSet(_) => self
                .stateful_sets
                .typed(ns, name)
                .map(Workload::StatefulSet),
            Object::DaemonSet(_) => self.daemon_sets.typed(ns, name).map(Workload::DaemonSet),
            Object::Job(_) => self.jobs.typed(ns, name).map(Workload::Job),
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
                self.deployments.typed(ns, name).map(Workload::Deployment),
                Workload::Deployment(d.clone()),
            ),
            Object::StatefulSet(s) => live(
                self.stateful_sets
                    .typed(ns, name)
                    .map(Workload::StatefulSet),
                Workload::StatefulSet(s.clone()),
            ),
            Object::DaemonSet(d) => live(
                self.daemon_sets.typed(ns, name).map(Workload::DaemonSet),
                Workload::DaemonSet(d.clone()),
            ),
            Object::Job(j) => live(
                self.jobs.typed(ns, name).map(Workload::Job),
                Workload::Job(j.clone()),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher;
    use serde_json::json;

    use super::*;

    fn stores_with(config_maps: &[Value]) -> LiveStores {
        let live = LiveStores::default();
        for object in config_maps {
            let compact = serde_json::from_value(object.clone()).unwrap();
            live.config_maps.apply(&watcher::Event::Apply(compact));
        }
        live
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
