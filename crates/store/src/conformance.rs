//! The storage behaviour suite, written once against [`StoragePort`] (feature
//! `testkit`): what every backend must do, run by each backend's tests with
//! [`storage_suite!`](crate::storage_suite) over a [`StoreFixture`] that opens
//! that backend on a fresh, empty database.
//!
//! Each case is an `async fn` taking the fixture; the macro makes one
//! `#[tokio::test]` per case, so a failure names the case and the backend's
//! test binary.

use std::time::Duration;

use secflow_core::clock;
use secflow_core::record::{ErrorKind, RefusedEgress, RunError, RunRecord, RunStatus};
use secflow_plugin_sdk::protocol::{Category, Severity};
use serde_json::{json, Map, Value};

use crate::document::{INTERRUPTED_MESSAGE, MAX_LIMIT};
use crate::{
    AuditEvent, AuditQuery, FindingQuery, NewFinding, PluginState, RunQuery, StorageError,
    StoragePort, StoredFinding, TelemetryEvent, TelemetryQuery, WriteOp,
};

/// A backend opened on a database of its own for one test case.
pub trait StoreFixture: Send {
    /// The store, open.
    fn store(&self) -> &dyn StoragePort;
    /// Closes the store (committing what was queued, as dropping it does)
    /// and opens the same database again.
    fn reopen(&mut self);
    /// Closes the store; later sends on writers still held fail.
    fn close(&mut self);
    /// The host name the store writes as.
    fn host(&self) -> &str;
}

/// A run record as the runner queues it when a run starts.
pub fn started(run_id: &str, plugin: &str, category: Category) -> RunRecord {
    RunRecord {
        run_id: run_id.to_string(),
        plugin: plugin.to_string(),
        plugin_version: "1.0.0".to_string(),
        category,
        status: RunStatus::Running,
        partial: false,
        exit_code: None,
        signal: None,
        started_at: clock::now_rfc3339(),
        finished_at: None,
        duration_ms: 0,
        cpu_ms: 0,
        memory_mb: 0,
        findings: 0,
        findings_rejected: 0,
        outputs: Map::new(),
        error: None,
        stderr_tail: String::new(),
        workflow_id: None,
        node_id: None,
        refused_egress: Vec::new(),
    }
}

/// `record` ended cleanly.
pub fn succeeded(mut record: RunRecord) -> RunRecord {
    record.status = RunStatus::Succeeded;
    record.exit_code = Some(0);
    record.finished_at = Some(clock::now_rfc3339());
    record
}

/// A schema-valid finding with this fingerprint.
pub fn finding(fingerprint: &str, severity: Severity) -> NewFinding {
    NewFinding::new(
        fingerprint.to_string(),
        severity,
        json!({
            "finding_schema_version": "1.0.0",
            "rule_id": format!("rule-{fingerprint}"),
            "title": format!("finding {fingerprint}"),
            "severity": severity.as_str(),
            "target": "http://target.test/",
        }),
    )
}

/// A finding whose document has `extra` members, stored from a text of it
/// spaced as a plugin might have sent it.
pub fn finding_with(fingerprint: &str, severity: Severity, extra: Value) -> NewFinding {
    let mut document = finding(fingerprint, severity).document;
    for (key, value) in extra.as_object().into_iter().flatten() {
        document[key] = value.clone();
    }
    let text = serde_json::to_string_pretty(&document)
        .unwrap_or_default()
        .replace('\n', " ");
    NewFinding::with_json(fingerprint.to_string(), severity, document, text)
}

/// The findings op of a detector named `detector`.
pub fn findings_op(run_id: &str, findings: Vec<NewFinding>) -> WriteOp {
    WriteOp::Findings {
        run_id: run_id.to_string(),
        plugin: "detector".to_string(),
        plugin_version: "1.0.0".to_string(),
        findings,
    }
}

/// Runs a detector run that reports `findings`; its final record.
pub async fn detector_run(
    store: &dyn StoragePort,
    run_id: &str,
    findings: Vec<NewFinding>,
) -> RunRecord {
    let writer = store.writer();
    let record = started(run_id, "detector", Category::Detector);
    writer
        .send(WriteOp::RunStarted(record.clone()))
        .await
        .expect("run started");
    writer
        .send(findings_op(run_id, findings))
        .await
        .expect("findings");
    writer
        .finish_run(succeeded(record))
        .await
        .expect("run finished")
}

/// Every finding `query` matches, page after page.
pub fn all_findings(store: &dyn StoragePort, query: FindingQuery) -> Vec<StoredFinding> {
    let mut out = Vec::new();
    let mut query = FindingQuery {
        limit: Some(query.limit.unwrap_or(MAX_LIMIT)),
        ..query
    };
    loop {
        let page = store.findings(&query).expect("findings page");
        out.extend(page.findings);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return out,
        }
    }
}

