//! One service: every key of the spec either becomes a model field or is listed
//! in [`Service::ignored`].

use std::collections::{BTreeMap, BTreeSet};

use super::super::dotenv;
use super::super::error::{At, LoadError};
use super::super::node::Value;
use super::deploy::{self, fold_service_resources, non_negative};
use super::fields::{Field, Fields};
use super::paths;
use super::ports;
use super::volumes::{self, MountContext};
use crate::render::files::FileSource;
use crate::render::model::{
    BindSource, Build, Dependency, ExtraHost, FileMount, Healthcheck, Service, ServiceKubernetes,
};

/// Every key the Compose Specification allows on a service, plus `pre_start`,
/// which Compose accepts but the bundled schema copy predates.
pub const SERVICE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "command",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "deploy",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "env_file",
    "environment",
    "expose",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "ipc",
    "isolation",
    "label_file",
    "labels",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "network_mode",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "ports",
    "post_start",
    "pre_start",
    "pre_stop",
    "privileged",
    "profiles",
    "provider",
    "pull_policy",
    "pull_refresh_after",
    "read_only",
    "restart",
    "runtime",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "use_api_socket",
    "user",
    "userns_mode",
    "uts",
    "volumes",
    "volumes_from",
    "working_dir",
];

/// The service keys that map to the model; every other spec key is ignored.
pub(super) const HANDLED_KEYS: &[&str] = &[
    "build",
    "cap_add",
    "cap_drop",
    "command",
    "configs",
    "cpus",
    "depends_on",
    "deploy",
    "entrypoint",
    "env_file",
    "environment",
    "expose",
    "extra_hosts",
    "healthcheck",
    "hostname",
    "image",
    "ipc",
    "label_file",
    "labels",
    "mem_limit",
    "mem_reservation",
    "networks",
    "pid",
    "pids_limit",
    "ports",
    "privileged",
    "profiles",
    "pull_policy",
    "read_only",
    "restart",
    "scale",
    "secrets",
    "stdin_open",
    "stop_grace_period",
    "sysctls",
    "tmpfs",
    "tty",
    "user",
    "volumes",
    "working_dir",
];

const BUILD_KEYS: &[&str] = &[
    "additional_contexts",
    "args",
    "cache_from",
    "cache_to",
    "context",
    "dockerfile",
    "dockerfile_inline",
    "entitlements",
    "extra_hosts",
    "isolation",
    "labels",
    "network",
    "no_cache",
    "platforms",
    "privileged",
    "provenance",
    "pull",
    "sbom",
    "secrets",
    "shm_size",
    "ssh",
    "tags",
    "target",
    "ulimits",
];
const HEALTHCHECK_KEYS: &[&str] = &[
    "disable",
    "interval",
    "retries",
    "start_interval",
    "start_period",
    "test",
    "timeout",
];
const ENV_FILE_KEYS: &[&str] = &["format", "path", "required"];
const FILE_MOUNT_KEYS: &[&str] = &["gid", "mode", "source", "target", "uid"];
const DEPENDS_ON_KEYS: &[&str] = &["condition", "required", "restart"];
const DEPENDENCY_CONDITIONS: &[&str] = &[
    "service_started",
    "service_healthy",
    "service_completed_successfully",
];
const SERVICE_NETWORK_KEYS: &[&str] = &[
    "aliases",
    "driver_opts",
    "gw_priority",
    "interface_name",
    "ipv4_address",
    "ipv6_address",
    "link_local_ips",
    "mac_address",
    "priority",
];
const X_KUBERNETES_KEYS: &[&str] = &["internal_service_type", "pull_policy"];

/// What a service reads from the rest of the project.
pub struct ServiceContext<'c> {
    pub source: &'c dyn FileSource,
    /// Interpolation variables, for `${VAR}` inside `env_file`s.
    pub variables: &'c BTreeMap<String, String>,
    /// Images configured in stackd for services with only `build:`.
    pub images: &'c BTreeMap<String, String>,
    pub volumes: &'c BTreeSet<String>,
    pub configs: &'c BTreeSet<String>,
    pub secrets: &'c BTreeSet<String>,
    pub bind_files: &'c mut BTreeMap<String, BindSource>,
    /// Loader warnings (`Project::warnings`).
    pub warnings: &'c mut Vec<String>,
}

