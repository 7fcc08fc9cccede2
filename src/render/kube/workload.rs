//! The workload of one compose service: kind, pod template and container.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, HostAlias, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecurityContext, Sysctl,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::RenderError;
use super::labels::{CONFIG_HASH, Scope, compose_label};
use super::names::label_problem;
use super::placement;
use super::probes;
use super::quantity;
use super::security::{self, PodSecurity};
use super::services::container_ports;
use super::storage::PodStorage;
use super::warnings::Warnings;
use crate::render::model::{self, ResourceAmounts};
use crate::render::object::Object;

/// Label that overrides the workload kind, as in kompose.
pub const CONTROLLER_TYPE: &str = "kompose.controller.type";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::Job => "Job",
        }
    }
}

/// The workload kind per mapping.md: the label override, else global → DaemonSet,
/// jobs → Job, claim volumes → StatefulSet, otherwise Deployment.
pub fn kind(
    compose_name: &str,
    service: &model::Service,
    storage: &PodStorage,
    warnings: &mut Warnings,
) -> Result<Kind, RenderError> {
    let mode = service
        .deploy
        .as_ref()
        .and_then(|d| d.mode.as_deref())
        .unwrap_or("replicated");
    let by_mode = match mode {
        "global" => Kind::DaemonSet,
        "replicated-job" => Kind::Job,
        "global-job" => {
            warnings.service(
                compose_name,
                "deploy.mode global-job runs as a Job with `replicas` completions, not one per node",
            );
            Kind::Job
        }
        _ if !storage.claim_templates.is_empty() => Kind::StatefulSet,
        _ => Kind::Deployment,
    };
    let chosen = match compose_label(service, CONTROLLER_TYPE).map(str::to_ascii_lowercase) {
        None => by_mode,
        Some(value) => match value.as_str() {
            "deployment" => Kind::Deployment,
            "statefulset" => Kind::StatefulSet,
            "daemonset" => Kind::DaemonSet,
            "job" => Kind::Job,
            other => {
                warnings.ignored(
                    compose_name,
                    &format!("label {CONTROLLER_TYPE}={other}"),
                    "use deployment, statefulset, daemonset or job",
                );
                by_mode
            }
        },
    };
    if chosen != Kind::StatefulSet && !storage.claim_templates.is_empty() {
        let volume = storage
            .claimed_volumes
            .iter()
            .find(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| "anonymous".to_string());
        return Err(RenderError::VolumeNeedsStatefulSet {
            service: compose_name.to_string(),
            kind: chosen.as_str(),
            volume,
        });
    }
    Ok(chosen)
}

/// Inputs for one workload.
pub struct WorkloadInput<'a> {
    pub scope: &'a Scope,
    pub compose_name: &'a str,
    pub name: &'a str,
    pub service: &'a model::Service,
    pub kind: Kind,
    pub storage: PodStorage,
    /// The headless Service, for a StatefulSet's `serviceName`.
    pub service_name: Option<String>,
    pub pod_security: PodSecurity,
}

