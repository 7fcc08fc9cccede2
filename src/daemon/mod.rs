//! `stackd run`: the Git source, the reconciler and the HTTP surface on one
//! runtime, with one shutdown.
//!
//! With `--dry-run` nothing is written anywhere: every stack is rendered and
//! planned against what the previous plan left (an empty cluster at first), and
//! the plans are shown on the status page. That is the built-in target when no
//! cluster is reachable.

pub mod dry_run;
pub mod live;
pub mod rate_limit;
pub mod readiness;
pub mod stacks;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, RepositoryPolicy};
use crate::crd::StackPhase;
use crate::git::source::{
    PollResult, RepositoryState, RepositoryUpdate, Source, SourceEvent, SourceHandle, SourceOptions,
};
use crate::http::{AppState, SourceControl, metrics_router, router, serve};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::reconcile::GitFailures;
use crate::reconcile::leader::LeaderElection;
use crate::reconcile::shards::{self, ShardElection, ShardHolders};
use crate::reconcile::{CacheSync, ControllerHandles, ControllerOptions, SecretStore};
use crate::render::{self, RenderOptions};
use crate::state::{RepositoryView, SharedState, StackView};
use crate::tenancy;
use kube::Client;

use self::dry_run::{DryRunCluster, planned_view};
use self::live::{GitSync, SourceWatch};
use self::readiness::ControllerRole;
use self::stacks::load_stacks;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: Config,
    /// The file `config` came from; watched and reloaded when it changes.
    pub config_file: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// A separate listener for `/metrics`; `None` serves it on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    pub dry_run: bool,
    /// Run the writing loops only while holding this Lease.
    pub leader_election: Option<LeaderSettings>,
    /// The namespace stackd runs in, which stacks may not use unless listed exactly.
    pub own_namespace: Option<String>,
    /// Client-side rate limit of API requests (`--kube-qps`, `--kube-burst`); 0 turns it off.
    pub kube_qps: f64,
    pub kube_burst: u32,
    /// `--shards N`: hold some of the Leases `stackd-shard-0 … N-1` (in the
    /// leader-election namespace, as this identity) and work on those shards only.
    pub shards: Option<u32>,
    /// How long a Lease lasts without renewal (`--lease-duration`).
    pub lease_duration: Duration,
}

/// Where the leader-election Lease lives and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaderSettings {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {address}: {message}")]
    Listen {
        address: SocketAddr,
        message: String,
    },
    #[error("{file}: cannot read the API token: {message}")]
    ApiToken { file: PathBuf, message: String },
    #[error("git source: {0}")]
    Source(String),
    #[error("HTTP server: {0}")]
    Serve(String),
    #[error(
        "no Kubernetes cluster configuration found ({0}); run with --dry-run to follow the repositories, render and plan without a cluster"
    )]
    NoKubeconfig(String),
    #[error(
        "no Kubernetes cluster is reachable at {server}: {cause}; run with --dry-run to follow the repositories, render and plan without a cluster"
    )]
    NoCluster { server: String, cause: String },
}

impl DaemonError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DaemonError::Listen { .. } => "listen",
            DaemonError::ApiToken { .. } => "api_token",
            DaemonError::Source(_) => "source",
            DaemonError::Serve(_) => "serve",
            DaemonError::NoKubeconfig(_) | DaemonError::NoCluster { .. } => "no_cluster",
        }
    }
}

/// The running Git source, replaced when the configuration changes; HTTP
/// handlers always reach the current one.
#[derive(Clone)]
struct CurrentSource(Arc<std::sync::RwLock<SourceHandle>>);

impl CurrentSource {
    fn get(&self) -> SourceHandle {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, handle: SourceHandle) -> SourceHandle {
        std::mem::replace(
            &mut *self.0.write().unwrap_or_else(|e| e.into_inner()),
            handle,
        )
    }
}

impl SourceControl for CurrentSource {
    fn trigger(&self, repository: &str) -> bool {
        SourceControl::trigger(&self.get(), repository)
    }

