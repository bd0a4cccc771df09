//! Issue 5's main job end to end: `secflow demo` (the built binary, staging
//! the shipped plugins from its own directory) and `secflow scan --local` on
//! the demo's vulnerable-looking local target.

mod support;

use secflow_cli::demo::target::DemoTarget;
use serde_json::{json, Value};
use support::*;

/// The vulnerability `cve` as some finding of `report` carries it.
fn vulnerability<'a>(report: &'a Value, cve: &str) -> Option<&'a Value> {
    report["findings"]
        .as_array()?
        .iter()
        .filter_map(|f| f["vulnerabilities"].as_array())
        .flatten()
        .find(|v| v["cve"] == cve && v["cvss"].as_array().is_some_and(|c| !c.is_empty()))
}

#[test]
fn the_demo_finds_cve_2021_41773_with_its_cvss_and_kev_date_and_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(workspace_bin("secflow"))
        .args(["demo", "--json", "--home"])
        .arg(home.path())
        .env_remove("SECFLOW_CONFIG")
        .output()
        .expect("secflow demo runs");
    let report = json_of(&output);
    assert!(
        output.status.success(),
        "exit {:?}; runs: {}",
        output.status,
        report["runs"]
    );
    let traversal = vulnerability(&report, "CVE-2021-41773").expect("CVE-2021-41773 is found");
    let cvss = &traversal["cvss"][0];
    assert_eq!(cvss["version"], "3.1", "{traversal}");
    assert_eq!(cvss["base_score"], 7.5, "{traversal}");
    assert_eq!(traversal["kev"]["date_added"], "2021-11-03", "{traversal}");
    assert_eq!(report["summary"]["complete"], true);
    assert!(
        report["summary"]["kev"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["cve"] == "CVE-2021-41773"),
        "{}",
        report["summary"]
    );
    let database = report["database"].as_str().expect("the database is named");
    assert!(
        std::path::Path::new(database).is_file(),
        "{database} exists"
    );
    assert!(database.starts_with(&home.path().display().to_string()));
}

/// Installs the shipped nuclei and analytics plugins and cve-mapper on the
/// NVD fixtures into `bed`.
fn install_web_pipeline(bed: &TestBed) {
    bed.install_nuclei_detector();
    bed.install_nvd_enricher_and_analytics();
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_runs_detectors_then_enrichers_then_analytics_and_sorts_findings_by_severity() {
    let target = DemoTarget::start().await.unwrap();
    let bed = TestBed::new();
    install_web_pipeline(&bed);
    let url = target.http_url();
    let output =
        tokio::task::spawn_blocking(move || bed.secflow(&["scan", "--local", "--json", &url]))
            .await
            .unwrap();
    let report = json_of(&output);
    assert!(output.status.success(), "runs: {}", report["runs"]);

    let stages: Vec<(&str, &str)> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["stage"].as_str().unwrap(), r["plugin"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [
            ("detect", "nuclei"),
            ("enrich", "cve-mapper"),
            ("analyze", "analytics")
        ]
    );
    let analytics = &report["runs"][2];
    assert_eq!(
        analytics["outputs"]["metrics"]["total"], report["summary"]["findings"],
        "analytics saw every finding of the scan"
    );

    let order = ["critical", "high", "medium", "low", "info", "unknown"];
    let ranks: Vec<usize> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| order.iter().position(|s| f["severity"] == *s).unwrap())
        .collect();
    assert!(!ranks.is_empty());
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "most severe first: {ranks:?}"
    );
    let traversal = vulnerability(&report, "CVE-2021-41773").expect("enriched by cve-mapper");
    assert_eq!(traversal["kev"]["date_added"], "2021-11-03");
    assert!(
        report["summary"]["by_severity"]["critical"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(report["summary"]["runs"], json!({"succeeded": 3}));
}

#[test]
fn scan_without_a_daemon_exits_3_naming_the_socket() {
    let bed = TestBed::new();
    let socket = bed.path().join("nobody.sock");
    let output = bed.secflow(&[
        "scan",
        "http://127.0.0.1:9/",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
}
