//! `.env` and `env_file` parsing, with compose's dotenv syntax.
//!
//! Follows compose-go's `dotenv` parser: `#` comment lines, blank lines, an
//! optional `export ` prefix, `KEY=VALUE` or `KEY: VALUE`, bare `KEY` (inherited),
//! single-quoted literal values (only `\'` is an escape), double-quoted values with
//! shell escapes spanning several lines, and unquoted values that end at the line
//! end or at a ` #` inline comment. Unquoted and double-quoted values are
//! interpolated with earlier keys of the same file first, then `lookup`.

use std::collections::HashMap;

use super::error::{At, LoadError};
use super::interpolate::{self, InterpolateError, Substituted};
use super::node::Mark;
use crate::render::files::RepoPath;

/// Parses dotenv `text` read from `file`. `lookup` resolves `${VAR}` references
/// inside values (earlier keys of the same file take precedence over it).
/// A bare `KEY` line yields `(KEY, None)`.
pub fn parse(
    text: &str,
    file: &RepoPath,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Option<String>)>, LoadError> {
    let mut parser = Parser {
        file,
        lookup,
        line: 1,
        entries: Vec::new(),
        known: HashMap::new(),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    parser.run(text)?;
    Ok(parser.entries)
}

struct Parser<'a> {
    file: &'a RepoPath,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// The 1-based line the parser is at, for error messages.
    line: u32,
    entries: Vec<(String, Option<String>)>,
    /// Values defined so far, for interpolation of later values.
    known: HashMap<String, String>,
}

