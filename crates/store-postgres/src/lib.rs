//! PostgreSQL implementation of the storage port: the fleet store, one
//! database that many scan hosts write to and read from, each row naming the
//! host that wrote it.
//!
//! The port is synchronous (reads are called from blocking threads, the
//! writer queue is drained by one owner), and the client is `tokio-postgres`:
//! the store owns a small private runtime that drives its connections. A read
//! is spawned on that runtime and waited for on a channel, which works from
//! any thread, inside another runtime or not (a runtime's `block_on` would
//! refuse to run inside the daemon's). Writes arrive as [`WriteOp`]s on the
//! bounded queue; one writer task with its own connection takes up to
//! `batch_size` of them, applies them in one transaction and then answers the
//! ones that wait, exactly as the SQLite writer does, so an answer means "this
//! and everything before it is committed".
//!
//! Findings are stored a batch per statement: one multi-row
//! `INSERT … SELECT FROM unnest(…) ON CONFLICT (fingerprint) DO UPDATE`
//! deduplicates them against every host's findings, and one more inserts
//! their observations. Two hosts inserting the same fingerprint at once is
//! what `ON CONFLICT` settles; rows are taken in fingerprint order so that two
//! batches never wait on each other in a cycle.
//!
//! Losing the server: a batch that fails (the connection broke, the server is
//! gone) is rolled back, the runs it touched end `failed` with
//! `storage_error` and their records are retried with every later batch; the
//! writer reconnects before each batch and the read pool replaces closed
//! connections, so the store serves again as soon as the server is back.
//! Nothing committed is lost: a commit is PostgreSQL's.

mod connect;
mod findings;
mod import;
mod migrations;
mod runs;
mod tables;
#[cfg(feature = "testkit")]
pub mod testkit;
mod writer;

pub use connect::ConnectError;
pub use import::import;
pub use migrations::{MIGRATIONS, SCHEMA_VERSION};

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use secflow_core::config::StorageConfig;
use secflow_core::record::{ErrorKind, RunRecord, RunStatus};
use secflow_store::document::{
    page_limit, DEFAULT_EVENTS_LIMIT, DEFAULT_RUNS_LIMIT, INTERRUPTED_MESSAGE,
};
use secflow_store::{
    AuditEvent, AuditQuery, FindingPage, FindingQuery, FindingTextPage, FindingsBudget,
    PluginState, RunQuery, StorageError, StoragePort, StoreWriter, TelemetryEvent, TelemetryQuery,
    WriteOp, MAX_FINDINGS_IN_FLIGHT,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use crate::connect::{Connector, Pool};

/// The name of the store's runtime threads (visible in `ps -T`, panics).
pub const RUNTIME_THREAD_NAME: &str = "secflow-store-pg";

/// A PostgreSQL failure as the port reports it.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StorageError {
    StorageError::Backend {
        kind: pg_error_kind(&e),
        source: Box::new(e),
    }
}

/// `storage_full` when the server ran out of disk, else `storage_error`.
pub(crate) fn pg_error_kind(e: &tokio_postgres::Error) -> ErrorKind {
    match e.code() {
        Some(code) if *code == tokio_postgres::error::SqlState::DISK_FULL => ErrorKind::StorageFull,
        _ => ErrorKind::StorageError,
    }
}

/// Parameters of a statement, in order.
pub(crate) type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// The fleet store: the writer task's queue plus the read pool, on a runtime
/// of their own.
pub struct PostgresStore {
    location: String,
    host: String,
    tx: mpsc::Sender<WriteOp>,
    budget: FindingsBudget,
    closing: Arc<AtomicBool>,
    /// The writer's outcome when it ends (a `Mutex` only to make the store `Sync`).
    writer_done: Option<std::sync::Mutex<std::sync::mpsc::Receiver<Result<(), StorageError>>>>,
    pool: Arc<Pool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .field("host", &self.host)
            .field("writer_running", &self.writer_done.is_some())
            .finish_non_exhaustive()
    }
}

