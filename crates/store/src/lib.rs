//! The storage port: what the supervisor keeps (runs, findings, telemetry, audit,
//! plugin revocations), as a trait the daemon, runner and CLI use without naming
//! a backend. `secflow-store-sqlite` is the embedded implementation.
//!
//! Writes go through a [`StoreWriter`]: a bounded queue feeding one writer thread
//! that batches them into transactions, so a plugin streaming findings never
//! waits on a disk sync per finding and never holds a lock. Reads open their own
//! connections. A second backend (PostgreSQL, for a fleet) is one more crate
//! implementing [`StoragePort`] and feeding a [`StoreWriter`] queue.

use secflow_plugin_sdk::protocol::{Category, Severity};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use secflow_core::record::{ErrorKind, RunRecord};

#[cfg(feature = "testkit")]
pub mod conformance;
pub mod document;
pub mod transfer;

/// A backend's own failure (a SQLite or PostgreSQL error), kept as the cause
/// so the port itself names no backend.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open database {location}")]
    Open {
        /// The database file or server, as an operator would name it.
        location: String,
        /// The run error kind this failure gives a run.
        kind: ErrorKind,
        #[source]
        source: BackendError,
    },
    #[error("cannot create database directory {path}")]
    CreateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {location} has schema version {found}, newer than this build knows ({known}); upgrade secflow")]
    TooNew {
        location: String,
        found: i64,
        known: i64,
    },
    #[error("database error")]
    Backend {
        /// `storage_full` when the database ran out of space, else
        /// `storage_error`: the backend knows which.
        kind: ErrorKind,
        #[source]
        source: BackendError,
    },
    #[error("stored record is malformed: {0}")]
    Malformed(String),
    #[error("the storage writer has stopped")]
    WriterGone,
}

impl StorageError {
    /// The run error kind this failure gives a run: `storage_full` when the
    /// database is out of space, else `storage_error`.
    pub fn run_error_kind(&self) -> ErrorKind {
        match self {
            StorageError::Backend { kind, .. } | StorageError::Open { kind, .. } => *kind,
            _ => ErrorKind::StorageError,
        }
    }
}

/// A finding that passed the schema, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewFinding {
    /// The plugin's own `fingerprint`, or the computed one (see `finding::fingerprint`).
    pub fingerprint: String,
    /// [`fingerprint_key`] of `fingerprint`, computed by the session.
    pub fingerprint_key: i64,
    pub severity: Severity,
    /// The document's `rule_id`, `title` and `target`: the columns stored
    /// beside its text.
    pub rule_id: String,
    pub title: String,
    pub target: String,
    /// The finding document as the plugin sent it (schema-valid), for the
    /// findings the writer merges field by field (an enricher's). `Null` for a
    /// finding made with [`NewFinding::detected`]: its tree is freed by the
    /// session that built it, not by the one writer thread every run's
    /// findings go through.
    pub document: Value,
    /// `document` as JSON text: the plugin's own text, or serialized by the
    /// session that received it, so that the writer only binds it.
    pub document_json: String,
}

impl NewFinding {
    /// A finding to store, with its document serialized once here.
    pub fn new(fingerprint: String, severity: Severity, document: Value) -> NewFinding {
        NewFinding::build(fingerprint, severity, document, None, true)
    }

    /// A finding to store whose compact JSON text is already at hand (the
    /// plugin's own text of `document`, read on the session's fast path).
    pub fn with_json(
        fingerprint: String,
        severity: Severity,
        document: Value,
        document_json: String,
    ) -> NewFinding {
        NewFinding::build(fingerprint, severity, document, Some(document_json), true)
    }

    /// A detector's (or analytics plugin's) finding: stored as text and
    /// columns only, so `document` is taken apart and dropped here.
    pub fn detected(
        fingerprint: String,
        severity: Severity,
        document: Value,
        document_json: Option<String>,
    ) -> NewFinding {
        NewFinding::build(fingerprint, severity, document, document_json, false)
    }

    fn build(
        fingerprint: String,
        severity: Severity,
        mut document: Value,
        document_json: Option<String>,
        keep_document: bool,
    ) -> NewFinding {
        // Serializing a `Value` cannot fail: its keys are strings.
        let document_json = document_json.unwrap_or_else(|| document.to_string());
        let mut column = |key: &str| match document.get_mut(key) {
            Some(Value::String(text)) if keep_document => text.clone(),
            Some(Value::String(text)) => std::mem::take(text),
            _ => String::new(),
        };
        let (rule_id, title, target) = (column("rule_id"), column("title"), column("target"));
        if !keep_document {
            document = Value::Null;
        }
        NewFinding {
            fingerprint_key: fingerprint_key(&fingerprint),
            fingerprint,
            severity,
            rule_id,
            title,
            target,
            document,
            document_json,
        }
    }
}

