//! Health deadline and rollback: when a rollout started, whether it is done,
//! late or failed, and what to do about it. Pure: the caller brings the clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::crd::{RolloutStatus, Stack, StackSpec};
use crate::git::settings::parse_duration;
use crate::reconcile::health::ServiceHealth;

/// A revision gets this long to become Ready unless the stack says otherwise.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);

/// A stack's deadline and whether it rolls back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub timeout: Duration,
    pub rollback: bool,
}

/// `healthTimeout` (default 5m), lengthened by a longer
/// `deploy.update_config.monitor`; `rollback`, or any service's
/// `deploy.update_config.failure_action: rollback`.
pub fn settings(spec: &StackSpec) -> Settings {
    let configured = spec
        .health_timeout
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_HEALTH_TIMEOUT);
    let updates = spec
        .project
        .services
        .values()
        .filter_map(|s| s.deploy.as_ref()?.update_config.as_ref());
    let mut timeout = configured;
    let mut rollback = spec.rollback.unwrap_or(false);
    for update in updates {
        if let Some(monitor) = update.monitor_ms {
            timeout = timeout.max(Duration::from_millis(monitor));
        }
        rollback |= update.failure_action.as_deref() == Some("rollback");
    }
    Settings { timeout, rollback }
}

/// What identifies the desired state: the commit, or the generation of a Stack written by hand.
pub fn revision_of(stack: &Stack) -> String {
    match &stack.spec.source {
        Some(source) => source.revision.clone(),
        None => format!("generation-{}", stack.metadata.generation.unwrap_or(0)),
    }
}

/// The rollout after this pass: a new revision that wrote something starts
/// one (the deadline counts from now); the same revision keeps its start and
/// adds the services it wrote.
pub fn next(
    previous: Option<&RolloutStatus>,
    revision: &str,
    written: &[String],
    now: DateTime<Utc>,
) -> Option<RolloutStatus> {
    match previous {
        Some(rollout) if rollout.revision == revision => {
            let mut rollout = rollout.clone();
            for service in written {
                if !rollout.changed.contains(service) {
                    rollout.changed.push(service.clone());
                }
            }
            rollout.changed.sort();
            Some(rollout)
        }
        _ if written.is_empty() => previous.cloned(),
        _ => {
            let mut changed = written.to_vec();
            changed.sort();
            changed.dedup();
            Some(RolloutStatus {
                revision: revision.to_string(),
                started_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                changed,
            })
        }
    }
}

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every service Ready and nothing waiting: the revision is healthy.
    Healthy,
    /// Not yet; judged again at the latest after `remaining`.
    Waiting { remaining: Duration },
    /// Past the deadline, or a workload failed for good. Names each service not Ready.
    TimedOut { message: String },
}

/// Judges the rollout against its deadline. A stack with no rollout under way
/// that is not Ready has no deadline (it went unready after it was healthy).
pub fn judge(
    rollout: Option<&RolloutStatus>,
    services: &[ServiceHealth],
    waiting: bool,
    timeout: Duration,
    now: DateTime<Utc>,
) -> Verdict {
    let unready: Vec<&ServiceHealth> = services.iter().filter(|s| !s.complete).collect();
    if unready.is_empty() && !waiting {
        return Verdict::Healthy;
    }
    let Some(rollout) = rollout else {
        return Verdict::Waiting { remaining: timeout };
    };
    let started = DateTime::parse_from_rfc3339(&rollout.started_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now);
    let elapsed = (now - started).to_std().unwrap_or_default();
    let failed = services.iter().any(|s| s.failed.is_some());
    if elapsed < timeout && !failed {
        return Verdict::Waiting {
            remaining: timeout - elapsed,
        };
    }
    let names: Vec<String> = unready
        .iter()
        .map(|s| {
            let status = &s.status;
            let detail = s
                .failed
                .clone()
                .or_else(|| s.detail.clone())
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            // Ready replicas of the old pods while the new ones do not come up.
            let progress = match status.ready >= status.desired {
                true => "rollout not finished".to_string(),
                false => format!("{}/{} ready", status.ready, status.desired),
            };
            format!("{} ({progress}{detail})", status.name)
        })
        .collect();
    let what = match failed {
        true => "failed".to_string(),
        false => format!("not Ready within {}", show(timeout)),
    };
    let names = match names.is_empty() {
        true => "services waiting for their dependencies".to_string(),
        false => names.join(", "),
    };
    Verdict::TimedOut {
        message: format!("revision {} {what}: {names}", short(&rollout.revision)),
    }
}

/// Whether `revision` stays held: it is the rolled-back one, and no reconcile
/// was requested since (a newer revision has another key and releases it).
pub fn is_held(held: Option<&str>, revision: &str, forced: bool) -> bool {
    !forced && held == Some(revision)
}

/// What to do about a revision that timed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Stay at `HealthTimeout` with the bad revision's objects.
    Stay,
    /// Re-apply `to`, the last healthy revision, and hold the bad one.
    RollBack { to: String },
}

