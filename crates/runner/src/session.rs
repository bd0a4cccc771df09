//! One protocol session with a running plugin: `initialize`, `run` with the
//! streamed notifications, `cancel` on deadline or request, `shutdown`.
//!
//! A single `select!` loop owns the session state; the pipes are served by their
//! own tasks (see `streams`), so the loop never blocks on the plugin. Whatever
//! the plugin does, the loop ends in bounded time: at the deadline it sends
//! `cancel`, and after the grace period it kills the process group.

use std::borrow::Cow;
use std::time::Duration;

use secflow_plugin_sdk::protocol::{
    self, code, method, Category, FindingParams, InitializeResult, LogLevel, LogParams, Message,
    MessageKind, ProgressParams, RpcError, RunResult,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::process::PluginProcess;
use super::streams::StdoutEvent;
use secflow_core::record::{ErrorKind, RunError};
use secflow_store::{findings_op, NewFinding, StoreWriter};

const INITIALIZE_ID: u64 = 1;
const RUN_ID: u64 = 2;
const SHUTDOWN_ID: u64 = 3;
/// Findings sent to storage in one message.
const FINDING_BATCH: usize = 512;
/// Schema errors logged per run; the rest are only counted.
const LOGGED_REJECTIONS: u64 = 5;

/// Who the plugin must say it is, and what it may do.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub run_id: String,
    pub name: String,
    pub version: String,
    pub category: Category,
    pub initialize: Value,
    pub deadline: Instant,
    pub grace: Duration,
    pub max_findings: u64,
}

/// Why a session stopped early, when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The deadline passed.
    Deadline,
    /// The caller cancelled.
    Cancelled,
}

/// What the session saw; the runner turns it into a run status.
#[derive(Debug, Default)]
pub struct SessionOutcome {
    /// The plugin answered `initialize` acceptably.
    pub initialized: bool,
    /// The plugin's answer to `run`, when it gave one.
    pub run_answer: Option<Result<RunResult, RpcError>>,
    /// A deadline or cancel request that stopped the run.
    pub ending: Option<Ending>,
    /// A fatal fault of the plugin (protocol violation, identity mismatch, …).
    pub fault: Option<RunError>,
    /// Findings that passed the schema and went to storage.
    pub accepted: u64,
    /// Findings that failed the schema.
    pub rejected: u64,
    /// The session had to kill the plugin.
    pub killed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Initializing,
    Running,
    ShuttingDown,
    /// stdin closed; waiting for the process to exit.
    Closing,
}

