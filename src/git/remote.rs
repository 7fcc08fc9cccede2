//! Talking to the remote: the ref advertisement (ls-remote), single-ref shallow
//! fetches, and credentials from files.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::Path;

use base64::Engine;
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, FetchOptions, Oid,
    RemoteCallbacks, Repository,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::error::{GitError, RepoRef};
use super::settings::{Auth, RepoSettings};
use super::worker;

/// What a fetch transferred.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    pub received_bytes: usize,
    pub received_objects: usize,
    /// The shallow fetch failed and a full one was done instead.
    pub fell_back_to_full: bool,
    /// Wall time of the whole fetch, fallback included.
    pub duration: std::time::Duration,
}

/// Credentials loaded for one operation; the secret lives only in memory.
enum Loaded {
    None,
    /// From `https://user:pass@host` in the URL itself.
    UrlUserinfo {
        username: String,
        password: String,
    },
    Https {
        username: String,
        password: String,
    },
    Ssh {
        username: String,
        private_key: std::path::PathBuf,
        known_hosts: String,
        known_hosts_file: std::path::PathBuf,
        /// Why the host key check refused the server: libgit2 replaces the
        /// callback's message with a generic one, so it is kept here.
        host_key_rejection: RefCell<Option<String>>,
    },
}

/// Connection context for one repository.
pub struct RemoteContext<'a> {
    pub settings: &'a RepoSettings,
    pub at: RepoRef,
    /// Stops a waiting operation (shutdown); its worker process is killed.
    pub cancel: Option<CancellationToken>,
}

impl<'a> RemoteContext<'a> {
    pub fn new(settings: &'a RepoSettings) -> Self {
        RemoteContext {
            at: RepoRef::of(settings),
            settings,
            cancel: None,
        }
    }

    fn remote_error(&self, e: &git2::Error) -> GitError {
        // libssh2's "Timed out waiting on socket" comes as a plain SSH error.
        let ssh_timeout = e.class() == git2::ErrorClass::Ssh && e.message().contains("Timed out");
        if e.code() == git2::ErrorCode::Timeout || ssh_timeout {
            // libgit2's idle timeout: in the worker it is the repository's `timeout`.
            return GitError::Timeout {
                at: self.at.clone(),
                operation: "a network read",
                after: self.settings.timeout,
            };
        }
        GitError::from_remote(&self.at, &self.settings.url, e)
    }

    /// The worker program, when this repository's operations go through one.
    fn worker(&self) -> Option<std::path::PathBuf> {
        worker::program().filter(|_| worker::is_network(&self.settings.url))
    }

