//! The `Source` API end to end: events, triggers, state, shared mirrors, the
//! local watch and webhooks, against real repositories.

#[path = "git_support/mod.rs"]
mod git_support;

use std::time::{Duration, Instant};

use git_support::{HttpServer, Upstream, secret_file};
use http::{HeaderMap, StatusCode};
use stackd::git::source::PollResult;
use stackd::git::webhook::{self, Provider};
use stackd::git::{
    RepoSettings, RepositoryState, RepositoryUpdate, Source, SourceEvent, SourceHandle,
    SourceOptions,
};
use stackd::render::files::RepoPath;
use tokio::sync::mpsc::Receiver;

const HOUR: Duration = Duration::from_secs(3600);

fn no_watch() -> SourceOptions {
    SourceOptions {
        watch_local: false,
        ..SourceOptions::default()
    }
}

fn settings(name: &str, url: String) -> RepoSettings {
    let mut s = RepoSettings::new(name, url, "main");
    s.interval = HOUR;
    s
}

async fn next_event(rx: &mut Receiver<SourceEvent>) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an event within 20 s")
        .expect("source still running")
}

async fn next_update(rx: &mut Receiver<SourceEvent>) -> RepositoryUpdate {
    match next_event(rx).await {
        SourceEvent::Updated(u) => u,
        other => panic!("expected an update, got {other:?}"),
    }
}

