//! The compose loader: files → merged, interpolated, normalised [`Project`].

use std::collections::BTreeMap;

pub mod dotenv;
pub mod error;
pub mod extends;
pub mod include;
pub mod interpolate;
pub mod merge;
pub mod node;
pub mod normalise;
pub mod tree;
pub mod yaml;

pub use error::{At, LoadError};

use super::files::{FileSource, RepoPath};
use super::model::{Project, SecretValues};

/// What to load and with which inputs.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The project directory (where `.env` and the default compose files live).
    pub dir: RepoPath,
    /// Compose files merged in order. Empty: the first of `compose.yaml`,
    /// `compose.yml`, `docker-compose.yaml`, `docker-compose.yml` in `dir`, plus its
    /// `*.override.*` file when present.
    pub files: Vec<RepoPath>,
    /// Env files that replace the project directory's `.env` when non-empty.
    pub env_files: Vec<RepoPath>,
    /// Per-stack variables from stackd's configuration; they override `.env`.
    pub variables: BTreeMap<String, String>,
    /// Enabled profiles.
    pub profiles: Vec<String>,
    /// Images for services that only have `build:`, by service name.
    pub images: BTreeMap<String, String>,
}

/// A loaded project and the secret values it references.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub project: Project,
    pub secrets: SecretValues,
}

/// Loads a compose project from `source`.
pub fn load(source: &dyn FileSource, options: &LoadOptions) -> Result<Loaded, LoadError> {
    let tree = tree::read_tree(source, options)?;
    normalise::normalise(&tree, source, options)
}
