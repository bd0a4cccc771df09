//! Section 7, fleet-store ingestion: the same findings written through the
//! storage port into PostgreSQL (a real private server, the store's batched
//! `unnest … ON CONFLICT` upserts) and into SQLite (the embedded path), and
//! loaded by a plain `psql \copy` into a bare table with a unique fingerprint
//! (PostgreSQL's own bulk path: no dedup logic, no observations, no JSON).
//!
//! The port's rate runs from the first queued batch to the answer of the
//! run's final record, which comes once every finding before it is committed.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use secflow_bench::corpus::finding;
use secflow_core::config::{StorageBackend, StorageConfig, TlsMode};
use secflow_core::record::{RunRecord, RunStatus};
use secflow_plugin_sdk::protocol::{Category, Severity};
use secflow_store::{NewFinding, StoragePort, WriteOp};
use secflow_store_postgres::{testkit, PostgresStore};
use secflow_store_sqlite::SqliteStore;
use serde_json::{Map, Value};

use crate::report::Figure;
use crate::BenchError;

const SECTION: &str = "7 fleet store";

/// Findings per queued operation: what a session batches before sending.
const OP_FINDINGS: usize = 256;

pub fn run(count: u64) -> Result<Vec<Figure>, BenchError> {
    let Some(server) = testkit::own() else {
        // `own` said why (no PostgreSQL outside CI).
        return Ok(Vec::new());
    };
    let dir = tempfile::tempdir().map_err(|source| BenchError::Io {
        what: "creating a temp dir".into(),
        source,
    })?;
    let documents: Vec<(String, Value, String)> = (1..=count)
        .map(|i| {
            let text = finding(i);
            let document: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let url = document
                .pointer("/location/url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            (url, document, text)
        })
        .collect();

    eprintln!("[7 fleet store] {count} findings through the port into PostgreSQL");
    let postgres = {
        let config = StorageConfig {
            backend: StorageBackend::Postgres,
            url: Some(server.fresh_database()),
            tls: TlsMode::Disable,
            ..StorageConfig::default()
        };
        let store = PostgresStore::open(&config, "bench").map_err(setup)?;
        let rate = through_port(&store, &documents)?;
        store.shutdown().map_err(setup)?;
        rate
    };
    eprintln!("[7 fleet store] the same findings through the port into SQLite");
    let sqlite = {
        let config = StorageConfig {
            path: dir.path().join("bench.db"),
            ..StorageConfig::default()
        };
        let store = SqliteStore::open_as(&config, "bench").map_err(setup)?;
        let rate = through_port(&store, &documents)?;
        store.shutdown().map_err(setup)?;
        rate
    };
    eprintln!("[7 fleet store] the same rows with psql \\copy");
    let csv = dir.path().join("findings.csv");
    write_csv(&csv, &documents)?;
    let copy = psql_copy(&server, &csv, count)?;

    let measure = format!("port into PostgreSQL, {count} findings");
    Ok(vec![
        Figure::new(SECTION, "psql \\copy into a bare table", copy, "findings/s"),
        Figure::new(
            SECTION,
            format!("port into SQLite, {count} findings"),
            sqlite,
            "findings/s",
        ),
        Figure::new(SECTION, measure.clone(), postgres, "findings/s").against("sqlite", sqlite),
        Figure::new(SECTION, measure, postgres, "findings/s").against("psql \\copy", copy),
    ])
}

fn setup(e: secflow_store::StorageError) -> BenchError {
    BenchError::Setup(secflow_core::error_chain(&e))
}

/// Findings per second through `store`'s writer: one detector run.
fn through_port(
    store: &dyn StoragePort,
    documents: &[(String, Value, String)],
) -> Result<f64, BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: "starting a runtime".into(),
            source,
        })?;
    let record = RunRecord {
        run_id: "bench-run".into(),
        plugin: "bench-streamer".into(),
        plugin_version: "1.0.0".into(),
        category: Category::Detector,
        status: RunStatus::Running,
        partial: false,
        exit_code: None,
        signal: None,
        started_at: secflow_core::clock::now_rfc3339(),
        finished_at: None,
        duration_ms: 0,
        cpu_ms: 0,
        memory_mb: 0,
        findings: 0,
        findings_rejected: 0,
        outputs: Map::new(),
        error: None,
        stderr_tail: String::new(),
        workflow_id: None,
        node_id: None,
        refused_egress: Vec::new(),
    };
    // Built before the clock starts, as a session would have them.
    let ops: Vec<Vec<NewFinding>> = documents
        .chunks(OP_FINDINGS)
        .map(|chunk| {
            chunk
                .iter()
                .map(|(url, document, text)| {
                    let severity = document
                        .get("severity")
                        .and_then(Value::as_str)
                        .and_then(Severity::parse)
                        .unwrap_or(Severity::Unknown);
                    NewFinding::detected(
                        url.clone(),
                        severity,
                        document.clone(),
                        Some(text.clone()),
                    )
                })
                .collect()
        })
        .collect();
    let writer = store.writer();
    let stored = runtime.block_on(async {
        let start = Instant::now();
        writer.send(WriteOp::RunStarted(record.clone())).await?;
        for findings in ops {
            writer
                .send(WriteOp::Findings {
                    run_id: record.run_id.clone(),
                    plugin: record.plugin.clone(),
                    plugin_version: record.plugin_version.clone(),
                    findings,
                })
                .await?;
        }
        let mut done = record.clone();
        done.status = RunStatus::Succeeded;
        done.finished_at = Some(secflow_core::clock::now_rfc3339());
        let stored = writer.finish_run(done).await?;
        Ok::<_, secflow_store::StorageError>((stored, start.elapsed()))
    });
    let (stored, elapsed) = stored.map_err(setup)?;
    if stored.findings != documents.len() as u64 || stored.status != RunStatus::Succeeded {
        return Err(BenchError::Plugin(format!(
            "the store kept {} findings of {}: {stored:?}",
            stored.findings,
            documents.len()
        )));
    }
    Ok(documents.len() as f64 / elapsed.as_secs_f64())
}

