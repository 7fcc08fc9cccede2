//! Merging an override node tree over a base tree, per the Compose Specification
//! merge rules (compose-spec `13-merge.md`, compose-go `override/merge.go`).
//!
//! Used for override files (`-f a -f b`) and for `extends`. Mappings merge
//! recursively and scalars are replaced; a few service fields have their own rule
//! (see [`rule`]). `!reset` removes the inherited value and `!override` replaces it;
//! both tags survive merging so that a later `extends` honours them too, and
//! [`strip_tags`] drops them once everything is merged.

use super::node::{Node, Tag, Value};

/// Merges `over` on top of `base`; `path` is the YAML path of both (keys, no
/// sequence indices), which selects the rule.
pub fn merge(base: Node, over: Node, path: &mut Vec<String>) -> Node {
    if base.tag == Some(Tag::Reset) || over.tag.is_some() {
        return over;
    }
    if over.value == Value::Null {
        // An empty override (`environment:` with nothing under it) adds nothing.
        return base;
    }
    match rule(path) {
        Rule::Replace => over,
        Rule::KeyedMap(split) => {
            merge_default(keyed_map(base, split), keyed_map(over, split), path)
        }
        Rule::AppendUnique => append_unique(as_list(base), as_list(over)),
        Rule::UnionBy(key) => union_by(base, over, key, path),
        Rule::ListOrMap(fill) => match (&base.value, &over.value) {
            (Value::Seq(_), Value::Seq(_)) => append_unique(base, over),
            _ => merge_default(list_to_map(base, fill), list_to_map(over, fill), path),
        },
        Rule::Build => merge_default(build_map(base), build_map(over), path),
        Rule::Logging => {
            let driver = |n: &Node| n.get("driver").and_then(Node::scalar_text);
            match (driver(&base), driver(&over)) {
                (Some(a), Some(b)) if a != b => over,
                _ => merge_default(base, over, path),
            }
        }
        Rule::Default => merge_default(base, over, path),
    }
}

/// How a field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Recursive for mappings, appending for sequences, replacing otherwise.
    Default,
    /// The override replaces the base (`command`, `entrypoint`, `healthcheck.test`).
    Replace,
    /// `KEY=VAL` lists and mappings merge by key, the override winning.
    KeyedMap(Split),
    /// Sequences (a scalar counts as a one-item sequence) append without duplicates.
    AppendUnique,
    /// Sequences merge by a key; entries with the same key merge.
    UnionBy(EntryKey),
    /// A list of names or a mapping by name (`networks`, `depends_on`).
    ListOrMap(Fill),
    /// `build: ./dir` is `build: {context: ./dir}`.
    Build,
    /// `logging` merges unless the driver changes, then it is replaced.
    Logging,
}

/// How a list item of a keyed mapping splits into key and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    /// `KEY=VAL`; a bare `KEY` has a null value.
    Equals,
    /// `host=ip` or `host:ip`; a host listed twice keeps every address.
    Host,
}

/// What identifies an entry of a sequence merged by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryKey {
    /// `ports`: the whole short form, or `host_ip:published:target/protocol`.
    Port,
    /// `volumes`: the mount target.
    VolumeTarget,
    /// Service `configs`/`secrets`: the target, by default the prefix and the source.
    Mount(&'static str),
}

/// The value a name from list form gets in mapping form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    /// `networks: [front]` is `networks: {front: null}`.
    Null,
    /// `depends_on: [db]` is `depends_on: {db: {condition: service_started}}`.
    ServiceStarted,
}

