//! `secflow findings --format sarif`: stored findings as a SARIF 2.1.0 log
//! that GitHub code scanning accepts.
//!
//! One run, with SecFlow as the driver: GitHub no longer merges several runs
//! of one tool in a file, and the plugins are named per result instead. Rules
//! are the findings' `rule_id`s; GitHub ranks an alert by its rule's
//! `security-severity` (the highest CVSS base score of the rule's findings,
//! else a score standing for their severity) and shows the result's `level`.
//! The stored fingerprint is the `partialFingerprints` entry, so an alert
//! keeps its identity across uploads. Findings are about network assets, not
//! source files: a result's location is the asset's URL (or `//host:port`),
//! at line 1, which GitHub requires of every result.

use std::collections::BTreeMap;

use secflow_plugin_sdk::protocol::Severity;
use serde_json::{json, Map, Value};

use super::finding_place;
use crate::scan::severity_of;

/// The `partialFingerprints` key under which the stored fingerprint goes.
pub const FINGERPRINT_KEY: &str = "secflowFingerprint/v1";

/// A SARIF 2.1.0 log of stored finding documents (as `findings.query` and
/// the database return them), with `provenance` (by run id: what produced
/// the findings of that run) in the driver's property bag, and each result
/// naming its run (`properties.run_id`).
pub fn report(findings: &[Value], provenance: &BTreeMap<String, Value>) -> Value {
    let mut rules: BTreeMap<String, RuleSummary> = BTreeMap::new();
    for finding in findings {
        let id = text(finding, "rule_id").unwrap_or("unknown-rule");
        rules.entry(id.to_string()).or_default().add(finding);
    }
    let index: BTreeMap<&str, usize> = rules
        .keys()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let id = text(f, "rule_id").unwrap_or("unknown-rule");
            result(f, id, index.get(id).copied().unwrap_or(0))
        })
        .collect();
    let rules: Vec<Value> = rules.iter().map(|(id, rule)| rule.descriptor(id)).collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "SecFlow",
                    "semanticVersion": env!("CARGO_PKG_VERSION"),
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                    // One run holds every plugin's results (see above), so
                    // what produced them is listed per SecFlow run, keyed as
                    // each result's `properties.run_id`.
                    "properties": {"provenance": provenance},
                }
            },
            "results": results,
        }]
    })
}

/// What the findings of one rule say about it.
#[derive(Debug, Default)]
struct RuleSummary {
    title: Option<String>,
    description: Option<String>,
    remediation: Option<String>,
    help_uri: Option<String>,
    worst: Option<Severity>,
    /// Highest CVSS base score among the findings' vulnerabilities.
    cvss: Option<f64>,
    tags: Vec<String>,
    confidence: Option<String>,
}

