//! Read-only access to the files of one repository checkout or one git tree.
//!
//! The loader never touches `std::fs` directly: it asks a [`FileSource`] for
//! repository-relative paths. That lets the same loader read a directory on disk
//! (`stackd render`) or a commit's tree in a bare mirror (the daemon), and puts the
//! "nothing outside the repository" rule in one place per implementation.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Default per-file size limit: compose files, `.env` files and configs are small.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1024 * 1024;

/// A normalised path inside the repository: relative, `/`-separated, without `.`
/// or `..` components. The empty path is the repository root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoPath(String);

impl RepoPath {
    pub fn root() -> Self {
        RepoPath(String::new())
    }

    /// Parses a repository-relative path. Absolute paths and `..` that climb above
    /// the root are refused.
    pub fn new(path: &str) -> Result<Self, PathError> {
        RepoPath::root().join(path)
    }

    /// Resolves `relative` against this path as a directory, the way compose resolves
    /// `./file` against the compose file's directory.
    pub fn join(&self, relative: &str) -> Result<Self, PathError> {
        if relative.starts_with('/') || relative.starts_with('\\') || has_drive_letter(relative) {
            return Err(PathError::Absolute(relative.to_string()));
        }
        if relative.starts_with('~') {
            return Err(PathError::Absolute(relative.to_string()));
        }
        let mut parts: Vec<&str> = self.components().collect();
        for part in relative.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(PathError::Escape(relative.to_string()));
                    }
                }
                other => parts.push(other),
            }
        }
        Ok(RepoPath(parts.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The containing directory; the root's parent is the root.
    pub fn parent(&self) -> RepoPath {
        match self.0.rfind('/') {
            Some(i) => RepoPath(self.0[..i].to_string()),
            None => RepoPath::root(),
        }
    }

    /// The last component, or "" for the root.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The path of `self` relative to `base`, when `self` is inside `base`.
    pub fn strip_prefix(&self, base: &RepoPath) -> Option<&str> {
        if base.is_root() {
            return Some(&self.0);
        }
        let rest = self.0.strip_prefix(base.as_str())?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix('/')
        }
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

fn has_drive_letter(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

/// Why a path string cannot name a file inside the repository.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("absolute path {0:?} is not allowed: paths must be relative to the repository")]
    Absolute(String),
    #[error("path {0:?} leaves the repository")]
    Escape(String),
}

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A git submodule: its content is not in this repository.
    Submodule,
}

/// Why a file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("{0}: no such file or directory")]
    NotFound(RepoPath),
    #[error("{path}: symlink points outside the repository ({target})")]
    SymlinkEscape { path: RepoPath, target: String },
    #[error("{path}: file is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        path: RepoPath,
        size: u64,
        limit: u64,
    },
    #[error("{0}: is a git submodule, which stackd does not support")]
    Submodule(RepoPath),
    #[error("{0}: is a directory, not a file")]
    IsADirectory(RepoPath),
    #[error("{0}: is not a directory")]
    NotADirectory(RepoPath),
    #[error("{path}: {message}")]
    Io { path: RepoPath, message: String },
    /// A SOPS-encrypted file that could not be decrypted.
    #[error("{path}: {error}")]
    Sops {
        path: RepoPath,
        error: crate::render::sops::SopsError,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn path(&self) -> &RepoPath {
        match self {
            FileError::NotFound(path)
            | FileError::Submodule(path)
            | FileError::IsADirectory(path)
            | FileError::NotADirectory(path)
            | FileError::SymlinkEscape { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::Io { path, .. }
            | FileError::Sops { path, .. } => path,
        }
    }

    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FileError::NotFound(_) => "not_found",
            FileError::SymlinkEscape { .. } => "symlink_escape",
            FileError::TooLarge { .. } => "too_large",
            FileError::Submodule(_) => "submodule",
            FileError::IsADirectory(_) => "is_a_directory",
            FileError::NotADirectory(_) => "not_a_directory",
            FileError::Io { .. } => "io",
            FileError::Sops { .. } => "sops",
        }
    }
}

/// Read-only access to the files of one repository snapshot.
///
/// Implementations follow symlinks only while they stay inside the snapshot, and
/// enforce a per-file size limit.
pub trait FileSource: Send + Sync {
    /// The whole content of a file.
    fn read(&self, path: &RepoPath) -> Result<Vec<u8>, FileError>;

    /// What `path` names after following in-tree symlinks, or `None` when nothing is there.
    fn kind(&self, path: &RepoPath) -> Result<Option<EntryKind>, FileError>;

    /// The entries directly inside a directory, sorted by name.
    fn list(&self, dir: &RepoPath) -> Result<Vec<(String, EntryKind)>, FileError>;
}

