//! The Stack status, the status-page view and the plan summary of one
//! reconcile: pure functions of what the reconcile saw and did.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{
    HISTORY_LIMIT, HistoryEntry, HistoryOutcome, InventoryEntry, RolloutStatus, SourceRef, Stack,
    StackPhase, StackStatus,
};
use crate::reason::Reason;
use crate::reconcile::apply::{Action, ApplyReport, Outcome, Plan};
use crate::reconcile::health::{self, ServiceHealth};
use crate::state::{PlanSummary, StackView};

/// What one reconcile found, to be written as the status.
#[derive(Clone, Debug)]
pub struct Observed {
    pub services: Vec<ServiceHealth>,
    pub warnings: Vec<String>,
    pub inventory: Vec<InventoryEntry>,
    /// No longer rendered, kept because pruning is off (`Kind/name`).
    pub kept: Vec<String>,
    /// Set when this reconcile failed, or the Git side failed on a newer
    /// commit of this stack: the phase is Failure, with this reason.
    pub failure: Option<Failure>,
    /// The revision now applied; `None` keeps the previous one (a failure).
    pub applied_revision: Option<String>,
    /// The commit tried: the spec's, or a newer one that failed before it
    /// reached the spec. `None` keeps the previous one.
    pub attempted_revision: Option<String>,
    pub handled_request: Option<String>,
    /// Reconciling is suspended: nothing was applied.
    pub suspended: bool,
    /// What each held-back service waits for (`depends_on` waves).
    pub waiting: Vec<String>,
    /// The rollout under way, as it is now (`None`: none).
    pub rollout: Option<RolloutStatus>,
    /// The last fully Ready revision, as it is now.
    pub last_healthy_revision: Option<String>,
    /// The rolled-back revision that is held, as it is now.
    pub held_revision: Option<String>,
    /// Objects this reconcile created, updated and pruned.
    pub counts: Counts,
}

impl Observed {
    /// Waves, rollout, last healthy and held revision as `previous` had them.
    pub fn keeping_rollout(mut self, previous: &StackStatus) -> Self {
        self.waiting = previous.waiting.clone();
        self.rollout = previous.rollout.clone();
        self.last_healthy_revision = previous.last_healthy_revision.clone();
        self.held_revision = previous.held_revision.clone();
        self
    }
}

/// Objects one reconcile created, updated and pruned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: u32,
    pub updated: u32,
    pub pruned: u32,
}

impl Counts {
    pub fn of(summary: &PlanSummary) -> Counts {
        let count = |items: &[String]| u32::try_from(items.len()).unwrap_or(u32::MAX);
        Counts {
            created: count(&summary.created),
            updated: count(&summary.updated),
            pruned: count(&summary.pruned),
        }
    }
}

/// Why the attempted revision is not running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    /// `file:line: field: reason` where the failure has a place, else the
    /// server's or the source's message. Never a secret value.
    pub message: String,
    /// A retry with backoff may fix it (a 503, a conflict): `Reconciling`
    /// stays True. Otherwise only a change fixes it: `Stalled=True`.
    pub retrying: bool,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>, retrying: bool) -> Self {
        Failure {
            reason,
            message: message.into(),
            retrying,
        }
    }
}

/// The phase, Ready reason, message and whether a retry is under way.
fn outcome(
    observed: &Observed,
    previous: &StackStatus,
) -> (StackPhase, Reason, String, Option<String>, bool) {
    if observed.suspended {
        // The phase stays what it was: nothing changed in the cluster.
        let phase = previous.phase.unwrap_or_default();
        let message = "reconciliation is suspended".to_string();
        return (phase, Reason::Suspended, message, None, false);
    }
    if let Some(failure) = &observed.failure {
        let message = failure.message.clone();
        let phase = match failure.reason {
            Reason::RolledBack => StackPhase::RolledBack,
            _ => StackPhase::Failure,
        };
        return (
            phase,
            failure.reason,
            message.clone(),
            Some(message),
            failure.retrying,
        );
    }
    let (phase, message) = health::phase(&observed.services);
    if !observed.waiting.is_empty() {
        let message = format!("{message}; {}", observed.waiting.join("; "));
        return (
            StackPhase::Progressing,
            Reason::Progressing,
            message,
            None,
            false,
        );
    }
    match phase {
        StackPhase::Available => (phase, Reason::Available, message, None, false),
        StackPhase::Failure => (
            phase,
            Reason::HealthTimeout,
            message.clone(),
            Some(message),
            false,
        ),
        _ => (phase, Reason::Progressing, message, None, false),
    }
}

