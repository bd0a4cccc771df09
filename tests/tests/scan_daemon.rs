//! `secflow scan` through a live `secflowd` (contracts §1): the client plans the
//! default pipeline and has the daemon execute every run, so the runs and the
//! enriched findings end up in the daemon's database, not in a local one.
//! The demo's local target (an Apache 2.4.49 look-alike and an old OpenSSH
//! banner) is scanned by nuclei and service-scan, enriched by cve-mapper from
//! the NVD fixtures, then summarised by analytics.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secflow_cli::demo::target::DemoTarget;
use serde_json::Value;
use support::*;

/// A `secflowd` on the bed's config, killed when the test ends.
struct LiveDaemon {
    child: Child,
    log: PathBuf,
}

impl LiveDaemon {
    /// Starts it and waits until its socket accepts connections.
    fn start(bed: &TestBed) -> LiveDaemon {
        let log = bed.path().join("secflowd.log");
        let child = Command::new(workspace_bin("secflowd"))
            .arg("--config")
            .arg(bed.path().join("secflow.toml"))
            .env_remove("SECFLOW_CONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("secflowd starts");
        let mut daemon = LiveDaemon { child, log };
        let socket = bed.path().join("api.sock");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("secflowd exited with {status}:\n{}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "secflowd did not listen within 60 s:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LiveDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped detectors for both kinds of target, cve-mapper on the NVD
/// fixtures (with a persistent cache directory for its index) and analytics.
fn install_pipeline(bed: &TestBed) {
    bed.install_nuclei_detector();
    bed.install_service_scan_detector();
    bed.install_nvd_enricher_and_analytics();
}

/// The CVE ids of a finding's vulnerabilities.
fn cves(finding: &Value) -> Vec<&str> {
    finding["vulnerabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["cve"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_through_the_daemon_runs_the_pipeline_and_stores_the_enriched_findings_there() {
    let target = DemoTarget::start().await.unwrap();
    let bed = TestBed::with_config("[api]\nsocket = \"api.sock\"\n");
    install_pipeline(&bed);
    let daemon = LiveDaemon::start(&bed);
    let (url, ssh) = (target.http_url(), target.ssh_target());
    // The home comes back so that it outlives the client calls made in it.
    let (_home, report, runs, stored) = tokio::task::spawn_blocking(move || {
        let report = json_of(&bed.secflow(&["scan", "--json", &url, &ssh]));
        let runs = json_of(&bed.secflow(&["runs", "--json", "--limit", "50"]));
        let stored = json_of(&bed.secflow(&["findings", "--json", "--limit", "1000"]));
        (bed, report, runs, stored)
    })
    .await
    .unwrap();
    let log = daemon.log();

    // Every detector on every target it takes, then the enricher, then analytics.
    let steps: Vec<(&str, &str, &str)> = report["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("a report with runs: {report}\ndaemon log:\n{log}"))
        .iter()
        .map(|r| {
            (
                r["stage"].as_str().unwrap(),
                r["plugin"].as_str().unwrap(),
                if r["declined"] == true {
                    "declined"
                } else {
                    r["status"].as_str().unwrap()
                },
            )
        })
        .collect();
    assert!(
        steps.contains(&("detect", "nuclei", "succeeded")),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("detect", "service-scan", "succeeded")),
        "{steps:?}"
    );
    let tail: Vec<_> = steps.iter().filter(|s| s.0 != "detect").collect();
    assert_eq!(
        tail,
        [
            &("enrich", "cve-mapper", "succeeded"),
            &("analyze", "analytics", "succeeded")
        ],
        "{report}"
    );
    assert_eq!(report["summary"]["complete"], true, "{}", report["summary"]);

    // The scan's findings carry what cve-mapper added (stored under its
    // name in `enrichment`): by CVE id (the nuclei
    // template) with its KEV date, and by CPE (the OpenSSH banner).
    let findings = report["findings"].as_array().unwrap();
    let traversal = findings
        .iter()
        .flat_map(|f| f["vulnerabilities"].as_array().into_iter().flatten())
        .find(|v| v["cve"] == "CVE-2021-41773" && v["cvss"].is_array())
        .unwrap_or_else(|| panic!("CVE-2021-41773 enriched: {report}"));
    assert_eq!(traversal["kev"]["date_added"], "2021-11-03");
    assert!(
        findings
            .iter()
            .any(|f| f["enrichment"]["cve-mapper"]["matched"].is_array()
                && f["cpe"].to_string().contains("openssh")
                && !cves(f).is_empty()),
        "an OpenSSH service finding mapped by CPE: {report}"
    );

    // The runs happened in the daemon: its database has them, with the same
    // status, and
    // the findings it stores are the enriched ones.
    let stored_runs: Vec<&Value> = runs
        .as_array()
        .or_else(|| runs["runs"].as_array())
        .unwrap_or_else(|| panic!("runs --json is a list: {runs}"))
        .iter()
        .collect();
    for step in report["runs"].as_array().unwrap() {
        let Some(run_id) = step["run_id"].as_str() else {
            continue;
        };
        let stored_run = stored_runs
            .iter()
            .find(|r| r["run_id"] == run_id)
            .unwrap_or_else(|| panic!("run {run_id} is in the daemon's database: {runs}"));
        // A declined detector is a failed run with invalid inputs, stored as such.
        assert_eq!(stored_run["status"], step["status"], "{stored_run}");
    }
    let stored_findings = stored
        .as_array()
        .or_else(|| stored["findings"].as_array())
        .unwrap_or_else(|| panic!("findings --json is a list: {stored}"));
    assert_eq!(stored_findings.len(), findings.len(), "{stored}");
    assert!(
        stored_findings
            .iter()
            .any(|f| cves(f).contains(&"CVE-2021-41773")
                && f["enrichment"]["cve-mapper"]["kev"] == true),
        "the daemon stores the enriched finding: {stored}"
    );
}
