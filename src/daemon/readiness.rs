//! What `/readyz` waits for: every repository polled once and, when a Stack
//! controller runs here, its watch caches listed. Pure: the daemon calls it on
//! each publish tick with what the source and the controller report.

use crate::git::source::RepositoryState;
use crate::reconcile::CacheState;

/// Which controller this process runs, as far as readiness is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerRole {
    /// `--dry-run`: no controller, no caches; ready once the repositories are polled.
    None,
    /// The controller always runs: it must have started and listed.
    Always,
    /// Leader election: a standby runs no controller and is ready without one.
    WhenLeading,
}

/// The repositories not polled yet, by name.
pub fn unpolled(repositories: &[RepositoryState]) -> Vec<&str> {
    repositories
        .iter()
        .filter(|r| r.last_poll.is_none())
        .map(|r| r.name.as_str())
        .collect()
}

/// Each condition still missing, in words; empty when ready.
pub fn missing(unpolled: &[&str], caches: &CacheState, role: ControllerRole) -> Vec<String> {
    let mut missing = Vec::new();
    if !unpolled.is_empty() {
        missing.push(format!(
            "repositories not polled yet: {}",
            unpolled.join(", ")
        ));
    }
    match (role, caches) {
        (ControllerRole::None, _) | (_, CacheState::Synced) => {}
        (ControllerRole::WhenLeading, CacheState::Stopped) => {}
        (ControllerRole::Always, CacheState::Stopped) => {
            missing.push("the Stack controller has not started".to_string());
        }
        (_, CacheState::Listing(pending)) => {
            let kinds: Vec<String> = pending
                .iter()
                .map(|(kind, error)| match error {
                    Some(error) => format!("{kind} (last error: {error})"),
                    None => kind.clone(),
                })
                .collect();
            missing.push(format!(
                "the Stack controller's caches have not had their initial list: {}",
                kinds.join(", ")
            ));
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn listing(kinds: &[(&str, Option<&str>)]) -> CacheState {
        CacheState::Listing(
            kinds
                .iter()
                .map(|(k, e)| (k.to_string(), e.map(str::to_string)))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn names_unpolled_repositories_and_unlisted_caches() {
        let repositories = ["infra"];
        let caches = listing(&[
            ("Deployment", Some("500 Internal Server Error")),
            ("Stack", None),
        ]);
        assert_eq!(
            missing(&repositories, &caches, ControllerRole::Always),
            [
                "repositories not polled yet: infra",
                "the Stack controller's caches have not had their initial list: Deployment (last error: 500 Internal Server Error), Stack",
            ]
        );
    }

    #[test]
    fn ready_once_polled_and_synced() {
        let repositories: [&str; 0] = [];
        for role in [
            ControllerRole::None,
            ControllerRole::Always,
            ControllerRole::WhenLeading,
        ] {
            assert!(missing(&repositories, &CacheState::Synced, role).is_empty());
        }
    }

    #[test]
    fn dry_run_and_standby_do_not_wait_for_a_controller() {
        let repositories: [&str; 0] = [];
        let caches = listing(&[("Stack", None)]);
        assert!(missing(&repositories, &caches, ControllerRole::None).is_empty());
        assert!(
            missing(
                &repositories,
                &CacheState::Stopped,
                ControllerRole::WhenLeading
            )
            .is_empty()
        );
        // A leader still listing is not ready; a controller that never started is not either.
        assert_eq!(
            missing(&repositories, &caches, ControllerRole::WhenLeading).len(),
            1
        );
        assert_eq!(
            missing(&repositories, &CacheState::Stopped, ControllerRole::Always),
            ["the Stack controller has not started"]
        );
    }
}