/// What `secflow doctor` says about the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// The server, without credentials.
    pub location: String,
    /// The schema version the database has, and the one this build writes.
    pub schema_version: i64,
    pub known_version: i64,
}

impl PostgresStore {
    /// Connects to the server at `config`'s URL, brings the schema up to
    /// [`SCHEMA_VERSION`] and starts the writer. `host` is the name written
    /// with every run, observation, telemetry and audit row.
    pub fn open(config: &StorageConfig, host: &str) -> Result<PostgresStore, StorageError> {
        let connector = Connector::from_config(config)?;
        let location = connector.location().to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(RUNTIME_THREAD_NAME)
            .enable_all()
            .build()
            .map_err(|e| StorageError::Open {
                location: location.clone(),
                kind: ErrorKind::StorageError,
                source: Box::new(e),
            })?;
        let open_error = {
            let location = location.clone();
            move |source: tokio_postgres::Error| StorageError::Open {
                location: location.clone(),
                kind: pg_error_kind(&source),
                source: Box::new(source),
            }
        };
        let writer_client = {
            let connector = connector.clone();
            let location = location.clone();
            let open_error = open_error.clone();
            wait_on(&runtime, async move {
                let mut client = connector.connect().await.map_err(open_error)?;
                migrations::migrate(&mut client, &location).await?;
                Ok(client)
            })?
        };
        let pool = Arc::new(Pool::new(connector.clone(), config.pool_size));
        // One read connection now: a server that takes the writer but not a
        // reader fails at start, not at the first query.
        wait_on(&runtime, {
            let pool = Arc::clone(&pool);
            async move { pool.warm().await.map_err(open_error) }
        })?;

        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let closing = Arc::new(AtomicBool::new(false));
        let budget = FindingsBudget::new(MAX_FINDINGS_IN_FLIGHT);
        let writer = writer::Writer::new(
            connector,
            writer_client,
            host.to_string(),
            config.batch_size.max(1),
            budget.clone(),
        );
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let writer_closing = Arc::clone(&closing);
        runtime.spawn(async move {
            let _ = done_tx.send(writer.run(rx, &writer_closing).await);
        });
        Ok(PostgresStore {
            location,
            host: host.to_string(),
            tx,
            budget,
            closing,
            writer_done: Some(std::sync::Mutex::new(done_rx)),
            pool,
            runtime: Some(runtime),
        })
    }

    /// The server, as messages name it (no credentials).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The host name this store writes as.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the server answers, and the schema version it holds.
    pub fn status(&self) -> Result<StoreStatus, StorageError> {
        let location = self.location.clone();
        let version = self
            .read(|client| async move { migrations::current_version(&client, &location).await })?;
        Ok(StoreStatus {
            location: self.location.clone(),
            schema_version: version,
            known_version: SCHEMA_VERSION,
        })
    }

