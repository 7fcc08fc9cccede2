//! `extends`: a service merges over the service it extends, in the same file or
//! in another one (`extends: {service, file}`), recursively.
//!
//! Services from another file keep their marks, so their relative paths resolve
//! against their own directory. The other file is interpolated with the same
//! variables as the project.

use std::collections::{BTreeMap, HashMap};

use super::error::{At, LoadError};
use super::merge;
use super::node::{Node, Value};
use super::tree::{Loader, MAX_DEPTH, join};
use crate::render::files::RepoPath;

/// Resolves the `extends` of every service of `root` and removes the keys.
pub(super) fn resolve_all(
    loader: &mut Loader<'_>,
    root: &mut Node,
    variables: &BTreeMap<String, String>,
) -> Result<(), LoadError> {
    let Some(services) = root.get("services").and_then(Node::as_map) else {
        return Ok(());
    };
    if !services.iter().any(|(_, s)| s.get("extends").is_some()) {
        return Ok(());
    }
    let snapshot = services.to_vec();
    let file = root.mark.file.as_ref().clone();
    let mut resolver = Resolver {
        loader,
        variables,
        files: HashMap::new(),
        chain: Vec::new(),
    };
    let mut resolved = Vec::with_capacity(snapshot.len());
    for (name, _) in &snapshot {
        resolved.push((
            name.clone(),
            resolver.resolve(&snapshot, &file, name, None)?,
        ));
    }
    if let Value::Map(entries) = &mut root.value
        && let Some((_, services)) = entries.iter_mut().find(|(k, _)| k == "services")
    {
        services.value = Value::Map(resolved);
    }
    Ok(())
}

struct Resolver<'l, 'a> {
    loader: &'l mut Loader<'a>,
    variables: &'l BTreeMap<String, String>,
    /// The services of other files read for `extends.file`, by path.
    files: HashMap<RepoPath, Vec<(String, Node)>>,
    /// The services being resolved, outermost first, with their files.
    chain: Vec<(RepoPath, String)>,
}

impl Resolver<'_, '_> {
    /// The service `name` of `services` (from `file`) with its `extends` resolved.
    /// `wanted_by` is the `extends` that asked for it, for the error when missing.
    fn resolve(
        &mut self,
        services: &[(String, Node)],
        file: &RepoPath,
        name: &str,
        wanted_by: Option<&At>,
    ) -> Result<Node, LoadError> {
        let Some((_, service)) = services.iter().find(|(k, _)| k == name) else {
            let at = wanted_by.cloned().unwrap_or(At {
                mark: None,
                path: format!("services.{name}"),
            });
            return Err(LoadError::Schema {
                at,
                message: format!("extends a service \"{name}\" that is not defined in {file}"),
            });
        };
        let Some(extends) = service.get("extends") else {
            return Ok(service.clone());
        };
        let field = format!("services.{name}.extends");
        let (target, target_file) = parse_extends(extends, &field)?;
        let at = At::new(&extends.mark, field);

        let link = (file.clone(), name.to_string());
        if self.chain.contains(&link) || self.chain.len() >= MAX_DEPTH {
            let mut names: Vec<&str> = self.chain.iter().map(|(_, n)| n.as_str()).collect();
            names.push(name);
            let what = if self.chain.contains(&link) {
                "extends cycle"
            } else {
                "extends chain too deep"
            };
            return Err(LoadError::Cycle {
                at,
                message: format!("{what}: {}", names.join(" -> ")),
            });
        }
        self.chain.push(link);
        let base = match target_file {
            Some(relative) => {
                let path = join(&extends.mark.base, &relative, || at.clone())?;
                let other = self.file_services(&path, &at)?;
                self.resolve(&other, &path, &target, Some(&at))
            }
            None => self.resolve(services, file, &target, Some(&at)),
        };
        self.chain.pop();
        let base = base?;

        let mut service = service.clone();
        if let Value::Map(entries) = &mut service.value {
            entries.retain(|(k, _)| k != "extends");
        }
        let mark = service.mark.clone();
        let mut path = vec!["services".to_string(), name.to_string()];
        let mut merged = merge::merge(base, service, &mut path);
        merged.mark = mark;
        Ok(merged)
    }

    /// The services of another compose file, read and interpolated once.
    fn file_services(
        &mut self,
        path: &RepoPath,
        at: &At,
    ) -> Result<Vec<(String, Node)>, LoadError> {
        if let Some(services) = self.files.get(path) {
            return Ok(services.clone());
        }
        let root = self
            .loader
            .load_file(path, &path.parent(), at, self.variables)?;
        let services = root
            .get("services")
            .and_then(Node::as_map)
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        self.files.insert(path.clone(), services.clone());
        Ok(services)
    }
}

/// `extends: name` or `extends: {service: name, file: path}`.
fn parse_extends(node: &Node, field: &str) -> Result<(String, Option<String>), LoadError> {
    let schema = |node: &Node, path: String, message: String| LoadError::Schema {
        at: At::new(&node.mark, path),
        message,
    };
    if let Some(name) = node.scalar_text() {
        return Ok((name, None));
    }
    let Some(entries) = node.as_map() else {
        return Err(schema(
            node,
            field.to_string(),
            format!(
                "expected a service name or a mapping with `service`, got a {}",
                node.type_name()
            ),
        ));
    };
    let mut service = None;
    let mut file = None;
    for (key, value) in entries {
        let text = value.as_str().map(str::to_string);
        match (key.as_str(), text) {
            ("service", Some(name)) => service = Some(name),
            ("file", Some(path)) => file = Some(path),
            ("service" | "file", None) => {
                return Err(schema(
                    value,
                    format!("{field}.{key}"),
                    format!("expected a string, got a {}", value.type_name()),
                ));
            }
            (other, _) => {
                return Err(schema(
                    value,
                    format!("{field}.{other}"),
                    "unknown key; `extends` takes `service` and `file`".to_string(),
                ));
            }
        }
    }
    let service = service.ok_or_else(|| {
        schema(
            node,
            field.to_string(),
            "missing the `service` to extend".to_string(),
        )
    })?;
    Ok((service, file))
}

