//! The apply engine for one stack: plan the rendered objects against the
//! previous inventory, server-side apply what changed (recreating objects whose
//! immutable fields changed), then prune what is no longer rendered.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::crd::{FIELD_MANAGER, InventoryEntry, STACK_LABEL};
use crate::reconcile::live::LiveStores;
use crate::render::object::{Object, RENDERED_KINDS, Rendered};

/// Objects annotated `stackd.dev/prune: disabled` are never pruned.
pub const PRUNE_ANNOTATION: &str = "stackd.dev/prune";
pub const PRUNE_DISABLED: &str = "disabled";
/// Volume claims hold data: never pruned, whatever the inventory says.
const NEVER_PRUNED_KINDS: &[&str] = &["PersistentVolumeClaim"];

#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Plan only: reads are allowed, writes are not.
    pub dry_run: bool,
    /// Allow a plan that deletes every object of the stack (nothing rendered).
    pub allow_prune_all: bool,
    /// Delete objects that are no longer rendered. Off (`spec.prune: false`),
    /// they are kept, stay in the inventory, and nothing is listed for pruning.
    pub prune: bool,
    /// How long to wait for a deleted object to disappear before recreating it.
    pub recreate_timeout: Duration,
    /// Apply objects whose hash is unchanged too: drift repair and periodic
    /// resync, where the live object may differ from what was applied.
    pub reapply_unchanged: bool,
    /// Checked before every write: once cancelled (leadership lost, shutdown),
    /// the remaining writes fail with `ApplyError::Cancelled`.
    pub cancel: CancellationToken,
    /// Objects (`kind`, `name`) not written this pass (a `depends_on` wave that
    /// waits): left as they are, neither applied nor pruned.
    pub held: BTreeSet<(String, String)>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            allow_prune_all: false,
            prune: true,
            recreate_timeout: Duration::from_secs(60),
            reapply_unchanged: false,
            cancel: CancellationToken::new(),
            held: BTreeSet::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    /// Same content hash as the inventory: no request at all.
    Unchanged,
    Delete,
    /// No longer rendered, but pruning is off: left alone, still in the inventory.
    Keep,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The object, with the hash of the rendered content (none for deletions).
    pub target: InventoryEntry,
    pub action: Action,
}

/// Applies in apply order, then deletions in reverse apply order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.steps.iter().filter(|s| s.action == action).count()
    }

    /// Pruning is off: every deletion becomes a `Keep`.
    pub fn keep_deletions(&mut self) {
        for step in &mut self.steps {
            if step.action == Action::Delete {
                step.action = Action::Keep;
            }
        }
    }

    /// The plan for `rendered` with pruning on or off.
    pub fn for_stack(
        stack_namespace: &str,
        rendered: &Rendered,
        inventory: &[InventoryEntry],
        prune: bool,
    ) -> Plan {
        let mut plan = plan(stack_namespace, rendered, inventory);
        if !prune {
            plan.keep_deletions();
        }
        plan
    }
}

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// An immutable field changed: deleted, then applied again.
    Recreated,
    Unchanged,
    Deleted,
    AlreadyGone,
    KeptPruneDisabled,
    KeptVolumeClaim,
    /// Pruning is off for the stack (`spec.prune: false`).
    KeptPruningOff,
    /// Dry run: what would have happened is in the plan.
    Planned,
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying {object}: {source}")]
    Apply { object: String, source: kube::Error },
    #[error("recreating {object} after an immutable-field change: {source}")]
    Recreate { object: String, source: kube::Error },
    #[error("{object} was deleted to be recreated but still exists after {waited:?}")]
    StillTerminating { object: String, waited: Duration },
    #[error("listing {kind} labelled {STACK_LABEL}={stack} in {namespace} for pruning: {source}")]
    ListForPrune {
        kind: String,
        namespace: String,
        stack: String,
        source: kube::Error,
    },
    #[error("pruning {object}: {source}")]
    Prune { object: String, source: kube::Error },
    #[error(
        "refusing to prune all {count} objects of stack {stack}: nothing is rendered (set allow_prune_all to allow it)"
    )]
    WouldPruneEverything { stack: String, count: usize },
    #[error(
        "not writing {object}: this replica stopped writing (leadership lost or shutting down)"
    )]
    Cancelled { object: String },
}

