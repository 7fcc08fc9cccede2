//! The Stack controller: a `kube::runtime::Controller` on `Stack` that owns
//! every kind the renderer emits. Reconcile = render (pure) → plan against the
//! inventory and the reflector stores (drift) → apply engine → status.
//! An unchanged stack costs no request at all.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::crd::{
    FIELD_MANAGER, InventoryEntry, RolloutStatus, SERVICE_LABEL, STACK_LABEL, Stack, StackSpec,
    StackStatus,
};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::reconcile::apply::{
    Action as StepAction, Applier, ApplyError, ApplyOptions, ApplyReport, Outcome, Plan, StackRef,
};
use crate::reconcile::caches::CacheSync;
use crate::reconcile::compact::Compact;
use crate::reconcile::drift;
use crate::reconcile::error::ReconcileError;
use crate::reconcile::failures::{GitFailure, GitFailures};
use crate::reconcile::health;
use crate::reconcile::impersonate;
use crate::reconcile::live::LiveStores;
use crate::reconcile::object_cache::ObjectCache;
use crate::reconcile::recorder::Recorder;
use crate::reconcile::rollout;
use crate::reconcile::secrets::{self, SecretStore};
use crate::reconcile::source;
use crate::reconcile::source::{
    ACCESS_ALLOWED, NAMESPACE_ACCESS_ANNOTATION, NAMESPACE_REFUSED_ANNOTATION,
    REPOSITORY_ANNOTATION,
};
use crate::reconcile::status::{self, Failure, Observed};
use crate::reconcile::waves;
use crate::render::model::{Project, SecretValues};
use crate::render::object::{Object, Rendered};
use crate::render::{RenderOptions, render};
use crate::state::SharedState;
use crate::tenancy::{self, Access, NamespaceRefusal};

/// `stackd.dev/suspend: "true"` stops reconciling, like `spec.suspend`.
pub const SUSPEND_ANNOTATION: &str = "stackd.dev/suspend";
/// A new value forces a reconcile that applies everything, unchanged or not.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "stackd.dev/reconcile-requested-at";

#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Plan and report only: nothing is written to the cluster.
    pub dry_run: bool,
    /// Allow a render with no objects left to prune everything the stack had.
    pub allow_prune_all: bool,
    /// Renderer settings from the configuration file. A reload sends new ones,
    /// and every stack is reconciled again with them.
    pub render: watch::Receiver<RenderOptions>,
    /// Bursts of events within this window give one reconcile. The watch
    /// events of one apply arrive within milliseconds; a longer window only
    /// delays every change (it was 500 ms: half of the 1 s a change may take).
    pub debounce: Duration,
    pub concurrency: u16,
    /// First retry delay after a transient error; doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Periodic re-check of a healthy stack (no writes unless something drifted).
    pub resync: Duration,
    /// Retry delay while a Git stack's secret values are not in memory yet.
    pub secrets_wait: Duration,
    /// This replica, for Events.
    pub identity: String,
    /// With `--shards`: only this shard's Stacks and objects are watched and reconciled.
    pub shard: Option<u32>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            dry_run: false,
            allow_prune_all: false,
            render: watch::channel(RenderOptions::default()).1,
            debounce: Duration::from_millis(200),
            concurrency: 8,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            resync: Duration::from_secs(600),
            secrets_wait: Duration::from_secs(5),
            identity: "stackd".to_string(),
            shard: None,
        }
    }
}

/// What the controller shares with the rest of the daemon.
#[derive(Clone)]
pub struct ControllerHandles {
    pub secrets: SecretStore,
    pub state: SharedState,
    pub metrics: Metrics,
    /// Where the watch caches are, for `/readyz`.
    pub caches: CacheSync,
    /// What the Git side found wrong with each stack's newest commit.
    pub failures: GitFailures,
    /// Re-renders a past revision when memory no longer has it (after a restart).
    pub revisions: Option<Arc<dyn RevisionLoader>>,
}

/// Loads a stack as the Git source saw it at a past commit: its spec and its
/// secret values, read from the mirror. Blocking I/O: called off the runtime.
pub trait RevisionLoader: Send + Sync {
    /// `stack`'s spec at `revision` and its secret values, or why not (no secret value in it).
    fn load(&self, stack: &Stack, revision: &str) -> Result<(StackSpec, SecretValues), String>;
}

/// Everything one reconcile needs.
pub struct Context {
    client: Client,
    options: ControllerOptions,
    handles: ControllerHandles,
    live: LiveStores,
    recorder: Recorder,
    /// Cancelled when this replica must stop writing (leadership lost, shutdown).
    cancel: CancellationToken,
    /// Consecutive transient failures per stack, for the backoff.
    failures: Mutex<HashMap<(String, String), u32>>,
    /// Clients impersonating a ServiceAccount, by user name.
    impersonating: Mutex<HashMap<String, Client>>,
    /// Each stack's last fully Ready revision, for a rollback.
    healthy: Mutex<HashMap<(String, String), Arc<HealthySpec>>>,
}

impl Context {
    fn healthy_spec(&self, stack: &Stack) -> Option<Arc<HealthySpec>> {
        let healthy = self.healthy.lock().unwrap_or_else(|e| e.into_inner());
        healthy.get(&key_of(stack)).cloned()
    }

    /// The healthy revision `to` of `stack`: from memory, else re-rendered from
    /// Git through the loader (and remembered). `Err` says why neither worked.
    async fn healthy_revision(&self, stack: &Stack, to: &str) -> Result<Arc<HealthySpec>, String> {
        if let Some(healthy) = self.healthy_spec(stack).filter(|h| h.revision == to) {
            return Ok(healthy);
        }
        let Some(loader) = self.handles.revisions.clone() else {
            return Err(format!(
                "revision {} is no longer in memory (stackd restarted)",
                short_revision(to)
            ));
        };
        let (current, revision) = (stack.clone(), to.to_string());
        let loaded = tokio::task::spawn_blocking(move || loader.load(&current, &revision))
            .await
            .map_err(|e| e.to_string())
            .and_then(|loaded| loaded)
            .map_err(|why| {
                format!(
                    "revision {} could not be loaded again: {why}",
                    short_revision(to)
                )
            })?;
        let (spec, secrets) = loaded;
        let healthy = Arc::new(HealthySpec {
            revision: to.to_string(),
            stack: Stack {
                metadata: stack.metadata.clone(),
                spec,
                status: None,
            },
            secrets,
        });
        let mut known = self.healthy.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(key_of(stack), healthy.clone());
        Ok(healthy)
    }

    /// The secret values of `stack` at `revision`, loaded from the mirror
    /// when they are not in memory, and kept. Only when that commit gives
    /// exactly the Stack's spec: values of another spec could be wrong.
    async fn secrets_from_mirror(&self, stack: &Stack, revision: &str) -> Option<SecretValues> {
        let loader = self.handles.revisions.clone()?;
        let (current, at) = (stack.clone(), revision.to_string());
        let loaded = tokio::task::spawn_blocking(move || loader.load(&current, &at)).await;
        let (spec, values) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(why)) => {
                tracing::debug!(%why, "secret values not loaded from the mirror");
                return None;
            }
            Err(_) => return None,
        };
        // The subject only names the commit; a Stack written before it was
        // carried has none.
        let same_subject = |mut spec: StackSpec| {
            if let (Some(loaded), Some(live)) = (spec.source.as_mut(), stack.spec.source.as_ref()) {
                loaded.subject.clone_from(&live.subject);
            }
            spec
        };
        if same_subject(spec) != stack.spec {
            return None;
        }
        let (namespace, name) = key_of(stack);
        self.handles
            .secrets
            .put(&namespace, &name, revision, values.clone());
        Some(values)
    }

    fn remember_healthy(&self, stack: &Stack, revision: &str, secrets: &SecretValues) {
        let mut healthy = self.healthy.lock().unwrap_or_else(|e| e.into_inner());
        let known = healthy.get(&key_of(stack));
        if known.is_some_and(|h| h.revision == revision && h.stack.spec == stack.spec) {
            return;
        }
        let spec = HealthySpec {
            revision: revision.to_string(),
            stack: Stack {
                metadata: stack.metadata.clone(),
                spec: stack.spec.clone(),
                status: None,
            },
            secrets: secrets.clone(),
        };
        healthy.insert(key_of(stack), Arc::new(spec));
    }
}

