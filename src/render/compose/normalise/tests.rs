//! Helpers shared by the normalise tests, and whole-project tests.

use super::super::error::LoadError;
use super::super::node::Node;
use super::super::yaml;
use crate::render::files::RepoPath;

/// Parses YAML as if written in `compose.yaml` at the repository root.
pub fn parse_node(yaml: &str) -> Node {
    parse_node_at(yaml, "compose.yaml")
}

/// Parses YAML as if written in `file`; relative paths resolve against its directory.
pub fn parse_node_at(yaml: &str, file: &str) -> Node {
    let file = RepoPath::new(file).unwrap();
    yaml::parse(yaml.as_bytes(), &file, &file.parent()).unwrap()
}

/// `"<label> <yaml path>: <message>"` for an expected error.
pub fn error_of<T: std::fmt::Debug>(result: Result<T, LoadError>) -> String {
    let error = result.expect_err("expected an error");
    let message = match &error {
        LoadError::File { source, .. } => source.to_string(),
        LoadError::Path { source, .. } => source.to_string(),
        LoadError::Yaml { message, .. }
        | LoadError::Schema { message, .. }
        | LoadError::Interpolation { message, .. }
        | LoadError::Cycle { message, .. }
        | LoadError::InvalidValue { message, .. }
        | LoadError::Unsupported { message, .. } => message.clone(),
        LoadError::NoComposeFile { .. } | LoadError::DecryptedInStack { .. } => error.to_string(),
    };
    let path = error.at().map(|at| at.path.clone()).unwrap_or_default();
    format!("{} {path}: {message}", error.label())
}

use std::collections::BTreeMap;

use pretty_assertions::assert_eq;
use serde_json::json;

use super::super::tree::ProjectTree;
use super::super::{LoadOptions, Loaded};
use super::normalise;
use crate::render::files::{DirSource, FileSource, MemSource};
use crate::render::object::short_hash;

const FILE: &str = "stacks/web/compose.yaml";

fn tree(yaml: &str, variables: &[(&str, &str)]) -> ProjectTree {
    ProjectTree {
        root: parse_node_at(yaml, FILE),
        variables: variables
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        files: vec![RepoPath::new(FILE).unwrap()],
        warnings: Vec::new(),
    }
}

fn load_with(
    yaml: &str,
    source: &dyn FileSource,
    options: &LoadOptions,
    variables: &[(&str, &str)],
) -> Result<Loaded, LoadError> {
    normalise(&tree(yaml, variables), source, options)
}

fn load(yaml: &str) -> Result<Loaded, LoadError> {
    load_with(yaml, &MemSource::new(), &LoadOptions::default(), &[])
}

/// The JSON of one service of a successfully loaded project.
fn service_json(yaml: &str) -> serde_json::Value {
    let loaded = load(yaml).unwrap();
    let mut services = serde_json::to_value(&loaded.project).unwrap()["services"].clone();
    services["web"].take()
}

#[test]
fn container_fields_snapshot() {
    let yaml = r#"
services:
  web:
    image: nginx:1.27
    command: nginx -g "daemon off;"
    entrypoint: ["/docker-entrypoint.sh"]
    working_dir: /srv
    tty: "true"
    stdin_open: true
    hostname: web1
    user: "1000:1000"
    privileged: "false"
    read_only: true
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    sysctls: ["net.core.somaxconn=1024"]
    pid: host
    ipc: shareable
    stop_grace_period: 1m30s
    pull_policy: always
    labels: ["a=1", "b"]
    scale: "2"
    restart: unless-stopped
    profiles: []
    depends_on: [db]
    networks: [front, back]
    x-kubernetes: {pull_policy: IfNotPresent, internal_service_type: ClusterIP}
    x-custom: anything
    container_name: web
    logging: {driver: syslog}
    dns: 8.8.8.8
    mem_limit: 512m
    cpus: "0.5"
    mem_reservation: 128m
  db:
    image: postgres
"#;
    assert_eq!(
        service_json(yaml),
        json!({
            "image": "nginx:1.27",
            "command": ["nginx", "-g", "daemon off;"],
            "entrypoint": ["/docker-entrypoint.sh"],
            "workingDir": "/srv",
            "tty": true,
            "stdinOpen": true,
            "hostname": "web1",
            "user": "1000:1000",
            "readOnly": true,
            "capAdd": ["NET_ADMIN"],
            "capDrop": ["ALL"],
            "sysctls": {"net.core.somaxconn": "1024"},
            "pid": "host",
            "ipc": "shareable",
            "stopGracePeriodMs": 90000,
            "pullPolicy": "always",
            "labels": {"a": "1", "b": ""},
            "scale": 2,
            "restart": "unless-stopped",
            "dependsOn": {"db": {"condition": "service_started", "required": true}},
            "networks": ["front", "back"],
            "xKubernetes": {"pullPolicy": "IfNotPresent", "internalServiceType": "ClusterIP"},
            "deploy": {"resources": {
                "limits": {"cpus": 0.5, "memoryBytes": 536870912},
                "reservations": {"memoryBytes": 134217728},
            }},
            "ignored": ["container_name", "dns", "logging"],
        })
    );
}

