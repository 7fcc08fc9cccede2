//! Parses one YAML document into a positioned [`Node`] tree with serde-saphyr.
//!
//! serde-saphyr expands anchors and merge keys (`<<:`), rejects duplicate keys,
//! bounds alias expansion and nesting depth (billion-laughs and deep-nesting
//! defence), and exposes tags through `Tagged` and positions through `Spanned`.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Spanned, Tagged};

use super::error::{At, LoadError};
use super::node::{Mark, Node, Tag, Value};
use crate::render::files::RepoPath;

/// Parses `text` (the content of `file`) into a tree. Relative paths in the tree
/// resolve against `base`. An empty document is an empty mapping.
pub fn parse(text: &[u8], file: &RepoPath, base: &RepoPath) -> Result<Node, LoadError> {
    let file = Arc::new(file.clone());
    let base = Arc::new(base.clone());
    let at = || At::file(&file);
    let text = std::str::from_utf8(text).map_err(|e| LoadError::Yaml {
        at: at(),
        message: format!("not UTF-8 text ({e})"),
    })?;
    if text.trim().is_empty() {
        return Ok(Node::new(
            Value::Map(Vec::new()),
            Mark::synthetic(file, base),
        ));
    }
    let options = serde_saphyr::options! {
        // Compose (go-yaml) reads 0644 as octal, which file modes rely on.
        legacy_octal_numbers: true,
        // Compose reads YAML 1.2 booleans: `yes`, `on` and `Y` stay strings.
        strict_booleans: true,
    };
    let raw: RawNode = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| yaml_error(&file, &base, &e))?;
    let mut node = raw.into_node(&file, &base);
    if node.value == Value::Null {
        // A document of only comments.
        node.value = Value::Map(Vec::new());
    }
    Ok(node)
}

fn yaml_error(
    file: &Arc<RepoPath>,
    base: &Arc<RepoPath>,
    error: &serde_saphyr::Error,
) -> LoadError {
    let (line, column) = error
        .location()
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((0, 0));
    LoadError::Yaml {
        at: At {
            mark: Some(Mark {
                file: file.clone(),
                line,
                column,
                base: base.clone(),
            }),
            path: String::new(),
        },
        message: explain(&headline(&error.to_string())),
    }
}

/// serde-saphyr's messages may carry a source snippet and repeat the position
/// our mark already gives (`error: line 6 column 16: ...`); keep the rest.
fn headline(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    let without_prefix = first.strip_prefix("error: ").unwrap_or(first);
    match without_prefix.strip_prefix("line ") {
        Some(rest) => match rest.split_once(": ") {
            Some((position, rest)) if position.contains(" column ") => rest.to_string(),
            _ => without_prefix.to_string(),
        },
        None => without_prefix.to_string(),
    }
}

/// The parser's budget names its counter; say what it means for a compose file.
fn explain(message: &str) -> String {
    if message.starts_with("budget breached") {
        format!(
            "the document expands to too many nodes, usually aliases of aliases (a \"billion laughs\" bomb) ({message})"
        )
    } else {
        message.to_string()
    }
}

/// A node as serde-saphyr hands it over, before marks get their file.
struct RawNode(Spanned<Tagged<RawValue>>);

enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<RawNode>),
    Map(Vec<(String, RawNode)>),
}

impl RawNode {
    fn into_node(self, file: &Arc<RepoPath>, base: &Arc<RepoPath>) -> Node {
        let spanned = self.0;
        let location = spanned.referenced;
        let Tagged(raw, tag) = spanned.value;
        let mark = Mark {
            file: file.clone(),
            line: location.line() as u32,
            column: location.column() as u32,
            base: base.clone(),
        };
        let value = match raw {
            RawValue::Null => Value::Null,
            RawValue::Bool(b) => Value::Bool(b),
            RawValue::Int(i) => Value::Int(i),
            RawValue::Float(f) => Value::Float(f),
            RawValue::String(text) => Value::String {
                text,
                quoted: false,
            },
            RawValue::Seq(items) => {
                Value::Seq(items.into_iter().map(|n| n.into_node(file, base)).collect())
            }
            RawValue::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, n)| (k, n.into_node(file, base)))
                    .collect(),
            ),
        };
        Node {
            value,
            tag: tag.as_deref().and_then(compose_tag),
            mark,
        }
    }
}

