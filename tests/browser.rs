//! The status page in a real browser: headless Debian Chromium, driven by
//! `tests/browser/check.mjs` (playwright-core + axe-core), against a real server
//! on 127.0.0.1 with seeded state. Asserts on what a reader sees, on WCAG 2.1 AA
//! (axe-core, colour contrast included), on hostile names staying text, and on
//! the page making no request off 127.0.0.1.
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/browser/node_modules`
//! (`scripts/setup-browser.sh` installs them). Screenshots land in
//! `<target>/browser/`; `STACKD_UPDATE_SCREENSHOTS=1` also copies the overview
//! ones to `docs/` for the README.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use stackd::crd::{HistoryEntry, HistoryOutcome, InventoryEntry, ServiceStatus, StackPhase};
use stackd::field_diff;
use stackd::http::picture::ServiceShape;
use stackd::http::{AppState, router, serve};
use stackd::metrics::Metrics;
use stackd::state::{EventView, ObjectDiff, PlanSummary, RepositoryView, SharedState, StackView};

/// Runs `window.__xss = …` if the page ever executes a seeded name.
const HOSTILE_NAME: &str = "<script>window.__xss = 1</script>";
const HOSTILE_WARNING: &str = "<img src=x onerror=\"window.__xss=2\">";
const LONG_ERROR: &str = "render compose.yaml: services.worker.deploy.resources.limits.memory: \
    \"lots\" is not a byte size (expected a number with an optional unit b, k, m or g, e.g. 512m); \
    services.worker.ports[0]: port 70000 is out of range 1-65535; \
    services.worker.volumes[2]: bind mount source ../../etc/passwd leaves the repository";

/// `check.mjs`'s report (the fields the assertions read).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    pages: Vec<PageReport>,
    external_requests: Vec<String>,
    problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageReport {
    page: String,
    viewport: String,
    status: Option<u16>,
    text: String,
    xss: Option<String>,
    dialogs: Vec<String>,
    violations: Vec<serde_json::Value>,
    incomplete: Vec<AxeRule>,
    focus_order: Vec<FocusStop>,
    screenshot: PathBuf,
}

/// An axe rule that could not decide on some elements.
#[derive(Debug, Deserialize)]
struct AxeRule {
    id: String,
    nodes: Vec<serde_json::Value>,
}

/// Where one Tab press put the focus.
#[derive(Debug, Deserialize)]
struct FocusStop {
    element: String,
    name: String,
}

/// What the check needs from the machine.
struct BrowserTools {
    chromium: PathBuf,
    script: PathBuf,
}

/// Under CI a missing tool fails the test; elsewhere it is skipped visibly.
fn unavailable(what: &str) -> Option<BrowserTools> {
    assert!(
        !common::in_ci(),
        "{what}; scripts/setup-browser.sh installs it"
    );
    eprintln!("SKIPPED: {what} (run scripts/setup-browser.sh)");
    None
}

fn browser_tools() -> Option<BrowserTools> {
    let chromium = std::env::var_os("STACKD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return unavailable(&format!("Chromium not found at {}", chromium.display()));
    }
    let node_works = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_works {
        return unavailable("node not found on PATH");
    }
    let project = common::repo_dir().join("tests/browser");
    for package in ["playwright-core", "axe-core"] {
        let dir = project.join("node_modules").join(package);
        if !dir.is_dir() {
            return unavailable(&format!("{} is missing", dir.display()));
        }
    }
    Some(BrowserTools {
        chromium,
        script: project.join("check.mjs"),
    })
}

/// `<target>/browser`: the CI artifact folder.
fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("browser");
    }
    // The test binary is `<target>/<profile>/deps/browser-<hash>`.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| common::repo_dir().join("target"))
        .join("browser")
}

/// An Event at 2026-11-22 04:0`minute` UTC, about `object` (`None`: the Stack).
fn event(minute: u32, kind: &str, reason: &str, note: &str, object: Option<&str>) -> EventView {
    let time = format!("2026-11-22T04:{minute:02}:00Z");
    EventView {
        time: chrono::DateTime::parse_from_rfc3339(&time)
            .unwrap()
            .to_utc(),
        kind: kind.into(),
        reason: reason.into(),
        note: note.into(),
        object: object.map(str::to_string),
        id: None,
    }
}

/// A history entry attempted on 2026-11-22 04:00 UTC.
fn history(
    revision: &str,
    subject: &str,
    outcome: HistoryOutcome,
    reason: Option<&str>,
) -> HistoryEntry {
    HistoryEntry {
        revision: revision.into(),
        subject: Some(subject.into()),
        attempted_at: serde_json::from_value(serde_json::json!("2026-11-22T04:00:00Z")).unwrap(),
        outcome,
        reason: reason.map(str::to_string),
        seconds_to_ready: (outcome == HistoryOutcome::Applied).then_some(38),
        created: 3,
        updated: 1,
        pruned: 0,
    }
}

fn seed(state: &SharedState) {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .ok()
    };
    state.put_repository(RepositoryView {
        name: "apps".into(),
        url: "https://git.example.com/team/apps.git".into(),
        git_ref: "main".into(),
        commit: Some(commit.into()),
        subject: Some("Bump nginx to 1.27".into()),
        last_poll: at("2026-11-22T04:10:00Z"),
        last_result: Some("fetched".into()),
        next_poll: at("2026-11-22T04:11:00Z"),
        last_error: None,
    });
    state.put_repository(RepositoryView {
        name: "legacy".into(),
        url: "ssh://git@git.example.com/ops/legacy.git".into(),
        git_ref: "release/2026".into(),
        last_poll: at("2026-11-22T04:09:30Z"),
        last_result: Some("failed".into()),
        next_poll: at("2026-11-22T04:10:30Z"),
        last_error: Some("fetch origin: authentication required (ssh key rejected)".into()),
        ..RepositoryView::default()
    });
    let stack = |namespace: &str, name: &str, phase, ready, total| StackView {
        namespace: namespace.into(),
        name: name.into(),
        repository: Some("apps".into()),
        path: Some(format!("stacks/{name}")),
        revision: Some(commit.into()),
        phase,
        services_ready: ready,
        services_total: total,
        last_sync: at("2026-11-22T04:10:02Z"),
        ..StackView::default()
    };
    state.put_stack(StackView {
        services: vec![
            ServiceStatus {
                name: "web".into(),
                kind: "Deployment".into(),
                desired: 2,
                ready: 2,
                updated: 2,
            },
            ServiceStatus {
                name: "db".into(),
                kind: "StatefulSet".into(),
                desired: 1,
                ready: 1,
                updated: 1,
            },
        ],
        objects: vec![
            object("apps/v1", "Deployment", "shop", "web"),
            object("apps/v1", "StatefulSet", "shop", "db"),
            object("v1", "Service", "shop", "web"),
        ],
        last_plan: Some(PlanSummary {
            created: vec!["Service/web".into()],
            updated: vec!["Deployment/web".into(), "Secret/db".into()],
            unchanged: 2,
            diffs: vec![
                ObjectDiff {
                    object: "Deployment/web".into(),
                    changes: field_diff::changes(
                        &serde_json::json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.27", "name": HOSTILE_NAME}]}}}}),
                        &serde_json::json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.26", "name": "web"}]}}}}),
                    ),
                },
                ObjectDiff {
                    object: "Secret/db".into(),
                    changes: field_diff::changes(
                        &serde_json::json!({"kind": "Secret", "data": {"PASSWORD": "bmV3LXZhbHVl"}}),
                        &serde_json::json!({"kind": "Secret", "data": {"PASSWORD": "b2xkLXZhbHVl"}}),
                    ),
                },
            ],
            ..PlanSummary::default()
        }),
        warnings: vec!["services.web.build is ignored: stackd deploys images only".into()],
        shapes: vec![
            ServiceShape {
                name: "web".into(),
                depends_on: vec!["db".into()],
                ports: vec!["8080:80".into()],
                volumes: vec![],
            },
            ServiceShape {
                name: "db".into(),
                volumes: vec!["data".into()],
                ..ServiceShape::default()
            },
        ],
        history: vec![
            history("1111111111111111", "Add the shop", HistoryOutcome::Applied, None),
            history(
                "2222222222222222",
                "Break the port",
                HistoryOutcome::Failed,
                Some("RenderFailed"),
            ),
            history(commit, "Bump nginx to 1.27", HistoryOutcome::Applied, None),
        ],
        events: vec![
            event(1, "Normal", "Applied", "created 0, updated 1", None),
            event(
                2,
                "Normal",
                "ScalingReplicaSet",
                "Scaled up replica set web-7c5ddbdf54 from 0 to 1",
                Some("Deployment/web"),
            ),
        ],
        ..stack("shop", "storefront", StackPhase::Available, 2, 2)
    });
    state.put_stack(StackView {
        message: Some("waiting for 1 of 3 services".into()),
        ..stack("shop", "checkout", StackPhase::Progressing, 2, 3)
    });
    state.put_stack(stack(
        "monitoring",
        "grafana",
        StackPhase::ReconciliationPending,
        0,
        1,
    ));
    state.put_stack(StackView {
        last_error: Some(LONG_ERROR.into()),
        warnings: vec![
            "services.worker.privileged is ignored".into(),
            HOSTILE_WARNING.into(),
        ],
        ..stack("batch", "worker", StackPhase::Failure, 0, 2)
    });
    // Enough stacks for a second page of the overview, in their own repository.
    for i in 0..60 {
        state.put_stack(StackView {
            repository: Some("bulk".into()),
            ..stack(&format!("bulk-{i:02}"), "web", StackPhase::Available, 1, 1)
        });
    }
    state.put_stack(StackView {
        last_error: Some("name is not a valid Kubernetes name".into()),
        path: Some("stacks/evil".into()),
        shapes: vec![
            ServiceShape {
                name: HOSTILE_NAME.into(),
                depends_on: vec![HOSTILE_WARNING.into()],
                ports: vec![HOSTILE_WARNING.into()],
                volumes: vec![HOSTILE_NAME.into()],
            },
            ServiceShape {
                name: HOSTILE_WARNING.into(),
                ..ServiceShape::default()
            },
        ],
        events: vec![event(
            3,
            "Warning",
            "FailedCreate",
            HOSTILE_WARNING,
            Some(&format!("Deployment/{HOSTILE_NAME}")),
        )],
        ..stack("evil", HOSTILE_NAME, StackPhase::Failure, 0, 0)
    });
}

fn object(api_version: &str, kind: &str, namespace: &str, name: &str) -> InventoryEntry {
    InventoryEntry {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: Some(namespace.into()),
        name: name.into(),
        hash: None,
    }
}

async fn start_server() -> String {
    let state = SharedState::new();
    seed(&state);
    let app = AppState::new(state, Metrics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, router(app, true), std::future::pending()));
    base
}

async fn run_check(tools: &BrowserTools, base: &str, out: &Path, stacks: &[&str]) -> Report {
    let output = tokio::process::Command::new("node")
        .arg(&tools.script)
        .arg(base)
        .arg(out)
        .args(stacks)
        .env("STACKD_CHROMIUM", &tools.chromium)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    // 0 clean, 1 problems listed in the report, 2 the check itself failed.
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "check.mjs failed ({}): {stderr}",
        output.status
    );
    // The full report (with axe's incomplete results) beside the screenshots.
    let _ = std::fs::write(out.join("report.json"), &output.stdout);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check.mjs printed no report ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The table row whose first cell is `stack` (innerText: cells split by tabs).
fn row<'a>(text: &'a str, stack: &str) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|line| line.split('\t').map(str::trim).collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&stack))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_reads_well_is_accessible_and_stays_offline() {
    let Some(tools) = browser_tools() else {
        return;
    };
    let base = start_server().await;
    let out = screenshot_dir();
    // The pages reload themselves by default; axe checks the `?refresh=off`
    // view that WCAG 2.2.1 asks for (its `meta-refresh` rule flags any timed
    // reload, even one the user can stop). Unit tests in `page.rs` check both views.
    // The overview of one repository (its five stacks), then a second page and a
    // filtered view of all of them.
    let report = run_check(
        &tools,
        &format!("{base}?repo=apps&refresh=off"),
        &out,
        &[
            "/?repo=bulk&page=2&refresh=off",
            "/?phase=Failure&q=evil&refresh=off",
            "/stacks/shop/storefront?refresh=off",
            "/stacks/evil/%3Cscript%3Ewindow.__xss%20%3D%201%3C%2Fscript%3E?refresh=off",
        ],
    )
    .await;

    let pages: Vec<String> = report
        .pages
        .iter()
        .map(|p| format!("{} {}", p.page, p.viewport))
        .collect();
    assert_eq!(
        pages,
        [
            "overview laptop",
            "overview phone",
            "repo-bulk-page-2-refresh-off laptop",
            "repo-bulk-page-2-refresh-off phone",
            "phase-Failure-q-evil-refresh-off laptop",
            "phase-Failure-q-evil-refresh-off phone",
            "stacks-shop-storefront-refresh-off laptop",
            "stacks-shop-storefront-refresh-off phone",
            "stacks-evil-script-window-xss-1-script-refresh-off laptop",
            "stacks-evil-script-window-xss-1-script-refresh-off phone",
        ]
    );
    for page in &report.pages {
        let at = format!("{} at {}", page.page, page.viewport);
        assert_eq!(page.status, Some(200), "{at}");
        assert_eq!(page.xss, None, "{at}: hostile markup ran");
        assert!(page.dialogs.is_empty(), "{at}: {:?}", page.dialogs);
        assert!(
            page.violations.is_empty(),
            "{at}: axe violations:\n{}",
            serde_json::to_string_pretty(&page.violations).unwrap_or_default()
        );
        assert!(page.screenshot.is_file(), "{at}: no screenshot");
        // On a phone, table cells scrolled out of view are "undecided"; at the
        // laptop width every cell is visible, so contrast is checked on all of them.
        if page.viewport == "laptop" {
            // axe cannot find the background of SVG text (the picture's boxes);
            // the picture's palette is checked in `picture.rs` instead.
            let undecided: Vec<Vec<&serde_json::Value>> = page
                .incomplete
                .iter()
                .filter(|rule| rule.id == "color-contrast")
                .map(|rule| {
                    rule.nodes
                        .iter()
                        .filter(|n| !n["html"].as_str().unwrap_or("").starts_with("<text "))
                        .collect::<Vec<_>>()
                })
                .filter(|nodes| !nodes.is_empty())
                .collect();
            assert!(
                undecided.is_empty(),
                "{at}: contrast not decided on {undecided:#?}"
            );
        }
    }
    assert!(
        report.external_requests.is_empty(),
        "{:?}",
        report.external_requests
    );
    assert!(report.problems.is_empty(), "{:#?}", report.problems);

    // On a phone the rows are cards (one labelled cell a line): the table is read at the laptop width.
    for page in report
        .pages
        .iter()
        .filter(|p| p.page == "overview" && p.viewport == "laptop")
    {
        let text = &page.text;
        let headers = row(text, "Stack").unwrap_or_default();
        assert_eq!(
            headers,
            [
                "Stack",
                "Path",
                "Revision",
                "Phase",
                "Ready",
                "Warnings",
                "Last error",
                "Last sync"
            ],
            "{text}"
        );
        for (stack, phase, ready) in [
            ("shop/storefront", "Available", "2/2"),
            ("shop/checkout", "Progressing", "2/3"),
            ("monitoring/grafana", "ReconciliationPending", "0/1"),
            ("batch/worker", "Failure", "0/2"),
            ("evil/<script>window.__xss = 1</script>", "Failure", "0/0"),
        ] {
            let cells = row(text, stack).unwrap_or_else(|| panic!("no row {stack}:\n{text}"));
            assert_eq!(cells.get(3), Some(&phase), "{stack}: {cells:?}");
            assert_eq!(cells.get(4), Some(&ready), "{stack}: {cells:?}");
        }
        // A long error is cut short on the overview; its stack page has it whole.
        assert!(text.contains("\"lots\" is not a byte size"), "{text}");
        assert!(!text.contains("port 70000 is out of range"), "{text}");
        assert!(text.contains("authentication required"), "{text}");
        assert!(text.contains("https://git.example.com/team/apps.git"));
    }
    // Keyboard users reach both scrollable tables, every stack and every warning list.
    let overview = report
        .pages
        .iter()
        .find(|p| p.page == "overview" && p.viewport == "laptop")
        .map(|p| {
            p.focus_order
                .iter()
                .map(|stop| format!("{} {}", stop.element, stop.name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert_eq!(
        overview,
        [
            "a reload",
            "a resume auto-reload",
            "div Repositories",
            "a All 5",
            "a Available 1",
            "a Progressing 1",
            "a ReconciliationPending 1",
            "a Failure 2",
            "select anyAvailableProgressingReconciliationPendingFailure",
            "select anyappsbulklegacy",
            "input ",
            "button Filter",
            "div Stacks",
            "a batch/worker",
            "summary 2 warnings",
            "a evil/<script>window.__xss = 1</script>",
            "a monitoring/grafana",
            "a shop/checkout",
            "a shop/storefront",
            "summary 1 warning",
        ]
    );
    let text_of = |page: &str| {
        report
            .pages
            .iter()
            .find(|p| p.page == page && p.viewport == "laptop")
            .map(|p| p.text.clone())
            .unwrap_or_default()
    };
    let second = text_of("repo-bulk-page-2-refresh-off");
    assert!(
        second.contains("page 2 of 2 · stacks 51–60 of 60"),
        "{second}"
    );
    assert!(second.contains("bulk-59/web"), "{second}");
    assert!(!second.contains("bulk-00/web"), "{second}");
    let filtered = text_of("phase-Failure-q-evil-refresh-off");
    assert!(filtered.contains("stacks 1–1 of 1"), "{filtered}");
    assert!(filtered.contains(HOSTILE_NAME), "{filtered}");
    assert!(!filtered.contains("batch/worker"), "{filtered}");
    let detail = report
        .pages
        .iter()
        .find(|p| p.page == "stacks-shop-storefront-refresh-off")
        .map(|p| p.text.as_str())
        .unwrap_or_default();
    assert!(detail.contains("shop/storefront"), "{detail}");
    assert!(detail.contains("db\tStatefulSet\t1\t1\t1"), "{detail}");
    // History (newest first), the field diffs with the Secret redacted, the picture.
    assert!(
        detail.contains("01234567\tBump nginx to 1.27\t"),
        "{detail}"
    );
    assert!(detail.contains("failed RenderFailed"), "{detail}");
    assert!(
        detail.contains("- \"nginx:1.26\"\n+ \"nginx:1.27\""),
        "{detail}"
    );
    assert!(
        detail.contains("@@ /data/PASSWORD @@\n- (changed)\n+ (changed)"),
        "{detail}"
    );
    assert!(!detail.contains("bmV3LXZhbHVl") && !detail.contains("b2xkLXZhbHVl"));
    assert!(detail.contains("Picture"), "{detail}");
    let hostile = report
        .pages
        .iter()
        .find(|p| p.page.starts_with("stacks-evil"))
        .map(|p| p.text.as_str())
        .unwrap_or_default();
    assert!(hostile.contains(HOSTILE_NAME), "{hostile}");
    // In the picture's boxes too, as text (the page's xss check covers running it).
    assert!(hostile.contains("<script>window.__xss"), "{hostile}");

    if std::env::var_os("STACKD_UPDATE_SCREENSHOTS").is_some() {
        let docs = common::repo_dir().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        for (page, viewport, name) in [
            ("overview", "laptop", "status-page.png"),
            ("overview", "phone", "status-page-phone.png"),
            (
                "stacks-shop-storefront-refresh-off",
                "laptop",
                "stack-page.png",
            ),
            (
                "stacks-shop-storefront-refresh-off",
                "phone",
                "stack-page-phone.png",
            ),
        ] {
            std::fs::copy(out.join(format!("{page}-{viewport}.png")), docs.join(name)).unwrap();
        }
    }
}
