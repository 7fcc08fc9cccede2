//! The README's alert rules really fire (issue 17): `docs/alerts.yaml` is what
//! the README shows, `promtool check rules` passes on it, and Debian's
//! Prometheus scraping a real `stackd run` sees `StackdSyncFailing` go pending
//! or firing on a broken push, and resolve after the fixing commit. The
//! README's reasons table lists every reason the code has.
//!
//! `scripts/setup-prometheus.sh` installs `prometheus` and `promtool`; without
//! them the tests are skipped visibly, except under CI.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;
#[path = "live_support/mod.rs"]
mod live_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use stackd::reason::Reason;

use live_support::{Live, eventually, ready_reason};

fn rules_file() -> PathBuf {
    common::repo_dir().join("docs/alerts.yaml")
}

/// A Prometheus binary: `$env_var`, else Debian's in /usr/bin. Missing: the
/// test is skipped with a note, or fails under CI.
fn prometheus_tool(env_var: &str, name: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(name));
    if candidate.exists() {
        return Some(candidate);
    }
    assert!(
        !common::in_ci(),
        "{name} not found at {} (set {env_var}); scripts/setup-prometheus.sh installs it",
        candidate.display()
    );
    eprintln!(
        "SKIPPED: {name} not found at {} (set {env_var}, or run scripts/setup-prometheus.sh)",
        candidate.display()
    );
    None
}

#[test]
fn the_alert_rules_pass_promtool() {
    let Some(promtool) = prometheus_tool("STACKD_PROMTOOL", "promtool") else {
        return;
    };
    let output = Command::new(promtool)
        .args(["check", "rules"])
        .arg(rules_file())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("SUCCESS: 3 rules found"), "{text}");
}

#[test]
fn the_readme_shows_the_alert_rules_and_every_reason() {
    let readme = std::fs::read_to_string(common::repo_dir().join("README.md")).unwrap();
    let rules = std::fs::read_to_string(rules_file()).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{rules}```\n")),
        "README.md must show docs/alerts.yaml as it is"
    );
    assert!(rules.contains("- alert: StackdSyncFailing"));
    for reason in Reason::ALL {
        let phase = match reason {
            Reason::Available => "Available",
            Reason::Progressing => "Progressing",
            Reason::Suspended => "unchanged",
            Reason::RolledBack => "RolledBack",
            _ => "Failure",
        };
        let row = format!(
            "| `{}` | `{}` | {phase} | {} |",
            reason.as_str(),
            reason.label(),
            reason.doc()
        );
        assert!(readme.contains(&row), "README.md lacks the row\n{row}");
    }
}

/// A Prometheus server on a free port, scraping `target` every second with
/// the rules of `docs/alerts.yaml`, their `for:` shortened to 1 s.
struct Prometheus {
    _child: common::Daemon,
    base: String,
}

impl Prometheus {
    fn start(binary: &PathBuf, dir: &std::path::Path, target: &str) -> Prometheus {
        let rules = std::fs::read_to_string(rules_file())
            .unwrap()
            .replace("for: 10m", "for: 1s");
        std::fs::write(dir.join("rules.yaml"), rules).unwrap();
        std::fs::write(
            dir.join("prometheus.yaml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [rules.yaml]\nscrape_configs:\n  - job_name: stackd\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
            ),
        )
        .unwrap();
        let port = common::free_port();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yaml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        Prometheus {
            _child: common::Daemon(child),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The active `StackdSyncFailing` alerts for `stack`: (state, reason).
    async fn sync_failing(
        &self,
        http: &reqwest::Client,
        stack: &str,
    ) -> Option<Vec<(String, String)>> {
        let body: Value = http
            .get(format!("{}/api/v1/alerts", self.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let alerts = body["data"]["alerts"].as_array()?;
        Some(
            alerts
                .iter()
                .filter(|a| {
                    a["labels"]["alertname"] == "StackdSyncFailing" && a["labels"]["stack"] == stack
                })
                .map(|a| {
                    (
                        a["state"].as_str().unwrap_or_default().to_string(),
                        a["labels"]["reason"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stackd_sync_failing_fires_on_a_broken_push_and_resolves_after_the_fix() {
    let Some(prometheus) = prometheus_tool("STACKD_PROMETHEUS", "prometheus") else {
        return;
    };
    let good = "services:\n  web:\n    image: nginx:1.27\n";
    let live = Live::start(&[("stacks/{run}-web/compose.yaml", good)], &[]).await;
    let name = live.stack("web");
    eventually("the stack applied", 90, async || {
        let stack = live.stack_object(&name).await?;
        (ready_reason(&stack).as_deref() == Some("Progressing")).then_some(())
    })
    .await;
    let server = Prometheus::start(
        &prometheus,
        live.dir.path(),
        &format!("127.0.0.1:{}", live.port),
    );
    let http = reqwest::Client::new();
    // Prometheus is up and scraping, and nothing fires for a healthy stack.
    eventually("Prometheus to answer", 60, async || {
        server.sync_failing(&http, &name).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        server.sync_failing(&http, &name).await,
        Some(vec![]),
        "nothing fails yet"
    );

    // A broken push.
    live.write(
        "stacks/{run}-web/compose.yaml",
        "services:\n  web: [\n    image: nginx:1.27\n",
    );
    live.upstream.commit("broken");
    let alerts = eventually("StackdSyncFailing pending or firing", 90, async || {
        let alerts = server.sync_failing(&http, &name).await?;
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    let (state, reason) = &alerts[0];
    assert!(["pending", "firing"].contains(&state.as_str()), "{state}");
    assert_eq!(reason, "LoadFailed");

    // The fix resolves it.
    live.write(
        "stacks/{run}-web/compose.yaml",
        "services:\n  web:\n    image: nginx:1.28\n",
    );
    live.upstream.commit("fixed");
    eventually("StackdSyncFailing resolved", 90, async || {
        let alerts = server.sync_failing(&http, &name).await?;
        alerts.is_empty().then_some(())
    })
    .await;
    let stack = live.stack_object(&name).await.unwrap();
    assert_eq!(ready_reason(&stack).as_deref(), Some("Progressing"));
}
