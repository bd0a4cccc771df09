//! OSV records: single JSON files or an ecosystem's `all.zip`, stored one per
//! file at `osv/<ecosystem>/<id>.json`.
//!
//! An archive is a complete snapshot of its ecosystem, so storing one also
//! removes the records it no longer holds. Each entry is bounded (size, count)
//! before it is read: an archive is untrusted input like any page.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::nvd::{newest, Applied};
use crate::store::{Change, Staging, StoreError};

/// Most entries read from one archive.
pub const MAX_ENTRIES: usize = 2_000_000;
/// Largest record accepted (uncompressed).
pub const MAX_RECORD_BYTES: u64 = 8 << 20;
/// Longest record id.
const MAX_ID_LEN: usize = 128;

/// OSV data that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OsvError {
    #[error("{origin}: not a readable zip archive (truncated?)")]
    Archive {
        origin: String,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("{origin}: more than {MAX_ENTRIES} entries")]
    TooManyEntries { origin: String },
    #[error("{origin}: entry {entry}: {reason}")]
    BadEntry {
        origin: String,
        entry: String,
        reason: String,
    },
    #[error("{origin}: {reason}")]
    BadRecord { origin: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Deserialize)]
struct Head {
    id: String,
    modified: String,
    #[serde(default)]
    schema_version: Option<String>,
    #[serde(default)]
    affected: Vec<Affected>,
}

#[derive(Deserialize)]
struct Affected {
    #[serde(default)]
    package: Option<Package>,
}

#[derive(Deserialize)]
struct Package {
    ecosystem: String,
}

/// A checked record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsvRecord {
    pub id: String,
    pub modified: String,
    /// The directory its first affected package's ecosystem maps to.
    pub ecosystem: Option<String>,
}

/// The directory name of an ecosystem (`Debian:12` → `Debian`, spaces → `_`).
pub fn ecosystem_dir(ecosystem: &str) -> Option<String> {
    let base = ecosystem.split(':').next().unwrap_or_default();
    let name: String = base
        .chars()
        .map(|c| if c == ' ' { '_' } else { c })
        .collect();
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    ok.then_some(name)
}

/// Checks one record's text; `Err(reason)`.
pub fn check_record(text: &str) -> Result<OsvRecord, String> {
    let head: Head = serde_json::from_str(text).map_err(|e| format!("not an OSV record: {e}"))?;
    let id_ok = !head.id.is_empty()
        && head.id.len() <= MAX_ID_LEN
        && !head.id.starts_with('.')
        && head
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !id_ok {
        return Err(format!("id {:?} is not an OSV id", head.id));
    }
    if let Some(version) = &head.schema_version {
        if version.split('.').next() != Some("1") {
            return Err(format!(
                "schema_version {version:?} is not 1.x (only OSV schema 1 is read)"
            ));
        }
    }
    let ecosystem = head
        .affected
        .iter()
        .filter_map(|a| a.package.as_ref())
        .find_map(|p| ecosystem_dir(&p.ecosystem));
    Ok(OsvRecord {
        id: head.id,
        modified: head.modified,
        ecosystem,
    })
}

fn record_path(dir: &str, id: &str) -> PathBuf {
    Path::new("osv")
        .join(dir)
        .join(format!("{}.json", id.replace(':', "_")))
}

/// What storing an archive did, per ecosystem directory.
pub type ArchiveApplied = BTreeMap<String, Applied>;