/// `status.history` after this reconcile: the attempted revision's entry is added
/// (dropping the oldest beyond [`HISTORY_LIMIT`]) or brought up to date with its
/// outcome, counts and time to Ready. Unchanged when nothing changed, so that an
/// unchanged situation still writes nothing.
fn history(
    previous: &StackStatus,
    source: Option<&SourceRef>,
    observed: &Observed,
    phase: StackPhase,
    reason: Reason,
    now: &Time,
) -> Vec<HistoryEntry> {
    let mut history = previous.history.clone();
    let Some(revision) = observed
        .attempted_revision
        .clone()
        .or_else(|| previous.last_attempted_revision.clone())
    else {
        return history;
    };
    let (outcome, why) = match (&observed.failure, observed.suspended) {
        (_, true) => (HistoryOutcome::Held, Some(Reason::Suspended)),
        (Some(failure), false) if failure.reason == Reason::RolledBack => {
            (HistoryOutcome::RolledBack, Some(failure.reason))
        }
        (Some(failure), false) => (HistoryOutcome::Failed, Some(failure.reason)),
        (None, false) => (HistoryOutcome::Applied, None),
    };
    if history.last().is_none_or(|last| last.revision != revision) {
        history.push(HistoryEntry {
            revision,
            subject: None,
            attempted_at: now.clone(),
            outcome,
            reason: None,
            seconds_to_ready: None,
            created: 0,
            updated: 0,
            pruned: 0,
        });
        let excess = history.len().saturating_sub(HISTORY_LIMIT);
        history.drain(..excess);
    }
    let Some(entry) = history.last_mut() else {
        return history;
    };
    // The subject the Git source wrote beside the commit.
    if entry.subject.is_none()
        && let Some(source) = source.filter(|s| s.revision == entry.revision)
    {
        entry.subject.clone_from(&source.subject);
    }
    // A later suspension does not undo what was applied.
    if !(outcome == HistoryOutcome::Held && entry.outcome == HistoryOutcome::Applied) {
        entry.outcome = outcome;
        entry.reason = why.map(|r| r.as_str().to_string());
    }
    let counts = observed.counts;
    entry.created = entry.created.saturating_add(counts.created);
    entry.updated = entry.updated.saturating_add(counts.updated);
    entry.pruned = entry.pruned.saturating_add(counts.pruned);
    if entry.outcome == HistoryOutcome::Applied
        && reason == Reason::Available
        && phase == StackPhase::Available
        && entry.seconds_to_ready.is_none()
    {
        entry.seconds_to_ready =
            Some((now.0.as_second() - entry.attempted_at.0.as_second()).max(0));
    }
    history
}

/// The new status. Transition times and anything unchanged stay as they were,
/// so an unchanged situation gives an equal status (and no write).
pub fn build(stack: &Stack, observed: Observed, now: Time) -> StackStatus {
    let previous = stack.status.clone().unwrap_or_default();
    let (phase, reason, message, error, retrying) = outcome(&observed, &previous);
    let source = stack.spec.source.as_ref();
    let history = history(&previous, source, &observed, phase, reason, &now);
    let generation = stack.metadata.generation;
    let ready = observed.services.iter().filter(|s| s.complete).count();
    let total = observed.services.len();
    StackStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions: health::conditions(
            reason,
            retrying,
            &message,
            generation,
            &previous.conditions,
            now,
        ),
        message: Some(message),
        last_applied_revision: observed.applied_revision.or(previous.last_applied_revision),
        last_attempted_revision: observed
            .attempted_revision
            .or(previous.last_attempted_revision),
        service_count: Some(i32::try_from(total).unwrap_or(i32::MAX)),
        ready: Some(format!("{ready}/{total}")),
        services: observed.services.into_iter().map(|s| s.status).collect(),
        warnings: observed.warnings,
        inventory: observed.inventory,
        kept: observed.kept,
        last_error: error,
        last_handled_reconcile_at: observed
            .handled_request
            .or(previous.last_handled_reconcile_at),
        waiting: observed.waiting,
        rollout: observed.rollout,
        last_healthy_revision: observed.last_healthy_revision,
        held_revision: observed.held_revision,
        history,
    }
}