/// The ids of the findings `run` observed.
pub fn ids_of_run(store: &dyn StoragePort, run: &str) -> Vec<i64> {
    all_findings(
        store,
        FindingQuery {
            run_id: Some(run.to_string()),
            ..FindingQuery::default()
        },
    )
    .iter()
    .map(|f| f.id)
    .collect()
}

pub fn audit_event(event: &str, plugin: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        timestamp: clock::now_rfc3339(),
        event: event.to_string(),
        security: event != "plugin_invoked",
        plugin: Some(plugin.to_string()),
        run_id: None,
        actor_uid: Some(1000),
        message: format!("{event} {plugin}"),
        details: json!({"why": "test"}),
    }
}

/// Asserts that `findings_text` answers `query` with the JSON `findings`
/// answers, and the same `next`.
pub fn assert_text_page_is_the_tree_page(store: &dyn StoragePort, query: FindingQuery) {
    let tree = store.findings(&query).expect("tree page");
    let text = store.findings_text(&query).expect("text page");
    assert_eq!(text.next, tree.next, "{query:?}");
    let parsed: Vec<Value> = serde_json::from_str(&text.findings.into_text().expect("page text"))
        .expect("page text is JSON");
    let expected: Vec<Value> = tree.findings.into_iter().map(|f| f.finding).collect();
    assert_eq!(parsed, expected, "{query:?}");
}

pub async fn a_finding_seen_in_two_runs_is_one_row_with_two_occurrences_listed_for_both_runs(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    detector_run(store, "run-1", vec![finding("fp-1", Severity::High)]).await;
    let first = all_findings(store, FindingQuery::default());
    tokio::time::sleep(Duration::from_millis(5)).await;
    detector_run(store, "run-2", vec![finding("fp-1", Severity::High)]).await;

    let stored = all_findings(store, FindingQuery::default());
    assert_eq!(stored.len(), 1);
    let f = &stored[0];
    assert_eq!(f.occurrences, 2);
    assert_eq!(
        f.run_id, "run-1",
        "run_id is the run that first reported it"
    );
    assert_eq!(f.first_seen, first[0].first_seen);
    assert!(
        f.last_seen > first[0].last_seen,
        "{} <= {}",
        f.last_seen,
        first[0].last_seen
    );
    assert_eq!(f.finding["occurrences"], 2);
    assert_eq!(f.finding["fingerprint"], "fp-1");
    assert_eq!(
        f.finding["plugin"],
        json!({"name": "detector", "version": "1.0.0"})
    );
    assert_eq!(f.finding["rule_id"], "rule-fp-1");
    assert_eq!(f.finding["enrichment"], json!({}));
    for run in ["run-1", "run-2"] {
        assert_eq!(ids_of_run(store, run), vec![f.id], "{run}");
    }
}

pub async fn a_finding_reported_twice_in_one_batch_is_one_row_seen_twice(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let mut again = finding("fp-1", Severity::High);
    again.title = "newer title".into();
    let done = detector_run(
        store,
        "run-1",
        vec![
            finding("fp-1", Severity::High),
            finding("fp-2", Severity::Low),
            again,
        ],
    )
    .await;
    assert_eq!(done.findings, 3, "every accepted finding is counted");
    let stored = all_findings(store, FindingQuery::default());
    let seen: Vec<(&str, u64)> = stored
        .iter()
        .map(|f| (f.fingerprint.as_str(), f.occurrences))
        .collect();
    assert_eq!(seen, [("fp-1", 2), ("fp-2", 1)]);
    assert_eq!(ids_of_run(store, "run-1").len(), 2);
}

pub async fn a_thousand_findings_stored_twice_are_a_thousand_rows_each_seen_twice(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let batch = || {
        (0..1000)
            .map(|i| finding(&format!("fp-{i}"), Severity::Low))
            .collect()
    };
    let first = detector_run(store, "run-1", batch()).await;
    let second = detector_run(store, "run-2", batch()).await;
    assert_eq!((first.findings, first.findings_rejected), (1000, 0));
    assert_eq!((second.findings, second.findings_rejected), (1000, 0));
    assert_eq!(
        store.run("run-2").expect("run").expect("stored").findings,
        1000
    );
    let stored = all_findings(store, FindingQuery::default());
    assert_eq!(stored.len(), 1000);
    assert!(stored.iter().all(|f| f.occurrences == 2));
    assert_eq!(ids_of_run(store, "run-2").len(), 1000);
}

