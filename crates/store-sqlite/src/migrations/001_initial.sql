-- Schema version 1: plugin states, runs, findings and what each run observed,
-- telemetry and audit. Applied once, in one transaction, by SqliteStore::open.

-- Persisted revocations (and their lifting), keyed by the exact build they name.
CREATE TABLE plugins (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    revoked     INTEGER NOT NULL,
    reason      TEXT,
    changed_at  TEXT NOT NULL,
    actor_uid   INTEGER,
    PRIMARY KEY (name, version, code_hash)
) WITHOUT ROWID;

-- One row per run record (contracts §2); outputs and error are JSON text.
CREATE TABLE runs (
    run_id            TEXT PRIMARY KEY NOT NULL,
    plugin            TEXT NOT NULL,
    plugin_version    TEXT NOT NULL,
    category          TEXT NOT NULL,
    status            TEXT NOT NULL,
    partial           INTEGER NOT NULL,
    exit_code         INTEGER,
    signal            INTEGER,
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    duration_ms       INTEGER NOT NULL,
    cpu_ms            INTEGER NOT NULL,
    memory_mb         INTEGER NOT NULL,
    findings          INTEGER NOT NULL,
    findings_rejected INTEGER NOT NULL,
    outputs           TEXT NOT NULL,
    error             TEXT,
    stderr_tail       TEXT NOT NULL,
    workflow_id       TEXT,
    node_id           TEXT
);
CREATE INDEX runs_by_start ON runs (started_at);
CREATE INDEX runs_by_plugin ON runs (plugin, started_at);
CREATE INDEX runs_by_status ON runs (status, started_at);

-- One row per fingerprint. `document` is the newest document the detector sent;
-- what enrichers added lives beside it (`enrichment`, `enrichment_vulnerabilities`,
-- `enriched_severity*`) so that refreshing the document never loses a merge.
-- `severity`/`severity_rank` are the effective values: the higher of the
-- document's and the enrichers'.
CREATE TABLE findings (
    id                          INTEGER PRIMARY KEY,
    fingerprint                 TEXT NOT NULL UNIQUE,
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
CREATE INDEX findings_by_plugin ON findings (plugin_name, id);
CREATE INDEX findings_by_severity ON findings (severity_rank, id);

-- Every finding a run reported, first seen or seen again. Only the writer adds
-- rows, with an id it has just read or written, so no foreign key check is paid
-- per row (it would also force a statement journal on every insert).
CREATE TABLE finding_observations (
    run_id      TEXT NOT NULL,
    finding_id  INTEGER NOT NULL,
    PRIMARY KEY (run_id, finding_id)
) WITHOUT ROWID;

CREATE TABLE telemetry (
    id                  INTEGER PRIMARY KEY,
    event               TEXT NOT NULL,
    plugin              TEXT NOT NULL,
    version             TEXT NOT NULL,
    run_id              TEXT NOT NULL,
    duration_ms         INTEGER NOT NULL,
    cpu_ms              INTEGER NOT NULL,
    memory_mb           INTEGER NOT NULL,
    findings_processed  INTEGER NOT NULL,
    success             INTEGER NOT NULL,
    timestamp           TEXT NOT NULL
);
CREATE INDEX telemetry_by_plugin ON telemetry (plugin, id);
CREATE INDEX telemetry_by_run ON telemetry (run_id, id);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    timestamp  TEXT NOT NULL,
    event      TEXT NOT NULL,
    security   INTEGER NOT NULL,
    plugin     TEXT,
    run_id     TEXT,
    actor_uid  INTEGER,
    message    TEXT NOT NULL,
    details    TEXT NOT NULL
);
CREATE INDEX audit_by_event ON audit (event, id);
CREATE INDEX audit_by_plugin ON audit (plugin, id);
