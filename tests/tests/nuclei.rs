//! The `nuclei` template plugin end to end: the shipped executable and manifest
//! run by the real supervisor against the loopback fixture server
//! (`secflow_tests::http_fixture`), with the built-in templates and with the
//! copied public templates (tests/fixtures/nuclei-templates) granted as a read path.
//! Per-feature and per-template behaviour is tested in plugins/nuclei/tests/.

mod support;

use secflow_core::record::{RunRecord, RunStatus};
use secflow_runner::Supervisor;
use secflow_tests::http_fixture::{HttpFixture, Route};
use serde_json::{json, Value};
use support::*;

/// A test home with the nuclei plugin installed from its shipped manifest;
/// `read_paths` are added to its sandbox.
fn install_nuclei(read_paths: &[&std::path::Path]) -> TestBed {
    let bed = TestBed::new();
    bed.install_shipped("nuclei", "secflow-nuclei", read_paths);
    bed
}

async fn scan(supervisor: &Supervisor, target: &str, config: Value) -> RunRecord {
    run_on_target(supervisor, "nuclei", target, config, None).await
}

fn rule_ids(supervisor: &Supervisor, record: &RunRecord) -> Vec<String> {
    let mut ids: Vec<String> = findings_of(supervisor, &record.run_id)
        .into_iter()
        .map(|f| f.finding["rule_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn the_built_in_templates_find_a_vulnerable_apache_through_the_supervisor() {
    let server = HttpFixture::builder()
        .route(
            "/",
            Route::ok("<html>It works!</html>").header("Server", "Apache/2.4.49 (Unix)"),
        )
        .route(
            "/.git/config",
            Route::ok("[core]\n\trepositoryformatversion = 0\n")
                .header("Content-Type", "text/plain"),
        )
        .fallback(|request| {
            if request.target.starts_with("/icons/.%2e/") {
                Route::ok("root:x:0:0:root:/root:/bin/bash\n")
            } else {
                Route::new(404)
            }
        })
        .start();
    let bed = install_nuclei(&[]);
    let supervisor = bed.supervisor().await;
    let record = scan(&supervisor, &server.url(), json!({})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:#?}");
    assert_eq!(
        record.findings_rejected, 0,
        "every finding validates: {record:#?}"
    );
    assert_eq!(
        rule_ids(&supervisor, &record),
        [
            "secflow-apache-path-traversal",
            "secflow-apache-version",
            "secflow-exposed-git-config"
        ]
    );
    let traversal = findings_of(&supervisor, &record.run_id)
        .into_iter()
        .find(|f| f.finding["rule_id"] == "secflow-apache-path-traversal")
        .expect("traversal finding");
    assert_eq!(traversal.finding["severity"], "high");
    assert_eq!(
        traversal.finding["vulnerabilities"][0]["cve"],
        "CVE-2021-41773"
    );
    assert_eq!(record.outputs["templates_skipped"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_templates_run_from_a_granted_read_path_and_all_of_them_load() {
    let templates = workspace_root().join("tests/fixtures/nuclei-templates");
    let server = HttpFixture::builder()
        .route(
            "/nginx_status",
            Route::ok("Active connections: 3\nserver accepts handled requests\n"),
        )
        .start();
    let bed = install_nuclei(&[&templates]);
    let supervisor = bed.supervisor().await;
    let config = json!({"templates": [templates.display().to_string()], "concurrency": 8});
    let record = scan(&supervisor, &server.url(), config).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:#?}");
    assert_eq!(record.findings_rejected, 0, "{record:#?}");
    assert_eq!(
        record.outputs["templates_total"], 51,
        "{:#?}",
        record.outputs
    );
    assert_eq!(record.outputs["templates_run"], 51, "{:#?}", record.outputs);
    assert_eq!(record.outputs["templates_skipped"], 0);
    assert_eq!(rule_ids(&supervisor, &record), ["nginx-status"]);
}