pub async fn a_findings_page_as_text_is_the_same_json_as_the_page_of_trees(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let findings = vec![
        finding("fp-plain", Severity::Low),
        // The stored fields win over a document's own; its own
        // `enrichment` object stays, anything else there does not. (A key
        // that is escaped in the text takes the path of copied keys.)
        finding_with(
            "fp-own",
            Severity::High,
            json!({"id": "not ours", "occurrences": 99, "fingerprint": "other", "severity": "info",
                   "enrichment": {"scanner": {"note": "é \"quoted\" \u{2028}"}},
                   "a \"quoted\" key": 1, "zz": [1]}),
        ),
        finding_with(
            "fp-odd",
            Severity::Info,
            json!({"enrichment": "not an object"}),
        ),
    ];
    detector_run(store, "run-1", findings).await;
    detector_run(
        store,
        "run-2",
        vec![finding("fp-plain", Severity::Critical)],
    )
    .await;
    let first_id = all_findings(store, FindingQuery::default())[0].id;
    for query in [
        FindingQuery::default(),
        FindingQuery {
            limit: Some(2),
            ..FindingQuery::default()
        },
        FindingQuery {
            after: Some(first_id),
            ..FindingQuery::default()
        },
        FindingQuery {
            run_id: Some("run-2".into()),
            ..FindingQuery::default()
        },
        FindingQuery {
            min_severity: Some(Severity::High),
            ..FindingQuery::default()
        },
    ] {
        assert_text_page_is_the_tree_page(store, query);
    }
}

pub async fn an_enrichment_merges_vulnerabilities_raises_severity_and_names_the_enricher(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let mut detected = finding("fp-1", Severity::Low);
    detected.document["vulnerabilities"] = json!([{"cve": "CVE-2021-0001"}]);
    detector_run(store, "run-1", vec![detected.clone()]).await;

    let writer = store.writer();
    let record = started("enrich-1", "cve-mapper", Category::Enricher);
    writer
        .send(WriteOp::RunStarted(record.clone()))
        .await
        .expect("started");
    let mut with_own = finding("fp-1", Severity::Critical);
    with_own.document["vulnerabilities"] = json!([
        {"cve": "CVE-2021-0001", "description": "already known"},
        {"cve": "CVE-2024-1234", "cvss": [{"version": "3.1", "base_score": 9.8}]}
    ]);
    with_own.document["enrichment"] = json!({"kev": true});
    let mut without_own = finding("fp-1", Severity::Medium);
    without_own.document["description"] = json!("mapped by product");
    let unknown = finding("fp-nowhere", Severity::High);
    for (plugin, findings) in [
        ("cve-mapper", vec![with_own]),
        ("product-mapper", vec![without_own, unknown]),
    ] {
        writer
            .send(WriteOp::Enrichments {
                run_id: "enrich-1".into(),
                plugin: plugin.into(),
                findings,
            })
            .await
            .expect("enrichments");
    }
    let done = writer
        .finish_run(succeeded(record))
        .await
        .expect("finished");
    assert_eq!((done.findings, done.findings_rejected), (2, 1));

    let stored = all_findings(store, FindingQuery::default());
    assert_eq!(stored.len(), 1, "an enrichment never stores a new finding");
    let doc = &stored[0].finding;
    assert_eq!(doc["severity"], "critical");
    let cves: Vec<&str> = doc["vulnerabilities"]
        .as_array()
        .expect("vulnerabilities")
        .iter()
        .filter_map(|v| v["cve"].as_str())
        .collect();
    assert_eq!(cves, ["CVE-2021-0001", "CVE-2024-1234"]);
    assert_eq!(doc["enrichment"]["cve-mapper"], json!({"kev": true}));
    assert_eq!(
        doc["enrichment"]["product-mapper"],
        json!({"description": "mapped by product"})
    );
    assert_text_page_is_the_tree_page(store, FindingQuery::default());
    assert_eq!(ids_of_run(store, "enrich-1"), vec![stored[0].id]);
    let critical = store
        .findings(&FindingQuery {
            min_severity: Some(Severity::Critical),
            ..FindingQuery::default()
        })
        .expect("critical");
    assert_eq!(critical.findings.len(), 1);

    // The detector reporting it again refreshes the document, not the merge.
    detector_run(store, "run-2", vec![detected]).await;
    let doc = &all_findings(store, FindingQuery::default())[0].finding;
    assert_eq!(doc["severity"], "critical");
    assert_eq!(doc["occurrences"], 2);
    assert_eq!(doc["vulnerabilities"].as_array().map(Vec::len), Some(2));
    assert_eq!(doc["enrichment"]["cve-mapper"], json!({"kev": true}));
}

