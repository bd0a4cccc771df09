//! fixture-liar (raw protocol): claims another identity in `initialize` — name
//! `someone-else` with the expected version, category `detector` — so the run must
//! be rejected as an identity mismatch. If it is sent `run` anyway, it answers with
//! no findings; it answers `shutdown` and exits at end of input.
//!
//! No config knobs.

use secflow_tests::fixture::{answer_initialize, expect_initialize, serve_empty_runs};

fn main() {
    let (id, init) = expect_initialize();
    answer_initialize(id, "someone-else", &init.plugin.version);
    serve_empty_runs();
}
