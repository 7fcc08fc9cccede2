//! The renderer: a `Stack` in, the complete set of Kubernetes objects out.
//!
//! Pure: no client, no I/O. The rules are those of `docs/mapping.md`; each
//! submodule owns one part of them.

mod dependencies;
mod ingress;
mod labels;
mod names;
mod network_policy;
mod placement;
mod probes;
mod quantity;
mod sealed;
mod security;
mod services;
mod storage;
mod validate;
mod warnings;
mod workload;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::Stack;
use crate::render::model::SecretValues;
use crate::render::object::{Object, Rendered};

use self::labels::Scope;
use self::names::{MAX_LABEL, NameRegistry, Origin};
use self::storage::{ServiceStorage, StackFiles};
use self::warnings::Warnings;
use self::workload::Kind;

pub use self::labels::{CONFIG_HASH, RESTART_ON};
pub use self::names::project_name;
pub use self::names::sanitise as sanitise_name;
pub use self::security::{ENFORCE_LABEL, PodSecurity, WARN_LABEL};

/// Why `name` cannot be a stack (and default namespace) name, or `None`.
pub fn stack_name_problem(name: &str) -> Option<String> {
    names::label_problem(name, MAX_LABEL)
}

/// The Service type for published ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PublishedServiceType {
    #[default]
    LoadBalancer,
    NodePort,
    ClusterIP,
}

/// Renderer settings that come from stackd's configuration, not from compose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Allow bind mounts of host paths outside the repository (hostPath volumes).
    pub allow_host_path: bool,
    /// Default type of `<service>-published` Services.
    pub published_service_type: PublishedServiceType,
}

/// Renders every object of `stack`. Secrets whose values are in `secrets` are
/// emitted as Secret objects; the others are referenced by name only.
pub fn render(
    stack: &Stack,
    secrets: &SecretValues,
    options: &RenderOptions,
) -> Result<Rendered, RenderError> {
    let scope = scope_of(stack)?;
    // Decrypted configs and bind files are back in the project for this render only.
    let project = sealed::unseal(&stack.spec.project, secrets);
    let project = project.as_ref();
    let mut names = NameRegistry::default();
    let mut warnings = Warnings::default();
    let pod_security = stack.spec.pod_security.unwrap_or_default();
    let mut objects = vec![namespace_of(&scope, pod_security)];
    let network_policies = stack.spec.network_policies.unwrap_or(true);
    warnings::project_warnings(project, network_policies, &mut warnings);

    // Sanitised service names first, so `web_1` vs `web-1` is reported as such.
    let mut service_names = BTreeMap::new();
    for compose_name in project.services.keys() {
        let origin = Origin::Service(compose_name.clone());
        let name = names::checked(names::sanitise(compose_name), &origin, MAX_LABEL)?;
        names.claim("Kubernetes name", &name, &origin)?;
        service_names.insert(compose_name.as_str(), name);
    }

    let files = StackFiles::new(&scope, project, secrets, &mut names)?;
    objects.extend(files.config_maps.iter().cloned().map(Object::ConfigMap));
    objects.extend(files.secret_objects.iter().cloned().map(Object::Secret));

    let mut volume_users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (compose_name, service) in &project.services {
        let Some(name) = service_names.get(compose_name.as_str()) else {
            continue;
        };
        let origin = Origin::Service(compose_name.clone());
        warnings::service_warnings(compose_name, service, network_policies, &mut warnings);
        let storage = ServiceStorage {
            scope: &scope,
            project,
            files: &files,
            options,
            compose_name,
            name,
        }
        .render(service, &mut names, &mut warnings)?;
        for volume in storage.claimed_volumes.iter().filter(|v| !v.is_empty()) {
            if let Some((key, _)) = project.volumes.get_key_value(volume) {
                volume_users
                    .entry(key.as_str())
                    .or_default()
                    .push(compose_name);
            }
        }
        let mut storage = storage;
        let (env_secret, hash_input) =
            sealed::env_secret(&scope, compose_name, name, service, secrets, &mut names)?;
        objects.extend(env_secret.map(Object::Secret));
        if let Some(input) = hash_input {
            storage.add_hash_input(input);
        }
        let kind = workload::kind(compose_name, service, &storage, &mut warnings)?;
        objects.extend(storage.config_maps.iter().cloned().map(Object::ConfigMap));

        let set = services::ServiceInput {
            scope: &scope,
            compose_name,
            name,
            service,
            default_published_type: options.published_service_type,
            is_job: kind == Kind::Job,
        }
        .render(&mut warnings)?;
        for object in &set.services {
            names.claim(
                "Service",
                object.metadata.name.as_deref().unwrap_or_default(),
                &origin,
            )?;
        }
        let headless = set
            .services
            .first()
            .and_then(|s| s.metadata.name.clone())
            .unwrap_or_else(|| name.clone());
        if let Some(ingress) = ingress::ingress(
            &scope,
            compose_name,
            name,
            service,
            set.ingress_backend.as_ref(),
        )? {
            names.claim("Ingress", name, &origin)?;
            objects.push(Object::Ingress(ingress));
        }
        objects.extend(set.services.into_iter().map(Object::Service));

        let workload = workload::WorkloadInput {
            scope: &scope,
            compose_name,
            name,
            service,
            kind,
            storage,
            service_name: (kind == Kind::StatefulSet).then_some(headless),
            pod_security,
        }
        .render(&mut warnings)?;
        names.claim(workload.kind(), workload.name(), &origin)?;
        objects.push(workload);
    }
    for (volume, users) in volume_users.iter().filter(|(_, users)| users.len() > 1) {
        warnings.push(format!(
            "volume {volume:?}: used by services {}; each gets its own claim, Kubernetes volumes are not shared between StatefulSets",
            users.join(", ")
        ));
    }

    if network_policies {
        let inputs: Vec<_> = service_names
            .iter()
            .filter_map(|(compose_name, name)| {
                Some(network_policy::PolicyInput {
                    compose_name,
                    name,
                    service: project.services.get(*compose_name)?,
                })
            })
            .collect();
        for input in &inputs {
            names.claim(
                "NetworkPolicy",
                input.name,
                &Origin::Service(input.compose_name.to_string()),
            )?;
        }
        network_policy::add(&scope, project, &inputs, &mut objects, &mut warnings);
    }

    dependencies::annotate_restarts(project, &service_names, &mut objects);
    // What the API server itself would refuse fails here, before any apply.
    validate::check(&objects)?;
    let mut rendered = Rendered {
        objects,
        warnings: warnings.finish(),
    };
    rendered.sort();
    Ok(rendered)
}

