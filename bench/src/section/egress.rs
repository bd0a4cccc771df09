//! Section 8, egress: what target-scoping costs a run. The trivial plugin
//! through `Supervisor::execute`, once with `network: false` (the shared
//! empty network namespace) and once with `network: "targets"` on one target
//! (the target resolved into an allow-set, one nftables transaction to scope
//! the run's uid, the Landlock scope in the child, and one listing and one
//! transaction to read back the refusals and remove the rules), the two
//! interleaved run by run so that both see the same machine.

use std::time::{Duration, Instant};

use secflow_core::config::Config;
use secflow_runner::{RunRequest, Supervisor};
use serde_json::{json, Map, Value};

use crate::home::{BenchHome, HomeSettings};
use crate::report::Figure;
use crate::stats::Samples;
use crate::{BenchError, Bins};

const SECTION: &str = "8 egress";
const NO_NETWORK: &str = "bench-offline";
const SCOPED: &str = "bench-scoped";

pub fn run(bins: &Bins, runs: usize) -> Result<Vec<Figure>, BenchError> {
    eprintln!("[8 egress] network false vs \"targets\", {runs} runs each, interleaved");
    let home = BenchHome::new(&HomeSettings::default())?;
    home.install_with_network(NO_NETWORK, &bins.fixture_detector, json!(false))?;
    home.install_with_network(SCOPED, &bins.fixture_detector, json!("targets"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: "starting the tokio runtime".into(),
            source,
        })?;
    let (offline, scoped) = runtime.block_on(async {
        let config = Config::load(&home.config_path)
            .map_err(|e| BenchError::Setup(format!("bench config: {e}")))?;
        let supervisor = Supervisor::open(config)
            .await
            .map_err(|e| BenchError::Setup(format!("opening the supervisor: {e}")))?;
        let mut offline = Vec::with_capacity(runs);
        let mut scoped = Vec::with_capacity(runs);
        for i in 0..runs + runs / 10 {
            let a = execute(&supervisor, NO_NETWORK).await?;
            let b = execute(&supervisor, SCOPED).await?;
            if i >= runs / 10 {
                offline.push(a);
                scoped.push(b);
            }
        }
        Ok::<_, BenchError>((Samples::new(offline), Samples::new(scoped)))
    })?;
    let offline_ms = offline.median_ms();
    Ok(vec![
        Figure::new(SECTION, "network false median", offline_ms, "ms"),
        Figure::new(
            SECTION,
            "network \"targets\" median",
            scoped.median_ms(),
            "ms",
        )
        .against("network false", offline_ms),
        Figure::new(SECTION, "network \"targets\" p99", scoped.p99_ms(), "ms")
            .against("network false p99", offline.p99_ms()),
    ])
}

/// One run of `plugin` on one loopback target; how long it took.
async fn execute(supervisor: &Supervisor, plugin: &str) -> Result<Duration, BenchError> {
    let (_cancel, cancelled) = tokio::sync::watch::channel(false);
    let mut inputs = Map::new();
    inputs.insert("target".into(), Value::String("127.0.0.2:8080".into()));
    let request = RunRequest {
        plugin: plugin.into(),
        inputs,
        ..RunRequest::default()
    };
    let start = Instant::now();
    let record = supervisor
        .execute(request, cancelled)
        .await
        .map_err(|e| BenchError::Plugin(format!("Supervisor::execute: {e}")))?;
    let took = start.elapsed();
    if record.status.as_str() != "succeeded" {
        return Err(BenchError::Plugin(format!(
            "a {plugin} run did not succeed: {record:?}"
        )));
    }
    Ok(took)
}