/// The key findings are looked up by: the first 64 bits of the SHA-256 of the
/// fingerprint (plugin fingerprints are any text; a hash spreads them evenly).
/// Two fingerprints may share a key; lookups compare the text too.
pub fn fingerprint_key(fingerprint: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(fingerprint.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Write operations, in the order the writer applies them.
#[derive(Debug)]
pub enum WriteOp {
    /// A run has started: insert its record with status `running`.
    RunStarted(RunRecord),
    /// Findings of a detector (or analytics) run: insert, or bump
    /// `occurrences`/`last_seen` of the finding with the same fingerprint.
    Findings {
        run_id: String,
        plugin: String,
        plugin_version: String,
        findings: Vec<NewFinding>,
    },
    /// Findings of an enricher run: merge into the stored finding with the same
    /// fingerprint (`vulnerabilities`, `enrichment.<plugin>`, raised severity).
    /// One whose fingerprint is unknown is counted as rejected.
    Enrichments {
        run_id: String,
        plugin: String,
        findings: Vec<NewFinding>,
    },
    /// A run has ended: update its record. The writer fills `findings` and
    /// `findings_rejected` from what it stored (adding to the counts the record
    /// already carries) and answers with the final record once committed — so
    /// everything queued before it is durable too.
    RunFinished {
        record: Box<RunRecord>,
        done: oneshot::Sender<Result<RunRecord, StorageError>>,
    },
    Telemetry(TelemetryEvent),
    Audit(AuditEvent),
    /// Persist a revocation (`revoked: true`) or its lifting.
    PluginState {
        state: PluginState,
        done: Option<oneshot::Sender<Result<(), StorageError>>>,
    },
    /// Answers once everything queued before it is committed.
    Flush(oneshot::Sender<Result<(), StorageError>>),
}

/// Findings queued for the writer and not yet applied, at most. The queue
/// bounds operations, but one operation carries a whole session batch of
/// findings: without this bound a plugin streaming faster than the disk takes
/// its findings would fill the daemon's memory with parsed documents.
pub const MAX_FINDINGS_IN_FLIGHT: usize = 16_384;

/// The budget of findings in flight between the sessions and the writer:
/// a sender takes a finding op's cost before queueing it, the writer gives it
/// back once the op's batch is applied (committed or rolled back).
#[derive(Debug, Clone)]
pub struct FindingsBudget {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl FindingsBudget {
    pub fn new(limit: usize) -> FindingsBudget {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        FindingsBudget {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// The findings the budget holds in all.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What `op` holds of the budget: its findings, capped at the whole
    /// budget so that one huge batch waits for an empty pipe instead of forever.
    pub fn cost(&self, op: &WriteOp) -> usize {
        match op {
            WriteOp::Findings { findings, .. } | WriteOp::Enrichments { findings, .. } => {
                findings.len().min(self.limit)
            }
            _ => 0,
        }
    }

    async fn take(&self, cost: usize) {
        if cost > 0 {
            // The semaphore is never closed, so acquiring only waits.
            if let Ok(permit) = self.permits.acquire_many(cost as u32).await {
                permit.forget();
            }
        }
    }

    fn blocking_take(&self, cost: usize) {
        if cost == 0 {
            return;
        }
        loop {
            if let Ok(permit) = self.permits.try_acquire_many(cost as u32) {
                permit.forget();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Returns what applied (or dropped) operations held.
    pub fn give_back(&self, cost: usize) {
        if cost > 0 {
            self.permits.add_permits(cost);
        }
    }
}

/// The sending side of the writer queue: cheap to clone, bounded in
/// operations and in findings.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<WriteOp>,
    budget: FindingsBudget,
}

impl StoreWriter {
    pub fn new(tx: mpsc::Sender<WriteOp>, budget: FindingsBudget) -> StoreWriter {
        StoreWriter { tx, budget }
    }

    /// Queues a write; waits while the queue or the findings budget is full
    /// (back-pressure on the plugin).
    pub async fn send(&self, op: WriteOp) -> Result<(), StorageError> {
        let cost = self.budget.cost(&op);
        self.budget.take(cost).await;
        self.tx.send(op).await.map_err(|_| {
            self.budget.give_back(cost);
            StorageError::WriterGone
        })
    }

    /// Queues from a thread that is not in the async runtime.
    pub fn blocking_send(&self, op: WriteOp) -> Result<(), StorageError> {
        let cost = self.budget.cost(&op);
        self.budget.blocking_take(cost);
        self.tx.blocking_send(op).map_err(|_| {
            self.budget.give_back(cost);
            StorageError::WriterGone
        })
    }

    /// Ends a run and waits until its record (and everything before it) is committed.
    pub async fn finish_run(&self, record: RunRecord) -> Result<RunRecord, StorageError> {
        let (done, rx) = oneshot::channel();
        self.send(WriteOp::RunFinished {
            record: Box::new(record),
            done,
        })
        .await?;
        rx.await.map_err(|_| StorageError::WriterGone)?
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (done, rx) = oneshot::channel();
        self.send(WriteOp::Flush(done)).await?;
        rx.await.map_err(|_| StorageError::WriterGone)?
    }

    pub async fn audit(&self, event: AuditEvent) -> Result<(), StorageError> {
        self.send(WriteOp::Audit(event)).await
    }

    /// Persists a plugin's revocation state and waits until it is committed.
    pub async fn set_plugin_state(&self, state: PluginState) -> Result<(), StorageError> {
        let (done, rx) = oneshot::channel();
        self.send(WriteOp::PluginState {
            state,
            done: Some(done),
        })
        .await?;
        rx.await.map_err(|_| StorageError::WriterGone)?
    }
}

/// A stored finding, as queries return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFinding {
    pub id: i64,
    /// The run that first reported it.
    pub run_id: String,
    pub plugin: PluginId,
    pub fingerprint: String,
    pub first_seen: String,
    pub last_seen: String,
    pub occurrences: u64,
    /// The finding document (with enrichments merged in), plus the stored fields.
    pub finding: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginId {
    pub name: String,
    pub version: String,
}

/// A telemetry event, one per run (contracts §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryEvent {
    pub event: String,
    pub plugin: String,
    pub version: String,
    pub run_id: String,
    pub duration_ms: u64,
    pub cpu_ms: u64,
    pub memory_mb: u64,
    pub findings_processed: u64,
    pub success: bool,
    pub timestamp: String,
}

/// An audit event: every invocation, rejection and security event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Assigned by storage; 0 before it is stored.
    #[serde(default)]
    pub id: i64,
    pub timestamp: String,
    /// e.g. `plugin_invoked`, `plugin_rejected`, `hash_mismatch`, `plugin_revoked`.
    pub event: String,
    /// Security events are the ones an operator must look at.
    pub security: bool,
    pub plugin: Option<String>,
    pub run_id: Option<String>,
    /// The uid that asked for it, when a caller is known.
    pub actor_uid: Option<u32>,
    pub message: String,
    #[serde(default)]
    pub details: Value,
}

/// A plugin's persisted revocation state, keyed by name + version + code hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginState {
    pub name: String,
    pub version: String,
    pub code_hash: String,
    pub revoked: bool,
    pub reason: Option<String>,
    pub changed_at: String,
    pub actor_uid: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub limit: Option<u32>,
    pub plugin: Option<String>,
    pub status: Option<secflow_core::record::RunStatus>,
}

#[derive(Debug, Clone, Default)]
pub struct FindingQuery {
    /// Findings observed in this run (first seen or seen again).
    pub run_id: Option<String>,
    pub plugin: Option<String>,
    pub min_severity: Option<Severity>,
    pub limit: Option<u32>,
    /// Keyset cursor: only findings with `id` greater than this.
    pub after: Option<i64>,
    /// Findings this host observed (first seen or seen again).
    pub host: Option<String>,
    /// Findings whose target contains this text, ignoring ASCII case.
    pub target: Option<String>,
    /// Findings whose title or rule id contains this text, ignoring ASCII
    /// case.
    pub text: Option<String>,
    /// Examine only findings with ids in `(after, after + window]`, so a
    /// filter no index serves (host, target, text) reads a bounded number of
    /// rows per page. A page the window cut short still has a `next` when
    /// findings lie beyond it: the search goes on from there.
    pub window: Option<u32>,
}

/// The longest `target` or `text` a findings query may search for: a
/// search text is matched against every row it passes, so it is bounded.
pub const MAX_SEARCH_TEXT: usize = 256;

impl FindingQuery {
    /// A search text as the backends match it: ASCII-lowercased, so both
    /// compare it with `lower()` of the column the same way.
    pub fn search_pattern(text: &str) -> String {
        text.to_ascii_lowercase()
    }

    /// The highest id a windowed query examines.
    pub fn window_end(&self) -> Option<i64> {
        self.window
            .map(|w| self.after.unwrap_or(0).saturating_add(i64::from(w)))
    }

    /// The cursor of the page after one that returned `returned` findings
    /// (the last with id `last`) of at most `limit`; `highest` is the
    /// store's highest finding id, asked only of a windowed query's short
    /// page (a full page continues after its last finding).
    pub fn next_cursor(
        &self,
        returned: usize,
        limit: u32,
        last: Option<i64>,
        highest: impl FnOnce() -> Result<Option<i64>, StorageError>,
    ) -> Result<Option<i64>, StorageError> {
        if returned == limit as usize {
            return Ok(last);
        }
        match self.window_end() {
            Some(end) if highest()?.is_some_and(|h| h > end) => Ok(Some(end)),
            _ => Ok(None),
        }
    }

    /// Why `text`, given for the filter `field`, cannot be searched for:
    /// too long, or holding a control character (no target or title has
    /// one, and PostgreSQL refuses NUL in text).
    pub fn check_search_text(field: &str, text: &str) -> Result<(), String> {
        let length = text.chars().count();
        if length > MAX_SEARCH_TEXT {
            return Err(format!(
                "{field} is {length} characters long: at most {MAX_SEARCH_TEXT} are searched for"
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(format!("{field} holds a control character"));
        }
        Ok(())
    }
}

/// One page of findings; `next` is the cursor for the following page.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FindingPage {
    pub findings: Vec<StoredFinding>,
    pub next: Option<i64>,
}

/// A page of findings as JSON text, for answers that only pass them on: one
/// array of the objects of [`StoredFinding::finding`], written into one
/// buffer as the rows are read (no text of its own per finding).
#[derive(Debug)]
pub struct FindingTextPage {
    pub findings: document::FindingsArray,
    pub next: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct TelemetryQuery {
    pub plugin: Option<String>,
    pub run_id: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub event: Option<String>,
    pub plugin: Option<String>,
    /// The events of one run (its audit trail).
    pub run_id: Option<String>,
    pub limit: Option<u32>,
}

/// What the supervisor needs from storage.
pub trait StoragePort: Send + Sync + std::fmt::Debug {
    /// The queue into the writer.
    fn writer(&self) -> StoreWriter;
    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StorageError>;
    /// Newest first.
    fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StorageError>;
    fn findings(&self, query: &FindingQuery) -> Result<FindingPage, StorageError>;
    /// The same page as [`StoragePort::findings`], as JSON text.
    fn findings_text(&self, query: &FindingQuery) -> Result<FindingTextPage, StorageError>;
    /// Newest first.
    fn telemetry(&self, query: &TelemetryQuery) -> Result<Vec<TelemetryEvent>, StorageError>;
    /// Newest first.
    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StorageError>;
    /// Every persisted plugin state (revocations and their lifting).
    fn plugin_states(&self) -> Result<Vec<PluginState>, StorageError>;
    /// Runs still marked `running` (left by a daemon that died) become `failed`
    /// with `kind: interrupted`; returns how many.
    fn mark_interrupted(&self) -> Result<u64, StorageError>;
}

/// Used by enrichers' merge: the plugin category decides whether findings are
/// stored or merged.
pub fn findings_op(
    category: Category,
    run_id: &str,
    plugin: &str,
    plugin_version: &str,
    findings: Vec<NewFinding>,
) -> WriteOp {
    match category {
        Category::Enricher => WriteOp::Enrichments {
            run_id: run_id.to_string(),
            plugin: plugin.to_string(),
            findings,
        },
        Category::Detector | Category::Analytics => WriteOp::Findings {
            run_id: run_id.to_string(),
            plugin: plugin.to_string(),
            plugin_version: plugin_version.to_string(),
            findings,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_text_is_bounded_and_free_of_control_characters() {
        assert_eq!(
            FindingQuery::check_search_text("text", "SQL injection"),
            Ok(())
        );
        let longest = "é".repeat(MAX_SEARCH_TEXT);
        assert_eq!(FindingQuery::check_search_text("text", &longest), Ok(()));
        assert_eq!(
            FindingQuery::check_search_text("--target", &format!("{longest}x")),
            Err("--target is 257 characters long: at most 256 are searched for".to_string())
        );
        assert_eq!(
            FindingQuery::check_search_text("target", "a\0b"),
            Err("target holds a control character".to_string())
        );
    }

    #[test]
    fn a_search_pattern_folds_ascii_only_as_both_backends_do() {
        assert_eq!(FindingQuery::search_pattern("Shop.ÉXAMPLE"), "shop.Éxample");
    }
}
