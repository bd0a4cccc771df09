//! The storage behaviour suite (`secflow_store::conformance`) on SQLite.

use secflow_core::config::StorageConfig;
use secflow_store::conformance::StoreFixture;
use secflow_store::StoragePort;
use secflow_store_sqlite::SqliteStore;

/// A SQLite store on a database file in a directory of its own.
struct SqliteFixture {
    dir: tempfile::TempDir,
    store: Option<SqliteStore>,
}

impl SqliteFixture {
    fn open() -> Option<SqliteFixture> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut fixture = SqliteFixture { dir, store: None };
        fixture.reopen();
        Some(fixture)
    }

    fn config(&self) -> StorageConfig {
        StorageConfig {
            path: self.dir.path().join("db").join("secflow.db"),
            queue_capacity: 64,
            batch_size: 32,
            ..StorageConfig::default()
        }
    }
}

impl StoreFixture for SqliteFixture {
    fn store(&self) -> &dyn StoragePort {
        self.store.as_ref().expect("store is open")
    }

    fn reopen(&mut self) {
        self.close();
        self.store =
            Some(SqliteStore::open_as(&self.config(), self.host()).expect("open sqlite store"));
    }

    fn close(&mut self) {
        if let Some(store) = self.store.take() {
            store.shutdown().expect("clean shutdown");
        }
    }

    fn host(&self) -> &str {
        "scan-sqlite"
    }
}

secflow_store::storage_suite!(SqliteFixture::open());
