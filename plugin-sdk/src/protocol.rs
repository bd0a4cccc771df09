//! The SecFlow plugin protocol, version 1: the wire types both ends share.
//!
//! One JSON-RPC 2.0 message per line on the plugin's stdin/stdout (no batches).
//! The supervisor sends `initialize`, `run`, `shutdown` (requests) and `cancel`
//! (notification); the plugin answers the requests and streams `finding`,
//! `progress` and `log` notifications while `run` is pending. docs/protocol.md is
//! the language-neutral description of the same thing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The finding schema version plugins must put in `finding_schema_version`.
pub const FINDING_SCHEMA_VERSION: &str = "1.0.0";

/// Method names, in one place so both ends spell them the same.
pub mod method {
    pub const INITIALIZE: &str = "initialize";
    pub const RUN: &str = "run";
    pub const SHUTDOWN: &str = "shutdown";
    pub const CANCEL: &str = "cancel";
    pub const FINDING: &str = "finding";
    pub const PROGRESS: &str = "progress";
    pub const LOG: &str = "log";
}

/// JSON-RPC and protocol error codes (contracts §3).
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    pub const CANCELLED: i64 = -32800;
    pub const INVALID_INPUTS: i64 = -32001;
    pub const TARGET_UNREACHABLE: i64 = -32002;
    pub const MISSING_TOOL: i64 = -32003;
}

/// The three kinds of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Detector,
    Enricher,
    Analytics,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Detector => "detector",
            Category::Enricher => "enricher",
            Category::Analytics => "analytics",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finding's severity, ordered from least to most severe (`unknown` sorts lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Unknown,
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 6] = [
        Severity::Unknown,
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses the wire spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request or response id. The supervisor uses integers; anything JSON-RPC
/// allows is accepted.
pub type Id = Value;

/// Any message on the wire, before it is classified.
///
/// Kept loose on purpose: the receiving side classifies it with [`Message::kind`]
/// and reports a precise protocol violation instead of a serde error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Message {
    pub jsonrpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// What a [`Message`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Notification,
    Response,
    /// Neither: wrong `jsonrpc`, or both `result` and `error`, or neither nor `method`.
    Invalid,
}

impl MessageKind {
    /// Classifies a message by its `jsonrpc` and which of `method`, `id`,
    /// `result` and `error` it has (a member set to `null` counts as absent),
    /// for readers that parse the members without building a [`Message`].
    pub fn of(jsonrpc: &str, method: bool, id: bool, result: bool, error: bool) -> MessageKind {
        if jsonrpc != "2.0" {
            return MessageKind::Invalid;
        }
        match (method, id, result, error) {
            (true, true, false, false) => MessageKind::Request,
            (true, false, false, false) => MessageKind::Notification,
            (false, true, true, false) | (false, true, false, true) => MessageKind::Response,
            _ => MessageKind::Invalid,
        }
    }
}

impl Message {
    pub fn request(id: impl Into<Id>, method: &str, params: Value) -> Message {
        Message {
            jsonrpc: "2.0".into(),
            id: Some(id.into()),
            method: Some(method.into()),
            params: Some(params),
            ..Message::default()
        }
    }

    pub fn notification(method: &str, params: Value) -> Message {
        Message {
            jsonrpc: "2.0".into(),
            method: Some(method.into()),
            params: Some(params),
            ..Message::default()
        }
    }

    pub fn response(id: Id, result: Value) -> Message {
        Message {
            jsonrpc: "2.0".into(),
            id: Some(id),
            result: Some(result),
            ..Message::default()
        }
    }

    pub fn error_response(id: Id, error: RpcError) -> Message {
        Message {
            jsonrpc: "2.0".into(),
            id: Some(id),
            error: Some(error),
            ..Message::default()
        }
    }

    pub fn kind(&self) -> MessageKind {
        MessageKind::of(
            &self.jsonrpc,
            self.method.is_some(),
            self.id.is_some(),
            self.result.is_some(),
            self.error.is_some(),
        )
    }

    /// Serialises to one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a Message always serialises");
        line.push('\n');
        line
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// Name and version, as the supervisor tells the plugin who it is expected to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    pub name: String,
    pub version: String,
}

/// `initialize` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitializeParams {
    pub protocol_version: u32,
    pub run_id: String,
    pub plugin: PluginRef,
    #[serde(default)]
    pub config: Map<String, Value>,
    pub context: RunContextInfo,
    pub limits: ProtocolLimits,
}

