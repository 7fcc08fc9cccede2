//! Stage two of loading: the merged node tree → the typed [`Project`] model.
//!
//! Validates every key against the Compose Specification (unknown keys are
//! errors, `x-*` keys are allowed anywhere), expands short syntaxes, filters
//! profiles, reads the files that configs, secrets, `env_file` and bind mounts
//! point at, and hashes secret values.
//!
//! [`Project`]: crate::render::model::Project

mod deploy;
mod fields;
mod paths;
mod ports;
mod resources;
mod service;
mod units;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};

use super::error::{At, LoadError};
use super::tree::ProjectTree;
use super::{LoadOptions, Loaded};
use crate::render::files::FileSource;
use crate::render::model::{Project, SecretValues};
use fields::Field;
use resources::ValueSources;
use service::ServiceContext;

pub use units::{parse_bytes, parse_duration_ms};

/// Keys allowed at the top of a compose file. `include` and `extends` are
/// resolved by stage one; `models` is accepted and ignored with a warning.
const TOP_LEVEL_KEYS: &[&str] = &[
    "configs", "include", "models", "name", "networks", "secrets", "services", "version", "volumes",
];

/// Turns a merged tree into the model.
pub fn normalise(
    tree: &ProjectTree,
    source: &dyn FileSource,
    options: &LoadOptions,
) -> Result<Loaded, LoadError> {
    let root = Field::new(&tree.root, "");
    let top = root.map(TOP_LEVEL_KEYS)?;
    let mut project = Project {
        compose_name: project_name(&top)?,
        ..Project::default()
    };
    for key in ["include", "models"] {
        if top.get(key).is_some() {
            project
                .warnings
                .push(format!("top-level `{key}` is ignored"));
        }
    }

    if let Some(volumes) = top.get("volumes") {
        project.volumes = resources::volumes(&volumes)?;
    }
    if let Some(networks) = top.get("networks") {
        project.networks = resources::networks(&networks)?;
    }
    let values = ValueSources {
        source,
        variables: &tree.variables,
    };
    if let Some(configs) = top.get("configs") {
        project.configs = resources::configs(&configs, &values)?;
    }
    let mut secret_values = SecretValues::default();
    if let Some(secrets) = top.get("secrets") {
        project.secrets = resources::secrets(&secrets, &values, &mut secret_values)?;
    }

    let declared_volumes: BTreeSet<String> = project.volumes.keys().cloned().collect();
    let declared_configs: BTreeSet<String> = project.configs.keys().cloned().collect();
    let declared_secrets: BTreeSet<String> = project.secrets.keys().cloned().collect();
    let mut warnings = Vec::new();
    let mut ctx = ServiceContext {
        source,
        variables: &tree.variables,
        images: &options.images,
        volumes: &declared_volumes,
        configs: &declared_configs,
        secrets: &declared_secrets,
        bind_files: &mut project.bind_files,
        warnings: &mut warnings,
    };
    // Like Compose, `COMPOSE_PROFILES` from `.env` applies when no profile is given.
    let enabled_profiles: Vec<String> = if options.profiles.is_empty() {
        tree.variables
            .get("COMPOSE_PROFILES")
            .map(|p| {
                p.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        options.profiles.clone()
    };
    let mut services = BTreeMap::new();
    let mut service_fields = BTreeMap::new();
    if let Some(services_field) = top.get("services") {
        for (name, field) in services_field.entries()? {
            check_service_name(name, &field)?;
            let profiles = service::profiles(&field)?;
            if !profile_enabled(&profiles, &enabled_profiles) {
                continue;
            }
            services.insert(
                name.to_string(),
                Box::new(service::service(name, &field, &mut ctx)?),
            );
            service_fields.insert(name.to_string(), field);
        }
    }
    check_dependency_cycles(&services, &service_fields)?;
    project.services = services;
    project.warnings.extend(tree.warnings.iter().cloned());
    project.warnings.extend(warnings);
    project.warnings.extend(dependency_warnings(&project));
    project.warnings.extend(network_warnings(&project));
    Ok(Loaded {
        project,
        secrets: secret_values,
    })
}

fn project_name(top: &fields::Fields) -> Result<Option<String>, LoadError> {
    let Some(field) = top.get("name") else {
        return Ok(None);
    };
    let name = field.string()?;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(field.invalid(format!(
            "project name {name:?} must contain only lower-case letters, digits, `_` and `-`, and start with a letter or digit"
        )));
    }
    Ok(Some(name))
}

fn check_service_name(name: &str, field: &Field) -> Result<(), LoadError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(field.invalid(format!(
            "service name {name:?} may contain only letters, digits, `.`, `_` and `-`"
        )))
    }
}

/// `depends_on` must not loop: Compose refuses such a project, and so do we.
fn check_dependency_cycles(
    services: &BTreeMap<String, Box<crate::render::model::Service>>,
    fields: &BTreeMap<String, Field>,
) -> Result<(), LoadError> {
    // Depth-first search; `path` is the chain being explored.
    fn visit<'a>(
        name: &'a str,
        services: &'a BTreeMap<String, Box<crate::render::model::Service>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = path.iter().position(|n| *n == name) {
            let mut cycle = path[start..].to_vec();
            cycle.push(name);
            return Some(cycle);
        }
        if !done.insert(name) {
            return None;
        }
        path.push(name);
        let dependencies = services
            .get(name)
            .map(|s| s.depends_on.keys())
            .into_iter()
            .flatten();
        for dependency in dependencies {
            if let Some(cycle) = visit(dependency, services, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for name in services.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(name, services, &mut path, &mut done) {
            let first = cycle[0];
            let at = fields
                .get(first)
                .map(|f| f.at())
                .map(|mut at| {
                    at.path = format!("{}.depends_on", at.path);
                    at
                })
                .unwrap_or(At {
                    mark: None,
                    path: format!("services.{first}.depends_on"),
                });
            return Err(LoadError::InvalidValue {
                at,
                message: format!("dependency cycle: {}", cycle.join(" -> ")),
            });
        }
    }
    Ok(())
}

/// A service without profiles is always on; one with profiles needs a match or `*`.
fn profile_enabled(profiles: &[String], enabled: &[String]) -> bool {
    profiles.is_empty()
        || enabled
            .iter()
            .any(|e| e == "*" || profiles.iter().any(|p| p == e))
}

/// `depends_on` naming a service that is not in the project (or disabled by profile).
fn dependency_warnings(project: &Project) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, service) in &project.services {
        for dependency in service.depends_on.keys() {
            if !project.services.contains_key(dependency) {
                warnings.push(format!(
                    "service \"{name}\": depends_on `{dependency}`, which is not a service of this project (or not enabled)"
                ));
            }
        }
    }
    warnings
}

/// Service networks that are not declared at the top level (Compose rejects
/// them; networks are ignored on a cluster, so a warning is enough).
fn network_warnings(project: &Project) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, service) in &project.services {
        for network in &service.networks {
            if network != "default" && !project.networks.contains_key(network) {
                warnings.push(format!(
                    "service \"{name}\": network `{network}` is not declared in the top-level `networks`"
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests;
