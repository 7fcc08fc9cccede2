//! Source → Stack: what the Git source found in one repository becomes `Stack`
//! objects (server-side apply), and Stacks that vanished from Git are deleted
//! when the repository prunes. Secret values go to the in-memory store only.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{FIELD_MANAGER, InventoryEntry, SourceRef, Stack, StackSpec};
use crate::reason::Reason;
use crate::reconcile::apply::{PRUNE_ANNOTATION, PRUNE_DISABLED, entry_for};
use crate::reconcile::error::ReconcileError;
use crate::reconcile::secrets::SecretStore;
use crate::render::kube::namespace_object;
use crate::render::model::{Project, SecretValues};
use crate::render::object::Rendered;
use crate::render::object::short_hash;
use crate::render::stack_for;
use crate::render::{ENFORCE_LABEL, WARN_LABEL};
use crate::tenancy::{self, Access, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Tenancy};

/// Label on every Stack stackd created from Git: a hash of the repository name
/// (a URL is not a valid label value).
pub const REPOSITORY_LABEL: &str = tenancy::REPOSITORY_LABEL;
/// The repository name itself, for people.
pub const REPOSITORY_ANNOTATION: &str = "stackd.dev/repository";
/// Field manager of the namespaces the sync creates.
const NAMESPACE_MANAGER: &str = "stackd-namespaces";
/// How the sync admitted the Stack's namespace: `stackd` (stackd created it) or
/// `allowed` (someone else's, admitted by the allow list). The controller
/// never writes the Namespace object of an `allowed` one.
pub const NAMESPACE_ACCESS_ANNOTATION: &str = "stackd.dev/namespace-access";
pub const ACCESS_STACKD: &str = "stackd";
pub const ACCESS_ALLOWED: &str = "allowed";
/// Set (to the refusal, naming the compose file) on an existing Stack whose
/// namespace is now refused: the controller applies nothing and reports
/// `Ready=False` reason `NamespaceNotAllowed`.
pub const NAMESPACE_REFUSED_ANNOTATION: &str = "stackd.dev/namespace-refused";
/// Set by the sync on a Stack whose Namespace it has just created, to the
/// content hash of that Namespace as rendered: the controller adopts it into
/// the inventory instead of applying it again (one write per namespace, not two).
pub const NAMESPACE_WRITTEN_ANNOTATION: &str = "stackd.dev/namespace-written";

/// One stack as the Git source rendered it.
#[derive(Clone, Debug)]
pub struct DesiredStack {
    pub name: String,
    pub namespace: String,
    pub project: Project,
    pub secrets: SecretValues,
    pub source: SourceRef,
    /// Becomes `spec.prune`: whether the controller deletes objects that left
    /// the compose file (the repository's `prune`).
    pub prune: bool,
    /// Namespace rules, Pod Security level and ServiceAccount from the configuration.
    pub tenancy: Tenancy,
}

/// Which Stacks a sync may delete (object pruning inside a stack is the
/// Stack's own `spec.prune`, set from [`DesiredStack::prune`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncPolicy {
    /// Delete Stacks of this repository that vanished from Git.
    pub prune: bool,
    /// Allow deleting every Stack of the repository (nothing left in Git), which
    /// is more often a broken checkout or a wrong path than an intent.
    pub allow_prune_all: bool,
    /// With `--shards N` (N > 0): each Stack is labelled with its shard.
    pub shards: u32,
}

/// What one sync did, each entry `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub applied: Vec<String>,
    pub unchanged: Vec<String>,
    pub deleted: Vec<String>,
    /// Vanished from Git but kept (pruning off, or `stackd.dev/prune: disabled`).
    pub kept: Vec<String>,
    /// Stacks the API server refused (or failed) to store; the others went on.
    pub refused: Vec<RefusedStack>,
}

/// A Stack (or its Namespace) the API server did not store: that stack's
/// failure (`ApplyFailed`), not the whole repository's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedStack {
    pub namespace: String,
    pub name: String,
    /// What the server said, e.g. `422 Invalid: ...`, `413 RequestEntityTooLarge: ...`.
    pub message: String,
    /// A 5xx, 429, conflict or transport error: worth another try.
    pub transient: bool,
    /// `ApplyFailed`, or `NamespaceNotAllowed` for a stack refused its namespace
    /// before any write (it gets no Stack).
    pub reason: Reason,
    /// The revision the Stack stays at, when it exists.
    pub stored_revision: Option<String>,
}

