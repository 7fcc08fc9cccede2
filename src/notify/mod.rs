//! Telling the outside world what happened to each stack: commit statuses on
//! the forge ([`forge`]) and notifications to webhooks and Slack ([`webhook`]).
//!
//! Input is one [`Observation`] per stack outcome, handed to an [`Observer`]
//! (reached through [`crate::state::SharedState::observe`]). Observing never
//! waits: it is a `try_send` into a bounded queue. A dispatcher task keeps the
//! per-stack memory ([`Tracker`]) that turns observations into state changes,
//! and hands each message to the bounded queue of its target; one worker per
//! target sends (timeouts, retries), so a slow endpoint delays only itself.
//! Drops and results are counted in `stackd_commit_status_total` and
//! `stackd_notifications_total`.

pub mod forge;
pub mod send;
pub mod webhook;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::Config;
use crate::crd::{Stack, StackPhase, StackStatus};
use crate::metrics::Metrics;

use self::forge::{DESCRIPTION_LIMIT, Forge, StatusUpdate, one_line};
use self::send::{Outcome, Request, SendPolicy, Sender};
use self::webhook::{Channel, ChannelKind, Event, Notice};

/// A stack's outcome as the forge sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitState {
    /// Applying, or waiting for health.
    Pending,
    /// Ready at the revision.
    Success,
    /// Load, render, apply or health failed at the revision.
    Failure,
}

/// One stack's outcome at one commit: the whole input of this module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The configured repository name (`repositories[].name`); empty for a
    /// Stack not made from Git.
    pub repository: String,
    pub namespace: String,
    pub stack: String,
    /// The commit SHA the outcome is about.
    pub revision: String,
    pub state: CommitState,
    /// A short CamelCase reason (`RenderFailed`, `Progressing`, `Available`...).
    pub reason: String,
    /// One line; shown on the forge and in notifications.
    pub message: String,
    pub at: DateTime<Utc>,
}

/// The reason the rollout work gives a Stack it rolled back.
pub const ROLLED_BACK: &str = "RolledBack";

/// The observation a Stack's newly computed status makes, if it names a commit.
pub fn observation_of(stack: &Stack, status: &StackStatus) -> Option<Observation> {
    let source = stack.spec.source.as_ref()?;
    let phase = status.phase.unwrap_or_default();
    let applied_here = status
        .last_applied_revision
        .as_ref()
        .is_none_or(|r| *r == source.revision);
    let state = match phase {
        StackPhase::Failure | StackPhase::RolledBack => CommitState::Failure,
        StackPhase::Available if applied_here => CommitState::Success,
        _ => CommitState::Pending,
    };
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let reason = ready
        .map(|c| c.reason.clone())
        .unwrap_or_else(|| format!("{phase:?}"));
    let message = match state {
        CommitState::Failure => status
            .last_error
            .clone()
            .or_else(|| status.message.clone())
            .unwrap_or_default(),
        CommitState::Success => format!("Ready at {}", short(&source.revision)),
        CommitState::Pending => status.message.clone().unwrap_or_default(),
    };
    let repository = stack
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::reconcile::source::REPOSITORY_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    Some(Observation {
        repository,
        namespace: stack.metadata.namespace.clone().unwrap_or_default(),
        stack: stack.metadata.name.clone().unwrap_or_default(),
        // A Git-side failure leaves the spec at the last good commit; the
        // failure is about the commit that was attempted.
        revision: match state {
            CommitState::Failure => status
                .last_attempted_revision
                .clone()
                .unwrap_or_else(|| source.revision.clone()),
            _ => source.revision.clone(),
        },
        state,
        reason,
        message: one_line(&message, 1000),
        at: Utc::now(),
    })
}

fn short(revision: &str) -> &str {
    &revision[..revision.len().min(8)]
}

/// What the configuration asks of this module, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Where the status page is reachable from outside, without a trailing `/`.
    pub external_url: Option<String>,
    /// By repository name.
    pub forges: BTreeMap<String, Forge>,
    pub channels: Vec<Channel>,
}

