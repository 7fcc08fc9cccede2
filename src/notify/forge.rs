//! Commit statuses on GitHub, GitLab and Gitea/Forgejo: the repository key
//! `commitStatus`, resolved against the repository's Git URL, and the exact
//! request each forge documents. Pure: the token is passed in, nothing is sent.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::CommitState;
use super::send::Request;

/// `repositories[].commitStatus` as written in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommitStatusConfig {
    /// `github`, `gitlab` or `gitea` (Forgejo too).
    pub provider: String,
    /// A file holding the API token; read for every status, so it can be rotated.
    pub token_file: PathBuf,
    /// The API's base URL; defaults per provider.
    #[serde(default)]
    pub api_url: Option<String>,
    /// `OWNER/NAME` (GitLab: the project's full path); derived from the Git URL when possible.
    #[serde(default)]
    pub repository: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
}

/// A resolved `commitStatus`: where to post and as which repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forge {
    pub provider: Provider,
    /// Without a trailing `/`.
    pub api_url: String,
    pub repository: String,
    pub token_file: PathBuf,
}

/// Resolves `config` for a repository cloned from `git_url`. The error names
/// the field below `commitStatus` and says why.
pub fn resolve(
    config: &CommitStatusConfig,
    git_url: &str,
) -> Result<Forge, (&'static str, String)> {
    let provider = match config.provider.as_str() {
        "github" => Provider::GitHub,
        "gitlab" => Provider::GitLab,
        "gitea" | "forgejo" => Provider::Gitea,
        other => {
            return Err((
                "provider",
                format!("unknown provider {other:?} (expected github, gitlab or gitea)"),
            ));
        }
    };
    std::fs::metadata(&config.token_file).map_err(|e| {
        (
            "tokenFile",
            format!("cannot read {}: {e}", config.token_file.display()),
        )
    })?;
    let git = parse_git_url(git_url);
    let api_url = match &config.api_url {
        Some(url) => {
            check_api_url(url).map_err(|m| ("apiUrl", m))?;
            url.trim_end_matches('/').to_string()
        }
        None => match (provider, &git) {
            (Provider::GitHub, _) => "https://api.github.com".to_string(),
            (Provider::GitLab, _) => "https://gitlab.com".to_string(),
            (Provider::Gitea, Some(git)) => git.web_base(),
            (Provider::Gitea, None) => {
                return Err((
                    "apiUrl",
                    "required for gitea: the Git URL names no server".to_string(),
                ));
            }
        },
    };
    let repository = match &config.repository {
        Some(repository) => repository.trim_matches('/').to_string(),
        None => {
            let derived = git.as_ref().filter(|git| {
                let known = match provider {
                    Provider::GitHub => "github.com",
                    Provider::GitLab => "gitlab.com",
                    Provider::Gitea => "",
                };
                git.host == known || Some(git.host.as_str()) == host_of(&api_url)
            });
            match derived {
                Some(git) => git.path.clone(),
                None => {
                    return Err((
                        "repository",
                        "cannot be derived from the Git URL; set it to OWNER/NAME".to_string(),
                    ));
                }
            }
        }
    };
    let segments: Vec<&str> = repository.split('/').collect();
    let shape_ok = match provider {
        Provider::GitLab => segments.len() >= 2,
        Provider::GitHub | Provider::Gitea => segments.len() == 2,
    };
    if !shape_ok || segments.iter().any(|s| s.is_empty() || s.contains(' ')) {
        return Err(("repository", format!("{repository:?} is not OWNER/NAME")));
    }
    Ok(Forge {
        provider,
        api_url,
        repository,
        token_file: config.token_file.clone(),
    })
}

/// An absolute `http(s)://host[:port][/path]` URL without query or credentials.
fn check_api_url(url: &str) -> Result<(), String> {
    let bad = || format!("{url:?} is not an http(s) URL such as https://git.example.com");
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let authority = uri.authority().ok_or_else(bad)?;
    if !scheme_ok || authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad());
    }
    if uri.query().is_some() {
        return Err(format!("{url:?} must not have a query"));
    }
    Ok(())
}

fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    Some(host.split(':').next().unwrap_or(host))
}

