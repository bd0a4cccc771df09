//! The foundation's promises, end to end: manifests and verification, the
//! protocol with real plugin executables, the run outcomes of the error table in
//! architecture.md, findings storage and dedup, and the `secflow` CLI.

mod support;

use secflow_core::record::{ErrorKind, RunStatus};
use secflow_core::PluginStatus;
use serde_json::{json, Map, Value};
use support::*;

const DETECTOR: &str = env!("CARGO_BIN_EXE_fixture-detector");
const CRASHER: &str = env!("CARGO_BIN_EXE_fixture-crasher");
const SLEEPER: &str = env!("CARGO_BIN_EXE_fixture-sleeper");
const LIAR: &str = env!("CARGO_BIN_EXE_fixture-liar");
const INVALID: &str = env!("CARGO_BIN_EXE_fixture-invalid-findings");
const OVERSIZE: &str = env!("CARGO_BIN_EXE_fixture-oversize");
const GARBAGE: &str = env!("CARGO_BIN_EXE_fixture-garbage");
const MARKER: &str = env!("CARGO_BIN_EXE_fixture-marker");
const STRAY: &str = env!("CARGO_BIN_EXE_fixture-stray-stdout");
const SEQ_GAP: &str = env!("CARGO_BIN_EXE_fixture-seq-gap");
const COUNT_LIAR: &str = env!("CARGO_BIN_EXE_fixture-count-liar");

