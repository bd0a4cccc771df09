//! fixture-stray-stdout: an SDK detector whose `run` writes plain text to stdout
//! with `println!` and `print!` between its findings, as careless plugin code or a
//! chatty library would. The SDK's channel guard must send that text to stderr and
//! keep the protocol stream intact, so the run succeeds and the text shows up in
//! the run's `stderr_tail`.
//!
//! Answers `initialize` with the name and version the supervisor expects,
//! category `detector`.
//!
//! Config knobs: `count` (integer, default 3): findings to send (as fixture-detector's).

use std::io::Write;
use std::process::ExitCode;

use secflow_plugin_sdk::{serve, Category, Plugin, PluginError, RunContext};
use secflow_tests::fixture::{knob_u64, numbered_finding, EchoIdentity};
use serde_json::{json, Map, Value};

#[derive(Debug)]
struct StrayStdout;

impl Plugin for StrayStdout {
    const NAME: &'static str = "fixture-stray-stdout";
    const VERSION: &'static str = "0.0.0";
    const CATEGORY: Category = Category::Detector;

    fn run(
        &mut self,
        ctx: &mut RunContext,
        _inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        let count = knob_u64(ctx.config(), "count", 3);
        for i in 1..=count {
            println!("stray text");
            ctx.emit(numbered_finding(i))?;
            print!("half a line of stray text, ");
            let _ = std::io::stdout().flush();
        }
        println!("stray text at the end");
        let mut outputs = Map::new();
        outputs.insert("emitted".into(), json!(count));
        Ok(outputs)
    }
}

fn main() -> ExitCode {
    serve(EchoIdentity::new(StrayStdout))
}