/// The rows as CSV: fingerprint, rule_id, title, severity, target, document.
fn write_csv(path: &Path, documents: &[(String, Value, String)]) -> Result<(), BenchError> {
    let io = |source| BenchError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for (url, document, text) in documents {
        let field = |k: &str| document.get(k).and_then(Value::as_str).unwrap_or_default();
        writeln!(
            out,
            "{},{},{},{},{},{}",
            quote(url),
            quote(field("rule_id")),
            quote(field("title")),
            quote(field("severity")),
            quote(field("target")),
            quote(text)
        )
        .map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Rows per second of `psql \copy` (its own process start included).
fn psql_copy(server: &testkit::TestServer, csv: &Path, count: u64) -> Result<f64, BenchError> {
    let url = server.fresh_database();
    let database = url.rsplit('/').next().unwrap_or_default().to_string();
    server
        .psql(
            &database,
            "CREATE TABLE bare (id BIGSERIAL PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, \
             rule_id TEXT NOT NULL, title TEXT NOT NULL, severity TEXT NOT NULL, \
             target TEXT NOT NULL, document TEXT NOT NULL)",
        )
        .map_err(BenchError::Setup)?;
    let start = Instant::now();
    let out = Command::new(server.bin_dir().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c"])
        .arg(format!(
            "\\copy bare (fingerprint, rule_id, title, severity, target, document) FROM '{}' WITH (FORMAT csv)",
            csv.display()
        ))
        .output()
        .map_err(|source| BenchError::Io {
            what: "running psql".into(),
            source,
        })?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(BenchError::Plugin(format!(
            "psql \\copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let loaded = server
        .psql(&database, "SELECT count(*) FROM bare")
        .map_err(BenchError::Setup)?;
    if loaded != count.to_string() {
        return Err(BenchError::Plugin(format!(
            "psql \\copy loaded {loaded} rows of {count}"
        )));
    }
    Ok(count as f64 / seconds)
}
