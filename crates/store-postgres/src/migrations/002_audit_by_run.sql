-- Schema version 2: a run's audit trail, and the provenance its
-- `plugin_invoked` event carries (`secflow findings show`, SARIF, the
-- dashboard), are read by run id: an index, not a scan of every event.

CREATE INDEX audit_by_run ON audit (run_id, event, id);
