//! fixture-crasher (raw protocol): dies in the middle of `run`, after sending some
//! findings, without ever answering `run`.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//!
//! Config knobs:
//! - `before_crash` (integer, default 3): findings sent (seq 1..=n) before dying.
//! - `mode` (string, default `exit`): how it dies —
//!   `exit`: exit status 3;
//!   `abort`: `std::process::abort()` (killed by SIGABRT, signal 6);
//!   `no_answer`: exit status 0, a "clean" exit that still never answers `run`.

use secflow_tests::fixture::{handshake, knob_str, knob_u64, numbered_finding, send_finding};

fn main() {
    let (config, _run) = handshake();
    for i in 1..=knob_u64(&config, "before_crash", 3) {
        send_finding(i, numbered_finding(i));
    }
    match knob_str(&config, "mode", "exit") {
        "abort" => std::process::abort(),
        "no_answer" => std::process::exit(0),
        _ => std::process::exit(3),
    }
}