/// A watch cache for one owned kind, and the stream of touched objects that
/// triggers the owning Stack once the cache has seen the change. Watch errors
/// are recorded in `caches`, for `/readyz`, and go no further: the watch backs
/// off on its own, while the Controller's trigger backoff would pause every
/// kind's triggers, longer at each error (after a 410 Gone on all watches,
/// re-lists were held back for minutes).
fn owned<K>(
    client: &Client,
    caches: &CacheSync,
    shard: Option<u32>,
) -> (
    ObjectCache<K>,
    impl Stream<Item = Result<Compact<K>, watcher::Error>> + Send + use<K>,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let cache = ObjectCache::<K>::default();
    // Only objects stackd labelled (of this replica's shard): the caches stay
    // as small as what this replica manages.
    let selector = match shard {
        Some(shard) => format!("{STACK_LABEL},{}", crate::shard::selector(shard)),
        None => STACK_LABEL.to_string(),
    };
    let config = watcher::Config::default().labels(&selector);
    let caches = caches.clone();
    let writer = cache.clone();
    let stream = watcher(Api::<Compact<K>>::all(client.clone()), config)
        .default_backoff()
        .inspect(move |event| match event {
            Ok(event) => writer.apply(event),
            Err(error) => watch_failed(&caches, &K::kind(&()), error),
        })
        .touched_objects()
        .filter(|event| futures::future::ready(event.is_ok()));
    (cache, stream)
}

/// Runs the Stack controller until `cancel` fires.
pub async fn run(
    client: Client,
    options: ControllerOptions,
    handles: ControllerHandles,
    cancel: CancellationToken,
) {
    let caches = handles.caches.clone();
    let (config_maps, cm_stream) = owned::<ConfigMap>(&client, &caches, options.shard);
    let (secrets, secret_stream) = owned::<Secret>(&client, &caches, options.shard);
    let (services, service_stream) = owned::<Service>(&client, &caches, options.shard);
    let (deployments, deployment_stream) = owned::<Deployment>(&client, &caches, options.shard);
    let (stateful_sets, sts_stream) = owned::<StatefulSet>(&client, &caches, options.shard);
    let (daemon_sets, ds_stream) = owned::<DaemonSet>(&client, &caches, options.shard);
    let (jobs, job_stream) = owned::<Job>(&client, &caches, options.shard);
    let (ingresses, ingress_stream) = owned::<Ingress>(&client, &caches, options.shard);
    let (network_policies, netpol_stream) = owned::<NetworkPolicy>(&client, &caches, options.shard);
    let live = LiveStores {
        config_maps,
        secrets,
        services,
        deployments,
        stateful_sets,
        daemon_sets,
        jobs,
        ingresses,
        network_policies,
    };

    // Events of the stacks' objects, for the page; no store of its own.
    let refusals = options
        .shard
        .map(|_| (handles.failures.clone(), options.identity.clone()));
    let object_events = tokio::spawn(crate::reconcile::object_events::watch(
        client.clone(),
        live.clone(),
        handles.state.clone(),
        refusals,
    ));

    // Stacks are kept as text too: a typed Stack with its compose model is
    // twice the size, and each reconcile reads one.
    let (stack_store, stack_writer) = reflector::store::<Compact<Stack>>();
    let git_failed = git_failures_changed(handles.failures.clone(), stack_store.clone());
    let listings = vec![
        listed(&stack_store),
        cache_listed(&live.config_maps),
        cache_listed(&live.secrets),
        cache_listed(&live.services),
        cache_listed(&live.deployments),
        cache_listed(&live.stateful_sets),
        cache_listed(&live.daemon_sets),
        cache_listed(&live.jobs),
        cache_listed(&live.ingresses),
        cache_listed(&live.network_policies),
    ];
    caches.started(listings.iter().map(|(kind, _)| kind.clone()));
    let (all_listed, listed_once) = tokio::sync::oneshot::channel();
    let listing = tokio::spawn(report_listings(listings, caches.clone(), all_listed));

    let forget = handles.clone();
    let handed_back = (options.shard, handles.clone(), stack_store.clone());
    let stack_errors = caches.clone();
    let stack_watch = match options.shard {
        Some(shard) => watcher::Config::default().labels(&crate::shard::selector(shard)),
        None => watcher::Config::default(),
    };
    let stacks = watcher(Api::<Compact<Stack>>::all(client.clone()), stack_watch)
        .default_backoff()
        .inspect(move |event| {
            if let Err(error) = event {
                watch_failed(&stack_errors, "Stack", error);
            }
        })
        .reflect(stack_writer)
        .inspect(move |event| {
            // A deleted Stack: its objects go by garbage collection; its series and view go here.
            if let Ok(watcher::Event::Delete(stack)) = event {
                forget_stack(&forget, stack);
            }
        })
        .touched_objects()
        .filter(|event| futures::future::ready(event.is_ok()));

    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: Some(options.identity.clone()),
    };
    let config = controller::Config::default()
        .debounce(options.debounce)
        .concurrency(options.concurrency);
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        options,
        handles,
        live,
        cancel: cancel.clone(),
        failures: Mutex::default(),
        impersonating: Mutex::default(),
        healthy: Mutex::default(),
    });
    // Each change of the renderer settings reconciles every stack.
    let settings_changed =
        futures::stream::unfold(context.options.render.clone(), |mut settings| async {
            settings.changed().await.ok()?;
            Some(((), settings))
        });
    Controller::for_stream(stacks, stack_store)
        .owns_stream(cm_stream)
        .owns_stream(secret_stream)
        .owns_stream(service_stream)
        .owns_stream(deployment_stream)
        .owns_stream(sts_stream)
        .owns_stream(ds_stream)
        .owns_stream(job_stream)
        .owns_stream(ingress_stream)
        .owns_stream(netpol_stream)
        .with_config(config)
        .reconcile_all_on(settings_changed)
        // Stacks reconciled before the caches were listed waited for this,
        // rather than each retrying on a timer (at 10,000 stacks, a storm).
        .reconcile_all_on(
            futures::stream::once(listed_once).filter_map(|r| futures::future::ready(r.ok())),
        )
        .reconcile_on(git_failed)
        .graceful_shutdown_on(cancel.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not finish");
            }
        })
        .await;
    listing.abort();
    object_events.abort();
    caches.stopped();
    // A shard lost or handed back: its stacks are now its holder's to show and count.
    if let (Some(_), handles, stacks) = handed_back {
        for stack in stacks.state() {
            forget_stack(&handles, &stack);
        }
    }
}

/// The Stacks to reconcile when the Git side found (or no longer finds) a
/// failure: the stack itself, or every Stack of a repository.
fn git_failures_changed(
    failures: GitFailures,
    stacks: Store<Compact<Stack>>,
) -> impl Stream<Item = reflector::ObjectRef<Compact<Stack>>> + Send + 'static {
    futures::stream::unfold(failures, move |failures| {
        let stacks = stacks.clone();
        async move {
            failures.changed().await;
            let changed = failures.take_changed();
            let mut refs: Vec<reflector::ObjectRef<Compact<Stack>>> = changed
                .stacks
                .iter()
                .map(|(namespace, name)| reflector::ObjectRef::new(name).within(namespace))
                .collect();
            if !changed.repositories.is_empty() {
                refs.extend(
                    stacks
                        .state()
                        .iter()
                        .filter(|stack| {
                            stack
                                .annotation(REPOSITORY_ANNOTATION)
                                .is_some_and(|r| changed.repositories.contains(&r))
                        })
                        .map(|stack| reflector::ObjectRef::from_obj(stack.as_ref())),
                );
            }
            Some((futures::stream::iter(refs), failures))
        }
    })
    .flatten()
}

