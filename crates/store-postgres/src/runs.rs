//! The `runs` table: one row per run record, written when a run starts and
//! again when it finishes, with the host it ran on.

use secflow_core::record::{RunError, RunRecord, RunStatus};
use secflow_plugin_sdk::protocol::Category;
use secflow_store::StorageError;
use serde_json::Value;
use tokio_postgres::{GenericClient, Row};

use crate::{db_error, Params};

/// The run record's columns, in [`read_run`]'s and [`upsert_run`]'s order:
/// the one list of them.
pub(crate) const RUN_COLUMNS: &str = "run_id, plugin, plugin_version, category, status, \
    partial, exit_code, signal, started_at, finished_at, duration_ms, cpu_ms, memory_mb, \
    findings, findings_rejected, outputs, error, stderr_tail, workflow_id, node_id";

/// `INSERT … ON CONFLICT (run_id) DO UPDATE` of every [`RUN_COLUMNS`] and
/// the host (a run rejected before it started has no `RunStarted`, so its
/// final record must be able to insert too).
fn upsert_sql() -> String {
    let columns: Vec<&str> = RUN_COLUMNS.split(", ").map(str::trim).collect();
    let values: Vec<String> = (1..=columns.len() + 1).map(|i| format!("${i}")).collect();
    let updates: Vec<String> = columns
        .iter()
        .skip(1)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO runs ({RUN_COLUMNS}, host) VALUES ({}) ON CONFLICT (run_id) DO UPDATE SET {}, host = excluded.host",
        values.join(", "),
        updates.join(", ")
    )
}

/// Counters as PostgreSQL `bigint` (saturating; no counter gets near it).
pub(crate) fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) async fn upsert_run(
    client: &impl GenericClient,
    r: &RunRecord,
    host: &str,
) -> Result<(), tokio_postgres::Error> {
    let outputs = Value::Object(r.outputs_column()).to_string();
    let error = r
        .error
        .as_ref()
        .map(|e| serde_json::to_string(e).unwrap_or_default());
    let (duration, cpu, memory) = (
        sql_int(r.duration_ms),
        sql_int(r.cpu_ms),
        sql_int(r.memory_mb),
    );
    let (findings, rejected) = (sql_int(r.findings), sql_int(r.findings_rejected));
    let (category, status) = (r.category.as_str(), r.status.as_str());
    let params: Params<'_> = vec![
        &r.run_id,
        &r.plugin,
        &r.plugin_version,
        &category,
        &status,
        &r.partial,
        &r.exit_code,
        &r.signal,
        &r.started_at,
        &r.finished_at,
        &duration,
        &cpu,
        &memory,
        &findings,
        &rejected,
        &outputs,
        &error,
        &r.stderr_tail,
        &r.workflow_id,
        &r.node_id,
        &host,
    ];
    client.execute(&upsert_sql(), &params).await?;
    Ok(())
}

pub(crate) fn read_run(row: &Row) -> Result<RunRecord, StorageError> {
    let get = |i: usize| row.try_get::<_, String>(i).map_err(db_error);
    let run_id = get(0)?;
    let malformed = |what: &str| StorageError::Malformed(format!("run {run_id}: {what}"));
    let category = get(3)?;
    let category = [Category::Detector, Category::Enricher, Category::Analytics]
        .into_iter()
        .find(|c| c.as_str() == category)
        .ok_or_else(|| malformed(&format!("unknown category {category:?}")))?;
    let status = get(4)?;
    let status = RunStatus::parse(&status)
        .ok_or_else(|| malformed(&format!("unknown status {status:?}")))?;
    let outputs = match serde_json::from_str(&get(15)?) {
        Ok(Value::Object(map)) => map,
        _ => return Err(malformed("outputs is not a JSON object")),
    };
    let (outputs, refused_egress) =
        RunRecord::split_outputs_column(outputs).map_err(|e| malformed(&e))?;
    let error = row
        .try_get::<_, Option<String>>(16)
        .map_err(db_error)?
        .map(|e| serde_json::from_str::<RunError>(&e))
        .transpose()
        .map_err(|e| malformed(&format!("error: {e}")))?;
    let int = |i: usize| row.try_get::<_, i64>(i).map(from_sql_int).map_err(db_error);
    Ok(RunRecord {
        plugin: get(1)?,
        plugin_version: get(2)?,
        category,
        status,
        partial: row.try_get(5).map_err(db_error)?,
        exit_code: row.try_get(6).map_err(db_error)?,
        signal: row.try_get(7).map_err(db_error)?,
        started_at: get(8)?,
        finished_at: row.try_get(9).map_err(db_error)?,
        duration_ms: int(10)?,
        cpu_ms: int(11)?,
        memory_mb: int(12)?,
        findings: int(13)?,
        findings_rejected: int(14)?,
        outputs,
        error,
        stderr_tail: get(17)?,
        workflow_id: row.try_get(18).map_err(db_error)?,
        node_id: row.try_get(19).map_err(db_error)?,
        refused_egress,
        run_id,
    })
}
