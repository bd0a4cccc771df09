//! Issue #10's promise, in its CI size: under load, faults and bad input the
//! daemon keeps serving, loses no committed finding, and leaves nothing
//! behind. The real `secflowd` is driven over its socket by the same code as
//! the `secflow-soak` program (soak/), which runs the full-size versions
//! (docs/reliability.md records their figures).
//!
//! - a short soak: 500 runs of well-behaved and hostile plugins, 25 000 findings;
//! - SIGKILL of the daemon at random moments while runs stream (5 trials);
//! - a full disk under the database (a small tmpfs);
//! - a corrupt or locked database at start;
//! - API clients that never read, or stall mid-line.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use secflow_soak::kill::{self, KillPlan};
use secflow_soak::probe;
use secflow_soak::soak::{self, SoakPlan};
use secflow_soak::{Binaries, Daemon, Home, Rpc};
use serde_json::{json, Value};
use support::{root_or_skip, workspace_bin};

fn binaries() -> Binaries {
    Binaries {
        secflowd: workspace_bin("secflowd"),
        detector: PathBuf::from(env!("CARGO_BIN_EXE_fixture-detector")),
        hostile: PathBuf::from(env!("CARGO_BIN_EXE_fixture-hostile")),
    }
}

/// Each test here loads the 2-core machine on its own (a daemon, hundreds
/// of runs, deadlines and grace periods measured in wall time): one at a time,
/// so that a test's outcome does not depend on what its neighbours do.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether this host can run sandboxed plugins (and mount a tmpfs); outside
/// CI a host that cannot makes the test skip, printing why; in CI it must.
/// Holds the caller's turn (see `ONE_AT_A_TIME`) while it runs.
fn root() -> Option<std::sync::MutexGuard<'static, ()>> {
    root_or_skip("the reliability tests (and their tmpfs mounts)")
        .then(|| ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
}

fn quiet_sandbox() -> Value {
    json!({"network": false, "filesystem": "readonly", "timeout_seconds": 60})
}

/// A home with the fixture detector installed as `detector`.
fn home_with_detector(database: &str) -> Home {
    let home = Home::create_with_database(None, database, "").expect("home");
    home.install(
        "detector",
        &binaries().detector,
        quiet_sandbox(),
        Binaries::detector_schema(),
    )
    .expect("detector installs");
    home
}

fn execute(rpc: &mut Rpc, count: u64) -> Value {
    rpc.call(
        "runs.execute",
        json!({"plugin": "detector", "config": {"count": count}}),
    )
    .expect("runs.execute answers")
}