impl RefusedStack {
    fn new(desired: &DesiredStack, error: &ReconcileError) -> Self {
        RefusedStack {
            namespace: desired.namespace.clone(),
            name: desired.name.clone(),
            message: error.to_string(),
            transient: error.is_transient(),
            reason: Reason::ApplyFailed,
            stored_revision: None,
        }
    }
}

pub fn repository_label_value(repository: &str) -> String {
    short_hash(repository.as_bytes())
}

/// The Stack object stackd applies for a desired stack (no secret values).
pub fn stack_object(repository: &str, desired: &DesiredStack) -> Stack {
    let mut stack = stack_for(
        &desired.name,
        &desired.namespace,
        desired.project.clone(),
        Some(desired.source.clone()),
    );
    stack.spec.prune = desired.prune;
    stack.spec.pod_security = desired.tenancy.pod_security;
    stack.spec.network_policies = desired.tenancy.network_policies;
    stack.spec.service_account_name = desired.tenancy.service_account_name.clone();
    stack.spec.health_timeout = desired.tenancy.health_timeout.clone();
    stack.spec.rollback = desired.tenancy.rollback;
    stack.metadata.labels = Some(BTreeMap::from([(
        REPOSITORY_LABEL.to_string(),
        repository_label_value(repository),
    )]));
    stack.metadata.annotations = Some(BTreeMap::from([(
        REPOSITORY_ANNOTATION.to_string(),
        repository.to_string(),
    )]));
    stack
}

