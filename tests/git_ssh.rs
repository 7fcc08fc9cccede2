//! The Git source over SSH against a real OpenSSH server: a private `sshd` on
//! 127.0.0.1 with a generated host key and one authorised client key.
//! Install the server with `scripts/setup-sshd.sh`; without it the tests print
//! `SKIPPED` (and fail under `CI=true`).

#[path = "git_support/mod.rs"]
mod git_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use git_support::ssh::{SshServer, key_type_and_body, keygen, public_key, run};
use git_support::{Upstream, git};
use stackd::git::settings::Auth;
use stackd::git::{RepoSettings, Source, SourceEvent, SourceHandle, SourceOptions};
use stackd::render::files::RepoPath;
use tokio::sync::mpsc::Receiver;

const HOUR: Duration = Duration::from_secs(3600);
/// Each operation's deadline; far above the milliseconds they take here.
const GIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the scenarios share: the server, a bare repository, the keys.
struct Fixture {
    tmp: tempfile::TempDir,
    server: SshServer,
    upstream: Upstream,
    bare: PathBuf,
    user: String,
    client_key: PathBuf,
}

/// Starts the fixture, or `None` after printing why it was skipped (a failure under CI).
fn fixture() -> Option<Fixture> {
    let tmp = tempfile::tempdir().unwrap();
    let sshd_dir = tmp.path().join("sshd");
    std::fs::create_dir_all(&sshd_dir).unwrap();
    let client_key = keygen(&tmp.path().join("id_client"));
    let server = match SshServer::start(&sshd_dir, &client_key) {
        Ok(server) => server,
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("sshd could not be started under CI: {reason}");
            }
            println!("SKIPPED: sshd could not be started: {reason}");
            return None;
        }
    };
    let upstream = Upstream::new(tmp.path(), "up");
    upstream.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx\n",
    );
    upstream.commit("add web");
    let bare = tmp.path().join("up.git");
    git(
        tmp.path(),
        &["clone", "-q", "--bare", "up", bare.to_str().unwrap()],
    );
    Some(Fixture {
        user: run("id", &["-un"]),
        tmp,
        server,
        upstream,
        bare,
        client_key,
    })
}

impl Fixture {
    fn settings(&self, key: &Path, known_hosts: &str) -> RepoSettings {
        let known_hosts_file = self
            .tmp
            .path()
            .join(format!("known_hosts-{}", rand_suffix()));
        std::fs::write(&known_hosts_file, known_hosts).unwrap();
        let mut s = RepoSettings::new("apps", self.server.url(&self.user, &self.bare), "main");
        s.interval = HOUR;
        // A hung connection fails the poll instead of wedging the test binary.
        s.timeout = GIT_TIMEOUT;
        s.auth = Some(Auth::Ssh {
            username: self.user.clone(),
            private_key_file: key.to_path_buf(),
            known_hosts_file,
        });
        s
    }

    fn spawn(&self, settings: RepoSettings) -> (SourceHandle, Receiver<SourceEvent>) {
        // Network operations in killable worker processes, as in `stackd run`.
        stackd::git::worker::set_program(Some(env!("CARGO_BIN_EXE_stackd").into()));
        let data = self.tmp.path().join(format!("data-{}", rand_suffix()));
        Source::spawn(
            vec![settings],
            data,
            SourceOptions {
                watch_local: false,
                ..SourceOptions::default()
            },
        )
        .unwrap()
    }

    /// Commits in the upstream and pushes to the bare repository served over SSH.
    fn push_commit(&self, path: &str, content: &str, message: &str) -> String {
        self.upstream.write(path, content);
        let commit = self.upstream.commit(message);
        self.upstream
            .git(&["push", "-q", self.bare.to_str().unwrap(), "main"]);
        commit
    }
}

fn rand_suffix() -> u64 {
    rand::random()
}

async fn next_event(rx: &mut Receiver<SourceEvent>) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an event within 30 s")
        .expect("source still running")
}

