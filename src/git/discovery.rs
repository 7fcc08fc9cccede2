//! Finding the stacks in a repository snapshot: one per directory holding a
//! compose file, within the configured `paths` globs.

use std::collections::BTreeMap;

use glob::{MatchOptions, Pattern};

use crate::render::compose::yaml;
use crate::render::files::{EntryKind, FileError, FileSource, RepoPath};

/// Compose file names, in order of preference; the first present is the stack's main file.
pub const COMPOSE_FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Override file names, in order of preference; the first present is added after the main file.
pub const OVERRIDE_FILE_NAMES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
];

/// Deeper directories are not scanned; this also stops symlink loops.
const MAX_DEPTH: usize = 32;

/// One stack found in the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredStack {
    pub name: String,
    pub dir: RepoPath,
    /// The main compose file, then the override file if any.
    pub files: Vec<RepoPath>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("invalid paths glob {pattern:?}: {message}")]
    BadGlob { pattern: String, message: String },
    #[error("two stacks are named {name:?}: in {first} and in {second}")]
    DuplicateName {
        name: String,
        first: RepoPath,
        second: RepoPath,
    },
    #[error(transparent)]
    File(#[from] FileError),
}

impl DiscoveryError {
    pub fn label(&self) -> &'static str {
        match self {
            DiscoveryError::BadGlob { .. } => "bad_glob",
            DiscoveryError::DuplicateName { .. } => "duplicate_name",
            DiscoveryError::File(e) => e.label(),
        }
    }
}

/// Compiled `paths` globs; no globs means every directory.
#[derive(Clone, Debug)]
pub struct PathFilter {
    patterns: Vec<Pattern>,
}

