//! Typed access to node-tree fields, with the YAML path of each field kept for
//! errors and every mapping's keys checked against the keys the spec allows.
//!
//! Stage one delivers interpolated values as strings, so numeric and boolean
//! readers accept both the YAML scalar and its spelling as a string.

use std::collections::BTreeMap;

use super::super::error::{At, LoadError};
use super::super::node::{Node, Value};
use super::units;

/// One field: its node and its YAML path (`services.web.ports[1]`).
#[derive(Clone, Debug)]
pub struct Field<'a> {
    pub node: &'a Node,
    pub path: String,
}

impl<'a> Field<'a> {
    pub fn new(node: &'a Node, path: impl Into<String>) -> Self {
        Field {
            node,
            path: path.into(),
        }
    }

    pub fn at(&self) -> At {
        At::new(&self.node.mark, self.path.as_str())
    }

    pub fn schema_error(&self, message: impl Into<String>) -> LoadError {
        LoadError::Schema {
            at: self.at(),
            message: message.into(),
        }
    }

    pub fn invalid(&self, message: impl Into<String>) -> LoadError {
        LoadError::InvalidValue {
            at: self.at(),
            message: message.into(),
        }
    }

    /// "expected a string, got a mapping".
    pub fn expected(&self, what: &str) -> LoadError {
        self.schema_error(format!("expected {what}, got {}", article(self.node)))
    }

    /// A mapping whose keys must be in `allowed` (plus `x-*`).
    pub fn map(&self, allowed: &[&str]) -> Result<Fields<'a>, LoadError> {
        let entries = self
            .node
            .as_map()
            .ok_or_else(|| self.expected("a mapping"))?;
        for (key, value) in entries {
            if key.starts_with("x-") || allowed.contains(&key.as_str()) {
                continue;
            }
            let hint = did_you_mean(key, allowed)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(LoadError::Schema {
                at: At::new(&value.mark, join(&self.path, key)),
                message: format!("unknown field `{key}`{hint}"),
            });
        }
        Ok(Fields {
            entries,
            path: self.path.clone(),
        })
    }

    /// A mapping with free-form keys (service names, labels, ...).
    pub fn entries(&self) -> Result<Vec<(&'a str, Field<'a>)>, LoadError> {
        let entries = self
            .node
            .as_map()
            .ok_or_else(|| self.expected("a mapping"))?;
        Ok(entries
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    Field {
                        node: v,
                        path: join(&self.path, k),
                    },
                )
            })
            .collect())
    }

    /// The items of a sequence.
    pub fn items(&self) -> Result<Vec<Field<'a>>, LoadError> {
        let items = self.node.as_seq().ok_or_else(|| self.expected("a list"))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, node)| Field {
                node,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    /// A scalar read as text (numbers and booleans spelled out).
    pub fn string(&self) -> Result<String, LoadError> {
        self.node
            .scalar_text()
            .ok_or_else(|| self.expected("a string"))
    }

    pub fn bool(&self) -> Result<bool, LoadError> {
        match &self.node.value {
            Value::Bool(b) => Ok(*b),
            Value::String { text, .. } => match text.to_ascii_lowercase().as_str() {
                // Compose's casting after interpolation accepts the YAML 1.1 spellings.
                "true" | "yes" | "y" | "on" => Ok(true),
                "false" | "no" | "n" | "off" => Ok(false),
                _ => Err(self.invalid(format!("expected a boolean, got {text:?}"))),
            },
            _ => Err(self.expected("a boolean")),
        }
    }

    pub fn int(&self) -> Result<i64, LoadError> {
        match &self.node.value {
            Value::Int(i) => Ok(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(*f as i64),
            Value::String { text, .. } => text
                .trim()
                .parse()
                .map_err(|_| self.invalid(format!("expected an integer, got {text:?}"))),
            _ => Err(self.expected("an integer")),
        }
    }

    /// A non-negative integer.
    pub fn uint(&self) -> Result<u64, LoadError> {
        let value = self.int()?;
        u64::try_from(value).map_err(|_| self.invalid(format!("must not be negative, got {value}")))
    }

    pub fn float(&self) -> Result<f64, LoadError> {
        let value = match &self.node.value {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::String { text, .. } => text
                .trim()
                .parse()
                .map_err(|_| self.invalid(format!("expected a number, got {text:?}")))?,
            _ => return Err(self.expected("a number")),
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(self.invalid("expected a finite number"))
        }
    }

    /// A Go-style duration (`1m30s`) in milliseconds. As in Go, a number without
    /// a unit (other than 0) is rejected rather than guessed.
    pub fn duration_ms(&self) -> Result<u64, LoadError> {
        let text = self.string()?;
        units::parse_duration_ms(&text).map_err(|e| self.invalid(e))
    }

    /// A byte size (`512m`, `1g`, `1024`).
    pub fn bytes(&self) -> Result<u64, LoadError> {
        let text = self.string()?;
        units::parse_bytes(&text).map_err(|e| self.invalid(e))
    }

    /// A file mode: an integer (YAML octal `0440` is already decoded) or an octal string.
    pub fn mode(&self) -> Result<u32, LoadError> {
        let mode = match &self.node.value {
            Value::String { text, .. } => u32::from_str_radix(text.trim(), 8)
                .map_err(|_| self.invalid(format!("expected an octal file mode, got {text:?}")))?,
            _ => u32::try_from(self.int()?)
                .map_err(|_| self.invalid("file mode must not be negative"))?,
        };
        if mode > 0o7777 {
            return Err(self.invalid(format!("file mode {mode:o} is out of range")));
        }
        Ok(mode)
    }

    /// A list of scalars.
    pub fn string_list(&self) -> Result<Vec<String>, LoadError> {
        self.items()?.iter().map(|item| item.string()).collect()
    }

    /// compose's `list_or_dict`: `["K=V", "K"]` or `{K: V, K: null}`. `separators`
    /// are tried in order to split list items (`=`, and `:` for `extra_hosts`).
    pub fn list_or_dict(
        &self,
        separators: &[char],
    ) -> Result<Vec<(String, Option<String>)>, LoadError> {
        match &self.node.value {
            Value::Seq(_) => self
                .items()?
                .iter()
                .map(|item| {
                    let text = item.string()?;
                    let split = separators.iter().find_map(|sep| text.split_once(*sep));
                    Ok(match split {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (text, None),
                    })
                })
                .collect(),
            Value::Map(_) => self
                .entries()?
                .into_iter()
                .map(|(key, value)| {
                    let value = match &value.node.value {
                        Value::Null => None,
                        _ => Some(value.string()?),
                    };
                    Ok((key.to_string(), value))
                })
                .collect(),
            _ => Err(self.expected("a list or a mapping")),
        }
    }

    /// A `list_or_dict` where a missing value means the empty string (labels, sysctls).
    pub fn string_map(&self, separators: &[char]) -> Result<BTreeMap<String, String>, LoadError> {
        Ok(self
            .list_or_dict(separators)?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect())
    }
}

/// The checked entries of a mapping.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    entries: &'a [(String, Node)],
    path: String,
}

