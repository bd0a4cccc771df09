//! The `telemetry`, `audit` and `plugins` tables: append-only events, each
//! with the host that wrote it, and the persisted revocations.

use secflow_store::{AuditEvent, PluginState, StorageError, TelemetryEvent};
use tokio_postgres::{GenericClient, Row};

use crate::runs::{from_sql_int, sql_int};
use crate::{db_error, Params};

/// A telemetry event's columns, in [`read_telemetry`]'s order.
pub(crate) const TELEMETRY_COLUMNS: &str = "event, plugin, version, run_id, duration_ms, \
    cpu_ms, memory_mb, findings_processed, success, timestamp";

/// An audit event's columns, in [`read_audit`]'s order (`id` is assigned).
pub(crate) const AUDIT_COLUMNS: &str =
    "id, timestamp, event, security, plugin, run_id, actor_uid, message, details";

/// A plugin state's columns, in [`read_plugin_state`]'s order.
pub(crate) const PLUGIN_COLUMNS: &str =
    "name, version, code_hash, revoked, reason, changed_at, actor_uid";

/// `$1, $2, …, $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count(columns: &str) -> usize {
    columns.split(", ").count()
}

pub(crate) async fn insert_telemetry(
    client: &impl GenericClient,
    e: &TelemetryEvent,
    host: &str,
) -> Result<(), tokio_postgres::Error> {
    let (duration, cpu, memory, processed) = (
        sql_int(e.duration_ms),
        sql_int(e.cpu_ms),
        sql_int(e.memory_mb),
        sql_int(e.findings_processed),
    );
    let params: Params<'_> = vec![
        &e.event,
        &e.plugin,
        &e.version,
        &e.run_id,
        &duration,
        &cpu,
        &memory,
        &processed,
        &e.success,
        &e.timestamp,
        &host,
    ];
    let sql = format!(
        "INSERT INTO telemetry ({TELEMETRY_COLUMNS}, host) VALUES ({})",
        placeholders(count(TELEMETRY_COLUMNS) + 1)
    );
    client.execute(&sql, &params).await?;
    Ok(())
}

pub(crate) async fn insert_audit(
    client: &impl GenericClient,
    e: &AuditEvent,
    now: &str,
    host: &str,
) -> Result<(), tokio_postgres::Error> {
    let timestamp = if e.timestamp.is_empty() {
        now
    } else {
        &e.timestamp
    };
    let actor = e.actor_uid.map(i64::from);
    let details = e.details.to_string();
    let params: Params<'_> = vec![
        &timestamp,
        &e.event,
        &e.security,
        &e.plugin,
        &e.run_id,
        &actor,
        &e.message,
        &details,
        &host,
    ];
    // Every column but the assigned `id`, then the host.
    let columns = AUDIT_COLUMNS.trim_start_matches("id, ");
    let sql = format!(
        "INSERT INTO audit ({columns}, host) VALUES ({})",
        placeholders(count(columns) + 1)
    );
    client.execute(&sql, &params).await?;
    Ok(())
}

pub(crate) async fn upsert_plugin_state(
    client: &impl GenericClient,
    s: &PluginState,
) -> Result<(), tokio_postgres::Error> {
    let actor = s.actor_uid.map(i64::from);
    let params: Params<'_> = vec![
        &s.name,
        &s.version,
        &s.code_hash,
        &s.revoked,
        &s.reason,
        &s.changed_at,
        &actor,
    ];
    let sql = format!(
        "INSERT INTO plugins ({PLUGIN_COLUMNS}) VALUES ({})
         ON CONFLICT (name, version, code_hash) DO UPDATE SET
            revoked = excluded.revoked, reason = excluded.reason,
            changed_at = excluded.changed_at, actor_uid = excluded.actor_uid",
        placeholders(count(PLUGIN_COLUMNS))
    );
    client.execute(&sql, &params).await?;
    Ok(())
}

fn uid(row: &Row, i: usize) -> Result<Option<u32>, StorageError> {
    let value: Option<i64> = row.try_get(i).map_err(db_error)?;
    Ok(value.and_then(|v| u32::try_from(v).ok()))
}

pub(crate) fn read_telemetry(row: &Row) -> Result<TelemetryEvent, StorageError> {
    let int = |i: usize| row.try_get::<_, i64>(i).map(from_sql_int).map_err(db_error);
    Ok(TelemetryEvent {
        event: row.try_get(0).map_err(db_error)?,
        plugin: row.try_get(1).map_err(db_error)?,
        version: row.try_get(2).map_err(db_error)?,
        run_id: row.try_get(3).map_err(db_error)?,
        duration_ms: int(4)?,
        cpu_ms: int(5)?,
        memory_mb: int(6)?,
        findings_processed: int(7)?,
        success: row.try_get(8).map_err(db_error)?,
        timestamp: row.try_get(9).map_err(db_error)?,
    })
}

pub(crate) fn read_audit(row: &Row) -> Result<AuditEvent, StorageError> {
    let id: i64 = row.try_get(0).map_err(db_error)?;
    let details: String = row.try_get(8).map_err(db_error)?;
    let details = serde_json::from_str(&details)
        .map_err(|e| StorageError::Malformed(format!("audit event {id}: details: {e}")))?;
    Ok(AuditEvent {
        id,
        timestamp: row.try_get(1).map_err(db_error)?,
        event: row.try_get(2).map_err(db_error)?,
        security: row.try_get(3).map_err(db_error)?,
        plugin: row.try_get(4).map_err(db_error)?,
        run_id: row.try_get(5).map_err(db_error)?,
        actor_uid: uid(row, 6)?,
        message: row.try_get(7).map_err(db_error)?,
        details,
    })
}

pub(crate) fn read_plugin_state(row: &Row) -> Result<PluginState, StorageError> {
    Ok(PluginState {
        name: row.try_get(0).map_err(db_error)?,
        version: row.try_get(1).map_err(db_error)?,
        code_hash: row.try_get(2).map_err(db_error)?,
        revoked: row.try_get(3).map_err(db_error)?,
        reason: row.try_get(4).map_err(db_error)?,
        changed_at: row.try_get(5).map_err(db_error)?,
        actor_uid: uid(row, 6)?,
    })
}