/// Records a failed list or watch for `/readyz`; the watch retries on its own
/// (`default_backoff`); the error is not passed on to the Controller.
fn watch_failed(caches: &CacheSync, kind: &str, error: &watcher::Error) {
    let error = watch_error(error);
    tracing::warn!(%kind, %error, "watch failed; retrying");
    caches.failed(kind, error);
}

/// A watch error in one line for `/readyz`: an API error's code, reason and
/// message rather than the whole `Status` kube's message embeds.
fn watch_error(error: &watcher::Error) -> String {
    let (stage, source) = match error {
        watcher::Error::InitialListFailed(source) => ("list", source),
        watcher::Error::WatchStartFailed(source) | watcher::Error::WatchFailed(source) => {
            ("watch", source)
        }
        other => return other.to_string(),
    };
    match source {
        kube::Error::Api(status) => format!(
            "{stage}: {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!("{stage}: {other}"),
    }
}

/// Whether one store has had its initial list.
type Listed = Box<dyn Fn() -> bool + Send>;

/// A store's kind, and whether it has had its initial list.
fn listed<K>(store: &Store<K>) -> (String, Listed)
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = store.clone();
    let ready = move || matches!(store.wait_until_ready().now_or_never(), Some(Ok(())));
    (K::kind(&()).into_owned(), Box::new(ready))
}

fn cache_listed<K>(cache: &ObjectCache<K>) -> (String, Listed)
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let cache = cache.clone();
    (K::kind(&()).into_owned(), Box::new(move || cache.listed()))
}

/// How often the stores still listing are looked at again.
const LISTING_CHECK: Duration = Duration::from_millis(200);

/// Tells `caches` as each store finishes its initial list, and `all_listed`
/// once every one has. Looks rather than awaits: a `wait_until_ready()` awaited
/// from before a failed first list was not woken when a later list succeeded.
async fn report_listings(
    mut listings: Vec<(String, Listed)>,
    caches: CacheSync,
    all_listed: tokio::sync::oneshot::Sender<()>,
) {
    loop {
        listings.retain(|(kind, ready)| {
            let done = ready();
            if done {
                caches.listed(kind);
            }
            !done
        });
        if listings.is_empty() {
            let _ = all_listed.send(());
            return;
        }
        tokio::time::sleep(LISTING_CHECK).await;
    }
}

fn forget_stack(handles: &ControllerHandles, stack: &Compact<Stack>) {
    let namespace = stack.meta().namespace.as_deref().unwrap_or_default();
    let name = stack.meta().name.as_deref().unwrap_or_default();
    handles.state.remove_stack(namespace, name);
    handles.metrics.remove_stack(namespace, name);
}

fn key_of(stack: &impl Resource) -> (String, String) {
    (
        stack.meta().namespace.clone().unwrap_or_default(),
        stack.meta().name.clone().unwrap_or_default(),
    )
}

async fn reconcile(
    stored: Arc<Compact<Stack>>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let (namespace, name) = key_of(stored.as_ref());
    let result = match typed_stack(&stored) {
        Ok(stack) => reconcile_stack(&stack, &context).await,
        Err(error) => Err(ReconcileError::UnreadableStack {
            stack: format!("{namespace}/{name}"),
            message: error.to_string(),
        }),
    };
    let metrics = &context.handles.metrics;
    let label = match &result {
        Ok(done) => done.result,
        Err(error) => error.reason().map_or(error.label(), Reason::label),
    };
    metrics.reconcile_result(&namespace, &name, label);
    metrics
        .reconcile_duration_seconds
        .with_label_values(&[&name, &namespace])
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        context
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace, name));
    }
    result.map(|done| done.action)
}

/// The stored Stack, typed for one reconcile. A Stack that does not read (a
/// hand-written one the CRD schema let through) fails alone, not the watch.
fn typed_stack(stored: &Compact<Stack>) -> Result<Stack, serde_json::Error> {
    serde_json::from_value(stored.to_json().unwrap_or_default())
}

/// A reconcile that finished without a retryable error, and how it went
/// (`success`, or why nothing was applied), for `stackd_reconcile_total`.
struct Done {
    action: Action,
    result: &'static str,
}

impl Done {
    fn new(action: Action, result: &'static str) -> Self {
        Done { action, result }
    }
}

/// Transient errors back off exponentially per stack; invalid input waits for a change.
fn error_policy(
    stack: Arc<Compact<Stack>>,
    error: &ReconcileError,
    context: Arc<Context>,
) -> Action {
    tracing::warn!(%error, "reconcile failed");
    if !error.is_transient() {
        return Action::await_change();
    }
    let mut failures = context.failures.lock().unwrap_or_else(|e| e.into_inner());
    let count = failures.entry(key_of(stack.as_ref())).or_insert(0);
    *count = count.saturating_add(1);
    Action::requeue(backoff(
        context.options.retry_base,
        context.options.retry_max,
        *count,
    ))
}

/// `base · 2^(failures-1)`, capped.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1));
    base.saturating_mul(factor).min(max)
}

fn is_suspended(stack: &Stack) -> bool {
    stack.spec.suspend
        || stack
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SUSPEND_ANNOTATION))
            .is_some_and(|v| v == "true")
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The failure the Git side found for this Stack's newest commit, or its
/// repository: shown on the Stack while its spec stays at the last good revision.
fn git_failure(stack: &Stack, context: &Context) -> Option<GitFailure> {
    let (namespace, name) = key_of(stack);
    let repository = annotation(stack, REPOSITORY_ANNOTATION);
    let failures = &context.handles.failures;
    let found = failures.for_stack(&namespace, &name, repository.as_deref())?;
    // A write another replica saw refused is over once the Stack was stored since.
    let stored = stack.spec.source.as_ref().map(|s| s.revision.as_str());
    match (&found.while_at, &found.revision) {
        (Some(at), Some(revision)) if stored != Some(at.as_str()) => {
            failures.clear_stack_if(&namespace, &name, found.failure.reason, revision);
            failures.for_stack(&namespace, &name, repository.as_deref())
        }
        _ => Some(found),
    }
}

/// What the status says when this reconcile applies nothing: everything as the
/// previous status had it, with `failure` (or suspended).
fn unchanged_observed(
    previous: &StackStatus,
    failure: Option<Failure>,
    attempted_revision: Option<String>,
    suspended: bool,
) -> Observed {
    Observed {
        services: previous_services(previous),
        warnings: previous.warnings.clone(),
        inventory: previous.inventory.clone(),
        kept: previous.kept.clone(),
        failure,
        applied_revision: None,
        attempted_revision,
        handled_request: None,
        suspended,
        waiting: Vec::new(),
        rollout: None,
        last_healthy_revision: None,
        held_revision: None,
        counts: status::Counts::default(),
    }
    .keeping_rollout(previous)
}

/// The `result` label of a reconcile that ended with `status`.
fn result_of(status: &StackStatus) -> &'static str {
    health::ready_reason(&status.conditions).map_or("success", Reason::label)
}

/// A stage either hands its value on or ends the reconcile.
enum Stage<T> {
    Next(T),
    Done(Done),
}

/// The last revision of a stack that was fully Ready, kept in memory so a
/// rollback can render it again (with its secret values, which never reach
/// the Stack).
pub struct HealthySpec {
    revision: String,
    stack: Stack,
    secrets: SecretValues,
}

/// What the desired stage hands on: the render and what it was made from.
struct Desired {
    rendered: Rendered,
    previous: StackStatus,
    /// The inventory to plan against (no Namespace in someone else's namespace).
    inventory: Vec<InventoryEntry>,
    access: Option<Access>,
    spec_revision: Option<String>,
    attempted: Option<String>,
    git_failure: Option<GitFailure>,
    requested: Option<String>,
    forced: bool,
    /// The rollout key of the spec: its commit, or its generation.
    revision: String,
    settings: rollout::Settings,
    secrets: SecretValues,
    /// The spec's revision is held after a rollback: `rendered` is this
    /// healthy revision's render instead.
    held: Option<Arc<HealthySpec>>,
}

