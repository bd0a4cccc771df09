//! The `findings` and `finding_observations` tables: deduplication by
//! fingerprint across every host, observations per run and host, enrichers'
//! merges, and the findings query.

use std::collections::BTreeMap;

use secflow_store::document::{
    merge_enrichment, page_limit, severity_rank, FindingRow, DEFAULT_FINDINGS_LIMIT,
};
use secflow_store::{FindingQuery, NewFinding, StorageError};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use crate::runs::from_sql_int;
use crate::{db_error, param_refs, Params};

/// A stored finding's columns, in [`finding_row`]'s order: the one list.
pub(crate) const FINDING_COLUMNS: &str = "f.id, f.run_id, f.plugin_name, f.plugin_version, \
    f.fingerprint, f.first_seen, f.last_seen, f.occurrences, f.severity, f.document, \
    f.enrichment, f.enrichment_vulnerabilities, \
    ARRAY(SELECT DISTINCT o.host FROM finding_observations o WHERE o.finding_id = f.id ORDER BY 1)";

/// A batch of findings in one statement: new fingerprints are inserted,
/// known ones (whichever host first stored them) are counted again and take
/// the newest document; what enrichers merged lives in its own columns, and
/// the effective severity never drops below what they raised it to.
const UPSERT_FINDINGS: &str = "\
INSERT INTO findings (fingerprint, run_id, plugin_name, plugin_version, rule_id, title,
    severity, severity_rank, target, first_seen, last_seen, occurrences, document)
SELECT u.fingerprint, $1, $2, $3, u.rule_id, u.title, u.severity, u.severity_rank, u.target,
    $4, $4, u.occurrences, u.document
FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::int[], $10::text[],
    $11::bigint[], $12::text[])
    AS u(fingerprint, rule_id, title, severity, severity_rank, target, occurrences, document)
ORDER BY u.fingerprint
ON CONFLICT (fingerprint) DO UPDATE SET
    occurrences = findings.occurrences + excluded.occurrences,
    last_seen = excluded.last_seen,
    rule_id = excluded.rule_id,
    title = excluded.title,
    target = excluded.target,
    document = excluded.document,
    severity = CASE WHEN excluded.severity_rank >= findings.enriched_severity_rank
        THEN excluded.severity ELSE findings.enriched_severity END,
    severity_rank = GREATEST(excluded.severity_rank, findings.enriched_severity_rank)
RETURNING id";

/// The run (on this host) observed these findings.
const INSERT_OBSERVATIONS: &str = "\
INSERT INTO finding_observations (run_id, finding_id, host)
SELECT $1, id, $2 FROM unnest($3::bigint[]) AS u(id)
ON CONFLICT (run_id, finding_id) DO NOTHING";

/// One fingerprint's share of a batch: how often it came, and the newest of it.
struct Seen<'a> {
    newest: &'a NewFinding,
    times: i64,
}

/// Stores a detector's batch; two statements whatever its size.
pub(crate) async fn store_findings(
    client: &impl GenericClient,
    run_id: &str,
    plugin: &str,
    plugin_version: &str,
    host: &str,
    findings: &[NewFinding],
    now: &str,
) -> Result<(), tokio_postgres::Error> {
    if findings.is_empty() {
        return Ok(());
    }
    // One row per fingerprint (`ON CONFLICT` may touch a row once per
    // statement), in fingerprint order (the order rows are locked in).
    let mut by_fingerprint: BTreeMap<&str, Seen<'_>> = BTreeMap::new();
    for f in findings {
        by_fingerprint
            .entry(&f.fingerprint)
            .and_modify(|seen| {
                seen.newest = f;
                seen.times += 1;
            })
            .or_insert(Seen {
                newest: f,
                times: 1,
            });
    }
    let n = by_fingerprint.len();
    let mut fingerprints = Vec::with_capacity(n);
    let mut rule_ids = Vec::with_capacity(n);
    let mut titles = Vec::with_capacity(n);
    let mut severities = Vec::with_capacity(n);
    let mut ranks = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut documents = Vec::with_capacity(n);
    for (fingerprint, seen) in &by_fingerprint {
        let f = seen.newest;
        fingerprints.push(*fingerprint);
        rule_ids.push(f.rule_id.as_str());
        titles.push(f.title.as_str());
        severities.push(f.severity.as_str());
        ranks.push(i32::try_from(severity_rank(f.severity)).unwrap_or(0));
        targets.push(f.target.as_str());
        times.push(seen.times);
        documents.push(f.document_json.as_str());
    }
    let params: Params<'_> = vec![
        &run_id,
        &plugin,
        &plugin_version,
        &now,
        &fingerprints,
        &rule_ids,
        &titles,
        &severities,
        &ranks,
        &targets,
        &times,
        &documents,
    ];
    let ids: Vec<i64> = client
        .query(UPSERT_FINDINGS, &params)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    client
        .execute(INSERT_OBSERVATIONS, &[&run_id, &host, &ids])
        .await?;
    Ok(())
}

const SELECT_ENRICHABLE: &str = "\
SELECT id, enrichment, enrichment_vulnerabilities, enriched_severity_rank
FROM findings WHERE fingerprint = $1 FOR UPDATE";

const UPDATE_ENRICHMENT: &str = "\
UPDATE findings SET
    enrichment = $2,
    enrichment_vulnerabilities = $3,
    enriched_severity = $4,
    enriched_severity_rank = $5,
    severity = CASE WHEN $5 > severity_rank THEN $4 ELSE severity END,
    severity_rank = GREATEST(severity_rank, $5)
WHERE id = $1";

