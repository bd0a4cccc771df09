//! fixture-eof-deaf (raw protocol): keeps every rule of a run — answers
//! `initialize`, answers `run` with no findings, answers `shutdown` and exits —
//! but ignores end of input: when its stdin closes without a `shutdown` it
//! sleeps for good instead of exiting. `secflow plugin check` must fail its
//! `eof` check.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//! No config knobs.

use std::time::Duration;

use secflow_tests::fixture::{answer_initialize, expect_initialize, serve_empty_runs, SessionEnd};

fn main() {
    let (id, init) = expect_initialize();
    answer_initialize(id, &init.plugin.name, &init.plugin.version);
    if serve_empty_runs() == SessionEnd::EndOfInput {
        // The fault this fixture stands for: deaf to end of input, it must be killed.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
