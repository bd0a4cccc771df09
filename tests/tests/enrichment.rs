//! Issue 5's enrichment path end to end, through the real supervisor: the
//! service-scan detector runs real nmap against a local banner service, and the
//! cve-mapper enricher maps the stored finding's CPE to the NVD records of
//! tests/fixtures/nvd (see its PROVENANCE.md).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secflow_core::record::RunStatus;
use secflow_runner::Supervisor;
use serde_json::{json, Map, Value};
use support::*;

const OPENSSH_BANNER: &[u8] = b"SSH-2.0-OpenSSH_7.2p2 Ubuntu-4ubuntu2.10\r\n";

/// A TCP service on 127.0.0.1 that greets every connection with `banner`;
/// lives as long as the test process.
fn banner_service(banner: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.write_all(banner);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 512];
                let _ = stream.read(&mut buf);
            });
        }
    });
    port
}

/// nmap's path, or `None` (with the reason printed) when the test may skip.
fn nmap_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nmap"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nmap is required in CI (.ci/run installs it)"
        );
        eprintln!("skipped: nmap is not installed (apt-get install nmap); CI is not set");
    }
    found
}

/// Copies the NVD fixture records into `dir` (the enricher may cache its index there).
fn nvd_data(dir: &Path) -> PathBuf {
    let data = dir.join("vulndb");
    std::fs::create_dir_all(&data).unwrap();
    let fixtures = workspace_root().join("tests/fixtures/nvd");
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::copy(&path, data.join(path.file_name().unwrap())).unwrap();
        }
    }
    data
}

fn install_pipeline(bed: &TestBed, data: &Path) {
    bed.install_service_scan_detector();
    bed.install(Install {
        category: "enricher",
        config_schema: json!({
            "data_dir": {"type": "string", "default": data.display().to_string()},
            "sources": {"type": "array", "items": {"enum": ["nvd", "osv"]}, "default": ["nvd", "osv"]},
            "cache_dir": {"type": "string", "default": ""}
        }),
        sandbox: json!({"network": false, "filesystem": "readonly", "timeout_seconds": 120,
            "read_paths": [data.display().to_string()]}),
        ..Install::new("cve-mapper", workspace_bin("secflow-cve-mapper"))
    });
}

