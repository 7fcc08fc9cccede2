//! Bad input: every case is refused with an error naming the file and the
//! field, leaves the objects already applied untouched, and does not hold up
//! the other stacks of the repository.
//!
//! Most cases go through the loader and renderer directly (the messages); a few
//! go the whole way — real Git commit → `GitSync` → Stacks → controller →
//! objects on the in-process API server — to prove "untouched, not blocking".

#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;
#[path = "reconcile_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stackd::config::RepositoryPolicy;
use stackd::crd::StackPhase;
use stackd::daemon::live::GitSync;
use stackd::git::discovery::discover;
use stackd::git::source::RepositoryUpdate;
use stackd::git::tree::GitTreeSource;
use stackd::render::files::{DirSource, FileSource, MemSource, RepoPath};
use stackd::render::{LoadOptions, RenderOptions, load, render, stack_for};
use tokio_util::sync::CancellationToken;

use git_support::Upstream;
use support::{Harness, test_options, write_paths};

// ---------------------------------------------------------------------------
// Loader and renderer: the messages.

fn options() -> LoadOptions {
    LoadOptions {
        dir: RepoPath::new("app").unwrap(),
        ..LoadOptions::default()
    }
}

/// Loads and renders `app/`; the error text and its metrics label.
fn failure(source: &dyn FileSource) -> (String, &'static str) {
    let loaded = match load(source, &options()) {
        Ok(loaded) => loaded,
        Err(error) => return (error.to_string(), error.label()),
    };
    let stack = stack_for("app", "app", loaded.project, None);
    match render(&stack, &loaded.secrets, &RenderOptions::default()) {
        Ok(rendered) => panic!("rendered {} objects", rendered.objects.len()),
        Err(error) => (error.to_string(), error.label()),
    }
}

fn compose(text: impl Into<Vec<u8>>) -> MemSource {
    MemSource::new().with_file("app/compose.yaml", text)
}

fn assert_fails(source: &dyn FileSource, label: &str, message: &str) {
    let (text, got) = failure(source);
    assert_eq!((text.as_str(), got), (message, label));
}

/// Nine levels of nine aliases each: 9^9 (387 million) strings once expanded.
fn billion_laughs() -> String {
    let mut text = String::from("x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let levels: Vec<char> = ('a'..='i').collect();
    for pair in levels.windows(2) {
        let (previous, next) = (pair[0], pair[1]);
        let refs = vec![format!("*{previous}"); 9].join(", ");
        text.push_str(&format!("x-{next}: &{next} [{refs}]\n"));
    }
    text + "services:\n  web:\n    image: nginx\n"
}

/// CPU time this thread has used: unlike wall time it does not grow when the
/// machine is loaded (CI saw a load of 12 on 2 cores). Linux's per-thread
/// schedstat, in nanoseconds; elsewhere, wall time as a looser stand-in.
fn thread_cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| START.with(|start| start.elapsed()))
}

thread_local! {
    static START: Instant = Instant::now();
}