impl Settings {
    /// Resolves and validates the keys of `config` this module reads; the
    /// error names the key (`repositories[0].commitStatus.provider`).
    pub fn of(config: &Config) -> Result<Settings, (String, String)> {
        let mut forges = BTreeMap::new();
        for (index, repository) in config.repositories.iter().enumerate() {
            if let Some(commit_status) = &repository.policy.commit_status {
                let forge = forge::resolve(commit_status, &repository.source.url).map_err(
                    |(field, message)| {
                        (
                            format!("repositories[{index}].commitStatus.{field}"),
                            message,
                        )
                    },
                )?;
                forges.insert(repository.source.name.clone(), forge);
            }
        }
        let external_url = match &config.settings.external_url {
            Some(url) => {
                let uri: Result<http::Uri, _> = url.parse();
                let ok = uri.as_ref().is_ok_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
                });
                if !ok {
                    return Err((
                        "externalUrl".into(),
                        format!("{url:?} is not an http(s) URL such as https://stackd.example.com"),
                    ));
                }
                Some(url.trim_end_matches('/').to_string())
            }
            None => None,
        };
        Ok(Settings {
            external_url,
            forges,
            channels: webhook::resolve(&config.settings.notifications)?,
        })
    }

    /// Whether anything is to be sent at all.
    pub fn is_empty(&self) -> bool {
        self.forges.is_empty() && self.channels.is_empty()
    }

    fn page_of(&self, namespace: &str, stack: &str) -> Option<String> {
        self.external_url
            .as_ref()
            .map(|base| format!("{base}/stacks/{namespace}/{stack}"))
    }
}

/// What one observation changes: a commit status to post, an event to notify.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub post_status: bool,
    pub event: Option<Event>,
}

/// Revisions remembered per stack, to recognise a late report about an old one.
const REMEMBERED_REVISIONS: usize = 8;

/// Per-stack memory that turns a stream of observations into state changes.
#[derive(Debug, Default)]
pub struct Tracker {
    stacks: HashMap<(String, String), Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    /// The last state change: state, revision and reason.
    last: Option<(CommitState, String, String)>,
    /// The last commit status posted: revision and state.
    posted: Option<(String, CommitState)>,
    /// Revisions in the order they were first seen; the last is current.
    revisions: VecDeque<String>,
    /// Failed since it was last Ready (a retry in between is still failing).
    failing: bool,
}

impl Tracker {
    /// Decides what `observation` changes, and remembers it.
    ///
    /// - A report of success at a revision already superseded by a newer one is
    ///   stale (the Stack still runs the last good commit after a newer one
    ///   failed to load) and changes nothing.
    /// - A commit status is posted when the (revision, state) pair is new.
    /// - `failure` when a stack starts failing, or fails differently (another
    ///   revision or reason); `rollback` when that reason is a rollback;
    ///   `recovery` on success after a failure; `applied` on success at a new
    ///   revision seen being applied. The first report after start is never
    ///   `applied`: a restart is not a deployment.
    pub fn observe(&mut self, observation: &Observation) -> Decision {
        let key = (observation.namespace.clone(), observation.stack.clone());
        let memory = self.stacks.entry(key).or_default();
        let revision = &observation.revision;
        let known = memory.revisions.iter().any(|r| r == revision);
        let current = memory.revisions.back() == Some(revision);
        if observation.state == CommitState::Success && known && !current {
            return Decision::default();
        }
        if !current {
            memory.revisions.retain(|r| r != revision);
            memory.revisions.push_back(revision.clone());
            if memory.revisions.len() > REMEMBERED_REVISIONS {
                memory.revisions.pop_front();
            }
        }
        let post_status = !revision.is_empty()
            && memory.posted.as_ref() != Some(&(revision.clone(), observation.state));
        if post_status {
            memory.posted = Some((revision.clone(), observation.state));
        }
        let now = (
            observation.state,
            revision.clone(),
            observation.reason.clone(),
        );
        let event = match (&memory.last, observation.state) {
            (Some(last), _) if *last == now => None,
            (_, CommitState::Pending) => None,
            (_, CommitState::Failure) if observation.reason == ROLLED_BACK => Some(Event::Rollback),
            (_, CommitState::Failure) => Some(Event::Failure),
            (_, CommitState::Success) if memory.failing => Some(Event::Recovery),
            (Some((_, last_revision, _)), CommitState::Success) if last_revision != revision => {
                Some(Event::Applied)
            }
            (Some((CommitState::Pending, _, _)), CommitState::Success) => Some(Event::Applied),
            (_, CommitState::Success) => None,
        };
        match observation.state {
            CommitState::Failure => memory.failing = true,
            CommitState::Success => memory.failing = false,
            CommitState::Pending => {}
        }
        memory.last = Some(now);
        Decision { post_status, event }
    }