/// With `shards` > 0, the Stack carries its shard, which the controllers of
/// that shard's holder select.
fn sharded(mut stack: Stack, shards: u32) -> Stack {
    if shards > 0 {
        let (namespace, name) = (
            stack.metadata.namespace.clone().unwrap_or_default(),
            stack.metadata.name.clone().unwrap_or_default(),
        );
        let shard = crate::shard::of_stack(&namespace, &name, shards);
        stack
            .metadata
            .labels
            .get_or_insert_default()
            .insert(crate::shard::SHARD_LABEL.to_string(), shard.to_string());
    }
    stack
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Stacks are listed in pages of this many: a page is reduced to [`LiveStack`]s
/// and dropped, so a repository of thousands is never held in full.
const LIST_PAGE: u32 = 100;

/// What a sync needs of a live Stack.
#[derive(Clone)]
struct LiveStack {
    revision: Option<String>,
    /// [`content_digest`] of its spec.
    content: String,
    labels: BTreeMap<String, String>,
    /// Annotated `stackd.dev/prune: disabled`.
    protected: bool,
    /// Its namespace annotations (access, refusal).
    namespace_annotations: [Option<String>; 2],
}

impl LiveStack {
    fn of(stack: &Stack) -> Self {
        LiveStack {
            revision: stack.spec.source.as_ref().map(|s| s.revision.clone()),
            content: content_digest(&stack.spec),
            labels: stack.labels().clone(),
            protected: stack
                .annotations()
                .get(PRUNE_ANNOTATION)
                .map(String::as_str)
                == Some(PRUNE_DISABLED),
            namespace_annotations: namespace_annotations(stack),
        }
    }
}

fn namespace_annotations(stack: &Stack) -> [Option<String>; 2] {
    [NAMESPACE_ACCESS_ANNOTATION, NAMESPACE_REFUSED_ANNOTATION]
        .map(|key| stack.annotations().get(key).cloned())
}

/// The labels and annotations of every namespace, by name: one request per
/// sync rather than one per stack.
async fn namespaces(
    client: &Client,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, ReconcileError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let list = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(|source| ReconcileError::ListNamespaces { source })?;
    Ok(list
        .items
        .into_iter()
        .map(|n| (n.name_any(), n.metadata.labels.unwrap_or_default()))
        .collect())
}

/// Admits (or refuses) a desired stack's namespace, and marks the Stack object
/// with the decision for the controller.
fn admit(
    repository: &str,
    desired: &DesiredStack,
    existing: &BTreeMap<String, BTreeMap<String, String>>,
    object: &mut Stack,
) -> Result<Access, String> {
    let decision = tenancy::admit(
        &desired.namespace,
        existing.get(&desired.namespace),
        &desired.tenancy.namespaces,
        Some(&repository_label_value(repository)),
    );
    let annotations = object
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    match decision {
        Ok(access) => {
            let value = match access.owns_namespace() {
                true => ACCESS_STACKD,
                false => ACCESS_ALLOWED,
            };
            annotations.insert(NAMESPACE_ACCESS_ANNOTATION.to_string(), value.to_string());
            Ok(access)
        }
        Err(refusal) => {
            let file = match desired.tenancy.file.is_empty() {
                true => desired.source.path.as_str(),
                false => desired.tenancy.file.as_str(),
            };
            let message = format!("{file}: {refusal}");
            annotations.insert(NAMESPACE_REFUSED_ANNOTATION.to_string(), message.clone());
            Err(message)
        }
    }
}

/// A digest of everything in a spec but the commit it came from (and its subject).
fn content_digest(spec: &StackSpec) -> String {
    let mut spec = spec.clone();
    if let Some(source) = spec.source.as_mut() {
        source.revision.clear();
        source.subject = None;
    }
    // Serialising a typed spec cannot fail; an empty digest would only force an apply.
    let bytes = serde_json::to_vec(&spec).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// The repository's Stacks in the cluster, by `namespace/name`.
async fn live_stacks(
    client: &Client,
    repository: &str,
) -> Result<BTreeMap<String, LiveStack>, ReconcileError> {
    let all: Api<Stack> = Api::all(client.clone());
    let selector = format!("{REPOSITORY_LABEL}={}", repository_label_value(repository));
    let mut params = ListParams::default().labels(&selector).limit(LIST_PAGE);
    let mut live = BTreeMap::new();
    loop {
        let page = all
            .list(&params)
            .await
            .map_err(|source| ReconcileError::ListStacks {
                repository: repository.to_string(),
                source,
            })?;
        for stack in &page.items {
            let id = key(&stack.namespace().unwrap_or_default(), &stack.name_any());
            live.insert(id, LiveStack::of(stack));
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(live),
        }
    }
}

/// Applies the Stacks of one repository and prunes the ones that vanished.
/// Secret values are put in `secrets` before the Stack is applied, so the
/// controller finds them when it sees the new revision.
pub async fn sync_repository(
    client: &Client,
    secret_store: &SecretStore,
    repository: &str,
    stacks: &[DesiredStack],
    policy: SyncPolicy,
) -> Result<SyncReport, ReconcileError> {
    let memory = SyncMemory::default();
    let stacks = stacks.iter().cloned().map(Ok);
    sync_repository_remembered(&memory, client, secret_store, repository, stacks, policy).await
}

/// A stack of the commit that did not load or render: its Stack is left as it
/// is, and the sync deletes no Stack (a broken stack never looks like a deleted one).
#[derive(Clone, Copy, Debug)]
pub struct Unloaded;

/// [`sync_repository`], deciding from what the last sync of this repository
/// saw and wrote while that is younger than [`RELIST_EVERY`]: an unchanged
/// commit then costs no request, and a change costs only its own writes.
/// Any failure forgets, so the next sync lists again. `stacks` are taken one
/// at a time (they may be loaded as they are taken): only those that changed
/// are held until written.
pub async fn sync_repository_remembered(
    memory: &SyncMemory,
    client: &Client,
    secret_store: &SecretStore,
    repository: &str,
    stacks: impl IntoIterator<Item = Result<DesiredStack, Unloaded>>,
    policy: SyncPolicy,
) -> Result<SyncReport, ReconcileError> {
    let mut stacks = stacks.into_iter().peekable();
    let remembered = memory.take(repository);
    let (mut live, mut existing) = match remembered {
        Some(known) => (known.live, known.namespaces),
        None => {
            let live = live_stacks(client, repository).await?;
            let existing = match stacks.peek().is_none() {
                true => BTreeMap::new(),
                false => namespaces(client).await?,
            };
            (live, existing)
        }
    };
    let (report, written) = sync_decided(
        client,
        secret_store,
        repository,
        stacks,
        policy,
        &live,
        &existing,
    )
    .await?;
    if !report.refused.is_empty() {
        return Ok(report);
    }
    // What the cluster now holds, as far as this sync knows.
    for id in &report.deleted {
        live.remove(id);
    }
    for stack in written {
        if let Some(namespace) = stack.created_namespace {
            existing.insert(namespace, created_namespace_labels(repository));
        }
        live.insert(stack.id, stack.live);
    }
    memory.put(
        repository,
        Remembered {
            live,
            namespaces: existing,
            at: std::time::Instant::now(),
        },
    );
    Ok(report)
}

/// How long a sync may decide from memory before listing again: Stacks or
/// namespaces changed by hand are corrected at least this often.
pub const RELIST_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// What the last sync of each repository saw and wrote.
#[derive(Clone, Default)]
pub struct SyncMemory(std::sync::Arc<std::sync::Mutex<BTreeMap<String, Remembered>>>);

pub struct Remembered {
    live: BTreeMap<String, LiveStack>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    at: std::time::Instant,
}

impl SyncMemory {
    /// The repository's memory if fresh; taken out, so a failed sync leaves none.
    fn take(&self, repository: &str) -> Option<Remembered> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(repository)
            .filter(|known| known.at.elapsed() < RELIST_EVERY)
    }

    fn put(&self, repository: &str, known: Remembered) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(repository.to_string(), known);
    }

    /// Forget everything: the next sync of every repository lists again.
    pub fn forget(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The labels a Namespace the sync created carries, as `namespaces` would list them.
fn created_namespace_labels(repository: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (
            REPOSITORY_LABEL.to_string(),
            repository_label_value(repository),
        ),
    ])
}

