//! Faults, with nothing lost: an API server failing half-way through an apply,
//! 429 storms, a Git remote that disappears or is force-pushed back, a mirror
//! deleted while running, and a leader that loses its Lease mid-apply. Against
//! the in-process API server and real Git repositories.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;
#[path = "reconcile_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{Value, json};
use stackd::config::RepositoryPolicy;
use stackd::crd::StackPhase;
use stackd::daemon::live::GitSync;
use stackd::git::mirror::Mirror;
use stackd::git::{RepoSettings, Source, SourceEvent, SourceHandle, SourceOptions};
use tokio_util::sync::CancellationToken;

use common::{Stackd, apps_config, eventually};
use fake_api::{FaultAction, FaultRule};
use git_support::Upstream;
use support::{
    Harness, PRUNE, desired, fast_lease, lead, needs_fake, object_writes, take_lease, test_options,
    web_and_db, with_image, without,
};

const NS: &str = "shop";

fn image(h: &Harness, namespace: &str, name: &str) -> Option<String> {
    h.object("apps/v1", "Deployment", namespace, name)?
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn deployments(h: &Harness, namespace: &str) -> Vec<String> {
    h.fake
        .objects_of("apps/v1", "Deployment")
        .iter()
        .filter(|d| d.pointer("/metadata/namespace").and_then(Value::as_str) == Some(namespace))
        .filter_map(|d| d.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// How many objects the API server holds, Events aside: a change adds its
/// own "Applied" Event, which is no object lost or gained.
fn managed_objects(h: &Harness) -> usize {
    h.fake
        .objects()
        .iter()
        .filter(|o| o["kind"] != "Event")
        .count()
}

async fn deployed(h: &Harness, project: Value, revision: &str) {
    h.deployed(desired(NS, "shop", project, revision)).await;
}

// ---------------------------------------------------------------------------
// The API server.

#[tokio::test]
async fn an_apply_failing_half_way_is_completed_by_the_next_pass_and_prunes_nothing_by_mistake() {
    let h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;
    h.fake.clear_requests();

    // r2: web changes, db goes, cache and worker come.
    let mut next = without(with_image(web_and_db(), "web", "nginx:1.28"), "db");
    next["services"]["cache"] = json!({"image": "redis:7"});
    next["services"]["worker"] = json!({"image": "busybox:1.36"});
    // The second Deployment write of the pass fails.
    h.fake.inject(
        FaultRule::new(
            Some(Method::PATCH),
            "/apis/apps/v1/namespaces/shop/deployments/",
            FaultAction::Fail(500),
        )
        .after(1)
        .times(1),
    );
    deployed(&h, next, "r2").await;

    let mut names = deployments(&h, NS);
    names.sort();
    assert_eq!(names, ["cache", "web", "worker"]);
    assert_eq!(image(&h, NS, "web").as_deref(), Some("nginx:1.28"));
    let log = h.fake.requests();
    let failed = log
        .iter()
        .position(|r| r.status == 500)
        .expect("the injected failure happened");
    let deletes: Vec<(usize, String)> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == Method::DELETE && !r.path.contains("/events"))
        .map(|(i, r)| (i, r.path.clone()))
        .collect();
    // Only db's objects are pruned, and only by the pass that applied everything.
    assert!(!deletes.is_empty());
    for (index, path) in &deletes {
        assert!(path.ends_with("/db") || path.contains("/db-"), "{path}");
        assert!(*index > failed, "pruned {path} during the failed pass");
    }
    let status = h.status(NS, "shop").unwrap();
    assert_eq!(status.last_error, None);
    assert_ne!(status.phase, Some(StackPhase::Failure));
}

#[tokio::test]
async fn stacks_reconciled_before_the_caches_are_listed_wait_for_the_list_not_a_timer() {
    let mut h = needs_fake!(Harness::started(test_options()).await);
    deployed(&h, web_and_db(), "r1").await;

    // A restart whose Deployment list takes 5 s: every stack reconciled
    // meanwhile waits. At 10,000 stacks a retry timer made each one spin.
    h.stop().await;
    h.fake.clear_requests();
    h.fake.inject(
        FaultRule::new(
            Some(Method::GET),
            "/apis/apps/v1/deployments",
            FaultAction::Delay(Duration::from_secs(5)),
        )
        .times(1),
    );
    let waited = |h: &Harness| {
        h.handles
            .metrics
            .reconcile_total
            .get_metric_with_label_values(&["shop", NS, "waiting_for_cache"])
            .map(|c| c.get())
            .unwrap_or(0)
    };
    let (before, base) = (h.reconciles(NS, "shop"), waited(&h));
    h.start(test_options());
    // The other kinds' lists end at once and trigger the stack; then quiet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let early = waited(&h);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        early > base,
        "the stack was reconciled before the list ended"
    );
    assert_eq!(
        waited(&h),
        early,
        "retried on a timer while the list was slow"
    );
    assert_eq!(h.reconciles(NS, "shop"), before);
    // The end of the list reconciles it.
    h.wait_for("a reconcile after the list", |h| {
        h.reconciles(NS, "shop") > before
    })
    .await;
    h.settle().await;
    assert_eq!(object_writes(&h.fake.writes()), Vec::<String>::new());
}

#[tokio::test]
async fn a_429_storm_is_backed_off_and_the_request_rate_stays_bounded() {
    let h = needs_fake!(Harness::started(test_options()).await);
    // Every object write is throttled, with a Retry-After of zero: only the
    // controller's own backoff limits the rate.
    h.fake.inject(FaultRule::new(
        Some(Method::PATCH),
        "/apis/apps/v1/namespaces/shop/",
        FaultAction::TooManyRequests {
            retry_after: Duration::ZERO,
        },
    ));
    h.sync(vec![desired(NS, "shop", web_and_db(), "r1")], PRUNE)
        .await
        .unwrap();
    // Sample the request log every 250 ms for 4 s: requests per second over
    // any one-second window.
    let throttled = |h: &Harness| h.fake.requests().iter().filter(|r| r.status == 429).count();
    let mut samples = vec![throttled(&h)];
    for _ in 0..16 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        samples.push(throttled(&h));
    }
    let per_second: Vec<usize> = samples.windows(5).map(|w| w[4] - w[0]).collect();
    let busiest = per_second.iter().copied().max().unwrap_or(0);
    let total = samples[16];
    eprintln!("429 storm: {total} throttled writes in 4 s, at most {busiest} in one second");
    assert!(total >= 3, "the controller kept trying: {total}");
    // The first second holds the backoff's short early delays (100, 200, 400 ms)
    // plus re-triggers from watch events of the objects the first pass did
    // write; measured 7. Without backoff it would be hundreds.
    assert!(
        busiest <= 10,
        "{busiest} throttled writes in one second: {per_second:?}"
    );
    // Then the backoff holds: retry_max is 2 s, so at most one or two a second.
    let settled = per_second.iter().skip(4).copied().max().unwrap_or(0);
    assert!(settled <= 2, "{per_second:?}");
    assert!(total <= 20, "{total} throttled writes in 4 s: {samples:?}");

    // The storm ends: the apply completes, with nothing left out.
    h.fake.clear_faults();
    h.wait_for("the apply after the storm", |h| {
        h.status(NS, "shop")
            .and_then(|s| s.last_applied_revision)
            .as_deref()
            == Some("r1")
    })
    .await;
    let mut names = deployments(&h, NS);
    names.sort();
    assert_eq!(names, ["db", "web"]);
}

