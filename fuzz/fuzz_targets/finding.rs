//! Fuzzes findings as plugins send them, through the supervisor's own path:
//! `schema::validate_finding` against `schemas/finding.json`, then
//! `finding::fingerprint` and `finding::severity` for the accepted ones.
//!
//! Beyond "no panic": the fingerprint is the plugin's own when it gives a
//! usable one, else 64 hex digits; it does not change under what it
//! normalises (fields outside the identity, CVE order and case, ASCII case,
//! the URL's query and fragment) and does change with what it must
//! distinguish (plugin, rule, the set of CVEs).

#![no_main]

use libfuzzer_sys::fuzz_target;
use secflow_plugin_sdk::protocol::Severity;
use secflow_core::finding::{fingerprint, normalize_url, severity, MAX_PLUGIN_FINGERPRINT};
use secflow_core::schema::validate_finding;
use serde_json::{json, Value};

/// Fields that say what a finding is like, not which one it is.
const NOT_IDENTITY: &[&str] = &[
    "title",
    "severity",
    "description",
    "remediation",
    "confidence",
    "tags",
    "references",
    "cpe",
    "evidence",
    "raw",
];

fn own_fingerprint(finding: &Value) -> Option<&str> {
    finding
        .get("fingerprint")
        .and_then(Value::as_str)
        .filter(|own| !own.is_empty() && own.len() <= MAX_PLUGIN_FINGERPRINT)
}

/// `finding` with every ASCII letter of `field` (a string) upper-cased.
fn upper(finding: &Value, pointer: &str) -> Value {
    let mut copy = finding.clone();
    if let Some(Value::String(s)) = copy.pointer_mut(pointer) {
        *s = s.to_ascii_uppercase();
    }
    copy
}

fn check_invariance(finding: &Value, print: &str) {
    let same = |changed: &Value, what: &str| {
        assert_eq!(fingerprint("fuzz", changed), print, "changed by {what}");
    };

    let mut bare = finding.clone();
    if let Some(object) = bare.as_object_mut() {
        for field in NOT_IDENTITY {
            object.remove(*field);
        }
    }
    same(&bare, "fields outside the identity");

    let mut reversed = finding.clone();
    if let Some(Value::Array(vulns)) = reversed.get_mut("vulnerabilities") {
        vulns.reverse();
        for v in vulns.iter_mut() {
            if let Some(Value::String(cve)) = v.get_mut("cve") {
                *cve = cve.to_ascii_lowercase();
            }
        }
    }
    same(&reversed, "CVE order and case");

    for pointer in [
        "/rule_id",
        "/target",
        "/location/url",
        "/location/host",
        "/location/ip",
    ] {
        same(&upper(finding, pointer), pointer);
    }

    if let Some(url) = finding.pointer("/location/url").and_then(Value::as_str) {
        let plain = url == url.trim() && !url.contains(['?', '#']);
        if plain && normalize_url(url).is_some() {
            let mut queried = finding.clone();
            queried["location"]["url"] = json!(format!("{url}?fuzz=1#part"));
            same(&queried, "the URL's query and fragment");
        }
    }
}

fn check_distinction(finding: &Value, print: &str) {
    assert_ne!(
        fingerprint("fuzz2", finding),
        print,
        "the plugin is ignored"
    );

    let mut other_rule = finding.clone();
    let rule = finding.get("rule_id").and_then(Value::as_str).unwrap_or("");
    other_rule["rule_id"] = json!(format!("{rule}x"));
    assert_ne!(
        fingerprint("fuzz", &other_rule),
        print,
        "the rule is ignored"
    );

    // A CVE id no CVE of the finding has (ids are compared case-insensitively).
    let fresh = "CVE-1999-0000000";
    let known = finding
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                v.get("cve")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.eq_ignore_ascii_case(fresh))
            })
        });
    if !known {
        let mut more = finding.clone();
        let vulns = more
            .as_object_mut()
            .expect("a valid finding is an object")
            .entry("vulnerabilities")
            .or_insert_with(|| json!([]));
        if let Value::Array(vulns) = vulns {
            vulns.push(json!({ "cve": fresh }));
            assert_ne!(fingerprint("fuzz", &more), print, "a new CVE is ignored");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Any text is also a URL to normalise.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(url) = normalize_url(text) {
            assert!(url.contains("://") && url.contains('/'));
        }
    }

    let Ok(finding) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if validate_finding(&finding).is_err() {
        return;
    }
    let print = fingerprint("fuzz", &finding);
    assert_eq!(fingerprint("fuzz", &finding), print, "not deterministic");

    let sev = finding.get("severity").and_then(Value::as_str);
    assert_eq!(Some(severity(&finding)), sev.and_then(Severity::parse));

    match own_fingerprint(&finding) {
        Some(own) => assert_eq!(print, own),
        None => {
            assert_eq!(print.len(), 64);
            assert!(print
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            check_invariance(&finding, &print);
            check_distinction(&finding, &print);
        }
    }
});
