//! The server-rendered status page: no JavaScript, no CDN, works offline and
//! through `kubectl port-forward`. Every string from a repository is escaped.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::crd::StackPhase;
use crate::reason::Reason;
use crate::state::{RepositoryView, StackView};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Percent-encodes a path segment for links.
fn path_segment(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #ffffff; --head: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); margin: 0; padding: 1rem; max-width: 80rem; margin-inline: auto; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
p.meta { color: var(--muted); margin: 0 0 1rem; }
/* Positioned, so hidden labels inside stay in the scroll box and off the page's width. */
.table-wrap { overflow-x: auto; position: relative; }
.table-wrap:focus-visible, a:focus-visible, summary:focus-visible { outline: 2px solid #0550ae; outline-offset: 2px; }
h1 { overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-weight: 600; padding: .25rem 0; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--head); }
code, .sha { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .9em; }
.phase { display: inline-block; padding: 0 .5rem; border-radius: 1rem; font-weight: 600; font-size: .9em; }
.phase-Available { background: #dafbe1; color: #116329; }
.phase-Progressing { background: #ddf4ff; color: #0a3069; }
.phase-ReconciliationPending { background: #fff8c5; color: #6b4b00; }
.phase-Failure { background: #ffebe9; color: #a40e26; }
.error { color: #a40e26; white-space: pre-wrap; overflow-wrap: break-word; }
/* Long names and errors wrap inside their cells instead of squeezing their neighbours. */
td.error { min-width: 14rem; overflow-wrap: anywhere; }
/* Dates break between day and time, never inside either. */
time span { white-space: nowrap; }
.warn { color: #6b4b00; }
a { color: #0550ae; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); white-space: nowrap; }
@media (max-width: 40rem) { body { padding: .5rem; font-size: 15px; } th, td { padding: .3rem; } }
"#;

/// Seconds between automatic reloads of a page.
pub const REFRESH_SECONDS: u32 = 10;

/// Whether a page reloads itself. On by default, so a port-forwarded page stays
/// current; `?refresh=off` turns it off, which WCAG 2.2.1 asks to be possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    Auto,
    Off,
}

fn page(title: &str, body: &str, refresh: Refresh) -> String {
    let meta = match refresh {
        Refresh::Auto => format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n"),
        Refresh::Off => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         {meta}<title>{}</title>\n<style>{STYLE}</style>\n</head>\n\
         <body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        escape(title)
    )
}

/// The links that stop, resume or repeat the reload; `here` is the page's path.
fn refresh_control(refresh: Refresh, here: &str) -> String {
    match refresh {
        Refresh::Auto => format!(
            "reloads every {REFRESH_SECONDS} s · <a href=\"{here}?refresh=off\">stop auto-reload</a>"
        ),
        Refresh::Off => format!(
            "<a href=\"{here}?refresh=off\">reload</a> · <a href=\"{here}\">resume auto-reload</a>"
        ),
    }
}

fn time(value: Option<DateTime<Utc>>) -> String {
    match value {
        Some(t) => format!(
            "<time datetime=\"{}\"><span>{}</span> <span>{}</span></time>",
            t.to_rfc3339(),
            t.format("%Y-%m-%d"),
            t.format("%H:%M:%S UTC")
        ),
        None => "never".to_string(),
    }
}

fn short_sha(sha: Option<&str>) -> String {
    match sha {
        Some(s) => format!(
            "<span class=\"sha\" title=\"{}\">{}</span>",
            escape(s),
            escape(&s[..s.len().min(8)])
        ),
        None => "—".to_string(),
    }
}

fn phase_badge(phase: StackPhase) -> String {
    let name = format!("{phase:?}");
    format!("<span class=\"phase phase-{name}\">{name}</span>")
}

/// The phase, and the Ready reason when it says more than the phase: a
/// failure's stage (`LoadFailed`, `ApplyFailed`, ...) or `Suspended`, the same
/// word `kubectl get stack` shows.
fn phase_and_reason(stack: &StackView) -> String {
    match stack.reason {
        Some(reason) if reason.is_failure() || reason == Reason::Suspended => format!(
            "{} <span class=\"reason\">{}</span>",
            phase_badge(stack.phase),
            reason.as_str()
        ),
        _ => phase_badge(stack.phase),
    }
}

fn optional(text: Option<&str>) -> String {
    text.map(escape).unwrap_or_else(|| "—".to_string())
}

/// The overview: repositories and stacks.
pub fn overview(
    repositories: &[RepositoryView],
    stacks: &[StackView],
    now: DateTime<Utc>,
    refresh: Refresh,
    config_error: Option<&str>,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>stackd</h1>\n<p class=\"meta\">{} repositories, {} stacks · updated {} · {}</p>\n",
        repositories.len(),
        stacks.len(),
        time(Some(now)),
        refresh_control(refresh, "/")
    );
    if let Some(error) = config_error {
        let _ = write!(
            body,
            "<section aria-labelledby=\"config-error\"><h2 id=\"config-error\">Configuration not reloaded</h2>\n\
             <p>The previous configuration stays in force. The new one was refused:</p>\n<pre class=\"error\">{}</pre></section>\n",
            escape(error)
        );
    }
    body.push_str(
        "<h2 id=\"repositories\">Repositories</h2>\n<div class=\"table-wrap\" role=\"region\" aria-labelledby=\"repositories\" tabindex=\"0\"><table aria-labelledby=\"repositories\">\n\
         <thead><tr><th scope=\"col\">Name</th><th scope=\"col\">URL</th><th scope=\"col\">Ref</th><th scope=\"col\">Commit</th>\
         <th scope=\"col\">Last poll</th><th scope=\"col\">Result</th><th scope=\"col\">Next poll</th></tr></thead>\n<tbody>\n",
    );
    if repositories.is_empty() {
        body.push_str("<tr><td colspan=\"7\">No repositories configured.</td></tr>\n");
    }
    for repo in repositories {
        // One dash for "not fetched yet", not one per missing part.
        let commit = match (repo.commit.as_deref(), repo.subject.as_deref()) {
            (None, None) => "—".to_string(),
            (sha, subject) => format!("{} {}", short_sha(sha), optional(subject)),
        };
        let result = match (&repo.last_result, &repo.last_error) {
            (_, Some(error)) => format!("<span class=\"error\">{}</span>", escape(error)),
            (Some(result), None) => escape(result),
            (None, None) => "—".to_string(),
        };
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&repo.name),
            escape(&repo.url),
            escape(&repo.git_ref),
            commit,
            time(repo.last_poll),
            result,
            time(repo.next_poll),
        );
    }
    body.push_str("</tbody></table></div>\n");

    body.push_str(
        "<h2 id=\"stacks\">Stacks</h2>\n<div class=\"table-wrap\" role=\"region\" aria-labelledby=\"stacks\" tabindex=\"0\"><table aria-labelledby=\"stacks\">\n\
         <thead><tr><th scope=\"col\">Stack</th><th scope=\"col\">Path</th><th scope=\"col\">Revision</th><th scope=\"col\">Phase</th>\
         <th scope=\"col\">Ready</th><th scope=\"col\">Warnings</th><th scope=\"col\">Last error</th><th scope=\"col\">Last sync</th></tr></thead>\n<tbody>\n",
    );
    if stacks.is_empty() {
        body.push_str("<tr><td colspan=\"8\">No stacks yet.</td></tr>\n");
    }
    for stack in stacks {
        let warnings = if stack.warnings.is_empty() {
            "0".to_string()
        } else {
            let items: String = stack
                .warnings
                .iter()
                .map(|w| format!("<li>{}</li>", escape(w)))
                .collect();
            format!(
                "<details><summary class=\"warn\">{}<span class=\"visually-hidden\"> {}</span></summary><ul>{items}</ul></details>",
                stack.warnings.len(),
                if stack.warnings.len() == 1 {
                    "warning"
                } else {
                    "warnings"
                }
            )
        };
        let _ = writeln!(
            body,
            "<tr><td><a href=\"/stacks/{}/{}\">{}/{}</a></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td class=\"error\">{}</td><td>{}</td></tr>",
            path_segment(&stack.namespace),
            path_segment(&stack.name),
            escape(&stack.namespace),
            escape(&stack.name),
            optional(stack.path.as_deref()),
            short_sha(stack.revision.as_deref()),
            phase_and_reason(stack),
            stack.services_ready,
            stack.services_total,
            warnings,
            stack.last_error.as_deref().map(escape).unwrap_or_default(),
            time(stack.last_sync),
        );
    }
    body.push_str("</tbody></table></div>\n");
    page("stackd", &body, refresh)
}

/// One stack: services, objects, and the last plan.
pub fn stack_detail(stack: &StackView, refresh: Refresh) -> String {
    let mut body = String::new();
    let title = format!("{}/{}", stack.namespace, stack.name);
    let here = format!(
        "/stacks/{}/{}",
        path_segment(&stack.namespace),
        path_segment(&stack.name)
    );
    let _ = write!(
        body,
        "<p><a href=\"/\">← all stacks</a></p>\n<h1>{}</h1>\n<p class=\"meta\">{} · revision {} · {} services ready of {} · last sync {} · {}</p>\n",
        escape(&title),
        phase_and_reason(stack),
        short_sha(stack.revision.as_deref()),
        stack.services_ready,
        stack.services_total,
        time(stack.last_sync),
        refresh_control(refresh, &here),
    );
    if let Some(attempted) = stack
        .last_attempted_revision
        .as_deref()
        .filter(|a| Some(*a) != stack.revision.as_deref())
    {
        let _ = writeln!(
            body,
            "<p>Last attempted revision: {}</p>",
            short_sha(Some(attempted))
        );
    }
    if let Some(message) = &stack.message {
        let _ = writeln!(body, "<p>{}</p>", escape(message));
    }
    if let Some(error) = &stack.last_error {
        let _ = writeln!(
            body,
            "<h2 id=\"error\">Last error</h2>\n<pre class=\"error\">{}</pre>",
            escape(error)
        );
    }
    body.push_str(
        "<h2 id=\"services\">Services</h2>\n<div class=\"table-wrap\" role=\"region\" aria-labelledby=\"services\" tabindex=\"0\"><table aria-labelledby=\"services\">\n\
         <thead><tr><th scope=\"col\">Service</th><th scope=\"col\">Kind</th><th scope=\"col\">Desired</th><th scope=\"col\">Ready</th><th scope=\"col\">Updated</th></tr></thead>\n<tbody>\n",
    );
    // A header row alone reads as a broken table to screen readers.
    if stack.services.is_empty() {
        body.push_str("<tr><td colspan=\"5\">No services yet.</td></tr>\n");
    }
    for service in &stack.services {
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&service.name),
            escape(&service.kind),
            service.desired,
            service.ready,
            service.updated
        );
    }
    body.push_str("</tbody></table></div>\n");
    body.push_str(
        "<h2 id=\"objects\">Objects</h2>\n<div class=\"table-wrap\" role=\"region\" aria-labelledby=\"objects\" tabindex=\"0\"><table aria-labelledby=\"objects\">\n\
         <thead><tr><th scope=\"col\">Kind</th><th scope=\"col\">Name</th><th scope=\"col\">Namespace</th></tr></thead>\n<tbody>\n",
    );
    if stack.objects.is_empty() {
        body.push_str("<tr><td colspan=\"3\">No objects applied yet.</td></tr>\n");
    }
    for object in &stack.objects {
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&object.kind),
            escape(&object.name),
            optional(object.namespace.as_deref())
        );
    }
    body.push_str("</tbody></table></div>\n");
    body.push_str("<h2 id=\"plan\">Last plan</h2>\n");
    match &stack.last_plan {
        None => body.push_str("<p>No plan yet.</p>\n"),
        Some(plan) => {
            let list = |items: &[String]| -> String {
                if items.is_empty() {
                    "none".to_string()
                } else {
                    items
                        .iter()
                        .map(|i| format!("<code>{}</code>", escape(i)))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            // Only when something was kept: "Kept: none" on every stack is noise.
            let kept = match plan.kept.is_empty() {
                true => String::new(),
                false => format!("<dt>Kept (not pruned)</dt><dd>{}</dd>", list(&plan.kept)),
            };
            let _ = write!(
                body,
                "<dl><dt>Created</dt><dd>{}</dd><dt>Updated</dt><dd>{}</dd><dt>Pruned</dt><dd>{}</dd>{kept}<dt>Unchanged</dt><dd>{}</dd></dl>\n{}",
                list(&plan.created),
                list(&plan.updated),
                list(&plan.pruned),
                plan.unchanged,
                if plan.dry_run {
                    "<p>Dry run: nothing was written.</p>\n"
                } else {
                    ""
                }
            );
        }
    }
    if !stack.warnings.is_empty() {
        body.push_str("<h2 id=\"warnings\">Warnings</h2>\n<ul>\n");
        for warning in &stack.warnings {
            let _ = writeln!(body, "<li class=\"warn\">{}</li>", escape(warning));
        }
        body.push_str("</ul>\n");
    }
    page(&title, &body, refresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_hostile_text() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(path_segment("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn a_refused_configuration_is_shown_escaped() {
        let html = overview(
            &[],
            &[],
            Utc::now(),
            Refresh::Off,
            Some("config.yaml: repositories[0].url: <bad>"),
        );
        assert!(
            html.contains("<h2 id=\"config-error\">Configuration not reloaded</h2>"),
            "{html}"
        );
        assert!(html.contains("repositories[0].url: &lt;bad&gt;"), "{html}");
        assert!(!overview(&[], &[], Utc::now(), Refresh::Off, None).contains("config-error"));
    }

    #[test]
    fn overview_lists_stacks_and_escapes_names() {
        let stack = StackView {
            namespace: "shop".into(),
            name: "<script>x</script>".into(),
            phase: StackPhase::Failure,
            services_ready: 1,
            services_total: 2,
            last_error: Some("boom <b>".into()),
            ..StackView::default()
        };
        let html = overview(&[], &[stack], Utc::now(), Refresh::Auto, None);
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("<span class=\"phase phase-Failure\">Failure</span>"));
        assert!(html.contains("<td>1/2</td>"));
        assert!(html.contains("boom &lt;b&gt;"));
    }

    #[test]
    fn pages_reload_unless_turned_off_and_scroll_regions_take_focus() {
        let stack = StackView {
            namespace: "shop".into(),
            name: "web".into(),
            ..StackView::default()
        };
        let repository = RepositoryView {
            name: "apps".into(),
            ..RepositoryView::default()
        };
        // WCAG 2.2.1: a timed reload must be possible to turn off.
        for html in [
            overview(
                std::slice::from_ref(&repository),
                std::slice::from_ref(&stack),
                Utc::now(),
                Refresh::Auto,
                None,
            ),
            stack_detail(&stack, Refresh::Auto),
        ] {
            assert!(
                html.contains("<meta http-equiv=\"refresh\" content=\"10\">"),
                "{html}"
            );
            assert!(
                html.contains("?refresh=off\">stop auto-reload</a>"),
                "{html}"
            );
        }
        for html in [
            overview(
                &[repository],
                std::slice::from_ref(&stack),
                Utc::now(),
                Refresh::Off,
                None,
            ),
            stack_detail(&stack, Refresh::Off),
        ] {
            assert!(!html.contains("http-equiv=\"refresh\""), "{html}");
            assert!(html.contains("\">resume auto-reload</a>"), "{html}");
            let wraps = html.matches("<div class=\"table-wrap\"").count();
            let focusable = html
                .matches("<div class=\"table-wrap\" role=\"region\" aria-labelledby=")
                .count();
            assert!(wraps >= 2, "{html}");
            assert_eq!(wraps, html.matches("tabindex=\"0\"").count(), "{html}");
            assert_eq!(wraps, focusable, "{html}");
        }
    }

    #[test]
    fn a_repository_never_fetched_shows_one_dash_for_its_commit() {
        let repository = RepositoryView {
            name: "apps".into(),
            ..RepositoryView::default()
        };
        let html = overview(&[repository], &[], Utc::now(), Refresh::Auto, None);
        assert!(html.contains("<td>—</td><td>never</td>"), "{html}");
    }

    #[test]
    fn the_plan_lists_kept_objects_only_when_there_are_some() {
        let mut stack = StackView {
            namespace: "shop".into(),
            name: "web".into(),
            last_plan: Some(crate::state::PlanSummary {
                kept: vec!["Deployment/db".into()],
                ..Default::default()
            }),
            ..StackView::default()
        };
        let html = stack_detail(&stack, Refresh::Off);
        assert!(
            html.contains("<dt>Kept (not pruned)</dt><dd><code>Deployment/db</code></dd>"),
            "{html}"
        );
        stack.last_plan = Some(Default::default());
        assert!(!stack_detail(&stack, Refresh::Off).contains("Kept"));
    }
}
