//! `include`: other compose projects whose resources join this one.
//!
//! Each entry (`- path.yaml` or `{path, env_file, project_directory}`) is loaded
//! as its own project: its files merge, its relative paths resolve against its
//! project directory (by default the first file's directory), and its variables
//! are its own `.env` (or `env_file`) overridden by this project's variables, as
//! Docker Compose does (checked against `docker compose config`). Its services, networks, volumes, configs and secrets are then added to
//! this project. A name defined on both sides is an error unless both
//! definitions are identical, which Docker Compose accepts too (a network both
//! declare, say); then the including project's definition is kept.

use std::collections::BTreeMap;

use super::error::{At, LoadError};
use super::node::{Node, Value};
use super::tree::{Loader, MAX_DEPTH, join};
use crate::render::files::{EntryKind, RepoPath};

/// The top-level sections an included project contributes.
const RESOURCES: [&str; 6] = [
    "services", "networks", "volumes", "configs", "secrets", "models",
];

/// One `include` entry, its paths resolved.
struct Include {
    files: Vec<(RepoPath, At)>,
    env_files: Vec<(RepoPath, At)>,
    project_directory: Option<RepoPath>,
    at: At,
}

impl Loader<'_> {
    /// Loads every entry of `includes` and adds its resources to `root`.
    pub(super) fn apply_includes(
        &mut self,
        root: &mut Node,
        includes: &Node,
        variables: &BTreeMap<String, String>,
        depth: usize,
    ) -> Result<(), LoadError> {
        let Some(items) = includes.as_seq() else {
            return Err(LoadError::Schema {
                at: At::new(&includes.mark, "include"),
                message: format!("expected a sequence, got a {}", includes.type_name()),
            });
        };
        for (i, item) in items.iter().enumerate() {
            let include = parse_include(item, &format!("include[{i}]"))?;
            let included = self.load_include(&include, variables, depth)?;
            add_resources(root, included)?;
        }
        Ok(())
    }

    fn load_include(
        &mut self,
        include: &Include,
        variables: &BTreeMap<String, String>,
        depth: usize,
    ) -> Result<Node, LoadError> {
        let Some((first, _)) = include.files.first() else {
            return Err(LoadError::Schema {
                at: include.at.clone(),
                message: "`path` names no file".into(),
            });
        };
        if let Some(seen) = self
            .include_stack
            .iter()
            .position(|f| include.files.iter().any(|(g, _)| g == f))
        {
            let mut chain: Vec<String> = self.include_stack[seen..]
                .iter()
                .map(|f| f.to_string())
                .collect();
            chain.push(first.to_string());
            return Err(LoadError::Cycle {
                at: include.at.clone(),
                message: format!("include cycle: {}", chain.join(" -> ")),
            });
        }
        if depth >= MAX_DEPTH {
            return Err(LoadError::Cycle {
                at: include.at.clone(),
                message: format!("includes nested more than {MAX_DEPTH} deep"),
            });
        }
        let project_dir = include
            .project_directory
            .clone()
            .unwrap_or_else(|| first.parent());

        let env_files = if include.env_files.is_empty() {
            let default = join(&project_dir, ".env", || include.at.clone())?;
            match self.kind(&default, || include.at.clone())? {
                Some(EntryKind::File) => vec![(default, include.at.clone())],
                _ => Vec::new(),
            }
        } else {
            include.env_files.clone()
        };
        let mut own = self.read_env_files(&env_files, variables)?;
        own.extend(variables.iter().map(|(k, v)| (k.clone(), v.clone())));

        let pushed = include.files.len();
        self.include_stack
            .extend(include.files.iter().map(|(f, _)| f.clone()));
        let loaded = self.load_project(&include.files, &project_dir, &own, depth + 1);
        self.include_stack
            .truncate(self.include_stack.len().saturating_sub(pushed));
        loaded
    }
}

