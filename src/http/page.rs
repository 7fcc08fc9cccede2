//! The server-rendered status page: no JavaScript, no CDN, works offline and
//! through `kubectl port-forward`. Every string from a repository is escaped.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::crd::{HistoryOutcome, StackPhase};
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
/* Long names, URLs and paths break anywhere rather than widen the page; short
   values and headers never break, so that the table gives them their width. */
th, td, code, pre, dd, li, p { overflow-wrap: anywhere; }
th, .sha, .phase, time, td[data-label="Ready"], td[data-label="Warnings"] { white-space: nowrap; overflow-wrap: normal; }
td[data-label="Stack"], td[data-label="Subject"] { min-width: 8rem; }
td[data-label="Last error"] { width: 30%; }
.counts { display: flex; flex-wrap: wrap; gap: .5rem; padding: 0; margin: .5rem 0; list-style: none; }
.counts a { display: inline-block; padding: .1rem .6rem; border: 1px solid var(--line); border-radius: 1rem; text-decoration: none; }
.counts a[aria-current] { border-color: #0550ae; font-weight: 600; }
form.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; margin: .5rem 0 1rem; }
form.filters label { display: flex; flex-direction: column; font-size: .9em; }
input, select, button { font: inherit; max-width: 100%; }
nav.pages { display: flex; flex-wrap: wrap; gap: 1rem; margin: .5rem 0; }
.muted { color: var(--muted); }
pre.diff { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--head); padding: .5rem; border: 1px solid var(--line); }
.del { color: #a40e26; } .ins { color: #116329; } .hunk { color: #57606a; }
h3 { font-size: 1rem; margin: 1rem 0 .25rem; }
figure { margin: 0; }
@media (max-width: 40rem) {
  body { padding: .5rem; font-size: 15px; } th, td { padding: .3rem; }
  /* On a phone each row is a card: one cell a line, labelled by its column. */
  table.cards thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); }
  table.cards th { white-space: normal; overflow-wrap: anywhere; }
  table.cards, table.cards tbody, table.cards tr, table.cards td { display: block; width: 100%; }
  table.cards tr { border-bottom: 1px solid var(--line); padding: .3rem 0; }
  table.cards td { border: 0; padding: .1rem .3rem; }
  table.cards td[data-label]::before { content: attr(data-label) ": "; font-weight: 600; }
}
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
    let picture_style = super::picture::STYLE;
    let meta = match refresh {
        Refresh::Auto => format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n"),
        Refresh::Off => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         {meta}<title>{}</title>\n<style>{STYLE}{picture_style}</style>\n</head>\n\
         <body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        escape(title)
    )
}

/// The links that stop, resume or repeat the reload; `here` is the page's path,
/// with the view's own query (filters, page) if any.
fn refresh_control(refresh: Refresh, here: &str) -> String {
    let off = match here.contains('?') {
        true => format!("{here}&amp;refresh=off"),
        false => format!("{here}?refresh=off"),
    };
    match refresh {
        Refresh::Auto => {
            format!("reloads every {REFRESH_SECONDS} s · <a href=\"{off}\">stop auto-reload</a>")
        }
        Refresh::Off => {
            format!("<a href=\"{off}\">reload</a> · <a href=\"{here}\">resume auto-reload</a>")
        }
    }
}

/// "3 min ago" (or "in 2 min"), the full time in the `<time>` element's
/// `datetime` and tooltip: short enough for a table cell on a phone.
pub fn ago(value: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = value else {
        return "never".to_string();
    };
    let seconds = (now - t).num_seconds();
    let span = seconds.unsigned_abs();
    let amount = match span {
        0..5 => return time_element(t, "just now"),
        5..60 => format!("{span} s"),
        60..3600 => format!("{} min", span / 60),
        3600..86400 => format!("{} h", span / 3600),
        _ => format!("{} d", span / 86400),
    };
    let words = match seconds >= 0 {
        true => format!("{amount} ago"),
        false => format!("in {amount}"),
    };
    time_element(t, &words)
}

