//! The backend-neutral dump of a store (`secflow storage export|import`): one
//! JSON object per line, in an order an importer can apply as it reads
//! (plugin states, runs, findings, observations, telemetry, audit), closed by
//! the counts of what was written so that an importer can check that nothing
//! was lost on the way.

use serde::{Deserialize, Serialize};

use secflow_core::record::RunRecord;

use crate::{AuditEvent, PluginState, TelemetryEvent};

/// Longest line an importer reads: a run record or finding with its
/// documents (a plugin's message is at most 8 MiB by default).
pub const MAX_DUMP_LINE_BYTES: usize = 64 * 1024 * 1024;

/// A finding row with every column a backend keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingDump {
    /// The id in the exporting store: observations name it.
    pub id: i64,
    pub fingerprint: String,
    pub run_id: String,
    pub plugin_name: String,
    pub plugin_version: String,
    pub rule_id: String,
    pub title: String,
    pub severity: String,
    pub severity_rank: i64,
    pub target: String,
    pub first_seen: String,
    pub last_seen: String,
    pub occurrences: u64,
    pub document: String,
    pub enrichment: String,
    pub enrichment_vulnerabilities: String,
    pub enriched_severity: Option<String>,
    pub enriched_severity_rank: i64,
    /// The host of the run that first reported it.
    pub host: String,
}

/// One line of a dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DumpRecord {
    Plugin(PluginState),
    Run {
        host: String,
        #[serde(flatten)]
        record: Box<RunRecord>,
    },
    Finding(Box<FindingDump>),
    /// A run observed a finding (first seen, seen again or enriched).
    Observation {
        run_id: String,
        finding_id: i64,
        host: String,
    },
    Telemetry {
        host: String,
        #[serde(flatten)]
        event: TelemetryEvent,
    },
    Audit {
        host: String,
        #[serde(flatten)]
        event: AuditEvent,
    },
    /// The last line: how many of each the exporter wrote.
    Counts(DumpCounts),
}

/// How many records of each kind a dump holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpCounts {
    pub plugins: u64,
    pub runs: u64,
    pub findings: u64,
    pub observations: u64,
    pub telemetry: u64,
    pub audit: u64,
}

impl DumpCounts {
    /// Counts `record` (the closing counts line counts nothing).
    pub fn add(&mut self, record: &DumpRecord) {
        match record {
            DumpRecord::Plugin(_) => self.plugins += 1,
            DumpRecord::Run { .. } => self.runs += 1,
            DumpRecord::Finding(_) => self.findings += 1,
            DumpRecord::Observation { .. } => self.observations += 1,
            DumpRecord::Telemetry { .. } => self.telemetry += 1,
            DumpRecord::Audit { .. } => self.audit += 1,
            DumpRecord::Counts(_) => {}
        }
    }
}

impl std::fmt::Display for DumpCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs, {} findings, {} observations, {} telemetry events, {} audit events, {} plugin states",
            self.runs, self.findings, self.observations, self.telemetry, self.audit, self.plugins
        )
    }
}

/// A dump that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("cannot read the dump")]
    Read(#[source] std::io::Error),
    #[error("cannot write the dump")]
    Write(#[source] std::io::Error),
    #[error("dump line {line} is longer than {MAX_DUMP_LINE_BYTES} bytes")]
    LineTooLong { line: u64 },
    #[error("dump line {line} is not a dump record: {message}")]
    Malformed { line: u64, message: String },
    #[error("the dump ends without its counts line: it was cut short")]
    Truncated,
    #[error("the dump has lines after its counts line (line {line})")]
    AfterCounts { line: u64 },
    #[error("the dump says it holds {said} but holds {read}")]
    CountsDiffer { said: DumpCounts, read: DumpCounts },
}

/// A move of a store's contents that did not complete (nothing is imported
/// then: an import is one transaction).
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Storage(#[from] crate::StorageError),
    #[error(transparent)]
    Dump(#[from] DumpError),
    #[error(
        "the target already holds run {run_id}: this dump, or part of it, was imported before"
    )]
    AlreadyImported { run_id: String },
    #[error("an observation of run {run_id} names finding {finding_id}, which the dump does not hold before it")]
    UnknownFinding { run_id: String, finding_id: i64 },
    #[error(
        "the target gained {found} {what}, not the {expected} the dump holds; nothing was imported"
    )]
    CountMismatch {
        what: &'static str,
        expected: u64,
        found: u64,
    },
}

