-- Schema version 3: every run, finding observation, telemetry and audit row
-- names the host that wrote it (issue 16: a database moved into a fleet store
-- keeps who saw what). Rows written before are this host's: the supervisor
-- fills their `host` right after this script (`fill_hosts`).

ALTER TABLE runs ADD COLUMN host TEXT NOT NULL DEFAULT '';
-- The host of the run that first reported the finding (its first observation).
ALTER TABLE findings ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE finding_sightings ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE telemetry ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN host TEXT NOT NULL DEFAULT '';

-- "Which hosts saw it" reads a finding's sightings.
CREATE INDEX finding_sightings_by_finding ON finding_sightings (finding_id, host);

DROP VIEW finding_observations;
CREATE VIEW finding_observations (run_id, finding_id, host) AS
SELECT run_id, id, host FROM findings
UNION ALL
SELECT run_id, finding_id, host FROM finding_sightings;
