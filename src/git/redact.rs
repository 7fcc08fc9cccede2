//! Showing repository URLs without their secrets, and comparing URLs loosely.
//!
//! A URL may carry `user:token@` userinfo; it must never reach logs, errors or
//! the status page. Every place that displays a URL goes through [`redact_url`].

/// The URL with any userinfo (`user:password@`) removed. Local paths and
/// scp-like `git@host:path` addresses pass through (`git@` names no secret).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}{}{tail}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

/// A form of a clone URL for matching webhook payloads against configured
/// repositories: scheme, userinfo, `.git` suffix, trailing slashes and case are
/// dropped, and `git@host:owner/repo` becomes `host/owner/repo`.
pub fn normalise_url(url: &str) -> String {
    let url = redact_url(url.trim());
    let without_scheme = match url.find("://") {
        Some(i) => url[i + 3..].to_string(),
        None => match scp_like(&url) {
            Some((host, path)) => format!("{host}/{path}"),
            None => url.clone(),
        },
    };
    // `ssh://git@host:22/x` keeps a userinfo-free authority now; drop default ports.
    let mut s = without_scheme
        .replacen(":22/", "/", 1)
        .replacen(":443/", "/", 1);
    while s.ends_with('/') {
        s.pop();
    }
    if let Some(stripped) = s.strip_suffix(".git") {
        s = stripped.to_string();
    }
    s.to_ascii_lowercase()
}

/// Splits `user@host:path` (scp-like syntax) into host and path.
fn scp_like(url: &str) -> Option<(&str, &str)> {
    let (before, path) = url.split_once(':')?;
    if before.contains('/') || path.starts_with("//") {
        return None;
    }
    let host = before.rsplit('@').next().unwrap_or(before);
    Some((host, path.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_userinfo_only() {
        assert_eq!(
            redact_url("https://alice:s3cret@example.com/org/repo.git"),
            "https://example.com/org/repo.git"
        );
        assert_eq!(
            redact_url("https://tok@en@example.com:8443/r?x=1"),
            "https://example.com:8443/r?x=1"
        );
        assert_eq!(
            redact_url("https://example.com/a@b"),
            "https://example.com/a@b"
        );
        assert_eq!(redact_url("file:///srv/repo"), "file:///srv/repo");
        assert_eq!(redact_url("/srv/repo"), "/srv/repo");
        assert_eq!(
            redact_url("git@github.com:org/repo.git"),
            "git@github.com:org/repo.git"
        );
    }

    #[test]
    fn normalise_matches_equivalent_clone_urls() {
        let expected = "github.com/org/repo";
        for url in [
            "https://github.com/org/repo.git",
            "https://user:pw@GitHub.com/org/repo/",
            "git@github.com:org/repo.git",
            "ssh://git@github.com:22/org/repo.git",
            "http://github.com/org/Repo",
        ] {
            assert_eq!(normalise_url(url), expected, "{url}");
        }
        assert_ne!(
            normalise_url("https://github.com/org/repo2"),
            normalise_url("https://github.com/org/repo")
        );
    }
}
