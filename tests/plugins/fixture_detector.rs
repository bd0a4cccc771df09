//! fixture-detector: a well-behaved detector built on the SDK, for the tests of
//! the normal path, deduplication, throughput and cancellation.
//!
//! It answers `initialize` with whatever name and version the supervisor expects
//! (so one binary serves any test manifest), category `detector`.
//!
//! Config knobs:
//! - `count` (integer, default 10): findings to send, numbered 1..=count, each
//!   distinct (rule `fixture.rule`, target `http://127.0.0.1:8080`, location
//!   `http://127.0.0.1:8080/item/<i>`, severity cycling info, low, medium, high,
//!   critical).
//! - `delay_ms` (integer, default 0): pause between findings; a `cancel` during
//!   the pause stops the run at once (answered `-32800`).
//!
//! Outputs: `{"emitted": count}`.

use std::process::ExitCode;
use std::time::Duration;

use secflow_plugin_sdk::{serve, Category, Plugin, PluginError, RunContext};
use secflow_tests::fixture::{knob_u64, numbered_finding, EchoIdentity};
use serde_json::{json, Map, Value};

#[derive(Debug)]
struct FixtureDetector;

impl Plugin for FixtureDetector {
    const NAME: &'static str = "fixture-detector";
    const VERSION: &'static str = "0.0.0";
    const CATEGORY: Category = Category::Detector;

    fn run(
        &mut self,
        ctx: &mut RunContext,
        _inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        let count = knob_u64(ctx.config(), "count", 10);
        let delay = Duration::from_millis(knob_u64(ctx.config(), "delay_ms", 0));
        for i in 1..=count {
            if i > 1 && !delay.is_zero() {
                ctx.pause(delay)?;
            }
            ctx.emit(numbered_finding(i))?;
        }
        let mut outputs = Map::new();
        outputs.insert("emitted".into(), json!(count));
        Ok(outputs)
    }
}

fn main() -> ExitCode {
    serve(EchoIdentity::new(FixtureDetector))
}