/// `Kind/name`, as plans and the status name objects.
pub fn describe(entry: &InventoryEntry) -> String {
    format!("{}/{}", entry.kind, entry.name)
}

/// The objects a plan keeps because pruning is off.
pub fn kept(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .filter(|s| s.action == Action::Keep)
        .map(|s| describe(&s.target))
        .collect()
}

/// What a reconcile changed, from the plan and (unless a dry run) what happened.
pub fn summary(plan: &Plan, report: Option<&ApplyReport>, dry_run: bool) -> PlanSummary {
    let mut summary = PlanSummary {
        dry_run,
        ..PlanSummary::default()
    };
    for step in &plan.steps {
        let outcome = report.and_then(|r| r.outcome(&step.target.kind, &step.target.name));
        let name = describe(&step.target);
        match (step.action, outcome) {
            (_, Some(Outcome::Failed)) => {}
            (Action::Create, _) => summary.created.push(name),
            (Action::Update, _) => summary.updated.push(name),
            (Action::Unchanged, Some(Outcome::Applied | Outcome::Recreated)) => {
                summary.updated.push(name)
            }
            (Action::Unchanged, _) => summary.unchanged += 1,
            (Action::Delete, None | Some(Outcome::Deleted | Outcome::Planned)) => {
                summary.pruned.push(name)
            }
            (Action::Keep, _)
            | (Action::Delete, Some(Outcome::KeptPruneDisabled | Outcome::KeptVolumeClaim)) => {
                summary.kept.push(name)
            }
            (Action::Delete, _) => {}
        }
    }
    summary
}

/// The changed fields of every object `plan` updates, old (`live`, before the
/// apply) → new (rendered); a Secret's values only `(changed)`. Objects whose
/// kind is not watched, or that are not in the cache, are left out.
pub fn diffs_before(
    plan: &Plan,
    rendered: &crate::render::object::Rendered,
    live: impl Fn(&InventoryEntry) -> Option<serde_json::Value>,
) -> Vec<crate::state::ObjectDiff> {
    plan.steps
        .iter()
        .filter(|step| step.action == Action::Update)
        .filter_map(|step| {
            let object = rendered
                .objects
                .iter()
                .find(|o| o.kind() == step.target.kind && o.name() == step.target.name)?;
            let changes = crate::field_diff::changes(&object.to_json(), &live(&step.target)?);
            (!changes.is_empty()).then(|| crate::state::ObjectDiff {
                object: describe(&step.target),
                changes,
            })
        })
        .collect()
}

