//! `secflow plugin check`: every rule of the protocol contract that a plugin
//! breaks shows up as the matching failed check with a hint, and a non-zero
//! exit; the example plugins (Rust and Python) pass every check.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::{fixture_config_schema, json_of, workspace_bin, workspace_root, TestBed};

/// A manifest for `name` in the bed, with the fixture knobs (`overrides`
/// replaces top-level fields).
fn manifest(bed: &TestBed, name: &str, overrides: Value) -> PathBuf {
    let mut doc = json!({
        "name": name,
        "version": "1.0.0",
        "category": "detector",
        "entrypoint": name,
        "config_schema": fixture_config_schema(),
        "signature_type": "sha256",
        "sandbox": {"network": false, "filesystem": "readonly", "timeout_seconds": 5},
    });
    if let Value::Object(fields) = overrides {
        for (k, v) in fields {
            doc[k] = v;
        }
    }
    let path = bed.path().join(format!("{name}.manifest.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    path
}

/// Runs the check and returns its exit status and JSON report.
fn check(bed: &TestBed, executable: &Path, manifest: Option<&Path>) -> (i32, Value) {
    let exe = executable.to_string_lossy().into_owned();
    let mut args = vec!["--json", "plugin", "check", exe.as_str()];
    let manifest = manifest.map(|m| m.to_string_lossy().into_owned());
    if let Some(m) = &manifest {
        args.extend(["--manifest", m.as_str()]);
    }
    let out = bed.secflow(&args);
    (out.status.code().unwrap_or(-1), json_of(&out))
}

fn verdict<'a>(report: &'a Value, id: &str) -> &'a Value {
    let item = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"));
    &item["verdict"]
}

fn details(report: &Value, id: &str) -> String {
    let item = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["id"] == id))
        .unwrap();
    item["details"].to_string()
}

/// Asserts a failed check `id` with its hint, and a failed exit.
fn assert_fails(status: i32, report: &Value, id: &str) {
    assert_eq!(status, 1, "{report:#}");
    assert_eq!(verdict(report, id), "fail", "{report:#}");
    let item = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["id"] == id))
        .unwrap();
    assert!(
        item["hint"].as_str().is_some_and(|h| !h.is_empty()),
        "{item}"
    );
}

fn assert_all_pass(status: i32, report: &Value) {
    for item in report["checks"].as_array().unwrap() {
        assert_eq!(item["verdict"], "pass", "{item} in {report:#}");
    }
    assert_eq!(status, 0, "{report:#}");
}

fn fixture(name: &str) -> PathBuf {
    workspace_bin(name)
}

#[test]
fn the_minimal_rust_example_passes_every_check_with_its_manifest() {
    let bed = TestBed::new();
    let manifest = workspace_root().join("plugins/examples/minimal-detector/manifest.json");
    let (status, report) = check(&bed, &workspace_bin("minimal-detector"), Some(&manifest));
    assert_all_pass(status, &report);
    assert_eq!(report["plugin"]["name"], "minimal-detector");
    assert_eq!(report["identity_source"], "manifest");
}

#[test]
fn the_python_example_passes_every_check_with_its_manifest() {
    let bed = TestBed::new();
    let dir = workspace_root().join("plugins/examples/python-detector");
    let (status, report) = check(
        &bed,
        &dir.join("detector.py"),
        Some(&dir.join("manifest.json")),
    );
    assert_all_pass(status, &report);
    assert_eq!(report["plugin"]["name"], "python-detector");
}

#[test]
fn without_a_manifest_the_identity_is_learned_from_initialize() {
    let bed = TestBed::new();
    let (status, report) = check(&bed, &workspace_bin("minimal-detector"), None);
    assert_all_pass(status, &report);
    assert_eq!(report["identity_source"], "learned");
    assert_eq!(report["plugin"]["version"], "1.0.0");
}

#[test]
fn a_plugin_claiming_another_identity_fails_initialize() {
    let bed = TestBed::new();
    let m = manifest(&bed, "fixture-liar", json!({}));
    let (status, report) = check(&bed, &fixture("fixture-liar"), Some(&m));
    assert_fails(status, &report, "initialize");
    assert!(
        details(&report, "initialize").contains("someone-else"),
        "{report:#}"
    );
}

#[test]
fn a_gap_in_seq_fails_the_seq_check_naming_the_seq_due() {
    let bed = TestBed::new();
    let m = manifest(&bed, "fixture-seq-gap", json!({}));
    let (status, report) = check(&bed, &fixture("fixture-seq-gap"), Some(&m));
    assert_fails(status, &report, "seq");
    assert!(
        details(&report, "seq").contains("seq 4 where 3 was due"),
        "{report:#}"
    );
    assert_eq!(verdict(&report, "count"), "pass");
}

