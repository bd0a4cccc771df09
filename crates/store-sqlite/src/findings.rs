//! The `findings` and `finding_runs` tables: deduplication by fingerprint,
//! sightings per run, enrichers' merges, and the findings queries.

use super::*;

/// The run that first reported a stored finding.
const SELECT_FIRST_RUN: &str = "SELECT run_id FROM findings WHERE id = ?1";

/// A new finding, with the id [`store_findings`] gave it: the next after the
/// highest stored, in the order the findings arrived (the id SQLite would
/// choose itself had they been inserted in that order). The writer looked its
/// fingerprint up first (the writer is the only one inserting findings, so the
/// fingerprint stays unique).
pub(crate) const INSERT_FINDING: &str = "\
INSERT INTO findings (id, fingerprint, fingerprint_key, run_id, plugin_name, plugin_version,
    rule_id, title, severity, severity_rank, target, first_seen, last_seen, occurrences,
    document, host)
VALUES (?14, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, 1, ?12, ?13)";

/// Seen again: count it, keep the newest document; what enrichers merged lives
/// in its own columns, and the effective severity never drops below what they
/// raised it to.
pub(crate) const UPDATE_SEEN_AGAIN: &str = "\
UPDATE findings SET
    occurrences = occurrences + 1,
    last_seen = ?2,
    rule_id = ?3,
    title = ?4,
    target = ?5,
    document = ?6,
    severity = CASE WHEN ?8 >= enriched_severity_rank THEN ?7 ELSE enriched_severity END,
    severity_rank = max(?8, enriched_severity_rank)
WHERE id = ?1";

/// A run reported a finding that another run first reported.
pub(crate) const INSERT_SIGHTING: &str =
    "INSERT OR IGNORE INTO finding_sightings (run_id, finding_id, host) VALUES (?1, ?2, ?3)";

/// Widens the id range of the findings a run first reported (one statement per
/// batch: the range is how queries find those findings without a per-finding
/// observation row or index entry).
pub(crate) const WIDEN_RUN_RANGE: &str = "\
INSERT INTO run_finding_ranges (run_id, first_id, last_id) VALUES (?1, ?2, ?3)
ON CONFLICT (run_id) DO UPDATE SET
    first_id = min(first_id, excluded.first_id),
    last_id = max(last_id, excluded.last_id)";

/// One operation's findings from a detector or analytics run.
pub(crate) struct Detected {
    pub(crate) run_id: String,
    pub(crate) plugin: String,
    pub(crate) plugin_version: String,
    pub(crate) findings: Vec<NewFinding>,
}

impl Detected {
    /// The findings of a `WriteOp::Findings`.
    pub(crate) fn of(op: WriteOp) -> Option<Detected> {
        match op {
            WriteOp::Findings {
                run_id,
                plugin,
                plugin_version,
                findings,
            } => Some(Detected {
                run_id,
                plugin,
                plugin_version,
                findings,
            }),
            _ => None,
        }
    }
}

/// What the lookup of a finding's fingerprint found.
enum Lookup {
    /// Nothing: the finding is new.
    Absent,
    /// A stored finding, and the run that first reported it.
    Stored { id: i64, first_run: String },
    /// A new finding earlier in the same transaction (its index in arrival
    /// order).
    Repeats(usize),
}