    fn webhook(
        &self,
        provider: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> (http::StatusCode, &'static str) {
        SourceControl::webhook(&self.get(), provider, headers, body)
    }
}

/// What turns a new commit into work: a plan only, or Stacks for the controller.
enum Reconciler {
    DryRun(Box<DryRunReconciler>),
    Live { sync: Arc<GitSync> },
}

impl Reconciler {
    fn apply_update(&mut self, update: &RepositoryUpdate, policy: &RepositoryPolicy) {
        // Every log line of this commit's work carries the repository and commit.
        let _span =
            tracing::info_span!("commit", repository = %update.repository, commit = %update.commit)
                .entered();
        match self {
            Reconciler::DryRun(reconciler) => reconciler.apply_update(update, policy),
            Reconciler::Live { sync } => {
                info!(repository = %update.repository, commit = %update.commit, stacks = update.stacks.len(), "new commit");
                sync.offer(update, policy);
            }
        }
    }
}

/// Runs until `shutdown` resolves, then stops accepting requests, finishes
/// in-flight work, stops the source and releases the lease.
pub async fn run(
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // Leases get a client of their own, outside the rate limit, as client-go's
    // leader election does: behind thousands of queued writes a renewal would
    // miss its deadline and the replica would drop work it still holds.
    let (client, lease_client) = if options.dry_run {
        (None, None)
    } else {
        let identity = options
            .leader_election
            .as_ref()
            .map(|l| l.identity.as_str());
        let unlimited = connect(&user_agent(identity)).await?;
        let limited =
            rate_limit::rate_limited(unlimited.clone(), options.kube_qps, options.kube_burst);
        (Some(limited), Some(unlimited))
    };
    let state = SharedState::new();
    let metrics = Metrics::new();
    let mut config = options.config.clone();
    let (handle, mut events) = spawn_source(&config, &options.data_dir)?;
    let current = CurrentSource(Arc::new(std::sync::RwLock::new(handle)));

    let mut app = AppState::new(state.clone(), metrics.clone());
    app.source = Some(Arc::new(current.clone()));
    if let Some(file) = &config.settings.api_token_file {
        let token = std::fs::read_to_string(file).map_err(|e| DaemonError::ApiToken {
            file: file.clone(),
            message: e.to_string(),
        })?;
        app.api_token = Some(Arc::from(token.trim()));
    }
    let readiness = app.readiness.clone();

    let stop = CancellationToken::new();
    let mut servers = Vec::new();
    let listener = bind(options.listen).await?;
    info!(address = %options.listen, dry_run = options.dry_run, "serving the status page, API and webhooks");
    servers.push(tokio::spawn(serve(
        listener,
        router(app.clone(), options.metrics_listen.is_none()),
        stop.clone().cancelled_owned(),
    )));
    if let Some(address) = options.metrics_listen {
        let listener = bind(address).await?;
        info!(%address, "serving /metrics");
        servers.push(tokio::spawn(serve(
            listener,
            metrics_router(app),
            stop.clone().cancelled_owned(),
        )));
    }
    let shutdown_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        shutdown_signal.cancel();
    });

    let (render_settings, render_receiver) = tokio::sync::watch::channel(render_options(&config));
    let mut workers = Vec::new();
    let caches = CacheSync::default();
    let role = match (&client, &options.leader_election) {
        (None, _) => ControllerRole::None,
        (Some(_), None) => ControllerRole::Always,
        (Some(_), Some(_)) => ControllerRole::WhenLeading,
    };
    // What the Git side finds wrong, for the controller to write into each Stack.
    let failures = GitFailures::new();
    let mut source_watch = SourceWatch::default();
    let mut notifier = None;
    let mut reconciler = match client {
        None => Reconciler::DryRun(Box::new(DryRunReconciler {
            state: state.clone(),
            metrics: metrics.clone(),
            cluster: DryRunCluster::default(),
            render_options: render_options(&config),
            stacks_of: BTreeMap::new(),
        })),
        Some(client) => {
            // Without an election this replica reconciles from the start.
            let observer =
                start_notifier(&config, &metrics, &state, options.leader_election.is_none());
            notifier = Some(observer.clone());
            let holders = match (options.shards, &options.leader_election) {
                (Some(shards), Some(leader)) => {
                    let holders = ShardHolders::new(shards, &leader.identity);
                    state.set_shards(holders.clone());
                    // The page shows the stacks other replicas hold too.
                    let (client, state, stop) = (client.clone(), state.clone(), stop.clone());
                    workers.push(tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = crate::reconcile::peers::watch(client, state) => {}
                        }
                    }));
                    Some(holders)
                }
                _ => None,
            };
            let mut sync = GitSync::new(
                options.own_namespace.clone(),
                state.clone(),
                failures.clone(),
            )
            .with_render_options(render_receiver.clone());
            if let Some(holders) = &holders {
                sync = sync.with_shards(holders.clone());
            }
            let sync = Arc::new(sync);
            let handles = ControllerHandles {
                secrets: SecretStore::new(),
                state: state.clone(),
                metrics: metrics.clone(),
                caches: caches.clone(),
                failures: failures.clone(),
                revisions: Some(Arc::new(live::MirrorRevisions {
                    sync: sync.clone(),
                    data_dir: options.data_dir.clone(),
                })),
            };
            let controller_options = ControllerOptions {
                render: render_receiver,
                identity: options
                    .leader_election
                    .as_ref()
                    .map(|l| l.identity.clone())
                    .unwrap_or_else(|| "stackd".to_string()),
                ..ControllerOptions::default()
            };
            let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let work = {
                let (client, sync) = (client.clone(), sync.clone());
                move |shard: Option<u32>, leading: CancellationToken| {
                    let (client, sync, mut handles, mut controller_options) = (
                        client.clone(),
                        sync.clone(),
                        handles.clone(),
                        controller_options.clone(),
                    );
                    controller_options.shard = shard;
                    if shard.is_some() {
                        // Each shard's caches list on their own; /readyz follows none of them.
                        handles.caches = CacheSync::default();
                    }
                    let (observer, active) = (observer.clone(), active.clone());
                    async move {
                        // Only a replica that reconciles reports outcomes (of its own stacks).
                        active.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        observer.set_active(true);
                        let git = {
                            let (client, secrets, leading) =
                                (client.clone(), handles.secrets.clone(), leading.clone());
                            tokio::spawn(
                                async move { sync.run(client, secrets, leading, shard).await },
                            )
                        };
                        crate::reconcile::run(client, controller_options, handles, leading).await;
                        let _ = git.await;
                        if active.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                            observer.set_active(false);
                        }
                    }
                }
            };
            let stop = stop.clone();
            let timing = shards::timing_for(options.lease_duration);
            workers.push(match (&options.leader_election, holders) {
                (Some(leader), Some(holders)) => {
                    let election = ShardElection::new(
                        lease_client.clone().unwrap_or_else(|| client.clone()),
                        &leader.namespace,
                        holders.shards(),
                        &leader.identity,
                        timing,
                        holders,
                        metrics.clone(),
                    );
                    tokio::spawn(async move {
                        election
                            .run(stop, move |shard, token| work(Some(shard), token))
                            .await
                    })
                }
                (Some(leader), None) => {
                    let election = LeaderElection::new(
                        lease_client.clone().unwrap_or_else(|| client.clone()),
                        &leader.namespace,
                        &leader.lease_name,
                        &leader.identity,
                        timing,
                    );
                    tokio::spawn(async move {
                        election.lead(stop, move |token| work(None, token)).await
                    })
                }
                (None, _) => tokio::spawn(work(None, stop)),
            });
            Reconciler::Live { sync }
        }
    };

    let mut reloads = match &options.config_file {
        Some(file) => watch_config(file),
        None => None,
    };
    // Read the file once more now that it is watched: an edit made between the
    // first read and the watch would otherwise wait for the next edit.
    let mut reload_at = reloads.as_ref().map(|_| tokio::time::Instant::now());
    let mut polls_seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut publish = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            event = events.recv() => match event {
                Some(SourceEvent::Updated(update)) => {
                    let policy = policy_of(&config, &update.repository);
                    reconciler.apply_update(&update, &policy);
                }
                Some(SourceEvent::Failed { repository, error, .. }) => {
                    warn!(%repository, error = %error, "poll failed; the last good commit stays in effect");
                }
                // The source was replaced by a reload; the new receiver is in `events` already.
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(()) = next_reload(&mut reloads) => {
                // Bursts of file events settle first: each event moves the deadline.
                reload_at = Some(tokio::time::Instant::now() + RELOAD_SETTLE);
            }
            _ = sleep_until_some(reload_at), if reload_at.is_some() => {
                reload_at = None;
                let Some(file) = &options.config_file else { continue };
                match Config::load(file) {
                    Err(error) => {
                        warn!(%error, "configuration not reloaded; the previous one stays in force");
                        state.set_config_error(Some(error.to_string()));
                    }
                    Ok(new) if new == config => state.set_config_error(None),
                    Ok(new) => {
                        let (handle, receiver) = match spawn_source(&new, &options.data_dir) {
                            Ok(started) => started,
                            Err(error) => {
                                state.set_config_error(Some(error.to_string()));
                                continue;
                            }
                        };
                        current.replace(handle).shutdown();
                        events = receiver;
                        let names: BTreeSet<String> = new.repositories.iter().map(|r| r.source.name.clone()).collect();
                        state.retain_repositories(&names);
                        if let Reconciler::Live { sync, .. } = &reconciler {
                            sync.retain(&names);
                        }
                        source_watch.retain(&failures, &names);
                        // The controller reconciles every stack when these change; dry
                        // runs render each new commit, and the new source polls at once.
                        let settings = render_options(&new);
                        render_settings.send_if_modified(|current| {
                            let changed = *current != settings;
                            *current = settings.clone();
                            changed
                        });
                        if let Reconciler::DryRun(dry_run) = &mut reconciler {
                            dry_run.render_options = settings;
                        }
                        if let Some(observer) = &notifier {
                            observer.configure(crate::notify::Settings::of(&new).unwrap_or_default());
                        }
                        info!(repositories = names.len(), "configuration reloaded");
                        state.set_config_error(None);
                        config = new;
                    }
                }
            }
            _ = publish.tick() => {
                let states = current.get().states();
                for repository in &states {
                    publish_repository(&state, &metrics, repository, &mut polls_seen);
                }
                let polls = states.iter().map(|r| live::Poll::of(r, interval_of(&config, &r.name)));
                source_watch.update(&failures, polls, std::time::Instant::now());
                readiness.set_missing(readiness::missing(&readiness::unpolled(&states), &caches.state(), role));
            }
        }
    }
    info!("shutting down");
    readiness.set_missing(vec!["shutting down".to_string()]);
    current.get().shutdown();
    for worker in workers {
        let _ = worker.await;
    }
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DaemonError::Serve(e.to_string())),
            Err(e) => return Err(DaemonError::Serve(e.to_string())),
        }
    }
    Ok(())
}

