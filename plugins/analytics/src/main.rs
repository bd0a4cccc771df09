//! The analytics plugin: turns a scan's stored findings into metrics and a risk score.
//!
//! Input `{findings: [stored finding, …]}`; output `{metrics: {…}}`, stored with the
//! run; no findings are sent. Counting rules:
//!
//! - A finding counts once however often it was seen: its `occurrences` (how many
//!   times the same fingerprint was reported) go into the separate `occurrences`
//!   total only. The same stored finding listed twice in the input (same
//!   `fingerprint`, or same `id` when it has none) is also counted once.
//! - `severity` outside the six known words counts as `unknown`; a finding without
//!   `target`, `rule_id` or `plugin.name` is counted under `"(unknown)"` there.
//!
//! Risk score (0..100, one decimal): each finding adds its severity's weight,
//!
//! | critical | high | medium | low | unknown | info |
//! |---|---|---|---|---|---|
//! | 10 | 5 | 2 | 0.5 | 1 | 0 |
//!
//! and `risk_score = 100 × (1 − e^(−sum / 25))`, so the score grows fast for the
//! first serious findings and saturates towards 100 (one critical ≈ 33, five ≈ 86).
//! The same formula over one target's findings gives that target's `risk` in
//! `top_targets` (the config's `top_targets` highest, default 10; ties broken by
//! finding count, then target name).
//!
//! `risk_level` is `none` at 0, else `low` below 20, `medium` below 45, `high`
//! below 70, `critical` from 70 — raised to at least `high` when any finding is
//! critical, `medium` when any is high, and `low` when any is medium, so that one
//! serious finding is never reported as low risk.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;

use secflow_plugin_sdk::protocol::LogLevel;
use secflow_plugin_sdk::{serve, Category, Plugin, PluginError, RunContext, Severity};
use serde_json::{json, Map, Value};

/// Weight of one finding in the risk sum.
fn weight(severity: Severity) -> f64 {
    match severity {
        Severity::Critical => 10.0,
        Severity::High => 5.0,
        Severity::Medium => 2.0,
        Severity::Low => 0.5,
        Severity::Unknown => 1.0,
        Severity::Info => 0.0,
    }
}

/// The sum at which the score reaches 1 − 1/e ≈ 63.
const RISK_SCALE: f64 = 25.0;
/// `top_targets` when the config does not say.
const DEFAULT_TOP_TARGETS: u64 = 10;
/// The key for findings that lack the field a breakdown is keyed by.
const UNKNOWN_KEY: &str = "(unknown)";

fn risk_score(weight_sum: f64) -> f64 {
    let score = 100.0 * (1.0 - (-weight_sum / RISK_SCALE).exp());
    (score * 10.0).round() / 10.0
}

fn risk_level(score: f64, worst: Option<Severity>) -> &'static str {
    const LEVELS: [&str; 5] = ["none", "low", "medium", "high", "critical"];
    let by_score = if score <= 0.0 {
        0
    } else if score < 20.0 {
        1
    } else if score < 45.0 {
        2
    } else if score < 70.0 {
        3
    } else {
        4
    };
    let floor = match worst {
        Some(Severity::Critical) => 3,
        Some(Severity::High) => 2,
        Some(Severity::Medium) => 1,
        _ => 0,
    };
    LEVELS[by_score.max(floor)]
}

/// Per-target tally for `top_targets`.
#[derive(Debug, Default)]
struct TargetTally {
    findings: u64,
    weight: f64,
}

