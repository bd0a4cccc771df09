//! bench-streamer: the ingestion benchmark's plugin. It speaks the protocol by
//! hand (no SDK) and writes its findings from a preformatted buffer, so that
//! what the benchmark measures is the supervisor taking them in, not the plugin
//! producing them.
//!
//! Config: `count` (findings to send, default 0) and `hold_ms` (how long to
//! wait before answering `run`, default 0: the footprint section keeps runs in
//! flight with it). Just before its first finding it writes
//! `bench-first-sent-ns <unix time in ns>` to stderr; the supervisor keeps that
//! in the run record's `stderr_tail`, which is how the suite knows when the
//! stream started.

use std::io::{BufRead, BufWriter, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secflow_bench::corpus::write_finding;
use serde_json::{json, Value};

fn knob(config: &Value, name: &str) -> u64 {
    config.get(name).and_then(Value::as_u64).unwrap_or(0)
}

fn main() {
    let stdin = std::io::stdin();
    let mut out = BufWriter::with_capacity(256 << 10, std::io::stdout().lock());
    let mut config = Value::Null;
    let mut identity = json!({"name": "bench-streamer", "version": "1.0.0"});
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        let result = match message.get("method").and_then(Value::as_str) {
            Some("initialize") => {
                config = params.get("config").cloned().unwrap_or(Value::Null);
                if let Some(plugin) = params.get("plugin") {
                    identity = plugin.clone();
                }
                json!({"protocol_version": 1, "name": identity["name"], "version": identity["version"],
                       "category": "detector", "capabilities": {"cancel": false, "progress": false}})
            }
            Some("run") => {
                let count = knob(&config, "count");
                if stream(&mut out, count).is_err() {
                    return;
                }
                let hold = knob(&config, "hold_ms");
                if hold > 0 {
                    std::thread::sleep(Duration::from_millis(hold));
                }
                json!({"outputs": {"emitted": count}, "findings": count})
            }
            Some("shutdown") => json!({}),
            _ => continue,
        };
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Sends `count` finding notifications, numbered from 1.
fn stream(out: &mut impl Write, count: u64) -> std::io::Result<()> {
    if count > 0 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        eprintln!("bench-first-sent-ns {now}");
    }
    let mut line = Vec::with_capacity(1024);
    for seq in 1..=count {
        line.clear();
        line.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"finding\",\"params\":{\"seq\":");
        line.extend_from_slice(seq.to_string().as_bytes());
        line.extend_from_slice(b",\"finding\":");
        write_finding(&mut line, seq);
        line.extend_from_slice(b"}}\n");
        out.write_all(&line)?;
    }
    Ok(())
}