/// The profiles a service is in, read before anything else so that disabled
/// services are not checked further.
pub fn profiles(field: &Field) -> Result<Vec<String>, LoadError> {
    match field
        .node
        .get("profiles")
        .filter(|p| p.value != Value::Null)
    {
        Some(node) => Field::new(node, format!("{}.profiles", field.path)).string_list(),
        None => Ok(Vec::new()),
    }
}

pub fn service(name: &str, field: &Field, ctx: &mut ServiceContext) -> Result<Service, LoadError> {
    let fields = field.map(SERVICE_KEYS)?;
    let mut service = Service {
        build: fields.get("build").map(|b| build(&b)).transpose()?,
        // `image: ${UNSET}` interpolates to "", which Compose treats as no image.
        image: fields.string("image")?.filter(|image| !image.is_empty()),
        entrypoint: fields.get("entrypoint").map(|e| argv(&e)).transpose()?,
        command: fields.get("command").map(|c| argv(&c)).transpose()?,
        working_dir: fields.string("working_dir")?,
        tty: fields.bool("tty")?.unwrap_or(false),
        stdin_open: fields.bool("stdin_open")?.unwrap_or(false),
        hostname: fields.string("hostname")?,
        user: fields.string("user")?,
        privileged: fields.bool("privileged")?.unwrap_or(false),
        read_only: fields.bool("read_only")?.unwrap_or(false),
        cap_add: list(&fields, "cap_add")?,
        cap_drop: list(&fields, "cap_drop")?,
        sysctls: fields.string_map("sysctls", &['='])?,
        pid: fields.string("pid")?,
        ipc: fields.string("ipc")?,
        extra_hosts: fields
            .get("extra_hosts")
            .map(|h| extra_hosts(&h))
            .transpose()?
            .unwrap_or_default(),
        stop_grace_period_ms: fields.duration_ms("stop_grace_period")?,
        environment: environment(&fields, ctx)?,
        pull_policy: fields.string("pull_policy")?,
        labels: labels(&fields, ctx)?,
        scale: fields.get("scale").map(|s| non_negative(&s)).transpose()?,
        healthcheck: fields
            .get("healthcheck")
            .map(|h| healthcheck(&h).map(Box::new))
            .transpose()?,
        ports: fields
            .get("ports")
            .map(|p| ports::ports(&p, ctx.warnings))
            .transpose()?
            .unwrap_or_default(),
        expose: fields
            .get("expose")
            .map(|e| ports::expose(&e))
            .transpose()?
            .unwrap_or_default(),
        configs: file_mounts(&fields, "configs", ctx.configs)?,
        secrets: file_mounts(&fields, "secrets", ctx.secrets)?,
        depends_on: fields
            .get("depends_on")
            .map(|d| depends_on(&d))
            .transpose()?
            .unwrap_or_default(),
        networks: fields
            .get("networks")
            .map(|n| networks(&n))
            .transpose()?
            .unwrap_or_default(),
        restart: fields.string("restart")?,
        profiles: list(&fields, "profiles")?,
        x_kubernetes: fields
            .get("x-kubernetes")
            .map(|x| x_kubernetes(&x))
            .transpose()?,
        ..Service::default()
    };
    let mut ignored: Vec<String> = fields
        .keys()
        .filter(|k| !k.starts_with("x-") && !HANDLED_KEYS.contains(k))
        .map(str::to_string)
        .collect();
    if let Some(d) = fields.get("deploy") {
        service.deploy = Some(Box::new(deploy::deploy(&d, &mut ignored)?));
    }
    fold_service_resources(&mut service.deploy, &fields)?;
    let mut mounts = MountContext {
        source: ctx.source,
        declared: ctx.volumes,
        bind_files: ctx.bind_files,
    };
    if let Some(v) = fields.get("volumes") {
        service.volumes = volumes::mounts(&v, &mut mounts)?;
    }
    if let Some(t) = fields.get("tmpfs") {
        service.volumes.extend(volumes::tmpfs(&t)?);
    }
    ignored.sort();
    ignored.dedup();
    service.ignored = ignored;
    resolve_image(name, field, &mut service, ctx.images)?;
    Ok(service)
}

