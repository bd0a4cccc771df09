//! Section 1, spawn: a trivial plugin (the SDK fixture detector, no finding)
//! through spawn → initialize → run → shutdown → reaped, one run at a time,
//! four ways: unsandboxed (a bare `Command`, the floor), the full sandbox
//! through the embedded supervisor's public API (`Supervisor::execute`, which
//! also verifies the code hash and stores the run), `bwrap --unshare-all
//! --die-with-parent` around the same binary, and `runs.execute` through the
//! daemon's socket (API + sandbox + storage).

use std::path::Path;
use std::time::{Duration, Instant};

use secflow_supervisor::config::Config;
use secflow_supervisor::runner::RunRequest;
use secflow_supervisor::Supervisor;
use serde_json::json;

use super::{bwrap_args, drive, expect_succeeded, TRIVIAL};
use crate::daemon::Daemon;
use crate::home::{BenchHome, HomeSettings};
use crate::report::{Bound, Figure};
use crate::stats::Samples;
use crate::{BenchError, Bins};

const SECTION: &str = "1 spawn";

/// `n` timed calls of `one` after `n / 10` untimed ones.
fn time(n: usize, mut one: impl FnMut() -> Result<(), BenchError>) -> Result<Samples, BenchError> {
    for _ in 0..n / 10 {
        one()?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        one()?;
        samples.push(start.elapsed());
    }
    Ok(Samples::new(samples))
}

pub fn run(bins: &Bins, runs: usize) -> Result<Vec<Figure>, BenchError> {
    let trivial = &bins.fixture_detector;
    eprintln!("[1 spawn] unsandboxed, {runs} runs");
    let plain = time(runs, || drive(trivial, &[]))?;

    eprintln!("[1 spawn] full sandbox (Supervisor::execute), {runs} runs");
    let sandboxed = embedded(trivial, runs)?;

    eprintln!("[1 spawn] bwrap, {runs} runs");
    let bwrap = time(runs, || drive(&bins.bwrap, &bwrap_args(trivial)))?;

    eprintln!("[1 spawn] runs.execute through the daemon, {runs} runs");
    let home = BenchHome::new(&HomeSettings::default())?;
    home.install(TRIVIAL, trivial)?;
    let daemon = Daemon::start(&bins.secflowd, &home)?;
    let mut rpc = daemon.connect()?;
    let through_daemon = time(runs, || {
        let record = rpc.call("runs.execute", json!({"plugin": TRIVIAL}))?;
        expect_succeeded(&record)
    })?;
    drop(daemon);

    let (plain_ms, bwrap_ms) = (plain.median_ms(), bwrap.median_ms());
    Ok(vec![
        Figure::new(SECTION, "unsandboxed median", plain_ms, "ms"),
        Figure::new(SECTION, "unsandboxed p99", plain.p99_ms(), "ms"),
        Figure::new(SECTION, "bwrap median", bwrap_ms, "ms"),
        Figure::new(SECTION, "bwrap p99", bwrap.p99_ms(), "ms"),
        Figure::new(SECTION, "full sandbox median", sandboxed.median_ms(), "ms")
            .against("unsandboxed", plain_ms)
            .target(Bound::AtMost(2.0)),
        Figure::new(SECTION, "full sandbox median", sandboxed.median_ms(), "ms")
            .against("bwrap", bwrap_ms)
            .target(Bound::AtMost(0.35)),
        Figure::new(SECTION, "full sandbox p99", sandboxed.p99_ms(), "ms")
            .against("bwrap p99", bwrap.p99_ms()),
        Figure::new(
            SECTION,
            "daemon runs.execute median",
            through_daemon.median_ms(),
            "ms",
        )
        .against("bwrap", bwrap_ms)
        .target(Bound::AtMost(0.4)),
        Figure::new(
            SECTION,
            "daemon runs.execute p99",
            through_daemon.p99_ms(),
            "ms",
        )
        .against("bwrap p99", bwrap.p99_ms()),
    ])
}

/// The full sandbox through the supervisor's public API, in this process.
fn embedded(trivial: &Path, runs: usize) -> Result<Samples, BenchError> {
    let home = BenchHome::new(&HomeSettings::default())?;
    home.install(TRIVIAL, trivial)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: "starting the tokio runtime".into(),
            source,
        })?;
    runtime.block_on(async {
        let config = Config::load(&home.config_path)
            .map_err(|e| BenchError::Setup(format!("bench config: {e}")))?;
        let supervisor = Supervisor::open(config)
            .await
            .map_err(|e| BenchError::Setup(format!("opening the supervisor: {e}")))?;
        let mut samples = Vec::with_capacity(runs);
        for i in 0..runs + runs / 10 {
            let (_cancel, cancelled) = tokio::sync::watch::channel(false);
            let request = RunRequest {
                plugin: TRIVIAL.into(),
                ..RunRequest::default()
            };
            let start = Instant::now();
            let record = supervisor
                .execute(request, cancelled)
                .await
                .map_err(|e| BenchError::Plugin(format!("Supervisor::execute: {e}")))?;
            let took: Duration = start.elapsed();
            if record.status.as_str() != "succeeded" {
                return Err(BenchError::Plugin(format!(
                    "a sandboxed run did not succeed: {record:?}"
                )));
            }
            if i >= runs / 10 {
                samples.push(took);
            }
        }
        Ok(Samples::new(samples))
    })
}
