//! The schema, one SQL step per version (`PRAGMA user_version`), and the
//! migrations that bring an older database up to date.

use super::*;

/// Schema steps: `MIGRATIONS[i]` takes a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_initial.sql"),
    include_str!("migrations/002_first_observation_in_row.sql"),
    include_str!("migrations/003_hosts.sql"),
    include_str!("migrations/004_audit_by_run.sql"),
    include_str!("migrations/005_finding_keys.sql"),
];

/// The tables whose rows name their host (schema version 3).
const HOST_TABLES: [&str; 5] = [
    "runs",
    "findings",
    "finding_sightings",
    "telemetry",
    "audit",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn user_version(conn: &Connection, path: &Path) -> Result<i64, StorageError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source: rusqlite::Error| StorageError::Open {
            location: path.display().to_string(),
            kind: sqlite_error_kind(&source),
            source: Box::new(source),
        })
}

pub(crate) fn check_version(conn: &Connection, path: &Path) -> Result<i64, StorageError> {
    let found = user_version(conn, path)?;
    if found > SCHEMA_VERSION {
        return Err(StorageError::TooNew {
            location: path.display().to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StorageError::Malformed(format!(
            "database {} has a negative schema version {found}",
            path.display()
        )));
    }
    Ok(found)
}

/// Applies the missing migrations, each in its own immediate transaction that
/// re-reads the version (another process may be migrating the same file).
/// `host` is the host whose rows a database from before version 3 holds.
pub(crate) fn migrate(conn: &mut Connection, path: &Path, host: &str) -> Result<(), StorageError> {
    let open_error = |source: rusqlite::Error| StorageError::Open {
        location: path.display().to_string(),
        kind: sqlite_error_kind(&source),
        source: Box::new(source),
    };
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(open_error)?;
        let version = check_version(&tx, path)?;
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        tx.execute_batch(step).map_err(open_error)?;
        if version + 1 == 2 {
            fill_fingerprint_keys(&tx).map_err(open_error)?;
        }
        if version + 1 == 3 {
            fill_hosts(&tx, host).map_err(open_error)?;
        }
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(open_error)?;
        tx.commit().map_err(open_error)?;
        tracing::info!(path = %path.display(), version = version + 1, "database schema migrated");
    }
}

/// Computes the `fingerprint_key` of every finding migrated to schema version
/// 2 (SQLite has no SHA-256 of its own; the script sets them to 0).
pub(crate) fn fill_fingerprint_keys(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    let mut select = tx.prepare("SELECT id, fingerprint FROM findings")?;
    let mut update = tx.prepare("UPDATE findings SET fingerprint_key = ?2 WHERE id = ?1")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let fingerprint: String = row.get(1)?;
        update.execute(params![id, secflow_store::fingerprint_key(&fingerprint)])?;
    }
    Ok(())
}

/// Names `host` in every row written before schema version 3.
pub(crate) fn fill_hosts(tx: &Transaction<'_>, host: &str) -> Result<(), rusqlite::Error> {
    for table in HOST_TABLES {
        tx.execute(
            &format!("UPDATE {table} SET host = ?1 WHERE host = ''"),
            [host],
        )?;
    }
    Ok(())
}