impl Parser<'_> {
    fn run(&mut self, mut rest: &str) -> Result<(), LoadError> {
        loop {
            rest = self.statement_start(rest);
            if rest.is_empty() {
                return Ok(());
            }
            let (key, after, inherited) = self.key(rest)?;
            if inherited {
                rest = after;
                self.entries.push((key, None));
                continue;
            }
            let (value, after) = self.value(&key, after)?;
            rest = after;
            self.known.insert(key.clone(), value.clone());
            self.entries.push((key, Some(value)));
        }
    }

    /// Skips whitespace, blank lines and comment lines, counting lines.
    fn statement_start<'t>(&mut self, mut text: &'t str) -> &'t str {
        loop {
            let trimmed = text.trim_start();
            self.line += count_newlines(&text[..text.len() - trimmed.len()]);
            text = trimmed;
            if !text.starts_with('#') {
                return text;
            }
            match text.find('\n') {
                Some(end) => text = &text[end..],
                None => return "",
            }
        }
    }

    /// Reads the key; returns it, the text after the separator, and whether the line
    /// is a bare `KEY` (inherited from the environment).
    fn key<'t>(&mut self, text: &'t str) -> Result<(String, &'t str, bool), LoadError> {
        let text = match text.strip_prefix("export") {
            Some(after) if after.starts_with([' ', '\t']) => after.trim_start_matches([' ', '\t']),
            _ => text,
        };
        for (i, c) in text.char_indices() {
            match c {
                '=' | ':' | '\n' => {
                    let key = text[..i].trim_end().to_string();
                    let after = &text[i + c.len_utf8()..];
                    if key.is_empty() {
                        return Err(self.error(format!("missing variable name before {c:?}")));
                    }
                    if key.contains([' ', '\t']) {
                        return Err(self.spaced_key(&key));
                    }
                    if c == '\n' {
                        self.line += 1;
                        return Ok((key, after, true));
                    }
                    return Ok((key, after.trim_start_matches([' ', '\t']), false));
                }
                ' ' | '\t' | '\r' | '_' | '.' | '-' | '[' | ']' => {}
                c if c.is_alphanumeric() => {}
                // The line is not echoed: past the bad character it may hold a value.
                other => {
                    return Err(
                        self.error(format!("unexpected character {other:?} in a variable name"))
                    );
                }
            }
        }
        // A bare key on the last line. Empty after a lone `export ` (found by fuzzing):
        // refused like `export \n` on an earlier line, never returned as a "" key.
        let key = text.trim_end().to_string();
        if key.is_empty() {
            return Err(self.error("missing variable name after \"export\"".to_string()));
        }
        if key.contains([' ', '\t']) {
            return Err(self.spaced_key(&key));
        }
        Ok((key, "", true))
    }

    /// Reads the value of `key`; returns it and the text after it. Errors name
    /// the key, never the value: values are often secrets, and errors reach logs,
    /// the status page and the API.
    fn value<'t>(&mut self, key: &str, text: &'t str) -> Result<(String, &'t str), LoadError> {
        let quote = match text.chars().next() {
            Some(q @ ('"' | '\'')) => q,
            _ => return self.unquoted(key, text),
        };
        let start_line = self.line;
        let mut chars = String::new();
        let mut escaped = false;
        for (i, c) in text.char_indices().skip(1) {
            if c == '\n' {
                self.line += 1;
            }
            if c != quote {
                if !escaped && c == '\\' {
                    escaped = true;
                    continue;
                }
                if escaped {
                    escaped = false;
                    chars.push('\\');
                }
                chars.push(c);
                continue;
            }
            if escaped {
                escaped = false;
                chars.push(c);
                continue;
            }
            let rest = &text[i + 1..];
            // Anything after the closing quote up to the line end is a comment or space.
            let rest = match rest.find('\n') {
                Some(end) => &rest[end..],
                None => "",
            };
            if quote == '\'' {
                return Ok((chars, rest));
            }
            let value = self.expand(key, &expand_escapes(&chars))?;
            return Ok((value, rest));
        }
        self.line = start_line;
        Err(self.error(format!(
            "unterminated quoted value of {key:?} (missing closing {quote})"
        )))
    }

    fn unquoted<'t>(&mut self, key: &str, text: &'t str) -> Result<(String, &'t str), LoadError> {
        let (value, rest) = text.split_once('\n').unwrap_or((text, ""));
        let value = value.split_once(" #").map_or(value, |(v, _)| v);
        let value = self.expand(key, value.trim_end())?;
        self.line += 1;
        Ok((value, rest))
    }

    fn expand(&self, key: &str, value: &str) -> Result<String, LoadError> {
        let lookup = |name: &str| {
            self.known
                .get(name)
                .cloned()
                .or_else(|| (self.lookup)(name))
        };
        match interpolate::substitute(value, &lookup) {
            Ok(Substituted { text, .. }) => Ok(text),
            // `Required` carries only a variable name and the file's own message;
            // the others would quote the value.
            Err(e @ InterpolateError::Required { .. }) => Err(self.error(e.to_string())),
            Err(InterpolateError::Unterminated(_)) => Err(self.error(format!(
                "unterminated \"${{\" in the value of {key:?}; write \"$$\" for a literal \"$\""
            ))),
            Err(InterpolateError::Invalid(_)) => Err(self.error(format!(
                "invalid interpolation format in the value of {key:?}; write \"$$\" for a literal \"$\""
            ))),
        }
    }

    /// A key with a space, usually a forgotten `=` (`API_KEY hunter2`): only its
    /// first word is quoted, since the rest may be the value.
    fn spaced_key(&self, key: &str) -> LoadError {
        let first = key.split([' ', '\t']).next().unwrap_or_default();
        self.error(format!(
            "variable name {first:?} is followed by a space (missing \"=\"?)"
        ))
    }

    fn error(&self, message: String) -> LoadError {
        let file = std::sync::Arc::new(self.file.clone());
        let base = std::sync::Arc::new(self.file.parent());
        let mark = Mark {
            file,
            line: self.line,
            column: 0,
            base,
        };
        LoadError::Interpolation {
            at: At::new(&mark, ""),
            message: format!("invalid env file: {message}"),
        }
    }
}