/// Stores the findings of consecutive operations, looked up in key order.
///
/// The fingerprint key is a hash, so findings in arrival order land on
/// random pages of the merged key table (`fingerprints`); past the page
/// cache each lookup would read a page back. Taken in key order, a
/// transaction's lookups walk the table once, each page read at most once
/// however many findings land on it. The outcome is the one of arrival order:
/// new findings get their ids in arrival order, and the findings with one
/// fingerprint are applied in arrival order (the first inserts, the later
/// ones count as seen again, the newest document wins).
pub(crate) fn store_findings(
    tx: &Transaction<'_>,
    keys: &mut FingerprintIndex,
    detected: &[Detected],
    host: &str,
    now: &str,
) -> Result<(), rusqlite::Error> {
    // (operation, finding) in arrival order, and that order sorted by key.
    let arrived: Vec<(usize, &NewFinding)> = detected
        .iter()
        .enumerate()
        .flat_map(|(op, d)| d.findings.iter().map(move |f| (op, f)))
        .collect();
    let mut by_key: Vec<usize> = (0..arrived.len()).collect();
    by_key.sort_unstable_by_key(|&i| (arrived[i].1.fingerprint_key, i));

    // Which findings are new: one lookup per fingerprint, in key order. A
    // fingerprint seen earlier in this transaction is found among the
    // findings before it with the same key (they are adjacent in `by_key`).
    let mut select_first_run = tx.prepare_cached(SELECT_FIRST_RUN)?;
    let mut lookups: Vec<Lookup> = Vec::with_capacity(arrived.len());
    lookups.resize_with(arrived.len(), || Lookup::Absent);
    let mut first_of_key = 0;
    for (position, &i) in by_key.iter().enumerate() {
        let f = arrived[i].1;
        if arrived[by_key[first_of_key]].1.fingerprint_key != f.fingerprint_key {
            first_of_key = position;
        }
        // The first with the same fingerprint (the earliest: ties are in
        // arrival order) decides: the same stored finding, or the one it inserts.
        let earlier = by_key[first_of_key..position]
            .iter()
            .find(|&&j| arrived[j].1.fingerprint == f.fingerprint);
        lookups[i] = match earlier {
            Some(&j) => match &lookups[j] {
                Lookup::Absent => Lookup::Repeats(j),
                Lookup::Stored { id, first_run } => Lookup::Stored {
                    id: *id,
                    first_run: first_run.clone(),
                },
                Lookup::Repeats(k) => Lookup::Repeats(*k),
            },
            None => match keys.find(tx, f.fingerprint_key, &f.fingerprint)? {
                Some(id) => Lookup::Stored {
                    id,
                    first_run: select_first_run.query_row([id], |row| row.get(0))?,
                },
                None => Lookup::Absent,
            },
        };
    }

    // Ids for the new ones, in arrival order.
    let mut next_id = keys.next_id();
    let ids: Vec<i64> = lookups
        .iter()
        .map(|lookup| match lookup {
            Lookup::Absent => {
                next_id += 1;
                next_id - 1
            }
            _ => 0,
        })
        .collect();

    let mut insert = tx.prepare_cached(INSERT_FINDING)?;
    let mut update = tx.prepare_cached(UPDATE_SEEN_AGAIN)?;
    let mut inserted_ids: Vec<Option<(i64, i64)>> = vec![None; detected.len()];
    for &i in &by_key {
        let (op, f) = arrived[i];
        let d = &detected[op];
        // Serialized by the session; bound as text without a copy.
        let document = ToSqlOutput::Borrowed(ValueRef::Text(f.document_json.as_bytes()));
        let rank = severity_rank(f.severity);
        let (id, first_run) = match &lookups[i] {
            Lookup::Absent => {
                let id = ids[i];
                insert.execute(params![
                    f.fingerprint,
                    f.fingerprint_key,
                    d.run_id,
                    d.plugin,
                    d.plugin_version,
                    f.rule_id,
                    f.title,
                    f.severity.as_str(),
                    rank,
                    f.target,
                    now,
                    document,
                    host,
                    id,
                ])?;
                keys.inserted(f.fingerprint_key, id);
                let range = &mut inserted_ids[op];
                *range = Some(range.map_or((id, id), |(lo, hi)| (lo.min(id), hi.max(id))));
                continue;
            }
            Lookup::Stored { id, first_run } => (*id, first_run.as_str()),
            Lookup::Repeats(j) => (ids[*j], detected[arrived[*j].0].run_id.as_str()),
        };
        update.execute(params![
            id,
            now,
            f.rule_id,
            f.title,
            f.target,
            document,
            f.severity.as_str(),
            rank,
        ])?;
        // A sighting is only recorded for a run other than the first.
        if first_run != d.run_id {
            tx.prepare_cached(INSERT_SIGHTING)?
                .execute(params![d.run_id, id, host])?;
        }
    }
    for (d, range) in detected.iter().zip(inserted_ids) {
        if let Some((first, last)) = range {
            tx.prepare_cached(WIDEN_RUN_RANGE)?
                .execute(params![d.run_id, first, last])?;
        }
    }
    keys.merge_if_full(tx)
}

pub(crate) const SELECT_ENRICHABLE: &str = "\
SELECT enrichment, enrichment_vulnerabilities, enriched_severity_rank FROM findings WHERE id = ?1";