/// Reads one entry: a path string, or `{path, env_file, project_directory}`.
fn parse_include(item: &Node, field: &str) -> Result<Include, LoadError> {
    let base = item.mark.base.as_ref();
    let at = At::new(&item.mark, field);
    if let Some(path) = item.as_str() {
        return Ok(Include {
            files: vec![(join(base, path, || at.clone())?, at.clone())],
            env_files: Vec::new(),
            project_directory: None,
            at,
        });
    }
    let Some(entries) = item.as_map() else {
        return Err(LoadError::Schema {
            at,
            message: format!(
                "expected a path or a mapping with `path`, got a {}",
                item.type_name()
            ),
        });
    };
    let mut include = Include {
        files: Vec::new(),
        env_files: Vec::new(),
        project_directory: None,
        at: at.clone(),
    };
    for (key, value) in entries {
        let key_field = format!("{field}.{key}");
        let key_at = At::new(&value.mark, key_field.clone());
        match key.as_str() {
            "path" => {
                for (path, path_at) in strings(value, &key_field)? {
                    let file = join(base, &path, || path_at.clone())?;
                    include.files.push((file, path_at));
                }
            }
            "env_file" => {
                for (path, path_at) in strings(value, &key_field)? {
                    let file = join(base, &path, || path_at.clone())?;
                    include.env_files.push((file, path_at));
                }
            }
            "project_directory" => {
                let Some(dir) = value.as_str() else {
                    return Err(LoadError::Schema {
                        at: key_at,
                        message: format!("expected a string, got a {}", value.type_name()),
                    });
                };
                include.project_directory = Some(join(base, dir, || key_at.clone())?);
            }
            _ => {
                return Err(LoadError::Schema {
                    at: key_at,
                    message:
                        "unknown key; `include` takes `path`, `env_file` and `project_directory`"
                            .into(),
                });
            }
        }
    }
    if include.files.is_empty() {
        return Err(LoadError::Schema {
            at,
            message: "missing `path`".into(),
        });
    }
    Ok(include)
}

