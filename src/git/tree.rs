//! A [`FileSource`] over one commit's tree in a (bare) repository: no checkout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{ObjectType, Oid, Repository};

use crate::render::files::{DEFAULT_MAX_FILE_SIZE, EntryKind, FileError, FileSource, RepoPath};

const MODE_SYMLINK: i32 = 0o120000;
const MODE_SUBMODULE: i32 = 0o160000;
/// Like the kernel's ELOOP limit: symlink chains longer than this are refused.
const MAX_SYMLINK_HOPS: usize = 40;

/// Reads files of one tree. `git2::Repository` is `Send` but not `Sync`, so it
/// sits behind a mutex; reads are short, and each event gets its own reader.
pub struct GitTreeSource {
    inner: Mutex<Inner>,
    repo_path: PathBuf,
    tree: Oid,
    max_file_size: u64,
}

/// The repository plus parsed trees. libgit2 does not cache trees over 4 KiB,
/// and a directory holding hundreds of stacks is re-parsed on every lookup
/// without this cache.
struct Inner {
    repo: Repository,
    trees: HashMap<Oid, Arc<[Item]>>,
}

/// One tree entry, kept sorted by name.
struct Item {
    name: String,
    mode: i32,
    id: Oid,
    kind: Option<ObjectType>,
}

impl Inner {
    fn tree(&mut self, id: Oid) -> Result<Arc<[Item]>, git2::Error> {
        if let Some(items) = self.trees.get(&id) {
            return Ok(items.clone());
        }
        let tree = self.repo.find_tree(id)?;
        let mut items: Vec<Item> = tree
            .iter()
            .filter_map(|e| {
                Some(Item {
                    name: e.name().ok()?.to_string(),
                    mode: e.filemode(),
                    id: e.id(),
                    kind: e.kind(),
                })
            })
            .collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        let items: Arc<[Item]> = items.into();
        self.trees.insert(id, items.clone());
        Ok(items)
    }
}

fn find<'a>(items: &'a [Item], name: &str) -> Option<&'a Item> {
    items
        .binary_search_by(|i| i.name.as_str().cmp(name))
        .ok()
        .and_then(|at| items.get(at))
}

/// What a resolved path names.
enum Resolved {
    Blob(Oid),
    Tree(Oid),
    Submodule,
}

impl GitTreeSource {
    /// Opens the repository at `repo_path` (bare or not) and reads `tree`.
    pub fn open(repo_path: &Path, tree: Oid) -> Result<Self, git2::Error> {
        let repo = Repository::open(repo_path)?;
        repo.find_tree(tree)?;
        Ok(GitTreeSource {
            inner: Mutex::new(Inner {
                repo,
                trees: HashMap::new(),
            }),
            repo_path: repo_path.to_path_buf(),
            tree,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        })
    }

    /// Opens the tree of `commit`.
    pub fn at_commit(repo_path: &Path, commit: Oid) -> Result<Self, git2::Error> {
        let tree = Repository::open(repo_path)?.find_commit(commit)?.tree_id();
        Self::open(repo_path, tree)
    }

    pub fn with_max_file_size(mut self, limit: u64) -> Self {
        self.max_file_size = limit;
        self
    }

    pub fn tree_id(&self) -> Oid {
        self.tree
    }

    pub fn repo_path(&self) -> &Path {
        &self.repo_path
    }

