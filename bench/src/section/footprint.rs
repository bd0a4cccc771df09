//! Section 5, footprint: the daemon's resident memory idle (started, plugins
//! discovered, nothing running) and with N runs in flight (each holds its
//! `run` answer for a while, so all of them are sandboxed and alive at once).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{expect_succeeded, STREAMER};
use crate::daemon::Daemon;
use crate::home::{BenchHome, HomeSettings};
use crate::report::{Bound, Figure};
use crate::{BenchError, Bins};

const SECTION: &str = "5 footprint";
/// How long each in-flight run holds before answering.
const HOLD_MS: u64 = 3000;

pub fn run(bins: &Bins, in_flight: usize) -> Result<Vec<Figure>, BenchError> {
    let home = BenchHome::new(&HomeSettings {
        max_concurrent: in_flight,
        ..HomeSettings::default()
    })?;
    home.install(STREAMER, &bins.streamer)?;
    let daemon = Daemon::start(&bins.secflowd, &home)?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = daemon.memory()?;
    eprintln!(
        "[5 footprint] idle RSS {:.1} MiB; starting {in_flight} runs",
        idle.rss_mib()
    );

    let mut rpc = daemon.connect()?;
    let mut run_ids = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let started = rpc.call(
            "runs.start",
            json!({"plugin": STREAMER, "config": {"hold_ms": HOLD_MS}}),
        )?;
        let run_id = started
            .get("run_id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                BenchError::Plugin(format!("runs.start answered without run_id: {started}"))
            })?;
        run_ids.push(run_id.to_string());
    }
    // Sample while all of them are executing.
    let until = Instant::now() + Duration::from_millis(HOLD_MS);
    let mut busiest = 0;
    let mut loaded_kib = 0;
    while Instant::now() < until {
        let health = rpc.call("system.health", Value::Null)?;
        let active = health
            .get("active_runs")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        busiest = busiest.max(active);
        if active as usize >= in_flight {
            loaded_kib = loaded_kib.max(daemon.memory()?.rss_kib);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for run_id in &run_ids {
        let record = rpc.call("runs.wait", json!({"run_id": run_id}))?;
        expect_succeeded(&record)?;
    }
    if loaded_kib == 0 {
        return Err(BenchError::Plugin(format!(
            "never saw {in_flight} runs in flight at once (at most {busiest})"
        )));
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = daemon.memory()?;
    Ok(vec![
        Figure::new(SECTION, "daemon RSS idle", idle.rss_mib(), "MiB").target(Bound::AtMost(15.0)),
        Figure::new(
            SECTION,
            format!("daemon RSS, {in_flight} runs in flight"),
            loaded_kib as f64 / 1024.0,
            "MiB",
        ),
        Figure::new(
            SECTION,
            "daemon RSS idle again after them",
            after.rss_mib(),
            "MiB",
        ),
    ])
}
