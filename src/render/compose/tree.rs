//! Stage one of loading: compose files → one merged, interpolated node tree.
//!
//! Reads the compose files (default discovery or an explicit list) and the `.env`
//! file; then, for each compose file: parses it, interpolates every value, adds
//! its `include`d projects ([`super::include`]) and resolves its `extends`
//! ([`super::extends`]); then merges the files in order ([`super::merge`],
//! honouring `!reset` and `!override`). That per-file order is Docker Compose's.
//! Variables come only from env files and [`LoadOptions::variables`], never from
//! the process environment.

use std::collections::BTreeMap;

use super::LoadOptions;
use super::error::{At, LoadError};
use super::node::{Node, Value};
use super::{dotenv, extends, interpolate, merge, yaml};
use crate::render::files::{EntryKind, FileError, FileSource, RepoPath};

/// The merged project before normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectTree {
    /// The top-level mapping (`name`, `services`, `volumes`, `configs`, `secrets`,
    /// `networks`, `x-*`), interpolated, with overrides merged, `include`d files
    /// merged in and every service's `extends` resolved and removed. Relative paths
    /// are still relative; each node's `mark.base` says against what.
    pub root: Node,
    /// The interpolation variables (`.env` overridden by configured variables); the
    /// source for `configs.*.environment` and `secrets.*.environment`.
    pub variables: BTreeMap<String, String>,
    /// Every file read to build the tree, in reading order.
    pub files: Vec<RepoPath>,
    /// Things that load but look wrong, e.g. unset variables, once each.
    pub warnings: Vec<String>,
}

/// Default compose file names, in order of preference.
const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// The override files that go with a default compose file, in order of preference.
fn override_files(main: &str) -> [&'static str; 2] {
    if main.starts_with("docker-compose.") {
        [
            "docker-compose.override.yaml",
            "docker-compose.override.yml",
        ]
    } else {
        ["compose.override.yaml", "compose.override.yml"]
    }
}

/// How deep `include`s may nest and `extends` chains may go.
pub(super) const MAX_DEPTH: usize = 16;

/// Reads and merges the project's compose files.
pub fn read_tree(source: &dyn FileSource, options: &LoadOptions) -> Result<ProjectTree, LoadError> {
    let mut loader = Loader {
        source,
        files: Vec::new(),
        warnings: Vec::new(),
        include_stack: Vec::new(),
    };
    let files = loader.compose_files(options)?;
    let env_files = if options.env_files.is_empty() {
        let default = join(&options.dir, ".env", || At::file(&options.dir))?;
        match loader.kind(&default, || At::file(&default))? {
            Some(EntryKind::File) => vec![default],
            _ => Vec::new(),
        }
    } else {
        options.env_files.clone()
    };
    let from_files = loader.read_env_files(
        &env_files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), option_at(&format!("env_files[{i}]"))))
            .collect::<Vec<_>>(),
        &options.variables,
    )?;
    let mut variables = from_files;
    variables.extend(options.variables.clone());

    loader.include_stack = files.iter().map(|(f, _)| f.clone()).collect();
    let mut root = loader.load_project(&files, &options.dir, &variables, 0)?;
    merge::strip_tags(&mut root);
    Ok(ProjectTree {
        root,
        variables,
        files: loader.files,
        warnings: loader.warnings,
    })
}

/// Reading state shared by the whole load.
pub(super) struct Loader<'a> {
    pub(super) source: &'a dyn FileSource,
    /// Every file read, in order, once each.
    pub(super) files: Vec<RepoPath>,
    pub(super) warnings: Vec<String>,
    /// The compose files of the projects being loaded, outermost first, for
    /// `include` cycle detection.
    pub(super) include_stack: Vec<RepoPath>,
}