fn time_element(t: DateTime<Utc>, words: &str) -> String {
    format!(
        "<time datetime=\"{}\" title=\"{}\">{words}</time>",
        t.to_rfc3339(),
        t.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// Stacks per page of the overview.
pub const PAGE_SIZE: usize = 50;

/// The overview's view, from its query string (`?phase=Failure&repo=apps&q=shop&page=2`),
/// so that any view can be bookmarked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub phase: Option<StackPhase>,
    pub repo: Option<String>,
    /// Matches namespace, name or path, ignoring case.
    pub q: Option<String>,
    /// 1-based.
    pub page: usize,
}

pub const PHASES: [StackPhase; 4] = [
    StackPhase::Available,
    StackPhase::Progressing,
    StackPhase::ReconciliationPending,
    StackPhase::Failure,
];

pub fn parse_phase(text: &str) -> Option<StackPhase> {
    PHASES.into_iter().find(|p| format!("{p:?}") == text)
}

impl Filter {
    /// Everything but the phase: the phase counts are of these stacks.
    fn matches_search(&self, stack: &StackView) -> bool {
        let repo = self
            .repo
            .as_deref()
            .is_none_or(|r| stack.repository.as_deref() == Some(r));
        let q = self.q.as_deref().is_none_or(|q| {
            let q = q.to_lowercase();
            [
                Some(stack.namespace.as_str()),
                Some(stack.name.as_str()),
                stack.path.as_deref(),
            ]
            .into_iter()
            .flatten()
            .any(|field| field.to_lowercase().contains(&q))
                || format!("{}/{}", stack.namespace, stack.name)
                    .to_lowercase()
                    .contains(&q)
        });
        repo && q
    }

    pub fn matches(&self, stack: &StackView) -> bool {
        self.phase.is_none_or(|p| stack.phase == p) && self.matches_search(stack)
    }

    /// `/?phase=...&repo=...` for this view with another phase and page, keeping
    /// `refresh=off`; already escaped for an attribute.
    fn link(&self, phase: Option<StackPhase>, page: usize, refresh: Refresh) -> String {
        let mut parts = Vec::new();
        if let Some(phase) = phase {
            parts.push(format!("phase={phase:?}"));
        }
        if let Some(repo) = &self.repo {
            parts.push(format!("repo={}", path_segment(repo)));
        }
        if let Some(q) = &self.q {
            parts.push(format!("q={}", path_segment(q)));
        }
        if page > 1 {
            parts.push(format!("page={page}"));
        }
        if refresh == Refresh::Off {
            parts.push("refresh=off".to_string());
        }
        match parts.is_empty() {
            true => "/".to_string(),
            false => format!("/?{}", parts.join("&amp;")),
        }
    }
}

/// A table row whose cells carry their column's name (shown on a phone).
fn row(labels: &[&str], cells: &[String]) -> String {
    let mut out = String::from("<tr>");
    for (label, cell) in labels.iter().zip(cells) {
        let _ = write!(out, "<td data-label=\"{label}\">{cell}</td>");
    }
    out.push_str("</tr>\n");
    out
}

/// A table's opening, its column headers and `<tbody>`.
fn table_head(id: &str, labels: &[&str]) -> String {
    let headers: String = labels
        .iter()
        .map(|l| format!("<th scope=\"col\">{l}</th>"))
        .collect();
    format!(
        "<div class=\"table-wrap\" role=\"region\" aria-labelledby=\"{id}\" tabindex=\"0\"><table class=\"cards\" aria-labelledby=\"{id}\">\n<thead><tr>{headers}</tr></thead>\n<tbody>\n"
    )
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

/// Shortens a long error for the overview's cell; the stack page has it whole.
fn shorten(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}…", escape(&text[..cut])),
        None => escape(text),
    }
}

/// With `--shards`: the stack's shard and its holder, under its name.
fn shard_line(stack: &StackView) -> String {
    match stack.shard {
        Some(shard) => format!(
            "<br><span class=\"meta\">shard {shard} · {}</span>",
            escape(stack.replica.as_deref().unwrap_or("no holder"))
        ),
        None => String::new(),
    }
}