    /// Forgets a deleted stack.
    pub fn forget(&mut self, namespace: &str, stack: &str) {
        self.stacks
            .remove(&(namespace.to_string(), stack.to_string()));
    }
}

/// Stacks that keep failing, and when each channel last told about them.
#[derive(Debug, Default)]
pub struct Reminders {
    failing: HashMap<(String, String), Notice>,
    /// By channel name, then stack.
    sent: HashMap<(String, (String, String)), Instant>,
}

impl Reminders {
    /// Records an event sent (or not) to channels; failures are remembered.
    pub fn record(&mut self, notice: &Notice) {
        let key = (notice.namespace.clone(), notice.stack.clone());
        match notice.event {
            Event::Failure | Event::Rollback => {
                self.failing.insert(key, notice.clone());
            }
            Event::Recovery | Event::Applied => {
                self.failing.remove(&key);
                self.sent.retain(|(_, stack), _| *stack != key);
            }
        }
    }

    /// Forgets a deleted stack.
    pub fn forget(&mut self, namespace: &str, stack: &str) {
        let key = (namespace.to_string(), stack.to_string());
        self.failing.remove(&key);
        self.sent.retain(|(_, stack), _| *stack != key);
    }

    pub fn sent(&mut self, channel: &str, namespace: &str, stack: &str, at: Instant) {
        self.sent.insert(
            (
                channel.to_string(),
                (namespace.to_string(), stack.to_string()),
            ),
            at,
        );
    }

    /// The reminders due at `now`, as (channel index, notice); each is marked sent.
    pub fn due(&mut self, channels: &[Channel], now: Instant) -> Vec<(usize, Notice)> {
        let mut due = Vec::new();
        for (index, channel) in channels.iter().enumerate() {
            for (key, notice) in &self.failing {
                if !channel.wants(notice.event, &key.0, &key.1) {
                    continue;
                }
                let sent_key = (channel.name.clone(), key.clone());
                let last = self.sent.get(&sent_key).copied();
                if last.is_some_and(|at| now.duration_since(at) >= channel.repeat_interval) {
                    due.push((index, notice.clone()));
                    self.sent.insert(sent_key, now);
                }
            }
        }
        due
    }
}

/// Messages to the dispatcher.
enum Message {
    Observe(Box<Observation>),
    Configure(Box<Settings>),
    /// A stack was deleted: no more reminders about it.
    Forget(String, String),
}

/// The input queue's size: observations beyond it are dropped (and logged).
const INPUT_QUEUE: usize = 4096;
/// Each target's queue: messages beyond it are dropped and counted. Room for
/// a restart, which posts every stack's current state once more.
const TARGET_QUEUE: usize = 1024;

/// The cheap, cloneable hook the reconcilers call. The default one drops
/// everything (dry runs, tests).
#[derive(Clone, Debug, Default)]
pub struct Observer {
    sender: Option<mpsc::Sender<Message>>,
    /// With leader election only the leader sends; others observe nothing.
    active: Arc<AtomicBool>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl Observer {
    /// Hands `observation` over without waiting.
    pub fn observe(&self, observation: Observation) {
        let Some(sender) = &self.sender else { return };
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        if sender
            .try_send(Message::Observe(Box::new(observation)))
            .is_err()
        {
            warn!("commit status and notification queue full; an observation was dropped");
        }
    }

    /// Forgets a deleted stack, so a failing one is not reminded of forever.
    pub fn forget(&self, namespace: &str, stack: &str) {
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(Message::Forget(namespace.to_string(), stack.to_string()));
        }
    }

    /// Applies a reloaded configuration.
    pub fn configure(&self, settings: Settings) {
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(Message::Configure(Box::new(settings)));
        }
    }

    /// Whether observations are sent on (leader election).
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
    }
}

