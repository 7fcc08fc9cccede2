//! The API server's own validation of what stackd renders, beyond the OpenAPI
//! schema: names and their lengths, port names, required fields, unique
//! container, port, volume and mount names. An object the API server would
//! refuse (422) fails the render instead, naming the service and the field,
//! before anything is applied.

use std::collections::BTreeSet;

use serde_json::Value;

use super::RenderError;
use super::names::{MAX_LABEL, label_problem, subdomain_problem};
use crate::crd::SERVICE_LABEL;
use crate::render::object::Object;

/// Checks every rendered object; the first problem is the error.
pub fn check(objects: &[Object]) -> Result<(), RenderError> {
    objects.iter().try_for_each(check_object)
}

/// One problem: where in the object, and why.
type Problem = (String, String);

fn check_object(object: &Object) -> Result<(), RenderError> {
    let json = object.to_json();
    let problem = match object.kind() {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => pod_template(&json),
        "Service" => service(&json),
        _ => Ok(()),
    };
    problem.map_err(|(field, reason)| {
        let service = object
            .metadata()
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_LABEL))
            .cloned()
            .unwrap_or_else(|| object.name().to_string());
        RenderError::InvalidValue {
            service,
            field: format!("{} {:?}: {field}", object.kind(), object.name()),
            reason,
        }
    })
}

fn items(value: &Value, key: &str) -> Vec<Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn text<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value.get(key).and_then(Value::as_str)
}

/// A field that must be set and non-empty.
fn required(value: &Value, key: &str, at: &str) -> Result<(), Problem> {
    match value.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        Some(v) if !v.is_string() && !v.is_null() => Ok(()),
        _ => Err((format!("{at}.{key}"), "Required value".to_string())),
    }
}

fn pod_template(workload: &Value) -> Result<(), Problem> {
    let base = "spec.template.spec";
    let Some(pod) = workload.pointer("/spec/template/spec") else {
        return Err((base.to_string(), "Required value".to_string()));
    };
    let mut volumes = BTreeSet::new();
    for (i, volume) in items(pod, "volumes").iter().enumerate() {
        let at = format!("{base}.volumes[{i}]");
        let name = text(volume, "name").unwrap_or_default();
        if let Some(why) = label_problem(name, MAX_LABEL) {
            return Err((format!("{at}.name"), format!("{name:?}: {why}")));
        }
        if !volumes.insert(name.to_string()) {
            return Err((format!("{at}.name"), format!("Duplicate value: {name:?}")));
        }
        for (source, key) in [
            ("persistentVolumeClaim", "claimName"),
            ("configMap", "name"),
            ("secret", "secretName"),
        ] {
            if let Some(inner) = volume.get(source) {
                let at = format!("{at}.{source}");
                required(inner, key, &at)?;
                let value = text(inner, key).unwrap_or_default();
                if let Some(why) = subdomain_problem(value) {
                    return Err((format!("{at}.{key}"), format!("{value:?}: {why}")));
                }
            }
        }
    }
    // Claim templates are volumes too, for the mounts.
    for (i, claim) in items(&workload["spec"], "volumeClaimTemplates")
        .iter()
        .enumerate()
    {
        let name = claim
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(why) = label_problem(name, MAX_LABEL) {
            return Err((
                format!("spec.volumeClaimTemplates[{i}].metadata.name"),
                format!("{name:?}: {why}"),
            ));
        }
        volumes.insert(name.to_string());
    }
    let mut containers = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for (i, container) in items(pod, list).iter().enumerate() {
            let at = format!("{base}.{list}[{i}]");
            container_problems(container, &at, &volumes)?;
            let name = text(container, "name").unwrap_or_default();
            if !containers.insert(name.to_string()) {
                return Err((format!("{at}.name"), format!("Duplicate value: {name:?}")));
            }
        }
    }
    if containers.is_empty() {
        return Err((format!("{base}.containers"), "Required value".to_string()));
    }
    Ok(())
}

fn container_problems(
    container: &Value,
    at: &str,
    volumes: &BTreeSet<String>,
) -> Result<(), Problem> {
    let name = text(container, "name").unwrap_or_default();
    if let Some(why) = label_problem(name, MAX_LABEL) {
        return Err((format!("{at}.name"), format!("{name:?}: {why}")));
    }
    required(container, "image", at)?;
    let mut port_names = BTreeSet::new();
    for (i, port) in items(container, "ports").iter().enumerate() {
        let at = format!("{at}.ports[{i}]");
        port_number(port, "containerPort", &at)?;
        if let Some(name) = text(port, "name") {
            if let Some(why) = port_name_problem(name) {
                return Err((format!("{at}.name"), format!("{name:?}: {why}")));
            }
            if !port_names.insert(name.to_string()) {
                return Err((format!("{at}.name"), format!("Duplicate value: {name:?}")));
            }
        }
    }
    let mut paths = BTreeSet::new();
    for (i, mount) in items(container, "volumeMounts").iter().enumerate() {
        let at = format!("{at}.volumeMounts[{i}]");
        let volume = text(mount, "name").unwrap_or_default();
        if !volumes.contains(volume) {
            return Err((format!("{at}.name"), format!("Not found: {volume:?}")));
        }
        required(mount, "mountPath", &at)?;
        let path = text(mount, "mountPath").unwrap_or_default();
        if !paths.insert(path.to_string()) {
            return Err((
                format!("{at}.mountPath"),
                format!("{path:?}: must be unique"),
            ));
        }
    }
    for (i, variable) in items(container, "env").iter().enumerate() {
        required(variable, "name", &format!("{at}.env[{i}]"))?;
    }
    Ok(())
}

