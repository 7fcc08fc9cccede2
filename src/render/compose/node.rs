//! A positioned YAML tree: what the loader reads compose files into.
//!
//! Every node remembers where it came from (file, line, column) and the directory
//! its relative paths resolve against, so that errors name the exact field and so
//! that paths from `extends` and `include` resolve against their own files.

use std::fmt;
use std::sync::Arc;

use crate::render::files::RepoPath;

/// Where a node was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The file the node was read from.
    pub file: Arc<RepoPath>,
    /// 1-based; 0 when unknown.
    pub line: u32,
    /// 1-based; 0 when unknown.
    pub column: u32,
    /// The directory relative paths in this node resolve against: the file's own
    /// directory, or an `include`'s `project_directory`.
    pub base: Arc<RepoPath>,
}

impl Mark {
    /// A mark for values that were not read from a file position (defaults, CLI input).
    pub fn synthetic(file: Arc<RepoPath>, base: Arc<RepoPath>) -> Self {
        Mark {
            file,
            line: 0,
            column: 0,
            base,
        }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        } else {
            write!(f, "{}", self.file)
        }
    }
}

/// The YAML tags compose gives meaning to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// `!reset`: remove the value inherited from earlier files or `extends`.
    Reset,
    /// `!override`: replace the inherited value instead of merging with it.
    Override,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string scalar; `quoted` is false for plain scalars.
    String {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys in document order; keys are always strings in compose.
    Map(Vec<(String, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub tag: Option<Tag>,
    pub mark: Mark,
}

impl Node {
    pub fn new(value: Value, mark: Mark) -> Self {
        Node {
            value,
            tag: None,
            mark,
        }
    }

    /// The value of `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(String, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The scalar as compose would read it into a string field: numbers and
    /// booleans are spelled back out; `None` for null, sequences and mappings.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::String { text, .. } => Some(text.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The tree in one line, marks left out: `{services: {web: {ports: [80]}}}`.
    #[cfg(test)]
    pub fn compact(&self) -> String {
        match &self.value {
            Value::Null => "~".into(),
            Value::Seq(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(Node::compact)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Map(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.compact()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => self.scalar_text().unwrap_or_default(),
        }
    }

    /// A short name of the node's YAML type, for "expected X, got Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::String { .. } => "string",
            Value::Seq(_) => "sequence",
            Value::Map(_) => "mapping",
        }
    }
}