#[test]
fn a_yaml_bomb_is_refused_quickly() {
    let before = thread_cpu_time();
    let (message, label) = failure(&compose(billion_laughs()));
    let spent = thread_cpu_time() - before;
    assert_eq!(label, "yaml");
    assert!(
        message.starts_with("app/compose.yaml:6:18: invalid YAML: "),
        "{message}"
    );
    assert!(message.contains("alias"), "{message}");
    // Refused by the parser's budget, not expanded. The budget stops after a
    // million replayed alias events: about 2 s of CPU in a debug build. The
    // expansion is 9^9 = 387,420,489 strings, ~390 times that work (over ten
    // minutes of CPU in debug) and, at a heap allocation plus a value of at
    // least 32 bytes each, over 20 GB of memory. A 30 s CPU bound has room
    // for a slow machine (15x the refusal) and is still 20x under a real
    // expansion; CPU time, unlike wall time, does not grow with the load.
    assert!(
        spent < Duration::from_secs(30),
        "refusing the bomb took {spent:?} of CPU"
    );
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!(
        "services:\n  web:\n    image: nginx\n    labels: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (message, label) = failure(&compose(text));
    assert_eq!(label, "yaml");
    assert!(
        message.starts_with("app/compose.yaml:4:268: invalid YAML: ")
            && message.contains("recursion limit exceeded"),
        "{message}"
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_it_is_read() {
    let source = compose(vec![b'#'; 2048]).with_max_file_size(1024);
    assert_fails(
        &source,
        "file",
        "app/compose.yaml: file is 2048 bytes, over the 1024-byte limit",
    );
}

#[test]
fn a_sparse_100_mb_file_on_disk_is_refused_by_size_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    let file = std::fs::File::create(dir.path().join("app/compose.yaml")).unwrap();
    // Sparse: 100 MB long, no blocks written.
    file.set_len(100 * 1024 * 1024).unwrap();
    let started = Instant::now();
    let source = DirSource::new(dir.path()).unwrap();
    assert_fails(
        &source,
        "file",
        "app/compose.yaml: file is 104857600 bytes, over the 1048576-byte limit",
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn binary_garbage_is_refused() {
    let garbage = vec![0xff, 0xfe, 0x00, 0x01, 0x80, 0x9f, 0xc3, 0x28];
    assert_fails(
        &compose(garbage),
        "file",
        "app/compose.yaml: not UTF-8 text",
    );
    // Valid UTF-8 but not YAML: control characters.
    let (message, label) = failure(&compose("services:\n  web: \u{1}\u{2}\u{7}\n"));
    assert_eq!(label, "yaml", "{message}");
    assert!(message.starts_with("app/compose.yaml:2:"), "{message}");
}

#[test]
fn duplicate_keys_are_refused() {
    let (message, label) = failure(&compose(
        "services:\n  web:\n    image: nginx\n    image: redis\n",
    ));
    assert_eq!(label, "yaml");
    assert!(
        message.starts_with("app/compose.yaml:4:5: invalid YAML: ")
            && message.contains("duplicate mapping key: image"),
        "{message}"
    );
}

#[test]
fn paths_out_of_the_repository_are_refused_as_env_file_config_and_secret() {
    let cases = [
        (
            "services:\n  web:\n    image: nginx\n    env_file: ../../etc/passwd\n",
            "app/compose.yaml:4:15: services.web.env_file: path \"../../etc/passwd\" leaves the repository",
        ),
        (
            "services:\n  web:\n    image: nginx\n    configs: [c]\nconfigs:\n  c:\n    file: ../../etc/passwd\n",
            "app/compose.yaml:7:11: configs.c.file: path \"../../etc/passwd\" leaves the repository",
        ),
        (
            "services:\n  web:\n    image: nginx\n    secrets: [s]\nsecrets:\n  s:\n    file: ../../etc/passwd\n",
            "app/compose.yaml:7:11: secrets.s.file: path \"../../etc/passwd\" leaves the repository",
        ),
        (
            "services:\n  web:\n    image: nginx\n    env_file: /etc/passwd\n",
            "app/compose.yaml:4:15: services.web.env_file: absolute path \"/etc/passwd\" is not allowed: paths must be relative to the repository",
        ),
    ];
    for (text, message) in cases {
        assert_fails(&compose(text), "path", message);
    }
}

#[cfg(unix)]
#[test]
fn a_symlink_to_the_root_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    std::os::unix::fs::symlink("/", dir.path().join("app/root")).unwrap();
    std::fs::write(
        dir.path().join("app/compose.yaml"),
        "services:\n  web:\n    image: nginx\n    env_file: root/etc/passwd\n",
    )
    .unwrap();
    let source = DirSource::new(dir.path()).unwrap();
    assert_fails(
        &source,
        "file",
        "app/compose.yaml:4:15: services.web.env_file: app/root/etc/passwd: symlink points outside the repository (/etc/passwd)",
    );
}

#[test]
fn unterminated_interpolation_is_refused() {
    assert_fails(
        &compose("services:\n  web:\n    image: nginx:${TAG\n"),
        "interpolation",
        "app/compose.yaml:3:12: services.web.image: unterminated \"${\" in \"nginx:${TAG\"; write \"$$\" for a literal \"$\"",
    );
}

#[test]
fn a_recursive_extends_is_refused() {
    assert_fails(
        &compose(
            "services:\n  web:\n    image: nginx\n    extends: api\n  api:\n    extends: web\n",
        ),
        "cycle",
        "app/compose.yaml:4:14: services.web.extends: extends cycle: web -> api -> web",
    );
    assert_fails(
        &compose("services:\n  web:\n    image: nginx\n    extends: web\n"),
        "cycle",
        "app/compose.yaml:4:14: services.web.extends: extends cycle: web -> web",
    );
}

#[test]
fn a_cycle_in_include_is_refused() {
    let source = compose("include: [a.yaml]\nservices:\n  web:\n    image: nginx\n")
        .with_file("app/a.yaml", "include: [b.yaml]\n")
        .with_file("app/b.yaml", "include: [compose.yaml]\n");
    assert_fails(
        &source,
        "cycle",
        "app/b.yaml:1:11: include[0]: include cycle: app/compose.yaml -> app/a.yaml -> app/b.yaml -> app/compose.yaml",
    );
}

#[test]
fn ten_thousand_services_load_and_render_in_reasonable_time() {
    let mut text = String::from("services:\n");
    for i in 0..10_000 {
        text.push_str(&format!("  s{i}:\n    image: nginx\n    ports: [\"80\"]\n"));
    }
    let source = compose(text);
    let started = Instant::now();
    let loaded = load(&source, &options()).unwrap();
    let loaded_in = started.elapsed();
    let stack = stack_for("app", "app", loaded.project, None);
    let rendered = render(&stack, &loaded.secrets, &RenderOptions::default()).unwrap();
    let total = started.elapsed();
    let stack_bytes = serde_json::to_vec(&stack).map(|v| v.len()).unwrap_or(0);
    eprintln!(
        "10,000 services: loaded in {loaded_in:?}, loaded and rendered in {total:?}; the Stack is {stack_bytes} bytes of JSON"
    );
    // A Namespace, then a Deployment, a Service and a NetworkPolicy per service... of each of 10,000.
    assert_eq!(rendered.objects.len(), 1 + 4 * 10_000);
    // Debug build on a shared machine: measured about 3 s.
    assert!(total < Duration::from_secs(20), "{total:?}");
}

#[test]
fn names_that_cannot_become_dns_names_are_refused() {
    assert_fails(
        &compose("services:\n  Web_Server!:\n    image: nginx\n"),
        "invalid_value",
        "app/compose.yaml:3:5: services.Web_Server!: service name \"Web_Server!\" may contain only letters, digits, `.`, `_` and `-`",
    );
    assert_fails(
        &compose("services:\n  \"ünïcödé\":\n    image: nginx\n"),
        "invalid_value",
        "app/compose.yaml:3:5: services.ünïcödé: service name \"ünïcödé\" may contain only letters, digits, `.`, `_` and `-`",
    );
    let long = "a".repeat(80);
    let (message, label) = failure(&compose(format!(
        "services:\n  {long}:\n    image: nginx\n"
    )));
    assert_eq!(label, "invalid_name");
    assert!(
        message.starts_with(&format!("service \"{long}\": name \"{long}\" is not a valid Kubernetes name: it is 80 characters long")),
        "{message}"
    );
}

#[test]
fn ports_out_of_range_are_refused() {
    let cases = [
        (
            "[\"0:80\"]",
            "app/compose.yaml:4:13: services.web.ports[0]: port 0 is out of range (1-65535)",
        ),
        (
            "[\"8080:0\"]",
            "app/compose.yaml:4:13: services.web.ports[0]: port 0 is out of range (1-65535)",
        ),
        (
            "[\"70000:80\"]",
            "app/compose.yaml:4:13: services.web.ports[0]: port 70000 is out of range (1-65535)",
        ),
        (
            "[{target: 70000}]",
            "app/compose.yaml:4:22: services.web.ports[0].target: port 70000 is out of range (1-65535)",
        ),
        (
            "[{target: 80, published: 0}]",
            "app/compose.yaml:4:37: services.web.ports[0].published: port 0 is out of range (1-65535)",
        ),
    ];
    for (ports, message) in cases {
        let text = format!("services:\n  web:\n    image: nginx\n    ports: {ports}\n");
        assert_fails(&compose(text), "invalid_value", message);
    }
}

#[test]
fn negative_replicas_are_refused() {
    assert_fails(
        &compose("services:\n  web:\n    image: nginx\n    deploy: {replicas: -1}\n"),
        "invalid_value",
        "app/compose.yaml:4:24: services.web.deploy.replicas: must not be negative, got -1",
    );
    assert_fails(
        &compose("services:\n  web:\n    image: nginx\n    scale: -2\n"),
        "invalid_value",
        "app/compose.yaml:4:12: services.web.scale: must not be negative, got -2",
    );
}

#[test]
fn unknown_top_level_keys_are_refused() {
    assert_fails(
        &compose("services:\n  web:\n    image: nginx\nfoo: bar\n"),
        "schema",
        "app/compose.yaml:4:6: foo: unknown field `foo`",
    );
}

// ---------------------------------------------------------------------------
// The whole way: Git commit → GitSync → Stacks → controller → objects.

const GOOD: &str = "services:\n  web:\n    image: nginx:1.27\n    ports: [\"8080:80\"]\n";
const SHOP: &str = "services:\n  web:\n    image: nginx:1.27\n    ports: [\"8080:80\"]\n  db:\n    image: postgres:16\n";

/// A repository with two stacks, `good` and `shop`, synced like live mode does.
struct Pipeline {
    h: Harness,
    upstream: Upstream,
    sync: Arc<GitSync>,
    leading: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    async fn new() -> Option<Pipeline> {
        let h = Harness::started(test_options()).await?;
        let dir = tempfile::tempdir().unwrap();
        let upstream = Upstream::new(dir.path(), "apps");
        let sync = Arc::new(GitSync::new(
            None,
            h.handles.state.clone(),
            h.handles.failures.clone(),
        ));
        let leading = CancellationToken::new();
        let run = {
            let (sync, client) = (sync.clone(), h.client.clone());
            let (secrets, leading) = (h.handles.secrets.clone(), leading.clone());
            async move { sync.run(client, secrets, leading, None).await }
        };
        tokio::spawn(run);
        Some(Pipeline {
            h,
            upstream,
            sync,
            leading,
            _dir: dir,
        })
    }

    /// Commits the working tree and offers the commit, as the Git source would.
    fn commit_and_offer(&self, message: &str) -> String {
        let commit = self.upstream.commit(message);
        let oid = git2::Oid::from_str(&commit).unwrap();
        let reader: Arc<dyn FileSource> =
            Arc::new(GitTreeSource::at_commit(&self.upstream.dir, oid).unwrap());
        let stacks = discover(reader.as_ref(), &[], "root").unwrap();
        let update = RepositoryUpdate {
            repository: "apps".into(),
            url: support::REPOSITORY.into(),
            git_ref: "refs/heads/main".into(),
            commit: commit.clone(),
            previous: None,
            forced: false,
            subject: message.into(),
            stacks,
            reader,
            decryption: None,
        };
        let policy: RepositoryPolicy = serde_json::from_value(serde_json::json!({})).unwrap();
        self.sync.offer(&update, &policy);
        commit
    }

    fn image(&self, namespace: &str) -> Option<String> {
        let web = self.h.object("apps/v1", "Deployment", namespace, "web")?;
        web.pointer("/spec/template/spec/containers/0/image")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    async fn wait_for_image(&self, namespace: &str, image: &str) {
        self.h
            .wait_for(&format!("{namespace}/web to run {image}"), |_| {
                self.image(namespace).as_deref() == Some(image)
            })
            .await;
        self.h.settle().await;
    }

    /// Every object in `namespace` with its resource version.
    fn snapshot(&self, namespace: &str) -> Vec<(String, String, String)> {
        self.h
            .fake
            .objects()
            .iter()
            .filter(|o| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(namespace))
            .filter(|o| o["kind"] != "Event" && o["kind"] != "Stack")
            .map(|o| {
                let text = |p: &str| {
                    o.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                (
                    text("/kind"),
                    text("/metadata/name"),
                    text("/metadata/resourceVersion"),
                )
            })
            .collect()
    }

    /// Applies a good commit, then `break_shop` plus a change to `good`:
    /// `good` gets its update, `shop` keeps its objects. Returns shop's error.
    async fn bad_commit_is_contained(&self, break_shop: impl FnOnce(&Upstream)) -> String {
        self.upstream.write("good/compose.yaml", GOOD);
        self.upstream.write("shop/compose.yaml", SHOP);
        let first = self.commit_and_offer("good");
        self.wait_for_image("good", "nginx:1.27").await;
        self.wait_for_image("shop", "nginx:1.27").await;
        let before = self.snapshot("shop");
        assert!(before.len() >= 3, "{before:?}");
        self.h.fake.clear_requests();

        break_shop(&self.upstream);
        self.upstream
            .write("good/compose.yaml", &GOOD.replace("1.27", "1.28"));
        let bad = self.commit_and_offer("bad");
        // Not blocking: the other stack of the same commit is applied.
        self.wait_for_image("good", "nginx:1.28").await;

        // The Stack itself says the new commit failed, and why (not only the page).
        self.h
            .wait_for("shop's Stack to show the failed commit", |h| {
                h.status("shop", "shop").is_some_and(|s| {
                    s.last_attempted_revision.as_deref() == Some(bad.as_str())
                        && s.phase == Some(StackPhase::Failure)
                })
            })
            .await;
        let status = self.h.status("shop", "shop").unwrap();
        assert_eq!(
            status.last_applied_revision.as_deref(),
            Some(first.as_str())
        );
        let condition = |kind: &str| {
            let c = status.conditions.iter().find(|c| c.type_ == kind).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        let (ready, reason) = condition("Ready");
        assert_eq!(ready, "False");
        assert!(
            ["LoadFailed", "RenderFailed"].contains(&reason.as_str()),
            "{reason}"
        );
        assert_eq!(condition("Stalled"), ("True".to_string(), reason.clone()));
        let page = self.h.handles.state.stack("shop", "shop").unwrap();
        assert_eq!(page.reason.map(|r| r.as_str().to_string()), Some(reason));
        assert_eq!(page.last_error, status.last_error);

        // Untouched: same objects, same resource versions, nothing deleted.
        assert_eq!(self.snapshot("shop"), before);
        let deletes: Vec<_> = write_paths(&self.h.fake.writes())
            .into_iter()
            .filter(|w| w.starts_with("DELETE"))
            .collect();
        assert_eq!(deletes, Vec::<String>::new());
        let view = self.h.handles.state.stack("shop", "shop").unwrap();
        assert_eq!(view.phase, StackPhase::Failure);
        let stack = self
            .h
            .object("stackd.dev/v1alpha1", "Stack", "shop", "shop")
            .unwrap();
        match stack
            .pointer("/spec/source/revision")
            .and_then(Value::as_str)
        {
            // Refused while loading: the Stack keeps the last good commit.
            Some(revision) if revision == first => {}
            // Loaded but not renderable: the controller refused it.
            _ => assert_eq!(
                stack
                    .pointer("/status/lastAppliedRevision")
                    .and_then(Value::as_str),
                Some(first.as_str())
            ),
        }
        view.last_error.or(view.message).unwrap_or_default()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.leading.cancel();
    }
}

macro_rules! pipeline {
    () => {
        match Pipeline::new().await {
            Some(p) => p,
            None => {
                eprintln!("real cluster: skipping (needs the request log)");
                return;
            }
        }
    };
}

#[tokio::test]
async fn a_yaml_bomb_in_git_leaves_its_stack_alone_and_the_others_go_on() {
    let p = pipeline!();
    let error = p
        .bad_commit_is_contained(|up| up.write("shop/compose.yaml", &billion_laughs()))
        .await;
    assert!(
        error.starts_with(
            "shop/compose.yaml:6:18: invalid YAML: the document expands to too many nodes"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn etc_passwd_as_env_file_in_git_leaves_its_stack_alone() {
    let p = pipeline!();
    let error = p
        .bad_commit_is_contained(|up| {
            up.write(
                "shop/compose.yaml",
                &format!("{SHOP}    env_file: ../../etc/passwd\n"),
            )
        })
        .await;
    assert_eq!(
        error,
        "shop/compose.yaml:7:15: services.db.env_file: path \"../../etc/passwd\" leaves the repository"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_to_the_root_in_git_leaves_its_stack_alone() {
    let p = pipeline!();
    let error = p
        .bad_commit_is_contained(|up| {
            std::os::unix::fs::symlink("/", up.dir.join("shop/host")).unwrap();
            up.write(
                "shop/compose.yaml",
                &format!("{SHOP}    env_file: host/etc/passwd\n"),
            )
        })
        .await;
    assert!(
        error.starts_with("shop/compose.yaml:7:15: services.db.env_file: shop/host: symlink points outside the repository (/)"),
        "{error}"
    );
}

#[tokio::test]
async fn duplicate_keys_in_git_leave_their_stack_alone() {
    let p = pipeline!();
    let error = p
        .bad_commit_is_contained(|up| {
            up.write("shop/compose.yaml", &format!("{SHOP}    image: redis\n"))
        })
        .await;
    assert!(
        error.starts_with("shop/compose.yaml:7:5: invalid YAML: duplicate mapping key: image"),
        "{error}"
    );
}

#[tokio::test]
async fn a_name_kubernetes_refuses_fails_the_render_and_leaves_the_objects() {
    let p = pipeline!();
    let long = "d".repeat(70);
    let error = p
        .bad_commit_is_contained(|up| {
            up.write(
                "shop/compose.yaml",
                &format!("{SHOP}  {long}:\n    image: redis\n"),
            )
        })
        .await;
    assert!(
        error.contains(&format!(
            "service \"{long}\": name \"{long}\" is not a valid Kubernetes name"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn a_stack_directory_that_cannot_become_a_name_does_not_block_the_others() {
    let p = pipeline!();
    p.upstream.write("good/compose.yaml", GOOD);
    p.upstream.write("shop/compose.yaml", SHOP);
    p.commit_and_offer("good");
    p.wait_for_image("good", "nginx:1.27").await;
    p.wait_for_image("shop", "nginx:1.27").await;
    let before = p.snapshot("shop");
    p.h.fake.clear_requests();

    // "My Shop!" is normalised as Docker Compose does (`myshop`); 70 characters
    // are a fine directory name but too long for a namespace.
    let long = "d".repeat(70);
    p.upstream.write("My Shop!/compose.yaml", SHOP);
    p.upstream.write(&format!("{long}/compose.yaml"), SHOP);
    p.upstream
        .write("good/compose.yaml", &GOOD.replace("1.27", "1.28"));
    p.commit_and_offer("a badly named stack");
    p.wait_for_image("good", "nginx:1.28").await;
    p.wait_for_image("myshop", "nginx:1.27").await;
    assert_eq!(p.snapshot("shop"), before);
    let view = p.h.handles.state.stack(&long, &long).unwrap();
    assert_eq!(view.phase, StackPhase::Failure);
    assert_eq!(
        view.last_error.unwrap(),
        format!(
            "{long}/compose.yaml: stack name \"{long}\" (from \"{long}\") is not a valid Kubernetes name: it is 70 characters long, over the 63-character limit"
        )
    );
}

#[test]
fn stack_directories_that_become_the_same_name_are_refused() {
    let source = MemSource::new()
        .with_file("stacks/my_app/compose.yaml", "services: {}\n")
        .with_file("stacks/My-App/compose.yaml", "services: {}\n");
    let error = discover(&source, &[], "root").unwrap_err();
    assert_eq!(error.label(), "duplicate_name");
    assert_eq!(
        error.to_string(),
        "two stacks are named \"my-app\": in stacks/My-App and in stacks/my_app"
    );
}