    /// Commits everything queued so far, closes the writer queue and waits
    /// for the writer. Senders still held elsewhere get
    /// [`StorageError::WriterGone`] from then on. Returns the first write
    /// failure the writer met during its life, if any.
    pub fn shutdown(mut self) -> Result<(), StorageError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), StorageError> {
        let Some(done) = self.writer_done.take() else {
            return Ok(());
        };
        self.closing.store(true, Ordering::Release);
        let (flush, _answer) = oneshot::channel();
        let _ = self.tx.try_send(WriteOp::Flush(flush));
        let outcome = done
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .recv()
            .unwrap_or(Err(StorageError::WriterGone));
        if let Some(runtime) = self.runtime.take() {
            // Not `drop`: dropping a runtime inside another one panics, and
            // the store may be dropped from the daemon's async code.
            runtime.shutdown_background();
        }
        outcome
    }

    /// Runs `query` on a pooled read connection, on the store's runtime.
    fn read<T, F, Fut>(&self, query: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(connect::Pooled) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StorageError>> + Send,
    {
        let runtime = self.runtime.as_ref().ok_or(StorageError::WriterGone)?;
        let pool = Arc::clone(&self.pool);
        wait_on(runtime, async move {
            let client = pool.get().await.map_err(db_error)?;
            query(client).await
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(location = %self.location, error = %e, "storage writer ended with an error");
        }
    }
}

/// The server's schema version, read without migrating or writing anything
/// (`secflow doctor`): an error when it cannot be reached.
pub fn probe(config: &StorageConfig) -> Result<StoreStatus, StorageError> {
    let connector = Connector::from_config(config)?;
    let location = connector.location().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(RUNTIME_THREAD_NAME)
        .enable_all()
        .build()
        .map_err(|e| StorageError::Open {
            location: location.clone(),
            kind: ErrorKind::StorageError,
            source: Box::new(e),
        })?;
    let status = wait_on(&runtime, {
        let location = location.clone();
        async move {
            let client = connector
                .connect()
                .await
                .map_err(|source| StorageError::Open {
                    location: location.clone(),
                    kind: pg_error_kind(&source),
                    source: Box::new(source),
                })?;
            migrations::current_version(&client, &location).await
        }
    });
    runtime.shutdown_background();
    Ok(StoreStatus {
        location,
        schema_version: status?,
        known_version: SCHEMA_VERSION,
    })
}

/// Runs `future` on `runtime` and blocks the calling thread until it is done.
fn wait_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = Result<T, StorageError>> + Send + 'static,
) -> Result<T, StorageError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().unwrap_or(Err(StorageError::WriterGone))
}

/// A page size as a bound parameter.
fn limit_param(limit: Option<u32>, default: u32) -> i64 {
    i64::from(page_limit(limit, default))
}

/// Appends ` AND <column> = $n` for each present filter.
fn filter(
    sql: &mut String,
    params: &mut Vec<Box<dyn ToSql + Sync + Send>>,
    column: &str,
    value: Option<String>,
) {
    if let Some(value) = value {
        params.push(Box::new(value));
        sql.push_str(&format!(" AND {column} = ${}", params.len()));
    }
}

