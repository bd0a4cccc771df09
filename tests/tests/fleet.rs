//! The fleet store end to end: supervisors on several hosts writing to one
//! real PostgreSQL server (the testkit's private one), the CLI reading it, and
//! the server going away under a running plugin and coming back.

mod support;

use std::time::Duration;

use secflow_core::record::{ErrorKind, RunStatus};
use secflow_store::FindingQuery;
use secflow_store_postgres::testkit;
use serde_json::json;
use support::*;

const DETECTOR: &str = env!("CARGO_BIN_EXE_fixture-detector");

/// A home whose store is the PostgreSQL database at `url`, as host `host`.
fn fleet_bed(url: &str, host: &str) -> TestBed {
    TestBed::with_sections(
        &format!("backend = \"postgres\"\nurl = \"{url}\"\ntls = \"disable\"\npool_size = 2\n"),
        "",
        &format!("[host]\nname = \"{host}\"\n"),
    )
}

/// Every stored finding, page after page.
fn all_findings(
    supervisor: &secflow_runner::Supervisor,
    host: Option<&str>,
) -> Vec<secflow_store::StoredFinding> {
    let mut query = FindingQuery {
        limit: Some(100),
        host: host.map(str::to_string),
        ..FindingQuery::default()
    };
    let mut all = Vec::new();
    loop {
        let page = supervisor.store().findings(&query).expect("findings");
        all.extend(page.findings);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_writing_to_one_database_see_one_deduplicated_set_naming_both_hosts() {
    let Some(server) = testkit::shared() else {
        return;
    };
    let url = server.fresh_database();
    let database = url.rsplit('/').next().expect("database name").to_string();
    let (bed_a, bed_b) = (fleet_bed(&url, "scan-a"), fleet_bed(&url, "scan-b"));
    bed_a.install_fixture("detector", DETECTOR);
    bed_b.install_fixture("detector", DETECTOR);
    let (a, b) = tokio::join!(bed_a.supervisor(), bed_b.supervisor());

    // Both hosts scan at once: the same 60 findings, and 20 more on b.
    let (run_a, run_b) = tokio::join!(
        run(&a, "detector", json!({"count": 60})),
        run(&b, "detector", json!({"count": 80})),
    );
    assert_eq!(
        (run_a.status, run_a.findings),
        (RunStatus::Succeeded, 60),
        "{run_a:?}"
    );
    assert_eq!(
        (run_b.status, run_b.findings),
        (RunStatus::Succeeded, 80),
        "{run_b:?}"
    );

    // Either host reads the same deduplicated set.
    let from_a = all_findings(&a, None);
    assert_eq!(from_a, all_findings(&b, None));
    assert_eq!(from_a.len(), 80, "one row per fingerprint across hosts");
    let both: Vec<_> = from_a.iter().filter(|f| f.occurrences == 2).collect();
    assert_eq!(both.len(), 60);
    for f in &both {
        assert_eq!(
            f.finding["hosts"],
            json!(["scan-a", "scan-b"]),
            "{}",
            f.fingerprint
        );
    }
    for f in from_a.iter().filter(|f| f.occurrences == 1) {
        assert_eq!(f.finding["hosts"], json!(["scan-b"]));
    }
    assert_eq!(all_findings(&a, Some("scan-a")).len(), 60);
    assert_eq!(all_findings(&a, Some("scan-b")).len(), 80);

    // Each run, and each host's audit rows, name their host.
    let hosts_of = |sql: &str| server.psql(&database, sql).expect("psql");
    assert_eq!(
        hosts_of(&format!(
            "SELECT host FROM runs WHERE run_id IN ('{}', '{}') ORDER BY host",
            run_a.run_id, run_b.run_id
        )),
        "scan-a\nscan-b"
    );
    assert_eq!(
        hosts_of("SELECT DISTINCT host FROM audit ORDER BY host"),
        "scan-a\nscan-b"
    );
    assert_eq!(
        a.store()
            .run(&run_b.run_id)
            .expect("run")
            .map(|r| r.findings),
        Some(80),
        "a host reads another host's runs"
    );

    // The CLI on host a filters by host.
    let out = bed_a.secflow(&["--json", "findings", "--local", "--host", "scan-b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = json_of(&out);
    assert_eq!(listed.as_array().map(Vec::len), Some(80), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_database_goes_away_fails_with_a_storage_error_and_the_supervisor_serves_again()
{
    let Some(mut server) = testkit::own() else {
        return;
    };
    let url = server.fresh_database();
    let bed = fleet_bed(&url, "scan-a");
    bed.install_fixture("detector", DETECTOR);
    let supervisor = std::sync::Arc::new(bed.supervisor().await);
    let committed = run(&supervisor, "detector", json!({"count": 40})).await;
    assert_eq!(committed.status, RunStatus::Succeeded, "{committed:?}");

    // The server stops while a detector streams its findings.
    let streaming = {
        let supervisor = std::sync::Arc::clone(&supervisor);
        tokio::spawn(async move {
            run(
                &supervisor,
                "detector",
                json!({"count": 400, "delay_ms": 5}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| server.stop());
    let lost = streaming.await.expect("the run task ends");
    assert_eq!(lost.status, RunStatus::Failed, "{lost:?}");
    let error = lost.error.as_ref().expect("an error");
    assert_eq!(error.kind, ErrorKind::StorageError, "{error:?}");
    assert!(
        error.message.contains("could not all be stored"),
        "a message that says what was lost: {}",
        error.message
    );
    // While it is down, queries fail with an error rather than hanging or
    // crashing the supervisor.
    assert!(supervisor
        .store()
        .findings(&FindingQuery::default())
        .is_err());

    tokio::task::block_in_place(|| server.start_again()).expect("server restarts");
    let again = run(&supervisor, "detector", json!({"count": 40})).await;
    assert_eq!(again.status, RunStatus::Succeeded, "{again:?}");
    let findings = all_findings(&supervisor, None);
    assert!(findings.len() >= 40, "nothing committed before was lost");
    let first: Vec<_> = findings
        .iter()
        .filter(|f| f.run_id == committed.run_id)
        .collect();
    assert_eq!(first.len(), 40);
    assert!(
        first.iter().all(|f| f.occurrences >= 2),
        "seen again after the outage"
    );
    // The failed run's record reached the database once the server was back.
    let stored = supervisor
        .store()
        .run(&lost.run_id)
        .expect("run")
        .expect("the failed run is recorded");
    assert_eq!(stored.status, RunStatus::Failed);
    assert_eq!(stored.error.map(|e| e.kind), Some(ErrorKind::StorageError));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_database_moved_into_postgres_keeps_every_row_and_its_dedup() {
    let Some(server) = testkit::shared() else {
        return;
    };
    let url = server.fresh_database();
    // The old host: its own SQLite file, each finding seen twice.
    let old = TestBed::with_config("[host]\nname = \"old-host\"\n");
    old.install_fixture("detector", DETECTOR);
    let old_runs = {
        let supervisor = old.supervisor().await;
        let first = run(&supervisor, "detector", json!({"count": 30})).await;
        let second = run(&supervisor, "detector", json!({"count": 30})).await;
        [first, second]
    };
    // The fleet store already holds another host's findings, 30 of them the same.
    let fleet = fleet_bed(&url, "scan-b");
    fleet.install_fixture("detector", DETECTOR);
    {
        let supervisor = fleet.supervisor().await;
        let present = run(&supervisor, "detector", json!({"count": 40})).await;
        assert_eq!(present.status, RunStatus::Succeeded, "{present:?}");
    }

    let dump = old.path().join("old.dump");
    let dump_arg = dump.to_str().expect("utf-8 path");
    let out = old.secflow(&["--json", "storage", "export", "--out", dump_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = json_of(&out);
    assert_eq!(
        (exported["runs"].as_u64(), exported["findings"].as_u64()),
        (Some(2), Some(30))
    );
    assert_eq!(exported["observations"], 60, "each finding in both runs");

    // A dump that lost a line on the way is refused, and nothing is imported.
    let text = std::fs::read_to_string(&dump).expect("dump");
    let cut = old.path().join("cut.dump");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(lines.len() / 2);
    std::fs::write(&cut, lines.join("\n") + "\n").expect("write");
    let refused = fleet.secflow(&["storage", "import", cut.to_str().expect("utf-8")]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("but holds"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let out = fleet.secflow(&["--json", "storage", "import", dump_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    assert_eq!(report["merged_findings"], 30, "{report}");

    let supervisor = fleet.supervisor().await;
    let all = all_findings(&supervisor, None);
    assert_eq!(
        all.len(),
        40,
        "dedup holds across the imported and present findings"
    );
    let merged: Vec<_> = all.iter().filter(|f| f.occurrences == 3).collect();
    assert_eq!(merged.len(), 30, "two old sightings plus the present one");
    for f in &merged {
        assert_eq!(f.finding["hosts"], json!(["old-host", "scan-b"]));
    }
    for record in &old_runs {
        assert_eq!(
            supervisor
                .store()
                .run(&record.run_id)
                .expect("run")
                .as_ref(),
            Some(record),
            "the run record moved as it was"
        );
        let of_run = supervisor
            .store()
            .findings(&FindingQuery {
                run_id: Some(record.run_id.clone()),
                limit: Some(1000),
                ..FindingQuery::default()
            })
            .expect("findings");
        assert_eq!(of_run.findings.len(), 30);
    }
    let audit_hosts = server
        .psql(
            url.rsplit('/').next().expect("database"),
            "SELECT count(*) FROM audit WHERE host = 'old-host'",
        )
        .expect("psql");
    assert_ne!(audit_hosts, "0", "the old host's audit rows came along");

    // The same dump again would count its findings twice: refused.
    let again = fleet.secflow(&["storage", "import", dump_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("imported before"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(all_findings(&supervisor, None), all);
}

#[test]
fn storage_migrate_and_doctor_report_the_postgres_store() {
    let Some(server) = testkit::shared() else {
        return;
    };
    let bed = fleet_bed(&server.fresh_database(), "scan-a");
    let doctor = |bed: &TestBed| json_of(&bed.secflow(&["--json", "doctor"]))["store"].clone();
    let before = doctor(&bed);
    assert_eq!(before["backend"], "postgres");
    assert_eq!(before["reachable"], true);
    assert_eq!(
        (
            before["schema_version"].as_i64(),
            before["migrated"].as_bool()
        ),
        (Some(0), Some(false))
    );
    assert!(
        !before["location"]
            .as_str()
            .unwrap_or_default()
            .contains('@'),
        "no user info in {before}"
    );

    let out = bed.secflow(&["--json", "storage", "migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = doctor(&bed);
    assert_eq!(after["migrated"], true, "{after}");
    assert_eq!(after["schema_version"], json_of(&out)["schema_version"]);

    // A server that is not there is reported, not hung on.
    let gone = fleet_bed("postgres://secflow@127.0.0.1:1/none", "scan-a");
    let report = doctor(&gone);
    assert_eq!(report["reachable"], false, "{report}");
    assert!(
        report["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{report}"
    );
}
