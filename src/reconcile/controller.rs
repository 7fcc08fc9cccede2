//! The Stack controller: a `kube::runtime::Controller` on `Stack` that owns
//! every kind the renderer emits. Reconcile = render (pure) → plan against the
//! inventory and the reflector stores (drift) → apply engine → status.
//! An unchanged stack costs no request at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::crd::{FIELD_MANAGER, InventoryEntry, SERVICE_LABEL, STACK_LABEL, Stack, StackStatus};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::reconcile::apply::{
    Action as StepAction, Applier, ApplyError, ApplyOptions, ApplyReport, Outcome, Plan, StackRef,
    entry_for,
};
use crate::reconcile::caches::CacheSync;
use crate::reconcile::compact::Compact;
use crate::reconcile::drift;
use crate::reconcile::error::ReconcileError;
use crate::reconcile::failures::{GitFailure, GitFailures};
use crate::reconcile::health;
use crate::reconcile::impersonate;
use crate::reconcile::live::{self, LiveStores};
use crate::reconcile::secrets::{self, SecretStore};
use crate::reconcile::source::{
    ACCESS_ALLOWED, NAMESPACE_ACCESS_ANNOTATION, NAMESPACE_REFUSED_ANNOTATION,
    REPOSITORY_ANNOTATION,
};
use crate::reconcile::status::{self, Failure, Observed};
use crate::render::model::Project;
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
    /// Bursts of events within this window give one reconcile.
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
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            dry_run: false,
            allow_prune_all: false,
            render: watch::channel(RenderOptions::default()).1,
            debounce: Duration::from_millis(500),
            concurrency: 8,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            resync: Duration::from_secs(600),
            secrets_wait: Duration::from_secs(5),
            identity: "stackd".to_string(),
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
}

/// A reflector for one owned kind: its store, and the stream of touched objects
/// that triggers the owning Stack once the store has seen the change. Watch
/// errors are recorded in `caches`, for `/readyz`, and go no further: the
/// watch backs off on its own, while the Controller's trigger backoff would
/// pause every kind's triggers, longer at each error (after a 410 Gone on all
/// watches, re-lists were held back for minutes).
fn owned<K>(
    client: &Client,
    caches: &CacheSync,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + use<K>,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let (reader, writer) = reflector::store();
    // Only objects stackd labelled: the stores stay as small as what stackd manages.
    let config = watcher::Config::default().labels(STACK_LABEL);
    let caches = caches.clone();
    let stream = watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .inspect(move |event| {
            if let Err(error) = event {
                watch_failed(&caches, &K::kind(&()), error);
            }
        })
        .modify(forget_managed_fields)
        .reflect(writer)
        .touched_objects()
        .filter(|event| futures::future::ready(event.is_ok()));
    (reader, stream)
}