#[test]
fn deploy_snapshot_and_service_level_resources_do_not_override() {
    let yaml = r#"
services:
  web:
    image: app
    mem_limit: 1g
    pids_limit: 100
    deploy:
      mode: replicated
      replicas: "3"
      labels: {tier: web}
      endpoint_mode: vip
      update_config: {parallelism: 2, order: start-first, delay: 10s, failure_action: rollback, monitor: 1m, max_failure_ratio: "0.25"}
      rollback_config: {parallelism: 1}
      resources:
        limits: {cpus: 1.5, memory: 256M, pids: 50}
        reservations:
          cpus: "0.25"
          memory: 64m
          devices: [{capabilities: [gpu]}]
          generic_resources: [{discrete_resource_spec: {kind: gpu, value: 1}}]
      restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 2m}
      placement:
        constraints: ["node.labels.disk == ssd"]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 2
"#;
    assert_eq!(
        service_json(yaml),
        json!({
            "image": "app",
            "deploy": {
                "mode": "replicated",
                "replicas": 3,
                "labels": {"tier": "web"},
                "endpointMode": "vip",
                "updateConfig": {"parallelism": 2, "order": "start-first", "delayMs": 10000,
                    "failureAction": "rollback", "monitorMs": 60000, "maxFailureRatio": 0.25},
                "resources": {
                    "limits": {"cpus": 1.5, "memoryBytes": 268435456, "pids": 50},
                    "reservations": {"cpus": 0.25, "memoryBytes": 67108864, "devices": true},
                },
                "restartPolicy": {"condition": "on-failure", "delayMs": 5000, "maxAttempts": 3, "windowMs": 120000},
                "placement": {"constraints": ["node.labels.disk == ssd"], "spread": ["node.labels.zone"], "maxReplicasPerNode": 2},
            },
            "ignored": ["deploy.resources.reservations.generic_resources", "deploy.rollback_config"],
        })
    );
}

#[test]
fn negative_counts_are_invalid() {
    assert_eq!(
        error_of(load("services: {web: {image: a, deploy: {replicas: -1}}}")),
        "invalid_value services.web.deploy.replicas: must not be negative, got -1"
    );
    assert_eq!(
        error_of(load("services: {web: {image: a, scale: \"-2\"}}")),
        "invalid_value services.web.scale: must not be negative, got -2"
    );
    assert_eq!(
        error_of(load("services: {web: {image: a, deploy: {mode: swarm}}}")),
        "invalid_value services.web.deploy.mode: deploy mode must be one of replicated, global, replicated-job, global-job, got \"swarm\""
    );
}

