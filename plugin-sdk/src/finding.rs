//! A builder for findings (contracts §5) that always yields the required fields.
//!
//! The supervisor validates every finding against `schemas/finding.json`; building
//! them through typed setters keeps plugins from sending a misspelt severity or
//! forgetting `finding_schema_version`, which would get the finding rejected.

use serde_json::{Map, Value};

use crate::protocol::{Severity, FINDING_SCHEMA_VERSION};

/// How sure the plugin is of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// One finding, built field by field; send it with `RunContext::emit`.
///
/// ```
/// use secflow_plugin_sdk::{Finding, Severity};
/// let finding = Finding::new("http.missing-hsts", "HSTS header missing", Severity::Low, "https://example.test")
///     .location_url("https://example.test/login")
///     .description("The response has no Strict-Transport-Security header.")
///     .cve("CVE-2021-44228")
///     .into_value();
/// assert_eq!(finding["finding_schema_version"], "1.0.0");
/// assert_eq!(finding["severity"], "low");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    fields: Map<String, Value>,
}

impl Finding {
    /// The four required fields; `finding_schema_version` is set for you.
    pub fn new(
        rule_id: impl Into<String>,
        title: impl Into<String>,
        severity: Severity,
        target: impl Into<String>,
    ) -> Finding {
        let mut fields = Map::new();
        fields.insert(
            "finding_schema_version".into(),
            FINDING_SCHEMA_VERSION.into(),
        );
        fields.insert("rule_id".into(), Value::String(rule_id.into()));
        fields.insert("title".into(), Value::String(title.into()));
        fields.insert("severity".into(), severity.as_str().into());
        fields.insert("target".into(), Value::String(target.into()));
        Finding { fields }
    }

    pub fn description(self, text: impl Into<String>) -> Finding {
        self.field("description", Value::String(text.into()))
    }

    pub fn remediation(self, text: impl Into<String>) -> Finding {
        self.field("remediation", Value::String(text.into()))
    }

    pub fn confidence(self, confidence: Confidence) -> Finding {
        self.field("confidence", confidence.as_str())
    }

    /// Sets `location.url`.
    pub fn location_url(self, url: impl Into<String>) -> Finding {
        self.location("url", Value::String(url.into()))
    }

    pub fn location_host(self, host: impl Into<String>) -> Finding {
        self.location("host", Value::String(host.into()))
    }

    pub fn location_ip(self, ip: impl Into<String>) -> Finding {
        self.location("ip", Value::String(ip.into()))
    }

    pub fn location_port(self, port: u16) -> Finding {
        self.location("port", port.into())
    }

    /// Sets `location.protocol` (`tcp`, `udp`, `http`, …).
    pub fn location_protocol(self, protocol: impl Into<String>) -> Finding {
        self.location("protocol", Value::String(protocol.into()))
    }

    pub fn location_path(self, path: impl Into<String>) -> Finding {
        self.location("path", Value::String(path.into()))
    }

    pub fn location_method(self, method: impl Into<String>) -> Finding {
        self.location("method", Value::String(method.into()))
    }

    pub fn location_parameter(self, parameter: impl Into<String>) -> Finding {
        self.location("parameter", Value::String(parameter.into()))
    }

    /// Appends to `tags`.
    pub fn tag(self, tag: impl Into<String>) -> Finding {
        self.push("tags", Value::String(tag.into()))
    }

    /// Appends to `references`.
    pub fn reference(self, url: impl Into<String>) -> Finding {
        self.push("references", Value::String(url.into()))
    }

    /// Appends to `cpe`.
    pub fn cpe(self, cpe: impl Into<String>) -> Finding {
        self.push("cpe", Value::String(cpe.into()))
    }

    /// Appends `{cve}` to `vulnerabilities`.
    pub fn cve(self, id: impl Into<String>) -> Finding {
        let mut entry = Map::new();
        entry.insert("cve".into(), Value::String(id.into()));
        self.vulnerability(Value::Object(entry))
    }

    /// Appends a complete `vulnerabilities` entry (`{cve, cwe, cvss, …}`).
    pub fn vulnerability(self, entry: Value) -> Finding {
        self.push("vulnerabilities", entry)
    }

    /// Sets one member of `evidence` (`matched_at`, `request`, `response`, …).
    pub fn evidence(mut self, key: &str, value: impl Into<Value>) -> Finding {
        set_member(&mut self.fields, "evidence", key, value.into());
        self
    }

    /// The plugin's own identity for the finding; the supervisor derives one if unset.
    pub fn fingerprint(self, fingerprint: impl Into<String>) -> Finding {
        self.field("fingerprint", Value::String(fingerprint.into()))
    }

    /// The tool's own output for this finding, kept verbatim.
    pub fn raw(self, raw: Value) -> Finding {
        self.field("raw", raw)
    }

    /// Sets any top-level field; the typed setters above are preferred.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Finding {
        self.fields.insert(key.into(), value.into());
        self
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.fields)
    }

    fn location(mut self, key: &str, value: Value) -> Finding {
        set_member(&mut self.fields, "location", key, value);
        self
    }

    fn push(mut self, key: &str, value: Value) -> Finding {
        let mut items = match self.fields.remove(key) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        items.push(value);
        self.fields.insert(key.into(), Value::Array(items));
        self
    }
}

impl From<Finding> for Value {
    fn from(finding: Finding) -> Value {
        finding.into_value()
    }
}

/// Sets `fields[object][key]`, creating the object (or replacing a non-object).
fn set_member(fields: &mut Map<String, Value>, object: &str, key: &str, value: Value) {
    let mut map = match fields.remove(object) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    map.insert(key.into(), value);
    fields.insert(object.into(), Value::Object(map));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_built_finding_has_every_required_field_and_the_schema_version() {
        let f = Finding::new("r.1", "Title", Severity::Critical, "http://h:1").into_value();
        assert_eq!(f["finding_schema_version"], "1.0.0");
        assert_eq!(f["rule_id"], "r.1");
        assert_eq!(f["title"], "Title");
        assert_eq!(f["severity"], "critical");
        assert_eq!(f["target"], "http://h:1");
    }

    #[test]
    fn optional_setters_fill_nested_objects_and_lists() {
        let f = Finding::new("r", "t", Severity::Info, "10.0.0.1:22")
            .location_ip("10.0.0.1")
            .location_port(22)
            .location_protocol("tcp")
            .tag("ssh")
            .tag("banner")
            .cve("CVE-2024-6387")
            .cve("CVE-2023-48795")
            .evidence("matched_at", "10.0.0.1:22")
            .confidence(Confidence::High)
            .into_value();
        assert_eq!(
            f["location"],
            json!({"ip": "10.0.0.1", "port": 22, "protocol": "tcp"})
        );
        assert_eq!(f["tags"], json!(["ssh", "banner"]));
        assert_eq!(
            f["vulnerabilities"],
            json!([{"cve": "CVE-2024-6387"}, {"cve": "CVE-2023-48795"}])
        );
        assert_eq!(f["evidence"]["matched_at"], "10.0.0.1:22");
        assert_eq!(f["confidence"], "high");
    }
}
