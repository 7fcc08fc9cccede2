//! `.env` and `env_file` parsing, with compose's dotenv syntax.

use super::error::LoadError;
use crate::render::files::RepoPath;

/// Parses dotenv `text` read from `file`. `lookup` resolves `${VAR}` references
/// inside values (earlier keys of the same file take precedence over it).
/// A bare `KEY` line yields `(KEY, None)`.
pub fn parse(
    text: &str,
    file: &RepoPath,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Option<String>)>, LoadError> {
    // Placeholder: KEY=VALUE lines only. The full syntax lands with the tree stage.
    let _ = (file, lookup);
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.to_string())),
            None => (l.to_string(), None),
        })
        .collect())
}
