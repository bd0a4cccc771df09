//! The schema, one SQL step per version, recorded in `schema_migrations`.
//! Hosts of a fleet may start together: each step runs in a transaction that
//! first takes a transaction-scoped advisory lock and re-reads the version, so
//! exactly one host applies it and the others find it done.

use secflow_store::StorageError;
use tokio_postgres::Client;

use crate::pg_error_kind;

/// Schema steps: `MIGRATIONS[i]` takes a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_initial.sql"),
    include_str!("migrations/002_audit_by_run.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key of migrations ("secflow" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6563_666c_6f77;

const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version     BIGINT PRIMARY KEY,
    applied_at  TEXT NOT NULL
)";

fn open_error(location: &str, source: tokio_postgres::Error) -> StorageError {
    StorageError::Open {
        location: location.to_string(),
        kind: pg_error_kind(&source),
        source: Box::new(source),
    }
}

/// The database's schema version (0 for an empty database).
pub(crate) async fn current_version(client: &Client, location: &str) -> Result<i64, StorageError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| open_error(location, e))?;
    if !exists {
        return Ok(0);
    }
    client
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| open_error(location, e))
}

fn check(found: i64, location: &str) -> Result<(), StorageError> {
    if found > SCHEMA_VERSION {
        return Err(StorageError::TooNew {
            location: location.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Applies the missing migrations; refuses a database a newer build wrote.
pub(crate) async fn migrate(client: &mut Client, location: &str) -> Result<(), StorageError> {
    check(current_version(client, location).await?, location)?;
    loop {
        let tx = client
            .transaction()
            .await
            .map_err(|e| open_error(location, e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| open_error(location, e))?;
        tx.batch_execute(CREATE_VERSIONS)
            .await
            .map_err(|e| open_error(location, e))?;
        let version: i64 = tx
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| open_error(location, e))?;
        check(version, location)?;
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        tx.batch_execute(step)
            .await
            .map_err(|e| open_error(location, e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&(version + 1), &secflow_core::clock::now_rfc3339()],
        )
        .await
        .map_err(|e| open_error(location, e))?;
        tx.commit().await.map_err(|e| open_error(location, e))?;
        tracing::info!(location, version = version + 1, "database schema migrated");
    }
}
