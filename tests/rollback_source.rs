//! The rollback's source after a restart: a past revision re-rendered from the
//! Git mirror, after the mirror was fetched shallow over smart HTTP and the
//! branch was force-pushed away from that revision.

#[path = "git_support/mod.rs"]
mod git_support;

use std::path::Path;

use git_support::{HttpServer, Upstream};
use stackd::config::Config;
use stackd::crd::Stack;
use stackd::daemon::live::GitSync;
use stackd::git::poll::{PollOutcome, poll_repository};
use stackd::git::settings::RepoSettings;
use stackd::git::source::RepositoryUpdate;

const COMPOSE_R1: &str = "services:
  web:
    image: nginx:1.27
    secrets: [db_password]
secrets:
  db_password:
    file: ./db_password.txt
";

fn update(settings: &RepoSettings, outcome: PollOutcome) -> RepositoryUpdate {
    RepositoryUpdate {
        repository: settings.name.clone(),
        url: settings.redacted_url(),
        git_ref: settings.git_ref.clone(),
        commit: outcome.commit.to_string(),
        previous: outcome.previous.map(|c| c.to_string()),
        forced: outcome.forced,
        subject: outcome.subject,
        stacks: outcome.stacks.unwrap_or_default(),
        reader: outcome.reader,
        decryption: None,
    }
}

fn poll(settings: &RepoSettings, data: &Path, last: Option<git2::Oid>) -> PollOutcome {
    poll_repository(settings, data, last).unwrap()
}

/// The Stack the controller holds: its name, namespace and source.
fn live_stack(url: &str, revision: &str) -> Stack {
    let mut stack = Stack::new("web", Default::default());
    stack.metadata.namespace = Some("web".into());
    stack.spec.source = Some(stackd::crd::SourceRef {
        repository: url.to_string(),
        path: "stacks/web".into(),
        revision: revision.to_string(),
        subject: None,
    });
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_revision_is_loaded_from_the_mirror_after_a_shallow_fetch_and_a_force_push() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(tmp.path(), "up");
    up.write("stacks/web/compose.yaml", COMPOSE_R1);
    up.write("stacks/web/db_password.txt", "s3cret-r1\n");
    let r1 = up.commit("r1");
    let server = HttpServer::start(tmp.path(), None).await;
    let data = tmp.path().join("data");
    let settings = RepoSettings::new("apps", server.url("up"), "main");
    let config = Config::parse(
        &format!(
            "repositories:\n  - name: apps\n    url: {}\n    rollback: true\n",
            server.url("up")
        ),
        Path::new("config.yaml"),
    )
    .unwrap();
    let policy = config.repositories[0].policy.clone();

    let (s, d) = (settings.clone(), data.clone());
    let first = tokio::task::spawn_blocking(move || poll(&s, &d, None))
        .await
        .unwrap();
    assert_eq!(first.commit.to_string(), r1);
    let last = first.commit;

    // r2 rewrites history: r1 is no longer on any branch upstream.
    up.write(
        "stacks/web/compose.yaml",
        "services:\n  web:\n    image: nginx:broken\n  worker:\n    image: busybox:1\n",
    );
    std::fs::remove_file(up.dir.join("stacks/web/db_password.txt")).unwrap();
    up.git(&["add", "-A"]);
    up.git(&["commit", "-q", "--amend", "-m", "r2"]);
    let r2 = up.head();
    let (s, d) = (settings.clone(), data.clone());
    let second = tokio::task::spawn_blocking(move || poll(&s, &d, Some(last)))
        .await
        .unwrap();
    assert_eq!(second.commit.to_string(), r2);
    assert!(second.forced);

    // A restarted stackd knows only the newest commit.
    let sync = GitSync::new(None, Default::default(), Default::default());
    sync.offer(&update(&settings, second), &policy);
    let stack = live_stack(&settings.redacted_url(), &r2);
    let (d, s) = (data.clone(), stack.clone());
    let sync = std::sync::Arc::new(sync);
    let loader = sync.clone();
    let r1_for_load = r1.clone();
    let (spec, secrets) =
        tokio::task::spawn_blocking(move || loader.load_revision(&d, &s, &r1_for_load))
            .await
            .unwrap()
            .expect("r1 loads from the mirror");
    let source = spec.source.as_ref().unwrap();
    assert_eq!(source.revision, r1);
    assert_eq!(source.path, "stacks/web");
    assert_eq!(source.repository, settings.redacted_url());
    let services: Vec<&str> = spec.project.services.keys().map(String::as_str).collect();
    assert_eq!(services, ["web"]);
    assert_eq!(
        spec.project.services["web"].image.as_deref(),
        Some("nginx:1.27")
    );
    // The repository's settings apply as in the Git sync.
    assert_eq!(spec.rollback, Some(true));
    // The secret value comes back for the render, and only there.
    assert_eq!(
        secrets.0.get("db_password").map(Vec::as_slice),
        Some(&b"s3cret-r1\n"[..])
    );
    let json = serde_json::to_string(&spec).unwrap();
    assert!(!json.contains("s3cret-r1"), "{json}");

    // A commit the mirror never had is refused with a clear message.
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let (d, s) = (data.clone(), stack.clone());
    let error = tokio::task::spawn_blocking(move || sync.load_revision(&d, &s, missing))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        error.starts_with("commit not readable in the mirror"),
        "{error}"
    );
}
