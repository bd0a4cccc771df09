//! Section 4, API latency: `system.health` and `findings.query` (limit 100)
//! at 1, 16 and 64 concurrent clients, each its own connection sending one
//! request after another; p50 and p99 of the round trip as a client sees it
//! (the answer line read and checked as JSON; the client does not build the
//! result into a tree, which on a 2-core machine would take the daemon's CPU).
//! The database holds findings from one streamed run first, so that a query
//! reads real pages. `findings.query` at the most clients is measured again
//! against a daemon limited to one read connection (`storage.read_connections
//! = 1`), the anchor for the read pool.

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

/// A daemon whose database holds [`STORED_FINDINGS`] findings.
fn daemon_with_findings(
    bins: &Bins,
    settings: &HomeSettings,
) -> Result<(BenchHome, Daemon), BenchError> {
    let home = BenchHome::new(settings)?;
    home.install(STREAMER, &bins.streamer)?;
    let daemon = Daemon::start(&bins.secflowd, &home)?;
    let record = daemon.connect()?.call(
        "runs.execute",
        json!({"plugin": STREAMER, "config": {"count": STORED_FINDINGS}}),
    )?;
    expect_succeeded(&record)?;
    Ok((home, daemon))
}

pub fn run(bins: &Bins, requests: usize, levels: &[usize]) -> Result<Vec<Figure>, BenchError> {
    // A page of 100 findings is ~100 times the work of a health check.
    let query_params = json!({"limit": 100});
    let query_total = (requests / 10).max(WARM_UP);
    let most_clients = levels.iter().copied().max().unwrap_or(1);

    // The anchor first, on its own daemon: one read connection.
    let anchor = {
        let one = HomeSettings {
            read_connections: Some(1),
            ..HomeSettings::default()
        };
        let (_home, single) = daemon_with_findings(bins, &one)?;
        eprintln!("[4 api] findings.query, {most_clients} clients, one read connection");
        latency(
            &single,
            "findings.query",
            &query_params,
            most_clients,
            query_total,
        )?
        .median_ms()
            * 1e3
    };

    let (_home, daemon) = daemon_with_findings(bins, &HomeSettings::default())?;
    let mut figures = Vec::new();
    let methods = [
        ("system.health", Value::Null, requests),
        ("findings.query", query_params, query_total),
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
            if method == "findings.query" && clients == most_clients {
                // Issue 15: the absolute target, then the same p50 against
                // a daemon limited to one read connection.
                figures.push(p50.clone().target(Bound::AtMost(10_000.0)));
                p50 = p50.against("one read connection", anchor);
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
                        rpc.call_text(method, params.clone())?;
                    }
                    start.wait();
                    let mut samples = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = Instant::now();
                        rpc.call_text(method, params.clone())?;
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