/// `build` without `image` needs an image configured in stackd: a cluster cannot build.
fn resolve_image(
    name: &str,
    field: &Field,
    service: &mut Service,
    images: &BTreeMap<String, String>,
) -> Result<(), LoadError> {
    if service.image.is_some() {
        return Ok(());
    }
    if let Some(image) = images.get(name) {
        service.image = Some(image.clone());
        return Ok(());
    }
    let at = At::new(&field.node.mark, field.path.as_str());
    if service.build.is_some() {
        Err(LoadError::Unsupported {
            at,
            message: "`build:` without `image:` cannot run on a cluster: set `image:` or configure an image for this service in stackd".to_string(),
        })
    } else if field.node.get("provider").is_some() {
        Err(LoadError::Unsupported {
            at,
            message: "`provider:` services are run by a Compose plugin and cannot run on a cluster"
                .to_string(),
        })
    } else {
        Err(LoadError::Schema {
            at,
            message: "a service needs `image` (or `build` with an image configured in stackd)"
                .to_string(),
        })
    }
}

fn list(fields: &Fields, key: &str) -> Result<Vec<String>, LoadError> {
    Ok(fields
        .get(key)
        .map(|f| f.string_list())
        .transpose()?
        .unwrap_or_default())
}

fn build(field: &Field) -> Result<Build, LoadError> {
    match &field.node.value {
        Value::Map(_) => {
            let fields = field.map(BUILD_KEYS)?;
            Ok(Build {
                context: fields.string("context")?,
                dockerfile: fields.string("dockerfile")?,
            })
        }
        _ => Ok(Build {
            context: Some(field.string()?),
            dockerfile: None,
        }),
    }
}

/// `command`/`entrypoint`: a string is shell-split, a list is kept.
fn argv(field: &Field) -> Result<Vec<String>, LoadError> {
    match &field.node.value {
        Value::Seq(_) => field.string_list(),
        Value::Map(_) => Err(field.expected("a string or a list")),
        _ => {
            let text = field.string()?;
            shell_words::split(&text)
                .map_err(|e| field.invalid(format!("cannot split {text:?} into words: {e}")))
        }
    }
}

/// `host:ip` / `host=ip` items, or a `host: ip` mapping. IPv6 brackets are removed.
fn extra_hosts(field: &Field) -> Result<Vec<ExtraHost>, LoadError> {
    let pairs: Vec<(Field, String, Option<String>)> = match &field.node.value {
        Value::Map(_) => field
            .entries()?
            .into_iter()
            .map(|(host, value)| {
                let ip = value.node.scalar_text();
                (value, host.to_string(), ip)
            })
            .collect(),
        _ => field
            .items()?
            .into_iter()
            .map(|item| {
                let text = item.string()?;
                let (host, ip) = match text.split_once('=').or_else(|| text.split_once(':')) {
                    Some((host, ip)) => (host.to_string(), Some(ip.to_string())),
                    None => (text, None),
                };
                Ok((item, host, ip))
            })
            .collect::<Result<_, LoadError>>()?,
    };
    pairs
        .into_iter()
        .map(|(item, hostname, ip)| {
            let ip = ip.filter(|ip| !ip.is_empty()).ok_or_else(|| {
                item.invalid(format!("extra host {hostname:?} has no IP address"))
            })?;
            let ip = ip
                .strip_prefix('[')
                .and_then(|i| i.strip_suffix(']'))
                .unwrap_or(&ip)
                .to_string();
            Ok(ExtraHost { hostname, ip })
        })
        .collect()
}

/// `environment` over the `env_file`s, in order.
fn environment(
    fields: &Fields,
    ctx: &ServiceContext,
) -> Result<BTreeMap<String, Option<String>>, LoadError> {
    let mut environment = BTreeMap::new();
    if let Some(env_files) = fields.get("env_file") {
        for (key, value) in env_file_entries(&env_files, ctx)? {
            environment.insert(key, value);
        }
    }
    if let Some(env) = fields.get("environment") {
        for (key, value) in env.list_or_dict(&['='])? {
            environment.insert(key, value);
        }
    }
    Ok(environment)
}