impl RuleSummary {
    fn add(&mut self, finding: &Value) {
        let take = |slot: &mut Option<String>, key: &str| {
            if slot.is_none() {
                *slot = text(finding, key).map(str::to_string);
            }
        };
        take(&mut self.title, "title");
        take(&mut self.description, "description");
        take(&mut self.remediation, "remediation");
        take(&mut self.confidence, "confidence");
        if self.help_uri.is_none() {
            self.help_uri = strings(finding, "references")
                .into_iter()
                .find(|r| r.starts_with("https://") || r.starts_with("http://"));
        }
        let severity = severity_of(finding);
        if self.worst.is_none_or(|w| rank(severity) > rank(w)) {
            self.worst = Some(severity);
        }
        if let Some(score) = max_cvss(finding) {
            self.cvss = Some(self.cvss.map_or(score, |s| s.max(score)));
        }
        for tag in strings(finding, "tags") {
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
        for cwe in cwes(finding) {
            let tag = format!("external/cwe/{}", cwe.to_lowercase());
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
    }

    fn descriptor(&self, id: &str) -> Value {
        let severity = self.worst.unwrap_or(Severity::Unknown);
        let title = self.title.clone().unwrap_or_else(|| id.to_string());
        let mut properties = Map::new();
        let mut tags = vec!["security".to_string()];
        tags.extend(self.tags.iter().cloned());
        properties.insert("tags".into(), json!(tags));
        if let Some(score) = self.cvss.or_else(|| severity_score(severity)) {
            properties.insert("security-severity".into(), json!(format!("{score:.1}")));
        }
        if let Some(precision) = self.confidence.as_deref().and_then(precision) {
            properties.insert("precision".into(), json!(precision));
        }
        let mut rule = Map::new();
        rule.insert("id".into(), json!(id));
        rule.insert("name".into(), json!(rule_name(id)));
        rule.insert("shortDescription".into(), json!({ "text": title }));
        rule.insert(
            "fullDescription".into(),
            json!({ "text": self.description.clone().unwrap_or(title) }),
        );
        if let Some(remediation) = &self.remediation {
            rule.insert("help".into(), json!({ "text": remediation }));
        }
        if let Some(uri) = &self.help_uri {
            rule.insert("helpUri".into(), json!(uri));
        }
        rule.insert(
            "defaultConfiguration".into(),
            json!({ "level": level(severity) }),
        );
        rule.insert("properties".into(), Value::Object(properties));
        Value::Object(rule)
    }
}

fn result(finding: &Value, rule_id: &str, rule_index: usize) -> Value {
    let severity = severity_of(finding);
    let target = text(finding, "target").unwrap_or("");
    let title = text(finding, "title").unwrap_or(rule_id);
    let place = finding_place(finding);
    let message = if place.is_empty() {
        title.to_string()
    } else {
        format!("{title} ({place})")
    };
    let mut properties = Map::new();
    properties.insert("severity".into(), json!(severity.as_str()));
    properties.insert("target".into(), json!(target));
    if let Some(plugin) = finding.get("plugin") {
        properties.insert("plugin".into(), plugin.clone());
    }
    for key in ["run_id", "first_seen", "last_seen", "occurrences"] {
        if let Some(v) = finding.get(key) {
            properties.insert(key.into(), v.clone());
        }
    }
    let cves: Vec<&str> = finding
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter_map(|v| v.get("cve")?.as_str()).collect())
        .unwrap_or_default();
    if !cves.is_empty() {
        properties.insert("cves".into(), json!(cves));
    }
    let mut result = Map::new();
    result.insert("ruleId".into(), json!(rule_id));
    result.insert("ruleIndex".into(), json!(rule_index));
    result.insert("level".into(), json!(level(severity)));
    result.insert("message".into(), json!({ "text": message }));
    result.insert(
        "locations".into(),
        json!([{
            "physicalLocation": {
                "artifactLocation": { "uri": artifact_uri(finding) },
                "region": { "startLine": 1 }
            }
        }]),
    );
    if let Some(fingerprint) = text(finding, "fingerprint") {
        result.insert(
            "partialFingerprints".into(),
            json!({ FINGERPRINT_KEY: fingerprint }),
        );
    }
    result.insert("properties".into(), Value::Object(properties));
    Value::Object(result)
}

/// SARIF `level` of a severity: what GitHub shows as error, warning or note.
pub fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "error",
        Severity::Medium | Severity::Unknown => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// A `security-severity` standing for a severity when no CVSS score is known,
/// inside GitHub's bands (critical > 9.0, high 7.0–8.9, medium 4.0–6.9, low
/// 0.1–3.9). `info` and `unknown` get none: GitHub then ranks by `level`.
fn severity_score(severity: Severity) -> Option<f64> {
    match severity {
        Severity::Critical => Some(9.5),
        Severity::High => Some(8.0),
        Severity::Medium => Some(5.5),
        Severity::Low => Some(2.0),
        Severity::Info | Severity::Unknown => None,
    }
}

fn rank(severity: Severity) -> u8 {
    match severity {
        Severity::Unknown => 0,
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

fn precision(confidence: &str) -> Option<&'static str> {
    match confidence {
        "high" => Some("high"),
        "medium" => Some("medium"),
        "low" => Some("low"),
        _ => None,
    }
}

fn max_cvss(finding: &Value) -> Option<f64> {
    finding
        .get("vulnerabilities")?
        .as_array()?
        .iter()
        .filter_map(|v| v.get("cvss")?.as_array())
        .flatten()
        .filter_map(|c| c.get("base_score")?.as_f64())
        .filter(|s| (0.0..=10.0).contains(s))
        .reduce(f64::max)
}

fn cwes(finding: &Value) -> Vec<String> {
    finding
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.get("cwe")?.as_array())
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(finding: &'a Value, key: &str) -> Option<&'a str> {
    finding
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn strings(finding: &Value, key: &str) -> Vec<String> {
    finding
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `exposed-git` → `ExposedGit`: SARIF's rule `name` is an identifier.
fn rule_name(id: &str) -> String {
    id.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Where the finding is: its URL, else its target — with a scheme when it has
/// one, else as a network-path reference (`//10.0.0.5:22`) — percent-encoded
/// where a character may not appear in a URI.
fn artifact_uri(finding: &Value) -> String {
    let raw = finding
        .pointer("/location/url")
        .and_then(Value::as_str)
        .filter(|u| has_scheme(u))
        .or_else(|| text(finding, "target"))
        .unwrap_or("unknown-target");
    let uri = if has_scheme(raw) {
        raw.to_string()
    } else {
        format!("//{}", raw.trim_start_matches('/'))
    };
    percent_encode(&uri)
}

fn has_scheme(s: &str) -> bool {
    match s.split_once("://") {
        Some((scheme, _)) => {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// Encodes every byte that is not an RFC 3986 unreserved or reserved
/// character (and every `%` not starting a valid escape).
fn percent_encode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, &b) in bytes.iter().enumerate() {
        let allowed = b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b);
        let escape = b == b'%'
            && bytes.len() > i + 2
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        if allowed || escape {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OASIS schema, vendored with its provenance in tests/fixtures/.
    const SARIF_SCHEMA: &str = include_str!("../../../../tests/fixtures/sarif-schema-2.1.0.json");

    fn stored(rule: &str, severity: &str, target: &str, extra: Value) -> Value {
        let mut f = json!({
            "finding_schema_version": "1.0.0",
            "rule_id": rule,
            "title": format!("{rule} found"),
            "severity": severity,
            "target": target,
            "id": 1,
            "run_id": "0190-run",
            "plugin": {"name": "ferox", "version": "1.0.0"},
            "fingerprint": format!("sha256:{rule}{target}"),
            "first_seen": "2030-01-01T00:00:00Z",
            "last_seen": "2030-01-01T00:00:00Z",
            "occurrences": 1,
        });
        if let (Value::Object(f), Value::Object(extra)) = (&mut f, extra) {
            f.extend(extra);
        }
        f
    }

    fn sample() -> Vec<Value> {
        vec![
            stored(
                "exposed-git",
                "critical",
                "https://app.example.test",
                json!({"location": {"url": "https://app.example.test/.git/config?x=a b"},
                       "references": ["https://owasp.org/x"], "tags": ["exposure"],
                       "remediation": "Deny access to /.git", "confidence": "high"}),
            ),
            stored("exposed-git", "low", "https://api.example.test", json!({})),
            stored(
                "default-creds",
                "high",
                "10.0.0.5:22",
                json!({"vulnerabilities": [{"cve": "CVE-2024-0001", "cwe": ["CWE-798"],
                        "cvss": [{"version": "3.1", "vector": "AV:N", "base_score": 9.8, "severity": "critical", "source": "nvd"}]}]}),
            ),
            stored("banner", "info", "db.example.test", json!({})),
        ]
    }

    #[test]
    fn the_report_validates_against_the_sarif_2_1_0_schema() {
        let schema: Value = serde_json::from_str(SARIF_SCHEMA).unwrap();
        let validator = jsonschema::draft7::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let provenance = BTreeMap::from([(
            "run-1".to_string(),
            json!({"plugin": "ferox", "version": "1.0.0", "binary_digest": "sha256:ab",
                   "manifest_digest": "sha256:cd", "signed_by": null, "policy_digest": "sha256:ef"}),
        )]);
        for (findings, provenance) in [
            (sample(), provenance.clone()),
            (Vec::new(), BTreeMap::new()),
        ] {
            let log = report(&findings, &provenance);
            assert_eq!(
                log["runs"][0]["tool"]["driver"]["properties"]["provenance"],
                json!(provenance),
                "what produced the findings rides in the driver's property bag"
            );
            let errors: Vec<String> = validator
                .iter_errors(&log)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{errors:#?}\n{log:#}");
        }
        let mut broken = report(&sample(), &BTreeMap::new());
        broken["runs"][0]["results"][0]["level"] = json!("severe");
        assert!(
            !validator.is_valid(&broken),
            "the schema does catch a bad level"
        );
    }

    #[test]
    fn levels_and_security_severity_follow_severity_and_cvss() {
        let log = report(&sample(), &BTreeMap::new());
        let run = &log["runs"][0];
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        let rule = |id: &str| rules.iter().find(|r| r["id"] == id).unwrap();
        assert_eq!(
            rule("exposed-git")["properties"]["security-severity"],
            "9.5"
        );
        assert_eq!(
            rule("exposed-git")["defaultConfiguration"]["level"],
            "error"
        );
        assert_eq!(rule("exposed-git")["helpUri"], "https://owasp.org/x");
        assert_eq!(rule("exposed-git")["properties"]["precision"], "high");
        assert_eq!(
            rule("default-creds")["properties"]["security-severity"],
            "9.8",
            "a CVSS score wins over the severity's stand-in"
        );
        assert!(rule("default-creds")["properties"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("external/cwe/cwe-798")));
        assert!(rule("banner")["properties"]
            .get("security-severity")
            .is_none());

        let results = run["results"].as_array().unwrap();
        let levels: Vec<&str> = results
            .iter()
            .map(|r| r["level"].as_str().unwrap())
            .collect();
        assert_eq!(levels, ["error", "note", "error", "note"]);
        for r in results {
            let index = r["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(
                rules[index]["id"], r["ruleId"],
                "ruleIndex points at its rule"
            );
            assert!(r["partialFingerprints"][FINGERPRINT_KEY]
                .as_str()
                .unwrap()
                .starts_with("sha256:"));
        }
    }

    #[test]
    fn locations_are_uris_even_for_bare_hosts_and_unsafe_characters() {
        let log = report(&sample(), &BTreeMap::new());
        let uris: Vec<&str> = log["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            uris,
            [
                "https://app.example.test/.git/config?x=a%20b",
                "https://api.example.test",
                "//10.0.0.5:22",
                "//db.example.test"
            ]
        );
    }

    #[test]
    fn rule_names_are_identifiers() {
        assert_eq!(rule_name("exposed-git"), "ExposedGit");
        assert_eq!(rule_name("CVE-2021-44228"), "CVE202144228");
    }
}