    fn load_credentials(&self) -> Result<Loaded, GitError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| GitError::CredentialsFile {
                at: self.at.clone(),
                path: path.display().to_string(),
                message: e.kind().to_string(),
            })
        };
        Ok(match &self.settings.auth {
            Some(Auth::Https {
                username,
                password_file,
            }) => Loaded::Https {
                username: username.clone(),
                password: read(password_file)?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            },
            Some(Auth::Ssh {
                username,
                private_key_file,
                known_hosts_file,
            }) => {
                // Fail early with a clear message instead of a libssh2 one.
                read(private_key_file)?;
                Loaded::Ssh {
                    username: username.clone(),
                    private_key: private_key_file.clone(),
                    known_hosts: read(known_hosts_file)?,
                    known_hosts_file: known_hosts_file.clone(),
                    host_key_rejection: RefCell::new(None),
                }
            }
            None => match url_userinfo(&self.settings.url) {
                Some((username, password)) => Loaded::UrlUserinfo { username, password },
                None => Loaded::None,
            },
        })
    }

    /// Callbacks that answer each credential type once (a second request means the
    /// server rejected it) and check SSH host keys against `known_hosts`.
    fn callbacks<'c>(&self, creds: &'c Loaded) -> RemoteCallbacks<'c> {
        let mut callbacks = RemoteCallbacks::new();
        let tried: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
        callbacks.credentials(move |_url, user_from_url, allowed| {
            if !tried.borrow_mut().insert(allowed.bits()) {
                return Err(auth_error("the server rejected the credentials"));
            }
            match creds {
                Loaded::Https { username, password }
                | Loaded::UrlUserinfo { username, password }
                    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
                {
                    Cred::userpass_plaintext(username, password)
                }
                Loaded::Ssh {
                    username,
                    private_key,
                    ..
                } => {
                    let user = user_from_url.unwrap_or(username);
                    if allowed.contains(CredentialType::SSH_KEY) {
                        Cred::ssh_key(user, None, private_key, None)
                    } else if allowed.contains(CredentialType::USERNAME) {
                        Cred::username(user)
                    } else {
                        Err(auth_error(
                            "the server wants a credential type other than an SSH key",
                        ))
                    }
                }
                Loaded::None => Err(auth_error(
                    "the server asks for credentials but none are configured",
                )),
                _ => Err(auth_error(
                    "the server wants a credential type other than username and password",
                )),
            }
        });
        if let Loaded::Ssh {
            known_hosts,
            known_hosts_file,
            host_key_rejection,
            ..
        } = creds
        {
            // libgit2 hands the callback the host name only; the port comes from the URL.
            let port = ssh_port(&self.settings.url);
            callbacks.certificate_check(move |cert, host| {
                let Some(hostkey) = cert.as_hostkey() else {
                    return Ok(CertificateCheckStatus::CertificatePassthrough);
                };
                let known = known_keys(known_hosts, host, port);
                let matches = match hostkey.hostkey() {
                    Some(raw) => known.iter().any(|k| k.as_slice() == raw),
                    None => hostkey.hash_sha256().is_some_and(|h| {
                        known
                            .iter()
                            .any(|k| Sha256::digest(k).as_slice() == h.as_slice())
                    }),
                };
                if matches {
                    return Ok(CertificateCheckStatus::CertificateOk);
                }
                let listed_as = if port == SSH_DEFAULT_PORT {
                    host.to_string()
                } else {
                    format!("[{host}]:{port}")
                };
                let message = format!(
                    "host key of {listed_as} is not in known_hosts file {}",
                    known_hosts_file.display()
                );
                host_key_rejection.replace(Some(message.clone()));
                Err(git2::Error::new(
                    git2::ErrorCode::Certificate,
                    git2::ErrorClass::Ssh,
                    message,
                ))
            });
        }
        callbacks
    }

    /// The remote's ref advertisement: `(name, oid)` pairs, peeled tags as `name^{}`.
    /// Through the worker process when one is set, bounded by `timeout`.
    pub fn ls_remote(&self, repo: &Repository) -> Result<Vec<(String, Oid)>, GitError> {
        match self.worker() {
            Some(program) => {
                let reply = worker::call(
                    &program,
                    self,
                    repo.path(),
                    worker::Op::LsRemote,
                    self.cancel.as_ref(),
                )?;
                worker::advert(self, reply)
            }
            None => self.ls_remote_here(repo),
        }
    }

    /// [`Self::ls_remote`] in this process.
    pub fn ls_remote_here(&self, repo: &Repository) -> Result<Vec<(String, Oid)>, GitError> {
        let creds = self.load_credentials()?;
        let mut remote = repo
            .remote_anonymous(&self.settings.url)
            .map_err(|e| self.remote_error(&e))?;
        let connection = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks(&creds)), None)
            .map_err(|e| self.remote_error(&explain_host_key(&creds, e)))?;
        let heads = connection
            .list()
            .map_err(|e| self.remote_error(&e))?
            .iter()
            .map(|h| (h.name().to_string(), h.oid()))
            .collect();
        Ok(heads)
    }

    /// Fetches `refspecs` (`+src:dst`), shallow when `shallow`, falling back to a
    /// full fetch when the transport refuses the shallow one. Through the worker
    /// process when one is set, bounded by `timeout`.
    pub fn fetch(
        &self,
        repo: &Repository,
        refspecs: &[String],
        shallow: bool,
    ) -> Result<FetchStats, GitError> {
        let Some(program) = self.worker() else {
            return self.fetch_here(repo, refspecs, shallow);
        };
        let started = std::time::Instant::now();
        let op = worker::Op::Fetch {
            refspecs: refspecs.to_vec(),
            shallow,
        };
        let reply = worker::call(&program, self, repo.path(), op, self.cancel.as_ref())?;
        let mut stats = worker::fetched(self, reply)?;
        stats.duration = started.elapsed();
        Ok(stats)
    }

    /// [`Self::fetch`] in this process.
    pub fn fetch_here(
        &self,
        repo: &Repository,
        refspecs: &[String],
        shallow: bool,
    ) -> Result<FetchStats, GitError> {
        let started = std::time::Instant::now();
        let timed = |mut stats: FetchStats| {
            stats.duration = started.elapsed();
            stats
        };
        match self.fetch_once(repo, refspecs, shallow).map(timed) {
            Ok(stats) => Ok(stats),
            Err(e) if shallow && is_shallow_refusal(&e) => {
                tracing::debug!(repository = %self.at.name, error = %e.message(), "shallow fetch refused, fetching in full");
                let mut stats = self
                    .fetch_once(repo, refspecs, false)
                    .map_err(|e| self.remote_error(&e))?;
                stats.fell_back_to_full = true;
                Ok(timed(stats))
            }
            Err(e) => Err(self.remote_error(&e)),
        }
    }

    fn fetch_once(
        &self,
        repo: &Repository,
        refspecs: &[String],
        shallow: bool,
    ) -> Result<FetchStats, git2::Error> {
        let creds = self.load_credentials().map_err(|e| {
            git2::Error::new(
                git2::ErrorCode::Auth,
                git2::ErrorClass::Callback,
                e.to_string(),
            )
        })?;
        let mut remote = repo.remote_anonymous(&self.settings.url)?;
        let received = std::cell::Cell::new((0usize, 0usize));
        let mut callbacks = self.callbacks(&creds);
        callbacks.transfer_progress(|p| {
            received.set((p.received_bytes(), p.received_objects()));
            true
        });
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        if shallow {
            options.depth(1);
        }
        let fetched = remote.fetch(refspecs, Some(&mut options), None);
        drop(options);
        fetched.map_err(|e| explain_host_key(&creds, e))?;
        let (received_bytes, received_objects) = received.get();
        Ok(FetchStats {
            received_bytes,
            received_objects,
            fell_back_to_full: false,
            duration: std::time::Duration::ZERO,
        })
    }
}

