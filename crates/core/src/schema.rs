//! The JSON Schemas (manifest, finding), compiled once, and the violations they
//! report.
//!
//! The schema files in `schemas/` are the contract plugin authors read, so the
//! supervisor embeds exactly those files instead of a second copy in Rust. They
//! are compiled on first use and shared for the life of the process. Every
//! schema, ours and the `config_schema` of manifests, is compiled the same way:
//! draft 2020-12, `format` asserted (so `date-time` is checked), linear-time
//! regular expressions (a manifest's `pattern` cannot make validation
//! backtrack), and no fetching of remote `$ref`s.

use std::fmt;
use std::sync::OnceLock;

use jsonschema::{PatternOptions, ValidationError, Validator};
use serde_json::Value;

/// Most violations reported for one document; the first ones are enough to fix
/// it, and a hostile document cannot make the report unbounded.
pub const MAX_VIOLATIONS: usize = 8;

/// Longest instance value quoted verbatim in a violation message.
const MAX_QUOTED_VALUE: usize = 64;

const FINDING_SCHEMA: &str = include_str!("../../../schemas/finding.json");
const MANIFEST_SCHEMA: &str = include_str!("../../../schemas/manifest.json");

/// One way a document fails its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// JSON pointer of the offending value (`/location/port`); empty for the
    /// document itself.
    pub instance_path: String,
    pub message: String,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.instance_path.is_empty() {
            write!(f, "(document): {}", self.message)
        } else {
            write!(f, "`{}`: {}", self.instance_path, self.message)
        }
    }
}

/// A schema that could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("invalid json schema: {message}")]
pub struct SchemaError {
    pub message: String,
}

/// A compiled JSON Schema (draft 2020-12, formats asserted).
#[derive(Debug)]
pub struct CompiledSchema {
    validator: Validator,
}

impl CompiledSchema {
    /// Compiles `schema`; it must itself be a valid draft 2020-12 schema.
    pub fn compile(schema: &Value) -> Result<CompiledSchema, SchemaError> {
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map_err(|e| SchemaError {
                message: format!(
                    "{}: {}",
                    display_path(e.instance_path().as_str()),
                    e.masked()
                ),
            })?;
        Ok(CompiledSchema { validator })
    }

    /// Checks `doc`; on failure, the first [`MAX_VIOLATIONS`] violations.
    pub fn validate(&self, doc: &Value) -> Result<(), Vec<SchemaViolation>> {
        // Most documents are valid: the short-circuiting check that tracks no
        // error locations decides them (every finding a plugin streams passes
        // here); only an invalid one pays for the collected report.
        if self.validator.is_valid(doc) {
            return Ok(());
        }
        let violations: Vec<SchemaViolation> = self
            .validator
            .iter_errors(doc)
            .take(MAX_VIOLATIONS)
            .map(|e| violation(&e))
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }
}

/// Checks a finding as a plugin sent it against `schemas/finding.json`.
///
/// A finding of the common shape is first checked by [`finding_is_plainly_valid`],
/// which can only say "valid"; everything it does not prove valid goes to the
/// compiled schema, which stays the authority (and gives the violations).
pub fn validate_finding(doc: &Value) -> Result<(), Vec<SchemaViolation>> {
    if finding_is_plainly_valid(doc) {
        return Ok(());
    }
    validate_finding_with_schema(doc)
}

/// Checks a finding with the compiled `schemas/finding.json` only.
pub fn validate_finding_with_schema(doc: &Value) -> Result<(), Vec<SchemaViolation>> {
    static FINDING: OnceLock<CompiledSchema> = OnceLock::new();
    FINDING
        .get_or_init(|| embedded(FINDING_SCHEMA))
        .validate(doc)
}