/// Starts the dispatcher; it stops when every [`Observer`] clone is dropped.
pub fn spawn(settings: Settings, metrics: Metrics, policy: SendPolicy) -> Observer {
    let (sender, receiver) = mpsc::channel(INPUT_QUEUE);
    let dispatcher = Dispatcher {
        sender: Sender::new(policy),
        metrics,
        tracker: Tracker::default(),
        reminders: Reminders::default(),
        forges: BTreeMap::new(),
        channels: Vec::new(),
        settings: Settings::default(),
    };
    tokio::spawn(dispatcher.run(receiver, settings));
    Observer {
        sender: Some(sender),
        active: Arc::new(AtomicBool::new(true)),
    }
}

/// Work for one target's worker.
enum Job {
    Status { forge: Forge, update: StatusUpdate },
    Notify { channel: Channel, notice: Notice },
}

struct Dispatcher {
    sender: Sender,
    metrics: Metrics,
    tracker: Tracker,
    reminders: Reminders,
    /// One queue per repository with a `commitStatus`.
    forges: BTreeMap<String, mpsc::Sender<Job>>,
    /// One queue per channel, in `settings.channels` order.
    channels: Vec<mpsc::Sender<Job>>,
    settings: Settings,
}

impl Dispatcher {
    async fn run(mut self, mut receiver: mpsc::Receiver<Message>, settings: Settings) {
        self.configure(settings);
        let mut tick = tokio::time::interval(self.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = receiver.recv() => match message {
                    None => return,
                    Some(Message::Observe(observation)) => self.observe(&observation),
                    Some(Message::Forget(namespace, stack)) => {
                        self.tracker.forget(&namespace, &stack);
                        self.reminders.forget(&namespace, &stack);
                    }
                    Some(Message::Configure(settings)) => {
                        self.configure(*settings);
                        tick = tokio::time::interval(self.tick());
                    }
                },
                _ = tick.tick() => self.remind(),
            }
        }
    }

    /// How often reminders are looked for: often enough for the shortest interval.
    fn tick(&self) -> Duration {
        let shortest = self
            .settings
            .channels
            .iter()
            .map(|c| c.repeat_interval)
            .min()
            .unwrap_or(Duration::from_secs(60));
        (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(10))
    }

    /// New workers for the new settings; the old ones finish their queues.
    fn configure(&mut self, settings: Settings) {
        self.forges = settings
            .forges
            .keys()
            .map(|repository| {
                (
                    repository.clone(),
                    self.worker(Target::Repository(repository.clone())),
                )
            })
            .collect();
        self.channels = settings
            .channels
            .iter()
            .map(|c| self.worker(Target::Channel(c.name.clone())))
            .collect();
        self.settings = settings;
    }

    fn worker(&self, target: Target) -> mpsc::Sender<Job> {
        let (sender, mut receiver) = mpsc::channel::<Job>(TARGET_QUEUE);
        let (http, metrics) = (self.sender.clone(), self.metrics.clone());
        tokio::spawn(async move {
            while let Some(job) = receiver.recv().await {
                deliver(&http, &metrics, &target, job).await;
            }
        });
        sender
    }

    fn observe(&mut self, observation: &Observation) {
        let decision = self.tracker.observe(observation);
        let page = self
            .settings
            .page_of(&observation.namespace, &observation.stack);
        if decision.post_status
            && let Some(forge) = self.settings.forges.get(&observation.repository)
        {
            let update = StatusUpdate {
                sha: observation.revision.clone(),
                state: observation.state,
                context: format!("stackd/{}/{}", observation.namespace, observation.stack),
                description: description(observation),
                target_url: page.clone(),
            };
            let job = Job::Status {
                forge: forge.clone(),
                update,
            };
            let queue = &self.forges[&observation.repository];
            if queue.try_send(job).is_err() {
                self.count_status(&observation.repository, "dropped");
            }
        }
        let Some(event) = decision.event else { return };
        let notice = Notice {
            event,
            repository: observation.repository.clone(),
            namespace: observation.namespace.clone(),
            stack: observation.stack.clone(),
            revision: observation.revision.clone(),
            reason: observation.reason.clone(),
            message: observation.message.clone(),
            url: page,
        };
        self.reminders.record(&notice);
        let now = Instant::now();
        for index in 0..self.settings.channels.len() {
            let channel = &self.settings.channels[index];
            if channel.wants(event, &notice.namespace, &notice.stack) {
                self.reminders
                    .sent(&channel.name, &notice.namespace, &notice.stack, now);
                self.enqueue(index, notice.clone());
            }
        }
    }

    fn remind(&mut self) {
        for (index, notice) in self.reminders.due(&self.settings.channels, Instant::now()) {
            self.enqueue(index, notice);
        }
    }

    fn enqueue(&self, index: usize, notice: Notice) {
        let channel = self.settings.channels[index].clone();
        let name = channel.name.clone();
        if self.channels[index]
            .try_send(Job::Notify { channel, notice })
            .is_err()
        {
            self.metrics
                .notifications_total
                .with_label_values(&[name.as_str(), "dropped"])
                .inc();
        }
    }

    fn count_status(&self, repository: &str, result: &str) {
        self.metrics
            .commit_status_total
            .with_label_values(&[repository, result])
            .inc();
    }
}