impl ApplyError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ApplyError::Apply { .. } => "apply",
            ApplyError::Recreate { .. } => "recreate",
            ApplyError::StillTerminating { .. } => "still_terminating",
            ApplyError::ListForPrune { .. } => "list_for_prune",
            ApplyError::Prune { .. } => "prune",
            ApplyError::WouldPruneEverything { .. } => "would_prune_everything",
            ApplyError::Cancelled { .. } => "cancelled",
        }
    }
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub plan: Plan,
    pub results: Vec<(InventoryEntry, Outcome)>,
    /// The inventory to store in the Stack status: what stackd now manages.
    pub inventory: Vec<InventoryEntry>,
    pub errors: Vec<ApplyError>,
}

impl ApplyReport {
    pub fn is_success(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn outcome(&self, kind: &str, name: &str) -> Option<Outcome> {
        self.results
            .iter()
            .find(|(e, _)| e.kind == kind && e.name == name)
            .map(|(_, outcome)| *outcome)
    }
}

/// The stack an apply is for.
#[derive(Clone, Copy, Debug)]
pub struct StackRef<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
}

fn is_cluster_scoped(kind: &str) -> bool {
    kind == "Namespace"
}

/// The inventory entry (identity and content hash) of a rendered object.
pub fn entry_for(stack_namespace: &str, object: &Object) -> InventoryEntry {
    let namespace = (!is_cluster_scoped(object.kind()))
        .then(|| object.namespace().unwrap_or(stack_namespace).to_string());
    InventoryEntry {
        api_version: object.api_version().to_string(),
        kind: object.kind().to_string(),
        namespace,
        name: object.name().to_string(),
        hash: Some(object.content_hash()),
    }
}

fn same_object(a: &InventoryEntry, b: &InventoryEntry) -> bool {
    (&a.api_version, &a.kind, &a.namespace, &a.name)
        == (&b.api_version, &b.kind, &b.namespace, &b.name)
}

fn rank(kind: &str) -> usize {
    RENDERED_KINDS
        .iter()
        .position(|(_, k)| *k == kind)
        .unwrap_or(RENDERED_KINDS.len())
}

fn describe(entry: &InventoryEntry) -> String {
    match &entry.namespace {
        Some(ns) => format!("{} {ns}/{}", entry.kind, entry.name),
        None => format!("{} {}", entry.kind, entry.name),
    }
}

/// The pure part: what to do with each object, from hashes alone.
pub fn plan(stack_namespace: &str, rendered: &Rendered, inventory: &[InventoryEntry]) -> Plan {
    let mut objects: Vec<&Object> = rendered.objects.iter().collect();
    objects.sort_by(|a, b| {
        (a.apply_rank(), a.namespace(), a.name()).cmp(&(b.apply_rank(), b.namespace(), b.name()))
    });
    let mut steps: Vec<Step> = objects
        .iter()
        .map(|object| {
            let target = entry_for(stack_namespace, object);
            let action = match inventory.iter().find(|old| same_object(old, &target)) {
                Some(old) if old.hash == target.hash => Action::Unchanged,
                Some(_) => Action::Update,
                None => Action::Create,
            };
            Step { target, action }
        })
        .collect();
    for old in inventory {
        let known = steps.iter().any(|s| same_object(&s.target, old));
        if !known {
            let target = InventoryEntry {
                hash: None,
                ..old.clone()
            };
            steps.push(Step {
                target,
                action: Action::Delete,
            });
        }
    }
    let mut plan = Plan { steps };
    sort_deletions(&mut plan);
    plan
}

