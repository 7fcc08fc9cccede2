//! A compose document generated from fuzzer bytes: maps of known compose keys
//! with plausible scalars, emitted as JSON (which is valid YAML), so every input
//! parses and the fuzzer spends its time in normalisation and rendering.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value};

/// Nesting below this depth becomes a scalar: deep trees add nothing but cost.
const MAX_DEPTH: usize = 5;

const TOP_KEYS: &[&str] = &[
    "services", "volumes", "networks", "configs", "secrets", "name", "version", "include",
    "x-common",
];

const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "depends_on",
    "deploy",
    "healthcheck",
    "restart",
    "labels",
    "networks",
    "configs",
    "secrets",
    "user",
    "working_dir",
    "hostname",
    "extends",
    "profiles",
    "cap_add",
    "cap_drop",
    "privileged",
    "read_only",
    "tmpfs",
    "ulimits",
    "sysctls",
    "init",
    "stop_grace_period",
    "logging",
    "network_mode",
    "extra_hosts",
    "dns",
    "devices",
    "scale",
    "mem_limit",
    "cpus",
    "tty",
    "stdin_open",
    "shm_size",
    "platform",
    "pull_policy",
    "container_name",
    "links",
    "security_opt",
    "volumes_from",
    "stop_signal",
    "annotations",
    "mem_reservation",
    "domainname",
    "ipc",
    "pid",
    "runtime",
    "develop",
    "post_start",
];

/// Keys found inside service fields (long syntax) and top-level definitions.
const INNER_KEYS: &[&str] = &[
    "target",
    "published",
    "protocol",
    "mode",
    "host_ip",
    "source",
    "type",
    "read_only",
    "bind",
    "volume",
    "tmpfs",
    "size",
    "create_host_path",
    "condition",
    "required",
    "restart",
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "disable",
    "replicas",
    "resources",
    "limits",
    "reservations",
    "memory",
    "cpus",
    "placement",
    "restart_policy",
    "file",
    "external",
    "name",
    "driver",
    "driver_opts",
    "environment",
    "content",
    "labels",
    "path",
    "service",
    "context",
    "dockerfile",
    "args",
    "ipv4_address",
    "aliases",
    "soft",
    "hard",
    "uid",
    "gid",
    "x-extra",
    "nocopy",
    "subpath",
    "project_directory",
];

const STRINGS: &[&str] = &[
    "nginx:1.25",
    "busybox",
    "8080:80",
    "127.0.0.1:8080:80/udp",
    "80",
    "3000-3005:3000-3005",
    "9090-9091:8080-8081",
    "./data:/data:ro",
    "data:/var/lib/data",
    "/etc/hosts:/etc/hosts",
    "~/x:/x",
    "../escape:/e",
    "config.txt",
    "secret.txt",
    ".env",
    "other.env",
    "base.yaml",
    "inc/compose.yaml",
    "1g",
    "512m",
    "10s",
    "1m30s",
    "0.5",
    "always",
    "unless-stopped",
    "on-failure:3",
    "no",
    "service_healthy",
    "service_started",
    "service_completed_successfully",
    "CMD-SHELL",
    "NONE",
    "curl -f http://localhost || exit 1",
    "${TAG}",
    "${PORT:-80}",
    "${MISSING:?required}",
    "$${ESCAPED}",
    "${EMPTY:+alt}",
    "A=1",
    "B",
    "host:10.0.0.1",
    "host",
    "bridge",
    "none",
    "service:base",
    "container:x",
    "base",
    "inc",
    "web",
    "db",
    "linux/amd64",
    "SIGTERM",
    "1000:1000",
    "/dev/null:/dev/null",
    "tcp",
    "udp",
    "ingress",
    "",
    " ",
    "-",
    "0",
    "-1",
    "99999999999",
    "1e400",
    "true",
    "null",
    "{",
    "é",
    "a b",
];

/// A generated compose document.
#[derive(Debug)]
pub struct Compose(Value);

impl Compose {
    /// The document as YAML text (JSON is a subset of YAML).
    pub fn to_yaml(&self) -> String {
        serde_json::to_string_pretty(&self.0).unwrap_or_default()
    }
}

impl<'a> Arbitrary<'a> for Compose {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut top = Map::new();
        let mut services = Map::new();
        for _ in 0..u.int_in_range(0..=4)? {
            let name = if u.ratio(1, 8)? {
                String::arbitrary(u)?
            } else {
                (*u.choose(&["web", "db", "base", "worker", "Web_1", "a"])?).to_string()
            };
            services.insert(name, service(u)?);
        }
        top.insert("services".to_string(), Value::Object(services));
        for _ in 0..u.int_in_range(0..=3)? {
            let key = *u.choose(TOP_KEYS)?;
            top.insert(key.to_string(), value(u, 1, INNER_KEYS)?);
        }
        Ok(Compose(Value::Object(top)))
    }
}

fn service(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let mut fields = Map::new();
    if u.ratio(3, 4)? {
        fields.insert("image".to_string(), Value::String("nginx".to_string()));
    }
    for _ in 0..u.int_in_range(0..=6)? {
        let key = *u.choose(SERVICE_KEYS)?;
        fields.insert(key.to_string(), value(u, 1, INNER_KEYS)?);
    }
    Ok(Value::Object(fields))
}

fn value(u: &mut Unstructured<'_>, depth: usize, keys: &[&str]) -> arbitrary::Result<Value> {
    let choice = if depth >= MAX_DEPTH {
        u.int_in_range(0..=4)?
    } else {
        u.int_in_range(0..=6)?
    };
    Ok(match choice {
        0 => Value::String(string(u)?),
        1 => Value::from(*u.choose(&[0i64, 1, 80, 8080, 65535, 65536, -1, i64::MAX, i64::MIN])?),
        2 => Value::Bool(bool::arbitrary(u)?),
        3 => Value::Null,
        4 => serde_json::Number::from_f64(f64::arbitrary(u)?)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        5 => {
            let mut items = Vec::new();
            for _ in 0..u.int_in_range(0..=4)? {
                items.push(value(u, depth + 1, keys)?);
            }
            Value::Array(items)
        }
        _ => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0..=4)? {
                let key = if u.ratio(1, 10)? {
                    string(u)?
                } else {
                    (*u.choose(keys)?).to_string()
                };
                map.insert(key, value(u, depth + 1, keys)?);
            }
            Value::Object(map)
        }
    })
}

fn string(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(1, 6)? {
        String::arbitrary(u)
    } else {
        Ok((*u.choose(STRINGS)?).to_string())
    }
}