/// Stack name, namespace and owner from the Stack's metadata.
/// The Namespace object `render` emits first for `stack`: the Git sync writes
/// this same object before the Stack, so the controller need not write it again.
pub fn namespace_object(stack: &Stack) -> Result<Object, RenderError> {
    let scope = scope_of(stack)?;
    Ok(namespace_of(
        &scope,
        stack.spec.pod_security.unwrap_or_default(),
    ))
}

fn namespace_of(scope: &Scope, pod_security: PodSecurity) -> Object {
    // Admission enforces the level the renderer checked against (and warns on it).
    let mut labels = scope.labels(None);
    for label in [ENFORCE_LABEL, WARN_LABEL] {
        labels.insert(label.to_string(), pod_security.as_str().to_string());
    }
    Object::Namespace(Namespace {
        metadata: ObjectMeta {
            name: Some(scope.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    })
}

fn scope_of(stack: &Stack) -> Result<Scope, RenderError> {
    let meta = &stack.metadata;
    let stack_name = meta.name.clone().ok_or(RenderError::MissingMetadata {
        field: "metadata.name",
    })?;
    let namespace = meta.namespace.clone().ok_or(RenderError::MissingMetadata {
        field: "metadata.namespace",
    })?;
    let origin = Origin::Stack(stack_name.clone());
    let stack_name = names::checked(stack_name, &origin, MAX_LABEL)?;
    let namespace = names::checked(namespace, &origin, MAX_LABEL)?;
    let owner = meta
        .uid
        .as_deref()
        .map(|uid| labels::stack_owner(&stack_name, uid));
    Ok(Scope {
        stack: stack_name,
        namespace,
        owner,
    })
}

/// Why a stack could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the Stack has no {field}")]
    MissingMetadata { field: &'static str },
    #[error("{origin}: name {name:?} is not a valid Kubernetes name: {reason}")]
    InvalidName {
        origin: String,
        name: String,
        reason: String,
    },
    #[error("{kind} {name:?} would be generated for both {first} and {second}")]
    NameCollision {
        kind: &'static str,
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "service {service:?}: bind mount of host path {path:?} is refused (the daemon does not allow hostPath volumes)"
    )]
    HostPathRefused { service: String, path: String },
    #[error(
        "service {service:?}: volume {volume:?} needs a StatefulSet, but the service renders as a {kind} (which has no volume claim templates)"
    )]
    VolumeNeedsStatefulSet {
        service: String,
        kind: &'static str,
        volume: String,
    },
    #[error("service {service:?}: refers to undefined {kind} {name:?}")]
    UnknownReference {
        service: String,
        kind: &'static str,
        name: String,
    },
    #[error("{origin}: ConfigMap {name:?} would be {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        origin: String,
        name: String,
        size: usize,
        limit: usize,
    },
    #[error("{origin}: {reason}")]
    InvalidContent { origin: String, reason: String },
    #[error("service {service:?}: {field}: {reason}")]
    InvalidValue {
        service: String,
        field: String,
        reason: String,
    },
    #[error("service {service:?}: image: a service needs an image to run on a cluster")]
    MissingImage { service: String },
    #[error(
        "service {service:?}: {field}: refused by Pod Security level {level:?} ({reason}; the repository or stack key podSecurity sets the level)"
    )]
    PodSecurity {
        service: String,
        field: String,
        level: &'static str,
        reason: String,
    },
}

impl RenderError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RenderError::MissingMetadata { .. } => "missing_metadata",
            RenderError::InvalidName { .. } => "invalid_name",
            RenderError::NameCollision { .. } => "name_collision",
            RenderError::HostPathRefused { .. } => "host_path_refused",
            RenderError::VolumeNeedsStatefulSet { .. } => "volume_needs_statefulset",
            RenderError::UnknownReference { .. } => "unknown_reference",
            RenderError::TooLarge { .. } => "too_large",
            RenderError::InvalidContent { .. } => "invalid_content",
            RenderError::InvalidValue { .. } => "invalid_value",
            RenderError::MissingImage { .. } => "missing_image",
            RenderError::PodSecurity { .. } => "pod_security",
        }
    }
}
