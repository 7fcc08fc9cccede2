//! Kubernetes names from compose names: DNS-1123 sanitising, validation and
//! collision detection.

use std::collections::BTreeMap;

use super::RenderError;

/// The longest DNS-1123 label (Service names, container names, pod volume names).
pub const MAX_LABEL: usize = 63;
/// The longest DNS-1123 subdomain (ConfigMap and Secret names).
pub const MAX_SUBDOMAIN: usize = 253;

/// Lower-cases `name` and turns `_` and `.` into `-`, as compose users expect
/// (`My_App.v2` → `my-app-v2`). Does not validate; see [`label`].
pub fn sanitise(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// A stack name from a directory name, as Docker Compose names a project after
/// its directory: lower case, only `a-z`, `0-9`, `_` and `-` kept, no leading
/// `_` or `-` (`My_App@v2.1` → `my_appv21`). Trailing ones go too: a
/// Kubernetes name cannot end with them. [`sanitise`] then turns `_` into `-`.
pub fn project_name(directory: &str) -> String {
    let kept: String = directory
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        .collect();
    kept.trim_matches(['_', '-']).to_string()
}

/// Why a string is not a DNS-1123 label, or `None` when it is one.
pub fn label_problem(name: &str, max: usize) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".to_string());
    }
    if name.len() > max {
        return Some(format!(
            "it is {} characters long, over the {max}-character limit",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "it contains {bad:?}; only a-z, 0-9 and '-' are allowed"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("it must start and end with a letter or digit".to_string());
    }
    None
}

/// Why a string is not a DNS-1123 subdomain (ConfigMap, Secret, claim names),
/// or `None` when it is one.
pub fn subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".to_string());
    }
    if name.len() > MAX_SUBDOMAIN {
        return Some(format!(
            "it is {} characters long, over the {MAX_SUBDOMAIN}-character limit",
            name.len()
        ));
    }
    name.split('.').find_map(|part| match part {
        "" => Some("it has an empty part between dots".to_string()),
        part => label_problem(part, MAX_SUBDOMAIN),
    })
}

/// `generated` as a valid DNS-1123 label of at most `max` characters, or
/// [`RenderError::InvalidName`] naming `origin` (the compose name it came from).
pub fn checked(generated: String, origin: &Origin, max: usize) -> Result<String, RenderError> {
    match label_problem(&generated, max) {
        None => Ok(generated),
        Some(reason) => Err(RenderError::InvalidName {
            origin: origin.to_string(),
            name: generated,
            reason,
        }),
    }
}

/// The compose element an object is generated from, for messages.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Stack(String),
    Service(String),
    Config(String),
    Secret(String),
    Volume(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Stack(n) => write!(f, "stack {n:?}"),
            Origin::Service(n) => write!(f, "service {n:?}"),
            Origin::Config(n) => write!(f, "config {n:?}"),
            Origin::Secret(n) => write!(f, "secret {n:?}"),
            Origin::Volume(n) => write!(f, "volume {n:?}"),
        }
    }
}

/// Every generated name per kind, so that two compose elements never silently
/// share one object (`web_1` and `web-1`, or service `web-published` and `web`'s
/// published Service).
#[derive(Debug, Default)]
pub struct NameRegistry {
    taken: BTreeMap<(&'static str, String), Origin>,
}

impl NameRegistry {
    /// Claims `name` for `kind`; a second claim by another origin is an error
    /// naming both. The same origin may claim a name twice (idempotent).
    pub fn claim(
        &mut self,
        kind: &'static str,
        name: &str,
        origin: &Origin,
    ) -> Result<(), RenderError> {
        match self.taken.get(&(kind, name.to_string())) {
            Some(first) if first != origin => Err(RenderError::NameCollision {
                kind,
                name: name.to_string(),
                first: first.to_string(),
                second: origin.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                self.taken.insert((kind, name.to_string()), origin.clone());
                Ok(())
            }
        }
    }
}

/// A readable, valid DNS-1123 fragment of arbitrary text (a file name, say):
/// lower case, runs of other characters become one `-`, no `-` at either end.
pub fn fragment(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// A ConfigMap or Secret key (`[-._a-zA-Z0-9]+`, not `.`/`..`, no leading `..`)
/// from a file path: other characters, including `/`, become `_`.
pub fn data_key(path: &str) -> String {
    let mut key: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if key.is_empty() || key.starts_with("..") || key == "." {
        key.insert(0, '_');
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitise_lowercases_and_replaces_separators() {
        assert_eq!(sanitise("My_App.v2"), "my-app-v2");
        assert_eq!(label_problem("my-app-v2", MAX_LABEL), None);
    }

    #[test]
    fn label_problems_are_explained() {
        assert_eq!(
            label_problem("-web", MAX_LABEL).as_deref(),
            Some("it must start and end with a letter or digit")
        );
        assert_eq!(
            label_problem("wéb", MAX_LABEL).as_deref(),
            Some("it contains 'é'; only a-z, 0-9 and '-' are allowed")
        );
        assert_eq!(
            label_problem(&"a".repeat(64), MAX_LABEL).as_deref(),
            Some("it is 64 characters long, over the 63-character limit")
        );
        assert_eq!(label_problem("", MAX_LABEL).as_deref(), Some("it is empty"));
    }

    #[test]
    fn registry_reports_both_origins() {
        let mut names = NameRegistry::default();
        let a = Origin::Service("web_1".into());
        names.claim("Service", "web-1", &a).unwrap();
        names.claim("Service", "web-1", &a).unwrap();
        names
            .claim("Deployment", "web-1", &Origin::Service("x".into()))
            .unwrap();
        let err = names
            .claim("Service", "web-1", &Origin::Service("web-1".into()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Service \"web-1\" would be generated for both service \"web_1\" and service \"web-1\""
        );
    }

    #[test]
    fn fragments_and_keys() {
        assert_eq!(fragment("Nginx.CONF"), "nginx-conf");
        assert_eq!(fragment("__"), "");
        assert_eq!(data_key("conf.d/site one.conf"), "conf.d_site_one.conf");
        assert_eq!(data_key("..hidden"), "_..hidden");
    }
}
