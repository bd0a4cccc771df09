//! SQLite implementation of the storage port: one database file in WAL mode, one
//! writer thread that owns the write connection, a few read connections beside
//! it (`read_pool`).
//!
//! Writes arrive as [`WriteOp`]s on a bounded queue. The writer thread
//! (`secflow-store-writer`) takes what is queued, up to `batch_size` operations
//! and half the findings budget, applies them in one transaction and only then answers the operations that
//! wait for an answer (`RunFinished`, `Flush`, `PluginState`). A plugin streaming
//! findings therefore pays for a commit per batch, never per finding, and an
//! answer always means "this and everything queued before it is durable".
//! Detector findings are looked up in fingerprint-key order within a
//! transaction (`findings::store_findings`), the keys of the newest ones held
//! in the writer's memory and merged into the key table in bulk
//! (`fingerprints`), and committed pages are copied back into the database
//! file by a thread of their own (`checkpoint`), not by the writer. Stored
//! findings are freed by another (`reclaim`), which then gives their share
//! of the findings budget back.
//!
//! The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] holds one
//! SQL step per version and `open` applies the missing ones. A database written by
//! a newer build is refused rather than guessed at.
//!
//! Shutdown: the writer thread ends when its queue is closed and drained. A
//! [`StoreWriter`] clone held elsewhere keeps the queue open, so
//! [`SqliteStore::shutdown`] (and `Drop`) does not wait for every clone to be
//! dropped: it marks the store as closing and wakes the writer with a `Flush`;
//! after that batch the writer closes the queue (later sends fail with
//! [`StorageError::WriterGone`]), applies everything still buffered, and exits;
//! `shutdown` joins it. Nothing queued before `shutdown` is lost.

mod audit;
mod checkpoint;
mod export;
mod findings;
mod fingerprints;
mod migrations;
mod read_pool;
mod reclaim;
mod runs;

use audit::*;
pub use export::export;
use findings::*;
use fingerprints::FingerprintIndex;
use migrations::*;
pub use migrations::{MIGRATIONS, SCHEMA_VERSION};
use runs::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{params, params_from_iter, Connection, Row, Transaction, TransactionBehavior};
use secflow_plugin_sdk::protocol::Category;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::read_pool::{ReadConnection, ReadPool};
use secflow_core::clock;
use secflow_core::config::StorageConfig;
use secflow_core::record::{ErrorKind, RunError, RunRecord, RunStatus};
use secflow_store::document::{
    merge_enrichment, page_limit, severity_rank, FindingRow, FindingsArray, DEFAULT_EVENTS_LIMIT,
    DEFAULT_FINDINGS_LIMIT, DEFAULT_RUNS_LIMIT, INTERRUPTED_MESSAGE,
};
use secflow_store::{
    AuditEvent, AuditQuery, FindingPage, FindingQuery, FindingTextPage, FindingsBudget, NewFinding,
    PluginState, RunQuery, StorageError, StoragePort, StoreWriter, StoredFinding, TelemetryEvent,
    TelemetryQuery, WriteOp, MAX_FINDINGS_IN_FLIGHT,
};

/// A SQLite failure as the port reports it (its kind says whether the disk is full).
pub(crate) fn db_error(e: rusqlite::Error) -> StorageError {
    StorageError::Backend {
        kind: sqlite_error_kind(&e),
        source: Box::new(e),
    }
}

/// `storage_full` for SQLITE_FULL (the file system ran out of space), else
/// `storage_error`.
pub(crate) fn sqlite_error_kind(e: &rusqlite::Error) -> ErrorKind {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => ErrorKind::StorageFull,
        _ => ErrorKind::StorageError,
    }
}

/// The name of the writer thread (visible in `ps -T`, `top -H`, panics).
pub const WRITER_THREAD_NAME: &str = "secflow-store-writer";