impl PathFilter {
    pub fn new(globs: &[String]) -> Result<Self, DiscoveryError> {
        let patterns = globs
            .iter()
            .map(|g| {
                let trimmed = g.trim().trim_start_matches("./").trim_end_matches('/');
                let normal = if trimmed == "." { "" } else { trimmed };
                Pattern::new(normal).map_err(|e| DiscoveryError::BadGlob {
                    pattern: g.clone(),
                    message: e.msg.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(PathFilter { patterns })
    }

    pub fn matches(&self, dir: &RepoPath) -> bool {
        const OPTIONS: MatchOptions = MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|p| p.matches_with(dir.as_str(), OPTIONS))
    }
}

/// Finds the stacks of a snapshot. `root_name` names a stack at the repository root.
pub fn discover(
    source: &dyn FileSource,
    paths: &[String],
    root_name: &str,
) -> Result<Vec<DiscoveredStack>, DiscoveryError> {
    let filter = PathFilter::new(paths)?;
    let mut stacks = Vec::new();
    let mut queue = vec![(RepoPath::root(), 0usize)];
    while let Some((dir, depth)) = queue.pop() {
        let entries = source.list(&dir)?;
        if filter.matches(&dir)
            && let Some(stack) = stack_in(source, &dir, &entries, root_name)?
        {
            stacks.push(stack);
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        for (name, kind) in entries.iter().rev() {
            if *kind == EntryKind::Dir && name != ".git" {
                let Ok(child) = dir.join(name) else { continue };
                queue.push((child, depth + 1));
            }
        }
    }
    stacks.sort_by(|a, b| a.dir.cmp(&b.dir));
    // Compared as the Stack names they become: `my_app` and `my-app` would
    // otherwise overwrite each other's Stack on every sync.
    let mut seen: BTreeMap<String, &RepoPath> = BTreeMap::new();
    for stack in &stacks {
        let name = crate::render::sanitise_name(&stack.name);
        if let Some(first) = seen.insert(name.clone(), &stack.dir) {
            return Err(DiscoveryError::DuplicateName {
                name,
                first: first.clone(),
                second: stack.dir.clone(),
            });
        }
    }
    Ok(stacks)
}

/// The stack in `dir` alone, if it holds a compose file: what [`discover`]
/// finds there, without scanning the rest of the snapshot.
pub fn stack_at(
    source: &dyn FileSource,
    dir: &RepoPath,
    root_name: &str,
) -> Result<Option<DiscoveredStack>, DiscoveryError> {
    let entries = source.list(dir)?;
    stack_in(source, dir, &entries, root_name)
}

fn stack_in(
    source: &dyn FileSource,
    dir: &RepoPath,
    entries: &[(String, EntryKind)],
    root_name: &str,
) -> Result<Option<DiscoveredStack>, DiscoveryError> {
    let is_file = |name: &str| {
        entries
            .iter()
            .any(|(n, k)| n == name && *k == EntryKind::File)
    };
    let Some(main) = COMPOSE_FILE_NAMES.into_iter().find(|n| is_file(n)) else {
        return Ok(None);
    };
    let join = |name: &str| {
        dir.join(name).map_err(|e| FileError::Io {
            path: dir.clone(),
            message: e.to_string(),
        })
    };
    let main = join(main)?;
    let mut files = vec![main.clone()];
    if let Some(over) = OVERRIDE_FILE_NAMES.into_iter().find(|n| is_file(n)) {
        files.push(join(over)?);
    }
    // A directory name is normalised as Docker Compose does; a declared `name:` is kept.
    let name = declared_name(source, &main, dir).unwrap_or_else(|| {
        crate::render::project_name(if dir.is_root() {
            root_name
        } else {
            dir.file_name()
        })
    });
    Ok(Some(DiscoveredStack {
        name,
        dir: dir.clone(),
        files,
    }))
}

/// The compose `name:` when it is a plain string without interpolation. A file
/// that cannot be read or parsed here gives no name; loading it reports why.
fn declared_name(source: &dyn FileSource, file: &RepoPath, dir: &RepoPath) -> Option<String> {
    let text = source.read(file).ok()?;
    // Most files have no `name:`; skip the YAML parse for those.
    if !text.windows(4).any(|w| w == b"name") {
        return None;
    }
    let node = yaml::parse(&text, file, dir).ok()?;
    let name = node.get("name")?.as_str()?.trim();
    (!name.is_empty() && !name.contains('$')).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::files::DirSource;

    fn write(root: &std::path::Path, path: &str, text: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn finds_stacks_with_names_files_and_globs() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        write(r, "compose.yml", "services: {}\n");
        write(r, "stacks/web/docker-compose.yml", "services: {}\n");
        write(
            r,
            "stacks/web/compose.yaml",
            "name: website\nservices: {}\n",
        );
        write(r, "stacks/web/compose.override.yml", "services: {}\n");
        write(r, "stacks/db/docker-compose.yaml", "name: ${X}\n");
        write(r, "stacks/deep/inner/compose.yaml", "name: inner\n");
        write(r, "other/compose.yaml", "services: {}\n");
        write(r, "README.md", "x");
        let src = DirSource::new(r).unwrap();

        let all = discover(&src, &[], "repo").unwrap();
        let got: Vec<(String, String, Vec<String>)> = all
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.dir.to_string(),
                    s.files.iter().map(|f| f.to_string()).collect(),
                )
            })
            .collect();
        let expected: Vec<(String, String, Vec<String>)> = vec![
            ("repo".into(), ".".into(), vec!["compose.yml".into()]),
            (
                "other".into(),
                "other".into(),
                vec!["other/compose.yaml".into()],
            ),
            (
                "db".into(),
                "stacks/db".into(),
                vec!["stacks/db/docker-compose.yaml".into()],
            ),
            (
                "inner".into(),
                "stacks/deep/inner".into(),
                vec!["stacks/deep/inner/compose.yaml".into()],
            ),
            (
                "website".into(),
                "stacks/web".into(),
                vec![
                    "stacks/web/compose.yaml".into(),
                    "stacks/web/compose.override.yml".into(),
                ],
            ),
        ];
        pretty_assertions::assert_eq!(got, expected);

        let names = |paths: &[&str]| -> Vec<String> {
            let paths: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
            discover(&src, &paths, "repo")
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(names(&["stacks/*"]), vec!["db", "website"]);
        assert_eq!(names(&["stacks/**"]), vec!["db", "inner", "website"]);
        assert_eq!(names(&["./other/", "."]), vec!["repo", "other"]);
        assert!(matches!(
            discover(&src, &["[".to_string()], "repo"),
            Err(DiscoveryError::BadGlob { .. })
        ));
    }

    #[test]
    fn directory_names_are_normalised_as_docker_compose_does() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "stacks/My_App@v2.1/compose.yaml",
            "services: {}\n",
        );
        write(
            tmp.path(),
            "stacks/_Shop.Front-/compose.yaml",
            "services: {}\n",
        );
        let src = DirSource::new(tmp.path()).unwrap();
        let names: Vec<String> = discover(&src, &[], "repo")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        // `docker compose config` names these projects `my_appv21` and `shopfront-`.
        assert_eq!(names, ["my_appv21", "shopfront"]);
        assert_eq!(crate::render::sanitise_name(&names[0]), "my-appv21");
    }

    #[test]
    fn directories_that_normalise_to_one_name_are_an_error_naming_both() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "a/My.App/compose.yaml", "services: {}\n");
        write(tmp.path(), "b/my-app/compose.yaml", "services: {}\n");
        write(tmp.path(), "c/myapp/compose.yaml", "services: {}\n");
        let src = DirSource::new(tmp.path()).unwrap();
        let err = discover(&src, &[], "repo").unwrap_err();
        assert_eq!(
            err.to_string(),
            "two stacks are named \"myapp\": in a/My.App and in c/myapp"
        );
    }

    #[test]
    fn duplicate_names_are_an_error_naming_both_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "a/app/compose.yaml", "services: {}\n");
        write(tmp.path(), "b/compose.yaml", "name: app\n");
        let src = DirSource::new(tmp.path()).unwrap();
        let err = discover(&src, &[], "repo").unwrap_err();
        assert_eq!(
            err.to_string(),
            "two stacks are named \"app\": in a/app and in b"
        );
        assert_eq!(err.label(), "duplicate_name");
    }
}