/// Drives the protocol until the plugin is done or has been killed. The process
/// is not reaped here.
pub async fn drive(
    spec: &SessionSpec,
    inputs: Map<String, Value>,
    process: &PluginProcess,
    to_plugin: mpsc::Sender<String>,
    mut from_plugin: mpsc::Receiver<Vec<StdoutEvent>>,
    mut cancel: watch::Receiver<bool>,
    store: &StoreWriter,
) -> SessionOutcome {
    let mut state = State {
        spec,
        outcome: SessionOutcome::default(),
        next_seq: 1,
        batch: Vec::new(),
        inputs: Some(inputs),
        to_plugin: Some(to_plugin),
        phase: Phase::Initializing,
        store,
    };
    state.send(Message::request(
        INITIALIZE_ID,
        method::INITIALIZE,
        spec.initialize.clone(),
    ));

    // Set once the plugin must be gone by then (after cancel, after shutdown, or
    // once it exited and we only wait for its stdout to close).
    let mut kill_at: Option<Instant> = None;
    let mut exited = false;
    let mut cancel_open = true;
    loop {
        tokio::select! {
            events = from_plugin.recv() => {
                // One message carries every line the reader found buffered: the
                // lines are taken in order, and the first that ends the session
                // leaves the rest unread.
                let events = events.unwrap_or_else(|| vec![StdoutEvent::Eof]);
                let mut stop = false;
                for event in events {
                    let step = match event {
                        StdoutEvent::Line(line) => {
                            let step = state.on_line(&line);
                            if state.batch.len() >= FINDING_BATCH {
                                state.flush().await;
                            }
                            step
                        }
                        StdoutEvent::TooLong { limit } => state.fatal(
                            ErrorKind::ProtocolViolation,
                            format!("the plugin sent a line longer than max_message_bytes ({limit} bytes)"),
                        ),
                        StdoutEvent::OutputLimit { limit } => state.fatal(
                            ErrorKind::OutputLimit,
                            format!("the plugin's output passed sandbox.max_output_mb ({} MiB)", limit >> 20),
                        ),
                        StdoutEvent::Failed(e) => state.fatal(
                            ErrorKind::ProtocolViolation,
                            format!("reading the plugin's stdout failed: {e}"),
                        ),
                        StdoutEvent::Eof => Step::Eof,
                    };
                    match step {
                        Step::Continue => {}
                        Step::ShutdownSent | Step::Closed => kill_at = Some(Instant::now() + spec.grace),
                        Step::Eof | Step::Fatal => {
                            stop = true;
                            break;
                        }
                    }
                }
                if stop {
                    break;
                }
                if from_plugin.is_empty() {
                    // Nothing more is waiting: what was batched goes to storage
                    // now rather than waiting for a full batch.
                    state.flush().await;
                }
            }
            _ = tokio::time::sleep_until(spec.deadline), if state.outcome.ending.is_none() && state.phase == Phase::Running => {
                state.outcome.ending = Some(Ending::Deadline);
                state.send(Message::notification(method::CANCEL, json!({"reason": "deadline"})));
                kill_at = Some(Instant::now() + spec.grace);
            }
            // A plugin that never answers `initialize` is stopped at the deadline too.
            _ = tokio::time::sleep_until(spec.deadline), if state.outcome.ending.is_none() && state.phase == Phase::Initializing => {
                state.outcome.ending = Some(Ending::Deadline);
                break;
            }
            changed = cancel.changed(), if cancel_open && state.outcome.ending.is_none() => {
                match changed {
                    Ok(()) if *cancel.borrow() => {
                        state.outcome.ending = Some(Ending::Cancelled);
                        if state.phase == Phase::Initializing {
                            break;
                        }
                        state.send(Message::notification(method::CANCEL, json!({"reason": "cancelled"})));
                        kill_at = Some(Instant::now() + spec.grace);
                    }
                    Ok(()) => {}
                    Err(_) => cancel_open = false,
                }
            }
            _ = async { tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)).await }, if kill_at.is_some() => {
                break;
            }
            _ = process.exited(), if !exited => {
                // The plugin is gone; what it wrote is still in the pipe. Anything
                // left holding stdout open (its own children) gets a short while.
                exited = true;
                let soon = Instant::now() + Duration::from_millis(500);
                kill_at = Some(kill_at.map_or(soon, |k| k.min(soon)));
            }
        }
    }
    state.flush().await;
    // Whatever is still running of the plugin now ends.
    state.to_plugin = None;
    if !exited {
        let waited = tokio::time::timeout(Duration::from_millis(50), process.exited()).await;
        if waited.is_err() {
            state.outcome.killed = true;
        }
    }
    process.kill_group();
    state.outcome
}

enum Step {
    Continue,
    ShutdownSent,
    Closed,
    Eof,
    Fatal,
}

struct State<'a> {
    spec: &'a SessionSpec,
    outcome: SessionOutcome,
    next_seq: u64,
    batch: Vec<NewFinding>,
    /// Moved into the `run` request once `initialize` succeeded.
    inputs: Option<Map<String, Value>>,
    to_plugin: Option<mpsc::Sender<String>>,
    phase: Phase,
    store: &'a StoreWriter,
}