/// Puts back the reason the host key check gave, which libgit2 replaced with
/// "invalid or unknown remote ssh hostkey".
fn explain_host_key(creds: &Loaded, error: git2::Error) -> git2::Error {
    match creds {
        Loaded::Ssh {
            host_key_rejection, ..
        } if error.code() == git2::ErrorCode::Certificate => match host_key_rejection.take() {
            Some(message) => {
                git2::Error::new(git2::ErrorCode::Certificate, git2::ErrorClass::Ssh, message)
            }
            None => error,
        },
        _ => error,
    }
}

fn auth_error(message: &str) -> git2::Error {
    git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Callback, message)
}

/// The local transport and some servers cannot do shallow fetches.
fn is_shallow_refusal(e: &git2::Error) -> bool {
    let m = e.message().to_ascii_lowercase();
    e.code() != git2::ErrorCode::Auth
        && e.code() != git2::ErrorCode::Certificate
        && (m.contains("shallow") || m.contains("depth") || m.contains("not supported"))
}

/// `user:password` from `scheme://user:password@host/...`, percent-decoded.
fn url_userinfo(url: &str) -> Option<(String, String)> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    Some((percent_decode(user), percent_decode(password)))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The keys `known_hosts` lists for `host` on `port`, written the way OpenSSH
/// writes them: `host` for port 22, `[host]:port` otherwise (so a key listed for
/// another port does not vouch for this server). Plain host patterns only:
/// hashed `|1|` entries and wildcards are not supported and are skipped.
fn known_keys(known_hosts: &str, host: &str, port: u16) -> Vec<Vec<u8>> {
    let bracketed = format!("[{host}]:{port}");
    let listed = |pattern: &str| {
        if port == SSH_DEFAULT_PORT {
            pattern == host || pattern == bracketed
        } else {
            pattern == bracketed
        }
    };
    known_hosts
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('@'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let hosts = fields.next()?;
            let _key_type = fields.next()?;
            let key = fields.next()?;
            if !hosts.split(',').any(listed) {
                return None;
            }
            base64::engine::general_purpose::STANDARD.decode(key).ok()
        })
        .collect()
}

const SSH_DEFAULT_PORT: u16 = 22;

/// The port an SSH URL connects to: the explicit one of `ssh://host:port/...`,
/// otherwise 22 (also for the scp-like `user@host:path`, whose colon is no port).
fn ssh_port(url: &str) -> u16 {
    let Some((scheme, rest)) = url.split_once("://") else {
        return SSH_DEFAULT_PORT;
    };
    if !matches!(scheme, "ssh" | "ssh+git" | "git+ssh") {
        return SSH_DEFAULT_PORT;
    }
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    // `[::1]:2222`: the port follows the closing bracket.
    let after_host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map_or("", |(_, after)| after),
        None => host_port,
    };
    after_host
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(SSH_DEFAULT_PORT)
}

