//! The SecFlow side of the scan: the SDK's [`Plugin`] whose `run` reads the target
//! and config, drives an [`engine::Scan`] on a tokio runtime and turns each hit
//! into one finding.
//!
//! The SDK's [`RunContext`] is synchronous and not `Send`, so it stays on the
//! thread that calls `run`: that thread blocks on a future that takes the scan's
//! events and, every [`TICK`], looks at `ctx.is_cancelled()` (the bridge from the
//! SDK's cancel flag to the async workers), the deadline and the progress clock.
//!
//! A scan that could not try every word (the target stopped answering, the
//! deadline came first) says so with `ctx.report_incomplete`, naming how many
//! words were not tried and why, so that the run is recorded `partial`.

use std::time::{Duration, Instant};

use http::Method;
use secflow_plugin_sdk::{
    input_str, Category, Confidence, Finding, LogLevel, Plugin, PluginError, RunContext,
};
use serde_json::{json, Map, Value};

use crate::engine::{self, error_chain, Event, Hit, Scan, StopReason, Summary};
use crate::settings::Settings;
use crate::target::Target;
use crate::wordlist;

/// How often the run looks at the cancel flag, the deadline and progress.
const TICK: Duration = Duration::from_millis(20);
/// Least time between two `progress` notifications.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Body characters kept in a finding's `evidence.response`.
const EXCERPT_CHARS: usize = 256;
/// Directories whose calibration is listed in the outputs.
const MAX_CALIBRATIONS_LISTED: usize = 64;

/// The `ferox` detector.
#[derive(Debug, Default)]
pub struct Ferox;

impl Plugin for Ferox {
    const NAME: &'static str = "ferox";
    const VERSION: &'static str = "1.0.0";
    const CATEGORY: Category = Category::Detector;

    fn run(
        &mut self,
        ctx: &mut RunContext,
        inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        let target_text = input_str(&inputs, "target")?;
        let target =
            Target::parse(target_text).map_err(|e| PluginError::invalid_inputs(e.to_string()))?;
        let settings = Settings::from_config(ctx.config())
            .map_err(|e| PluginError::invalid_config(e.to_string()))?;
        let words = match &settings.wordlist {
            Some(path) => {
                wordlist::load(path).map_err(|e| PluginError::invalid_config(error_chain(&e)))?
            }
            None => wordlist::parse(wordlist::DEFAULT_WORDLIST),
        };
        let runtime = engine::runtime()
            .map_err(|e| PluginError::internal(format!("cannot start the async runtime: {e}")))?;
        let outcome = runtime.block_on(drive(ctx, target_text, target, settings, &words));
        // Workers still in a request are dropped, not awaited: cancel must be prompt.
        runtime.shutdown_background();
        outcome
    }
}

