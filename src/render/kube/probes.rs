//! `healthcheck` → readiness, liveness and startup probes.

use k8s_openapi::api::core::v1::{ExecAction, Probe};

use super::warnings::Warnings;
use crate::render::model::Healthcheck;

const DEFAULT_INTERVAL_MS: u64 = 30_000;
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_RETRIES: u64 = 3;

/// The probes of one container.
#[derive(Debug, Default, PartialEq)]
pub struct Probes {
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    pub startup: Option<Probe>,
}

/// Whole seconds, rounded up, at least 1 (Kubernetes refuses 0).
pub fn seconds_up(ms: u64) -> i32 {
    i32::try_from(ms.div_ceil(1000)).unwrap_or(i32::MAX).max(1)
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX).max(1)
}

/// Probes for `healthcheck`, or none when it is absent, disabled or `NONE`.
pub fn probes(service: &str, healthcheck: Option<&Healthcheck>, warnings: &mut Warnings) -> Probes {
    let Some(check) = healthcheck else {
        return Probes::default();
    };
    if check.disable {
        return Probes::default();
    }
    let command = match check.test.split_first() {
        Some((kind, argv)) if kind == "CMD" && !argv.is_empty() => argv.to_vec(),
        Some((kind, script)) if kind == "CMD-SHELL" && !script.is_empty() => {
            vec!["sh".to_string(), "-c".to_string(), script.join(" ")]
        }
        Some((kind, _)) if kind == "NONE" => return Probes::default(),
        _ => {
            // Without a test compose uses the image's HEALTHCHECK, which we cannot see.
            warnings.ignored(
                service,
                "healthcheck",
                "it has no test command; the image's HEALTHCHECK is not visible to stackd",
            );
            return Probes::default();
        }
    };
    let interval_ms = check.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
    let retries = check.retries.unwrap_or(DEFAULT_RETRIES);
    let probe = Probe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        period_seconds: Some(seconds_up(interval_ms)),
        timeout_seconds: Some(seconds_up(check.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))),
        failure_threshold: Some(count(retries)),
        ..Probe::default()
    };
    // Failures during start_period do not count in compose; the startup probe allows
    // that many extra attempts before liveness takes over.
    let startup = check.start_period_ms.filter(|ms| *ms > 0).map(|start_ms| {
        let period_ms = check.start_interval_ms.unwrap_or(interval_ms).max(1);
        let period = seconds_up(period_ms);
        let attempts = start_ms.div_ceil(u64::from(period.unsigned_abs()) * 1000);
        Probe {
            period_seconds: Some(period),
            failure_threshold: Some(count(attempts.saturating_add(retries))),
            ..probe.clone()
        }
    });
    Probes {
        readiness: Some(probe.clone()),
        liveness: Some(probe),
        startup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: serde_json::Value) -> Healthcheck {
        serde_json::from_value(value).unwrap()
    }

    fn to_json(probe: &Option<Probe>) -> serde_json::Value {
        serde_json::to_value(probe).unwrap()
    }

    #[test]
    fn cmd_runs_argv_with_compose_defaults() {
        let mut w = Warnings::default();
        let p = probes(
            "web",
            Some(&check(
                json!({"test": ["CMD", "curl", "-f", "http://localhost"]}),
            )),
            &mut w,
        );
        let expected = json!({
            "exec": {"command": ["curl", "-f", "http://localhost"]},
            "failureThreshold": 3,
            "periodSeconds": 30,
            "timeoutSeconds": 30
        });
        assert_eq!(to_json(&p.readiness), expected);
        assert_eq!(to_json(&p.liveness), expected);
        assert_eq!(p.startup, None);
        assert!(w.finish().is_empty());
    }

    #[test]
    fn cmd_shell_rounds_up_and_adds_startup_probe() {
        let mut w = Warnings::default();
        let p = probes(
            "db",
            Some(&check(json!({
                "test": ["CMD-SHELL", "pg_isready -U postgres"],
                "intervalMs": 1500, "timeoutMs": 200, "retries": 5, "startPeriodMs": 40000
            }))),
            &mut w,
        );
        assert_eq!(
            to_json(&p.liveness),
            json!({
                "exec": {"command": ["sh", "-c", "pg_isready -U postgres"]},
                "failureThreshold": 5,
                "periodSeconds": 2,
                "timeoutSeconds": 1
            })
        );
        assert_eq!(
            to_json(&p.startup),
            json!({
                "exec": {"command": ["sh", "-c", "pg_isready -U postgres"]},
                "failureThreshold": 25,
                "periodSeconds": 2,
                "timeoutSeconds": 1
            })
        );
    }

    #[test]
    fn disabled_and_none_give_no_probes() {
        let mut w = Warnings::default();
        assert_eq!(
            probes("a", Some(&check(json!({"test": ["NONE"]}))), &mut w),
            Probes::default()
        );
        assert_eq!(
            probes(
                "a",
                Some(&check(json!({"test": ["CMD", "true"], "disable": true}))),
                &mut w
            ),
            Probes::default()
        );
        assert_eq!(probes("a", None, &mut w), Probes::default());
        assert!(w.finish().is_empty());
    }

    #[test]
    fn missing_test_warns() {
        let mut w = Warnings::default();
        assert_eq!(
            probes("a", Some(&check(json!({"intervalMs": 1000}))), &mut w),
            Probes::default()
        );
        assert_eq!(
            w.finish(),
            vec![
                "service \"a\": healthcheck is ignored (it has no test command; the image's HEALTHCHECK is not visible to stackd)"
            ]
        );
    }
}
