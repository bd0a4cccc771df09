//! The dashboard's pages, rendered from what storage and the registry hold.
//!
//! Each function takes the data it shows and returns HTML: the effects
//! (storage queries) are in `lib.rs`. Counts a person reads are also in
//! `data-*` attributes, so the browser tests assert what is on screen.

use std::fmt::Write;

use secflow_core::record::RunRecord;
use secflow_runner::provenance::Provenance;
use secflow_runner::registry::PluginEntry;
use secflow_store::{AuditEvent, PluginState, StoredFinding, MAX_SEARCH_TEXT};
use serde_json::Value;

use crate::chart::{self, Day};
use crate::html::{esc, select, table, url_component};

/// Severities from the most severe, as the filter offers them.
pub const SEVERITIES: [&str; 6] = ["critical", "high", "medium", "low", "info", "unknown"];

fn text<'a>(finding: &'a Value, key: &str) -> &'a str {
    finding.get(key).and_then(Value::as_str).unwrap_or("")
}

fn severity_badge(severity: &str) -> String {
    format!(
        "<span class=\"sev sev-{0}\">{0}</span>",
        esc(if SEVERITIES.contains(&severity) {
            severity
        } else {
            "unknown"
        })
    )
}

/// The scan hosts that saw a finding, comma-separated.
fn hosts(finding: &Value) -> String {
    finding
        .get("hosts")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The CVEs of a finding, with KEV marked.
fn cves(finding: &Value) -> String {
    finding
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let cve = v.get("cve").and_then(Value::as_str)?;
            let kev = if v.get("kev").is_some_and(Value::is_object) {
                " <span class=\"kev\">KEV</span>"
            } else {
                ""
            };
            Some(format!("{}{kev}", esc(cve)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Filters of the findings page, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilters {
    pub severity: Option<String>,
    pub plugin: Option<String>,
    pub run: Option<String>,
    /// Findings seen by this scan host (`[host] name`).
    pub host: Option<String>,
    /// Findings whose target contains this.
    pub target: Option<String>,
    /// Findings whose title or rule id contains this.
    pub text: Option<String>,
}

impl FindingFilters {
    fn query(&self) -> String {
        let mut q = String::new();
        for (k, v) in [
            ("severity", &self.severity),
            ("plugin", &self.plugin),
            ("run", &self.run),
            ("host", &self.host),
            ("target", &self.target),
            ("text", &self.text),
        ] {
            if let Some(v) = v {
                let _ = write!(q, "&{k}={}", url_component(v));
            }
        }
        q
    }
}

/// Where a findings page leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// The page is full: the next one starts after this id.
    Next(i64),
    /// A search read ids `from..=to` without filling the page; it goes on
    /// after `to`.
    SearchedTo { from: i64, to: i64 },
    /// Nothing further.
    End,
}

pub fn findings(
    findings: &[StoredFinding],
    paging: Paging,
    filters: &FindingFilters,
    plugins: &[String],
) -> String {
    let mut out = String::from("<form method=\"get\" action=\"/findings\" class=\"filters\">");
    let severities: Vec<String> = SEVERITIES.iter().map(|s| (*s).to_owned()).collect();
    out.push_str(&select(
        "severity",
        "At least",
        &severities,
        filters.severity.as_deref(),
    ));
    out.push_str(&select(
        "plugin",
        "Plugin",
        plugins,
        filters.plugin.as_deref(),
    ));
    let _ = write!(
        out,
        "<label>Host <input type=\"text\" name=\"host\" id=\"filter-host\" size=\"16\" maxlength=\"253\" value=\"{}\"></label>",
        esc(filters.host.as_deref().unwrap_or(""))
    );
    let _ = write!(
        out,
        "<label>Target <input type=\"search\" name=\"target\" id=\"filter-target\" size=\"24\" maxlength=\"{MAX_SEARCH_TEXT}\" value=\"{}\"></label>",
        esc(filters.target.as_deref().unwrap_or(""))
    );
    let _ = write!(
        out,
        "<label>Text <input type=\"search\" name=\"text\" id=\"filter-text\" size=\"24\" maxlength=\"{MAX_SEARCH_TEXT}\" placeholder=\"title or rule\" value=\"{}\"></label>",
        esc(filters.text.as_deref().unwrap_or(""))
    );
    if let Some(run) = &filters.run {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"run\" value=\"{}\"><span class=\"chip\">run {}</span>",
            esc(run),
            esc(run)
        );
    }
    out.push_str("<button type=\"submit\" id=\"apply-filters\">Filter</button></form>");
    let _ = write!(
        out,
        "<p class=\"count\" id=\"finding-count\" data-count=\"{0}\">{0} finding{1} on this page</p>",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    );
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|f| {
            let doc = &f.finding;
            vec![
                severity_badge(text(doc, "severity")),
                format!(
                    "<a href=\"/findings/{}\">{}</a>",
                    f.id,
                    esc(text(doc, "title"))
                ),
                esc(text(doc, "rule_id")),
                esc(text(doc, "target")),
                cves(doc),
                esc(&f.plugin.name),
                esc(&hosts(doc)),
                f.occurrences.to_string(),
                esc(&f.last_seen),
            ]
        })
        .collect();
    out.push_str(&table(
        "findings",
        &[
            "Severity",
            "Title",
            "Rule",
            "Target",
            "CVEs",
            "Plugin",
            "Hosts",
            "Seen",
            "Last seen",
        ],
        &rows,
    ));
    match paging {
        Paging::Next(next) => {
            let _ = write!(
                out,
                "<p class=\"paging\"><a id=\"next-page\" href=\"/findings?after={next}{}\">Next page</a></p>",
                filters.query()
            );
        }
        Paging::SearchedTo { from, to } => {
            let _ = write!(
                out,
                "<p class=\"paging\" id=\"searched\" data-to=\"{to}\">Searched findings #{from} to #{to}. \
                 <a id=\"next-page\" href=\"/findings?after={to}{}\">Search further</a></p>",
                filters.query()
            );
        }
        Paging::End => {}
    }
    out
}

pub fn finding(f: &StoredFinding, provenance: Option<&Provenance>) -> String {
    let doc = &f.finding;
    let mut out = String::new();
    let _ = write!(
        out,
        "<dl class=\"facts\"><dt>Severity</dt><dd>{}</dd><dt>Rule</dt><dd>{}</dd>\
         <dt>Target</dt><dd>{}</dd><dt>Plugin</dt><dd>{} {}</dd>\
         <dt>First seen</dt><dd>{}</dd><dt>Last seen</dt><dd>{}</dd>\
         <dt>Occurrences</dt><dd id=\"occurrences\">{}</dd><dt>Seen by hosts</dt><dd id=\"hosts\">{}</dd>\
         <dt>First run</dt><dd><a href=\"/runs/{}\">{}</a></dd>\
         <dt>Fingerprint</dt><dd><code>{}</code></dd></dl>",
        severity_badge(text(doc, "severity")),
        esc(text(doc, "rule_id")),
        esc(text(doc, "target")),
        esc(&f.plugin.name),
        esc(&f.plugin.version),
        esc(&f.first_seen),
        esc(&f.last_seen),
        f.occurrences,
        esc(&hosts(doc)),
        url_component(&f.run_id),
        esc(&f.run_id),
        esc(&f.fingerprint),
    );
    if let Some(description) = doc.get("description").and_then(Value::as_str) {
        let _ = write!(out, "<p class=\"description\">{}</p>", esc(description));
    }
    let vulns: Vec<Vec<String>> = doc
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| {
            let score = v
                .get("cvss")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("base_score").and_then(Value::as_f64))
                .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
            vec![
                esc(v.get("cve").and_then(Value::as_str).unwrap_or("")),
                score.map(|s| format!("{s:.1}")).unwrap_or_default(),
                esc(v
                    .pointer("/kev/date_added")
                    .and_then(Value::as_str)
                    .unwrap_or("")),
                esc(v
                    .get("cwe")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
                    .as_str()),
            ]
        })
        .collect();
    if !vulns.is_empty() {
        out.push_str("<h2>Vulnerabilities</h2>");
        out.push_str(&table(
            "vulnerabilities",
            &["CVE", "CVSS", "KEV added", "CWE"],
            &vulns,
        ));
    }
    out.push_str("<h2>Provenance</h2>");
    match provenance {
        Some(p) => {
            let _ = write!(
                out,
                "<dl class=\"facts\" id=\"provenance\"><dt>Plugin</dt><dd>{} {}</dd>\
                 <dt>Binary</dt><dd><code id=\"binary-digest\">{}</code></dd>\
                 <dt>Manifest</dt><dd><code>{}</code></dd><dt>Signed by</dt><dd><code>{}</code></dd>\
                 <dt>Sandbox policy</dt><dd><code>{}</code></dd></dl>",
                esc(&p.plugin),
                esc(&p.version),
                esc(&p.binary_digest),
                esc(p.manifest_digest.as_deref().unwrap_or("")),
                esc(p.signed_by.as_deref().unwrap_or("unsigned")),
                esc(&p.policy_digest),
            );
        }
        None => out.push_str(
            "<p id=\"provenance\">None recorded: its run is from before provenance was kept.</p>",
        ),
    }
    for (heading, key) in [("Evidence", "evidence"), ("Enrichment", "enrichment")] {
        if let Some(value) = doc.get(key) {
            let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
            let _ = write!(
                out,
                "<h2>{heading}</h2><pre id=\"{key}\">{}</pre>",
                esc(&pretty)
            );
        }
    }
    out
}

