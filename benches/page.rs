//! The status page and `/api/v1/stacks` for 1,000 stacks (override with
//! `STACKD_BENCH_STACKS`), server-side: each request goes through the whole
//! router (filters, rendering, JSON, gzip) in process, without a socket. Issue 12
//! asks for under 50 ms.
//!
//! `cargo bench --bench page` (release). `cargo bench --profile dev --bench page`
//! reuses the debug build: slower, so an upper bound.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use stackd::crd::{InventoryEntry, ServiceStatus, StackPhase};
use stackd::http::{AppState, router};
use stackd::metrics::Metrics;
use stackd::state::{PlanSummary, RepositoryView, SharedState, StackView};
use tower::ServiceExt;

const GOAL: Duration = Duration::from_millis(50);
const RUNS: usize = 30;

fn seed(state: &SharedState, stacks: usize) {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    for repo in ["apps", "infra"] {
        state.put_repository(RepositoryView {
            name: repo.into(),
            url: format!("https://git.example.com/team/{repo}.git"),
            git_ref: "main".into(),
            commit: Some(commit.into()),
            subject: Some("Bump nginx to 1.27".into()),
            last_poll: Some(chrono::Utc::now()),
            ..RepositoryView::default()
        });
    }
    let phases = [
        StackPhase::Available,
        StackPhase::Available,
        StackPhase::Progressing,
        StackPhase::Failure,
    ];
    for i in 0..stacks {
        let namespace = format!("team-{i:04}");
        let services: Vec<ServiceStatus> = (0..5)
            .map(|s| ServiceStatus {
                name: format!("service-{s}"),
                kind: "Deployment".into(),
                desired: 2,
                ready: 2,
                updated: 2,
            })
            .collect();
        let objects = (0..14)
            .map(|o| InventoryEntry {
                api_version: "v1".into(),
                kind: if o < 5 { "Deployment" } else { "Service" }.into(),
                namespace: Some(namespace.clone()),
                name: format!("object-{o}"),
                hash: Some("5f2b9c0e7d1a".into()),
            })
            .collect();
        state.put_stack(StackView {
            name: if i % 2 == 0 { "shop" } else { "blog" }.into(),
            repository: Some(if i % 3 == 0 { "infra" } else { "apps" }.into()),
            path: Some(format!("stacks/{namespace}")),
            revision: Some(commit.into()),
            phase: phases[i % phases.len()],
            services_ready: 10,
            services_total: 10,
            services,
            objects,
            last_error: (i % 4 == 3).then(|| {
                "render compose.yaml: services.worker.ports[0]: port 70000 is out of range".into()
            }),
            last_sync: Some(chrono::Utc::now()),
            last_plan: Some(PlanSummary {
                updated: vec!["Deployment/service-0".into()],
                unchanged: 13,
                ..PlanSummary::default()
            }),
            namespace,
            ..StackView::default()
        });
    }
}

/// Median and slowest of [`RUNS`] requests, and the body size.
async fn measure(app: &axum::Router, path: &str, gzip: bool) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(RUNS);
    let mut size = 0;
    for _ in 0..RUNS {
        let mut request = Request::get(path);
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        let request = request.body(Body::empty()).unwrap();
        let start = Instant::now();
        let response = app.clone().oneshot(request).await.unwrap();
        assert!(response.status().is_success(), "{path}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        times.push(start.elapsed());
        size = body.len();
    }
    times.sort();
    (times[RUNS / 2], times[RUNS - 1], size)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let stacks = std::env::var("STACKD_BENCH_STACKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let state = SharedState::new();
    seed(&state, stacks);
    let app = router(AppState::new(state, Metrics::new()), true);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("{stacks} stacks, median and slowest of {RUNS} requests, server-side:");
    let mut worst = Duration::ZERO;
    for (path, gzip) in [
        ("/", false),
        ("/", true),
        ("/?phase=Failure&repo=apps&q=shop&page=2", true),
        ("/api/v1/stacks", false),
        ("/api/v1/stacks", true),
    ] {
        let (median, slowest, size) = runtime.block_on(measure(&app, path, gzip));
        worst = worst.max(median);
        println!(
            "  GET {path:<42} {:<5} median {:>7.2} ms  slowest {:>7.2} ms  {:>9} bytes",
            if gzip { "gzip" } else { "" },
            median.as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0,
            size
        );
    }
    println!(
        "goal: every median under {} ms: {}",
        GOAL.as_millis(),
        if worst < GOAL { "met" } else { "MISSED" }
    );
}
