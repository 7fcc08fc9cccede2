//! Network operations (ls-remote, fetch) in a child process that is killed at
//! the repository's `timeout`.
//!
//! A libgit2 call blocked in `recv()` cannot be interrupted from another thread,
//! and libgit2's own timeouts bound each read, not the operation: a server that
//! sends one byte a second never trips them. A process can always be killed, so
//! each network operation runs in `stackd __git-remote` (the "worker"), with its
//! request (URL included, which may carry a token) on stdin, never in argv or
//! the environment, and its answer, already redacted, as JSON on stdout. A fetch
//! killed half-way leaves the mirror's crash marker, and the next poll rebuilds
//! the mirror, exactly as after a crash.
//!
//! The worker program is a process-wide setting: `stackd run` sets it to its own
//! executable; a library user that sets nothing (unit tests, benchmarks) runs the
//! operations in-process, bounded only by libgit2's idle timeouts.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::RwLock;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use git2::Oid;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::error::GitError;
use super::remote::{FetchStats, RemoteContext};
use super::settings::{Auth, RepoSettings};

/// The hidden subcommand of the `stackd` binary that serves one operation.
pub const SUBCOMMAND: &str = "__git-remote";

/// How often a waiting poll looks at its cancellation token (shutdown).
const CANCEL_CHECK: Duration = Duration::from_millis(50);
/// How long a worker outlives its deadline before ending itself (its parent
/// normally kills it first; this bounds one whose parent died).
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

static PROGRAM: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Runs network operations in `program SUBCOMMAND` from now on (`None`: in-process).
pub fn set_program(program: Option<PathBuf>) {
    *PROGRAM.write().unwrap_or_else(|p| p.into_inner()) = program;
}

/// The worker program, if one is set.
pub fn program() -> Option<PathBuf> {
    PROGRAM.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Whether `url` names a server (HTTP, SSH, `git://`) rather than a local path,
/// which cannot hang on the network and stays in-process.
pub fn is_network(url: &str) -> bool {
    super::watch::local_repo_path(url).is_none()
}

#[derive(Serialize, Deserialize)]
struct Request {
    name: String,
    url: String,
    git_ref: String,
    auth: Option<Auth>,
    timeout_ms: u64,
    mirror: PathBuf,
    op: Op,
}

/// One network operation against the mirror at `Request::mirror`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    LsRemote,
    Fetch {
        refspecs: Vec<String>,
        shallow: bool,
    },
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::LsRemote => "ls-remote",
            Op::Fetch { .. } => "fetch",
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub(crate) enum Reply {
    Advert {
        heads: Vec<(String, String)>,
    },
    Fetched {
        received_bytes: usize,
        received_objects: usize,
        fell_back_to_full: bool,
    },
    /// A [`GitError`] without its repository (the parent knows it), by label.
    Failed {
        label: String,
        message: String,
        path: Option<String>,
    },
}

/// Runs `op` in the worker `program`, killing it at the deadline or when
/// `cancel` fires. The mirror must not be written by anyone else meanwhile.
pub(crate) fn call(
    program: &Path,
    ctx: &RemoteContext<'_>,
    mirror: &Path,
    op: Op,
    cancel: Option<&CancellationToken>,
) -> Result<Reply, GitError> {
    let settings = ctx.settings;
    let at = &ctx.at;
    let operation = op.name();
    let task = |message: String| GitError::Task {
        at: at.clone(),
        message,
    };
    let request = Request {
        name: settings.name.clone(),
        url: settings.url.clone(),
        git_ref: settings.git_ref.clone(),
        auth: settings.auth.clone(),
        timeout_ms: u64::try_from(settings.timeout.as_millis()).unwrap_or(u64::MAX),
        mirror: mirror.to_path_buf(),
        op,
    };
    let request = serde_json::to_vec(&request).map_err(|e| task(e.to_string()))?;
    let started = Instant::now();
    let mut child = Command::new(program)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            task(format!(
                "cannot start the Git worker {}: {e}",
                program.display()
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // Dropping stdin closes it: the worker reads to the end. A worker that
        // died already shows up below as an exit without an answer.
        let _ = stdin.write_all(&request);
    }
    let Some(mut stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(task("the Git worker has no stdout".into()));
    };
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("git-worker-reply".into())
        .spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            let _ = sender.send(out);
        })
        .map_err(|e| task(format!("cannot read the Git worker: {e}")))?;
    // Capped: `Instant + Duration` panics on overflow, and a year is forever here.
    let deadline = started + settings.timeout.min(Duration::from_secs(365 * 24 * 3600));
    let stop = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    let output = loop {
        let now = Instant::now();
        if now >= deadline {
            stop(&mut child);
            return Err(GitError::Timeout {
                at: at.clone(),
                operation,
                after: settings.timeout,
            });
        }
        if cancel.is_some_and(CancellationToken::is_cancelled) {
            stop(&mut child);
            return Err(task(format!("{operation} stopped: shutting down")));
        }
        match answer.recv_timeout((deadline - now).min(CANCEL_CHECK)) {
            Ok(output) => break output,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Vec::new(),
        }
    };
    let status = child
        .wait()
        .map_err(|e| task(format!("waiting for the Git worker: {e}")))?;
    serde_json::from_slice(&output).map_err(|_| {
        task(format!(
            "the Git worker for {operation} exited ({status}) without an answer"
        ))
    })
}

/// The advertisement of an [`Op::LsRemote`] reply.
pub(crate) fn advert(
    ctx: &RemoteContext<'_>,
    reply: Reply,
) -> Result<Vec<(String, Oid)>, GitError> {
    match reply {
        Reply::Advert { heads } => heads
            .into_iter()
            .map(|(name, oid)| {
                Oid::from_str(&oid)
                    .map(|oid| (name, oid))
                    .map_err(|e| GitError::git(&ctx.at, &ctx.settings.url, &e))
            })
            .collect(),
        other => Err(unexpected(ctx, other)),
    }
}

