//! Drift: a field stackd renders that differs in the live object. Desired ⊆ live,
//! so fields stackd does not render (defaults, status, replicas set by an HPA
//! when compose has none) are never drift.

use serde_json::Value;

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

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.values().all(is_empty),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
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
