//! Values decrypted from SOPS files, which the `Stack` holds only as hashes
//! (see `compose::load`): put back for rendering from the secret values.
//! Configs and bind-mounted files become ConfigMap content again; service
//! variables reach the container through a per-service Secret.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector};

use super::RenderError;
use super::labels::Scope;
use super::names::{self, MAX_SUBDOMAIN, NameRegistry, Origin};
use crate::render::model::{
    FileData, Project, SecretValues, Service, sealed_bind_key, sealed_config_key, sealed_env_key,
};

/// `project` with sealed config and bind-file content restored from `values`;
/// borrowed as is when nothing is sealed (the common case).
pub fn unseal<'p>(project: &'p Project, values: &SecretValues) -> Cow<'p, Project> {
    let sealed = project.configs.values().any(|c| c.content_hash.is_some())
        || project
            .bind_files
            .values()
            .any(|b| b.content_hash.is_some());
    if !sealed {
        return Cow::Borrowed(project);
    }
    let mut project = project.clone();
    for (name, config) in &mut project.configs {
        if config.content_hash.is_some()
            && let Some(bytes) = values.0.get(&sealed_config_key(name))
        {
            config.data = Some(file_data(bytes));
        }
    }
    for (path, bind) in &mut project.bind_files {
        if bind.content_hash.is_some()
            && let Some(bytes) = values.0.get(&sealed_bind_key(path))
        {
            bind.file = Some(file_data(bytes));
        }
    }
    Cow::Owned(project)
}

fn file_data(bytes: &[u8]) -> FileData {
    use base64::Engine as _;
    match std::str::from_utf8(bytes) {
        Ok(text) => FileData {
            text: Some(text.to_string()),
            binary: None,
        },
        Err(_) => FileData {
            text: None,
            binary: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        },
    }
}

/// The Secret holding a service's decrypted variables: `<service>-env`.
pub fn env_secret_name(name: &str) -> String {
    format!("{name}-env")
}

/// The service's decrypted variables as Secret references.
pub fn env_vars(name: &str, service: &Service) -> Vec<EnvVar> {
    service
        .secret_environment
        .keys()
        .map(|variable| EnvVar {
            name: variable.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: env_secret_name(name),
                    key: variable.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect()
}

/// The `<service>-env` Secret, when the service has decrypted variables and
/// their values are at hand (otherwise the existing Secret is only referenced),
/// and the config-hash input that rolls the pods when one changes.
pub fn env_secret(
    scope: &Scope,
    compose_name: &str,
    name: &str,
    service: &Service,
    values: &SecretValues,
    registry: &mut NameRegistry,
) -> Result<(Option<Secret>, Option<String>), RenderError> {
    if service.secret_environment.is_empty() {
        return Ok((None, None));
    }
    let origin = Origin::Service(compose_name.to_string());
    let object_name = names::checked(env_secret_name(name), &origin, MAX_SUBDOMAIN)?;
    registry.claim("Secret", &object_name, &origin)?;
    let hashes: Vec<String> = service
        .secret_environment
        .iter()
        .map(|(variable, hash)| format!("{variable}={hash}"))
        .collect();
    let hash_input = format!("secret/{object_name}={}", hashes.join(","));
    let data: Option<BTreeMap<String, ByteString>> = service
        .secret_environment
        .keys()
        .map(|variable| {
            let value = values.0.get(&sealed_env_key(compose_name, variable))?;
            Some((variable.clone(), ByteString(value.clone())))
        })
        .collect();
    let secret = data.map(|data| Secret {
        metadata: scope.meta(&object_name, Some(name)),
        data: Some(data),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    });
    Ok((secret, Some(hash_input)))
}
