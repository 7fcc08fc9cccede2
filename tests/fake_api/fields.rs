//! Field ownership for server-side apply: sets of leaf paths, stored in
//! `metadata.managedFields` as `fieldsV1`.
//!
//! Simplification: lists are atomic (one leaf), where the real server merges
//! lists keyed by `name`/`containerPort`. Two managers sharing one list conflict.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Metadata the server owns; never part of a manager's field set.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Leaf paths of `value`: scalars, lists and empty objects.
pub fn leaf_paths(value: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    if let Value::Object(map) = value {
        for (key, child) in map {
            if key == "apiVersion" || key == "kind" {
                continue;
            }
            if key == "metadata" {
                if let Value::Object(meta) = child {
                    for (mkey, mchild) in meta {
                        if !SERVER_METADATA.contains(&mkey.as_str()) {
                            collect(mchild, vec!["metadata".into(), mkey.clone()], &mut set);
                        }
                    }
                }
                continue;
            }
            collect(child, vec![key.clone()], &mut set);
        }
    }
    set
}

fn collect(value: &Value, path: FieldPath, set: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let mut child_path = path.clone();
                child_path.push(key.clone());
                collect(child, child_path, set);
            }
        }
        _ => {
            set.insert(path);
        }
    }
}

pub fn get<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Sets `path` to `leaf`, creating objects on the way. An empty object never
/// overwrites an existing object: it only claims the field.
pub fn set(value: &mut Value, path: &[String], leaf: &Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for key in parents {
        node = object_entry(node, key);
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        let keep = leaf.as_object().is_some_and(Map::is_empty)
            && map.get(last).is_some_and(Value::is_object);
        if !keep {
            map.insert(last.clone(), leaf.clone());
        }
    }
}

fn object_entry<'v>(node: &'v mut Value, key: &str) -> &'v mut Value {
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    match node {
        Value::Object(map) => map.entry(key.to_string()).or_insert_with(|| json!({})),
        _ => unreachable!("made an object above"),
    }
}

/// Removes `path`, then any parent objects that removal left empty.
pub fn remove(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(map) = value.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        map.remove(first);
        return;
    }
    if let Some(child) = map.get_mut(first) {
        remove(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            map.remove(first);
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `Some("status")` for writes through the status subresource.
    pub subresource: Option<String>,
    pub api_version: String,
    pub time: Option<String>,
    pub fields: FieldSet,
}

impl ManagedEntry {
    pub fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

pub fn read_managed(object: &Value) -> Vec<ManagedEntry> {
    let Some(entries) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|entry| {
            let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_string);
            let mut fields = FieldSet::new();
            if let Some(v1) = entry.get("fieldsV1") {
                decode(v1, Vec::new(), &mut fields);
            }
            ManagedEntry {
                manager: text("manager").unwrap_or_default(),
                operation: text("operation").unwrap_or_default(),
                subresource: text("subresource"),
                api_version: text("apiVersion").unwrap_or_default(),
                time: text("time"),
                fields,
            }
        })
        .collect()
}

pub fn write_managed(object: &mut Value, entries: &[ManagedEntry]) {
    let encoded: Vec<Value> = entries
        .iter()
        .filter(|entry| !entry.fields.is_empty())
        .map(|entry| {
            let mut v = json!({
                "manager": entry.manager,
                "operation": entry.operation,
                "apiVersion": entry.api_version,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(&entry.fields),
            });
            if let Some(time) = &entry.time {
                v["time"] = json!(time);
            }
            if let Some(sub) = &entry.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect();
    let metadata = object_entry(object, "metadata");
    if let Value::Object(meta) = metadata {
        if encoded.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(encoded));
        }
    }
}

fn encode(fields: &FieldSet) -> Value {
    let mut root = json!({});
    for path in fields {
        let mut node = &mut root;
        for key in path {
            node = object_entry(node, &format!("f:{key}"));
        }
    }
    root
}

fn decode(node: &Value, path: FieldPath, out: &mut FieldSet) {
    let Some(map) = node.as_object() else {
        return;
    };
    let children: Vec<_> = map
        .iter()
        .filter_map(|(key, child)| key.strip_prefix("f:").map(|k| (k, child)))
        .collect();
    if children.is_empty() {
        if !path.is_empty() {
            out.insert(path);
        }
        return;
    }
    for (key, child) in children {
        let mut child_path = path.clone();
        child_path.push(key.to_string());
        decode(child, child_path, out);
    }
}

/// `.spec.replicas` style, as in the real server's conflict messages.
pub fn dotted(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

/// Paths present in `after` whose value differs from `before`'s, and paths of
/// `before` that `after` no longer has.
pub fn diff(before: &Value, after: &Value) -> (FieldSet, FieldSet) {
    let (old, new) = (leaf_paths(before), leaf_paths(after));
    let changed = new
        .iter()
        .filter(|p| get(before, p) != get(after, p))
        .cloned()
        .collect();
    let removed = old.difference(&new).cloned().collect();
    (changed, removed)
}
