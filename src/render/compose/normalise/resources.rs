//! Top-level `volumes`, `configs`, `secrets` and `networks`.

use std::collections::BTreeMap;

use super::super::error::LoadError;
use super::super::node::Value;
use super::fields::{Field, Fields};
use super::paths;
use crate::render::files::FileSource;
use crate::render::model::{Config, FileData, Network, Secret, SecretValues, Volume};
use crate::render::object::short_hash;

const VOLUME_KEYS: &[&str] = &["driver", "driver_opts", "external", "labels", "name"];
const VOLUME_X_KUBERNETES_KEYS: &[&str] = &["size", "storage_class"];
const CONFIG_KEYS: &[&str] = &[
    "content",
    "environment",
    "external",
    "file",
    "labels",
    "name",
    "template_driver",
];
const SECRET_KEYS: &[&str] = &[
    "driver",
    "driver_opts",
    "environment",
    "external",
    "file",
    "labels",
    "name",
    "template_driver",
];
const NETWORK_KEYS: &[&str] = &[
    "attachable",
    "driver",
    "driver_opts",
    "enable_ipv4",
    "enable_ipv6",
    "external",
    "internal",
    "ipam",
    "labels",
    "name",
];
const EXTERNAL_KEYS: &[&str] = &["name"];

/// An empty mapping stands in for a null entry (`volumes: {data:}`).
fn entry_fields<'a>(field: &Field<'a>, allowed: &[&str]) -> Result<Option<Fields<'a>>, LoadError> {
    match field.node.value {
        Value::Null => Ok(None),
        _ => field.map(allowed).map(Some),
    }
}

/// `external: true`, or the deprecated `external: {name: x}` which also sets the name.
fn external(fields: &Fields) -> Result<(bool, Option<String>), LoadError> {
    match fields.get("external") {
        None => Ok((false, None)),
        Some(field) if field.node.as_map().is_some() => {
            Ok((true, field.map(EXTERNAL_KEYS)?.string("name")?))
        }
        Some(field) => Ok((field.bool()?, None)),
    }
}

pub fn volumes(field: &Field) -> Result<BTreeMap<String, Volume>, LoadError> {
    let mut volumes = BTreeMap::new();
    for (name, entry) in field.entries()? {
        let mut volume = Volume::default();
        if let Some(fields) = entry_fields(&entry, VOLUME_KEYS)? {
            let (external, external_name) = external(&fields)?;
            volume.external = external;
            volume.name = fields.string("name")?.or(external_name);
            volume.driver = fields.string("driver")?;
            volume.labels = fields.string_map("labels", &['='])?;
            volume.size = volume.labels.get("kompose.volume.size").cloned();
            volume.storage_class = volume
                .labels
                .get("kompose.volume.storage-class-name")
                .cloned();
            if let Some(extension) = fields.get("x-kubernetes") {
                let extension = extension.map(VOLUME_X_KUBERNETES_KEYS)?;
                // The stackd extension wins over kompose's labels.
                if let Some(size) = extension.string("size")? {
                    volume.size = Some(size);
                }
                if let Some(class) = extension.string("storage_class")? {
                    volume.storage_class = Some(class);
                }
            }
        }
        volumes.insert(name.to_string(), volume);
    }
    Ok(volumes)
}

pub fn networks(field: &Field) -> Result<BTreeMap<String, Network>, LoadError> {
    let mut networks = BTreeMap::new();
    for (name, entry) in field.entries()? {
        let mut network = Network::default();
        if let Some(fields) = entry_fields(&entry, NETWORK_KEYS)? {
            let (external, external_name) = external(&fields)?;
            network.external = external;
            network.internal = fields.bool("internal")?.unwrap_or(false);
            network.name = fields.string("name")?.or(external_name);
        }
        networks.insert(name.to_string(), network);
    }
    Ok(networks)
}

/// Where configs and secrets read their values from.
pub struct ValueSources<'c> {
    pub source: &'c dyn FileSource,
    pub variables: &'c BTreeMap<String, String>,
}

impl ValueSources<'_> {
    fn file(&self, field: &Field) -> Result<(String, Vec<u8>), LoadError> {
        let path = paths::resolve(field, &field.string()?)?;
        let bytes = paths::read(field, self.source, &path)?;
        Ok((path.to_string(), bytes))
    }

    fn variable(&self, field: &Field) -> Result<(String, String), LoadError> {
        let name = field.string()?;
        match self.variables.get(&name) {
            Some(value) => Ok((name, value.clone())),
            None => Err(field.invalid(format!("variable `{name}` is not set"))),
        }
    }
}

pub fn configs(
    field: &Field,
    values: &ValueSources,
) -> Result<BTreeMap<String, Config>, LoadError> {
    let mut configs = BTreeMap::new();
    for (name, entry) in field.entries()? {
        let fields = entry.map(CONFIG_KEYS)?;
        let (external, external_name) = external(&fields)?;
        let mut config = Config {
            external,
            name: fields.string("name")?.or(external_name),
            labels: fields.string_map("labels", &['='])?,
            ..Config::default()
        };
        let sources = ["file", "content", "environment"]
            .into_iter()
            .filter(|k| fields.get(k).is_some())
            .count();
        if sources > 1 || (external && sources > 0) {
            return Err(entry
                .schema_error("set only one of `file`, `content`, `environment` and `external`"));
        }
        if let Some(file) = fields.get("file") {
            let (path, bytes) = values.file(&file)?;
            config.file = Some(path);
            config.data = Some(paths::file_data(bytes));
        } else if let Some(content) = fields.get("content") {
            config.data = Some(FileData {
                text: Some(content.string()?),
                binary: None,
            });
        } else if let Some(variable) = fields.get("environment") {
            config.data = Some(FileData {
                text: Some(values.variable(&variable)?.1),
                binary: None,
            });
        } else if !external {
            return Err(entry.schema_error(
                "a config needs one of `file`, `content`, `environment` or `external`",
            ));
        }
        configs.insert(name.to_string(), config);
    }
    Ok(configs)
}

/// Top-level secrets; their values go into `values_out`, never into the model.
pub fn secrets(
    field: &Field,
    values: &ValueSources,
    values_out: &mut SecretValues,
) -> Result<BTreeMap<String, Secret>, LoadError> {
    let mut secrets = BTreeMap::new();
    for (name, entry) in field.entries()? {
        let fields = entry.map(SECRET_KEYS)?;
        let (external, external_name) = external(&fields)?;
        let mut secret = Secret {
            external,
            name: fields.string("name")?.or(external_name),
            labels: fields.string_map("labels", &['='])?,
            ..Secret::default()
        };
        let value = match (fields.get("file"), fields.get("environment")) {
            (Some(_), Some(_)) => {
                return Err(entry.schema_error("set only one of `file` and `environment`"));
            }
            (Some(_), None) | (None, Some(_)) if external => {
                return Err(entry.schema_error("an external secret has no `file` or `environment`"));
            }
            (Some(file), None) => {
                let (path, bytes) = values.file(&file)?;
                secret.file = Some(path);
                Some(bytes)
            }
            (None, Some(variable)) => {
                let (name, value) = values.variable(&variable)?;
                secret.environment = Some(name);
                Some(value.into_bytes())
            }
            (None, None) if external => None,
            (None, None) => {
                return Err(
                    entry.schema_error("a secret needs one of `file`, `environment` or `external`")
                );
            }
        };
        if let Some(value) = value {
            secret.content_hash = Some(short_hash(&value));
            values_out.0.insert(name.to_string(), value);
        }
        secrets.insert(name.to_string(), secret);
    }
    Ok(secrets)
}
