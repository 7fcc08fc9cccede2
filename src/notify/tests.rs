//! The pure decisions: which observations change anything, and when reminders are due.

use super::*;

fn seen(state: CommitState, revision: &str, reason: &str) -> Observation {
    Observation {
        repository: "apps".into(),
        namespace: "shop".into(),
        stack: "web".into(),
        revision: revision.into(),
        state,
        reason: reason.into(),
        message: String::new(),
        at: Utc::now(),
    }
}

use CommitState::{Failure, Pending, Success};

fn decide(
    tracker: &mut Tracker,
    state: CommitState,
    revision: &str,
    reason: &str,
) -> (bool, Option<Event>) {
    let decision = tracker.observe(&seen(state, revision, reason));
    (decision.post_status, decision.event)
}

#[test]
fn a_commit_goes_pending_then_success_once() {
    let mut tracker = Tracker::default();
    // First report after start: posted, but a restart is no deployment.
    assert_eq!(
        decide(&mut tracker, Success, "a", "Available"),
        (true, None)
    );
    assert_eq!(
        decide(&mut tracker, Success, "a", "Available"),
        (false, None)
    );
    assert_eq!(
        decide(&mut tracker, Pending, "b", "Progressing"),
        (true, None)
    );
    // Every poll reports again: nothing new.
    assert_eq!(
        decide(&mut tracker, Pending, "b", "Progressing"),
        (false, None)
    );
    assert_eq!(
        decide(&mut tracker, Success, "b", "Available"),
        (true, Some(Event::Applied))
    );
    assert_eq!(
        decide(&mut tracker, Success, "b", "Available"),
        (false, None)
    );
}

#[test]
fn failures_are_told_once_and_recovery_follows() {
    let mut tracker = Tracker::default();
    decide(&mut tracker, Success, "a", "Available");
    assert_eq!(
        decide(&mut tracker, Failure, "b", "LoadFailed"),
        (true, Some(Event::Failure))
    );
    assert_eq!(
        decide(&mut tracker, Failure, "b", "LoadFailed"),
        (false, None)
    );
    // The Stack still runs `a`: its success report is stale, not a recovery.
    assert_eq!(
        decide(&mut tracker, Success, "a", "Available"),
        (false, None)
    );
    // Another commit failing is news.
    assert_eq!(
        decide(&mut tracker, Failure, "c", "RenderFailed"),
        (true, Some(Event::Failure))
    );
    // The fix.
    assert_eq!(
        decide(&mut tracker, Pending, "d", "Progressing"),
        (true, None)
    );
    assert_eq!(
        decide(&mut tracker, Success, "d", "Available"),
        (true, Some(Event::Recovery))
    );
}

#[test]
fn a_rollback_is_its_own_event() {
    let mut tracker = Tracker::default();
    decide(&mut tracker, Pending, "b", "Progressing");
    assert_eq!(
        decide(&mut tracker, Failure, "b", ROLLED_BACK),
        (true, Some(Event::Rollback))
    );
}

#[test]
fn stacks_are_tracked_apart() {
    let mut tracker = Tracker::default();
    assert_eq!(
        decide(&mut tracker, Failure, "a", "LoadFailed").1,
        Some(Event::Failure)
    );
    let mut other = seen(Failure, "a", "LoadFailed");
    other.stack = "db".into();
    assert_eq!(tracker.observe(&other).event, Some(Event::Failure));
}

fn channel(name: &str, every: Duration) -> Channel {
    Channel {
        name: name.into(),
        kind: ChannelKind::Webhook,
        url_file: "/dev/null".into(),
        secret_file: None,
        events: Event::ALL.into_iter().collect(),
        stacks: glob::Pattern::new("*").unwrap(),
        repeat_interval: every,
    }
}

fn notice(event: Event) -> Notice {
    Notice {
        event,
        repository: "apps".into(),
        namespace: "shop".into(),
        stack: "web".into(),
        revision: "b".into(),
        reason: "LoadFailed".into(),
        message: String::new(),
        url: None,
    }
}