/// The server and repository path of a Git URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitLocation {
    pub scheme: String,
    pub host: String,
    pub port: Option<String>,
    /// `owner/name` (GitLab: `group/sub/name`), without `.git`.
    pub path: String,
}

impl GitLocation {
    /// The server's web address, where Gitea serves its API: HTTPS unless the
    /// repository itself is cloned over plain HTTP.
    fn web_base(&self) -> String {
        match (self.scheme.as_str(), &self.port) {
            ("http", Some(port)) => format!("http://{}:{port}", self.host),
            ("http", None) => format!("http://{}", self.host),
            ("https", Some(port)) => format!("https://{}:{port}", self.host),
            _ => format!("https://{}", self.host),
        }
    }
}

/// Parses `https://[user@]host[:port]/path(.git)`, `ssh://[user@]host[:port]/path`
/// and scp-like `user@host:path`. `None` for local paths and `file://`.
pub fn parse_git_url(url: &str) -> Option<GitLocation> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => {
            // scp-like: user@host:path (a `:` before any `/`).
            let (authority, path) = url.split_once(':')?;
            if authority.contains('/') || path.starts_with("//") {
                return None;
            }
            let host = authority.rsplit('@').next()?;
            return location("ssh", host, None, path);
        }
    };
    if !matches!(scheme.as_str(), "http" | "https" | "ssh" | "git") {
        return None;
    }
    let (authority, path) = rest.split_once('/')?;
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = match host_port.split_once(':') {
        Some((host, port)) => (host, Some(port.to_string())),
        None => (host_port, None),
    };
    location(&scheme, host, port, path)
}

fn location(scheme: &str, host: &str, port: Option<String>, path: &str) -> Option<GitLocation> {
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    if host.is_empty() || !path.contains('/') {
        return None;
    }
    Some(GitLocation {
        scheme: scheme.to_string(),
        host: host.to_ascii_lowercase(),
        port,
        path: path.to_string(),
    })
}

/// What one status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusUpdate {
    pub sha: String,
    pub state: CommitState,
    /// `stackd/<namespace>/<stack>`.
    pub context: String,
    /// One line, at most [`DESCRIPTION_LIMIT`] characters.
    pub description: String,
    pub target_url: Option<String>,
}

/// The longest description GitHub keeps whole.
pub const DESCRIPTION_LIMIT: usize = 140;

