//! Whether the Stack controller's watch caches (the reflector stores for
//! `Stack` and every owned kind) have had their initial list. Until then the
//! controller cannot tell drift from "not listed yet", so `/readyz` waits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Where the controller's caches are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CacheState {
    /// No controller runs in this process (not started, or a standby replica).
    #[default]
    Stopped,
    /// These kinds have not finished their initial list; each with the last
    /// error its watch reported, if any.
    Listing(BTreeMap<String, Option<String>>),
    /// Every cache has had its initial list.
    Synced,
}

/// Shared between the controller (which reports) and the daemon (which reads).
#[derive(Clone, Debug, Default)]
pub struct CacheSync(Arc<Mutex<CacheState>>);

impl CacheSync {
    pub fn state(&self) -> CacheState {
        self.lock().clone()
    }

    /// The controller started: every kind waits for its initial list.
    pub fn started(&self, kinds: impl IntoIterator<Item = String>) {
        *self.lock() = CacheState::Listing(kinds.into_iter().map(|k| (k, None)).collect());
    }

    /// `kind`'s store has had its initial list.
    pub fn listed(&self, kind: &str) {
        let mut state = self.lock();
        if let CacheState::Listing(pending) = &mut *state {
            pending.remove(kind);
            if pending.is_empty() {
                *state = CacheState::Synced;
            }
        }
    }

    /// `kind`'s watch failed (it retries with backoff); remembered until it lists.
    pub fn failed(&self, kind: &str, error: String) {
        if let CacheState::Listing(pending) = &mut *self.lock()
            && let Some(last) = pending.get_mut(kind)
        {
            *last = Some(error);
        }
    }

    pub fn stopped(&self) {
        *self.lock() = CacheState::Stopped;
    }

    // Plain data: a panicked writer leaves a usable value.
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_once_every_kind_listed_and_errors_are_kept_until_then() {
        let caches = CacheSync::default();
        assert_eq!(caches.state(), CacheState::Stopped);
        caches.started(["Stack".to_string(), "Deployment".to_string()]);
        caches.failed("Deployment", "500".into());
        caches.listed("Stack");
        assert_eq!(
            caches.state(),
            CacheState::Listing(BTreeMap::from([("Deployment".into(), Some("500".into()))]))
        );
        caches.listed("Deployment");
        assert_eq!(caches.state(), CacheState::Synced);
        // A late error from a running watch does not undo the initial list.
        caches.failed("Deployment", "timeout".into());
        assert_eq!(caches.state(), CacheState::Synced);
        caches.stopped();
        assert_eq!(caches.state(), CacheState::Stopped);
    }
}