/// Page size of a new database file: fewer, larger WAL writes per commit.
/// (Measured against 4 KiB, issue 15: a million findings stream at about half
/// the rate with 4 KiB pages, which write more frames for the same rows.)
const PAGE_SIZE: i64 = 16_384;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store: the writer thread's queue plus the read connections.
pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::Sender<WriteOp>,
    budget: FindingsBudget,
    closing: Arc<AtomicBool>,
    writer: Option<JoinHandle<Result<(), StorageError>>>,
    readers: ReadPool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("writer_running", &self.writer.is_some())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database at
    /// `config.path`, brings its schema up to [`SCHEMA_VERSION`] and starts the
    /// writer thread.
    ///
    /// `queue_capacity` bounds the writer queue (senders wait when it is full);
    /// `batch_size` is the most operations committed in one transaction;
    /// `cache_mib` is the writer connection's page cache. Rows are written
    /// as this machine's hostname; [`SqliteStore::open_as`] names the host.
    pub fn open(config: &StorageConfig) -> Result<SqliteStore, StorageError> {
        SqliteStore::open_as(config, &secflow_core::config::machine_hostname())
    }

    /// [`SqliteStore::open`], writing every run, finding observation,
    /// telemetry and audit row as `host` (`[host] name`).
    pub fn open_as(config: &StorageConfig, host: &str) -> Result<SqliteStore, StorageError> {
        let StorageConfig {
            path,
            queue_capacity,
            batch_size,
            cache_mib,
            read_connections,
            ..
        } = config;
        let (path, queue_capacity, batch_size) = (path.as_path(), *queue_capacity, *batch_size);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_error = |source: rusqlite::Error| StorageError::Open {
            location: path.display().to_string(),
            kind: sqlite_error_kind(&source),
            source: Box::new(source),
        };

        let mut conn = Connection::open(path).map_err(open_error)?;
        // Refuse a newer schema before touching the file in any way.
        check_version(&conn, path)?;
        // Parse the schema now: a file whose schema pages are corrupt is
        // refused at start, naming the file, not at the first query.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
            row.get::<_, i64>(0)
        })
        .map_err(open_error)?;
        // Only takes effect on a new file (before WAL mode is first set).
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(open_error)?;
        configure(&conn).map_err(open_error)?;
        // Negative: a size in KiB rather than in pages.
        conn.pragma_update(None, "cache_size", -(i64::from(*cache_mib) * 1024))
            .map_err(open_error)?;
        migrate(&mut conn, path, host)?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            checkpoint::WRITER_FALLBACK_PAGES,
        )
        .map_err(open_error)?;
        let checkpointer = checkpoint::Checkpointer::start(path, configure).map_err(open_error)?;

        let readers = ReadPool::open(path, *read_connections, configure)?;

        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let closing = Arc::new(AtomicBool::new(false));
        let budget = FindingsBudget::new(MAX_FINDINGS_IN_FLIGHT);
        let writer = Writer {
            conn,
            host: host.to_string(),
            batch_size: batch_size.max(1),
            budget: budget.clone(),
            reclaimer: reclaim::Reclaimer::start(budget.clone()),
            counts: HashMap::new(),
            lost: HashMap::new(),
            unfinished: Vec::new(),
            keys: FingerprintIndex::default(),
            checkpointer,
        };
        let writer_closing = Arc::clone(&closing);
        let handle = std::thread::Builder::new()
            .name(WRITER_THREAD_NAME.to_string())
            .spawn(move || writer.run(rx, &writer_closing))
            .map_err(|e| {
                open_error(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot start the {WRITER_THREAD_NAME} thread: {e}")),
                ))
            })?;

        Ok(SqliteStore {
            path: path.to_path_buf(),
            tx,
            budget,
            closing,
            writer: Some(handle),
            readers,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits everything queued so far, closes the writer queue and joins the
    /// writer thread. Senders still held elsewhere get
    /// [`StorageError::WriterGone`] from then on. Blocks the calling thread until
    /// the last batch is committed (from async code, call it in `spawn_blocking`
    /// or accept a short block). Returns the first write failure the writer met
    /// during its life, if any (each was also logged and answered).
    pub fn shutdown(mut self) -> Result<(), StorageError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), StorageError> {
        let Some(handle) = self.writer.take() else {
            return Ok(());
        };
        self.closing.store(true, Ordering::Release);
        // Wake the writer. If the queue is full it is awake anyway and sees
        // `closing` after its current batch; if it is closed the writer is gone.
        let (done, _answer) = oneshot::channel();
        let _ = self.tx.try_send(WriteOp::Flush(done));
        handle.join().map_err(|_| StorageError::WriterGone)?
    }

    fn reader(&self) -> Result<ReadConnection<'_>, StorageError> {
        self.readers.get()
    }
}

/// The schema version of the database file at `path`, read without creating,
/// migrating or writing it (`secflow doctor`); `None` when there is no file
/// yet (the daemon creates it).
pub fn probe(path: &Path) -> Result<Option<i64>, StorageError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|source| StorageError::Open {
            location: path.display().to_string(),
            kind: sqlite_error_kind(&source),
            source: Box::new(source),
        })?;
    user_version(&conn, path).map(Some)
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(path = %self.path.display(), error = %e, "storage writer ended with an error");
        }
    }
}

/// Settings every connection to the file uses.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Statement journals and RETURNING's result tables stay in memory instead of
    // becoming a temporary file (and syscalls) per statement.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// What the writer counted for a run that has not finished yet.
#[derive(Debug, Default, Clone)]
struct RunCounts {
    accepted: u64,
    rejected: u64,
}

/// An answer owed once the batch commits (or fails).
enum Reply {
    Run(
        oneshot::Sender<Result<RunRecord, StorageError>>,
        Box<RunRecord>,
    ),
    Done(oneshot::Sender<Result<(), StorageError>>),
}

impl Reply {
    fn of(op: WriteOp) -> Option<Reply> {
        match op {
            WriteOp::RunFinished { record, done } => Some(Reply::Run(done, record)),
            WriteOp::PluginState {
                done: Some(done), ..
            } => Some(Reply::Done(done)),
            WriteOp::Flush(done) => Some(Reply::Done(done)),
            _ => None,
        }
    }

    fn answer(self, outcome: Result<(), &rusqlite::Error>) {
        // A receiver that stopped waiting is not an error of the writer.
        match (self, outcome) {
            (Reply::Run(done, record), Ok(())) => {
                let _ = done.send(Ok(*record));
            }
            (Reply::Done(done), Ok(())) => {
                let _ = done.send(Ok(()));
            }
            (Reply::Run(done, _), Err(e)) => {
                let _ = done.send(Err(db_error(copy_error(e))));
            }
            (Reply::Done(done), Err(e)) => {
                let _ = done.send(Err(db_error(copy_error(e))));
            }
        }
    }
}

/// `rusqlite::Error` is not `Clone`; every waiter of a failed batch gets an equal copy.
fn copy_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// The writer thread's state: the write connection and the per-run counters.
struct Writer {
    conn: Connection,
    batch_size: usize,
    /// Taken from by the senders; given back as each batch's findings are
    /// applied (by `reclaimer`, once it freed them).
    budget: FindingsBudget,
    reclaimer: reclaim::Reclaimer,
    counts: HashMap<String, RunCounts>,
    /// Runs some of whose findings were in a batch that failed to commit (the
    /// disk was full, say), with the kind their record will end with.
    lost: HashMap<String, ErrorKind>,
    /// Final records whose batch failed, already marked as failed by storage:
    /// retried first in every batch until one commits, so that once space
    /// returns no run stays `running` in the database.
    unfinished: Vec<RunRecord>,
    /// The host every row is written as.
    host: String,
    /// Where stored findings are found by fingerprint.
    keys: FingerprintIndex,
    /// Copies committed pages back into the database file beside the writer.
    checkpointer: checkpoint::Checkpointer,
}

