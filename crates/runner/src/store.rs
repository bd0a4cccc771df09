//! The one place a storage backend is chosen (`[storage] backend`): the
//! daemon, runner and CLI only ever hold the port. Also what `secflow doctor`
//! says about the store, read without opening it for writing.

use serde::Serialize;

use secflow_core::config::{StorageBackend, StorageConfig};
use secflow_store::transfer::{DumpCounts, ImportReport, TransferError};
use secflow_store::{StorageError, StoragePort};
use secflow_store_postgres::PostgresStore;
use secflow_store_sqlite::SqliteStore;

/// The store the config names, opened and migrated, writing as `host`.
pub fn open_store(
    config: &StorageConfig,
    host: &str,
) -> Result<Box<dyn StoragePort>, StorageError> {
    Ok(match config.backend {
        StorageBackend::Sqlite => Box::new(SqliteStore::open_as(config, host)?),
        StorageBackend::Postgres => Box::new(PostgresStore::open(config, host)?),
    })
}

/// Which store is in use and what state it is in.
#[derive(Debug, Clone, Serialize)]
pub struct StoreProbe {
    pub backend: StorageBackend,
    /// The file, or the server without credentials.
    pub location: String,
    /// Whether it answered (a missing SQLite file is reachable: it is made
    /// at start).
    pub reachable: bool,
    /// Its schema version (0 when empty), and the one this build writes.
    pub schema_version: Option<i64>,
    pub known_version: i64,
    /// `true` when at the known version; `false` when older (the daemon
    /// migrates it at start) or newer (this build refuses it).
    pub migrated: bool,
    /// Why it is unreachable or unusable.
    pub error: Option<String>,
}

impl StoreProbe {
    /// Whether the daemon can use it: reachable and not newer than this build.
    pub fn usable(&self) -> bool {
        self.reachable && self.schema_version.is_none_or(|v| v <= self.known_version)
    }
}

/// Looks at the configured store without migrating or writing it.
pub fn probe_store(config: &StorageConfig) -> StoreProbe {
    let (location, known, found) = match config.backend {
        StorageBackend::Sqlite => (
            config.path.display().to_string(),
            secflow_store_sqlite::SCHEMA_VERSION,
            secflow_store_sqlite::probe(&config.path).map(|v| v.unwrap_or(0)),
        ),
        StorageBackend::Postgres => {
            let location = config
                .postgres_url()
                .map(|url| StorageConfig::postgres_location(&url))
                .unwrap_or_else(|_| "postgres server".to_string());
            (
                location,
                secflow_store_postgres::SCHEMA_VERSION,
                secflow_store_postgres::probe(config).map(|s| s.schema_version),
            )
        }
    };
    let (version, error) = match found {
        Ok(version) => (Some(version), None),
        Err(e) => (None, Some(secflow_core::error_chain(&e))),
    };
    StoreProbe {
        backend: config.backend,
        location,
        reachable: version.is_some(),
        migrated: version == Some(known),
        schema_version: version,
        known_version: known,
        error,
    }
}

/// Writes the SQLite database `storage.path` names as a dump (whatever the
/// configured backend: moving to PostgreSQL starts from the old file).
pub fn export_sqlite(
    config: &StorageConfig,
    host: &str,
    out: impl std::io::Write,
) -> Result<DumpCounts, TransferError> {
    secflow_store_sqlite::export(config, host, out)
}

/// Imports a dump into the configured store, which must be PostgreSQL (the
/// fleet store a host's SQLite file moves into).
pub fn import_into_store(
    config: &StorageConfig,
    input: impl std::io::BufRead + Send + 'static,
) -> Result<ImportReport, ImportError> {
    match config.backend {
        StorageBackend::Postgres => Ok(secflow_store_postgres::import(config, input)?),
        StorageBackend::Sqlite => Err(ImportError::NotPostgres),
    }
}

/// An import that was not made.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("storage.backend is \"sqlite\": an import goes into a postgres store (set backend = \"postgres\" and url)")]
    NotPostgres,
    #[error(transparent)]
    Transfer(#[from] TransferError),
}