fn count_newlines(text: &str) -> u32 {
    text.bytes().filter(|b| *b == b'\n').count() as u32
}

/// Shell escapes in double-quoted values; `\$` stays a literal dollar (as `$$`,
/// which interpolation then turns into `$`).
fn expand_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('a') => out.push('\u{7}'),
            Some('b') => out.push('\u{8}'),
            Some('c') => {
                // Go's strconv has no `\c`; compose-go leaves it as is.
                out.push_str("\\c");
            }
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('v') => out.push('\u{b}'),
            Some('$') => out.push_str("$$"),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('0') => {
                chars.next();
                let mut digits = String::new();
                while digits.len() < 3 {
                    match chars.peek() {
                        Some(d @ '0'..='7') => {
                            digits.push(*d);
                            chars.next();
                        }
                        _ => break,
                    }
                }
                let code = u32::from_str_radix(&digits, 8).unwrap_or(0);
                out.push(char::from_u32(code).unwrap_or('\0'));
                continue;
            }
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/corpus/compose-go/dotenv/fixtures"
    );

    fn parse_str(text: &str) -> Result<Vec<(String, Option<String>)>, LoadError> {
        parse(text, &RepoPath::new("app/.env").unwrap(), &|name| {
            (name == "FROM_OUTSIDE").then(|| "outside".to_string())
        })
    }

    fn fixture(name: &str) -> Result<Vec<(String, Option<String>)>, LoadError> {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
        parse(&text, &RepoPath::new(name).unwrap(), &|_| None)
    }

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn plain_and_bom() {
        let expected = pairs(&[
            ("OPTION_A", "1"),
            ("OPTION_B", "2"),
            ("OPTION_C", "3"),
            ("OPTION_D", "4"),
            ("OPTION_E", "5"),
            ("456", "ABC"),
            ("OPTION_F", ""),
            ("OPTION_G", ""),
            ("OPTION_H", "my string"),
        ]);
        assert_eq!(fixture("plain.env").unwrap(), expected);
        assert_eq!(fixture("utf8-bom.env").unwrap(), expected);
    }

    #[test]
    fn quoted() {
        assert_eq!(
            fixture("quoted.env").unwrap(),
            pairs(&[
                ("OPTION_A", "1"),
                ("OPTION_B", "2"),
                ("OPTION_C", ""),
                ("OPTION_D", "\\n"),
                ("OPTION_E", "1"),
                ("OPTION_F", "2"),
                ("OPTION_G", ""),
                ("OPTION_H", "\n"),
                ("OPTION_I", "echo 'asd'"),
                ("OPTION_J", "first line\nsecond line\nthird line\nand so on"),
                ("OPTION_K", "Let's go!"),
                ("OPTION_Z", "last value"),
            ])
        );
    }

    #[test]
    fn exported_equals_special_unquoted() {
        assert_eq!(
            fixture("exported.env").unwrap(),
            pairs(&[("OPTION_A", "2"), ("OPTION_B", "\\n")])
        );
        assert_eq!(
            fixture("equals.env").unwrap(),
            pairs(&[(
                "OPTION_A",
                "postgres://localhost:5432/database?sslmode=disable"
            )])
        );
        assert_eq!(
            fixture("special.env").unwrap(),
            pairs(&[
                ("VAR.WITH.DOTS", "dots"),
                ("VAR_WITH_UNDERSCORES", "underscores"),
                ("VAR-WITH-DASHES", "dashes"),
            ])
        );
        assert_eq!(
            fixture("unquoted.env").unwrap(),
            pairs(&[
                ("OPTION_A", "some quoted phrase"),
                ("OPTION_B", "first one with an unquoted phrase"),
                ("OPTION_C", "then another one with an unquoted phrase"),
                (
                    "OPTION_D",
                    "then another one with an unquoted phrase special è char"
                ),
                ("OPTION_E", "then another one quoted phrase"),
            ])
        );
    }

    #[test]
    fn substitutions() {
        let expected = pairs(&[
            ("OPTION_A", "1"),
            ("OPTION_B", "1"),
            ("OPTION_C", "1"),
            ("OPTION_D", "1_1"),
            ("OPTION_E", ""),
        ]);
        assert_eq!(fixture("substitutions.env").unwrap(), expected);
        assert_eq!(fixture("substitutions-default.env").unwrap(), expected);
    }

    #[test]
    fn inherited_keys_have_no_value() {
        assert_eq!(
            fixture("inherited-multi-var.env").unwrap(),
            vec![
                ("foo".to_string(), Some("bar".to_string())),
                ("VAR_TO_BE_LOADED_FROM_OS_ENV".to_string(), None),
                ("bar".to_string(), Some("baz".to_string())),
            ]
        );
        assert_eq!(
            fixture("inherited-not-found.env").unwrap(),
            vec![("VARIABLE_NOT_FOUND".to_string(), None)]
        );
        assert_eq!(
            fixture("inherited-single-var.env").unwrap(),
            vec![("VAR_TO_BE_LOADED_FROM_OS_ENV".to_string(), None)]
        );
    }

    #[test]
    fn invalid_fixture_names_file_and_line() {
        let err = fixture("invalid1.env").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid1.env:7:0: invalid env file: variable name \"INVALID\" is followed by a space (missing \"=\"?)"
        );
    }

    #[test]
    fn escapes_lookup_and_literal_single_quotes() {
        assert_eq!(
            parse_str(
                "A=\"tab\\there \\$HOME \\\"q\\\"\"\nB='${A} $x'\nC=${FROM_OUTSIDE}-$A\nexport D=x # comment\nE: yaml\n"
            )
            .unwrap(),
            pairs(&[
                ("A", "tab\there $HOME \"q\""),
                ("B", "${A} $x"),
                ("C", "outside-tab\there $HOME \"q\""),
                ("D", "x"),
                ("E", "yaml"),
            ])
        );
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_str("A=1\nB=\"open\n\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "app/.env:2:0: invalid env file: unterminated quoted value of \"B\" (missing closing \")"
        );
        let err = parse_str("A=1\nB=${C:?needed}\n").unwrap_err();
        assert!(err.to_string().starts_with("app/.env:2:0: "), "{err}");
        let err = parse_str("A=1\n\nB$=2\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("app/.env:3:0: invalid env file: unexpected character '$'"),
            "{err}"
        );
    }

    /// Values are often secrets, and errors reach logs and the status page.
    #[test]
    fn errors_never_quote_a_value() {
        for text in [
            "A=\"hunter2-value\n",
            "A=hunter2-value${\n",
            "A=\"hunter2-value${\"\n",
            "A=hunter2-value${1x}\n",
            "hunter2-value$=1\n",
            "A hunter2-value\n",
            "A hunter2 value\n",
            "A b hunter2=value\n",
        ] {
            let err = parse_str(text).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{text:?}: {err}");
            assert!(err.starts_with("app/.env:1:0: invalid env file: "), "{err}");
        }
        let err = parse_str("A=hunter2-value${\n").unwrap_err().to_string();
        assert!(
            err.contains("unterminated \"${\" in the value of \"A\""),
            "{err}"
        );
    }

    /// Every short input over the characters that matter never panics.
    #[test]
    fn short_inputs_never_panic() {
        let alphabet = [
            'A', '=', ':', '"', '\'', '\\', '\n', ' ', '#', '$', '{', 'é',
        ];
        let mut input = String::new();
        for n in 0..alphabet.len().pow(5) {
            input.clear();
            let mut n = n;
            for _ in 0..5 {
                input.push(alphabet[n % alphabet.len()]);
                n /= alphabet.len();
            }
            let _ = parse_str(&input);
        }
    }
}