/// Starts sending commit statuses and notifications, and points the shared
/// state's outcome hook at them. Unless `active`, nothing is sent until this
/// replica leads.
fn start_notifier(
    config: &Config,
    metrics: &Metrics,
    state: &SharedState,
    active: bool,
) -> crate::notify::Observer {
    // The configuration was validated when loaded: this cannot fail.
    let settings = crate::notify::Settings::of(config).unwrap_or_default();
    let observer = crate::notify::spawn(
        settings,
        metrics.clone(),
        crate::notify::send::SendPolicy::default(),
    );
    observer.set_active(active);
    state.set_observer(observer.clone());
    observer
}

/// `stackd/<version> (<identity>)`: the API server's audit log (and a test's
/// request log) then tells which replica made each request.
fn user_agent(identity: Option<&str>) -> String {
    let version = env!("CARGO_PKG_VERSION");
    match identity {
        Some(identity) => format!("stackd/{version} ({identity})"),
        None => format!("stackd/{version}"),
    }
}

/// A client for the cluster kube finds (KUBECONFIG, ~/.kube/config or in-cluster),
/// checked by asking for the server's version.
async fn connect(user_agent: &str) -> Result<Client, DaemonError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| DaemonError::NoKubeconfig(e.to_string()))?;
    if let Ok(value) = http::HeaderValue::from_str(user_agent) {
        config.headers.push((http::header::USER_AGENT, value));
    }
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let unreachable = |cause: String| DaemonError::NoCluster {
        server: server.clone(),
        cause,
    };
    let client = Client::try_from(config).map_err(|e| unreachable(e.to_string()))?;
    client
        .apiserver_version()
        .await
        .map_err(|e| unreachable(cluster_cause(&e)))?;
    Ok(client)
}

