//! Run a [`Plugin`] in-process, without the supervisor, for plugin authors' unit tests.
//!
//! The harness calls `initialize` and `run` the way a session does and records what
//! the plugin sent, so a test can assert on findings, outputs, logs and errors
//! without spawning a process or parsing JSON-RPC.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::context::{Notice, NoticeSink, RunContext, RunSetup};
use crate::error::PluginError;
use crate::protocol::{
    FindingParams, Incomplete, InitializeParams, InitializeResult, LogParams, PluginRef,
    ProgressParams, ProtocolLimits, RunContextInfo, PROTOCOL_VERSION,
};
use crate::Plugin;

/// What one in-process run produced.
#[derive(Debug, Clone, Default)]
pub struct TestOutcome {
    /// The `initialize` answer, if `initialize` succeeded.
    pub identity: Option<InitializeResult>,
    /// The findings sent, in `seq` order.
    pub findings: Vec<Value>,
    /// `run`'s outputs (empty when it failed).
    pub outputs: Map<String, Value>,
    /// What the run reported it could not do ([`RunContext::report_incomplete`]).
    pub incomplete: Option<Incomplete>,
    pub logs: Vec<LogParams>,
    pub progress: Vec<ProgressParams>,
    /// The error `initialize` or `run` returned.
    pub error: Option<PluginError>,
}

/// Runs `plugin` once with `config` and `inputs` (both JSON objects).
///
/// # Panics
///
/// When `config` or `inputs` is not a JSON object: that is a mistake in the test.
pub fn run<P: Plugin>(plugin: P, config: Value, inputs: Value) -> TestOutcome {
    TestRun::new(config, inputs).run(plugin)
}

/// A configurable in-process run.
#[derive(Debug, Clone)]
pub struct TestRun {
    config: Map<String, Value>,
    inputs: Map<String, Value>,
    cancel_after: Option<u64>,
    deadline: Duration,
    max_findings: u64,
    state_dir: Option<PathBuf>,
}

impl TestRun {
    /// # Panics
    ///
    /// When `config` or `inputs` is not a JSON object.
    pub fn new(config: Value, inputs: Value) -> TestRun {
        TestRun {
            config: expect_object("config", config),
            inputs: expect_object("inputs", inputs),
            cancel_after: None,
            deadline: Duration::from_secs(60),
            max_findings: 1_000_000,
            state_dir: None,
        }
    }

    /// The persistent `context.state_dir` the plugin is told (the caller owns
    /// the directory, so that several runs can share it).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> TestRun {
        self.state_dir = Some(dir.into());
        self
    }

    /// Cancels the run as soon as the plugin has sent `findings` findings
    /// (0: cancelled before `run` starts), as the supervisor's `cancel` would.
    pub fn cancel_after(mut self, findings: u64) -> TestRun {
        self.cancel_after = Some(findings);
        self
    }

    /// The `limits.max_findings` the plugin is told.
    pub fn max_findings(mut self, max_findings: u64) -> TestRun {
        self.max_findings = max_findings;
        self
    }

    /// The `context.deadline_ms` the plugin is told.
    pub fn deadline(mut self, deadline: Duration) -> TestRun {
        self.deadline = deadline;
        self
    }

    pub fn run<P: Plugin>(self, mut plugin: P) -> TestOutcome {
        let workdir = TempWorkdir::create();
        let init = InitializeParams {
            protocol_version: PROTOCOL_VERSION,
            run_id: "test-run".into(),
            plugin: PluginRef {
                name: P::NAME.into(),
                version: P::VERSION.into(),
            },
            config: self.config,
            context: RunContextInfo {
                workdir: workdir.path.to_string_lossy().into_owned(),
                deadline_ms: u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX),
                network: false,
                workflow_id: None,
                node_id: None,
                state_dir: self
                    .state_dir
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
            },
            limits: ProtocolLimits {
                max_message_bytes: 8 << 20,
                max_findings: self.max_findings,
            },
        };
        let mut outcome = TestOutcome::default();
        let deadline = Instant::now() + self.deadline;
        if let Err(err) = plugin.initialize(&init) {
            outcome.error = Some(err);
            return outcome;
        }
        let identity = plugin.identity();
        outcome.identity = Some(InitializeResult {
            protocol_version: PROTOCOL_VERSION,
            name: identity.name,
            version: identity.version,
            category: P::CATEGORY,
            capabilities: plugin.capabilities(),
        });
        let cancelled = AtomicBool::new(self.cancel_after == Some(0));
        let mut sink = RecordingSink {
            outcome: &mut outcome,
            cancelled: &cancelled,
            cancel_after: self.cancel_after,
            sent: 0,
        };
        let mut ctx = RunContext::new(
            &mut sink,
            RunSetup {
                cancelled: &cancelled,
                config: &init.config,
                workdir: &workdir.path,
                state_dir: self.state_dir.as_deref(),
                deadline,
                max_findings: self.max_findings,
            },
        );
        let result = plugin.run(&mut ctx, self.inputs);
        let incomplete = ctx.incomplete().cloned();
        drop(ctx);
        match result {
            Ok(outputs) => {
                outcome.outputs = outputs;
                outcome.incomplete = incomplete;
            }
            Err(err) => outcome.error = Some(err),
        }
        outcome
    }
}

/// Records notifications and plays the supervisor's `cancel`.
struct RecordingSink<'a> {
    outcome: &'a mut TestOutcome,
    cancelled: &'a AtomicBool,
    cancel_after: Option<u64>,
    sent: u64,
}