#[test]
fn reminders_repeat_at_most_every_interval_until_recovery() {
    let channels = [
        channel("fast", Duration::from_secs(60)),
        channel("slow", Duration::from_secs(3600)),
    ];
    let mut reminders = Reminders::default();
    let start = Instant::now();
    reminders.record(&notice(Event::Failure));
    for c in &channels {
        reminders.sent(&c.name, "shop", "web", start);
    }
    assert!(
        reminders
            .due(&channels, start + Duration::from_secs(59))
            .is_empty()
    );
    let due = reminders.due(&channels, start + Duration::from_secs(60));
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].0, due[0].1.event), (0, Event::Failure));
    // Marked sent: not again before another interval.
    assert!(
        reminders
            .due(&channels, start + Duration::from_secs(100))
            .is_empty()
    );
    assert_eq!(
        reminders
            .due(&channels, start + Duration::from_secs(120))
            .len(),
        1
    );
    reminders.record(&notice(Event::Recovery));
    assert!(
        reminders
            .due(&channels, start + Duration::from_secs(7200))
            .is_empty()
    );
}

#[test]
fn descriptions_carry_the_reason_on_one_short_line() {
    let mut failed = seen(Failure, "a", "RenderFailed");
    failed.message = format!("web/compose.yaml:3:12: {}", "x".repeat(300));
    let text = description(&failed);
    assert!(
        text.starts_with("RenderFailed: web/compose.yaml:3:12: "),
        "{text}"
    );
    assert_eq!(text.chars().count(), 140);
    assert_eq!(description(&seen(Success, "a", "Available")), "Available");
}

fn parse(text: &str) -> Result<crate::config::Config, String> {
    crate::config::Config::parse(text, std::path::Path::new("config.yaml"))
        .map_err(|e| e.to_string())
}

#[test]
fn configuration_errors_name_the_key() {
    let file = format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    let repository = |commit_status: &str| {
        format!(
            "repositories:\n  - name: apps\n    url: https://github.com/acme/apps.git\n    commitStatus: {commit_status}\n"
        )
    };
    let cases = [
        (
            repository(&format!("{{provider: bitbucket, tokenFile: {file}}}")),
            "config.yaml: repositories[0].commitStatus.provider: unknown provider \"bitbucket\"",
        ),
        (
            repository("{provider: github, tokenFile: /nonexistent/token}"),
            "config.yaml: repositories[0].commitStatus.tokenFile: cannot read /nonexistent/token",
        ),
        (
            repository(&format!(
                "{{provider: gitea, tokenFile: {file}, apiUrl: \"git.example.com\"}}"
            )),
            "config.yaml: repositories[0].commitStatus.apiUrl: \"git.example.com\" is not an http(s) URL",
        ),
        (
            repository(&format!(
                "{{provider: github, tokenFile: {file}, token: x}}"
            )),
            "config.yaml: repositories[0].commitStatus.token: unknown field `token`",
        ),
        (
            format!(
                "notifications:\n  - {{name: ops, type: webhook, urlFile: {file}, stacks: \"[\"}}\n"
            ),
            "config.yaml: notifications[0].stacks: invalid glob \"[\"",
        ),
        (
            format!(
                "notifications:\n  - {{name: ops, type: webhook, urlFile: {file}, events: [failure, oops]}}\n"
            ),
            "config.yaml: notifications[0].events[1]: unknown event \"oops\"",
        ),
        (
            format!(
                "notifications:\n  - {{name: ops, type: slack, urlFile: {file}, repeatInterval: soon}}\n"
            ),
            "config.yaml: notifications[0].repeatInterval: invalid interval \"soon\"",
        ),
        (
            "externalUrl: stackd.example.com\n".to_string(),
            "config.yaml: externalUrl: \"stackd.example.com\" is not an http(s) URL",
        ),
    ];
    for (text, expected) in cases {
        let message = parse(&text).unwrap_err();
        assert!(
            message.starts_with(expected),
            "{text}\n  got: {message}\n  expected: {expected}"
        );
    }
}