impl Desired {
    /// The compose model `rendered` came from.
    fn project<'a>(&'a self, stack: &'a Stack) -> &'a Project {
        match &self.held {
            Some(healthy) => &healthy.stack.spec.project,
            None => &stack.spec.project,
        }
    }
}

/// What the plan stage hands on. It reads the stores and writes nothing.
struct Planned {
    plan: Plan,
    inventory: Vec<InventoryEntry>,
    drifted: Vec<InventoryEntry>,
    kept: Vec<String>,
    /// Something to write (or newly kept objects to report).
    changes: bool,
    waves: waves::Waves,
    /// Workload objects (`kind`, `name`) the waves hold back.
    held: BTreeSet<(String, String)>,
}

/// What the apply stage did.
#[derive(Default)]
struct Applied {
    report: Option<ApplyReport>,
    error: Option<ApplyError>,
    /// The fields about to change, read from the cache before the write.
    diffs: Vec<crate::state::ObjectDiff>,
}

/// What the health stage judged.
struct Judged {
    services: Vec<health::ServiceHealth>,
    /// A written workload the watch has not brought back yet.
    awaiting_watch: bool,
    rollout: Option<RolloutStatus>,
    verdict: rollout::Verdict,
}

/// The driver: each line one stage, each stage one function.
async fn reconcile_stack(stack: &Stack, context: &Context) -> Result<Done, ReconcileError> {
    // 1. Desired state: early stops, then the pure render (client only for status).
    let desired = match desired_stage(stack, context).await? {
        Stage::Next(desired) => desired,
        Stage::Done(done) => return Ok(done),
    };
    // 2. Plan and waves: no client; reads the stores.
    let planned = plan_stage(stack, &desired, &context.live);
    if context.options.dry_run {
        return Ok(dry_run_view(stack, context, &desired, &planned));
    }
    // 3 and 4. Apply and prune (client required).
    let applied = match planned.changes || desired.forced || !planned.held.is_empty() {
        true => {
            let options = StageApply {
                rendered: &desired.rendered,
                inventory: &planned.inventory,
                held: planned.held.clone(),
                reapply_unchanged: desired.forced,
            };
            apply_stage(stack, context, options).await?
        }
        false => Applied::default(),
    };
    record_outcomes(context, applied.report.as_ref(), &planned.drifted);
    // 5. Health, deadline and rollback (pure judgement; a rollback applies again).
    let mut judged = health_stage(
        stack,
        &desired,
        &planned,
        &applied,
        &context.live,
        Utc::now(),
    );
    if let rollout::Verdict::TimedOut { message } = &judged.verdict
        && desired.held.is_none()
        && applied.error.is_none()
        && desired.git_failure.is_none()
    {
        let decision = rollout::decide(
            desired.settings.rollback,
            &desired.revision,
            desired.previous.last_healthy_revision.as_deref(),
        );
        if let rollout::Decision::RollBack { to } = decision {
            match context.healthy_revision(stack, &to).await {
                Ok(healthy) => {
                    return roll_back(stack, context, &desired, &applied, healthy, message).await;
                }
                Err(why) => {
                    judged.verdict = rollout::Verdict::TimedOut {
                        message: format!("{message}; cannot roll back: {why}"),
                    };
                }
            }
        }
    }
    // 6. Status.
    status_stage(stack, context, &desired, &planned, applied, judged).await
}

/// The revision to apply while the spec's is held: the last healthy one.
async fn healthy_to_hold(
    stack: &Stack,
    context: &Context,
    previous: &StackStatus,
) -> Option<Arc<HealthySpec>> {
    match previous.last_healthy_revision.as_deref() {
        Some(to) => context.healthy_revision(stack, to).await.ok(),
        None => context.healthy_spec(stack),
    }
}

/// Stops early when there is nothing to apply (being deleted, suspended,
/// waiting for secret values or the caches, a refused namespace), else renders
/// the spec, or the last healthy revision while the spec's revision is held.
async fn desired_stage(stack: &Stack, context: &Context) -> Result<Stage<Desired>, ReconcileError> {
    let (namespace, name) = key_of(stack);
    let stack_name = format!("{namespace}/{name}");
    if stack.metadata.deletion_timestamp.is_some() {
        return Ok(Stage::Done(Done::new(Action::await_change(), "deleting")));
    }
    let previous = stack.status.clone().unwrap_or_default();
    if is_suspended(stack) {
        // The cluster is not touched; the Stack says it is suspended.
        tracing::debug!(stack = %stack_name, "suspended");
        let observed = unchanged_observed(&previous, None, None, true);
        let new_status = status::build(stack, observed, now());
        finish(stack, context, new_status, None, false).await?;
        let done = Done::new(Action::await_change(), Reason::Suspended.label());
        return Ok(Stage::Done(done));
    }
    let git_failure = git_failure(stack, context);
    let spec_revision = stack.spec.source.as_ref().map(|s| s.revision.clone());
    // The commit tried: a newer one that failed on the Git side, else the spec's.
    let attempted = git_failure
        .as_ref()
        .and_then(|f| f.revision.clone())
        .or_else(|| spec_revision.clone());
    let secrets = match &stack.spec.source {
        Some(source) => match context
            .handles
            .secrets
            .get(&namespace, &name, &source.revision)
        {
            Some(values) => values,
            // Another replica may have written the Stack (`--shards`), or this
            // one restarted: the commit's values are read again from the mirror.
            None if secrets::needs_values(&stack.spec.project)
                && let Some(values) =
                    context.secrets_from_mirror(stack, &source.revision).await =>
            {
                values
            }
            // Rendering now would drop (and prune) the Secrets: wait for the Git
            // source. When the Git side failed, say so meanwhile.
            None if secrets::needs_values(&stack.spec.project) => {
                let wait = Action::requeue(context.options.secrets_wait);
                if let Some(failed) = &git_failure {
                    let observed = unchanged_observed(
                        &previous,
                        Some(failed.failure.clone()),
                        attempted,
                        false,
                    );
                    let new_status = status::build(stack, observed, now());
                    finish(stack, context, new_status, None, false).await?;
                    let done = Done::new(wait, failed.failure.reason.label());
                    return Ok(Stage::Done(done));
                }
                return Ok(Stage::Done(Done::new(wait, "waiting_for_secrets")));
            }
            None => Default::default(),
        },
        None => Default::default(),
    };
    if !stores_ready(&context.live) {
        let done = Done::new(Action::requeue(STORES_NOT_READY_RETRY), "waiting_for_cache");
        return Ok(Stage::Done(done));
    }

    let access = match namespace_access(stack) {
        Ok(access) => access,
        Err(message) => {
            let error = ReconcileError::NamespaceNotAllowed {
                stack: stack_name,
                message,
            };
            // Nothing is applied or pruned in a refused namespace; the status says why.
            let failure = Failure::new(Reason::NamespaceNotAllowed, error.to_string(), false);
            let observed = unchanged_observed(&previous, Some(failure), attempted, false);
            let new_status = status::build(stack, observed, now());
            finish(stack, context, new_status, None, false).await?;
            return Ok(Stage::Done(Done::new(
                Action::await_change(),
                error.label(),
            )));
        }
    };

    let requested = annotation(stack, RECONCILE_REQUESTED_ANNOTATION);
    let forced = requested.is_some() && requested != previous.last_handled_reconcile_at;
    let revision = rollout::revision_of(stack);
    // A held (rolled back) revision is not applied again; a newer revision or
    // a requested reconcile releases it.
    let held = match rollout::is_held(previous.held_revision.as_deref(), &revision, forced) {
        false => None,
        true => match healthy_to_hold(stack, context, &previous).await {
            Some(healthy) => Some(healthy),
            // The healthy revision can be neither found nor loaded: apply
            // nothing rather than the held revision.
            None => {
                let failure = Failure::new(
                    Reason::RolledBack,
                    previous.message.clone().unwrap_or_default(),
                    false,
                );
                let observed = unchanged_observed(&previous, Some(failure), None, false);
                let new_status = status::build(stack, observed, now());
                finish(stack, context, new_status, None, false).await?;
                let done = Done::new(Action::await_change(), Reason::RolledBack.label());
                return Ok(Stage::Done(done));
            }
        },
    };
    let render_options = context.options.render.borrow().clone();
    let rendered = match &held {
        Some(healthy) => render(&healthy.stack, &healthy.secrets, &render_options),
        None => render(stack, &secrets, &render_options),
    };
    let mut rendered = match rendered {
        Ok(rendered) => label_shard(rendered, stack),
        Err(source) => {
            let error = ReconcileError::Render {
                stack: stack_name,
                source,
            };
            // The last good objects stay: no apply, no prune, no retry until the Stack changes.
            let failure = git_failure
                .map(|f| f.failure)
                .unwrap_or_else(|| Failure::new(Reason::RenderFailed, error.to_string(), false));
            let observed = unchanged_observed(&previous, Some(failure), attempted, false);
            let new_status = status::build(stack, observed, now());
            let result = result_of(&new_status);
            finish(stack, context, new_status, None, false).await?;
            return Ok(Stage::Done(Done::new(Action::await_change(), result)));
        }
    };
    let mut inventory = previous.inventory.clone();
    if access == Some(Access::Allowed) {
        // Someone else's namespace: its Namespace object is never written (nor pruned).
        rendered.objects.retain(|o| o.kind() != "Namespace");
        inventory.retain(|e| e.kind != "Namespace");
    }
    source::adopt_written_namespace(stack, &namespace, &rendered, &mut inventory);
    Ok(Stage::Next(Desired {
        rendered,
        inventory,
        access,
        spec_revision,
        attempted,
        git_failure,
        requested,
        forced,
        settings: rollout::settings(&stack.spec),
        revision,
        secrets,
        held,
        previous,
    }))
}

