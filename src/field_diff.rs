//! Field-level differences between a rendered object and its live copy, limited to
//! the fields stackd manages (those set in the rendered object), with a Secret's
//! values redacted. Pure: used by `stackd diff` and by the daemon's last-apply view.

use crate::reconcile::drift::is_empty;
use serde::Serialize;
use serde_json::Value;

/// What a redacted value reads as: that it changed, never what it was or is.
pub const REDACTED: &str = "(changed)";

/// One changed field. `old` is `None` when the live object lacks the field (an
/// addition), `new` is `None` when stackd no longer renders a list item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// A JSON pointer, e.g. `/spec/template/spec/containers/0/image`.
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// A Secret's value: `old` and `new` both read `(changed)`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

/// Every managed field where `live` differs from `desired`, in document order.
/// Fields unset in `desired` are not stackd's and are ignored, as in drift detection.
pub fn changes(desired: &Value, live: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(desired, live, &mut String::new(), &mut out);
    if is_secret(desired) {
        for change in &mut out {
            if secret_value(&change.path) {
                change.redacted = true;
                change.old = Some(Value::String(REDACTED.into()));
                change.new = Some(Value::String(REDACTED.into()));
            }
        }
    }
    out
}

fn is_secret(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Secret")
}

/// A Secret's values live under `data` and `stringData`; a whole replaced map
/// (path exactly `/data`) is redacted as well.
fn secret_value(path: &str) -> bool {
    ["/data", "/stringData"]
        .iter()
        .any(|root| path == *root || path.starts_with(&format!("{root}/")))
}

fn push_key(path: &mut String, key: &str) {
    path.push('/');
    // JSON pointer escaping (RFC 6901).
    path.push_str(&key.replace('~', "~0").replace('/', "~1"));
}

fn walk(desired: &Value, live: &Value, path: &mut String, out: &mut Vec<FieldChange>) {
    match (desired, live) {
        (Value::Null, _) => {}
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let before = path.len();
                push_key(path, key);
                match have.get(key) {
                    Some(live) => walk(value, live, path, out),
                    None if !is_empty(value) => out.push(FieldChange {
                        path: path.clone(),
                        old: None,
                        new: Some(value.clone()),
                        redacted: false,
                    }),
                    None => {}
                }
                path.truncate(before);
            }
        }
        (Value::Array(want), Value::Array(have)) => {
            for i in 0..want.len().max(have.len()) {
                let before = path.len();
                path.push_str(&format!("/{i}"));
                match (want.get(i), have.get(i)) {
                    (Some(w), Some(h)) => walk(w, h, path, out),
                    (w, h) => out.push(FieldChange {
                        path: path.clone(),
                        old: h.cloned(),
                        new: w.cloned(),
                        redacted: false,
                    }),
                }
                path.truncate(before);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (want, have) if want == have => {}
        (want, have) => out.push(FieldChange {
            path: path.clone(),
            old: Some(have.clone()),
            new: Some(want.clone()),
            redacted: false,
        }),
    }
}

/// A value on one line for people: strings in JSON quotes (so spaces and empty
/// strings show), maps and lists as compact JSON, absence as `(absent)`.
pub fn show(value: Option<&Value>) -> String {
    match value {
        None => "(absent)".to_string(),
        Some(Value::String(s)) if s == REDACTED => REDACTED.to_string(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str, replicas: u32) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn reports_old_and_new_values_of_managed_fields_only() {
        let mut live = deployment("nginx:1.26", 1);
        live["status"] = json!({"readyReplicas": 1});
        live["metadata"]["uid"] = json!("abc");
        let found = changes(&deployment("nginx:1.27", 3), &live);
        assert_eq!(
            found,
            vec![
                FieldChange {
                    path: "/spec/replicas".into(),
                    old: Some(json!(1)),
                    new: Some(json!(3)),
                    redacted: false
                },
                FieldChange {
                    path: "/spec/template/spec/containers/0/image".into(),
                    old: Some(json!("nginx:1.26")),
                    new: Some(json!("nginx:1.27")),
                    redacted: false
                },
            ]
        );
        assert!(changes(&deployment("a", 1), &deployment("a", 1)).is_empty());
    }

    #[test]
    fn list_items_added_and_removed_and_keys_escaped() {
        let want =
            json!({"metadata": {"labels": {"app.kubernetes.io/name": "x"}}, "ports": [80, 443]});
        let have = json!({"metadata": {"labels": {}}, "ports": [80, 8080, 9090]});
        let paths: Vec<_> = changes(&want, &have)
            .into_iter()
            .map(|c| (c.path, show(c.old.as_ref()), show(c.new.as_ref())))
            .collect();
        assert_eq!(
            paths,
            vec![
                (
                    "/metadata/labels/app.kubernetes.io~1name".to_string(),
                    "(absent)".to_string(),
                    "\"x\"".to_string()
                ),
                ("/ports/1".into(), "8080".into(), "443".into()),
                ("/ports/2".into(), "9090".into(), "(absent)".into()),
            ]
        );
    }

    #[test]
    fn a_secrets_values_are_only_said_to_have_changed() {
        let want = json!({"kind": "Secret", "metadata": {"name": "db"}, "type": "Opaque",
                          "data": {"PASSWORD": "bmV3LXNlY3JldA=="}, "stringData": {"TOKEN": "new-token"}});
        let have = json!({"kind": "Secret", "metadata": {"name": "db"}, "type": "kubernetes.io/tls",
                          "data": {"PASSWORD": "b2xkLXNlY3JldA=="}});
        let found = changes(&want, &have);
        let text = serde_json::to_string(&found).unwrap();
        for value in ["bmV3LXNlY3JldA==", "b2xkLXNlY3JldA==", "new-token"] {
            assert!(!text.contains(value), "{text}");
        }
        assert_eq!(found.len(), 3, "{text}");
        assert!(!found[0].redacted, "the type is not secret");
        assert!(found[1].redacted && found[2].redacted, "{text}");
        assert_eq!(found[1].path, "/data/PASSWORD");
        assert_eq!(show(found[2].new.as_ref()), "(changed)");
    }
}
