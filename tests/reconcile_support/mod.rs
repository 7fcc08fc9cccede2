//! Shared setup for the reconciler tests: compose text → `DesiredStack`, a
//! controller running against the in-process API server, and waiting helpers.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use serde_json::json;
use stackd::crd::{SourceRef, StackStatus};
use stackd::metrics::Metrics;
use stackd::reconcile::{
    CacheSync, ControllerHandles, ControllerOptions, DesiredStack, ReconcileError, SecretStore,
    SyncPolicy, SyncReport, sync_repository,
};
use stackd::render::model::{Project, SecretValues};
use stackd::state::SharedState;
use tokio_util::sync::CancellationToken;

use crate::fake_api::{FakeApiServer, LoggedRequest, test_client};

pub const REPOSITORY: &str = "https://git.example.com/apps.git";

/// The normalised model of a web server and a database.
pub fn web_and_db() -> Value {
    json!({
        "services": {
            "web": {
                "image": "nginx:1.27",
                "ports": [{"target": 80, "published": 8080, "protocol": "tcp"}],
            },
            "db": {
                "image": "postgres:16",
                "environment": {"POSTGRES_PASSWORD": "example"},
            },
        },
    })
}

/// `project` with one service's image replaced.
pub fn with_image(mut project: Value, service: &str, image: &str) -> Value {
    project["services"][service]["image"] = json!(image);
    project
}

/// `project` without one service.
pub fn without(mut project: Value, service: &str) -> Value {
    if let Some(services) = project["services"].as_object_mut() {
        services.remove(service);
    }
    project
}

/// A stack from its normalised model, as the Git source would hand it over.
pub fn desired(namespace: &str, name: &str, project: Value, revision: &str) -> DesiredStack {
    DesiredStack {
        name: name.to_string(),
        namespace: namespace.to_string(),
        project: serde_json::from_value::<Project>(project).unwrap(),
        secrets: SecretValues::default(),
        source: SourceRef {
            repository: REPOSITORY.to_string(),
            path: name.to_string(),
            revision: revision.to_string(),
            subject: None,
        },
        prune: true,
        tenancy: Default::default(),
    }
}

pub fn test_options() -> ControllerOptions {
    ControllerOptions {
        debounce: Duration::from_millis(50),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
        // Long enough that no test passes because of a periodic resync.
        resync: Duration::from_secs(3600),
        identity: "test".into(),
        ..ControllerOptions::default()
    }
}

pub struct Harness {
    pub fake: FakeApiServer,
    pub client: kube::Client,
    pub handles: ControllerHandles,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// The fake API server with no controller yet; `None` on a real cluster
    /// (these tests need the request log).
    pub async fn new() -> Option<Harness> {
        let cluster = test_client().await;
        Some(Harness::on(cluster.fake?, cluster.client))
    }

    /// A harness on a fake API server started by the caller (benchmarks start
    /// one with latency), with no controller yet.
    pub fn on(fake: FakeApiServer, client: kube::Client) -> Harness {
        Harness {
            fake,
            client,
            handles: ControllerHandles {
                secrets: SecretStore::new(),
                state: SharedState::new(),
                metrics: Metrics::new(),
                caches: CacheSync::default(),
                failures: Default::default(),
                revisions: None,
            },
            cancel: CancellationToken::new(),
            task: None,
        }
    }

    pub async fn started(options: ControllerOptions) -> Option<Harness> {
        let mut harness = Harness::new().await?;
        harness.start(options);
        Some(harness)
    }

    pub fn start(&mut self, options: ControllerOptions) {
        self.cancel = CancellationToken::new();
        let run = stackd::reconcile::run(
            self.client.clone(),
            options,
            self.handles.clone(),
            self.cancel.clone(),
        );
        self.task = Some(tokio::spawn(run));
    }

    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    pub async fn sync(
        &self,
        stacks: Vec<DesiredStack>,
        policy: SyncPolicy,
    ) -> Result<SyncReport, ReconcileError> {
        sync_repository(
            &self.client,
            &self.handles.secrets,
            REPOSITORY,
            &stacks,
            policy,
        )
        .await
    }

    pub fn object(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        self.fake.object(api_version, kind, ns, name)
    }

    pub fn status(&self, ns: &str, name: &str) -> Option<StackStatus> {
        let stack = self.object("stackd.dev/v1alpha1", "Stack", ns, name)?;
        serde_json::from_value(stack.get("status")?.clone()).ok()
    }

    /// Waits until `check` holds, polling the fake's store (no requests).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Harness) -> bool) {
        let started = tokio::time::Instant::now();
        while !check(self) {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}; writes: {:#?}",
                write_paths(&self.fake.writes())
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until no write has happened for `quiet`: the controller settled.
    pub async fn settle(&self) {
        let quiet = Duration::from_millis(700);
        let started = tokio::time::Instant::now();
        let writes = || {
            // Lease renewals go on while leading: they are not the controller's writes.
            let all = self.fake.writes();
            all.iter().filter(|r| !r.path.contains("/leases/")).count()
        };
        let mut count = writes();
        let mut since = tokio::time::Instant::now();
        while since.elapsed() < quiet {
            assert!(started.elapsed() < Duration::from_secs(20), "never settled");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = writes();
            if now != count {
                count = now;
                since = tokio::time::Instant::now();
            }
        }
    }

    /// Reconciles that finished (any result) for a stack, from the metrics.
    pub fn reconciles(&self, ns: &str, name: &str) -> u64 {
        let metrics = &self.handles.metrics;
        [
            "success",
            "write_status",
            "apply",
            "missing_image",
            "suspended",
        ]
        .iter()
        .map(|r| {
            metrics
                .reconcile_total
                .get_metric_with_label_values(&[name, ns, r])
                .map(|c| c.get())
                .unwrap_or(0)
        })
        .sum()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `METHOD path` of each request, for readable assertions.
pub fn write_paths(requests: &[LoggedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Writes to objects stackd renders (not the Stack, its status, or Events).
pub fn object_writes(requests: &[LoggedRequest]) -> Vec<String> {
    write_paths(requests)
        .into_iter()
        .filter(|p| !p.contains("/stacks") && !p.contains("/events"))
        .collect()
}
