//! Validation the real server does before storing: types, names, immutable
//! fields, and workload selectors.

use serde_json::Value;

use super::error::ApiError;
use super::resources::{NameRule, ResourceType};

fn text<'v>(object: &'v Value, pointer: &str) -> Option<&'v str> {
    object.pointer(pointer).and_then(Value::as_str)
}

pub fn check_type(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let api_version = text(body, "/apiVersion");
    let kind = text(body, "/kind");
    if api_version.is_some_and(|v| v != rt.api_version()) || kind.is_some_and(|k| k != rt.kind) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({}) or kind {:?} does not match {:?}",
            api_version.unwrap_or_default(),
            rt.api_version(),
            kind.unwrap_or_default(),
            rt.kind
        )));
    }
    Ok(())
}

pub fn check_name(body: &Value, name: &str) -> Result<(), ApiError> {
    match text(body, "/metadata/name") {
        Some(given) if !given.is_empty() && given != name => Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

pub fn check_namespace(body: &Value, namespace: &str) -> Result<(), ApiError> {
    match text(body, "/metadata/namespace") {
        Some(given) if !given.is_empty() && given != namespace => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

/// The real server's name validation messages.
pub fn validate_name(rule: NameRule, name: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let edges_ok = |s: &str| s.starts_with(alnum) && s.ends_with(alnum);
    let (ok, what, max) = match rule {
        NameRule::Subdomain => (
            name.len() <= 253
                && name
                    .split('.')
                    .all(|part| edges_ok(part) && part.chars().all(|c| alnum(c) || c == '-')),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            253,
        ),
        NameRule::Label1123 => (
            name.len() <= 63 && edges_ok(name) && name.chars().all(|c| alnum(c) || c == '-'),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            63,
        ),
        NameRule::Label1035 => (
            name.len() <= 63
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && edges_ok(name)
                && name.chars().all(|c| alnum(c) || c == '-'),
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            63,
        ),
    };
    if name.is_empty() {
        return Err("metadata.name: Required value: name or generateName is required".into());
    }
    if ok {
        Ok(())
    } else {
        Err(format!(
            "metadata.name: Invalid value: {name:?}: {what} (at most {max} characters)"
        ))
    }
}

/// Fields a real server refuses to change after create.
pub fn check_immutable(rt: &ResourceType, old: &Value, new: &Value) -> Result<(), String> {
    let changed = |pointer: &str| old.pointer(pointer) != new.pointer(pointer);
    let immutable = |pointer: &str| {
        format!(
            "{}: Invalid value: {}: field is immutable",
            pointer.trim_start_matches('/').replace('/', "."),
            new.pointer(pointer).unwrap_or(&Value::Null)
        )
    };
    match (rt.group, rt.kind) {
        ("apps", "Deployment" | "DaemonSet") if changed("/spec/selector") => {
            Err(immutable("/spec/selector"))
        }
        ("apps", "StatefulSet") => {
            if changed("/spec/selector") {
                return Err(immutable("/spec/selector"));
            }
            if changed("/spec/serviceName") || changed("/spec/volumeClaimTemplates") {
                return Err("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into());
            }
            Ok(())
        }
        ("batch", "Job") => {
            for pointer in ["/spec/selector", "/spec/template"] {
                if changed(pointer) {
                    return Err(immutable(pointer));
                }
            }
            Ok(())
        }
        ("", "Service") => {
            let old_ip = text(old, "/spec/clusterIP").unwrap_or_default();
            let new_ip = text(new, "/spec/clusterIP").unwrap_or_default();
            if !old_ip.is_empty() && old_ip != new_ip {
                return Err(format!(
                    "spec.clusterIPs[0]: Invalid value: [\"{new_ip}\"]: may not change once set"
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A workload whose selector does not select its own pod template is rejected,
/// as `kubectl apply` users learn the hard way.
pub fn check_selector_matches_template(rt: &ResourceType, object: &Value) -> Result<(), String> {
    if !(rt.group == "apps" && matches!(rt.kind, "Deployment" | "StatefulSet" | "DaemonSet")) {
        return Ok(());
    }
    let Some(selector) = object.pointer("/spec/selector") else {
        return Err("spec.selector: Required value".into());
    };
    let labels = object.pointer("/spec/template/metadata/labels");
    let wanted = selector.get("matchLabels").and_then(Value::as_object);
    let selects = wanted.is_none_or(|wanted| {
        wanted
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    });
    if wanted.is_none_or(|w| w.is_empty()) && selector.get("matchExpressions").is_none() {
        return Err(
            "spec.selector: Invalid value: {}: empty selector is invalid for deployment".into(),
        );
    }
    if selects {
        Ok(())
    } else {
        Err(format!(
            "spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`",
            labels.unwrap_or(&Value::Null)
        ))
    }
}