impl NoticeSink for RecordingSink<'_> {
    fn send(&mut self, notice: Notice) -> Result<(), PluginError> {
        match notice {
            Notice::Finding(params) => {
                self.sent += 1;
                let expected = self.sent;
                assert_eq!(
                    params.seq, expected,
                    "finding seq must count from 1 without gaps"
                );
                self.outcome.findings.push(params.finding);
                if self.cancel_after.is_some_and(|after| expected >= after) {
                    self.cancelled.store(true, Ordering::Release);
                }
            }
            Notice::Progress(params) => self.outcome.progress.push(params),
            Notice::Log(params) => self.outcome.logs.push(params),
        }
        Ok(())
    }

    /// Parses the bytes back, so a test sees the finding as the supervisor would.
    fn send_serialized_finding(&mut self, seq: u64, finding: &[u8]) -> Result<(), PluginError> {
        let finding = serde_json::from_slice(finding)
            .map_err(|e| PluginError::internal(format!("finding {seq} is not valid JSON: {e}")))?;
        self.send(Notice::Finding(FindingParams { seq, finding }))
    }
}

/// A fresh directory for the run, removed afterwards.
struct TempWorkdir {
    path: PathBuf,
}

impl TempWorkdir {
    fn create() -> TempWorkdir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("secflow-sdk-test-{}-{n}", std::process::id()));
        if let Err(err) = std::fs::create_dir_all(&path) {
            panic!(
                "testing: cannot create the work dir {}: {err}",
                path.display()
            );
        }
        TempWorkdir { path }
    }
}

impl Drop for TempWorkdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn expect_object(what: &str, value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("testing: {what} must be a JSON object, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Category, LogLevel, Severity};
    use crate::{Finding, RunContext};
    use serde_json::json;

    /// Emits `count` findings (from the inputs), logging and reporting progress.
    struct Emitter;

    impl Plugin for Emitter {
        const NAME: &'static str = "emitter";
        const VERSION: &'static str = "2.0.0";
        const CATEGORY: Category = Category::Enricher;

        fn run(
            &mut self,
            ctx: &mut RunContext,
            inputs: Map<String, Value>,
        ) -> Result<Map<String, Value>, PluginError> {
            let count = inputs
                .get("count")
                .and_then(Value::as_u64)
                .ok_or_else(|| PluginError::invalid_inputs("inputs.count is missing"))?;
            ctx.log(LogLevel::Info, format!("emitting {count}"))?;
            for i in 1..=count {
                ctx.emit(Finding::new(
                    "r",
                    format!("finding {i}"),
                    Severity::High,
                    "h",
                ))?;
                ctx.progress(i, Some(count), None)?;
            }
            if let Some(skipped) = inputs.get("skipped").and_then(Value::as_u64) {
                ctx.report_incomplete(skipped, "the target stopped answering");
            }
            let mut outputs = Map::new();
            outputs.insert("emitted".into(), json!(ctx.emitted()));
            outputs.insert("workdir_exists".into(), json!(ctx.workdir().is_dir()));
            Ok(outputs)
        }
    }

    #[test]
    fn the_harness_returns_the_emitted_findings_in_order_with_outputs_logs_and_progress() {
        let outcome = run(Emitter, json!({}), json!({"count": 3}));
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        let titles: Vec<&str> = outcome
            .findings
            .iter()
            .map(|f| f["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["finding 1", "finding 2", "finding 3"]);
        assert_eq!(outcome.outputs["emitted"], 3);
        assert_eq!(outcome.outputs["workdir_exists"], true);
        assert_eq!(outcome.logs[0].message, "emitting 3");
        assert_eq!(outcome.progress.last().map(|p| p.completed), Some(3));
        let identity = outcome.identity.unwrap();
        assert_eq!(
            (identity.name.as_str(), identity.category),
            ("emitter", Category::Enricher)
        );
    }

    #[test]
    fn a_run_that_reports_work_left_undone_carries_it_beside_its_outputs() {
        let complete = run(Emitter, json!({}), json!({"count": 1}));
        assert_eq!(complete.incomplete, None);
        let outcome = run(Emitter, json!({}), json!({"count": 1, "skipped": 7}));
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        assert_eq!(
            outcome.incomplete,
            Some(Incomplete::new(7, "the target stopped answering"))
        );
        assert_eq!(outcome.outputs["emitted"], 1);
    }

    #[test]
    fn a_plugin_error_is_returned_with_its_code() {
        let outcome = run(Emitter, json!({}), json!({}));
        let error = outcome.error.unwrap();
        assert_eq!(error.code(), crate::protocol::code::INVALID_INPUTS);
        assert_eq!(error.message(), "inputs.count is missing");
        assert!(outcome.outputs.is_empty());
    }

    #[test]
    fn emit_after_cancel_stops_the_run_with_the_cancelled_error() {
        let outcome = TestRun::new(json!({}), json!({"count": 10}))
            .cancel_after(2)
            .run(Emitter);
        assert_eq!(outcome.findings.len(), 2);
        assert!(outcome.error.unwrap().is_cancelled());
    }

    #[test]
    fn emit_refuses_findings_past_max_findings() {
        let outcome = TestRun::new(json!({}), json!({"count": 5}))
            .max_findings(3)
            .run(Emitter);
        assert_eq!(outcome.findings.len(), 3);
        let error = outcome.error.unwrap();
        assert!(error.message().contains("limit of 3 findings"), "{error}");
    }
}
