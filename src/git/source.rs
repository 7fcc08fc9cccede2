//! The `Source` API for the reconciler: one poll loop per repository on tokio,
//! a stream of events, triggers, and published per-repository state.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use git2::Oid;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::discovery::{DiscoveredStack, PathFilter};
use super::error::{GitError, RepoRef};
use super::mirror::Mirror;
use super::poll::{PollOutcome, poll_repository_until};
use super::settings::RepoSettings;
use super::watch::{local_repo_path, watch_refs};
use crate::render::files::FileSource;
use crate::render::sops::AgeKeys;

/// Something the reconciler needs to know about a repository.
pub enum SourceEvent {
    /// The repository's ref is now at a (new) commit with these stacks.
    Updated(RepositoryUpdate),
    /// A poll failed; the last good commit (if any) stays in effect.
    Failed {
        repository: String,
        error: GitError,
        last_good: Option<String>,
    },
}

/// A repository at a commit, with a reader for that commit's files.
#[derive(Clone)]
pub struct RepositoryUpdate {
    pub repository: String,
    /// Redacted URL.
    pub url: String,
    pub git_ref: String,
    pub commit: String,
    pub previous: Option<String>,
    /// The ref was rewritten: the new commit does not descend from the previous one.
    pub forced: bool,
    pub subject: String,
    pub stacks: Vec<DiscoveredStack>,
    /// Reads the files of `commit` straight from the mirror; shared by all `stacks`.
    pub reader: Arc<dyn FileSource>,
    /// The age identities of `decryption.ageKeyFile`, read at this poll.
    pub decryption: Option<Arc<AgeKeys>>,
}

impl std::fmt::Debug for SourceEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceEvent::Updated(u) => f
                .debug_struct("Updated")
                .field("repository", &u.repository)
                .field("commit", &u.commit)
                .field("previous", &u.previous)
                .field("forced", &u.forced)
                .field("stacks", &u.stacks)
                .finish_non_exhaustive(),
            SourceEvent::Failed {
                repository,
                error,
                last_good,
            } => f
                .debug_struct("Failed")
                .field("repository", repository)
                .field("error", error)
                .field("last_good", last_good)
                .finish(),
        }
    }
}

/// How the last poll ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PollResult {
    Unchanged,
    Updated,
    ForcePushed,
    Failed,
}

/// A repository's state for the status page. Holds no credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepositoryState {
    pub name: String,
    pub url: String,
    pub git_ref: String,
    pub commit: Option<String>,
    pub subject: Option<String>,
    pub stacks: Vec<String>,
    pub last_poll: Option<DateTime<Utc>>,
    pub last_result: Option<PollResult>,
    pub next_poll: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_label: Option<String>,
    /// The commit the last poll refused (`verify:`), when it failed for that.
    pub refused_commit: Option<String>,
    pub polls: u64,
    pub fetches: u64,
    pub fetched_bytes: u64,
    /// How long the last fetch took, in milliseconds.
    pub last_fetch_ms: Option<u64>,
    pub force_pushes: u64,
    pub mirror_rebuilds: u64,
    pub rejected_webhooks: u64,
}

impl RepositoryState {
    fn new(settings: &RepoSettings) -> Self {
        RepositoryState {
            name: settings.name.clone(),
            url: settings.redacted_url(),
            git_ref: settings.git_ref.clone(),
            commit: None,
            subject: None,
            stacks: Vec::new(),
            last_poll: None,
            last_result: None,
            next_poll: None,
            last_error: None,
            last_error_label: None,
            refused_commit: None,
            polls: 0,
            fetches: 0,
            fetched_bytes: 0,
            last_fetch_ms: None,
            force_pushes: 0,
            mirror_rebuilds: 0,
            rejected_webhooks: 0,
        }
    }
}

/// Invalid source configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("two repositories are named {0:?}")]
    DuplicateName(String),
    #[error("repository {repository:?}: {message}")]
    Invalid { repository: String, message: String },
}

impl ConfigError {
    pub fn label(&self) -> &'static str {
        match self {
            ConfigError::DuplicateName(_) => "duplicate_repository",
            ConfigError::Invalid { .. } => "invalid_repository",
        }
    }
}

/// Tuning for [`Source::spawn`].
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Capacity of the event channel.
    pub event_buffer: usize,
    /// Watch `file://` and path repositories for new commits.
    pub watch_local: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            event_buffer: 64,
            watch_local: true,
        }
    }
}

