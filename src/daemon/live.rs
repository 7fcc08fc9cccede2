//! Live mode: Git commits become `Stack` objects, and the Stack controller turns
//! them into workloads. Only the leader writes: every replica keeps the latest
//! desired stacks of each repository, and whoever leads applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RepositoryPolicy;
use crate::crd::{Stack, StackPhase, StackSpec};
use crate::git::discovery::stack_at;
use crate::git::mirror::Mirror;
use crate::git::source::{PollResult, RepositoryState, RepositoryUpdate};
use crate::git::tree::GitTreeSource;
use crate::reconcile::shards::ShardHolders;
use crate::reconcile::{DesiredStack, RevisionLoader, SecretStore, SyncPolicy};
use crate::render::files::RepoPath;
use crate::render::model::SecretValues;
use crate::state::{SharedState, StackView};
use crate::tenancy::{NamespaceRules, Tenancy};

use super::stacks::{LoadedStack, load_reason, load_stacks};
use crate::reason::Reason;
use crate::reconcile::source::{SyncMemory, Unloaded, stack_object, sync_repository_remembered};
use crate::reconcile::status::Failure;
use crate::reconcile::{GitFailure, GitFailures};
use crate::render::LoadError;
use crate::render::{self, RenderOptions};
use tokio::sync::watch;

/// How long to wait before retrying a repository whose sync failed.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The latest desired stacks per repository, and which still need applying.
#[derive(Default)]
pub struct GitSync {
    inner: Mutex<Pending>,
    /// Bumped at each offer; every running sync (one per held shard) sees it.
    changed: watch::Sender<u64>,
    /// The namespace stackd runs in: refused to stacks unless listed exactly.
    own_namespace: Option<String>,
    /// Shown at once for stacks that fail on the Git side.
    state: SharedState,
    /// The same failures, for the controller to write into each Stack.
    failures: GitFailures,
    /// The renderer settings, to try each new commit's stacks before their
    /// Stack is written; `None` uses the defaults.
    render: Option<watch::Receiver<RenderOptions>>,
    /// What the last sync of each repository saw: unchanged commits cost no request.
    memory: SyncMemory,
    /// With `--shards`: the shards and who holds them.
    shards: Option<ShardHolders>,
}

#[derive(Default)]
struct Pending {
    /// The latest commit of each repository with its settings. Its stacks are
    /// loaded again when applied: keeping a repository of thousands loaded
    /// between syncs would double the daemon's memory for one saved load.
    latest: BTreeMap<String, Arc<Offer>>,
    dirty: BTreeSet<String>,
}

struct Offer {
    update: RepositoryUpdate,
    policy: RepositoryPolicy,
    /// Stacks of this commit that load but do not render: their Stacks keep
    /// the last good spec, as for a stack that does not load.
    unrenderable: BTreeSet<(String, String)>,
}

/// Which Stacks the sync of a repository may delete. A stack that does not
/// load or render turns pruning off for that sync (see [`Unloaded`]).
fn sync_policy(policy: &RepositoryPolicy) -> SyncPolicy {
    // Deleting a Stack whose directory vanished needs `allowEmpty`, as does
    // pruning a stack to nothing.
    SyncPolicy {
        prune: policy.prune && policy.allow_empty,
        allow_prune_all: policy.allow_empty,
        shards: 0,
    }
}

/// The stacks of a commit that are not suspended, loaded one at a time: each
/// as it would be synced, or the stack that does not load (its `result` the error).
fn each_desired<'a>(
    update: &'a RepositoryUpdate,
    policy: &'a RepositoryPolicy,
    own_namespace: Option<&'a str>,
) -> impl Iterator<Item = Result<DesiredStack, Box<LoadedStack>>> + 'a {
    load_stacks(update, policy)
        .filter(|stack| !stack.suspended)
        .map(move |stack| {
            let (project, secrets) = match stack.result {
                Ok(loaded) => loaded,
                Err(error) => {
                    return Err(Box::new(LoadedStack {
                        result: Err(error),
                        ..stack
                    }));
                }
            };
            Ok(DesiredStack {
                name: stack.name,
                namespace: stack.namespace,
                project,
                secrets,
                source: stack.source,
                prune: policy.prune,
                tenancy: Tenancy {
                    pod_security: stack.pod_security,
                    network_policies: stack.network_policies,
                    health_timeout: stack.health_timeout,
                    rollback: stack.rollback,
                    service_account_name: policy.service_account_name.clone(),
                    namespaces: NamespaceRules {
                        allowed: policy.namespaces.clone(),
                        own_namespace: own_namespace.map(str::to_string),
                    },
                    file: stack.file,
                },
            })
        })
}

