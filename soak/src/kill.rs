//! SIGKILL trials: the daemon is killed at a random moment while runs stream
//! findings, restarted, and checked against everything it had acknowledged.
//!
//! "Acknowledged as committed" is what the API said before the kill:
//! - every finding `findings.query` returned (the API reads only the database,
//!   so a finding it returns has been committed);
//! - every run record `runs.execute` returned once the run ended (its
//!   `findings` count is answered only after the writer committed the record
//!   and everything queued before it).
//!
//! After each restart: every acknowledged finding is still returned for its
//! run, every acknowledged record reads back with the same status and count,
//! every run that was in flight is `failed` with kind `interrupted`, `PRAGMA
//! integrity_check` (run while no daemon is up) is `ok`, no fingerprint is
//! stored twice, and no plugin process outlived the daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{Binaries, Daemon, HarnessError, Home, Rpc};
use crate::probe::{self, ProcessInfo};
use crate::soak::outcome_of;

/// Runs streaming findings when the kill comes.
const STREAMS: usize = 3;
/// Findings each stream sends, 1 ms apart: longer than any kill delay.
const STREAM_FINDINGS: u64 = 4_000;
/// The kill comes this long after the streams start (uniformly at random).
const KILL_AFTER_MS: std::ops::Range<u64> = 200..2_500;
/// How long plugins may take to die after the daemon did.
const SURVIVOR_PATIENCE: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct KillPlan {
    pub trials: u32,
    /// Seed of the kill moments (printed in the report to replay a trial).
    pub seed: u64,
    pub parent: Option<std::path::PathBuf>,
}