impl Loader<'_> {
    /// The compose files to merge, each with the place to blame when it cannot be
    /// read: the explicit list or the default discovery.
    fn compose_files(&mut self, options: &LoadOptions) -> Result<Vec<(RepoPath, At)>, LoadError> {
        if !options.files.is_empty() {
            return Ok(options
                .files
                .iter()
                .enumerate()
                .map(|(i, f)| (f.clone(), option_at(&format!("files[{i}]"))))
                .collect());
        }
        let at = || At::file(&options.dir);
        for name in DEFAULT_FILES {
            let main = join(&options.dir, name, at)?;
            if self.kind(&main, at)? != Some(EntryKind::File) {
                continue;
            }
            let mut files = vec![(main.clone(), At::file(&main))];
            for name in override_files(name) {
                let path = join(&options.dir, name, at)?;
                if self.kind(&path, at)? == Some(EntryKind::File) {
                    files.push((path.clone(), At::file(&path)));
                    break;
                }
            }
            return Ok(files);
        }
        Err(LoadError::NoComposeFile {
            dir: options.dir.clone(),
        })
    }

    pub(super) fn kind(
        &self,
        path: &RepoPath,
        at: impl Fn() -> At,
    ) -> Result<Option<EntryKind>, LoadError> {
        self.source
            .kind(path)
            .map_err(|source| LoadError::File { at: at(), source })
    }

    /// Reads a text file and records it.
    pub(super) fn read_text(&mut self, path: &RepoPath, at: &At) -> Result<String, LoadError> {
        let bytes = self.source.read(path).map_err(|source| LoadError::File {
            at: at.clone(),
            source,
        })?;
        if !self.files.contains(path) {
            self.files.push(path.clone());
        }
        String::from_utf8(bytes).map_err(|_| LoadError::File {
            at: at.clone(),
            source: FileError::Io {
                path: path.clone(),
                message: "not UTF-8 text".into(),
            },
        })
    }

    /// Reads env files in order; later files and keys win. `outer` resolves
    /// references the files do not define themselves, and bare `KEY` lines.
    pub(super) fn read_env_files(
        &mut self,
        files: &[(RepoPath, At)],
        outer: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, LoadError> {
        let mut variables = BTreeMap::new();
        for (file, at) in files {
            let text = self.read_text(file, at)?;
            let lookup = |name: &str| variables.get(name).or_else(|| outer.get(name)).cloned();
            let entries = dotenv::parse(&text, file, &lookup)?;
            for (key, value) in entries {
                if let Some(value) = value.or_else(|| outer.get(&key).cloned()) {
                    variables.insert(key, value);
                }
            }
        }
        Ok(variables)
    }

    /// Reads one compose file, parses it and interpolates its values. Relative
    /// paths in it resolve against `base`.
    pub(super) fn load_file(
        &mut self,
        file: &RepoPath,
        base: &RepoPath,
        at: &At,
        variables: &BTreeMap<String, String>,
    ) -> Result<Node, LoadError> {
        let text = self.read_text(file, at)?;
        let mut node = yaml::parse(text.as_bytes(), file, base)?;
        if node.as_map().is_none() {
            return Err(LoadError::Schema {
                at: At::new(&node.mark, ""),
                message: format!(
                    "the top level of a compose file must be a mapping, got a {}",
                    node.type_name()
                ),
            });
        }
        interpolate::interpolate_tree(&mut node, "", variables, &mut self.warnings)?;
        Ok(node)
    }

    /// Loads a project: resolves each of `files` on its own (its `include`s, then
    /// its `extends`) and merges them in order. Relative paths in the files
    /// resolve against `base`.
    ///
    /// Docker Compose resolves `extends` per file, before merging: a service of an
    /// override file cannot extend a service of the base file, and an override of
    /// the extended service does not reach the extending one.
    pub(super) fn load_project(
        &mut self,
        files: &[(RepoPath, At)],
        base: &RepoPath,
        variables: &BTreeMap<String, String>,
        depth: usize,
    ) -> Result<Node, LoadError> {
        let mut root: Option<Node> = None;
        for (file, at) in files {
            let mut node = self.load_file(file, base, at, variables)?;
            if let Value::Map(entries) = &mut node.value
                && let Some(i) = entries.iter().position(|(k, _)| k == "include")
            {
                let (_, includes) = entries.remove(i);
                self.apply_includes(&mut node, &includes, variables, depth)?;
            }
            extends::resolve_all(self, &mut node, variables)?;
            root = Some(match root {
                Some(merged) => merge::merge(merged, node, &mut Vec::new()),
                None => node,
            });
        }
        root.ok_or_else(|| LoadError::NoComposeFile { dir: base.clone() })
    }
}