/// The overview: repositories, then the stacks of `filter`'s view, with counts by
/// phase (each a filter link), a search form and pages of [`PAGE_SIZE`].
pub fn overview(
    repositories: &[RepositoryView],
    stacks: &[StackView],
    now: DateTime<Utc>,
    refresh: Refresh,
    config_error: Option<&str>,
    filter: &Filter,
) -> String {
    let mut body = String::new();
    let here = filter.link(filter.phase, filter.page, Refresh::Auto);
    let _ = write!(
        body,
        "<h1>stackd</h1>\n<p class=\"meta\">{} repositories, {} stacks · updated {} · {}</p>\n",
        repositories.len(),
        stacks.len(),
        ago(Some(now), now),
        refresh_control(refresh, &here)
    );
    if let Some(error) = config_error {
        let _ = write!(
            body,
            "<section aria-labelledby=\"config-error\"><h2 id=\"config-error\">Configuration not reloaded</h2>\n\
             <p>The previous configuration stays in force. The new one was refused:</p>\n<pre class=\"error\">{}</pre></section>\n",
            escape(error)
        );
    }
    const REPOSITORY_COLUMNS: [&str; 6] =
        ["Name", "URL", "Commit", "Last poll", "Result", "Next poll"];
    body.push_str("<h2 id=\"repositories\">Repositories</h2>\n");
    body.push_str(&table_head("repositories", &REPOSITORY_COLUMNS));
    if repositories.is_empty() {
        body.push_str("<tr><td colspan=\"6\">No repositories configured.</td></tr>\n");
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
        body.push_str(&row(
            &REPOSITORY_COLUMNS,
            &[
                escape(&repo.name),
                format!(
                    "<code>{}</code> <span class=\"muted\">{}</span>",
                    escape(&repo.url),
                    escape(&repo.git_ref)
                ),
                commit,
                ago(repo.last_poll, now),
                result,
                ago(repo.next_poll, now),
            ],
        ));
    }
    body.push_str("</tbody></table></div>\n");

    // Counts by phase of the stacks the search matches, each a link that filters.
    let searched: Vec<&StackView> = stacks.iter().filter(|s| filter.matches_search(s)).collect();
    body.push_str(
        "<h2 id=\"stacks\">Stacks</h2>\n<ul class=\"counts\" aria-label=\"Stacks by phase\">",
    );
    let current = |on: bool| if on { " aria-current=\"page\"" } else { "" };
    let _ = write!(
        body,
        "<li><a href=\"{}\"{}>All {}</a></li>",
        filter.link(None, 1, refresh),
        current(filter.phase.is_none()),
        searched.len()
    );
    for phase in PHASES {
        let count = searched.iter().filter(|s| s.phase == phase).count();
        let _ = write!(
            body,
            "<li><a href=\"{}\"{}>{phase:?} {count}</a></li>",
            filter.link(Some(phase), 1, refresh),
            current(filter.phase == Some(phase)),
        );
    }
    body.push_str("</ul>\n");

    // The search form: a GET, so the result is a bookmarkable URL.
    let mut repo_names: Vec<&str> = repositories.iter().map(|r| r.name.as_str()).collect();
    repo_names.extend(stacks.iter().filter_map(|s| s.repository.as_deref()));
    repo_names.sort_unstable();
    repo_names.dedup();
    let selected = |on: bool| if on { " selected" } else { "" };
    let mut phase_options = format!(
        "<option value=\"\"{}>any</option>",
        selected(filter.phase.is_none())
    );
    for phase in PHASES {
        let _ = write!(
            phase_options,
            "<option{}>{phase:?}</option>",
            selected(filter.phase == Some(phase))
        );
    }
    let mut repo_options = format!(
        "<option value=\"\"{}>any</option>",
        selected(filter.repo.is_none())
    );
    for name in repo_names {
        let _ = write!(
            repo_options,
            "<option value=\"{0}\"{1}>{0}</option>",
            escape(name),
            selected(filter.repo.as_deref() == Some(name))
        );
    }
    let _ = writeln!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"/\" role=\"search\" aria-label=\"Filter stacks\">\
         <label>Phase <select name=\"phase\">{phase_options}</select></label>\
         <label>Repository <select name=\"repo\">{repo_options}</select></label>\
         <label>Search <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"name or path\"></label>{}\
         <button type=\"submit\">Filter</button></form>",
        escape(filter.q.as_deref().unwrap_or("")),
        match refresh {
            Refresh::Off => "<input type=\"hidden\" name=\"refresh\" value=\"off\">",
            Refresh::Auto => "",
        }
    );

    let shown: Vec<&StackView> = searched
        .into_iter()
        .filter(|s| filter.phase.is_none_or(|p| s.phase == p))
        .collect();
    let pages = shown.len().div_ceil(PAGE_SIZE).max(1);
    let page_number = filter.page.clamp(1, pages);
    let first = (page_number - 1) * PAGE_SIZE;
    let on_page = &shown[first.min(shown.len())..(first + PAGE_SIZE).min(shown.len())];

    const STACK_COLUMNS: [&str; 8] = [
        "Stack",
        "Path",
        "Revision",
        "Phase",
        "Ready",
        "Warnings",
        "Last error",
        "Last sync",
    ];
    body.push_str(&table_head("stacks", &STACK_COLUMNS));
    if on_page.is_empty() {
        body.push_str(if stacks.is_empty() {
            "<tr><td colspan=\"8\">No stacks yet.</td></tr>\n"
        } else {
            "<tr><td colspan=\"8\">No stack matches this filter.</td></tr>\n"
        });
    }
    for stack in on_page {
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
        let error = stack
            .last_error
            .as_deref()
            .map(|e| format!("<span class=\"error\">{}</span>", shorten(e, 160)))
            .unwrap_or_default();
        body.push_str(&row(
            &STACK_COLUMNS,
            &[
                format!(
                    "<a href=\"/stacks/{}/{}\">{}/{}</a>{}",
                    path_segment(&stack.namespace),
                    path_segment(&stack.name),
                    escape(&stack.namespace),
                    escape(&stack.name),
                    shard_line(stack),
                ),
                format!("<code>{}</code>", optional(stack.path.as_deref())),
                short_sha(stack.revision.as_deref()),
                phase_and_reason(stack),
                format!("{}/{}", stack.services_ready, stack.services_total),
                warnings,
                error,
                ago(stack.last_sync, now),
            ],
        ));
    }
    body.push_str("</tbody></table></div>\n");
    let mut nav = String::new();
    if page_number > 1 {
        let _ = write!(
            nav,
            "<a href=\"{}\" rel=\"prev\">← previous</a>",
            filter.link(filter.phase, page_number - 1, refresh)
        );
    }
    let _ = write!(
        nav,
        "<span>page {page_number} of {pages} · stacks {}–{} of {}</span>",
        if on_page.is_empty() { 0 } else { first + 1 },
        first + on_page.len(),
        shown.len()
    );
    if page_number < pages {
        let _ = write!(
            nav,
            "<a href=\"{}\" rel=\"next\">next →</a>",
            filter.link(filter.phase, page_number + 1, refresh)
        );
    }
    let _ = writeln!(
        body,
        "<nav class=\"pages\" aria-label=\"Pages of stacks\">{nav}</nav>"
    );
    page("stackd", &body, refresh)
}

