//! Fault injection rules and the request log.

use std::time::Duration;

use axum::http::Method;

/// What a matching fault rule does to the request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer with this status code (500, 503, ...) and an `InternalError` Status body.
    Fail(u16),
    /// Answer 429 with `Retry-After` (whole seconds, rounded up).
    TooManyRequests { retry_after: Duration },
    /// Wait, then serve the request normally.
    Delay(Duration),
}

/// Matches requests by method and a path substring; fires `times` times, or forever.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub method: Option<Method>,
    pub path_contains: String,
    pub times: Option<usize>,
    /// Matching requests to let through before the rule starts firing (the Nth write).
    pub skip: usize,
    /// Only requests whose `User-Agent` contains this (one replica of several).
    pub user_agent: Option<String>,
    pub action: FaultAction,
}

impl FaultRule {
    pub fn new(method: Option<Method>, path_contains: &str, action: FaultAction) -> Self {
        FaultRule {
            method,
            path_contains: path_contains.to_string(),
            times: None,
            skip: 0,
            user_agent: None,
            action,
        }
    }

    /// Lets `skip` matching requests through first: `after(2)` fails the third.
    pub fn after(mut self, skip: usize) -> Self {
        self.skip = skip;
        self
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = Some(times);
        self
    }

    /// Fires only for clients whose `User-Agent` contains `agent`.
    pub fn only_agent(mut self, agent: &str) -> Self {
        self.user_agent = Some(agent.to_string());
        self
    }

    pub(super) fn matches(&self, method: &Method, path: &str, agent: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && path.contains(&self.path_contains)
            && self.user_agent.as_deref().is_none_or(|a| agent.contains(a))
            && self.times != Some(0)
    }
}

/// Takes the first matching rule's action, counting it down.
pub(super) fn take_fault(
    rules: &mut Vec<FaultRule>,
    method: &Method,
    path: &str,
    agent: &str,
) -> Option<FaultAction> {
    let rule = rules
        .iter_mut()
        .find(|rule| rule.matches(method, path, agent))?;
    if rule.skip > 0 {
        rule.skip -= 1;
        return None;
    }
    if let Some(times) = &mut rule.times {
        *times -= 1;
    }
    let action = rule.action.clone();
    rules.retain(|rule| rule.times != Some(0));
    Some(action)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub access: Access,
    pub watch: bool,
    pub dry_run: bool,
    /// The status code the server answered (200 for a started watch).
    pub status: u16,
    /// The `Impersonate-User` header: whom the client wrote as.
    pub impersonate_user: Option<String>,
    /// The `User-Agent` header: which replica asked, when several run.
    pub user_agent: String,
}

impl LoggedRequest {
    /// A write that could change stored state: not a dry run.
    pub fn is_write(&self) -> bool {
        self.access == Access::Write && !self.dry_run
    }

    /// What the request was to, for counting writes: see [`write_target`].
    pub fn target(&self) -> String {
        write_target(self.method.as_str(), &self.path)
    }
}

/// What a write was to: `Namespace`, `Deployment`, `Stack status`, `Event`, ...
pub fn write_target(method: &str, path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match parts.first() {
        Some(&"api") => &parts[2..],
        _ => &parts[3.min(parts.len())..],
    };
    let (resource, status) = match rest {
        ["namespaces", name] => (format!("namespaces/{name}"), false),
        ["namespaces", _, resource, ..] => {
            (resource.to_string(), rest.len() == 5 && rest[4] == "status")
        }
        [resource, ..] => (resource.to_string(), false),
        [] => (String::from("?"), false),
    };
    let kind = match resource.as_str() {
        r if r.starts_with("namespaces/") => "Namespace",
        "configmaps" => "ConfigMap",
        "secrets" => "Secret",
        "services" => "Service",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "networkpolicies" => "NetworkPolicy",
        "stacks" => "Stack",
        "events" => "Event",
        "leases" => "Lease",
        other => other,
    };
    match (status, method) {
        (true, _) => format!("{kind} status"),
        (false, "DELETE") => format!("{kind} delete"),
        _ => kind.to_string(),
    }
}