pub async fn min_severity_and_keyset_paging_return_every_matching_finding_exactly_once(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let findings: Vec<NewFinding> = (0..250)
        .map(|i| {
            finding(
                &format!("fp-{i:03}"),
                Severity::ALL[i % Severity::ALL.len()],
            )
        })
        .collect();
    detector_run(store, "run-1", findings).await;

    let mut expected: Vec<String> = (0..250)
        .filter(|i| Severity::ALL[i % Severity::ALL.len()] >= Severity::Medium)
        .map(|i| format!("fp-{i:03}"))
        .collect();
    let mut query = FindingQuery {
        min_severity: Some(Severity::Medium),
        limit: Some(7),
        ..FindingQuery::default()
    };
    let mut seen = Vec::new();
    let mut ids = Vec::new();
    loop {
        let page = store.findings(&query).expect("page");
        assert!(page.findings.len() <= 7);
        for f in page.findings {
            let severity = f.finding["severity"]
                .as_str()
                .and_then(Severity::parse)
                .expect("severity");
            assert!(severity >= Severity::Medium, "{severity}");
            ids.push(f.id);
            seen.push(f.fingerprint);
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let mut sorted_ids = ids.clone();
    sorted_ids.sort_unstable();
    sorted_ids.dedup();
    assert_eq!(ids, sorted_ids, "ascending id order, each exactly once");
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);
}

pub async fn a_plugin_filter_returns_only_that_plugin_s_findings(fx: &mut dyn StoreFixture) {
    let store = fx.store();
    detector_run(store, "run-1", vec![finding("fp-1", Severity::Low)]).await;
    let writer = store.writer();
    writer
        .send(WriteOp::Findings {
            run_id: "run-2".into(),
            plugin: "other".into(),
            plugin_version: "2.0.0".into(),
            findings: vec![finding("fp-2", Severity::Low)],
        })
        .await
        .expect("findings");
    writer.flush().await.expect("flush");
    let of = |plugin: &str| {
        all_findings(
            store,
            FindingQuery {
                plugin: Some(plugin.into()),
                ..FindingQuery::default()
            },
        )
        .into_iter()
        .map(|f| f.fingerprint)
        .collect::<Vec<_>>()
    };
    assert_eq!(of("detector"), ["fp-1"]);
    assert_eq!(of("other"), ["fp-2"]);
    assert!(of("nobody").is_empty());
}

pub async fn mark_interrupted_fails_running_runs_and_leaves_finished_ones_alone(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let finished = detector_run(store, "finished", vec![finding("fp-0", Severity::Low)]).await;
    let writer = store.writer();
    for run in ["empty", "busy"] {
        writer
            .send(WriteOp::RunStarted(started(
                run,
                "detector",
                Category::Detector,
            )))
            .await
            .expect("started");
    }
    writer
        .send(findings_op(
            "busy",
            vec![
                finding("fp-1", Severity::Low),
                finding("fp-2", Severity::Low),
            ],
        ))
        .await
        .expect("findings");
    writer.flush().await.expect("flush");

    assert_eq!(store.mark_interrupted().expect("mark"), 2);
    for (run_id, findings) in [("empty", 0), ("busy", 2)] {
        let run = store.run(run_id).expect("run").expect("stored");
        assert_eq!(run.status, RunStatus::Failed, "{run_id}");
        assert_eq!(run.partial, findings > 0, "{run_id}");
        assert_eq!(run.findings, findings, "{run_id}");
        assert!(run.finished_at.is_some(), "{run_id}");
        let error = run.error.expect("error");
        assert_eq!((error.code, error.kind), (0, ErrorKind::Interrupted));
        assert_eq!(error.message, INTERRUPTED_MESSAGE);
    }
    assert_eq!(store.run("finished").expect("run"), Some(finished));
    assert_eq!(store.mark_interrupted().expect("mark"), 0);
}

pub async fn reopening_the_database_keeps_runs_findings_audit_and_plugin_states(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let run = detector_run(store, "run-1", vec![finding("fp-1", Severity::High)]).await;
    let writer = store.writer();
    writer
        .audit(audit_event("plugin_revoked", "ferox"))
        .await
        .expect("audit");
    let revoked = PluginState {
        name: "ferox".into(),
        version: "1.0.0".into(),
        code_hash: "sha256:00".into(),
        revoked: true,
        reason: Some("sandbox violation".into()),
        changed_at: clock::now_rfc3339(),
        actor_uid: Some(0),
    };
    writer
        .set_plugin_state(revoked.clone())
        .await
        .expect("revoke");
    let findings = all_findings(store, FindingQuery::default());
    drop(writer);
    fx.reopen();

    let store = fx.store();
    assert_eq!(store.run("run-1").expect("run"), Some(run));
    assert_eq!(all_findings(store, FindingQuery::default()), findings);
    let audit = store.audit(&AuditQuery::default()).expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].event.as_str(), audit[0].security),
        ("plugin_revoked", true)
    );
    assert_eq!(audit[0].details, json!({"why": "test"}));
    assert_eq!(
        store.plugin_states().expect("states"),
        vec![revoked.clone()]
    );

    // Lifting the revocation replaces the state of the same build.
    let lifted = PluginState {
        revoked: false,
        reason: None,
        ..revoked
    };
    store
        .writer()
        .set_plugin_state(lifted.clone())
        .await
        .expect("reinstate");
    assert_eq!(store.plugin_states().expect("states"), vec![lifted]);
}

