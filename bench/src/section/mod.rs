//! The sections of the suite, and what they share: driving a plugin by
//! hand over its pipes (the unsandboxed and bwrap variants), and checking a
//! run record.

pub mod api;
pub mod dashboard;
pub mod egress;
pub mod fleet;
pub mod footprint;
pub mod ingest;
pub mod spawn;
pub mod throughput;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::BenchError;

/// The trivial plugin's name in every bench home.
pub const TRIVIAL: &str = "bench-trivial";
/// The streaming plugin's name in every bench home.
pub const STREAMER: &str = "bench-streamer";

/// The bwrap command line around `plugin`: every namespace unshared, the host
/// root read-only, a fresh /dev and /proc (what the plugin needs to start).
pub fn bwrap_args(plugin: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    .map(String::from)
    .to_vec();
    args.push(plugin.to_string_lossy().into_owned());
    args
}

/// Spawns `program args` and drives one session by hand: the three requests
/// the supervisor sends (initialize, run, shutdown), each answered, then end of
/// input and the exit reaped.
pub fn drive(program: &Path, args: &[String]) -> Result<(), BenchError> {
    let io = |what: &str| {
        let what = format!("{what} {}", program.display());
        move |source| BenchError::Io { what, source }
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("spawning"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| BenchError::Setup("the child has no stdin pipe".into()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Setup("the child has no stdout pipe".into()))?;
    converse(
        &program.display().to_string(),
        stdin,
        BufReader::new(stdout),
    )?;
    let status = child.wait().map_err(io("reaping"))?;
    if !status.success() {
        return Err(BenchError::Plugin(format!(
            "{} exited with {status}",
            program.display()
        )));
    }
    Ok(())
}

/// The session itself, over any pair of pipes: initialize, run, shutdown,
/// each answered; then end of input (`stdin` is dropped).
pub fn converse(
    who: &str,
    mut stdin: impl Write,
    mut lines: impl BufRead,
) -> Result<(), BenchError> {
    let io = |what: &str| {
        let what = format!("{what} {who}");
        move |source| BenchError::Io { what, source }
    };
    let initialize = json!({"protocol_version": 1, "run_id": "bench",
        "plugin": {"name": TRIVIAL, "version": "1.0.0"}, "config": {"count": 0},
        "context": {"workdir": "/tmp", "deadline_ms": 10000, "network": false},
        "limits": {"max_message_bytes": 8388608, "max_findings": 10}});
    let requests = [
        (1, "initialize", initialize),
        (2, "run", json!({"inputs": {}})),
        (3, "shutdown", json!({})),
    ];
    let mut line = String::new();
    for (id, method, params) in requests {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        stdin
            .write_all(format!("{request}\n").as_bytes())
            .map_err(io("writing to"))?;
        loop {
            line.clear();
            if lines.read_line(&mut line).map_err(io("reading from"))? == 0 {
                return Err(BenchError::Plugin(format!(
                    "{who} closed stdout before answering {method}"
                )));
            }
            let answer: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if answer.get("id").and_then(Value::as_u64) == Some(id) {
                break;
            }
        }
    }
    drop(stdin);
    Ok(())
}

/// Fails unless `record` (a run record) says the run succeeded.
pub fn expect_succeeded(record: &Value) -> Result<(), BenchError> {
    match record.get("status").and_then(Value::as_str) {
        Some("succeeded") => Ok(()),
        _ => Err(BenchError::Plugin(format!(
            "a bench run did not succeed: {record}"
        ))),
    }
}