/// Why the API server could not be used, in words: connection refused, DNS,
/// TLS, a timeout, 401 or 403. kube's own message for most of these is only
/// `ServiceError: client error (Connect)`; the cause is further down the chain.
fn cluster_cause(error: &kube::Error) -> String {
    if let kube::Error::Api(status) = error {
        return match status.code {
            401 => format!(
                "401 Unauthorized: the server refused the credentials ({})",
                status.message
            ),
            403 => format!(
                "403 Forbidden: the credentials may not read the server version ({})",
                status.message
            ),
            code => format!("{code} {}: {}", status.reason, status.message),
        };
    }
    let mut chain = Vec::new();
    let mut refused = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        chain.push(current.to_string());
        source = current.source();
    }
    let deepest = chain.last().cloned().unwrap_or_default();
    let text = chain.join(": ").to_lowercase();
    if refused || text.contains("connection refused") {
        "connection refused".to_string()
    } else if text.contains("dns error") || text.contains("failed to lookup address") {
        format!("DNS lookup failed: {deepest}")
    } else if ["certificate", "tls", "handshake", "rustls"]
        .iter()
        .any(|w| text.contains(w))
    {
        format!("TLS: {deepest}")
    } else if text.contains("timed out") || text.contains("elapsed") {
        format!("timed out: {deepest}")
    } else {
        deepest
    }
}