fn compose_tag(tag: &str) -> Option<Tag> {
    match tag.trim_start_matches('!') {
        "reset" => Some(Tag::Reset),
        "override" => Some(Tag::Override),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::<Tagged<RawValue>>::deserialize(deserializer).map(RawNode)
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawValueVisitor)
    }
}

struct RawValueVisitor;

impl<'de> Visitor<'de> for RawValueVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }

    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        Ok(i64::try_from(v)
            .map(RawValue::Int)
            .unwrap_or(RawValue::Float(v as f64)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawValue, E> {
        Ok(i64::try_from(v)
            .map(RawValue::Int)
            .unwrap_or(RawValue::Float(v as f64)))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawValue, E> {
        Ok(i64::try_from(v)
            .map(RawValue::Int)
            .unwrap_or(RawValue::Float(v as f64)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::String(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<RawValue, E> {
        Ok(RawValue::String(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<RawNode>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<ScalarKey>()? {
            let value = map.next_value::<RawNode>()?;
            entries.push((key.0, value));
        }
        Ok(RawValue::Map(entries))
    }
}

/// Mapping keys: compose keys are strings, but YAML allows `80: x`; spell them out.
struct ScalarKey(String);

impl<'de> Deserialize<'de> for ScalarKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = ScalarKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<ScalarKey, E> {
                Ok(ScalarKey("null".to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Node, LoadError> {
        let file = RepoPath::new("app/compose.yaml").unwrap();
        parse(text.as_bytes(), &file, &file.parent())
    }

    #[test]
    fn positions_tags_and_merge_keys() {
        let node = parse_str(
            "x-base: &base\n  image: nginx\n  restart: always\nservices:\n  web:\n    <<: *base\n    ports: !override\n      - 80\n    mode: 0644\n",
        )
        .unwrap();
        let web = node.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().as_str(), Some("nginx"));
        assert_eq!(web.get("restart").unwrap().as_str(), Some("always"));
        let ports = web.get("ports").unwrap();
        assert_eq!(ports.tag, Some(Tag::Override));
        assert_eq!(ports.as_seq().unwrap()[0].value, Value::Int(80));
        assert_eq!(web.get("mode").unwrap().value, Value::Int(0o644));
        let ports_item = &ports.as_seq().unwrap()[0];
        assert_eq!((ports_item.mark.line, ports_item.mark.column), (8, 9));
        assert_eq!(ports_item.mark.base.as_str(), "app");
    }

    #[test]
    fn reset_tag_on_null() {
        let node = parse_str("services:\n  web:\n    ports: !reset []\n    command: !reset null\n")
            .unwrap();
        let web = node.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("ports").unwrap().tag, Some(Tag::Reset));
        assert_eq!(web.get("command").unwrap().tag, Some(Tag::Reset));
    }

    #[test]
    fn duplicate_keys_and_bad_syntax_name_the_position() {
        let err = parse_str("services:\n  web:\n    image: a\n    image: b\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("app/compose.yaml:4:"), "{text}");
        assert_eq!(err.label(), "yaml");
        let err = parse_str("services: [\n").unwrap_err();
        assert!(err.to_string().starts_with("app/compose.yaml:"), "{err}");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.label(), "yaml", "{err}");
    }

    #[test]
    fn only_true_and_false_are_booleans() {
        let node = parse_str("environment:\n  Y: yes\n  on: off\n  t: true\n").unwrap();
        let env = node.get("environment").unwrap().as_map().unwrap();
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["Y", "on", "t"]);
        assert_eq!(env[0].1.as_str(), Some("yes"));
        assert_eq!(env[1].1.as_str(), Some("off"));
        assert_eq!(env[2].1.value, Value::Bool(true));
    }

    #[test]
    fn empty_document_is_an_empty_map() {
        assert_eq!(
            parse_str("\n# nothing\n")
                .unwrap()
                .as_map()
                .map(|m| m.len()),
            Some(0)
        );
    }
}
