//! Watching a local repository's refs so a commit triggers a poll at once.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecursiveMode, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{path}: not a git repository: {message}")]
    NotARepository { path: String, message: String },
    #[error("{path}: cannot watch: {message}")]
    Notify { path: String, message: String },
}

impl WatchError {
    pub fn label(&self) -> &'static str {
        match self {
            WatchError::NotARepository { .. } => "not_a_repository",
            WatchError::Notify { .. } => "notify",
        }
    }
}

/// The directory of a `file://` URL or a plain local path; `None` for network URLs.
pub fn local_repo_path(url: &str) -> Option<PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    if url.contains("://") {
        return None;
    }
    // `host:path` is scp-like SSH unless it starts like a path.
    let looks_local = url.starts_with('/') || url.starts_with("./") || url.starts_with("../");
    (looks_local || !url.contains(':')).then(|| PathBuf::from(url))
}

/// Watches the refs of the repository at `path` (`refs/`, `packed-refs`, `HEAD`,
/// in `.git` or in a bare repository) and calls `on_change` when one moves.
/// The watch stops when the returned watcher is dropped.
pub fn watch_refs(
    path: &Path,
    on_change: impl Fn() + Send + 'static,
) -> Result<notify::RecommendedWatcher, WatchError> {
    let git_dir = git2::Repository::open(path)
        .map_err(|e| WatchError::NotARepository {
            path: path.display().to_string(),
            message: e.message().to_string(),
        })?
        .path()
        .to_path_buf();
    let git_dir = git_dir.canonicalize().unwrap_or(git_dir);
    let refs_dir = git_dir.join("refs");
    let watched_dir = git_dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Lock files come and go during an update; the rename onto the ref is what counts.
            if name.ends_with(".lock") {
                return false;
            }
            p.starts_with(&refs_dir)
                || (p.parent() == Some(watched_dir.as_path())
                    && (name == "HEAD" || name == "packed-refs"))
        });
        if relevant {
            on_change();
        }
    })
    .map_err(|e| notify_error(&git_dir, &e))?;
    watcher
        .watch(&git_dir, RecursiveMode::NonRecursive)
        .map_err(|e| notify_error(&git_dir, &e))?;
    watcher
        .watch(&git_dir.join("refs"), RecursiveMode::Recursive)
        .map_err(|e| notify_error(&git_dir, &e))?;
    Ok(watcher)
}

fn notify_error(path: &Path, e: &notify::Error) -> WatchError {
    WatchError::Notify {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_recognised() {
        assert_eq!(
            local_repo_path("file:///srv/r"),
            Some(PathBuf::from("/srv/r"))
        );
        assert_eq!(local_repo_path("/srv/r"), Some(PathBuf::from("/srv/r")));
        assert_eq!(local_repo_path("repo"), Some(PathBuf::from("repo")));
        assert_eq!(local_repo_path("https://h/r"), None);
        assert_eq!(local_repo_path("git@h:o/r"), None);
    }
}
