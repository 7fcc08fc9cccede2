//! The controller against the in-process API server, for the tests that read
//! its request log, inject faults or hold its watches back.

use std::time::Duration;

use serde_json::Value;
use stackd::crd::StackStatus;
use stackd::reconcile::{
    ControllerHandles, ControllerOptions, DesiredStack, ReconcileError, SyncPolicy, SyncReport,
    sync_repository,
};

use super::controller::{Running, controller_writes, handles, quiet_for};
use super::{PRUNE, REPOSITORY, write_paths};
use crate::fake_api::{FakeApiServer, test_client};

pub struct Harness {
    pub fake: FakeApiServer,
    pub client: kube::Client,
    pub handles: ControllerHandles,
    running: Running,
}

impl Harness {
    /// The fake API server with no controller yet; `None` on a real cluster,
    /// after saying the test is skipped (these tests need the request log).
    pub async fn new() -> Option<Harness> {
        let cluster = test_client().await;
        let Some(fake) = cluster.fake else {
            eprintln!("real cluster: skipping (needs the request log)");
            return None;
        };
        Some(Harness::on(fake, cluster.client))
    }

    /// A harness on a fake API server started by the caller (benchmarks start
    /// one with latency), with no controller yet.
    pub fn on(fake: FakeApiServer, client: kube::Client) -> Harness {
        Harness {
            fake,
            client,
            handles: handles(),
            running: Running::default(),
        }
    }

    pub async fn started(options: ControllerOptions) -> Option<Harness> {
        let mut harness = Harness::new().await?;
        harness.start(options);
        Some(harness)
    }

    pub fn start(&mut self, options: ControllerOptions) {
        self.running.start(&self.client, options, &self.handles);
    }

    pub async fn stop(&mut self) {
        self.running.stop().await;
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

    /// Syncs one stack (prune on) and waits until its revision is applied and
    /// the controller settled.
    pub async fn deployed(&self, stack: DesiredStack) {
        let (ns, name) = (stack.namespace.clone(), stack.name.clone());
        let revision = stack.source.revision.clone();
        self.sync(vec![stack], PRUNE).await.unwrap();
        self.wait_for("the revision to be applied", |h| {
            let status = h.status(&ns, &name);
            status.and_then(|s| s.last_applied_revision) == Some(revision.clone())
        })
        .await;
        self.settle().await;
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

    /// Waits until no write has happened for 700 ms: the controller settled.
    pub async fn settle(&self) {
        let (quiet, every) = (Duration::from_millis(700), Duration::from_millis(50));
        let writes = async || controller_writes(&self.fake);
        quiet_for(quiet, every, Duration::from_secs(20), writes).await;
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
