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
        LoadError::NoComposeFile { .. } => error.to_string(),
    };
    let path = error.at().map(|at| at.path.clone()).unwrap_or_default();
    format!("{} {path}: {message}", error.label())
}
