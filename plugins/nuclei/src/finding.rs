//! A template match as a SecFlow finding (schemas/finding.json).
//!
//! `rule_id` is the template id, plus `:matcher` when a named matcher fired;
//! `evidence` carries what proves it (URL, request, status, a trimmed response,
//! extracted values); `vulnerabilities` come from `info.classification`. Every
//! list and string is cut to the schema's bounds so that no template, however
//! verbose, gets its finding refused.

use secflow_plugin_sdk::Finding;
use serde_json::{json, Map, Value};

use crate::engine::Match;

/// Body bytes kept in the response excerpt.
const EXCERPT_BODY_BYTES: usize = 2048;
/// Request text kept as evidence.
const REQUEST_EVIDENCE_BYTES: usize = 8192;

/// Cuts `text` to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Fills `{{name}}` in a CPE from named extractions; unknown names become `*`.
fn fill_cpe(cpe: &str, m: &Match) -> String {
    let mut out = String::new();
    let mut rest = cpe;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let name = after[..end].trim();
        out.push_str(m.named.get(name).map_or("*", String::as_str));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The finding for one match against `target` (the run's input).
pub fn to_finding(m: &Match, target: &str) -> Value {
    let template = &m.template;
    let info = &template.info;
    let rule_id = match &m.matcher_name {
        Some(name) => format!("{}:{name}", template.id),
        None => template.id.clone(),
    };
    let url = &m.request.url;
    let mut finding = Finding::new(
        cut(&rule_id, 256),
        cut(&info.name, 1024),
        info.severity,
        cut(target, 2048),
    )
    .location_url(cut(&url.to_string(), 8192))
    .location_host(cut(&url.host, 255))
    .location_port(url.port)
    .location_protocol(url.scheme())
    .location_path(cut(url.path(), 8192))
    .location_method(cut(&m.request.method, 32));
    if let Some(d) = &info.description {
        finding = finding.description(cut(d.trim(), 65536));
    }
    if let Some(r) = &info.remediation {
        finding = finding.remediation(cut(r.trim(), 65536));
    }
    for tag in info.tags.iter().filter(|t| t.len() <= 128).take(64) {
        finding = finding.tag(tag.clone());
    }
    for reference in info.references.iter().filter(|r| r.len() <= 2048).take(128) {
        finding = finding.reference(reference.clone());
    }
    let c = &info.classification;
    let cpes: Vec<String> = c
        .cpe
        .iter()
        .map(|cpe| fill_cpe(cpe, m))
        .filter(|cpe| !cpe.is_empty() && cpe.len() <= 512)
        .take(64)
        .collect();
    for cpe in &cpes {
        finding = finding.cpe(cpe.clone());
    }
    for entry in vulnerabilities(c, &cpes, &info.references) {
        finding = finding.vulnerability(entry);
    }
    let body = String::from_utf8_lossy(&m.response.body);
    let excerpt = format!(
        "{}\r\n{}",
        m.response.header_block(),
        cut(&body, EXCERPT_BODY_BYTES)
    );
    let extracted: Vec<Value> = m
        .extracted
        .iter()
        .take(256)
        .map(|v| Value::String(cut(v, 8192)))
        .collect();
    finding = finding
        .evidence("matched_at", cut(&url.to_string(), 8192))
        .evidence("request", cut(&m.request.dump(), REQUEST_EVIDENCE_BYTES))
        .evidence("status", m.status)
        .evidence("response", excerpt)
        .evidence("template", cut(&template.source_name, 1024));
    if !extracted.is_empty() {
        finding = finding.evidence("extracted", extracted);
    }
    if let Some(name) = &m.matcher_name {
        finding = finding.evidence("matcher", name.clone());
    }
    if !m.named.is_empty() {
        let named: Map<String, Value> = m
            .named
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(cut(v, 8192))))
            .collect();
        finding = finding.evidence("named", Value::Object(named));
    }
    finding.into_value()
}

/// One entry per CVE id, or one without `cve` when the template only names
/// weaknesses or a score.
fn vulnerabilities(
    c: &crate::template::Classification,
    cpes: &[String],
    references: &[String],
) -> Vec<Value> {
    let cwe: Vec<&String> = c
        .cwe_ids
        .iter()
        .filter(|w| !w.is_empty() && w.len() <= 64)
        .take(32)
        .collect();
    let mut cvss = Vec::new();
    if c.cvss_metrics.is_some() || c.cvss_score.is_some() {
        let mut score = Map::new();
        if let Some(vector) = c.cvss_metrics.as_deref().filter(|v| v.len() <= 256) {
            if let Some(version) = vector
                .strip_prefix("CVSS:")
                .and_then(|v| v.split('/').next())
                .filter(|v| !v.is_empty() && v.len() <= 16)
            {
                score.insert("version".into(), json!(version));
            }
            score.insert("vector".into(), json!(vector));
        }
        if let Some(base) = c.cvss_score.filter(|s| (0.0..=10.0).contains(s)) {
            score.insert("base_score".into(), json!(base));
        }
        score.insert("source".into(), json!("nuclei-template"));
        cvss.push(Value::Object(score));
    }
    let references: Vec<&String> = references
        .iter()
        .filter(|r| !r.is_empty() && r.len() <= 2048)
        .take(128)
        .collect();
    let base = |cve: Option<&str>| {
        let mut entry = Map::new();
        if let Some(cve) = cve {
            entry.insert("cve".into(), json!(cve));
        }
        if !cwe.is_empty() {
            entry.insert("cwe".into(), json!(cwe));
        }
        if !cvss.is_empty() {
            entry.insert("cvss".into(), Value::Array(cvss.clone()));
        }
        if !cpes.is_empty() {
            entry.insert("cpe".into(), json!(cpes));
        }
        if cve.is_some() && !references.is_empty() {
            entry.insert("references".into(), json!(references));
        }
        entry
    };
    let cves: Vec<&String> = c
        .cve_ids
        .iter()
        .filter(|id| is_cve_id(id))
        .take(256)
        .collect();
    if cves.is_empty() {
        let entry = base(None);
        if entry.contains_key("cwe") || entry.contains_key("cvss") {
            return vec![Value::Object(entry)];
        }
        return Vec::new();
    }
    cves.into_iter()
        .map(|id| Value::Object(base(Some(id))))
        .collect()
}

/// `CVE-YYYY-NNNN…`, the schema's pattern.
fn is_cve_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 3
        && parts[0].eq_ignore_ascii_case("cve")
        && parts[1].len() == 4
        && parts[1].bytes().all(|b| b.is_ascii_digit())
        && (4..=19).contains(&parts[2].len())
        && parts[2].bytes().all(|b| b.is_ascii_digit())
}