fn port_number(port: &Value, key: &str, at: &str) -> Result<(), Problem> {
    match port.get(key).and_then(Value::as_i64) {
        Some(1..=65535) => Ok(()),
        Some(n) => Err((
            format!("{at}.{key}"),
            format!("{n}: must be between 1 and 65535, inclusive"),
        )),
        None => Err((format!("{at}.{key}"), "Required value".to_string())),
    }
}

fn service(object: &Value) -> Result<(), Problem> {
    let ports = items(&object["spec"], "ports");
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        port_number(port, "port", &at)?;
        let name = text(port, "name").unwrap_or_default();
        if name.is_empty() {
            if ports.len() > 1 {
                return Err((
                    format!("{at}.name"),
                    "Required value: a Service with several ports names each".to_string(),
                ));
            }
        } else if let Some(why) = label_problem(name, MAX_LABEL) {
            return Err((format!("{at}.name"), format!("{name:?}: {why}")));
        }
        if !names.insert(name.to_string()) {
            return Err((format!("{at}.name"), format!("Duplicate value: {name:?}")));
        }
        if let Some(target) = text(port, "targetPort")
            && let Some(why) = port_name_problem(target)
        {
            return Err((format!("{at}.targetPort"), format!("{target:?}: {why}")));
        }
    }
    Ok(())
}

/// Why a port name is not an IANA_SVC_NAME (at most 15 characters of a-z, 0-9
/// and '-', at least one letter, no '-' at either end or twice in a row).
pub fn port_name_problem(name: &str) -> Option<String> {
    if let Some(problem) = label_problem(name, MAX_PORT_NAME) {
        return Some(problem);
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        return Some("it must contain at least one letter".to_string());
    }
    if name.contains("--") {
        return Some("it must not contain '--'".to_string());
    }
    None
}

/// The longest port name (IANA_SVC_NAME).
const MAX_PORT_NAME: usize = 15;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(pod: Value) -> Object {
        Object::Deployment(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "labels": {"stackd.dev/service": "web"}},
                "spec": {"selector": {}, "template": {"spec": pod}}
            }))
            .unwrap(),
        )
    }

    fn error(object: Object) -> String {
        check(&[object]).unwrap_err().to_string()
    }

    #[test]
    fn a_pod_the_api_server_accepts_passes() {
        let ok = deployment(json!({
            "containers": [{"name": "web", "image": "nginx",
                "ports": [{"containerPort": 80, "name": "http"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shared.data"}}]
        }));
        assert_eq!(check(&[ok]), Ok(()));
    }

    #[test]
    fn what_the_api_server_refuses_names_the_service_and_field() {
        assert_eq!(
            error(deployment(json!({
                "containers": [{"name": "web", "image": "nginx",
                    "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": ""}}]
            }))),
            "service \"web\": Deployment \"web\": spec.template.spec.volumes[0].persistentVolumeClaim.claimName: Required value"
        );
        assert_eq!(
            error(deployment(json!({
                "containers": [{"name": "web", "image": "nginx",
                    "ports": [{"containerPort": 80, "name": "a-very-long-port-name"}]}]
            }))),
            "service \"web\": Deployment \"web\": spec.template.spec.containers[0].ports[0].name: \"a-very-long-port-name\": it is 21 characters long, over the 15-character limit"
        );
        assert!(
            error(deployment(json!({
                "containers": [{"name": "web", "image": "nginx",
                    "volumeMounts": [{"name": "v", "mountPath": "/v"}, {"name": "v", "mountPath": "/v"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]
            })))
            .ends_with("containers[0].volumeMounts[1].mountPath: \"/v\": must be unique")
        );
        assert!(
            error(deployment(json!({
                "containers": [{"name": "web", "image": "nginx"}],
                "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]
            })))
            .ends_with("volumes[1].name: Duplicate value: \"v\"")
        );
        assert!(
            error(deployment(
                json!({"containers": [{"name": "web", "image": ""}]})
            ))
            .ends_with("containers[0].image: Required value")
        );
    }

    #[test]
    fn port_names_follow_iana_svc_name() {
        assert_eq!(port_name_problem("http"), None);
        assert_eq!(port_name_problem("web-8080"), None);
        assert!(port_name_problem("8080").is_some());
        assert!(port_name_problem("a--b").is_some());
        assert!(port_name_problem("Http").is_some());
    }
}