/// Drift, the plan, and the `depends_on` waves. No client: only the stores are read.
fn plan_stage(stack: &Stack, desired: &Desired, live: &LiveStores) -> Planned {
    let (namespace, _) = key_of(stack);
    let project = desired.project(stack);
    let (inventory, drifted) = drift::mark(
        project,
        &namespace,
        &desired.rendered,
        &desired.inventory,
        live,
    );
    let plan = Plan::for_stack(&namespace, &desired.rendered, &inventory, stack.spec.prune);
    let kept = status::kept(&plan);
    // Objects kept earlier cost nothing; newly kept ones get one pass that
    // writes nothing but reports them (plan, Event).
    let changes = kept != desired.previous.kept
        || plan
            .steps
            .iter()
            .any(|s| !matches!(s.action, StepAction::Unchanged | StepAction::Keep));
    let changed = match &desired.previous.rollout {
        Some(rollout) if rollout.revision == desired.revision => rollout.changed.clone(),
        _ => Vec::new(),
    };
    let workloads = workloads_of(&desired.rendered);
    let live_workloads: Vec<(String, Option<health::Workload>)> = workloads
        .iter()
        .map(|(service, object)| (service.clone(), live.existing_workload(object, &namespace)))
        .collect();
    let mut input = waves::WaveInput {
        changed: changed.into_iter().collect(),
        ..waves::WaveInput::default()
    };
    for (service, object) in &workloads {
        input.workloads.insert(service.clone());
        let step = plan
            .steps
            .iter()
            .find(|s| s.target.kind == object.kind() && s.target.name == object.name());
        match step.map(|s| s.action) {
            Some(StepAction::Create) => {
                input.creating.insert(service.clone());
                input.pending.insert(service.clone());
            }
            Some(StepAction::Update) => {
                input.pending.insert(service.clone());
            }
            _ => {}
        }
    }
    for (service, workload) in &live_workloads {
        input.live.insert(service.clone(), workload.as_ref());
    }
    let waves = waves::plan(&waves::edges(project), &input);
    let held = workloads
        .iter()
        .filter(|(service, _)| waves.held.contains(service))
        .map(|(_, object)| (object.kind().to_string(), object.name().to_string()))
        .collect();
    Planned {
        plan,
        inventory,
        drifted,
        kept,
        changes,
        waves,
        held,
    }
}

/// With `--shards`, every object but the Namespace (which stacks of several
/// shards share) carries its Stack's shard, so that a replica's watches select
/// just its own.
fn label_shard(mut rendered: Rendered, stack: &Stack) -> Rendered {
    let labels = stack.metadata.labels.as_ref();
    let Some(shard) = labels.and_then(|l| l.get(crate::shard::SHARD_LABEL)) else {
        return rendered;
    };
    for object in rendered
        .objects
        .iter_mut()
        .filter(|o| o.kind() != "Namespace")
    {
        object
            .metadata_mut()
            .labels
            .get_or_insert_default()
            .insert(crate::shard::SHARD_LABEL.to_string(), shard.clone());
    }
    rendered
}

/// The rendered workloads by service (the service label).
fn workloads_of(rendered: &Rendered) -> Vec<(String, &Object)> {
    rendered
        .objects
        .iter()
        .filter(|o| {
            matches!(
                o,
                Object::Deployment(_)
                    | Object::StatefulSet(_)
                    | Object::DaemonSet(_)
                    | Object::Job(_)
            )
        })
        .filter_map(|o| {
            let service = o.metadata().labels.as_ref()?.get(SERVICE_LABEL)?;
            Some((service.clone(), o))
        })
        .collect()
}

/// A dry run reports the plan on the status page and writes nothing.
fn dry_run_view(stack: &Stack, context: &Context, desired: &Desired, planned: &Planned) -> Done {
    let summary = status::summary(&planned.plan, None, true);
    // Nothing runs: the services that would, with their desired counts.
    let services = match desired.previous.services.is_empty() {
        true => desired
            .rendered
            .objects
            .iter()
            .filter_map(crate::reconcile::offline::workload_of)
            .map(|w| health::service_health(&w).status)
            .collect(),
        false => desired.previous.services.clone(),
    };
    let view_status = StackStatus {
        inventory: desired.previous.inventory.clone(),
        services,
        ..desired.previous.clone()
    };
    let view = status::view(stack, &view_status, None, Some(summary));
    context.handles.state.put_stack_keeping_events(view);
    Done::new(Action::await_change(), "dry_run")
}

/// What the apply stage writes.
struct StageApply<'a> {
    rendered: &'a Rendered,
    inventory: &'a [InventoryEntry],
    /// Workloads a wave holds back: neither written nor pruned.
    held: BTreeSet<(String, String)>,
    reapply_unchanged: bool,
}

/// Applies, then prunes, refusing to prune everything when nothing but the
/// Namespace is rendered.
async fn apply_stage(
    stack: &Stack,
    context: &Context,
    what: StageApply<'_>,
) -> Result<Applied, ReconcileError> {
    let (namespace, name) = key_of(stack);
    if context.cancel.is_cancelled() {
        return Err(ReconcileError::NotLeader);
    }
    let prune = stack.spec.prune;
    let plan = Plan::for_stack(&namespace, what.rendered, what.inventory, prune);
    let deletions = plan.count(StepAction::Delete);
    if prune_guard(what.rendered, deletions, context.options.allow_prune_all) {
        let error = ApplyError::WouldPruneEverything {
            stack: format!("{namespace}/{name}"),
            count: deletions,
        };
        return Ok(Applied {
            report: None,
            error: Some(error),
            diffs: Vec::new(),
        });
    }
    let applier = Applier::new(
        context.client.clone(),
        ApplyOptions {
            allow_prune_all: context.options.allow_prune_all,
            prune,
            reapply_unchanged: what.reapply_unchanged,
            cancel: context.cancel.clone(),
            held: what.held,
            ..ApplyOptions::default()
        },
    )
    .with_live_stores(context.live.clone())
    .with_writer(writer(stack, context));
    let stack_ref = StackRef {
        name: &name,
        namespace: &namespace,
    };
    let diffs = status::diffs_before(&plan, what.rendered, |entry| context.live.get(entry));
    let mut report = applier
        .apply(stack_ref, what.rendered, what.inventory)
        .await;
    let error = report.errors.drain(..).next();
    Ok(Applied {
        report: Some(report),
        error,
        diffs,
    })
}