impl<'a> Fields<'a> {
    /// The field named `key`; `None` when absent or null (compose treats both alike).
    pub fn get(&self, key: &str) -> Option<Field<'a>> {
        self.entries
            .iter()
            .find(|(k, v)| k == key && v.value != Value::Null)
            .map(|(k, node)| Field {
                node,
                path: join(&self.path, k),
            })
    }

    pub fn keys(&self) -> impl Iterator<Item = &'a str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, LoadError> {
        self.get(key).map(|f| f.string()).transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        self.get(key).map(|f| f.bool()).transpose()
    }

    pub fn uint(&self, key: &str) -> Result<Option<u64>, LoadError> {
        self.get(key).map(|f| f.uint()).transpose()
    }

    pub fn duration_ms(&self, key: &str) -> Result<Option<u64>, LoadError> {
        self.get(key).map(|f| f.duration_ms()).transpose()
    }

    pub fn string_map(
        &self,
        key: &str,
        separators: &[char],
    ) -> Result<BTreeMap<String, String>, LoadError> {
        Ok(self
            .get(key)
            .map(|f| f.string_map(separators))
            .transpose()?
            .unwrap_or_default())
    }
}

/// `parent.key`, or `key` at the top.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn article(node: &Node) -> &'static str {
    match &node.value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a number",
        Value::String { .. } => "a string",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
    }
}

/// The allowed key closest to `key`, when it is close enough to be a typo.
fn did_you_mean<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    allowed
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(d, candidate)| *d <= 2.max(candidate.len() / 4) && *d < candidate.len())
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            let insert = current[j] + 1;
            let delete = previous[j + 1] + 1;
            current.push(substitute.min(insert).min(delete));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(did_you_mean("prots", &["ports", "expose"]), Some("ports"));
        assert_eq!(did_you_mean("imag", &["image", "ipc"]), Some("image"));
        assert_eq!(did_you_mean("frobnicate", &["ports", "image"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
