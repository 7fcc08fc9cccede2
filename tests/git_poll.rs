//! Polling real repositories over `file://` and smart HTTP (with and without auth).

#[path = "git_support/mod.rs"]
mod git_support;

use git_support::{HttpServer, Upstream, secret_file};
use stackd::git::poll::poll_repository;
use stackd::git::settings::{Auth, RepoSettings};
use stackd::render::files::RepoPath;

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
    let stacks = first.stacks.as_ref().expect("discovered");
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0].name, "web");
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
    assert!(
        second.stacks.is_none(),
        "an unchanged commit is not rediscovered"
    );
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
    let names: Vec<_> = third
        .stacks
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
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

fn poll(
    settings: &RepoSettings,
    data: &std::path::Path,
    last: Option<git2::Oid>,
) -> Result<stackd::git::poll::PollOutcome, stackd::git::GitError> {
    poll_repository(settings, data, last)
}

#[test]
fn file_url_poll_falls_back_from_shallow_and_pins_tags_and_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream_with_stack(tmp.path());
    let data = tmp.path().join("data");
    let first = poll(
        &RepoSettings::new("apps", up.file_url(), "main"),
        &data,
        None,
    )
    .unwrap();
    assert_eq!(first.commit.to_string(), up.head());
    let stats = first.fetched.expect("first poll fetches");
    assert!(stats.received_objects > 0);
    // libgit2's local transport cannot fetch shallow: the fetch falls back to a full one
    // (or succeeds shallow if a newer libgit2 learns it); either way the commit is there.
    eprintln!("file:// fetch stats: {stats:?}");

    // A plain path works like file://, and an annotated tag is peeled to its commit.
    let tagged = up.head();
    up.git(&["tag", "-a", "v1", "-m", "release 1"]);
    up.commit("after tag");
    let by_tag = RepoSettings::new("apps", up.dir.display().to_string(), "v1");
    let outcome = poll(&by_tag, &data, None).unwrap();
    assert_eq!(outcome.commit.to_string(), tagged);

    // A full SHA needs no ref lookup once the commit is in the mirror.
    let pinned = RepoSettings::new("apps", up.file_url(), &tagged);
    let outcome = poll(&pinned, &data, None).unwrap();
    assert_eq!(outcome.commit.to_string(), tagged);
    assert!(outcome.fetched.is_none());
    // A SHA the mirror does not have yet is fetched.
    let newest = up.head();
    let outcome = poll(
        &RepoSettings::new("apps", up.file_url(), &newest),
        &data,
        None,
    )
    .unwrap();
    assert_eq!(outcome.commit.to_string(), newest);
    assert!(outcome.fetched.is_some());
    // `HEAD` follows the remote's default branch.
    let fresh = tmp.path().join("data-head");
    let outcome = poll(
        &RepoSettings::new("apps", up.file_url(), "HEAD"),
        &fresh,
        None,
    )
    .unwrap();
    assert_eq!(outcome.commit.to_string(), newest);
    assert!(outcome.fetched.is_some());
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = poll(
        &RepoSettings::new("apps", up.file_url(), missing),
        &data,
        None,
    )
    .err()
    .unwrap();
    assert_eq!(err.label(), "commit_not_found");
}

#[test]
fn deleted_ref_and_unreachable_remote_keep_the_last_good_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream_with_stack(tmp.path());
    up.git(&["branch", "feature"]);
    let data = tmp.path().join("data");
    let settings = RepoSettings::new("apps", up.file_url(), "feature");
    let good = poll(&settings, &data, None).unwrap().commit;

    up.git(&["branch", "-D", "feature"]);
    let err = poll(&settings, &data, Some(good)).err().unwrap();
    assert_eq!(err.label(), "ref_not_found");
    assert_eq!(
        err.to_string(),
        format!(
            "repository \"apps\" ({}) ref \"feature\": ref not found on the remote (deleted? last good commit {good} is kept)",
            up.file_url()
        )
    );

    let gone = RepoSettings::new("apps", "http://127.0.0.1:9/nothing.git", "main");
    let err = poll(&gone, &data, Some(good)).err().unwrap();
    assert_eq!(err.label(), "unreachable", "{err}");
    assert!(err.to_string().starts_with(
        "repository \"apps\" (http://127.0.0.1:9/nothing.git) ref \"main\": remote unreachable"
    ));
}