/// Stores the records of the archive at `archive`: all in `into` when given
/// (a download of that ecosystem), else each in its own ecosystem's directory.
/// Every directory written is pruned to the archive's records.
pub fn apply_archive(
    origin: &str,
    archive: &Path,
    into: Option<&str>,
    staging: &Staging,
) -> Result<ArchiveApplied, OsvError> {
    let bad_archive = |source| OsvError::Archive {
        origin: origin.to_owned(),
        source,
    };
    let file = File::open(archive).map_err(|e| bad_archive(zip::result::ZipError::Io(e)))?;
    let mut zip = zip::ZipArchive::new(file).map_err(bad_archive)?;
    if zip.len() > MAX_ENTRIES {
        return Err(OsvError::TooManyEntries {
            origin: origin.to_owned(),
        });
    }
    let mut applied = ArchiveApplied::new();
    let mut kept: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(dir) = into {
        kept.entry(dir.to_owned()).or_default();
    }
    let mut text = String::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(bad_archive)?;
        let name = entry.name().to_owned();
        if entry.is_dir() || !name.ends_with(".json") {
            continue;
        }
        let bad = |reason: String| OsvError::BadEntry {
            origin: origin.to_owned(),
            entry: name.clone(),
            reason,
        };
        if entry.size() > MAX_RECORD_BYTES {
            return Err(bad(format!("larger than {MAX_RECORD_BYTES} bytes")));
        }
        text.clear();
        (&mut entry)
            .take(MAX_RECORD_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("cannot be read: {e}")))?;
        if text.len() as u64 > MAX_RECORD_BYTES {
            return Err(bad(format!("larger than {MAX_RECORD_BYTES} bytes")));
        }
        let record = check_record(&text).map_err(bad)?;
        let dir = match into {
            Some(dir) => dir.to_owned(),
            None => record.ecosystem.clone().unwrap_or_else(|| "unknown".into()),
        };
        let path = record_path(&dir, &record.id);
        let counts = applied.entry(dir.clone()).or_default();
        count(counts, staging.write_if_changed(&path, text.as_bytes())?);
        newest(&mut counts.newest_modified, &record.modified);
        if let Some(file) = path.file_name() {
            kept.entry(dir)
                .or_default()
                .insert(file.to_string_lossy().into_owned());
        }
    }
    for (dir, names) in &kept {
        let removed = staging.prune(&Path::new("osv").join(dir), names)?;
        applied.entry(dir.clone()).or_default().removed += removed;
    }
    Ok(applied)
}

/// Stores one record file's text (checked by [`check_record`]).
pub fn apply_record(
    staging: &Staging,
    record: &OsvRecord,
    text: &RawValue,
    applied: &mut ArchiveApplied,
) -> Result<(), StoreError> {
    let dir = record.ecosystem.clone().unwrap_or_else(|| "unknown".into());
    let counts = applied.entry(dir.clone()).or_default();
    count(
        counts,
        staging.write_if_changed(&record_path(&dir, &record.id), text.get().as_bytes())?,
    );
    newest(&mut counts.newest_modified, &record.modified);
    Ok(())
}

fn count(applied: &mut Applied, change: Change) {
    match change {
        Change::Added => applied.added += 1,
        Change::Replaced => applied.replaced += 1,
        Change::Same => applied.unchanged += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_checked_for_a_safe_id_and_schema_1() {
        let ok = check_record(r#"{"id":"GHSA-333g-rpr4-7hxq","modified":"2023-01-23T20:11:26Z","schema_version":"1.3.0","affected":[{"package":{"ecosystem":"RubyGems","name":"rest-client"}}]}"#).unwrap();
        assert_eq!(ok.ecosystem.as_deref(), Some("RubyGems"));
        let escape = check_record(r#"{"id":"../../x","modified":"2023-01-23T20:11:26Z"}"#);
        assert!(escape.unwrap_err().contains("is not an OSV id"));
        let newer = check_record(r#"{"id":"X-1","modified":"2023","schema_version":"2.0.0"}"#);
        assert!(newer
            .unwrap_err()
            .contains("schema_version \"2.0.0\" is not 1.x"));
        assert_eq!(ecosystem_dir("Debian:12").as_deref(), Some("Debian"));
        assert_eq!(
            ecosystem_dir("GitHub Actions").as_deref(),
            Some("GitHub_Actions")
        );
        assert_eq!(ecosystem_dir("../x"), None);
    }
}
