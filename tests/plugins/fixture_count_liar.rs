//! fixture-count-liar (raw protocol): sends 2 findings (seq 1, 2) and answers
//! `run` with `findings: 5`. The mismatch is a protocol violation; the 2 findings
//! are kept.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//! No config knobs.

use secflow_tests::fixture::{answer_run, finish, handshake, numbered_finding, send_finding};
use serde_json::json;

fn main() {
    let (_config, run) = handshake();
    for seq in 1..=2 {
        send_finding(seq, numbered_finding(seq));
    }
    answer_run(run, 5, json!({}));
    finish();
}
