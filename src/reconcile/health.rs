//! Health: live workload status → per-service readiness, the stack's phase, and
//! kstatus conditions (`Ready`, `Reconciling`, `Stalled`) that Argo CD and Flux
//! health checks understand. Pure functions over typed objects.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{SERVICE_LABEL, ServiceStatus, StackPhase};
use crate::reason::Reason;

/// A live workload of the stack.
#[derive(Clone, Debug)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
    Job(Job),
}

/// One service's rollout state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    pub status: ServiceStatus,
    /// The rollout finished: every replica updated and ready (a Job: completed).
    pub complete: bool,
    /// The rollout cannot finish on its own (a Job that failed, a Deployment
    /// past its progress deadline).
    pub failed: Option<String>,
    /// Why it is not Ready yet, from the workload's conditions, for messages.
    pub detail: Option<String>,
}

fn is_current(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(g), Some(o)) => o >= g,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

fn service_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_LABEL))
        .or(meta.name.as_ref())
        .cloned()
        .unwrap_or_default()
}

/// Rollout state following `kubectl rollout status` for each kind.
pub fn service_health(workload: &Workload) -> ServiceHealth {
    match workload {
        Workload::Deployment(d) => {
            let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = d.status.clone().unwrap_or_default();
            let updated = status.updated_replicas.unwrap_or(0);
            let ready = status.ready_replicas.unwrap_or(0);
            let available = status.available_replicas.unwrap_or(0);
            let total = status.replicas.unwrap_or(0);
            let complete = is_current(d.metadata.generation, status.observed_generation)
                && updated >= desired
                && total <= updated
                && available >= updated;
            let conditions = status.conditions.unwrap_or_default();
            let failed = conditions
                .iter()
                .find(|c| {
                    c.type_ == "Progressing"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                })
                .map(|c| {
                    c.message
                        .clone()
                        .unwrap_or_else(|| "ProgressDeadlineExceeded".to_string())
                });
            let detail = conditions
                .iter()
                .find(|c| c.status == "False")
                .and_then(|c| c.message.clone().or(c.reason.clone()));
            let mut health = health(
                "Deployment",
                &d.metadata,
                desired,
                ready,
                updated,
                complete,
                failed,
            );
            health.detail = detail;
            health
        }
        Workload::StatefulSet(s) => {
            let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = s.status.clone().unwrap_or_default();
            let ready = status.ready_replicas.unwrap_or(0);
            let updated = status.updated_replicas.unwrap_or(0);
            let revisions_match = status.update_revision.is_none()
                || status.current_revision == status.update_revision;
            let complete = is_current(s.metadata.generation, status.observed_generation)
                && ready >= desired
                && updated >= desired
                && revisions_match;
            health(
                "StatefulSet",
                &s.metadata,
                desired,
                ready,
                updated,
                complete,
                None,
            )
        }
        Workload::DaemonSet(d) => {
            let status = d.status.clone().unwrap_or_default();
            let desired = status.desired_number_scheduled;
            let updated = status.updated_number_scheduled.unwrap_or(0);
            // Ready means numberReady = desired, like a StatefulSet's readyReplicas;
            // numberAvailable would also wait out minReadySeconds.
            let ready = status.number_ready;
            let complete = is_current(d.metadata.generation, status.observed_generation)
                && updated >= desired
                && ready >= desired;
            health(
                "DaemonSet",
                &d.metadata,
                desired,
                ready,
                updated,
                complete,
                None,
            )
        }
        Workload::Job(j) => {
            let desired = j.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
            let status = j.status.clone().unwrap_or_default();
            let succeeded = status.succeeded.unwrap_or(0);
            let conditions = status.conditions.unwrap_or_default();
            let has = |kind: &str| {
                conditions
                    .iter()
                    .any(|c| c.type_ == kind && c.status == "True")
            };
            let failed = has("Failed").then(|| {
                conditions
                    .iter()
                    .find(|c| c.type_ == "Failed")
                    .and_then(|c| c.message.clone().or(c.reason.clone()))
                    .unwrap_or_else(|| "the job failed".to_string())
            });
            let complete = has("Complete") || succeeded >= desired;
            health(
                "Job",
                &j.metadata,
                desired,
                succeeded,
                succeeded,
                complete,
                failed,
            )
        }
    }
}

fn health(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    desired: i32,
    ready: i32,
    updated: i32,
    complete: bool,
    failed: Option<String>,
) -> ServiceHealth {
    ServiceHealth {
        status: ServiceStatus {
            name: service_name(meta),
            kind: kind.to_string(),
            desired,
            ready,
            updated,
        },
        complete,
        failed,
        detail: None,
    }
}