/// Labels from `label_file`s, overridden by `labels`.
fn labels(fields: &Fields, ctx: &ServiceContext) -> Result<BTreeMap<String, String>, LoadError> {
    let mut labels = BTreeMap::new();
    if let Some(files) = fields.get("label_file") {
        let entries: Vec<Field> = match &files.node.value {
            Value::Seq(_) => files.items()?,
            _ => vec![files.clone()],
        };
        for entry in entries {
            let path = paths::resolve(&entry, &entry.string()?)?;
            let bytes = paths::read(&entry, ctx.source, &path)?;
            for (key, value) in parse_env_text(&entry, &path, &bytes, ctx, false)? {
                labels.insert(key, value.unwrap_or_default());
            }
        }
    }
    labels.extend(fields.string_map("labels", &['='])?);
    Ok(labels)
}

/// `env_file`: a string, a list of strings, or `{path, required, format}` items.
fn env_file_entries(
    field: &Field,
    ctx: &ServiceContext,
) -> Result<Vec<(String, Option<String>)>, LoadError> {
    let entries: Vec<Field> = match &field.node.value {
        Value::Seq(_) => field.items()?,
        _ => vec![field.clone()],
    };
    let mut variables = Vec::new();
    for entry in entries {
        let (path_field, required, raw) = match &entry.node.value {
            Value::Map(_) => {
                let long = entry.map(ENV_FILE_KEYS)?;
                let path = long
                    .get("path")
                    .ok_or_else(|| entry.schema_error("missing required field `path`"))?;
                let raw = match long.get("format") {
                    None => false,
                    Some(format) => match format.string()?.as_str() {
                        "raw" => true,
                        other => {
                            return Err(format.invalid(format!(
                                "env_file format must be `raw` or unset, got {other:?}"
                            )));
                        }
                    },
                };
                (path, long.bool("required")?.unwrap_or(true), raw)
            }
            _ => (entry.clone(), true, false),
        };
        let path = paths::resolve(&path_field, &path_field.string()?)?;
        let bytes = if required {
            Some(paths::read(&path_field, ctx.source, &path)?)
        } else {
            paths::read_optional(&path_field, ctx.source, &path)?
        };
        if let Some(bytes) = bytes {
            variables.extend(parse_env_text(&path_field, &path, &bytes, ctx, raw)?);
        }
    }
    Ok(variables)
}

fn parse_env_text(
    field: &Field,
    path: &crate::render::files::RepoPath,
    bytes: &[u8],
    ctx: &ServiceContext,
    raw: bool,
) -> Result<Vec<(String, Option<String>)>, LoadError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| field.invalid(format!("{path} is not UTF-8 text")))?;
    if raw {
        // `format: raw`: values are taken literally, without quotes or interpolation.
        return Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(v.to_string())),
                None => (l.trim().to_string(), None),
            })
            .collect());
    }
    let lookup = |name: &str| ctx.variables.get(name).cloned();
    dotenv::parse(text, path, &lookup)
}

fn healthcheck(field: &Field) -> Result<Healthcheck, LoadError> {
    let fields = field.map(HEALTHCHECK_KEYS)?;
    let test = match fields.get("test") {
        None => Vec::new(),
        Some(test) => match &test.node.value {
            Value::Seq(_) => {
                let argv = test.string_list()?;
                match argv.first().map(String::as_str) {
                    Some("CMD" | "CMD-SHELL" | "NONE") | None => argv,
                    Some(other) => {
                        return Err(test.invalid(format!(
                            "healthcheck test must start with CMD, CMD-SHELL or NONE, got {other:?}"
                        )));
                    }
                }
            }
            _ => vec!["CMD-SHELL".to_string(), test.string()?],
        },
    };
    Ok(Healthcheck {
        test,
        interval_ms: fields.duration_ms("interval")?,
        timeout_ms: fields.duration_ms("timeout")?,
        retries: fields.uint("retries")?,
        start_period_ms: fields.duration_ms("start_period")?,
        start_interval_ms: fields.duration_ms("start_interval")?,
        disable: fields.bool("disable")?.unwrap_or(false),
    })
}

