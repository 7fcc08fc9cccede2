//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

pub fn json_patch(target: &mut Value, operations: &Value) -> Result<(), String> {
    let operations = operations
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for op in operations {
        let field = |name: &str| op.get(name).and_then(Value::as_str);
        let path = field("path").ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("{path}: missing \"value\""))
        };
        match field("op").unwrap_or_default() {
            "add" => add(target, path, value()?)?,
            "remove" => {
                take(target, path)?;
            }
            "replace" => {
                take(target, path)?;
                add(target, path, value()?)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(format!("test operation failed at {path}"));
                }
            }
            "move" => {
                let from = field("from").ok_or("move without \"from\"")?;
                let moved = take(target, from)?;
                add(target, path, moved)?;
            }
            "copy" => {
                let from = field("from").ok_or("copy without \"from\"")?;
                let copied = target
                    .pointer(from)
                    .cloned()
                    .ok_or(format!("{from}: not found"))?;
                add(target, path, copied)?;
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

fn split(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or(format!("invalid JSON pointer {path:?}"))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, key) = split(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => {
            map.insert(key, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if key == "-" {
                items.len()
            } else {
                index(&key, items.len() + 1)?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("{path}: parent does not exist")),
    }
}

fn take(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, key) = split(path)?;
    let missing = || format!("{path}: not found");
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => map.remove(&key).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let i = index(&key, items.len())?;
            Ok(items.remove(i))
        }
        _ => Err(missing()),
    }
}

fn index(key: &str, bound: usize) -> Result<usize, String> {
    key.parse::<usize>()
        .ok()
        .filter(|i| *i < bound)
        .ok_or(format!("array index {key:?} out of range"))
}