#[test]
fn environment_forms_and_env_files() {
    let source = MemSource::new()
        .with_file(
            "stacks/web/a.env",
            "A=from_a\nB=from_a\n# comment\nONLY_A=1\n",
        )
        .with_file("stacks/web/b.env", "B=from_b\nC=from_b\n")
        .with_file("stacks/common.env", "COMMON=yes\n");
    let run = |yaml: &str| {
        let loaded = load_with(yaml, &source, &LoadOptions::default(), &[]).unwrap();
        serde_json::to_value(&loaded.project.services["web"].environment).unwrap()
    };
    assert_eq!(
        run("services: {web: {image: a, environment: [X=1, UNSET, Z=a=b, EMPTY=]}}"),
        json!({"X": "1", "UNSET": null, "Z": "a=b", "EMPTY": ""})
    );
    assert_eq!(
        run("services: {web: {image: a, environment: {X: 1, UNSET: null, B: true}}}"),
        json!({"X": "1", "UNSET": null, "B": "true"})
    );
    assert_eq!(
        run("services: {web: {image: a, env_file: a.env}}"),
        json!({"A": "from_a", "B": "from_a", "ONLY_A": "1"})
    );
    // Later files win, `environment` wins over all files.
    let yaml = r#"
services:
  web:
    image: a
    env_file:
      - ./a.env
      - path: b.env
        required: true
      - path: ./missing.env
        required: false
      - ../common.env
    environment:
      C: from_environment
"#;
    assert_eq!(
        run(yaml),
        json!({"A": "from_a", "B": "from_b", "C": "from_environment", "ONLY_A": "1", "COMMON": "yes"})
    );
    assert_eq!(
        error_of(load_with(
            "services: {web: {image: a, env_file: [a.env, missing.env]}}",
            &source,
            &LoadOptions::default(),
            &[]
        )),
        "file services.web.env_file[1]: stacks/web/missing.env: no such file or directory"
    );
    assert_eq!(
        error_of(load("services: {web: {image: a, environment: 5}}")),
        "schema services.web.environment: expected a list or a mapping, got an integer"
    );
}

#[test]
fn command_and_entrypoint_forms() {
    let json = service_json(
        r#"
services:
  web:
    image: a
    command: ["echo", "hello world"]
    entrypoint: sh -c 'echo "$$HOME" && exit 0'
"#,
    );
    assert_eq!(json["command"], json!(["echo", "hello world"]));
    assert_eq!(
        json["entrypoint"],
        json!(["sh", "-c", "echo \"$$HOME\" && exit 0"])
    );
    assert_eq!(
        service_json("services: {web: {image: a, command: []}}")["command"],
        json!([])
    );
    assert_eq!(
        error_of(load(
            "services: {web: {image: a, command: \"echo 'unterminated\"}}"
        )),
        "invalid_value services.web.command: cannot split \"echo 'unterminated\" into words: missing closing quote"
    );
    assert_eq!(
        error_of(load("services: {web: {image: a, command: {a: b}}}")),
        "schema services.web.command: expected a string or a list, got a mapping"
    );
}

#[test]
fn healthcheck_forms() {
    let check = |test: &str| {
        service_json(&format!(
            "services: {{web: {{image: a, healthcheck: {test}}}}}"
        ))["healthcheck"]
            .clone()
    };
    assert_eq!(
        check(
            "{test: curl -f http://localhost, interval: 10s, timeout: 500ms, retries: 3, start_period: 1m, start_interval: 1.5s}"
        ),
        json!({"test": ["CMD-SHELL", "curl -f http://localhost"], "intervalMs": 10000, "timeoutMs": 500,
               "retries": 3, "startPeriodMs": 60000, "startIntervalMs": 1500})
    );
    assert_eq!(
        check("{test: [CMD, pg_isready, -U, app]}"),
        json!({"test": ["CMD", "pg_isready", "-U", "app"]})
    );
    assert_eq!(check("{test: [NONE]}"), json!({"test": ["NONE"]}));
    assert_eq!(check("{disable: true}"), json!({"disable": true}));
    assert_eq!(
        error_of(load(
            "services: {web: {image: a, healthcheck: {test: [curl, x]}}}"
        )),
        "invalid_value services.web.healthcheck.test: healthcheck test must start with CMD, CMD-SHELL or NONE, got \"curl\""
    );
    assert_eq!(
        error_of(load(
            "services: {web: {image: a, healthcheck: {interval: 10}}}"
        )),
        "invalid_value services.web.healthcheck.interval: invalid duration \"10\" (expected e.g. `10s`, `1m30s`, `500ms`)"
    );
}