/// `configs`/`secrets` of a service; each must name a top-level entry.
fn file_mounts(
    fields: &Fields,
    key: &str,
    declared: &BTreeSet<String>,
) -> Result<Vec<FileMount>, LoadError> {
    let Some(field) = fields.get(key) else {
        return Ok(Vec::new());
    };
    let mut mounts = Vec::new();
    for item in field.items()? {
        let (mount, source_field) = match &item.node.value {
            Value::Map(_) => {
                let long = item.map(FILE_MOUNT_KEYS)?;
                let source = long
                    .get("source")
                    .ok_or_else(|| item.schema_error("missing required field `source`"))?;
                let mount = FileMount {
                    source: source.string()?,
                    target: long.string("target")?,
                    uid: long.string("uid")?,
                    gid: long.string("gid")?,
                    mode: long.get("mode").map(|m| m.mode()).transpose()?,
                };
                (mount, source)
            }
            _ => (
                FileMount {
                    source: item.string()?,
                    ..FileMount::default()
                },
                item.clone(),
            ),
        };
        if !declared.contains(&mount.source) {
            return Err(source_field.invalid(format!(
                "{} `{}` is not declared in the top-level `{key}`",
                key.trim_end_matches('s'),
                mount.source
            )));
        }
        mounts.push(mount);
    }
    Ok(mounts)
}

fn depends_on(field: &Field) -> Result<BTreeMap<String, Dependency>, LoadError> {
    let started = |_| Dependency {
        condition: "service_started".to_string(),
        required: true,
        restart: false,
    };
    match &field.node.value {
        Value::Seq(_) => Ok(field
            .string_list()?
            .into_iter()
            .map(|s| (s, started(())))
            .collect()),
        Value::Map(_) => {
            let mut dependencies = BTreeMap::new();
            for (name, entry) in field.entries()? {
                let mut dependency = started(());
                if entry.node.value != Value::Null {
                    let long = entry.map(DEPENDS_ON_KEYS)?;
                    if let Some(condition) = long.get("condition") {
                        let text = condition.string()?;
                        if !DEPENDENCY_CONDITIONS.contains(&text.as_str()) {
                            return Err(condition.invalid(format!(
                                "condition must be one of {}, got {text:?}",
                                DEPENDENCY_CONDITIONS.join(", ")
                            )));
                        }
                        dependency.condition = text;
                    }
                    dependency.required = long.bool("required")?.unwrap_or(true);
                    dependency.restart = long.bool("restart")?.unwrap_or(false);
                }
                dependencies.insert(name.to_string(), dependency);
            }
            Ok(dependencies)
        }
        _ => Err(field.expected("a list or a mapping")),
    }
}

fn networks(field: &Field) -> Result<Vec<String>, LoadError> {
    match &field.node.value {
        Value::Seq(_) => field.string_list(),
        Value::Map(_) => field
            .entries()?
            .into_iter()
            .map(|(name, entry)| {
                if entry.node.value != Value::Null {
                    entry.map(SERVICE_NETWORK_KEYS)?;
                }
                Ok(name.to_string())
            })
            .collect(),
        _ => Err(field.expected("a list or a mapping")),
    }
}

fn x_kubernetes(field: &Field) -> Result<ServiceKubernetes, LoadError> {
    let fields = field.map(X_KUBERNETES_KEYS)?;
    let internal_service_type = fields.string("internal_service_type")?;
    if let (Some(kind), Some(f)) = (&internal_service_type, fields.get("internal_service_type"))
        && !matches!(kind.as_str(), "ClusterIP" | "Headless")
    {
        return Err(f.invalid(format!(
            "internal_service_type must be `ClusterIP` or `Headless`, got {kind:?}"
        )));
    }
    Ok(ServiceKubernetes {
        pull_policy: fields.string("pull_policy")?,
        internal_service_type,
    })
}
