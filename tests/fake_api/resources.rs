//! The resource table the fake serves, and the discovery documents built from it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
};
use serde_json::Value;

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: main writes ignore `status`, status writes touch only it.
    pub has_status: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Services and Namespaces need DNS-1035/1123 labels; everything else a subdomain.
    pub fn name_rule(&self) -> NameRule {
        match (self.group, self.kind) {
            ("", "Namespace") => NameRule::Label1123,
            ("", "Service") => NameRule::Label1035,
            _ => NameRule::Subdomain,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Subdomain,
    Label1123,
    Label1035,
}

const fn rt(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    has_status: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        kind,
        plural,
        namespaced,
        has_status,
    }
}

pub static RESOURCES: &[ResourceType] = &[
    rt("", "v1", "Namespace", "namespaces", false, false),
    rt("", "v1", "ConfigMap", "configmaps", true, false),
    rt("", "v1", "Secret", "secrets", true, false),
    rt("", "v1", "Service", "services", true, false),
    rt("", "v1", "Event", "events", true, false),
    rt("apps", "v1", "Deployment", "deployments", true, true),
    rt("apps", "v1", "StatefulSet", "statefulsets", true, true),
    rt("apps", "v1", "DaemonSet", "daemonsets", true, true),
    rt("batch", "v1", "Job", "jobs", true, true),
    rt(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        false,
    ),
    rt(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        false,
    ),
    rt("coordination.k8s.io", "v1", "Lease", "leases", true, false),
    rt("events.k8s.io", "v1", "Event", "events", true, false),
    rt("stackd.dev", "v1alpha1", "Stack", "stacks", true, true),
];

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource type for an `apiVersion` + `kind` pair, as objects carry them.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// `GET /api`.
pub fn core_versions() -> Value {
    to_json(APIVersions {
        versions: vec!["v1".into()],
        server_address_by_client_cidrs: vec![],
    })
}

/// `GET /apis`: every non-core group with its single served version.
pub fn group_list() -> Value {
    let mut groups: Vec<APIGroup> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if groups.iter().any(|g| g.name == r.group) {
            continue;
        }
        let version = GroupVersionForDiscovery {
            group_version: r.api_version(),
            version: r.version.into(),
        };
        groups.push(APIGroup {
            name: r.group.into(),
            preferred_version: Some(version.clone()),
            server_address_by_client_cidrs: None,
            versions: vec![version],
        });
    }
    to_json(APIGroupList { groups })
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`; `None` for an unknown group version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceType> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let first = served.first()?;
    let mut resources = Vec::new();
    for r in &served {
        resources.push(APIResource {
            name: r.plural.into(),
            singular_name: r.kind.to_lowercase(),
            namespaced: r.namespaced,
            kind: r.kind.into(),
            verbs: VERBS.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        });
        if r.has_status {
            resources.push(APIResource {
                name: format!("{}/status", r.plural),
                singular_name: String::new(),
                namespaced: r.namespaced,
                kind: r.kind.into(),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
                ..Default::default()
            });
        }
    }
    Some(to_json(APIResourceList {
        group_version: first.api_version(),
        resources,
    }))
}

fn to_json<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The core Namespace type, which namespaced creates check against.
pub fn namespace_type() -> &'static ResourceType {
    &RESOURCES[0]
}
