//! What only the PostgreSQL store does: its schema versions shared by hosts
//! starting together, TLS to the server, and refusing what it cannot use.

use secflow_core::config::{StorageBackend, StorageConfig, TlsMode};
use secflow_store::{StorageError, StoragePort};
use secflow_store_postgres::{testkit, PostgresStore, SCHEMA_VERSION};

fn config(url: String, tls: TlsMode) -> StorageConfig {
    StorageConfig {
        backend: StorageBackend::Postgres,
        url: Some(url),
        tls,
        ..StorageConfig::default()
    }
}

fn database_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

#[test]
fn hosts_opening_one_new_database_together_migrate_it_once() {
    let Some(server) = testkit::shared() else {
        return;
    };
    let url = server.fresh_database();
    let stores: Vec<PostgresStore> = std::thread::scope(|scope| {
        let opening: Vec<_> = (0..4)
            .map(|i| {
                let config = config(url.clone(), TlsMode::Disable);
                scope.spawn(move || PostgresStore::open(&config, &format!("host-{i}")))
            })
            .collect();
        opening
            .into_iter()
            .map(|h| h.join().expect("opened").expect("store opens"))
            .collect()
    });
    let versions = server
        .psql(
            database_of(&url),
            "SELECT version FROM schema_migrations ORDER BY version",
        )
        .expect("psql");
    let expected: Vec<String> = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(versions, expected.join("\n"), "each step applied once");
    for store in stores {
        assert_eq!(
            store.status().expect("status").schema_version,
            SCHEMA_VERSION
        );
        store.shutdown().expect("shutdown");
    }
}

#[test]
fn a_database_with_a_newer_schema_is_refused_naming_the_server_without_credentials() {
    let Some(server) = testkit::shared() else {
        return;
    };
    let url = server.fresh_database();
    let db = database_of(&url);
    PostgresStore::open(&config(url.clone(), TlsMode::Disable), "h")
        .expect("first open")
        .shutdown()
        .expect("shutdown");
    server
        .psql(
            db,
            &format!(
                "INSERT INTO schema_migrations VALUES ({}, 'later')",
                SCHEMA_VERSION + 1
            ),
        )
        .expect("psql");
    let with_password = url.replace("secflow@", "secflow:hunter2@");
    let err = PostgresStore::open(&config(with_password, TlsMode::Disable), "h").unwrap_err();
    match &err {
        StorageError::TooNew {
            found,
            known,
            location,
        } => {
            assert_eq!((*found, *known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            assert!(
                location.ends_with(db) && !location.contains("hunter2"),
                "{location}"
            );
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn a_server_that_is_not_there_fails_the_open_naming_it() {
    let err = PostgresStore::open(
        &config(
            "postgres://secflow@127.0.0.1:1/none".into(),
            TlsMode::Disable,
        ),
        "h",
    )
    .unwrap_err();
    assert!(matches!(err, StorageError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1/none"), "{err}");
}

#[test]
fn tls_require_encrypts_and_verifies_the_server_against_the_ca_file() {
    let server = match testkit::TestServer::start_with_tls() {
        Ok(server) => server,
        Err(e @ testkit::TestServerError::NotInstalled) if !testkit::in_ci() => {
            eprintln!("skipping: {e}; CI is not \"true\", so this test is skipped");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let url = server.fresh_database();
    let db = database_of(&url).to_string();
    let mut verified = config(url.clone(), TlsMode::Require);
    verified.tls_ca_file = Some(server.ca_file());
    let store = PostgresStore::open(&verified, "h").expect("a TLS store opens");
    assert!(store.plugin_states().expect("a query over TLS").is_empty());
    let encrypted = server
        .psql(
            &db,
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'secflow'",
        )
        .expect("psql");
    assert_eq!(encrypted, "t", "every store connection is TLS");
    store.shutdown().expect("shutdown");

    // Without the CA the server's certificate is unknown: no connection.
    let err = PostgresStore::open(&config(url, TlsMode::Require), "h").unwrap_err();
    assert!(matches!(err, StorageError::Open { .. }), "{err:?}");

    // TLS required of a server that offers none: no plain connection either.
    if let Some(plain) = testkit::shared() {
        let mut required = config(plain.fresh_database(), TlsMode::Require);
        required.tls_ca_file = Some(server.ca_file());
        assert!(PostgresStore::open(&required, "h").is_err());
    }
}