/// Where and how long the plugin runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunContextInfo {
    /// The private, writable work directory of this run.
    pub workdir: String,
    /// Milliseconds from `initialize` until the supervisor cancels the run.
    pub deadline_ms: u64,
    pub network: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The plugin's persistent, writable state directory, kept across runs
    /// (only when its manifest asks for `sandbox.state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
}

/// Protocol bounds the plugin must respect.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ProtocolLimits {
    pub max_message_bytes: u64,
    pub max_findings: u64,
}

/// Which optional behaviours a plugin supports.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub cancel: bool,
    #[serde(default)]
    pub progress: bool,
}

/// `initialize` result: the plugin says who it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitializeResult {
    pub protocol_version: u32,
    pub name: String,
    pub version: String,
    pub category: Category,
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// `run` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunParams {
    #[serde(default)]
    pub inputs: Map<String, Value>,
}

/// `run` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    #[serde(default)]
    pub outputs: Map<String, Value>,
    /// How many `finding` notifications the plugin sent; the supervisor checks it.
    pub findings: u64,
    /// Set when the plugin could not do all the work it was asked for (a scan
    /// whose target stopped answering): the run is then `partial`, not `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

/// Longest [`Incomplete::reason`], in bytes.
pub const MAX_INCOMPLETE_REASON_BYTES: usize = 1024;

/// What a run that answered `run` could not do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    /// Units of work not done (for a content scan: words whose request got no answer).
    pub untried: u64,
    /// Why, in a sentence (at most [`MAX_INCOMPLETE_REASON_BYTES`]).
    pub reason: String,
}

impl Incomplete {
    /// `reason` is cut at a character boundary to [`MAX_INCOMPLETE_REASON_BYTES`].
    pub fn new(untried: u64, reason: impl Into<String>) -> Incomplete {
        let mut reason = reason.into();
        if reason.len() > MAX_INCOMPLETE_REASON_BYTES {
            let mut end = MAX_INCOMPLETE_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Incomplete { untried, reason }
    }
}

/// `finding` notification params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingParams {
    /// Counts from 1 without gaps.
    pub seq: u64,
    pub finding: Value,
}

/// `progress` notification params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressParams {
    pub completed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Log levels a plugin may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// `log` notification params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogParams {
    pub level: LogLevel,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Map<String, Value>>,
}

/// `cancel` notification params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelParams {
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_result_carries_incomplete_only_when_work_was_left_undone() {
        let complete = RunResult::default();
        assert_eq!(
            serde_json::to_value(&complete).unwrap(),
            json!({"outputs": {}, "findings": 0})
        );
        let parsed: RunResult = serde_json::from_value(
            json!({"outputs": {}, "findings": 2, "incomplete": {"untried": 5, "reason": "timeouts"}}),
        )
        .unwrap();
        assert_eq!(parsed.incomplete, Some(Incomplete::new(5, "timeouts")));
    }

    #[test]
    fn an_incomplete_reason_is_cut_to_its_bound_on_a_character_boundary() {
        let long = "é".repeat(MAX_INCOMPLETE_REASON_BYTES);
        let cut = Incomplete::new(1, long);
        assert!(cut.reason.len() <= MAX_INCOMPLETE_REASON_BYTES);
        assert!(cut.reason.len() > MAX_INCOMPLETE_REASON_BYTES - 2);
        assert!(cut.reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn messages_are_classified_by_their_members() {
        let req = Message::request(1, method::RUN, json!({}));
        assert_eq!(req.kind(), MessageKind::Request);
        let note = Message::notification(method::CANCEL, json!({"reason": "x"}));
        assert_eq!(note.kind(), MessageKind::Notification);
        let resp = Message::response(json!(1), json!({}));
        assert_eq!(resp.kind(), MessageKind::Response);
        let bad: Message = serde_json::from_str(r#"{"jsonrpc":"1.0","id":1,"result":{}}"#).unwrap();
        assert_eq!(bad.kind(), MessageKind::Invalid);
        let both: Message = serde_json::from_str(
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#,
        )
        .unwrap();
        assert_eq!(both.kind(), MessageKind::Invalid);
    }

    #[test]
    fn a_line_is_one_json_document_ending_in_newline() {
        let line =
            Message::notification(method::LOG, json!({"level":"info","message":"a\nb"})).to_line();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn severities_order_from_unknown_to_critical() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Info > Severity::Unknown);
        assert_eq!(Severity::parse("medium"), Some(Severity::Medium));
        assert_eq!(Severity::parse("MEDIUM"), None);
    }
}