/// Deletions run in reverse apply order: Ingresses before Services, workloads before ConfigMaps.
fn sort_deletions(plan: &mut Plan) {
    let (mut deletions, applies): (Vec<Step>, Vec<Step>) = plan
        .steps
        .drain(..)
        .partition(|s| s.action == Action::Delete);
    deletions.sort_by(|a, b| {
        let key = |s: &Step| {
            (
                rank(&s.target.kind),
                s.target.namespace.clone(),
                s.target.name.clone(),
            )
        };
        key(b).cmp(&key(a))
    });
    plan.steps = applies;
    plan.steps.extend(deletions);
}

/// A dynamic API for the object `entry` names.
pub fn api_for(client: &Client, entry: &InventoryEntry) -> Api<DynamicObject> {
    let (group, version) = entry
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", &entry.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &entry.kind);
    let lower = entry.kind.to_lowercase();
    let plural = if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        // NetworkPolicy → networkpolicies.
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    };
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    match &entry.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A 422 the real server gives for a change to an immutable field (not any validation failure).
fn is_immutable_rejection(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 422 && (
        status.message.contains("field is immutable")
            || status.message.contains("may not change once set")
            || status.message.contains("updates to statefulset spec for fields other than")))
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

pub struct Applier {
    client: Client,
    /// Writes the stack's namespaced objects: `client`, or one impersonating
    /// the repository's ServiceAccount. Namespaces stay the daemon's own writes.
    writer: Client,
    options: ApplyOptions,
    /// The controller's watch caches: leftovers are found there instead of
    /// with a list request per kind.
    live: Option<LiveStores>,
}

impl Applier {
    pub fn new(client: Client, options: ApplyOptions) -> Self {
        Applier {
            writer: client.clone(),
            client,
            options,
            live: None,
        }
    }

    /// Writes namespaced objects with `writer` (e.g. an impersonating client).
    pub fn with_writer(mut self, writer: Client) -> Self {
        self.writer = writer;
        self
    }

    fn writer_for(&self, entry: &InventoryEntry) -> &Client {
        match is_cluster_scoped(&entry.kind) {
            true => &self.client,
            false => &self.writer,
        }
    }

    /// Finds labelled leftovers in `live` (which must have finished its first
    /// list) rather than asking the API server.
    pub fn with_live_stores(mut self, live: LiveStores) -> Self {
        self.live = Some(live);
        self
    }

    pub async fn apply(
        &self,
        stack: StackRef<'_>,
        rendered: &Rendered,
        inventory: &[InventoryEntry],
    ) -> ApplyReport {
        let mut report = ApplyReport {
            plan: Plan::for_stack(stack.namespace, rendered, inventory, self.options.prune),
            ..ApplyReport::default()
        };
        let mut prune_ok = true;
        // With pruning off nothing is deleted, so there is nothing to look for.
        let leftovers = match self.options.prune {
            true => self.labelled_leftovers(stack, &report.plan).await,
            false => Ok(Vec::new()),
        };
        match leftovers {
            Ok(extra) => {
                report.plan.steps.extend(extra);
                sort_deletions(&mut report.plan);
            }
            Err(error) => {
                // Without a complete picture, pruning could delete the wrong set: skip it.
                report.errors.push(error);
                prune_ok = false;
            }
        }
        if !self.options.held.is_empty() {
            // A held object stays as it is: its old inventory entry, if any, is kept.
            let held = |s: &Step| {
                self.options
                    .held
                    .contains(&(s.target.kind.clone(), s.target.name.clone()))
                    && s.action != Action::Delete
            };
            for step in report.plan.steps.iter().filter(|s| held(s)) {
                if let Some(old) = inventory.iter().find(|old| same_object(old, &step.target)) {
                    report.inventory.push(old.clone());
                }
            }
            report.plan.steps.retain(|s| !held(s));
        }
        let deletions = report.plan.count(Action::Delete);
        if rendered.objects.is_empty() && deletions > 0 && !self.options.allow_prune_all {
            report.errors.push(ApplyError::WouldPruneEverything {
                stack: format!("{}/{}", stack.namespace, stack.name),
                count: deletions,
            });
            prune_ok = false;
        }
        if self.options.dry_run {
            report.results = report
                .plan
                .steps
                .iter()
                .map(|s| (s.target.clone(), Outcome::Planned))
                .collect();
            report.inventory = inventory.to_vec();
            return report;
        }

        let objects: Vec<(InventoryEntry, &Object)> = rendered
            .objects
            .iter()
            .map(|o| (entry_for(stack.namespace, o), o))
            .collect();
        let steps = report.plan.steps.clone();
        let applied = |s: &&Step| !matches!(s.action, Action::Delete | Action::Keep);
        for step in steps.iter().filter(applied) {
            let Some((_, object)) = objects.iter().find(|(e, _)| same_object(e, &step.target))
            else {
                continue;
            };
            let outcome = if step.action == Action::Unchanged && !self.options.reapply_unchanged {
                Outcome::Unchanged
            } else {
                match self.apply_one(&step.target, object).await {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        report.errors.push(error);
                        prune_ok = false;
                        Outcome::Failed
                    }
                }
            };
            let managed = if outcome == Outcome::Failed {
                inventory
                    .iter()
                    .find(|old| same_object(old, &step.target))
                    .cloned()
            } else {
                Some(step.target.clone())
            };
            report.inventory.extend(managed);
            report.results.push((step.target.clone(), outcome));
        }

