//! fixture-garbage (raw protocol): sends one valid finding (seq 1), then one line
//! that breaks the protocol, then answers `run` with `findings: 1` as if nothing
//! had happened. The run must fail as a protocol violation, keeping the finding.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//!
//! Config knobs: `kind` (string, default `json`): the bad line —
//! `json`: `this is not json`;
//! `jsonrpc`: `{"jsonrpc":"1.0","method":"finding"}` (wrong JSON-RPC version);
//! `unknown`: a notification of a method the protocol does not have,
//! `{"jsonrpc":"2.0","method":"teleport","params":{}}`.

use secflow_tests::fixture::{
    answer_run, finish, handshake, knob_str, numbered_finding, send_finding, send_raw,
};
use serde_json::json;

fn main() {
    let (config, run) = handshake();
    let garbage: &[u8] = match knob_str(&config, "kind", "json") {
        "json" => b"this is not json\n",
        "jsonrpc" => b"{\"jsonrpc\":\"1.0\",\"method\":\"finding\"}\n",
        "unknown" => b"{\"jsonrpc\":\"2.0\",\"method\":\"teleport\",\"params\":{}}\n",
        other => {
            eprintln!("fixture-garbage: unknown kind {other:?}; expected json, jsonrpc or unknown");
            std::process::exit(2);
        }
    };
    send_finding(1, numbered_finding(1));
    send_raw(garbage);
    answer_run(run, 1, json!({}));
    finish();
}
