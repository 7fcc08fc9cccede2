//! Sharding at scale: `STACKD_BENCH_REPLICAS` (default 4) real `stackd run`
//! processes with `--shards STACKD_BENCH_SHARDS` (default 8) share one
//! repository of `STACKD_BENCH_STACKS` (default 10,000) stacks × 5 services,
//! against the in-process API server (`STACKD_BENCH_LATENCY=20ms` makes each
//! request cost what a real server's does). Reports start → every Stack
//! applied, and each replica's peak resident memory (VmHWM), CPU time and the
//! shards it held.
//!
//! `cargo bench --bench shards`. Every process shares this machine's cores with
//! the API server, so the time is a bound from above. That server, starved of
//! CPU at 10,000 stacks, answered lease renewals late enough for replicas to
//! drop their shards with the default 15 s lease, so the replicas run with
//! `--lease-duration` `STACKD_BENCH_LEASE` (default 60s).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fake_api/mod.rs"]
mod fake_api;
#[path = "../tests/git_support/mod.rs"]
mod git_support;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_api::FakeApiServer;
use git_support::HttpServer;
use support::{env_usize, usage, wait_for};

fn main() {
    if support::another_bench() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(
        env_usize("STACKD_BENCH_STACKS", 10_000),
        env_usize("STACKD_BENCH_REPLICAS", 4),
        env_usize("STACKD_BENCH_SHARDS", 8),
    ));
}

/// Stacks whose status says they were applied at `revision`.
fn applied_at(api: &FakeApiServer, count: usize, revision: &str) -> usize {
    api.objects_of("stackd.dev/v1alpha1", "Stack")
        .iter()
        .filter(|s| s["status"]["lastAppliedRevision"] == revision)
        .count()
        .min(count)
}

async fn run(count: usize, replicas: usize, shards: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_upstream, first) = support::repository(dir.path(), count);
    let git = HttpServer::start(dir.path(), None).await;
    let settings = fake_api::Settings::from_env();
    let latency = settings.latency;
    let (api, _client) = FakeApiServer::start_with(settings).await;
    api.seed_namespace("stackd-system");
    let kubeconfig = api.write_kubeconfig(dir.path());
    let config = dir.path().join("stackd.yaml");
    std::fs::write(
        &config,
        format!(
            "repositories:\n  - name: apps\n    url: {}\n    paths: [\"stacks/*\"]\n    interval: 10s\n",
            git.url("apps")
        ),
    )
    .expect("writing the configuration");
    let lease = std::env::var("STACKD_BENCH_LEASE").unwrap_or_else(|_| "60s".to_string());
    let binary = support::stackd_binary();

    let started = Instant::now();
    let daemons: Vec<common::Daemon> = (0..replicas)
        .map(|r| {
            let data = dir.path().join(format!("data-{r}"));
            let child =
                common::stackd_run(&binary, &config, &data, common::free_port(), &kubeconfig)
                    .args([
                        "--shards",
                        &shards.to_string(),
                        "--identity",
                        &format!("r{r}"),
                    ])
                    .args([
                        "--lease-namespace",
                        "stackd-system",
                        "--lease-duration",
                        &lease,
                    ])
                    .env("RUST_LOG", "warn")
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("starting stackd");
            common::Daemon(child)
        })
        .collect();
    let limit = Duration::from_secs(3600);
    wait_for("every stack applied", limit, || {
        applied_at(&api, count, &first) == count
    })
    .await;
    let applied = started.elapsed();

    println!(
        "{count} stacks × {} services, {replicas} replicas, {shards} shards, API latency {latency:?}",
        support::SERVICES
    );
    println!(
        "start → every Stack applied: {:.1} s (leases of {lease})",
        applied.as_secs_f64()
    );
    let leases = api.objects_of("coordination.k8s.io/v1", "Lease");
    for (r, daemon) in daemons.iter().enumerate() {
        let identity = format!("r{r}");
        let held: Vec<String> = leases
            .iter()
            .filter(|l| l["spec"]["holderIdentity"] == identity.as_str())
            .filter_map(|l| l["metadata"]["name"].as_str())
            .filter_map(|n| n.strip_prefix("stackd-shard-"))
            .map(str::to_string)
            .collect();
        let used = usage(daemon.0.id());
        println!(
            "replica {identity}: peak RSS {:.1} MiB, CPU {:.1} s, shards [{}]",
            used.peak_rss_kib as f64 / 1024.0,
            used.cpu_seconds,
            held.join(", ")
        );
    }
    drop(daemons);
}