fn spawn_source(
    config: &Config,
    data_dir: &std::path::Path,
) -> Result<(SourceHandle, tokio::sync::mpsc::Receiver<SourceEvent>), DaemonError> {
    let settings = config
        .repositories
        .iter()
        .map(|r| r.source.clone())
        .collect();
    Source::spawn(settings, data_dir, SourceOptions::default())
        .map_err(|e| DaemonError::Source(e.to_string()))
}

fn render_options(config: &Config) -> RenderOptions {
    RenderOptions {
        allow_host_path: config.settings.allow_host_path,
        published_service_type: config.settings.published_service_type.into(),
    }
}

fn interval_of(config: &Config, repository: &str) -> Duration {
    config
        .repositories
        .iter()
        .find(|r| r.source.name == repository)
        .map_or(Duration::from_secs(60), |r| r.source.interval)
}

fn policy_of(config: &Config, repository: &str) -> RepositoryPolicy {
    let mut policy = config
        .repositories
        .iter()
        .find(|r| r.source.name == repository)
        .map(|r| r.policy.clone())
        .unwrap_or_else(default_policy);
    if policy.service_account_name.is_none() {
        policy.service_account_name = config.settings.default_service_account_name.clone();
    }
    policy
}

/// Watches the configuration file's directory: a mounted ConfigMap changes by
/// swapping a symlink, which a watch on the file itself would miss.
fn watch_config(
    file: &std::path::Path,
) -> Option<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)> {
    use notify::Watcher;
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already means "reload pending".
            let _ = sender.try_send(());
        }
    })
    .map_err(|e| warn!(error = %e, "cannot watch the configuration file; it will not be reloaded"))
    .ok()?;
    let directory = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    watcher
        .watch(directory, notify::RecursiveMode::NonRecursive)
        .map_err(
            |e| warn!(error = %e, "cannot watch the configuration file; it will not be reloaded"),
        )
        .ok()?;
    Some((watcher, receiver))
}

/// How long the configuration file must be quiet before it is read again.
const RELOAD_SETTLE: Duration = Duration::from_millis(200);

/// The next change of the configuration file. Cancel-safe (it only receives):
/// the main loop's `select!` drops it whenever another branch wins, so it must
/// not consume an event and then wait, or that change would be lost.
async fn next_reload(
    reloads: &mut Option<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)>,
) -> Option<()> {
    match reloads {
        Some((_, receiver)) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| DaemonError::Listen {
            address,
            message: e.to_string(),
        })
}