        for step in steps.iter().filter(|s| s.action == Action::Delete) {
            let outcome = if prune_ok {
                match self.prune_one(&step.target).await {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        report.errors.push(error);
                        Outcome::Failed
                    }
                }
            } else {
                Outcome::Failed
            };
            // Keep what could not be pruned in the inventory so the next run retries.
            if outcome == Outcome::Failed
                && let Some(old) = inventory.iter().find(|old| same_object(old, &step.target))
            {
                report.inventory.push(old.clone());
            }
            report.results.push((step.target.clone(), outcome));
        }
        for step in steps.iter().filter(|s| s.action == Action::Keep) {
            // Still stackd's: pruned from the inventory once pruning is on again.
            if let Some(old) = inventory.iter().find(|old| same_object(old, &step.target)) {
                report.inventory.push(old.clone());
            }
            report
                .results
                .push((step.target.clone(), Outcome::KeptPruningOff));
        }
        report.inventory.sort();
        report
    }

    async fn apply_one(
        &self,
        entry: &InventoryEntry,
        object: &Object,
    ) -> Result<Outcome, ApplyError> {
        if let Some(error) = self.cancelled(entry) {
            return Err(error);
        }
        let api = api_for(self.writer_for(entry), entry);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = object.to_json();
        match api.patch(&entry.name, &params, &Patch::Apply(&body)).await {
            Ok(_) => Ok(Outcome::Applied),
            Err(error) if is_immutable_rejection(&error) => {
                let object_name = describe(entry);
                let recreate = |source| ApplyError::Recreate {
                    object: object_name.clone(),
                    source,
                };
                let background = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                };
                if let Some(error) = self.cancelled(entry) {
                    return Err(error);
                }
                match api.delete(&entry.name, &background).await {
                    Ok(_) => {}
                    Err(error) if is_not_found(&error) => {}
                    Err(error) => return Err(recreate(error)),
                }
                self.wait_until_gone(&api, entry).await?;
                api.patch(&entry.name, &params, &Patch::Apply(&body))
                    .await
                    .map_err(recreate)?;
                Ok(Outcome::Recreated)
            }
            Err(source) => Err(ApplyError::Apply {
                object: describe(entry),
                source,
            }),
        }
    }

    /// The error for a write this replica may no longer make, if cancelled.
    fn cancelled(&self, entry: &InventoryEntry) -> Option<ApplyError> {
        self.options
            .cancel
            .is_cancelled()
            .then(|| ApplyError::Cancelled {
                object: describe(entry),
            })
    }

    async fn wait_until_gone(
        &self,
        api: &Api<DynamicObject>,
        entry: &InventoryEntry,
    ) -> Result<(), ApplyError> {
        let started = tokio::time::Instant::now();
        loop {
            match api.get_opt(&entry.name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) if started.elapsed() < self.options.recreate_timeout => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Some(_)) => {
                    return Err(ApplyError::StillTerminating {
                        object: describe(entry),
                        waited: started.elapsed(),
                    });
                }
                Err(source) => {
                    return Err(ApplyError::Recreate {
                        object: describe(entry),
                        source,
                    });
                }
            }
        }
    }

    async fn prune_one(&self, entry: &InventoryEntry) -> Result<Outcome, ApplyError> {
        if NEVER_PRUNED_KINDS.contains(&entry.kind.as_str()) {
            return Ok(Outcome::KeptVolumeClaim);
        }
        let api = api_for(&self.client, entry);
        let failed = |source| ApplyError::Prune {
            object: describe(entry),
            source,
        };
        let Some(live) = api.get_opt(&entry.name).await.map_err(failed)? else {
            return Ok(Outcome::AlreadyGone);
        };
        if live.annotations().get(PRUNE_ANNOTATION).map(String::as_str) == Some(PRUNE_DISABLED) {
            return Ok(Outcome::KeptPruneDisabled);
        }
        if let Some(error) = self.cancelled(entry) {
            return Err(error);
        }
        let background = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        let writer = api_for(self.writer_for(entry), entry);
        match writer.delete(&entry.name, &background).await {
            Ok(_) => Ok(Outcome::Deleted),
            Err(error) if is_not_found(&error) => Ok(Outcome::AlreadyGone),
            Err(error) => Err(failed(error)),
        }
    }

    /// Objects labelled with the stack that are neither rendered nor in the
    /// inventory (e.g. the inventory was lost): also pruned. Namespaces are only
    /// ever pruned from the inventory, since deleting one takes everything in it.
    async fn labelled_leftovers(
        &self,
        stack: StackRef<'_>,
        plan: &Plan,
    ) -> Result<Vec<Step>, ApplyError> {
        let namespaces: BTreeSet<String> = plan
            .steps
            .iter()
            .filter_map(|s| s.target.namespace.clone())
            .chain([stack.namespace.to_string()])
            .collect();
        let selector = ListParams::default().labels(&format!("{STACK_LABEL}={}", stack.name));
        let mut extra = Vec::new();
        for (api_version, kind) in RENDERED_KINDS.iter().filter(|(_, k)| !is_cluster_scoped(k)) {
            for namespace in &namespaces {
                let probe = InventoryEntry {
                    api_version: api_version.to_string(),
                    kind: kind.to_string(),
                    namespace: Some(namespace.clone()),
                    ..InventoryEntry::default()
                };
                let cached = self
                    .live
                    .as_ref()
                    .and_then(|live| live.labelled_names(kind, namespace, STACK_LABEL, stack.name));
                let names = match cached {
                    Some(names) => names,
                    None => api_for(&self.client, &probe)
                        .list_metadata(&selector)
                        .await
                        .map_err(|source| ApplyError::ListForPrune {
                            kind: kind.to_string(),
                            namespace: namespace.clone(),
                            stack: stack.name.to_string(),
                            source,
                        })?
                        .items
                        .iter()
                        .map(ResourceExt::name_any)
                        .collect(),
                };
                for name in names {
                    let target = InventoryEntry {
                        name,
                        ..probe.clone()
                    };
                    let known = plan
                        .steps
                        .iter()
                        .chain(&extra)
                        .any(|s: &Step| same_object(&s.target, &target));
                    if !known {
                        extra.push(Step {
                            target,
                            action: Action::Delete,
                        });
                    }
                }
            }
        }
        Ok(extra)
    }
}
