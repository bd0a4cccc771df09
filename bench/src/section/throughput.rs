//! Section 2, run throughput: many `runs.execute` at once through the daemon's
//! socket (each client its own connection, one run after another), against
//! bwrap launched with the same parallelism around the same trivial plugin.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;

use super::{bwrap_args, drive, expect_succeeded, TRIVIAL};
use crate::daemon::Daemon;
use crate::home::{BenchHome, HomeSettings};
use crate::report::{Bound, Figure};
use crate::{BenchError, Bins};

const SECTION: &str = "2 throughput";

/// Runs `total` calls of `one` on `parallelism` threads; returns calls per second.
fn rate<F>(
    total: usize,
    parallelism: usize,
    make: impl Fn() -> Result<F, BenchError> + Sync,
) -> Result<f64, BenchError>
where
    F: FnMut() -> Result<(), BenchError>,
{
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..parallelism)
            .map(|_| {
                scope.spawn(|| -> Result<(), BenchError> {
                    let mut one = make()?;
                    while next.fetch_add(1, Ordering::Relaxed) < total {
                        one()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| BenchError::Setup("a bench worker thread panicked".into()))??;
        }
        Ok::<(), BenchError>(())
    })?;
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

pub fn run(bins: &Bins, total: usize, parallelism: usize) -> Result<Vec<Figure>, BenchError> {
    let home = BenchHome::new(&HomeSettings {
        max_concurrent: parallelism,
        ..HomeSettings::default()
    })?;
    home.install(TRIVIAL, &bins.fixture_detector)?;
    let daemon = Daemon::start(&bins.secflowd, &home)?;
    // A run that ends in another status is an outcome to report, not a reason
    // to stop: on a loaded host a plugin can miss its exit grace period.
    let failed = AtomicU64::new(0);
    let failed = &failed;
    let execute = || {
        let mut rpc = daemon.connect()?;
        Ok(move || {
            let record = rpc.call("runs.execute", json!({"plugin": TRIVIAL}))?;
            if expect_succeeded(&record).is_err() && failed.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("[2 throughput] first run that did not succeed: {record}");
            }
            Ok(())
        })
    };
    eprintln!("[2 throughput] warm-up");
    rate(parallelism * 2, parallelism, execute)?;
    eprintln!("[2 throughput] {total} runs.execute, {parallelism} at once");
    failed.store(0, Ordering::Relaxed);
    let secflow = rate(total, parallelism, execute)?;
    let failed = failed.load(Ordering::Relaxed);
    drop(daemon);

    eprintln!("[2 throughput] {total} bwrap runs, {parallelism} at once");
    let args = bwrap_args(&bins.fixture_detector);
    let bwrap = rate(total, parallelism, || Ok(|| drive(&bins.bwrap, &args)))?;

    let measure = format!("daemon runs.execute, {parallelism} in flight");
    Ok(vec![
        Figure::new(
            SECTION,
            format!("bwrap, {parallelism} in flight"),
            bwrap,
            "runs/s",
        ),
        Figure::new(SECTION, measure.clone(), secflow, "runs/s").target(Bound::AtLeast(500.0)),
        Figure::new(SECTION, measure, secflow, "runs/s")
            .against("bwrap", bwrap)
            .target(Bound::AtLeast(4.0)),
        Figure::new(
            SECTION,
            "daemon runs that did not succeed",
            failed as f64,
            "runs",
        )
        .target(Bound::AtMost(0.0)),
    ])
}
