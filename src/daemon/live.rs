//! Live mode: Git commits become `Stack` objects, and the Stack controller turns
//! them into workloads. Only the leader writes: every replica keeps the latest
//! desired stacks of each repository, and whoever leads applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RepositoryPolicy;
use crate::crd::StackPhase;
use crate::git::source::RepositoryUpdate;
use crate::reconcile::error::NAMESPACE_NOT_ALLOWED;
use crate::reconcile::{DesiredStack, SecretStore, SyncPolicy, sync_repository};
use crate::state::{SharedState, StackView};
use crate::tenancy::{NamespaceRules, Tenancy};

use super::stacks::{LoadedStack, load_stacks};
use crate::render::LoadError;

/// How long to wait before retrying a repository whose sync failed.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The latest desired stacks per repository, and which still need applying.
#[derive(Default)]
pub struct GitSync {
    inner: Mutex<Pending>,
    changed: Notify,
    /// The namespace stackd runs in: refused to stacks unless listed exactly.
    own_namespace: Option<String>,
    /// Where stacks refused a namespace are shown (they get no Stack).
    state: SharedState,
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
}

/// The stacks of a commit that load, and how to sync them. Each stack that
/// fails to load is passed to `failed`.
fn desired_stacks(
    update: &RepositoryUpdate,
    policy: &RepositoryPolicy,
    own_namespace: Option<&str>,
    mut failed: impl FnMut(&LoadedStack, &LoadError),
) -> (Vec<DesiredStack>, SyncPolicy) {
    let mut desired = Vec::new();
    let mut any_failed = false;
    for stack in load_stacks(update, policy) {
        if stack.suspended {
            continue;
        }
        match stack.result {
            Ok((project, secrets)) => desired.push(DesiredStack {
                name: stack.name,
                namespace: stack.namespace,
                project,
                secrets,
                source: stack.source,
                prune: policy.prune,
                tenancy: Tenancy {
                    pod_security: stack.pod_security,
                    service_account_name: policy.service_account_name.clone(),
                    namespaces: NamespaceRules {
                        allowed: policy.namespaces.clone(),
                        own_namespace: own_namespace.map(str::to_string),
                    },
                    file: stack.file.clone(),
                },
            }),
            Err(ref error) => {
                any_failed = true;
                failed(&stack, error);
            }
        }
    }
    // Deleting a Stack whose directory vanished needs `allowEmpty`, as does
    // pruning a stack to nothing; a failed load never deletes anything.
    let sync_policy = SyncPolicy {
        prune: policy.prune && policy.allow_empty && !any_failed,
        allow_prune_all: policy.allow_empty,
    };
    (desired, sync_policy)
}

impl GitSync {
    pub fn new(own_namespace: Option<String>, state: SharedState) -> Self {
        GitSync {
            own_namespace,
            state,
            ..GitSync::default()
        }
    }

    /// Loads a new commit's stacks and queues the commit. A stack that fails to
    /// load is shown as failed and keeps its current Stack: with any failure,
    /// the sync prunes nothing, so a broken stack never looks like a deleted one.
    pub fn offer(&self, update: &RepositoryUpdate, policy: &RepositoryPolicy, state: &SharedState) {
        desired_stacks(update, policy, None, |stack, error| {
            warn!(stack = %stack.name, error = %error, "stack does not load; its Stack is left as it is");
            let base = state
                .stack(&stack.namespace, &stack.name)
                .unwrap_or_default();
            state.put_stack(StackView {
                namespace: stack.namespace.clone(),
                name: stack.name.clone(),
                repository: Some(update.repository.clone()),
                path: Some(stack.source.path.clone()),
                phase: StackPhase::Failure,
                message: Some(format!(
                    "commit {} does not load; the last applied objects stay",
                    short(&update.commit)
                )),
                last_error: Some(error.to_string()),
                ..base
            });
        });
        let offer = Offer {
            update: update.clone(),
            policy: policy.clone(),
        };
        let mut pending = self.lock();
        pending
            .latest
            .insert(update.repository.clone(), Arc::new(offer));
        pending.dirty.insert(update.repository.clone());
        drop(pending);
        self.changed.notify_one();
    }

    /// Forgets repositories that are no longer configured.
    pub fn retain(&self, repositories: &BTreeSet<String>) {
        let mut pending = self.lock();
        pending.latest.retain(|name, _| repositories.contains(name));
        pending.dirty.retain(|name| repositories.contains(name));
    }

    /// Applies queued repositories while `leading` is not cancelled. On taking
    /// the lead everything is applied once: a previous leader may have died first.
    pub async fn run(&self, client: Client, secrets: SecretStore, leading: CancellationToken) {
        {
            let mut pending = self.lock();
            let all: BTreeSet<String> = pending.latest.keys().cloned().collect();
            pending.dirty = all;
        }
        loop {
            let batch: Vec<(String, Arc<Offer>)> = {
                let mut pending = self.lock();
                let dirty = std::mem::take(&mut pending.dirty);
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
                // Failures were shown when the commit was offered.
                let own = self.own_namespace.as_deref();
                let (stacks, policy) = desired_stacks(&offer.update, &offer.policy, own, |_, _| {});
                match sync_repository(&client, &secrets, &repository, &stacks, policy).await {
                    Ok(report) => {
                        info!(
                            %repository,
                            applied = report.applied.len(),
                            unchanged = report.unchanged.len(),
                            refused = report.refused.len(),
                            "stacks synced from Git"
                        );
                        show_refused(&self.state, &repository, &report.refused);
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
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stack whose namespace is refused has no Stack to carry the failure: the
/// status page and API show it instead.
fn show_refused(state: &SharedState, repository: &str, refused: &[(String, String)]) {
    for (id, message) in refused {
        let (namespace, name) = id.split_once('/').unwrap_or_default();
        let base = state.stack(namespace, name).unwrap_or_default();
        state.put_stack(StackView {
            namespace: namespace.to_string(),
            name: name.to_string(),
            repository: Some(repository.to_string()),
            phase: StackPhase::Failure,
            message: Some(format!("{NAMESPACE_NOT_ALLOWED}: nothing is applied")),
            last_error: Some(message.clone()),
            ..base
        });
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
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
        };
        let sync = GitSync::default();
        sync.offer(&update, policy, &SharedState::new());
        let pending = sync.lock();
        let offer = &pending.latest["apps"];
        let (stacks, _) = desired_stacks(&offer.update, &offer.policy, None, |_, error| {
            panic!("the stack loads: {error}")
        });
        assert_eq!(stacks.len(), 1);
        stack_object("apps", &stacks[0])
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
