//! Rendering a stack from a local directory: the offline path behind `stackd render`.
//!
//! Finds the repository root the stack lives in (the nearest `.git`, else the
//! stack directory itself), so the "nothing outside the repository" rule holds
//! for local renders exactly as it does for the daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::render::files::{DirSource, RepoPath};
use crate::render::object::Rendered;
use crate::render::{self, LoadError, LoadOptions, PodSecurity, RenderError, RenderOptions};
use crate::tenancy::{self, NamespaceRefusal};

/// What to render.
#[derive(Clone, Debug, Default)]
pub struct LocalRender {
    /// The stack directory, or a compose file in it.
    pub path: PathBuf,
    /// Extra compose files (paths as given on the command line), merged in order.
    pub files: Vec<PathBuf>,
    pub env_files: Vec<PathBuf>,
    pub profiles: Vec<String>,
    pub variables: BTreeMap<String, String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// The repository root; default: the nearest ancestor with `.git`, else the stack directory.
    pub repository_root: Option<PathBuf>,
    pub options: RenderOptions,
    /// The stack's Pod Security level (`None`: baseline).
    pub pod_security: Option<PodSecurity>,
    /// Render compose networks as NetworkPolicies (`None`: true).
    pub network_policies: Option<bool>,
    /// Namespaces the stack may use although reserved (`kube-*`, `default`).
    pub allowed_namespaces: Vec<String>,
    /// Age identities for SOPS-encrypted files (`--age-key-file`).
    pub decryption: Option<std::sync::Arc<crate::render::sops::AgeKeys>>,
}

/// Why a local render failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalRenderError {
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    /// `root` is the repository root as the user reaches it from the current
    /// directory (empty when it is the current directory): loader errors name
    /// files relative to the repository, so this turns them into usable paths.
    #[error("{root}{error}")]
    Load { root: String, error: Box<LoadError> },
    #[error("{0}")]
    Render(Box<RenderError>),
    /// Tenancy: `file` asks for a reserved namespace.
    #[error("{file}: {refusal}")]
    Namespace {
        file: String,
        refusal: NamespaceRefusal,
    },
}

impl LocalRenderError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            LocalRenderError::Input { .. } => "input",
            LocalRenderError::Load { error, .. } => error.label(),
            LocalRenderError::Render(e) => e.label(),
            LocalRenderError::Namespace { .. } => "namespace_not_allowed",
        }
    }
}

/// The rendered objects, plus the loader's secret values used for them.
pub fn render_local(request: &LocalRender) -> Result<Rendered, LocalRenderError> {
    let input_error = |path: &Path, message: String| LocalRenderError::Input {
        path: path.to_path_buf(),
        message,
    };
    let given = request
        .path
        .canonicalize()
        .map_err(|e| input_error(&request.path, e.to_string()))?;
    let (stack_dir, first_file) = if given.is_file() {
        (
            given.parent().unwrap_or(Path::new("/")).to_path_buf(),
            Some(given.clone()),
        )
    } else {
        (given.clone(), None)
    };
    let root = match &request.repository_root {
        Some(root) => root
            .canonicalize()
            .map_err(|e| input_error(root, e.to_string()))?,
        None => repository_root(&stack_dir),
    };
    let source = DirSource::new(&root).map_err(|e| input_error(&root, e.to_string()))?;
    let relative = |path: &Path| -> Result<RepoPath, LocalRenderError> {
        let absolute = path
            .canonicalize()
            .map_err(|e| input_error(path, e.to_string()))?;
        let inside = absolute.strip_prefix(&root).map_err(|_| {
            input_error(
                path,
                format!("is outside the repository {}", root.display()),
            )
        })?;
        RepoPath::new(&inside.to_string_lossy()).map_err(|e| input_error(path, e.to_string()))
    };

    let dir = relative(&stack_dir)?;
    let mut files = Vec::new();
    if let Some(file) = &first_file {
        files.push(relative(file)?);
    }
    for file in &request.files {
        files.push(relative(file)?);
    }
    let env_files = request
        .env_files
        .iter()
        .map(|f| relative(f))
        .collect::<Result<Vec<_>, _>>()?;
    let load_options = LoadOptions {
        dir: dir.clone(),
        files,
        env_files,
        variables: request.variables.clone(),
        profiles: request.profiles.clone(),
        images: BTreeMap::new(),
        decryption: request.decryption.clone(),
    };
    let loaded = render::load(&source, &load_options).map_err(|error| LocalRenderError::Load {
        root: display_prefix(&root),
        error: Box::new(error),
    })?;

    // A name given on the command line is used as is (and refused if invalid);
    // one derived from compose or the directory is sanitised like service names.
    let name = match &request.name {
        Some(name) => name.clone(),
        None => render::sanitise_name(
            &loaded
                .project
                .compose_name
                .clone()
                .unwrap_or_else(|| directory_name(&stack_dir)),
        ),
    };
    let namespace = request.namespace.clone().unwrap_or_else(|| name.clone());
    // Offline, only the fixed names can be judged; `stackd diff` checks the rest.
    tenancy::check_fixed(&namespace, &request.allowed_namespaces).map_err(|refusal| {
        LocalRenderError::Namespace {
            file: match &first_file {
                Some(file) => file.display().to_string(),
                None => stack_dir.display().to_string(),
            },
            refusal,
        }
    })?;
    let mut stack = render::stack_for(&name, &namespace, loaded.project, None);
    stack.spec.pod_security = request.pod_security;
    stack.spec.network_policies = request.network_policies;
    render::render(&stack, &loaded.secrets, &request.options)
        .map_err(|e| LocalRenderError::Render(Box::new(e)))
}

/// `root` relative to the current directory, with a trailing `/`; empty for the
/// current directory itself.
fn display_prefix(root: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| root.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| root.to_path_buf());
    let text = relative.to_string_lossy();
    if text.is_empty() {
        String::new()
    } else {
        format!("{text}/")
    }
}

/// The nearest ancestor holding `.git`, or `dir` itself.
fn repository_root(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(dir)
        .to_path_buf()
}

/// The directory's name, normalised as Docker Compose does (as the daemon does).
fn directory_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| render::project_name(&n.to_string_lossy()))
        .unwrap_or_else(|| "stack".to_string())
}