impl State<'_> {
    fn send(&mut self, message: Message) {
        if let Some(tx) = &self.to_plugin {
            // The stdin writer queue is generous; a plugin that does not read its
            // stdin only delays its own messages, never the session.
            if tx.try_send(message.to_line()).is_err() {
                tracing::debug!(run_id = %self.spec.run_id, "plugin stdin queue full or closed");
            }
        }
    }

    fn fatal(&mut self, kind: ErrorKind, message: String) -> Step {
        if self.outcome.fault.is_none() {
            self.outcome.fault = Some(RunError::new(kind, message));
        }
        Step::Fatal
    }

    async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let findings = std::mem::take(&mut self.batch);
        let op = findings_op(
            self.spec.category,
            &self.spec.run_id,
            &self.spec.name,
            &self.spec.version,
            findings,
        );
        if let Err(e) = self.store.send(op).await {
            tracing::error!(run_id = %self.spec.run_id, error = %e, "cannot store findings");
            self.fatal(
                ErrorKind::StorageError,
                format!("findings could not be stored: {e}"),
            );
        }
    }

    fn on_line(&mut self, line: &[u8]) -> Step {
        if self.phase == Phase::Running {
            if let Some((seq, finding, text)) = fast_finding(line) {
                return self.on_finding(seq, finding, Some(text));
            }
        }
        match decode_line(line) {
            Ok(PluginLine::Response(message)) => self.on_response(message),
            Ok(PluginLine::Notification(message)) => self.on_notification(message),
            Err(violation) => self.fatal(ErrorKind::ProtocolViolation, violation),
        }
    }

    fn on_response(&mut self, message: Message) -> Step {
        let id = message.id.as_ref().and_then(Value::as_u64);
        match (self.phase, id) {
            (Phase::Initializing, Some(INITIALIZE_ID)) => self.on_initialized(message),
            (Phase::Running, Some(RUN_ID)) => {
                self.outcome.run_answer = Some(match message.error {
                    Some(error) => Err(error),
                    None => match serde_json::from_value::<RunResult>(
                        message.result.unwrap_or(Value::Null),
                    ) {
                        Ok(result) => {
                            let sent = self.next_seq - 1;
                            if result.findings != sent {
                                return self.fatal(
                                    ErrorKind::ProtocolViolation,
                                    format!(
                                        "the plugin answered run with findings = {} but sent {sent} finding notifications",
                                        result.findings
                                    ),
                                );
                            }
                            Ok(result)
                        }
                        Err(e) => {
                            return self.fatal(
                                ErrorKind::ProtocolViolation,
                                format!("malformed run result: {e}"),
                            )
                        }
                    },
                });
                self.phase = Phase::ShuttingDown;
                self.send(Message::request(SHUTDOWN_ID, method::SHUTDOWN, json!({})));
                Step::ShutdownSent
            }
            (Phase::ShuttingDown, Some(SHUTDOWN_ID)) => {
                self.phase = Phase::Closing;
                // Closing stdin is the second signal to exit.
                self.to_plugin = None;
                Step::Closed
            }
            _ => self.fatal(
                ErrorKind::ProtocolViolation,
                format!(
                    "the plugin answered a request that was not pending (id {:?})",
                    message.id
                ),
            ),
        }
    }

    fn on_initialized(&mut self, message: Message) -> Step {
        if let Some(error) = message.error {
            return self.fatal(
                ErrorKind::PluginError,
                format!(
                    "the plugin refused initialize: {} (code {})",
                    error.message, error.code
                ),
            );
        }
        let result: InitializeResult =
            match serde_json::from_value(message.result.unwrap_or(Value::Null)) {
                Ok(r) => r,
                Err(e) => {
                    return self.fatal(
                        ErrorKind::ProtocolViolation,
                        format!("malformed initialize result: {e}"),
                    )
                }
            };
        if result.protocol_version != protocol::PROTOCOL_VERSION {
            return self.fatal(
                ErrorKind::ProtocolViolation,
                format!(
                    "the plugin speaks protocol version {}, the supervisor speaks {}",
                    result.protocol_version,
                    protocol::PROTOCOL_VERSION
                ),
            );
        }
        let expected = (&self.spec.name, &self.spec.version, self.spec.category);
        if (&result.name, &result.version, result.category) != expected {
            return self.fatal(
                ErrorKind::IdentityMismatch,
                format!(
                    "the plugin says it is {} {} ({}) but its manifest declares {} {} ({})",
                    result.name,
                    result.version,
                    result.category,
                    expected.0,
                    expected.1,
                    expected.2
                ),
            );
        }
        self.outcome.initialized = true;
        self.phase = Phase::Running;
        let inputs = self.inputs.take().unwrap_or_default();
        self.send(Message::request(
            RUN_ID,
            method::RUN,
            json!({ "inputs": inputs }),
        ));
        Step::Continue
    }

    fn on_notification(&mut self, message: Message) -> Step {
        let method = message.method.as_deref().unwrap_or_default();
        let params = message.params.unwrap_or(Value::Null);
        match method {
            method::FINDING if self.phase == Phase::Running => match finding_params(params) {
                Ok(FindingParams { seq, finding }) => self.on_finding(seq, finding, None),
                Err(e) => self.fatal(
                    ErrorKind::ProtocolViolation,
                    format!("malformed finding notification: {e}"),
                ),
            },
            method::FINDING => self.fatal(
                ErrorKind::ProtocolViolation,
                "the plugin sent a finding while no run was pending".to_string(),
            ),
            method::PROGRESS => {
                if let Ok(p) = serde_json::from_value::<ProgressParams>(params) {
                    tracing::debug!(run_id = %self.spec.run_id, completed = p.completed, total = ?p.total, message = ?p.message, "plugin progress");
                }
                Step::Continue
            }
            method::LOG => match serde_json::from_value::<LogParams>(params) {
                Ok(l) => {
                    let (run_id, plugin) = (&self.spec.run_id, &self.spec.name);
                    match l.level {
                        LogLevel::Debug => {
                            tracing::debug!(%run_id, %plugin, fields = ?l.fields, "{}", l.message)
                        }
                        LogLevel::Info => {
                            tracing::info!(%run_id, %plugin, fields = ?l.fields, "{}", l.message)
                        }
                        LogLevel::Warn => {
                            tracing::warn!(%run_id, %plugin, fields = ?l.fields, "{}", l.message)
                        }
                        LogLevel::Error => {
                            tracing::error!(%run_id, %plugin, fields = ?l.fields, "{}", l.message)
                        }
                    }
                    Step::Continue
                }
                Err(e) => self.fatal(
                    ErrorKind::ProtocolViolation,
                    format!("malformed log notification: {e}"),
                ),
            },
            other => self.fatal(
                ErrorKind::ProtocolViolation,
                format!("the plugin sent an unknown notification {other:?}"),
            ),
        }
    }

    /// `text` is the finding as the plugin wrote it, when the line was read on
    /// the fast path; it is stored as is instead of serializing `finding` again.
    fn on_finding(&mut self, seq: u64, finding: Value, text: Option<String>) -> Step {
        if seq != self.next_seq {
            return self.fatal(
                ErrorKind::ProtocolViolation,
                format!(
                    "finding seq {seq} where {} was due (seq counts from 1 without gaps)",
                    self.next_seq
                ),
            );
        }
        if seq > self.spec.max_findings {
            return self.fatal(
                ErrorKind::OutputLimit,
                format!(
                    "the plugin sent more than limits.max_findings ({}) findings",
                    self.spec.max_findings
                ),
            );
        }
        self.next_seq += 1;
        match secflow_core::schema::validate_finding(&finding) {
            Ok(()) => {
                self.outcome.accepted += 1;
                let fingerprint = secflow_core::finding::fingerprint(&self.spec.name, &finding);
                let severity = secflow_core::finding::severity(&finding);
                // Only an enricher's findings are merged field by field; the
                // others are stored as text and columns, and their tree is
                // freed here rather than on the writer thread.
                self.batch.push(match (self.spec.category, text) {
                    (Category::Enricher, Some(text)) => {
                        NewFinding::with_json(fingerprint, severity, finding, text)
                    }
                    (Category::Enricher, None) => NewFinding::new(fingerprint, severity, finding),
                    (Category::Detector | Category::Analytics, text) => {
                        NewFinding::detected(fingerprint, severity, finding, text)
                    }
                });
            }
            Err(violations) => {
                self.outcome.rejected += 1;
                if self.outcome.rejected <= LOGGED_REJECTIONS {
                    let errors: Vec<String> = violations.iter().map(ToString::to_string).collect();
                    tracing::warn!(run_id = %self.spec.run_id, plugin = %self.spec.name, seq, errors = ?errors, "finding rejected by the schema");
                }
            }
        }
        Step::Continue
    }
}