fn default_policy() -> RepositoryPolicy {
    serde_json::from_value(serde_json::json!({})).expect("every policy field has a default")
}

/// Poll and fetch counts already turned into metrics, per repository.
#[derive(Default)]
struct Seen {
    polls: u64,
    fetches: u64,
}

/// Shows a repository's poll state and counts new polls in the metrics.
fn publish_repository(
    state: &SharedState,
    metrics: &Metrics,
    repository: &RepositoryState,
    polls_seen: &mut BTreeMap<String, Seen>,
) {
    let result = repository.last_result.map(|r| match r {
        PollResult::Unchanged => "unchanged",
        PollResult::Updated => "fetched",
        PollResult::ForcePushed => "force_pushed",
        // A hung remote is told apart from other failures.
        PollResult::Failed if repository.last_error_label.as_deref() == Some("timeout") => {
            "timeout"
        }
        // A commit refused for its signature (`verify:`).
        PollResult::Failed if repository.last_error_label.as_deref() == Some("unverified") => {
            "unverified"
        }
        PollResult::Failed => "failed",
    });
    let seen = polls_seen.entry(repository.name.clone()).or_default();
    if repository.polls > seen.polls {
        metrics
            .git_poll_total
            .with_label_values(&[repository.name.as_str(), result.unwrap_or("unknown")])
            .inc_by(repository.polls - seen.polls);
        seen.polls = repository.polls;
    }
    if repository.fetches > seen.fetches
        && let Some(millis) = repository.last_fetch_ms
    {
        metrics
            .git_fetch_duration_seconds
            .with_label_values(&[repository.name.as_str()])
            .observe(millis as f64 / 1000.0);
        seen.fetches = repository.fetches;
    }
    state.put_repository(RepositoryView {
        name: repository.name.clone(),
        url: repository.url.clone(),
        git_ref: repository.git_ref.clone(),
        commit: repository.commit.clone(),
        subject: repository.subject.clone(),
        last_poll: repository.last_poll,
        last_result: result.map(str::to_string),
        next_poll: repository.next_poll,
        last_error: repository.last_error.clone(),
    });
}

/// Renders and plans every stack of each new commit, without a cluster.
struct DryRunReconciler {
    state: SharedState,
    metrics: Metrics,
    cluster: DryRunCluster,
    render_options: RenderOptions,
    /// The stacks each repository had at its last commit.
    stacks_of: BTreeMap<String, BTreeSet<(String, String)>>,
}