/// What the trials found.
#[derive(Debug, Clone, Default)]
pub struct KillReport {
    pub trials: u32,
    pub seed: u64,
    /// Kill moments, ms after the streams started.
    pub kill_after_ms: Vec<u64>,
    /// Acknowledged findings checked present after a restart.
    pub findings_checked: u64,
    /// Acknowledged run records checked after a restart.
    pub records_checked: u64,
    /// Runs in flight at the kill, found `failed`/`interrupted` after it.
    pub interrupted_marked: u64,
    /// Every broken promise, with the trial it broke in.
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl KillReport {
    pub fn to_json(&self) -> Value {
        json!({
            "trials": self.trials,
            "seed": self.seed,
            "kill_after_ms": self.kill_after_ms,
            "findings_checked": self.findings_checked,
            "records_checked": self.records_checked,
            "interrupted_marked": self.interrupted_marked,
            "failures": self.failures,
            "elapsed_s": self.elapsed.as_secs_f64(),
        })
    }
}

/// What the API acknowledged during one trial.
#[derive(Debug, Default)]
struct Acknowledged {
    /// Streaming runs (started, not ended at the kill): finding ids seen.
    streams: BTreeMap<String, BTreeSet<i64>>,
    /// Records returned by `runs.execute`.
    records: Vec<Value>,
}

/// Runs the trials.
pub fn run(plan: &KillPlan, bins: &Binaries) -> Result<KillReport, HarnessError> {
    let home = Home::create(plan.parent.as_deref(), "")?;
    let sandbox = json!({"network": false, "filesystem": "readonly", "timeout_seconds": 120});
    home.install(
        "streamer",
        &bins.detector,
        sandbox.clone(),
        Binaries::detector_schema(),
    )?;
    home.install(
        "quick",
        &bins.detector,
        sandbox,
        Binaries::detector_schema(),
    )?;
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let mut report = KillReport {
        trials: plan.trials,
        seed: plan.seed,
        ..KillReport::default()
    };
    let started = Instant::now();
    let mut daemon = Daemon::start(&bins.secflowd, &home)?;
    let mut pending: Option<Acknowledged> = None;
    for trial in 1..=plan.trials {
        if let Some(acked) = pending.take() {
            check(&daemon, trial - 1, &acked, &mut report);
        }
        let delay = rng.u64(KILL_AFTER_MS);
        report.kill_after_ms.push(delay);
        let acked = stream_and_kill(&mut daemon, &home, delay, trial, &mut report);
        let left = survivors(&home);
        if !left.is_empty() {
            report.failures.push(format!(
                "trial {trial}: plugin processes outlived the daemon: {}",
                left.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for p in left {
                // SAFETY: kill has no memory preconditions; the pid is a
                // process of this trial's runs (its uid is in the home's range).
                unsafe { libc::kill(p.pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        match probe::integrity_check(&home.database) {
            Ok(result) if result == "ok" => {}
            Ok(result) => report
                .failures
                .push(format!("trial {trial}: integrity_check: {result}")),
            Err(e) => report
                .failures
                .push(format!("trial {trial}: integrity_check failed: {e}")),
        }
        // Every trial's streams send the same fingerprints again: each
        // must still be one finding.
        match probe::duplicate_fingerprints(&home.database) {
            Ok(0) => {}
            Ok(n) => report.failures.push(format!(
                "trial {trial}: {n} findings duplicate a stored fingerprint"
            )),
            Err(e) => report.failures.push(format!(
                "trial {trial}: counting duplicate fingerprints failed: {e}"
            )),
        }
        daemon = Daemon::start(&bins.secflowd, &home)?;
        pending = Some(acked);
    }
    if let Some(acked) = pending.take() {
        check(&daemon, plan.trials, &acked, &mut report);
    }
    if daemon.stop().is_none_or(|s| !s.success()) {
        report.failures.push(format!(
            "the last daemon did not stop cleanly:\n{}",
            daemon.log()
        ));
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Starts the streams and a client of quick runs, records what the API
/// acknowledges, and SIGKILLs the daemon `delay` ms in.
fn stream_and_kill(
    daemon: &mut Daemon,
    home: &Home,
    delay: u64,
    trial: u32,
    report: &mut KillReport,
) -> Acknowledged {
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut starter = match daemon.rpc() {
        Ok(rpc) => rpc,
        Err(e) => {
            report
                .failures
                .push(format!("trial {trial}: cannot connect: {e}"));
            daemon.kill();
            return Acknowledged::default();
        }
    };
    let mut run_ids = Vec::new();
    for _ in 0..STREAMS {
        let params =
            json!({"plugin": "streamer", "config": {"count": STREAM_FINDINGS, "delay_ms": 1}});
        match starter.call("runs.start", params) {
            Ok(answer) => {
                if let Some(id) = answer["run_id"].as_str() {
                    run_ids.push(id.to_string());
                }
            }
            Err(e) => report
                .failures
                .push(format!("trial {trial}: runs.start failed: {e}")),
        }
    }
    if let Ok(mut a) = acked.lock() {
        for id in &run_ids {
            a.streams.insert(id.clone(), BTreeSet::new());
        }
    }
    let socket = home.socket.clone();
    let observer = {
        let (acked, stop, socket) = (acked.clone(), stop.clone(), socket.clone());
        std::thread::spawn(move || observe(&socket, &run_ids, &acked, &stop))
    };
    let quick = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || quick_runs(&socket, &acked, &stop))
    };
    std::thread::sleep(Duration::from_millis(delay));
    daemon.kill();
    stop.store(true, Ordering::Relaxed);
    let _ = observer.join();
    let _ = quick.join();
    match Arc::try_unwrap(acked) {
        Ok(m) => m
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        Err(_) => Acknowledged::default(),
    }
}

/// Pages through each stream's findings (by id, each poll from where the
/// last one ended) until the daemon goes.
fn observe(
    socket: &std::path::Path,
    runs: &[String],
    acked: &Mutex<Acknowledged>,
    stop: &AtomicBool,
) {
    let Ok(mut rpc) = Rpc::connect(socket) else {
        return;
    };
    let mut cursor: BTreeMap<&str, i64> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        for run in runs {
            let mut params = json!({"run_id": run, "limit": 1000});
            if let Some(after) = cursor.get(run.as_str()) {
                params["after"] = json!(after);
            }
            let Ok(page) = rpc.call("findings.query", params) else {
                return;
            };
            let ids: Vec<i64> = page["findings"]
                .as_array()
                .map(|f| f.iter().filter_map(|f| f["id"].as_i64()).collect())
                .unwrap_or_default();
            if let Some(last) = ids.last() {
                cursor.insert(run, *last);
            }
            if let Ok(mut a) = acked.lock() {
                a.streams.entry(run.clone()).or_default().extend(ids);
            }
        }
    }
}

/// Short runs, one after the other, whose records are acknowledged.
fn quick_runs(socket: &std::path::Path, acked: &Mutex<Acknowledged>, stop: &AtomicBool) {
    let Ok(mut rpc) = Rpc::connect(socket) else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        let params = json!({"plugin": "quick", "config": {"count": 50}});
        let Ok(record) = rpc.call("runs.execute", params) else {
            return;
        };
        if let Ok(mut a) = acked.lock() {
            a.records.push(record);
        }
    }
}

/// Processes of the home's runs still alive after the daemon died (given
/// [`SURVIVOR_PATIENCE`] to go).
fn survivors(home: &Home) -> Vec<ProcessInfo> {
    let deadline = Instant::now() + SURVIVOR_PATIENCE;
    loop {
        let left: Vec<ProcessInfo> = probe::processes()
            .into_iter()
            .filter(|p| home.uids.contains(&p.uid))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks, on the restarted daemon, everything trial `trial` acknowledged.
fn check(daemon: &Daemon, trial: u32, acked: &Acknowledged, report: &mut KillReport) {
    let mut rpc = match daemon.rpc() {
        Ok(rpc) => rpc,
        Err(e) => {
            report
                .failures
                .push(format!("trial {trial}: cannot connect after restart: {e}"));
            return;
        }
    };
    for (run_id, seen) in &acked.streams {
        let record = match rpc.call("runs.get", json!({"run_id": run_id})) {
            Ok(record) => record,
            Err(e) => {
                report
                    .failures
                    .push(format!("trial {trial}: run {run_id} is gone: {e}"));
                continue;
            }
        };
        let outcome = outcome_of(&record);
        // A stream killed mid-flight is interrupted; one that ended before the
        // kill (not expected with these delays) must have every finding.
        if outcome == "failed/interrupted" {
            report.interrupted_marked += 1;
        } else if outcome != "succeeded" {
            report.failures.push(format!(
                "trial {trial}: run {run_id} in flight at the kill reads back as {outcome}"
            ));
        }
        match rpc.finding_ids(run_id) {
            Ok(ids) => {
                let stored: BTreeSet<i64> = ids.into_iter().collect();
                let missing = seen.difference(&stored).count();
                if missing > 0 {
                    report.failures.push(format!(
                        "trial {trial}: run {run_id}: {missing} of {} acknowledged findings are missing",
                        seen.len()
                    ));
                }
                report.findings_checked += seen.len() as u64;
            }
            Err(e) => report
                .failures
                .push(format!("trial {trial}: findings of run {run_id}: {e}")),
        }
    }
    for before in &acked.records {
        let Some(run_id) = before["run_id"].as_str() else {
            continue;
        };
        let after = match rpc.call("runs.get", json!({"run_id": run_id})) {
            Ok(record) => record,
            Err(e) => {
                report.failures.push(format!(
                    "trial {trial}: acknowledged run {run_id} is gone: {e}"
                ));
                continue;
            }
        };
        let count = before["findings"].as_u64().unwrap_or(0);
        let stored = rpc.finding_ids(run_id).map(|ids| ids.len() as u64);
        if outcome_of(&after) != outcome_of(before)
            || after["findings"] != before["findings"]
            || stored.as_ref().ok() != Some(&count)
        {
            report.failures.push(format!(
                "trial {trial}: run {run_id} was acknowledged as {} with {count} findings, reads back as {} with {} ({stored:?} stored)",
                outcome_of(before),
                outcome_of(&after),
                after["findings"]
            ));
        }
        report.records_checked += 1;
        report.findings_checked += count;
    }
}
