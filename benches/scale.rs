//! The whole daemon at scale: the real `stackd run` binary follows one Git
//! repository of 1,000 stacks × 5 services (override with
//! `STACKD_BENCH_STACKS`), served over smart HTTP, and applies them to the
//! in-process API server (reached through a kubeconfig, as kube finds a real
//! cluster). It reports what issue 7 asks, beside Flux's published figures:
//!
//! - start → every Stack applied at the first commit;
//! - a no-op poll: API requests and Git bytes;
//! - a one-line change in one stack: time until applied, API requests, Git bytes;
//! - a restart: time until every stack is reconciled again, and its requests;
//! - peak resident memory (VmHWM) and CPU time of the stackd process alone.
//!
//! `cargo bench --bench scale` (release build; `STACKD_BENCH_TRACE=1` prints the
//! restart's progress and the one-line change's requests; `STACKD_BENCH_KUBE_QPS`
//! sets the daemon's `--kube-qps`, 0 for no client-side limit). The API server runs in this
//! process, so its CPU competes with stackd's on a small machine.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fake_api/mod.rs"]
mod fake_api;
#[path = "../tests/git_support/mod.rs"]
mod git_support;
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_api::FakeApiServer;
use git_support::HttpServer;
use support::{SERVICES, compose, stack_name, usage, wait_for};

const POLL_INTERVAL: &str = "5s";
const TOKEN: &str = "bench-token";

fn spawn_daemon(dir: &Path, kubeconfig: &Path, port: u16) -> common::Daemon {
    let mut command = common::stackd_run(
        &support::stackd_binary(),
        &dir.join("stackd.yaml"),
        &dir.join("data"),
        port,
        kubeconfig,
    );
    command.args(["--kube-qps", &kube_qps().to_string()]);
    let child = command
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting stackd");
    common::Daemon(child)
}

/// The daemon's `--kube-qps`: `STACKD_BENCH_KUBE_QPS` (0 turns the client's
/// rate limit off), else stackd's default.
fn kube_qps() -> f64 {
    std::env::var("STACKD_BENCH_KUBE_QPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(stackd::daemon::rate_limit::DEFAULT_QPS)
}

/// The least time the client's token bucket lets `requests` go in: those
/// beyond the burst at `--kube-qps` a second.
fn rate_floor(requests: usize) -> Duration {
    let qps = kube_qps();
    let burst = stackd::daemon::rate_limit::DEFAULT_BURST as usize;
    match qps > 0.0 {
        true => Duration::from_secs_f64(requests.saturating_sub(burst) as f64 / qps),
        false => Duration::ZERO,
    }
}

/// Stacks whose status says they were applied at `revision`.
fn applied_at(api: &FakeApiServer, count: usize, revision: &str) -> usize {
    (0..count)
        .filter(|&i| {
            let name = stack_name(i);
            api.object("stackd.dev/v1alpha1", "Stack", &name, &name)
                .is_some_and(|s| s["status"]["lastAppliedRevision"] == revision)
        })
        .count()
}

/// Waits until the API server has seen no request for `quiet`.
async fn settle(api: &FakeApiServer, quiet: Duration) {
    let mut count = api.requests().len();
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = api.requests().len();
        if now != count {
            count = now;
            since = Instant::now();
        }
    }
}

