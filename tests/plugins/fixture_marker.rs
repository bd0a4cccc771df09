//! fixture-marker (raw protocol): proves whether it was ever executed. First
//! thing, before reading any input, it leaves a mark outside itself, then
//! behaves as a detector that sends one finding. A test asserts no mark arrived
//! to show a plugin was never started.
//!
//! Two marks, because the sandbox lets a plugin write nothing that outlives its
//! run: if `<its executable>.witness` exists (a file in its read-only plugin
//! dir holding `ip:port`), it connects there and sends `ran <its path>` — the test's
//! witness listener counts that (install it with `network: true`); and it tries
//! to create `<its executable>.ran`, which works only without the sandbox.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//! No config knobs (it accepts and ignores the fixture ones).

use secflow_tests::fixture::{answer_run, finish, handshake, numbered_finding, send_finding};
use serde_json::json;

fn leave_mark() {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe.into_os_string(),
        Err(err) => {
            eprintln!("fixture-marker: cannot find my own executable: {err}");
            return;
        }
    };
    let mut witness = exe.clone();
    witness.push(".witness");
    if let Ok(addr) = std::fs::read_to_string(&witness) {
        match std::net::TcpStream::connect(addr.trim()) {
            Ok(mut stream) => {
                let mark = format!("ran {}\n", exe.to_string_lossy());
                let _ = std::io::Write::write_all(&mut stream, mark.as_bytes());
            }
            Err(err) => eprintln!(
                "fixture-marker: cannot reach the witness at {}: {err}",
                addr.trim()
            ),
        }
    }
    let mut marker = exe;
    marker.push(".ran");
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