/// The metrics of a set of stored findings. Pure.
fn metrics(findings: &[Value], top_targets: usize) -> Result<Value, PluginError> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut duplicates = 0u64;
    let mut occurrences = 0u64;
    let mut weight_sum = 0.0;
    let mut worst: Option<Severity> = None;
    let mut by_severity: BTreeMap<Severity, u64> =
        Severity::ALL.into_iter().map(|s| (s, 0)).collect();
    let mut by_target: BTreeMap<String, TargetTally> = BTreeMap::new();
    let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_plugin: BTreeMap<String, u64> = BTreeMap::new();

    for (index, finding) in findings.iter().enumerate() {
        let Some(finding) = finding.as_object() else {
            return Err(PluginError::invalid_inputs(format!(
                "inputs.findings[{index}] is not an object"
            )));
        };
        let identity = text(finding.get("fingerprint"))
            .map(|f| format!("fingerprint:{f}"))
            .or_else(|| {
                finding
                    .get("id")
                    .filter(|id| !id.is_null())
                    .map(|id| format!("id:{id}"))
            });
        if let Some(identity) = identity {
            if !seen.insert(identity) {
                duplicates += 1;
                continue;
            }
        }
        total += 1;
        occurrences += finding
            .get("occurrences")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1);
        let severity = text(finding.get("severity"))
            .and_then(Severity::parse)
            .unwrap_or(Severity::Unknown);
        *by_severity.entry(severity).or_default() += 1;
        if severity != Severity::Unknown {
            worst = worst.max(Some(severity));
        }
        weight_sum += weight(severity);
        let target = by_target.entry(key(finding.get("target"))).or_default();
        target.findings += 1;
        target.weight += weight(severity);
        *by_rule.entry(key(finding.get("rule_id"))).or_default() += 1;
        let plugin = match finding.get("plugin") {
            Some(Value::Object(plugin)) => plugin.get("name"),
            other => other,
        };
        *by_plugin.entry(key(plugin)).or_default() += 1;
    }

    let mut ranked: Vec<(&String, &TargetTally)> = by_target.iter().collect();
    ranked.sort_by(|(a_name, a), (b_name, b)| {
        b.weight
            .total_cmp(&a.weight)
            .then(b.findings.cmp(&a.findings))
            .then(a_name.cmp(b_name))
    });
    let top: Vec<Value> = ranked
        .into_iter()
        .take(top_targets)
        .map(|(target, tally)| json!({"target": target, "risk": risk_score(tally.weight), "findings": tally.findings}))
        .collect();
    let score = risk_score(weight_sum);
    Ok(json!({
        "total": total,
        "occurrences": occurrences,
        "duplicates_ignored": duplicates,
        "by_severity": by_severity.iter().map(|(s, n)| (s.as_str().to_owned(), json!(n))).collect::<Map<_, _>>(),
        "by_target": by_target.iter().map(|(t, tally)| (t.clone(), json!(tally.findings))).collect::<Map<_, _>>(),
        "by_rule": by_rule,
        "by_plugin": by_plugin,
        "top_targets": top,
        "risk_score": score,
        "risk_level": risk_level(score, worst),
    }))
}

fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn key(value: Option<&Value>) -> String {
    text(value).unwrap_or(UNKNOWN_KEY).to_owned()
}

/// The plugin: validates inputs and config, then reports [`metrics`].
#[derive(Debug, Default)]
struct Analytics;

impl Plugin for Analytics {
    const NAME: &'static str = "analytics";
    const VERSION: &'static str = "1.0.0";
    const CATEGORY: Category = Category::Analytics;
    /// Every finding of a scan arrives in one `run` line.
    const MAX_INPUT_BYTES: usize = 32 << 20;