/// Finds the commit a ref name points at in an advertisement, preferring the
/// peeled (`^{}`) entry of an annotated tag. Returns the remote ref name too.
pub fn find_ref(advert: &[(String, Oid)], candidates: &[String]) -> Option<(String, Oid)> {
    candidates.iter().find_map(|name| {
        let peeled = format!("{name}^{{}}");
        let direct = advert.iter().find(|(n, _)| n == name)?;
        let oid = advert
            .iter()
            .find(|(n, _)| *n == peeled)
            .map_or(direct.1, |p| p.1);
        Some((name.clone(), oid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_refs_and_peels_tags() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").unwrap();
        let b = Oid::from_str("2222222222222222222222222222222222222222").unwrap();
        let c = Oid::from_str("3333333333333333333333333333333333333333").unwrap();
        let advert = vec![
            ("HEAD".to_string(), a),
            ("refs/heads/main".to_string(), a),
            ("refs/tags/v1".to_string(), b),
            ("refs/tags/v1^{}".to_string(), c),
        ];
        let cands = |n: &str| super::super::settings::RefSpec::candidates(n);
        assert_eq!(
            find_ref(&advert, &cands("main")),
            Some(("refs/heads/main".into(), a))
        );
        assert_eq!(
            find_ref(&advert, &cands("v1")),
            Some(("refs/tags/v1".into(), c))
        );
        assert_eq!(find_ref(&advert, &cands("gone")), None);
    }

    #[test]
    fn known_hosts_and_userinfo() {
        let kh = "# c\ngit.example.com,10.0.0.1 ssh-ed25519 AAAA\n[git.example.com]:2222 ssh-rsa AAEC\nother ssh-rsa AAAB\n";
        assert_eq!(known_keys(kh, "git.example.com", 22), vec![vec![0u8, 0, 0]]);
        assert_eq!(known_keys(kh, "10.0.0.1", 22), vec![vec![0u8, 0, 0]]);
        assert!(known_keys(kh, "nope", 22).is_empty());
        assert_eq!(
            url_userinfo("https://bot:p%40ss@h/r"),
            Some(("bot".into(), "p@ss".into()))
        );
        assert_eq!(url_userinfo("https://h/r@x"), None);
    }

    #[test]
    fn known_hosts_entries_are_per_port() {
        let kh = "git.example.com ssh-ed25519 AAAA\n[git.example.com]:2222 ssh-rsa AAEC\n[127.0.0.1]:40022 ssh-ed25519 AAAB\n[h]:22 ssh-ed25519 AAAC\n";
        // A non-22 port matches only its own `[host]:port` entry.
        assert_eq!(
            known_keys(kh, "git.example.com", 2222),
            vec![vec![0u8, 1, 2]]
        );
        assert_eq!(known_keys(kh, "127.0.0.1", 40022), vec![vec![0u8, 0, 1]]);
        assert!(known_keys(kh, "127.0.0.1", 40023).is_empty());
        assert!(known_keys(kh, "127.0.0.1", 22).is_empty());
        // Port 22 matches the plain host, and `[host]:22` too, never another port.
        assert_eq!(known_keys(kh, "git.example.com", 22), vec![vec![0u8, 0, 0]]);
        assert_eq!(known_keys(kh, "h", 22), vec![vec![0u8, 0, 2]]);
    }

    #[test]
    fn ssh_ports_from_urls() {
        assert_eq!(ssh_port("ssh://git@127.0.0.1:40022/srv/up.git"), 40022);
        assert_eq!(ssh_port("ssh://git@host/srv/up.git"), 22);
        assert_eq!(ssh_port("ssh://host:2222/r"), 2222);
        assert_eq!(ssh_port("git+ssh://u@[::1]:2200/r"), 2200);
        assert_eq!(ssh_port("ssh://u@[::1]/r"), 22);
        assert_eq!(ssh_port("ssh://u:x@host:bad/r"), 22);
        // scp-like: the colon separates the path, not a port.
        assert_eq!(ssh_port("git@github.com:owner/repo.git"), 22);
        assert_eq!(ssh_port("https://host:8443/r"), 22);
    }
}