/// Pruning every object needs `allow_prune_all`: a render with nothing but the
/// Namespace left that would delete objects is refused.
fn prune_guard(rendered: &Rendered, deletions: usize, allow_prune_all: bool) -> bool {
    let rendered_nothing = rendered.objects.iter().all(|o| o.kind() == "Namespace");
    rendered_nothing && deletions > 0 && !allow_prune_all
}

/// Service health from the stores, the rollout this pass continues or
/// starts, and where it stands against its deadline.
fn health_stage(
    stack: &Stack,
    desired: &Desired,
    planned: &Planned,
    applied: &Applied,
    live: &LiveStores,
    now: chrono::DateTime<Utc>,
) -> Judged {
    let (namespace, _) = key_of(stack);
    let report = applied.report.as_ref();
    // A workload this reconcile just wrote is judged from the cache, which has
    // not seen the write yet: its old status would read as the new revision
    // being Ready. It stays Progressing until the watch brings it.
    let just_written = |o: &Object| report.is_some_and(|r| was_written(r, o));
    let mut awaiting_watch = false;
    let services: Vec<_> = desired
        .rendered
        .objects
        .iter()
        .filter_map(|o| {
            let mut health = health::service_health(&live.workload(o, &namespace)?);
            if just_written(o) {
                health.complete = false;
                awaiting_watch = true;
            }
            Some(health)
        })
        .collect();
    let written: Vec<String> = workloads_of(&desired.rendered)
        .into_iter()
        .filter(|(_, object)| just_written(object))
        .map(|(service, _)| service)
        .collect();
    let previous = desired.previous.rollout.as_ref();
    let rollout = rollout::next(previous, &desired.revision, &written, now);
    let waiting = !planned.waves.waiting.is_empty() || planned.waves.failed.is_some();
    let verdict = rollout::judge(
        rollout.as_ref(),
        &services,
        waiting,
        desired.settings.timeout,
        now,
    );
    Judged {
        services,
        awaiting_watch,
        rollout,
        verdict,
    }
}

/// The status of this pass, written once, and when to look again.
async fn status_stage(
    stack: &Stack,
    context: &Context,
    desired: &Desired,
    planned: &Planned,
    applied: Applied,
    judged: Judged,
) -> Result<Done, ReconcileError> {
    let (namespace, name) = key_of(stack);
    let previous = &desired.previous;
    let applied_ok = applied.error.is_none();
    let apply_error = applied.error.map(|source| ReconcileError::Apply {
        stack: format!("{namespace}/{name}"),
        source,
    });
    let healthy = judged.verdict == rollout::Verdict::Healthy && applied_ok;
    // A newer commit that failed on the Git side is the news; else this apply's
    // failure; else a failed dependency, a held revision or a missed deadline.
    let failure = desired
        .git_failure
        .clone()
        .map(|f| f.failure)
        .or_else(|| {
            apply_error
                .as_ref()
                .map(|e| Failure::new(Reason::ApplyFailed, e.to_string(), e.is_transient()))
        })
        .or_else(|| {
            let failed = planned.waves.failed.as_ref()?;
            Some(Failure::new(
                Reason::DependencyFailed,
                failed.clone(),
                false,
            ))
        })
        .or_else(|| {
            desired.held.as_ref()?;
            let message = previous.last_error.clone().unwrap_or_default();
            Some(Failure::new(Reason::RolledBack, message, false))
        })
        .or_else(|| match &judged.verdict {
            rollout::Verdict::TimedOut { message } => {
                Some(Failure::new(Reason::HealthTimeout, message.clone(), false))
            }
            _ => None,
        });
    if healthy && desired.held.is_none() && desired.git_failure.is_none() {
        context.remember_healthy(stack, &desired.revision, &desired.secrets);
    }
    let held_revision = match &desired.held {
        Some(_) => previous.held_revision.clone(),
        None => None,
    };
    let (rollout, last_healthy) = match (&desired.held, healthy) {
        (None, true) => (None, Some(desired.revision.clone())),
        (None, false) => (judged.rollout, previous.last_healthy_revision.clone()),
        (Some(_), _) => (None, previous.last_healthy_revision.clone()),
    };
    let applied_revision = match &desired.held {
        Some(healthy) => Some(healthy.revision.clone()),
        None => applied_ok.then(|| desired.spec_revision.clone()).flatten(),
    };
    let report = applied.report;
    let mut diffs = applied.diffs;
    let summary = report.as_ref().map(|r| {
        let mut summary = status::summary(&r.plan, Some(r), false);
        diffs.retain(|d| summary.updated.contains(&d.object));
        summary.diffs = diffs;
        summary
    });
    let observed = Observed {
        services: judged.services,
        warnings: desired.rendered.warnings.clone(),
        inventory: report
            .as_ref()
            .map(|r| r.inventory.clone())
            .unwrap_or_else(|| previous.inventory.clone()),
        kept: planned.kept.clone(),
        failure,
        applied_revision,
        attempted_revision: desired.attempted.clone(),
        handled_request: (desired.forced && applied_ok)
            .then(|| desired.requested.clone())
            .flatten(),
        suspended: false,
        waiting: planned.waves.waiting.clone(),
        rollout,
        last_healthy_revision: last_healthy,
        held_revision,
        counts: summary.as_ref().map(status::Counts::of).unwrap_or_default(),
    };
    let new_status = status::build(stack, observed, now());
    let result = result_of(&new_status);
    finish(stack, context, new_status, summary, applied_ok).await?;

    let resync = context.options.resync;
    match apply_error {
        Some(error) if error.is_transient() => Err(error),
        Some(_) => Ok(Done::new(Action::await_change(), result)),
        // The watch event of a written workload reconciles again; the short
        // requeue covers a write the server found to change nothing.
        None if judged.awaiting_watch => Ok(Done::new(Action::requeue(WRITTEN_RECHECK), result)),
        // Watch events bring dependencies and workloads back; the deadline needs a timer.
        None => match judged.verdict {
            rollout::Verdict::Waiting { remaining } => Ok(Done::new(
                Action::requeue(resync.min(remaining + DEADLINE_SLACK)),
                result,
            )),
            _ => Ok(Done::new(Action::requeue(resync), result)),
        },
    }
}

/// Past a deadline by this much, so the timer never fires just before it.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// Re-applies the last healthy revision, pruning what it did not have, and
/// holds the revision that missed its deadline.
async fn roll_back(
    stack: &Stack,
    context: &Context,
    desired: &Desired,
    applied: &Applied,
    healthy: Arc<HealthySpec>,
    why: &str,
) -> Result<Done, ReconcileError> {
    let (namespace, name) = key_of(stack);
    let render_options = context.options.render.borrow().clone();
    let mut rendered =
        render(&healthy.stack, &healthy.secrets, &render_options).map_err(|source| {
            ReconcileError::Render {
                stack: format!("{namespace}/{name}"),
                source,
            }
        })?;
    if desired.access == Some(Access::Allowed) {
        rendered.objects.retain(|o| o.kind() != "Namespace");
    }
    let inventory = applied
        .report
        .as_ref()
        .map(|r| r.inventory.clone())
        .unwrap_or_else(|| desired.inventory.clone());
    let what = StageApply {
        rendered: &rendered,
        inventory: &inventory,
        held: BTreeSet::new(),
        reapply_unchanged: true,
    };
    let back = apply_stage(stack, context, what).await?;
    record_outcomes(context, back.report.as_ref(), &[]);
    let message = format!(
        "{why}; rolled back to revision {}",
        short_revision(&healthy.revision)
    );
    let rolled_back = back.error.is_none();
    if rolled_back {
        context.handles.metrics.rolled_back(&namespace, &name);
        tracing::warn!(stack = %format!("{namespace}/{name}"), %message, "rolled back");
    }
    let failure = match back.error {
        None => Failure::new(Reason::RolledBack, message, false),
        Some(source) => {
            let error = ReconcileError::Apply {
                stack: format!("{namespace}/{name}"),
                source,
            };
            Failure::new(Reason::ApplyFailed, error.to_string(), error.is_transient())
        }
    };
    let report = back.report;
    let summary = report
        .as_ref()
        .map(|r| status::summary(&r.plan, Some(r), false));
    let previous = &desired.previous;
    let services = rendered
        .objects
        .iter()
        .filter_map(|o| {
            let mut health = health::service_health(&context.live.workload(o, &namespace)?);
            health.complete = false;
            Some(health)
        })
        .collect();
    let observed = Observed {
        services,
        warnings: rendered.warnings.clone(),
        inventory: report
            .as_ref()
            .map(|r| r.inventory.clone())
            .unwrap_or(inventory),
        kept: report
            .as_ref()
            .map(|r| status::kept(&r.plan))
            .unwrap_or_default(),
        failure: Some(failure),
        applied_revision: rolled_back.then(|| healthy.revision.clone()),
        attempted_revision: desired.attempted.clone(),
        handled_request: None,
        suspended: false,
        waiting: Vec::new(),
        rollout: None,
        last_healthy_revision: previous.last_healthy_revision.clone(),
        held_revision: rolled_back.then(|| desired.revision.clone()),
        counts: summary.as_ref().map(status::Counts::of).unwrap_or_default(),
    };
    let new_status = status::build(stack, observed, now());
    let result = result_of(&new_status);
    finish(stack, context, new_status, summary, false).await?;
    Ok(Done::new(Action::requeue(WRITTEN_RECHECK), result))
}