/// Drift and status never read `managedFields`, and at thousands of objects
/// they are a large share of what the stores would hold.
fn forget_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Runs the Stack controller until `cancel` fires.
pub async fn run(
    client: Client,
    options: ControllerOptions,
    handles: ControllerHandles,
    cancel: CancellationToken,
) {
    let caches = handles.caches.clone();
    let (config_maps, cm_stream) = owned::<Compact<ConfigMap>>(&client, &caches);
    let (secrets, secret_stream) = owned::<Compact<Secret>>(&client, &caches);
    let (services, service_stream) = owned::<Compact<Service>>(&client, &caches);
    let (deployments, deployment_stream) = owned::<Compact<Deployment>>(&client, &caches);
    let (stateful_sets, sts_stream) = owned::<Compact<StatefulSet>>(&client, &caches);
    let (daemon_sets, ds_stream) = owned::<Compact<DaemonSet>>(&client, &caches);
    let (jobs, job_stream) = owned::<Compact<Job>>(&client, &caches);
    let (ingresses, ingress_stream) = owned::<Compact<Ingress>>(&client, &caches);
    let (network_policies, netpol_stream) = owned::<Compact<NetworkPolicy>>(&client, &caches);
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

    let (stack_store, stack_writer) = reflector::store::<Stack>();
    let git_failed = git_failures_changed(handles.failures.clone(), stack_store.clone());
    let listings = vec![
        listed(&stack_store),
        listed(&live.config_maps),
        listed(&live.secrets),
        listed(&live.services),
        listed(&live.deployments),
        listed(&live.stateful_sets),
        listed(&live.daemon_sets),
        listed(&live.jobs),
        listed(&live.ingresses),
        listed(&live.network_policies),
    ];
    caches.started(listings.iter().map(|(kind, _)| kind.clone()));
    let listing = tokio::spawn(report_listings(listings, caches.clone()));

    let forget = handles.clone();
    let stack_errors = caches.clone();
    let stacks = watcher(
        Api::<Stack>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .inspect(move |event| {
        if let Err(error) = event {
            watch_failed(&stack_errors, "Stack", error);
        }
    })
    .modify(forget_managed_fields)
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
    caches.stopped();
}

/// The Stacks to reconcile when the Git side found (or no longer finds) a
/// failure: the stack itself, or every Stack of a repository.
fn git_failures_changed(
    failures: GitFailures,
    stacks: Store<Stack>,
) -> impl Stream<Item = reflector::ObjectRef<Stack>> + Send + 'static {
    futures::stream::unfold(failures, move |failures| {
        let stacks = stacks.clone();
        async move {
            failures.changed().await;
            let changed = failures.take_changed();
            let mut refs: Vec<reflector::ObjectRef<Stack>> = changed
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
                            annotation(stack, REPOSITORY_ANNOTATION)
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

/// How often the stores still listing are looked at again.
const LISTING_CHECK: Duration = Duration::from_millis(200);

/// Tells `caches` as each store finishes its initial list. Looks rather than
/// awaits: a `wait_until_ready()` awaited from before a failed first list was
/// not woken when a later list succeeded.
async fn report_listings(mut listings: Vec<(String, Listed)>, caches: CacheSync) {
    loop {
        listings.retain(|(kind, ready)| {
            let done = ready();
            if done {
                caches.listed(kind);
            }
            !done
        });
        if listings.is_empty() {
            return;
        }
        tokio::time::sleep(LISTING_CHECK).await;
    }
}

fn forget_stack(handles: &ControllerHandles, stack: &Stack) {
    let namespace = stack.metadata.namespace.as_deref().unwrap_or_default();
    let name = stack.metadata.name.as_deref().unwrap_or_default();
    handles.state.remove_stack(namespace, name);
    handles.metrics.remove_stack(namespace, name);
}

fn key_of(stack: &Stack) -> (String, String) {
    (
        stack.metadata.namespace.clone().unwrap_or_default(),
        stack.metadata.name.clone().unwrap_or_default(),
    )
}

async fn reconcile(stack: Arc<Stack>, context: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let (namespace, name) = key_of(&stack);
    let result = reconcile_stack(&stack, &context).await;
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
fn error_policy(stack: Arc<Stack>, error: &ReconcileError, context: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    if !error.is_transient() {
        return Action::await_change();
    }
    let mut failures = context.failures.lock().unwrap_or_else(|e| e.into_inner());
    let count = failures.entry(key_of(&stack)).or_insert(0);
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
    context
        .handles
        .failures
        .for_stack(&namespace, &name, repository.as_deref())
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
        counts: status::Counts::default(),
    }
}

/// The `result` label of a reconcile that ended with `status`.
fn result_of(status: &StackStatus) -> &'static str {
    health::ready_reason(&status.conditions).map_or("success", Reason::label)
}

async fn reconcile_stack(stack: &Stack, context: &Context) -> Result<Done, ReconcileError> {
    let (namespace, name) = key_of(stack);
    let stack_name = format!("{namespace}/{name}");
    if stack.metadata.deletion_timestamp.is_some() {
        return Ok(Done::new(Action::await_change(), "deleting"));
    }
    let previous = stack.status.clone().unwrap_or_default();
    if is_suspended(stack) {
        // The cluster is not touched; the Stack says it is suspended.
        tracing::debug!(stack = %stack_name, "suspended");
        let observed = unchanged_observed(&previous, None, None, true);
        let new_status = status::build(stack, observed, now());
        finish(stack, context, new_status, None, false).await?;
        return Ok(Done::new(Action::await_change(), Reason::Suspended.label()));
    }
    let git_failure = git_failure(stack, context);
    let spec_revision = stack.spec.source.as_ref().map(|s| s.revision.clone());
    // The commit tried: a newer one that failed on the Git side, else the spec's.
    let attempted = git_failure
        .as_ref()
        .and_then(|f| f.revision.clone())
        .or_else(|| spec_revision.clone());
    let secret_values = match &stack.spec.source {
        Some(source) => match context
            .handles
            .secrets
            .get(&namespace, &name, &source.revision)
        {
            Some(values) => values,
            // Rendering now would drop (and prune) the Secrets: wait for the Git
            // source. When the Git side failed, say so meanwhile.
            None if secrets::needs_values(&stack.spec.project) => {
                if let Some(failed) = &git_failure {
                    let observed = unchanged_observed(
                        &previous,
                        Some(failed.failure.clone()),
                        attempted,
                        false,
                    );
                    let new_status = status::build(stack, observed, now());
                    finish(stack, context, new_status, None, false).await?;
                    return Ok(Done::new(
                        Action::requeue(context.options.secrets_wait),
                        failed.failure.reason.label(),
                    ));
                }
                return Ok(Done::new(
                    Action::requeue(context.options.secrets_wait),
                    "waiting_for_secrets",
                ));
            }
            None => Default::default(),
        },
        None => Default::default(),
    };
    if !stores_ready(&context.live) {
        return Ok(Done::new(
            Action::requeue(STORES_NOT_READY_RETRY),
            "waiting_for_cache",
        ));
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
            return Ok(Done::new(Action::await_change(), error.label()));
        }
    };
    let render_options = context.options.render.borrow().clone();
    let mut rendered = match render(stack, &secret_values, &render_options) {
        Ok(rendered) => rendered,
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
            return Ok(Done::new(Action::await_change(), result));
        }
    };

    let mut previous_inventory = previous.inventory.clone();
    if access == Some(Access::Allowed) {
        // Someone else's namespace: its Namespace object is never written (nor pruned).
        rendered.objects.retain(|o| o.kind() != "Namespace");
        previous_inventory.retain(|e| e.kind != "Namespace");
    }

    let requested = annotation(stack, RECONCILE_REQUESTED_ANNOTATION);
    let forced = requested.is_some() && requested != previous.last_handled_reconcile_at;
    let (inventory, drifted) = mark_drift(
        stack,
        &namespace,
        &rendered,
        &previous_inventory,
        &context.live,
    );
    let prune = stack.spec.prune;
    let plan = Plan::for_stack(&namespace, &rendered, &inventory, prune);
    let kept = status::kept(&plan);
    // Objects kept earlier cost nothing; newly kept ones get one pass that
    // writes nothing but reports them (plan, Event).
    let changes = kept != previous.kept
        || plan
            .steps
            .iter()
            .any(|s| !matches!(s.action, StepAction::Unchanged | StepAction::Keep));

    if context.options.dry_run {
        let summary = status::summary(&plan, None, true);
        // Nothing runs: the services that would, with their desired counts.
        let services = match previous.services.is_empty() {
            true => rendered
                .objects
                .iter()
                .filter_map(crate::reconcile::offline::workload_of)
                .map(|w| health::service_health(&w).status)
                .collect(),
            false => previous.services.clone(),
        };
        let view_status = StackStatus {
            inventory: previous.inventory.clone(),
            services,
            ..previous.clone()
        };
        let view = status::view(stack, &view_status, None, Some(summary));
        context.handles.state.put_stack(view);
        return Ok(Done::new(Action::await_change(), "dry_run"));
    }

    let mut report = None;
    let mut apply_error = None;
    let mut diffs = Vec::new();
    if forced || changes {
        if context.cancel.is_cancelled() {
            return Err(ReconcileError::NotLeader);
        }
        let rendered_nothing = rendered.objects.iter().all(|o| o.kind() == "Namespace");
        let deletions = plan.count(StepAction::Delete);
        if rendered_nothing && deletions > 0 && !context.options.allow_prune_all {
            apply_error = Some(ApplyError::WouldPruneEverything {
                stack: stack_name.clone(),
                count: deletions,
            });
        } else {
            let applier = Applier::new(
                context.client.clone(),
                ApplyOptions {
                    allow_prune_all: context.options.allow_prune_all,
                    prune,
                    reapply_unchanged: forced,
                    cancel: context.cancel.clone(),
                    ..ApplyOptions::default()
                },
            )
            .with_live_stores(context.live.clone())
            .with_writer(writer(stack, context));
            // The fields about to change, read from the cache before the write.
            diffs = status::diffs_before(&plan, &rendered, |entry| context.live.get(entry));
            let mut done = applier
                .apply(
                    StackRef {
                        name: &name,
                        namespace: &namespace,
                    },
                    &rendered,
                    &inventory,
                )
                .await;
            record_outcomes(context, &done, &drifted);
            apply_error = done.errors.drain(..).next();
            report = Some(done);
        }
    }

    // A workload this reconcile just wrote is judged from the cache, which has
    // not seen the write yet: its old status would read as the new revision
    // being Ready. It stays Progressing until the watch brings it.
    let just_written = |o: &Object| report.as_ref().is_some_and(|r| was_written(r, o));
    let mut awaiting_watch = false;
    let services: Vec<_> = rendered
        .objects
        .iter()
        .filter_map(|o| {
            let mut health = health::service_health(&context.live.workload(o, &namespace)?);
            if just_written(o) {
                health.complete = false;
                awaiting_watch = true;
            }
            Some(health)
        })
        .collect();
    let applied_ok = apply_error.is_none();
    let apply_error = apply_error.map(|source| ReconcileError::Apply {
        stack: stack_name,
        source,
    });
    // A newer commit that failed on the Git side is the news; else this apply's failure.
    let failure = git_failure.map(|f| f.failure).or_else(|| {
        apply_error
            .as_ref()
            .map(|e| Failure::new(Reason::ApplyFailed, e.to_string(), e.is_transient()))
    });
    let summary = report.as_ref().map(|r| {
        let mut summary = status::summary(&r.plan, Some(r), false);
        diffs.retain(|d| summary.updated.contains(&d.object));
        summary.diffs = diffs;
        summary
    });
    let observed = Observed {
        services,
        warnings: rendered.warnings.clone(),
        inventory: report
            .as_ref()
            .map(|r| r.inventory.clone())
            .unwrap_or_else(|| previous.inventory.clone()),
        kept,
        failure,
        applied_revision: applied_ok.then_some(spec_revision).flatten(),
        attempted_revision: attempted,
        handled_request: (forced && applied_ok).then(|| requested.clone()).flatten(),
        suspended: false,
        counts: summary.as_ref().map(status::Counts::of).unwrap_or_default(),
    };
    let new_status = status::build(stack, observed, now());
    let result = result_of(&new_status);
    finish(stack, context, new_status, summary, applied_ok).await?;

    match apply_error {
        Some(error) if error.is_transient() => Err(error),
        Some(_) => Ok(Done::new(Action::await_change(), result)),
        // The watch event of a written workload reconciles again; the short
        // requeue covers a write the server found to change nothing.
        None if awaiting_watch => Ok(Done::new(Action::requeue(WRITTEN_RECHECK), result)),
        None => Ok(Done::new(Action::requeue(context.options.resync), result)),
    }
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
        })
        .collect()
}

