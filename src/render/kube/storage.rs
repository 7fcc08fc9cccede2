//! What pods mount: claim templates, bind-mount ConfigMaps, configs, secrets,
//! tmpfs and host paths.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, KeyToPath,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Secret,
    SecretVolumeSource, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use super::labels::Scope;
use super::names::{self, MAX_LABEL, MAX_SUBDOMAIN, NameRegistry, Origin};
use super::quantity;
use super::warnings::Warnings;
use super::{RenderError, RenderOptions};
use crate::render::model::{self, FileData, FileMount, Project, SecretValues};
use crate::render::object::short_hash;

/// Kubernetes refuses ConfigMaps over 1 MiB.
pub const MAX_CONFIG_MAP_BYTES: usize = 1024 * 1024;
const DEFAULT_CLAIM_SIZE: &str = "1Gi";

/// A top-level config or secret as Kubernetes sees it.
#[derive(Clone, Debug)]
struct Stored {
    /// ConfigMap or Secret name.
    name: String,
    /// The key that holds the content.
    key: String,
    /// What goes into the pod's config hash; `None` for external objects.
    hash: Option<String>,
}

impl Stored {
    /// An existing object: its `name:`, or the compose name; content unknown, so no hash.
    fn external(declared_name: Option<&String>, compose_name: &str, key: String) -> Self {
        Stored {
            name: declared_name
                .cloned()
                .unwrap_or_else(|| compose_name.to_string()),
            key,
            hash: None,
        }
    }
}

/// The stack's top-level configs and secrets, and the objects that hold them.
#[derive(Debug, Default)]
pub struct StackFiles {
    configs: BTreeMap<String, Stored>,
    secrets: BTreeMap<String, Stored>,
    pub config_maps: Vec<ConfigMap>,
    pub secret_objects: Vec<Secret>,
}

impl StackFiles {
    /// ConfigMaps for configs with content, Secrets for secrets with a value.
    pub fn new(
        scope: &Scope,
        project: &Project,
        values: &SecretValues,
        names: &mut NameRegistry,
    ) -> Result<Self, RenderError> {
        let mut files = StackFiles::default();
        for (name, config) in &project.configs {
            let origin = Origin::Config(name.clone());
            let key = names::data_key(name);
            if config.external {
                files.configs.insert(
                    name.clone(),
                    Stored::external(config.name.as_ref(), name, key),
                );
                continue;
            }
            let Some(data) = &config.data else {
                // Without content there is nothing to create; mounting it is an error later.
                continue;
            };
            let object_name = stack_object_name(scope, name, &origin)?;
            names.claim("ConfigMap", &object_name, &origin)?;
            let config_map = config_map(scope, None, &object_name, &origin, [(key.clone(), data)])?;
            files.configs.insert(
                name.clone(),
                Stored {
                    name: object_name,
                    key,
                    hash: Some(config_map_hash(&config_map)),
                },
            );
            files.config_maps.push(config_map);
        }
        for (name, secret) in &project.secrets {
            let origin = Origin::Secret(name.clone());
            let key = names::data_key(name);
            if secret.external {
                files.secrets.insert(
                    name.clone(),
                    Stored::external(secret.name.as_ref(), name, key),
                );
                continue;
            }
            let object_name = stack_object_name(scope, name, &origin)?;
            let value = values.0.get(name);
            // The model's hash, never the value; a value without one is hashed here.
            let hash = secret
                .content_hash
                .clone()
                .or_else(|| value.map(|v| short_hash(v)));
            if let Some(value) = value {
                names.claim("Secret", &object_name, &origin)?;
                files.secret_objects.push(Secret {
                    metadata: scope.meta(&object_name, None),
                    data: Some(BTreeMap::from([(key.clone(), ByteString(value.clone()))])),
                    type_: Some("Opaque".to_string()),
                    ..Secret::default()
                });
            }
            files.secrets.insert(
                name.clone(),
                Stored {
                    name: object_name,
                    key,
                    hash,
                },
            );
        }
        Ok(files)
    }
}

/// `<stack>-<name>` for a top-level config or secret.
fn stack_object_name(scope: &Scope, name: &str, origin: &Origin) -> Result<String, RenderError> {
    names::checked(
        format!("{}-{}", scope.stack, names::sanitise(name)),
        origin,
        MAX_SUBDOMAIN,
    )
}

