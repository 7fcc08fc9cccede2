//! The compose loader: files → merged, interpolated, normalised [`Project`].

use std::collections::BTreeMap;

pub mod dotenv;
pub mod error;
pub mod extends;
pub mod include;
pub mod interpolate;
pub mod merge;
pub mod node;
pub mod normalise;
pub mod tree;
pub mod yaml;

pub use error::{At, LoadError};

use std::sync::Arc;

use super::files::{FileSource, RepoPath};
use super::model::{
    FileData, Project, SecretValues, sealed_bind_key, sealed_config_key, sealed_env_key,
};
use super::object::short_hash;
use super::sops::{AgeKeys, DecryptingSource};

/// What to load and with which inputs.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The project directory (where `.env` and the default compose files live).
    pub dir: RepoPath,
    /// Compose files merged in order. Empty: the first of `compose.yaml`,
    /// `compose.yml`, `docker-compose.yaml`, `docker-compose.yml` in `dir`, plus its
    /// `*.override.*` file when present.
    pub files: Vec<RepoPath>,
    /// Env files that replace the project directory's `.env` when non-empty.
    pub env_files: Vec<RepoPath>,
    /// Per-stack variables from stackd's configuration; they override `.env`.
    pub variables: BTreeMap<String, String>,
    /// Enabled profiles.
    pub profiles: Vec<String>,
    /// Images for services that only have `build:`, by service name.
    pub images: BTreeMap<String, String>,
    /// The repository's age identities (`decryption.ageKeyFile`), for SOPS files.
    pub decryption: Option<Arc<AgeKeys>>,
}

/// A loaded project and the secret values it references.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub project: Project,
    pub secrets: SecretValues,
}

/// Loads a compose project from `source`.
///
/// Every file is read through a [`DecryptingSource`]; a project that would carry
/// a decrypted value into the `Stack` (anywhere but a secret) is refused.
pub fn load(source: &dyn FileSource, options: &LoadOptions) -> Result<Loaded, LoadError> {
    let source = DecryptingSource::new(source, options.decryption.as_deref());
    // Errors quote values at times; decrypted ones are secrets wherever they went.
    let tree = tree::read_tree(&source, options)
        .map_err(|error| error.redacted(&source.decrypted_values()))?;
    let loaded = normalise::normalise(&tree, &source, options).map_err(|error| {
        error
            .redacted(&secret_variables(&tree))
            .redacted(&source.decrypted_values())
    })?;
    let mut loaded = loaded;
    seal(&mut loaded, &source);
    let strings = project_strings(&loaded.project);
    if let Some(file) = source.leak_check(&strings) {
        return Err(LoadError::DecryptedInStack { file });
    }
    Ok(loaded)
}

/// Moves what was decrypted out of the project (which the `Stack` stores) into
/// the secret values: configs and bind-mounted files read from a SOPS file, and
/// service variables holding a decrypted value. The project keeps a short hash,
/// so a change still rolls the pods.
fn seal(loaded: &mut Loaded, source: &DecryptingSource) {
    let values = &mut loaded.secrets.0;
    for (name, config) in &mut loaded.project.configs {
        if config
            .file
            .as_deref()
            .is_some_and(|f| source.was_decrypted(f))
            && let Some(data) = config.data.take()
        {
            let bytes = file_bytes(&data);
            config.content_hash = Some(short_hash(&bytes));
            values.insert(sealed_config_key(name), bytes);
        }
    }
    for (path, bind) in &mut loaded.project.bind_files {
        if source.was_decrypted(path)
            && let Some(data) = bind.file.take()
        {
            let bytes = file_bytes(&data);
            bind.content_hash = Some(short_hash(&bytes));
            values.insert(sealed_bind_key(path), bytes);
        }
    }
    for (service_name, service) in &mut loaded.project.services {
        let sealed: Vec<String> = service
            .environment
            .iter()
            .filter(|(_, value)| {
                value
                    .as_deref()
                    .is_some_and(|v| source.source_of(v).is_some())
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in sealed {
            if let Some(Some(value)) = service.environment.remove(&name) {
                service
                    .secret_environment
                    .insert(name.clone(), short_hash(value.as_bytes()));
                values.insert(sealed_env_key(service_name, &name), value.into_bytes());
            }
        }
    }
}

/// The bytes a [`FileData`] stands for.
fn file_bytes(data: &FileData) -> Vec<u8> {
    use base64::Engine as _;
    match (&data.text, &data.binary) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_default(),
        (None, None) => Vec::new(),
    }
}

/// Every string and number of the project as the `Stack` would store it.
fn project_strings(project: &Project) -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    out.push(key.clone());
                    walk(value, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            serde_json::Value::String(s) => out.push(s.clone()),
            other => out.push(other.to_string()),
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(project) {
        walk(&value, &mut out);
    }
    out
}

/// The variables named by `secrets.*.environment`, with their values: the
/// values are secrets wherever else they were interpolated.
fn secret_variables(tree: &tree::ProjectTree) -> Vec<(String, String)> {
    let Some(secrets) = tree.root.get("secrets").and_then(node::Node::as_map) else {
        return Vec::new();
    };
    secrets
        .iter()
        .filter_map(|(_, secret)| secret.get("environment")?.as_str())
        .filter_map(|name| Some((name.to_string(), tree.variables.get(name)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::tree::tests::{MemSource, options};
    use super::*;

    const COMPOSE: &str = "services:\n  web:\n    image: nginx\n    deploy: {replicas: \"${REPLICAS}\"}\n    secrets: [token]\nsecrets:\n  token: {environment: TOKEN}\n";

    #[test]
    fn errors_never_quote_a_secret_variable() {
        let source = MemSource::new(&[
            ("app/compose.yaml", COMPOSE),
            ("app/.env", "TOKEN=hunter2-value\nREPLICAS=${TOKEN}\n"),
        ]);
        let err = load(&source, &options("app")).unwrap_err().to_string();
        assert_eq!(
            err,
            "app/compose.yaml:4:24: services.web.deploy.replicas: expected an integer, got \"<secret TOKEN>\""
        );
    }

    #[test]
    fn other_values_are_still_quoted() {
        let source = MemSource::new(&[
            ("app/compose.yaml", COMPOSE),
            ("app/.env", "TOKEN=hunter2-value\nREPLICAS=two\n"),
        ]);
        let err = load(&source, &options("app")).unwrap_err().to_string();
        assert!(err.ends_with("expected an integer, got \"two\""), "{err}");
    }
}
