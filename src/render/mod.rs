//! The pure core: compose files in, Kubernetes objects out.
//!
//! Nothing here talks to a cluster or to git; file access goes through
//! [`files::FileSource`]. `compose` loads a project into the [`model`], and the
//! renderer turns a `Stack` holding that model into typed [`object::Object`]s.

pub mod compose;
pub mod files;
pub mod kube;
pub mod model;
pub mod object;
pub mod sops;

use ::kube::api::ObjectMeta;

pub use self::kube::{
    ENFORCE_LABEL, PodSecurity, PublishedServiceType, RenderError, RenderOptions, WARN_LABEL,
    project_name, render, sanitise_name, stack_name_problem,
};
use crate::crd::{SourceRef, Stack, StackSpec};
pub use compose::{LoadError, LoadOptions, Loaded, load};
use model::Project;

/// Builds the `Stack` object for a loaded project.
pub fn stack_for(
    name: &str,
    namespace: &str,
    project: Project,
    source: Option<SourceRef>,
) -> Stack {
    Stack {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        spec: StackSpec {
            source,
            suspend: false,
            prune: true,
            pod_security: None,
            network_policies: None,
            service_account_name: None,
            health_timeout: None,
            rollback: None,
            project,
        },
        status: None,
    }
}