/// Objects whose hash matches the inventory but whose live object (from the
/// stores) is missing or differs in a rendered field: their inventory hash is
/// cleared so the plan updates them.
fn mark_drift(
    stack: &Stack,
    namespace: &str,
    rendered: &Rendered,
    inventory: &[InventoryEntry],
    live: &LiveStores,
) -> (Vec<InventoryEntry>, Vec<InventoryEntry>) {
    let mut marked = inventory.to_vec();
    let mut drifted = Vec::new();
    for object in &rendered.objects {
        let entry = entry_for(namespace, object);
        if !live::is_watched(&entry.kind) {
            continue;
        }
        let Some(known) = marked.iter_mut().find(|old| {
            (&old.kind, &old.namespace, &old.name) == (&entry.kind, &entry.namespace, &entry.name)
        }) else {
            continue;
        };
        if known.hash != entry.hash {
            continue;
        }
        let difference = match live.get(&entry) {
            None => Some("the object is missing".to_string()),
            Some(current) => {
                drift::difference(&desired_for_drift(object, &stack.spec.project), &current)
            }
        };
        if let Some(path) = difference {
            tracing::info!(object = %format!("{} {}/{}", entry.kind, namespace, entry.name), %path, "drift");
            known.hash = None;
            drifted.push(entry);
        }
    }
    (marked, drifted)
}