/// A string or a list of strings, each with its place.
fn strings(node: &Node, field: &str) -> Result<Vec<(String, At)>, LoadError> {
    if let Some(text) = node.as_str() {
        return Ok(vec![(text.to_string(), At::new(&node.mark, field))]);
    }
    let wrong = |n: &Node, path: String| LoadError::Schema {
        at: At::new(&n.mark, path),
        message: format!(
            "expected a string or a list of strings, got a {}",
            n.type_name()
        ),
    };
    let Some(items) = node.as_seq() else {
        return Err(wrong(node, field.to_string()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("{field}[{i}]");
            match item.as_str() {
                Some(text) => Ok((text.to_string(), At::new(&item.mark, path))),
                None => Err(wrong(item, path)),
            }
        })
        .collect()
}

/// Adds the resources of `included` to `root`, refusing names defined in both.
fn add_resources(root: &mut Node, included: Node) -> Result<(), LoadError> {
    let Value::Map(included) = included.value else {
        return Ok(());
    };
    let root_mark = root.mark.clone();
    let Value::Map(root_entries) = &mut root.value else {
        return Ok(());
    };
    for (section, resources) in included {
        if !RESOURCES.contains(&section.as_str()) {
            continue;
        }
        let Value::Map(resources) = resources.value else {
            continue;
        };
        let target = match root_entries.iter().position(|(k, _)| *k == section) {
            Some(i) => &mut root_entries[i].1,
            None => {
                root_entries.push((section.clone(), Node::new(Value::Null, root_mark.clone())));
                let last = root_entries.len() - 1;
                &mut root_entries[last].1
            }
        };
        if target.value == Value::Null {
            target.value = Value::Map(Vec::new());
        }
        let Value::Map(existing) = &mut target.value else {
            // A malformed section; stage two reports its type.
            continue;
        };
        for (name, resource) in resources {
            if let Some((_, mine)) = existing.iter().find(|(k, _)| *k == name) {
                if same_content(mine, &resource) {
                    continue;
                }
                return Err(LoadError::Schema {
                    at: At::new(&resource.mark, format!("{section}.{name}")),
                    message: format!(
                        "{section} \"{name}\" is defined both in {} and in the including {}",
                        resource.mark.file, mine.mark.file
                    ),
                });
            }
            existing.push((name, resource));
        }
    }
    Ok(())
}

/// Whether two nodes hold the same value, wherever they were written.
fn same_content(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_content(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, a), (kb, b))| ka == kb && same_content(a, b))
        }
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::read_tree;
    use super::super::tree::tests::{MemSource, options, show};
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn included_project_with_own_dotenv_and_base() {
        let src = MemSource::new(&[
            (
                "app/compose.yaml",
                "include:\n  - ../db/compose.yaml\n  - path: [../cache/a.yaml, ../cache/b.yaml]\n    project_directory: ../cache/pd\nservices:\n  web:\n    image: ${TAG}\nvolumes:\n",
            ),
            ("app/.env", "TAG=web-tag\nSHARED=main"),
            (
                "db/compose.yaml",
                "services:\n  db:\n    image: postgres:${DB_TAG}-${SHARED}-${TAG}\n    env_file: db.env\nvolumes:\n  data: {}\n",
            ),
            // The including project's variables win over the included `.env`.
            ("db/.env", "DB_TAG=16\nTAG=ignored"),
            ("cache/a.yaml", "services:\n  cache:\n    image: redis\n"),
            ("cache/b.yaml", "services:\n  cache:\n    env_file: c.env\n"),
        ]);
        let tree = read_tree(&src, &options("app")).unwrap();
        assert_eq!(
            show(&tree.root),
            "{services: {web: {image: web-tag}, db: {image: postgres:16-main-web-tag, env_file: db.env}, cache: {image: redis, env_file: c.env}}, volumes: {data: {}}}"
        );
        let services = tree.root.get("services").unwrap();
        let db_env = services.get("db").unwrap().get("env_file").unwrap();
        assert_eq!(db_env.mark.base.as_str(), "db");
        let cache_env = services.get("cache").unwrap().get("env_file").unwrap();
        assert_eq!(cache_env.mark.base.as_str(), "cache/pd");
        assert_eq!(
            tree.variables.get("TAG").map(String::as_str),
            Some("web-tag")
        );
        assert_eq!(
            tree.files.iter().map(RepoPath::as_str).collect::<Vec<_>>(),
            vec![
                "app/.env",
                "app/compose.yaml",
                "db/.env",
                "db/compose.yaml",
                "cache/a.yaml",
                "cache/b.yaml"
            ]
        );
    }

    #[test]
    fn conflict_names_both_files() {
        let src = MemSource::new(&[
            (
                "compose.yaml",
                "include: [other/compose.yaml]\nservices:\n  web:\n    image: a\n",
            ),
            ("other/compose.yaml", "services:\n  web:\n    image: b\n"),
        ]);
        let err = read_tree(&src, &options("")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "other/compose.yaml:3:5: services.web: services \"web\" is defined both in other/compose.yaml and in the including compose.yaml"
        );
    }

    #[test]
    fn identical_definitions_are_not_a_conflict() {
        let src = MemSource::new(&[
            (
                "compose.yaml",
                "include: [other/compose.yaml]\nservices:\n  web:\n    image: a\nnetworks:\n  shared: {external: true}\n",
            ),
            (
                "other/compose.yaml",
                "services:\n  api:\n    image: b\nnetworks:\n  shared:\n    external: true\n",
            ),
        ]);
        let tree = read_tree(&src, &options("")).unwrap();
        assert_eq!(
            show(&tree.root),
            "{services: {web: {image: a}, api: {image: b}}, networks: {shared: {external: true}}}"
        );
        let shared = tree.root.get("networks").unwrap().get("shared").unwrap();
        assert_eq!(shared.mark.file.as_str(), "compose.yaml");
    }

    #[test]
    fn cycle_is_refused() {
        let src = MemSource::new(&[
            ("compose.yaml", "include: [a/compose.yaml]\n"),
            ("a/compose.yaml", "include: [../b/compose.yaml]\n"),
            ("b/compose.yaml", "include:\n  - path: ../compose.yaml\n"),
        ]);
        let err = read_tree(&src, &options("")).unwrap_err();
        assert_eq!(err.label(), "cycle");
        assert_eq!(
            err.to_string(),
            "b/compose.yaml:2:5: include[0]: include cycle: compose.yaml -> a/compose.yaml -> b/compose.yaml -> compose.yaml"
        );
    }

    #[test]
    fn escaping_and_bad_entries_are_refused() {
        let src = MemSource::new(&[("app/compose.yaml", "include: [../../etc/passwd]\n")]);
        let err = read_tree(&src, &options("app")).unwrap_err();
        assert_eq!(err.label(), "path");
        assert_eq!(
            err.to_string(),
            "app/compose.yaml:1:11: include[0]: path \"../../etc/passwd\" leaves the repository"
        );
        let src = MemSource::new(&[(
            "compose.yaml",
            "include:\n  - path: x.yaml\n    env_file: /etc/env\n",
        )]);
        assert_eq!(read_tree(&src, &options("")).unwrap_err().label(), "path");
        let src = MemSource::new(&[("compose.yaml", "include:\n  - {paths: x.yaml}\n")]);
        assert_eq!(read_tree(&src, &options("")).unwrap_err().label(), "schema");
        let src = MemSource::new(&[
            (
                "compose.yaml",
                "include:\n  - path: [a.yaml, missing.yaml]\n",
            ),
            ("a.yaml", "services: {}\n"),
        ]);
        let err = read_tree(&src, &options("")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "compose.yaml:2:20: include[0].path[1]: missing.yaml: no such file or directory"
        );
    }

    #[test]
    fn main_service_may_extend_an_included_one() {
        let src = MemSource::new(&[
            (
                "compose.yaml",
                "include: [lib/compose.yaml]\nservices:\n  web:\n    extends: base\n    image: b\n",
            ),
            (
                "lib/compose.yaml",
                "services:\n  base:\n    image: a\n    env_file: lib.env\n",
            ),
        ]);
        let tree = read_tree(&src, &options("")).unwrap();
        let web = tree.root.get("services").unwrap().get("web").unwrap();
        assert_eq!(show(web), "{image: b, env_file: lib.env}");
        assert_eq!(web.get("env_file").unwrap().mark.base.as_str(), "lib");
    }
}