/// The rule for the field at `path`.
fn rule(path: &[String]) -> Rule {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match path.as_slice() {
        ["services", _, field] => match *field {
            "command" | "entrypoint" => Rule::Replace,
            "environment" | "labels" | "annotations" | "sysctls" => Rule::KeyedMap(Split::Equals),
            "extra_hosts" => Rule::KeyedMap(Split::Host),
            "ports" => Rule::UnionBy(EntryKey::Port),
            "volumes" => Rule::UnionBy(EntryKey::VolumeTarget),
            "configs" => Rule::UnionBy(EntryKey::Mount("/")),
            "secrets" => Rule::UnionBy(EntryKey::Mount("/run/secrets/")),
            "dns" | "dns_search" | "dns_opt" | "env_file" | "label_file" | "tmpfs" | "cap_add"
            | "cap_drop" | "expose" | "profiles" | "links" => Rule::AppendUnique,
            "networks" => Rule::ListOrMap(Fill::Null),
            "depends_on" => Rule::ListOrMap(Fill::ServiceStarted),
            "build" => Rule::Build,
            "logging" => Rule::Logging,
            _ => Rule::Default,
        },
        ["services", _, "healthcheck", "test"] => Rule::Replace,
        ["services", _, "build" | "deploy", "args" | "labels"] => Rule::KeyedMap(Split::Equals),
        ["services", _, "build", "extra_hosts"] => Rule::KeyedMap(Split::Host),
        ["services", _, "networks", _, "aliases"] => Rule::AppendUnique,
        ["networks" | "volumes" | "configs" | "secrets", _, "labels"] => {
            Rule::KeyedMap(Split::Equals)
        }
        _ => Rule::Default,
    }
}

fn merge_default(base: Node, over: Node, path: &mut Vec<String>) -> Node {
    match (base.value, over.value) {
        (Value::Map(base_entries), Value::Map(over_entries)) => Node {
            value: Value::Map(merge_entries(base_entries, over_entries, path)),
            tag: None,
            mark: base.mark,
        },
        (Value::Seq(mut base_items), Value::Seq(over_items)) => {
            base_items.extend(over_items);
            Node {
                value: Value::Seq(base_items),
                tag: None,
                mark: base.mark,
            }
        }
        (_, value) => Node {
            value,
            tag: over.tag,
            mark: over.mark,
        },
    }
}

/// Merges two mappings by key, keeping the base's order and appending new keys.
pub fn merge_entries(
    mut base: Vec<(String, Node)>,
    over: Vec<(String, Node)>,
    path: &mut Vec<String>,
) -> Vec<(String, Node)> {
    for (key, value) in over {
        match base.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                let (_, old) = base.remove(i);
                path.push(key.clone());
                let merged = merge(old, value, path);
                path.pop();
                base.insert(i, (key, merged));
            }
            None => base.push((key, value)),
        }
    }
    base
}

/// A scalar as a one-item sequence; anything else unchanged.
fn as_list(node: Node) -> Node {
    match node.value {
        Value::Seq(_) | Value::Map(_) | Value::Null => node,
        _ => Node {
            value: Value::Seq(vec![node.clone()]),
            tag: None,
            mark: node.mark,
        },
    }
}

/// `base` followed by the items of `over` it does not already have.
fn append_unique(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Seq(mut items), Value::Seq(extra)) => {
            let mut seen: Vec<String> = items.iter().map(unique_key).collect();
            for item in extra {
                let print = unique_key(&item);
                if !seen.contains(&print) {
                    seen.push(print);
                    items.push(item);
                }
            }
            Node {
                value: Value::Seq(items),
                tag: None,
                mark: base.mark,
            }
        }
        (_, value) => Node {
            value,
            tag: over.tag,
            mark: over.mark,
        },
    }
}

/// Merges two sequences entry by entry on `key`: a base entry with the same key as
/// an override entry merges with it in place; other override entries are appended.
fn union_by(base: Node, over: Node, key: EntryKey, path: &mut Vec<String>) -> Node {
    match (base.value, over.value) {
        (Value::Seq(mut items), Value::Seq(extra)) => {
            for item in extra {
                let item_key = entry_key(&item, key);
                let existing = item_key.as_ref().and_then(|k| {
                    items
                        .iter()
                        .position(|i| entry_key(i, key).as_ref() == Some(k))
                });
                match existing {
                    Some(i) => {
                        let old = items.remove(i);
                        let merged = match (&old.value, &item.value) {
                            (Value::Map(_), Value::Map(_)) => merge_default(old, item, path),
                            _ => item,
                        };
                        items.insert(i, merged);
                    }
                    None => items.push(item),
                }
            }
            Node {
                value: Value::Seq(items),
                tag: None,
                mark: base.mark,
            }
        }
        (_, value) => Node {
            value,
            tag: over.tag,
            mark: over.mark,
        },
    }
}