pub async fn fingerprints_sharing_a_lookup_key_stay_distinct_findings(fx: &mut dyn StoreFixture) {
    let store = fx.store();
    let colliding = |fingerprint: &str| NewFinding {
        fingerprint_key: 7,
        ..finding(fingerprint, Severity::Low)
    };
    detector_run(store, "run-1", vec![colliding("fp-a"), colliding("fp-b")]).await;
    detector_run(store, "run-2", vec![colliding("fp-b")]).await;
    let all = all_findings(store, FindingQuery::default());
    let seen: Vec<(&str, u64)> = all
        .iter()
        .map(|f| (f.fingerprint.as_str(), f.occurrences))
        .collect();
    assert_eq!(seen, [("fp-a", 1), ("fp-b", 2)]);
}

pub async fn a_detected_finding_is_stored_from_its_text_alone(fx: &mut dyn StoreFixture) {
    let store = fx.store();
    let text = r#"{"finding_schema_version":"1.0.0", "rule_id":"r-1","title":"T\u00e9","severity":"low","target":"http://t/","raw":{"n":[1,2]}}"#;
    let document: Value = serde_json::from_str(text).expect("json");
    let new = NewFinding::detected(
        "fp".to_string(),
        Severity::Low,
        document.clone(),
        Some(text.to_string()),
    );
    assert_eq!(new.document, Value::Null, "the tree stays with the session");
    detector_run(store, "run-1", vec![new]).await;
    let stored = &all_findings(store, FindingQuery::default())[0];
    assert_eq!(stored.finding["raw"], document["raw"]);
    assert_eq!(stored.finding["title"], "Té");
    assert_eq!(stored.finding["target"], "http://t/");
}

pub async fn a_run_s_findings_page_in_id_order_across_first_seen_and_seen_again(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let batch = |range: std::ops::Range<u32>| {
        range
            .map(|i| finding(&format!("fp-{i}"), Severity::Medium))
            .collect::<Vec<_>>()
    };
    detector_run(store, "run-1", batch(0..300)).await;
    // run-2 sees half of run-1's findings again, interleaved with new ones.
    let mut second = batch(150..450);
    second.reverse();
    detector_run(store, "run-2", second).await;
    let listed = all_findings(
        store,
        FindingQuery {
            run_id: Some("run-2".to_string()),
            limit: Some(7),
            ..FindingQuery::default()
        },
    );
    let ids: Vec<i64> = listed.iter().map(|f| f.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "each finding once, in id order");
    assert_eq!(ids.len(), 300);
    assert_eq!(listed.iter().filter(|f| f.occurrences == 2).count(), 150);
}

pub async fn closing_commits_everything_queued_while_other_writers_are_still_held(
    fx: &mut dyn StoreFixture,
) {
    let writer = fx.store().writer();
    for i in 0..50 {
        writer
            .audit(audit_event("plugin_invoked", &format!("p{i}")))
            .await
            .expect("audit");
    }
    let held = writer.clone();
    fx.close();
    assert!(matches!(held.flush().await, Err(StorageError::WriterGone)));
    fx.reopen();
    let audit = fx
        .store()
        .audit(&AuditQuery {
            limit: Some(1000),
            ..AuditQuery::default()
        })
        .expect("audit");
    assert_eq!(audit.len(), 50);
    assert_eq!(audit[0].plugin.as_deref(), Some("p49"), "newest first");
}