async fn drive(
    ctx: &mut RunContext<'_>,
    target_text: &str,
    target: Target,
    settings: Settings,
    words: &[String],
) -> Result<Map<String, Value>, PluginError> {
    let started = Instant::now();
    let stop_at = soft_deadline(ctx);
    let method = settings.method.clone();
    let bounds = Bounds {
        retries: settings.retries,
        in_a_row: settings.max_consecutive_failures,
        max_requests: settings.max_requests,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let start = Scan::start(target, settings, words);
    tokio::pin!(start);
    let mut scan = loop {
        tokio::select! {
            started = &mut start => {
                break started.map_err(|e| PluginError::unreachable(error_chain(&e)))?;
            }
            _ = tick.tick() => ctx.check_cancelled()?,
        }
    };

    let mut last_progress = Instant::now();
    let mut calibrations = Map::new();
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {
                if ctx.is_cancelled() {
                    scan.stop(StopReason::Cancelled);
                    return Err(PluginError::cancelled());
                }
                if Instant::now() >= stop_at {
                    scan.stop(StopReason::Deadline);
                    // Hits already taken are reported; requests in flight are abandoned.
                    while let Some(event) = scan.try_next_event() {
                        handle(ctx, &scan, event, target_text, &method, &mut calibrations)?;
                    }
                    ctx.log(LogLevel::Warn, "stopped before the deadline; the scan is incomplete")?;
                    break;
                }
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    report_progress(ctx, &scan)?;
                }
            }
            event = scan.next_event() => match event {
                Some(event) => handle(ctx, &scan, event, target_text, &method, &mut calibrations)?,
                None => break,
            },
        }
    }
    report_progress(ctx, &scan)?;
    let summary = scan.summary();
    if summary.errors > 0 {
        let mut fields = Map::new();
        fields.insert("errors".into(), json!(summary.errors));
        fields.insert("retries".into(), json!(summary.retries));
        fields.insert("first".into(), json!(summary.first_error));
        ctx.log_with(
            LogLevel::Warn,
            format!(
                "{} requests got no response after {} retries",
                summary.errors, bounds.retries
            ),
            fields,
        )?;
    }
    if summary.untried > 0 {
        ctx.report_incomplete(summary.untried, incomplete_reason(&summary, &bounds));
    }
    Ok(outputs(
        &summary,
        words.len(),
        started.elapsed(),
        calibrations,
    ))
}

fn handle(
    ctx: &mut RunContext<'_>,
    scan: &Scan,
    event: Event,
    target_text: &str,
    method: &Method,
    calibrations: &mut Map<String, Value>,
) -> Result<(), PluginError> {
    match event {
        Event::Hit(hit) => {
            if let Err(err) = ctx.emit(finding(target_text, &hit, method)) {
                scan.stop(StopReason::Cancelled);
                return Err(err);
            }
        }
        Event::Calibrated {
            directory,
            signatures,
        } => {
            if !signatures.is_empty() {
                ctx.log(
                    LogLevel::Info,
                    format!(
                        "{directory}: filtering wildcard answers ({})",
                        signatures.join("; ")
                    ),
                )?;
            }
            if calibrations.len() < MAX_CALIBRATIONS_LISTED {
                calibrations.insert(directory, json!(signatures));
            }
        }
    }
    Ok(())
}

/// The settings an incomplete scan's reason names.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    retries: u32,
    in_a_row: u64,
    max_requests: u64,
}