/// Everything one pod mounts.
#[derive(Debug, Default)]
pub struct PodStorage {
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    pub claim_templates: Vec<PersistentVolumeClaim>,
    /// Compose names of the named volumes behind `claim_templates`.
    pub claimed_volumes: Vec<String>,
    /// Bind-mount ConfigMaps of this service.
    pub config_maps: Vec<ConfigMap>,
    /// Inputs of the `stackd.dev/config-hash` annotation.
    hash_inputs: BTreeSet<String>,
}

impl PodStorage {
    /// Something else whose change must roll the pods (a Secret the env refers to).
    pub fn add_hash_input(&mut self, input: String) {
        self.hash_inputs.insert(input);
    }

    /// The config-hash annotation value, or `None` when nothing hashed is mounted.
    pub fn config_hash(&self) -> Option<String> {
        if self.hash_inputs.is_empty() {
            return None;
        }
        let joined: Vec<&str> = self.hash_inputs.iter().map(String::as_str).collect();
        Some(short_hash(joined.join("\n").as_bytes()))
    }
}

/// Pod volume names, unique per pod: readable when possible, numbered otherwise.
#[derive(Default)]
struct VolumeNames(BTreeSet<String>);

impl VolumeNames {
    fn allocate(&mut self, prefix: &str, readable: &str) -> String {
        let fragment = names::fragment(readable);
        let candidate = format!("{prefix}-{fragment}");
        if !fragment.is_empty() && candidate.len() <= MAX_LABEL && !self.0.contains(&candidate) {
            self.0.insert(candidate.clone());
            return candidate;
        }
        let mut n = 0usize;
        loop {
            let numbered = format!("{prefix}-{n}");
            if self.0.insert(numbered.clone()) {
                return numbered;
            }
            n += 1;
        }
    }
}

/// Context for rendering one service's storage.
pub struct ServiceStorage<'a> {
    pub scope: &'a Scope,
    pub project: &'a Project,
    pub files: &'a StackFiles,
    pub options: &'a RenderOptions,
    /// Compose service name (for messages) and its sanitised form.
    pub compose_name: &'a str,
    pub name: &'a str,
}