/// `status.history`, newest first.
fn history_table(stack: &StackView, now: DateTime<Utc>) -> String {
    const COLUMNS: [&str; 8] = [
        "Revision",
        "Subject",
        "When",
        "Outcome",
        "Ready after",
        "Created",
        "Updated",
        "Pruned",
    ];
    let mut out = String::from("<h2 id=\"history\">History</h2>\n");
    out.push_str(&table_head("history", &COLUMNS));
    if stack.history.is_empty() {
        out.push_str("<tr><td colspan=\"8\">No revision applied yet.</td></tr>\n");
    }
    for entry in stack.history.iter().rev() {
        let reason = entry
            .reason
            .as_deref()
            .map(|r| format!(" <span class=\"reason\">{}</span>", escape(r)))
            .unwrap_or_default();
        let outcome = match entry.outcome {
            HistoryOutcome::Applied => "applied".to_string(),
            HistoryOutcome::Failed => format!("<span class=\"error\">failed</span>{reason}"),
            HistoryOutcome::RolledBack => format!("rolled back{reason}"),
            HistoryOutcome::Held => format!("held{reason}"),
        };
        let when = chrono::DateTime::from_timestamp(entry.attempted_at.0.as_second(), 0);
        let ready = match entry.seconds_to_ready {
            Some(s) if s < 120 => format!("{s} s"),
            Some(s) => format!("{} min {} s", s / 60, s % 60),
            None => "—".to_string(),
        };
        out.push_str(&row(
            &COLUMNS,
            &[
                short_sha(Some(&entry.revision)),
                optional(entry.subject.as_deref()),
                ago(when, now),
                outcome,
                ready,
                entry.created.to_string(),
                entry.updated.to_string(),
                entry.pruned.to_string(),
            ],
        ));
    }
    out.push_str("</tbody></table></div>\n");
    out
}