/// The error of the next event, which must be a failure with no good commit yet.
async fn next_failure(rx: &mut Receiver<SourceEvent>) -> stackd::git::GitError {
    match next_event(rx).await {
        SourceEvent::Failed {
            error, last_good, ..
        } => {
            assert_eq!(last_good, None);
            error
        }
        SourceEvent::Updated(u) => panic!("expected a failure, got an update to {}", u.commit),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_key_and_known_host_fetches_and_follows_new_commits() {
    let Some(fx) = fixture() else { return };
    let (handle, mut rx) = fx.spawn(fx.settings(&fx.client_key, &fx.server.known_hosts_line()));

    let first = match next_event(&mut rx).await {
        SourceEvent::Updated(u) => u,
        SourceEvent::Failed { error, .. } => panic!(
            "first poll failed: {error}\nsshd log:\n{}",
            fx.server.log_text()
        ),
    };
    assert_eq!(first.repository, "apps");
    assert_eq!(first.commit, fx.upstream.head());
    assert_eq!(first.subject, "add web");
    let stacks: Vec<_> = first.stacks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stacks, vec!["web"]);
    let compose = first
        .reader
        .read(&RepoPath::new("stacks/web/compose.yaml").unwrap())
        .unwrap();
    assert_eq!(compose, b"services:\n  web:\n    image: nginx\n");

    // (d) A new commit on the server is picked up on the next trigger.
    let second = fx.push_commit(
        "stacks/api/compose.yaml",
        "services:\n  api:\n    image: httpd\n",
        "add api",
    );
    assert!(handle.trigger("apps"));
    match next_event(&mut rx).await {
        SourceEvent::Updated(u) => {
            assert_eq!(u.commit, second);
            assert_eq!(u.previous.as_deref(), Some(first.commit.as_str()));
            assert!(!u.forced);
            assert_eq!(u.subject, "add api");
            let mut stacks: Vec<_> = u.stacks.iter().map(|s| s.name.as_str()).collect();
            stacks.sort();
            assert_eq!(stacks, vec!["api", "web"]);
        }
        SourceEvent::Failed { error, .. } => panic!(
            "second poll failed: {error}\nsshd log:\n{}",
            fx.server.log_text()
        ),
    }
    let state = handle.state("apps").expect("repository state");
    assert_eq!(state.commit.as_deref(), Some(second.as_str()));
    assert_eq!(state.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_an_auth_error_without_the_key() {
    let Some(fx) = fixture() else { return };
    let wrong = keygen(&fx.tmp.path().join("id_wrong"));
    let (_handle, mut rx) = fx.spawn(fx.settings(&wrong, &fx.server.known_hosts_line()));

    let error = next_failure(&mut rx).await;
    let shown = error.to_string();
    assert_eq!(error.label(), "auth", "{shown}");
    assert!(
        shown.ends_with("the server rejected the credentials"),
        "{shown}"
    );
    let private = std::fs::read_to_string(&wrong).unwrap();
    for line in private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line), "key material in {shown}");
    }
    assert!(!shown.contains("OPENSSH PRIVATE KEY"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_different_host_key_is_refused() {
    let Some(fx) = fixture() else { return };
    let port = fx.server.port;
    let other_host_key = keygen(&fx.tmp.path().join("other_host_key"));
    let other = key_type_and_body(&public_key(&other_host_key));
    let cases = [
        // Nothing for this server at all.
        ("empty", String::new()),
        // The port of the server, but another key.
        ("other key", format!("[127.0.0.1]:{port} {other}\n")),
        // The server's key, but listed for the default port: OpenSSH would not accept it.
        (
            "plain host",
            format!("127.0.0.1 {}\n", fx.server.host_public_key),
        ),
        // The server's key, but listed for another port.
        (
            "other port",
            format!(
                "[127.0.0.1]:{} {}\n",
                port.wrapping_add(1),
                fx.server.host_public_key
            ),
        ),
    ];
    for (case, known_hosts) in cases {
        let settings = fx.settings(&fx.client_key, &known_hosts);
        let Some(Auth::Ssh {
            known_hosts_file, ..
        }) = settings.auth.clone()
        else {
            unreachable!("ssh settings")
        };
        let (_handle, mut rx) = fx.spawn(settings);
        let error = next_failure(&mut rx).await;
        let shown = error.to_string();
        assert_eq!(error.label(), "certificate", "{case}: {shown}");
        assert!(
            shown.ends_with(&format!(
                "host key of [127.0.0.1]:{port} is not in known_hosts file {}",
                known_hosts_file.display()
            )),
            "{case}: {shown}"
        );
    }
}