/// The sync proper, from the live Stacks and namespaces already known: what
/// it did, and the Stacks it wrote.
async fn sync_decided(
    client: &Client,
    secret_store: &SecretStore,
    repository: &str,
    stacks: impl Iterator<Item = Result<DesiredStack, Unloaded>>,
    policy: SyncPolicy,
    live: &BTreeMap<String, LiveStack>,
    existing: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<(SyncReport, Vec<Written>), ReconcileError> {
    let mut report = SyncReport::default();
    // Decide every stack first (no request), then write the ones that changed.
    let mut order = Vec::new();
    let mut any_unloaded = false;
    let mut writes = BTreeMap::<String, Vec<StackWrite>>::new();
    for desired in stacks {
        let Ok(desired) = desired else {
            any_unloaded = true;
            continue;
        };
        let id = key(&desired.namespace, &desired.name);
        order.push(id.clone());
        let mut object = sharded(stack_object(repository, &desired), policy.shards);
        // Decided before any write: a refused stack that has no Stack yet gets
        // none (it would be a write into the refused namespace); one that has
        // is marked refused, so the controller applies nothing.
        let access = admit(repository, &desired, existing, &mut object);
        if let Err(message) = &access
            && !live.contains_key(&id)
        {
            tracing::warn!(stack = %id, error = %message, "namespace refused; no Stack is written");
            report.refused.push(RefusedStack {
                namespace: desired.namespace.clone(),
                name: desired.name.clone(),
                message: message.clone(),
                transient: false,
                reason: Reason::NamespaceNotAllowed,
                stored_revision: None,
            });
            continue;
        }
        let kept_revision = live
            .get(&id)
            .and_then(|current| unchanged_revision(current, &object, secret_store, &desired));
        if let Some(revision) = kept_revision {
            secret_store.put(
                &desired.namespace,
                &desired.name,
                &revision,
                desired.secrets.clone(),
            );
            report.unchanged.push(id);
            continue;
        }
        secret_store.put(
            &desired.namespace,
            &desired.name,
            &desired.source.revision,
            desired.secrets.clone(),
        );
        // The object is built again when written: a first sync of thousands
        // would otherwise hold a second copy of every stack until the last write.
        drop(object);
        writes
            .entry(desired.namespace.clone())
            .or_default()
            .push(StackWrite {
                create_namespace: access == Ok(Access::Create),
                desired,
            });
    }

    // Refuse before writing anything: a sync that would leave no Stack is suspicious.
    let prune = policy.prune && !any_unloaded;
    let wanted: BTreeSet<&String> = order.iter().collect();
    let vanished: Vec<(&String, &LiveStack)> =
        live.iter().filter(|(id, _)| !wanted.contains(id)).collect();
    if prune && order.is_empty() && !vanished.is_empty() && !policy.allow_prune_all {
        return Err(ReconcileError::WouldDeleteAllStacks {
            repository: repository.to_string(),
            count: vanished.len(),
        });
    }

    // Namespaces in parallel, each one's Namespace before its Stacks: a real
    // API server answers in milliseconds, so one write at a time would make
    // the sync of a thousand stacks take tens of seconds.
    let build = |desired: &DesiredStack| {
        let mut object = sharded(stack_object(repository, desired), policy.shards);
        // Decided above already; this only marks the object the same way.
        let _ = admit(repository, desired, existing, &mut object);
        object
    };
    let groups: Vec<_> = writes
        .into_values()
        .map(|group| write_namespace_group(client, repository, group, &build))
        .collect();
    let outcomes: Vec<Vec<Result<Written, RefusedStack>>> = futures::stream::iter(groups)
        .buffer_unordered(SYNC_CONCURRENCY)
        .collect()
        .await;
    let mut written = Vec::new();
    for outcome in outcomes.into_iter().flatten() {
        match outcome {
            Ok(stack) => {
                report.applied.push(stack.id.clone());
                written.push(stack);
            }
            Err(refused) => report.refused.push(RefusedStack {
                stored_revision: live
                    .get(&key(&refused.namespace, &refused.name))
                    .and_then(|l| l.revision.clone()),
                ..refused
            }),
        }
    }
    // Reported in Git's order, whichever write finished first.
    let position: BTreeMap<&String, usize> =
        order.iter().enumerate().map(|(i, id)| (id, i)).collect();
    report.applied.sort_by_key(|id| position.get(id).copied());
    report
        .refused
        .sort_by_key(|r| position.get(&key(&r.namespace, &r.name)).copied());

    for (id, stack) in vanished {
        if !prune || stack.protected {
            report.kept.push(id.clone());
            continue;
        }
        let (namespace, name) = id.split_once('/').unwrap_or_default();
        let api: Api<Stack> = Api::namespaced(client.clone(), namespace);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(ReconcileError::DeleteStack {
                    stack: id.clone(),
                    source,
                });
            }
        }
        secret_store.remove(namespace, name);
        report.deleted.push(id.clone());
    }
    Ok((report, written))
}