/// The last Events of the stack and of its objects, newest first.
fn events_table(stack: &StackView, now: DateTime<Utc>) -> String {
    const COLUMNS: [&str; 5] = ["When", "Object", "Type", "Reason", "Message"];
    let mut out = String::from("<h2 id=\"events\">Events</h2>\n");
    out.push_str(&table_head("events", &COLUMNS));
    if stack.events.is_empty() {
        out.push_str("<tr><td colspan=\"5\">No Events since stackd started.</td></tr>\n");
    }
    for event in stack.events.iter().rev() {
        let kind = match event.kind.as_str() {
            "Warning" => "<span class=\"warn\">Warning</span>".to_string(),
            other => escape(other),
        };
        out.push_str(&row(
            &COLUMNS,
            &[
                ago(Some(event.time), now),
                escape(event.object.as_deref().unwrap_or("Stack")),
                kind,
                escape(&event.reason),
                escape(&event.note),
            ],
        ));
    }
    out.push_str("</tbody></table></div>\n");
    out
}

/// The changed fields of each object the last apply updated, old → new.
fn field_diffs(stack: &StackView) -> String {
    let Some(plan) = stack.last_plan.as_ref().filter(|p| !p.diffs.is_empty()) else {
        return String::new();
    };
    let mut out = String::from(
        "<h2 id=\"diffs\">Changed fields in the last apply</h2>\n<p class=\"meta\">Fields stackd manages, live value before the apply (−) and the value applied (+); a Secret shows only that it changed.</p>\n",
    );
    for diff in &plan.diffs {
        let _ = write!(
            out,
            "<h3><code>{}</code></h3>\n<pre class=\"diff\">",
            escape(&diff.object)
        );
        for change in &diff.changes {
            let _ = write!(
                out,
                "<span class=\"hunk\">@@ {} @@</span>\n<span class=\"del\">- {}</span>\n<span class=\"ins\">+ {}</span>\n",
                escape(&change.path),
                escape(&crate::field_diff::show(change.old.as_ref())),
                escape(&crate::field_diff::show(change.new.as_ref())),
            );
        }
        out.push_str("</pre>\n");
    }
    out
}