/// Boxed parameters as the slice the client takes.
fn param_refs<'a>(params: &'a [Box<dyn ToSql + Sync + Send + 'static>]) -> Params<'a> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

impl StoragePort for PostgresStore {
    fn writer(&self) -> StoreWriter {
        StoreWriter::new(self.tx.clone(), self.budget.clone())
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StorageError> {
        let run_id = run_id.to_string();
        self.read(move |client| async move {
            let sql = format!("SELECT {} FROM runs WHERE run_id = $1", runs::RUN_COLUMNS);
            let rows = client.query(&sql, &[&run_id]).await.map_err(db_error)?;
            rows.first().map(runs::read_run).transpose()
        })
    }

    fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StorageError> {
        let query = query.clone();
        self.read(move |client| async move {
            let mut sql = format!("SELECT {} FROM runs WHERE true", runs::RUN_COLUMNS);
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            filter(&mut sql, &mut params, "plugin", query.plugin);
            filter(
                &mut sql,
                &mut params,
                "status",
                query.status.map(|s| RunStatus::as_str(s).to_string()),
            );
            params.push(Box::new(limit_param(query.limit, DEFAULT_RUNS_LIMIT)));
            sql.push_str(&format!(
                " ORDER BY started_at DESC, seq DESC LIMIT ${}",
                params.len()
            ));
            let rows = client
                .query(&sql, &param_refs(&params))
                .await
                .map_err(db_error)?;
            rows.iter().map(runs::read_run).collect()
        })
    }

    fn findings(&self, query: &FindingQuery) -> Result<FindingPage, StorageError> {
        let query = query.clone();
        self.read(move |client| async move {
            let (rows, limit) = findings::page(&*client, &query).await?;
            let highest =
                findings::highest_if_windowed(&*client, &query, rows.len(), limit).await?;
            let findings = rows
                .into_iter()
                .map(|row| row.into_stored())
                .collect::<Result<Vec<_>, _>>()?;
            let next =
                query.next_cursor(findings.len(), limit, findings.last().map(|f| f.id), || {
                    Ok(highest)
                })?;
            Ok(FindingPage { findings, next })
        })
    }

    fn findings_text(&self, query: &FindingQuery) -> Result<FindingTextPage, StorageError> {
        let query = query.clone();
        self.read(move |client| async move {
            let (rows, limit) = findings::page(&*client, &query).await?;
            let highest =
                findings::highest_if_windowed(&*client, &query, rows.len(), limit).await?;
            let mut findings = secflow_store::document::FindingsArray::default();
            for row in rows {
                findings.push(row)?;
            }
            let next =
                query.next_cursor(findings.len(), limit, findings.last_id(), || Ok(highest))?;
            Ok(FindingTextPage { findings, next })
        })
    }

    fn telemetry(&self, query: &TelemetryQuery) -> Result<Vec<TelemetryEvent>, StorageError> {
        let query = query.clone();
        self.read(move |client| async move {
            let mut sql = format!(
                "SELECT {} FROM telemetry WHERE true",
                tables::TELEMETRY_COLUMNS
            );
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            filter(&mut sql, &mut params, "plugin", query.plugin);
            filter(&mut sql, &mut params, "run_id", query.run_id);
            params.push(Box::new(limit_param(query.limit, DEFAULT_EVENTS_LIMIT)));
            sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", params.len()));
            let rows = client
                .query(&sql, &param_refs(&params))
                .await
                .map_err(db_error)?;
            rows.iter().map(tables::read_telemetry).collect()
        })
    }

    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StorageError> {
        let query = query.clone();
        self.read(move |client| async move {
            let mut sql = format!("SELECT {} FROM audit WHERE true", tables::AUDIT_COLUMNS);
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            filter(&mut sql, &mut params, "event", query.event);
            filter(&mut sql, &mut params, "plugin", query.plugin);
            filter(&mut sql, &mut params, "run_id", query.run_id);
            params.push(Box::new(limit_param(query.limit, DEFAULT_EVENTS_LIMIT)));
            sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", params.len()));
            let rows = client
                .query(&sql, &param_refs(&params))
                .await
                .map_err(db_error)?;
            rows.iter().map(tables::read_audit).collect()
        })
    }

    fn plugin_states(&self) -> Result<Vec<PluginState>, StorageError> {
        self.read(move |client| async move {
            let sql = format!(
                "SELECT {} FROM plugins ORDER BY name, version, code_hash",
                tables::PLUGIN_COLUMNS
            );
            let rows = client.query(&sql, &[]).await.map_err(db_error)?;
            rows.iter().map(tables::read_plugin_state).collect()
        })
    }

    /// Only this host's runs: another host's `running` runs are live on it.
    /// `findings` becomes at least the number of findings the run was seen
    /// to report, since the writer's in-memory counts died with the daemon.
    fn mark_interrupted(&self) -> Result<u64, StorageError> {
        let error =
            secflow_core::record::RunError::new(ErrorKind::Interrupted, INTERRUPTED_MESSAGE);
        let error = serde_json::to_string(&error)
            .map_err(|e| StorageError::Malformed(format!("interrupted run error: {e}")))?;
        let now = secflow_core::clock::now_rfc3339();
        let host = self.host.clone();
        self.read(move |client| async move {
            let observed =
                "(SELECT count(*) FROM finding_observations o WHERE o.run_id = runs.run_id)";
            let sql = format!(
                "UPDATE runs SET
                    status = 'failed',
                    findings = GREATEST(findings, {observed}),
                    partial = GREATEST(findings, {observed}) > 0,
                    error = $1,
                    finished_at = $2,
                    duration_ms = COALESCE(GREATEST(0, (EXTRACT(EPOCH FROM
                        ($2::text::timestamptz - started_at::timestamptz)) * 1000))::bigint,
                        duration_ms)
                 WHERE status = 'running' AND host = $3"
            );
            client
                .execute(&sql, &[&error, &now, &host])
                .await
                .map_err(db_error)
        })
    }
}