#[test]
fn corrupt_and_half_written_mirrors_are_rebuilt() {
    use stackd::git::mirror::{Mirror, Opened};
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream_with_stack(tmp.path());
    let data = tmp.path().join("data");
    let settings = RepoSettings::new("apps", up.file_url(), "main");
    let first = poll(&settings, &data, None).unwrap();
    assert_eq!(first.opened, Opened::Created);
    let again = poll(&settings, &data, Some(first.commit)).unwrap();
    assert_eq!(again.opened, Opened::Existing);
    assert!(again.fetched.is_none());

    // A crash mid-fetch leaves the marker behind.
    let dir = Mirror::dir_for(&data, &up.file_url());
    std::fs::write(dir.join("stackd-fetch-in-progress"), "").unwrap();
    let rebuilt = poll(&settings, &data, Some(first.commit)).unwrap();
    assert_eq!(rebuilt.opened, Opened::Rebuilt);
    assert_eq!(rebuilt.commit, first.commit);
    assert!(!dir.join("stackd-fetch-in-progress").exists());

    // Lost objects: every object file and pack removed, refs still there.
    for sub in std::fs::read_dir(dir.join("objects")).unwrap() {
        let sub = sub.unwrap().path();
        let name = sub.file_name().unwrap().to_str().unwrap().to_string();
        if name == "info" {
            continue;
        }
        std::fs::remove_dir_all(&sub).unwrap();
        std::fs::create_dir(&sub).unwrap();
    }
    let rebuilt = poll(&settings, &data, Some(first.commit)).unwrap();
    assert_eq!(rebuilt.opened, Opened::Rebuilt);
    assert!(rebuilt.fetched.is_some());

    // Garbage in place of the repository.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("HEAD"), "garbage").unwrap();
    let rebuilt = poll(&settings, &data, None).unwrap();
    assert_eq!(rebuilt.opened, Opened::Rebuilt);
    assert_eq!(rebuilt.stacks.map(|s| s.len()), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_basic_auth_right_and_wrong_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    upstream_with_stack(tmp.path());
    let server = HttpServer::start(tmp.path(), Some(("bot", "t0ken"))).await;
    let data = tmp.path().join("data");
    let with = |password: &str, file: &str| {
        let mut s = RepoSettings::new("private", server.url("up"), "main");
        s.auth = Some(Auth::Https {
            username: "bot".into(),
            password_file: secret_file(tmp.path(), file, &format!("{password}\n")),
        });
        s
    };

    let good = with("t0ken", "good");
    let d = data.clone();
    let outcome = tokio::task::spawn_blocking(move || poll_repository(&good, &d, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.stacks.map(|s| s.len()), Some(1));

    let bad = with("wrong-password", "bad");
    let d = data.clone();
    let err = tokio::task::spawn_blocking(move || poll_repository(&bad, &d, None))
        .await
        .unwrap()
        .err()
        .unwrap();
    assert_eq!(err.label(), "auth", "{err}");
    let text = err.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("wrong-password"), "{text}");

    let mut none = RepoSettings::new("private", server.url("up"), "main");
    none.auth = None;
    let d = data.clone();
    let err = tokio::task::spawn_blocking(move || poll_repository(&none, &d, None))
        .await
        .unwrap()
        .err()
        .unwrap();
    assert_eq!(err.label(), "auth", "{err}");

    let mut missing = with("x", "unused");
    missing.auth = Some(Auth::Https {
        username: "bot".into(),
        password_file: tmp.path().join("no-such-file"),
    });
    let err = poll(&missing, &data, None).err().unwrap();
    assert_eq!(err.label(), "credentials_file");

    // Credentials in the URL work too, and never show up in messages.
    let url = server.url("up").replace("http://", "http://bot:t0ken@");
    let in_url = RepoSettings::new("private", &url, "main");
    let d = data.clone();
    let outcome = tokio::task::spawn_blocking(move || poll_repository(&in_url, &d, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.stacks.map(|s| s.len()), Some(1));
    let url = server.url("up").replace("http://", "http://bot:nope@");
    let wrong_in_url = RepoSettings::new("private", &url, "main");
    let d = data.clone();
    let err = tokio::task::spawn_blocking(move || poll_repository(&wrong_in_url, &d, None))
        .await
        .unwrap()
        .err()
        .unwrap();
    assert!(!err.to_string().contains("nope"), "{err}");
    assert_eq!(err.label(), "auth", "{err}");
}

#[test]
fn discovery_errors_name_the_repository_and_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream_with_stack(tmp.path());
    up.write("other/web/compose.yaml", "services: {}\n");
    let commit = up.commit("duplicate web");
    let settings = RepoSettings::new("apps", up.file_url(), "main");
    let err = poll(&settings, &tmp.path().join("data"), None)
        .err()
        .unwrap();
    assert_eq!(err.label(), "discovery");
    assert_eq!(
        err.to_string(),
        format!(
            "repository \"apps\" ({}) ref \"main\": stack discovery at commit {commit} failed: two stacks are named \"web\": in other/web and in stacks/web",
            up.file_url()
        )
    );
}
