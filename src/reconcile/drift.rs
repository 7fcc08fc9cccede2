//! Drift: a field stackd renders that differs in the live object. Desired ⊆ live,
//! so fields stackd does not render (defaults, status, replicas set by an HPA
//! when compose has none) are never drift.

use serde_json::Value;

use crate::crd::{InventoryEntry, SERVICE_LABEL};
use crate::reconcile::apply::entry_for;
use crate::reconcile::live::{self, LiveStores};
use crate::render::model::Project;
use crate::render::object::{Object, Rendered};
use crate::render::sanitise_name;

/// The first path where `live` does not contain `desired`, or `None` when it does.
pub fn difference(desired: &Value, live: &Value) -> Option<String> {
    let mut path = String::new();
    differs(desired, live, &mut path).then_some(path)
}

fn differs(desired: &Value, live: &Value, path: &mut String) -> bool {
    match (desired, live) {
        // Unset in the rendered object: stackd has no opinion.
        (Value::Null, _) => false,
        (Value::Object(want), Value::Object(have)) => want.iter().any(|(key, value)| {
            let before = path.len();
            path.push('/');
            path.push_str(key);
            let found = match have.get(key) {
                Some(live) => differs(value, live, path),
                // An empty map or list the server dropped is not drift.
                None => !is_empty(value),
            };
            if !found {
                path.truncate(before);
            }
            found
        }),
        (Value::Array(want), Value::Array(have)) => {
            if want.len() != have.len() {
                return true;
            }
            want.iter().zip(have).enumerate().any(|(i, (w, h))| {
                let before = path.len();
                path.push_str(&format!("/{i}"));
                let found = differs(w, h, path);
                if !found {
                    path.truncate(before);
                }
                found
            })
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() != b.as_f64(),
        (want, have) => want != have,
    }
}

/// Null, or a map or list with nothing in it: the server drops these, so they are no difference.
pub(crate) fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.values().all(is_empty),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Objects whose hash matches the inventory but whose live object (from the
/// stores) is missing or differs in a rendered field: their inventory hash is
/// cleared so the plan updates them.
pub fn mark(
    project: &Project,
    namespace: &str,
    rendered: &Rendered,
    inventory: &[InventoryEntry],
    live: &LiveStores,
) -> (Vec<InventoryEntry>, Vec<InventoryEntry>) {
    let mut marked = inventory.to_vec();
    let mut drifted = Vec::new();
    for object in &rendered.objects {
        let entry = entry_for(namespace, object);
        if !live::is_watched(&entry.kind) {
            continue;
        }
        let Some(known) = marked.iter_mut().find(|old| {
            (&old.kind, &old.namespace, &old.name) == (&entry.kind, &entry.namespace, &entry.name)
        }) else {
            continue;
        };
        if known.hash != entry.hash {
            continue;
        }
        let difference = match live.get(&entry) {
            None => Some("the object is missing".to_string()),
            Some(current) => difference(&desired_for_drift(object, project), &current),
        };
        if let Some(path) = difference {
            tracing::info!(object = %format!("{} {}/{}", entry.kind, namespace, entry.name), %path, "drift");
            known.hash = None;
            drifted.push(entry);
        }
    }
    (marked, drifted)
}

/// The rendered fields that count for drift. Replicas the renderer filled in
/// by default (compose sets neither `deploy.replicas` nor `scale`) belong to
/// whoever scales the workload (an HPA, `kubectl scale`), not to stackd.
fn desired_for_drift(object: &Object, project: &Project) -> serde_json::Value {
    let mut desired = object.to_json();
    let scalable = matches!(object, Object::Deployment(_) | Object::StatefulSet(_));
    let service = object
        .metadata()
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_LABEL));
    let compose_sets_replicas = service.is_none_or(|label| {
        project.services.iter().any(|(name, service)| {
            names_match(name, label)
                && (service.scale.is_some()
                    || service
                        .deploy
                        .as_ref()
                        .is_some_and(|d| d.replicas.is_some()))
        })
    });
    if scalable
        && !compose_sets_replicas
        && let Some(spec) = desired.get_mut("spec").and_then(|s| s.as_object_mut())
    {
        spec.remove("replicas");
    }
    desired
}

/// A compose service name and the (sanitised) service label of its objects.
fn names_match(compose_name: &str, label: &str) -> bool {
    compose_name == label || sanitise_name(compose_name) == label
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str) -> Value {
        json!({"metadata": {"name": "web", "labels": {"a": "b"}},
               "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn fields_stackd_does_not_render_are_not_drift() {
        let mut live = deployment("nginx:1.27");
        live["spec"]["replicas"] = json!(5);
        live["metadata"]["resourceVersion"] = json!("12");
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        live["status"] = json!({"readyReplicas": 5});
        assert_eq!(difference(&deployment("nginx:1.27"), &live), None);
    }

    #[test]
    fn a_changed_rendered_field_is_drift_and_named() {
        let live = deployment("nginx:1.25");
        assert_eq!(
            difference(&deployment("nginx:1.27"), &live).as_deref(),
            Some("/spec/template/spec/containers/0/image")
        );
        let mut extra = deployment("nginx:1.27");
        extra["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar"}));
        assert_eq!(
            difference(&deployment("nginx:1.27"), &extra).as_deref(),
            Some("/spec/template/spec/containers")
        );
        let mut removed_label = deployment("nginx:1.27");
        removed_label["metadata"]["labels"] = json!({});
        assert_eq!(
            difference(&deployment("nginx:1.27"), &removed_label).as_deref(),
            Some("/metadata/labels/a")
        );
    }

    #[test]
    fn numbers_compare_by_value_and_empty_maps_may_be_dropped() {
        assert_eq!(difference(&json!({"a": 1}), &json!({"a": 1.0})), None);
        assert_eq!(difference(&json!({"a": {}, "b": []}), &json!({})), None);
        assert_eq!(difference(&json!({"a": {"x": null}}), &json!({})), None);
    }
}