pub async fn a_run_finished_without_starting_is_recorded_and_queries_filter_and_sort(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let writer = store.writer();
    let mut rejected = started("rejected-1", "nuclei", Category::Detector);
    rejected.status = RunStatus::Rejected;
    rejected.error = Some(RunError::new(
        ErrorKind::PluginRevoked,
        "plugin nuclei is revoked",
    ));
    rejected.findings_rejected = 3;
    let stored = writer.finish_run(rejected.clone()).await.expect("finished");
    assert_eq!(stored, rejected);
    tokio::time::sleep(Duration::from_millis(5)).await;
    detector_run(store, "run-2", Vec::new()).await;
    writer
        .send(WriteOp::Telemetry(TelemetryEvent {
            event: "plugin_executed".into(),
            plugin: "detector".into(),
            version: "1.0.0".into(),
            run_id: "run-2".into(),
            duration_ms: 12,
            cpu_ms: 3,
            memory_mb: 40,
            findings_processed: 0,
            success: true,
            timestamp: clock::now_rfc3339(),
        }))
        .await
        .expect("telemetry");
    writer
        .audit(audit_event("plugin_invoked", "detector"))
        .await
        .expect("audit");
    writer
        .audit(audit_event("plugin_rejected", "nuclei"))
        .await
        .expect("audit");
    writer.flush().await.expect("flush");

    let runs = store.runs(&RunQuery::default()).expect("runs");
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["run-2", "rejected-1"], "newest first");
    let only_rejected = store
        .runs(&RunQuery {
            status: Some(RunStatus::Rejected),
            ..RunQuery::default()
        })
        .expect("runs");
    assert_eq!(only_rejected, vec![rejected]);
    let by_plugin = store
        .runs(&RunQuery {
            plugin: Some("detector".into()),
            limit: Some(1),
            ..RunQuery::default()
        })
        .expect("runs");
    assert_eq!(by_plugin.len(), 1);
    assert_eq!(by_plugin[0].run_id, "run-2");

    let telemetry = store
        .telemetry(&TelemetryQuery {
            run_id: Some("run-2".into()),
            ..TelemetryQuery::default()
        })
        .expect("telemetry");
    assert_eq!((telemetry.len(), telemetry[0].duration_ms), (1, 12));
    assert!(store
        .telemetry(&TelemetryQuery {
            plugin: Some("nobody".into()),
            ..TelemetryQuery::default()
        })
        .expect("telemetry")
        .is_empty());
    let audit = store
        .audit(&AuditQuery {
            event: Some("plugin_rejected".into()),
            ..AuditQuery::default()
        })
        .expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].plugin.as_deref(), Some("nuclei"));
    assert!(audit[0].id > 0);
    let by_plugin = store
        .audit(&AuditQuery {
            plugin: Some("detector".into()),
            limit: Some(10),
            ..AuditQuery::default()
        })
        .expect("audit");
    assert_eq!(by_plugin.len(), 1);
    assert_eq!(by_plugin[0].event, "plugin_invoked");

    // A run's audit trail.
    let mut of_run = audit_event("plugin_invoked", "detector");
    of_run.run_id = Some("run-2".into());
    writer.audit(of_run).await.expect("audit");
    writer.flush().await.expect("flush");
    let trail = store
        .audit(&AuditQuery {
            run_id: Some("run-2".into()),
            ..AuditQuery::default()
        })
        .expect("audit");
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].run_id.as_deref(), Some("run-2"));
}

pub async fn every_finding_names_the_hosts_that_saw_it_and_the_host_filter_keeps_them(
    fx: &mut dyn StoreFixture,
) {
    let host = fx.host().to_string();
    let store = fx.store();
    detector_run(
        store,
        "run-1",
        vec![
            finding("fp-1", Severity::Low),
            finding("fp-2", Severity::High),
        ],
    )
    .await;
    let all = all_findings(store, FindingQuery::default());
    assert_eq!(all.len(), 2);
    for f in &all {
        assert_eq!(f.finding["hosts"], json!([host]), "{}", f.fingerprint);
    }
    let on = |name: &str| FindingQuery {
        host: Some(name.to_string()),
        ..FindingQuery::default()
    };
    assert_eq!(all_findings(store, on(&host)), all);
    assert!(all_findings(store, on("elsewhere")).is_empty());
    assert_text_page_is_the_tree_page(store, on(&host));
}