    fn with_repo<T>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, FileError>,
    ) -> Result<T, FileError> {
        // A panic elsewhere cannot corrupt a read-only handle: recover the guard.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner)
    }

    /// Walks `path` from the root tree, following symlinks that stay inside.
    /// `Ok(None)` when nothing is there.
    fn resolve(&self, repo: &mut Inner, path: &RepoPath) -> Result<Option<Resolved>, FileError> {
        let io = |e: git2::Error| FileError::Io {
            path: path.clone(),
            message: e.message().to_string(),
        };
        let mut pending: Vec<String> = path.components().map(str::to_string).collect();
        pending.reverse();
        let mut current_dir = RepoPath::root();
        let mut current = Resolved::Tree(self.tree);
        let mut hops = 0;
        while let Some(name) = pending.pop() {
            let tree_id = match current {
                Resolved::Tree(id) => id,
                Resolved::Submodule => return Err(FileError::Submodule(current_dir)),
                Resolved::Blob(_) => return Err(FileError::NotADirectory(current_dir)),
            };
            let items = repo.tree(tree_id).map_err(io)?;
            let Some(entry) = find(&items, &name) else {
                return Ok(None);
            };
            let entry_path = current_dir.join(&name).map_err(|e| FileError::Io {
                path: path.clone(),
                message: e.to_string(),
            })?;
            match entry.mode {
                MODE_SYMLINK => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(FileError::Io {
                            path: path.clone(),
                            message: "too many levels of symbolic links".into(),
                        });
                    }
                    let blob = repo.repo.find_blob(entry.id).map_err(io)?;
                    let target = String::from_utf8_lossy(blob.content()).into_owned();
                    let escape = || FileError::SymlinkEscape {
                        path: entry_path.clone(),
                        target: target.clone(),
                    };
                    let resolved = current_dir.join(&target).map_err(|_| escape())?;
                    // Restart from the root with the link's target plus what is left.
                    let mut parts: Vec<String> =
                        resolved.components().map(str::to_string).collect();
                    parts.reverse();
                    pending.extend(parts);
                    current_dir = RepoPath::root();
                    current = Resolved::Tree(self.tree);
                    continue;
                }
                MODE_SUBMODULE => current = Resolved::Submodule,
                _ => match entry.kind {
                    Some(ObjectType::Tree) => current = Resolved::Tree(entry.id),
                    Some(ObjectType::Blob) => current = Resolved::Blob(entry.id),
                    _ => current = Resolved::Submodule,
                },
            }
            current_dir = entry_path;
        }
        Ok(Some(current))
    }
}

impl FileSource for GitTreeSource {
    fn read(&self, path: &RepoPath) -> Result<Vec<u8>, FileError> {
        self.with_repo(|repo| {
            let io = |e: git2::Error| FileError::Io {
                path: path.clone(),
                message: e.message().to_string(),
            };
            match self.resolve(repo, path)? {
                None => Err(FileError::NotFound(path.clone())),
                Some(Resolved::Tree(_)) => Err(FileError::IsADirectory(path.clone())),
                Some(Resolved::Submodule) => Err(FileError::Submodule(path.clone())),
                Some(Resolved::Blob(id)) => {
                    // The header gives the size without inflating the object.
                    let (size, _) = repo.repo.odb().map_err(io)?.read_header(id).map_err(io)?;
                    let size = size as u64;
                    if size > self.max_file_size {
                        return Err(FileError::TooLarge {
                            path: path.clone(),
                            size,
                            limit: self.max_file_size,
                        });
                    }
                    Ok(repo.repo.find_blob(id).map_err(io)?.content().to_vec())
                }
            }
        })
    }

    fn kind(&self, path: &RepoPath) -> Result<Option<EntryKind>, FileError> {
        self.with_repo(|repo| {
            Ok(self.resolve(repo, path)?.map(|r| match r {
                Resolved::Blob(_) => EntryKind::File,
                Resolved::Tree(_) => EntryKind::Dir,
                Resolved::Submodule => EntryKind::Submodule,
            }))
        })
    }

    fn list(&self, dir: &RepoPath) -> Result<Vec<(String, EntryKind)>, FileError> {
        self.with_repo(|repo| {
            let io = |e: git2::Error| FileError::Io {
                path: dir.clone(),
                message: e.message().to_string(),
            };
            let items = match self.resolve(repo, dir)? {
                None => return Err(FileError::NotFound(dir.clone())),
                Some(Resolved::Tree(id)) => repo.tree(id).map_err(io)?,
                Some(Resolved::Submodule) => return Err(FileError::Submodule(dir.clone())),
                Some(Resolved::Blob(_)) => return Err(FileError::NotADirectory(dir.clone())),
            };
            let mut entries = Vec::with_capacity(items.len());
            for entry in items.iter() {
                let name = entry.name.as_str();
                let kind = match entry.mode {
                    MODE_SUBMODULE => EntryKind::Submodule,
                    MODE_SYMLINK => {
                        let Ok(child) = dir.join(name) else { continue };
                        // Links that escape or dangle are skipped here; reading them reports why.
                        match self.resolve(repo, &child) {
                            Ok(Some(Resolved::Blob(_))) => EntryKind::File,
                            Ok(Some(Resolved::Tree(_))) => EntryKind::Dir,
                            Ok(Some(Resolved::Submodule)) => EntryKind::Submodule,
                            Ok(None) | Err(_) => continue,
                        }
                    }
                    _ if entry.kind == Some(ObjectType::Tree) => EntryKind::Dir,
                    _ => EntryKind::File,
                };
                entries.push((name.to_string(), kind));
            }
            // Items are sorted by plain name (git's own order sorts directories as if
            // suffixed with '/'), which is the order the trait promises.
            Ok(entries)
        })
    }
}