/// The stack's phase and message from its services, CoK-style.
pub fn phase(services: &[ServiceHealth]) -> (StackPhase, String) {
    if let Some((name, why)) = services
        .iter()
        .find_map(|s| s.failed.as_ref().map(|why| (&s.status.name, why)))
    {
        return (
            StackPhase::Failure,
            format!("service {name:?} failed: {why}"),
        );
    }
    let ready = services.iter().filter(|s| s.complete).count();
    if ready == services.len() {
        (StackPhase::Available, "Stack is started".to_string())
    } else {
        (
            StackPhase::Progressing,
            format!(
                "Stack is being deployed: {ready}/{} services ready",
                services.len()
            ),
        )
    }
}

/// kstatus conditions for a stack whose `Ready` reason is `reason`, keeping each
/// condition's transition time while its status does not change. A failure
/// that a retry may fix (`retrying`) keeps `Reconciling=True` with reason
/// `ProgressingWithRetry`, as Flux does; one that only a change (a new commit,
/// an edited Stack) can fix is `Stalled=True`.
pub fn conditions(
    reason: Reason,
    retrying: bool,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: Time,
) -> Vec<Condition> {
    let name = reason.as_str();
    let (ready, reconciling, stalled) = match reason {
        Reason::Available => (("True", name), ("False", name), ("False", name)),
        Reason::Progressing => (("False", name), ("True", name), ("False", name)),
        Reason::Suspended => (("False", name), ("False", name), ("False", name)),
        _ if retrying => (
            ("False", name),
            ("True", "ProgressingWithRetry"),
            ("False", name),
        ),
        _ => (("False", name), ("False", name), ("True", name)),
    };
    [
        ("Ready", ready),
        ("Reconciling", reconciling),
        ("Stalled", stalled),
    ]
    .into_iter()
    .map(|(kind, (status, reason))| {
        let unchanged = previous
            .iter()
            .find(|c| c.type_ == kind && c.status == status);
        Condition {
            type_: kind.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: unchanged
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone()),
        }
    })
    .collect()
}

