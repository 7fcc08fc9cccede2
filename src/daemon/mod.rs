//! `stackd run`: the Git source, the reconciler and the HTTP surface on one
//! runtime, with one shutdown.
//!
//! With `--dry-run` nothing is written anywhere: every stack is rendered and
//! planned against what the previous plan left (an empty cluster at first), and
//! the plans are shown on the status page. That is the built-in target when no
//! cluster is reachable.

pub mod dry_run;
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
    PollResult, RepositoryState, RepositoryUpdate, Source, SourceEvent, SourceOptions,
};
use crate::http::{AppState, metrics_router, router, serve};
use crate::metrics::Metrics;
use crate::render::{self, RenderOptions};
use crate::state::{RepositoryView, SharedState, StackView};

use self::dry_run::{DryRunCluster, planned_view};
use self::stacks::load_stacks;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: Config,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// A separate listener for `/metrics`; `None` serves it on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    pub dry_run: bool,
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
        "writing to a cluster needs the reconciler, which this build of stackd does not include yet; run with --dry-run to render and plan without writing"
    )]
    LiveModeUnavailable,
}

impl DaemonError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DaemonError::Listen { .. } => "listen",
            DaemonError::ApiToken { .. } => "api_token",
            DaemonError::Source(_) => "source",
            DaemonError::Serve(_) => "serve",
            DaemonError::LiveModeUnavailable => "live_mode_unavailable",
        }
    }
}

/// Runs until `shutdown` resolves, then stops accepting requests, finishes
/// in-flight work and stops the source.
pub async fn run(
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    if !options.dry_run {
        return Err(DaemonError::LiveModeUnavailable);
    }
    let state = SharedState::new();
    let metrics = Metrics::new();
    let config = &options.config;
    let settings = config
        .repositories
        .iter()
        .map(|r| r.source.clone())
        .collect();
    let (handle, mut events) = Source::spawn(settings, &options.data_dir, SourceOptions::default())
        .map_err(|e| DaemonError::Source(e.to_string()))?;

    let mut app = AppState::new(state.clone(), metrics.clone());
    app.source = Some(Arc::new(handle.clone()));
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
    info!(address = %options.listen, "serving the status page, API and webhooks");
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

    let policies: BTreeMap<String, RepositoryPolicy> = config
        .repositories
        .iter()
        .map(|r| (r.source.name.clone(), r.policy.clone()))
        .collect();
    let render_options = RenderOptions {
        allow_host_path: config.settings.allow_host_path,
        published_service_type: config.settings.published_service_type.into(),
    };
    let mut reconciler = DryRunReconciler {
        state: state.clone(),
        metrics: metrics.clone(),
        cluster: DryRunCluster::default(),
        render_options,
        stacks_of: BTreeMap::new(),
    };
    let mut polls_seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut publish = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            event = events.recv() => match event {
                Some(SourceEvent::Updated(update)) => {
                    let policy = policies.get(&update.repository).cloned().unwrap_or_else(default_policy);
                    reconciler.apply_update(&update, &policy);
                }
                Some(SourceEvent::Failed { repository, error, .. }) => {
                    warn!(%repository, error = %error, "poll failed; the last good commit stays in effect");
                }
                None => break,
            },
            _ = publish.tick() => {
                let states = handle.states();
                for repository in &states {
                    publish_repository(&state, &metrics, repository, &mut polls_seen);
                }
                readiness.set(states.iter().all(|s| s.last_poll.is_some()));
            }
        }
    }
    info!("shutting down");
    readiness.set(false);
    handle.shutdown();
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DaemonError::Serve(e.to_string())),
            Err(e) => return Err(DaemonError::Serve(e.to_string())),
        }
    }
    Ok(())
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

/// Shows a repository's poll state and counts new polls in the metrics.
fn publish_repository(
    state: &SharedState,
    metrics: &Metrics,
    repository: &RepositoryState,
    polls_seen: &mut BTreeMap<String, u64>,
) {
    let result = repository.last_result.map(|r| match r {
        PollResult::Unchanged => "unchanged",
        PollResult::Updated => "fetched",
        PollResult::ForcePushed => "force_pushed",
        PollResult::Failed => "failed",
    });
    let seen = polls_seen.entry(repository.name.clone()).or_default();
    if repository.polls > *seen {
        metrics
            .git_poll_total
            .with_label_values(&[repository.name.as_str(), result.unwrap_or("unknown")])
            .inc_by(repository.polls - *seen);
        *seen = repository.polls;
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
            let outcome = stack
                .result
                .map_err(|e| (e.label(), e.to_string()))
                .and_then(|(project, secrets)| {
                    let services = project.services.len() as u32;
                    let object = render::stack_for(
                        &stack.name,
                        &stack.namespace,
                        project,
                        Some(stack.source.clone()),
                    );
                    render::render(&object, &secrets, &self.render_options)
                        .map(|rendered| (rendered, services))
                        .map_err(|e| (e.label(), e.to_string()))
                });
            let view = match outcome {
                _ if stack.suspended => StackView {
                    message: Some("suspended: not reconciled".into()),
                    ..base
                },
                Ok((rendered, services)) => {
                    let (plan, inventory) =
                        self.cluster.plan(&stack.namespace, &stack.name, &rendered);
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
                            ..base
                        },
                        &rendered,
                        plan,
                        inventory,
                    )
                }
                // A failed render keeps the last plan and objects: nothing is pruned.
                Err((label, message)) => {
                    warn!(stack = %stack.name, namespace = %stack.namespace, error = %message, "render failed");
                    self.metrics
                        .reconcile_total
                        .with_label_values(&[stack.name.as_str(), stack.namespace.as_str(), label])
                        .inc();
                    StackView {
                        phase: StackPhase::Failure,
                        message: Some(
                            "the stack does not render; the last applied objects stay".into(),
                        ),
                        last_error: Some(message),
                        last_sync: Some(Utc::now()),
                        ..base
                    }
                }
            };
            self.metrics.set_stack(
                &view.namespace,
                &view.name,
                view.phase,
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