/// Re-renders a past revision of a Git stack from the mirror, for a rollback
/// after stackd restarted (memory no longer has the revision).
pub struct MirrorRevisions {
    pub sync: Arc<GitSync>,
    pub data_dir: PathBuf,
}

impl RevisionLoader for MirrorRevisions {
    fn load(&self, stack: &Stack, revision: &str) -> Result<(StackSpec, SecretValues), String> {
        self.sync.load_revision(&self.data_dir, stack, revision)
    }
}

impl GitSync {
    /// `stack` as the Git sync would apply it at `commit`: that commit's files,
    /// read from the repository's mirror under `data_dir`, loaded with the
    /// repository's current settings. Blocking. Errors quote no secret value.
    pub fn load_revision(
        &self,
        data_dir: &Path,
        stack: &Stack,
        commit: &str,
    ) -> Result<(StackSpec, SecretValues), String> {
        let source = stack
            .spec
            .source
            .as_ref()
            .ok_or("the stack does not come from Git")?;
        let offer = {
            let pending = self.lock();
            let found = pending
                .latest
                .values()
                .find(|o| o.update.url == source.repository);
            found.cloned().ok_or_else(|| {
                format!(
                    "repository {} is not synced by this stackd",
                    source.repository
                )
            })?
        };
        let oid =
            git2::Oid::from_str(commit).map_err(|_| format!("{commit:?} is not a commit id"))?;
        let mirror = Mirror::dir_for(data_dir, &source.repository);
        // No ref is needed to keep the commit: only a mirror's first fetch is
        // shallow, later ones are incremental, and nothing ever prunes the
        // mirror's objects, so a commit once applied stays readable (even after
        // a force-push). Only a rebuilt mirror lacks it, and then this says so.
        let reader = GitTreeSource::at_commit(&mirror, oid)
            .map_err(|e| format!("commit not readable in the mirror: {}", e.message()))?;
        let dir = RepoPath::new(&source.path).map_err(|e| e.to_string())?;
        let found = stack_at(&reader, &dir, &offer.update.repository)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no compose file in {:?} at that commit", source.path))?;
        // That commit's own subject, not the head's the last poll offered.
        let subject = git2::Repository::open(&mirror)
            .and_then(|repo| {
                repo.find_commit(oid)
                    .map(|c| c.summary().ok().flatten().unwrap_or("").to_string())
            })
            .unwrap_or_default();
        let update = RepositoryUpdate {
            commit: commit.to_string(),
            subject,
            stacks: vec![found],
            reader: Arc::new(reader),
            ..offer.update.clone()
        };
        let (namespace, name) = (
            stack.metadata.namespace.as_deref(),
            stack.metadata.name.as_deref(),
        );
        // `update` holds this one stack.
        let desired =
            match each_desired(&update, &offer.policy, self.own_namespace.as_deref()).next() {
                Some(Ok(desired))
                    if Some(desired.namespace.as_str()) == namespace
                        && Some(desired.name.as_str()) == name =>
                {
                    desired
                }
                Some(Err(failed)) => {
                    return Err(failed
                        .result
                        .err()
                        .map_or_else(|| "the stack does not load".into(), |e| e.to_string()));
                }
                _ => return Err("the stack is not there at that commit".into()),
            };
        let object = stack_object(&offer.update.repository, &desired);
        Ok((object.spec, desired.secrets))
    }

    pub fn new(own_namespace: Option<String>, state: SharedState, failures: GitFailures) -> Self {
        GitSync {
            own_namespace,
            state,
            failures,
            ..GitSync::default()
        }
    }

    /// Labels each Stack with its shard, and notifies only of the stacks of
    /// shards this replica holds.
    pub fn with_shards(mut self, holders: ShardHolders) -> Self {
        self.shards = Some(holders);
        self
    }