/// A [`FileSource`] over a directory on disk.
#[derive(Clone, Debug)]
pub struct DirSource {
    root: PathBuf,
    max_file_size: u64,
}

impl DirSource {
    /// Opens `root`, which must be an existing directory.
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let root = root.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(DirSource {
            root,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        })
    }

    pub fn with_max_file_size(mut self, limit: u64) -> Self {
        self.max_file_size = limit;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The real location of `path`, refusing symlinks that resolve outside the root.
    /// `Ok(None)` when nothing exists there.
    fn resolve(&self, path: &RepoPath) -> Result<Option<PathBuf>, FileError> {
        let joined = path
            .components()
            .fold(self.root.clone(), |acc, c| acc.join(c));
        match joined.canonicalize() {
            Ok(real) if real.starts_with(&self.root) => Ok(Some(real)),
            Ok(real) => Err(FileError::SymlinkEscape {
                path: path.clone(),
                target: real.display().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink whose target would be outside is still an escape.
                if let Ok(target) = std::fs::read_link(&joined) {
                    let target_abs = joined.parent().unwrap_or(&self.root).join(&target);
                    if !lexically_inside(&target_abs, &self.root) {
                        return Err(FileError::SymlinkEscape {
                            path: path.clone(),
                            target: target.display().to_string(),
                        });
                    }
                }
                Ok(None)
            }
            Err(e) => Err(FileError::Io {
                path: path.clone(),
                message: e.to_string(),
            }),
        }
    }
}

fn lexically_inside(path: &Path, root: &Path) -> bool {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal.starts_with(root)
}

impl FileSource for DirSource {
    fn read(&self, path: &RepoPath) -> Result<Vec<u8>, FileError> {
        let real = self
            .resolve(path)?
            .ok_or_else(|| FileError::NotFound(path.clone()))?;
        let io_err = |e: std::io::Error| FileError::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        let meta = std::fs::metadata(&real).map_err(io_err)?;
        if meta.is_dir() {
            return Err(FileError::IsADirectory(path.clone()));
        }
        if meta.len() > self.max_file_size {
            return Err(FileError::TooLarge {
                path: path.clone(),
                size: meta.len(),
                limit: self.max_file_size,
            });
        }
        std::fs::read(&real).map_err(io_err)
    }

    fn kind(&self, path: &RepoPath) -> Result<Option<EntryKind>, FileError> {
        Ok(self.resolve(path)?.map(|real| {
            if real.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::File
            }
        }))
    }

    fn list(&self, dir: &RepoPath) -> Result<Vec<(String, EntryKind)>, FileError> {
        let real = self
            .resolve(dir)?
            .ok_or_else(|| FileError::NotFound(dir.clone()))?;
        if !real.is_dir() {
            return Err(FileError::NotADirectory(dir.clone()));
        }
        let io_err = |e: std::io::Error| FileError::Io {
            path: dir.clone(),
            message: e.to_string(),
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&real).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let child = dir.join(&name).map_err(|e| FileError::Io {
                path: dir.clone(),
                message: e.to_string(),
            })?;
            // Entries that escape or dangle are skipped here; reading them reports why.
            if let Ok(Some(kind)) = self.kind(&child) {
                entries.push((name, kind));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }
}

/// An in-memory [`FileSource`], for tests and for content that is already in memory.
#[derive(Clone, Debug, Default)]
pub struct MemSource {
    files: std::collections::BTreeMap<RepoPath, Vec<u8>>,
    max_file_size: u64,
}

impl MemSource {
    pub fn new() -> Self {
        MemSource {
            files: Default::default(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }

    /// Adds a file; its parent directories exist implicitly.
    ///
    /// # Panics
    /// When `path` is not repository-relative: this builder is for fixed test input.
    pub fn with_file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Self {
        let path = RepoPath::new(path).expect("MemSource paths are repository-relative");
        self.insert(path, content);
        self
    }

    /// Adds a file; its parent directories exist implicitly.
    pub fn insert(&mut self, path: RepoPath, content: impl Into<Vec<u8>>) {
        self.files.insert(path, content.into());
    }

    pub fn with_max_file_size(mut self, limit: u64) -> Self {
        self.max_file_size = limit;
        self
    }

    fn is_dir(&self, path: &RepoPath) -> bool {
        self.files
            .keys()
            .any(|f| f != path && f.strip_prefix(path).is_some_and(|rest| !rest.is_empty()))
    }
}

impl FileSource for MemSource {
    fn read(&self, path: &RepoPath) -> Result<Vec<u8>, FileError> {
        match self.files.get(path) {
            Some(content) if content.len() as u64 > self.max_file_size => {
                Err(FileError::TooLarge {
                    path: path.clone(),
                    size: content.len() as u64,
                    limit: self.max_file_size,
                })
            }
            Some(content) => Ok(content.clone()),
            None if self.is_dir(path) => Err(FileError::IsADirectory(path.clone())),
            None => Err(FileError::NotFound(path.clone())),
        }
    }

    fn kind(&self, path: &RepoPath) -> Result<Option<EntryKind>, FileError> {
        if self.files.contains_key(path) {
            Ok(Some(EntryKind::File))
        } else if self.is_dir(path) {
            Ok(Some(EntryKind::Dir))
        } else {
            Ok(None)
        }
    }

    fn list(&self, dir: &RepoPath) -> Result<Vec<(String, EntryKind)>, FileError> {
        if self.files.contains_key(dir) {
            return Err(FileError::NotADirectory(dir.clone()));
        }
        if !self.is_dir(dir) {
            return Err(FileError::NotFound(dir.clone()));
        }
        let mut entries: std::collections::BTreeMap<String, EntryKind> = Default::default();
        for file in self.files.keys() {
            let Some(rest) = file.strip_prefix(dir).filter(|r| !r.is_empty()) else {
                continue;
            };
            match rest.split_once('/') {
                Some((name, _)) => entries.insert(name.to_string(), EntryKind::Dir),
                None => entries.insert(rest.to_string(), EntryKind::File),
            };
        }
        Ok(entries.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_normalises_and_refuses_escapes() {
        let dir = RepoPath::new("stacks/web").unwrap();
        assert_eq!(
            dir.join("./conf/../nginx.conf").unwrap().as_str(),
            "stacks/web/nginx.conf"
        );
        assert_eq!(dir.join("../../x").unwrap().as_str(), "x");
        assert_eq!(
            dir.join("../../../etc/passwd"),
            Err(PathError::Escape("../../../etc/passwd".into()))
        );
        assert_eq!(
            dir.join("/etc/passwd"),
            Err(PathError::Absolute("/etc/passwd".into()))
        );
        assert_eq!(RepoPath::root().join(".").unwrap(), RepoPath::root());
    }

    #[test]
    fn parent_and_name() {
        let p = RepoPath::new("a/b/c.yml").unwrap();
        assert_eq!(p.parent().as_str(), "a/b");
        assert_eq!(p.file_name(), "c.yml");
        assert_eq!(RepoPath::new("c").unwrap().parent(), RepoPath::root());
        assert_eq!(
            p.strip_prefix(&RepoPath::new("a").unwrap()),
            Some("b/c.yml")
        );
        assert_eq!(p.strip_prefix(&RepoPath::new("ab").unwrap()), None);
    }

    #[test]
    fn dir_source_refuses_symlink_escape_and_large_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("ok.txt"), "hi").unwrap();
        std::fs::write(tmp.path().join("big.txt"), vec![b'x'; 100]).unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("out")).unwrap();
        std::os::unix::fs::symlink("ok.txt", tmp.path().join("in")).unwrap();
        let src = DirSource::new(tmp.path()).unwrap().with_max_file_size(50);
        assert_eq!(src.read(&RepoPath::new("ok.txt").unwrap()).unwrap(), b"hi");
        assert_eq!(src.read(&RepoPath::new("in").unwrap()).unwrap(), b"hi");
        assert!(matches!(
            src.read(&RepoPath::new("out/passwd").unwrap()),
            Err(FileError::SymlinkEscape { .. })
        ));
        assert!(matches!(
            src.read(&RepoPath::new("big.txt").unwrap()),
            Err(FileError::TooLarge {
                size: 100,
                limit: 50,
                ..
            })
        ));
        assert_eq!(src.kind(&RepoPath::new("missing").unwrap()).unwrap(), None);
        let names: Vec<String> = src
            .list(&RepoPath::root())
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, vec!["big.txt", "in", "ok.txt"]);
    }

    #[test]
    fn mem_source_lists_files_and_implicit_directories() {
        let src = MemSource::new()
            .with_file("a/b.txt", "b")
            .with_file("a/c/d.txt", "d")
            .with_file("top", "t");
        let a = RepoPath::new("a").unwrap();
        assert_eq!(src.kind(&a).unwrap(), Some(EntryKind::Dir));
        assert_eq!(
            src.list(&a).unwrap(),
            vec![
                ("b.txt".into(), EntryKind::File),
                ("c".into(), EntryKind::Dir)
            ]
        );
        assert_eq!(
            src.read(&RepoPath::new("a/c/d.txt").unwrap()).unwrap(),
            b"d"
        );
        assert!(matches!(src.read(&a), Err(FileError::IsADirectory(_))));
        assert_eq!(src.kind(&RepoPath::new("nope").unwrap()).unwrap(), None);
    }
}