#[cfg(test)]
mod tests {
    use super::super::tree::read_tree;
    use super::super::tree::tests::{MemSource, options, show};
    use super::*;
    use pretty_assertions::assert_eq;

    fn web(src: &MemSource) -> String {
        let tree = read_tree(src, &options("app")).unwrap();
        show(tree.root.get("services").unwrap().get("web").unwrap())
    }

    #[test]
    fn same_file_chain() {
        let src = MemSource::new(&[(
            "app/compose.yaml",
            "services:\n  base:\n    image: a\n    environment: [A=1]\n    ports: ['80:80']\n  mid:\n    extends: base\n    environment: {B: '2'}\n  web:\n    extends: {service: mid}\n    image: b\n    ports: ['81:81']\n",
        )]);
        assert_eq!(
            web(&src),
            "{image: b, environment: {A: 1, B: 2}, ports: [80:80, 81:81]}"
        );
    }

    #[test]
    fn other_file_keeps_its_own_base() {
        let src = MemSource::new(&[
            (
                "app/compose.yaml",
                "services:\n  web:\n    extends:\n      file: ../common/base.yaml\n      service: app\n    command: [run]\n",
            ),
            (
                "common/base.yaml",
                "services:\n  root:\n    image: ${IMAGE:-x}\n    env_file: root.env\n  app:\n    extends: root\n    build: ./src\n    command: [old, cmd]\n",
            ),
        ]);
        let tree = read_tree(&src, &options("app")).unwrap();
        let web = tree.root.get("services").unwrap().get("web").unwrap();
        assert_eq!(
            show(web),
            "{image: x, env_file: root.env, build: ./src, command: [run]}"
        );
        assert_eq!(web.mark.file.as_str(), "app/compose.yaml");
        assert_eq!(web.get("build").unwrap().mark.base.as_str(), "common");
        assert_eq!(web.get("command").unwrap().mark.base.as_str(), "app");
        assert_eq!(
            tree.files.iter().map(RepoPath::as_str).collect::<Vec<_>>(),
            vec!["app/compose.yaml", "common/base.yaml"]
        );
    }

    #[test]
    fn cycle_through_a_file_naming_itself() {
        let src = MemSource::new(&[(
            "app/compose.yaml",
            "services:\n  web:\n    extends: {file: compose.yaml, service: base}\n  base:\n    extends: {file: ./compose.yaml, service: web}\n",
        )]);
        let err = read_tree(&src, &options("app")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "app/compose.yaml:3:14: services.web.extends: extends cycle: web -> base -> web"
        );
    }

    #[test]
    fn reset_in_the_extending_service() {
        let src = MemSource::new(&[(
            "app/compose.yaml",
            "services:\n  init:\n    image: alpine\n    command: sleep infinity\n    ports: ['80:80']\n  web:\n    extends: {service: init}\n    command: !reset\n    ports: !override ['81:81']\n",
        )]);
        assert_eq!(web(&src), "{image: alpine, ports: [81:81]}");
    }

    #[test]
    fn cycle_and_missing_service() {
        let src = MemSource::new(&[(
            "app/compose.yaml",
            "services:\n  web:\n    extends: base\n  base:\n    extends: web\n",
        )]);
        let err = read_tree(&src, &options("app")).unwrap_err();
        assert_eq!(err.label(), "cycle");
        assert_eq!(
            err.to_string(),
            "app/compose.yaml:3:14: services.web.extends: extends cycle: web -> base -> web"
        );
        let src = MemSource::new(&[
            (
                "app/compose.yaml",
                "services:\n  web:\n    extends: {service: nope, file: other.yaml}\n",
            ),
            ("app/other.yaml", "services: {}"),
        ]);
        let err = read_tree(&src, &options("app")).unwrap_err();
        assert_eq!(err.label(), "schema");
        assert_eq!(
            err.to_string(),
            "app/compose.yaml:3:14: services.web.extends: extends a service \"nope\" that is not defined in app/other.yaml"
        );
    }

    #[test]
    fn escaping_file_is_refused() {
        let src = MemSource::new(&[(
            "app/compose.yaml",
            "services:\n  web:\n    extends:\n      file: ../../etc/passwd\n      service: x\n",
        )]);
        let err = read_tree(&src, &options("app")).unwrap_err();
        assert_eq!(err.label(), "path");
        assert!(err.to_string().contains("services.web.extends"), "{err}");
        let src = MemSource::new(&[(
            "app/compose.yaml",
            "services:\n  web:\n    extends: {file: missing.yaml, service: x}\n",
        )]);
        assert_eq!(
            read_tree(&src, &options("app")).unwrap_err().label(),
            "file"
        );
    }

    #[test]
    fn bad_extends_shapes() {
        let src = MemSource::new(&[(
            "app/compose.yaml",
            "services:\n  web:\n    extends: {file: x.yaml}\n",
        )]);
        let err = read_tree(&src, &options("app")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "app/compose.yaml:3:14: services.web.extends: missing the `service` to extend"
        );
        let src = MemSource::new(&[("app/compose.yaml", "services:\n  web:\n    extends: [a]\n")]);
        assert_eq!(
            read_tree(&src, &options("app")).unwrap_err().label(),
            "schema"
        );
    }
}