/// The status-page view of a stack.
pub fn view(
    stack: &Stack,
    status: &StackStatus,
    last_sync: Option<DateTime<Utc>>,
    last_plan: Option<PlanSummary>,
) -> StackView {
    let source = stack.spec.source.as_ref();
    let ready = status
        .services
        .iter()
        .filter(|s| s.ready >= s.desired)
        .count();
    StackView {
        namespace: stack.metadata.namespace.clone().unwrap_or_default(),
        name: stack.metadata.name.clone().unwrap_or_default(),
        repository: source.map(|s| s.repository.clone()),
        path: source.map(|s| s.path.clone()),
        revision: status
            .last_applied_revision
            .clone()
            .or(source.map(|s| s.revision.clone())),
        phase: status.phase.unwrap_or_default(),
        reason: health::ready_reason(&status.conditions),
        last_attempted_revision: status.last_attempted_revision.clone(),
        message: status.message.clone(),
        services_ready: u32::try_from(ready).unwrap_or(u32::MAX),
        services_total: u32::try_from(status.services.len()).unwrap_or(u32::MAX),
        services: status.services.clone(),
        warnings: status.warnings.clone(),
        last_error: status.last_error.clone(),
        last_sync,
        objects: status.inventory.clone(),
        last_plan,
        history: status.history.clone(),
        shapes: crate::http::picture::shapes(&stack.spec.project),
        shard: None,
        replica: None,
        events: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ServiceStatus, StackSpec};
    use crate::reconcile::apply::Step;

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap_or_default())
    }

    fn web(complete: bool) -> ServiceHealth {
        ServiceHealth {
            status: ServiceStatus {
                name: "web".into(),
                kind: "Deployment".into(),
                desired: 1,
                ready: i32::from(complete),
                updated: 1,
            },
            complete,
            failed: None,
            detail: None,
        }
    }

    fn observed(error: Option<&str>) -> Observed {
        Observed {
            services: vec![web(false)],
            warnings: vec![],
            inventory: vec![],
            kept: vec![],
            failure: error.map(|e| Failure::new(Reason::RenderFailed, e, false)),
            counts: Counts::default(),
            applied_revision: error.is_none().then(|| "abc".into()),
            attempted_revision: Some("abc".into()),
            handled_request: None,
            suspended: false,
            waiting: vec![],
            rollout: None,
            last_healthy_revision: None,
            held_revision: None,
        }
    }

    #[test]
    fn same_situation_gives_an_equal_status() {
        let mut stack = Stack::new("shop", StackSpec::default());
        stack.metadata.generation = Some(3);
        let first = build(&stack, observed(None), time(10));
        assert_eq!(first.phase, Some(StackPhase::Progressing));
        assert_eq!(first.ready.as_deref(), Some("0/1"));
        assert_eq!(first.observed_generation, Some(3));
        stack.status = Some(first.clone());
        assert_eq!(build(&stack, observed(None), time(20)), first);
    }

    #[test]
    fn history_records_each_revision_its_outcome_counts_and_time_to_ready() {
        let mut stack = Stack::new("shop", StackSpec::default());
        let at = |revision: &str, error: Option<&str>, ready: bool, created: u32| Observed {
            services: vec![web(ready)],
            attempted_revision: Some(revision.into()),
            counts: Counts {
                created,
                updated: 1,
                pruned: 0,
            },
            ..observed(error)
        };
        let mut step = |observed: Observed, seconds: i64| {
            let status = build(&stack, observed, time(seconds));
            stack.status = Some(status.clone());
            status.history
        };
        step(at("aaa", None, false, 3), 100);
        let history = step(at("aaa", None, true, 0), 142);
        assert_eq!(history.len(), 1);
        let first = &history[0];
        assert_eq!(first.outcome, HistoryOutcome::Applied);
        assert_eq!(first.seconds_to_ready, Some(42));
        assert_eq!((first.created, first.updated, first.pruned), (3, 2, 0));
        assert_eq!(first.attempted_at, time(100));
        // Unchanged afterwards: no write.
        let again = Observed {
            counts: Counts::default(),
            ..at("aaa", None, true, 0)
        };
        assert_eq!(step(again, 500), history);

        let history = step(at("bbb", Some("bad port"), false, 0), 600);
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].outcome, HistoryOutcome::Failed);
        assert_eq!(history[1].reason.as_deref(), Some("RenderFailed"));
        assert_eq!(history[1].seconds_to_ready, None);
        let held = Observed {
            suspended: true,
            ..at("ccc", None, false, 0)
        };
        assert_eq!(step(held, 700)[2].outcome, HistoryOutcome::Held);

        // Bounded: the oldest go.
        for i in 0..30 {
            step(at(&format!("r{i}"), None, true, 1), 1000 + i);
        }
        let history = stack.status.as_ref().unwrap().history.clone();
        assert_eq!(history.len(), crate::crd::HISTORY_LIMIT);
        assert_eq!(history[0].revision, "r10");
        assert_eq!(history[19].revision, "r29");
    }

    #[test]
    fn each_history_entry_keeps_the_subject_its_source_carried() {
        let mut stack = Stack::new("shop", StackSpec::default());
        let mut step = |revision: &str, subject: Option<&str>, seconds: i64| {
            stack.spec.source = Some(SourceRef {
                revision: revision.into(),
                subject: subject.map(str::to_string),
                ..SourceRef::default()
            });
            let observed = Observed {
                attempted_revision: Some(revision.into()),
                ..observed(None)
            };
            let status = build(&stack, observed, time(seconds));
            stack.status = Some(status.clone());
            status.history
        };
        step("aaa", Some("Add the shop"), 100);
        step("bbb", Some("Bump nginx"), 200);
        let history = step("ccc", None, 300);
        let subjects: Vec<_> = history.iter().map(|e| e.subject.as_deref()).collect();
        assert_eq!(subjects, [Some("Add the shop"), Some("Bump nginx"), None]);
    }

    #[test]
    fn an_error_is_failure_with_its_message() {
        let stack = Stack::new("shop", StackSpec::default());
        let status = build(&stack, observed(Some("bad port")), time(10));
        assert_eq!(status.phase, Some(StackPhase::Failure));
        assert_eq!(status.message.as_deref(), Some("bad port"));
        assert_eq!(status.last_error.as_deref(), Some("bad port"));
        assert_eq!(status.last_attempted_revision.as_deref(), Some("abc"));
        assert_eq!(status.last_applied_revision, None);
        let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled");
        assert_eq!(stalled.map(|c| c.status.as_str()), Some("True"));
        assert_eq!(
            health::ready_reason(&status.conditions),
            Some(Reason::RenderFailed)
        );
        let view = view(&stack, &status, None, None);
        assert_eq!(view.reason, Some(Reason::RenderFailed));
        assert_eq!(view.phase, StackPhase::Failure);
    }

    #[test]
    fn a_retried_failure_is_not_stalled_and_suspend_keeps_the_phase() {
        let mut stack = Stack::new("shop", StackSpec::default());
        let mut failing = observed(None);
        failing.failure = Some(Failure::new(Reason::ApplyFailed, "503", true));
        let status = build(&stack, failing, time(10));
        let of = |kind: &str| {
            let c = status.conditions.iter().find(|c| c.type_ == kind).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        assert_eq!(of("Stalled"), ("False".into(), "ApplyFailed".into()));
        assert_eq!(
            of("Reconciling"),
            ("True".into(), "ProgressingWithRetry".into())
        );
        stack.status = Some(status);
        let suspended = Observed {
            suspended: true,
            ..observed(None)
        };
        let status = build(&stack, suspended, time(20));
        assert_eq!(status.phase, Some(StackPhase::Failure));
        assert_eq!(
            health::ready_reason(&status.conditions),
            Some(Reason::Suspended)
        );
        assert_eq!(status.last_error, None);
    }

    #[test]
    fn a_refused_namespace_is_the_ready_and_stalled_reason() {
        let stack = Stack::new("shop", StackSpec::default());
        let refused = Observed {
            failure: Some(Failure::new(Reason::NamespaceNotAllowed, "refused", false)),
            ..observed(None)
        };
        let status = build(&stack, refused, time(10));
        let reason = |kind: &str| {
            let condition = status.conditions.iter().find(|c| c.type_ == kind).unwrap();
            (condition.status.clone(), condition.reason.clone())
        };
        assert_eq!(
            reason("Ready"),
            ("False".into(), "NamespaceNotAllowed".into())
        );
        assert_eq!(
            reason("Stalled"),
            ("True".into(), "NamespaceNotAllowed".into())
        );
    }

    #[test]
    fn dry_run_summary_lists_the_plan() {
        let entry = |kind: &str, name: &str| InventoryEntry {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            ..InventoryEntry::default()
        };
        let plan = Plan {
            steps: vec![
                Step {
                    target: entry("ConfigMap", "a"),
                    action: Action::Create,
                },
                Step {
                    target: entry("Service", "b"),
                    action: Action::Unchanged,
                },
                Step {
                    target: entry("Service", "c"),
                    action: Action::Delete,
                },
                Step {
                    target: entry("Deployment", "d"),
                    action: Action::Keep,
                },
            ],
        };
        assert_eq!(
            summary(&plan, None, true),
            PlanSummary {
                created: vec!["ConfigMap/a".into()],
                updated: vec![],
                pruned: vec!["Service/c".into()],
                kept: vec!["Deployment/d".into()],
                unchanged: 1,
                dry_run: true,
                diffs: vec![],
            }
        );
        assert_eq!(kept(&plan), ["Deployment/d"]);
    }
}