/// A place in [`LoadOptions`] rather than in a file.
fn option_at(field: &str) -> At {
    At {
        mark: None,
        path: field.to_string(),
    }
}

/// `dir.join(relative)`, as a [`LoadError::Path`] about `at`. Remote references
/// (`git@…`, `https://…`, `oci://…`), which compose can fetch for `include` and
/// `extends`, are refused: stackd only reads the repository.
pub(super) fn join(
    dir: &RepoPath,
    relative: &str,
    at: impl Fn() -> At,
) -> Result<RepoPath, LoadError> {
    if relative.contains("://") || relative.starts_with("git@") || relative.starts_with("oci:") {
        return Err(LoadError::Unsupported {
            at: at(),
            message: format!(
                "remote compose file {relative:?} is not supported: copy it into the repository"
            ),
        });
    }
    dir.join(relative)
        .map_err(|source| LoadError::Path { at: at(), source })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::render::files::FileError;
    use pretty_assertions::assert_eq;
    use std::collections::BTreeMap;

    /// An in-memory [`FileSource`].
    pub(crate) struct MemSource(pub BTreeMap<String, String>);

    impl MemSource {
        pub(crate) fn new(files: &[(&str, &str)]) -> Self {
            MemSource(
                files
                    .iter()
                    .map(|(p, t)| (p.to_string(), t.to_string()))
                    .collect(),
            )
        }
    }

    impl FileSource for MemSource {
        fn read(&self, path: &RepoPath) -> Result<Vec<u8>, FileError> {
            self.0
                .get(path.as_str())
                .map(|t| t.clone().into_bytes())
                .ok_or_else(|| FileError::NotFound(path.clone()))
        }

        fn kind(&self, path: &RepoPath) -> Result<Option<EntryKind>, FileError> {
            if self.0.contains_key(path.as_str()) {
                return Ok(Some(EntryKind::File));
            }
            let prefix = format!("{}/", path.as_str());
            Ok(self
                .0
                .keys()
                .any(|k| path.is_root() || k.starts_with(&prefix))
                .then_some(EntryKind::Dir))
        }

        fn list(&self, _dir: &RepoPath) -> Result<Vec<(String, EntryKind)>, FileError> {
            Ok(Vec::new())
        }
    }

    pub(crate) fn options(dir: &str) -> LoadOptions {
        LoadOptions {
            dir: RepoPath::new(dir).unwrap(),
            ..LoadOptions::default()
        }
    }

    pub(crate) fn show(node: &Node) -> String {
        node.compact()
    }

    fn paths(files: &[RepoPath]) -> Vec<&str> {
        files.iter().map(RepoPath::as_str).collect()
    }

    #[test]
    fn discovers_compose_yaml_and_its_override() {
        let src = MemSource::new(&[
            (
                "app/compose.yaml",
                "services: {web: {image: a, ports: ['80:80']}}",
            ),
            ("app/compose.yml", "services: {other: {image: x}}"),
            (
                "app/compose.override.yml",
                "services: {web: {image: b, ports: ['81:81']}}",
            ),
            (
                "app/docker-compose.override.yaml",
                "services: {web: {image: c}}",
            ),
        ]);
        let tree = read_tree(&src, &options("app")).unwrap();
        assert_eq!(
            show(&tree.root),
            "{services: {web: {image: b, ports: [80:80, 81:81]}}}"
        );
        assert_eq!(
            paths(&tree.files),
            vec!["app/compose.yaml", "app/compose.override.yml"]
        );
    }

    #[test]
    fn discovers_docker_compose_names_with_their_own_override() {
        let src = MemSource::new(&[
            ("docker-compose.yml", "services: {web: {image: a}}"),
            ("compose.override.yaml", "services: {web: {image: wrong}}"),
            ("docker-compose.override.yml", "services: {web: {image: b}}"),
        ]);
        let tree = read_tree(&src, &options("")).unwrap();
        assert_eq!(show(&tree.root), "{services: {web: {image: b}}}");
        let err = read_tree(&MemSource::new(&[("x.yaml", "")]), &options("")).unwrap_err();
        assert_eq!(err.label(), "no_compose_file");
    }

    #[test]
    fn explicit_files_merge_in_order_with_paths_against_the_project_dir() {
        let src = MemSource::new(&[
            (
                "app/base.yaml",
                "services: {web: {image: a, env_file: a.env}}",
            ),
            (
                "app/prod/over.yaml",
                "services: {web: {image: b, env_file: b.env}}",
            ),
        ]);
        let mut opts = options("app");
        opts.files = vec![
            RepoPath::new("app/base.yaml").unwrap(),
            RepoPath::new("app/prod/over.yaml").unwrap(),
        ];
        let tree = read_tree(&src, &opts).unwrap();
        let web = tree.root.get("services").unwrap().get("web").unwrap();
        assert_eq!(show(web), "{image: b, env_file: [a.env, b.env]}");
        let b_env = &web.get("env_file").unwrap().as_seq().unwrap()[1];
        assert_eq!(b_env.mark.file.as_str(), "app/prod/over.yaml");
        assert_eq!(b_env.mark.base.as_str(), "app");

        opts.files.push(RepoPath::new("app/missing.yaml").unwrap());
        let err = read_tree(&src, &opts).unwrap_err();
        assert_eq!(
            err.to_string(),
            "files[2]: app/missing.yaml: no such file or directory"
        );
    }

    #[test]
    fn variables_from_dotenv_and_options_never_the_process() {
        let src = MemSource::new(&[
            (
                "app/compose.yaml",
                "name: ${NAME}\nservices:\n  web:\n    image: ${IMAGE}:${TAG:-latest}\n    environment:\n      HOME: ${HOME}\n      PATH: $PATH\n",
            ),
            (
                "app/.env",
                "IMAGE=nginx\nTAG=1.25\nNAME=${PREFIX}-app\nFROM_CONFIG\n",
            ),
        ]);
        let mut opts = options("app");
        opts.variables.insert("TAG".into(), "1.27".into());
        opts.variables.insert("PREFIX".into(), "team".into());
        opts.variables.insert("FROM_CONFIG".into(), "yes".into());
        let tree = read_tree(&src, &opts).unwrap();
        assert_eq!(
            show(&tree.root),
            "{name: team-app, services: {web: {image: nginx:1.27, environment: {HOME: , PATH: }}}}"
        );
        assert_eq!(
            tree.variables.into_iter().collect::<Vec<_>>(),
            [
                ("FROM_CONFIG", "yes"),
                ("IMAGE", "nginx"),
                ("NAME", "team-app"),
                ("PREFIX", "team"),
                ("TAG", "1.27"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            tree.warnings,
            vec![
                "variable \"HOME\" is not set, using an empty string".to_string(),
                "variable \"PATH\" is not set, using an empty string".to_string(),
            ]
        );
        assert_eq!(paths(&tree.files), vec!["app/.env", "app/compose.yaml"]);
    }

    #[test]
    fn explicit_env_files_replace_dotenv() {
        let src = MemSource::new(&[
            ("compose.yaml", "services: {web: {image: '${IMAGE}'}}"),
            (".env", "IMAGE=from-dotenv"),
            ("env/a.env", "IMAGE=a\nTAG=1"),
            ("env/b.env", "IMAGE=${IMAGE}-b:$TAG"),
        ]);
        let mut opts = options("");
        opts.env_files = vec![
            RepoPath::new("env/a.env").unwrap(),
            RepoPath::new("env/b.env").unwrap(),
        ];
        let tree = read_tree(&src, &opts).unwrap();
        assert_eq!(show(&tree.root), "{services: {web: {image: a-b:1}}}");
        opts.env_files
            .push(RepoPath::new("env/missing.env").unwrap());
        assert_eq!(read_tree(&src, &opts).unwrap_err().label(), "file");
    }

    #[test]
    fn interpolation_errors_name_the_field() {
        let src = MemSource::new(&[(
            "compose.yaml",
            "services:\n  web:\n    image: x\n    environment:\n      FOO: ${FOO:?FOO is required}\n",
        )]);
        let err = read_tree(&src, &options("")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "compose.yaml:5:12: services.web.environment.FOO: required variable FOO is missing a value: FOO is required"
        );
        let src = MemSource::new(&[(
            "compose.yaml",
            "services:\n  web:\n    ports: [80, '${P']\n",
        )]);
        let err = read_tree(&src, &options("")).unwrap_err();
        assert_eq!(err.label(), "interpolation");
        assert!(err.to_string().contains("services.web.ports[1]"), "{err}");
    }

    #[test]
    fn each_file_is_interpolated_before_merging() {
        // `$$` in the base must not be interpolated a second time by the merge.
        let src = MemSource::new(&[
            (
                "compose.yaml",
                "services: {web: {command: 'echo $$HOME', image: a}}",
            ),
            ("compose.override.yaml", "services: {web: {image: b}}"),
        ]);
        let tree = read_tree(&src, &options("")).unwrap();
        assert_eq!(
            show(&tree.root),
            "{services: {web: {command: echo $HOME, image: b}}}"
        );
    }

    /// Loads a file of compose-go's loader test data.
    fn compose_go(file: &str) -> Result<ProjectTree, LoadError> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus");
        let source = crate::render::files::DirSource::new(root).unwrap();
        let path = RepoPath::new(&format!("compose-go/loader/testdata/{file}")).unwrap();
        let options = LoadOptions {
            dir: path.parent(),
            files: vec![path],
            ..LoadOptions::default()
        };
        read_tree(&source, &options)
    }

    fn service<'t>(tree: &'t ProjectTree, name: &str) -> &'t Node {
        tree.root.get("services").unwrap().get(name).unwrap()
    }

    const TESTDATA: &str = "compose-go/loader/testdata";

    #[test]
    fn compose_go_extends_fixtures() {
        let tree = compose_go("extends/base.yaml").unwrap();
        assert_eq!(show(service(&tree, "another")), "{image: base}");
        let build = service(&tree, "with-build").get("build").unwrap();
        assert_eq!(show(build), ".");
        assert_eq!(build.mark.base.as_str(), format!("{TESTDATA}/extends"));
        assert_eq!(show(service(&tree, "nil")), "~");

        let tree = compose_go("extends/reset.yaml").unwrap();
        assert_eq!(show(service(&tree, "base")), "{image: alpine:latest}");

        let tree = compose_go("extends/withdir/compose.yaml").unwrap();
        assert_eq!(show(service(&tree, "test")), "{image: hello-world}");

        let tree = compose_go("compose-test-extends.yaml").unwrap();
        let importer = service(&tree, "importer");
        assert_eq!(
            show(importer),
            "{image: nginx, container_name: imported, env_file: [./extra.env], volumes: [/opt/data:/var/lib/mysql]}"
        );
        let env_file = &importer.get("env_file").unwrap().as_seq().unwrap()[0];
        assert_eq!(env_file.mark.base.as_str(), format!("{TESTDATA}/subdir"));

        let err = compose_go("remote/nested/compose.yaml").unwrap_err();
        assert_eq!(err.label(), "file");
    }

    #[test]
    fn compose_go_include_fixtures() {
        let tree = compose_go("compose-include.yaml").unwrap();
        assert_eq!(
            show(tree.root.get("services").unwrap()),
            "{bar: {image: bar, environment: [FOO=BAR]}, imported: {image: nginx, container_name: imported, env_file: [./extra.env], volumes: [/opt/data:/var/lib/mysql]}}"
        );

        let tree = compose_go("include/project-directory.yaml").unwrap();
        let svc = service(&tree, "service");
        assert_eq!(
            svc.get("env_file").unwrap().mark.base.as_str(),
            format!("{TESTDATA}/subdir")
        );
        assert_eq!(
            tree.files.last().map(RepoPath::as_str),
            Some("compose-go/loader/testdata/include/dir/compose.yaml")
        );

        let tree = compose_go("combined/compose.yaml").unwrap();
        let build = service(&tree, "service").get("build").unwrap();
        assert_eq!(show(build), ".");
        assert_eq!(build.mark.base.as_str(), format!("{TESTDATA}/combined/dir"));

        let err = compose_go("compose-include-cycle.yaml").unwrap_err();
        assert_eq!(err.label(), "cycle");
    }

    #[test]
    fn remote_references_are_unsupported() {
        let src = MemSource::new(&[(
            "compose.yaml",
            "include:\n  - oci://docker.io/x/y:latest\nservices:\n  web:\n    extends: {file: 'https://example.com/c.yaml', service: a}\n",
        )]);
        let err = read_tree(&src, &options("")).unwrap_err();
        assert_eq!(err.label(), "unsupported");
        assert_eq!(
            err.to_string(),
            "compose.yaml:2:5: include[0]: remote compose file \"oci://docker.io/x/y:latest\" is not supported: copy it into the repository"
        );
    }

    #[test]
    fn extends_resolves_per_file_before_merging() {
        let src = MemSource::new(&[
            (
                "compose.yaml",
                "services:\n  base:\n    image: b\n    ports: ['80:80']\n  web:\n    extends: base\n",
            ),
            (
                "compose.override.yaml",
                "services:\n  base:\n    image: b2\n  web:\n    ports: !reset []\n",
            ),
        ]);
        let tree = read_tree(&src, &options("")).unwrap();
        assert_eq!(
            show(tree.root.get("services").unwrap()),
            "{base: {image: b2, ports: [80:80]}, web: {image: b}}"
        );
        let src = MemSource::new(&[
            ("compose.yaml", "services:\n  base:\n    image: b\n"),
            (
                "compose.override.yaml",
                "services:\n  web:\n    extends: base\n",
            ),
        ]);
        let err = read_tree(&src, &options("")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "compose.override.yaml:3:14: services.web.extends: extends a service \"base\" that is not defined in compose.override.yaml"
        );
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        let src = MemSource::new(&[("compose.yaml", "- a\n- b\n")]);
        let err = read_tree(&src, &options("")).unwrap_err();
        assert_eq!(err.label(), "schema");
    }
}

