//! fixture-seq-gap (raw protocol): numbers its findings 1, 2, 4 — skipping 3 — and
//! answers `run` with `findings: 3`. The gap is a protocol violation; the findings
//! before it (seq 1 and 2) are kept.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//! No config knobs.

use secflow_tests::fixture::{answer_run, finish, handshake, numbered_finding, send_finding};
use serde_json::json;

fn main() {
    let (_config, run) = handshake();
    for (i, seq) in [1, 2, 4].into_iter().enumerate() {
        send_finding(seq, numbered_finding(i as u64 + 1));
    }
    answer_run(run, 3, json!({}));
    finish();
}