pub(crate) const UPDATE_ENRICHMENT: &str = "\
UPDATE findings SET
    enrichment = ?2,
    enrichment_vulnerabilities = ?3,
    enriched_severity = ?4,
    enriched_severity_rank = ?5,
    severity = CASE WHEN ?5 > severity_rank THEN ?4 ELSE severity END,
    severity_rank = max(severity_rank, ?5)
WHERE id = ?1";

/// Merges an enricher's findings into the stored ones they name by fingerprint;
/// returns (accepted, rejected).
pub(crate) fn merge_enrichments(
    tx: &Transaction<'_>,
    keys: &FingerprintIndex,
    run_id: &str,
    plugin: &str,
    host: &str,
    findings: &[NewFinding],
) -> Result<(u64, u64), rusqlite::Error> {
    let mut select = tx.prepare_cached(SELECT_ENRICHABLE)?;
    let mut update = tx.prepare_cached(UPDATE_ENRICHMENT)?;
    let mut observe_one = tx.prepare_cached(INSERT_SIGHTING)?;
    let (mut accepted, mut rejected) = (0, 0);
    for f in findings {
        let Some(id) = keys.find(tx, f.fingerprint_key, &f.fingerprint)? else {
            tracing::warn!(
                run_id,
                plugin,
                fingerprint = %f.fingerprint,
                "enrichment names no stored finding; counted as rejected"
            );
            rejected += 1;
            continue;
        };
        let (enrichment, vulnerabilities, enriched_rank): (String, String, i64) =
            select.query_row([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;

        let merged = merge_enrichment(&enrichment, &vulnerabilities, enriched_rank, plugin, f);
        update.execute(params![
            id,
            merged.enrichment,
            merged.vulnerabilities,
            merged.severity.as_str(),
            merged.rank,
        ])?;
        observe_one.execute(params![run_id, id, host])?;
        accepted += 1;
    }
    Ok((accepted, rejected))
}

/// How many findings the run in `runs.run_id` reported (first seen or seen
/// again), as a correlated subquery: its id range, then its sightings.
pub(crate) const OBSERVED_BY_RUN: &str = "((SELECT count(*) FROM findings f \
    WHERE f.id BETWEEN (SELECT first_id FROM run_finding_ranges r WHERE r.run_id = runs.run_id) \
    AND (SELECT last_id FROM run_finding_ranges r WHERE r.run_id = runs.run_id) \
    AND f.run_id = runs.run_id) \
    + (SELECT count(*) FROM finding_sightings s WHERE s.run_id = runs.run_id))";

pub(crate) const FINDING_COLUMNS: &str =
    "f.id, f.run_id, f.plugin_name, f.plugin_version, f.fingerprint, \
    f.first_seen, f.last_seen, f.occurrences, f.severity, f.document, f.enrichment, \
    f.enrichment_vulnerabilities, f.host, \
    (SELECT json_group_array(DISTINCT s.host) FROM finding_sightings s WHERE s.finding_id = f.id)";

/// A findings row's columns ([`FINDING_COLUMNS`]).
pub(crate) fn finding_row(row: &Row<'_>) -> Result<FindingRow, StorageError> {
    Ok(FindingRow {
        id: row.get(0).map_err(db_error)?,
        run_id: row.get(1).map_err(db_error)?,
        plugin_name: row.get(2).map_err(db_error)?,
        plugin_version: row.get(3).map_err(db_error)?,
        fingerprint: row.get(4).map_err(db_error)?,
        first_seen: row.get(5).map_err(db_error)?,
        last_seen: row.get(6).map_err(db_error)?,
        occurrences: from_sql_int(row.get(7).map_err(db_error)?),
        severity: row.get(8).map_err(db_error)?,
        document: row.get(9).map_err(db_error)?,
        enrichment: row.get(10).map_err(db_error)?,
        enrichment_vulnerabilities: row.get(11).map_err(db_error)?,
        hosts: hosts_of(row)?,
    })
}

/// The first observation's host and the sightings' (`[FINDING_COLUMNS]` 12
/// and 13), sorted, each once.
fn hosts_of(row: &Row<'_>) -> Result<Vec<String>, StorageError> {
    let first: String = row.get(12).map_err(db_error)?;
    let others: Option<String> = row.get(13).map_err(db_error)?;
    let mut hosts: Vec<String> = match others {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StorageError::Malformed(format!("finding sightings' hosts: {e}")))?,
        None => Vec::new(),
    };
    hosts.push(first);
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

pub(crate) fn read_finding(row: &Row<'_>) -> Result<StoredFinding, StorageError> {
    finding_row(row)?.into_stored()
}

/// Appends a findings row ([`FINDING_COLUMNS`]) to a page's text.
pub(crate) fn push_finding_text(
    page: &mut FindingsArray,
    row: &Row<'_>,
) -> Result<(), StorageError> {
    page.push(finding_row(row)?)
}

/// The SQL of a findings page, its arguments and its limit.
pub(crate) fn findings_sql(query: &FindingQuery) -> (String, Vec<SqlValue>, u32) {
    // Numbered parameters: a run's query repeats the filters in both arms.
    let mut args = Vec::new();
    let mut arg = |value: SqlValue| {
        args.push(value);
        format!("?{}", args.len())
    };
    let mut filters = String::new();
    if let Some(host) = &query.host {
        let host = arg(SqlValue::Text(host.clone()));
        filters.push_str(&format!(
            " AND (f.host = {host} OR EXISTS (SELECT 1 FROM finding_sightings s \
             WHERE s.finding_id = f.id AND s.host = {host}))"
        ));
    }
    if let Some(plugin) = &query.plugin {
        filters.push_str(&format!(
            " AND f.plugin_name = {}",
            arg(SqlValue::Text(plugin.clone()))
        ));
    }
    if let Some(min) = query.min_severity {
        filters.push_str(&format!(
            " AND f.severity_rank >= {}",
            arg(SqlValue::Integer(severity_rank(min)))
        ));
    }
    // SQLite's lower() folds ASCII only, as the pattern is folded.
    if let Some(target) = &query.target {
        filters.push_str(&format!(
            " AND instr(lower(f.target), {}) > 0",
            arg(SqlValue::Text(FindingQuery::search_pattern(target)))
        ));
    }
    if let Some(text) = &query.text {
        let text = arg(SqlValue::Text(FindingQuery::search_pattern(text)));
        filters.push_str(&format!(
            " AND (instr(lower(f.title), {text}) > 0 OR instr(lower(f.rule_id), {text}) > 0)"
        ));
    }
    if let Some(after) = query.after {
        filters.push_str(&format!(" AND f.id > {}", arg(SqlValue::Integer(after))));
    }
    if let Some(end) = query.window_end() {
        filters.push_str(&format!(" AND f.id <= {}", arg(SqlValue::Integer(end))));
    }
    let limit = page_limit(query.limit, DEFAULT_FINDINGS_LIMIT);
    let limit_arg = arg(SqlValue::Integer(limit.into()));
    let sql = match &query.run_id {
        // What the run first reported (a rowid range of `findings`), then
        // what it saw again or enriched (`finding_sightings`); both arms
        // come in id order, so the page is a merge that stops at its limit.
        Some(run_id) => {
            let run = arg(SqlValue::Text(run_id.clone()));
            format!(
                    "SELECT {FINDING_COLUMNS} FROM findings f \
                     WHERE f.id BETWEEN (SELECT first_id FROM run_finding_ranges WHERE run_id = {run}) \
                     AND (SELECT last_id FROM run_finding_ranges WHERE run_id = {run}) \
                     AND f.run_id = {run}{filters} \
                     UNION ALL \
                     SELECT {FINDING_COLUMNS} FROM finding_sightings o \
                     JOIN findings f ON f.id = o.finding_id WHERE o.run_id = {run}{filters} \
                     ORDER BY 1 LIMIT {limit_arg}"
                )
        }
        None => format!(
            "SELECT {FINDING_COLUMNS} FROM findings f WHERE 1 = 1{filters} \
                 ORDER BY f.id LIMIT {limit_arg}"
        ),
    };
    (sql, args, limit)
}

/// The highest finding id stored (the primary key's last entry).
pub(crate) fn highest_finding_id(conn: &Connection) -> Result<Option<i64>, StorageError> {
    conn.query_row("SELECT max(id) FROM findings", [], |row| row.get(0))
        .map_err(db_error)
}
