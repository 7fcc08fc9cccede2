//! One truth about every stack (issue 17): for each kind of failure, and for
//! suspend, the status page, `/api/v1/stacks`, the Stack's phase and Ready
//! reason, its Event and the metrics all say the same thing.
//!
//! Runs the real `stackd run` against the in-process API server, or against
//! the cluster named by `KUBECONFIG_E2E` (each run's stacks have their own
//! names there), and Git repositories over smart HTTP.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;
#[path = "live_support/mod.rs"]
mod live_support;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use stackd::crd::Stack;

use live_support::{Live, eventually, ready_reason};

const GOOD: &str = "services:\n  web:\n    image: nginx:1.27\n";
/// An unclosed `[`.
const BROKEN_YAML: &str = "services:\n  web: [\n    image: nginx:1.27\n";
/// A bind mount of the node's `/etc`: loads, but the renderer refuses host paths.
const HOST_PATH: &str = "services:\n  web:\n    image: nginx:1.27\n    volumes: [\"/etc:/data\"]\n";
/// A secret whose variable is not set.
const MISSING_SECRET: &str = "services:\n  web:\n    image: nginx:1.27\n    secrets: [pw]\nsecrets:\n  pw:\n    environment: PW_NOT_SET\n";

/// 0.9 MiB in a label: under the 1 MiB file limit, but with the same in the
/// override file the Stack is over etcd's 1.5 MiB request limit, and refused.
fn huge(label: &str) -> String {
    format!(
        "services:\n  web:\n    image: nginx:1.27\n    labels:\n      {label}: \"{}\"\n",
        "x".repeat(900 * 1024)
    )
}

/// What every surface must say about one stack.
struct Expected {
    stack: String,
    reason: &'static str,
    phase: &'static str,
    /// The commit the Stack must name as attempted (`None`: not checked).
    attempted: Option<String>,
    /// The commit still applied.
    applied: String,
}