#[test]
fn a_short_soak_serves_every_run_as_its_plugin_deserves_and_leaves_nothing_behind() {
    let Some(_turn) = root() else {
        return;
    };
    let report = soak::run(&SoakPlan::short(), &binaries()).expect("the soak runs");
    let summary = report.to_json();
    eprintln!("{summary:#}");
    assert_eq!(report.runs, 500, "{summary}");
    assert_eq!(report.unexpected_count, 0, "{summary}");
    assert!(
        report.leftovers.is_empty(),
        "nothing survives the runs: {summary}"
    );
    assert_eq!(report.integrity, "ok", "{summary}");
    assert!(
        report.findings_reported >= report.findings_planned && report.findings_planned == 25_000,
        "{summary}"
    );
    assert!(
        report.findings_stored.1 >= report.findings_planned,
        "every reported finding is stored: {summary}"
    );
    let (start, end) = (
        report.samples[0].usage,
        report.samples.last().expect("an end sample").usage,
    );
    // Flat: a leak shows as more fds after the last run than before the
    // first; the first sample may still catch a start-up file open.
    assert!(
        end.fds <= start.fds,
        "open fds are flat ({} before, {} after): {summary}",
        start.fds,
        end.fds
    );
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_finding_and_leaves_no_plugin() {
    let Some(_turn) = root() else {
        return;
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(10);
    let plan = KillPlan {
        trials: 5,
        seed,
        parent: None,
    };
    let report = kill::run(&plan, &binaries()).expect("the trials run");
    let summary = report.to_json();
    eprintln!("{summary:#}");
    assert!(report.failures.is_empty(), "{summary}");
    assert_eq!(
        report.interrupted_marked, 15,
        "every stream in flight at a kill is marked interrupted: {summary}"
    );
    assert!(
        report.findings_checked > 0,
        "the trials acknowledged findings before each kill: {summary}"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {}",
            dir.display()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes a file until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5a_u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        // A last partial chunk may fit.
        while file.write_all(&chunk[..4096]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_fails_runs_as_storage_full_while_the_api_serves_and_recovery_follows_space() {
    let Some(_turn) = root() else {
        return;
    };
    let home = home_with_detector("db/secflow.db");
    let tmpfs = Tmpfs::mount(&home.path().join("db"), "16m");
    let mut daemon = Daemon::start(&binaries().secflowd, &home).expect("secflowd starts");
    let mut rpc = daemon.rpc().unwrap();
    assert_eq!(execute(&mut rpc, 100)["status"], "succeeded");

    let filler = tmpfs.fill();
    let full = execute(&mut rpc, 20_000);
    assert_eq!(full["status"], "failed", "{full}");
    assert_eq!(full["error"]["kind"], "storage_full", "{full}");
    assert_eq!(full["partial"], true, "{full}");

    // The daemon keeps answering: health, queries of what is stored, new runs
    // (which fail the same clear way while the disk stays full).
    let health = rpc
        .call("system.health", json!({}))
        .expect("health answers");
    assert!(health["uptime_ms"].as_u64().is_some(), "{health}");
    let page = rpc
        .call("findings.query", json!({"limit": 10}))
        .expect("findings.query answers");
    assert_eq!(page["findings"].as_array().unwrap().len(), 10, "{page}");
    rpc.call("runs.list", json!({"limit": 5}))
        .expect("runs.list answers");
    let again = execute(&mut rpc, 20_000);
    assert_eq!(again["error"]["kind"], "storage_full", "{again}");

    std::fs::remove_file(filler).unwrap();
    let recovered = execute(&mut rpc, 100);
    assert_eq!(recovered["status"], "succeeded", "{recovered}");
    assert_eq!(recovered["findings"], 100, "{recovered}");
    assert_eq!(
        rpc.finding_ids(recovered["run_id"].as_str().unwrap())
            .unwrap()
            .len(),
        100
    );
    // The failed runs' records landed once space returned: none stays `running`.
    for failed in [&full, &again] {
        let stored = rpc
            .call("runs.get", json!({"run_id": failed["run_id"]}))
            .unwrap();
        assert_eq!(stored["status"], "failed", "{stored}");
        assert_eq!(stored["error"]["kind"], "storage_full", "{stored}");
    }
    let status = daemon.stop().expect("secflowd stops");
    assert!(status.success(), "{status}\n{}", daemon.log());
    assert_eq!(probe::integrity_check(&home.database).unwrap(), "ok");
}

/// Starts `secflowd` on `home`, which must refuse to start; returns its
/// stderr.
fn refused_start(home: &Home) -> String {
    let mut child = Command::new(workspace_bin("secflowd"))
        .arg("--config")
        .arg(&home.config_path)
        .env_remove("SECFLOW_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("secflowd starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("secflowd kept running on a database it cannot use");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "exit status: {status}\n{stderr}");
    stderr
}

/// The one line an operator reads: `secflowd: …`.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("secflowd: "))
        .unwrap_or_else(|| panic!("no `secflowd: ` error line in:\n{stderr}"))
}

#[test]
fn a_corrupt_database_stops_the_daemon_at_start_with_one_line_naming_the_file() {
    let home = home_with_detector("var/secflow.db");
    std::fs::create_dir_all(home.database.parent().unwrap()).unwrap();
    // Not a database at all.
    std::fs::write(&home.database, vec![0xa5_u8; 64 << 10]).unwrap();
    let stderr = refused_start(&home);
    let line = error_line(&stderr);
    assert!(line.contains("var/secflow.db"), "{line}");
    assert!(line.contains("not a database"), "{line}");

    // A real database whose schema pages were overwritten.
    std::fs::remove_file(&home.database).unwrap();
    let mut daemon = Daemon::start(&binaries().secflowd, &home).expect("secflowd starts");
    execute(&mut daemon.rpc().unwrap(), 200);
    assert!(daemon.stop().unwrap().success());
    let mut bytes = std::fs::read(&home.database).unwrap();
    // Keep the 100-byte header; scribble over the rest of page 1 (the schema).
    let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]])).max(512);
    for b in &mut bytes[100..page] {
        *b = 0xa5;
    }
    std::fs::write(&home.database, bytes).unwrap();
    let stderr = refused_start(&home);
    let line = error_line(&stderr);
    assert!(line.contains("var/secflow.db"), "{line}");
    assert!(line.contains("malformed"), "{line}");
}

