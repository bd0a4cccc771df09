//! Fuzzes manifest files through the supervisor's own path:
//! `manifest::parse_manifest` (JSON, the manifest schema, the struct), then
//! the pure checks `manifest::load` runs next: `config_schema` compiled with
//! its defaults, the validity dates, the limits resolved against the config,
//! and the canonical bytes an ed25519 signature covers.
//!
//! Beyond "no panic": the parsed manifest round-trips through serde; a
//! `config_schema` that compiles must accept a config of its own defaults
//! (else every run of the plugin would be refused); resolved limits never pass
//! the ceiling and keep what the manifest lowered; canonical JSON is a fixed
//! point (canonicalizing its own output gives the same bytes).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use secflow_core::config::{LimitsConfig, RequestedLimits, RunLimits};
use secflow_manifest::{check_expiry, parse_manifest, ConfigSchema, Manifest};
use secflow_trust::{jcs, signed_bytes};
use serde::Deserialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

fn fields(l: &RunLimits) -> [u64; 6] {
    [
        l.memory_mb,
        l.cpu_seconds,
        l.timeout_seconds,
        l.max_processes,
        l.max_open_files,
        l.max_output_mb,
    ]
}

fn requested(r: &RequestedLimits) -> [Option<u64>; 6] {
    [
        r.memory_mb,
        r.cpu_seconds,
        r.timeout_seconds,
        r.max_processes,
        r.max_open_files,
        r.max_output_mb,
    ]
}

fn check_limits(requested_limits: &RequestedLimits, defaults: &RunLimits, ceiling: &RunLimits) {
    let (limits, capped) = RunLimits::resolve(requested_limits, defaults, ceiling);
    let asked = requested(requested_limits);
    let (got, default, max) = (fields(&limits), fields(defaults), fields(ceiling));
    let mut expected_caps = 0;
    for i in 0..6 {
        assert!(got[i] <= max[i], "limit {i} above the ceiling");
        match asked[i] {
            Some(v) if v > max[i] => expected_caps += 1,
            Some(v) => assert_eq!(got[i], v, "limit {i}: a lowered limit is kept"),
            None => assert_eq!(got[i], default[i].min(max[i]), "limit {i}: default"),
        }
    }
    assert_eq!(capped.len(), expected_caps);
    for cap in &capped {
        assert!(cap.requested > cap.ceiling);
    }
}

fn check_canonical(doc: &Map<String, Value>) {
    let Ok(text) = jcs::canonicalize(&Value::Object(doc.clone())) else {
        return;
    };
    let reparsed: Value = serde_json::from_str(&text).expect("canonical JSON parses");
    assert_eq!(
        jcs::canonicalize(&reparsed).as_deref(),
        Ok(text.as_str()),
        "canonical JSON is not a fixed point"
    );
    let signed = signed_bytes(doc).expect("what canonicalizes whole canonicalizes in part");
    assert!(serde_json::from_slice::<Value>(&signed).is_ok());
}

fuzz_target!(|data: &[u8]| {
    let Ok((doc, manifest)) = parse_manifest(Path::new("fuzz/manifest.json"), data) else {
        return;
    };

    let as_value = serde_json::to_value(&manifest).expect("a manifest serialises");
    let again = Manifest::deserialize(&as_value).expect("a serialised manifest parses");
    assert_eq!(again, manifest, "manifest serde round trip");

    if let Ok(schema) = ConfigSchema::new(&manifest.config_schema) {
        let merged = schema.apply(&Map::new());
        assert!(
            merged.is_ok(),
            "the defaults of a config_schema that compiled are refused: {merged:?}"
        );
        assert_eq!(merged.ok().as_ref(), Some(schema.defaults()));
    }

    for now in [OffsetDateTime::UNIX_EPOCH, OffsetDateTime::now_utc()] {
        let _ = check_expiry(&manifest, now);
    }

    let config = LimitsConfig::default();
    check_limits(
        &manifest.sandbox.limits,
        &config.defaults(),
        &config.ceiling,
    );
    // A host whose ceiling is below its defaults: defaults are capped too.
    let low = RunLimits {
        memory_mb: 64,
        cpu_seconds: 10,
        timeout_seconds: 30,
        max_processes: 4,
        max_open_files: 64,
        max_output_mb: 8,
    };
    check_limits(&manifest.sandbox.limits, &config.defaults(), &low);

    check_canonical(&doc);
});
