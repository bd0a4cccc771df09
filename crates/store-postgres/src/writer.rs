//! The writer task: takes up to `batch_size` queued operations, applies them
//! in one transaction on its own connection, then answers the ones waiting.
//!
//! A batch that fails (the server went away, the disk filled) is rolled back;
//! the runs it touched are remembered as having lost findings (their final
//! record says so), their counters go back to what was committed, and final
//! records the batch held are retried with every later batch until one
//! commits. Before each batch the writer reconnects if its connection closed,
//! so it serves again as soon as the server does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use secflow_core::clock;
use secflow_core::record::{ErrorKind, RunRecord, RunStatus};
use secflow_store::{FindingsBudget, StorageError, WriteOp};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use crate::connect::Connector;
use crate::{findings, pg_error_kind, runs, tables};

/// What the writer counted for a run that has not finished yet.
#[derive(Debug, Default, Clone)]
struct RunCounts {
    accepted: u64,
    rejected: u64,
}

/// A failed batch, as every waiter of it is told.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct BatchFailed {
    message: String,
    kind: ErrorKind,
}

impl BatchFailed {
    fn of(e: &tokio_postgres::Error) -> BatchFailed {
        // The client's own text is terse ("db error"); its source says what.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        BatchFailed {
            message,
            kind: pg_error_kind(e),
        }
    }

    fn storage_error(&self) -> StorageError {
        StorageError::Backend {
            kind: self.kind,
            source: Box::new(self.clone()),
        }
    }
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

    fn answer(self, outcome: Result<(), &BatchFailed>) {
        // A receiver that stopped waiting is not an error of the writer.
        match (self, outcome) {
            (Reply::Run(done, record), Ok(())) => {
                let _ = done.send(Ok(*record));
            }
            (Reply::Done(done), Ok(())) => {
                let _ = done.send(Ok(()));
            }
            (Reply::Run(done, _), Err(e)) => {
                let _ = done.send(Err(e.storage_error()));
            }
            (Reply::Done(done), Err(e)) => {
                let _ = done.send(Err(e.storage_error()));
            }
        }
    }
}

pub(crate) struct Writer {
    connector: Connector,
    client: Option<Client>,
    host: String,
    batch_size: usize,
    budget: FindingsBudget,
    counts: HashMap<String, RunCounts>,
    lost: HashMap<String, ErrorKind>,
    unfinished: Vec<RunRecord>,
}

impl Writer {
    pub(crate) fn new(
        connector: Connector,
        client: Client,
        host: String,
        batch_size: usize,
        budget: FindingsBudget,
    ) -> Writer {
        Writer {
            connector,
            client: Some(client),
            host,
            batch_size,
            budget,
            counts: HashMap::new(),
            lost: HashMap::new(),
            unfinished: Vec::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<WriteOp>,
        closing: &AtomicBool,
    ) -> Result<(), StorageError> {
        let mut first_failure = None;
        let mut batch = Vec::with_capacity(self.batch_size);
        while let Some(op) = rx.recv().await {
            let mut cost = self.budget.cost(&op);
            batch.push(op);
            while batch.len() < self.batch_size {
                match rx.try_recv() {
                    Ok(op) => {
                        cost += self.budget.cost(&op);
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            let applied = self.apply_batch(&mut batch).await;
            self.budget.give_back(cost);
            if let Err(e) = applied {
                first_failure.get_or_insert(e.storage_error());
            }
            if closing.load(Ordering::Acquire) {
                rx.close();
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    async fn apply_batch(&mut self, batch: &mut Vec<WriteOp>) -> Result<(), BatchFailed> {
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
        let ops = std::mem::take(batch);
        let outcome = self.apply_all(ops, &now, &mut replies).await;
        if let Err(e) = &outcome {
            tracing::error!(error = %e, operations = replies.len(), "storage batch failed and was rolled back");
            for (run_id, counts) in touched {
                match counts {
                    Some(counts) => self.counts.insert(run_id.clone(), counts),
                    None => self.counts.remove(&run_id),
                };
                self.lost.entry(run_id).or_insert(e.kind);
            }
            for mut record in finishing {
                self.lost.remove(&record.run_id);
                record.lost_to_storage(e.kind, &e.message);
                self.unfinished.push(record);
            }
        }
        for reply in replies {
            reply.answer(outcome.as_ref().map(|_| ()));
        }
        outcome
    }

    /// The open connection, reconnecting if the last one closed.
    async fn client(&mut self) -> Result<&mut Client, tokio_postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = self.connector.connect().await?;
            tracing::info!(location = %self.connector.location(), "storage writer reconnected");
            self.client = Some(client);
        }
        Ok(self
            .client
            .as_mut()
            .unwrap_or_else(|| unreachable!("the client was just set")))
    }

    /// Applies every operation in one transaction; on the first failure the
    /// rest are only collected for their answers, and the transaction rolls
    /// back.
    async fn apply_all(
        &mut self,
        ops: Vec<WriteOp>,
        now: &str,
        replies: &mut Vec<Reply>,
    ) -> Result<(), BatchFailed> {
        let host = self.host.clone();
        let mut counts = std::mem::take(&mut self.counts);
        let mut ops = ops.into_iter();
        let result = async {
            let client = self.client().await.map_err(|e| BatchFailed::of(&e))?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| BatchFailed::of(&e))?;
            for op in ops.by_ref() {
                apply(&tx, &mut counts, op, now, &host, replies)
                    .await
                    .map_err(|e| BatchFailed::of(&e))?;
            }
            tx.commit().await.map_err(|e| BatchFailed::of(&e))
        }
        .await;
        self.counts = counts;
        if result.is_err() {
            // Operations never reached still owe their answers.
            replies.extend(ops.filter_map(Reply::of));
        }
        result
    }
}

async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    counts: &mut HashMap<String, RunCounts>,
    op: WriteOp,
    now: &str,
    host: &str,
    replies: &mut Vec<Reply>,
) -> Result<(), tokio_postgres::Error> {
    match op {
        WriteOp::RunStarted(mut record) => {
            record.status = RunStatus::Running;
            runs::upsert_run(tx, &record, host).await
        }
        WriteOp::Findings {
            run_id,
            plugin,
            plugin_version,
            findings,
        } => {
            findings::store_findings(tx, &run_id, &plugin, &plugin_version, host, &findings, now)
                .await?;
            counts.entry(run_id).or_default().accepted += findings.len() as u64;
            Ok(())
        }
        WriteOp::Enrichments {
            run_id,
            plugin,
            findings,
        } => {
            let (accepted, rejected) =
                findings::merge_enrichments(tx, &run_id, &plugin, host, &findings).await?;
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
            // Owed whether or not the batch commits.
            let upserted = runs::upsert_run(tx, &record, host).await;
            replies.push(Reply::Run(done, record));
            upserted
        }
        WriteOp::Telemetry(event) => tables::insert_telemetry(tx, &event, host).await,
        WriteOp::Audit(event) => tables::insert_audit(tx, &event, now, host).await,
        WriteOp::PluginState { state, done } => {
            let upserted = tables::upsert_plugin_state(tx, &state).await;
            replies.extend(done.map(Reply::Done));
            upserted
        }
        WriteOp::Flush(done) => {
            replies.push(Reply::Done(done));
            Ok(())
        }
    }
}