#[test]
fn a_full_configuration_resolves() {
    let file = format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    let config = parse(&format!(
        "externalUrl: https://stackd.example.com/\nnotifications:\n  - {{name: ops, type: webhook, urlFile: {file}, secretFile: {file}, events: [failure, recovery], stacks: \"shop-*\", repeatInterval: 30m}}\nrepositories:\n  - name: apps\n    url: git@github.com:acme/apps.git\n    commitStatus: {{provider: github, tokenFile: {file}}}\n"
    ))
    .unwrap();
    let settings = Settings::of(&config).unwrap();
    assert_eq!(
        settings.external_url.as_deref(),
        Some("https://stackd.example.com")
    );
    assert_eq!(settings.forges["apps"].repository, "acme/apps");
    assert_eq!(
        settings.channels[0].repeat_interval,
        Duration::from_secs(1800)
    );
    assert_eq!(
        settings.page_of("shop", "web").as_deref(),
        Some("https://stackd.example.com/stacks/shop/web")
    );
}

fn stack_at(revision: &str) -> crate::crd::Stack {
    let mut stack = crate::render::stack_for(
        "web",
        "shop",
        crate::render::model::Project::default(),
        Some(crate::crd::SourceRef {
            repository: "https://github.com/acme/apps.git".into(),
            path: "web".into(),
            revision: revision.into(),
            subject: None,
        }),
    );
    stack.metadata.annotations = Some(
        [(
            crate::reconcile::source::REPOSITORY_ANNOTATION.to_string(),
            "apps".to_string(),
        )]
        .into(),
    );
    stack
}

#[test]
fn a_stack_status_becomes_an_observation() {
    let status = |phase, applied: Option<&str>| StackStatus {
        phase: Some(phase),
        last_applied_revision: applied.map(str::to_string),
        message: Some("waiting for web".into()),
        last_error: Some("web/compose.yaml:3:12: invalid YAML\nmore".into()),
        ..StackStatus::default()
    };
    let stack = stack_at("b");
    let seen = |phase, applied| observation_of(&stack, &status(phase, applied)).unwrap();
    let available = seen(StackPhase::Available, Some("b"));
    assert_eq!(
        (
            available.repository.as_str(),
            available.namespace.as_str(),
            available.stack.as_str()
        ),
        ("apps", "shop", "web")
    );
    assert_eq!(
        (available.state, available.revision.as_str()),
        (Success, "b")
    );
    // Available, but still at the previous commit: the new one is pending.
    assert_eq!(seen(StackPhase::Available, Some("a")).state, Pending);
    assert_eq!(seen(StackPhase::Progressing, Some("a")).state, Pending);
    let failed = seen(StackPhase::Failure, Some("a"));
    assert_eq!((failed.state, failed.revision.as_str()), (Failure, "b"));
    assert_eq!(failed.message, "web/compose.yaml:3:12: invalid YAML");
    // A hand-written Stack without a source names no commit.
    let mut manual = stack_at("b");
    manual.spec.source = None;
    assert_eq!(
        observation_of(&manual, &status(StackPhase::Available, None)),
        None
    );
}

#[test]
fn a_deleted_stack_is_not_reminded_of() {
    let channels = [channel("fast", Duration::from_secs(60))];
    let mut reminders = Reminders::default();
    let start = Instant::now();
    reminders.record(&notice(Event::Failure));
    reminders.sent("fast", "shop", "web", start);
    reminders.forget("shop", "web");
    assert!(
        reminders
            .due(&channels, start + Duration::from_secs(600))
            .is_empty()
    );
    // Without the deletion it would have been due.
    reminders.record(&notice(Event::Failure));
    reminders.sent("fast", "shop", "web", start);
    assert_eq!(
        reminders
            .due(&channels, start + Duration::from_secs(600))
            .len(),
        1
    );
}