impl ServiceStorage<'_> {
    pub fn render(
        &self,
        service: &model::Service,
        names: &mut NameRegistry,
        warnings: &mut Warnings,
    ) -> Result<PodStorage, RenderError> {
        let mut pod = PodStorage::default();
        let mut volume_names = VolumeNames::default();
        let mut claims: BTreeMap<String, String> = BTreeMap::new();
        let origin = Origin::Service(self.compose_name.to_string());
        // Claim template names are PVC name prefixes, so they are exact and reserved first.
        for mount in &service.volumes {
            if mount.kind != "volume" {
                continue;
            }
            if let Some(source) = &mount.source {
                let volume = self.volume(source)?;
                if !volume.external && !claims.contains_key(source) {
                    let claim = names::checked(
                        names::sanitise(source),
                        &Origin::Volume(source.clone()),
                        MAX_LABEL,
                    )?;
                    if let Some((first, _)) = claims.iter().find(|(_, c)| **c == claim) {
                        return Err(RenderError::NameCollision {
                            kind: "volumeClaimTemplate",
                            name: claim,
                            first: Origin::Volume(first.clone()).to_string(),
                            second: Origin::Volume(source.clone()).to_string(),
                        });
                    }
                    volume_names.0.insert(claim.clone());
                    claims.insert(source.clone(), claim);
                }
            }
        }
        for (index, mount) in service.volumes.iter().enumerate() {
            let field = format!("volumes[{index}]");
            // ConfigMap-backed mounts are read-only whatever compose says.
            let (volume_name, sub_path, config_map_backed) = match mount.kind.as_str() {
                "volume" => match &mount.source {
                    Some(source) => {
                        let volume = self.volume(source)?;
                        if let Some(claim) = claims.get(source) {
                            if !pod.claimed_volumes.contains(source) {
                                pod.claimed_volumes.push(source.clone());
                                pod.claim_templates.push(self.claim_template(claim, volume));
                            }
                            (claim.clone(), mount.subpath.clone(), false)
                        } else {
                            let name = volume_names.allocate("pvc", source);
                            let claim_name = volume.name.clone().unwrap_or_else(|| source.clone());
                            // `name: ${UNSET}` gives "": the API server would refuse the pod.
                            if let Some(problem) = names::subdomain_problem(&claim_name) {
                                return Err(RenderError::InvalidValue {
                                    service: self.compose_name.to_string(),
                                    field: field.clone(),
                                    reason: format!(
                                        "external volume {source:?} is named {claim_name:?}, which cannot name a PersistentVolumeClaim: {problem}{}",
                                        if claim_name.is_empty() {
                                            " (is a variable unset?)"
                                        } else {
                                            ""
                                        }
                                    ),
                                });
                            }
                            pod.volumes.push(Volume {
                                name: name.clone(),
                                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                    claim_name,
                                    read_only: mount.read_only.then_some(true),
                                }),
                                ..Volume::default()
                            });
                            (name, mount.subpath.clone(), false)
                        }
                    }
                    None => {
                        let name = volume_names.allocate("anon", &mount.target);
                        pod.claimed_volumes.push(String::new());
                        pod.claim_templates
                            .push(self.claim_template(&name, &model::Volume::default()));
                        (name, mount.subpath.clone(), false)
                    }
                },
                "bind" => self.bind(mount, &field, &mut volume_names, &mut pod, warnings)?,
                "tmpfs" => {
                    let name = volume_names.allocate("tmpfs", &mount.target);
                    pod.volumes.push(Volume {
                        name: name.clone(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            medium: Some("Memory".to_string()),
                            size_limit: mount.tmpfs_size_bytes.map(quantity::bytes),
                        }),
                        ..Volume::default()
                    });
                    (name, None, false)
                }
                other => {
                    warnings.ignored(
                        self.compose_name,
                        &format!("{field} (type {other})"),
                        "only volume, bind and tmpfs mounts are supported",
                    );
                    continue;
                }
            };
            let read_only = mount.read_only || config_map_backed;
            pod.mounts.push(VolumeMount {
                name: volume_name,
                mount_path: mount.target.clone(),
                read_only: read_only.then_some(true),
                sub_path,
                ..VolumeMount::default()
            });
        }
        for (index, mount) in service.configs.iter().enumerate() {
            let field = format!("configs[{index}]");
            let stored = self.stored(&self.files.configs, mount, "config", &field)?;
            let target = match &mount.target {
                Some(t) if t.starts_with('/') => t.clone(),
                Some(t) => format!("/{t}"),
                None => format!("/{}", mount.source),
            };
            let name = volume_names.allocate("config", &mount.source);
            pod.volumes.push(Volume {
                name: name.clone(),
                config_map: Some(ConfigMapVolumeSource {
                    name: stored.name.clone(),
                    items: Some(vec![self.item(&stored.key, mount, &field)?]),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
            self.file_mount(
                &mut pod,
                name,
                target,
                stored,
                "configmap",
                mount,
                &field,
                warnings,
            );
        }
        for (index, mount) in service.secrets.iter().enumerate() {
            let field = format!("secrets[{index}]");
            let stored = self.stored(&self.files.secrets, mount, "secret", &field)?;
            let target = match &mount.target {
                Some(t) if t.starts_with('/') => t.clone(),
                Some(t) => format!("/run/secrets/{t}"),
                None => format!("/run/secrets/{}", mount.source),
            };
            let name = volume_names.allocate("secret", &mount.source);
            pod.volumes.push(Volume {
                name: name.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(stored.name.clone()),
                    items: Some(vec![self.item(&stored.key, mount, &field)?]),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
            self.file_mount(
                &mut pod, name, target, stored, "secret", mount, &field, warnings,
            );
        }
        for config_map in &pod.config_maps {
            names.claim(
                "ConfigMap",
                config_map.metadata.name.as_deref().unwrap_or_default(),
                &origin,
            )?;
        }
        Ok(pod)
    }

    fn volume(&self, source: &str) -> Result<&model::Volume, RenderError> {
        self.project
            .volumes
            .get(source)
            .ok_or_else(|| RenderError::UnknownReference {
                service: self.compose_name.to_string(),
                kind: "volume",
                name: source.to_string(),
            })
    }

    fn claim_template(&self, name: &str, volume: &model::Volume) -> PersistentVolumeClaim {
        let size = volume
            .size
            .clone()
            .unwrap_or_else(|| DEFAULT_CLAIM_SIZE.to_string());
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(self.scope.labels(Some(self.name))),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                storage_class_name: volume.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_string(), Quantity(size))])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    /// A bind mount: a ConfigMap of repository content, an emptyDir for a missing
    /// path, or a hostPath when the daemon allows it.
    fn bind(
        &self,
        mount: &model::VolumeMount,
        field: &str,
        volume_names: &mut VolumeNames,
        pod: &mut PodStorage,
        warnings: &mut Warnings,
    ) -> Result<(String, Option<String>, bool), RenderError> {
        let source = mount.source.clone().unwrap_or_default();
        if mount.host_path {
            if !self.options.allow_host_path {
                return Err(RenderError::HostPathRefused {
                    service: self.compose_name.to_string(),
                    path: source,
                });
            }
            let name = volume_names.allocate("host", &source);
            pod.volumes.push(Volume {
                name: name.clone(),
                host_path: Some(HostPathVolumeSource {
                    path: source,
                    type_: None,
                }),
                ..Volume::default()
            });
            return Ok((name, None, false));
        }
        let bind =
            self.project
                .bind_files
                .get(&source)
                .ok_or_else(|| RenderError::UnknownReference {
                    service: self.compose_name.to_string(),
                    kind: "bind source",
                    name: source.clone(),
                })?;
        let volume_name = volume_names.allocate("bind", last_part(&source));
        if let (false, Some(file)) = (bind.missing, &bind.file) {
            let key = names::data_key(last_part(&source));
            let config_map = self.bind_config_map(&source, [(key.clone(), file)])?;
            self.mount_config_map(pod, &volume_name, &config_map, None);
            return Ok((volume_name, Some(key), true));
        }
        if let (false, Some(directory)) = (bind.missing, &bind.directory) {
            let entries: Vec<(String, &FileData)> = directory
                .iter()
                .map(|(path, data)| (names::data_key(path), data))
                .collect();
            let mut items = Vec::new();
            let mut seen = BTreeMap::new();
            for ((key, _), path) in entries.iter().zip(directory.keys()) {
                if let Some(first) = seen.insert(key.clone(), path.clone()) {
                    return Err(RenderError::InvalidValue {
                        service: self.compose_name.to_string(),
                        field: field.to_string(),
                        reason: format!(
                            "files {first:?} and {path:?} of {source:?} map to the same ConfigMap key {key:?}"
                        ),
                    });
                }
                items.push(KeyToPath {
                    key: key.clone(),
                    path: path.clone(),
                    mode: None,
                });
            }
            let config_map = self.bind_config_map(&source, entries)?;
            self.mount_config_map(pod, &volume_name, &config_map, Some(items));
            return Ok((volume_name, None, true));
        }
        warnings.service(
            self.compose_name,
            &format!("{field}: bind source {source:?} does not exist in the repository; an empty directory is mounted"),
        );
        pod.volumes.push(Volume {
            name: volume_name.clone(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        Ok((volume_name, None, false))
    }

    /// `<service>-<last path part>-<6 hex of the path>`: readable, and unique per path.
    fn bind_config_map<'d>(
        &self,
        path: &str,
        entries: impl IntoIterator<Item = (String, &'d FileData)>,
    ) -> Result<ConfigMap, RenderError> {
        let digest = hex::encode(Sha256::digest(path.as_bytes()));
        let hash = digest.get(..6).unwrap_or(&digest);
        let mut hint = names::fragment(last_part(path));
        let room = MAX_LABEL.saturating_sub(self.name.len() + hash.len() + 2);
        hint.truncate(room);
        let hint = hint.trim_end_matches('-');
        let name = if hint.is_empty() {
            format!("{}-{hash}", self.name)
        } else {
            format!("{}-{hint}-{hash}", self.name)
        };
        let origin = Origin::Service(self.compose_name.to_string());
        let name = names::checked(name, &origin, MAX_SUBDOMAIN)?;
        config_map(self.scope, Some(self.name), &name, &origin, entries)
    }

    fn mount_config_map(
        &self,
        pod: &mut PodStorage,
        volume_name: &str,
        config_map: &ConfigMap,
        items: Option<Vec<KeyToPath>>,
    ) {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        pod.hash_inputs
            .insert(format!("configmap/{name}={}", config_map_hash(config_map)));
        pod.volumes.push(Volume {
            name: volume_name.to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                items,
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        if !pod
            .config_maps
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(&name))
        {
            pod.config_maps.push(config_map.clone());
        }
    }

    fn stored<'s>(
        &self,
        stored: &'s BTreeMap<String, Stored>,
        mount: &FileMount,
        kind: &'static str,
        field: &str,
    ) -> Result<&'s Stored, RenderError> {
        stored.get(&mount.source).ok_or_else(|| {
            if kind == "config" && self.project.configs.contains_key(&mount.source) {
                RenderError::InvalidValue {
                    service: self.compose_name.to_string(),
                    field: field.to_string(),
                    reason: format!("config {:?} has no content", mount.source),
                }
            } else {
                RenderError::UnknownReference {
                    service: self.compose_name.to_string(),
                    kind,
                    name: mount.source.clone(),
                }
            }
        })
    }

    fn item(&self, key: &str, mount: &FileMount, field: &str) -> Result<KeyToPath, RenderError> {
        let mode = match mount.mode {
            None => None,
            Some(mode) if mode <= 0o777 => i32::try_from(mode).ok(),
            Some(mode) => {
                return Err(RenderError::InvalidValue {
                    service: self.compose_name.to_string(),
                    field: format!("{field}.mode"),
                    reason: format!("{mode:#o} is not a file mode (0 to 0777)"),
                });
            }
        };
        Ok(KeyToPath {
            key: key.to_string(),
            path: key.to_string(),
            mode,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn file_mount(
        &self,
        pod: &mut PodStorage,
        volume_name: String,
        target: String,
        stored: &Stored,
        kind: &str,
        mount: &FileMount,
        field: &str,
        warnings: &mut Warnings,
    ) {
        if let Some(hash) = &stored.hash {
            pod.hash_inputs
                .insert(format!("{kind}/{}={hash}", stored.name));
        }
        if mount.uid.is_some() || mount.gid.is_some() {
            warnings.ignored(
                self.compose_name,
                &format!("{field}.uid/gid"),
                "Kubernetes mounts files with the pod's fsGroup",
            );
        }
        pod.mounts.push(VolumeMount {
            name: volume_name,
            mount_path: target,
            read_only: Some(true),
            sub_path: Some(stored.key.clone()),
            ..VolumeMount::default()
        });
    }
}

fn last_part(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// A ConfigMap of text and binary entries, refused over 1 MiB.
fn config_map<'d>(
    scope: &Scope,
    service: Option<&str>,
    name: &str,
    origin: &Origin,
    entries: impl IntoIterator<Item = (String, &'d FileData)>,
) -> Result<ConfigMap, RenderError> {
    let mut data = BTreeMap::new();
    let mut binary = BTreeMap::new();
    let mut size = 0usize;
    for (key, content) in entries {
        size += key.len();
        if let Some(text) = &content.text {
            size += text.len();
            data.insert(key, text.clone());
        } else if let Some(encoded) = &content.binary {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| RenderError::InvalidContent {
                    origin: origin.to_string(),
                    reason: format!("binary content of {key:?} is not base64: {e}"),
                })?;
            size += bytes.len();
            binary.insert(key, ByteString(bytes));
        } else {
            data.insert(key, String::new());
        }
    }
    if size > MAX_CONFIG_MAP_BYTES {
        return Err(RenderError::TooLarge {
            origin: origin.to_string(),
            name: name.to_string(),
            size,
            limit: MAX_CONFIG_MAP_BYTES,
        });
    }
    Ok(ConfigMap {
        metadata: scope.meta(name, service),
        data: (!data.is_empty()).then_some(data),
        binary_data: (!binary.is_empty()).then_some(binary),
        ..ConfigMap::default()
    })
}

fn config_map_hash(config_map: &ConfigMap) -> String {
    let content = serde_json::json!({
        "data": config_map.data,
        "binaryData": config_map.binary_data,
    });
    short_hash(content.to_string().as_bytes())
}
