//! One bare mirror per repository URL under the data directory, reused across
//! restarts and rebuilt when a fetch was interrupted or the store is damaged.

use std::path::{Path, PathBuf};

use git2::Repository;
use sha2::{Digest, Sha256};

use super::redact::redact_url;

/// Written before a fetch and removed after it: found at open, it means the
/// process died mid-fetch and the mirror cannot be trusted.
const FETCH_MARKER: &str = "stackd-fetch-in-progress";
/// The redacted URL, for people looking at the data directory.
const URL_NOTE: &str = "stackd-url";

/// A bare repository mirroring one URL.
pub struct Mirror {
    path: PathBuf,
    repo: Repository,
}

/// How a mirror was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    Existing,
    Created,
    /// The previous mirror was half-written or damaged and was thrown away.
    Rebuilt,
}

#[derive(Debug, thiserror::Error)]
#[error("mirror {path}: {message}")]
pub struct MirrorError {
    pub path: String,
    pub message: String,
}

impl Mirror {
    /// The mirror directory for `url`: named by a hash of the URL without userinfo,
    /// so changing a token in the URL keeps the mirror.
    pub fn dir_for(data_dir: &Path, url: &str) -> PathBuf {
        let digest = Sha256::digest(redact_url(url).as_bytes());
        data_dir.join("mirrors").join(hex::encode(&digest[..16]))
    }

    /// Opens the mirror of `url`, creating it, or rebuilding it when it is damaged.
    pub fn open(data_dir: &Path, url: &str) -> Result<(Mirror, Opened), MirrorError> {
        let path = Self::dir_for(data_dir, url);
        let error = |message: String| MirrorError {
            path: path.display().to_string(),
            message,
        };
        let mut opened = Opened::Created;
        if path.exists() {
            match Self::check(&path) {
                Ok(repo) => return Ok((Mirror { path, repo }, Opened::Existing)),
                Err(why) => {
                    tracing::warn!(mirror = %path.display(), reason = %why, "discarding damaged mirror");
                    std::fs::remove_dir_all(&path)
                        .map_err(|e| error(format!("cannot remove damaged mirror: {e}")))?;
                    opened = Opened::Rebuilt;
                }
            }
        }
        std::fs::create_dir_all(&path).map_err(|e| error(format!("cannot create: {e}")))?;
        let repo = Repository::init_bare(&path).map_err(|e| error(e.message().to_string()))?;
        std::fs::write(path.join(URL_NOTE), redact_url(url) + "\n")
            .map_err(|e| error(format!("cannot write: {e}")))?;
        Ok((Mirror { path, repo }, opened))
    }

    /// Opens an existing mirror and checks that an earlier fetch finished and every
    /// ref's commit and tree can be read.
    fn check(path: &Path) -> Result<Repository, String> {
        if path.join(FETCH_MARKER).exists() {
            return Err("an earlier fetch did not finish".into());
        }
        let repo = Repository::open_bare(path).map_err(|e| e.message().to_string())?;
        repo.odb().map_err(|e| e.message().to_string())?;
        {
            let refs = repo.references().map_err(|e| e.message().to_string())?;
            for reference in refs {
                let reference = reference.map_err(|e| e.message().to_string())?;
                let name = reference.name().unwrap_or("?").to_string();
                let fail = |e: git2::Error| format!("{name}: {}", e.message());
                // Tags may point at any object; commits must also have their tree.
                let target = reference.peel(git2::ObjectType::Any).map_err(fail)?;
                if let Ok(commit) = target.peel_to_commit() {
                    commit.tree().map_err(fail)?;
                }
            }
        }
        Ok(repo)
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks a fetch as started; [`FetchGuard::finish`] clears the mark. A crash in
    /// between leaves the mark, and the next [`Mirror::open`] rebuilds the mirror.
    pub fn begin_fetch(&self) -> std::io::Result<FetchGuard> {
        let marker = self.path.join(FETCH_MARKER);
        std::fs::write(&marker, b"")?;
        Ok(FetchGuard { marker })
    }
}

/// An unfinished fetch; see [`Mirror::begin_fetch`].
#[must_use]
pub struct FetchGuard {
    marker: PathBuf,
}

impl FetchGuard {
    /// The fetch returned (successfully or with a clean error): the store is consistent.
    pub fn finish(self) -> std::io::Result<()> {
        std::fs::remove_file(&self.marker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_is_stable_and_ignores_userinfo() {
        let d = Path::new("/data");
        let a = Mirror::dir_for(d, "https://u:p@example.com/r.git");
        assert_eq!(a, Mirror::dir_for(d, "https://example.com/r.git"));
        assert_ne!(a, Mirror::dir_for(d, "https://example.com/other.git"));
        assert!(a.starts_with("/data/mirrors"));
    }

    #[test]
    fn interrupted_fetch_marker_forces_rebuild() {
        let tmp = tempfile::tempdir().unwrap();
        let (m, how) = Mirror::open(tmp.path(), "file:///nowhere").unwrap();
        assert_eq!(how, Opened::Created);
        let guard = m.begin_fetch().unwrap();
        drop(m);
        let (m, how) = Mirror::open(tmp.path(), "file:///nowhere").unwrap();
        assert_eq!(how, Opened::Rebuilt);
        std::mem::forget(guard);
        let guard = m.begin_fetch().unwrap();
        guard.finish().unwrap();
        let (_, how) = Mirror::open(tmp.path(), "file:///nowhere").unwrap();
        assert_eq!(how, Opened::Existing);
    }
}
