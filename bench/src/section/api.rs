//! Section 4, API latency: `system.health` and `findings.query` (limit 100)
//! at 1, 16 and 64 concurrent clients, each its own connection sending one
//! request after another; p50 and p99 of the round trip as a client sees it.
//! The database holds findings from one streamed run first, so that a query
//! reads real pages.

use std::sync::Barrier;
use std::time::Instant;

use serde_json::{json, Value};

use super::{expect_succeeded, STREAMER};
use crate::daemon::Daemon;
use crate::home::{BenchHome, HomeSettings};
use crate::report::{Bound, Figure};
use crate::stats::Samples;
use crate::{BenchError, Bins};

const SECTION: &str = "4 api latency";
/// Findings stored before the queries.
const STORED_FINDINGS: u64 = 10_000;
/// Untimed requests per client before the timed ones.
const WARM_UP: usize = 20;

pub fn run(bins: &Bins, requests: usize, levels: &[usize]) -> Result<Vec<Figure>, BenchError> {
    let home = BenchHome::new(&HomeSettings::default())?;
    home.install(STREAMER, &bins.streamer)?;
    let daemon = Daemon::start(&bins.secflowd, &home)?;
    let record = daemon.connect()?.call(
        "runs.execute",
        json!({"plugin": STREAMER, "config": {"count": STORED_FINDINGS}}),
    )?;
    expect_succeeded(&record)?;

    let mut figures = Vec::new();
    // A page of 100 findings is ~100 times the work of a health check.
    let methods = [
        ("system.health", Value::Null, requests),
        (
            "findings.query",
            json!({"limit": 100}),
            (requests / 10).max(WARM_UP),
        ),
    ];
    for (method, params, total) in methods {
        for &clients in levels {
            eprintln!("[4 api] {method}, {clients} clients, {total} requests");
            let samples = latency(&daemon, method, &params, clients, total)?;
            let measure = |q: &str| {
                format!(
                    "{method} {q}, {clients} client{}",
                    if clients == 1 { "" } else { "s" }
                )
            };
            let mut p50 = Figure::new(SECTION, measure("p50"), samples.median_ms() * 1e3, "µs");
            if method == "system.health" && clients == 1 {
                p50 = p50.target(Bound::AtMost(100.0));
            }
            figures.push(p50);
            figures.push(Figure::new(
                SECTION,
                measure("p99"),
                samples.p99_ms() * 1e3,
                "µs",
            ));
        }
    }
    Ok(figures)
}

/// `total` requests spread over `clients` connections, all started together.
fn latency(
    daemon: &Daemon,
    method: &str,
    params: &Value,
    clients: usize,
    total: usize,
) -> Result<Samples, BenchError> {
    let per_client = total.div_ceil(clients).max(1);
    let start = Barrier::new(clients);
    let all = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<std::time::Duration>, BenchError> {
                    let mut rpc = daemon.connect()?;
                    for _ in 0..WARM_UP {
                        rpc.call(method, params.clone())?;
                    }
                    start.wait();
                    let mut samples = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = Instant::now();
                        rpc.call(method, params.clone())?;
                        samples.push(t.elapsed());
                    }
                    Ok(samples)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(per_client * clients);
        for worker in workers {
            all.extend(
                worker
                    .join()
                    .map_err(|_| BenchError::Setup("an api client thread panicked".into()))??,
            );
        }
        Ok::<_, BenchError>(all)
    })?;
    Ok(Samples::new(all))
}
