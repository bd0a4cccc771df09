//! Write SecFlow plugins in Rust.
//!
//! A plugin is an executable that the supervisor starts in a sandbox and talks to
//! over stdin/stdout with newline-delimited JSON-RPC 2.0 (docs/protocol.md). This
//! crate is that protocol's Rust end: implement [`Plugin`] and hand it to
//! [`serve`], which does the handshake, numbers the findings, answers `run`,
//! honours `cancel` and exits on `shutdown`. [`protocol`] holds the wire types the
//! supervisor shares; [`testing`] runs a plugin in-process for unit tests.
//!
//! # Example
//!
//! ```no_run
//! use secflow_plugin_sdk::{
//!     input_str, serve, Category, Finding, Plugin, PluginError, RunContext, Severity,
//! };
//! use serde_json::{json, Map, Value};
//!
//! /// Flags every path of the target that the config lists as sensitive.
//! struct SensitivePaths;
//!
//! impl Plugin for SensitivePaths {
//!     const NAME: &'static str = "sensitive-paths";
//!     const VERSION: &'static str = "1.0.0";
//!     const CATEGORY: Category = Category::Detector;
//!
//!     fn run(&mut self, ctx: &mut RunContext, inputs: Map<String, Value>) -> Result<Map<String, Value>, PluginError> {
//!         // A missing target is answered as invalid inputs (-32001).
//!         let target = input_str(&inputs, "target")?;
//!         let paths: Vec<String> = ctx
//!             .config()
//!             .get("paths")
//!             .and_then(Value::as_array)
//!             .map(|paths| paths.iter().filter_map(Value::as_str).map(str::to_owned).collect())
//!             .unwrap_or_default();
//!         for (done, path) in paths.iter().enumerate() {
//!             // emit() fails with PluginError::cancelled() once `cancel` arrived.
//!             ctx.emit(
//!                 Finding::new("paths.sensitive", "Sensitive path exposed", Severity::Medium, target)
//!                     .location_url(format!("{target}{path}"))
//!                     .description("The path answers without authentication."),
//!             )?;
//!             ctx.progress(done as u64 + 1, Some(paths.len() as u64), None)?;
//!         }
//!         let mut outputs = Map::new();
//!         outputs.insert("checked".into(), json!(paths.len()));
//!         Ok(outputs)
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     serve(SensitivePaths)
//! }
//! ```
//!
//! And its unit test, without a supervisor:
//!
//! ```
//! # use secflow_plugin_sdk::{Category, Finding, Plugin, PluginError, RunContext, Severity};
//! # use serde_json::{json, Map, Value};
//! # struct SensitivePaths;
//! # impl Plugin for SensitivePaths {
//! #     const NAME: &'static str = "sensitive-paths";
//! #     const VERSION: &'static str = "1.0.0";
//! #     const CATEGORY: Category = Category::Detector;
//! #     fn run(&mut self, ctx: &mut RunContext, inputs: Map<String, Value>) -> Result<Map<String, Value>, PluginError> {
//! #         let target = inputs.get("target").and_then(Value::as_str).unwrap_or_default().to_owned();
//! #         ctx.emit(Finding::new("paths.sensitive", "Sensitive path exposed", Severity::Medium, &target))?;
//! #         Ok(Map::new())
//! #     }
//! # }
//! use secflow_plugin_sdk::testing;
//!
//! let outcome = testing::run(SensitivePaths, json!({"paths": ["/.git"]}), json!({"target": "http://h"}));
//! assert!(outcome.error.is_none());
//! assert_eq!(outcome.findings[0]["rule_id"], "paths.sensitive");
//! ```
//!
//! # What `serve` guarantees
//!
//! - Protocol output goes through one writer on a private duplicate of fd 1;
//!   fd 1 is redirected to stderr, so `println!` in plugin code (or in a library
//!   it calls) lands in the captured stderr instead of corrupting the stream.
//! - `seq` counts from 1 without gaps and the `run` answer's `findings` matches.
//! - Findings, progress and log lines of a run are written in batches, to spare
//!   a system call per finding: when 64 KiB are pending, at once when nothing
//!   was written for the last 5 ms (an isolated finding does not wait), else
//!   5 ms after the last write at the latest. Every response is written after
//!   everything sent before it, and a `cancel` from the supervisor writes what
//!   is pending at once. So a finding [`RunContext::emit`] accepted reaches the
//!   supervisor before the `run` answer and is kept on cancel or deadline; it
//!   is lost only if the process dies (a kill, `abort`, `process::exit`) within
//!   5 ms of sending it.
//! - `cancel` is seen while `run` executes ([`RunContext::is_cancelled`]); a run
//!   that fails after a cancel is answered with `-32800`.
//! - A panic in `run` is answered as an internal error (`-32603`) instead of a
//!   silent crash.

pub mod framing;
pub mod protocol;
pub mod testing;

mod context;
mod error;
mod finding;
mod inbound;
mod inputs;
mod outbound;
mod serve;

pub use context::RunContext;
pub use error::PluginError;
pub use finding::{Confidence, Finding};
pub use inputs::input_str;
pub use protocol::{Capabilities, Category, InitializeParams, LogLevel, PluginRef, Severity};
pub use serve::{serve, DEFAULT_MAX_INPUT_BYTES};

use serde_json::{Map, Value};

/// A SecFlow plugin. Only [`Plugin::run`] and the three constants are required.
pub trait Plugin {
    /// The manifest's `name`; the supervisor rejects a run whose plugin says otherwise.
    const NAME: &'static str;
    /// The manifest's `version`.
    const VERSION: &'static str;
    /// The manifest's `category`.
    const CATEGORY: Category;
    /// Longest line accepted from the supervisor. Raise it for plugins whose
    /// inputs can be large (an analytics plugin gets every finding of a scan).
    const MAX_INPUT_BYTES: usize = DEFAULT_MAX_INPUT_BYTES;

    /// What the plugin announces in the `initialize` answer.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cancel: true,
            progress: true,
        }
    }

    /// Called once with the `initialize` params (config, work dir, deadline,
    /// limits) before the answer is sent; an error fails the handshake.
    fn initialize(&mut self, _init: &InitializeParams) -> Result<(), PluginError> {
        Ok(())
    }

    /// The name and version announced in the `initialize` answer, asked after
    /// [`Plugin::initialize`]. Keep the default: only test fixtures that take
    /// whatever identity the supervisor expects override it.
    fn identity(&self) -> PluginRef {
        PluginRef {
            name: Self::NAME.into(),
            version: Self::VERSION.into(),
        }
    }

    /// Does the work: sends findings through `ctx` and returns the `outputs`.
    fn run(
        &mut self,
        ctx: &mut RunContext,
        inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, PluginError>;
}