struct RepoEntry {
    settings: RepoSettings,
    trigger: Arc<Notify>,
}

struct Shared {
    repos: BTreeMap<String, RepoEntry>,
    states: RwLock<BTreeMap<String, RepositoryState>>,
    shutdown: CancellationToken,
    /// Watchers live as long as the source.
    watchers: Mutex<Vec<notify::RecommendedWatcher>>,
}

/// A cheap, clonable handle on the running source.
#[derive(Clone)]
pub struct SourceHandle {
    shared: Arc<Shared>,
}

impl SourceHandle {
    /// Asks for an immediate poll of `repository`; false when there is no such repository.
    /// Triggers during a poll coalesce into one follow-up poll.
    pub fn trigger(&self, repository: &str) -> bool {
        match self.shared.repos.get(repository) {
            Some(entry) => {
                entry.trigger.notify_one();
                true
            }
            None => false,
        }
    }

    /// The state of every repository, by name.
    pub fn states(&self) -> Vec<RepositoryState> {
        self.read_states().values().cloned().collect()
    }

    pub fn state(&self, repository: &str) -> Option<RepositoryState> {
        self.read_states().get(repository).cloned()
    }

    /// The configured repositories (for webhook matching).
    pub fn settings(&self) -> impl Iterator<Item = &RepoSettings> {
        self.shared.repos.values().map(|e| &e.settings)
    }

    /// Counts a webhook for `repository` refused for a bad or missing signature.
    pub fn record_rejected_webhook(&self, repository: &str) {
        self.update_state(repository, |s| s.rejected_webhooks += 1);
    }

    /// Stops every poll loop and watcher.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn read_states(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, RepositoryState>> {
        self.shared.states.read().unwrap_or_else(|p| p.into_inner())
    }

    fn update_state(&self, repository: &str, f: impl FnOnce(&mut RepositoryState)) {
        let mut states = self
            .shared
            .states
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(state) = states.get_mut(repository) {
            f(state);
        }
    }
}

/// The Git source.
pub struct Source;

/// One mutex per mirror directory: repositories sharing a URL take turns.
type MirrorLocks = Arc<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>>;

impl Source {
    /// Starts polling every repository (first poll at once) on the current tokio
    /// runtime. Mirrors live under `data_dir`.
    pub fn spawn(
        settings: Vec<RepoSettings>,
        data_dir: impl Into<PathBuf>,
        options: SourceOptions,
    ) -> Result<(SourceHandle, mpsc::Receiver<SourceEvent>), ConfigError> {
        let data_dir = data_dir.into();
        let mut repos = BTreeMap::new();
        let mut states = BTreeMap::new();
        for s in settings {
            PathFilter::new(&s.paths).map_err(|e| ConfigError::Invalid {
                repository: s.name.clone(),
                message: e.to_string(),
            })?;
            if s.interval.is_zero() {
                return Err(ConfigError::Invalid {
                    repository: s.name.clone(),
                    message: "interval must be positive".into(),
                });
            }
            if s.timeout.is_zero() {
                return Err(ConfigError::Invalid {
                    repository: s.name.clone(),
                    message: "timeout must be positive".into(),
                });
            }
            if let Some(Err(message)) = s.verify.as_ref().map(|v| v.check()) {
                return Err(ConfigError::Invalid {
                    repository: s.name.clone(),
                    message: format!("verify {message}"),
                });
            }
            if repos.contains_key(&s.name) {
                return Err(ConfigError::DuplicateName(s.name));
            }
            states.insert(s.name.clone(), RepositoryState::new(&s));
            repos.insert(
                s.name.clone(),
                RepoEntry {
                    settings: s,
                    trigger: Arc::new(Notify::new()),
                },
            );
        }
        let handle = SourceHandle {
            shared: Arc::new(Shared {
                repos,
                states: RwLock::new(states),
                shutdown: CancellationToken::new(),
                watchers: Mutex::new(Vec::new()),
            }),
        };
        let (tx, rx) = mpsc::channel(options.event_buffer.max(1));
        let locks: MirrorLocks = Arc::default();
        for entry in handle.shared.repos.values() {
            if options.watch_local {
                start_watch(&handle, &entry.settings, &entry.trigger);
            }
            tokio::spawn(poll_loop(
                handle.clone(),
                entry.settings.clone(),
                entry.trigger.clone(),
                data_dir.clone(),
                locks.clone(),
                tx.clone(),
            ));
        }
        Ok((handle, rx))
    }
}