fn run_row(r: &RunRecord) -> Vec<String> {
    vec![
        format!(
            "<a href=\"/runs/{}\">{}</a>",
            url_component(&r.run_id),
            esc(&r.run_id)
        ),
        esc(&r.plugin),
        format!(
            "<span class=\"status status-{0}\">{0}</span>",
            esc(r.status.as_str())
        ),
        esc(&r.started_at),
        r.duration_ms.to_string(),
        r.memory_mb.to_string(),
        r.findings.to_string(),
        r.error
            .as_ref()
            .map(|e| {
                format!(
                    "{}: {}",
                    esc(e.kind.as_str()),
                    esc(e.message.lines().next().unwrap_or(""))
                )
            })
            .unwrap_or_default(),
    ]
}

const RUN_HEADERS: [&str; 8] = [
    "Run", "Plugin", "Status", "Started", "ms", "MiB", "Findings", "Error",
];

pub fn runs(
    runs: &[RunRecord],
    status: Option<&str>,
    plugin: Option<&str>,
    plugins: &[String],
) -> String {
    let mut out = String::from("<form method=\"get\" action=\"/runs\" class=\"filters\">");
    let statuses: Vec<String> = [
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "violated",
        "rejected",
        "skipped",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    out.push_str(&select("status", "Status", &statuses, status));
    out.push_str(&select("plugin", "Plugin", plugins, plugin));
    out.push_str("<button type=\"submit\">Filter</button></form>");
    let _ = write!(
        out,
        "<p class=\"count\" id=\"run-count\" data-count=\"{0}\">{0} run{1}, newest first</p>",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    let rows: Vec<Vec<String>> = runs.iter().map(run_row).collect();
    out.push_str(&table("runs", &RUN_HEADERS, &rows));
    out
}

pub fn run(r: &RunRecord, audit: &[AuditEvent], findings: &[StoredFinding]) -> String {
    let mut out = String::new();
    out.push_str(&table("run", &RUN_HEADERS, &[run_row(r)]));
    let _ = write!(
        out,
        "<dl class=\"facts\"><dt>Version</dt><dd>{}</dd><dt>Exit</dt><dd>{}</dd>\
         <dt>CPU ms</dt><dd>{}</dd><dt>Findings rejected</dt><dd>{}</dd><dt>Partial</dt><dd>{}</dd></dl>",
        esc(&r.plugin_version),
        match (r.exit_code, r.signal) {
            (Some(code), _) => format!("status {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "—".to_owned(),
        },
        r.cpu_ms,
        r.findings_rejected,
        if r.partial { "yes" } else { "no" },
    );
    if let Some(error) = &r.error {
        let _ = write!(
            out,
            "<h2>Error</h2><pre id=\"error\">{}: {}</pre>",
            esc(error.kind.as_str()),
            esc(&error.message)
        );
    }
    out.push_str("<h2>Audit trail</h2>");
    let rows: Vec<Vec<String>> = audit
        .iter()
        .map(|e| {
            vec![
                esc(&e.timestamp),
                esc(&e.event),
                if e.security {
                    "<span class=\"security\">security</span>".to_owned()
                } else {
                    String::new()
                },
                e.actor_uid.map(|u| u.to_string()).unwrap_or_default(),
                esc(&e.message),
            ]
        })
        .collect();
    out.push_str(&table(
        "audit",
        &["Time", "Event", "", "Actor uid", "Message"],
        &rows,
    ));
    if !r.stderr_tail.is_empty() {
        let _ = write!(
            out,
            "<h2>Standard error (tail)</h2><pre>{}</pre>",
            esc(&r.stderr_tail)
        );
    }
    let _ = write!(
        out,
        "<h2>Findings</h2><p><a href=\"/findings?run={}\">{} finding{} of this run</a></p>",
        url_component(&r.run_id),
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    );
    out
}

/// One plugin's block: the registry's view, its stored revocations, charts.
#[derive(Debug)]
pub struct PluginView<'a> {
    pub entry: &'a PluginEntry,
    pub states: Vec<&'a PluginState>,
    pub days: Vec<Day>,
}

pub fn plugins(views: &[PluginView<'_>]) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let e = v.entry;
            vec![
                format!("<a href=\"#plugin-{0}\">{0}</a>", esc(&e.name)),
                esc(&e.version),
                e.category.map(|c| esc(c.as_str())).unwrap_or_default(),
                format!(
                    "<span class=\"status plugin-{0}\">{0}</span>",
                    esc(e.status.as_str())
                ),
                esc(e.reason.as_deref().unwrap_or("")),
                if e.network { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    let _ = write!(
        out,
        "<p class=\"count\" id=\"plugin-count\" data-count=\"{}\">{} registered</p>",
        views.len(),
        views.len()
    );
    out.push_str(&table(
        "plugins",
        &["Plugin", "Version", "Kind", "Status", "Reason", "Network"],
        &rows,
    ));
    for v in views {
        let name = &v.entry.name;
        let _ = write!(
            out,
            "<section class=\"plugin\" id=\"plugin-{}\"><h2>{}</h2>",
            esc(name),
            esc(name)
        );
        if let Some(hash) = &v.entry.code_hash {
            let _ = write!(
                out,
                "<p class=\"verification\">code hash <code>{}</code>, manifest {}</p>",
                esc(hash),
                esc(&v.entry.manifest_path.display().to_string())
            );
        }
        for s in &v.states {
            let _ = write!(
                out,
                "<p class=\"revocation\">{} {} at {}{}</p>",
                if s.revoked { "revoked" } else { "reinstated" },
                esc(&s.version),
                esc(&s.changed_at),
                s.reason
                    .as_deref()
                    .map(|r| format!(": {}", esc(r)))
                    .unwrap_or_default()
            );
        }
        if v.days.is_empty() {
            out.push_str("<p class=\"empty\">No runs recorded yet.</p>");
        } else {
            let id = |what: &str| format!("chart-{name}-{what}");
            out.push_str("<div class=\"charts\">");
            out.push_str(&chart::bars(
                &id("runs"),
                "Runs per day",
                "",
                &v.days,
                |d| d.runs as f64,
            ));
            out.push_str(&chart::lines(
                &id("duration"),
                "Duration (ms)",
                " ms",
                &v.days,
                &[("p50", |d| d.p50_ms as f64), ("p95", |d| d.p95_ms as f64)],
            ));
            out.push_str(&chart::bars(
                &id("memory"),
                "Peak memory (MiB)",
                " MiB",
                &v.days,
                |d| d.max_memory_mb as f64,
            ));
            out.push_str(&chart::lines(
                &id("failures"),
                "Failure and timeout rate",
                "%",
                &v.days,
                &[
                    ("failed", |d| d.failure_rate),
                    ("timed out", |d| d.timeout_rate),
                ],
            ));
            out.push_str("</div>");
        }
        out.push_str("</section>");
    }
    out
}

pub fn live() -> String {
    let mut out = String::from("<p class=\"count\" id=\"live-count\" data-count=\"\">loading…</p>");
    out.push_str(
        &table("live", &RUN_HEADERS, &[]).replace("<p class=\"empty\">Nothing to show.</p>", ""),
    );
    out.push_str("<p class=\"hint\">Refreshed every second.</p>");
    out
}

pub fn login(error: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(error) = error {
        let _ = write!(
            out,
            "<p class=\"error\" id=\"login-error\">{}</p>",
            esc(error)
        );
    }
    out.push_str(
        "<form method=\"post\" action=\"/login\" class=\"login\">\
         <label>Token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"login\">Log in</button></form>\
         <p class=\"hint\">An operator issues tokens with <code>secflow web token --user NAME</code>.</p>",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters() -> FindingFilters {
        FindingFilters {
            text: Some("sql injection".into()),
            ..FindingFilters::default()
        }
    }

    #[test]
    fn a_search_cut_short_by_its_window_says_how_far_it_read_and_leads_on_with_its_filters() {
        let html = findings(
            &[],
            Paging::SearchedTo {
                from: 1,
                to: 50_000,
            },
            &filters(),
            &[],
        );
        assert!(html.contains("Searched findings #1 to #50000."), "{html}");
        assert!(
            html.contains("href=\"/findings?after=50000&text=sql%20injection\">Search further"),
            "{html}"
        );
    }

    #[test]
    fn a_full_page_leads_to_the_next_and_the_last_page_nowhere() {
        let html = findings(&[], Paging::Next(42), &filters(), &[]);
        assert!(
            html.contains("after=42&text=sql%20injection\">Next page"),
            "{html}"
        );
        assert!(!findings(&[], Paging::End, &filters(), &[]).contains("next-page"));
    }
}
