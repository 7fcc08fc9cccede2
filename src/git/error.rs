//! Errors of the Git source stage.

use std::sync::Arc;

use super::discovery::DiscoveryError;

/// Where an error happened: the repository, with its URL already redacted.
/// Shared strings keep `GitError` small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    pub name: Arc<str>,
    pub url: Arc<str>,
    pub git_ref: Arc<str>,
}

impl RepoRef {
    pub fn of(settings: &super::settings::RepoSettings) -> Self {
        RepoRef {
            name: settings.name.as_str().into(),
            url: settings.redacted_url().into(),
            git_ref: settings.git_ref.as_str().into(),
        }
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "repository {:?} ({}) ref {:?}",
            self.name, self.url, self.git_ref
        )
    }
}

/// Why polling a repository failed. Messages name the repository (redacted URL)
/// and ref, and never carry credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("{at}: remote unreachable: {message}")]
    Unreachable { at: RepoRef, message: String },
    #[error("{at}: authentication failed: {message}")]
    Auth { at: RepoRef, message: String },
    #[error("{at}: server certificate or host key rejected: {message}")]
    Certificate { at: RepoRef, message: String },
    #[error("{at}: cannot read credentials file {path}: {message}")]
    CredentialsFile {
        at: RepoRef,
        path: String,
        message: String,
    },
    #[error("{at}: ref not found on the remote{}", last_good.as_ref().map(|c| format!(" (deleted? last good commit {c} is kept)")).unwrap_or_default())]
    RefNotFound {
        at: RepoRef,
        last_good: Option<String>,
    },
    #[error("{at}: commit {commit} not found on the remote")]
    CommitNotFound { at: RepoRef, commit: String },
    #[error("{at}: fetch failed: {message}")]
    Fetch { at: RepoRef, message: String },
    #[error("{at}: mirror at {path} is corrupt and could not be rebuilt: {message}")]
    CorruptMirror {
        at: RepoRef,
        path: String,
        message: String,
    },
    #[error("{at}: stack discovery at commit {commit} failed: {source}")]
    Discovery {
        at: RepoRef,
        commit: String,
        source: Box<DiscoveryError>,
    },
    #[error("{at}: {message}")]
    Git { at: RepoRef, message: String },
    #[error("{at}: poll task failed: {message}")]
    Task { at: RepoRef, message: String },
    /// The remote did not finish `operation` within the repository's `timeout`;
    /// the operation was killed.
    /// The commit the ref points at has no good signature by a trusted key
    /// (`verify:`); it is not applied.
    #[error("{at}: VerificationFailed: commit {commit} (signer {signer}): {reason}; not applied")]
    Unverified {
        at: RepoRef,
        commit: String,
        /// The key's fingerprint, or `unsigned`.
        signer: String,
        reason: String,
    },
    #[error("{at}: {operation} timed out after {}", humanize(*after))]
    Timeout {
        at: RepoRef,
        operation: &'static str,
        after: std::time::Duration,
    },
}

/// `2s`, `1.5s`, `250ms`: the way durations are written in the configuration.
fn humanize(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl GitError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            GitError::Unreachable { .. } => "unreachable",
            GitError::Auth { .. } => "auth",
            GitError::Certificate { .. } => "certificate",
            GitError::CredentialsFile { .. } => "credentials_file",
            GitError::RefNotFound { .. } => "ref_not_found",
            GitError::CommitNotFound { .. } => "commit_not_found",
            GitError::Fetch { .. } => "fetch",
            GitError::CorruptMirror { .. } => "corrupt_mirror",
            GitError::Discovery { .. } => "discovery",
            GitError::Git { .. } => "git",
            GitError::Task { .. } => "task",
            GitError::Timeout { .. } => "timeout",
            GitError::Unverified { .. } => "unverified",
        }
    }

    /// Classifies a libgit2 error from talking to the remote.
    pub(crate) fn from_remote(at: &RepoRef, raw_url: &str, error: &git2::Error) -> GitError {
        let message = scrub(error.message(), raw_url);
        let at = at.clone();
        match (error.code(), error.class()) {
            (git2::ErrorCode::Auth, _) => GitError::Auth { at, message },
            (git2::ErrorCode::Certificate, _) => GitError::Certificate { at, message },
            (_, git2::ErrorClass::Http) if message.contains("401") || message.contains("403") => {
                GitError::Auth { at, message }
            }
            (_, git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Ssh) => {
                GitError::Unreachable { at, message }
            }
            (_, git2::ErrorClass::Http) => GitError::Unreachable { at, message },
            (git2::ErrorCode::NotFound, _) => GitError::Unreachable { at, message },
            _ => GitError::Fetch { at, message },
        }
    }

    /// Any other libgit2 error on the local mirror.
    pub(crate) fn git(at: &RepoRef, raw_url: &str, error: &git2::Error) -> GitError {
        GitError::Git {
            at: at.clone(),
            message: scrub(error.message(), raw_url),
        }
    }
}

/// Removes the raw URL (which may hold userinfo) from a libgit2 message.
pub(crate) fn scrub(message: &str, raw_url: &str) -> String {
    let redacted = super::redact::redact_url(raw_url);
    if raw_url.is_empty() || redacted == raw_url {
        return message.to_string();
    }
    message.replace(raw_url, &redacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_repo_and_ref_without_credentials() {
        let raw = "https://bot:hunter2@git.example.com/apps.git";
        let at = RepoRef {
            name: "apps".into(),
            url: super::super::redact::redact_url(raw).into(),
            git_ref: "main".into(),
        };
        let e = git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Net,
            format!("failed to connect to {raw}"),
        );
        let err = GitError::from_remote(&at, raw, &e);
        assert_eq!(err.label(), "unreachable");
        assert_eq!(
            err.to_string(),
            "repository \"apps\" (https://git.example.com/apps.git) ref \"main\": remote unreachable: failed to connect to https://git.example.com/apps.git"
        );
        let err = GitError::RefNotFound {
            at,
            last_good: Some("abc".into()),
        };
        assert!(err.to_string().contains("last good commit abc is kept"));
        let at = RepoRef {
            name: "apps".into(),
            url: "https://git.example.com/apps.git".into(),
            git_ref: "main".into(),
        };
        let err = GitError::Timeout {
            at,
            operation: "ls-remote",
            after: std::time::Duration::from_secs(2),
        };
        assert_eq!(err.label(), "timeout");
        assert_eq!(
            err.to_string(),
            "repository \"apps\" (https://git.example.com/apps.git) ref \"main\": ls-remote timed out after 2s"
        );
    }
}