async fn check(live: &Live, expected: &Expected) {
    let name = &expected.stack;
    let what = format!("{name} to say {}", expected.reason);
    // The Stack first: it is what kubectl, Argo CD and Flux read.
    let stack: Stack = eventually(&what, 60, async || {
        let stack = live.stack_object(name).await?;
        (ready_reason(&stack).as_deref() == Some(expected.reason)).then_some(stack)
    })
    .await;
    let status = stack.status.clone().unwrap();
    let phase = serde_json::to_value(status.phase).unwrap();
    assert_eq!(phase, expected.phase, "{name}: {status:?}");
    assert_eq!(
        status.last_applied_revision.as_deref(),
        Some(expected.applied.as_str()),
        "{name}"
    );
    if let Some(attempted) = &expected.attempted {
        assert_eq!(
            status.last_attempted_revision.as_deref(),
            Some(attempted.as_str()),
            "{name}"
        );
    }
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False", "{name}");

    // The API and the page, once the controller's view is published.
    let api = eventually(&format!("{name} in /api/v1/stacks"), 30, async || {
        let view = live.api_stack(name).await?;
        (view["reason"] == expected.reason).then_some(view)
    })
    .await;
    assert_eq!(api["phase"], expected.phase, "{api}");
    assert_eq!(api["lastError"], json!(status.last_error), "{api}");
    let page = live.text("/").await.unwrap();
    let row = page
        .lines()
        .find(|l| l.contains(&format!(">{name}/{name}</a>")))
        .unwrap_or_else(|| panic!("no row for {name}:\n{page}"));
    assert!(
        row.contains(&format!(
            "phase-{}\">{}</span>",
            expected.phase, expected.phase
        )),
        "{row}"
    );
    assert!(
        row.contains(&format!(
            "<span class=\"reason\">{}</span>",
            expected.reason
        )),
        "{row}"
    );

    // The metrics.
    let metrics = live.text("/metrics").await.unwrap();
    let series = format!(
        "stackd_stack_ready{{namespace=\"{name}\",reason=\"{}\",stack=\"{name}\"}} 1",
        expected.reason
    );
    assert!(metrics.contains(&series), "{series} not in:\n{metrics}");
    let phase_series = format!(
        "stackd_stack_info{{namespace=\"{name}\",phase=\"{}\",stack=\"{name}\"}} 1",
        expected.phase
    );
    assert!(metrics.contains(&phase_series), "{phase_series}");
    let label = stackd::reason::Reason::parse(expected.reason)
        .unwrap()
        .label();
    let counted = format!(
        "stackd_reconcile_total{{namespace=\"{name}\",result=\"{label}\",stack=\"{name}\"}}"
    );
    assert!(metrics.contains(&counted), "{counted} not in:\n{metrics}");
    let other_reasons = metrics
        .lines()
        .filter(|l| {
            l.starts_with("stackd_stack_ready{") && l.contains(&format!("stack=\"{name}\""))
        })
        .count();
    assert_eq!(other_reasons, 1, "one reason series per stack");

    // The Event: one Warning named after the reason, for a failure.
    if expected.phase == "Failure" {
        assert_eq!(stalled.reason, expected.reason);
        let events = eventually(&format!("{name}'s Warning"), 30, async || {
            let events = live.events(name).await;
            events
                .iter()
                .any(|(kind, reason, _)| kind == "Warning" && reason == expected.reason)
                .then_some(events)
        })
        .await;
        let warnings: Vec<_> = events
            .iter()
            .filter(|(kind, _, _)| kind == "Warning")
            .collect();
        assert_eq!(warnings.len(), 1, "{events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_and_suspend_reads_the_same_everywhere() {
    let kinds = ["load", "render", "secret", "apply", "suspend"];
    let files: Vec<(String, &str)> = kinds
        .iter()
        .map(|k| (format!("stacks/{{run}}-{k}/compose.yaml"), GOOD))
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    let mut live = Live::start(&files, &[("stacks/{run}-source/compose.yaml", GOOD)]).await;
    let first = live.upstream.head();
    let gone_first = git_support::git(&live.dir.path().join("gone"), &["rev-parse", "HEAD"])
        .trim()
        .to_string();

    // Every stack applied once.
    for kind in kinds.iter().chain(&["source"]) {
        let name = live.stack(kind);
        eventually(&format!("{name} applied"), 90, async || {
            let stack = live.stack_object(&name).await?;
            stack.status?.last_applied_revision.map(|_| ())
        })
        .await;
    }

    // One commit breaks four stacks in four ways.
    live.write("stacks/{run}-load/compose.yaml", BROKEN_YAML);
    live.write("stacks/{run}-render/compose.yaml", HOST_PATH);
    live.write("stacks/{run}-secret/compose.yaml", MISSING_SECRET);
    live.write("stacks/{run}-apply/compose.yaml", &huge("one"));
    live.write("stacks/{run}-apply/compose.override.yaml", &huge("two"));
    let bad = live.upstream.commit("break four stacks");
    // Suspend one by hand, as `kubectl annotate` would.
    let suspended = live.stack("suspend");
    let api: Api<Stack> = Api::namespaced(live.cluster.client.clone(), &suspended);
    api.patch(
        &suspended,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"stackd.dev/suspend": "true"}}})),
    )
    .await
    .unwrap();
    // The second repository goes away.
    std::fs::rename(
        live.dir.path().join("gone"),
        live.dir.path().join("gone-moved"),
    )
    .unwrap();

    let failure = |kind: &str, reason: &'static str| Expected {
        stack: live.stack(kind),
        reason,
        phase: "Failure",
        attempted: Some(bad.clone()),
        applied: first.clone(),
    };
    let expectations = [
        failure("load", "LoadFailed"),
        failure("render", "RenderFailed"),
        failure("secret", "SecretsUnavailable"),
        failure("apply", "ApplyFailed"),
        Expected {
            stack: live.stack("source"),
            reason: "SourceUnavailable",
            phase: "Failure",
            attempted: None,
            applied: gone_first.clone(),
        },
        Expected {
            stack: live.stack("suspend"),
            reason: "Suspended",
            // Suspending changes nothing in the cluster: the phase stays.
            phase: "Progressing",
            attempted: None,
            applied: first.clone(),
        },
    ];
    for expected in &expectations {
        check(&live, expected).await;
    }

    // The spec stays at the last good revision, whatever the stage.
    for kind in ["load", "render", "secret", "apply"] {
        let stack = live.stack_object(&live.stack(kind)).await.unwrap();
        let revision = stack.spec.source.map(|s| s.revision);
        assert_eq!(revision.as_deref(), Some(first.as_str()), "{kind}");
    }

    // Messages say where and why.
    let load = live.stack_object(&live.stack("load")).await.unwrap();
    let message = load.status.unwrap().last_error.unwrap();
    let file = format!("stacks/{}/compose.yaml:", live.stack("load"));
    assert!(message.starts_with(&file), "{message}");
    assert!(message.contains("invalid YAML"), "{message}");
    let apply = live.stack_object(&live.stack("apply")).await.unwrap();
    let message = apply.status.unwrap().last_error.unwrap();
    assert!(message.contains("request is too large"), "{message}");

    // More polls of the same commits: still one Warning each.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    for expected in &expectations[..5] {
        let warnings = live
            .events(&expected.stack)
            .await
            .into_iter()
            .filter(|(kind, _, _)| kind == "Warning")
            .count();
        assert_eq!(warnings, 1, "{}", expected.stack);
    }

    // A fixing commit: Recovered, and every surface says so.
    live.write(
        "stacks/{run}-load/compose.yaml",
        GOOD.replace("1.27", "1.28").as_str(),
    );
    let fixed = live.upstream.commit("fix the load");
    let name = live.stack("load");
    eventually("the load stack to recover", 60, async || {
        let stack = live.stack_object(&name).await?;
        let status = stack.status.clone()?;
        (status.last_applied_revision.as_deref() == Some(fixed.as_str())
            && ready_reason(&stack).as_deref() == Some("Progressing"))
        .then_some(())
    })
    .await;
    let events = eventually("the Recovered event", 30, async || {
        let events = live.events(&name).await;
        events
            .iter()
            .any(|(kind, reason, _)| kind == "Normal" && reason == "Recovered")
            .then_some(events)
    })
    .await;
    assert!(!events.is_empty());
    let view = eventually("the page to follow", 30, async || {
        let view = live.api_stack(&name).await?;
        (view["reason"] == "Progressing").then_some(view)
    })
    .await;
    assert_eq!(view["phase"], "Progressing");
    assert_eq!(view["lastError"], json!(null));
    let metrics = live.text("/metrics").await.unwrap();
    assert!(
        metrics.contains(&format!(
            "stackd_stack_ready{{namespace=\"{name}\",reason=\"Progressing\",stack=\"{name}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(!metrics.contains(&format!(
        "stackd_stack_ready{{namespace=\"{name}\",reason=\"LoadFailed\""
    )));

    let status = live
        .daemon
        .terminate(std::time::Duration::from_secs(15))
        .await;
    assert!(status.success(), "{status:?}\n{}", live.log_text());
}
