//! The generated findings: schema-valid, each at its own location (so each has
//! its own fingerprint), shaped like a web detector's output. One function
//! writes finding `i` as compact JSON, byte for byte the same in the plugin that
//! streams it and in the NDJSON file the other loaders read.

use std::io::Write;

/// Severities in the order the findings cycle through them.
const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

/// Appends finding `i` (from 1) as one line of compact JSON, without newline.
pub fn write_finding(out: &mut Vec<u8>, i: u64) {
    let severity = SEVERITIES[(i % SEVERITIES.len() as u64) as usize];
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{{\"finding_schema_version\":\"1.0.0\",\"rule_id\":\"bench.exposed-file\",\
\"title\":\"Exposed file /item/{i}\",\"severity\":\"{severity}\",\
\"target\":\"http://10.0.0.1:8080\",\"location\":{{\"url\":\"http://10.0.0.1:8080/item/{i}\",\
\"host\":\"10.0.0.1\",\"port\":8080,\"path\":\"/item/{i}\",\"method\":\"GET\"}},\
\"description\":\"A file that should not be public answered 200.\",\"confidence\":\"high\",\
\"tags\":[\"exposure\",\"bench\"],\"evidence\":{{\"matched_at\":\"http://10.0.0.1:8080/item/{i}\",\
\"extracted\":[\"200 OK\"]}}}}"
    );
}

/// Finding `i` as a string (tests and the file writer).
pub fn finding(i: u64) -> String {
    let mut out = Vec::with_capacity(512);
    write_finding(&mut out, i);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn every_generated_finding_passes_the_finding_schema() {
        for i in [1, 2, 3, 4, 5, 999_999] {
            let doc: Value = serde_json::from_str(&finding(i)).unwrap();
            assert_eq!(secflow_core::schema::validate_finding(&doc), Ok(()), "{i}");
        }
    }

    #[test]
    fn generated_findings_have_distinct_fingerprints() {
        let a: Value = serde_json::from_str(&finding(7)).unwrap();
        let b: Value = serde_json::from_str(&finding(8)).unwrap();
        assert_ne!(
            secflow_core::finding::fingerprint("bench-streamer", &a),
            secflow_core::finding::fingerprint("bench-streamer", &b)
        );
    }
}