/// What an import added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// What the dump held (and its counts line said).
    pub read: DumpCounts,
    /// Findings whose fingerprint the target already held: merged into that
    /// row (occurrences added, first and last seen widened), not duplicated.
    pub merged_findings: u64,
}

/// Writes records as a dump, counting them; [`DumpWriter::finish`] writes the
/// counts line.
#[derive(Debug)]
pub struct DumpWriter<W: std::io::Write> {
    out: W,
    counts: DumpCounts,
}

impl<W: std::io::Write> DumpWriter<W> {
    pub fn new(out: W) -> DumpWriter<W> {
        DumpWriter {
            out,
            counts: DumpCounts::default(),
        }
    }

    pub fn write(&mut self, record: &DumpRecord) -> Result<(), DumpError> {
        serde_json::to_writer(&mut self.out, record)
            .map_err(|e| DumpError::Write(std::io::Error::other(e)))?;
        self.out.write_all(b"\n").map_err(DumpError::Write)?;
        self.counts.add(record);
        Ok(())
    }

    /// Writes the counts line and flushes; the counts written.
    pub fn finish(mut self) -> Result<DumpCounts, DumpError> {
        let counts = self.counts;
        self.write(&DumpRecord::Counts(counts))?;
        self.out.flush().map_err(DumpError::Write)?;
        Ok(counts)
    }
}

/// Reads a dump's records one at a time, bounded per line; the counts line
/// is checked against what was read and not returned.
#[derive(Debug)]
pub struct DumpReader<R: std::io::BufRead> {
    input: R,
    line: u64,
    read: DumpCounts,
    done: bool,
}

impl<R: std::io::BufRead> DumpReader<R> {
    pub fn new(input: R) -> DumpReader<R> {
        DumpReader {
            input,
            line: 0,
            read: DumpCounts::default(),
            done: false,
        }
    }

    /// The next record; `None` after a counts line that matches what was read.
    pub fn next_record(&mut self) -> Result<Option<DumpRecord>, DumpError> {
        use std::io::{BufRead, Read};
        let mut text = Vec::new();
        let limit = MAX_DUMP_LINE_BYTES as u64 + 1;
        let n = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut text)
            .map_err(DumpError::Read)?;
        self.line += 1;
        if n == 0 {
            return if self.done {
                Ok(None)
            } else {
                Err(DumpError::Truncated)
            };
        }
        if text.len() as u64 >= limit && text.last() != Some(&b'\n') {
            return Err(DumpError::LineTooLong { line: self.line });
        }
        if self.done {
            return Err(DumpError::AfterCounts { line: self.line });
        }
        let record: DumpRecord =
            serde_json::from_slice(&text).map_err(|e| DumpError::Malformed {
                line: self.line,
                message: e.to_string(),
            })?;
        if let DumpRecord::Counts(said) = record {
            if said != self.read {
                return Err(DumpError::CountsDiffer {
                    said,
                    read: self.read,
                });
            }
            self.done = true;
            return self.next_record();
        }
        self.read.add(&record);
        Ok(Some(record))
    }

    /// What was read so far.
    pub fn counts(&self) -> DumpCounts {
        self.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(i: i64) -> DumpRecord {
        DumpRecord::Observation {
            run_id: "run-1".into(),
            finding_id: i,
            host: "h".into(),
        }
    }

    fn dump(records: &[DumpRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = DumpWriter::new(&mut out);
        for r in records {
            writer.write(r).unwrap();
        }
        assert_eq!(writer.finish().unwrap().observations, records.len() as u64);
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<DumpRecord>, DumpError> {
        let mut reader = DumpReader::new(bytes);
        let mut out = Vec::new();
        while let Some(r) = reader.next_record()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn a_dump_reads_back_as_written_and_its_counts_are_checked() {
        let records = [observation(1), observation(2)];
        assert_eq!(read_all(&dump(&records)).unwrap(), records);

        let full = dump(&records);
        let text = String::from_utf8(full).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        // A line lost on the way.
        lines.remove(0);
        let cut = lines.join("\n") + "\n";
        assert!(matches!(
            read_all(cut.as_bytes()),
            Err(DumpError::CountsDiffer { .. })
        ));
        // The counts line lost.
        let no_counts = text.lines().take(2).collect::<Vec<_>>().join("\n") + "\n";
        assert!(matches!(
            read_all(no_counts.as_bytes()),
            Err(DumpError::Truncated)
        ));
        let garbage = "{\"kind\":\"nonsense\"}\n";
        let err = read_all(garbage.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
