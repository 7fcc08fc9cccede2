//! `depends_on` as apply waves: which workloads must wait this pass, and what
//! for. Pure: the live workloads come in through a lookup, nothing is fetched.
//!
//! Only workloads wait; every other kind is applied at once. A workload waits
//! for a dependency when it is created (first deploy) or when the dependency's
//! own workload changes in the current rollout; an update that leaves its
//! dependencies alone goes at once, even if one of them is unhealthy.

use std::collections::{BTreeMap, BTreeSet};

use crate::reconcile::health::{self, Workload};
use crate::render::model::Project;
use crate::render::sanitise_name;

/// What a dependent waits for, after compose's `depends_on.condition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The dependency's workload exists.
    Started,
    /// The dependency is Ready (every replica updated and available).
    Healthy,
    /// The dependency's Job succeeded.
    CompletedSuccessfully,
}

impl Condition {
    /// Compose's spelling; anything unknown counts as `service_started`, as in Compose.
    pub fn parse(text: &str) -> Condition {
        match text {
            "service_healthy" => Condition::Healthy,
            "service_completed_successfully" => Condition::CompletedSuccessfully,
            _ => Condition::Started,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "service_started",
            Condition::Healthy => "service_healthy",
            Condition::CompletedSuccessfully => "service_completed_successfully",
        }
    }
}

/// One `depends_on` entry, by the services' Kubernetes names (the service label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub service: String,
    pub dependency: String,
    pub condition: Condition,
    pub required: bool,
}

/// Every `depends_on` entry of the project.
pub fn edges(project: &Project) -> Vec<Edge> {
    project
        .services
        .iter()
        .flat_map(|(name, service)| {
            service
                .depends_on
                .iter()
                .map(move |(dependency, entry)| Edge {
                    service: sanitise_name(name),
                    dependency: sanitise_name(dependency),
                    condition: Condition::parse(&entry.condition),
                    required: entry.required,
                })
        })
        .collect()
}

/// Whether a dependency meets its condition now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    Met,
    /// Not yet; the text says how far it is (`0/1 ready`).
    Waiting(String),
    /// It never will on its own (a failed Job).
    Failed(String),
}

/// Judges `live` (`None`: the workload does not exist yet) against `condition`.
pub fn judge(condition: Condition, live: Option<&Workload>) -> Judgement {
    let Some(workload) = live else {
        return Judgement::Waiting("not created yet".to_string());
    };
    if condition == Condition::Started {
        return Judgement::Met;
    }
    let health = health::service_health(workload);
    let status = &health.status;
    match (workload, condition) {
        (Workload::Job(_), _) => match (&health.failed, health.complete) {
            (Some(why), _) => Judgement::Failed(format!("Job {} failed: {why}", status.name)),
            (None, true) => Judgement::Met,
            (None, false) => {
                Judgement::Waiting(format!("{}/{} succeeded", status.ready, status.desired))
            }
        },
        _ if health.complete => Judgement::Met,
        _ => Judgement::Waiting(format!("{}/{} ready", status.ready, status.desired)),
    }
}

/// The outcome of wave planning for one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Waves {
    /// Services whose workload is not written this pass.
    pub held: BTreeSet<String>,
    /// Per waiting service, e.g. `web: waiting for db (service_healthy): 0/1 ready`.
    pub waiting: Vec<String>,
    /// A dependency that failed for good (`DependencyFailed`), naming it.
    pub failed: Option<String>,
}

/// What the planner knows about each rendered workload.
#[derive(Clone, Debug, Default)]
pub struct WaveInput<'a> {
    /// Every service that renders a workload.
    pub workloads: BTreeSet<String>,
    /// Services whose workload this pass would create.
    pub creating: BTreeSet<String>,
    /// Services whose workload this pass would create or update.
    pub pending: BTreeSet<String>,
    /// Services whose workload changed earlier in the current rollout.
    pub changed: BTreeSet<String>,
    /// The live workload of a service, if it exists.
    pub live: BTreeMap<String, Option<&'a Workload>>,
}

