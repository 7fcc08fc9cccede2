//! `--shards`: three replicas share the stacks of two repositories through the
//! Leases `stackd-shard-0..2`. Every stack is applied by exactly one replica,
//! the holder of its shard (the in-process server's request log tells the
//! replicas apart by their `User-Agent`); a killed replica's stacks are taken
//! over; scaling 3 → 2 → 3 rebalances; a partitioned replica stops writing
//! before another takes its shards.
//!
//! With `KUBECONFIG_E2E` the same flows run against a real cluster; the checks
//! that need the request log or fault injection are skipped there, loudly.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Daemon, Stackd, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, PostParams};
use stackd::crd::Stack;

const SHARDS: u32 = 3;

/// Each stack reads a secret from Git: the holder of its shard is often not
/// the replica that synced its repository, and must read the value again from
/// its own mirror.
fn compose(tag: &str) -> String {
    format!(
        "services:\n  web:\n    image: nginx:{tag}\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token.txt\n"
    )
}

fn token(stack: &str) -> String {
    format!("s3cret-{stack}")
}

/// Two repositories of stacks, three replicas, one lease namespace.
struct Fleet {
    cluster: fake_api::TestCluster,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    config: PathBuf,
    lease_namespace: String,
    upstreams: Vec<git_support::Upstream>,
    /// `namespace/name` of every stack, with its repository's index.
    stacks: Vec<(String, usize)>,
    /// Each running replica with its HTTP port.
    replicas: BTreeMap<String, (Daemon, u16)>,
    _git: git_support::HttpServer,
}