#[test]
fn a_wrong_findings_count_fails_the_count_check() {
    let bed = TestBed::new();
    let m = manifest(&bed, "fixture-count-liar", json!({}));
    let (status, report) = check(&bed, &fixture("fixture-count-liar"), Some(&m));
    assert_fails(status, &report, "count");
    assert!(
        details(&report, "count").contains("findings = 5 but 2"),
        "{report:#}"
    );
    assert_eq!(verdict(&report, "seq"), "pass");
}

#[test]
fn schema_invalid_findings_fail_the_schema_check_with_instance_paths() {
    let bed = TestBed::new();
    let m = manifest(&bed, "fixture-invalid-findings", json!({}));
    let (status, report) = check(&bed, &fixture("fixture-invalid-findings"), Some(&m));
    assert_fails(status, &report, "schema");
    let schema = details(&report, "schema");
    assert!(schema.contains("/severity"), "{schema}");
    assert!(schema.contains("/finding_schema_version"), "{schema}");
    assert!(
        schema.contains("(document)"),
        "a missing field is reported on the document: {schema}"
    );
}

#[test]
fn a_plugin_ignoring_cancel_fails_the_cancel_check() {
    let bed = TestBed::new();
    let m = manifest(
        &bed,
        "fixture-sleeper",
        json!({"sandbox": {"network": false, "filesystem": "readonly", "timeout_seconds": 1}}),
    );
    let (status, report) = check(&bed, &fixture("fixture-sleeper"), Some(&m));
    assert_fails(status, &report, "cancel");
    assert!(
        details(&report, "cancel").contains("grace period"),
        "{report:#}"
    );
}

#[test]
fn a_plugin_ignoring_end_of_input_fails_the_eof_check_only() {
    let bed = TestBed::new();
    let m = manifest(&bed, "fixture-eof-deaf", json!({}));
    let (status, report) = check(&bed, &fixture("fixture-eof-deaf"), Some(&m));
    assert_fails(status, &report, "eof");
    for id in ["initialize", "run", "shutdown", "cancel", "stdout"] {
        assert_eq!(verdict(&report, id), "pass", "{id}: {report:#}");
    }
}

#[test]
fn stray_text_on_stdout_fails_the_stdout_check_quoting_it() {
    let bed = TestBed::new();
    let m = manifest(&bed, "fixture-garbage", json!({}));
    let (status, report) = check(&bed, &fixture("fixture-garbage"), Some(&m));
    assert_fails(status, &report, "stdout");
    assert!(
        details(&report, "stdout").contains("this is not json"),
        "{report:#}"
    );
    assert_eq!(verdict(&report, "json_rpc"), "pass");
}

#[test]
fn a_message_that_is_not_json_rpc_2_fails_the_json_rpc_check() {
    let bed = TestBed::new();
    let mut schema = fixture_config_schema();
    schema["kind"] = json!({"type": "string", "default": "jsonrpc"});
    let m = manifest(&bed, "fixture-garbage", json!({"config_schema": schema}));
    let (status, report) = check(&bed, &fixture("fixture-garbage"), Some(&m));
    assert_fails(status, &report, "json_rpc");
    assert_eq!(verdict(&report, "stdout"), "pass");
}

#[test]
fn a_plugin_exiting_before_answering_run_fails_the_run_check_naming_the_status() {
    let bed = TestBed::new();
    let m = manifest(&bed, "fixture-crasher", json!({}));
    let (status, report) = check(&bed, &fixture("fixture-crasher"), Some(&m));
    assert_fails(status, &report, "run");
    assert!(details(&report, "run").contains("status 3"), "{report:#}");
}

#[test]
fn println_in_an_sdk_plugin_is_kept_off_the_protocol_stream() {
    let bed = TestBed::new();
    let m = manifest(&bed, "fixture-stray-stdout", json!({}));
    let (status, report) = check(&bed, &fixture("fixture-stray-stdout"), Some(&m));
    assert_all_pass(status, &report);
}

#[test]
fn the_text_checklist_marks_failures_with_a_hint() {
    let bed = TestBed::new();
    let m = manifest(&bed, "fixture-seq-gap", json!({}));
    let exe = fixture("fixture-seq-gap");
    let out = bed.secflow(&[
        "plugin",
        "check",
        exe.to_str().unwrap(),
        "--manifest",
        m.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("[FAIL] seq"), "{text}");
    assert!(text.contains("hint: "), "{text}");
    assert!(text.contains("[pass] initialize"), "{text}");
}