/// The rendered fields that count for drift. Replicas the renderer filled in
/// by default (compose sets neither `deploy.replicas` nor `scale`) belong to
/// whoever scales the workload (an HPA, `kubectl scale`), not to stackd.
fn desired_for_drift(object: &Object, project: &Project) -> serde_json::Value {
    let mut desired = object.to_json();
    let scalable = matches!(object, Object::Deployment(_) | Object::StatefulSet(_));
    let service = object
        .metadata()
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_LABEL));
    let compose_sets_replicas = service.is_none_or(|label| {
        project.services.iter().any(|(name, service)| {
            names_match(name, label)
                && (service.scale.is_some()
                    || service
                        .deploy
                        .as_ref()
                        .is_some_and(|d| d.replicas.is_some()))
        })
    });
    if scalable
        && !compose_sets_replicas
        && let Some(spec) = desired.get_mut("spec").and_then(|s| s.as_object_mut())
    {
        spec.remove("replicas");
    }
    desired
}

/// A compose service name and the (sanitised) service label of its objects.
fn names_match(compose_name: &str, label: &str) -> bool {
    compose_name == label || compose_name.to_lowercase().replace(['_', '.'], "-") == label
}

fn record_outcomes(context: &Context, report: &ApplyReport, drifted: &[InventoryEntry]) {
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

/// How soon to retry a stack reconciled before the reflectors finished their first list.
const STORES_NOT_READY_RETRY: Duration = Duration::from_millis(500);

/// Whether every reflector finished its first list: before that, every object
/// would look missing (drift). Never waits: the stores only fill while the
/// controller polls their streams, and a reconcile that blocked here would hold
/// a concurrency slot the trigger streams need (a deadlock at scale).
fn stores_ready(live: &LiveStores) -> bool {
    let ready = async {
        futures::join!(
            live.config_maps.wait_until_ready(),
            live.secrets.wait_until_ready(),
            live.services.wait_until_ready(),
            live.deployments.wait_until_ready(),
            live.stateful_sets.wait_until_ready(),
            live.daemon_sets.wait_until_ready(),
            live.jobs.wait_until_ready(),
            live.ingresses.wait_until_ready(),
            live.network_policies.wait_until_ready(),
        )
    };
    ready.now_or_never().is_some()
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
    let published = publish_events(stack, context, &new_status, summary.as_ref()).await;

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
    // The page's Events: the last ones published for this stack, in memory.
    let mut events = previous_view
        .as_ref()
        .map(|v| v.events.clone())
        .unwrap_or_default();
    events.extend(published);
    let excess = events.len().saturating_sub(crate::state::EVENTS_KEPT);
    events.drain(..excess);
    let last_plan = summary.or_else(|| previous_view.and_then(|v| v.last_plan));
    let mut view = status::view(stack, &new_status, last_sync, last_plan);
    view.events = events;
    context.handles.state.put_stack(view);
    if let Some(observation) = crate::notify::observation_of(stack, &new_status) {
        context.handles.state.observe(observation);
    }
    Ok(())
}

/// The newest history entry's commit subject, from the Git source's view of the
/// stack's repository when its head is that commit (the Stack does not carry it).
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