fn cve_ids(finding: &Value) -> Vec<String> {
    let mut ids: Vec<String> = finding["vulnerabilities"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|v| v["cve"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn nmap_finds_an_old_openssh_banner_and_cve_mapper_enriches_the_stored_finding() {
    if nmap_or_skip().is_none() {
        return;
    }
    let port = banner_service(OPENSSH_BANNER);
    let bed = TestBed::new();
    let data = nvd_data(bed.path());
    install_pipeline(&bed, &data);
    let supervisor = bed.supervisor().await;

    let target = format!("127.0.0.1:{port}");
    let scan = run_on_target(&supervisor, "service-scan", &target, json!({}), None).await;
    assert_eq!(scan.status, RunStatus::Succeeded, "{scan:?}");
    assert_eq!(scan.findings, 1, "one open port: {scan:?}");
    let stored = findings_of(&supervisor, &scan.run_id);
    let service = &stored[0].finding;
    assert_eq!(service["rule_id"], "service.open-port");
    assert_eq!(service["severity"], "info");
    assert_eq!(service["location"]["port"], port);
    assert_eq!(service["evidence"]["service"]["product"], "OpenSSH");
    assert_eq!(
        service["cpe"][0], "cpe:2.3:a:openbsd:openssh:7.2p2:*:*:*:*:*:*:*",
        "nmap's CPE 2.2 URI converted to CPE 2.3"
    );

    let mut inputs = Map::new();
    inputs.insert(
        "findings".into(),
        Value::Array(stored.iter().map(|f| f.finding.clone()).collect()),
    );
    let enrich = run_with(&supervisor, "cve-mapper", json!({}), inputs, None).await;
    assert_eq!(enrich.status, RunStatus::Succeeded, "{enrich:?}");
    assert_eq!(enrich.findings, 1);
    assert_eq!(
        enrich.findings_rejected, 0,
        "the enriched finding is schema-valid"
    );
    assert_eq!(enrich.outputs["enriched"], 1, "{:?}", enrich.outputs);
    assert_eq!(enrich.outputs["index"]["records"], 35);

    let merged = findings_of(&supervisor, &scan.run_id);
    assert_eq!(merged.len(), 1, "an enrichment never adds a finding");
    let finding = &merged[0].finding;
    assert_eq!(
        cve_ids(finding),
        [
            "CVE-2016-6210",
            "CVE-2018-15473",
            "CVE-2020-15778",
            "CVE-2023-38408"
        ]
    );
    assert_eq!(finding["severity"], "critical", "CVE-2023-38408 scores 9.8");
    let regresshion = finding["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["cve"] == "CVE-2023-38408")
        .unwrap();
    assert_eq!(regresshion["cvss"][0]["version"], "3.1");
    assert_eq!(regresshion["cvss"][0]["base_score"], 9.8);
    assert_eq!(
        finding["enrichment"]["cve-mapper"]["max_cvss"], 9.8,
        "{}",
        finding["enrichment"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cve_mapper_leaves_a_finding_without_known_cpe_or_cve_untouched() {
    let bed = TestBed::new();
    let data = nvd_data(bed.path());
    install_pipeline(&bed, &data);
    bed.install_fixture("detector", env!("CARGO_BIN_EXE_fixture-detector"));
    let supervisor = bed.supervisor().await;

    let detected = run(&supervisor, "detector", json!({"count": 3})).await;
    assert_eq!(detected.status, RunStatus::Succeeded, "{detected:?}");
    let before = findings_of(&supervisor, &detected.run_id);
    let mut inputs = Map::new();
    inputs.insert(
        "findings".into(),
        Value::Array(before.iter().map(|f| f.finding.clone()).collect()),
    );
    let enrich = run_with(&supervisor, "cve-mapper", json!({}), inputs, None).await;
    assert_eq!(enrich.status, RunStatus::Succeeded, "{enrich:?}");
    assert_eq!(enrich.findings, 0);
    assert_eq!(enrich.outputs["unchanged"], 3, "{:?}", enrich.outputs);
    let after = findings_of(&supervisor, &detected.run_id);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.finding["severity"], new.finding["severity"]);
        assert_eq!(new.finding["enrichment"], json!({}));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cve_mapper_with_a_missing_data_dir_fails_naming_it() {
    let bed = TestBed::new();
    let data = nvd_data(bed.path());
    install_pipeline(&bed, &data);
    let supervisor = bed.supervisor().await;
    let missing = bed.path().join("no-such-vulndb");
    let mut inputs = Map::new();
    inputs.insert("findings".into(), json!([]));
    let record = run_with(
        &supervisor,
        "cve-mapper",
        json!({"data_dir": missing.display().to_string()}),
        inputs,
        None,
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed, "{record:?}");
    let error = record.error.expect("an error");
    assert!(error.message.contains("no-such-vulndb"), "{error:?}");
}

/// One Apache 2.4.49 finding, as a detector would have stored it.
fn apache_2_4_49_finding() -> Value {
    json!({
        "fingerprint": "apache-2.4.49-on-test-host",
        "rule_id": "tech.apache-version",
        "title": "Apache httpd 2.4.49",
        "severity": "info",
        "cpe": ["cpe:2.3:a:apache:http_server:2.4.49:*:*:*:*:*:*:*"],
    })
}

async fn enrich_apache(supervisor: &Supervisor) -> Value {
    let mut inputs = Map::new();
    inputs.insert("findings".into(), json!([apache_2_4_49_finding()]));
    let record = run_with(supervisor, "cve-mapper", json!({}), inputs, None).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    Value::Object(record.outputs)
}

#[tokio::test(flavor = "multi_thread")]
async fn cve_mapper_keeps_its_index_in_its_state_dir_across_sandboxed_runs_and_rebuilds_it_when_a_record_changes(
) {
    if !root_or_skip("sandboxed state-dir runs") {
        return;
    }
    let bed = TestBed::new();
    let data = nvd_data(bed.path());
    install_pipeline(&bed, &data);
    // The same enricher, given the persistent state dir its shipped manifest asks for.
    bed.install(Install {
        category: "enricher",
        config_schema: json!({
            "data_dir": {"type": "string", "default": data.display().to_string()},
            "sources": {"type": "array", "items": {"enum": ["nvd", "osv"]}, "default": ["nvd"]},
            "cache_dir": {"type": "string", "default": ""}
        }),
        sandbox: json!({"network": false, "filesystem": "readonly", "timeout_seconds": 120,
            "state": true, "read_paths": [data.display().to_string()]}),
        ..Install::new("cve-mapper", workspace_bin("secflow-cve-mapper"))
    });
    let supervisor = bed.supervisor().await;
    let state = supervisor.config().sandbox.state_root.join("cve-mapper");

    let first = enrich_apache(&supervisor).await;
    assert_eq!(first["index"]["built"], true, "{first}");
    assert_eq!(first["index"]["records"], 35);
    let before = first["vulnerabilities"].as_u64().unwrap();
    assert!(
        before >= 2,
        "CVE-2021-41773 and CVE-2021-42013 at least: {first}"
    );
    let index_path = first["index"]["path"].as_str().unwrap().to_owned();
    let kept: Vec<_> = std::fs::read_dir(&state)
        .unwrap_or_else(|e| panic!("the state dir {} exists: {e}", state.display()))
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        kept.iter().any(|n| n.to_string_lossy().ends_with(".index")),
        "the index outlives the run in {}: {kept:?} (the plugin saw {index_path})",
        state.display()
    );

    // A later run (another uid, a fresh view) maps the kept index instead of
    // building one.
    let second = enrich_apache(&supervisor).await;
    assert_eq!(second["index"]["built"], false, "{second}");
    assert_eq!(second["vulnerabilities"], before, "{second}");

    // NVD withdraws CVE-2021-42013's configurations: the next run notices the
    // changed file, rebuilds, and no longer maps Apache 2.4.49 to it.
    let record = data.join("CVE-2021-42013.json");
    let mut cve: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    cve["configurations"] = json!([]);
    std::fs::write(&record, serde_json::to_vec(&cve).unwrap()).unwrap();
    let third = enrich_apache(&supervisor).await;
    assert_eq!(third["index"]["built"], true, "{third}");
    assert_eq!(third["index"]["records"], 35);
    assert_eq!(third["vulnerabilities"], before - 1, "{third}");
}

/// The bed's `[vulndb]` table: the data directory cve-mapper reads.
fn vulndb_config(data: &Path) -> String {
    format!("[vulndb]\ndata_dir = \"{}\"\n", data.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_vulnerability_data_is_not_installed_is_skipped_with_the_command_that_installs_it(
) {
    let data = std::env::temp_dir().join(format!("secflow-no-vulndb-{}", std::process::id()));
    let bed = TestBed::with_config(&vulndb_config(&data));
    install_pipeline(&bed, &data);
    let supervisor = bed.supervisor().await;
    let mut inputs = Map::new();
    inputs.insert("findings".into(), json!([apache_2_4_49_finding()]));
    let record = run_with(&supervisor, "cve-mapper", json!({}), inputs, None).await;
    assert_eq!(record.status, RunStatus::Skipped, "{record:?}");
    let error = record.error.as_ref().expect("a skipped run says why");
    assert_eq!(error.kind.as_str(), "data_unavailable");
    assert!(
        error.message.contains(&data.display().to_string()),
        "{error:?}"
    );
    assert!(error.message.contains("secflow vulndb update"), "{error:?}");
    supervisor.flush().await.unwrap();
    let stored = supervisor.store().run(&record.run_id).unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Skipped);
    let audit = audit_events(&supervisor, "run_skipped");
    assert_eq!(audit.len(), 1, "{audit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_without_vulnerability_data_completes_and_after_vulndb_import_it_is_enriched() {
    if nmap_or_skip().is_none() {
        return;
    }
    let port = banner_service(OPENSSH_BANNER);
    let data = std::env::temp_dir().join(format!("secflow-vulndb-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let bed = TestBed::with_config(&vulndb_config(&data));
    install_pipeline(&bed, &data);
    let target = format!("127.0.0.1:{port}");

    // A fresh host: no data. The doctor warns, the scan completes, cve-mapper is skipped.
    let doctor = bed.secflow(&["--json", "doctor"]);
    let doctor = json_of(&doctor);
    assert_eq!(doctor["vulndb"]["state"], "missing", "{doctor}");
    assert!(doctor["vulndb"]["message"]
        .as_str()
        .unwrap()
        .contains("secflow vulndb update"));
    let scan = bed.secflow(&["--json", "scan", &target, "--local"]);
    assert!(
        scan.status.success(),
        "a scan without data still completes: {}",
        String::from_utf8_lossy(&scan.stderr)
    );
    let report = json_of(&scan);
    let mapper = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["plugin"] == "cve-mapper")
        .expect("cve-mapper is in the pipeline");
    assert_eq!(mapper["status"], "skipped", "{mapper}");
    assert_eq!(report["summary"]["complete"], true, "{report}");
    assert_eq!(report["summary"]["runs"]["skipped"], 1, "{report}");
    assert_eq!(
        report["summary"]["findings"], 1,
        "the detector's finding is kept"
    );

    // The documented remedy for a host without network access.
    let fixtures = workspace_root().join("tests/fixtures/nvd");
    let mut import = vec!["vulndb".to_string(), "import".to_string()];
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            import.push(path.display().to_string());
        }
    }
    let import: Vec<&str> = import.iter().map(String::as_str).collect();
    let imported = bed.secflow(&import);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let status = json_of(&bed.secflow(&["--json", "vulndb", "status"]));
    assert_eq!(status["health"]["state"], "fresh", "{status}");
    assert_eq!(status["sources"][0]["source"], "nvd");
    assert_eq!(status["sources"][0]["records"], import.len() - 2);

    let scan = bed.secflow(&["--json", "scan", &target, "--local"]);
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    let report = json_of(&scan);
    let mapper = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["plugin"] == "cve-mapper")
        .unwrap();
    assert_eq!(mapper["status"], "succeeded", "{mapper}");
    let cves: Vec<&str> = report["summary"]["top_cves"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["cve"].as_str())
        .collect();
    assert!(
        cves.contains(&"CVE-2016-6210"),
        "OpenSSH 7.2p2 is mapped: {cves:?}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_malformed_import_is_refused_naming_the_file_and_leaves_the_data_as_it_was() {
    let data = tempfile::tempdir().unwrap();
    let bed = TestBed::with_config(&vulndb_config(&data.path().join("vulndb")));
    let record = workspace_root().join("tests/fixtures/nvd/CVE-2024-6387.json");
    let ok = bed.secflow(&["vulndb", "import", &record.display().to_string()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = bed.path().join("truncated.json");
    std::fs::write(&bad, "{\"format\": \"NVD_CVE\", \"vulnerabilities\": [").unwrap();
    let refused = bed.secflow(&["vulndb", "import", &bad.display().to_string()]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("truncated.json"), "{stderr}");
    assert!(stderr.contains("unchanged"), "{stderr}");
    let status = json_of(&bed.secflow(&["--json", "vulndb", "status"]));
    assert_eq!(status["sources"][0]["records"], 1, "{status}");
}

#[test]
fn an_update_that_cannot_reach_its_source_fails_naming_it_and_keeps_the_previous_data() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("vulndb");
    // Port 9 on loopback: nothing listens (discard is not run here).
    let bed = TestBed::with_config(&format!(
        "{}kev_url = \"http://127.0.0.1:9/kev.json\"\nsources = [\"kev\"]\nmax_retries = 0\n",
        vulndb_config(&dir)
    ));
    let record = workspace_root().join("tests/fixtures/nvd/CVE-2024-6387.json");
    let ok = bed.secflow(&["vulndb", "import", &record.display().to_string()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let update = bed.secflow(&["vulndb", "update"]);
    assert_eq!(update.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&update.stderr);
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
    assert!(stderr.contains("still current"), "{stderr}");
    let status = json_of(&bed.secflow(&["--json", "vulndb", "status"]));
    assert_eq!(status["sources"][0]["source"], "nvd", "{status}");
    assert_eq!(status["sources"][0]["records"], 1, "{status}");
}