/// Why words went untried, in a sentence: how the scan stopped, and how many
/// words got no answer even after their retries.
fn incomplete_reason(summary: &Summary, bounds: &Bounds) -> String {
    let retries = bounds.retries;
    let mut parts = Vec::new();
    match summary.stopped {
        Some(StopReason::Deadline) => {
            parts.push("the scan stopped before the run's deadline".to_owned());
        }
        Some(StopReason::MaxRequests) => parts.push(format!(
            "the scan stopped at max_requests ({})",
            bounds.max_requests
        )),
        Some(StopReason::Unresponsive) => parts.push(format!(
            "the scan stopped after {} words in a row got no answer \
             (max_consecutive_failures)",
            bounds.in_a_row
        )),
        Some(StopReason::Cancelled) => parts.push("the scan was cancelled".to_owned()),
        None => {}
    }
    if summary.unanswered > 0 {
        let mut part = format!(
            "{} words got no answer after {retries} retries",
            summary.unanswered
        );
        if let Some(first) = &summary.first_error {
            part.push_str(&format!(" (first: {first})"));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        parts.push("some words were not tried".to_owned());
    }
    parts.join("; ")
}

fn report_progress(ctx: &mut RunContext<'_>, scan: &Scan) -> Result<(), PluginError> {
    let counters = scan.counters();
    let sent = counters.sent.load(std::sync::atomic::Ordering::Relaxed);
    let planned = counters.planned.load(std::sync::atomic::Ordering::Relaxed);
    ctx.progress(sent, Some(planned.max(sent)), None)
}

/// When the scan stops on its own so that its findings and answer get out before
/// the supervisor's deadline: a tenth of the time left, between 200 ms and 2 s, early.
fn soft_deadline(ctx: &RunContext<'_>) -> Instant {
    let remaining = ctx.remaining();
    let margin = (remaining / 10).clamp(Duration::from_millis(200), Duration::from_secs(2));
    Instant::now() + remaining.saturating_sub(margin)
}

fn outputs(
    summary: &Summary,
    words: usize,
    elapsed: Duration,
    calibrations: Map<String, Value>,
) -> Map<String, Value> {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        (summary.requests as f64 / seconds).round()
    } else {
        0.0
    };
    let mut out = Map::new();
    out.insert("requests".into(), json!(summary.requests));
    out.insert("found".into(), json!(summary.found));
    out.insert("errors".into(), json!(summary.errors));
    out.insert("retries".into(), json!(summary.retries));
    out.insert("untried".into(), json!(summary.untried));
    out.insert("concurrency".into(), json!(summary.concurrency));
    out.insert(
        "concurrency_lowest".into(),
        json!(summary.concurrency_lowest),
    );
    out.insert("filtered".into(), json!(summary.filtered));
    out.insert("wildcards".into(), json!(summary.wildcards));
    out.insert("directories".into(), json!(summary.directories));
    out.insert("words".into(), json!(words));
    out.insert(
        "complete".into(),
        json!(summary.stopped.is_none() && summary.untried == 0),
    );
    out.insert(
        "stopped".into(),
        json!(summary.stopped.map(StopReason::as_str)),
    );
    out.insert("duration_ms".into(), json!(elapsed.as_millis() as u64));
    out.insert("requests_per_second".into(), json!(rate));
    out.insert("calibration".into(), Value::Object(calibrations));
    out
}