/// The dashboard's search boxes: `target` matches inside the target, `text`
/// inside the title or the rule id, both ignoring ASCII case and taking
/// every character literally (no wildcards).
pub async fn target_and_text_filters_match_substrings_ignoring_case_and_wildcards(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let shaped = |fp: &str, target: &str, title: &str, rule: &str| {
        finding_with(
            fp,
            Severity::Medium,
            json!({"target": target, "title": title, "rule_id": rule}),
        )
    };
    detector_run(
        store,
        "run-1",
        vec![
            shaped(
                "fp-login",
                "https://Shop.Example.test/login",
                "SQL injection in the login form",
                "sqli-login",
            ),
            shaped(
                "fp-redirect",
                "http://api.example.test/v1",
                "Open redirect",
                "redirect-open",
            ),
            shaped(
                "fp-git",
                "http://10.0.0.5:8080/",
                "Exposed .git directory",
                "git_exposed",
            ),
        ],
    )
    .await;
    let matching = |target: Option<&str>, text: Option<&str>| {
        let mut found: Vec<String> = all_findings(
            store,
            FindingQuery {
                target: target.map(str::to_string),
                text: text.map(str::to_string),
                ..FindingQuery::default()
            },
        )
        .into_iter()
        .map(|f| f.fingerprint)
        .collect();
        found.sort();
        found
    };
    assert_eq!(
        matching(Some("example.TEST"), None),
        ["fp-login", "fp-redirect"]
    );
    assert_eq!(matching(Some("shop."), None), ["fp-login"]);
    assert_eq!(matching(Some("10.0.0.5:8080"), None), ["fp-git"]);
    assert_eq!(matching(None, Some("INJECTION")), ["fp-login"]);
    assert_eq!(matching(None, Some("redirect-open")), ["fp-redirect"]);
    assert_eq!(
        matching(Some("example"), Some("redirect")),
        ["fp-redirect"],
        "filters combine"
    );
    assert!(matching(None, Some("%")).is_empty(), "% is no wildcard");
    assert!(matching(None, Some("git%exposed")).is_empty());
    assert!(matching(Some("_"), None).is_empty(), "_ is no wildcard");
    assert_eq!(matching(None, Some("git_")), ["fp-git"], "_ matches itself");
    assert!(matching(Some("nowhere.test"), None).is_empty());
    assert_text_page_is_the_tree_page(
        store,
        FindingQuery {
            target: Some("example".into()),
            ..FindingQuery::default()
        },
    );
}