/// The first line of `text`, whitespace collapsed, cut to `limit` characters
/// (the last one `…` when cut).
pub fn one_line(text: &str, limit: usize) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let collapsed = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= limit {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode_component(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The request `forge` documents for creating a commit status.
pub fn request(forge: &Forge, token: &str, update: &StatusUpdate) -> Request {
    let mut body = Map::new();
    let sha = encode_component(&update.sha);
    let (url, headers, state) = match forge.provider {
        Provider::GitHub => {
            let (owner, name) = owner_name(&forge.repository);
            (
                format!("{}/repos/{owner}/{name}/statuses/{sha}", forge.api_url),
                vec![
                    ("Authorization".to_string(), format!("Bearer {token}")),
                    (
                        "Accept".to_string(),
                        "application/vnd.github+json".to_string(),
                    ),
                    ("X-GitHub-Api-Version".to_string(), "2022-11-28".to_string()),
                ],
                github_state(update.state),
            )
        }
        Provider::GitLab => (
            format!(
                "{}/api/v4/projects/{}/statuses/{sha}",
                forge.api_url,
                encode_component(&forge.repository)
            ),
            vec![
                ("PRIVATE-TOKEN".to_string(), token.to_string()),
                ("Accept".to_string(), "application/json".to_string()),
            ],
            match update.state {
                CommitState::Pending => "running",
                CommitState::Success => "success",
                CommitState::Failure => "failed",
            },
        ),
        Provider::Gitea => {
            let (owner, name) = owner_name(&forge.repository);
            (
                format!(
                    "{}/api/v1/repos/{owner}/{name}/statuses/{sha}",
                    forge.api_url
                ),
                vec![
                    ("Authorization".to_string(), format!("token {token}")),
                    ("Accept".to_string(), "application/json".to_string()),
                ],
                github_state(update.state),
            )
        }
    };
    body.insert("state".into(), json!(state));
    if let Some(target) = &update.target_url {
        body.insert("target_url".into(), json!(target));
    }
    body.insert("description".into(), json!(update.description));
    let label = if forge.provider == Provider::GitLab {
        "name"
    } else {
        "context"
    };
    body.insert(label.into(), json!(update.context));
    Request {
        url,
        headers,
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    }
}

fn github_state(state: CommitState) -> &'static str {
    match state {
        CommitState::Pending => "pending",
        CommitState::Success => "success",
        CommitState::Failure => "failure",
    }
}

fn owner_name(repository: &str) -> (String, String) {
    let (owner, name) = repository.split_once('/').unwrap_or((repository, ""));
    (encode_component(owner), encode_component(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        provider: &str,
        api_url: Option<&str>,
        repository: Option<&str>,
    ) -> CommitStatusConfig {
        CommitStatusConfig {
            provider: provider.into(),
            // Any file that exists.
            token_file: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
            api_url: api_url.map(str::to_string),
            repository: repository.map(str::to_string),
        }
    }

    #[test]
    fn git_urls_give_server_and_path() {
        let cases = [
            (
                "https://github.com/acme/shop.git",
                "github.com",
                "acme/shop",
            ),
            (
                "https://user@github.com/acme/shop",
                "github.com",
                "acme/shop",
            ),
            ("git@github.com:acme/shop.git", "github.com", "acme/shop"),
            (
                "ssh://git@gitlab.com:22/group/sub/app.git",
                "gitlab.com",
                "group/sub/app",
            ),
            (
                "https://git.example.com:3000/team/apps.git/",
                "git.example.com",
                "team/apps",
            ),
        ];
        for (url, host, path) in cases {
            let location = parse_git_url(url).unwrap_or_else(|| panic!("{url}"));
            assert_eq!(
                (location.host.as_str(), location.path.as_str()),
                (host, path),
                "{url}"
            );
        }
        assert_eq!(parse_git_url("/srv/git/apps"), None);
        assert_eq!(parse_git_url("file:///srv/git/apps"), None);
        assert_eq!(parse_git_url("https://example.com/apps"), None);
    }

    #[test]
    fn repository_and_api_url_are_derived_per_provider() {
        let github = resolve(
            &config("github", None, None),
            "git@github.com:acme/shop.git",
        )
        .unwrap();
        assert_eq!(
            (github.api_url.as_str(), github.repository.as_str()),
            ("https://api.github.com", "acme/shop")
        );
        let gitlab = resolve(
            &config("gitlab", None, None),
            "https://gitlab.com/group/sub/app.git",
        )
        .unwrap();
        assert_eq!(
            (gitlab.api_url.as_str(), gitlab.repository.as_str()),
            ("https://gitlab.com", "group/sub/app")
        );
        let gitea = resolve(
            &config("gitea", None, None),
            "ssh://git@git.example.com:2222/team/apps.git",
        )
        .unwrap();
        assert_eq!(
            (gitea.api_url.as_str(), gitea.repository.as_str()),
            ("https://git.example.com", "team/apps")
        );
        let gitea_http = resolve(
            &config("gitea", None, None),
            "http://127.0.0.1:3000/team/apps.git",
        )
        .unwrap();
        assert_eq!(gitea_http.api_url, "http://127.0.0.1:3000");
        // Self-hosted GitLab: the Git server is the API's.
        let own = resolve(
            &config("gitlab", Some("https://git.corp.example/"), None),
            "git@git.corp.example:ops/apps.git",
        )
        .unwrap();
        assert_eq!(
            (own.api_url.as_str(), own.repository.as_str()),
            ("https://git.corp.example", "ops/apps")
        );
    }

    #[test]
    fn bad_settings_name_the_field() {
        let cases = [
            (
                config("bitbucket", None, None),
                "https://github.com/a/b",
                "provider",
                "unknown provider \"bitbucket\"",
            ),
            (
                config("github", None, None),
                "https://git.example.com/a/b",
                "repository",
                "cannot be derived",
            ),
            (
                config("gitea", None, None),
                "/srv/git/apps",
                "apiUrl",
                "required for gitea",
            ),
            (
                config("github", Some("api.github.com"), Some("a/b")),
                "/x",
                "apiUrl",
                "is not an http(s) URL",
            ),
            (
                config("github", Some("ftp://x.example"), Some("a/b")),
                "/x",
                "apiUrl",
                "is not an http(s) URL",
            ),
            (
                config("github", None, Some("a/b/c")),
                "/x",
                "repository",
                "is not OWNER/NAME",
            ),
        ];
        for (config, url, field, message) in cases {
            let (got_field, got) = resolve(&config, url).unwrap_err();
            assert_eq!(got_field, field, "{got}");
            assert!(got.starts_with(message) || got.contains(message), "{got}");
        }
        let mut missing = config("github", None, Some("a/b"));
        missing.token_file = PathBuf::from("/nonexistent/token");
        assert_eq!(resolve(&missing, "/x").unwrap_err().0, "tokenFile");
    }

    #[test]
    fn descriptions_are_one_short_line() {
        assert_eq!(
            one_line("  app/compose.yaml:3:12:   bad\nmore", 140),
            "app/compose.yaml:3:12: bad"
        );
        let long = "é".repeat(200);
        let cut = one_line(&long, DESCRIPTION_LIMIT);
        assert_eq!(cut.chars().count(), DESCRIPTION_LIMIT);
        assert!(cut.ends_with('…'));
    }

    fn update(state: CommitState) -> StatusUpdate {
        StatusUpdate {
            sha: "0123abcd".into(),
            state,
            context: "stackd/shop/web".into(),
            description: "Ready at 0123abcd".into(),
            target_url: Some("https://stackd.example.com/stacks/shop/web".into()),
        }
    }

    fn body(request: &Request) -> Value {
        serde_json::from_slice(&request.body).unwrap()
    }

    #[test]
    fn each_forge_gets_its_documented_request() {
        let forge = |provider, api_url: &str, repository: &str| Forge {
            provider,
            api_url: api_url.into(),
            repository: repository.into(),
            token_file: PathBuf::new(),
        };
        let github = request(
            &forge(Provider::GitHub, "https://api.github.com", "acme/shop"),
            "tok",
            &update(CommitState::Failure),
        );
        assert_eq!(
            github.url,
            "https://api.github.com/repos/acme/shop/statuses/0123abcd"
        );
        assert!(
            github
                .headers
                .contains(&("Authorization".into(), "Bearer tok".into()))
        );
        assert_eq!(
            body(&github),
            json!({"state": "failure", "target_url": "https://stackd.example.com/stacks/shop/web",
                   "description": "Ready at 0123abcd", "context": "stackd/shop/web"})
        );

        let gitlab = request(
            &forge(Provider::GitLab, "https://gitlab.com", "group/sub/app"),
            "tok",
            &update(CommitState::Pending),
        );
        assert_eq!(
            gitlab.url,
            "https://gitlab.com/api/v4/projects/group%2Fsub%2Fapp/statuses/0123abcd"
        );
        assert!(
            gitlab
                .headers
                .contains(&("PRIVATE-TOKEN".into(), "tok".into()))
        );
        assert_eq!(body(&gitlab)["state"], "running");
        assert_eq!(body(&gitlab)["name"], "stackd/shop/web");
        assert_eq!(body(&gitlab).get("context"), None);
        let failed = request(
            &forge(Provider::GitLab, "https://gitlab.com", "g/a"),
            "tok",
            &update(CommitState::Failure),
        );
        assert_eq!(body(&failed)["state"], "failed");

        let gitea = request(
            &forge(Provider::Gitea, "https://git.example.com", "team/apps"),
            "tok",
            &update(CommitState::Success),
        );
        assert_eq!(
            gitea.url,
            "https://git.example.com/api/v1/repos/team/apps/statuses/0123abcd"
        );
        assert!(
            gitea
                .headers
                .contains(&("Authorization".into(), "token tok".into()))
        );
        assert_eq!(body(&gitea)["state"], "success");
        assert_eq!(body(&gitea)["context"], "stackd/shop/web");
    }
}