impl Fleet {
    async fn start(replicas: usize) -> Fleet {
        let cluster = fake_api::test_client().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = cluster.kubeconfig(dir.path());
        let suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let lease_namespace = format!("shards-{suffix}");
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        let namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lease_namespace}
        }))
        .unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();

        let mut upstreams = Vec::new();
        let mut stacks = Vec::new();
        let mut repositories = String::from("repositories:\n");
        let git = git_support::HttpServer::start(dir.path(), None).await;
        for (index, (repository, count)) in [("apps", 8), ("team", 4)].into_iter().enumerate() {
            let upstream = git_support::Upstream::new(dir.path(), repository);
            for i in 0..count {
                let stack = format!("{repository}{i}-{suffix}");
                upstream.write(&format!("stacks/{stack}/compose.yaml"), &compose("1.27"));
                upstream.write(&format!("stacks/{stack}/token.txt"), &token(&stack));
                stacks.push((stack, index));
            }
            upstream.commit("stacks");
            repositories.push_str(&format!(
                "  - name: {repository}\n    url: {}\n    paths: [\"stacks/*\"]\n    interval: 1s\n",
                git.url(repository)
            ));
            upstreams.push(upstream);
        }
        let config = dir.path().join("stackd.yaml");
        std::fs::write(&config, repositories).unwrap();
        let mut fleet = Fleet {
            cluster,
            dir,
            kubeconfig,
            config,
            lease_namespace,
            upstreams,
            stacks,
            replicas: BTreeMap::new(),
            _git: git,
        };
        for i in 0..replicas {
            fleet.start_replica(&format!("r{i}"));
        }
        fleet
    }

    fn start_replica(&mut self, identity: &str) {
        let dir = self.dir.path().join(identity);
        std::fs::create_dir_all(&dir).unwrap();
        let stackd = Stackd {
            dir,
            config: self.config.clone(),
            kubeconfig: self.kubeconfig.clone(),
            port: common::free_port(),
        };
        let shards = SHARDS.to_string();
        let args = ["--shards", &shards, "--identity", identity];
        let lease = ["--lease-namespace", &self.lease_namespace];
        let args = [&args[..], &lease, &["--lease-duration", "3s"]].concat();
        let daemon = stackd.start_with("stackd.log", &args);
        self.replicas
            .insert(identity.to_string(), (daemon, stackd.port));
    }

    /// Kills a replica at once (no lease is handed back).
    fn kill(&mut self, identity: &str) {
        if let Some((mut daemon, _)) = self.replicas.remove(identity) {
            let _ = daemon.0.kill();
            let _ = daemon.0.wait();
        }
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for identity in ["r0", "r1", "r2", "r3"] {
            let log = self.dir.path().join(identity).join("stackd.log");
            if let Ok(text) = std::fs::read_to_string(log) {
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                all.push_str(&format!("--- {identity}\n"));
                for line in tail.into_iter().rev() {
                    all.push_str(line);
                    all.push('\n');
                }
            }
        }
        all
    }

    /// Changes every stack's image in both repositories; the new heads.
    fn change_all(&self, tag: &str) -> Vec<String> {
        for (stack, index) in &self.stacks {
            self.upstreams[*index].write(&format!("stacks/{stack}/compose.yaml"), &compose(tag));
        }
        self.upstreams
            .iter()
            .map(|u| u.commit(&format!("nginx {tag}")))
            .collect()
    }

    /// Waits until every stack has applied its repository's head.
    async fn all_applied(&self, heads: &[String], seconds: u64) {
        for (stack, index) in &self.stacks {
            let api: Api<Stack> = Api::namespaced(self.cluster.client.clone(), stack);
            let head = &heads[*index];
            let what = format!("{stack} applied at {head}\n{}", self.logs());
            eventually(&what, seconds, async || {
                let status = api.get_opt(stack).await.ok()??.status?;
                (status.last_applied_revision.as_deref() == Some(head.as_str())).then_some(())
            })
            .await;
        }
    }

    fn heads(&self) -> Vec<String> {
        self.upstreams.iter().map(|u| u.head()).collect()
    }

    /// Who holds each shard, by the Leases.
    async fn holders(&self) -> BTreeMap<u32, String> {
        let api: Api<Lease> = Api::namespaced(self.cluster.client.clone(), &self.lease_namespace);
        let mut holders = BTreeMap::new();
        for shard in 0..SHARDS {
            let lease = api
                .get_opt(&stackd::shard::lease_name(shard))
                .await
                .ok()
                .flatten();
            if let Some(holder) = lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty())
            {
                holders.insert(shard, holder);
            }
        }
        holders
    }

    /// Waits until every shard is held by a running replica and each running
    /// replica holds its fair share; the holders.
    async fn balanced(&self, seconds: u64) -> BTreeMap<u32, String> {
        let running: BTreeSet<String> = self.replicas.keys().cloned().collect();
        let fair = SHARDS.div_ceil(running.len() as u32) as usize;
        let what = format!("the shards balanced over {running:?}\n{}", self.logs());
        eventually(&what, seconds, async || {
            let holders = self.holders().await;
            let mut per: BTreeMap<&String, usize> = BTreeMap::new();
            for holder in holders.values() {
                *per.entry(holder).or_default() += 1;
            }
            let complete = holders.len() == SHARDS as usize
                && holders.values().all(|h| running.contains(h))
                && per.values().all(|n| *n <= fair);
            complete.then_some(holders)
        })
        .await
    }

    fn shard_of(stack: &str) -> u32 {
        stackd::shard::of_stack(stack, stack, SHARDS)
    }
}

/// The replica named in a `stackd/<version> (<identity>)` User-Agent.
fn replica_of(agent: &str) -> Option<String> {
    let start = agent.find('(')? + 1;
    let end = agent[start..].find(')')? + start;
    Some(agent[start..end].to_string())
}

/// A write of the stack's controller: one of its objects or its Stack's status.
fn reconciles(path: &str, stack: &str) -> bool {
    path.contains(&format!("/namespaces/{stack}/deployments/"))
        || path.contains(&format!("/namespaces/{stack}/stacks/{stack}/status"))
}

/// The replicas that wrote each stack's Deployment or Stack status, from the log.
fn writers(
    fake: &fake_api::FakeApiServer,
    stacks: &[(String, usize)],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut writers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for write in fake.writes() {
        for (stack, _) in stacks {
            if reconciles(&write.path, stack) {
                let replica = replica_of(&write.user_agent).unwrap_or_default();
                writers.entry(stack.clone()).or_default().insert(replica);
            }
        }
    }
    writers
}

/// Each stack written by exactly one replica, the holder of its shard.
fn assert_one_writer_each(
    fake: &fake_api::FakeApiServer,
    stacks: &[(String, usize)],
    holders: &BTreeMap<u32, String>,
) {
    let writers = writers(fake, stacks);
    for (stack, _) in stacks {
        let holder = &holders[&Fleet::shard_of(stack)];
        let wrote = writers.get(stack).cloned().unwrap_or_default();
        assert_eq!(
            wrote,
            BTreeSet::from([holder.clone()]),
            "{stack} (shard {}) must be written by its holder {holder} alone",
            Fleet::shard_of(stack)
        );
    }
}

