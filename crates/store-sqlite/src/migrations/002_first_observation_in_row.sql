-- Schema version 2: fewer b-tree writes per stored finding (issue 9, ingestion).
--
-- Version 1 wrote five b-tree entries for each new finding: its row, the
-- fingerprint index, two query indexes and a `finding_observations` row. Now:
--
-- * The run that first reported a finding is already in its row (`run_id`);
--   `run_finding_ranges` keeps, per run, the lowest and highest id of the
--   findings it inserted (one upsert per batch, not per finding), so "the
--   findings first seen by run R" is a rowid range scan filtered on `run_id`.
-- * `finding_sightings` holds only the other observations: a finding seen
--   again by a later run, or named by an enricher run.
-- * `finding_observations` becomes a view of both, with the same columns as
--   the version 1 table, for readers outside the supervisor (soak probes,
--   operators' ad hoc queries).
-- * `findings_by_severity` is dropped: no query needs it. The severity filter
--   of the findings query walks findings in id order and stops at its page,
--   and the index could not give that order anyway.
-- * Findings are found by `fingerprint_key` (64 bits of the SHA-256 of the
--   fingerprint), not by a unique index on the fingerprint text: a new
--   finding's index entry lands at a random place, so every transaction
--   rewrites index pages all over the index, and a 64-bit key makes that
--   index several times smaller than one of 64-character texts. The writer,
--   the only one that inserts findings, looks the key and the text up before
--   inserting, which keeps fingerprints unique. The supervisor fills the keys
--   of the migrated rows right after this script (`fill_fingerprint_keys`).

CREATE TABLE finding_sightings (
    run_id      TEXT NOT NULL,
    finding_id  INTEGER NOT NULL,
    PRIMARY KEY (run_id, finding_id)
) WITHOUT ROWID;

INSERT INTO finding_sightings (run_id, finding_id)
SELECT o.run_id, o.finding_id
FROM finding_observations o JOIN findings f ON f.id = o.finding_id
WHERE o.run_id <> f.run_id;

CREATE TABLE run_finding_ranges (
    run_id    TEXT PRIMARY KEY NOT NULL,
    first_id  INTEGER NOT NULL,
    last_id   INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO run_finding_ranges (run_id, first_id, last_id)
SELECT run_id, min(id), max(id) FROM findings GROUP BY run_id;

DROP TABLE finding_observations;

CREATE TABLE findings_v2 (
    id                          INTEGER PRIMARY KEY,
    fingerprint                 TEXT NOT NULL,
    fingerprint_key             INTEGER NOT NULL,
    run_id                      TEXT NOT NULL,
    plugin_name                 TEXT NOT NULL,
    plugin_version              TEXT NOT NULL,
    rule_id                     TEXT NOT NULL,
    title                       TEXT NOT NULL,
    severity                    TEXT NOT NULL,
    severity_rank               INTEGER NOT NULL,
    target                      TEXT NOT NULL,
    first_seen                  TEXT NOT NULL,
    last_seen                   TEXT NOT NULL,
    occurrences                 INTEGER NOT NULL,
    document                    TEXT NOT NULL,
    enrichment                  TEXT NOT NULL DEFAULT '{}',
    enrichment_vulnerabilities  TEXT NOT NULL DEFAULT '[]',
    enriched_severity           TEXT,
    enriched_severity_rank      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO findings_v2 (id, fingerprint, fingerprint_key, run_id, plugin_name,
    plugin_version, rule_id, title, severity, severity_rank, target, first_seen,
    last_seen, occurrences, document, enrichment, enrichment_vulnerabilities,
    enriched_severity, enriched_severity_rank)
SELECT id, fingerprint, 0, run_id, plugin_name, plugin_version, rule_id, title,
    severity, severity_rank, target, first_seen, last_seen, occurrences, document,
    enrichment, enrichment_vulnerabilities, enriched_severity, enriched_severity_rank
FROM findings ORDER BY id;
DROP TABLE findings;
ALTER TABLE findings_v2 RENAME TO findings;
CREATE INDEX findings_by_plugin ON findings (plugin_name, id);
CREATE INDEX findings_by_fingerprint_key ON findings (fingerprint_key);

-- Every finding's first run is its own `run_id`: the view needs no range.
CREATE VIEW finding_observations (run_id, finding_id) AS
SELECT run_id, id FROM findings
UNION ALL
SELECT run_id, finding_id FROM finding_sightings;
