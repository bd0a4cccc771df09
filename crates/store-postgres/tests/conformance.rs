//! The storage behaviour suite (`secflow_store::conformance`) on PostgreSQL:
//! a real server (the testkit's, one per test process), a database per test.

use secflow_core::config::{StorageBackend, StorageConfig, TlsMode};
use secflow_store::conformance::StoreFixture;
use secflow_store::StoragePort;
use secflow_store_postgres::{testkit, PostgresStore};

/// A PostgreSQL store on a database of its own.
struct PostgresFixture {
    config: StorageConfig,
    store: Option<PostgresStore>,
}

impl PostgresFixture {
    fn open() -> Option<PostgresFixture> {
        let server = testkit::shared()?;
        let config = StorageConfig {
            backend: StorageBackend::Postgres,
            url: Some(server.fresh_database()),
            tls: TlsMode::Disable,
            queue_capacity: 64,
            batch_size: 32,
            ..StorageConfig::default()
        };
        let mut fixture = PostgresFixture {
            config,
            store: None,
        };
        fixture.reopen();
        Some(fixture)
    }
}

impl StoreFixture for PostgresFixture {
    fn store(&self) -> &dyn StoragePort {
        self.store.as_ref().expect("store is open")
    }

    fn reopen(&mut self) {
        self.close();
        self.store =
            Some(PostgresStore::open(&self.config, self.host()).expect("open postgres store"));
    }

    fn close(&mut self) {
        if let Some(store) = self.store.take() {
            store.shutdown().expect("clean shutdown");
        }
    }

    fn host(&self) -> &str {
        "scan-01"
    }
}

secflow_store::storage_suite!(PostgresFixture::open());