/// Every stack's Secret holds its value from Git, whichever replica applied it.
async fn assert_secrets(fleet: &Fleet) {
    for (stack, _) in &fleet.stacks {
        let api: Api<Secret> = Api::namespaced(fleet.cluster.client.clone(), stack);
        let selector = format!("stackd.dev/stack={stack}");
        let secrets = api
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        let found = secrets.items.iter().any(|secret| {
            secret
                .data
                .iter()
                .flatten()
                .any(|(_, value)| value.0 == token(stack).as_bytes())
        });
        assert!(found, "{stack}: no Secret holds its token");
    }
}

async fn assert_labelled(fleet: &Fleet) {
    for (stack, _) in &fleet.stacks {
        let api: Api<Stack> = Api::namespaced(fleet.cluster.client.clone(), stack);
        let object = api.get(stack).await.unwrap();
        let label = object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(stackd::shard::SHARD_LABEL))
            .cloned();
        assert_eq!(label, Some(Fleet::shard_of(stack).to_string()), "{stack}");
    }
}

#[test]
fn the_replica_is_read_from_the_user_agent() {
    assert_eq!(replica_of("stackd/0.1.0 (r2)"), Some("r2".to_string()));
    assert_eq!(replica_of("kube-rs"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stack_is_applied_by_exactly_one_replica() {
    let fleet = Fleet::start(3).await;
    fleet.all_applied(&fleet.heads(), 90).await;
    let holders = fleet.balanced(30).await;
    assert_eq!(
        holders.values().collect::<BTreeSet<_>>().len(),
        3,
        "one shard each: {holders:?}"
    );
    assert_labelled(&fleet).await;
    assert_secrets(&fleet).await;

    // Settled: a change to every stack is applied by each shard's holder alone.
    if let Some(fake) = fleet.cluster.fake.as_ref() {
        fake.clear_requests();
    }
    let heads = fleet.change_all("1.27.1");
    fleet.all_applied(&heads, 60).await;
    if let Some(fake) = fleet.cluster.fake_or_skip("which replica wrote each stack") {
        assert_one_writer_each(fake, &fleet.stacks, &holders);
    }
    // Each replica's metrics and API say what it holds and who holds the rest.
    for (identity, (_, port)) in &fleet.replicas {
        let base = format!("http://127.0.0.1:{port}");
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for (shard, holder) in &holders {
            let owned = i32::from(holder == identity);
            let series = format!("stackd_shard_owned{{shard=\"{shard}\"}} {owned}");
            assert!(
                metrics.contains(&series),
                "{identity}: no {series}:\n{metrics}"
            );
        }
    }
    assert_every_replica_lists_every_stack(&fleet, &holders).await;
    assert_failures_agree(&fleet, &holders).await;
    if let Some(fake) = fleet
        .cluster
        .fake_or_skip("a refused Stack write needs fault injection")
    {
        assert_refused_write_reaches_every_replica(&fleet, fake, &holders).await;
    }
}

/// A stack of `apps` and its holder, where the holder does not run the
/// repository's Git sync, and that is not `skip`.
fn held_elsewhere(fleet: &Fleet, holders: &BTreeMap<u32, String>, skip: &str) -> Option<String> {
    let syncer = &holders[&stackd::shard::of_repository("apps", SHARDS)];
    fleet
        .stacks
        .iter()
        .filter(|(stack, repo)| *repo == 0 && stack != skip)
        .map(|(stack, _)| stack.clone())
        .find(|stack| &holders[&Fleet::shard_of(stack)] != syncer)
}

/// The API server refuses a Stack write of the replica that runs its
/// repository's Git sync, which does not hold the stack's shard: the holder
/// learns it from a `StackRefused` Event and writes it into the Stack's
/// status, so every replica shows it; once a later commit is stored, it is
/// over everywhere.
async fn assert_refused_write_reaches_every_replica(
    fleet: &Fleet,
    fake: &fake_api::FakeApiServer,
    holders: &BTreeMap<u32, String>,
) {
    let first_apps = &fleet.stacks[0].0;
    let Some(stack) = held_elsewhere(fleet, holders, first_apps) else {
        eprintln!("SKIPPED: every apps stack is held by the replica that syncs apps");
        return;
    };
    let syncer = &holders[&stackd::shard::of_repository("apps", SHARDS)];
    fake.clear_faults();
    fake.inject(
        fake_api::FaultRule::new(
            None,
            &format!("/namespaces/{stack}/stacks/{stack}"),
            fake_api::FaultAction::Fail(422),
        )
        .only_agent(&format!("({syncer})")),
    );
    fleet.upstreams[0].write(&format!("stacks/{stack}/compose.yaml"), &compose("1.27.7"));
    let refused = fleet.upstreams[0].commit("refused");
    let api: Api<Stack> = Api::namespaced(fleet.cluster.client.clone(), &stack);
    let what = format!(
        "{stack}'s Stack says ApplyFailed at {refused}\n{}",
        fleet.logs()
    );
    eventually(&what, 30, async || {
        let status = api.get(&stack).await.ok()?.status?;
        let (reason, _) = ready_of(fleet, &stack).await?;
        (reason == "ApplyFailed" && status.last_attempted_revision.as_deref() == Some(&refused))
            .then_some(())
    })
    .await;
    let (_, message) = ready_of(fleet, &stack).await.unwrap();
    let message = message.unwrap_or_default();
    assert!(message.contains("422"), "{message}");
    for (identity, (_, port)) in &fleet.replicas {
        let url = format!("http://127.0.0.1:{port}/api/v1/stacks/{stack}/{stack}");
        let what = format!("{identity} shows {stack}'s refused write\n{}", fleet.logs());
        eventually(&what, 20, async || {
            let view = get_json(&url).await;
            (view["reason"] == "ApplyFailed" && view["message"] == serde_json::json!(message))
                .then_some(())
        })
        .await;
    }

    // Stored at the next commit: over on every replica.
    fake.clear_faults();
    fleet.upstreams[0].write(&format!("stacks/{stack}/compose.yaml"), &compose("1.27.8"));
    let stored = fleet.upstreams[0].commit("stored");
    let what = format!("{stack} applied at {stored}\n{}", fleet.logs());
    eventually(&what, 30, async || {
        let status = api.get(&stack).await.ok()?.status?;
        (status.last_applied_revision.as_deref() == Some(&stored)).then_some(())
    })
    .await;
    for (identity, (_, port)) in &fleet.replicas {
        let url = format!("http://127.0.0.1:{port}/api/v1/stacks/{stack}/{stack}");
        let what = format!(
            "{identity} shows {stack} no longer refused\n{}",
            fleet.logs()
        );
        eventually(&what, 20, async || {
            let view = get_json(&url).await;
            (view["reason"] != "ApplyFailed" && view["revision"] == serde_json::json!(stored))
                .then_some(())
        })
        .await;
    }
}

async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Each replica's API and page list every stack, not only those of its
/// shards, each with its shard, the replica holding it, and its Stack's
/// status. Retried for a while: a replica learns of a status by a watch.
async fn assert_every_replica_lists_every_stack(fleet: &Fleet, holders: &BTreeMap<u32, String>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let problems = listing_problems(fleet, holders).await;
        if problems.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every replica lists every stack:\n{}",
            problems.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What each replica's API and page get wrong, or miss.
async fn listing_problems(fleet: &Fleet, holders: &BTreeMap<u32, String>) -> Vec<String> {
    let all: BTreeSet<String> = fleet.stacks.iter().map(|(s, _)| s.clone()).collect();
    let mut problems = Vec::new();
    for (identity, (_, port)) in &fleet.replicas {
        let base = format!("http://127.0.0.1:{port}");
        let api = get_json(&format!("{base}/api/v1/stacks")).await;
        let stacks = api["stacks"].as_array().cloned().unwrap_or_default();
        let listed: BTreeSet<String> = stacks
            .iter()
            .filter_map(|s| Some(s["name"].as_str()?.to_string()))
            .collect();
        if listed != all {
            problems.push(format!("{identity}: /api/v1/stacks lists {listed:?}"));
        }
        for stack in &stacks {
            let name = stack["name"].as_str().unwrap_or_default();
            let shard = Fleet::shard_of(name);
            // Built from the Stack's status on the replicas that do not hold it.
            let api: Api<Stack> = Api::namespaced(fleet.cluster.client.clone(), name);
            let status = api.get(name).await.unwrap().status.unwrap_or_default();
            let expected = [
                ("shard", serde_json::json!(shard)),
                ("replica", serde_json::json!(holders[&shard])),
                ("phase", serde_json::to_value(status.phase).unwrap()),
                ("revision", serde_json::json!(status.last_applied_revision)),
                ("servicesTotal", serde_json::json!(1)),
            ];
            for (field, value) in expected {
                if stack[field] != value {
                    problems.push(format!(
                        "{identity}: {name}: {field} is not {value}: {stack}"
                    ));
                }
            }
            if stack["shapes"][0]["name"] != "web" {
                problems.push(format!("{identity}: {name}: no picture: {stack}"));
            }
        }
        let page = get_text(&format!("{base}/")).await;
        for name in &all {
            let shard = Fleet::shard_of(name);
            if !page.contains(&format!("/stacks/{name}/{name}\"")) {
                problems.push(format!("{identity}: the page does not list {name}"));
            }
            let line = format!("shard {shard} · {}", holders[&shard]);
            if !page.contains(&line) {
                problems.push(format!("{identity}: no {line:?} on the page"));
            }
        }
    }
    problems
}

/// The `Ready` condition of a Stack: (reason, the status message).
async fn ready_of(fleet: &Fleet, stack: &str) -> Option<(String, Option<String>)> {
    let api: Api<Stack> = Api::namespaced(fleet.cluster.client.clone(), stack);
    let status = api.get_opt(stack).await.ok()??.status?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((ready.reason.clone(), status.message))
}

/// A failing stack shows, on every replica's API and page, the reason and
/// message its holder wrote into its Stack; only the holder exports its
/// per-stack metrics. One stack no longer loads (every replica's Git side
/// sees that); with the in-process server, another's Deployment writes are
/// refused, which only its holder's controller sees.
async fn assert_failures_agree(fleet: &Fleet, holders: &BTreeMap<u32, String>) {
    let (broken, broken_repo) = fleet.stacks.iter().find(|(_, r)| *r == 1).unwrap().clone();
    fleet.upstreams[broken_repo].write(&format!("stacks/{broken}/compose.yaml"), "services: [\n");
    let mut failing = vec![(broken, "LoadFailed")];
    if let Some(fake) = fleet.cluster.fake.as_ref() {
        let (refused, refused_repo) = fleet.stacks.iter().find(|(_, r)| *r == 0).unwrap().clone();
        fake.inject(fake_api::FaultRule::new(
            None,
            &format!("/namespaces/{refused}/deployments"),
            fake_api::FaultAction::Fail(422),
        ));
        fleet.upstreams[refused_repo].write(
            &format!("stacks/{refused}/compose.yaml"),
            &compose("1.27.9"),
        );
        failing.push((refused, "ApplyFailed"));
    }
    for upstream in &fleet.upstreams {
        upstream.commit("one stack broken");
    }
    for (stack, reason) in &failing {
        let what = format!("{stack}'s Stack says {reason}\n{}", fleet.logs());
        eventually(&what, 60, async || {
            let (shown, _) = ready_of(fleet, stack).await?;
            (shown == *reason).then_some(())
        })
        .await;
        let holder = &holders[&Fleet::shard_of(stack)];
        for (identity, (_, port)) in &fleet.replicas {
            let base = format!("http://127.0.0.1:{port}");
            let what = format!(
                "{identity} shows {stack} as its Stack does\n{}",
                fleet.logs()
            );
            eventually(&what, 20, async || {
                let (reason, message) = ready_of(fleet, stack).await?;
                let view = get_json(&format!("{base}/api/v1/stacks/{stack}/{stack}")).await;
                let agrees = view["reason"] == serde_json::json!(reason)
                    && view["message"] == serde_json::json!(message)
                    && view["phase"] == "Failure";
                let page = get_text(&format!("{base}/stacks/{stack}/{stack}")).await;
                (agrees && page.contains(&format!("<span class=\"reason\">{reason}</span>")))
                    .then_some(())
            })
            .await;
            let metrics = get_text(&format!("{base}/metrics")).await;
            let series = format!(
                "stackd_stack_ready{{namespace=\"{stack}\",reason=\"{reason}\",stack=\"{stack}\"}} 1"
            );
            assert_eq!(
                metrics.contains(&series),
                identity == holder,
                "{identity}: {series} only from {holder}, the holder:\n{metrics}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_taken_over_and_scaling_3_2_3_rebalances() {
    let mut fleet = Fleet::start(3).await;
    fleet.all_applied(&fleet.heads(), 90).await;
    let holders = fleet.balanced(30).await;

    // Kill the holder of shard 0 without handing anything back.
    let victim = holders[&0].clone();
    fleet.kill(&victim);
    let killed = Instant::now();
    let heads = fleet.change_all("1.27.2");
    fleet.all_applied(&heads, 20).await;
    let taken_over = killed.elapsed();
    eprintln!("replica {victim} killed: its stacks applied by another after {taken_over:?}");
    assert!(taken_over < Duration::from_secs(20), "{taken_over:?}");
    let two = fleet.balanced(20).await;
    assert!(!two.values().any(|h| h == &victim), "{two:?}");

    // Back to three: the newcomer gets a share, and each stack one writer.
    fleet.start_replica("r3");
    let three = fleet.balanced(30).await;
    assert!(three.values().any(|h| h == "r3"), "{three:?}");
    if let Some(fake) = fleet.cluster.fake.as_ref() {
        fake.clear_requests();
    }
    let heads = fleet.change_all("1.27.3");
    fleet.all_applied(&heads, 30).await;
    if let Some(fake) = fleet.cluster.fake_or_skip("which replica wrote each stack") {
        assert_one_writer_each(fake, &fleet.stacks, &three);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_stops_writing_before_another_takes_over() {
    let fleet = Fleet::start(3).await;
    fleet.all_applied(&fleet.heads(), 90).await;
    let holders = fleet.balanced(30).await;
    let Some(fake) = fleet
        .cluster
        .fake_or_skip("a partition needs fault injection")
    else {
        return;
    };
    let cut = holders[&0].clone();
    let lost: BTreeSet<u32> = holders
        .iter()
        .filter(|(_, h)| **h == cut)
        .map(|(s, _)| *s)
        .collect();
    fake.clear_requests();
    // Every Lease request of that replica fails; the rest still goes through,
    // so only its own renewal deadline stops it writing.
    fake.inject(
        fake_api::FaultRule::new(None, "/leases", fake_api::FaultAction::Fail(503))
            .only_agent(&format!("({cut})")),
    );
    let heads = fleet.change_all("1.28");
    fleet.all_applied(&heads, 30).await;
    eventually(
        "the partitioned replica's shards taken over",
        30,
        async || {
            let after = fleet.holders().await;
            lost.iter()
                .all(|s| after.get(s).is_some_and(|h| *h != cut))
                .then_some(())
        },
    )
    .await;
    // Work for the new holders: they must apply it, and only after the cut-off
    // replica stopped.
    let heads = fleet.change_all("1.29");
    fleet.all_applied(&heads, 30).await;

    // In the log's order: the partitioned replica's last write to a stack of
    // its shards comes before the first write of any other replica to them.
    // (The Stack's spec is the repository's holder's to write; its objects and
    // status are the shard's.)
    let in_lost = |path: &str| {
        fleet
            .stacks
            .iter()
            .any(|(stack, _)| lost.contains(&Fleet::shard_of(stack)) && reconciles(path, stack))
    };
    let writes = fake.writes();
    let last_cut = writes
        .iter()
        .rposition(|w| in_lost(&w.path) && replica_of(&w.user_agent).as_deref() == Some(&cut));
    let first_other = writes
        .iter()
        .position(|w| in_lost(&w.path) && replica_of(&w.user_agent).is_some_and(|r| r != cut))
        .expect("another replica applied the partitioned replica's stacks");
    eprintln!(
        "partitioned {cut}: its last write #{last_cut:?}, another replica's first #{first_other} of {}",
        writes.len()
    );
    for (i, w) in writes.iter().enumerate().skip(first_other) {
        if in_lost(&w.path) && replica_of(&w.user_agent).as_deref() == Some(&cut) {
            eprintln!("late write #{i}: {} {} {}", w.method, w.path, w.status);
        }
    }
    if let Some(last_cut) = last_cut {
        assert!(
            last_cut < first_other,
            "{cut} wrote at #{last_cut}, after another replica's first write at #{first_other}"
        );
    }
}
