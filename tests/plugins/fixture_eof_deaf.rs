//! fixture-eof-deaf (raw protocol): keeps every rule of a run — answers
//! `initialize`, answers `run` with no findings, answers `shutdown` and exits —
//! but ignores end of input: when its stdin closes without a `shutdown` it
//! sleeps for good instead of exiting. `secflow plugin check` must fail its
//! `eof` check.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//! No config knobs.

use std::time::Duration;

use secflow_plugin_sdk::protocol::{method, MessageKind};
use secflow_tests::fixture::{
    answer_initialize, answer_run, expect_initialize, read_message, send,
};
use serde_json::{json, Value};

fn main() {
    let (id, init) = expect_initialize();
    answer_initialize(id, &init.plugin.name, &init.plugin.version);
    while let Some(message) = read_message() {
        if message.kind() != MessageKind::Request {
            continue;
        }
        let id = message.id.unwrap_or(Value::Null);
        match message.method.as_deref() {
            Some(method::RUN) => answer_run(id, 0, json!({})),
            Some(method::SHUTDOWN) => {
                send(&json!({"jsonrpc": "2.0", "id": id, "result": {}}));
                return;
            }
            _ => {}
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