/// A `finding` notification, borrowed from its line: its envelope and params
/// are read in one pass, without building a tree of them. Unknown members are
/// refused (the line then takes the general path): serde would skip them
/// without the checks a parse into `Value` makes (number range, surrogates),
/// and the fast path must never accept what that parse rejects. Any other
/// message fails to read as this and takes the general path too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFinding<'a> {
    #[serde(borrow)]
    jsonrpc: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: RawFindingParams<'a>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

/// `finding` params with the finding kept as the plugin's text (unknown
/// members refused, as in [`RawFinding`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFindingParams<'a> {
    seq: u64,
    #[serde(borrow)]
    finding: &'a RawValue,
}

/// The hot path of a streaming plugin: a well-formed `finding` notification
/// read in one pass, giving its `seq`, the parsed finding and the finding's own
/// text (stored as is). `None` for anything else, including every malformed
/// line: those go through [`decode_line`] and [`finding_params`], which give
/// the exact verdict and error, so this path only ever accepts what they accept.
pub fn fast_finding(line: &[u8]) -> Option<(u64, Value, String)> {
    let raw: RawFinding<'_> = serde_json::from_slice(line).ok()?;
    let kind = MessageKind::of(
        &raw.jsonrpc,
        raw.method.is_some(),
        raw.id.is_some(),
        raw.result.is_some(),
        raw.error.is_some(),
    );
    if kind != MessageKind::Notification || raw.method.as_deref() != Some(method::FINDING) {
        return None;
    }
    let text = raw.params.finding.get();
    let finding: Value = serde_json::from_str(text).ok()?;
    // The finding was parsed on its own, so serde_json's nesting limit counted
    // from the finding, not from the line as in the general path: a finding
    // nested deeper than the envelope leaves room for goes that way instead.
    if nests_deeper_than(&finding, FAST_FINDING_MAX_DEPTH) {
        return None;
    }
    Some((raw.params.seq, finding, text.to_string()))
}

