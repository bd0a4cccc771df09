//! fixture-invalid-findings (raw protocol): sends schema-valid findings mixed with
//! schema-invalid ones, numbering all of them (seq 1..=valid+invalid), then answers
//! `run` with `findings` = valid + invalid. The valid ones must be stored and the
//! invalid ones counted in `findings_rejected`.
//!
//! The invalid ones cycle through: `severity` missing; `severity: "urgent"`;
//! `finding_schema_version: "0.9.0"`. Valid and invalid alternate while both remain.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//!
//! Config knobs: `valid` (integer, default 5), `invalid` (integer, default 3).

use secflow_tests::fixture::{
    answer_run, finish, handshake, knob_u64, numbered_finding, send_finding,
};
use serde_json::{json, Value};

/// The `n`-th invalid finding (from 0), distinct from every valid one.
fn invalid_finding(n: u64) -> Value {
    let mut finding = numbered_finding(1_000_000 + n);
    match n % 3 {
        0 => {
            if let Some(fields) = finding.as_object_mut() {
                fields.remove("severity");
            }
        }
        1 => finding["severity"] = json!("urgent"),
        _ => finding["finding_schema_version"] = json!("0.9.0"),
    }
    finding
}

fn main() {
    let (config, run) = handshake();
    let valid = knob_u64(&config, "valid", 5);
    let invalid = knob_u64(&config, "invalid", 3);
    let (mut sent_valid, mut sent_invalid) = (0, 0);
    for seq in 1..=valid + invalid {
        let invalid_turn = sent_invalid < invalid && (sent_valid >= valid || seq % 2 == 0);
        let finding = if invalid_turn {
            sent_invalid += 1;
            invalid_finding(sent_invalid - 1)
        } else {
            sent_valid += 1;
            numbered_finding(sent_valid)
        };
        send_finding(seq, finding);
    }
    answer_run(run, valid + invalid, json!({}));
    finish();
}
