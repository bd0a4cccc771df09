-- Schema version 5: the fingerprint index leaves `findings` (issue 15,
-- ingestion).
--
-- `findings_by_fingerprint_key` took each new finding's key at a random page,
-- so every commit rewrote most of it. Now the keys of older findings are in
-- `finding_keys`, merged in key order in bulk, and those of the newest ones
-- (after `finding_keys_merged.upto`) only in their rows, which the writer
-- holds in memory (`fingerprints.rs`). The writer, the only one inserting
-- findings, still looks each fingerprint up before inserting it.

CREATE TABLE finding_keys (
    key         INTEGER NOT NULL,
    finding_id  INTEGER NOT NULL,
    PRIMARY KEY (key, finding_id)
) WITHOUT ROWID;

-- One row: every finding with an id up to `upto` is in `finding_keys`.
CREATE TABLE finding_keys_merged (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    upto  INTEGER NOT NULL
);

INSERT INTO finding_keys (key, finding_id)
SELECT fingerprint_key, id FROM findings ORDER BY fingerprint_key, id;
INSERT INTO finding_keys_merged (id, upto) SELECT 1, coalesce(max(id), 0) FROM findings;
DROP INDEX findings_by_fingerprint_key;
