//! Variable interpolation, per the Compose Specification: `$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
//! `${VAR:+alternative}`, `${VAR+alternative}`, nesting in the argument
//! (`${A:-${B:-x}}`) and `$$` for a literal `$`.
//!
//! Like compose-go, a `$` not followed by a name, `{` or `$` stays literal
//! (`$1`, `$ `), while a malformed `${...}` is an error.

use std::collections::BTreeMap;

use super::error::{At, LoadError};
use super::node::{Node, Value};

/// Why a string could not be interpolated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("unterminated \"${{\" in {0:?}; write \"$$\" for a literal \"$\"")]
    Unterminated(String),
    #[error("invalid interpolation format \"${{{0}}}\"; write \"$$\" for a literal \"$\"")]
    Invalid(String),
    #[error("required variable {name} is missing a value{}", detail(.message))]
    Required { name: String, message: String },
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl InterpolateError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            InterpolateError::Unterminated(_) => "unterminated",
            InterpolateError::Invalid(_) => "invalid",
            InterpolateError::Required { .. } => "required",
        }
    }
}

/// An interpolated string and the variables it used that were not set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Substituted {
    pub text: String,
    /// Variables referenced without a default that were unset (they became "").
    pub unset: Vec<String>,
}

/// Interpolates `text`, resolving names with `lookup`.
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, InterpolateError> {
    let mut unset = Vec::new();
    let text = substitute_into(text, lookup, &mut unset)?;
    Ok(Substituted { text, unset })
}

fn substitute_into(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let end = name_end(after);
                let name = &after[..end];
                match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => unset.push(name.to_string()),
                }
                rest = &after[end..];
            }
            Some('{') => {
                let close = closing_brace(&rest[dollar..])
                    .ok_or_else(|| InterpolateError::Unterminated(text.to_string()))?;
                // `close` indexes from the `$`; the braced body sits between `${` and `}`.
                let body = &rest[dollar + 2..dollar + close];
                out.push_str(&braced(body, lookup, unset)?);
                rest = &rest[dollar + close + 1..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The length of the variable name at the start of `text`.
fn name_end(text: &str) -> usize {
    text.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(text.len())
}

/// The index of the `}` closing the `${` at the start of `text`, counting nested
/// `${` (compose-go's rule: only `${` opens, any `}` closes).
fn closing_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut open = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'}' {
            open = open.saturating_sub(1);
            if open == 0 {
                return Some(i);
            }
        } else if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            open += 1;
            i += 1;
        }
        i += 1;
    }
    None
}

/// Expands the body of `${...}`.
fn braced(
    body: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, InterpolateError> {
    let invalid = || InterpolateError::Invalid(body.to_string());
    let starts_well = body
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic());
    if !starts_well {
        return Err(invalid());
    }
    let end = name_end(body);
    let name = &body[..end];
    let operator = &body[end..];
    let value = lookup(name);
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (op, argument) = ["-", ":-", "?", ":?", "+", ":+"]
        .iter()
        .find_map(|op| operator.strip_prefix(op).map(|arg| (*op, arg)))
        .unwrap_or(("", operator));
    let mut expand = |arg: &str| substitute_into(arg, lookup, unset);
    match op {
        "" if argument.is_empty() => match value {
            Some(value) => Ok(value),
            None => {
                unset.push(name.to_string());
                Ok(String::new())
            }
        },
        ":-" if non_empty => Ok(value.unwrap_or_default()),
        "-" if set => Ok(value.unwrap_or_default()),
        ":-" | "-" => expand(argument),
        ":?" if non_empty => Ok(value.unwrap_or_default()),
        "?" if set => Ok(value.unwrap_or_default()),
        ":?" | "?" => Err(InterpolateError::Required {
            name: name.to_string(),
            message: expand(argument)?,
        }),
        ":+" if non_empty => expand(argument),
        "+" if set => expand(argument),
        ":+" | "+" => Ok(String::new()),
        _ => Err(invalid()),
    }
}

