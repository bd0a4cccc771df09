//! fixture-liar (raw protocol): claims another identity in `initialize` — name
//! `someone-else` with the expected version, category `detector` — so the run must
//! be rejected as an identity mismatch. If it is sent `run` anyway, it answers with
//! no findings; it answers `shutdown` and exits at end of input.
//!
//! No config knobs.

use secflow_plugin_sdk::protocol::{method, MessageKind};
use secflow_tests::fixture::{
    answer_initialize, answer_run, expect_initialize, read_message, send,
};
use serde_json::{json, Value};

fn main() {
    let (id, init) = expect_initialize();
    answer_initialize(id, "someone-else", &init.plugin.version);
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
}