#[test]
fn a_database_locked_by_another_process_stops_the_daemon_at_start_naming_the_file() {
    let home = home_with_detector("var/secflow.db");
    let mut daemon = Daemon::start(&binaries().secflowd, &home).expect("secflowd starts");
    assert!(daemon.stop().unwrap().success());
    // Another process holds an exclusive lock (python3's sqlite3, as an
    // operator's maintenance script would).
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA locking_mode = EXCLUSIVE'); c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True); time.sleep(120)",
        )
        .arg(&home.database)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (CI installs it)");
    let mut ready = [0u8; 6];
    holder
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    let stderr = refused_start(&home);
    let _ = holder.kill();
    let _ = holder.wait();
    let line = error_line(&stderr);
    assert!(line.contains("var/secflow.db"), "{line}");
    assert!(line.contains("locked"), "{line}");
}

#[test]
fn clients_that_never_read_or_stall_mid_line_do_not_hold_up_other_clients() {
    let Some(_turn) = root() else {
        return;
    };
    let home = home_with_detector("var/secflow.db");
    let mut daemon = Daemon::start(&binaries().secflowd, &home).expect("secflowd starts");
    let mut good = daemon.rpc().unwrap();
    let run = execute(&mut good, 1000);
    let run_id = run["run_id"].as_str().unwrap().to_string();

    // A client that asks for a lot and never reads an answer: its socket
    // buffer fills, then the daemon's queue for it.
    let mut deaf = UnixStream::connect(&daemon.socket).unwrap();
    deaf.set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "findings.query",
                         "params": {"run_id": run_id, "limit": 1000}});
    let mut sent = 0;
    while sent < 2000 && deaf.write_all(format!("{request}\n").as_bytes()).is_ok() {
        sent += 1;
    }
    // A client that sends half a line and stalls.
    let mut stalled = UnixStream::connect(&daemon.socket).unwrap();
    stalled
        .write_all(br#"{"jsonrpc": "2.0", "id": 7, "method": "system.he"#)
        .unwrap();

    // What does not read the database is answered at once: health, a run.
    let started = Instant::now();
    for _ in 0..20 {
        let health = good.call("system.health", json!({})).expect("health");
        assert!(health["uptime_ms"].is_u64());
    }
    let mut fresh = daemon.rpc().unwrap();
    let again = execute(&mut fresh, 100);
    assert_eq!(again["status"], "succeeded", "{again}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "other clients were held up for {:?}",
        started.elapsed()
    );
    // Queries share the one read connection: they wait at most for the
    // deaf client's `api.max_pending_requests` (64) queries, then it is no
    // longer read from and holds nothing more.
    assert_eq!(fresh.finding_ids(&run_id).unwrap().len(), 1000);
    let settled = Instant::now();
    assert_eq!(good.finding_ids(&run_id).unwrap().len(), 1000);
    assert!(
        settled.elapsed() < Duration::from_secs(5),
        "queries were still held up after the deaf client's share: {:?}",
        settled.elapsed()
    );

    // Shutdown does not wait on them either.
    let status = daemon.stop().expect("secflowd stops");
    assert!(status.success(), "{status}\n{}", daemon.log());
    drop((deaf, stalled));
}