/// Deepest finding the fast path takes, counting the finding object as 1: well
/// within serde_json's 128 levels minus the two of the envelope (the message
/// and its params), and far beyond any finding seen in practice.
const FAST_FINDING_MAX_DEPTH: usize = 64;

/// Whether `value` has more than `levels` levels of arrays and objects.
fn nests_deeper_than(value: &Value, levels: usize) -> bool {
    let deeper = |child: &Value| nests_deeper_than(child, levels - 1);
    match value {
        Value::Array(items) => levels == 0 || items.iter().any(deeper),
        Value::Object(fields) => levels == 0 || fields.values().any(deeper),
        _ => false,
    }
}

/// A line of the plugin's stdout that the session acts on.
#[derive(Debug, Clone)]
pub enum PluginLine {
    /// An answer to one of the supervisor's requests.
    Response(Message),
    /// A `finding`, `progress` or `log` (or unknown) notification.
    Notification(Message),
}

/// Decodes and classifies one line of the plugin's stdout (without its `\n`).
/// The error is the protocol violation to report: not JSON, not JSON-RPC 2.0,
/// or a request (plugins only answer and notify). Pure, so it is fuzzed as is.
pub fn decode_line(line: &[u8]) -> Result<PluginLine, String> {
    let message: Message = serde_json::from_slice(line)
        .map_err(|e| format!("the plugin wrote a line that is not a JSON-RPC message: {e}"))?;
    match message.kind() {
        MessageKind::Response => Ok(PluginLine::Response(message)),
        MessageKind::Notification => Ok(PluginLine::Notification(message)),
        MessageKind::Request => Err(format!(
            "the plugin sent a request ({}); plugins may only answer and notify",
            message.method.unwrap_or_default()
        )),
        MessageKind::Invalid => Err("the plugin sent an invalid JSON-RPC 2.0 message".to_string()),
    }
}

/// The `finding` params, taken apart without rebuilding the finding: the
/// usual `{seq, finding}` object is destructured in place (`from_value` would
/// copy the whole document tree, on the hot path of every finding); anything
/// else goes through serde for its exact error.
pub fn finding_params(params: Value) -> Result<FindingParams, serde_json::Error> {
    if let Value::Object(mut fields) = params {
        if let (Some(seq), true) = (
            fields.get("seq").and_then(Value::as_u64),
            fields.contains_key("finding"),
        ) {
            let finding = fields.remove("finding").unwrap_or(Value::Null);
            return Ok(FindingParams { seq, finding });
        }
        return serde_json::from_value(Value::Object(fields));
    }
    serde_json::from_value(params)
}