/// How soon a stack whose workloads were just written is looked at again.
const WRITTEN_RECHECK: Duration = Duration::from_secs(2);

/// `object` was created or changed by the apply in `report`.
fn was_written(report: &ApplyReport, object: &Object) -> bool {
    let planned = report.plan.steps.iter().any(|step| {
        step.target.kind == object.kind()
            && step.target.name == object.name()
            && matches!(step.action, StepAction::Create | StepAction::Update)
    });
    planned
        && matches!(
            report.outcome(object.kind(), object.name()),
            Some(Outcome::Applied | Outcome::Recreated)
        )
}

/// The client that writes the stack's objects: the daemon's own, or one
/// impersonating `spec.serviceAccountName` of the stack's namespace.
fn writer(stack: &Stack, context: &Context) -> Client {
    let Some(account) = &stack.spec.service_account_name else {
        return context.client.clone();
    };
    let namespace = stack.metadata.namespace.as_deref().unwrap_or_default();
    let user = tenancy::service_account_user(namespace, account);
    let mut clients = context
        .impersonating
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(client) = clients.get(&user) {
        return client.clone();
    }
    let client = impersonate::impersonating(&context.client, &user);
    clients.insert(user, client.clone());
    client
}

/// How the Git sync admitted the Stack's namespace (`None`: a Stack written by
/// hand), or the refusal to report. Stacks from Git carry the sync's decision;
/// any Stack in `kube-*` or `default` needs the sync's explicit admission.
fn namespace_access(stack: &Stack) -> Result<Option<Access>, String> {
    if let Some(message) = annotation(stack, NAMESPACE_REFUSED_ANNOTATION) {
        return Err(message);
    }
    let access = match annotation(stack, NAMESPACE_ACCESS_ANNOTATION).as_deref() {
        Some(ACCESS_ALLOWED) => Some(Access::Allowed),
        Some(_) => Some(Access::Stackd),
        None => None,
    };
    let namespace = stack.metadata.namespace.as_deref().unwrap_or_default();
    if access != Some(Access::Allowed) && tenancy::is_fixed_reserved(namespace) {
        let refusal = NamespaceRefusal::Reserved {
            namespace: namespace.to_string(),
        };
        let file = stack
            .spec
            .source
            .as_ref()
            .map(|s| s.path.clone())
            .unwrap_or_else(|| "the Stack".to_string());
        return Err(format!("{file}: {refusal}"));
    }
    Ok(access)
}

fn annotation(stack: &Stack, key: &str) -> Option<String> {
    stack.metadata.annotations.as_ref()?.get(key).cloned()
}

fn previous_services(previous: &StackStatus) -> Vec<health::ServiceHealth> {
    previous
        .services
        .iter()
        .map(|s| health::ServiceHealth {
            complete: s.ready >= s.desired && s.updated >= s.desired,
            status: s.clone(),
            failed: None,
            detail: None,
        })
        .collect()
}

fn record_outcomes(context: &Context, report: Option<&ApplyReport>, drifted: &[InventoryEntry]) {
    let Some(report) = report else {
        return;
    };
    let metrics = &context.handles.metrics;
    for (entry, outcome) in &report.results {
        match outcome {
            Outcome::Applied | Outcome::Recreated => {
                metrics
                    .objects_applied_total
                    .with_label_values(&[&entry.kind])
                    .inc();
                let was_drift = drifted.iter().any(|d| {
                    (&d.kind, &d.namespace, &d.name) == (&entry.kind, &entry.namespace, &entry.name)
                });
                if was_drift {
                    metrics
                        .drift_corrected_total
                        .with_label_values(&[&entry.kind])
                        .inc();
                }
            }
            Outcome::Deleted => metrics
                .objects_pruned_total
                .with_label_values(&[&entry.kind])
                .inc(),
            _ => {}
        }
    }
}

/// How soon to retry a stack reconciled before the reflectors finished their
/// first list. Only a safety net: the end of that list reconciles every stack.
const STORES_NOT_READY_RETRY: Duration = Duration::from_secs(30);

/// Whether every reflector finished its first list: before that, every object
/// would look missing (drift). Never waits: the stores only fill while the
/// controller polls their streams, and a reconcile that blocked here would hold
/// a concurrency slot the trigger streams need (a deadlock at scale).
fn stores_ready(live: &LiveStores) -> bool {
    live.listed()
}

/// Writes the status (only if it changed), publishes Events for what happened,
/// and updates the status page and metrics.
async fn finish(
    stack: &Stack,
    context: &Context,
    mut new_status: StackStatus,
    summary: Option<crate::state::PlanSummary>,
    succeeded: bool,
) -> Result<(), ReconcileError> {
    let (namespace, name) = key_of(stack);
    add_subject(stack, context, &mut new_status);
    let changed = stack.status.as_ref() != Some(&new_status);
    if changed {
        if context.cancel.is_cancelled() {
            return Err(ReconcileError::NotLeader);
        }
        let api: Api<Stack> = Api::namespaced(context.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": "stackd.dev/v1alpha1",
            "kind": "Stack",
            "status": new_status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| ReconcileError::WriteStatus {
            stack: format!("{namespace}/{name}"),
            source,
        })?;
    }
    // Metrics and the page follow the status at once; Events (requests) last.
    let metrics = &context.handles.metrics;
    let ready = new_status
        .services
        .iter()
        .filter(|s| s.ready >= s.desired)
        .count();
    metrics.set_stack(
        &namespace,
        &name,
        new_status.phase.unwrap_or_default(),
        health::ready_reason(&new_status.conditions).unwrap_or(Reason::Progressing),
        u32::try_from(ready).unwrap_or(u32::MAX),
        u32::try_from(new_status.services.len()).unwrap_or(u32::MAX),
    );
    let previous_view = context.handles.state.stack(&namespace, &name);
    let mut last_sync = previous_view.as_ref().and_then(|v| v.last_sync);
    if succeeded {
        let now = chrono::Utc::now();
        last_sync = Some(now);
        metrics
            .last_successful_sync_timestamp_seconds
            .with_label_values(&[&namespace, &name])
            .set(now.timestamp() as f64);
    }
    let event_summary = summary.clone();
    let last_plan = summary.or_else(|| previous_view.and_then(|v| v.last_plan));
    let view = status::view(stack, &new_status, last_sync, last_plan);
    // The object Events watch adds to the view meanwhile: keep what it added.
    context.handles.state.put_stack_keeping_events(view);
    if let Some(observation) = crate::notify::observation_of(stack, &new_status) {
        context.handles.state.observe(observation);
    }
    let published = publish_events(stack, context, &new_status, event_summary.as_ref()).await;
    // The page's Events: the last ones published for this stack, in memory,
    // merged with those of its objects.
    if !published.is_empty() {
        let state = &context.handles.state;
        state.add_events(&namespace, &name, published);
    }
    Ok(())
}