#[test]
fn extra_hosts_forms() {
    assert_eq!(
        service_json(
            r#"services: {web: {image: a, extra_hosts: ["db:10.0.0.2", "cache=10.0.0.3", "v6:::1", "br=[::2]"]}}"#
        )["extraHosts"],
        json!([
            {"hostname": "db", "ip": "10.0.0.2"},
            {"hostname": "cache", "ip": "10.0.0.3"},
            {"hostname": "v6", "ip": "::1"},
            {"hostname": "br", "ip": "::2"},
        ])
    );
    assert_eq!(
        error_of(load("services: {web: {image: a, extra_hosts: {db: null}}}")),
        "invalid_value services.web.extra_hosts.db: extra host \"db\" has no IP address"
    );
    assert_eq!(
        service_json("services: {web: {image: a, extra_hosts: {db: 10.0.0.2}}}")["extraHosts"],
        json!([{"hostname": "db", "ip": "10.0.0.2"}])
    );
    assert_eq!(
        error_of(load(
            "services: {web: {image: a, extra_hosts: [a=1.1.1.1, nohost]}}"
        )),
        "invalid_value services.web.extra_hosts[1]: extra host \"nohost\" has no IP address"
    );
}

#[test]
fn build_needs_an_image() {
    assert_eq!(
        service_json("services: {web: {image: me/web, build: .}}")["build"],
        json!({"context": "."})
    );
    assert_eq!(
        error_of(load(
            "services: {web: {build: {context: ., dockerfile: Dockerfile.dev}}}"
        )),
        "unsupported services.web: `build:` without `image:` cannot run on a cluster: set `image:` or configure an image for this service in stackd"
    );
    let options = LoadOptions {
        images: BTreeMap::from([("web".to_string(), "registry/web:1".to_string())]),
        ..LoadOptions::default()
    };
    let loaded = load_with(
        "services: {web: {build: {context: ., dockerfile: Dockerfile.dev}}}",
        &MemSource::new(),
        &options,
        &[],
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&loaded.project.services["web"]).unwrap(),
        json!({"image": "registry/web:1", "build": {"context": ".", "dockerfile": "Dockerfile.dev"}})
    );
    assert_eq!(
        error_of(load("services: {web: {restart: always}}")),
        "schema services.web: a service needs `image` (or `build` with an image configured in stackd)"
    );
}

