//! The `Stack` custom resource (`stackd.dev/v1alpha1`): one compose project, as
//! the Git source saw it, and what the reconciler did with it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::render::PodSecurity;
use crate::render::model::Project;

/// Label on every object stackd manages; its value is the stack name.
pub const STACK_LABEL: &str = "stackd.dev/stack";
/// Label on objects that belong to one compose service.
pub const SERVICE_LABEL: &str = "stackd.dev/service";
/// Field manager used for server-side apply.
pub const FIELD_MANAGER: &str = "stackd";

/// A compose project deployed by stackd.
// Several `printcolumn(...)` entries share `type_ = "string"`, which clippy takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "stackd.dev",
    version = "v1alpha1",
    kind = "Stack",
    namespaced,
    status = "StackStatus",
    shortname = "stk",
    category = "stackd",
    doc = "A docker-compose project that stackd renders into Kubernetes objects and keeps in sync",
    printcolumn(
        name = "Services",
        type_ = "integer",
        json_path = ".status.serviceCount"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready"),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.lastAppliedRevision"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StackSpec {
    /// Where the compose files came from; absent for a Stack written by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// Stop reconciling this stack while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Delete objects that left the compose file. False keeps them (the status
    /// lists them as kept); a Stack from Git gets its repository's `prune`.
    #[serde(default = "prune_by_default")]
    pub prune: bool,
    /// Pod Security level the renderer checks against and the namespace
    /// enforces (`restricted`, `baseline` or `privileged`); absent: `baseline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurity>,
    /// Render compose networks as NetworkPolicies; absent: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policies: Option<bool>,
    /// Objects of this stack are written impersonating this ServiceAccount of
    /// the stack's namespace, so its RBAC bounds what the stack can do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// How long a newly applied revision may take to become Ready (`5m`);
    /// absent: 5 minutes, or a service's longer `deploy.update_config.monitor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout: Option<String>,
    /// Re-apply the last healthy revision when a new one misses its health
    /// deadline; absent: off, unless a service asks for it with
    /// `deploy.update_config.failure_action: rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<bool>,
    /// The normalised compose model.
    #[serde(flatten)]
    pub project: Project,
}

fn prune_by_default() -> bool {
    true
}

// By hand: a derived default would turn pruning off.
impl Default for StackSpec {
    fn default() -> Self {
        StackSpec {
            source: None,
            suspend: false,
            prune: prune_by_default(),
            pod_security: None,
            network_policies: None,
            service_account_name: None,
            health_timeout: None,
            rollback: None,
            project: Project::default(),
        }
    }
}

/// The Git origin of a stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// Repository URL, without credentials.
    pub repository: String,
    /// Directory of the stack inside the repository.
    pub path: String,
    /// Commit SHA the spec was rendered from.
    pub revision: String,
    /// That commit's subject line, for `status.history` (the repository's
    /// head may have moved on by the time the controller records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// CoK-compatible phases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StackPhase {
    #[default]
    ReconciliationPending,
    Progressing,
    Available,
    Failure,
    /// A revision missed its health deadline and the last healthy one was re-applied.
    RolledBack,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StackPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// kstatus conditions: `Ready`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The commit whose objects are applied: the last good revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// The commit stackd last tried for this stack, good or not: it differs
    /// from `lastAppliedRevision` while a newer commit fails (the `Ready`
    /// condition says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_count: Option<i32>,
    /// Ready services over all services, e.g. `3/4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Objects applied for this stack, used for pruning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// Objects no longer rendered that stay because `spec.prune` is false
    /// (`Kind/name`); they are pruned once it is true again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last `stackd.dev/reconcile-requested-at` annotation value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Per service, what its workload waits for (`depends_on` waves), e.g.
    /// `web: waiting for db (service_healthy): 0/1 ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    /// The rollout under way: when its revision was first applied (the health
    /// deadline counts from there, across restarts) and which workloads it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The last revision that was fully Ready: what a rollback re-applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_healthy_revision: Option<String>,
    /// A revision that missed its health deadline and was rolled back: not
    /// applied again until a newer commit changes the stack or a reconcile is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_revision: Option<String>,
    /// The last revisions that touched the stack, oldest first, at most
    /// [`HISTORY_LIMIT`]: what `kubectl get stack -o yaml` and the page show.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// A rollout: one revision on its way to Ready.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The commit (or `generation-N` for a Stack written by hand).
    pub revision: String,
    /// When the revision was first applied (RFC 3339).
    pub started_at: String,
    /// Services whose workload this rollout wrote: their dependents wait for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

/// Revisions kept in `status.history`. Flux keeps 5 Helm releases; the page shows
/// 20 (issue 12), and 20 entries of about 250 bytes stay far below etcd's object limit.
pub const HISTORY_LIMIT: usize = 20;

/// One revision that touched the stack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The commit SHA.
    pub revision: String,
    /// The commit's subject line, when the Git source knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When stackd first tried this revision.
    pub attempted_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    pub outcome: HistoryOutcome,
    /// The `Ready` reason of a failed or held revision (`RenderFailed`, `ApplyFailed`, `Suspended`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds from the first attempt until every service was Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_to_ready: Option<i64>,
    /// Objects created, updated and pruned while this revision was applied.
    #[serde(default)]
    pub created: u32,
    #[serde(default)]
    pub updated: u32,
    #[serde(default)]
    pub pruned: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HistoryOutcome {
    Applied,
    /// Rendering, loading or applying failed: `reason` says where.
    Failed,
    /// Applied, then replaced by the previous revision (a failed health deadline).
    RolledBack,
    /// Not applied: reconciling is suspended.
    Held,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub name: String,
    pub kind: String,
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
}

/// One applied object, with the hash of the content stackd applied.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// The CRD as YAML, exactly as `stackd crd` prints it and `manifests/crd.yaml` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_saphyr::to_string(&Stack::crd()).expect("the CRD always serialises")
}