fn entry_key(node: &Node, key: EntryKey) -> Option<String> {
    let field = |name: &str| node.get(name).and_then(Node::scalar_text);
    match (key, &node.value) {
        (EntryKey::Port, Value::Map(_)) => Some(format!(
            "{}:{}:{}/{}",
            field("host_ip").unwrap_or_else(|| "0.0.0.0".into()),
            field("published").unwrap_or_default(),
            field("target")?,
            field("protocol").unwrap_or_else(|| "tcp".into()),
        )),
        (EntryKey::VolumeTarget, Value::Map(_)) => field("target"),
        (EntryKey::VolumeTarget, _) => node.as_str().map(short_volume_target),
        (EntryKey::Mount(prefix), Value::Map(_)) => {
            field("target").or_else(|| Some(format!("{prefix}{}", field("source")?)))
        }
        (EntryKey::Mount(prefix), _) => Some(format!("{prefix}{}", node.scalar_text()?)),
        (EntryKey::Port, _) => node.scalar_text(),
    }
}

/// The container path of a short-syntax volume: `src:target[:mode]` or `target`.
fn short_volume_target(spec: &str) -> String {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [target] => target.to_string(),
        [_, target, ..] => target.to_string(),
        [] => String::new(),
    }
}

/// A list of `KEY=VAL` strings as a mapping; a mapping or anything else unchanged.
/// Lists with non-scalar items are left alone for the schema check to report.
fn keyed_map(node: Node, split: Split) -> Node {
    let Value::Seq(items) = &node.value else {
        return node;
    };
    if items.iter().any(|i| i.scalar_text().is_none()) {
        return node;
    }
    let mut entries: Vec<(String, Node)> = Vec::new();
    for item in items {
        let text = item.scalar_text().unwrap_or_default();
        let cut = match split {
            Split::Equals => text.split_once('='),
            Split::Host => text.split_once('=').or_else(|| text.split_once(':')),
        };
        let (key, value) = match cut {
            Some((k, v)) => (
                k.to_string(),
                Value::String {
                    text: v.to_string(),
                    quoted: false,
                },
            ),
            None => (text.clone(), Value::Null),
        };
        let value = Node::new(value, item.mark.clone());
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) if split == Split::Host => {
                // A host listed twice has several addresses.
                if let Value::Seq(list) = &mut existing.value {
                    list.push(value);
                } else {
                    let first = existing.clone();
                    existing.value = Value::Seq(vec![first, value]);
                }
            }
            Some((_, existing)) => *existing = value,
            None => entries.push((key, value)),
        }
    }
    Node {
        value: Value::Map(entries),
        tag: node.tag,
        mark: node.mark,
    }
}

/// A list of names as a mapping by name.
fn list_to_map(node: Node, fill: Fill) -> Node {
    let Value::Seq(items) = &node.value else {
        return node;
    };
    let mut entries = Vec::new();
    for item in items {
        let Some(name) = item.scalar_text() else {
            return node;
        };
        let value = match fill {
            Fill::Null => Value::Null,
            Fill::ServiceStarted => Value::Map(vec![(
                "condition".to_string(),
                Node::new(
                    Value::String {
                        text: "service_started".into(),
                        quoted: false,
                    },
                    item.mark.clone(),
                ),
            )]),
        };
        entries.push((name, Node::new(value, item.mark.clone())));
    }
    Node {
        value: Value::Map(entries),
        tag: node.tag,
        mark: node.mark,
    }
}

/// `build: ./dir` as `build: {context: ./dir}`.
fn build_map(node: Node) -> Node {
    if node.as_map().is_some() || node.scalar_text().is_none() {
        return node;
    }
    Node {
        value: Value::Map(vec![("context".to_string(), node.clone())]),
        tag: None,
        mark: node.mark,
    }
}

/// What makes a sequence item a duplicate: its `path` for `env_file` entries in
/// long form (so `a.env` and `{path: a.env, required: false}` are one file), its
/// whole value otherwise.
fn unique_key(node: &Node) -> String {
    match node.get("path").and_then(Node::scalar_text) {
        Some(path) => fingerprint(&Node::new(
            Value::String {
                text: path,
                quoted: false,
            },
            node.mark.clone(),
        )),
        None => fingerprint(node),
    }
}