fn start_watch(handle: &SourceHandle, settings: &RepoSettings, trigger: &Arc<Notify>) {
    let Some(path) = local_repo_path(&settings.url) else {
        return;
    };
    let trigger = trigger.clone();
    match watch_refs(&path, move || trigger.notify_one()) {
        Ok(watcher) => handle
            .shared
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(watcher),
        // Polling still works; the watch only makes it faster.
        Err(e) => {
            tracing::warn!(repository = %settings.name, error = %e, "cannot watch local repository")
        }
    }
}

/// ±10% so that many repositories with the same interval do not poll in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..=1.1))
}

async fn poll_loop(
    handle: SourceHandle,
    settings: RepoSettings,
    trigger: Arc<Notify>,
    data_dir: PathBuf,
    locks: MirrorLocks,
    events: mpsc::Sender<SourceEvent>,
) {
    let shutdown = handle.shared.shutdown.clone();
    let mirror_lock = {
        let mut map = locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(Mirror::dir_for(&data_dir, &settings.url))
            .or_default()
            .clone()
    };
    let mut last: Option<Oid> = None;
    let mut last_error: Option<String> = None;
    let mut age_key_seen: Option<Option<Vec<u8>>> = None;
    loop {
        // A changed age key file (a fixed or rotated key) loads the stacks again,
        // as a new commit would: forgetting the commit makes this poll an update.
        if let Some(decryption) = &settings.decryption {
            let now = std::fs::read(&decryption.age_key_file)
                .ok()
                .map(|bytes| Sha256::digest(bytes).to_vec());
            if age_key_seen.as_ref().is_some_and(|seen| *seen != now) {
                last = None;
            }
            age_key_seen = Some(now);
        }
        let result = run_poll(&settings, &data_dir, &mirror_lock, last, &shutdown).await;
        if shutdown.is_cancelled() {
            // A poll stopped by the shutdown is no failure of the repository.
            return;
        }
        let event = record(&handle, &settings, &mut last, &mut last_error, result);
        let wait = jittered(settings.interval);
        handle.update_state(&settings.name, |s| {
            s.next_poll = chrono::Duration::from_std(wait)
                .ok()
                .map(|d| Utc::now() + d);
        });
        if let Some(event) = event {
            // A closed channel means nobody listens; keep polling for the status page.
            let _ = events.send(event).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = trigger.notified() => {}
        }
    }
}

async fn run_poll(
    settings: &RepoSettings,
    data_dir: &Path,
    mirror_lock: &Arc<Mutex<()>>,
    last: Option<Oid>,
    shutdown: &CancellationToken,
) -> Result<PollOutcome, GitError> {
    let (s, d, lock, cancel) = (
        settings.clone(),
        data_dir.to_path_buf(),
        mirror_lock.clone(),
        shutdown.clone(),
    );
    // The blocking thread returns at the deadline or the shutdown: a network
    // operation runs in a worker process that is killed then (see `worker`).
    let joined = tokio::task::spawn_blocking(move || {
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        poll_repository_until(&s, &d, last, Some(cancel))
    })
    .await;
    joined.unwrap_or_else(|e| {
        Err(GitError::Task {
            at: RepoRef::of(settings),
            message: e.to_string(),
        })
    })
}