/// Merges an enricher's findings into the stored ones they name by
/// fingerprint (locking each row, since another host's enricher may merge
/// into it too); returns (accepted, rejected).
pub(crate) async fn merge_enrichments(
    client: &impl GenericClient,
    run_id: &str,
    plugin: &str,
    host: &str,
    findings: &[NewFinding],
) -> Result<(u64, u64), tokio_postgres::Error> {
    let (mut accepted, mut rejected) = (0, 0);
    let mut observed = Vec::new();
    for f in findings {
        let Some(row) = client
            .query_opt(SELECT_ENRICHABLE, &[&f.fingerprint])
            .await?
        else {
            tracing::warn!(
                run_id,
                plugin,
                fingerprint = %f.fingerprint,
                "enrichment names no stored finding; counted as rejected"
            );
            rejected += 1;
            continue;
        };
        let id: i64 = row.try_get(0)?;
        let enrichment: String = row.try_get(1)?;
        let vulnerabilities: String = row.try_get(2)?;
        let enriched_rank: i32 = row.try_get(3)?;
        let merged = merge_enrichment(
            &enrichment,
            &vulnerabilities,
            i64::from(enriched_rank),
            plugin,
            f,
        );
        let rank = i32::try_from(merged.rank).unwrap_or(0);
        client
            .execute(
                UPDATE_ENRICHMENT,
                &[
                    &id,
                    &merged.enrichment,
                    &merged.vulnerabilities,
                    &merged.severity.as_str(),
                    &rank,
                ],
            )
            .await?;
        observed.push(id);
        accepted += 1;
    }
    if !observed.is_empty() {
        client
            .execute(INSERT_OBSERVATIONS, &[&run_id, &host, &observed])
            .await?;
    }
    Ok((accepted, rejected))
}

pub(crate) fn finding_row(row: &Row) -> Result<FindingRow, StorageError> {
    let get = |i: usize| row.try_get::<_, String>(i).map_err(db_error);
    Ok(FindingRow {
        id: row.try_get(0).map_err(db_error)?,
        run_id: get(1)?,
        plugin_name: get(2)?,
        plugin_version: get(3)?,
        fingerprint: get(4)?,
        first_seen: get(5)?,
        last_seen: get(6)?,
        occurrences: from_sql_int(row.try_get(7).map_err(db_error)?),
        severity: get(8)?,
        document: get(9)?,
        enrichment: get(10)?,
        enrichment_vulnerabilities: get(11)?,
        hosts: row.try_get(12).map_err(db_error)?,
    })
}

/// One page of findings rows for `query`, in id order, and its limit.
pub(crate) async fn page(
    client: &impl GenericClient,
    query: &FindingQuery,
) -> Result<(Vec<FindingRow>, u32), StorageError> {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut sql = format!("SELECT {FINDING_COLUMNS} FROM findings f WHERE true");
    let mut arg = |value: Box<dyn ToSql + Sync + Send>| {
        params.push(value);
        format!("${}", params.len())
    };
    if let Some(run_id) = &query.run_id {
        sql.push_str(&format!(
            " AND f.id IN (SELECT finding_id FROM finding_observations WHERE run_id = {})",
            arg(Box::new(run_id.clone()))
        ));
    }
    if let Some(host) = &query.host {
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM finding_observations o WHERE o.finding_id = f.id AND o.host = {})",
            arg(Box::new(host.clone()))
        ));
    }
    if let Some(plugin) = &query.plugin {
        sql.push_str(&format!(
            " AND f.plugin_name = {}",
            arg(Box::new(plugin.clone()))
        ));
    }
    if let Some(min) = query.min_severity {
        let rank = i32::try_from(severity_rank(min)).unwrap_or(0);
        sql.push_str(&format!(" AND f.severity_rank >= {}", arg(Box::new(rank))));
    }
    // translate() folds ASCII only, as the pattern is folded: lower() would
    // follow the database's locale and disagree with the SQLite store.
    if let Some(target) = &query.target {
        sql.push_str(&format!(
            " AND strpos({}, {}) > 0",
            ascii_lower("f.target"),
            arg(Box::new(FindingQuery::search_pattern(target)))
        ));
    }
    if let Some(text) = &query.text {
        let text = arg(Box::new(FindingQuery::search_pattern(text)));
        sql.push_str(&format!(
            " AND (strpos({}, {text}) > 0 OR strpos({}, {text}) > 0)",
            ascii_lower("f.title"),
            ascii_lower("f.rule_id")
        ));
    }
    if let Some(after) = query.after {
        sql.push_str(&format!(" AND f.id > {}", arg(Box::new(after))));
    }
    if let Some(end) = query.window_end() {
        sql.push_str(&format!(" AND f.id <= {}", arg(Box::new(end))));
    }
    let limit = page_limit(query.limit, DEFAULT_FINDINGS_LIMIT);
    sql.push_str(&format!(
        " ORDER BY f.id LIMIT {}",
        arg(Box::new(i64::from(limit)))
    ));
    let rows = client
        .query(&sql, &param_refs(&params))
        .await
        .map_err(db_error)?;
    let rows = rows.iter().map(finding_row).collect::<Result<_, _>>()?;
    Ok((rows, limit))
}

/// SQL folding `column`'s ASCII capitals to lowercase, and nothing else.
fn ascii_lower(column: &str) -> String {
    format!("translate({column}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')")
}

/// The highest finding id, when a windowed page came back short and its
/// cursor depends on whether findings lie beyond the window
/// ([`FindingQuery::next_cursor`]); `None` otherwise, without a query.
pub(crate) async fn highest_if_windowed(
    client: &impl GenericClient,
    query: &FindingQuery,
    returned: usize,
    limit: u32,
) -> Result<Option<i64>, StorageError> {
    if query.window.is_none() || returned == limit as usize {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT max(id) FROM findings", &[])
        .await
        .map_err(db_error)?;
    row.try_get(0).map_err(db_error)
}
