-- Schema version 1 of the fleet store: plugin states, runs, findings and who
-- observed them, telemetry and audit, each row naming the host that wrote it.
-- Applied once, in one transaction, under the migration lock.
--
-- Times are RFC 3339 text, as the supervisor writes them and the API returns
-- them (a timestamptz would round-trip to another spelling); documents are the
-- plugins' JSON text, kept as sent (jsonb would reorder and respace them).

CREATE TABLE plugins (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    revoked     BOOLEAN NOT NULL,
    reason      TEXT,
    changed_at  TEXT NOT NULL,
    actor_uid   BIGINT,
    PRIMARY KEY (name, version, code_hash)
);

-- `seq` orders runs that started in the same instant as they were first written.
CREATE TABLE runs (
    run_id            TEXT PRIMARY KEY,
    seq               BIGSERIAL NOT NULL,
    host              TEXT NOT NULL,
    plugin            TEXT NOT NULL,
    plugin_version    TEXT NOT NULL,
    category          TEXT NOT NULL,
    status            TEXT NOT NULL,
    partial           BOOLEAN NOT NULL,
    exit_code         INTEGER,
    signal            INTEGER,
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    duration_ms       BIGINT NOT NULL,
    cpu_ms            BIGINT NOT NULL,
    memory_mb         BIGINT NOT NULL,
    findings          BIGINT NOT NULL,
    findings_rejected BIGINT NOT NULL,
    outputs           TEXT NOT NULL,
    error             TEXT,
    stderr_tail       TEXT NOT NULL,
    workflow_id       TEXT,
    node_id           TEXT
);
CREATE INDEX runs_by_start ON runs (started_at DESC, seq DESC);
CREATE INDEX runs_by_plugin ON runs (plugin, started_at DESC);
CREATE INDEX runs_by_status ON runs (status, host);

-- One row per fingerprint, whichever host saw it first. `document` is the
-- newest document a detector sent; what enrichers added lives beside it so
-- that refreshing the document never loses a merge. `severity` and
-- `severity_rank` are the effective values: the higher of the document's and
-- the enrichers'.
CREATE TABLE findings (
    id                          BIGSERIAL PRIMARY KEY,
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
    occurrences                 BIGINT NOT NULL,
    document                    TEXT NOT NULL,
    enrichment                  TEXT NOT NULL DEFAULT '{}',
    enrichment_vulnerabilities  TEXT NOT NULL DEFAULT '[]',
    enriched_severity           TEXT,
    enriched_severity_rank      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX findings_by_plugin ON findings (plugin_name, id);

-- Every finding a run reported (first seen, seen again or enriched), with the
-- host the run ran on: "which hosts saw it" and `--host` read this.
CREATE TABLE finding_observations (
    run_id      TEXT NOT NULL,
    finding_id  BIGINT NOT NULL REFERENCES findings (id),
    host        TEXT NOT NULL,
    PRIMARY KEY (run_id, finding_id)
);
CREATE INDEX finding_observations_by_finding ON finding_observations (finding_id, host);
CREATE INDEX finding_observations_by_host ON finding_observations (host, finding_id);

CREATE TABLE telemetry (
    id                  BIGSERIAL PRIMARY KEY,
    host                TEXT NOT NULL,
    event               TEXT NOT NULL,
    plugin              TEXT NOT NULL,
    version             TEXT NOT NULL,
    run_id              TEXT NOT NULL,
    duration_ms         BIGINT NOT NULL,
    cpu_ms              BIGINT NOT NULL,
    memory_mb           BIGINT NOT NULL,
    findings_processed  BIGINT NOT NULL,
    success             BOOLEAN NOT NULL,
    timestamp           TEXT NOT NULL
);
CREATE INDEX telemetry_by_plugin ON telemetry (plugin, id);
CREATE INDEX telemetry_by_run ON telemetry (run_id, id);

CREATE TABLE audit (
    id         BIGSERIAL PRIMARY KEY,
    host       TEXT NOT NULL,
    timestamp  TEXT NOT NULL,
    event      TEXT NOT NULL,
    security   BOOLEAN NOT NULL,
    plugin     TEXT,
    run_id     TEXT,
    actor_uid  BIGINT,
    message    TEXT NOT NULL,
    details    TEXT NOT NULL
);
CREATE INDEX audit_by_event ON audit (event, id);
CREATE INDEX audit_by_plugin ON audit (plugin, id);
