//! `secflow storage export`: the whole database as a backend-neutral dump
//! (`secflow_store::transfer`), read in one snapshot so that a daemon writing
//! meanwhile does not tear it.

use super::*;
use secflow_store::transfer::{DumpCounts, DumpRecord, DumpWriter, FindingDump, TransferError};

/// Writes the database at `config.path` (brought to the current schema
/// first, its older rows named as `host`'s) to `out`; the counts written.
pub fn export(
    config: &StorageConfig,
    host: &str,
    out: impl std::io::Write,
) -> Result<DumpCounts, TransferError> {
    // Migrates (and so names the host of rows from before hosts were kept).
    SqliteStore::open_as(config, host)?.shutdown()?;
    let path = config.path.as_path();
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|source| StorageError::Open {
            location: path.display().to_string(),
            kind: sqlite_error_kind(&source),
            source: Box::new(source),
        })?;
    // One read transaction: every table from the same snapshot.
    conn.execute_batch("BEGIN").map_err(db_error)?;
    let mut dump = DumpWriter::new(out);
    let mut each = |sql: &str,
                    read: &dyn Fn(&Row<'_>) -> Result<DumpRecord, StorageError>|
     -> Result<(), TransferError> {
        let mut stmt = conn.prepare(sql).map_err(db_error)?;
        let mut rows = stmt.query([]).map_err(db_error)?;
        while let Some(row) = rows.next().map_err(db_error)? {
            dump.write(&read(row)?)?;
        }
        Ok(())
    };
    each(
        "SELECT name, version, code_hash, revoked, reason, changed_at, actor_uid FROM plugins \
         ORDER BY name, version, code_hash",
        &|row| {
            Ok(DumpRecord::Plugin(PluginState {
                name: row.get(0).map_err(db_error)?,
                version: row.get(1).map_err(db_error)?,
                code_hash: row.get(2).map_err(db_error)?,
                revoked: row.get(3).map_err(db_error)?,
                reason: row.get(4).map_err(db_error)?,
                changed_at: row.get(5).map_err(db_error)?,
                actor_uid: row.get(6).map_err(db_error)?,
            }))
        },
    )?;
    each(
        &format!("SELECT {RUN_COLUMNS}, host FROM runs ORDER BY rowid"),
        &|row| {
            Ok(DumpRecord::Run {
                record: Box::new(read_run(row)?),
                host: row.get(20).map_err(db_error)?,
            })
        },
    )?;
    each(
        "SELECT id, fingerprint, run_id, plugin_name, plugin_version, rule_id, title, severity, \
         severity_rank, target, first_seen, last_seen, occurrences, document, enrichment, \
         enrichment_vulnerabilities, enriched_severity, enriched_severity_rank, host \
         FROM findings ORDER BY id",
        &|row| {
            let get = |i: usize| row.get::<_, String>(i).map_err(db_error);
            Ok(DumpRecord::Finding(Box::new(FindingDump {
                id: row.get(0).map_err(db_error)?,
                fingerprint: get(1)?,
                run_id: get(2)?,
                plugin_name: get(3)?,
                plugin_version: get(4)?,
                rule_id: get(5)?,
                title: get(6)?,
                severity: get(7)?,
                severity_rank: row.get(8).map_err(db_error)?,
                target: get(9)?,
                first_seen: get(10)?,
                last_seen: get(11)?,
                occurrences: from_sql_int(row.get(12).map_err(db_error)?),
                document: get(13)?,
                enrichment: get(14)?,
                enrichment_vulnerabilities: get(15)?,
                enriched_severity: row.get(16).map_err(db_error)?,
                enriched_severity_rank: row.get(17).map_err(db_error)?,
                host: get(18)?,
            })))
        },
    )?;
    each(
        "SELECT run_id, finding_id, host FROM finding_observations ORDER BY finding_id, run_id",
        &|row| {
            Ok(DumpRecord::Observation {
                run_id: row.get(0).map_err(db_error)?,
                finding_id: row.get(1).map_err(db_error)?,
                host: row.get(2).map_err(db_error)?,
            })
        },
    )?;
    each(
        "SELECT event, plugin, version, run_id, duration_ms, cpu_ms, memory_mb, \
         findings_processed, success, timestamp, host FROM telemetry ORDER BY id",
        &|row| {
            Ok(DumpRecord::Telemetry {
                event: read_telemetry(row)?,
                host: row.get(10).map_err(db_error)?,
            })
        },
    )?;
    each(
        "SELECT id, timestamp, event, security, plugin, run_id, actor_uid, message, details, \
         host FROM audit ORDER BY id",
        &|row| {
            Ok(DumpRecord::Audit {
                event: read_audit(row)?,
                host: row.get(9).map_err(db_error)?,
            })
        },
    )?;
    Ok(dump.finish()?)
}