    fn shard_count(&self) -> u32 {
        self.shards.as_ref().map_or(0, ShardHolders::shards)
    }

    /// Whether this replica reports on the stack: without shards always, else
    /// when it holds the stack's shard (the others would report it too).
    fn reports_on(&self, namespace: &str, name: &str) -> bool {
        match &self.shards {
            None => true,
            Some(holders) => holders
                .of_stack(namespace, name)
                .is_none_or(|(shard, _)| holders.holds(shard)),
        }
    }

    /// Renders with the configuration's settings (the controller's).
    pub fn with_render_options(mut self, render: watch::Receiver<RenderOptions>) -> Self {
        self.render = Some(render);
        self
    }

    /// Loads a new commit's stacks and queues the commit. A stack that fails to
    /// load is shown as failed and keeps its current Stack spec; the controller
    /// writes the failure into its status. With any failure the sync prunes
    /// nothing, so a broken stack never looks like a deleted one.
    pub fn offer(&self, update: &RepositoryUpdate, policy: &RepositoryPolicy) {
        // A stack that loads but does not render would fail in the controller,
        // after its Stack's spec had moved to this commit: try it here instead,
        // so the spec stays at the last good revision. One stack at a time:
        // the sync loads the commit again when it applies it.
        let options = self
            .render
            .as_ref()
            .map(|r| r.borrow().clone())
            .unwrap_or_default();
        let mut unrenderable = BTreeSet::new();
        for stack in each_desired(update, policy, self.own_namespace.as_deref()) {
            let stack = match stack {
                Ok(stack) => stack,
                Err(failed) => {
                    if let Err(error) = &failed.result {
                        self.load_failed(update, &failed, error);
                    }
                    continue;
                }
            };
            let object = stack_object(&update.repository, &stack);
            match render::render(&object, &stack.secrets, &options) {
                Ok(_) => self.failures.clear_stack(&stack.namespace, &stack.name),
                Err(error) => {
                    let id = format!("{}/{}", stack.namespace, stack.name);
                    warn!(stack = %id, %error, "stack does not render; its Stack is left as it is");
                    let message = format!("Stack {id}: {error}");
                    self.show_failure(
                        &stack.namespace,
                        &stack.name,
                        &update.repository,
                        Some(&stack.source.path),
                        &update.commit,
                        Failure::new(Reason::RenderFailed, message, false),
                    );
                    unrenderable.insert((stack.namespace, stack.name));
                }
            }
        }
        let offer = Offer {
            update: update.clone(),
            policy: policy.clone(),
            unrenderable,
        };
        let mut pending = self.lock();
        pending
            .latest
            .insert(update.repository.clone(), Arc::new(offer));
        pending.dirty.insert(update.repository.clone());
        drop(pending);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A stack of `update` that does not load: shown as failed; its Stack keeps
    /// its spec, and the controller writes the failure into its status.
    fn load_failed(&self, update: &RepositoryUpdate, stack: &LoadedStack, error: &LoadError) {
        warn!(stack = %stack.name, error = %error, "stack does not load; its Stack is left as it is");
        let failure = Failure::new(load_reason(error), error.to_string(), false);
        self.show_failure(
            &stack.namespace,
            &stack.name,
            &update.repository,
            Some(&stack.source.path),
            &update.commit,
            failure,
        );
    }

    /// A stack that failed on the Git side, for the page at once and for the
    /// controller to write into its Stack; whether the failure is new.
    fn show_failure(
        &self,
        namespace: &str,
        name: &str,
        repository: &str,
        path: Option<&str>,
        commit: &str,
        failure: Failure,
    ) -> bool {
        let base = self.state.stack(namespace, name).unwrap_or_default();
        self.state.put_stack(StackView {
            namespace: namespace.to_string(),
            name: name.to_string(),
            repository: Some(repository.to_string()),
            path: path.map(str::to_string).or(base.path.clone()),
            phase: StackPhase::Failure,
            reason: Some(failure.reason),
            last_attempted_revision: Some(commit.to_string()),
            message: Some(failure.message.clone()),
            last_error: Some(failure.message.clone()),
            ..base
        });
        if self.reports_on(namespace, name) {
            self.state.observe(crate::notify::Observation {
                repository: repository.to_string(),
                namespace: namespace.to_string(),
                stack: name.to_string(),
                revision: commit.to_string(),
                state: crate::notify::CommitState::Failure,
                reason: failure.reason.as_str().to_string(),
                message: failure.message.clone(),
                at: chrono::Utc::now(),
            });
        }
        self.failures.set_stack(
            namespace,
            name,
            GitFailure {
                revision: Some(commit.to_string()),
                failure,
                while_at: None,
            },
        )
    }

    /// Forgets repositories that are no longer configured.
    pub fn retain(&self, repositories: &BTreeSet<String>) {
        let mut pending = self.lock();
        pending.latest.retain(|name, _| repositories.contains(name));
        pending.dirty.retain(|name| repositories.contains(name));
    }

    /// Applies queued repositories while `leading` is not cancelled: every
    /// repository, or with `--shards` those of `shard`. On taking the lead (or
    /// the shard) everything is applied once: a previous holder may have died first.
    pub async fn run(
        &self,
        client: Client,
        secrets: SecretStore,
        leading: CancellationToken,
        shard: Option<u32>,
    ) {
        let shards = self.shard_count();
        let mine = |repository: &str| {
            shard.is_none_or(|shard| crate::shard::of_repository(repository, shards) == shard)
        };
        let mut changed = self.changed.subscribe();
        // Another replica may have written while this one did not lead.
        self.memory.forget();
        {
            let mut pending = self.lock();
            let all: Vec<String> = pending.latest.keys().cloned().collect();
            pending.dirty.extend(all.into_iter().filter(|r| mine(r)));
        }
        loop {
            let batch: Vec<(String, Arc<Offer>)> = {
                let mut pending = self.lock();
                let dirty: Vec<String> =
                    pending.dirty.iter().filter(|r| mine(r)).cloned().collect();
                for repository in &dirty {
                    pending.dirty.remove(repository);
                }
                dirty
                    .into_iter()
                    .filter_map(|name| {
                        let offer = pending.latest.get(&name)?.clone();
                        Some((name, offer))
                    })
                    .collect()
            };
            let mut retry = false;
            for (repository, offer) in batch {
                if leading.is_cancelled() {
                    return;
                }
                // Failures were shown when the commit was offered. The stacks
                // are loaded again, one at a time as the sync takes them.
                let own = self.own_namespace.as_deref();
                let stacks =
                    each_desired(&offer.update, &offer.policy, own).map(|stack| match stack {
                        Ok(stack)
                            if !offer
                                .unrenderable
                                .contains(&(stack.namespace.clone(), stack.name.clone())) =>
                        {
                            Ok(stack)
                        }
                        // As with a stack that does not load: prune nothing.
                        _ => Err(Unloaded),
                    });
                let policy = SyncPolicy {
                    shards,
                    ..sync_policy(&offer.policy)
                };
                let synced = sync_repository_remembered(
                    &self.memory,
                    &client,
                    &secrets,
                    &repository,
                    stacks,
                    policy,
                )
                .await;
                match synced {
                    Ok(report) => {
                        info!(
                            %repository,
                            applied = report.applied.len(),
                            unchanged = report.unchanged.len(),
                            refused = report.refused.len(),
                            "stacks synced from Git"
                        );
                        // Stored now: a refusal an earlier try recorded is over.
                        for id in report.applied.iter().chain(&report.unchanged) {
                            if let Some((namespace, name)) = id.split_once('/') {
                                self.failures.clear_stack_if(
                                    namespace,
                                    name,
                                    Reason::ApplyFailed,
                                    &offer.update.commit,
                                );
                            }
                        }
                        let mut again = false;
                        for refused in report.refused {
                            again |= refused.transient;
                            let failure = Failure::new(
                                refused.reason,
                                refused.message.clone(),
                                refused.transient,
                            );
                            let new = self.show_failure(
                                &refused.namespace,
                                &refused.name,
                                &repository,
                                None,
                                &offer.update.commit,
                                failure,
                            );
                            // The holder of the stack's shard writes its status.
                            if let Some(holders) = &self.shards
                                && new
                                && refused.reason == Reason::ApplyFailed
                            {
                                let (commit, identity) = (&offer.update.commit, holders.identity());
                                let told = crate::reconcile::refusals::publish(
                                    &client, &refused, commit, &identity,
                                );
                                if let Err(error) = told.await {
                                    warn!(stack = %refused.name, %error, "publishing a refused Stack write");
                                }
                            }
                        }
                        if again {
                            self.lock().dirty.insert(repository);
                            retry = true;
                        }
                    }
                    Err(error) => {
                        warn!(%repository, %error, "syncing stacks from Git failed; retrying");
                        self.lock().dirty.insert(repository);
                        retry = true;
                    }
                }
            }
            let wait = if retry {
                RETRY_AFTER
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = leading.cancelled() => return,
                _ = changed.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many poll intervals a repository may fail before its Stacks say
/// `SourceUnavailable`: one failed poll is often a blip.
pub const SOURCE_UNAVAILABLE_AFTER_INTERVALS: u32 = 3;

/// Marks the Stacks of a repository whose polls keep failing
/// `SourceUnavailable`, and clears that once a poll succeeds. Nothing is
/// pruned or changed in the cluster: the last good commit stays applied.
#[derive(Default)]
pub struct SourceWatch {
    failing_since: BTreeMap<String, Instant>,
}

/// A repository's last poll, as [`SourceWatch`] needs it.
pub struct Poll<'a> {
    pub name: &'a str,
    pub result: Option<PollResult>,
    pub error: Option<&'a str>,
    /// The failure's label (`GitError::label`), e.g. `unverified`.
    pub label: Option<&'a str>,
    /// The commit a failed poll refused, when it names one (verification).
    pub refused_commit: Option<&'a str>,
    /// The repository's poll interval.
    pub interval: Duration,
}

impl<'a> Poll<'a> {
    pub fn of(state: &'a RepositoryState, interval: Duration) -> Self {
        Poll {
            name: &state.name,
            result: state.last_result,
            error: state.last_error.as_deref(),
            label: state.last_error_label.as_deref(),
            refused_commit: state.refused_commit.as_deref(),
            interval,
        }
    }
}

impl SourceWatch {
    /// Looks at each repository's last poll.
    pub fn update<'a>(
        &mut self,
        failures: &GitFailures,
        polls: impl IntoIterator<Item = Poll<'a>>,
        now: Instant,
    ) {
        for poll in polls {
            let name = poll.name;
            if poll.result != Some(PollResult::Failed) {
                if poll.result.is_some() {
                    self.failing_since.remove(name);
                    failures.clear_repository(name);
                }
                continue;
            }
            // A commit refused for its signature is not a blip: its Stacks say so
            // at once, and keep their last applied revision.
            if poll.label == Some("unverified") {
                self.failing_since.remove(name);
                let error = poll.error.unwrap_or("the commit's signature was refused");
                failures.set_repository(
                    name,
                    GitFailure {
                        revision: poll.refused_commit.map(str::to_string),
                        while_at: None,
                        failure: Failure::new(
                            Reason::SourceVerificationFailed,
                            format!("{error}; the last applied revision stays"),
                            false,
                        ),
                    },
                );
                continue;
            }
            let since = *self.failing_since.entry(name.to_string()).or_insert(now);
            let limit = poll
                .interval
                .saturating_mul(SOURCE_UNAVAILABLE_AFTER_INTERVALS);
            if now.duration_since(since) >= limit {
                let error = poll.error.unwrap_or("the poll failed");
                let message = format!(
                    "repository {name} could not be fetched for more than {SOURCE_UNAVAILABLE_AFTER_INTERVALS} poll intervals; the last good commit stays applied: {error}"
                );
                failures.set_repository(
                    name,
                    GitFailure {
                        revision: None,
                        failure: Failure::new(Reason::SourceUnavailable, message, true),
                        while_at: None,
                    },
                );
            }
        }
    }

    /// Forgets repositories that are no longer configured.
    pub fn retain(&mut self, failures: &GitFailures, repositories: &BTreeSet<String>) {
        let gone: Vec<String> = self
            .failing_since
            .keys()
            .filter(|name| !repositories.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            self.failing_since.remove(&name);
            failures.clear_repository(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::git::discover;
    use crate::reconcile::source::stack_object;
    use crate::render::files::{FileSource, MemSource};

    /// The Stack the Git→Stack sync would apply for a one-stack repository
    /// configured by `config`.
    fn stack_for_config(config: &str) -> crate::crd::Stack {
        let config = Config::parse(config, Path::new("config.yaml")).unwrap();
        let policy = &config.repositories[0].policy;
        let reader: Arc<dyn FileSource> = Arc::new(
            MemSource::new().with_file("web/compose.yaml", "services:\n  web:\n    image: nginx\n"),
        );
        let update = RepositoryUpdate {
            repository: "apps".into(),
            url: "https://git.example.com/apps.git".into(),
            git_ref: "refs/heads/main".into(),
            commit: "0123456789abcdef".into(),
            previous: None,
            forced: false,
            subject: "web".into(),
            stacks: discover(reader.as_ref(), &[], "root").unwrap(),
            reader,
            decryption: None,
        };
        let sync = GitSync::default();
        sync.offer(&update, policy);
        let pending = sync.lock();
        let offer = &pending.latest["apps"];
        let stacks: Vec<_> = each_desired(&offer.update, &offer.policy, None)
            .map(|stack| stack.unwrap_or_else(|s| panic!("the stack loads: {:?}", s.result.err())))
            .collect();
        assert_eq!(stacks.len(), 1);
        stack_object("apps", &stacks[0])
    }

    fn polled(result: PollResult) -> Poll<'static> {
        Poll {
            name: "apps",
            result: Some(result),
            error: (result == PollResult::Failed).then_some("fetch origin: connection refused"),
            label: (result == PollResult::Failed).then_some("unreachable"),
            refused_commit: None,
            interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_refused_signature_is_shown_at_once_and_cleared_by_a_good_poll() {
        let failures = GitFailures::new();
        let mut watch = SourceWatch::default();
        let start = Instant::now();
        let refused = Poll {
            name: "apps",
            result: Some(PollResult::Failed),
            error: Some(
                "VerificationFailed: commit abc (signer unsigned): the commit is not signed",
            ),
            label: Some("unverified"),
            refused_commit: Some("abc"),
            interval: Duration::from_secs(60),
        };
        watch.update(&failures, [refused], start);
        let shown = failures.for_stack("web", "web", Some("apps")).unwrap();
        assert_eq!(shown.failure.reason, Reason::SourceVerificationFailed);
        assert_eq!(shown.revision.as_deref(), Some("abc"));
        assert!(shown.failure.message.contains("signer unsigned"));
        watch.update(&failures, [polled(PollResult::Updated)], start);
        assert!(!failures.repository_failed("apps"));
    }

    #[test]
    fn a_repository_failing_for_three_intervals_is_source_unavailable() {
        let failures = GitFailures::new();
        let mut watch = SourceWatch::default();
        let start = Instant::now();
        let failed = || [polled(PollResult::Failed)];
        watch.update(&failures, failed(), start);
        watch.update(&failures, failed(), start + Duration::from_secs(179));
        assert!(!failures.repository_failed("apps"));
        watch.update(&failures, failed(), start + Duration::from_secs(180));
        let shown = failures.for_stack("web", "web", Some("apps")).unwrap();
        assert_eq!(shown.failure.reason, Reason::SourceUnavailable);
        assert!(shown.failure.retrying);
        assert!(
            shown.failure.message.contains("connection refused"),
            "{}",
            shown.failure.message
        );
        // One good poll clears it, and the count starts again.
        let good = [polled(PollResult::Unchanged)];
        watch.update(&failures, good, start + Duration::from_secs(181));
        assert!(!failures.repository_failed("apps"));
        watch.update(&failures, failed(), start + Duration::from_secs(182));
        assert!(!failures.repository_failed("apps"));
    }

    #[test]
    fn the_repository_prune_setting_reaches_the_stack_spec() {
        let off = stack_for_config(
            "repositories:\n  - name: apps\n    url: https://git.example.com/apps.git\n    prune: false\n",
        );
        assert!(!off.spec.prune);
        // What `kubectl get stack -o yaml` shows.
        let json = serde_json::to_value(&off).unwrap();
        assert_eq!(json["spec"]["prune"], serde_json::json!(false));

        let default = stack_for_config(
            "repositories:\n  - name: apps\n    url: https://git.example.com/apps.git\n",
        );
        assert!(default.spec.prune);
    }
}