fn status_of<'a>(
    entries: &'a [secflow_runner::registry::PluginEntry],
    name: &str,
) -> &'a secflow_runner::registry::PluginEntry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_detector_run_twice_stores_each_finding_once_with_two_occurrences() {
    let bed = TestBed::new();
    bed.install_fixture("detector", DETECTOR);
    let supervisor = bed.supervisor().await;

    let first = run(&supervisor, "detector", json!({"count": 1000})).await;
    assert_eq!(first.status, RunStatus::Succeeded, "{first:?}");
    assert_eq!(first.findings, 1000);
    let second = run(&supervisor, "detector", json!({"count": 1000})).await;
    assert_eq!(second.status, RunStatus::Succeeded, "{second:?}");
    assert_eq!(second.findings, 1000);

    let seen = findings_of(&supervisor, &second.run_id);
    assert_eq!(
        seen.len(),
        1000,
        "the second run reports the same 1000 findings"
    );
    assert!(
        seen.iter().all(|f| f.occurrences == 2),
        "every finding was seen twice"
    );
    let all = supervisor
        .store()
        .findings(&secflow_store::FindingQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.findings.len(), 1000);
    assert!(
        all.next.is_none() || {
            let rest = supervisor
                .store()
                .findings(&secflow_store::FindingQuery {
                    after: all.next,
                    ..Default::default()
                })
                .unwrap();
            rest.findings.is_empty()
        },
        "1000 rows in all, not 2000"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successful_run_records_resources_telemetry_and_an_invocation_audit() {
    let bed = TestBed::new();
    bed.install_fixture("detector", DETECTOR);
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "detector", json!({"count": 3})).await;
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(record.exit_code, Some(0));
    assert!(!record.partial);
    assert_eq!(record.outputs.get("emitted"), Some(&json!(3)));
    assert!(record.memory_mb > 0, "peak RSS is recorded");
    assert!(record.finished_at.is_some());
    let stored = supervisor
        .store()
        .run(&record.run_id)
        .unwrap()
        .expect("run stored");
    assert_eq!(stored, record);
    supervisor.flush().await.unwrap();
    let telemetry = supervisor
        .store()
        .telemetry(&secflow_store::TelemetryQuery {
            run_id: Some(record.run_id.clone()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(telemetry.len(), 1);
    assert_eq!(telemetry[0].event, "plugin_executed");
    assert!(telemetry[0].success);
    assert_eq!(telemetry[0].findings_processed, 3);
    let invoked = audit_events(&supervisor, "plugin_invoked");
    assert!(invoked
        .iter()
        .any(|e| e.run_id.as_deref() == Some(record.run_id.as_str())));
    let work_root = bed.path().join("var/runs");
    let left = leftover_run_dirs(&work_root);
    assert!(left.is_empty(), "the run's work dir is removed: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_manifest_is_rejected_naming_the_field_and_the_others_still_load() {
    let bed = TestBed::new();
    bed.install_fixture("good", DETECTOR);
    bed.install(Install {
        overrides: json!({"category": "scanner"}),
        ..Install::new("bad-category", DETECTOR)
    });
    std::fs::create_dir_all(bed.plugin_dir("garbled")).unwrap();
    std::fs::write(
        bed.plugin_dir("garbled").join("manifest.json"),
        "{ not json",
    )
    .unwrap();
    let supervisor = bed.supervisor().await;
    let entries = supervisor.plugins();
    assert_eq!(status_of(&entries, "good").status, PluginStatus::Active);
    let bad = status_of(&entries, "bad-category");
    assert_eq!(bad.status, PluginStatus::Rejected);
    let reason = bad.reason.as_deref().unwrap();
    assert!(reason.contains("category"), "{reason}");
    assert!(
        reason.contains("manifest.json"),
        "the reason names the file: {reason}"
    );
    assert_eq!(
        status_of(&entries, "garbled").status,
        PluginStatus::Rejected
    );
    assert!(!audit_events(&supervisor, "plugin_rejected").is_empty());
    assert_eq!(
        run(&supervisor, "good", json!({"count": 1})).await.status,
        RunStatus::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_dependency_makes_the_plugin_unavailable_and_its_runs_rejected() {
    let bed = TestBed::new();
    bed.install(Install {
        dependencies: vec!["secflow-no-such-tool"],
        config_schema: fixture_config_schema(),
        ..Install::new("needs-tool", DETECTOR)
    });
    let supervisor = bed.supervisor().await;
    let entry = status_of(&supervisor.plugins(), "needs-tool").clone();
    assert_eq!(entry.status, PluginStatus::Unavailable);
    assert!(entry.reason.unwrap().contains("secflow-no-such-tool"));
    let record = run(&supervisor, "needs-tool", json!({})).await;
    assert_eq!(record.status, RunStatus::Rejected);
    assert_eq!(record.error.unwrap().kind, ErrorKind::DependencyMissing);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_swapped_after_registration_is_never_executed() {
    let bed = TestBed::new();
    bed.install_fixture("swapped", DETECTOR);
    let supervisor = bed.supervisor().await;
    assert_eq!(
        status_of(&supervisor.plugins(), "swapped").status,
        PluginStatus::Active
    );

    // Replace the registered executable with one that leaves a mark if run.
    let witness = Witness::new();
    let installed = bed.plugin_dir("swapped").join("fixture-detector");
    std::fs::remove_file(&installed).unwrap();
    std::fs::copy(MARKER, &installed).unwrap();
    witness.watch(&installed);

    let record = run(&supervisor, "swapped", json!({})).await;
    assert_eq!(record.status, RunStatus::Rejected);
    assert_eq!(record.error.as_ref().unwrap().kind, ErrorKind::HashMismatch);
    assert_eq!(witness.runs(), 0, "the swapped binary must never run");
    supervisor.flush().await.unwrap();
    let events = audit_events(&supervisor, "hash_mismatch");
    assert!(
        events
            .iter()
            .any(|e| e.security && e.run_id.as_deref() == Some(record.run_id.as_str())),
        "{events:?}"
    );

    // The marker does leave its mark when it runs: the check above can fail.
    install_marker(&bed, "marker", &witness);
    supervisor.reload().await.unwrap();
    let ran = run(&supervisor, "marker", json!({})).await;
    assert_eq!(ran.status, RunStatus::Succeeded, "{ran:?}");
    assert_eq!(witness.runs(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_whose_hash_does_not_match_is_rejected_at_discovery() {
    let bed = TestBed::new();
    let manifest = bed.install_fixture("tampered", DETECTOR);
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    doc["code_hash"] = json!(format!("sha256:{}", "0".repeat(64)));
    std::fs::write(&manifest, doc.to_string()).unwrap();
    let supervisor = bed.supervisor().await;
    let entry = status_of(&supervisor.plugins(), "tampered").clone();
    assert_eq!(entry.status, PluginStatus::Rejected);
    assert!(entry.reason.unwrap().contains("code_hash"));
    let events = audit_events(&supervisor, "plugin_rejected");
    assert!(
        events
            .iter()
            .any(|e| e.security && e.plugin.as_deref() == Some("tampered")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_manifest_is_rejected_and_never_runs() {
    let bed = TestBed::new();
    let witness = Witness::new();
    let manifest = install_marker(&bed, "expired", &witness);
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    doc["expires_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(&manifest, doc.to_string()).unwrap();
    let supervisor = bed.supervisor().await;
    let entry = status_of(&supervisor.plugins(), "expired").clone();
    assert_eq!(entry.status, PluginStatus::Rejected);
    assert!(entry.reason.unwrap().contains("expires_at"));
    let record = run(&supervisor, "expired", json!({})).await;
    assert_eq!(record.status, RunStatus::Rejected);
    assert_eq!(witness.runs(), 0, "an expired plugin never runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_claims_another_identity_is_rejected() {
    let bed = TestBed::new();
    bed.install_fixture("liar", LIAR);
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "liar", json!({})).await;
    assert_eq!(record.status, RunStatus::Rejected, "{record:?}");
    let error = record.error.unwrap();
    assert_eq!(error.kind, ErrorKind::IdentityMismatch);
    assert!(error.message.contains("someone-else"), "{}", error.message);
    supervisor.flush().await.unwrap();
    assert!(audit_events(&supervisor, "identity_mismatch")
        .iter()
        .any(|e| e.security));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_keeps_the_findings_sent_before_the_deadline() {
    let bed = TestBed::new();
    bed.install_fixture("sleeper", SLEEPER);
    let supervisor = bed.supervisor().await;
    let started = std::time::Instant::now();
    let record = run_with(
        &supervisor,
        "sleeper",
        json!({"before_sleep": 2}),
        Map::new(),
        Some(800),
    )
    .await;
    assert_eq!(record.status, RunStatus::TimedOut, "{record:?}");
    assert!(record.partial);
    assert_eq!(record.error.as_ref().unwrap().kind, ErrorKind::Timeout);
    assert_eq!(record.findings, 2);
    assert_eq!(findings_of(&supervisor, &record.run_id).len(), 2);
    // Deadline 0.8 s + grace 0.5 s, then the kill: bounded, not the sleeper's forever.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        record.signal,
        Some(9),
        "a plugin that ignores cancel and SIGTERM is killed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_keeps_the_findings_sent_before_it() {
    let bed = TestBed::new();
    bed.install_fixture("crasher", CRASHER);
    let supervisor = bed.supervisor().await;
    for (mode, exit, signal) in [("exit", Some(3), None), ("abort", None, Some(6))] {
        let record = run(
            &supervisor,
            "crasher",
            json!({"before_crash": 3, "mode": mode}),
        )
        .await;
        assert_eq!(record.status, RunStatus::Failed, "{mode}: {record:?}");
        assert_eq!(
            record.error.as_ref().unwrap().kind,
            ErrorKind::PluginCrashed,
            "{mode}"
        );
        assert!(record.partial);
        assert_eq!(record.findings, 3, "{mode}");
        assert_eq!((record.exit_code, record.signal), (exit, signal), "{mode}");
        assert_eq!(findings_of(&supervisor, &record.run_id).len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_line_is_a_protocol_violation() {
    let bed = TestBed::new();
    bed.install_fixture("oversize", OVERSIZE);
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "oversize", json!({"bytes": 100 << 20})).await;
    assert_eq!(record.status, RunStatus::Failed, "{record:?}");
    let error = record.error.unwrap();
    assert_eq!(error.kind, ErrorKind::ProtocolViolation);
    assert!(
        error.message.contains("max_message_bytes"),
        "{}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_findings_are_counted_and_valid_ones_stored() {
    let bed = TestBed::new();
    bed.install_fixture("mixed", INVALID);
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "mixed", json!({"valid": 5, "invalid": 3})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    assert_eq!(record.findings, 5);
    assert_eq!(record.findings_rejected, 3);
    assert_eq!(findings_of(&supervisor, &record.run_id).len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_breaches_fail_the_run_and_keep_earlier_findings() {
    let bed = TestBed::new();
    bed.install_fixture("garbage", GARBAGE);
    bed.install_fixture("seq-gap", SEQ_GAP);
    bed.install_fixture("count-liar", COUNT_LIAR);
    let supervisor = bed.supervisor().await;
    for (plugin, config, kept) in [
        ("garbage", json!({"kind": "json"}), 1),
        ("garbage", json!({"kind": "jsonrpc"}), 1),
        ("garbage", json!({"kind": "unknown"}), 1),
        ("seq-gap", json!({}), 2),
        ("count-liar", json!({}), 2),
    ] {
        let record = run(&supervisor, plugin, config.clone()).await;
        assert_eq!(
            record.status,
            RunStatus::Failed,
            "{plugin} {config}: {record:?}"
        );
        assert_eq!(
            record.error.as_ref().unwrap().kind,
            ErrorKind::ProtocolViolation,
            "{plugin} {config}"
        );
        assert_eq!(record.findings, kept, "{plugin} {config}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stray_stdout_text_in_an_sdk_plugin_does_not_corrupt_the_protocol() {
    let bed = TestBed::new();
    bed.install_fixture("stray", STRAY);
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "stray", json!({})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    assert!(
        record.stderr_tail.contains("stray text"),
        "stray prints land on stderr: {:?}",
        record.stderr_tail
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_plugin_written_from_the_protocol_doc_runs() {
    let bed = TestBed::new();
    let script = workspace_root().join("tests/plugins/python_detector.py");
    bed.install(Install {
        config_schema: fixture_config_schema(),
        ..Install::new("python-detector", script)
    });
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "python-detector", json!({"count": 4})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    assert_eq!(record.findings, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_that_breaks_the_config_schema_is_rejected_before_spawning() {
    let bed = TestBed::new();
    let witness = Witness::new();
    install_marker(&bed, "marker", &witness);
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "marker", json!({"count": "many"})).await;
    assert_eq!(record.status, RunStatus::Rejected);
    let error = record.error.unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidConfig);
    assert!(error.message.contains("count"), "{}", error.message);
    assert_eq!(
        witness.runs(),
        0,
        "an invalid config stops the run before it starts"
    );
    assert_eq!(
        run(&supervisor, "marker", json!({"count": 1})).await.status,
        RunStatus::Succeeded
    );
    assert_eq!(
        witness.runs(),
        1,
        "the same plugin with a valid config does run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_is_recorded_cancelled_with_its_findings() {
    let bed = TestBed::new();
    bed.install_fixture("slow", DETECTOR);
    let supervisor = std::sync::Arc::new(bed.supervisor().await);
    let (cancel, cancel_rx) = tokio::sync::watch::channel(false);
    let request = secflow_runner::RunRequest {
        plugin: "slow".into(),
        config: json!({"count": 1000, "delay_ms": 20})
            .as_object()
            .cloned()
            .unwrap(),
        ..Default::default()
    };
    // Cancel once the run has visibly started: its first finding is stored.
    let watcher = supervisor.clone();
    let canceller = tokio::spawn(async move {
        let query = secflow_store::FindingQuery {
            plugin: Some("slow".into()),
            limit: Some(1),
            ..Default::default()
        };
        for _ in 0..500 {
            if !watcher
                .store()
                .findings(&query)
                .unwrap()
                .findings
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        cancel.send(true).unwrap();
        cancel
    });
    let record = supervisor.execute(request, cancel_rx).await.unwrap();
    drop(canceller.await);
    assert_eq!(record.status, RunStatus::Cancelled, "{record:?}");
    assert_eq!(record.error.as_ref().unwrap().kind, ErrorKind::Cancelled);
    assert!(record.findings > 0 && record.findings < 1000, "{record:?}");
    assert_eq!(
        findings_of(&supervisor, &record.run_id).len() as u64,
        record.findings
    );
    assert_eq!(
        record.exit_code,
        Some(0),
        "an SDK plugin answers cancel and exits cleanly"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_left_running_by_a_dead_supervisor_are_marked_interrupted() {
    let bed = TestBed::new();
    bed.install_fixture("detector", DETECTOR);
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "detector", json!({"count": 1})).await;
    let mut stale = record.clone();
    stale.run_id = "0190b2c4-0000-7000-8000-000000000001".into();
    stale.status = RunStatus::Running;
    supervisor
        .store()
        .writer()
        .send(secflow_store::WriteOp::RunStarted(stale.clone()))
        .await
        .unwrap();
    supervisor.flush().await.unwrap();
    drop(supervisor);
    let reopened = bed.supervisor().await;
    let after = reopened.store().run(&stale.run_id).unwrap().unwrap();
    assert_eq!(after.status, RunStatus::Failed);
    assert_eq!(after.error.unwrap().kind, ErrorKind::Interrupted);
    assert_eq!(
        reopened
            .store()
            .run(&record.run_id)
            .unwrap()
            .unwrap()
            .status,
        RunStatus::Succeeded
    );
}

#[test]
fn the_cli_runs_the_analytics_plugin_locally_and_prints_a_run_record() {
    let bed = TestBed::new();
    let staged = bed.secflow(&[
        "manifest",
        "stage",
        workspace_root()
            .join("manifests/analytics.json")
            .to_str()
            .unwrap(),
        "--bin-dir",
        target_dir().to_str().unwrap(),
        "--out",
        bed.path().join("plugins").to_str().unwrap(),
    ]);
    assert!(
        staged.status.success(),
        "{}",
        String::from_utf8_lossy(&staged.stderr)
    );
    let input = bed.path().join("findings.json");
    let findings: Vec<Value> = (0..6)
        .map(|i| {
            let severity = ["high", "low", "critical"][i % 3];
            json!({"finding_schema_version": "1.0.0", "rule_id": format!("r{}", i % 2), "title": "t",
                   "severity": severity, "target": format!("10.0.0.{}", i % 3)})
        })
        .collect();
    std::fs::write(
        &input,
        serde_json::to_string(&json!({"findings": findings})).unwrap(),
    )
    .unwrap();

    let out = bed.secflow(&[
        "run",
        "analytics",
        "--local",
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["plugin"], "analytics");
    let metrics = &record["outputs"]["metrics"];
    assert_eq!(metrics["total"], 6);
    assert_eq!(metrics["by_severity"]["critical"], 2);

    let runs = bed.secflow(&["runs", "--json", "--local"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], record["run_id"]);
    let human = bed.secflow(&["--json", "plugins", "--local"]);
    let plugins: Value = serde_json::from_slice(&human.stdout).unwrap();
    assert_eq!(plugins[0]["name"], "analytics");
    assert_eq!(plugins[0]["status"], "active");
}

#[test]
fn the_cli_exits_2_on_bad_input_naming_it() {
    let bed = TestBed::new();
    let out = bed.secflow(&["run", "nothing-here", "--local"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing-here"));
    let out = bed.secflow(&["run", "x", "--local", "--input", "/no/such/file.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.json"));
    let out = bed.secflow(&["manifest", "hash", "/no/such/binary"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_supervisor_on_the_same_database_is_refused() {
    let bed = TestBed::new();
    let first = bed.supervisor().await;
    let second = secflow_runner::Supervisor::open(bed.config()).await;
    let error = second.expect_err("one supervisor per database").to_string();
    assert!(error.contains("in use by another supervisor"), "{error}");
    drop(first);
    assert!(
        secflow_runner::Supervisor::open(bed.config()).await.is_ok(),
        "the lock goes with its owner"
    );
}
