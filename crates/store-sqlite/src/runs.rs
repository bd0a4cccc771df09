//! The `runs` table: one row per run record, written when a run starts and
//! again when it finishes.

use super::*;

pub(crate) const UPSERT_RUN: &str = "\
INSERT INTO runs (run_id, plugin, plugin_version, category, status, partial, exit_code, signal,
    started_at, finished_at, duration_ms, cpu_ms, memory_mb, findings, findings_rejected,
    outputs, error, stderr_tail, workflow_id, node_id, host)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
    ?21)
ON CONFLICT (run_id) DO UPDATE SET
    plugin = excluded.plugin, plugin_version = excluded.plugin_version,
    category = excluded.category, status = excluded.status, partial = excluded.partial,
    exit_code = excluded.exit_code, signal = excluded.signal, started_at = excluded.started_at,
    finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
    cpu_ms = excluded.cpu_ms, memory_mb = excluded.memory_mb, findings = excluded.findings,
    findings_rejected = excluded.findings_rejected, outputs = excluded.outputs,
    error = excluded.error, stderr_tail = excluded.stderr_tail,
    workflow_id = excluded.workflow_id, node_id = excluded.node_id, host = excluded.host";

/// Inserts or replaces a run row (a run rejected before it started has no
/// `RunStarted`, so `RunFinished` must be able to insert too).
pub(crate) fn upsert_run(
    tx: &Transaction<'_>,
    r: &RunRecord,
    host: &str,
) -> Result<(), rusqlite::Error> {
    let outputs = Value::Object(r.outputs_column()).to_string();
    let error = r
        .error
        .as_ref()
        .map(|e| serde_json::to_string(e).unwrap_or_default());
    tx.prepare_cached(UPSERT_RUN)?.execute(params![
        r.run_id,
        r.plugin,
        r.plugin_version,
        r.category.as_str(),
        r.status.as_str(),
        r.partial,
        r.exit_code,
        r.signal,
        r.started_at,
        r.finished_at,
        sql_int(r.duration_ms),
        sql_int(r.cpu_ms),
        sql_int(r.memory_mb),
        sql_int(r.findings),
        sql_int(r.findings_rejected),
        outputs,
        error,
        r.stderr_tail,
        r.workflow_id,
        r.node_id,
        host,
    ])?;
    Ok(())
}

pub(crate) const RUN_COLUMNS: &str =
    "run_id, plugin, plugin_version, category, status, partial, exit_code, \
    signal, started_at, finished_at, duration_ms, cpu_ms, memory_mb, findings, findings_rejected, \
    outputs, error, stderr_tail, workflow_id, node_id";

pub(crate) fn read_run(row: &Row<'_>) -> Result<RunRecord, StorageError> {
    let run_id: String = row.get(0).map_err(db_error)?;
    let malformed = |what: &str| StorageError::Malformed(format!("run {run_id}: {what}"));
    let category: String = row.get(3).map_err(db_error)?;
    let category = [Category::Detector, Category::Enricher, Category::Analytics]
        .into_iter()
        .find(|c| c.as_str() == category)
        .ok_or_else(|| malformed(&format!("unknown category {category:?}")))?;
    let status: String = row.get(4).map_err(db_error)?;
    let status = RunStatus::parse(&status)
        .ok_or_else(|| malformed(&format!("unknown status {status:?}")))?;
    let outputs: String = row.get(15).map_err(db_error)?;
    let outputs = match serde_json::from_str(&outputs) {
        Ok(Value::Object(map)) => map,
        _ => return Err(malformed("outputs is not a JSON object")),
    };
    let (outputs, refused_egress) =
        RunRecord::split_outputs_column(outputs).map_err(|e| malformed(&e))?;
    let error = row
        .get::<_, Option<String>>(16)
        .map_err(db_error)?
        .map(|e| serde_json::from_str::<RunError>(&e))
        .transpose()
        .map_err(|e| malformed(&format!("error: {e}")))?;
    Ok(RunRecord {
        plugin: row.get(1).map_err(db_error)?,
        plugin_version: row.get(2).map_err(db_error)?,
        category,
        status,
        partial: row.get(5).map_err(db_error)?,
        exit_code: row.get(6).map_err(db_error)?,
        signal: row.get(7).map_err(db_error)?,
        started_at: row.get(8).map_err(db_error)?,
        finished_at: row.get(9).map_err(db_error)?,
        duration_ms: from_sql_int(row.get(10).map_err(db_error)?),
        cpu_ms: from_sql_int(row.get(11).map_err(db_error)?),
        memory_mb: from_sql_int(row.get(12).map_err(db_error)?),
        findings: from_sql_int(row.get(13).map_err(db_error)?),
        findings_rejected: from_sql_int(row.get(14).map_err(db_error)?),
        outputs,
        error,
        stderr_tail: row.get(17).map_err(db_error)?,
        workflow_id: row.get(18).map_err(db_error)?,
        node_id: row.get(19).map_err(db_error)?,
        refused_egress,
        run_id,
    })
}
