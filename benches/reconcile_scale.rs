//! The reconciler at scale against the in-process API server: 1,000 stacks of
//! 5 services (override with `STACKD_BENCH_STACKS`). Prints the time to the
//! first full apply, the time and requests of a no-op pass (a restarted
//! controller reconciling every stack: the goal is 0 writes and no per-object
//! reads), and the peak resident memory (VmHWM).
//!
//! `cargo bench --bench reconcile_scale`, or in a debug build
//! `cargo test --bench reconcile_scale`.

#[path = "../tests/fake_api/mod.rs"]
mod fake_api;

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;
use stackd::crd::SourceRef;
use stackd::metrics::Metrics;
use stackd::reconcile::{
    CacheSync, ControllerHandles, ControllerOptions, DesiredStack, SecretStore, SyncPolicy,
    sync_repository,
};
use stackd::render::model::{Project, SecretValues};
use stackd::state::SharedState;
use tokio_util::sync::CancellationToken;

use fake_api::FakeApiServer;

const SERVICES: usize = 5;

fn stack(index: usize) -> DesiredStack {
    let mut services = serde_json::Map::new();
    for s in 0..SERVICES {
        let mut service =
            json!({"image": format!("nginx:1.{s}"), "environment": {"INDEX": index.to_string()}});
        if s == 0 {
            service["ports"] = json!([{"target": 80, "published": 8080, "protocol": "tcp"}]);
        }
        services.insert(format!("svc{s}"), service);
    }
    let project: Project = serde_json::from_value(json!({"services": services}))
        .expect("the benchmark project is a valid model");
    let name = format!("stack-{index:04}");
    DesiredStack {
        namespace: name.clone(),
        name: name.clone(),
        project,
        secrets: SecretValues::default(),
        source: SourceRef {
            repository: "bench".into(),
            path: name,
            revision: "r1".into(),
        },
        prune: true,
    }
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Successful reconciles so far, per stack.
fn successes(metrics: &Metrics, stacks: &[DesiredStack]) -> Vec<u64> {
    stacks
        .iter()
        .map(|s| {
            metrics
                .reconcile_total
                .get_metric_with_label_values(&[&s.name, &s.namespace, "success"])
                .map(|c| c.get())
                .unwrap_or(0)
        })
        .collect()
}

/// Every stack has had a successful reconcile since `before`.
fn all_reconciled_since(metrics: &Metrics, stacks: &[DesiredStack], before: &[u64]) -> bool {
    successes(metrics, stacks)
        .iter()
        .zip(before)
        .all(|(now, then)| now > then)
}

fn options() -> ControllerOptions {
    ControllerOptions {
        debounce: Duration::from_millis(200),
        concurrency: 16,
        resync: Duration::from_secs(3600),
        ..ControllerOptions::default()
    }
}

async fn wait_until(
    what: &str,
    limit: Duration,
    metrics: &Metrics,
    mut done: impl FnMut() -> bool,
) {
    let started = Instant::now();
    let mut reported = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        if reported.elapsed() > Duration::from_secs(30) {
            reported = Instant::now();
            eprintln!("  still waiting for {what}: {}", results(metrics));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reconciles so far by result, e.g. `success=1200 write_status=3`.
fn results(metrics: &Metrics) -> String {
    use prometheus::core::Collector;
    let mut totals = std::collections::BTreeMap::<String, u64>::new();
    for family in metrics.reconcile_total.collect() {
        for metric in family.get_metric() {
            let result = metric
                .get_label()
                .iter()
                .find(|l| l.name() == "result")
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            *totals.entry(result).or_default() += metric.get_counter().get_value() as u64;
        }
    }
    totals
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn settle(server: &FakeApiServer) {
    let mut count = server.writes().len();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = server.writes().len();
        if now != count {
            count = now;
            since = Instant::now();
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that is not ours means another bench.
    if std::env::args().skip(1).any(|a| !a.starts_with("--")) {
        return;
    }
    let count: usize = std::env::var("STACKD_BENCH_STACKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(count));
}

async fn run(count: usize) {
    let (server, client) = FakeApiServer::start().await;
    let handles = ControllerHandles {
        secrets: SecretStore::new(),
        state: SharedState::new(),
        metrics: Metrics::new(),
        caches: CacheSync::default(),
    };
    let stacks: Vec<DesiredStack> = (0..count).map(stack).collect();
    let policy = SyncPolicy {
        prune: true,
        allow_prune_all: false,
    };

    let started = Instant::now();
    let report = sync_repository(&client, &handles.secrets, "bench", stacks.clone(), policy)
        .await
        .expect("the first sync");
    let synced = started.elapsed();
    let cancel = CancellationToken::new();
    let controller = tokio::spawn(stackd::reconcile::run(
        client.clone(),
        options(),
        handles.clone(),
        cancel.clone(),
    ));
    let none = vec![0; stacks.len()];
    wait_until(
        "the first full apply",
        Duration::from_secs(1800),
        &handles.metrics,
        || all_reconciled_since(&handles.metrics, &stacks, &none),
    )
    .await;
    let first_apply = started.elapsed();
    settle(&server).await;
    let objects = server.objects().len();
    let first_writes = server.writes().len();

    // A no-op pass: restart the controller; it reconciles every stack from its lists.
    cancel.cancel();
    let _ = controller.await;
    server.clear_requests();
    let before = successes(&handles.metrics, &stacks);
    let cancel = CancellationToken::new();
    let pass_started = Instant::now();
    let controller = tokio::spawn(stackd::reconcile::run(
        client.clone(),
        options(),
        handles.clone(),
        cancel.clone(),
    ));
    wait_until(
        "the no-op pass",
        Duration::from_secs(1800),
        &handles.metrics,
        || all_reconciled_since(&handles.metrics, &stacks, &before),
    )
    .await;
    let no_op = pass_started.elapsed();
    settle(&server).await;
    let requests = server.requests();
    let writes = requests.iter().filter(|r| r.is_write()).count();
    let object_gets = requests
        .iter()
        .filter(|r| r.method == Method::GET && !r.watch && r.path.split('/').count() > 6)
        .count();
    let lists = requests
        .iter()
        .filter(|r| r.method == Method::GET && !r.watch)
        .count()
        - object_gets;
    let watches = requests.iter().filter(|r| r.watch).count();
    cancel.cancel();
    let _ = controller.await;

    println!("reconcile_scale: {count} stacks x {SERVICES} services, {objects} stored objects");
    println!(
        "  first sync (Stacks applied): {:.2?} ({} Stacks)",
        synced,
        report.applied.len()
    );
    println!(
        "  first full apply:            {first_apply:.2?} ({first_writes} writes incl. statuses and events)"
    );
    println!(
        "  no-op pass:                  {no_op:.2?}: {} requests = {writes} writes, {object_gets} per-object GETs, {lists} lists, {watches} watches",
        requests.len()
    );
    println!("  peak resident memory (VmHWM): {}", vm_hwm());
}