/// The newest history entry's commit subject when the Stack's source did not
/// carry it (a commit that failed on the Git side, a Stack written before
/// subjects were carried): the Git source's view of the repository, when its
/// head is that commit.
fn add_subject(stack: &Stack, context: &Context, status: &mut StackStatus) {
    let Some(entry) = status.history.last_mut().filter(|e| e.subject.is_none()) else {
        return;
    };
    let Some(repository) = annotation(stack, REPOSITORY_ANNOTATION) else {
        return;
    };
    entry.subject = context
        .handles
        .state
        .repositories()
        .into_iter()
        .find(|r| r.name == repository && r.commit.as_deref() == Some(entry.revision.as_str()))
        .and_then(|r| r.subject);
}

/// Apply and prune Events whenever objects were written; one Warning per
/// (stack, commit, reason), so a stuck stack does not spam; a Normal
/// `Recovered` when a failing stack stops failing.
async fn publish_events(
    stack: &Stack,
    context: &Context,
    status: &StackStatus,
    summary: Option<&crate::state::PlanSummary>,
) -> Vec<crate::state::EventView> {
    let mut events = Vec::new();
    if let Some(summary) = summary {
        let applied = summary.created.len() + summary.updated.len();
        if applied > 0 {
            events.push(Event {
                type_: EventType::Normal,
                reason: "Applied".into(),
                note: Some(format!(
                    "created {}, updated {}",
                    summary.created.len(),
                    summary.updated.len()
                )),
                action: "Apply".into(),
                secondary: None,
            });
        }
        if !summary.pruned.is_empty() {
            events.push(Event {
                type_: EventType::Normal,
                reason: "Pruned".into(),
                note: Some(format!("deleted {}", summary.pruned.join(", "))),
                action: "Prune".into(),
                secondary: None,
            });
        }
        if !summary.kept.is_empty() {
            let why = match stack.spec.prune {
                false => {
                    "no longer rendered, but pruning is off for this stack (spec.prune: false)"
                }
                true => {
                    "no longer rendered, but protected (stackd.dev/prune: disabled, or a volume claim)"
                }
            };
            events.push(Event {
                type_: EventType::Normal,
                reason: "PruneSkipped".into(),
                note: Some(truncate(
                    &format!("kept {}: {why}", summary.kept.join(", ")),
                    1000,
                )),
                action: "Prune".into(),
                secondary: None,
            });
        }
    }
    events.extend(outcome_event(stack.status.as_ref(), status));
    let reference = stack.object_ref(&());
    let mut published = Vec::new();
    for event in events {
        if context.cancel.is_cancelled() {
            break;
        }
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, "publishing an Event");
        }
        published.push(crate::state::EventView {
            time: chrono::Utc::now(),
            kind: match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_string(),
            reason: event.reason,
            note: event.note.unwrap_or_default(),
            ..Default::default()
        });
    }
    published
}

/// The failure or recovery Event between two statuses: a Warning named after
/// the Ready reason when (attempted revision, reason) is new, a Normal
/// `Recovered` when a failure ends. Pure, so a stuck stack is easy to test.
fn outcome_event(previous: Option<&StackStatus>, status: &StackStatus) -> Option<Event> {
    let reason = health::ready_reason(&status.conditions)?;
    let before = previous.and_then(|p| health::ready_reason(&p.conditions));
    let revision = status.last_attempted_revision.as_deref();
    let same_attempt = previous.and_then(|p| p.last_attempted_revision.as_deref()) == revision;
    if reason.is_failure() {
        if before == Some(reason) && same_attempt {
            return None;
        }
        let message = status.last_error.as_deref().unwrap_or_default();
        let note = match revision {
            Some(revision) => format!("commit {}: {message}", short_revision(revision)),
            None => message.to_string(),
        };
        return Some(Event {
            type_: EventType::Warning,
            reason: reason.as_str().into(),
            note: Some(truncate(&note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        });
    }
    let recovered = before.is_some_and(Reason::is_failure) && reason != Reason::Suspended;
    recovered.then(|| Event {
        type_: EventType::Normal,
        reason: "Recovered".into(),
        note: Some(match revision {
            Some(revision) => format!("commit {}: {}", short_revision(revision), reason.as_str()),
            None => reason.as_str().to_string(),
        }),
        action: "Reconcile".into(),
        secondary: None,
    })
}

fn short_revision(revision: &str) -> &str {
    revision.get(..8).unwrap_or(revision)
}

fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(reason: Reason, attempted: &str) -> StackStatus {
        let failure = reason.is_failure();
        StackStatus {
            conditions: health::conditions(
                reason,
                false,
                "m",
                None,
                &[],
                Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()),
            ),
            last_attempted_revision: Some(attempted.into()),
            last_error: failure.then(|| "app/compose.yaml:3:12: invalid YAML".into()),
            ..StackStatus::default()
        }
    }

    fn shown(event: Option<Event>) -> Option<(String, String)> {
        event.map(|e| {
            let kind = match e.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            };
            (kind.to_string(), e.reason)
        })
    }

    #[test]
    fn one_warning_per_commit_and_reason_and_one_recovery() {
        let ok = status(Reason::Available, "aaaa");
        let broken = status(Reason::LoadFailed, "bbbbbbbbbbbb");
        let warning = Some(("Warning".to_string(), "LoadFailed".to_string()));
        assert_eq!(shown(outcome_event(Some(&ok), &broken)), warning);
        let event = outcome_event(Some(&ok), &broken).unwrap();
        assert_eq!(
            event.note.as_deref(),
            Some("commit bbbbbbbb: app/compose.yaml:3:12: invalid YAML")
        );
        // The same commit failing the same way again (each poll, each resync): nothing.
        assert_eq!(shown(outcome_event(Some(&broken), &broken)), None);
        // Another commit, or another reason: a new Warning.
        let other_commit = status(Reason::LoadFailed, "cccc");
        assert_eq!(shown(outcome_event(Some(&broken), &other_commit)), warning);
        let other_reason = status(Reason::ApplyFailed, "bbbbbbbbbbbb");
        assert_eq!(
            shown(outcome_event(Some(&broken), &other_reason)),
            Some(("Warning".into(), "ApplyFailed".into()))
        );
        // Fixed: one Normal event; progressing and available stay quiet after that.
        let fixed = status(Reason::Progressing, "dddd");
        assert_eq!(
            shown(outcome_event(Some(&broken), &fixed)),
            Some(("Normal".into(), "Recovered".into()))
        );
        assert_eq!(shown(outcome_event(Some(&fixed), &ok)), None);
        assert_eq!(shown(outcome_event(None, &ok)), None);
        // Suspending a failing stack is not a recovery.
        let suspended = status(Reason::Suspended, "bbbbbbbbbbbb");
        assert_eq!(shown(outcome_event(Some(&broken), &suspended)), None);
    }

    #[test]
    fn pruning_everything_needs_allow_prune_all() {
        let namespace_only = Rendered {
            objects: vec![Object::Namespace(Default::default())],
            warnings: vec![],
        };
        assert!(prune_guard(&namespace_only, 3, false));
        assert!(!prune_guard(&namespace_only, 3, true));
        assert!(!prune_guard(&namespace_only, 0, false));
        let with_a_workload = Rendered {
            objects: vec![Object::Deployment(Default::default())],
            warnings: vec![],
        };
        assert!(!prune_guard(&with_a_workload, 3, false));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(4);
        let delays: Vec<_> = (1..=6).map(|n| backoff(base, max, n)).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 4000, 4000].map(Duration::from_millis)
        );
        assert_eq!(backoff(base, max, u32::MAX), max);
    }
}