async fn wait_state(
    handle: &SourceHandle,
    name: &str,
    what: &str,
    pred: impl Fn(&RepositoryState) -> bool,
) -> RepositoryState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = handle.state(name).expect("repository state");
        if pred(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn upstream(root: &std::path::Path) -> Upstream {
    let up = Upstream::new(root, "up");
    up.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx\n",
    );
    up.commit("add web");
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_triggers_and_state_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream(tmp.path());
    let server = HttpServer::start(tmp.path(), None).await;
    let (handle, mut rx) = Source::spawn(
        vec![settings("apps", server.url("up"))],
        tmp.path().join("data"),
        no_watch(),
    )
    .unwrap();

    let first = next_update(&mut rx).await;
    assert_eq!(first.repository, "apps");
    assert_eq!(first.commit, up.head());
    assert_eq!(first.previous, None);
    assert_eq!(first.subject, "add web");
    assert_eq!(first.stacks.len(), 1);
    assert_eq!(first.stacks[0].name, "web");
    let compose = first
        .reader
        .read(&RepoPath::new("stacks/web/compose.yaml").unwrap())
        .unwrap();
    assert!(compose.starts_with(b"services:"));
    let state = wait_state(&handle, "apps", "first poll", |s| s.polls == 1).await;
    assert_eq!(state.commit.as_deref(), Some(up.head().as_str()));
    assert_eq!(state.subject.as_deref(), Some("add web"));
    assert_eq!(state.stacks, vec!["web"]);
    assert_eq!(state.fetches, 1);
    assert_eq!(state.last_result, Some(PollResult::Updated));
    assert!(state.next_poll.is_some() && state.last_poll.is_some());
    assert!(state.fetched_bytes > 0);

    // Trigger with nothing new: a poll, no fetch, no event.
    let packs = server.traffic.upload_packs();
    assert!(handle.trigger("apps"));
    assert!(!handle.trigger("nope"));
    let state = wait_state(&handle, "apps", "second poll", |s| s.polls == 2).await;
    assert_eq!(state.fetches, 1);
    assert_eq!(state.last_result, Some(PollResult::Unchanged));
    assert_eq!(server.traffic.upload_packs(), packs);

    // A new commit.
    up.write("stacks/db/compose.yaml", "services: {}\n");
    let c2 = up.commit("add db");
    handle.trigger("apps");
    let second = next_update(&mut rx).await;
    assert_eq!(second.commit, c2);
    assert_eq!(second.previous.as_deref(), Some(first.commit.as_str()));
    assert!(!second.forced);
    let names: Vec<&str> = second.stacks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["db", "web"]);

    // A force-push is reported.
    up.git(&["reset", "-q", "--hard", "HEAD~1"]);
    let c3 = up.commit("rewritten");
    handle.trigger("apps");
    let third = next_update(&mut rx).await;
    assert_eq!(third.commit, c3);
    assert!(third.forced);
    let state = wait_state(&handle, "apps", "force-push", |s| s.force_pushes == 1).await;
    assert_eq!(state.last_result, Some(PollResult::ForcePushed));

    // The ref is deleted: an error, the last good commit is kept.
    up.git(&["checkout", "-q", "-b", "other"]);
    up.git(&["branch", "-D", "main"]);
    handle.trigger("apps");
    match next_event(&mut rx).await {
        SourceEvent::Failed {
            repository,
            error,
            last_good,
        } => {
            assert_eq!(repository, "apps");
            assert_eq!(error.label(), "ref_not_found");
            assert_eq!(last_good.as_deref(), Some(c3.as_str()));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let state = wait_state(&handle, "apps", "failure", |s| s.last_error.is_some()).await;
    assert_eq!(state.last_error_label.as_deref(), Some("ref_not_found"));
    assert_eq!(state.commit.as_deref(), Some(c3.as_str()));
    assert_eq!(state.last_result, Some(PollResult::Failed));
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_sharing_a_url_share_one_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream(tmp.path());
    up.write("infra/mon/compose.yaml", "services: {}\n");
    up.commit("infra");
    let server = HttpServer::start(tmp.path(), None).await;
    let mut apps = settings("apps", server.url("up"));
    apps.paths = vec!["stacks/*".into()];
    let mut infra = settings("infra", server.url("up"));
    infra.paths = vec!["infra/*".into()];
    let (handle, mut rx) =
        Source::spawn(vec![apps, infra], tmp.path().join("data"), no_watch()).unwrap();
    let mut got = [next_update(&mut rx).await, next_update(&mut rx).await];
    got.sort_by(|a, b| a.repository.cmp(&b.repository));
    assert_eq!(got[0].repository, "apps");
    assert_eq!(got[0].stacks[0].name, "web");
    assert_eq!(got[1].repository, "infra");
    assert_eq!(got[1].stacks[0].name, "mon");
    let fetches: u64 = handle.states().iter().map(|s| s.fetches).sum();
    assert_eq!(
        fetches, 1,
        "the second repository finds the commit already mirrored"
    );
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_watch_picks_up_a_commit_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream(tmp.path());
    let (handle, mut rx) = Source::spawn(
        vec![settings("local", up.file_url())],
        tmp.path().join("data"),
        SourceOptions::default(),
    )
    .unwrap();
    next_update(&mut rx).await;
    // Let the first poll's state settle so the watch, not a pending trigger, drives the next one.
    wait_state(&handle, "local", "first poll", |s| s.polls == 1).await;

    let started = Instant::now();
    up.write("stacks/new/compose.yaml", "services: {}\n");
    let commit = up.commit("new stack");
    let update = tokio::time::timeout(Duration::from_secs(5), next_update(&mut rx))
        .await
        .expect("the watch triggers a poll");
    let elapsed = started.elapsed();
    assert_eq!(update.commit, commit);
    eprintln!("local watch: new commit seen after {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    handle.shutdown();
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_trigger_polls_and_reject_bad_signatures() {
    let tmp = tempfile::tempdir().unwrap();
    upstream(tmp.path());
    let server = HttpServer::start(tmp.path(), None).await;
    let mut repo = settings("apps", server.url("up"));
    repo.webhook_secret_file = Some(secret_file(tmp.path(), "hook-secret", "s3cret\n"));
    let unsigned = settings("unsigned", "https://example.invalid/other.git".to_string());
    // The events are not needed here (the unreachable repository only fails).
    let (handle, _rx) =
        Source::spawn(vec![repo, unsigned], tmp.path().join("data"), no_watch()).unwrap();
    wait_state(&handle, "apps", "first poll", |s| s.polls == 1).await;

    let clone_url = format!("{}.git", server.url("up"));
    let gh_body =
        format!(r#"{{"ref":"refs/heads/main","repository":{{"clone_url":"{clone_url}"}}}}"#);
    let gl_body = format!(r#"{{"project":{{"git_http_url":"{clone_url}"}}}}"#);
    let secret = b"s3cret";
    let cases: Vec<(Provider, String, HeaderMap)> = vec![
        (
            Provider::GitHub,
            gh_body.clone(),
            headers(&[(
                "x-hub-signature-256",
                webhook::sign_sha256(secret, gh_body.as_bytes()),
            )]),
        ),
        (
            Provider::Gitea,
            gh_body.clone(),
            headers(&[(
                "x-gitea-signature",
                webhook::hmac_hex(secret, gh_body.as_bytes()),
            )]),
        ),
        (
            Provider::GitLab,
            gl_body.clone(),
            headers(&[("x-gitlab-token", "s3cret".to_string())]),
        ),
        (
            Provider::Generic,
            "anything".to_string(),
            headers(&[("x-signature-256", webhook::sign_sha256(secret, b"anything"))]),
        ),
    ];
    let mut polls = 1;
    for (provider, body, good) in &cases {
        let outcome = webhook::handle(*provider, good, body.as_bytes(), &handle);
        assert_eq!(
            outcome.status,
            StatusCode::ACCEPTED,
            "{provider:?}: {}",
            outcome.message
        );
        assert_eq!(outcome.triggered, vec!["apps"]);
        polls += 1;
        wait_state(&handle, "apps", "webhook poll", |s| s.polls >= polls).await;
    }

    // Wrong and missing signatures: 401, counted, no poll.
    let wrong = headers(&[(
        "x-hub-signature-256",
        webhook::sign_sha256(b"guess", gh_body.as_bytes()),
    )]);
    let outcome = webhook::handle(Provider::GitHub, &wrong, gh_body.as_bytes(), &handle);
    assert_eq!(outcome.status, StatusCode::UNAUTHORIZED);
    assert!(outcome.triggered.is_empty());
    let outcome = webhook::handle(
        Provider::GitLab,
        &HeaderMap::new(),
        gl_body.as_bytes(),
        &handle,
    );
    assert_eq!(outcome.status, StatusCode::UNAUTHORIZED);
    let outcome = webhook::handle(Provider::Gitea, &wrong, gh_body.as_bytes(), &handle);
    assert_eq!(outcome.status, StatusCode::UNAUTHORIZED);
    let bad_generic = headers(&[("x-signature-256", webhook::sign_sha256(b"guess", b"x"))]);
    let outcome = webhook::handle(Provider::Generic, &bad_generic, b"x", &handle);
    assert_eq!(outcome.status, StatusCode::UNAUTHORIZED);
    let state = handle.state("apps").unwrap();
    assert_eq!(state.rejected_webhooks, 4);
    assert_eq!(state.polls, polls);

    // No repository with that URL: 404; not JSON: 400.
    let other = r#"{"repository":{"clone_url":"https://example.com/someone/else.git"}}"#;
    let signed = headers(&[(
        "x-hub-signature-256",
        webhook::sign_sha256(secret, other.as_bytes()),
    )]);
    let outcome = webhook::handle(Provider::GitHub, &signed, other.as_bytes(), &handle);
    assert_eq!(outcome.status, StatusCode::NOT_FOUND);
    let outcome = webhook::handle(Provider::GitHub, &signed, b"{not json", &handle);
    assert_eq!(outcome.status, StatusCode::BAD_REQUEST);
    // A repository without a configured secret cannot be triggered.
    let unsigned_body = r#"{"repository":{"clone_url":"https://example.invalid/other"}}"#;
    let outcome = webhook::handle(Provider::GitHub, &signed, unsigned_body.as_bytes(), &handle);
    assert_eq!(outcome.status, StatusCode::UNAUTHORIZED);
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_watch_on_a_bare_repository_sees_a_push() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream(tmp.path());
    let bare = tmp.path().join("bare.git");
    git_support::git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            up.dir.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let (handle, mut rx) = Source::spawn(
        vec![settings("bare", bare.display().to_string())],
        tmp.path().join("data"),
        SourceOptions::default(),
    )
    .unwrap();
    next_update(&mut rx).await;
    wait_state(&handle, "bare", "first poll", |s| s.polls == 1).await;

    up.write("stacks/pushed/compose.yaml", "services: {}\n");
    let commit = up.commit("pushed");
    let started = Instant::now();
    up.git(&["push", "-q", bare.to_str().unwrap(), "main"]);
    let update = tokio::time::timeout(Duration::from_secs(5), next_update(&mut rx))
        .await
        .expect("the watch triggers a poll");
    assert_eq!(update.commit, commit);
    let elapsed = started.elapsed();
    eprintln!("bare repository watch: push seen after {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_remote_keeps_last_good_commit_and_hides_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream(tmp.path());
    let server = HttpServer::start(tmp.path(), None).await;
    let url = server.url("up").replace("http://", "http://bot:hunter2@");
    let (handle, mut rx) = Source::spawn(
        vec![settings("apps", url)],
        tmp.path().join("data"),
        no_watch(),
    )
    .unwrap();
    let first = next_update(&mut rx).await;
    assert_eq!(first.commit, up.head());
    assert!(!first.url.contains("hunter2"));
    assert_eq!(first.url, server.url("up"));

    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.trigger("apps");
    match next_event(&mut rx).await {
        SourceEvent::Failed {
            error, last_good, ..
        } => {
            assert_eq!(error.label(), "unreachable", "{error}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
            assert_eq!(last_good.as_deref(), Some(first.commit.as_str()));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let state = wait_state(&handle, "apps", "failure", |s| s.last_error.is_some()).await;
    assert_eq!(state.commit.as_deref(), Some(first.commit.as_str()));
    let shown = serde_json::to_string(&state).unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
    // The same failure again is not re-sent as an event.
    handle.trigger("apps");
    wait_state(&handle, "apps", "second failure", |s| s.polls == 3).await;
    assert!(rx.try_recv().is_err());
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_repeat_on_the_interval_without_triggers() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream(tmp.path());
    let mut s = settings("timer", up.file_url());
    s.interval = Duration::from_millis(200);
    let (handle, mut rx) = Source::spawn(vec![s], tmp.path().join("data"), no_watch()).unwrap();
    next_update(&mut rx).await;
    let started = Instant::now();
    let state = wait_state(&handle, "timer", "three polls", |s| s.polls >= 3).await;
    // Two more polls at 200 ms ± 10% each.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(state.fetches, 1);
    // A commit is picked up by the timer alone (the watch is off).
    let commit = up.commit("timer commit");
    let update = next_update(&mut rx).await;
    assert_eq!(update.commit, commit);
    handle.shutdown();
}
