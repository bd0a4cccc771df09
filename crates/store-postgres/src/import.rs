//! `secflow storage import`: a dump (`secflow_store::transfer`) into the fleet
//! store, in one transaction that commits only when the database gained
//! exactly what the dump holds.
//!
//! Findings are matched by fingerprint: one the database already holds
//! (another host's) is merged into that row — occurrences added, first and
//! last seen widened, the newer document kept — so dedup holds across the
//! imported and the present findings, and the dump's observations are moved
//! to the row's id. A run the database already holds refuses the whole
//! import: the dump was imported before, and importing it again would count
//! its findings twice.

use std::collections::HashMap;

use secflow_core::config::StorageConfig;
use secflow_store::transfer::{DumpReader, DumpRecord, ImportReport, TransferError};
use tokio_postgres::GenericClient;

use crate::connect::Connector;
use crate::{db_error, migrations, runs, tables, Params, RUNTIME_THREAD_NAME};

/// Imports `input` into the database at `config`'s URL (migrated first).
pub fn import(
    config: &StorageConfig,
    input: impl std::io::BufRead + Send + 'static,
) -> Result<ImportReport, TransferError> {
    let connector = Connector::from_config(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(RUNTIME_THREAD_NAME)
        .enable_all()
        .build()
        .map_err(|e| {
            TransferError::Storage(secflow_store::StorageError::Open {
                location: connector.location().to_string(),
                kind: secflow_core::record::ErrorKind::StorageError,
                source: Box::new(e),
            })
        })?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(run_import(connector, input).await);
    });
    let outcome = rx.recv().unwrap_or_else(|_| {
        Err(TransferError::Storage(
            secflow_store::StorageError::WriterGone,
        ))
    });
    runtime.shutdown_background();
    outcome
}

/// Rows per table that an import must add.
const COUNTED: [(&str, &str); 5] = [
    ("runs", "runs"),
    ("findings", "findings"),
    ("observations", "finding_observations"),
    ("telemetry events", "telemetry"),
    ("audit events", "audit"),
];

async fn counts(client: &impl GenericClient) -> Result<[u64; 5], TransferError> {
    let mut out = [0; 5];
    for (slot, (_, table)) in out.iter_mut().zip(COUNTED) {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error)?;
        *slot = u64::try_from(n).unwrap_or(0);
    }
    Ok(out)
}

const UPSERT_IMPORTED_FINDING: &str = "\
INSERT INTO findings (fingerprint, run_id, plugin_name, plugin_version, rule_id, title,
    severity, severity_rank, target, first_seen, last_seen, occurrences, document, enrichment,
    enrichment_vulnerabilities, enriched_severity, enriched_severity_rank)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (fingerprint) DO UPDATE SET
    occurrences = findings.occurrences + excluded.occurrences,
    first_seen = LEAST(findings.first_seen, excluded.first_seen),
    last_seen = GREATEST(findings.last_seen, excluded.last_seen),
    document = CASE WHEN excluded.last_seen > findings.last_seen
        THEN excluded.document ELSE findings.document END,
    enrichment = CASE WHEN findings.enrichment = '{}'
        THEN excluded.enrichment ELSE findings.enrichment END,
    enrichment_vulnerabilities = CASE WHEN findings.enrichment_vulnerabilities = '[]'
        THEN excluded.enrichment_vulnerabilities ELSE findings.enrichment_vulnerabilities END,
    enriched_severity_rank = GREATEST(findings.enriched_severity_rank,
        excluded.enriched_severity_rank),
    enriched_severity = CASE WHEN excluded.enriched_severity_rank > findings.enriched_severity_rank
        THEN excluded.enriched_severity ELSE findings.enriched_severity END,
    severity = CASE WHEN excluded.severity_rank > findings.severity_rank
        THEN excluded.severity ELSE findings.severity END,
    severity_rank = GREATEST(findings.severity_rank, excluded.severity_rank)
RETURNING id, (xmax = 0)";