/// Updates the state with a poll's result and returns the event to send, if any.
fn record(
    handle: &SourceHandle,
    settings: &RepoSettings,
    last: &mut Option<Oid>,
    last_error: &mut Option<String>,
    result: Result<PollOutcome, GitError>,
) -> Option<SourceEvent> {
    let now = Utc::now();
    match result {
        Ok(outcome) => {
            let changed = *last != Some(outcome.commit);
            let result = if !changed {
                PollResult::Unchanged
            } else if outcome.forced {
                PollResult::ForcePushed
            } else {
                PollResult::Updated
            };
            handle.update_state(&settings.name, |s| {
                s.polls += 1;
                s.last_poll = Some(now);
                s.last_result = Some(result);
                s.last_error = None;
                s.last_error_label = None;
                s.refused_commit = None;
                s.commit = Some(outcome.commit.to_string());
                s.subject = Some(outcome.subject.clone());
                if let Some(stacks) = &outcome.stacks {
                    s.stacks = stacks.iter().map(|st| st.name.clone()).collect();
                }
                if let Some(stats) = outcome.fetched {
                    s.fetches += 1;
                    s.fetched_bytes += stats.received_bytes as u64;
                    s.last_fetch_ms =
                        Some(u64::try_from(stats.duration.as_millis()).unwrap_or(u64::MAX));
                }
                if outcome.forced {
                    s.force_pushes += 1;
                }
                if outcome.opened == super::mirror::Opened::Rebuilt {
                    s.mirror_rebuilds += 1;
                }
            });
            *last_error = None;
            if !changed {
                return None;
            }
            if outcome.forced {
                tracing::warn!(repository = %settings.name, previous = ?outcome.previous.map(|c| c.to_string()), commit = %outcome.commit, "ref was force-pushed");
            }
            *last = Some(outcome.commit);
            Some(SourceEvent::Updated(RepositoryUpdate {
                repository: settings.name.clone(),
                url: settings.redacted_url(),
                git_ref: settings.git_ref.clone(),
                commit: outcome.commit.to_string(),
                previous: outcome.previous.map(|c| c.to_string()),
                forced: outcome.forced,
                subject: outcome.subject,
                // Discovery always runs when the commit changed.
                stacks: outcome.stacks.unwrap_or_default(),
                reader: outcome.reader,
                // Re-read at each poll, like the auth files: a rotated key needs no restart.
                decryption: settings
                    .decryption
                    .as_ref()
                    .map(|d| Arc::new(AgeKeys::read(&d.age_key_file))),
            }))
        }
        Err(error) => {
            let message = error.to_string();
            tracing::warn!(repository = %settings.name, error = %message, label = error.label(), "poll failed");
            handle.update_state(&settings.name, |s| {
                s.polls += 1;
                s.last_poll = Some(now);
                s.last_result = Some(PollResult::Failed);
                s.last_error = Some(message.clone());
                s.last_error_label = Some(error.label().to_string());
                s.refused_commit = match &error {
                    GitError::Unverified { commit, .. } => Some(commit.clone()),
                    _ => None,
                };
            });
            // Report a failure once, not on every poll while it lasts.
            if last_error.as_deref() == Some(message.as_str()) {
                return None;
            }
            *last_error = Some(message);
            Some(SourceEvent::Failed {
                repository: settings.name.clone(),
                error,
                last_good: last.map(|c| c.to_string()),
            })
        }
    }
}

/// Bounds libgit2's network waits (connect, and each read/write) so that a
/// silent server cannot hold a poll, and its mirror lock, forever.
///
/// # Safety
/// This sets libgit2 globals without synchronisation: call it once at start-up,
/// before any thread (including the tokio runtime) that uses git2 exists.
pub unsafe fn set_network_timeouts(connect: Duration, io: Duration) -> Result<(), git2::Error> {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the caller guarantees no other thread uses libgit2 yet.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect))?;
        git2::opts::set_server_timeout_in_milliseconds(millis(io))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors() {
        let a = RepoSettings::new("a", "file:///x", "main");
        let err = Source::spawn(
            vec![a.clone(), a.clone()],
            "/tmp/unused",
            SourceOptions::default(),
        )
        .err()
        .map(|e| (e.label(), e.to_string()));
        assert_eq!(
            err,
            Some((
                "duplicate_repository",
                "two repositories are named \"a\"".to_string()
            ))
        );
        let mut bad = a.clone();
        bad.paths = vec!["stacks/[".into()];
        let err = Source::spawn(vec![bad], "/tmp/unused", SourceOptions::default())
            .err()
            .map(|e| e.label());
        assert_eq!(err, Some("invalid_repository"));
        let mut untrusting = a.clone();
        untrusting.verify = Some(crate::git::verify::Verify {
            ssh_allowed_signers: None,
            gpg_keyring: None,
        });
        let err = Source::spawn(vec![untrusting], "/tmp/unused", SourceOptions::default())
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("repository \"a\": verify needs sshAllowedSigners, gpgKeyring or both")
        );
        let mut zero = a;
        zero.interval = Duration::ZERO;
        assert!(Source::spawn(vec![zero], "/tmp/unused", SourceOptions::default()).is_err());
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..200 {
            let d = jittered(Duration::from_secs(60));
            assert!(
                d >= Duration::from_secs(54) && d <= Duration::from_secs(66),
                "{d:?}"
            );
        }
    }
}