/// A position-independent rendering of a node, to compare sequence items.
fn fingerprint(node: &Node) -> String {
    match &node.value {
        Value::Null => "~".into(),
        Value::Seq(items) => format!(
            "[{}]",
            items.iter().map(fingerprint).collect::<Vec<_>>().join(",")
        ),
        Value::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{k:?}:{}", fingerprint(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        _ => format!("{:?}", node.scalar_text().unwrap_or_default()),
    }
}

/// Removes entries still tagged `!reset` (nothing was under them) and forgets
/// `!override` tags, once all merging and `extends` is done.
pub fn strip_tags(node: &mut Node) {
    if node.tag == Some(Tag::Override) {
        node.tag = None;
    }
    match &mut node.value {
        Value::Map(entries) => {
            entries.retain(|(_, v)| v.tag != Some(Tag::Reset));
            entries.iter_mut().for_each(|(_, v)| strip_tags(v));
        }
        Value::Seq(items) => {
            items.retain(|v| v.tag != Some(Tag::Reset));
            items.iter_mut().for_each(strip_tags);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::compose::yaml;
    use crate::render::files::RepoPath;
    use pretty_assertions::assert_eq;

    fn parse(text: &str, file: &str) -> Node {
        let file = RepoPath::new(file).unwrap();
        yaml::parse(text.as_bytes(), &file, &file.parent()).unwrap()
    }

    /// Merges two documents and renders the result as compact flow YAML-ish text.
    fn merged(base: &str, over: &str) -> Node {
        let mut node = merge(
            parse(base, "a.yaml"),
            parse(over, "b.yaml"),
            &mut Vec::new(),
        );
        strip_tags(&mut node);
        node
    }

    fn show(node: &Node) -> String {
        node.compact()
    }

    fn web(base: &str, over: &str) -> String {
        let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        let node = merged(
            &format!("services:\n  web:\n{}", indent(base)),
            &format!("services:\n  web:\n{}", indent(over)),
        );
        show(node.get("services").unwrap().get("web").unwrap())
    }

    #[test]
    fn mappings_merge_and_scalars_replace() {
        assert_eq!(
            web(
                "image: a\nrestart: always\ndeploy:\n  replicas: 1\n  resources: {limits: {cpus: '1'}}",
                "image: b\ndeploy:\n  replicas: 2\n  resources: {limits: {memory: 1G}}"
            ),
            "{image: b, restart: always, deploy: {replicas: 2, resources: {limits: {cpus: 1, memory: 1G}}}}"
        );
    }

    #[test]
    fn command_entrypoint_healthcheck_test_replace() {
        assert_eq!(
            web(
                "command: [a, b]\nentrypoint: [x]\nhealthcheck:\n  test: [CMD, a]\n  interval: 5s",
                "command: [c]\nentrypoint: z\nhealthcheck:\n  test: [CMD, b]"
            ),
            "{command: [c], entrypoint: z, healthcheck: {test: [CMD, b], interval: 5s}}"
        );
    }

    #[test]
    fn keyed_fields_merge_across_list_and_map_forms() {
        assert_eq!(
            web(
                "environment: [A=1, B=2, C]\nlabels: {x: '1'}",
                "environment: {B: '3', D: '4'}\nlabels: [y=2, x=0]"
            ),
            "{environment: {A: 1, B: 3, C: ~, D: 4}, labels: {x: 0, y: 2}}"
        );
        assert_eq!(
            web(
                "extra_hosts: ['a:1.1.1.1', 'b=2.2.2.2']\nsysctls: [x=1]\nannotations: {k: v}",
                "extra_hosts: {a: 3.3.3.3}\nsysctls: {x: 2}\nannotations: [k=w]"
            ),
            "{extra_hosts: {a: 3.3.3.3, b: 2.2.2.2}, sysctls: {x: 2}, annotations: {k: w}}"
        );
    }

    #[test]
    fn ports_union_volumes_and_mounts_by_target() {
        assert_eq!(
            web(
                "ports: ['80:80', {target: 443, published: 8443}]",
                "ports: ['80:80', '81:81', {target: 443, published: 8443}]"
            ),
            "{ports: [80:80, {target: 443, published: 8443}, 81:81]}"
        );
        assert_eq!(
            web(
                "volumes: ['./a:/data', {type: volume, source: v, target: /v, read_only: true}, /anon]",
                "volumes: ['./b:/data:ro', {source: w, target: /v}, /other]"
            ),
            "{volumes: [./b:/data:ro, {type: volume, source: w, target: /v, read_only: true}, /anon, /other]}"
        );
        assert_eq!(
            web(
                "configs: [a, {source: b, target: /b}]\nsecrets: [s, {source: t, target: /x}]",
                "configs: [{source: a, target: /a, mode: 0444}, c]\nsecrets: [s, {source: u, target: /x}]"
            ),
            "{configs: [{source: a, target: /a, mode: 292}, {source: b, target: /b}, c], secrets: [s, {source: u, target: /x}]}"
        );
    }

    #[test]
    fn unique_appends_and_other_sequences_append() {
        assert_eq!(
            web(
                "dns: 8.8.8.8\ncap_add: [NET_ADMIN]\nexpose: ['80']\nprofiles: [a]\nenv_file: a.env\ntmpfs: /t\ndevices: [/dev/a]",
                "dns: [8.8.8.8, 1.1.1.1]\ncap_add: [NET_ADMIN, SYS_TIME]\nexpose: ['80', '81']\nprofiles: [a, b]\nenv_file: [a.env, b.env]\ntmpfs: [/t, /u]\ndevices: [/dev/a]"
            ),
            "{dns: [8.8.8.8, 1.1.1.1], cap_add: [NET_ADMIN, SYS_TIME], expose: [80, 81], profiles: [a, b], env_file: [a.env, b.env], tmpfs: [/t, /u], devices: [/dev/a, /dev/a]}"
        );
    }

    #[test]
    fn env_file_entries_are_unique_by_path() {
        assert_eq!(
            web(
                "env_file: [a.env, {path: b.env, required: false}]",
                "env_file: [{path: a.env, required: false}, b.env, c.env]"
            ),
            "{env_file: [a.env, {path: b.env, required: false}, c.env]}"
        );
    }

    #[test]
    fn networks_depends_on_build_logging() {
        assert_eq!(
            web(
                "networks: [front]\ndepends_on: [db]\nbuild: ./app\nlogging: {driver: json-file, options: {max-size: 1m}}",
                "networks: {back: {aliases: [b]}}\ndepends_on: {cache: {condition: service_healthy}}\nbuild: {dockerfile: Dockerfile.dev}\nlogging: {driver: syslog}"
            ),
            "{networks: {front: ~, back: {aliases: [b]}}, depends_on: {db: {condition: service_started}, cache: {condition: service_healthy}}, build: {context: ./app, dockerfile: Dockerfile.dev}, logging: {driver: syslog}}"
        );
        assert_eq!(
            web(
                "logging: {driver: json-file, options: {max-size: 1m}}",
                "logging: {options: {max-file: '3'}}"
            ),
            "{logging: {driver: json-file, options: {max-size: 1m, max-file: 3}}}"
        );
    }

    #[test]
    fn reset_and_override_tags() {
        assert_eq!(
            web(
                "image: a\nports: ['80:80']\ncommand: [x]\nenvironment: {A: '1', B: '2'}",
                "ports: !reset []\ncommand: !reset null\nenvironment: !override {C: '3'}"
            ),
            "{image: a, environment: {C: 3}}"
        );
        // A reset with nothing under it disappears too.
        assert_eq!(web("image: a", "volumes: !reset []"), "{image: a}");
        // Null without a tag keeps the base.
        assert_eq!(
            web("environment: {A: '1'}", "environment:"),
            "{environment: {A: 1}}"
        );
    }

    #[test]
    fn override_keeps_the_overriding_marks() {
        let node = merged(
            "services:\n  web:\n    image: a\n",
            "services:\n  web:\n    image: b\n",
        );
        let image = node
            .get("services")
            .unwrap()
            .get("web")
            .unwrap()
            .get("image")
            .unwrap();
        assert_eq!((image.mark.file.as_str(), image.mark.line), ("b.yaml", 3));
    }
}
