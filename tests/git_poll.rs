//! Polling real repositories over `file://` and smart HTTP (with and without auth).

#[path = "git_support/mod.rs"]
mod git_support;

use git_support::{HttpServer, Upstream, secret_file};
use stackd::git::poll::poll_repository;
use stackd::git::settings::{Auth, RepoSettings};
use stackd::render::files::{FileSource, RepoPath};

fn upstream_with_stack(root: &std::path::Path) -> Upstream {
    let up = Upstream::new(root, "up");
    up.write("README.md", "hello\n");
    up.commit("initial");
    up.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx\n",
    );
    up.commit("add web");
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_poll_fetches_only_on_change_and_detects_force_push() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream_with_stack(tmp.path());
    let server = HttpServer::start(tmp.path(), None).await;
    let data = tmp.path().join("data");
    let settings = RepoSettings::new("apps", server.url("up"), "main");

    let (s, d) = (settings.clone(), data.clone());
    let first = tokio::task::spawn_blocking(move || poll_repository(&s, &d, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.commit.to_string(), up.head());
    assert_eq!(first.subject, "add web");
    assert!(first.fetched.is_some());
    assert!(!first.forced);
    assert_eq!(first.stacks.len(), 1);
    assert_eq!(first.stacks[0].name, "web");
    let text = first
        .reader
        .read(&RepoPath::new("stacks/web/compose.yaml").unwrap())
        .unwrap();
    assert!(String::from_utf8(text).unwrap().contains("nginx"));
    let packs_after_first = server.traffic.upload_packs();
    assert!(packs_after_first >= 1);

    // Unchanged: one advertisement, no upload-pack request, nothing fetched.
    let (s, d, last) = (settings.clone(), data.clone(), first.commit);
    let ads_before = server.traffic.advertisements();
    let second = tokio::task::spawn_blocking(move || poll_repository(&s, &d, Some(last)))
        .await
        .unwrap()
        .unwrap();
    assert!(second.fetched.is_none());
    assert_eq!(second.commit, first.commit);
    assert_eq!(server.traffic.upload_packs(), packs_after_first);
    assert_eq!(server.traffic.advertisements(), ads_before + 1);

    // A new commit is fetched incrementally and is not a force-push.
    up.write(
        "stacks/db/compose.yaml",
        "services:\n  db:\n    image: postgres\n",
    );
    let c3 = up.commit("add db");
    let (s, d, last) = (settings.clone(), data.clone(), second.commit);
    let third = tokio::task::spawn_blocking(move || poll_repository(&s, &d, Some(last)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.commit.to_string(), c3);
    assert!(third.fetched.is_some());
    assert!(!third.forced, "a fast-forward is not a force-push");
    assert_eq!(third.previous, Some(second.commit));
    let names: Vec<_> = third.stacks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["db", "web"]);

    // Rewrite history: reset to the first commit and commit something else.
    up.git(&["reset", "-q", "--hard", "HEAD~2"]);
    up.write("stacks/other/compose.yaml", "services: {}\n");
    let c4 = up.commit("rewritten");
    let (s, d, last) = (settings.clone(), data.clone(), third.commit);
    let fourth = tokio::task::spawn_blocking(move || poll_repository(&s, &d, Some(last)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fourth.commit.to_string(), c4);
    assert!(
        fourth.forced,
        "rewritten history is reported as a force-push"
    );
    eprintln!(
        "first fetch {:?}, incremental {:?}, forced {:?}",
        first.fetched, third.fetched, fourth.fetched
    );
}
