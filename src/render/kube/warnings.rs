//! Warnings about compose features that do not carry over to Kubernetes.

use crate::render::model::{Project, Service};

/// Collects warnings; [`Warnings::finish`] sorts and deduplicates them.
#[derive(Debug, Default)]
pub struct Warnings(Vec<String>);

impl Warnings {
    /// `service "<name>": <field> is ignored (<reason>)`.
    pub fn ignored(&mut self, service: &str, field: &str, reason: &str) {
        self.0.push(format!(
            "service {service:?}: {field} is ignored ({reason})"
        ));
    }

    /// `service "<name>": <message>`, for warnings that are not about an ignored field.
    pub fn service(&mut self, service: &str, message: &str) {
        self.0.push(format!("service {service:?}: {message}"));
    }

    pub fn push(&mut self, message: String) {
        self.0.push(message);
    }

    pub fn finish(mut self) -> Vec<String> {
        self.0.sort();
        self.0.dedup();
        self.0
    }
}

/// Why a compose key listed in [`Service::ignored`] has no effect.
fn reason_for(field: &str) -> &'static str {
    match field {
        "links" | "external_links" => "services reach each other by name",
        "network_mode" => "every pod has its own network namespace",
        "container_name" => "Kubernetes names pods itself",
        "logging" => "the cluster's log collection applies",
        "devices" => "device access is not supported",
        "security_opt" => "not supported on Kubernetes",
        "ulimits" => "Kubernetes has no per-container ulimits",
        "develop" => "it is for local development",
        "pre_start" => "not supported yet",
        f if f.starts_with("dns") => "the cluster DNS applies",
        _ => "not supported on Kubernetes",
    }
}

/// The service-level warnings that do not depend on how it is rendered.
pub fn service_warnings(
    name: &str,
    service: &Service,
    network_policies: bool,
    warnings: &mut Warnings,
) {
    for field in &service.ignored {
        // With NetworkPolicies on, network_policy.rs says what becomes of it.
        if network_policies && field == "network_mode" {
            continue;
        }
        warnings.ignored(name, field, reason_for(field));
    }
    if service.build.is_some() && service.image.is_some() {
        warnings.ignored(name, "build", "the image is pulled, not built");
    }
    let has_restart_policy = service
        .deploy
        .as_ref()
        .is_some_and(|d| d.restart_policy.is_some());
    if service.restart.is_some() && !has_restart_policy {
        warnings.ignored(
            name,
            "restart",
            "Kubernetes restarts containers itself; use deploy.restart_policy for jobs",
        );
    }
    if !network_policies && !service.networks.is_empty() {
        warnings.ignored(
            name,
            "networks",
            "all services of a stack share the namespace's network; networkPolicies is false",
        );
    }
}

/// Project-level warnings: the loader's, and top-level networks.
pub fn project_warnings(project: &Project, network_policies: bool, warnings: &mut Warnings) {
    for warning in &project.warnings {
        warnings.push(warning.clone());
    }
    if network_policies {
        return;
    }
    for name in project.networks.keys() {
        warnings.push(format!(
            "network {name:?}: networks are ignored (all services of a stack share the namespace's network; networkPolicies is false)"
        ));
    }
}