async fn run_import(
    connector: Connector,
    input: impl std::io::BufRead,
) -> Result<ImportReport, TransferError> {
    let location = connector.location().to_string();
    let mut client =
        connector
            .connect()
            .await
            .map_err(|source| secflow_store::StorageError::Open {
                location: location.clone(),
                kind: crate::pg_error_kind(&source),
                source: Box::new(source),
            })?;
    migrations::migrate(&mut client, &location).await?;
    // One snapshot: the counts before and after see only this import's
    // rows, whatever other hosts commit meanwhile. One of them updating a
    // finding the import merges into fails the import (run it again).
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(db_error)?;
    let before = counts(&tx).await?;
    let now = secflow_core::clock::now_rfc3339();
    let mut reader = DumpReader::new(input);
    let mut ids: HashMap<i64, i64> = HashMap::new();
    let mut merged = 0;
    while let Some(record) = reader.next_record()? {
        match record {
            DumpRecord::Plugin(state) => tables::upsert_plugin_state(&tx, &state)
                .await
                .map_err(db_error)?,
            DumpRecord::Run { host, record } => {
                let known = tx
                    .query_opt("SELECT 1 FROM runs WHERE run_id = $1", &[&record.run_id])
                    .await
                    .map_err(db_error)?;
                if known.is_some() {
                    return Err(TransferError::AlreadyImported {
                        run_id: record.run_id,
                    });
                }
                runs::upsert_run(&tx, &record, &host)
                    .await
                    .map_err(db_error)?;
            }
            DumpRecord::Finding(f) => {
                let occurrences = runs::sql_int(f.occurrences);
                let (rank, enriched_rank) = (
                    i32::try_from(f.severity_rank).unwrap_or(0),
                    i32::try_from(f.enriched_severity_rank).unwrap_or(0),
                );
                let params: Params<'_> = vec![
                    &f.fingerprint,
                    &f.run_id,
                    &f.plugin_name,
                    &f.plugin_version,
                    &f.rule_id,
                    &f.title,
                    &f.severity,
                    &rank,
                    &f.target,
                    &f.first_seen,
                    &f.last_seen,
                    &occurrences,
                    &f.document,
                    &f.enrichment,
                    &f.enrichment_vulnerabilities,
                    &f.enriched_severity,
                    &enriched_rank,
                ];
                let row = tx
                    .query_one(UPSERT_IMPORTED_FINDING, &params)
                    .await
                    .map_err(db_error)?;
                let id: i64 = row.try_get(0).map_err(db_error)?;
                let inserted: bool = row.try_get(1).map_err(db_error)?;
                if !inserted {
                    merged += 1;
                }
                ids.insert(f.id, id);
            }
            DumpRecord::Observation {
                run_id,
                finding_id,
                host,
            } => {
                let Some(id) = ids.get(&finding_id) else {
                    return Err(TransferError::UnknownFinding { run_id, finding_id });
                };
                tx.execute(
                    "INSERT INTO finding_observations (run_id, finding_id, host) \
                     VALUES ($1, $2, $3) ON CONFLICT (run_id, finding_id) DO NOTHING",
                    &[&run_id, id, &host],
                )
                .await
                .map_err(db_error)?;
            }
            DumpRecord::Telemetry { host, event } => tables::insert_telemetry(&tx, &event, &host)
                .await
                .map_err(db_error)?,
            DumpRecord::Audit { host, event } => tables::insert_audit(&tx, &event, &now, &host)
                .await
                .map_err(db_error)?,
            DumpRecord::Counts(_) => {}
        }
    }
    let read = reader.counts();
    let after = counts(&tx).await?;
    let expected = [
        read.runs,
        read.findings - merged,
        read.observations,
        read.telemetry,
        read.audit,
    ];
    for (((what, _), (b, a)), expected) in
        COUNTED.iter().zip(before.iter().zip(after)).zip(expected)
    {
        let found = a.saturating_sub(*b);
        if found != expected {
            return Err(TransferError::CountMismatch {
                what,
                expected,
                found,
            });
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(ImportReport {
        read,
        merged_findings: merged,
    })
}