/// Whether a JSON-RPC error answer to `run` means "cancelled as asked".
pub fn is_cancel_answer(error: &RpcError) -> bool {
    error.code == code::CANCELLED
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the general path makes of `line`: the `finding` notification's seq
    /// and finding, or `None` for anything else (including every violation).
    fn slow_finding(line: &[u8]) -> Option<(u64, Value)> {
        match decode_line(line) {
            Ok(PluginLine::Notification(message))
                if message.method.as_deref() == Some(method::FINDING) =>
            {
                let params = finding_params(message.params.unwrap_or(Value::Null)).ok()?;
                Some((params.seq, params.finding))
            }
            _ => None,
        }
    }

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    fn lines() -> Vec<String> {
        let doc = r#"{"finding_schema_version":"1.0.0","rule_id":"r","title":"t","severity":"high","target":"x"}"#;
        let mut lines = vec![
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#" {{ "params" : {{ "finding" : {doc} , "seq" : 2 }} , "method":"finding", "jsonrpc":"2.0" }} "#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"find\u0069ng","params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","id":null,"method":"finding","params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"finding","params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","result":null,"params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","error":{{}},"params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","error":{{"code":1,"message":"m"}},"params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"1.0","method":"finding","params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"progress","params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","params":{{"seq":1.0,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","params":{{"seq":-1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","params":{{"seq":1,"seq":2,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","method":"finding","params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","params":{{"seq":1,"finding":{doc},"x":1e400}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","x":1e400,"params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","x":"\ud800","params":{{"seq":1,"finding":{doc}}}}}"#
            ),
            r#"{"jsonrpc":"2.0","method":"finding","params":{"seq":1,"finding":{"raw":1e400}}}"#
                .to_string(),
            r#"{"jsonrpc":"2.0","method":"finding","params":{"seq":1,"finding":null}}"#.to_string(),
            r#"{"jsonrpc":"2.0","method":"finding","params":{"seq":1}}"#.to_string(),
            r#"{"jsonrpc":"2.0","method":"finding","params":null}"#.to_string(),
            r#"{"jsonrpc":"2.0","method":"finding","params":[1,{}]}"#.to_string(),
            format!(
                r#"{{"jsonrpc":"2.0","method":"finding","params":{{"seq":1,"finding":{doc}}}}} x"#
            ),
            format!(r#"{{"jsonrpc":"2.0","method":"finding","params":{{"seq":1,"finding":{doc}}}"#),
        ];
        // Around serde_json's nesting limit, counted from the line or from the finding.
        for depth in [120, 124, 125, 126, 127, 128, 130] {
            lines.push(format!(
                r#"{{"jsonrpc":"2.0","method":"finding","params":{{"seq":1,"finding":{{"raw":{}}}}}}}"#,
                nested(depth)
            ));
            lines.push(format!(
                r#"{{"jsonrpc":"2.0","method":"finding","x":{},"params":{{"seq":1,"finding":{doc}}}}}"#,
                nested(depth)
            ));
        }
        lines
    }

    #[test]
    fn the_fast_finding_reader_accepts_exactly_what_the_general_path_accepts() {
        for line in lines() {
            let fast = fast_finding(line.as_bytes());
            let slow = slow_finding(line.as_bytes());
            match (&fast, &slow) {
                (Some((seq, finding, text)), Some((slow_seq, slow_finding))) => {
                    assert_eq!(seq, slow_seq, "{line}");
                    assert_eq!(finding, slow_finding, "{line}");
                    let reread: Value = serde_json::from_str(text).unwrap();
                    assert_eq!(&reread, finding, "{line}");
                }
                // Not read fast: the general path decides (and may accept).
                (None, _) => {}
                (Some(_), None) => {
                    panic!("the fast path accepted what the general path rejects: {line}")
                }
            }
        }
        // The plain notification is read on the fast path, and so is a finding
        // as deep as the fast path allows.
        assert!(fast_finding(lines()[0].as_bytes()).is_some());
        let deep = format!(
            r#"{{"jsonrpc":"2.0","method":"finding","params":{{"seq":1,"finding":{{"raw":{}}}}}}}"#,
            nested(FAST_FINDING_MAX_DEPTH - 1)
        );
        assert!(fast_finding(deep.as_bytes()).is_some());
        let deeper = deep.replacen("[1]", "[[1]]", 1);
        assert!(fast_finding(deeper.as_bytes()).is_none());
        assert!(slow_finding(deeper.as_bytes()).is_some());
    }
}
