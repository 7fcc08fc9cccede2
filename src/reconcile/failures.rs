//! Failures the Git side found, for the Stack controller to write into each
//! Stack's status. A commit that does not load never reaches the Stack's spec
//! (the spec and the applied objects stay at the last good revision), so the
//! status is the only place on the Stack that can say a newer commit failed.
//!
//! Kept in memory like the secret values: after a restart the source polls at
//! once and the failures are found again. Each change is queued for the
//! controller, which reconciles just the Stacks concerned.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::reason::Reason;
use crate::reconcile::status::Failure;

/// A failure of one commit (or of the repository itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitFailure {
    /// The commit tried; `None` when the repository could not even be fetched.
    pub revision: Option<String>,
    pub failure: Failure,
    /// A refused Stack write another replica saw (`--shards`): it holds only
    /// while the Stack's spec stays at this revision, as stored when refused.
    pub while_at: Option<String>,
}

type Key = (String, String);

#[derive(Default)]
struct Inner {
    stacks: BTreeMap<Key, GitFailure>,
    /// By repository name: every Stack of the repository shows it.
    repositories: BTreeMap<String, GitFailure>,
    changed_stacks: BTreeSet<Key>,
    changed_repositories: BTreeSet<String>,
}

/// The shared, cloneable handle.
#[derive(Clone, Default)]
pub struct GitFailures {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

/// What changed since the controller last looked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub stacks: Vec<Key>,
    pub repositories: Vec<String>,
}

impl GitFailures {
    pub fn new() -> Self {
        GitFailures::default()
    }

    /// Records that `namespace/name` failed; a repeat of the same failure
    /// changes nothing (no reconcile, no Event); returns whether it was new.
    pub fn set_stack(&self, namespace: &str, name: &str, failure: GitFailure) -> bool {
        let key = (namespace.to_string(), name.to_string());
        let mut inner = self.lock();
        if inner.stacks.get(&key) == Some(&failure) {
            return false;
        }
        inner.stacks.insert(key.clone(), failure);
        inner.changed_stacks.insert(key);
        drop(inner);
        self.changed.notify_one();
        true
    }

    /// The stack's newest commit is fine again. A refused write another
    /// replica saw stays: it ends when the Stack's spec moves on.
    pub fn clear_stack(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        let mut inner = self.lock();
        let clear = inner.stacks.get(&key).is_some_and(|f| f.while_at.is_none());
        if clear && inner.stacks.remove(&key).is_some() {
            inner.changed_stacks.insert(key);
            drop(inner);
            self.changed.notify_one();
        }
    }

    /// Clears the stack's failure only if it is `reason` at `revision`: a
    /// retry that succeeded must not clear what a newer commit found since.
    pub fn clear_stack_if(&self, namespace: &str, name: &str, reason: Reason, revision: &str) {
        let key = (namespace.to_string(), name.to_string());
        let mut inner = self.lock();
        let matches = inner
            .stacks
            .get(&key)
            .is_some_and(|f| f.failure.reason == reason && f.revision.as_deref() == Some(revision));
        if matches {
            inner.stacks.remove(&key);
            inner.changed_stacks.insert(key);
            drop(inner);
            self.changed.notify_one();
        }
    }

    pub fn set_repository(&self, repository: &str, failure: GitFailure) {
        let mut inner = self.lock();
        if inner.repositories.get(repository) != Some(&failure) {
            inner.repositories.insert(repository.to_string(), failure);
            inner.changed_repositories.insert(repository.to_string());
            drop(inner);
            self.changed.notify_one();
        }
    }

    pub fn clear_repository(&self, repository: &str) {
        let mut inner = self.lock();
        if inner.repositories.remove(repository).is_some() {
            inner.changed_repositories.insert(repository.to_string());
            drop(inner);
            self.changed.notify_one();
        }
    }