/// How many namespaces the sync writes at once. The client's rate limit
/// (`--kube-qps`, `--kube-burst`) bounds the requests themselves.
pub const SYNC_CONCURRENCY: usize = 16;

/// A Stack the sync writes, and whether its Namespace must be created first.
struct StackWrite {
    desired: DesiredStack,
    create_namespace: bool,
}

/// A Stack the sync stored: what the next sync needs to know of it.
struct Written {
    id: String,
    live: LiveStack,
    /// Its Namespace, when the sync created it.
    created_namespace: Option<String>,
}

/// Writes one namespace's Stacks, after creating the Namespace when stackd
/// owns it and it does not exist yet. A refused Namespace or Stack fails that
/// stack alone; the rest go on. `build` makes each Stack object as it is written.
async fn write_namespace_group(
    client: &Client,
    repository: &str,
    group: Vec<StackWrite>,
    build: &impl Fn(&DesiredStack) -> Stack,
) -> Vec<Result<Written, RefusedStack>> {
    let mut namespace_written = None;
    if let Some((index, first)) = group.iter().enumerate().find(|(_, w)| w.create_namespace) {
        match apply_namespace(client, repository, &build(&first.desired)).await {
            Ok(hash) => namespace_written = hash.map(|hash| (index, hash)),
            Err(error) => {
                let refused = RefusedStack::new(&first.desired, &error);
                return group
                    .iter()
                    .map(|w| {
                        Err(RefusedStack {
                            name: w.desired.name.clone(),
                            ..refused.clone()
                        })
                    })
                    .collect();
            }
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut outcomes = Vec::with_capacity(group.len());
    for (index, write) in group.into_iter().enumerate() {
        let desired = write.desired;
        let id = key(&desired.namespace, &desired.name);
        let mut object = build(&desired);
        if let Some((_, hash)) = namespace_written.as_ref().filter(|(i, _)| *i == index) {
            mark_namespace_written(&mut object, hash.clone());
        }
        let api: Api<Stack> = Api::namespaced(client.clone(), &desired.namespace);
        let applied = api
            .patch(&desired.name, &params, &Patch::Apply(&object))
            .await
            .map_err(|source| ReconcileError::ApplyStack {
                stack: id.clone(),
                source,
            });
        outcomes.push(match applied {
            Ok(_) => Ok(Written {
                live: LiveStack::of(&object),
                created_namespace: write.create_namespace.then(|| desired.namespace.clone()),
                id,
            }),
            Err(error) => {
                tracing::warn!(stack = %id, %error, "the API server did not store the Stack; the other stacks go on");
                Err(RefusedStack::new(&desired, &error))
            }
        });
    }
    outcomes
}

/// The live Stack's revision when it already holds everything Git now says
/// apart from the commit. A Stack's revision is the last commit that changed
/// what it renders, so a commit that touches one stack of a thousand re-applies
/// one, not a thousand.
fn unchanged_revision(
    current: &LiveStack,
    wanted: &Stack,
    secret_store: &SecretStore,
    desired: &DesiredStack,
) -> Option<String> {
    let revision = current.revision.clone()?;
    let labels_match = labels_include(Some(&current.labels), wanted.metadata.labels.as_ref());
    let access_match = current.namespace_annotations == namespace_annotations(wanted);
    if current.content != content_digest(&wanted.spec) || !labels_match || !access_match {
        return None;
    }
    // The spec holds only a short hash of each secret value: compare the values
    // too, since a changed value needs the new commit for the controller to render.
    match secret_store.current(&desired.namespace, &desired.name) {
        Some((held, values)) if held != revision || values != desired.secrets => None,
        _ => Some(revision),
    }
}

fn labels_include(
    live: Option<&BTreeMap<String, String>>,
    wanted: Option<&BTreeMap<String, String>>,
) -> bool {
    wanted
        .into_iter()
        .flatten()
        .all(|(k, v)| live.and_then(|l| l.get(k)) == Some(v))
}

/// The inventory with the Namespace the sync already wrote (see
/// [`NAMESPACE_WRITTEN_ANNOTATION`]) when it is the one `rendered` holds: the
/// plan then finds it unchanged instead of applying it a second time.
pub fn adopt_written_namespace(
    stack: &Stack,
    namespace: &str,
    rendered: &Rendered,
    inventory: &mut Vec<InventoryEntry>,
) {
    let Some(written) = stack.annotations().get(NAMESPACE_WRITTEN_ANNOTATION) else {
        return;
    };
    if inventory.iter().any(|e| e.kind == "Namespace") {
        return;
    }
    let adopted = rendered
        .objects
        .iter()
        .filter(|o| o.kind() == "Namespace")
        .map(|o| entry_for(namespace, o))
        .find(|entry| entry.hash.as_ref() == Some(written));
    inventory.extend(adopted);
}

/// Records on the Stack that the sync wrote its Namespace exactly as the
/// controller renders it, so the controller does not write it a second time.
fn mark_namespace_written(object: &mut Stack, hash: String) {
    object
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(NAMESPACE_WRITTEN_ANNOTATION.to_string(), hash);
}

/// Creates a stack's namespace before its Stack: the Namespace the controller
/// renders for it (labelled as stackd's, with the Pod Security level admission
/// enforces), plus the repository label. Returns the rendered object's content
/// hash, or `None` when the Stack cannot be rendered (its own render reports
/// why; a minimal Namespace still lets the Stack be stored).
async fn apply_namespace(
    client: &Client,
    repository: &str,
    stack: &Stack,
) -> Result<Option<String>, ReconcileError> {
    let name = stack.metadata.namespace.clone().unwrap_or_default();
    let rendered = namespace_object(stack).ok();
    let mut body = match &rendered {
        Some(object) => object.to_json(),
        None => serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {
                MANAGED_BY_LABEL: MANAGED_BY_VALUE,
                ENFORCE_LABEL: stack.spec.pod_security.unwrap_or_default().as_str(),
                WARN_LABEL: stack.spec.pod_security.unwrap_or_default().as_str(),
            }},
        }),
    };
    body["metadata"]["labels"][REPOSITORY_LABEL] =
        serde_json::Value::String(repository_label_value(repository));
    let api: Api<Namespace> = Api::all(client.clone());
    // A manager of its own: the controller's apply of the rendered Namespace (as
    // `stackd`) does not carry the repository label, and would drop it otherwise.
    api.patch(
        &name,
        &PatchParams::apply(NAMESPACE_MANAGER),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| ReconcileError::ApplyNamespace {
        namespace: name.clone(),
        source,
    })?;
    Ok(rendered.map(|object| object.content_hash()))
}