#[tokio::test]
async fn a_leader_losing_its_lease_mid_apply_stops_writing() {
    let h = needs_fake!(Harness::new().await);
    h.fake.seed_namespace("stackd");
    // Slow writes, so the apply of twelve services takes seconds.
    h.fake.inject(FaultRule::new(
        Some(Method::PATCH),
        "/apis/apps/v1/namespaces/shop/deployments/",
        FaultAction::Delay(Duration::from_millis(250)),
    ));
    let (stop, task) = lead(&h, "a", fast_lease());
    let mut project = json!({"services": {}});
    for i in 0..12 {
        project["services"][format!("s{i:02}")] = json!({"image": "nginx:1.27"});
    }
    h.sync(vec![desired(NS, "shop", project, "r1")], PRUNE)
        .await
        .unwrap();
    h.wait_for("the apply to start", |h| !deployments(h, NS).is_empty())
        .await;

    // Another replica takes the Lease (a partition): this one must stop at once.
    take_lease(&h, "stackd", "stackd-leader", "intruder", 30).await;
    let applied_when_lost = deployments(&h, NS).len();
    // One renewal period to notice, and one delayed write already in flight.
    tokio::time::sleep(Duration::from_millis(300 + 250 + 200)).await;
    h.fake.clear_requests();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        object_writes(&h.fake.writes()),
        Vec::<String>::new(),
        "a replica without the lease wrote"
    );
    let applied = deployments(&h, NS).len();
    assert!(
        applied < 12,
        "the apply was not interrupted: {applied} of 12"
    );
    assert!(
        applied <= applied_when_lost + 2,
        "{applied_when_lost} -> {applied}"
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

// ---------------------------------------------------------------------------
// Git: the remote disappears, is force-pushed back, the mirror is deleted.

const SHOP: &str = "services:\n  web:\n    image: nginx:1.27\n    ports: [\"8080:80\"]\n  db:\n    image: postgres:16\n";

/// Source → GitSync → Stacks → controller, wired like `stackd run` does.
struct Live {
    h: Harness,
    source: SourceHandle,
    leading: CancellationToken,
    data_dir: std::path::PathBuf,
}

impl Live {
    async fn start(url: String, data_dir: std::path::PathBuf) -> Option<Live> {
        let mut settings = RepoSettings::new("apps", url, "main");
        settings.interval = Duration::from_secs(3600);
        Live::start_with(settings, data_dir).await
    }

    async fn start_with(settings: RepoSettings, data_dir: std::path::PathBuf) -> Option<Live> {
        let h = Harness::started(test_options()).await?;
        let options = SourceOptions {
            watch_local: false,
            ..SourceOptions::default()
        };
        let (source, mut events) =
            Source::spawn(vec![settings], data_dir.clone(), options).unwrap();
        let sync = Arc::new(GitSync::new(
            None,
            h.handles.state.clone(),
            h.handles.failures.clone(),
        ));
        let leading = CancellationToken::new();
        tokio::spawn({
            let (sync, client) = (sync.clone(), h.client.clone());
            let (secrets, leading) = (h.handles.secrets.clone(), leading.clone());
            async move { sync.run(client, secrets, leading, None).await }
        });
        tokio::spawn(async move {
            let policy: RepositoryPolicy = serde_json::from_value(json!({})).unwrap();
            while let Some(event) = events.recv().await {
                if let SourceEvent::Updated(update) = event {
                    sync.offer(&update, &policy);
                }
            }
        });
        Some(Live {
            h,
            source,
            leading,
            data_dir,
        })
    }

    async fn wait_for_image(&self, image: &str) {
        self.source.trigger("apps");
        self.h
            .wait_for(&format!("web to run {image}"), |h| {
                shop_web_image(h).as_deref() == Some(image)
            })
            .await;
        self.h.settle().await;
    }

    async fn wait_for_poll(
        &self,
        what: &str,
        check: impl Fn(&stackd::git::RepositoryState) -> bool,
    ) {
        let started = Instant::now();
        loop {
            if self.source.state("apps").is_some_and(|s| check(&s)) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}: {:?}",
                self.source.state("apps")
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn shop_web_image(h: &Harness) -> Option<String> {
    image(h, "shop", "web")
}

impl Drop for Live {
    fn drop(&mut self) {
        self.leading.cancel();
        self.source.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_remote_a_force_push_back_and_a_deleted_mirror_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(tmp.path(), "apps");
    upstream.write("shop/compose.yaml", SHOP);
    let first = upstream.commit("shop");
    let url = upstream.file_url();
    let live = needs_fake!(Live::start(url.clone(), tmp.path().join("data")).await);
    live.wait_for_image("nginx:1.27").await;
    let objects = managed_objects(&live.h);

    // The remote disappears: an error, the Stacks and objects stay.
    let moved = tmp.path().join("moved");
    std::fs::rename(&upstream.dir, &moved).unwrap();
    live.h.fake.clear_requests();
    live.source.trigger("apps");
    live.wait_for_poll("the failed poll", |s| s.last_error.is_some())
        .await;
    live.h.settle().await;
    assert_eq!(object_writes(&live.h.fake.writes()), Vec::<String>::new());
    assert!(
        live.h
            .object("stackd.dev/v1alpha1", "Stack", "shop", "shop")
            .is_some()
    );
    assert_eq!(shop_web_image(&live.h).as_deref(), Some("nginx:1.27"));

    // It comes back with a new commit: applied.
    std::fs::rename(&moved, &upstream.dir).unwrap();
    upstream.write("shop/compose.yaml", &SHOP.replace("1.27", "1.28"));
    upstream.commit("1.28");
    live.wait_for_image("nginx:1.28").await;

    // Force-pushed back to the first commit: Git is the truth, the old image
    // returns; nothing else is removed.
    upstream.git(&["reset", "-q", "--hard", &first]);
    live.wait_for_image("nginx:1.27").await;
    live.wait_for_poll("the force-push", |s| s.force_pushes == 1)
        .await;
    assert_eq!(managed_objects(&live.h), objects);
    assert!(
        live.h
            .object("apps/v1", "Deployment", "shop", "db")
            .is_some()
    );
    // 1.28 and back to 1.27 were the same Event twice: one Event, a series of 2.
    let updates: Vec<Value> = live
        .h
        .fake
        .objects_of("events.k8s.io/v1", "Event")
        .into_iter()
        .filter(|e| e["note"] == "created 0, updated 1")
        .collect();
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert_eq!(updates[0]["series"]["count"], 2, "{updates:#?}");

    // The mirror is deleted while running: the next poll rebuilds it.
    std::fs::remove_dir_all(Mirror::dir_for(&live.data_dir, &url)).unwrap();
    upstream.write("shop/compose.yaml", &SHOP.replace("1.27", "1.29"));
    upstream.commit("1.29");
    live.wait_for_image("nginx:1.29").await;
    assert!(
        live.h
            .object("apps/v1", "Deployment", "shop", "db")
            .is_some()
    );
    let status = live.h.status("shop", "shop").unwrap();
    assert_eq!(status.last_error, None);
}

// ---------------------------------------------------------------------------
// A hung remote: every network operation has a deadline (`timeout`).

/// The deadline the hung-remote tests give each operation.
const GIT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a misbehaving remote does; each case recovers when it behaves again.
#[derive(Clone, Copy, Debug)]
enum Hang {
    /// Accepts the TCP connection and never answers.
    Silent,
    /// Answers half of an HTTP ref advertisement and stalls.
    HalfAdvertisement,
    /// Completes the SSH handshake, then its command stalls.
    SshAfterHandshake,
    /// Sends the pack at one byte per second.
    DripPack,
}

/// A Git server over HTTP (through a [`git_support::FaultyProxy`]) or SSH that
/// hangs on demand.
struct HangingRemote {
    url: String,
    http: Option<(git_support::HttpServer, git_support::FaultyProxy)>,
    /// The SSH server and the file whose presence makes its command stall.
    ssh: Option<(git_support::ssh::SshServer, std::path::PathBuf)>,
    /// Written by the stalled SSH command when it starts.
    ssh_stalled: std::path::PathBuf,
    /// Settings for this remote (SSH credentials included).
    auth: Option<stackd::git::settings::Auth>,
}

impl HangingRemote {
    /// Serves `upstream` (a directory under `root`) for `hang`; `None` (after a
    /// visible `SKIPPED`) when the SSH server cannot run here, a failure under CI.
    async fn start(root: &std::path::Path, upstream: &Upstream, hang: Hang) -> Option<Self> {
        let name = upstream
            .dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let ssh_stalled = root.join("ssh-stalled");
        if let Hang::SshAfterHandshake = hang {
            let dir = root.join("sshd");
            std::fs::create_dir_all(&dir).unwrap();
            let key = git_support::ssh::keygen(&root.join("id_client"));
            let flag = root.join("stall-ssh");
            // ForceCommand: stall while the flag exists (reading, never answering, until
            // the connection goes), else run the client's command.
            let command = root.join("force-command.sh");
            std::fs::write(
                &command,
                format!(
                    "#!/bin/sh\nif [ -e {flag} ]; then touch {stalled}; exec cat >/dev/null; fi\nexec sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
                    flag = flag.display(),
                    stalled = ssh_stalled.display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&command, std::fs::Permissions::from_mode(0o755)).unwrap();
            let server = match git_support::ssh::SshServer::start_with(&dir, &key, Some(&command)) {
                Ok(server) => server,
                Err(reason) => {
                    assert!(
                        !common::in_ci(),
                        "sshd could not be started under CI: {reason}"
                    );
                    println!("SKIPPED: sshd could not be started: {reason}");
                    return None;
                }
            };
            let known_hosts = root.join("known_hosts");
            std::fs::write(&known_hosts, server.known_hosts_line()).unwrap();
            let user = git_support::ssh::run("id", &["-un"]);
            return Some(HangingRemote {
                url: server.url(&user, &upstream.dir),
                auth: Some(stackd::git::settings::Auth::Ssh {
                    username: user,
                    private_key_file: key,
                    known_hosts_file: known_hosts,
                }),
                http: None,
                ssh: Some((server, flag)),
                ssh_stalled,
            });
        }
        let server = git_support::HttpServer::start(root, None).await;
        let proxy = git_support::FaultyProxy::start(server.addr).await;
        Some(HangingRemote {
            url: format!("http://{}/{name}", proxy.addr),
            http: Some((server, proxy)),
            ssh: None,
            ssh_stalled,
            auth: None,
        })
    }

    fn settings(&self, timeout: Duration) -> RepoSettings {
        let mut settings = RepoSettings::new("apps", self.url.clone(), "main");
        settings.interval = Duration::from_secs(3600);
        settings.timeout = timeout;
        settings.auth = self.auth.clone();
        settings
    }

    /// Starts (`true`) or ends the hang for new connections.
    fn hang(&self, hang: Hang, on: bool) {
        match (hang, &self.http, &self.ssh) {
            (Hang::SshAfterHandshake, _, Some((_, flag))) => {
                if on {
                    std::fs::write(flag, b"").unwrap();
                } else {
                    let _ = std::fs::remove_file(flag);
                }
            }
            (Hang::DripPack, Some((server, _)), _) => server.drip_packs(on),
            (Hang::Silent, Some((_, proxy)), _) => proxy.set(if on {
                git_support::Fault::Silent
            } else {
                git_support::Fault::None
            }),
            (Hang::HalfAdvertisement, Some((_, proxy)), _) => proxy.set(if on {
                git_support::Fault::HalfAdvertisement
            } else {
                git_support::Fault::None
            }),
            _ => unreachable!("{hang:?} on this remote"),
        }
    }

    /// Whether a hung operation is in flight right now.
    fn hanging(&self, hang: Hang) -> bool {
        match (hang, &self.http) {
            (Hang::SshAfterHandshake, _) => self.ssh_stalled.exists(),
            (Hang::DripPack, Some((server, _))) => server.traffic.upload_packs() > 0,
            (_, Some((_, proxy))) => proxy.stalled() > 0,
            _ => false,
        }
    }
}

/// Each hang fails the poll at the deadline with the label `timeout`, leaves
/// the applied objects alone, and the next poll, once the remote behaves,
/// applies the new commit.
async fn a_hung_remote_times_out_and_recovers(hang: Hang) {
    stackd::git::worker::set_program(Some(env!("CARGO_BIN_EXE_stackd").into()));
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(tmp.path(), "apps");
    upstream.write("shop/compose.yaml", SHOP);
    upstream.commit("shop");
    let Some(remote) = HangingRemote::start(tmp.path(), &upstream, hang).await else {
        return;
    };
    let settings = remote.settings(GIT_TIMEOUT);
    let live = needs_fake!(Live::start_with(settings, tmp.path().join("data")).await);
    live.wait_for_image("nginx:1.27").await;
    let objects = managed_objects(&live.h);

    // A new commit, and the remote hangs: the poll fails at the deadline.
    upstream.write("shop/compose.yaml", &SHOP.replace("1.27", "1.28"));
    upstream.commit("1.28");
    remote.hang(hang, true);
    live.h.fake.clear_requests();
    let polls = live.source.state("apps").unwrap().polls;
    let started = Instant::now();
    live.source.trigger("apps");
    live.wait_for_poll("the timed-out poll", |s| s.polls > polls)
        .await;
    let took = started.elapsed();
    eprintln!("{hang:?}: the poll failed {took:?} after the trigger");
    let state = live.source.state("apps").unwrap();
    assert_eq!(
        state.last_error_label.as_deref(),
        Some("timeout"),
        "{hang:?}: {state:?}"
    );
    assert!(
        state
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("timed out after 2s"),
        "{hang:?}: {state:?}"
    );
    assert!(
        remote.hanging(hang),
        "{hang:?}: the remote was never reached"
    );
    // The deadline, not an early error, ended it; and not much later either.
    assert!(
        took >= GIT_TIMEOUT && took < GIT_TIMEOUT + Duration::from_secs(4),
        "{hang:?}: failed after {took:?}"
    );
    live.h.settle().await;
    assert_eq!(object_writes(&live.h.fake.writes()), Vec::<String>::new());
    assert_eq!(managed_objects(&live.h), objects);
    assert_eq!(shop_web_image(&live.h).as_deref(), Some("nginx:1.27"));

    // The remote behaves again: the next poll, on a fresh connection, applies it.
    remote.hang(hang, false);
    live.wait_for_image("nginx:1.28").await;
    let state = live.source.state("apps").unwrap();
    assert_eq!(state.last_error, None);
    // A fetch killed half-way left the crash marker: the mirror was rebuilt.
    let rebuilt = if let Hang::DripPack = hang { 1 } else { 0 };
    assert_eq!(state.mirror_rebuilds, rebuilt, "{hang:?}: {state:?}");
    assert!(
        live.h
            .object("apps/v1", "Deployment", "shop", "db")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_accepts_and_never_answers_times_out_and_recovers() {
    a_hung_remote_times_out_and_recovers(Hang::Silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_ref_advertisement_then_silence_times_out_and_recovers() {
    a_hung_remote_times_out_and_recovers(Hang::HalfAdvertisement).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_server_stalling_after_the_handshake_times_out_and_recovers() {
    a_hung_remote_times_out_and_recovers(Hang::SshAfterHandshake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_sent_at_one_byte_per_second_times_out_and_recovers() {
    a_hung_remote_times_out_and_recovers(Hang::DripPack).await;
}

/// SIGTERM while a Git operation hangs (with the default-sized deadline far
/// away): `stackd run` exits within 10 s, with code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hung_git_operation_exits_promptly_and_cleanly() {
    for hang in [
        Hang::Silent,
        Hang::HalfAdvertisement,
        Hang::SshAfterHandshake,
        Hang::DripPack,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let upstream = Upstream::new(tmp.path(), "apps");
        upstream.write("shop/compose.yaml", SHOP);
        upstream.commit("shop");
        let Some(remote) = HangingRemote::start(tmp.path(), &upstream, hang).await else {
            continue;
        };
        remote.hang(hang, true);
        let mut repository = serde_json::json!({
            "name": "apps",
            "url": remote.url,
            "interval": "1h",
            "timeout": "60s",
        });
        if let Some(auth) = &remote.auth {
            repository["auth"] = serde_json::to_value(auth).unwrap();
        }
        let config = serde_json::json!({ "repositories": [repository] }).to_string();
        let stackd = Stackd::new(tmp.path(), tmp.path().join("no-kubeconfig"), &config);
        let mut daemon = stackd.start_with("stackd.log", &["--dry-run"]);
        eventually(&format!("{hang:?} to hang"), 30, async || {
            remote.hanging(hang).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        let status = daemon.terminate(Duration::from_secs(10)).await;
        eprintln!("{hang:?}: exited {:?} after SIGTERM", sent.elapsed());
        let log = stackd.log("stackd.log");
        assert!(status.success(), "{hang:?}: {status}\n{log}");
        assert!(log.contains("shutting down"), "{hang:?}: {log}");
    }
}

// ---------------------------------------------------------------------------
// The process is killed mid-fetch and restarted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stackd_killed_mid_fetch_recovers_on_restart() {
    let (api, _client) = fake_api::FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(dir.path(), "apps");
    let compose = |tag: &str| format!("services:\n  web:\n    image: nginx:{tag}\n");
    upstream.write("stacks/web/compose.yaml", &compose("1.27"));
    upstream.commit("web");
    let git = git_support::HttpServer::start(dir.path(), None).await;
    let config = apps_config(&git.url("apps"), "    ref: main\n    interval: 200ms\n");
    let stackd = Stackd::new(dir.path(), api.write_kubeconfig(dir.path()), &config);
    let web_image = || {
        api.object("apps/v1", "Deployment", "web", "web")
            .and_then(|d| d.pointer("/spec/template/spec/containers/0/image").cloned())
            .and_then(|i| i.as_str().map(str::to_string))
    };

    let mut first = stackd.start("stackd-1.log");
    eventually("the first commit applied", 30, async || {
        (web_image().as_deref() == Some("nginx:1.27")).then_some(())
    })
    .await;

    // A new commit whose pack transfer stalls half-way; SIGKILL during it.
    git.stall_packs(Duration::from_secs(60));
    let packs = git.traffic.upload_packs();
    upstream.write("stacks/web/big.txt", &"x".repeat(512 * 1024));
    upstream.write("stacks/web/compose.yaml", &compose("1.28"));
    upstream.commit("1.28");
    eventually("the fetch to start", 20, async || {
        (git.traffic.upload_packs() > packs).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    assert_eq!(web_image().as_deref(), Some("nginx:1.27"));

    // Restarted on the same data directory: it recovers and applies the commit.
    git.stall_packs(Duration::ZERO);
    let _second = stackd.start("stackd-2.log");
    eventually("the commit after the restart", 30, async || {
        (web_image().as_deref() == Some("nginx:1.28")).then_some(())
    })
    .await;
    let deletes: Vec<String> = api
        .writes()
        .iter()
        .filter(|r| r.method == Method::DELETE && r.path.contains("/deployments/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deletes, Vec::<String>::new());
    let log = stackd.log("stackd-2.log");
    // The killed fetch left its mark; the restart rebuilt the mirror.
    assert!(
        log.contains("discarding damaged mirror")
            && log.contains("an earlier fetch did not finish"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// Configuration reloads (the first reload and its refusal are in daemon_live.rs).

fn get_json(stackd: &Stackd, path: &str) -> Option<Value> {
    serde_json::from_str(&stackd.get(path)?.1).ok()
}

/// Every edit counts: an edit seen while the daemon is busy with something
/// else (a status tick, a Git event) must not be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configuration_edit_is_seen_invalid_ones_refused_valid_ones_restored() {
    let (api, _client) = fake_api::FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(dir.path(), "apps");
    upstream.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx\n",
    );
    upstream.commit("web");
    let valid = |n: usize| {
        format!(
            "repositories:\n  - name: apps\n    url: {}\n    ref: main\n    interval: 1h\n    variables: {{EDIT: \"{n}\"}}\n",
            upstream.file_url()
        )
    };
    let stackd = Stackd::new(dir.path(), api.write_kubeconfig(dir.path()), &valid(0));
    let config = &stackd.config;
    let _daemon = stackd.start("stackd.log");
    let repositories = "/api/v1/repositories";
    // The first poll is published from the main loop, which starts after the
    // configuration watch: edits from now on must all be seen.
    eventually("the first poll", 30, async || {
        get_json(&stackd, repositories)?["repositories"][0]["commit"]
            .as_str()
            .map(str::to_string)
    })
    .await;

    // Each edit replaces the file by a rename, as tools that save atomically
    // do: one file event per edit, so a lost event is a lost edit.
    let replace = |text: &str| {
        let staged = dir.path().join("staged.yaml");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, config).unwrap();
    };
    for edit in 1..=6 {
        replace("repositories:\n  - name: apps\n    url: x\n    interval: soon\n");
        let error = eventually(&format!("edit {edit} to be refused"), 10, async || {
            get_json(&stackd, repositories)?["configError"]
                .as_str()
                .map(str::to_string)
        })
        .await;
        assert!(error.contains("repositories[0].interval"), "{error}");
        replace(&valid(edit));
        eventually(&format!("edit {edit} to be accepted"), 10, async || {
            get_json(&stackd, repositories)?["configError"]
                .is_null()
                .then_some(())
        })
        .await;
    }
}
