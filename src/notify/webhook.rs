//! Notifications: the daemon-wide key `notifications`, and the messages a
//! generic webhook (signed JSON) and a Slack incoming webhook get. Pure: the
//! URL and secret are passed in, nothing is sent.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::send::Request;

/// One entry of `notifications` as written in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotificationConfig {
    pub name: String,
    /// `webhook` or `slack`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A file holding the URL (a secret: Slack's URL is the credential).
    pub url_file: PathBuf,
    /// A file holding the HMAC key for `X-Stackd-Signature-256` (webhook only).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Which changes to send; all of them by default.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Which stacks: a glob matched against the stack name and `namespace/name`.
    #[serde(default = "every_stack")]
    pub stacks: String,
    /// How often a stack that keeps failing is reported again.
    #[serde(default = "hourly", deserialize_with = "duration")]
    pub repeat_interval: Duration,
}

fn all_events() -> Vec<String> {
    Event::ALL.iter().map(|e| e.label().to_string()).collect()
}

fn every_stack() -> String {
    "*".to_string()
}

fn hourly() -> Duration {
    Duration::from_secs(3600)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    crate::git::settings::parse_duration(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid interval {text:?}: expected e.g. \"30m\", \"1h\""
        ))
    })
}

/// What happened to a stack, as notifications name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// A new failure (or, every `repeatInterval`, a reminder of one).
    Failure,
    /// Ready again after a failure.
    Recovery,
    /// A new commit became Ready.
    Applied,
    /// The rollout was rolled back to the last good revision.
    Rollback,
}

impl Event {
    pub const ALL: [Event; 4] = [
        Event::Failure,
        Event::Recovery,
        Event::Applied,
        Event::Rollback,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Recovery => "recovery",
            Event::Applied => "applied",
            Event::Rollback => "rollback",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    Webhook,
    Slack,
}

/// A validated notification target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub url_file: PathBuf,
    pub secret_file: Option<PathBuf>,
    pub events: BTreeSet<Event>,
    pub stacks: glob::Pattern,
    pub repeat_interval: Duration,
}

impl Channel {
    /// Whether this channel wants `event` about `namespace/stack`.
    pub fn wants(&self, event: Event, namespace: &str, stack: &str) -> bool {
        self.events.contains(&event)
            && (self.stacks.matches(stack) || self.stacks.matches(&format!("{namespace}/{stack}")))
    }
}

/// Validates `notifications`; the error names the field (`notifications[0].events[1]`).
pub fn resolve(configs: &[NotificationConfig]) -> Result<Vec<Channel>, (String, String)> {
    let mut names = BTreeSet::new();
    let mut channels = Vec::new();
    for (index, config) in configs.iter().enumerate() {
        let key = |field: &str| format!("notifications[{index}].{field}");
        if config.name.trim().is_empty() {
            return Err((key("name"), "must not be empty".into()));
        }
        if !names.insert(config.name.clone()) {
            return Err((
                key("name"),
                format!("notification name {:?} is used twice", config.name),
            ));
        }
        let kind = match config.kind.as_str() {
            "webhook" => ChannelKind::Webhook,
            "slack" => ChannelKind::Slack,
            other => {
                return Err((
                    key("type"),
                    format!("unknown type {other:?} (expected webhook or slack)"),
                ));
            }
        };
        readable(&config.url_file).map_err(|m| (key("urlFile"), m))?;
        if let Some(file) = &config.secret_file {
            if kind == ChannelKind::Slack {
                return Err((
                    key("secretFile"),
                    "Slack incoming webhooks are not signed; remove it".into(),
                ));
            }
            readable(file).map_err(|m| (key("secretFile"), m))?;
        }
        let mut events = BTreeSet::new();
        for (i, name) in config.events.iter().enumerate() {
            let event = Event::ALL
                .into_iter()
                .find(|e| e.label() == name)
                .ok_or_else(|| {
                    (
                        key(&format!("events[{i}]")),
                        format!(
                            "unknown event {name:?} (expected failure, recovery, applied or rollback)"
                        ),
                    )
                })?;
            events.insert(event);
        }
        let stacks = glob::Pattern::new(&config.stacks).map_err(|e| {
            (
                key("stacks"),
                format!("invalid glob {:?}: {e}", config.stacks),
            )
        })?;
        if config.repeat_interval.is_zero() {
            return Err((key("repeatInterval"), "must be longer than zero".into()));
        }
        channels.push(Channel {
            name: config.name.clone(),
            kind,
            url_file: config.url_file.clone(),
            secret_file: config.secret_file.clone(),
            events,
            stacks,
            repeat_interval: config.repeat_interval,
        });
    }
    Ok(channels)
}

fn readable(file: &std::path::Path) -> Result<(), String> {
    std::fs::metadata(file)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", file.display()))
}

/// One message: the generic webhook's JSON body, field for field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub event: Event,
    pub repository: String,
    pub namespace: String,
    pub stack: String,
    pub revision: String,
    pub reason: String,
    pub message: String,
    /// The stack's page, when `externalUrl` is set.
    pub url: Option<String>,
}