/// The statistics of an [`Op::Fetch`] reply.
pub(crate) fn fetched(ctx: &RemoteContext<'_>, reply: Reply) -> Result<FetchStats, GitError> {
    match reply {
        Reply::Fetched {
            received_bytes,
            received_objects,
            fell_back_to_full,
        } => Ok(FetchStats {
            received_bytes,
            received_objects,
            fell_back_to_full,
            duration: Duration::ZERO,
        }),
        other => Err(unexpected(ctx, other)),
    }
}

fn unexpected(ctx: &RemoteContext<'_>, reply: Reply) -> GitError {
    let at = ctx.at.clone();
    let Reply::Failed {
        label,
        message,
        path,
    } = reply
    else {
        return GitError::Task {
            at,
            message: "the Git worker answered another operation".into(),
        };
    };
    match label.as_str() {
        "unreachable" => GitError::Unreachable { at, message },
        "auth" => GitError::Auth { at, message },
        "certificate" => GitError::Certificate { at, message },
        "credentials_file" => GitError::CredentialsFile {
            at,
            path: path.unwrap_or_default(),
            message,
        },
        "fetch" => GitError::Fetch { at, message },
        // libgit2's idle timeout (set to `timeout` in the worker) fired first.
        "timeout" => GitError::Timeout {
            at,
            operation: "a network read",
            after: ctx.settings.timeout,
        },
        _ => GitError::Git { at, message },
    }
}

/// `stackd __git-remote`: reads one request on stdin, runs it in this process,
/// writes the reply on stdout. Returns the exit code.
pub fn serve() -> i32 {
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return 2;
    }
    let request: Request = match serde_json::from_slice(&input) {
        Ok(request) => request,
        Err(e) => {
            // Only the position: the request holds the URL.
            eprintln!(
                "stackd {SUBCOMMAND}: invalid request at line {} column {}",
                e.line(),
                e.column()
            );
            return 2;
        }
    };
    let timeout = Duration::from_millis(request.timeout_ms);
    // A second belt: libgit2 gives up on a silent server by itself too.
    // SAFETY: this process has started no thread.
    if let Err(e) = unsafe { super::source::set_network_timeouts(timeout, timeout) } {
        eprintln!("stackd {SUBCOMMAND}: cannot set Git network timeouts: {e}");
    }
    // The parent kills us at the deadline; a parent that was itself killed
    // cannot, so an orphaned worker ends itself shortly after.
    let own_deadline = timeout
        .min(Duration::from_secs(365 * 24 * 3600))
        .saturating_add(ORPHAN_GRACE);
    std::thread::spawn(move || {
        std::thread::sleep(own_deadline);
        std::process::exit(3);
    });
    let reply = execute(request);
    let mut stdout = std::io::stdout().lock();
    match serde_json::to_writer(&mut stdout, &reply).map(|()| stdout.flush()) {
        Ok(Ok(())) => 0,
        _ => 2,
    }
}

fn execute(request: Request) -> Reply {
    let mut settings = RepoSettings::new(request.name, request.url, request.git_ref);
    settings.auth = request.auth;
    settings.timeout = Duration::from_millis(request.timeout_ms);
    let ctx = RemoteContext::new(&settings);
    let result = git2::Repository::open_bare(&request.mirror)
        .map_err(|e| GitError::git(&ctx.at, &settings.url, &e))
        .and_then(|repo| match request.op {
            Op::LsRemote => ctx.ls_remote_here(&repo).map(|heads| Reply::Advert {
                heads: heads
                    .into_iter()
                    .map(|(name, oid)| (name, oid.to_string()))
                    .collect(),
            }),
            Op::Fetch { refspecs, shallow } => {
                ctx.fetch_here(&repo, &refspecs, shallow)
                    .map(|stats| Reply::Fetched {
                        received_bytes: stats.received_bytes,
                        received_objects: stats.received_objects,
                        fell_back_to_full: stats.fell_back_to_full,
                    })
            }
        });
    match result {
        Ok(reply) => reply,
        Err(error) => {
            let path = match &error {
                GitError::CredentialsFile { path, .. } => Some(path.clone()),
                _ => None,
            };
            Reply::Failed {
                label: error.label().to_string(),
                message: message_of(&error),
                path,
            }
        }
    }
}

/// The error's own message, without the repository prefix the parent adds back.
fn message_of(error: &GitError) -> String {
    match error {
        GitError::Unreachable { message, .. }
        | GitError::Auth { message, .. }
        | GitError::Certificate { message, .. }
        | GitError::CredentialsFile { message, .. }
        | GitError::Fetch { message, .. }
        | GitError::Git { message, .. }
        | GitError::Task { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_servers_go_to_the_worker() {
        assert!(is_network("https://git.example.com/r.git"));
        assert!(is_network("ssh://git@host:2222/r"));
        assert!(is_network("git@github.com:o/r.git"));
        assert!(is_network("git://host/r"));
        assert!(!is_network("file:///srv/r"));
        assert!(!is_network("/srv/r"));
        assert!(!is_network("./r"));
    }

    #[test]
    fn failures_keep_their_label() {
        let settings = RepoSettings::new("a", "https://h/r", "main");
        let ctx = RemoteContext::new(&settings);
        for label in [
            "unreachable",
            "auth",
            "certificate",
            "credentials_file",
            "fetch",
            "timeout",
            "git",
        ] {
            let reply = Reply::Failed {
                label: label.into(),
                message: "m".into(),
                path: Some("/p".into()),
            };
            assert_eq!(fetched(&ctx, reply).unwrap_err().label(), label);
        }
    }
}