/// The finding for one hit (contracts §5); extra measures go into `evidence`.
pub fn finding(target: &str, hit: &Hit, method: &Method) -> Finding {
    let m = &hit.measure;
    let title = format!("{} found: {} ({})", hit.kind.label(), hit.path, m.status);
    let mut description = format!(
        "{} answered {} with {} bytes, {} words and {} lines",
        hit.url, m.status, m.length, m.words, m.lines
    );
    if let Some(redirect) = &hit.redirect {
        description.push_str(&format!(", redirecting to {redirect}"));
    }
    description.push_str(". ");
    description.push_str(hit.kind.risk());
    let confidence = if (200..300).contains(&m.status) {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let mut finding = Finding::new(hit.kind.rule_id(), title, hit.severity, target)
        .location_url(&hit.url)
        .location_path(&hit.path)
        .location_method(method.as_str())
        .description(description)
        .confidence(confidence)
        .tag("content-discovery")
        .tag(hit.kind.rule_id().trim_start_matches("ferox."))
        .evidence("matched_at", hit.url.as_str())
        .evidence("request", format!("{method} {} HTTP/1.1", hit.path))
        .evidence("status", m.status)
        .evidence("length", m.length)
        .evidence("words", m.words)
        .evidence("lines", m.lines)
        .evidence("directory", hit.directory)
        .evidence("depth", hit.depth);
    if let Some(remediation) = hit.kind.remediation() {
        finding = finding.remediation(remediation);
    }
    if let Some(redirect) = &hit.redirect {
        finding = finding.evidence("redirect", redirect.as_str());
    }
    if let Some(followed) = &hit.followed {
        finding = finding.evidence(
            "redirect_final",
            json!({"url": followed.url, "status": followed.status, "length": followed.length, "hops": followed.hops}),
        );
    }
    if let Some(content_type) = &hit.content_type {
        finding = finding.evidence("content_type", content_type.as_str());
    }
    if let Some(server) = &hit.server {
        finding = finding.evidence("server", server.as_str());
    }
    if hit.truncated {
        finding = finding.evidence("truncated", true);
    }
    if !hit.excerpt.is_empty() {
        let excerpt: String = hit.excerpt.chars().take(EXCERPT_CHARS).collect();
        finding = finding.evidence("response", excerpt);
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::Measure;
    use crate::classify::{self, Kind};
    use secflow_plugin_sdk::testing;

    fn hit(path: &str, status: u16, redirect: Option<&str>) -> Hit {
        let kind = classify::classify(path, false);
        Hit {
            url: format!("http://127.0.0.1:8080{path}"),
            path: path.to_owned(),
            measure: Measure {
                status,
                length: 23,
                words: 3,
                lines: 1,
                location: redirect.map(str::to_owned),
            },
            content_type: Some("text/plain".into()),
            server: None,
            excerpt: "x".repeat(1000),
            truncated: false,
            kind,
            severity: classify::severity(kind, status),
            redirect: redirect.map(|r| format!("http://127.0.0.1:8080{r}")),
            followed: None,
            directory: redirect.is_some(),
            depth: 0,
        }
    }

    #[test]
    fn a_finding_carries_the_measures_in_evidence_and_only_schema_fields_at_the_top() {
        let f = finding(
            "http://127.0.0.1:8080/",
            &hit("/.git/config", 200, None),
            &Method::GET,
        )
        .into_value();
        assert_eq!(f["rule_id"], "ferox.vcs-metadata");
        assert_eq!(f["severity"], "high");
        assert_eq!(f["target"], "http://127.0.0.1:8080/");
        assert_eq!(f["location"]["url"], "http://127.0.0.1:8080/.git/config");
        assert_eq!(f["evidence"]["status"], 200);
        assert_eq!(f["evidence"]["length"], 23);
        assert_eq!(f["evidence"]["words"], 3);
        assert_eq!(f["evidence"]["lines"], 1);
        assert_eq!(f["evidence"]["request"], "GET /.git/config HTTP/1.1");
        assert_eq!(
            f["evidence"]["response"].as_str().map(str::len),
            Some(EXCERPT_CHARS)
        );
        let allowed = [
            "finding_schema_version",
            "rule_id",
            "title",
            "severity",
            "target",
            "location",
            "description",
            "remediation",
            "confidence",
            "tags",
            "evidence",
        ];
        for key in f.as_object().expect("object").keys() {
            assert!(
                allowed.contains(&key.as_str()),
                "unexpected top-level {key}"
            );
        }
    }

    #[test]
    fn a_redirect_is_reported_with_its_target() {
        let f = finding(
            "http://h/",
            &hit("/admin", 301, Some("/admin/")),
            &Method::GET,
        )
        .into_value();
        assert_eq!(f["rule_id"], Kind::AdminPanel.rule_id());
        assert_eq!(f["severity"], "low");
        assert_eq!(f["evidence"]["redirect"], "http://127.0.0.1:8080/admin/");
        assert_eq!(f["evidence"]["directory"], true);
    }

    #[test]
    fn a_run_without_a_target_is_refused_naming_the_input() {
        let outcome = testing::run(Ferox, json!({}), json!({}));
        let err = outcome.error.expect("refused");
        assert_eq!(err.code(), -32001);
        assert!(err.message().contains("inputs.target"), "{}", err.message());
    }

    #[test]
    fn a_bad_config_value_is_refused_naming_the_field() {
        let outcome = testing::run(
            Ferox,
            json!({"concurrency": 0}),
            json!({"target": "http://127.0.0.1:1/"}),
        );
        let err = outcome.error.expect("refused");
        assert_eq!(err.code(), -32602);
        assert!(
            err.message().starts_with("config.concurrency"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_closed_port_is_reported_as_an_unreachable_target() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let outcome = testing::run(
            Ferox,
            json!({}),
            json!({"target": format!("http://127.0.0.1:{port}/")}),
        );
        let err = outcome.error.expect("unreachable");
        assert_eq!(err.code(), -32002, "{}", err.message());
        assert!(err.message().contains("unreachable"), "{}", err.message());
    }
}