/// The description a commit status gets: one line, at most 140 characters.
pub fn description(observation: &Observation) -> String {
    let text = match observation.state {
        CommitState::Failure if !observation.message.is_empty() => {
            format!("{}: {}", observation.reason, observation.message)
        }
        _ if !observation.message.is_empty() => observation.message.clone(),
        _ => observation.reason.clone(),
    };
    one_line(&text, DESCRIPTION_LIMIT)
}

/// Whose worker a job runs on, for logs and metrics.
#[derive(Clone, Debug)]
enum Target {
    Repository(String),
    Channel(String),
}

/// Sends one job and counts how it went. Secrets are read here, at the last
/// moment, and never reach a message: only the target's name is logged.
async fn deliver(http: &Sender, metrics: &Metrics, target: &Target, job: Job) {
    let (request, what): (Result<Request, String>, String) = match &job {
        Job::Status { forge, update } => (
            read_secret(&forge.token_file, "tokenFile")
                .map(|token| forge::request(forge, &token, update)),
            format!(
                "{} {:?} at {}",
                update.context,
                update.state,
                short(&update.sha)
            ),
        ),
        Job::Notify { channel, notice } => {
            let request = read_secret(&channel.url_file, "urlFile").and_then(|url| {
                Ok(match channel.kind {
                    ChannelKind::Slack => webhook::slack_request(&url, notice),
                    ChannelKind::Webhook => {
                        let secret = match &channel.secret_file {
                            Some(file) => Some(read_secret(file, "secretFile")?),
                            None => None,
                        };
                        webhook::webhook_request(&url, secret.as_deref().map(str::as_bytes), notice)
                    }
                })
            });
            (
                request,
                format!(
                    "{} of {}/{}",
                    notice.event.label(),
                    notice.namespace,
                    notice.stack
                ),
            )
        }
    };
    let outcome = match request {
        Ok(request) => http.send(&request).await,
        Err(problem) => Outcome::Failed(problem),
    };
    let (family, label, name) = match target {
        Target::Repository(name) => (&metrics.commit_status_total, "commit status", name),
        Target::Channel(name) => (&metrics.notifications_total, "notification", name),
    };
    family
        .with_label_values(&[name.as_str(), outcome.label()])
        .inc();
    match outcome {
        Outcome::Sent => debug!(target_name = %name, %what, "{label} sent"),
        Outcome::Refused(status) => warn!(
            target_name = %name, %what, status,
            "{label} refused (check the token or URL and its permissions)"
        ),
        Outcome::Failed(problem) => warn!(target_name = %name, %what, %problem, "{label} not sent"),
    }
}

/// A secret file's trimmed content; the error names the key, not the content.
fn read_secret(file: &std::path::Path, key: &str) -> Result<String, String> {
    std::fs::read_to_string(file)
        .map(|text| text.trim().to_string())
        .map_err(|e| format!("{key}: cannot read {}: {}", file.display(), e.kind()))
}

#[cfg(test)]
mod tests;