impl DryRunReconciler {
    fn apply_update(&mut self, update: &RepositoryUpdate, policy: &RepositoryPolicy) {
        info!(repository = %update.repository, commit = %update.commit, stacks = update.stacks.len(), "new commit");
        let mut present = BTreeSet::new();
        for stack in load_stacks(update, policy) {
            let _span =
                tracing::info_span!("stack", stack = %stack.name, namespace = %stack.namespace)
                    .entered();
            let key = (stack.namespace.clone(), stack.name.clone());
            present.insert(key.clone());
            let started = Instant::now();
            let base = self
                .state
                .stack(&stack.namespace, &stack.name)
                .unwrap_or_else(|| StackView {
                    namespace: stack.namespace.clone(),
                    name: stack.name.clone(),
                    ..StackView::default()
                });
            let base = StackView {
                repository: Some(update.repository.clone()),
                path: Some(stack.source.path.clone()),
                revision: Some(update.commit.clone()),
                ..base
            };
            // Without a cluster only the fixed names of the namespace rule can be judged.
            let namespace_check = tenancy::check_fixed(&stack.namespace, &policy.namespaces)
                .map_err(|refusal| {
                    (
                        Reason::NamespaceNotAllowed,
                        format!("{}: {refusal}", stack.file),
                    )
                });
            let outcome = namespace_check
                .and(
                    stack
                        .result
                        .map_err(|e| (stacks::load_reason(&e), e.to_string())),
                )
                .and_then(|(project, secrets)| {
                    let services = project.services.len() as u32;
                    let mut object = render::stack_for(
                        &stack.name,
                        &stack.namespace,
                        project,
                        Some(stack.source.clone()),
                    );
                    object.spec.pod_security = stack.pod_security;
                    object.spec.network_policies = stack.network_policies;
                    render::render(&object, &secrets, &self.render_options)
                        .map(|rendered| (rendered, services))
                        .map_err(|e| (Reason::RenderFailed, e.to_string()))
                });
            let view = match outcome {
                _ if stack.suspended => StackView {
                    message: Some("suspended: not reconciled".into()),
                    reason: Some(Reason::Suspended),
                    ..base
                },
                Ok((rendered, services)) => {
                    let (plan, inventory) =
                        self.cluster
                            .plan(&stack.namespace, &stack.name, &rendered, policy.prune);
                    self.metrics
                        .reconcile_total
                        .with_label_values(&[
                            stack.name.as_str(),
                            stack.namespace.as_str(),
                            "success",
                        ])
                        .inc();
                    self.metrics
                        .last_successful_sync_timestamp_seconds
                        .with_label_values(&[stack.namespace.as_str(), stack.name.as_str()])
                        .set(Utc::now().timestamp() as f64);
                    planned_view(
                        StackView {
                            services_total: services,
                            reason: None,
                            ..base
                        },
                        &rendered,
                        plan,
                        inventory,
                    )
                }
                // A failed render keeps the last plan and objects: nothing is pruned.
                Err((reason, message)) => {
                    warn!(stack = %stack.name, namespace = %stack.namespace, error = %message, "render failed");
                    self.metrics
                        .reconcile_result(&stack.namespace, &stack.name, reason.label());
                    StackView {
                        phase: StackPhase::Failure,
                        reason: Some(reason),
                        last_attempted_revision: Some(update.commit.clone()),
                        message: Some(
                            "the stack does not render; the last applied objects stay".into(),
                        ),
                        last_error: Some(message),
                        last_sync: Some(Utc::now()),
                        ..base
                    }
                }
            };
            let reason = view.reason.unwrap_or(match view.phase {
                StackPhase::Available => Reason::Available,
                _ => Reason::Progressing,
            });
            self.metrics.set_stack(
                &view.namespace,
                &view.name,
                view.phase,
                reason,
                view.services_ready,
                view.services_total,
            );
            self.metrics
                .reconcile_duration_seconds
                .with_label_values(&[stack.name.as_str(), stack.namespace.as_str()])
                .observe(started.elapsed().as_secs_f64());
            self.state.put_stack(view);
        }
        let previous = self
            .stacks_of
            .insert(update.repository.clone(), present.clone())
            .unwrap_or_default();
        for (namespace, name) in previous.difference(&present) {
            if policy.prune && policy.allow_empty {
                self.state.remove_stack(namespace, name);
                self.metrics.remove_stack(namespace, name);
                self.cluster.forget(namespace, name);
            } else if let Some(view) = self.state.stack(namespace, name) {
                // Never delete a stack because its directory vanished, unless allowed.
                self.state.put_stack(StackView {
                    message: Some(
                        "no longer in Git; kept because allowEmpty is off for this repository"
                            .into(),
                    ),
                    ..view
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("denied", reason).with_code(code),
        ))
    }

    #[test]
    fn the_cause_of_an_unreachable_cluster_is_said_in_words() {
        let refused = kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(cluster_cause(&refused), "connection refused");
        let dns = kube::Error::Service(Box::new(std::io::Error::other(
            "dns error: failed to lookup address information: Name or service not known",
        )));
        assert!(
            cluster_cause(&dns).starts_with("DNS lookup failed: "),
            "{}",
            cluster_cause(&dns)
        );
        let tls = kube::Error::Service(Box::new(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        )));
        assert_eq!(
            cluster_cause(&tls),
            "TLS: invalid peer certificate: UnknownIssuer"
        );
        assert!(cluster_cause(&status(401, "Unauthorized")).starts_with("401 Unauthorized"));
        assert!(cluster_cause(&status(403, "Forbidden")).starts_with("403 Forbidden"));
    }
}