/// Loads every YAML file of the shared corpus (each with its own directory as the
/// project directory) and prints the outcome counts. Run with
/// `cargo test --lib corpus_read_tree -- --ignored --nocapture`.
#[cfg(test)]
mod corpus {
    use super::*;
    use crate::render::files::DirSource;
    use std::path::Path;

    fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                yaml_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                out.push(path);
            }
        }
    }

    #[test]
    #[ignore = "walks the whole corpus; run on demand"]
    fn corpus_read_tree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
        let root = root.canonicalize().expect("corpus present");
        let source = DirSource::new(&root).expect("corpus readable");
        let mut files = Vec::new();
        yaml_files(&root, &mut files);
        files.sort();
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut panics = Vec::new();
        for file in &files {
            let relative = file.strip_prefix(&root).expect("inside the corpus");
            let path = RepoPath::new(&relative.to_string_lossy()).expect("relative path");
            let options = LoadOptions {
                dir: path.parent(),
                files: vec![path.clone()],
                ..LoadOptions::default()
            };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                read_tree(&source, &options)
            }));
            match outcome {
                Ok(Ok(_)) => *counts.entry("ok").or_default() += 1,
                Ok(Err(e)) => {
                    println!("{:<14} {e}", e.label());
                    *counts.entry(e.label()).or_default() += 1;
                }
                Err(_) => panics.push(path),
            }
        }
        println!("{} files: {counts:?}", files.len());

        // Default discovery (with override files) in every directory that has one.
        let mut dirs: Vec<RepoPath> = files
            .iter()
            .filter(|f| {
                f.file_name().is_some_and(|n| {
                    DEFAULT_FILES
                        .iter()
                        .any(|name| n.to_string_lossy() == *name)
                })
            })
            .filter_map(|f| f.parent()?.strip_prefix(&root).ok())
            .filter_map(|d| RepoPath::new(&d.to_string_lossy()).ok())
            .collect();
        dirs.dedup();
        let mut dir_counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for dir in &dirs {
            let options = LoadOptions {
                dir: dir.clone(),
                ..LoadOptions::default()
            };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                read_tree(&source, &options)
            }));
            match outcome {
                Ok(Ok(tree)) if tree.files.iter().any(|f| f.as_str().contains(".override.")) => {
                    *dir_counts.entry("ok_with_override").or_default() += 1
                }
                Ok(Ok(_)) => *dir_counts.entry("ok").or_default() += 1,
                Ok(Err(e)) => *dir_counts.entry(e.label()).or_default() += 1,
                Err(_) => panics.push(dir.clone()),
            }
        }
        println!("{} directories: {dir_counts:?}", dirs.len());
        assert!(panics.is_empty(), "panicked on {panics:?}");
    }
}