/// Which pending workloads wait, and why. A dependency that is itself being
/// written (or held) this pass is not met: its live status is the old one.
pub fn plan(edges: &[Edge], input: &WaveInput<'_>) -> Waves {
    let mut waves = Waves::default();
    for service in &input.pending {
        let mut reasons = Vec::new();
        for edge in edges.iter().filter(|e| &e.service == service) {
            let dependency = &edge.dependency;
            if !input.workloads.contains(dependency) {
                // Missing or disabled: compose's `required: false`, or nothing to wait for.
                continue;
            }
            let gated = input.creating.contains(service)
                || input.pending.contains(dependency)
                || input.changed.contains(dependency);
            if !gated {
                continue;
            }
            let judgement = if input.pending.contains(dependency) {
                Judgement::Waiting("being applied".to_string())
            } else {
                let live = input.live.get(dependency).copied().flatten();
                judge(edge.condition, live)
            };
            match judgement {
                Judgement::Met => {}
                Judgement::Waiting(progress) => reasons.push(format!(
                    "waiting for {dependency} ({}): {progress}",
                    edge.condition.as_str()
                )),
                // Compose starts the dependent anyway when the dependency is optional.
                Judgement::Failed(_) if !edge.required => {}
                Judgement::Failed(why) => {
                    waves.failed.get_or_insert(format!(
                        "{service}: dependency {dependency} ({}) failed: {why}",
                        edge.condition.as_str()
                    ));
                    reasons.push(format!(
                        "waiting for {dependency} ({}): failed",
                        edge.condition.as_str()
                    ));
                }
            }
        }
        if !reasons.is_empty() {
            waves.held.insert(service.clone());
            waves
                .waiting
                .push(format!("{service}: {}", reasons.join(", ")));
        }
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(name: &str, ready: i32) -> Workload {
        Workload::Deployment(Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(1),
                updated_replicas: Some(1),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                ..DeploymentStatus::default()
            }),
        })
    }

    fn job(name: &str, outcome: Option<&str>) -> Workload {
        Workload::Job(Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                completions: Some(1),
                ..JobSpec::default()
            }),
            status: Some(JobStatus {
                succeeded: Some(i32::from(outcome == Some("Complete"))),
                conditions: outcome.map(|kind| {
                    vec![JobCondition {
                        type_: kind.into(),
                        status: "True".into(),
                        message: Some("BackoffLimitExceeded".into()),
                        ..JobCondition::default()
                    }]
                }),
                ..JobStatus::default()
            }),
        })
    }

    fn edge(service: &str, dependency: &str, condition: Condition) -> Edge {
        Edge {
            service: service.into(),
            dependency: dependency.into(),
            condition,
            required: true,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn conditions_judge_what_compose_waits_for() {
        let (ready, starting) = (deployment("db", 1), deployment("db", 0));
        assert_eq!(
            judge(Condition::Started, None),
            Judgement::Waiting("not created yet".into())
        );
        assert_eq!(judge(Condition::Started, Some(&starting)), Judgement::Met);
        assert_eq!(
            judge(Condition::Healthy, Some(&starting)),
            Judgement::Waiting("0/1 ready".into())
        );
        assert_eq!(judge(Condition::Healthy, Some(&ready)), Judgement::Met);
        let done = job("migrate", Some("Complete"));
        let running = job("migrate", None);
        let failed = job("migrate", Some("Failed"));
        assert_eq!(
            judge(Condition::CompletedSuccessfully, Some(&done)),
            Judgement::Met
        );
        assert_eq!(
            judge(Condition::CompletedSuccessfully, Some(&running)),
            Judgement::Waiting("0/1 succeeded".into())
        );
        assert_eq!(
            judge(Condition::CompletedSuccessfully, Some(&failed)),
            Judgement::Failed("Job migrate failed: BackoffLimitExceeded".into())
        );
    }

    #[test]
    fn first_deploy_holds_dependents_until_the_dependency_is_ready() {
        let edges = [edge("web", "db", Condition::Healthy)];
        let starting = deployment("db", 0);
        let mut input = WaveInput {
            workloads: set(&["web", "db"]),
            creating: set(&["web", "db"]),
            pending: set(&["web", "db"]),
            ..WaveInput::default()
        };
        // Both new: db is written, web waits for it.
        let waves = plan(&edges, &input);
        assert_eq!(waves.held, set(&["web"]));
        assert_eq!(
            waves.waiting,
            ["web: waiting for db (service_healthy): being applied"]
        );
        // db written but not ready.
        input.pending = set(&["web"]);
        input.changed = set(&["db"]);
        input.live.insert("db".into(), Some(&starting));
        let waves = plan(&edges, &input);
        assert_eq!(
            waves.waiting,
            ["web: waiting for db (service_healthy): 0/1 ready"]
        );
        // db ready: web goes.
        let ready = deployment("db", 1);
        input.live.insert("db".into(), Some(&ready));
        assert_eq!(plan(&edges, &input), Waves::default());
    }

    #[test]
    fn an_update_that_leaves_dependencies_alone_goes_at_once() {
        let edges = [edge("web", "db", Condition::Healthy)];
        let broken = deployment("db", 0);
        let input = WaveInput {
            workloads: set(&["web", "db"]),
            pending: set(&["web"]),
            live: [("db".to_string(), Some(&broken))].into(),
            ..WaveInput::default()
        };
        assert_eq!(plan(&edges, &input), Waves::default());
    }

    #[test]
    fn optional_and_missing_dependencies_do_not_block() {
        let mut optional = edge("web", "cache", Condition::Healthy);
        optional.required = false;
        let input = WaveInput {
            workloads: set(&["web"]),
            creating: set(&["web"]),
            pending: set(&["web"]),
            ..WaveInput::default()
        };
        assert_eq!(plan(&[optional], &input), Waves::default());
    }

    #[test]
    fn a_failed_migration_fails_the_dependent_naming_the_job() {
        let edges = [edge("app", "migrate", Condition::CompletedSuccessfully)];
        let failed = job("migrate", Some("Failed"));
        let input = WaveInput {
            workloads: set(&["app", "migrate"]),
            creating: set(&["app"]),
            pending: set(&["app"]),
            changed: set(&["migrate"]),
            live: [("migrate".to_string(), Some(&failed))].into(),
        };
        let mut optional = edges.clone();
        optional[0].required = false;
        assert_eq!(plan(&optional, &input), Waves::default());
        let waves = plan(&edges, &input);
        assert_eq!(waves.held, set(&["app"]));
        assert_eq!(
            waves.failed.as_deref(),
            Some(
                "app: dependency migrate (service_completed_successfully) failed: Job migrate failed: BackoffLimitExceeded"
            )
        );
    }

    #[test]
    fn a_chain_goes_one_level_per_wave() {
        let edges = [
            edge("web", "api", Condition::Healthy),
            edge("api", "db", Condition::Healthy),
        ];
        let input = WaveInput {
            workloads: set(&["web", "api", "db"]),
            creating: set(&["web", "api", "db"]),
            pending: set(&["web", "api", "db"]),
            ..WaveInput::default()
        };
        assert_eq!(plan(&edges, &input).held, set(&["web", "api"]));
    }

    #[test]
    fn edges_use_kubernetes_names_and_compose_conditions() {
        let project: Project = serde_json::from_value(serde_json::json!({"services": {
            "web_app": {"image": "x", "dependsOn": {"db": {"condition": "service_healthy"},
                "cache": {"condition": "service_started", "required": false}}},
            "db": {"image": "y"}, "cache": {"image": "z"}}}))
        .unwrap();
        let mut found = edges(&project);
        found.sort_by(|a, b| a.dependency.cmp(&b.dependency));
        assert_eq!(found[1].service, "web-app");
        assert_eq!(found[1].condition, Condition::Healthy);
        assert!(!found[0].required);
    }
}
