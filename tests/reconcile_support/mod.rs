//! Shared setup for the reconciler tests: normalised models → `DesiredStack`,
//! the controller run in-process against the in-process API server
//! ([`Harness`], for tests that read its request log or inject faults) or
//! against it or the cluster of `KUBECONFIG_E2E` ([`Cluster`]), leader
//! election ([`leases`]), and waiting helpers.
#![allow(dead_code, unused_imports, unused_macros)]

mod cluster;
mod controller;
mod harness;
mod leases;

use std::time::Duration;

use serde_json::Value;
use serde_json::json;
use stackd::crd::SourceRef;
use stackd::reconcile::{ControllerOptions, DesiredStack, SyncPolicy};
use stackd::render::model::{Project, SecretValues};

use crate::fake_api::LoggedRequest;

pub use cluster::Cluster;
pub use harness::Harness;
pub use leases::{Leading, fast_lease, lead, take_lease};

/// The harness of a test that needs the in-process API server (its request
/// log, faults or watches): `Harness::new()` or `Harness::started()` gave
/// `None` on a real cluster, after saying so, and the test returns.
macro_rules! needs_fake {
    ($harness:expr) => {
        match $harness {
            Some(harness) => harness,
            None => return,
        }
    };
}
pub(crate) use needs_fake;

pub const PRUNE: SyncPolicy = SyncPolicy {
    prune: true,
    allow_prune_all: false,
    shards: 0,
};

pub const REPOSITORY: &str = "https://git.example.com/apps.git";

/// The normalised model of a web server and a database.
pub fn web_and_db() -> Value {
    json!({
        "services": {
            "web": {
                "image": "nginx:1.27",
                "ports": [{"target": 80, "published": 8080, "protocol": "tcp"}],
            },
            "db": {
                "image": "postgres:16",
                "environment": {"POSTGRES_PASSWORD": "example"},
            },
        },
    })
}

/// `project` with one service's image replaced.
pub fn with_image(mut project: Value, service: &str, image: &str) -> Value {
    project["services"][service]["image"] = json!(image);
    project
}

/// `project` without one service.
pub fn without(mut project: Value, service: &str) -> Value {
    if let Some(services) = project["services"].as_object_mut() {
        services.remove(service);
    }
    project
}

/// A stack from its normalised model, as the Git source would hand it over.
pub fn desired(namespace: &str, name: &str, project: Value, revision: &str) -> DesiredStack {
    DesiredStack {
        name: name.to_string(),
        namespace: namespace.to_string(),
        project: serde_json::from_value::<Project>(project).unwrap(),
        secrets: SecretValues::default(),
        source: SourceRef {
            repository: REPOSITORY.to_string(),
            path: name.to_string(),
            revision: revision.to_string(),
            subject: None,
        },
        prune: true,
        tenancy: Default::default(),
    }
}

pub fn test_options() -> ControllerOptions {
    ControllerOptions {
        debounce: Duration::from_millis(50),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
        // Long enough that no test passes because of a periodic resync.
        resync: Duration::from_secs(3600),
        identity: "test".into(),
        ..ControllerOptions::default()
    }
}

/// `METHOD path` of each request, for readable assertions.
pub fn write_paths(requests: &[LoggedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Writes to objects stackd renders (not the Stack, its status, or Events).
pub fn object_writes(requests: &[LoggedRequest]) -> Vec<String> {
    write_paths(requests)
        .into_iter()
        .filter(|p| !p.contains("/stacks") && !p.contains("/events"))
        .collect()
}
