//! The `telemetry`, `audit` and `plugin_states` tables: append-only events and
//! the persisted revocations.

use super::*;

pub(crate) fn insert_telemetry(
    tx: &Transaction<'_>,
    e: &TelemetryEvent,
    host: &str,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO telemetry (event, plugin, version, run_id, duration_ms, cpu_ms, memory_mb,
            findings_processed, success, timestamp, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        e.event,
        e.plugin,
        e.version,
        e.run_id,
        sql_int(e.duration_ms),
        sql_int(e.cpu_ms),
        sql_int(e.memory_mb),
        sql_int(e.findings_processed),
        e.success,
        e.timestamp,
        host,
    ])?;
    Ok(())
}

pub(crate) fn insert_audit(
    tx: &Transaction<'_>,
    e: &AuditEvent,
    now: &str,
    host: &str,
) -> Result<(), rusqlite::Error> {
    let timestamp = if e.timestamp.is_empty() {
        now
    } else {
        &e.timestamp
    };
    tx.prepare_cached(
        "INSERT INTO audit (timestamp, event, security, plugin, run_id, actor_uid, message, details,
            host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        timestamp,
        e.event,
        e.security,
        e.plugin,
        e.run_id,
        e.actor_uid,
        e.message,
        e.details.to_string(),
        host,
    ])?;
    Ok(())
}

pub(crate) fn upsert_plugin_state(
    tx: &Transaction<'_>,
    s: &PluginState,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO plugins (name, version, code_hash, revoked, reason, changed_at, actor_uid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (name, version, code_hash) DO UPDATE SET
            revoked = excluded.revoked, reason = excluded.reason,
            changed_at = excluded.changed_at, actor_uid = excluded.actor_uid",
    )?
    .execute(params![
        s.name,
        s.version,
        s.code_hash,
        s.revoked,
        s.reason,
        s.changed_at,
        s.actor_uid,
    ])?;
    Ok(())
}

pub(crate) fn read_telemetry(row: &Row<'_>) -> Result<TelemetryEvent, StorageError> {
    Ok(TelemetryEvent {
        event: row.get(0).map_err(db_error)?,
        plugin: row.get(1).map_err(db_error)?,
        version: row.get(2).map_err(db_error)?,
        run_id: row.get(3).map_err(db_error)?,
        duration_ms: from_sql_int(row.get(4).map_err(db_error)?),
        cpu_ms: from_sql_int(row.get(5).map_err(db_error)?),
        memory_mb: from_sql_int(row.get(6).map_err(db_error)?),
        findings_processed: from_sql_int(row.get(7).map_err(db_error)?),
        success: row.get(8).map_err(db_error)?,
        timestamp: row.get(9).map_err(db_error)?,
    })
}

pub(crate) fn read_audit(row: &Row<'_>) -> Result<AuditEvent, StorageError> {
    let id: i64 = row.get(0).map_err(db_error)?;
    let details: String = row.get(8).map_err(db_error)?;
    let details = serde_json::from_str(&details)
        .map_err(|e| StorageError::Malformed(format!("audit event {id}: details: {e}")))?;
    Ok(AuditEvent {
        id,
        timestamp: row.get(1).map_err(db_error)?,
        event: row.get(2).map_err(db_error)?,
        security: row.get(3).map_err(db_error)?,
        plugin: row.get(4).map_err(db_error)?,
        run_id: row.get(5).map_err(db_error)?,
        actor_uid: row.get(6).map_err(db_error)?,
        message: row.get(7).map_err(db_error)?,
        details,
    })
}
