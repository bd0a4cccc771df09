//! fixture-marker (raw protocol): proves whether it was ever executed. First
//! thing, before reading any input, it creates the file `<its executable>.ran`
//! (from `std::env::current_exe`), then behaves as a detector that sends one
//! finding. A test asserts the file is absent to show a plugin was never started.
//!
//! Creating the file needs write access to the plugin's directory; where the
//! sandbox denies it, the failure is reported on stderr and the run goes on.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//! No config knobs (it accepts and ignores the fixture ones).

use secflow_tests::fixture::{answer_run, finish, handshake, numbered_finding, send_finding};
use serde_json::json;

fn leave_mark() {
    let marker = match std::env::current_exe() {
        Ok(exe) => {
            let mut path = exe.into_os_string();
            path.push(".ran");
            path
        }
        Err(err) => {
            eprintln!("fixture-marker: cannot find my own executable: {err}");
            return;
        }
    };
    if let Err(err) = std::fs::write(&marker, b"ran\n") {
        eprintln!(
            "fixture-marker: cannot create {}: {err}",
            marker.to_string_lossy()
        );
    }
}

fn main() {
    leave_mark();
    let (_config, run) = handshake();
    send_finding(1, numbered_finding(1));
    answer_run(run, 1, json!({"emitted": 1}));
    finish();
}