/// Whether `doc` is a finding of the shape detectors stream (the required
/// fields, `location`, the texts, the string arrays, `evidence`,
/// `fingerprint`, `raw`) that satisfies every bound `schemas/finding.json` sets
/// on it. A hand-written walk of the parsed document, several times cheaper
/// than the general validator on the ingestion hot path.
///
/// One-sided by design: `true` means valid; `false` only means "not proven
/// here" (another field such as `vulnerabilities`, a string longer in bytes
/// than its bound in characters, a port written `80.0`, …) and the caller asks
/// the schema. A test checks it against the schema on a corpus of valid and
/// invalid findings; a change to the schema must keep that test green.
pub fn finding_is_plainly_valid(doc: &Value) -> bool {
    let Value::Object(fields) = doc else {
        return false;
    };
    let mut required = 0;
    for (key, value) in fields {
        let ok = match key.as_str() {
            "finding_schema_version" => {
                required += 1;
                value.as_str() == Some("1.0.0")
            }
            "rule_id" => {
                required += 1;
                text(value, 1, 256)
            }
            "title" => {
                required += 1;
                text(value, 1, 1024)
            }
            "severity" => {
                required += 1;
                matches!(
                    value.as_str(),
                    Some("info" | "low" | "medium" | "high" | "critical" | "unknown")
                )
            }
            "target" => {
                required += 1;
                text(value, 1, 2048)
            }
            "location" => plain_location(value),
            "description" | "remediation" => text(value, 0, 65_536),
            "confidence" => matches!(value.as_str(), Some("low" | "medium" | "high")),
            "tags" => texts(value, 64, 1, 128),
            "references" => texts(value, 128, 1, 2048),
            "cpe" => texts(value, 64, 1, 512),
            "evidence" => plain_evidence(value),
            "fingerprint" => text(value, 1, 256),
            // Any JSON value.
            "raw" => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    // Each name appears once in a map, so five hits are the five required fields.
    required == 5
}

/// A string of `min..=max` characters. Bounds are in characters and `len` is
/// in bytes: a string within `max` bytes is within `max` characters, and a
/// non-empty one has at least one character; a longer one is left to the schema.
fn text(value: &Value, min: usize, max: usize) -> bool {
    matches!(value, Value::String(s) if s.len() >= min && s.len() <= max)
}

/// An array of at most `max_items` strings of `min..=max` characters.
fn texts(value: &Value, max_items: usize, min: usize, max: usize) -> bool {
    matches!(value, Value::Array(items)
        if items.len() <= max_items && items.iter().all(|i| text(i, min, max)))
}

fn plain_location(value: &Value) -> bool {
    let Value::Object(fields) = value else {
        return false;
    };
    fields.iter().all(|(key, value)| match key.as_str() {
        "url" | "path" => text(value, 0, 8192),
        "host" => text(value, 0, 255),
        "ip" => text(value, 0, 64),
        "protocol" | "method" => text(value, 0, 32),
        "parameter" => text(value, 0, 1024),
        "port" => value.as_u64().is_some_and(|p| p <= 65_535),
        _ => false,
    })
}

fn plain_evidence(value: &Value) -> bool {
    let Value::Object(fields) = value else {
        return false;
    };
    fields.len() <= 64
        && fields.iter().all(|(key, value)| match key.as_str() {
            "matched_at" => text(value, 0, 8192),
            "request" | "response" => text(value, 0, 1_048_576),
            "extracted" => texts(value, 256, 0, 8192),
            // Other evidence is free-form.
            _ => true,
        })
}

/// Checks a manifest document against `schemas/manifest.json`.
pub fn validate_manifest(doc: &Value) -> Result<(), Vec<SchemaViolation>> {
    static MANIFEST: OnceLock<CompiledSchema> = OnceLock::new();
    MANIFEST
        .get_or_init(|| embedded(MANIFEST_SCHEMA))
        .validate(doc)
}

/// Compiles a schema shipped inside this binary. These are constants checked by
/// the tests below, so failing here is a build defect, not an input error.
fn embedded(text: &str) -> CompiledSchema {
    let schema: Value = serde_json::from_str(text).expect("embedded schema is valid JSON");
    CompiledSchema::compile(&schema).expect("embedded schema compiles")
}

fn violation(error: &ValidationError<'_>) -> SchemaViolation {
    let shown = preview(error.instance());
    SchemaViolation {
        instance_path: error.instance_path().as_str().to_string(),
        message: error.masked_with(shown).to_string(),
    }
}

/// How an offending value appears in a message: short scalars verbatim, the
/// rest described, so a 64 KiB string does not end up in a log line.
fn preview(value: &Value) -> String {
    match value {
        Value::String(s) if s.chars().count() <= MAX_QUOTED_VALUE => {
            Value::String(s.clone()).to_string()
        }
        Value::String(s) => format!("a string of {} characters", s.chars().count()),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Object(_) => "the object".to_string(),
        Value::Number(_) | Value::Bool(_) | Value::Null => value.to_string(),
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "(schema)".to_string()
    } else {
        format!("`{path}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finding() -> Value {
        json!({
            "finding_schema_version": "1.0.0",
            "rule_id": "x-frame-options-missing",
            "title": "X-Frame-Options header missing",
            "severity": "low",
            "target": "http://127.0.0.1:8080/"
        })
    }

    fn paths(result: Result<(), Vec<SchemaViolation>>) -> Vec<String> {
        result
            .unwrap_err()
            .into_iter()
            .map(|v| v.instance_path)
            .collect()
    }

    #[test]
    fn the_embedded_schemas_are_valid_draft_2020_12() {
        for text in [FINDING_SCHEMA, MANIFEST_SCHEMA] {
            let schema: Value = serde_json::from_str(text).unwrap();
            jsonschema::draft202012::meta::validate(&schema).unwrap();
            CompiledSchema::compile(&schema).unwrap();
        }
    }

    #[test]
    fn a_minimal_finding_is_valid() {
        assert_eq!(validate_finding(&finding()), Ok(()));
    }

    #[test]
    fn a_full_finding_with_every_optional_field_is_valid() {
        let mut doc = finding();
        let extra = json!({
            "location": {"url": "http://h/p?q", "host": "h", "ip": "10.0.0.1", "port": 8080,
                         "protocol": "tcp", "path": "/p", "method": "GET", "parameter": "q"},
            "description": "d", "remediation": "r", "confidence": "high",
            "tags": ["headers"], "references": ["https://owasp.org"], "cpe": ["cpe:2.3:a:x:y:1"],
            "evidence": {"matched_at": "http://h/p", "request": "GET /", "response": "200",
                         "extracted": ["a"], "curl_command": "curl http://h/p"},
            "vulnerabilities": [{
                "cve": "CVE-2021-44228", "cwe": ["CWE-502", "NVD-CWE-Other"],
                "cvss": [{"version": "3.1", "vector": "CVSS:3.1/AV:N", "base_score": 10.0,
                          "severity": "CRITICAL", "source": "nvd"}],
                "cpe": ["cpe:2.3:a:apache:log4j:2.14"], "references": ["https://nvd.nist.gov"],
                "kev": {"date_added": "2021-12-10", "due_date": "2021-12-24"},
                "description": "log4shell"
            }],
            "fingerprint": "abc", "raw": {"anything": [1, 2]},
            "enrichment": {"cve-mapper": {"epss": 0.9}}
        });
        doc.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        assert_eq!(validate_finding(&doc), Ok(()));
    }

    #[test]
    fn a_finding_with_a_port_out_of_range_names_location_port() {
        let mut doc = finding();
        doc["location"] = json!({"port": 70000});
        let err = validate_finding(&doc).unwrap_err();
        assert_eq!(err[0].instance_path, "/location/port");
        let shown = err[0].to_string();
        assert!(shown.starts_with("`/location/port`: "), "{shown}");
        assert!(shown.contains("70000"), "{shown}");
    }

    #[test]
    fn a_finding_missing_required_fields_names_each_of_them() {
        let err = validate_finding(&json!({"finding_schema_version": "1.0.0"})).unwrap_err();
        let text: Vec<String> = err.iter().map(ToString::to_string).collect();
        for field in ["rule_id", "title", "severity", "target"] {
            assert!(
                text.iter().any(|t| t.contains(field)),
                "{field} not named in {text:?}"
            );
        }
    }

    #[test]
    fn a_wrong_schema_version_and_an_unknown_severity_are_rejected() {
        let mut doc = finding();
        doc["finding_schema_version"] = json!("2.0.0");
        doc["severity"] = json!("severe");
        let mut got = paths(validate_finding(&doc));
        got.sort();
        assert_eq!(got, vec!["/finding_schema_version", "/severity"]);
    }

    #[test]
    fn a_misspelt_top_level_field_is_rejected_by_name() {
        let mut doc = finding();
        doc["remediaton"] = json!("patch");
        let err = validate_finding(&doc).unwrap_err();
        assert!(err[0].message.contains("remediaton"), "{}", err[0]);
    }

    #[test]
    fn oversized_strings_and_arrays_are_rejected_without_quoting_them() {
        let mut doc = finding();
        doc["title"] = json!("t".repeat(1025));
        doc["tags"] = json!(vec!["x"; 65]);
        let err = validate_finding(&doc).unwrap_err();
        let mut got: Vec<&str> = err.iter().map(|v| v.instance_path.as_str()).collect();
        got.sort();
        assert_eq!(got, vec!["/tags", "/title"]);
        for v in &err {
            assert!(
                v.message.len() < 200,
                "message quotes the value: {}",
                v.message
            );
        }
    }

    #[test]
    fn at_most_eight_violations_are_reported() {
        let doc = json!({
            "finding_schema_version": 1, "rule_id": 1, "title": 1, "severity": 1, "target": 1,
            "description": 1, "remediation": 1, "confidence": 1, "tags": 1, "references": 1,
            "cpe": 1, "evidence": 1
        });
        assert_eq!(validate_finding(&doc).unwrap_err().len(), MAX_VIOLATIONS);
    }

    #[test]
    fn a_kev_date_and_a_cve_id_are_format_checked() {
        let mut doc = finding();
        doc["vulnerabilities"] = json!([{"cve": "log4shell", "kev": {"date_added": "yesterday"}}]);
        let mut got = paths(validate_finding(&doc));
        got.sort();
        assert_eq!(
            got,
            vec![
                "/vulnerabilities/0/cve",
                "/vulnerabilities/0/kev/date_added"
            ]
        );
    }

    /// Findings around the hot shape: valid ones, and one invalid variant per
    /// bound the fast path checks (and some it leaves to the schema).
    /// `base` with the member at `pointer` set to `value`.
    fn edited(base: &Value, pointer: &str, value: Value) -> Value {
        let mut doc = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        doc.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(key.to_string(), value);
        doc
    }

    /// `base` with `keys` members in its evidence.
    fn crowded(base: &Value, keys: usize) -> Value {
        let evidence = (0..keys).map(|i| (format!("k{i}"), json!(i))).collect();
        let mut doc = base.clone();
        doc["evidence"] = Value::Object(evidence);
        doc
    }

    fn corpus() -> Vec<Value> {
        let base = json!({
            "finding_schema_version": "1.0.0", "rule_id": "bench.exposed-file",
            "title": "Exposed file /item/1", "severity": "high",
            "target": "http://10.0.0.1:8080",
            "location": {"url": "http://10.0.0.1:8080/item/1", "host": "10.0.0.1", "ip": "10.0.0.1",
                         "port": 8080, "protocol": "tcp", "path": "/item/1", "method": "GET",
                         "parameter": "q"},
            "description": "d", "remediation": "r", "confidence": "high",
            "tags": ["exposure"], "references": ["https://owasp.org"], "cpe": ["cpe:2.3:a:x:y:1"],
            "evidence": {"matched_at": "http://h/p", "request": "GET /", "response": "200",
                         "extracted": ["200 OK"], "anything": {"free": [1, 2]}},
            "fingerprint": "abc", "raw": {"any": [null, 1.5]}
        });
        let mut corpus = vec![base.clone(), finding()];
        let long = |n: usize| Value::String("x".repeat(n));
        let wide = |n: usize| Value::String("é".repeat(n));
        let edits: Vec<(&str, Value)> = vec![
            ("/finding_schema_version", json!("1.0.1")),
            ("/finding_schema_version", json!(1)),
            ("/rule_id", json!("")),
            ("/rule_id", long(256)),
            ("/rule_id", long(257)),
            ("/rule_id", wide(200)),
            ("/rule_id", wide(257)),
            ("/rule_id", json!(null)),
            ("/title", long(1024)),
            ("/title", long(1025)),
            ("/title", json!(["t"])),
            ("/severity", json!("severe")),
            ("/severity", json!("unknown")),
            ("/severity", json!("HIGH")),
            ("/target", json!("")),
            ("/target", long(2049)),
            ("/location", json!("http://h/")),
            ("/location", json!({})),
            ("/location/port", json!(65535)),
            ("/location/port", json!(65536)),
            ("/location/port", json!(-1)),
            ("/location/port", json!(80.0)),
            ("/location/port", json!(80.5)),
            ("/location/port", json!("80")),
            ("/location/url", long(8193)),
            ("/location/host", long(256)),
            ("/location/ip", long(65)),
            ("/location/method", long(33)),
            ("/location/parameter", long(1025)),
            ("/location/extra", json!("x")),
            ("/description", long(65_537)),
            ("/description", json!(1)),
            ("/confidence", json!("certain")),
            ("/tags", json!([])),
            ("/tags", json!([""])),
            ("/tags", json!(vec!["t"; 65])),
            ("/tags", json!([1])),
            ("/references", json!([long(2049)])),
            ("/cpe", json!(vec!["c"; 65])),
            ("/evidence", json!([])),
            ("/evidence/matched_at", long(8193)),
            ("/evidence/extracted", json!(vec!["e"; 257])),
            ("/evidence/extracted", json!([1])),
            ("/fingerprint", json!("")),
            ("/fingerprint", long(257)),
            ("/raw", json!(null)),
            ("/remediaton", json!("patch")),
            ("/vulnerabilities", json!([{"cve": "CVE-2021-44228"}])),
            ("/vulnerabilities", json!([{"cve": "log4shell"}])),
            ("/enrichment", json!({"cve-mapper": {}})),
            ("/occurrences", json!(0)),
            ("/first_seen", json!("yesterday")),
            ("/hosts", json!(["scanner-a", "scanner-a"])),
            ("/hosts", json!([""])),
        ];
        corpus.extend(edits.into_iter().map(|(p, v)| edited(&base, p, v)));
        corpus.push(crowded(&base, 65));
        for field in [
            "finding_schema_version",
            "rule_id",
            "title",
            "severity",
            "target",
        ] {
            let mut doc = base.clone();
            doc.as_object_mut().unwrap().remove(field);
            corpus.push(doc);
        }
        corpus.extend([json!(null), json!([]), json!("finding"), json!({})]);
        corpus
    }

    #[test]
    fn the_fast_finding_check_never_accepts_what_the_schema_rejects() {
        let corpus = corpus();
        let mut proven = 0;
        for doc in &corpus {
            let schema = validate_finding_with_schema(doc);
            if finding_is_plainly_valid(doc) {
                proven += 1;
                assert_eq!(schema, Ok(()), "the fast path accepted {doc}");
            }
            // The entry point gives the schema's verdict, violations included.
            assert_eq!(validate_finding(doc), schema, "{doc}");
        }
        // The corpus is mostly invalid variants; of its valid members, all but
        // those it names as left to the schema are proven on the fast path.
        let valid = corpus
            .iter()
            .filter(|doc| validate_finding_with_schema(doc).is_ok())
            .count();
        assert_eq!(
            proven,
            valid - LEFT_TO_THE_SCHEMA,
            "{proven} of {valid} valid proven"
        );
    }

    /// Valid members of [`corpus`] the fast check does not prove: a wide
    /// `rule_id`, a port written `80.0`, `vulnerabilities` and `enrichment`.
    const LEFT_TO_THE_SCHEMA: usize = 4;

    /// Schema-valid findings of the shapes detectors stream: every optional
    /// field present or absent, every bound met exactly.
    fn common_shapes() -> Vec<Value> {
        let long = |n: usize| Value::String("x".repeat(n));
        let full = corpus().remove(0);
        let mut shapes = vec![full.clone(), finding()];
        for field in full.as_object().unwrap().keys() {
            if ![
                "finding_schema_version",
                "rule_id",
                "title",
                "severity",
                "target",
            ]
            .contains(&field.as_str())
            {
                let mut doc = full.clone();
                doc.as_object_mut().unwrap().remove(field);
                shapes.push(doc);
            }
        }
        let edits: Vec<(&str, Value)> = vec![
            ("/rule_id", long(256)),
            ("/rule_id", json!("é")),
            ("/title", long(1024)),
            ("/target", long(2048)),
            ("/severity", json!("info")),
            ("/severity", json!("low")),
            ("/severity", json!("medium")),
            ("/severity", json!("critical")),
            ("/severity", json!("unknown")),
            ("/confidence", json!("low")),
            ("/confidence", json!("medium")),
            ("/location", json!({})),
            ("/location/port", json!(0)),
            ("/location/port", json!(65535)),
            ("/location/url", long(8192)),
            ("/location/url", json!("")),
            ("/location/host", long(255)),
            ("/location/ip", long(64)),
            ("/location/protocol", long(32)),
            ("/location/method", long(32)),
            ("/location/parameter", long(1024)),
            ("/location/path", long(8192)),
            ("/description", long(65_536)),
            ("/remediation", json!("")),
            ("/tags", json!([])),
            ("/tags", json!(vec!["t"; 64])),
            ("/tags", json!([long(128)])),
            ("/references", json!(vec!["r"; 128])),
            ("/references", json!([long(2048)])),
            ("/cpe", json!(vec!["c"; 64])),
            ("/cpe", json!([long(512)])),
            ("/evidence", json!({})),
            ("/evidence/matched_at", long(8192)),
            ("/evidence/extracted", json!(vec![""; 256])),
            ("/evidence/extracted", json!([long(8192)])),
            ("/evidence/request", json!("")),
            ("/evidence/status", json!(200)),
            ("/fingerprint", long(256)),
            ("/raw", json!(null)),
            ("/raw", json!("text")),
            ("/raw", json!([1, -2.5, true, {"a": null}])),
        ];
        shapes.extend(edits.into_iter().map(|(p, v)| edited(&full, p, v)));
        shapes.push(crowded(&full, 64));
        shapes
    }

    #[test]
    fn every_common_finding_shape_is_proven_valid_on_the_fast_path() {
        for doc in common_shapes() {
            assert_eq!(validate_finding_with_schema(&doc), Ok(()), "{doc}");
            assert!(finding_is_plainly_valid(&doc), "not proven: {doc}");
        }
    }

    /// A value for a finding field: mostly near the bounds the fast check
    /// reads, of every JSON type.
    fn field_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-2i64..70_000).prop_map(|n| json!(n)),
            (-1.0e6f64..1.0e6).prop_map(|n| json!(n)),
            Just(json!(80.0)),
            prop_oneof![
                Just(0usize),
                Just(1),
                Just(32),
                Just(33),
                Just(64),
                Just(65),
                Just(128),
                Just(129),
                Just(255),
                Just(256),
                Just(257),
                Just(512),
                Just(513),
                Just(1024),
                Just(1025),
                Just(2048),
                Just(2049),
                Just(8192),
                Just(8193),
                0usize..300
            ]
            .prop_flat_map(|n| prop_oneof![
                Just("x".repeat(n)),
                Just("é".repeat(n)),
                Just("é".repeat(n / 2)),
            ])
            .prop_map(Value::String),
            prop_oneof![
                Just("1.0.0"),
                Just("1.0.1"),
                Just("high"),
                Just("low"),
                Just("unknown"),
                Just("HIGH"),
                Just("tcp"),
            ]
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 80, 70, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..70).prop_map(Value::Array),
                proptest::collection::btree_map(field_name(), inner, 0..70)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The names the schema and the fast check know, and a few they do not.
    fn field_name() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("finding_schema_version"),
            Just("rule_id"),
            Just("title"),
            Just("severity"),
            Just("target"),
            Just("location"),
            Just("url"),
            Just("host"),
            Just("ip"),
            Just("port"),
            Just("protocol"),
            Just("path"),
            Just("method"),
            Just("parameter"),
            Just("description"),
            Just("remediation"),
            Just("confidence"),
            Just("tags"),
            Just("references"),
            Just("cpe"),
            Just("evidence"),
            Just("matched_at"),
            Just("request"),
            Just("response"),
            Just("extracted"),
            Just("fingerprint"),
            Just("raw"),
            Just("vulnerabilities"),
            Just("enrichment"),
            Just("occurrences"),
            Just("other"),
        ]
        .prop_map(String::from)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Each field of a valid finding replaced by a generated value (or
        /// removed, or a generated field added): whatever the fast check
        /// proves, the schema accepts, and the entry point always gives the
        /// schema's verdict.
        #[test]
        fn the_fast_check_proves_only_what_the_schema_accepts(
            base in 0usize..48,
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), field_name(),
                 proptest::option::of(field_value())),
                1..4,
            ),
        ) {
            let shapes = common_shapes();
            let mut doc = shapes[base % shapes.len()].clone();
            for (at, name, value) in edits {
                // Edit the finding itself, or one of its objects.
                let mut objects = vec![String::new()];
                for (key, v) in doc.as_object().into_iter().flatten() {
                    if v.is_object() {
                        objects.push(format!("/{key}"));
                    }
                }
                let pointer = at.get(&objects).clone();
                let Some(Value::Object(target)) = doc.pointer_mut(&pointer) else {
                    continue;
                };
                match value {
                    Some(value) => target.insert(name, value),
                    None => target.remove(&name),
                };
            }
            let schema = validate_finding_with_schema(&doc);
            if finding_is_plainly_valid(&doc) {
                proptest::prop_assert_eq!(&schema, &Ok(()), "the fast path accepted {}", doc);
            }
            proptest::prop_assert_eq!(validate_finding(&doc), schema);
        }
    }

    #[test]
    fn what_the_fast_check_leaves_out_is_still_decided_by_the_schema() {
        let mut wide = finding();
        wide["rule_id"] = Value::String("é".repeat(200));
        assert!(!finding_is_plainly_valid(&wide));
        assert_eq!(validate_finding(&wide), Ok(()));
        let mut cve = finding();
        cve["vulnerabilities"] = json!([{"cve": "log4shell"}]);
        assert!(!finding_is_plainly_valid(&cve));
        assert_eq!(
            paths(validate_finding(&cve)),
            vec!["/vulnerabilities/0/cve"]
        );
    }

    #[test]
    fn a_manifest_with_a_bad_date_time_names_the_field() {
        let doc = json!({
            "name": "ferox", "version": "1.0.0", "category": "detector", "entrypoint": "bin/ferox",
            "code_hash": format!("sha256:{}", "0".repeat(64)), "expires_at": "next tuesday"
        });
        assert_eq!(paths(validate_manifest(&doc)), vec!["/expires_at"]);
    }

    #[test]
    fn a_manifest_name_must_be_lowercase_and_at_most_64_characters() {
        for bad in ["Ferox", "", "-x", &"a".repeat(65), "a/b"] {
            let doc = json!({
                "name": bad, "version": "1.0.0", "category": "detector", "entrypoint": "x",
                "code_hash": format!("sha256:{}", "0".repeat(64))
            });
            assert_eq!(paths(validate_manifest(&doc)), vec!["/name"], "{bad}");
        }
    }

    #[test]
    fn a_config_schema_is_compiled_and_reports_the_key() {
        let schema = CompiledSchema::compile(&json!({
            "type": "object",
            "properties": {"threads": {"type": "integer", "minimum": 1}},
            "additionalProperties": false
        }))
        .unwrap();
        assert_eq!(schema.validate(&json!({"threads": 4})), Ok(()));
        assert_eq!(
            paths(schema.validate(&json!({"threads": 0}))),
            vec!["/threads"]
        );
    }

    #[test]
    fn an_invalid_schema_does_not_compile() {
        let err = CompiledSchema::compile(&json!({"type": "integr"})).unwrap_err();
        assert!(err.to_string().starts_with("invalid json schema"), "{err}");
    }

    #[test]
    fn a_remote_ref_is_not_fetched() {
        assert!(
            CompiledSchema::compile(&json!({"$ref": "https://example.invalid/s.json"})).is_err()
        );
    }
}
