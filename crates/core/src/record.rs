//! What a run produces: the run record, its status and its error kind.
//!
//! These are the shapes of contracts.md §2 ("Run record"); the API, the CLI and
//! storage all hand out exactly this.

use secflow_plugin_sdk::protocol::Category;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a run ended (or that it is still going).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not ended yet; never the status of a finished record.
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Violated,
    Rejected,
    /// Never started because data it reads (a `sandbox.read_paths` entry) is
    /// not on this host: not the plugin's failure, and nothing to retry until
    /// the data is installed (the error says how).
    Skipped,
    /// Answered `run` and exited cleanly, but said it could not do all the
    /// work (`incomplete` in its answer: words a scan could not try, say);
    /// the error (`kind: incomplete`) says how much and why.
    Partial,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Violated => "violated",
            RunStatus::Rejected => "rejected",
            RunStatus::Skipped => "skipped",
            RunStatus::Partial => "partial",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::TimedOut,
            RunStatus::Cancelled,
            RunStatus::Violated,
            RunStatus::Rejected,
            RunStatus::Skipped,
            RunStatus::Partial,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stable snake_case word in `error.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Timeout,
    Cancelled,
    SandboxViolation,
    ProtocolViolation,
    IdentityMismatch,
    MemoryLimit,
    CpuLimit,
    OutputLimit,
    PluginError,
    PluginCrashed,
    InvalidConfig,
    InvalidInput,
    PluginRevoked,
    PluginNotFound,
    PluginRejected,
    HashMismatch,
    SignatureInvalid,
    DependencyMissing,
    SpawnFailed,
    SandboxUnavailable,
    /// Data the plugin reads is not installed on this host (a run `skipped`).
    DataUnavailable,
    /// The plugin could not do all its work (a run `partial`).
    Incomplete,
    StorageError,
    /// The database's file system is full (SQLITE_FULL): findings or the
    /// record of the run could not all be committed.
    StorageFull,
    Interrupted,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::SandboxViolation => "sandbox_violation",
            ErrorKind::ProtocolViolation => "protocol_violation",
            ErrorKind::IdentityMismatch => "identity_mismatch",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::CpuLimit => "cpu_limit",
            ErrorKind::OutputLimit => "output_limit",
            ErrorKind::PluginError => "plugin_error",
            ErrorKind::PluginCrashed => "plugin_crashed",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::PluginRevoked => "plugin_revoked",
            ErrorKind::PluginNotFound => "plugin_not_found",
            ErrorKind::PluginRejected => "plugin_rejected",
            ErrorKind::HashMismatch => "hash_mismatch",
            ErrorKind::SignatureInvalid => "signature_invalid",
            ErrorKind::DependencyMissing => "dependency_missing",
            ErrorKind::SpawnFailed => "spawn_failed",
            ErrorKind::SandboxUnavailable => "sandbox_unavailable",
            ErrorKind::DataUnavailable => "data_unavailable",
            ErrorKind::Incomplete => "incomplete",
            ErrorKind::StorageError => "storage_error",
            ErrorKind::StorageFull => "storage_full",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `error` of a run record: `{code, kind, message}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    /// The plugin's JSON-RPC error code when it answered with one, else 0.
    pub code: i64,
    pub kind: ErrorKind,
    pub message: String,
    /// With `kind: incomplete`: the units of work the plugin did not do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untried: Option<u64>,
}

impl RunRecord {
    /// Marks a run whose findings or record storage could not commit: a run
    /// that would have succeeded fails with `kind` (`storage_full`,
    /// `storage_error`), keeping what it did commit (`partial`). A violation or
    /// a refusal keeps its status and error: those say more about the plugin.
    pub fn lost_to_storage(&mut self, kind: ErrorKind, reason: &str) {
        let already = self
            .error
            .as_ref()
            .is_some_and(|e| matches!(e.kind, ErrorKind::StorageFull | ErrorKind::StorageError));
        if already || matches!(self.status, RunStatus::Violated | RunStatus::Rejected) {
            return;
        }
        let before = self
            .error
            .as_ref()
            .map(|e| format!(" (the run had ended with {}: {})", e.kind, e.message))
            .unwrap_or_default();
        self.status = RunStatus::Failed;
        self.partial = true;
        self.error = Some(RunError::new(
            kind,
            format!("the run's findings or record could not all be stored: {reason}{before}"),
        ));
    }
}

impl RunError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RunError {
        RunError {
            code: 0,
            kind,
            message: message.into(),
            untried: None,
        }
    }
}

/// One plugin run, as stored and as returned by the API and the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub plugin: String,
    pub plugin_version: String,
    pub category: Category,
    pub status: RunStatus,
    pub partial: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
    pub cpu_ms: u64,
    pub memory_mb: u64,
    /// Findings accepted (valid) in this run, new or seen before.
    pub findings: u64,
    /// Findings that failed the schema (or could not be merged) and were not stored.
    pub findings_rejected: u64,
    pub outputs: Map<String, Value>,
    pub error: Option<RunError>,
    pub stderr_tail: String,
    pub workflow_id: Option<String>,
    pub node_id: Option<String>,
    /// The destinations a `network: "targets"` run was refused, one entry per
    /// distinct destination (at most `MAX_REFUSED_DESTINATIONS` per address
    /// family); empty for every other run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_egress: Vec<RefusedEgress>,
}

/// A destination a scoped run tried to reach and the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedEgress {
    /// The IP address.
    pub destination: String,
    /// `tcp`, `udp`, `icmp`, `ipv6-icmp`, or the protocol number.
    pub protocol: String,
    /// The destination port, for TCP and UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Packets refused to this destination.
    pub packets: u64,
}

/// The key under which the stores keep `refused_egress` inside a run row's
/// `outputs` JSON column (no column of its own: no schema migration). A
/// plugin's own output of that name is dropped by the runner.
pub const REFUSED_EGRESS_KEY: &str = "$secflow_refused_egress";

impl RunRecord {
    /// The `outputs` column of a run row: the outputs, plus the refusals
    /// under [`REFUSED_EGRESS_KEY`] when there are any.
    pub fn outputs_column(&self) -> Map<String, Value> {
        let mut column = self.outputs.clone();
        if !self.refused_egress.is_empty() {
            column.insert(
                REFUSED_EGRESS_KEY.into(),
                serde_json::to_value(&self.refused_egress).unwrap_or(Value::Null),
            );
        }
        column
    }

    /// Splits a stored `outputs` column into the outputs and the refusals.
    pub fn split_outputs_column(
        mut column: Map<String, Value>,
    ) -> Result<(Map<String, Value>, Vec<RefusedEgress>), String> {
        let refused = match column.remove(REFUSED_EGRESS_KEY) {
            None => Vec::new(),
            Some(v) => serde_json::from_value(v).map_err(|e| format!("refused_egress: {e}"))?,
        };
        Ok((column, refused))
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.status != RunStatus::Running
    }
}

/// A plugin's status as listed (contracts §2).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum PluginStatus {
    Active,
    Revoked,
    Rejected,
    Unavailable,
}

impl PluginStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginStatus::Active => "active",
            PluginStatus::Revoked => "revoked",
            PluginStatus::Rejected => "rejected",
            PluginStatus::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for PluginStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