/// The `Ready` condition's reason in `conditions`, if it names one of ours.
pub fn ready_reason(conditions: &[Condition]) -> Option<Reason> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| Reason::parse(&c.reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetStatus, DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(
        generation: i64,
        observed: i64,
        replicas: i32,
        updated: i32,
        available: i32,
        total: i32,
    ) -> Workload {
        Workload::Deployment(Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(generation),
                labels: Some([(SERVICE_LABEL.to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                ready_replicas: Some(available),
                available_replicas: Some(available),
                replicas: Some(total),
                ..DeploymentStatus::default()
            }),
        })
    }

    #[test]
    fn deployment_rollout_follows_kubectl_rollout_status() {
        assert!(service_health(&deployment(2, 2, 3, 3, 3, 3)).complete);
        // Not observed yet, old replicas left, or not yet available: still rolling out.
        assert!(!service_health(&deployment(3, 2, 3, 3, 3, 3)).complete);
        assert!(!service_health(&deployment(2, 2, 3, 3, 3, 4)).complete);
        assert!(!service_health(&deployment(2, 2, 3, 3, 2, 3)).complete);
        let health = service_health(&deployment(2, 2, 3, 1, 1, 3));
        assert_eq!(
            health.status,
            ServiceStatus {
                name: "web".into(),
                kind: "Deployment".into(),
                desired: 3,
                ready: 1,
                updated: 1
            }
        );
    }

    fn daemon_set(
        generation: i64,
        observed: i64,
        ready: i32,
        available: i32,
        updated: i32,
    ) -> Workload {
        Workload::DaemonSet(DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(DaemonSetStatus {
                desired_number_scheduled: 3,
                number_ready: ready,
                number_available: Some(available),
                updated_number_scheduled: Some(updated),
                observed_generation: Some(observed),
                ..DaemonSetStatus::default()
            }),
        })
    }

    #[test]
    fn daemon_set_is_ready_when_number_ready_reaches_desired() {
        // Ready on numberReady, even while numberAvailable lags (minReadySeconds).
        let health = service_health(&daemon_set(2, 2, 3, 0, 3));
        assert!(health.complete);
        assert_eq!(
            health.status,
            ServiceStatus {
                name: "agent".into(),
                kind: "DaemonSet".into(),
                desired: 3,
                ready: 3,
                updated: 3
            }
        );
        // Available but not all Ready, not all updated, or not observed yet.
        assert!(!service_health(&daemon_set(2, 2, 2, 3, 3)).complete);
        assert!(!service_health(&daemon_set(2, 2, 3, 3, 2)).complete);
        assert!(!service_health(&daemon_set(3, 2, 3, 3, 3)).complete);
        assert_eq!(service_health(&daemon_set(2, 2, 2, 3, 3)).status.ready, 2);
    }

    fn stateful_set(observed: i64, ready: i32, updated: i32, update_revision: &str) -> Workload {
        Workload::StatefulSet(StatefulSet {
            metadata: ObjectMeta {
                name: Some("db".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(2),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                replicas: 2,
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                current_revision: Some("db-1".into()),
                update_revision: Some(update_revision.into()),
                ..StatefulSetStatus::default()
            }),
        })
    }

    #[test]
    fn stateful_set_is_ready_when_ready_and_updated_reach_desired() {
        assert!(service_health(&stateful_set(2, 2, 2, "db-1")).complete);
        // Not all Ready, not all updated, not observed yet, or still rolling to a new revision.
        assert!(!service_health(&stateful_set(2, 1, 2, "db-1")).complete);
        assert!(!service_health(&stateful_set(2, 2, 1, "db-1")).complete);
        assert!(!service_health(&stateful_set(1, 2, 2, "db-1")).complete);
        assert!(!service_health(&stateful_set(2, 2, 2, "db-2")).complete);
        let status = service_health(&stateful_set(2, 1, 2, "db-1")).status;
        assert_eq!(
            (status.kind.as_str(), status.desired, status.ready),
            ("StatefulSet", 2, 1)
        );
    }

    #[test]
    fn failed_job_makes_the_stack_fail() {
        let job = Workload::Job(Job {
            metadata: ObjectMeta {
                name: Some("migrate".into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                completions: Some(1),
                ..JobSpec::default()
            }),
            status: Some(JobStatus {
                failed: Some(4),
                conditions: Some(vec![JobCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    message: Some("Job has reached the specified backoff limit".into()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
        });
        let services = vec![
            service_health(&deployment(1, 1, 1, 1, 1, 1)),
            service_health(&job),
        ];
        let (phase, message) = phase(&services);
        assert_eq!(phase, StackPhase::Failure);
        assert_eq!(
            message,
            "service \"migrate\" failed: Job has reached the specified backoff limit"
        );
    }

    #[test]
    fn phases_and_conditions() {
        let done = service_health(&deployment(1, 1, 1, 1, 1, 1));
        let rolling = service_health(&deployment(1, 1, 2, 1, 1, 2));
        assert_eq!(
            phase(std::slice::from_ref(&done)),
            (StackPhase::Available, "Stack is started".into())
        );
        assert_eq!(
            phase(&[done, rolling]),
            (
                StackPhase::Progressing,
                "Stack is being deployed: 1/2 services ready".into()
            )
        );

        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let first = conditions(Reason::Progressing, false, "m", Some(1), &[], t0.clone());
        let summary: Vec<_> = first
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("Ready", "False"),
                ("Reconciling", "True"),
                ("Stalled", "False")
            ]
        );
        let second = conditions(Reason::Available, false, "ok", Some(2), &first, t1.clone());
        let ready = &second[0];
        assert_eq!(
            (ready.status.as_str(), &ready.last_transition_time),
            ("True", &t1)
        );
        // Stalled stayed False: its transition time is kept.
        assert_eq!(second[2].last_transition_time, t0);
        assert!(second.iter().all(|c| c.observed_generation == Some(2)));
        assert_eq!(ready_reason(&second), Some(Reason::Available));
    }

    #[test]
    fn stalled_only_when_a_retry_cannot_help() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let show = |conditions: Vec<Condition>| -> Vec<(String, String, String)> {
            conditions
                .into_iter()
                .map(|c| (c.type_, c.status, c.reason))
                .collect()
        };
        let own = |t: &str, s: &str, r: &str| (t.to_string(), s.to_string(), r.to_string());
        assert_eq!(
            show(conditions(
                Reason::LoadFailed,
                false,
                "m",
                None,
                &[],
                t0.clone()
            )),
            [
                own("Ready", "False", "LoadFailed"),
                own("Reconciling", "False", "LoadFailed"),
                own("Stalled", "True", "LoadFailed"),
            ]
        );
        assert_eq!(
            show(conditions(
                Reason::ApplyFailed,
                true,
                "m",
                None,
                &[],
                t0.clone()
            )),
            [
                own("Ready", "False", "ApplyFailed"),
                own("Reconciling", "True", "ProgressingWithRetry"),
                own("Stalled", "False", "ApplyFailed"),
            ]
        );
        assert_eq!(
            show(conditions(Reason::Suspended, false, "m", None, &[], t0)),
            [
                own("Ready", "False", "Suspended"),
                own("Reconciling", "False", "Suspended"),
                own("Stalled", "False", "Suspended"),
            ]
        );
    }
}