#[test]
fn profiles_filter_services() {
    let yaml = r#"
services:
  web: {image: a}
  debug: {image: b, profiles: [debug]}
  tools: {build: ., profiles: [tools]}
"#;
    let names = |profiles: &[&str]| {
        let options = LoadOptions {
            profiles: profiles.iter().map(|p| p.to_string()).collect(),
            ..LoadOptions::default()
        };
        load_with(yaml, &MemSource::new(), &options, &[])
            .map(|l| l.project.services.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(names(&[]).unwrap(), vec!["web"]);
    assert_eq!(names(&["debug"]).unwrap(), vec!["debug", "web"]);
    // `*` enables everything, including the build-only service, which then fails.
    assert_eq!(names(&["*"]).map_err(|e| e.label()), Err("unsupported"));
}

#[test]
fn unknown_keys_name_path_and_line() {
    let yaml = "services:\n  web:\n    image: a\n    prots: [\"80\"]\n";
    let error = load(yaml).unwrap_err();
    assert_eq!(
        error.to_string(),
        "stacks/web/compose.yaml:4:12: services.web.prots: unknown field `prots` (did you mean `ports`?)"
    );
    assert_eq!(
        error_of(load("servics: {}")),
        "schema servics: unknown field `servics` (did you mean `services`?)"
    );
    assert_eq!(
        error_of(load("services: {web: {image: a, healthcheck: {tset: x}}}")),
        "schema services.web.healthcheck.tset: unknown field `tset` (did you mean `test`?)"
    );
    assert_eq!(
        error_of(load(
            "services: {web: {image: a, deploy: {resources: {limits: {memroy: 1g}}}}}"
        )),
        "schema services.web.deploy.resources.limits.memroy: unknown field `memroy` (did you mean `memory`?)"
    );
    // `x-*` anywhere and `version` are fine.
    let loaded = load("version: '3.8'\nx-common: &c {a: 1}\nservices: {web: {image: a, x-extra: 1, deploy: {x-y: 1}}}").unwrap();
    assert_eq!(loaded.project.services.len(), 1);
}

#[test]
fn names_are_validated() {
    assert_eq!(
        error_of(load("services: {\"my web\": {image: a}}")),
        "invalid_value services.my web: service name \"my web\" may contain only letters, digits, `.`, `_` and `-`"
    );
    assert_eq!(
        error_of(load("name: MyApp\nservices: {}")),
        "invalid_value name: project name \"MyApp\" must contain only lower-case letters, digits, `_` and `-`, and start with a letter or digit"
    );
    assert_eq!(
        load("name: my_app-1\nservices: {Web.1: {image: a}}")
            .unwrap()
            .project
            .compose_name,
        Some("my_app-1".to_string())
    );
}

#[test]
fn top_level_resources() {
    let source = MemSource::new()
        .with_file("stacks/web/app.conf", "listen 80;\n")
        .with_file("stacks/web/logo.bin", vec![0xffu8, 0xfe])
        .with_file("stacks/web/db_password.txt", "hunter2");
    let yaml = r#"
services:
  web:
    image: a
    configs: [app, {source: logo, target: /logo.bin, uid: "1", gid: "2", mode: 0440}]
    secrets: [db, {source: token, target: tok, mode: "0400"}]
    volumes: [data:/data, cache:/cache]
volumes:
  data:
    x-kubernetes: {size: 10Gi, storage_class: fast}
  cache:
    labels: {kompose.volume.size: 2Gi, kompose.volume.storage-class-name: slow}
  old: {external: {name: legacy}}
  ext: {external: true, name: existing-pvc, driver: local}
configs:
  app: {file: ./app.conf, labels: [x=y]}
  logo: {file: logo.bin}
  inline: {content: "hello"}
  fromenv: {environment: GREETING}
  outside: {external: true, name: shared-config}
secrets:
  db: {file: ./db_password.txt}
  token: {environment: TOKEN}
  ext: {external: true}
networks:
  front:
  back: {external: true, name: corp, driver: overlay}
"#;
    let loaded = load_with(
        yaml,
        &source,
        &LoadOptions::default(),
        &[("GREETING", "hi"), ("TOKEN", "s3cr3t-token")],
    )
    .unwrap();
    let mut project = serde_json::to_value(&loaded.project).unwrap();
    let services = project["services"].take();
    assert_eq!(
        project,
        json!({
            "services": null,
            "volumes": {
                "data": {"size": "10Gi", "storageClass": "fast"},
                "cache": {"labels": {"kompose.volume.size": "2Gi", "kompose.volume.storage-class-name": "slow"},
                          "size": "2Gi", "storageClass": "slow"},
                "old": {"external": true, "name": "legacy"},
                "ext": {"external": true, "name": "existing-pvc", "driver": "local"},
            },
            "configs": {
                "app": {"file": "stacks/web/app.conf", "data": {"text": "listen 80;\n"}, "labels": {"x": "y"}},
                "logo": {"file": "stacks/web/logo.bin", "data": {"binary": "//4="}},
                "inline": {"data": {"text": "hello"}},
                "fromenv": {"data": {"text": "hi"}},
                "outside": {"external": true, "name": "shared-config"},
            },
            "secrets": {
                "db": {"file": "stacks/web/db_password.txt", "contentHash": short_hash(b"hunter2")},
                "token": {"environment": "TOKEN", "contentHash": short_hash(b"s3cr3t-token")},
                "ext": {"external": true},
            },
            "networks": {"front": {}, "back": {"external": true, "name": "corp"}},
        })
    );
    assert_eq!(
        services["web"]["configs"],
        json!([{"source": "app"}, {"source": "logo", "target": "/logo.bin", "uid": "1", "gid": "2", "mode": 288}])
    );
    assert_eq!(
        services["web"]["secrets"],
        json!([{"source": "db"}, {"source": "token", "target": "tok", "mode": 256}])
    );
    // Secret values travel only in `Loaded::secrets`.
    assert_eq!(
        loaded.secrets.0,
        BTreeMap::from([
            ("db".to_string(), b"hunter2".to_vec()),
            ("token".to_string(), b"s3cr3t-token".to_vec()),
        ])
    );
    let whole = serde_json::to_string(&loaded.project).unwrap();
    assert!(!whole.contains("hunter2") && !whole.contains("s3cr3t-token"));
    assert!(!format!("{:?}", loaded).contains("hunter2"));
}

#[test]
fn undefined_references_are_errors() {
    assert_eq!(
        error_of(load("services: {web: {image: a, configs: [nope]}}")),
        "invalid_value services.web.configs[0]: config `nope` is not declared in the top-level `configs`"
    );
    assert_eq!(
        error_of(load(
            "services: {web: {image: a, secrets: [{source: nope}]}}"
        )),
        "invalid_value services.web.secrets[0].source: secret `nope` is not declared in the top-level `secrets`"
    );
    assert_eq!(
        error_of(load("configs: {c: {environment: UNSET}}\nservices: {}")),
        "invalid_value configs.c.environment: variable `UNSET` is not set"
    );
    assert_eq!(
        error_of(load("secrets: {s: {}}\nservices: {}")),
        "schema secrets.s: a secret needs one of `file`, `environment` or `external`"
    );
}

#[test]
fn escape_attempts_name_the_field() {
    let cases = [
        (
            "services: {web: {image: a, env_file: ../../../etc/passwd}}",
            "path services.web.env_file: path \"../../../etc/passwd\" leaves the repository",
        ),
        (
            "services: {web: {image: a, env_file: [{path: /etc/passwd}]}}",
            "path services.web.env_file[0].path: absolute path \"/etc/passwd\" is not allowed: paths must be relative to the repository",
        ),
        (
            "configs: {c: {file: ../../../etc/passwd}}\nservices: {}",
            "path configs.c.file: path \"../../../etc/passwd\" leaves the repository",
        ),
        (
            "configs: {c: {file: /etc/passwd}}\nservices: {}",
            "path configs.c.file: absolute path \"/etc/passwd\" is not allowed: paths must be relative to the repository",
        ),
        (
            "secrets: {s: {file: ../../../etc/passwd}}\nservices: {}",
            "path secrets.s.file: path \"../../../etc/passwd\" leaves the repository",
        ),
        (
            "secrets: {s: {file: ~/.ssh/id_rsa}}\nservices: {}",
            "path secrets.s.file: absolute path \"~/.ssh/id_rsa\" is not allowed: paths must be relative to the repository",
        ),
        (
            "services: {web: {image: a, volumes: [\"../../../etc/passwd:/p:ro\"]}}",
            "path services.web.volumes[0]: path \"../../../etc/passwd\" leaves the repository",
        ),
        (
            "services: {web: {image: a, label_file: ../../../etc/passwd}}",
            "path services.web.label_file: path \"../../../etc/passwd\" leaves the repository",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(error_of(load(yaml)), expected, "{yaml}");
    }
}

#[test]
fn symlinks_out_of_the_repository_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("stacks/web")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("stacks/web/passwd")).unwrap();
    let source = DirSource::new(dir.path()).unwrap();
    let error = load_with(
        "configs: {c: {file: ./passwd}}\nservices: {}",
        &source,
        &LoadOptions::default(),
        &[],
    )
    .unwrap_err();
    assert_eq!(error.label(), "file");
    assert_eq!(error.at().unwrap().path, "configs.c.file");
}

/// compose-go's `full-example.yml`, with its directory as the repository.
fn full_example_source() -> (String, MemSource) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/compose-go/loader");
    let mut source = MemSource::new();
    let mut stack = vec![dir.clone()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(&dir).unwrap().to_str().unwrap();
                source.insert(
                    RepoPath::new(relative).unwrap(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    source.insert(RepoPath::new("config_data").unwrap(), "config content");
    source.insert(RepoPath::new("secret_data").unwrap(), "secret content");
    let text = std::fs::read_to_string(dir.join("full-example.yml")).unwrap();
    (text, source)
}

fn full_example_tree(text: &str) -> ProjectTree {
    let file = RepoPath::new("full-example.yml").unwrap();
    ProjectTree {
        root: yaml::parse(text.as_bytes(), &file, &RepoPath::root()).unwrap(),
        variables: BTreeMap::from([("BAR".to_string(), "bar secret".to_string())]),
        files: vec![file],
        warnings: Vec::new(),
    }
}

#[test]
fn full_example_refuses_paths_outside_the_repository() {
    let (text, source) = full_example_source();
    let error = normalise(&full_example_tree(&text), &source, &LoadOptions::default());
    assert_eq!(
        error_of(error),
        "path configs.config4.file: absolute path \"~/config_data\" is not allowed: paths must be relative to the repository"
    );
}

#[test]
fn full_example_loads_every_key() {
    let (text, source) = full_example_source();
    // The example points outside the repository and at an undeclared volume; fix
    // just those so that every other key is exercised.
    let text = text
        .replace("file: ~/config_data", "content: inline")
        .replace("file: /abs/secret_data", "file: ./secret_data")
        .replace(
            "- datavolume:/var/lib/volume",
            "- some-volume:/var/lib/volume",
        );
    let options = LoadOptions {
        images: BTreeMap::from([("bar".to_string(), "example/bar:1".to_string())]),
        ..LoadOptions::default()
    };
    let loaded = normalise(&full_example_tree(&text), &source, &options).unwrap();
    let mut project = serde_json::to_value(&loaded.project).unwrap();
    // Bind contents are the whole example directory: summarise them.
    let bind_summary: BTreeMap<String, String> = loaded
        .project
        .bind_files
        .iter()
        .map(|(path, content)| {
            let summary = match (&content.file, &content.directory) {
                (Some(_), _) => "file".to_string(),
                (_, Some(files)) => format!("directory with {} files", files.len()),
                _ => "missing".to_string(),
            };
            (path.clone(), summary)
        })
        .collect();
    project["bindFiles"] = serde_json::to_value(bind_summary).unwrap();
    assert_snapshot("full-example.json", &project);
    assert_eq!(
        loaded.secrets.0.get("secret4").map(Vec::as_slice),
        Some(&b"bar secret"[..])
    );

    // Every key the example sets on `foo` is either modelled or listed as ignored.
    let root = full_example_tree(&text).root;
    let foo = root.get("services").and_then(|s| s.get("foo")).unwrap();
    let ignored = &loaded.project.services["foo"].ignored;
    for (key, _) in foo.as_map().unwrap() {
        let handled = super::service::HANDLED_KEYS.contains(&key.as_str());
        assert!(
            key.starts_with("x-") || handled != ignored.contains(key),
            "key `{key}` is neither handled nor ignored"
        );
    }
}

/// Compares `value` with `testdata/<name>`; `STACKD_UPDATE_SNAPSHOTS=1` rewrites it.
fn assert_snapshot(name: &str, value: &serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/render/compose/normalise/testdata")
        .join(name);
    let pretty = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("STACKD_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &pretty).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(pretty, expected, "snapshot {name} differs");
}

/// Every compose file of the corpus, parsed without stage one (so `${VAR}` stays
/// literal): no panics, and no "unknown field" errors on valid files.
#[test]
fn corpus_files_only_fail_with_clear_errors() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let source = DirSource::new(&corpus).unwrap();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut unknown_fields = Vec::new();
    let mut stack = vec![corpus.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !(name.ends_with(".yml") || name.ends_with(".yaml")) {
                continue;
            }
            let relative =
                RepoPath::new(path.strip_prefix(&corpus).unwrap().to_str().unwrap()).unwrap();
            let Ok(root) = yaml::parse(
                &std::fs::read(&path).unwrap(),
                &relative,
                &relative.parent(),
            ) else {
                *outcomes.entry("yaml".into()).or_default() += 1;
                continue;
            };
            if root.get("services").is_none() {
                continue;
            }
            let tree = ProjectTree {
                root,
                variables: BTreeMap::new(),
                files: vec![relative.clone()],
                warnings: Vec::new(),
            };
            let options = LoadOptions {
                profiles: vec!["*".to_string()],
                ..LoadOptions::default()
            };
            match normalise(&tree, &source, &options) {
                Ok(_) => *outcomes.entry("ok".into()).or_default() += 1,
                Err(e) => {
                    *outcomes.entry(e.label().into()).or_default() += 1;
                    if let LoadError::Schema { message, .. } = &e
                        && message.starts_with("unknown field")
                    {
                        unknown_fields.push(e.to_string());
                    }
                    println!("{e}");
                }
            }
        }
    }
    println!("{outcomes:?}");
    assert!(
        outcomes.get("ok").copied().unwrap_or(0) > 100,
        "{outcomes:?}"
    );
    // Only the fixture that is wrong on purpose.
    assert_eq!(
        unknown_fields,
        vec![
            "docker-compose/pkg/e2e/fixtures/wrong-composefile/compose.yaml:4:17: services.simple.wrongField: unknown field `wrongField`"
        ]
    );
}

#[test]
fn loader_warnings() {
    let yaml = r#"
services:
  web:
    image: a
    depends_on: {db: {condition: service_healthy}, gone: {required: false}}
    networks: {default: null, front: {aliases: [w]}, nowhere: null}
    ports: ["8000-8009:80"]
  db: {image: b, tty: "y", stdin_open: "off"}
networks:
  front:
"#;
    let loaded = load(yaml).unwrap();
    assert_eq!(
        loaded.project.warnings,
        vec![
            "services.web.ports[0]: published range 8000-8009 for one container port: using 8000",
            "service \"web\": depends_on `gone`, which is not a service of this project (or not enabled)",
            "service \"web\": network `nowhere` is not declared in the top-level `networks`",
        ]
    );
    let web = &loaded.project.services["web"];
    assert_eq!(
        serde_json::to_value(&web.depends_on).unwrap(),
        json!({
            "db": {"condition": "service_healthy", "required": true},
            "gone": {"condition": "service_started", "required": false},
        })
    );
    let db = &loaded.project.services["db"];
    assert!(db.tty && !db.stdin_open);
}

/// A real stack from the corpus, read through a `DirSource` of the corpus, with
/// images configured for its build-only services. Without stage one, `$$` stays
/// unescaped in the snapshot.
#[test]
fn awesome_compose_nginx_flask_mysql_snapshot() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let source = DirSource::new(&corpus).unwrap();
    let file = RepoPath::new("awesome-compose/nginx-flask-mysql/compose.yaml").unwrap();
    let tree = ProjectTree {
        root: yaml::parse(&source.read(&file).unwrap(), &file, &file.parent()).unwrap(),
        variables: BTreeMap::new(),
        files: vec![file],
        warnings: Vec::new(),
    };
    let options = LoadOptions {
        images: BTreeMap::from([
            ("backend".to_string(), "example/backend:1".to_string()),
            ("proxy".to_string(), "example/proxy:1".to_string()),
        ]),
        ..LoadOptions::default()
    };
    let loaded = normalise(&tree, &source, &options).unwrap();
    let project = serde_json::to_value(&loaded.project).unwrap();
    assert_snapshot("nginx-flask-mysql.json", &project);
    let password = loaded.secrets.0.get("db-password").unwrap();
    assert!(
        !project
            .to_string()
            .contains(std::str::from_utf8(password).unwrap().trim())
    );
}

#[test]
fn compose_profiles_from_dotenv_apply_when_none_are_given() {
    let yaml = "services:\n  web: {image: a}\n  debug: {image: b, profiles: [debug]}\n";
    let loaded = load_with(
        yaml,
        &MemSource::new(),
        &LoadOptions::default(),
        &[("COMPOSE_PROFILES", "debug, other")],
    )
    .unwrap();
    assert_eq!(
        loaded.project.services.keys().collect::<Vec<_>>(),
        ["debug", "web"]
    );
    let options = LoadOptions {
        profiles: vec!["other".into()],
        ..LoadOptions::default()
    };
    let loaded = load_with(
        yaml,
        &MemSource::new(),
        &options,
        &[("COMPOSE_PROFILES", "debug")],
    )
    .unwrap();
    assert_eq!(loaded.project.services.keys().collect::<Vec<_>>(), ["web"]);
}

#[test]
fn dependency_cycles_are_refused() {
    let yaml = "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n  c: {image: x, depends_on: [a]}\n";
    let error = load(yaml).unwrap_err();
    assert_eq!(error.label(), "invalid_value");
    assert_eq!(
        error.to_string(),
        "stacks/web/compose.yaml:2:6: services.a.depends_on: dependency cycle: a -> b -> c -> a"
    );
    let self_loop = load("services:\n  a: {image: x, depends_on: [a]}\n").unwrap_err();
    assert!(
        self_loop.to_string().ends_with("dependency cycle: a -> a"),
        "{self_loop}"
    );
    // A diamond is not a cycle.
    load("services:\n  a: {image: x, depends_on: [b, c]}\n  b: {image: x, depends_on: [d]}\n  c: {image: x, depends_on: [d]}\n  d: {image: x}\n").unwrap();
}

#[test]
fn an_empty_image_is_no_image() {
    let error = load("services:\n  app: {image: \"\"}\n").unwrap_err();
    assert_eq!(error.label(), "schema", "{error}");
    assert!(
        error
            .to_string()
            .contains("services.app: a service needs `image`"),
        "{error}"
    );
}