impl WorkloadInput<'_> {
    pub fn render(self, warnings: &mut Warnings) -> Result<Object, RenderError> {
        let replicas = self.replicas()?;
        let meta = self.scope.meta(self.name, Some(self.name));
        let selector = self.scope.selector(self.name);
        let kind = self.kind;
        let (template, claims) = self.pod_template(warnings)?;
        let deploy = self.service.deploy.as_ref();
        Ok(match kind {
            Kind::Deployment => {
                let (surge, unavailable) = self.rolling_update(warnings);
                Object::Deployment(Deployment {
                    metadata: meta,
                    spec: Some(DeploymentSpec {
                        replicas: Some(replicas),
                        selector,
                        template,
                        strategy: Some(DeploymentStrategy {
                            type_: Some("RollingUpdate".to_string()),
                            rolling_update: Some(RollingUpdateDeployment {
                                max_surge: Some(surge),
                                max_unavailable: Some(unavailable),
                            }),
                        }),
                        ..DeploymentSpec::default()
                    }),
                    ..Deployment::default()
                })
            }
            Kind::StatefulSet => Object::StatefulSet(StatefulSet {
                metadata: meta,
                spec: Some(StatefulSetSpec {
                    replicas: Some(replicas),
                    selector,
                    service_name: self.service_name.clone(),
                    template,
                    update_strategy: Some(StatefulSetUpdateStrategy {
                        type_: Some("RollingUpdate".to_string()),
                        rolling_update: None,
                    }),
                    volume_claim_templates: (!claims.is_empty()).then_some(claims),
                    ..StatefulSetSpec::default()
                }),
                ..StatefulSet::default()
            }),
            Kind::DaemonSet => {
                let (surge, unavailable) = self.rolling_update(warnings);
                Object::DaemonSet(DaemonSet {
                    metadata: meta,
                    spec: Some(DaemonSetSpec {
                        selector,
                        template,
                        update_strategy: Some(DaemonSetUpdateStrategy {
                            type_: Some("RollingUpdate".to_string()),
                            rolling_update: Some(RollingUpdateDaemonSet {
                                max_surge: Some(surge),
                                max_unavailable: Some(unavailable),
                            }),
                        }),
                        ..DaemonSetSpec::default()
                    }),
                    ..DaemonSet::default()
                })
            }
            Kind::Job => {
                let backoff = deploy
                    .and_then(|d| d.restart_policy.as_ref())
                    .and_then(|r| r.max_attempts)
                    .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
                Object::Job(Job {
                    metadata: meta,
                    spec: Some(JobSpec {
                        completions: Some(replicas),
                        parallelism: Some(replicas),
                        backoff_limit: backoff,
                        template,
                        ..JobSpec::default()
                    }),
                    ..Job::default()
                })
            }
        })
    }

    fn replicas(&self) -> Result<i32, RenderError> {
        let replicas = self
            .service
            .deploy
            .as_ref()
            .and_then(|d| d.replicas)
            .or(self.service.scale)
            .unwrap_or(1);
        i32::try_from(replicas)
            .ok()
            .filter(|r| *r >= 0)
            .ok_or_else(|| RenderError::InvalidValue {
                service: self.compose_name.to_string(),
                field: "deploy.replicas".to_string(),
                reason: format!("{replicas} is not a replica count"),
            })
    }

    /// `(maxSurge, maxUnavailable)` from `deploy.update_config`: stop-first (the
    /// default) takes pods down `parallelism` at a time, start-first adds them first.
    fn rolling_update(&self, warnings: &mut Warnings) -> (IntOrString, IntOrString) {
        let update = self
            .service
            .deploy
            .as_ref()
            .and_then(|d| d.update_config.as_ref());
        let parallelism = update.and_then(|u| u.parallelism).unwrap_or(1);
        let step = if parallelism == 0 {
            IntOrString::String("100%".to_string())
        } else {
            IntOrString::Int(i32::try_from(parallelism).unwrap_or(i32::MAX))
        };
        if let Some(update) = update {
            for (set, field) in [
                (update.delay_ms.is_some(), "delay"),
                // `rollback` and `monitor` drive stackd's own rollback and health deadline.
                (
                    update
                        .failure_action
                        .as_deref()
                        .is_some_and(|a| a != "rollback"),
                    "failure_action",
                ),
                (update.max_failure_ratio.is_some(), "max_failure_ratio"),
            ] {
                if set {
                    warnings.ignored(
                        self.compose_name,
                        &format!("deploy.update_config.{field}"),
                        "Kubernetes rolling updates have no such setting",
                    );
                }
            }
        }
        match update.and_then(|u| u.order.as_deref()) {
            Some("start-first") => (step, IntOrString::Int(0)),
            _ => (IntOrString::Int(0), step),
        }
    }

    fn pod_template(
        &self,
        warnings: &mut Warnings,
    ) -> Result<
        (
            PodTemplateSpec,
            Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
        ),
        RenderError,
    > {
        let service = self.service;
        let mut labels = self.scope.labels(Some(self.name));
        labels.extend(self.scope.selector_labels(self.name));
        let annotations = self
            .storage
            .config_hash()
            .map(|hash| BTreeMap::from([(CONFIG_HASH.to_string(), hash)]));
        let scheduling = placement::scheduling(
            self.compose_name,
            service.deploy.as_ref().and_then(|d| d.placement.as_ref()),
            &self.scope.selector(self.name),
            warnings,
        );
        let probes = probes::probes(self.compose_name, service.healthcheck.as_deref(), warnings);
        let restart_policy = match self.kind {
            Kind::Job => self.job_restart_policy(warnings),
            _ => {
                self.warn_restart_condition(warnings);
                "Always"
            }
        };
        let image = service
            .image
            .clone()
            .ok_or_else(|| RenderError::MissingImage {
                service: self.compose_name.to_string(),
            })?;
        let container = Container {
            name: self.name.to_string(),
            image_pull_policy: Some(self.pull_policy(&image, warnings).to_string()),
            image: Some(image),
            command: service.entrypoint.clone(),
            args: service.command.clone(),
            working_dir: service.working_dir.clone(),
            tty: service.tty.then_some(true),
            stdin: service.stdin_open.then_some(true),
            env: self.env(warnings),
            ports: Some(container_ports(service)).filter(|p| !p.is_empty()),
            resources: self.resources(warnings),
            security_context: self.security_context(warnings),
            readiness_probe: probes.readiness,
            liveness_probe: probes.liveness,
            startup_probe: probes.startup,
            volume_mounts: Some(self.storage.mounts.clone()).filter(|m| !m.is_empty()),
            ..Container::default()
        };
        let hostname = service.hostname.clone().filter(|h| {
            let valid = label_problem(h, 63).is_none();
            if !valid {
                warnings.ignored(
                    self.compose_name,
                    "hostname",
                    "a pod hostname must be a DNS-1123 label",
                );
            }
            valid
        });
        let sysctls: Vec<Sysctl> = service
            .sysctls
            .iter()
            .map(|(name, value)| Sysctl {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        let mut spec = PodSpec {
            containers: vec![container],
            restart_policy: Some(restart_policy.to_string()),
            hostname,
            host_pid: self.host_namespace("pid", service.pid.as_deref(), warnings),
            host_ipc: self.host_namespace("ipc", service.ipc.as_deref(), warnings),
            host_aliases: host_aliases(&service.extra_hosts),
            termination_grace_period_seconds: service
                .stop_grace_period_ms
                .map(|ms| i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX)),
            security_context: (!sysctls.is_empty()).then(|| PodSecurityContext {
                sysctls: Some(sysctls),
                ..PodSecurityContext::default()
            }),
            affinity: scheduling.affinity,
            topology_spread_constraints: (!scheduling.topology_spread.is_empty())
                .then_some(scheduling.topology_spread),
            volumes: Some(self.storage.volumes.clone()).filter(|v| !v.is_empty()),
            ..PodSpec::default()
        };
        security::enforce(self.pod_security, self.compose_name, &mut spec)?;
        Ok((
            PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(spec),
            },
            self.storage.claim_templates.clone(),
        ))
    }

    fn job_restart_policy(&self, warnings: &mut Warnings) -> &'static str {
        let condition = self
            .service
            .deploy
            .as_ref()
            .and_then(|d| d.restart_policy.as_ref())
            .and_then(|r| r.condition.as_deref());
        match condition {
            Some("none") | Some("no") => "Never",
            None | Some("on-failure") => "OnFailure",
            Some(other) => {
                warnings.ignored(
                    self.compose_name,
                    &format!("deploy.restart_policy.condition {other}"),
                    "a Job restarts only on failure",
                );
                "OnFailure"
            }
        }
    }

    fn warn_restart_condition(&self, warnings: &mut Warnings) {
        let condition = self
            .service
            .deploy
            .as_ref()
            .and_then(|d| d.restart_policy.as_ref())
            .and_then(|r| r.condition.as_deref());
        if let Some(condition) = condition.filter(|c| *c != "any") {
            warnings.ignored(
                self.compose_name,
                &format!("deploy.restart_policy.condition {condition}"),
                "long-running workloads always restart; use deploy.mode replicated-job",
            );
        }
    }

    fn host_namespace(
        &self,
        field: &str,
        value: Option<&str>,
        warnings: &mut Warnings,
    ) -> Option<bool> {
        match value {
            None => None,
            Some("host") => Some(true),
            Some(other) => {
                warnings.ignored(
                    self.compose_name,
                    &format!("{field}: {other}"),
                    "only \"host\" has a Kubernetes equivalent",
                );
                None
            }
        }
    }

    /// Explicit policy (`x-kubernetes.pull_policy`, `kompose.image-pull-policy`,
    /// `pull_policy`), else Always for `:latest` or no tag and IfNotPresent otherwise.
    fn pull_policy(&self, image: &str, warnings: &mut Warnings) -> &'static str {
        let service = self.service;
        let explicit = service
            .x_kubernetes
            .as_ref()
            .and_then(|x| x.pull_policy.as_deref())
            .map(|p| ("x-kubernetes.pull_policy", p))
            .or_else(|| {
                compose_label(service, "kompose.image-pull-policy")
                    .map(|p| ("label kompose.image-pull-policy", p))
            })
            .or_else(|| service.pull_policy.as_deref().map(|p| ("pull_policy", p)));
        if let Some((field, value)) = explicit {
            match value.to_ascii_lowercase().replace('_', "").as_str() {
                "always" => return "Always",
                "never" => return "Never",
                "ifnotpresent" | "missing" => return "IfNotPresent",
                _ => warnings.ignored(
                    self.compose_name,
                    &format!("{field} {value}"),
                    "use always, never or missing",
                ),
            }
        }
        let without_digest = image.split('@').next().unwrap_or(image);
        let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
        let tag = last.split_once(':').map(|(_, tag)| tag);
        if image.contains('@') {
            return "IfNotPresent";
        }
        match tag {
            None | Some("latest") => "Always",
            Some(_) => "IfNotPresent",
        }
    }

    fn env(&self, warnings: &mut Warnings) -> Option<Vec<EnvVar>> {
        let mut env: Vec<EnvVar> = self
            .service
            .environment
            .iter()
            .filter_map(|(name, value)| match value {
                Some(value) => Some(EnvVar {
                    name: name.clone(),
                    value: Some(value.clone()),
                    ..EnvVar::default()
                }),
                None => {
                    warnings.ignored(
                        self.compose_name,
                        &format!("environment {name}"),
                        "it has no value and stackd never passes its own environment",
                    );
                    None
                }
            })
            .collect();
        env.extend(super::sealed::env_vars(self.name, self.service));
        env.sort_by(|a, b| a.name.cmp(&b.name));
        (!env.is_empty()).then_some(env)
    }

    fn resources(&self, warnings: &mut Warnings) -> Option<ResourceRequirements> {
        let resources = self.service.deploy.as_ref()?.resources.as_ref()?;
        let mut amounts = |a: Option<&ResourceAmounts>, field: &str| {
            let a = a?;
            if a.pids.is_some() {
                warnings.ignored(
                    self.compose_name,
                    &format!("deploy.resources.{field}.pids"),
                    "Kubernetes sets pid limits per node",
                );
            }
            if a.devices {
                warnings.ignored(
                    self.compose_name,
                    &format!("deploy.resources.{field}.devices"),
                    "device requests are not supported yet",
                );
            }
            let mut map: BTreeMap<String, Quantity> = BTreeMap::new();
            if let Some(cpu) = a.cpus.and_then(quantity::cpus) {
                map.insert("cpu".to_string(), cpu);
            }
            if let Some(memory) = a.memory_bytes.filter(|m| *m > 0) {
                map.insert("memory".to_string(), quantity::bytes(memory));
            }
            (!map.is_empty()).then_some(map)
        };
        let limits = amounts(resources.limits.as_ref(), "limits");
        let requests = amounts(resources.reservations.as_ref(), "reservations");
        (limits.is_some() || requests.is_some()).then(|| ResourceRequirements {
            limits,
            requests,
            ..ResourceRequirements::default()
        })
    }

    fn security_context(&self, warnings: &mut Warnings) -> Option<SecurityContext> {
        let service = self.service;
        let mut context = SecurityContext::default();
        if let Some(user) = &service.user {
            let (uid, gid) = match user.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (user.as_str(), None),
            };
            match (uid.parse::<i64>(), gid.map(str::parse::<i64>)) {
                (Ok(uid), None) => context.run_as_user = Some(uid),
                (Ok(uid), Some(Ok(gid))) => {
                    context.run_as_user = Some(uid);
                    context.run_as_group = Some(gid);
                }
                _ => warnings.ignored(
                    self.compose_name,
                    &format!("user {user}"),
                    "Kubernetes needs a numeric uid[:gid]",
                ),
            }
        }
        if service.privileged {
            context.privileged = Some(true);
        }
        if service.read_only {
            context.read_only_root_filesystem = Some(true);
        }
        let strip = |caps: &[String]| -> Option<Vec<String>> {
            let caps: Vec<String> = caps
                .iter()
                .map(|c| c.strip_prefix("CAP_").unwrap_or(c).to_string())
                .collect();
            (!caps.is_empty()).then_some(caps)
        };
        let (add, drop) = (strip(&service.cap_add), strip(&service.cap_drop));
        if add.is_some() || drop.is_some() {
            context.capabilities = Some(Capabilities { add, drop });
        }
        (context != SecurityContext::default()).then_some(context)
    }
}

/// `extra_hosts` grouped by IP, in a stable order.
fn host_aliases(hosts: &[model::ExtraHost]) -> Option<Vec<HostAlias>> {
    let mut by_ip: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for host in hosts {
        let names = by_ip.entry(host.ip.as_str()).or_default();
        if !names.contains(&host.hostname) {
            names.push(host.hostname.clone());
        }
    }
    let aliases: Vec<HostAlias> = by_ip
        .into_iter()
        .map(|(ip, names)| HostAlias {
            ip: ip.to_string(),
            hostnames: Some(names),
        })
        .collect();
    (!aliases.is_empty()).then_some(aliases)
}
