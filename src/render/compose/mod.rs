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
/// Every file is read through a [`DecryptingSource`]. When SOPS files were
/// decrypted, the project is loaded a second time with each decrypted value
/// read as a marker, which shows exactly where decrypted values went: those
/// places are sealed (see [`seal`]), and a project that would still carry one
/// into the `Stack` is refused.
pub fn load(source: &dyn FileSource, options: &LoadOptions) -> Result<Loaded, LoadError> {
    let decrypting = DecryptingSource::new(source, options.decryption.as_deref());
    let mut loaded = load_from(&decrypting, options)?;
    if !decrypting.any_decrypted() {
        return Ok(loaded);
    }
    let marking = DecryptingSource::new(source, options.decryption.as_deref()).with_markers();
    // A marker fails where only a number or a port fits: such a field is in the Stack.
    let mut marked = load_from(&marking, options).map_err(|_| LoadError::DecryptedInStack {
        field: "a typed field (a number, a port, a duration)".to_string(),
    })?;
    seal(&mut loaded, &mut marked, &decrypting, &marking);
    if let Some(field) = marked_field(&marked.project, &marking) {
        return Err(LoadError::DecryptedInStack { field });
    }
    Ok(loaded)
}

fn load_from(source: &DecryptingSource, options: &LoadOptions) -> Result<Loaded, LoadError> {
    // Errors quote values at times; decrypted ones are secrets wherever they went.
    let tree = tree::read_tree(source, options)
        .map_err(|error| error.redacted(&source.decrypted_values()))?;
    normalise::normalise(&tree, source, options).map_err(|error| {
        error
            .redacted(&secret_variables(&tree))
            .redacted(&source.decrypted_values())
    })
}

/// Moves what was decrypted out of the project (which the `Stack` stores) into
/// the secret values: configs and bind-mounted files read from a SOPS file or
/// holding a decrypted value, and service variables holding one. The project
/// keeps a short hash, so a change still gives a new revision and rolls the
/// pods. `marked` (the same project loaded with markers) says where values went,
/// and is sealed the same way.
fn seal(
    loaded: &mut Loaded,
    marked: &mut Loaded,
    decrypting: &DecryptingSource,
    marking: &DecryptingSource,
) {
    let has_marker = |data: &Option<FileData>| {
        data.as_ref().is_some_and(|d| {
            d.text.as_deref().is_some_and(|t| marking.marked(t))
                || d.binary
                    .as_deref()
                    .is_some_and(|b| marking.marked(&file_text(b)))
        })
    };
    let values = &mut loaded.secrets.0;
    for (name, config) in &mut loaded.project.configs {
        let Some(twin) = marked.project.configs.get_mut(name) else {
            continue;
        };
        let from_sops = config
            .file
            .as_deref()
            .is_some_and(|f| decrypting.was_decrypted(f));
        if (from_sops || has_marker(&twin.data))
            && let Some(data) = config.data.take()
        {
            twin.data = None;
            let bytes = file_bytes(&data);
            config.content_hash = Some(short_hash(&bytes));
            values.insert(sealed_config_key(name), bytes);
        }
    }
    for (path, bind) in &mut loaded.project.bind_files {
        let Some(twin) = marked.project.bind_files.get_mut(path) else {
            continue;
        };
        if (decrypting.was_decrypted(path) || has_marker(&twin.file))
            && let Some(data) = bind.file.take()
        {
            twin.file = None;
            let bytes = file_bytes(&data);
            bind.content_hash = Some(short_hash(&bytes));
            values.insert(sealed_bind_key(path), bytes);
        }
    }
    for (service_name, service) in &mut loaded.project.services {
        let Some(twin) = marked.project.services.get_mut(service_name) else {
            continue;
        };
        let sealed: Vec<String> = twin
            .environment
            .iter()
            .filter(|(_, value)| value.as_deref().is_some_and(|v| marking.marked(v)))
            .map(|(name, _)| name.clone())
            .collect();
        for name in sealed {
            twin.environment.remove(&name);
            if let Some(Some(value)) = service.environment.remove(&name) {
                service
                    .secret_environment
                    .insert(name.clone(), short_hash(value.as_bytes()));
                values.insert(sealed_env_key(service_name, &name), value.into_bytes());
            }
        }
    }
}

/// The first field of `project`, as the `Stack` would store it, that holds a marker.
fn marked_field(project: &Project, marking: &DecryptingSource) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &str, marking: &DecryptingSource) -> Option<String> {
        match value {
            serde_json::Value::Object(map) => map.iter().find_map(|(key, value)| {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if marking.marked(key) {
                    return Some(path);
                }
                walk(value, &path, marking)
            }),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}[{i}]"), marking)),
            serde_json::Value::String(s) => marking.marked(s).then(|| path.to_string()),
            _ => None,
        }
    }
    walk(&serde_json::to_value(project).ok()?, "", marking)
}

/// A binary [`FileData`]'s content as text, to look for markers.
fn file_text(encoded: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
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
