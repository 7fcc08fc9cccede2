//! Loader errors. Each names the file, the YAML path of the field and, where the
//! parser gave one, the line and column: `web/compose.yaml:12:7: services.web.ports[1]: ...`.

use std::fmt;

use crate::render::files::{FileError, PathError, RepoPath};

use super::node::Mark;

/// The place an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    /// Where in which file; `None` before any file is read.
    pub mark: Option<Mark>,
    /// The YAML path of the field, e.g. `services.web.ports[1]`; empty for a whole file.
    pub path: String,
}

impl At {
    pub fn new(mark: &Mark, path: impl Into<String>) -> Self {
        At {
            mark: Some(mark.clone()),
            path: path.into(),
        }
    }

    /// A whole file, before or without a position.
    pub fn file(file: &RepoPath) -> Self {
        let file = std::sync::Arc::new(file.clone());
        At {
            mark: Some(Mark::synthetic(
                file.clone(),
                std::sync::Arc::new(file.parent()),
            )),
            path: String::new(),
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.mark, self.path.is_empty()) {
            (Some(mark), true) => write!(f, "{mark}"),
            (Some(mark), false) => write!(f, "{mark}: {}", self.path),
            (None, false) => f.write_str(&self.path),
            (None, true) => f.write_str("<input>"),
        }
    }
}

/// Why a compose project could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// No compose file in the project directory.
    #[error(
        "{dir}: no compose file found (looked for compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml)"
    )]
    NoComposeFile { dir: RepoPath },
    /// The file is not valid YAML (syntax, duplicate keys, alias bombs, too deep).
    #[error("{at}: invalid YAML: {message}")]
    Yaml { at: At, message: String },
    /// A key the Compose Specification does not define, or a value of the wrong type.
    #[error("{at}: {message}")]
    Schema { at: At, message: String },
    /// A bad `${...}` expression or a `${VAR:?message}` whose variable is unset.
    #[error("{at}: {message}")]
    Interpolation { at: At, message: String },
    /// A referenced file is missing, too large, a symlink escape or a submodule.
    #[error("{}", file_message(at, source))]
    File { at: At, source: FileError },
    /// A value decrypted from a SOPS file would be stored in the `Stack` in clear.
    #[error(
        "{field}: holds a value decrypted from a SOPS file, which the Stack would store in clear; pass decrypted values through `secrets:` (file: or environment:), a service's `environment:`, `configs:` or a bind mount"
    )]
    DecryptedInStack { field: String },
    /// A referenced path is absolute or leaves the repository.
    #[error("{at}: {source}")]
    Path { at: At, source: PathError },
    /// `extends` or `include` refers back to itself.
    #[error("{at}: {message}")]
    Cycle { at: At, message: String },
    /// A value of the right type that is still wrong: port 70000, negative replicas.
    #[error("{at}: {message}")]
    InvalidValue { at: At, message: String },
    /// Valid compose that cannot run on a cluster, e.g. `build:` without `image:`.
    #[error("{at}: {message}")]
    Unsupported { at: At, message: String },
}

/// `at: source`, except that a whole-file `at` is not repeated when the file
/// error names the same file (`app/compose.yaml: app/compose.yaml: ...`).
fn file_message(at: &At, source: &FileError) -> String {
    let same_file = at.path.is_empty()
        && at
            .mark
            .as_ref()
            .is_some_and(|mark| *mark.file == *source.path());
    if same_file {
        source.to_string()
    } else {
        format!("{at}: {source}")
    }
}

impl LoadError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            LoadError::NoComposeFile { .. } => "no_compose_file",
            LoadError::Yaml { .. } => "yaml",
            LoadError::Schema { .. } => "schema",
            LoadError::Interpolation { .. } => "interpolation",
            LoadError::File { .. } => "file",
            LoadError::Path { .. } => "path",
            LoadError::Cycle { .. } => "cycle",
            LoadError::InvalidValue { .. } => "invalid_value",
            LoadError::Unsupported { .. } => "unsupported",
            LoadError::DecryptedInStack { .. } => "decrypted_in_stack",
        }
    }

    /// This error with each secret value in its message replaced by
    /// `<secret NAME>`: a value interpolated into the wrong field (say
    /// `replicas: ${DB_PASSWORD}`) would otherwise be quoted back, and errors
    /// reach logs, the status page and the API. `secrets` is (name, value).
    pub fn redacted(mut self, secrets: &[(String, String)]) -> LoadError {
        let message = match &mut self {
            LoadError::Yaml { message, .. }
            | LoadError::Schema { message, .. }
            | LoadError::Interpolation { message, .. }
            | LoadError::Cycle { message, .. }
            | LoadError::InvalidValue { message, .. }
            | LoadError::Unsupported { message, .. } => message,
            // Paths and file names only.
            LoadError::NoComposeFile { .. }
            | LoadError::File { .. }
            | LoadError::Path { .. }
            | LoadError::DecryptedInStack { .. } => {
                return self;
            }
        };
        for (name, value) in secrets.iter().filter(|(_, value)| !value.is_empty()) {
            if message.contains(value.as_str()) {
                *message = message.replace(value.as_str(), &format!("<secret {name}>"));
            }
        }
        self
    }

    /// Where the error is, when it is about a place in a file.
    pub fn at(&self) -> Option<&At> {
        match self {
            LoadError::NoComposeFile { .. } | LoadError::DecryptedInStack { .. } => None,
            LoadError::Yaml { at, .. }
            | LoadError::Schema { at, .. }
            | LoadError::Interpolation { at, .. }
            | LoadError::File { at, .. }
            | LoadError::Path { at, .. }
            | LoadError::Cycle { at, .. }
            | LoadError::InvalidValue { at, .. }
            | LoadError::Unsupported { at, .. } => Some(at),
        }
    }
}
