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

/// Part of the real server's pod validation: required names, claim names,
/// unique volume names, mounts of existing volumes, port names as IANA_SVC_NAME.
pub fn check_pod_template(rt: &ResourceType, object: &Value) -> Result<(), String> {
    let workload = matches!(
        (rt.group, rt.kind),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") | ("batch", "Job")
    );
    let Some(pod) = object.pointer("/spec/template/spec").filter(|_| workload) else {
        return Ok(());
    };
    let list = |value: &Value, key: &str| {
        value
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let required = |at: String| format!("{at}: Required value");
    let base = "spec.template.spec";
    let mut volumes = Vec::new();
    for (i, volume) in list(pod, "volumes").iter().enumerate() {
        let name = text(volume, "/name").unwrap_or_default();
        if name.is_empty() {
            return Err(required(format!("{base}.volumes[{i}].name")));
        }
        if volumes.contains(&name.to_string()) {
            return Err(format!(
                "{base}.volumes[{i}].name: Duplicate value: \"{name}\""
            ));
        }
        volumes.push(name.to_string());
        if volume.get("persistentVolumeClaim").is_some()
            && text(volume, "/persistentVolumeClaim/claimName").is_none_or(str::is_empty)
        {
            return Err(required(format!(
                "{base}.volumes[{i}].persistentVolumeClaim.claimName"
            )));
        }
    }
    for claim in list(&object["spec"], "volumeClaimTemplates") {
        volumes.push(
            text(&claim, "/metadata/name")
                .unwrap_or_default()
                .to_string(),
        );
    }
    let containers = list(pod, "containers");
    if containers.is_empty() {
        return Err(required(format!("{base}.containers")));
    }
    for (i, container) in containers.iter().enumerate() {
        let at = format!("{base}.containers[{i}]");
        for field in ["name", "image"] {
            if text(container, &format!("/{field}")).is_none_or(str::is_empty) {
                return Err(required(format!("{at}.{field}")));
            }
        }
        for (j, port) in list(container, "ports").iter().enumerate() {
            if let Some(name) = text(port, "/name")
                && !is_iana_svc_name(name)
            {
                return Err(format!(
                    "{at}.ports[{j}].name: Invalid value: \"{name}\": must be no more than 15 characters and an IANA_SVC_NAME"
                ));
            }
        }
        for (j, mount) in list(container, "volumeMounts").iter().enumerate() {
            let name = text(mount, "/name").unwrap_or_default();
            if !volumes.iter().any(|v| v == name) {
                return Err(format!(
                    "{at}.volumeMounts[{j}].name: Not found: \"{name}\""
                ));
            }
        }
    }
    Ok(())
}

/// At most 15 characters of a-z, 0-9 and '-', a letter among them, no '-' at
/// either end or twice in a row.
fn is_iana_svc_name(name: &str) -> bool {
    name.len() <= 15
        && name.chars().any(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}