/// Interpolates every string scalar value (not keys) of `node`, whose YAML path is
/// `path`. Unset variables become "" and add a warning to `warnings` (once each).
pub fn interpolate_tree(
    node: &mut Node,
    path: &str,
    variables: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<(), LoadError> {
    match &mut node.value {
        Value::String { text, .. } => {
            if !text.contains('$') {
                return Ok(());
            }
            let lookup = |name: &str| variables.get(name).cloned();
            let done = substitute(text, &lookup).map_err(|e| LoadError::Interpolation {
                at: At::new(&node.mark, path),
                message: e.to_string(),
            })?;
            *text = done.text;
            for name in done.unset {
                let warning = unset_warning(&name);
                if !warnings.contains(&warning) {
                    warnings.push(warning);
                }
            }
            Ok(())
        }
        Value::Seq(items) => items.iter_mut().enumerate().try_for_each(|(i, item)| {
            interpolate_tree(item, &format!("{path}[{i}]"), variables, warnings)
        }),
        Value::Map(entries) => entries.iter_mut().try_for_each(|(key, value)| {
            interpolate_tree(value, &child_path(path, key), variables, warnings)
        }),
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => Ok(()),
    }
}

/// The warning for an unset variable.
pub fn unset_warning(name: &str) -> String {
    format!("variable \"{name}\" is not set, using an empty string")
}

/// `parent.key`, or `key` at the top.
pub fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::compose::yaml;
    use crate::render::files::RepoPath;
    use pretty_assertions::assert_eq;

    fn vars() -> BTreeMap<String, String> {
        [
            ("SET", "value"),
            ("EMPTY", ""),
            ("B", "bee"),
            ("PORT", "8080"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn sub(text: &str) -> Result<Substituted, InterpolateError> {
        let vars = vars();
        substitute(text, &|name| vars.get(name).cloned())
    }

    fn text(input: &str) -> String {
        sub(input).unwrap().text
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(text("$SET/${SET}-$SET_x.${PORT}"), "value/value-.8080");
        assert_eq!(sub("$SET_x").unwrap().unset, vec!["SET_x".to_string()]);
        assert_eq!(text("a$$b $$SET $$$SET"), "a$b $SET $value");
        assert_eq!(
            text("price $5 and $ alone and end$"),
            "price $5 and $ alone and end$"
        );
    }

    #[test]
    fn defaults() {
        assert_eq!(text("${SET:-d} ${EMPTY:-d} ${UNSET:-d}"), "value d d");
        assert_eq!(text("${SET-d} ${EMPTY-d} ${UNSET-d}"), "value  d");
        assert_eq!(text("${UNSET:-}"), "");
        assert_eq!(sub("${UNSET:-d}").unwrap().unset, Vec::<String>::new());
        assert_eq!(text("${UNSET:-a:b-c}"), "a:b-c");
    }

    #[test]
    fn alternatives() {
        assert_eq!(text("${SET:+alt} ${EMPTY:+alt} ${UNSET:+alt}"), "alt  ");
        assert_eq!(text("${SET+alt} ${EMPTY+alt} ${UNSET+alt}"), "alt alt ");
        assert_eq!(text("${SET:+$B}"), "bee");
    }

    #[test]
    fn nested() {
        assert_eq!(text("${UNSET:-${B:-x}}"), "bee");
        assert_eq!(text("${UNSET:-${ALSO_UNSET:-x}}/y"), "x/y");
        assert_eq!(text("${UNSET:-${ALSO_UNSET:-${SET}}}"), "value");
        // The default is only expanded when used.
        assert_eq!(text("${SET:-${UNSET:?boom}}"), "value");
    }

    #[test]
    fn required() {
        assert_eq!(text("${SET:?need} ${EMPTY?need}"), "value ");
        assert_eq!(
            sub("${EMPTY:?please set EMPTY}").unwrap_err(),
            InterpolateError::Required {
                name: "EMPTY".into(),
                message: "please set EMPTY".into()
            }
        );
        let err = sub("${UNSET?}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "required variable UNSET is missing a value"
        );
        assert_eq!(err.label(), "required");
        let err = sub("${UNSET:?in ${SET}}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "required variable UNSET is missing a value: in value"
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(
            sub("x ${SET").unwrap_err(),
            InterpolateError::Unterminated("x ${SET".into())
        );
        assert_eq!(sub("${UNSET:-${B}").unwrap_err().label(), "unterminated");
        assert_eq!(
            sub("${}").unwrap_err(),
            InterpolateError::Invalid(String::new())
        );
        assert_eq!(
            sub("${1A}").unwrap_err(),
            InterpolateError::Invalid("1A".into())
        );
        assert_eq!(
            sub("${A B}").unwrap_err(),
            InterpolateError::Invalid("A B".into())
        );
        assert_eq!(
            sub("${A*x}").unwrap_err().to_string(),
            "invalid interpolation format \"${A*x}\"; write \"$$\" for a literal \"$\""
        );
    }

    #[test]
    fn tree_values_not_keys_with_paths_and_warnings() {
        let file = RepoPath::new("app/compose.yaml").unwrap();
        let mut node = yaml::parse(
            b"services:\n  $SET:\n    image: nginx:${TAG}\n    ports:\n      - ${PORT}:80\n      - 81\n    environment:\n      X: ${TAG}\n",
            &file,
            &file.parent(),
        )
        .unwrap();
        let mut warnings = Vec::new();
        interpolate_tree(&mut node, "", &vars(), &mut warnings).unwrap();
        let svc = node.get("services").unwrap().get("$SET").unwrap();
        assert_eq!(svc.get("image").unwrap().as_str(), Some("nginx:"));
        let ports = svc.get("ports").unwrap().as_seq().unwrap();
        assert_eq!(ports[0].as_str(), Some("8080:80"));
        assert_eq!(ports[1].value, Value::Int(81));
        assert_eq!(
            warnings,
            vec!["variable \"TAG\" is not set, using an empty string".to_string()]
        );

        let mut node = yaml::parse(
            b"services:\n  web:\n    ports:\n      - 80\n      - \"${X:?set X}\"\n",
            &file,
            &file.parent(),
        )
        .unwrap();
        let err = interpolate_tree(&mut node, "", &vars(), &mut warnings).unwrap_err();
        assert_eq!(err.label(), "interpolation");
        assert_eq!(
            err.to_string(),
            "app/compose.yaml:5:9: services.web.ports[1]: required variable X is missing a value: set X"
        );
    }

    /// Every short string over the characters that matter never panics.
    #[test]
    fn short_inputs_never_panic() {
        let alphabet = ['$', '{', '}', ':', '-', '?', '+', 'a', '_', '1', 'é'];
        let mut input = String::new();
        for n in 0..alphabet.len().pow(5) {
            input.clear();
            let mut n = n;
            for _ in 0..5 {
                input.push(alphabet[n % alphabet.len()]);
                n /= alphabet.len();
            }
            let _ = sub(&input);
        }
    }
}