/// Rolls back only when it is on and there is a different healthy revision to go to.
pub fn decide(rollback: bool, revision: &str, last_healthy: Option<&str>) -> Decision {
    match last_healthy {
        Some(healthy) if rollback && healthy != revision => Decision::RollBack {
            to: healthy.to_string(),
        },
        _ => Decision::Stay,
    }
}

fn short(revision: &str) -> &str {
    revision.get(..8).unwrap_or(revision)
}

fn show(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ServiceStatus;

    fn service(name: &str, ready: i32, failed: Option<&str>) -> ServiceHealth {
        ServiceHealth {
            status: ServiceStatus {
                name: name.into(),
                kind: "Deployment".into(),
                desired: 1,
                ready,
                updated: 1,
            },
            complete: ready >= 1 && failed.is_none(),
            failed: failed.map(str::to_string),
            detail: Some("MinimumReplicasUnavailable".into()).filter(|_| ready == 0),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_rollout_starts_when_a_revision_is_first_applied_and_keeps_its_start() {
        let first = next(None, "aaaa", &["db".into()], at(0)).unwrap();
        assert_eq!(first.changed, ["db"]);
        // Later passes of the same revision keep the start and add what they wrote.
        let later = next(Some(&first), "aaaa", &["web".into()], at(30)).unwrap();
        assert_eq!(later.started_at, first.started_at);
        assert_eq!(later.changed, ["db", "web"]);
        // A newer commit starts over.
        let newer = next(Some(&later), "bbbb", &["web".into()], at(40)).unwrap();
        assert_eq!((newer.revision.as_str(), newer.changed.len()), ("bbbb", 1));
        assert_ne!(newer.started_at, first.started_at);
        // Nothing written, nothing under way: no rollout.
        assert_eq!(next(None, "aaaa", &[], at(0)), None);
    }

    #[test]
    fn the_deadline_counts_from_the_recorded_start() {
        let rollout = next(None, "aaaabbbbcccc", &["web".into()], at(0)).unwrap();
        let timeout = Duration::from_secs(300);
        let slow = [service("db", 1, None), service("web", 0, None)];
        assert_eq!(
            judge(Some(&rollout), &slow, false, timeout, at(100)),
            Verdict::Waiting {
                remaining: Duration::from_secs(200)
            }
        );
        assert_eq!(
            judge(Some(&rollout), &slow, false, timeout, at(300)),
            Verdict::TimedOut {
                message: "revision aaaabbbb not Ready within 5m: web (0/1 ready: MinimumReplicasUnavailable)".into()
            }
        );
        let healthy = [service("db", 1, None), service("web", 1, None)];
        assert_eq!(
            judge(Some(&rollout), &healthy, false, timeout, at(999)),
            Verdict::Healthy
        );
        // Waves still waiting: not healthy, though every written workload is.
        assert!(matches!(
            judge(Some(&rollout), &healthy, true, timeout, at(10)),
            Verdict::Waiting { .. }
        ));
    }

    #[test]
    fn a_hard_failure_does_not_wait_for_the_deadline() {
        let rollout = next(None, "aaaa", &["web".into()], at(0)).unwrap();
        let failed = [service("web", 0, Some("ProgressDeadlineExceeded"))];
        assert_eq!(
            judge(
                Some(&rollout),
                &failed,
                false,
                Duration::from_secs(300),
                at(1)
            ),
            Verdict::TimedOut {
                message: "revision aaaa failed: web (0/1 ready: ProgressDeadlineExceeded)".into()
            }
        );
    }

    #[test]
    fn rollback_needs_it_on_and_another_healthy_revision() {
        assert_eq!(
            decide(true, "bbbb", Some("aaaa")),
            Decision::RollBack { to: "aaaa".into() }
        );
        assert_eq!(decide(false, "bbbb", Some("aaaa")), Decision::Stay);
        // Never Ready: nothing to roll back to.
        assert_eq!(decide(true, "bbbb", None), Decision::Stay);
        assert_eq!(decide(true, "bbbb", Some("bbbb")), Decision::Stay);
    }

    #[test]
    fn a_hold_is_released_by_a_newer_revision_or_a_requested_reconcile() {
        assert!(is_held(Some("bbbb"), "bbbb", false));
        assert!(!is_held(Some("bbbb"), "cccc", false));
        assert!(!is_held(Some("bbbb"), "bbbb", true));
        assert!(!is_held(None, "bbbb", false));
    }

    #[test]
    fn settings_come_from_the_stack_and_update_config() {
        let mut spec = StackSpec::default();
        assert_eq!(
            settings(&spec),
            Settings {
                timeout: DEFAULT_HEALTH_TIMEOUT,
                rollback: false
            }
        );
        spec.health_timeout = Some("2m".into());
        spec.project = serde_json::from_value(serde_json::json!({"services": {"web": {
            "image": "x",
            "deploy": {"updateConfig": {"failureAction": "rollback", "monitorMs": 600000}}}}}))
        .unwrap();
        assert_eq!(
            settings(&spec),
            Settings {
                timeout: Duration::from_secs(600),
                rollback: true
            }
        );
    }
}