    /// The failure to show on a Stack: its own newest commit's, else its
    /// repository's. A refused signature comes first: it is about a newer
    /// commit than any the stack itself failed on.
    pub fn for_stack(
        &self,
        namespace: &str,
        name: &str,
        repository: Option<&str>,
    ) -> Option<GitFailure> {
        let inner = self.lock();
        let of_repository = repository.and_then(|r| inner.repositories.get(r));
        if let Some(refused) =
            of_repository.filter(|f| f.failure.reason == Reason::SourceVerificationFailed)
        {
            return Some(refused.clone());
        }
        inner
            .stacks
            .get(&(namespace.to_string(), name.to_string()))
            .or(of_repository)
            .cloned()
    }

    /// Whether the repository is marked unavailable.
    pub fn repository_failed(&self, repository: &str) -> bool {
        self.lock().repositories.contains_key(repository)
    }

    /// Takes what changed since the last call.
    pub fn take_changed(&self) -> Changed {
        let mut inner = self.lock();
        Changed {
            stacks: std::mem::take(&mut inner.changed_stacks)
                .into_iter()
                .collect(),
            repositories: std::mem::take(&mut inner.changed_repositories)
                .into_iter()
                .collect(),
        }
    }

    /// Resolves once something changed after the last `take_changed` (one waiter).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    // A poisoned lock only means a writer panicked mid-update of plain data.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_failed(revision: &str) -> GitFailure {
        GitFailure {
            revision: Some(revision.into()),
            failure: Failure::new(Reason::LoadFailed, "app/compose.yaml:3:12: bad", false),
            while_at: None,
        }
    }

    #[test]
    fn a_repeated_failure_is_not_a_change() {
        let failures = GitFailures::new();
        failures.set_stack("web", "web", load_failed("abc"));
        let changed = failures.take_changed();
        assert_eq!(changed.stacks, [("web".to_string(), "web".to_string())]);
        failures.set_stack("web", "web", load_failed("abc"));
        assert_eq!(failures.take_changed(), Changed::default());
        failures.set_stack("web", "web", load_failed("def"));
        assert_eq!(failures.take_changed().stacks.len(), 1);
        failures.clear_stack("web", "web");
        assert_eq!(failures.take_changed().stacks.len(), 1);
        failures.clear_stack("web", "web");
        assert_eq!(failures.take_changed(), Changed::default());

        // A retried refusal clears only its own failure.
        failures.set_stack("web", "web", load_failed("def"));
        failures.clear_stack_if("web", "web", Reason::ApplyFailed, "def");
        failures.clear_stack_if("web", "web", Reason::LoadFailed, "abc");
        assert!(failures.for_stack("web", "web", None).is_some());
        failures.clear_stack_if("web", "web", Reason::LoadFailed, "def");
        assert!(failures.for_stack("web", "web", None).is_none());
    }

    #[test]
    fn a_stack_shows_its_own_failure_before_its_repositorys() {
        let failures = GitFailures::new();
        let unavailable = GitFailure {
            revision: None,
            failure: Failure::new(Reason::SourceUnavailable, "fetch failed", true),
            while_at: None,
        };
        failures.set_repository("apps", unavailable.clone());
        assert_eq!(
            failures.for_stack("web", "web", Some("apps")),
            Some(unavailable)
        );
        assert_eq!(failures.for_stack("web", "web", Some("other")), None);
        failures.set_stack("web", "web", load_failed("abc"));
        assert_eq!(
            failures.for_stack("web", "web", Some("apps")),
            Some(load_failed("abc"))
        );
        assert_eq!(failures.take_changed().repositories, ["apps".to_string()]);

        // A refused signature is about the newest commit: it comes first.
        let refused = GitFailure {
            revision: Some("def".into()),
            failure: Failure::new(Reason::SourceVerificationFailed, "unsigned", false),
            while_at: None,
        };
        failures.set_repository("apps", refused.clone());
        assert_eq!(
            failures.for_stack("web", "web", Some("apps")),
            Some(refused)
        );
    }
}