    fn run(
        &mut self,
        ctx: &mut RunContext,
        inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        let findings = match inputs.get("findings") {
            Some(Value::Array(findings)) => findings,
            Some(other) => {
                return Err(PluginError::invalid_inputs(format!(
                    "inputs.findings must be an array of findings, got {}",
                    json_type(other)
                )))
            }
            None => return Err(PluginError::invalid_inputs("inputs.findings is missing")),
        };
        let top_targets = match ctx.config().get("top_targets") {
            None => DEFAULT_TOP_TARGETS,
            Some(value) => value
                .as_u64()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    PluginError::invalid_config(format!(
                        "config top_targets must be an integer from 1 to 100, got {value}"
                    ))
                })?,
        };
        let metrics = metrics(findings, usize::try_from(top_targets).unwrap_or(usize::MAX))?;
        ctx.log(
            LogLevel::Info,
            format!(
                "analysed {} findings: risk {} ({})",
                metrics["total"], metrics["risk_score"], metrics["risk_level"]
            ),
        )?;
        let mut outputs = Map::new();
        outputs.insert("metrics".into(), metrics);
        Ok(outputs)
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn main() -> ExitCode {
    serve(Analytics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_plugin_sdk::protocol::code;
    use secflow_plugin_sdk::testing;

    fn stored(
        fingerprint: &str,
        severity: &str,
        target: &str,
        rule: &str,
        occurrences: u64,
    ) -> Value {
        json!({
            "id": format!("id-{fingerprint}"), "fingerprint": fingerprint, "finding_schema_version": "1.0.0",
            "rule_id": rule, "title": "t", "severity": severity, "target": target,
            "plugin": {"name": "ferox", "version": "1.0.0"}, "occurrences": occurrences,
        })
    }

    fn analyse(findings: Vec<Value>) -> Value {
        let outcome = testing::run(Analytics, json!({}), json!({ "findings": findings }));
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        assert!(outcome.findings.is_empty(), "analytics sends no findings");
        outcome.outputs["metrics"].clone()
    }

    #[test]
    fn counts_break_down_by_severity_target_rule_and_plugin() {
        let m = analyse(vec![
            stored("a", "critical", "http://a", "r1", 1),
            stored("b", "high", "http://a", "r2", 1),
            stored("c", "low", "http://b", "r1", 1),
            stored("d", "urgent", "http://b", "r3", 1),
        ]);
        assert_eq!(m["total"], 4);
        assert_eq!(
            m["by_severity"],
            json!({"critical": 1, "high": 1, "medium": 0, "low": 1, "info": 0, "unknown": 1})
        );
        assert_eq!(m["by_target"], json!({"http://a": 2, "http://b": 2}));
        assert_eq!(m["by_rule"], json!({"r1": 2, "r2": 1, "r3": 1}));
        assert_eq!(m["by_plugin"], json!({"ferox": 4}));
    }

    #[test]
    fn a_finding_seen_three_times_counts_once_and_adds_its_occurrences() {
        let m = analyse(vec![
            stored("a", "high", "h", "r", 3),
            stored("a", "high", "h", "r", 3),
        ]);
        assert_eq!(m["total"], 1);
        assert_eq!(m["occurrences"], 3);
        assert_eq!(m["duplicates_ignored"], 1);
        assert_eq!(m["by_severity"]["high"], 1);
    }

    #[test]
    fn the_risk_score_follows_the_documented_formula() {
        let m = analyse(vec![stored("a", "critical", "h", "r", 1)]);
        // 100 * (1 - e^(-10/25)) = 32.968
        assert_eq!(m["risk_score"], 33.0);
        assert_eq!(
            m["risk_level"], "high",
            "one critical finding is at least high risk"
        );
        let m = analyse(
            (0..10)
                .map(|i| stored(&i.to_string(), "critical", "h", "r", 1))
                .collect(),
        );
        assert_eq!(m["risk_score"], 98.2);
        assert_eq!(m["risk_level"], "critical");
        let m = analyse(vec![stored("a", "info", "h", "r", 1)]);
        assert_eq!(
            (m["risk_score"].as_f64(), m["risk_level"].as_str()),
            (Some(0.0), Some("none"))
        );
    }

    #[test]
    fn no_findings_give_zero_risk_and_empty_breakdowns() {
        let m = analyse(Vec::new());
        assert_eq!(m["total"], 0);
        assert_eq!(m["risk_score"], 0.0);
        assert_eq!(m["risk_level"], "none");
        assert_eq!(m["top_targets"], json!([]));
    }

    #[test]
    fn top_targets_rank_by_risk_and_stop_at_the_configured_count() {
        let mut findings = vec![
            stored("1", "low", "http://low", "r", 1),
            stored("2", "critical", "http://crit", "r", 1),
            stored("3", "high", "http://high", "r", 1),
        ];
        findings.extend((0..20).map(|i| {
            stored(
                &format!("x{i}"),
                "info",
                &format!("http://info{i:02}"),
                "r",
                1,
            )
        }));
        let m = analyse(findings.clone());
        let top = m["top_targets"].as_array().unwrap();
        assert_eq!(top.len(), 10);
        assert_eq!(
            top[0],
            json!({"target": "http://crit", "risk": 33.0, "findings": 1})
        );
        assert_eq!(top[1]["target"], "http://high");
        assert_eq!(top[2]["target"], "http://low");
        assert_eq!(top[3]["target"], "http://info00");

        let outcome = testing::run(
            Analytics,
            json!({"top_targets": 2}),
            json!({ "findings": findings }),
        );
        assert_eq!(
            outcome.outputs["metrics"]["top_targets"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn missing_findings_input_is_rejected_naming_the_field() {
        let error = testing::run(Analytics, json!({}), json!({"target": "x"}))
            .error
            .unwrap();
        assert_eq!(error.code(), code::INVALID_INPUTS);
        assert!(error.message().contains("inputs.findings"), "{error}");
    }

    #[test]
    fn findings_that_are_not_an_array_are_rejected_naming_the_field_and_type() {
        let error = testing::run(Analytics, json!({}), json!({"findings": "all"}))
            .error
            .unwrap();
        assert_eq!(error.code(), code::INVALID_INPUTS);
        assert_eq!(
            error.message(),
            "inputs.findings must be an array of findings, got a string"
        );
        let error = testing::run(Analytics, json!({}), json!({"findings": [1]}))
            .error
            .unwrap();
        assert_eq!(error.message(), "inputs.findings[0] is not an object");
    }

    #[test]
    fn a_top_targets_config_outside_one_to_a_hundred_is_refused() {
        let error = testing::run(
            Analytics,
            json!({"top_targets": 0}),
            json!({"findings": []}),
        )
        .error
        .unwrap();
        assert_eq!(error.code(), code::INVALID_PARAMS);
        assert!(error.message().contains("top_targets"));
    }

    #[test]
    fn findings_without_target_rule_or_plugin_are_counted_under_unknown() {
        let m = analyse(vec![json!({"severity": "medium"})]);
        assert_eq!(m["by_target"], json!({"(unknown)": 1}));
        assert_eq!(m["by_rule"], json!({"(unknown)": 1}));
        assert_eq!(m["by_plugin"], json!({"(unknown)": 1}));
        assert_eq!(m["risk_level"], "low");
    }
}
