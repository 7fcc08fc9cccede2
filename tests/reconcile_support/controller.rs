//! The Stack controller of one test, run in-process: its handles, started and
//! stopped again (a restart), and the waits on what it writes.

use std::time::Duration;

use stackd::metrics::Metrics;
use stackd::reconcile::{CacheSync, ControllerHandles, ControllerOptions, SecretStore};
use stackd::state::SharedState;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fake_api::FakeApiServer;

/// Fresh state, metrics, secrets and caches, with no revision loader.
pub fn handles() -> ControllerHandles {
    ControllerHandles {
        secrets: SecretStore::new(),
        state: SharedState::new(),
        metrics: Metrics::new(),
        caches: CacheSync::default(),
        failures: Default::default(),
        revisions: None,
    }
}

/// A running `stackd::reconcile::run`, cancelled when stopped or dropped.
#[derive(Default)]
pub struct Running {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn start(
        &mut self,
        client: &kube::Client,
        options: ControllerOptions,
        handles: &ControllerHandles,
    ) {
        self.cancel = CancellationToken::new();
        let run = stackd::reconcile::run(
            client.clone(),
            options,
            handles.clone(),
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
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The fake's writes so far; lease renewals go on while leading and are not
/// the controller's.
pub fn controller_writes(fake: &FakeApiServer) -> usize {
    let writes = fake.writes();
    writes
        .iter()
        .filter(|r| !r.path.contains("/leases/"))
        .count()
}

/// Waits until `state` stayed the same for `quiet`, read every `every`: the
/// controller settled. Fails after `limit`.
pub async fn quiet_for<S: PartialEq>(
    quiet: Duration,
    every: Duration,
    limit: Duration,
    mut state: impl AsyncFnMut() -> S,
) {
    let started = Instant::now();
    let mut last = state().await;
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(started.elapsed() < limit, "never settled");
        tokio::time::sleep(every).await;
        let now = state().await;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}