/// One stack: services, objects, and the last plan.
pub fn stack_detail(stack: &StackView, refresh: Refresh, now: DateTime<Utc>) -> String {
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
    if let Some(shard) = stack.shard {
        let _ = writeln!(
            body,
            "<p>Shard {shard}, held by {}.</p>",
            escape(stack.replica.as_deref().unwrap_or("no replica right now"))
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
    let picture = super::picture::svg(&stack.shapes, &stack.services);
    if !picture.is_empty() {
        let _ = write!(
            body,
            "<h2 id=\"picture\">Picture</h2>\n<figure class=\"picture-wrap\">{picture}<figcaption class=\"meta\">Each box a service: kind, ready/desired, health in words; arrows from a dependency to the service that <code>depends_on</code> it; <code>port</code> and <code>vol</code> marks for published ports and volumes.</figcaption></figure>\n"
        );
    }
    body.push_str(&history_table(stack, now));
    body.push_str(&field_diffs(stack));
    body.push_str(&events_table(stack, now));
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
            &Filter::default(),
        );
        assert!(
            html.contains("<h2 id=\"config-error\">Configuration not reloaded</h2>"),
            "{html}"
        );
        assert!(html.contains("repositories[0].url: &lt;bad&gt;"), "{html}");
        assert!(
            !overview(&[], &[], Utc::now(), Refresh::Off, None, &Filter::default())
                .contains("config-error")
        );
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
        let html = overview(
            &[],
            &[stack],
            Utc::now(),
            Refresh::Auto,
            None,
            &Filter::default(),
        );
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("<span class=\"phase phase-Failure\">Failure</span>"));
        assert!(html.contains("<td data-label=\"Ready\">1/2</td>"));
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
                &Filter::default(),
            ),
            stack_detail(&stack, Refresh::Auto, Utc::now()),
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
                &Filter::default(),
            ),
            stack_detail(&stack, Refresh::Off, Utc::now()),
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
        let html = overview(
            &[repository],
            &[],
            Utc::now(),
            Refresh::Auto,
            None,
            &Filter::default(),
        );
        assert!(
            html.contains(
                "<td data-label=\"Commit\">—</td><td data-label=\"Last poll\">never</td>"
            ),
            "{html}"
        );
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
        let html = stack_detail(&stack, Refresh::Off, Utc::now());
        assert!(
            html.contains("<dt>Kept (not pruned)</dt><dd><code>Deployment/db</code></dd>"),
            "{html}"
        );
        stack.last_plan = Some(Default::default());
        assert!(!stack_detail(&stack, Refresh::Off, Utc::now()).contains("Kept"));
    }

    fn many(count: usize) -> Vec<StackView> {
        (0..count)
            .map(|i| StackView {
                namespace: format!("ns{i:04}"),
                name: if i % 2 == 0 {
                    format!("shop-{i}")
                } else {
                    format!("blog-{i}")
                },
                repository: Some(if i % 3 == 0 { "apps" } else { "infra" }.into()),
                phase: if i % 10 == 0 {
                    StackPhase::Failure
                } else {
                    StackPhase::Available
                },
                ..StackView::default()
            })
            .collect()
    }

    #[test]
    fn the_overview_counts_phases_filters_searches_and_pages() {
        let stacks = many(1000);
        let now = Utc::now();
        let all = overview(&[], &stacks, now, Refresh::Off, None, &Filter::default());
        assert!(
            all.contains("<a href=\"/?refresh=off\" aria-current=\"page\">All 1000</a>"),
            "{all}"
        );
        assert!(
            all.contains("<a href=\"/?phase=Failure&amp;refresh=off\">Failure 100</a>"),
            "{all}"
        );
        assert!(all.contains(">Available 900</a>"), "{all}");
        assert_eq!(all.matches("<a href=\"/stacks/").count(), PAGE_SIZE);
        assert!(all.contains("page 1 of 20 · stacks 1–50 of 1000"), "{all}");
        assert!(
            all.contains("<a href=\"/?page=2&amp;refresh=off\" rel=\"next\">"),
            "{all}"
        );
        assert!(!all.contains("rel=\"prev\""));

        let filter = Filter {
            phase: Some(StackPhase::Failure),
            repo: Some("apps".into()),
            q: Some("SHOP".into()),
            page: 1,
        };
        let html = overview(&[], &stacks, now, Refresh::Auto, None, &filter);
        // Multiples of 30 below 1000: even, a multiple of 3 and of 10.
        assert_eq!(html.matches("<a href=\"/stacks/").count(), 34, "{html}");
        assert!(html.contains("/stacks/ns0030/shop-30"), "{html}");
        assert!(!html.contains("blog-"), "{html}");
        // Counts follow the search, the phase links keep it.
        assert!(
            html.contains("<a href=\"/?repo=apps&amp;q=SHOP\">All 167</a>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"/?phase=Failure&amp;repo=apps&amp;q=SHOP\" aria-current=\"page\">Failure 34</a>"), "{html}");
        assert!(html.contains("<option selected>Failure</option>"), "{html}");
        assert!(
            html.contains("<option value=\"apps\" selected>apps</option>"),
            "{html}"
        );
        assert!(html.contains("name=\"q\" value=\"SHOP\""), "{html}");
        assert!(
            html.contains(
                "href=\"/?phase=Failure&amp;repo=apps&amp;q=SHOP&amp;refresh=off\">stop auto-reload"
            ),
            "{html}"
        );

        let last = Filter {
            page: 99,
            ..Filter::default()
        };
        let html = overview(&[], &stacks, now, Refresh::Auto, None, &last);
        assert!(
            html.contains("page 20 of 20 · stacks 951–1000 of 1000"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"/?page=19\" rel=\"prev\">"),
            "{html}"
        );
        let none = Filter {
            q: Some("nothing-like-this".into()),
            ..Filter::default()
        };
        let html = overview(&[], &stacks, now, Refresh::Auto, None, &none);
        assert!(html.contains("No stack matches this filter."), "{html}");
    }

    #[test]
    fn times_read_as_ago_with_the_full_time_kept() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .to_utc();
        let at = |s: i64| Some(now - chrono::Duration::seconds(s));
        assert_eq!(
            ago(at(180), now),
            "<time datetime=\"2026-12-04T11:57:00+00:00\" title=\"2026-12-04 11:57:00 UTC\">3 min ago</time>"
        );
        assert!(ago(at(2), now).contains(">just now<"));
        assert!(ago(at(7200), now).contains(">2 h ago<"));
        assert!(ago(at(-120), now).contains(">in 2 min<"));
        assert!(ago(at(3 * 86400), now).contains(">3 d ago<"));
        assert_eq!(ago(None, now), "never");
    }

    #[test]
    fn long_errors_are_shortened_on_the_overview() {
        assert_eq!(shorten("a<b", 10), "a&lt;b");
        assert_eq!(shorten("éééé", 2), "éé…");
    }

    #[test]
    fn the_stack_page_shows_history_and_field_diffs_with_secrets_redacted() {
        use crate::crd::HistoryEntry;
        use crate::field_diff::changes;
        use crate::state::{ObjectDiff, PlanSummary};
        use serde_json::json;
        let now = Utc::now();
        let at = |seconds: i64| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(now.timestamp() - seconds).unwrap(),
            )
        };
        let entry = |revision: &str, outcome, reason: Option<&str>, ready| HistoryEntry {
            revision: revision.into(),
            subject: Some(format!("<b>{revision}</b>")),
            attempted_at: at(600),
            outcome,
            reason: reason.map(str::to_string),
            seconds_to_ready: ready,
            created: 2,
            updated: 1,
            pruned: 0,
        };
        let secret = |value: &str| json!({"kind": "Secret", "data": {"PASSWORD": value}});
        let stack = StackView {
            namespace: "shop".into(),
            name: "web".into(),
            history: vec![
                entry("1111111111aaaa", HistoryOutcome::Applied, None, Some(42)),
                entry(
                    "2222222222bbbb",
                    HistoryOutcome::Failed,
                    Some("RenderFailed"),
                    None,
                ),
            ],
            last_plan: Some(PlanSummary {
                diffs: vec![
                    ObjectDiff {
                        object: "Deployment/<web>".into(),
                        changes: changes(
                            &json!({"spec": {"replicas": 3}}),
                            &json!({"spec": {"replicas": 1}}),
                        ),
                    },
                    ObjectDiff {
                        object: "Secret/db".into(),
                        changes: changes(&secret("bmV3"), &secret("b2xk")),
                    },
                ],
                ..PlanSummary::default()
            }),
            ..StackView::default()
        };
        let html = stack_detail(&stack, Refresh::Off, now);
        // Newest first.
        let newest = html.find(">22222222<").unwrap();
        assert!(newest < html.find(">11111111<").unwrap(), "{html}");
        assert!(html.contains("<td data-label=\"Outcome\"><span class=\"error\">failed</span> <span class=\"reason\">RenderFailed</span></td>"), "{html}");
        assert!(
            html.contains("<td data-label=\"Ready after\">42 s</td>"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;1111111111aaaa&lt;/b&gt;"), "{html}");
        assert!(html.contains(">10 min ago</time>"), "{html}");
        assert!(
            html.contains("<h3><code>Deployment/&lt;web&gt;</code></h3>"),
            "{html}"
        );
        assert!(html.contains("@@ /spec/replicas @@</span>\n<span class=\"del\">- 1</span>\n<span class=\"ins\">+ 3</span>"), "{html}");
        assert!(
            html.contains("@@ /data/PASSWORD @@</span>\n<span class=\"del\">- (changed)</span>"),
            "{html}"
        );
        assert!(!html.contains("bmV3") && !html.contains("b2xk"), "{html}");
    }
}