/// A windowed search reads a bounded id range per page; paging on from
/// each page's cursor finds exactly what the unwindowed search finds, and a
/// window holding no match still leads on while findings lie beyond it.
pub async fn a_windowed_search_pages_through_every_match_exactly_once(fx: &mut dyn StoreFixture) {
    let store = fx.store();
    let findings = (1..=40)
        .map(|i| {
            let title = if i % 7 == 0 { "needle" } else { "hay" };
            finding_with(
                &format!("fp-{i:02}"),
                Severity::Low,
                json!({"title": title}),
            )
        })
        .collect();
    detector_run(store, "run-1", findings).await;
    let search = |window: Option<u32>, after: Option<i64>| FindingQuery {
        text: Some("needle".into()),
        window,
        after,
        limit: Some(2),
        ..FindingQuery::default()
    };
    let expected: Vec<String> = all_findings(store, search(None, None))
        .into_iter()
        .map(|f| f.fingerprint)
        .collect();
    assert_eq!(expected, ["fp-07", "fp-14", "fp-21", "fp-28", "fp-35"]);
    // Ids count up from the first finding's, whatever a backend starts at.
    let base = Some(all_findings(store, FindingQuery::default())[0].id - 1);

    let mut found = Vec::new();
    let mut pages = 0;
    let mut after = base;
    loop {
        let page = store.findings(&search(Some(5), after)).expect("page");
        let text = store
            .findings_text(&search(Some(5), after))
            .expect("text page");
        assert_eq!(page.next, text.next, "both pages lead on alike");
        pages += 1;
        assert!(pages <= 40, "the cursor always advances");
        if let (Some(next), Some(from)) = (page.next, after) {
            assert!(next > from && next - from <= 5, "one window per page");
        }
        found.extend(page.findings.into_iter().map(|f| f.fingerprint));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(found, expected);
    assert!(pages >= 8, "40 ids in windows of 5: {pages} pages");

    let first = store
        .findings(&search(Some(5), base))
        .expect("first window");
    assert!(first.findings.is_empty(), "no needle among the first 5");
    assert!(first.next.is_some(), "but findings lie beyond the window");
    let last = store
        .findings(&search(Some(1000), base))
        .expect("one window over all");
    assert_eq!(last.findings.len(), 2);
    let rest = store
        .findings(&search(Some(1000), last.next))
        .expect("the rest");
    let rest = store
        .findings(&search(Some(1000), rest.next))
        .expect("the last match");
    assert_eq!(rest.findings.len(), 1);
    assert_eq!(
        rest.next, None,
        "nothing beyond the window: the search ends"
    );
}

/// The statuses added after the first schema round-trip with their error:
/// `partial` keeps how much was left undone, `skipped` its reason.
pub async fn partial_and_skipped_runs_keep_their_status_and_what_was_left(
    fx: &mut dyn StoreFixture,
) {
    let store = fx.store();
    let writer = store.writer();
    let mut partial = started("partial-1", "ferox", Category::Detector);
    partial.status = RunStatus::Partial;
    partial.partial = true;
    partial.error = Some(RunError {
        untried: Some(18),
        ..RunError::new(
            ErrorKind::Incomplete,
            "18 not tried: 18 words got no answer after 2 retries",
        )
    });
    let mut skipped = started("skipped-1", "cve-mapper", Category::Enricher);
    skipped.status = RunStatus::Skipped;
    skipped.error = Some(RunError::new(
        ErrorKind::DataUnavailable,
        "no vulnerability data: /var/lib/secflow/vulndb does not exist",
    ));
    for record in [&partial, &skipped] {
        let stored = writer.finish_run(record.clone()).await.expect("finished");
        assert_eq!(&stored, record);
    }
    writer.flush().await.expect("flush");
    let read = store.run("partial-1").expect("read").expect("stored");
    assert_eq!(read, partial);
    assert_eq!(read.error.and_then(|e| e.untried), Some(18));
    let only_partial = store
        .runs(&RunQuery {
            status: Some(RunStatus::Partial),
            ..RunQuery::default()
        })
        .expect("runs");
    assert_eq!(only_partial.len(), 1);
    assert_eq!(
        store
            .run("skipped-1")
            .expect("read")
            .expect("stored")
            .status,
        RunStatus::Skipped
    );
}

pub async fn refused_egress_is_kept_with_the_run_apart_from_its_outputs(fx: &mut dyn StoreFixture) {
    let store = fx.store();
    let writer = store.writer();
    let mut scoped = succeeded(started("scoped-1", "ferox", Category::Detector));
    scoped.outputs.insert("requests".into(), json!(12));
    scoped.refused_egress = vec![
        RefusedEgress {
            destination: "127.0.0.3".into(),
            protocol: "tcp".into(),
            port: Some(8080),
            packets: 2,
        },
        RefusedEgress {
            destination: "169.254.169.254".into(),
            protocol: "icmp".into(),
            port: None,
            packets: 1,
        },
    ];
    let calm = succeeded(started("calm-1", "ferox", Category::Detector));
    for record in [&scoped, &calm] {
        writer.finish_run(record.clone()).await.expect("finished");
    }
    writer.flush().await.expect("flush");
    let read = store.run("scoped-1").expect("read").expect("stored");
    assert_eq!(
        read, scoped,
        "refusals and outputs both come back as written"
    );
    assert_eq!(read.outputs.len(), 1, "the refusals are not an output");
    let read = store.run("calm-1").expect("read").expect("stored");
    assert!(read.refused_egress.is_empty() && read.outputs.is_empty());
}

/// One `#[tokio::test]` per case of the suite, each on a fixture made by
/// `$open` (an expression giving `Option<impl StoreFixture>`; `None` skips,
/// the opener having said why).
#[macro_export]
macro_rules! storage_suite {
    ($open:expr) => {
        $crate::storage_suite!(@cases $open;
            a_finding_seen_in_two_runs_is_one_row_with_two_occurrences_listed_for_both_runs,
            a_finding_reported_twice_in_one_batch_is_one_row_seen_twice,
            a_thousand_findings_stored_twice_are_a_thousand_rows_each_seen_twice,
            a_findings_page_as_text_is_the_same_json_as_the_page_of_trees,
            an_enrichment_merges_vulnerabilities_raises_severity_and_names_the_enricher,
            min_severity_and_keyset_paging_return_every_matching_finding_exactly_once,
            a_plugin_filter_returns_only_that_plugin_s_findings,
            mark_interrupted_fails_running_runs_and_leaves_finished_ones_alone,
            reopening_the_database_keeps_runs_findings_audit_and_plugin_states,
            fingerprints_sharing_a_lookup_key_stay_distinct_findings,
            a_detected_finding_is_stored_from_its_text_alone,
            a_run_s_findings_page_in_id_order_across_first_seen_and_seen_again,
            closing_commits_everything_queued_while_other_writers_are_still_held,
            a_run_finished_without_starting_is_recorded_and_queries_filter_and_sort,
            every_finding_names_the_hosts_that_saw_it_and_the_host_filter_keeps_them,
            target_and_text_filters_match_substrings_ignoring_case_and_wildcards,
            a_windowed_search_pages_through_every_match_exactly_once,
            partial_and_skipped_runs_keep_their_status_and_what_was_left,
            refused_egress_is_kept_with_the_run_apart_from_its_outputs,
        );
    };
    (@cases $open:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $case() {
                if let Some(mut fixture) = $open {
                    $crate::conformance::$case(&mut fixture).await;
                }
            }
        )*
    };
}
