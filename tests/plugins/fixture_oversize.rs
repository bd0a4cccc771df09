//! fixture-oversize (raw protocol): after the handshake, writes one line of
//! `bytes` bytes — a `log` notification whose message is padding, so it is valid
//! JSON-RPC except for its size — in 64 KiB pieces with no newline until the end.
//! The supervisor must stop it once the line passes `max_message_bytes`. If it
//! is still alive afterwards it answers `run` with no findings.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//!
//! Config knobs: `bytes` (integer, default 16 MiB): length of the line, newline excluded.

use secflow_tests::fixture::{answer_run, finish, handshake, knob_u64, send_raw};
use serde_json::json;

const PIECE: usize = 64 << 10;

fn main() {
    let (config, run) = handshake();
    let bytes = usize::try_from(knob_u64(&config, "bytes", 16 << 20)).unwrap_or(usize::MAX);
    let head = br#"{"jsonrpc":"2.0","method":"log","params":{"level":"info","message":""#;
    let tail = br#""}}"#;
    send_raw(head);
    let mut left = bytes.saturating_sub(head.len() + tail.len());
    let piece = vec![b'x'; PIECE];
    while left > 0 {
        let n = left.min(PIECE);
        send_raw(&piece[..n]);
        left -= n;
    }
    send_raw(tail);
    send_raw(b"\n");
    answer_run(run, 0, json!({}));
    finish();
}
