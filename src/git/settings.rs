//! Per-repository source settings, as embedded in the daemon configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::render::files::DEFAULT_MAX_FILE_SIZE;

/// Default time between two polls of a repository.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Default bound on each network operation (ls-remote, fetch) of a poll.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default directory holding the mirrors.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/stackd";

/// One repository to follow.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RepoSettings {
    /// The repository's name in stackd (status page, events, triggers).
    pub name: String,
    /// `https://`, `http://`, `ssh://`, `user@host:path`, `file://` or a local path.
    pub url: String,
    /// A branch, a tag, a full `refs/...` name, or a full 40-hex commit SHA.
    #[serde(rename = "ref", default = "default_ref")]
    pub git_ref: String,
    /// Globs of directories to scan for stacks; empty means the whole repository.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Time between polls (`60`, `"60s"`, `"5m"`); each wait gets ±10% jitter.
    #[serde(
        default = "default_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub interval: Duration,
    /// Bound on each network operation (ls-remote, fetch): past it the operation
    /// is killed and the poll fails with the label `timeout`.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_timeout")]
    pub timeout: Duration,
    #[serde(default)]
    pub auth: Option<Auth>,
    /// File holding the shared secret that webhooks for this repository are signed with.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Per-file read limit for files in the repository.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: u64,
    /// Only commits signed by these trusted keys are applied.
    #[serde(default)]
    pub verify: Option<super::verify::Verify>,
    /// Keys for SOPS-encrypted files in the repository.
    #[serde(default)]
    pub decryption: Option<Decryption>,
}

/// `decryption:`: where the age identities for SOPS files are, read at each poll.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Decryption {
    /// A file of age X25519 identities (`AGE-SECRET-KEY-1…` lines, as age-keygen writes).
    pub age_key_file: PathBuf,
}

/// Credentials, always read from files (mounted Kubernetes Secrets) at poll time.
/// Serialised only to hand them to the Git worker process (paths, no secrets).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Auth {
    /// HTTP basic auth; the password or token comes from `password_file`.
    #[serde(rename_all = "camelCase")]
    Https {
        username: String,
        password_file: PathBuf,
    },
    /// An SSH private key; the server's key must be listed in `known_hosts_file`.
    #[serde(rename_all = "camelCase")]
    Ssh {
        #[serde(default = "default_ssh_user")]
        username: String,
        private_key_file: PathBuf,
        known_hosts_file: PathBuf,
    },
}

impl RepoSettings {
    /// Settings with defaults for everything but the name, URL and ref.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        git_ref: impl Into<String>,
    ) -> Self {
        RepoSettings {
            name: name.into(),
            url: url.into(),
            git_ref: git_ref.into(),
            paths: Vec::new(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            auth: None,
            webhook_secret_file: None,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            verify: None,
            decryption: None,
        }
    }

    /// The URL for display: userinfo removed.
    pub fn redacted_url(&self) -> String {
        super::redact::redact_url(&self.url)
    }
}

fn default_ref() -> String {
    "main".to_string()
}

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_max_file_size() -> u64 {
    DEFAULT_MAX_FILE_SIZE
}

fn default_ssh_user() -> String {
    "git".to_string()
}

/// Accepts whole seconds as a number, or a string such as `"90s"`, `"5m"`, `"1h"`, `"500ms"`.
fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_named(d, "interval")
}

fn deserialize_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_named(d, "timeout")
}

fn duration_named<'de, D: Deserializer<'de>>(d: D, what: &str) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid {what} {t:?}: expected e.g. \"60s\", \"5m\", \"1h\""
            ))
        }),
    }
}

/// Parses `"<number><unit>"` with unit `ms`, `s`, `m` or `h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

/// The ref as the poller understands it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefSpec {
    /// A fixed commit: nothing to ask the remote once it is in the mirror.
    Commit(git2::Oid),
    /// A symbolic name, looked up in the remote's advertisement.
    Name(String),
}

impl RefSpec {
    pub fn parse(git_ref: &str) -> RefSpec {
        if git_ref.len() == 40
            && git_ref.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(oid) = git2::Oid::from_str(git_ref)
        {
            return RefSpec::Commit(oid);
        }
        RefSpec::Name(git_ref.to_string())
    }

    /// Remote ref names to try, in order, for a short name.
    pub fn candidates(name: &str) -> Vec<String> {
        if name.starts_with("refs/") {
            vec![name.to_string()]
        } else if name == "HEAD" {
            vec!["HEAD".to_string()]
        } else {
            vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserialises_with_defaults_and_auth() {
        let json = r#"{"name":"apps","url":"https://git.example.com/apps.git",
            "auth":{"type":"https","username":"bot","passwordFile":"/secrets/token"}}"#;
        let s: RepoSettings = serde_json::from_str(json).unwrap();
        assert_eq!(s.git_ref, "main");
        assert_eq!(s.interval, Duration::from_secs(60));
        assert_eq!(s.timeout, Duration::from_secs(60));
        assert_eq!(s.max_file_size, DEFAULT_MAX_FILE_SIZE);
        assert!(s.paths.is_empty());
        assert_eq!(
            s.auth,
            Some(Auth::Https {
                username: "bot".into(),
                password_file: "/secrets/token".into()
            })
        );

        let json = r#"{"name":"a","url":"git@h:o/r","ref":"v1","interval":"5m","paths":["stacks/*"],
            "auth":{"type":"ssh","privateKeyFile":"/k","knownHostsFile":"/kh"}}"#;
        let s: RepoSettings = serde_json::from_str(json).unwrap();
        assert_eq!(s.interval, Duration::from_secs(300));
        assert_eq!(s.timeout, Duration::from_secs(60));
        assert_eq!(s.paths, vec!["stacks/*"]);
        assert!(matches!(s.auth, Some(Auth::Ssh { ref username, .. }) if username == "git"));
        assert!(
            serde_json::from_str::<RepoSettings>(r#"{"name":"a","url":"u","interval":"soon"}"#)
                .is_err()
        );
        let s: RepoSettings =
            serde_json::from_str(r#"{"name":"a","url":"u","timeout":"2s"}"#).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert!(
            serde_json::from_str::<RepoSettings>(r#"{"name":"a","url":"u","timeout":"never"}"#)
                .is_err()
        );
    }

    #[test]
    fn durations_and_refs() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), None);
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert!(matches!(RefSpec::parse(sha), RefSpec::Commit(_)));
        assert_eq!(RefSpec::parse("main"), RefSpec::Name("main".into()));
        assert_eq!(
            RefSpec::candidates("v1"),
            vec!["refs/heads/v1", "refs/tags/v1"]
        );
        assert_eq!(RefSpec::candidates("refs/x/y"), vec!["refs/x/y"]);
    }
}