/// The header carrying the body's HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "X-Stackd-Signature-256";

/// A generic webhook POST: the notice as JSON, signed when a secret is set.
pub fn webhook_request(url: &str, secret: Option<&[u8]>, notice: &Notice) -> Request {
    let body = serde_json::to_vec(notice).unwrap_or_default();
    let headers = match secret {
        Some(secret) => vec![(
            SIGNATURE_HEADER.to_string(),
            crate::git::webhook::sign_sha256(secret, &body),
        )],
        None => Vec::new(),
    };
    Request {
        url: url.to_string(),
        headers,
        body,
    }
}

/// A Slack incoming-webhook POST: `{"text": ...}`.
pub fn slack_request(url: &str, notice: &Notice) -> Request {
    let body = serde_json::json!({ "text": slack_text(notice) });
    Request {
        url: url.to_string(),
        headers: Vec::new(),
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// One Slack line: what happened, to which stack, at which commit, and why.
pub fn slack_text(notice: &Notice) -> String {
    let (icon, verb) = match notice.event {
        Event::Failure => (":x:", "failed"),
        Event::Recovery => (":white_check_mark:", "recovered"),
        Event::Applied => (":rocket:", "applied"),
        Event::Rollback => (":leftwards_arrow_with_hook:", "rolled back"),
    };
    let short = &notice.revision[..notice.revision.len().min(8)];
    let stack = format!("{}/{}", notice.namespace, notice.stack);
    let stack = match &notice.url {
        Some(url) => format!("<{url}|{stack}>"),
        None => stack,
    };
    let mut text = format!("{icon} stackd: {stack} {verb} at `{short}`");
    if !notice.reason.is_empty() && notice.event != Event::Applied {
        text.push_str(&format!(" ({})", notice.reason));
    }
    if !notice.message.is_empty() && matches!(notice.event, Event::Failure | Event::Rollback) {
        text.push_str(&format!(": {}", notice.message));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notice(event: Event) -> Notice {
        Notice {
            event,
            repository: "apps".into(),
            namespace: "shop".into(),
            stack: "web".into(),
            revision: "0123456789abcdef".into(),
            reason: "RenderFailed".into(),
            message: "web/compose.yaml:3:12: invalid YAML".into(),
            url: Some("https://stackd.example.com/stacks/shop/web".into()),
        }
    }

    #[test]
    fn webhook_body_has_every_field_and_a_verifiable_signature() {
        let request = webhook_request("http://hook", Some(b"key"), &notice(Event::Failure));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"event": "failure", "repository": "apps", "namespace": "shop", "stack": "web",
                   "revision": "0123456789abcdef", "reason": "RenderFailed",
                   "message": "web/compose.yaml:3:12: invalid YAML",
                   "url": "https://stackd.example.com/stacks/shop/web"})
        );
        let (name, value) = &request.headers[0];
        assert_eq!(name, SIGNATURE_HEADER);
        assert_eq!(
            value,
            &crate::git::webhook::sign_sha256(b"key", &request.body)
        );
        assert!(
            webhook_request("http://hook", None, &notice(Event::Applied))
                .headers
                .is_empty()
        );
    }

    #[test]
    fn slack_gets_one_line_of_text() {
        let request = slack_request("http://hook", &notice(Event::Failure));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"text": ":x: stackd: <https://stackd.example.com/stacks/shop/web|shop/web> failed at `01234567` (RenderFailed): web/compose.yaml:3:12: invalid YAML"})
        );
    }

    fn config(text: &str) -> Vec<NotificationConfig> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn settings_are_validated_naming_the_field() {
        let file = format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
        let ok = config(&format!(
            r#"[{{"name": "ops", "type": "webhook", "urlFile": "{file}", "events": ["failure", "recovery"], "stacks": "shop-*", "repeatInterval": "30m"}}]"#
        ));
        let channels = resolve(&ok).unwrap();
        assert_eq!(channels[0].repeat_interval, Duration::from_secs(1800));
        assert!(channels[0].wants(Event::Failure, "prod", "shop-web"));
        assert!(!channels[0].wants(Event::Applied, "prod", "shop-web"));
        assert!(!channels[0].wants(Event::Failure, "prod", "blog"));
        let cases = [
            (
                r#""type": "teams""#,
                "notifications[0].type",
                "unknown type \"teams\"",
            ),
            (
                r#""type": "webhook", "events": ["failure", "exploded"]"#,
                "notifications[0].events[1]",
                "unknown event \"exploded\"",
            ),
            (
                r#""type": "webhook", "stacks": "[a""#,
                "notifications[0].stacks",
                "invalid glob",
            ),
            (
                r#""type": "webhook", "secretFile": "/nonexistent/secret""#,
                "notifications[0].secretFile",
                "cannot read /nonexistent/secret",
            ),
        ];
        for (fields, key, message) in cases {
            let configs = config(&format!(
                r#"[{{"name": "ops", "urlFile": "{file}", {fields}}}]"#
            ));
            let (got_key, got) = resolve(&configs).unwrap_err();
            assert_eq!(got_key, key, "{got}");
            assert!(got.starts_with(message), "{got}");
        }
    }
}