impl Writer {
    fn run(
        mut self,
        mut rx: mpsc::Receiver<WriteOp>,
        closing: &AtomicBool,
    ) -> Result<(), StorageError> {
        let mut first_failure = None;
        let mut batch = Vec::with_capacity(self.batch_size);
        // A batch takes at most half the findings budget, so that the
        // sessions can queue the other half while it commits: the writer and
        // a streaming plugin's session overlap instead of taking turns.
        let batch_findings = (self.budget.limit() / 2).max(1);
        while let Some(op) = rx.blocking_recv() {
            let mut cost = self.budget.cost(&op);
            batch.push(op);
            while batch.len() < self.batch_size && cost < batch_findings {
                match rx.try_recv() {
                    Ok(op) => {
                        cost += self.budget.cost(&op);
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            let mut stored = Vec::new();
            let applied = self.apply_batch(&mut batch, &mut stored);
            if applied.is_ok() {
                self.checkpointer.committed();
            }
            // Applied or rolled back, these findings no longer wait.
            self.reclaimer.free(stored, cost);
            if let Err(e) = applied {
                first_failure.get_or_insert(db_error(e));
            }
            if closing.load(Ordering::Acquire) {
                // Buffered operations are still received (and applied); new sends fail.
                rx.close();
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Applies `batch` in one transaction, then answers its waiters.
    ///
    /// A failed batch leaves the writer serving: the runs it touched are
    /// remembered as having lost findings (their final record says so), their
    /// counters go back to what was committed, and their final records, if the
    /// batch held them, are retried with the next batch.
    /// The detector findings it stored are left in `stored`, to be freed.
    fn apply_batch(
        &mut self,
        batch: &mut Vec<WriteOp>,
        stored: &mut Vec<Detected>,
    ) -> Result<(), rusqlite::Error> {
        let now = clock::now_rfc3339();
        for record in std::mem::take(&mut self.unfinished) {
            // Nobody waits for a retried record any more: its run was answered.
            let (done, _unanswered) = oneshot::channel();
            batch.insert(
                0,
                WriteOp::RunFinished {
                    record: Box::new(record),
                    done,
                },
            );
        }
        let mut touched: Vec<(String, Option<RunCounts>)> = Vec::new();
        let mut finishing = Vec::new();
        for op in batch.iter_mut() {
            let run_id = match op {
                WriteOp::Findings { run_id, .. } | WriteOp::Enrichments { run_id, .. } => run_id,
                WriteOp::RunFinished { record, .. } => {
                    if let Some(kind) = self.lost.remove(&record.run_id) {
                        record.lost_to_storage(kind, "an earlier batch of its findings failed");
                    }
                    finishing.push((**record).clone());
                    &record.run_id
                }
                _ => continue,
            };
            if !touched.iter().any(|(id, _)| id == run_id) {
                touched.push((run_id.clone(), self.counts.get(run_id).cloned()));
            }
        }
        let mut replies = Vec::new();
        let outcome = apply_all(
            &mut self.conn,
            &mut self.keys,
            &mut self.counts,
            batch.drain(..),
            (&now, &self.host),
            (&mut replies, stored),
        );
        if let Err(e) = &outcome {
            tracing::error!(error = %e, operations = replies.len(), "storage batch failed and was rolled back");
            self.keys.forget();
            let kind = sqlite_error_kind(e);
            for (run_id, counts) in touched {
                match counts {
                    Some(counts) => self.counts.insert(run_id.clone(), counts),
                    None => self.counts.remove(&run_id),
                };
                self.lost.entry(run_id).or_insert(kind);
            }
            for mut record in finishing {
                self.lost.remove(&record.run_id);
                record.lost_to_storage(kind, &e.to_string());
                self.unfinished.push(record);
            }
        }
        for reply in replies {
            reply.answer(outcome.as_ref().map(|_| ()));
        }
        outcome
    }
}

/// Applies every operation in one transaction; on the first failure the rest
/// are only collected for their answers, and the transaction rolls back (the
/// caller then makes `keys` forget what it held). The answers owed go to
/// `replies`, the detector findings stored to `stored`.
fn apply_all(
    conn: &mut Connection,
    keys: &mut FingerprintIndex,
    counts: &mut HashMap<String, RunCounts>,
    ops: impl Iterator<Item = WriteOp>,
    (now, host): (&str, &str),
    (replies, stored): (&mut Vec<Reply>, &mut Vec<Detected>),
) -> Result<(), rusqlite::Error> {
    // Immediate: the write lock is taken before `keys` reads the snapshot
    // it syncs with, so no other connection's commit can slip in between.
    let tx = match conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .and_then(|tx| keys.sync(&tx).map(|()| tx))
    {
        Ok(tx) => tx,
        Err(e) => {
            replies.extend(ops.filter_map(Reply::of));
            return Err(e);
        }
    };
    let mut failure = None;
    let mut ops = ops.peekable();
    while let Some(op) = ops.next() {
        if failure.is_some() {
            replies.extend(Reply::of(op));
            continue;
        }
        let applied = if is_detected(&op) {
            // Consecutive detector findings are stored together, in one walk
            // of the fingerprint index (see `store_findings`).
            let detected = std::iter::once(op)
                .chain(std::iter::from_fn(|| ops.next_if(is_detected)))
                .filter_map(Detected::of)
                .collect();
            store_detected(&tx, keys, counts, detected, (now, host))
                .map(|detected| stored.extend(detected))
        } else {
            apply(&tx, keys, counts, op, (now, host), (replies, stored))
        };
        if let Err(e) = applied {
            failure = Some(e);
        }
    }
    match failure {
        Some(e) => Err(e),
        None => tx.commit(),
    }
}

fn is_detected(op: &WriteOp) -> bool {
    matches!(op, WriteOp::Findings { .. })
}

/// Stores detector findings and counts them for their runs; gives them back
/// to be freed.
fn store_detected(
    tx: &Transaction<'_>,
    keys: &mut FingerprintIndex,
    counts: &mut HashMap<String, RunCounts>,
    detected: Vec<Detected>,
    (now, host): (&str, &str),
) -> Result<Vec<Detected>, rusqlite::Error> {
    store_findings(tx, keys, &detected, host, now)?;
    for d in &detected {
        match counts.get_mut(&d.run_id) {
            Some(c) => c.accepted += d.findings.len() as u64,
            None => {
                counts.insert(
                    d.run_id.clone(),
                    RunCounts {
                        accepted: d.findings.len() as u64,
                        rejected: 0,
                    },
                );
            }
        }
    }
    Ok(detected)
}

/// Applies one operation (`apply_all` stores consecutive detector findings
/// together instead).
fn apply(
    tx: &Transaction<'_>,
    keys: &mut FingerprintIndex,
    counts: &mut HashMap<String, RunCounts>,
    op: WriteOp,
    (now, host): (&str, &str),
    (replies, stored): (&mut Vec<Reply>, &mut Vec<Detected>),
) -> Result<(), rusqlite::Error> {
    match op {
        WriteOp::RunStarted(mut record) => {
            record.status = RunStatus::Running;
            upsert_run(tx, &record, host)
        }
        op @ WriteOp::Findings { .. } => store_detected(
            tx,
            keys,
            counts,
            Detected::of(op).into_iter().collect(),
            (now, host),
        )
        .map(|detected| stored.extend(detected)),
        WriteOp::Enrichments {
            run_id,
            plugin,
            findings,
        } => {
            let (accepted, rejected) =
                merge_enrichments(tx, keys, &run_id, &plugin, host, &findings)?;
            let entry = counts.entry(run_id).or_default();
            entry.accepted += accepted;
            entry.rejected += rejected;
            Ok(())
        }
        WriteOp::RunFinished { record, done } => {
            let mut record = record;
            if let Some(c) = counts.remove(&record.run_id) {
                record.findings += c.accepted;
                record.findings_rejected += c.rejected;
            }
            upsert_run(tx, &record, host)?;
            replies.push(Reply::Run(done, record));
            Ok(())
        }
        WriteOp::Telemetry(event) => insert_telemetry(tx, &event, host),
        WriteOp::Audit(event) => insert_audit(tx, &event, now, host),
        WriteOp::PluginState { state, done } => {
            upsert_plugin_state(tx, &state)?;
            replies.extend(done.map(Reply::Done));
            Ok(())
        }
        WriteOp::Flush(done) => {
            replies.push(Reply::Done(done));
            Ok(())
        }
    }
}

/// `u64` counters as SQLite integers (saturating; no counter gets near it).
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Runs `sql` with `args` on `conn` and reads every row with `read`.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    args: Vec<SqlValue>,
    read: fn(&Row<'_>) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(db_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_error)? {
        out.push(read(row)?);
    }
    Ok(out)
}

/// Appends ` AND <column> = ?` for each present filter.
fn filter(sql: &mut String, args: &mut Vec<SqlValue>, column: &str, value: Option<&str>) {
    if let Some(value) = value {
        sql.push_str(" AND ");
        sql.push_str(column);
        sql.push_str(" = ?");
        args.push(SqlValue::Text(value.to_string()));
    }
}

impl StoragePort for SqliteStore {
    fn writer(&self) -> StoreWriter {
        StoreWriter::new(self.tx.clone(), self.budget.clone())
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StorageError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?");
        let runs = query_all(
            &*self.reader()?,
            &sql,
            vec![SqlValue::Text(run_id.to_string())],
            read_run,
        )?;
        Ok(runs.into_iter().next())
    }

    fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StorageError> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        let mut args = Vec::new();
        filter(&mut sql, &mut args, "plugin", query.plugin.as_deref());
        filter(
            &mut sql,
            &mut args,
            "status",
            query.status.map(RunStatus::as_str),
        );
        sql.push_str(" ORDER BY started_at DESC, rowid DESC LIMIT ?");
        args.push(SqlValue::Integer(
            page_limit(query.limit, DEFAULT_RUNS_LIMIT).into(),
        ));
        query_all(&*self.reader()?, &sql, args, read_run)
    }

    fn findings(&self, query: &FindingQuery) -> Result<FindingPage, StorageError> {
        let (sql, args, limit) = findings_sql(query);
        let reader = self.reader()?;
        let findings = query_all(&reader, &sql, args, read_finding)?;
        let next =
            query.next_cursor(findings.len(), limit, findings.last().map(|f| f.id), || {
                highest_finding_id(&reader)
            })?;
        Ok(FindingPage { findings, next })
    }

    fn findings_text(&self, query: &FindingQuery) -> Result<FindingTextPage, StorageError> {
        let (sql, args, limit) = findings_sql(query);
        let reader = self.reader()?;
        let mut findings = FindingsArray::default();
        {
            let mut stmt = reader.prepare_cached(&sql).map_err(db_error)?;
            let mut rows = stmt.query(params_from_iter(args)).map_err(db_error)?;
            while let Some(row) = rows.next().map_err(db_error)? {
                push_finding_text(&mut findings, row)?;
            }
        }
        let next = query.next_cursor(findings.len(), limit, findings.last_id(), || {
            highest_finding_id(&reader)
        })?;
        Ok(FindingTextPage { findings, next })
    }

    fn telemetry(&self, query: &TelemetryQuery) -> Result<Vec<TelemetryEvent>, StorageError> {
        let mut sql = String::from(
            "SELECT event, plugin, version, run_id, duration_ms, cpu_ms, memory_mb, \
             findings_processed, success, timestamp FROM telemetry WHERE 1 = 1",
        );
        let mut args = Vec::new();
        filter(&mut sql, &mut args, "plugin", query.plugin.as_deref());
        filter(&mut sql, &mut args, "run_id", query.run_id.as_deref());
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        args.push(SqlValue::Integer(
            page_limit(query.limit, DEFAULT_EVENTS_LIMIT).into(),
        ));
        query_all(&*self.reader()?, &sql, args, read_telemetry)
    }

    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StorageError> {
        let mut sql = String::from(
            "SELECT id, timestamp, event, security, plugin, run_id, actor_uid, message, details \
             FROM audit WHERE 1 = 1",
        );
        let mut args = Vec::new();
        filter(&mut sql, &mut args, "event", query.event.as_deref());
        filter(&mut sql, &mut args, "plugin", query.plugin.as_deref());
        filter(&mut sql, &mut args, "run_id", query.run_id.as_deref());
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        args.push(SqlValue::Integer(
            page_limit(query.limit, DEFAULT_EVENTS_LIMIT).into(),
        ));
        query_all(&*self.reader()?, &sql, args, read_audit)
    }

    fn plugin_states(&self) -> Result<Vec<PluginState>, StorageError> {
        query_all(
            &*self.reader()?,
            "SELECT name, version, code_hash, revoked, reason, changed_at, actor_uid \
             FROM plugins ORDER BY name, version, code_hash",
            Vec::new(),
            |row| {
                Ok(PluginState {
                    name: row.get(0).map_err(db_error)?,
                    version: row.get(1).map_err(db_error)?,
                    code_hash: row.get(2).map_err(db_error)?,
                    revoked: row.get(3).map_err(db_error)?,
                    reason: row.get(4).map_err(db_error)?,
                    changed_at: row.get(5).map_err(db_error)?,
                    actor_uid: row.get(6).map_err(db_error)?,
                })
            },
        )
    }

    /// The one write made on the read connection: it runs at daemon start,
    /// before any run, and is a single statement (WAL + busy timeout let it sit
    /// beside the writer). `findings` becomes at least the number of findings
    /// the run was seen to report, since the writer's in-memory counts died
    /// with the previous daemon.
    fn mark_interrupted(&self) -> Result<u64, StorageError> {
        let error = RunError::new(ErrorKind::Interrupted, INTERRUPTED_MESSAGE);
        let error = serde_json::to_string(&error)
            .map_err(|e| StorageError::Malformed(format!("interrupted run error: {e}")))?;
        let now = clock::now_rfc3339();
        let sql = format!(
            "UPDATE runs SET
                status = 'failed',
                findings = max(findings, {OBSERVED_BY_RUN}),
                partial = max(findings, {OBSERVED_BY_RUN}) > 0,
                error = ?1,
                finished_at = ?2,
                duration_ms = coalesce(
                    CAST(max(0, (julianday(?2) - julianday(started_at)) * 86400000) AS INTEGER),
                    duration_ms)
             WHERE status = 'running'"
        );
        let changed = self
            .reader()?
            .prepare(&sql)
            .map_err(db_error)?
            .execute(params![error, now])
            .map_err(db_error)?;
        Ok(changed as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_plugin_sdk::protocol::Severity;
    use secflow_store::conformance::*;

    fn test_config(path: &Path, queue_capacity: usize, batch_size: usize) -> StorageConfig {
        StorageConfig {
            path: path.to_path_buf(),
            queue_capacity,
            batch_size,
            ..StorageConfig::default()
        }
    }

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&test_config(
            &dir.path().join("db").join("secflow.db"),
            64,
            32,
        ))
        .unwrap()
    }

    #[test]
    fn a_database_with_a_newer_schema_version_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);

        let err = SqliteStore::open(&test_config(&path, 8, 8)).unwrap_err();
        match &err {
            StorageError::TooNew {
                location,
                found,
                known,
            } => {
                assert_eq!(location, &path.display().to_string());
                assert_eq!((*found, *known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    /// Every row `sql` selects, read with `read`.
    fn rows<T>(
        conn: &Connection,
        sql: &str,
        read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], read)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Every row of `table` (its version 1 columns), each value rendered as
    /// text, in a stable order.
    fn dump(conn: &Connection, table: &str) -> Vec<Vec<String>> {
        // Version 2 added `fingerprint_key` to findings, version 3 `host` to
        // most tables; the rest is as it was.
        let columns = match table {
            "findings" => "id, fingerprint, run_id, plugin_name, plugin_version, rule_id, title, \
                 severity, severity_rank, target, first_seen, last_seen, occurrences, document, \
                 enrichment, enrichment_vulnerabilities, enriched_severity, enriched_severity_rank"
                .to_string(),
            _ => conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .unwrap()
                .query_map([], |row| row.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap)
                .filter(|name| name != "host")
                .collect::<Vec<_>>()
                .join(", "),
        };
        let mut stmt = conn
            .prepare(&format!("SELECT {columns} FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let columns = stmt.column_count();
        stmt.query_map([], |row| {
            (0..columns)
                .map(|i| row.get_ref(i).map(|v| format!("{v:?}")))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// The tables of schema version 1, but `finding_observations` (a view now).
    const VERSION_1_TABLES: [&str; 5] = ["plugins", "runs", "findings", "telemetry", "audit"];

    #[tokio::test(flavor = "multi_thread")]
    async fn a_version_1_database_keeps_every_run_s_findings_after_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secflow.db");
        let observed = [
            ("run-1", 1),
            ("run-1", 2),
            ("run-2", 3),
            ("run-2", 1),
            ("run-3", 2),
        ];
        let before = {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(MIGRATIONS[0]).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            // run-1 and run-2 are detector runs (run-2 died while running: the
            // next daemon marks it interrupted), run-3 an enricher.
            for (run, plugin, category, status, findings) in [
                ("run-1", "detector", "detector", "succeeded", 2),
                ("run-2", "detector", "detector", "running", 0),
                ("run-3", "enricher", "enricher", "succeeded", 1),
            ] {
                tx.execute(
                    "INSERT INTO runs (run_id, plugin, plugin_version, category, status, partial, \
                     started_at, duration_ms, cpu_ms, memory_mb, findings, findings_rejected, \
                     outputs, stderr_tail) VALUES (?1, ?2, '1.0.0', ?3, ?4, 0, \
                     '2026-01-01T00:00:00Z', 5, 1, 2, ?5, 0, '{}', '')",
                    params![run, plugin, category, status, findings],
                )
                .unwrap();
            }
            let doc = |fp: &str| {
                format!(
                    r#"{{"finding_schema_version":"1.0.0","rule_id":"r","title":"{fp}","severity":"high","target":"x"}}"#
                )
            };
            for (id, fp, run, occurrences, enrichment) in [
                (1, "fp-1", "run-1", 2, "{}"),
                (2, "fp-2", "run-1", 1, r#"{"enricher":{"note":"n"}}"#),
                (3, "fp-3", "run-2", 1, "{}"),
            ] {
                tx.execute(
                    "INSERT INTO findings (id, fingerprint, run_id, plugin_name, plugin_version, \
                     rule_id, title, severity, severity_rank, target, first_seen, last_seen, \
                     occurrences, document, enrichment) VALUES (?1, ?2, ?3, 'detector', '1.0.0', \
                     'r', ?2, 'high', 4, 'x', '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', ?4, \
                     ?5, ?6)",
                    params![id, fp, run, occurrences, doc(fp), enrichment],
                )
                .unwrap();
            }
            for (run, id) in observed {
                tx.execute(
                    "INSERT INTO finding_observations (run_id, finding_id) VALUES (?1, ?2)",
                    params![run, id],
                )
                .unwrap();
            }
            tx.execute(
                "INSERT INTO telemetry (event, plugin, version, run_id, duration_ms, cpu_ms, \
                 memory_mb, findings_processed, success, timestamp) VALUES \
                 ('run', 'detector', '1.0.0', 'run-1', 5, 1, 2, 2, 1, '2026-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO audit (timestamp, event, security, plugin, run_id, message, details) \
                 VALUES ('2026-01-01T00:00:00Z', 'run_started', 0, 'detector', 'run-1', 'm', '{}')",
                [],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO plugins (name, version, code_hash, revoked, changed_at) \
                 VALUES ('old', '0.1.0', 'h', 1, '2026-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
            VERSION_1_TABLES.map(|table| dump(&conn, table))
        };

        let store = SqliteStore::open(&test_config(&path, 8, 8)).unwrap();
        {
            let reader = store.reader().unwrap();
            let version: i64 = reader
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .unwrap();
            assert_eq!(version, SCHEMA_VERSION);
            // Every row of every table is as it was.
            assert_eq!(VERSION_1_TABLES.map(|table| dump(&reader, table)), before);
            let mut view: Vec<(String, i64)> = rows(
                &reader,
                "SELECT run_id, finding_id FROM finding_observations",
                |row| Ok((row.get(0)?, row.get(1)?)),
            );
            view.sort();
            let mut table: Vec<(String, i64)> =
                observed.iter().map(|(r, i)| (r.to_string(), *i)).collect();
            table.sort();
            assert_eq!(view, table, "the view lists what the table held");
            // The rows from before hosts were named are this host's.
            for table in [
                "runs",
                "findings",
                "finding_sightings",
                "telemetry",
                "audit",
            ] {
                let hosts: Vec<String> = reader
                    .prepare(&format!("SELECT DISTINCT host FROM {table}"))
                    .unwrap()
                    .query_map([], |row| row.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(hosts, [secflow_core::config::machine_hostname()], "{table}");
            }
            let keys: Vec<(String, i64)> = reader
                .prepare("SELECT fingerprint, fingerprint_key FROM findings")
                .unwrap()
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(keys.len(), 3);
            for (fingerprint, key) in keys {
                assert_eq!(key, secflow_store::fingerprint_key(&fingerprint));
            }
        }
        let ids = |run: &str| {
            all_findings(
                &store,
                FindingQuery {
                    run_id: Some(run.to_string()),
                    ..FindingQuery::default()
                },
            )
            .iter()
            .map(|f| f.id)
            .collect::<Vec<_>>()
        };
        assert_eq!(ids("run-1"), vec![1, 2]);
        assert_eq!(ids("run-2"), vec![1, 3]);
        assert_eq!(ids("run-3"), vec![2], "what the enricher named");
        let two = &all_findings(&store, FindingQuery::default())[1];
        assert_eq!(two.finding["enrichment"]["enricher"]["note"], "n");

        // The interrupted run is counted from what it was seen to report.
        assert_eq!(store.mark_interrupted().unwrap(), 1);
        let run_2 = store.run("run-2").unwrap().unwrap();
        assert_eq!((run_2.status, run_2.findings), (RunStatus::Failed, 2));

        // New runs go on from the migrated rows: one sees fp-2 again.
        detector_run(
            &store,
            "run-4",
            vec![
                finding("fp-2", Severity::High),
                finding("fp-4", Severity::Low),
            ],
        )
        .await;
        assert_eq!(ids("run-4"), vec![2, 4]);
        assert_eq!(ids("run-1"), vec![1, 2]);
        let all = all_findings(&store, FindingQuery::default());
        assert_eq!(
            all.iter().map(|f| f.occurrences).collect::<Vec<_>>(),
            [2, 2, 1, 1]
        );
        store.shutdown().unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_detected_finding_is_stored_from_its_text_and_columns_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let text = r#"{"finding_schema_version":"1.0.0", "rule_id":"r-1","title":"T\u00e9","severity":"low","target":"http://t/","raw":{"n":[1,2]}}"#;
        let document: Value = serde_json::from_str(text).unwrap();
        let new = NewFinding::detected(
            "fp".to_string(),
            Severity::Low,
            document.clone(),
            Some(text.to_string()),
        );
        assert_eq!(new.document, Value::Null, "the tree stays with the session");
        assert_eq!((new.rule_id.as_str(), new.title.as_str()), ("r-1", "Té"));
        detector_run(&store, "run-1", vec![new]).await;
        let stored = &all_findings(&store, FindingQuery::default())[0];
        assert_eq!(stored.finding["raw"], document["raw"]);
        assert_eq!(stored.finding["title"], "Té");
        let columns: (String, String, String) = store
            .reader()
            .unwrap()
            .query_row("SELECT rule_id, title, target FROM findings", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .unwrap();
        assert_eq!(
            columns,
            ("r-1".to_string(), "Té".to_string(), "http://t/".to_string())
        );
        store.shutdown().unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn run_finished_is_answered_only_after_the_findings_before_it_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        // A batch of one operation per transaction: every op is its own commit,
        // so the answer must still wait for the findings' batches before it.
        let store =
            SqliteStore::open(&test_config(&dir.path().join("secflow.db"), 1024, 1)).unwrap();
        let writer = store.writer();
        let record = started("run-1", "detector", Category::Detector);
        writer
            .send(WriteOp::RunStarted(record.clone()))
            .await
            .unwrap();
        for chunk in 0..20 {
            let findings = (0..50)
                .map(|i| finding(&format!("fp-{chunk}-{i}"), Severity::Info))
                .collect();
            writer.send(findings_op("run-1", findings)).await.unwrap();
        }
        let done = writer.finish_run(succeeded(record)).await.unwrap();
        assert_eq!(done.findings, 1000);

        let other = Connection::open(store.path()).unwrap();
        let rows: i64 = other
            .query_row("SELECT count(*) FROM findings", [], |row| row.get(0))
            .unwrap();
        let status: String = other
            .query_row(
                "SELECT status FROM runs WHERE run_id = 'run-1'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!((rows, status.as_str()), (1000, "succeeded"));
        drop(writer);
        store.shutdown().unwrap();
    }

    /// A new database at the current schema, written as `host-a`: its
    /// directory (removed when dropped), its path and a connection to it.
    fn migrated_database() -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secflow.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path, "host-a").unwrap();
        (dir, path, conn)
    }

    /// (id, fingerprint, first run, occurrences) of a stored finding.
    type StoredRow = (i64, String, String, i64);

    /// The operations of one transaction, applied by `apply_all` as the
    /// writer does; (id, fingerprint, run, occurrences) of every finding,
    /// and the sightings.
    fn stored_after(ops: Vec<WriteOp>) -> (Vec<StoredRow>, Vec<(String, i64)>) {
        let (_dir, _, mut conn) = migrated_database();
        let mut replies = Vec::new();
        apply_all(
            &mut conn,
            &mut FingerprintIndex::default(),
            &mut HashMap::new(),
            ops.into_iter(),
            ("2026-01-01T00:00:00Z", "host-a"),
            (&mut replies, &mut Vec::new()),
        )
        .unwrap();
        let findings = rows(
            &conn,
            "SELECT id, fingerprint, run_id, occurrences FROM findings ORDER BY id",
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        );
        let sightings = rows(
            &conn,
            "SELECT run_id, finding_id FROM finding_sightings ORDER BY 1, 2",
            |row| Ok((row.get(0)?, row.get(1)?)),
        );
        (findings, sightings)
    }

    /// Applies `ops` in one transaction through `keys`, as the writer does.
    fn apply_with(conn: &mut Connection, keys: &mut FingerprintIndex, ops: Vec<WriteOp>) {
        let mut replies = Vec::new();
        apply_all(
            conn,
            keys,
            &mut HashMap::new(),
            ops.into_iter(),
            ("2026-01-01T00:00:00Z", "host-a"),
            (&mut replies, &mut Vec::new()),
        )
        .unwrap();
    }

    /// (fingerprint, occurrences) of every finding in id order, after
    /// checking the index's invariant: the findings up to the merge mark are
    /// in `finding_keys` under their key, and only they are.
    fn indexed_findings(conn: &Connection) -> Vec<(String, i64)> {
        let mark: i64 = conn
            .query_row("SELECT upto FROM finding_keys_merged", [], |row| row.get(0))
            .unwrap();
        let merged = rows(
            conn,
            "SELECT key, finding_id FROM finding_keys ORDER BY finding_id",
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
        );
        let expected = rows(
            conn,
            &format!("SELECT fingerprint_key, id FROM findings WHERE id <= {mark} ORDER BY id"),
            |row| Ok((row.get(0)?, row.get(1)?)),
        );
        assert_eq!(
            merged, expected,
            "finding_keys holds exactly the findings up to {mark}"
        );
        rows(
            conn,
            "SELECT fingerprint, occurrences FROM findings ORDER BY id",
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
    }

    #[test]
    fn findings_are_deduplicated_across_merges_reopens_and_a_second_writer() {
        let (_dir, path, mut conn) = migrated_database();
        let low = Severity::Low;
        let batch = |run: &str, fps: &[&str]| {
            vec![findings_op(
                run,
                fps.iter().map(|fp| finding(fp, low)).collect(),
            )]
        };
        let seen = |pairs: &[(&str, i64)]| -> Vec<(String, i64)> {
            pairs.iter().map(|(fp, n)| (fp.to_string(), *n)).collect()
        };

        // Five new findings pass the limit of three: all five are merged.
        let mut keys = FingerprintIndex::with_limit(3);
        apply_with(
            &mut conn,
            &mut keys,
            batch("run-a", &["fp-1", "fp-2", "fp-3", "fp-4", "fp-5"]),
        );
        assert_eq!(keys.held(), 0);
        // One merged finding again, two new ones held in memory only.
        apply_with(
            &mut conn,
            &mut keys,
            batch("run-b", &["fp-2", "fp-6", "fp-7"]),
        );
        assert_eq!(keys.held(), 2);
        assert_eq!(
            indexed_findings(&conn),
            seen(&[
                ("fp-1", 1),
                ("fp-2", 2),
                ("fp-3", 1),
                ("fp-4", 1),
                ("fp-5", 1),
                ("fp-6", 1),
                ("fp-7", 1)
            ])
        );

        // A writer opened afresh finds the held ones from their rows.
        let mut reopened = FingerprintIndex::with_limit(3);
        apply_with(&mut conn, &mut reopened, batch("run-c", &["fp-6", "fp-3"]));
        assert_eq!(reopened.held(), 2, "fp-6 and fp-7 rebuilt from their rows");

        // A second connection (another process on the file) adds fp-8 and
        // merges; the first writer sees both on its next transaction.
        let mut other = Connection::open(&path).unwrap();
        let mut other_keys = FingerprintIndex::with_limit(3);
        apply_with(&mut other, &mut other_keys, batch("run-d", &["fp-8"]));
        assert_eq!(
            other_keys.held(),
            0,
            "fp-6, fp-7 and fp-8 merged by the other writer"
        );
        apply_with(
            &mut conn,
            &mut reopened,
            batch("run-e", &["fp-8", "fp-7", "fp-9"]),
        );
        assert_eq!(
            indexed_findings(&conn),
            seen(&[
                ("fp-1", 1),
                ("fp-2", 2),
                ("fp-3", 2),
                ("fp-4", 1),
                ("fp-5", 1),
                ("fp-6", 2),
                ("fp-7", 2),
                ("fp-8", 2),
                ("fp-9", 1),
            ])
        );

        // What a rolled-back transaction inserted is not found afterwards.
        {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            reopened.sync(&tx).unwrap();
            let detected: Vec<Detected> = batch("run-f", &["fp-10"])
                .into_iter()
                .filter_map(Detected::of)
                .collect();
            store_findings(
                &tx,
                &mut reopened,
                &detected,
                "host-a",
                "2026-01-01T00:00:00Z",
            )
            .unwrap();
            // Dropped: rolled back.
        }
        reopened.forget();
        apply_with(
            &mut conn,
            &mut reopened,
            batch("run-g", &["fp-10", "fp-10"]),
        );
        let tail = indexed_findings(&conn).split_off(9);
        assert_eq!(tail, seen(&[("fp-10", 2)]));
    }

    #[test]
    fn colliding_keys_stay_distinct_findings_before_and_after_their_merge() {
        let (_dir, _, mut conn) = migrated_database();
        let colliding = |fp: &str| NewFinding {
            fingerprint_key: 7,
            ..finding(fp, Severity::Low)
        };
        let mut keys = FingerprintIndex::with_limit(4);
        let op = |run: &str, fps: &[&str]| {
            vec![findings_op(
                run,
                fps.iter().map(|fp| colliding(fp)).collect(),
            )]
        };
        // Held: three findings under one key.
        apply_with(&mut conn, &mut keys, op("run-a", &["fp-a", "fp-b", "fp-c"]));
        apply_with(&mut conn, &mut keys, op("run-b", &["fp-c", "fp-a"]));
        // Merged: a fourth passes the limit; then each is found in the table.
        apply_with(&mut conn, &mut keys, op("run-c", &["fp-d"]));
        assert_eq!(keys.held(), 0);
        apply_with(&mut conn, &mut keys, op("run-d", &["fp-b", "fp-d", "fp-e"]));
        let seen: Vec<(String, i64)> = [
            ("fp-a", 2),
            ("fp-b", 2),
            ("fp-c", 2),
            ("fp-d", 2),
            ("fp-e", 1),
        ]
        .iter()
        .map(|(fp, n)| (fp.to_string(), *n))
        .collect();
        assert_eq!(indexed_findings(&conn), seen);
    }

    #[test]
    fn findings_of_one_transaction_get_their_ids_in_arrival_order_whatever_their_keys() {
        let high = Severity::High;
        let ops = vec![
            WriteOp::RunStarted(started("run-a", "detector", Category::Detector)),
            WriteOp::RunStarted(started("run-b", "detector", Category::Detector)),
            findings_op(
                "run-a",
                vec![
                    finding("fp-z", high),
                    finding("fp-a", high),
                    finding("fp-m", high),
                ],
            ),
            findings_op(
                "run-b",
                vec![
                    finding("fp-a", high),
                    finding("fp-q", high),
                    finding("fp-z", high),
                ],
            ),
            findings_op("run-b", vec![finding("fp-a", high)]),
        ];
        let row = |id, fp: &str, run: &str, seen| (id, fp.to_string(), run.to_string(), seen);
        let expected = (
            vec![
                row(1, "fp-z", "run-a", 2),
                row(2, "fp-a", "run-a", 3),
                row(3, "fp-m", "run-a", 1),
                row(4, "fp-q", "run-b", 1),
            ],
            vec![("run-b".to_string(), 1), ("run-b".to_string(), 2)],
        );
        assert_eq!(stored_after(ops), expected);
    }
}