/// `stackd_reconcile_total{result="success"}` summed over every stack.
async fn successful_reconciles(http: &reqwest::Client, base: &str) -> u64 {
    let Ok(response) = http.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("stackd_reconcile_total{") && l.contains("result=\"success\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Requests in the log, as `N requests (W writes, G gets, L lists, T watches)`.
fn describe(requests: &[fake_api::LoggedRequest]) -> String {
    use axum::http::Method;
    let writes = requests.iter().filter(|r| r.is_write()).count();
    let reads: Vec<_> = requests
        .iter()
        .filter(|r| r.method == Method::GET && !r.watch)
        .collect();
    // /api/v1/namespaces/NS/KIND/NAME and /apis/G/V/namespaces/NS/KIND/NAME.
    let gets = reads
        .iter()
        .filter(|r| {
            let depth = r.path.split('/').count();
            if r.path.starts_with("/apis/") {
                depth > 7
            } else {
                depth > 6
            }
        })
        .count();
    let watches = requests.iter().filter(|r| r.watch).count();
    format!(
        "{} requests ({writes} writes, {gets} object GETs, {} lists, {watches} watches)",
        requests.len(),
        reads.len() - gets
    )
}

/// Writes per kind (`Deployment`, `Stack status`, `Event`, ...).
fn writes_per_kind(requests: &[fake_api::LoggedRequest]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for write in requests.iter().filter(|r| r.is_write()) {
        *counts.entry(write.target()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The least time the first apply's writes can take at this latency: the Git
/// sync's Namespace and Stack writes `SYNC` at a time, every other write
/// `CONTROLLER` at a time (the controller's concurrent reconciles, each
/// writing its objects in order).
fn floor(requests: &[fake_api::LoggedRequest], latency: Duration) -> Duration {
    const SYNC: u32 = 16;
    const CONTROLLER: u32 = 8;
    let writes: Vec<String> = requests
        .iter()
        .filter(|r| r.is_write())
        .map(fake_api::LoggedRequest::target)
        .collect();
    let sync = writes
        .iter()
        .filter(|t| *t == "Namespace" || *t == "Stack")
        .count() as u32;
    let controller = writes.len() as u32 - sync;
    latency * sync / SYNC + latency * controller / CONTROLLER
}

fn main() {
    if support::another_bench() {
        return;
    }
    let count = support::env_usize("STACKD_BENCH_STACKS", 1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(count));
}

async fn run(count: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (upstream, first) = support::repository(dir.path(), count);
    let git = HttpServer::start(dir.path(), None).await;
    // STACKD_BENCH_LATENCY=20ms, STACKD_BENCH_MAX_INFLIGHT=400: a server that costs what a real one does.
    let (api, _client) = FakeApiServer::start_with(fake_api::Settings::from_env()).await;
    let kubeconfig = api.write_kubeconfig(dir.path());
    std::fs::write(dir.path().join("token"), TOKEN).expect("writing the token");
    std::fs::write(
        dir.path().join("stackd.yaml"),
        format!(
            // The in-process server never makes a workload ready: a long health
            // deadline keeps runs over 5 minutes (5,000 stacks) from ending in
            // HealthTimeout, which the restart's count of successes would wait out.
            "apiTokenFile: {}\nrepositories:\n  - name: apps\n    url: {}\n    ref: main\n    paths: [\"stacks/*\"]\n    interval: {POLL_INTERVAL}\n    healthTimeout: 10h\n",
            dir.path().join("token").display(),
            git.url("apps")
        ),
    )
    .expect("writing the configuration");
    let http = reqwest::Client::new();
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");

    // 1. Start → every Stack applied.
    let started = Instant::now();
    let mut daemon = spawn_daemon(dir.path(), &kubeconfig, port);
    let rss = support::RssPhases::start(daemon.0.id(), "first apply");
    wait_for("every stack applied", Duration::from_secs(1800), || {
        applied_at(&api, count, &first) == count
    })
    .await;
    let first_apply = started.elapsed();
    let first_cpu = usage(daemon.0.id()).cpu_seconds;
    settle(&api, Duration::from_secs(3)).await;
    let first_requests = api.requests();
    let objects = api.objects().len();

    // 2. No-op polls: nothing changed in Git.
    rss.phase("no-op polls");
    api.clear_requests();
    let (bytes_before, adverts_before) = (git.traffic.bytes_sent(), git.traffic.advertisements());
    let polls = 3;
    wait_for("three polls", Duration::from_secs(120), || {
        git.traffic.advertisements() >= adverts_before + polls
    })
    .await;
    settle(&api, Duration::from_secs(1)).await;
    let poll_requests = api.requests();
    let poll_bytes = (git.traffic.bytes_sent() - bytes_before) / polls as u64;

    // 3. A one-line change in one stack, announced through the sync API as a webhook would.
    let changed = stack_name(count / 2);
    upstream.write(
        &format!("stacks/{changed}/compose.yaml"),
        &compose(count / 2, "nginx:1.99"),
    );
    let second = upstream.commit("one line");
    rss.phase("one-line change");
    api.clear_requests();
    let bytes_before = git.traffic.bytes_sent();
    let change_started = Instant::now();
    let response = http
        .post(format!("{base}/api/v1/repositories/apps/sync"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the sync request");
    assert!(
        response.status().is_success(),
        "sync: {}",
        response.status()
    );
    wait_for("the changed image", Duration::from_secs(300), || {
        api.object("apps/v1", "Deployment", &changed, "svc0")
            .is_some_and(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.99"
            })
    })
    .await;
    let change_applied = change_started.elapsed();
    settle(&api, Duration::from_secs(3)).await;
    let change_requests = api.requests();
    if std::env::var_os("STACKD_BENCH_TRACE").is_some() {
        for r in &change_requests {
            eprintln!("  change: {} {} watch={}", r.method, r.path, r.watch);
        }
    }
    let change_bytes = git.traffic.bytes_sent() - bytes_before;
    let unchanged = applied_at(&api, count, &second);
    let first_run = usage(daemon.0.id());
    let rss_phases = rss.finish();
    let status = daemon.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "stackd exited with {status:?}");

    // Printed now: a failed restart below keeps these.
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "scale: {count} stacks x {SERVICES} services in one repository, {objects} objects stored"
    );
    println!(
        "  start -> all applied:      {first_apply:.2?}, stackd CPU {first_cpu:.1} s; {}",
        describe(&first_requests)
    );
    let settings = fake_api::Settings::from_env();
    println!(
        "  API latency {:?}, in-flight limit {:?}; first-apply floor {:.2?} (writes x latency / concurrency)",
        settings.latency,
        settings.max_in_flight,
        floor(&first_requests, settings.latency)
    );
    println!(
        "  client rate limit --kube-qps {} --kube-burst {}: floor {:.2?} (requests beyond the burst / qps)",
        kube_qps(),
        stackd::daemon::rate_limit::DEFAULT_BURST,
        rate_floor(first_requests.len())
    );
    println!("  first-apply writes: {}", writes_per_kind(&first_requests));
    println!(
        "  one-line change writes: {}",
        writes_per_kind(&change_requests)
    );
    println!(
        "  no-op polls (every {POLL_INTERVAL}): {polls} polls, {}; {poll_bytes} B of Git traffic per poll",
        describe(&poll_requests)
    );
    println!(
        "  one-line change:          applied in {change_applied:.2?}; {}; {change_bytes} B of Git traffic; {unchanged} stacks at the new commit",
        describe(&change_requests)
    );
    println!(
        "  stackd peak RSS (VmHWM), first run: {:.0} MiB (resident at the end: {:.0} MiB anonymous, {:.0} MiB files); CPU {:.1} s",
        mib(first_run.peak_rss_kib),
        mib(first_run.anon_kib),
        mib(first_run.file_kib),
        first_run.cpu_seconds
    );
    println!("  stackd peak RSS by phase (sampled every 50 ms): {rss_phases}");
    // 4. A restart: every stack is reconciled again from the caches, with nothing to write.
    api.clear_requests();
    let restarted = Instant::now();
    let mut daemon = spawn_daemon(dir.path(), &kubeconfig, port);
    let limit = Duration::from_secs(1800);
    loop {
        let n = successful_reconciles(&http, &base).await;
        if std::env::var_os("STACKD_BENCH_TRACE").is_some() {
            eprintln!("{:?} {n}", restarted.elapsed());
        }
        if n >= count as u64 {
            break;
        }
        assert!(
            restarted.elapsed() < limit,
            "timed out waiting for the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restart = restarted.elapsed();
    settle(&api, Duration::from_secs(3)).await;
    let restart_requests = api.requests();
    let second_run = usage(daemon.0.id());
    let status = daemon.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "stackd exited with {status:?}");

    println!(
        "  restart -> all reconciled: {restart:.2?}; {}",
        describe(&restart_requests)
    );
    println!(
        "  stackd peak RSS (VmHWM), after restart: {:.0} MiB; CPU {:.1} s",
        mib(second_run.peak_rss_kib),
        second_run.cpu_seconds
    );
    println!("  Flux 2.2, 1,000 Kustomizations (published): about 4 min to apply, 112 MiB");
}
