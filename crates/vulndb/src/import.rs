//! `secflow vulndb import PATH...`: files downloaded elsewhere (for hosts that
//! cannot reach the sources) checked and stored like an update's downloads.
//!
//! A file is recognised by its content: an NVD CVE API 2.0 page, one NVD
//! record (`{"id": "CVE-…"}` or `{"cve": {…}}`), the KEV catalogue, an OSV
//! record, or an OSV zip archive. All files are staged before anything is
//! committed, so one bad file refuses the whole import, naming it, and the
//! data stays as it was.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::kev::{self, KevError};
use crate::now_rfc3339;
use crate::nvd::{self, Applied, NvdError};
use crate::osv::{self, ArchiveApplied, OsvError};
use crate::store::{DataDir, SourceState, Staging, State, StoreError};

/// Most files one import takes.
pub const MAX_FILES: usize = 100_000;
/// The zip local-file signature.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Why an import was refused; the data is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("nothing to import: name NVD pages or records, the KEV catalogue, OSV records or OSV zip archives")]
    NoFiles,
    #[error("more than {MAX_FILES} files in one import")]
    TooManyFiles,
    #[error("{path}: cannot be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: not JSON (truncated?)")]
    NotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not a known vulnerability format (an NVD CVE API 2.0 page or record, the KEV catalogue, an OSV record or an OSV zip archive)")]
    Unknown { path: PathBuf },
    #[error("{path}: {reason}")]
    BadOsvRecord { path: PathBuf, reason: String },
    #[error(transparent)]
    Nvd(#[from] NvdError),
    #[error(transparent)]
    Kev(#[from] KevError),
    #[error(transparent)]
    Osv(#[from] OsvError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub generation: String,
    /// Per file: what it was and what it changed.
    pub files: Vec<(PathBuf, String)>,
}

/// The members of a JSON file that tell its format apart.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    format: Option<IgnoredAny>,
    #[serde(default, rename = "catalogVersion")]
    catalog_version: Option<IgnoredAny>,
    #[serde(default)]
    vulnerabilities: Option<IgnoredAny>,
    #[serde(default)]
    cve: Option<IgnoredAny>,
    #[serde(default)]
    id: Option<IgnoredAny>,
    #[serde(default)]
    modified: Option<IgnoredAny>,
}

/// Imports `paths` into `data` as its new current generation.
pub fn import(data: &DataDir, paths: &[PathBuf]) -> Result<ImportReport, ImportError> {
    if paths.is_empty() {
        return Err(ImportError::NoFiles);
    }
    if paths.len() > MAX_FILES {
        return Err(ImportError::TooManyFiles);
    }
    data.create()?;
    let _lock = data.lock()?;
    let (staging, mut state) = data.stage_import()?;
    match stage_all(&staging, &mut state, paths) {
        Ok(files) => {
            let generation = data.commit(staging, &state)?;
            Ok(ImportReport {
                generation: generation.name,
                files,
            })
        }
        Err(error) => {
            // The error that matters is the file's; a failed clean-up only
            // leaves a hidden directory the next import replaces.
            let _ = staging.discard();
            Err(error)
        }
    }
}

/// What the files of one import added, by source.
#[derive(Default)]
struct Tally {
    nvd: Option<Applied>,
    osv: ArchiveApplied,
    origins: Vec<String>,
}

fn stage_all(
    staging: &Staging,
    state: &mut State,
    paths: &[PathBuf],
) -> Result<Vec<(PathBuf, String)>, ImportError> {
    let mut tally = Tally::default();
    let mut files = Vec::new();
    let checked_at = now_rfc3339(OffsetDateTime::now_utc());
    for path in paths {
        let summary = stage_file(staging, state, &mut tally, path, &checked_at)?;
        tally.origins.push(path.display().to_string());
        files.push((path.clone(), summary));
    }
    let origin = match tally.origins.as_slice() {
        [one] => format!("import of {one}"),
        [first, rest @ ..] => format!("import of {first} and {} more", rest.len()),
        [] => String::new(),
    };
    if let Some(applied) = tally.nvd {
        let previous = state.nvd.take().unwrap_or_default();
        let mut newest_modified = previous.newest_modified;
        if let Some(newest) = &applied.newest_modified {
            nvd::newest(&mut newest_modified, newest);
        }
        state.nvd = Some(SourceState {
            records: staging.count_json(Path::new("nvd"))?,
            newest_modified,
            checked_at: checked_at.clone(),
            origin: origin.clone(),
            // What an update has fetched through is still true: imported
            // records only add to it.
            fetched_through: previous.fetched_through,
            etag: None,
            last_modified: None,
        });
    }
    for (dir, applied) in tally.osv {
        let previous = state.osv.remove(&dir).unwrap_or_default();
        let mut newest_modified = previous.newest_modified;
        if let Some(newest) = &applied.newest_modified {
            nvd::newest(&mut newest_modified, newest);
        }
        state.osv.insert(
            dir.clone(),
            SourceState {
                records: staging.count_json(&Path::new("osv").join(&dir))?,
                newest_modified,
                checked_at: checked_at.clone(),
                origin: origin.clone(),
                fetched_through: None,
                etag: None,
                last_modified: None,
            },
        );
    }
    Ok(files)
}

fn stage_file(
    staging: &Staging,
    state: &mut State,
    tally: &mut Tally,
    path: &Path,
    checked_at: &str,
) -> Result<String, ImportError> {
    let origin = path.display().to_string();
    let read = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read)?;
    let mut magic = [0u8; 4];
    let is_zip = file.read(&mut magic).map_err(read)? == 4 && magic == ZIP_MAGIC;
    if is_zip {
        let applied = osv::apply_archive(&origin, path, None, staging)?;
        let mut summary = Vec::new();
        for (dir, counts) in applied {
            summary.push(format!("osv {dir}: {}", counts.summary()));
            merge(tally.osv.entry(dir).or_default(), &counts);
        }
        return Ok(summary.join("; "));
    }
    let body = read_bounded(path, nvd::MAX_PAGE_BYTES)?;
    let probe: Probe = serde_json::from_slice(&body).map_err(|source| ImportError::NotJson {
        path: path.to_owned(),
        source,
    })?;
    if probe.catalog_version.is_some() {
        let checked = kev::check(&origin, &body)?;
        let change = staging.write_if_changed(kev::path(), &body)?;
        state.kev = Some(SourceState {
            records: checked.entries,
            newest_modified: checked.released,
            checked_at: checked_at.to_owned(),
            origin,
            fetched_through: None,
            etag: None,
            last_modified: None,
        });
        return Ok(format!("kev catalogue {}: {change:?}", checked.version).to_lowercase());
    }
    if probe.format.is_some() || probe.vulnerabilities.is_some() {
        let page = nvd::check_page(&origin, &body, None)?;
        let mut counts = Applied::default();
        nvd::apply(staging, &page.records, &mut counts)?;
        merge(tally.nvd.get_or_insert_with(Applied::default), &counts);
        return Ok(format!("nvd page: {}", counts.summary()));
    }
    let raw: &RawValue = serde_json::from_slice(&body).map_err(|source| ImportError::NotJson {
        path: path.to_owned(),
        source,
    })?;
    if probe.modified.is_some() && probe.id.is_some() {
        let text = std::str::from_utf8(&body).map_err(|e| ImportError::BadOsvRecord {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let record = osv::check_record(text).map_err(|reason| ImportError::BadOsvRecord {
            path: path.to_owned(),
            reason,
        })?;
        let mut counts = ArchiveApplied::new();
        osv::apply_record(staging, &record, raw, &mut counts)?;
        let mut summary = Vec::new();
        for (dir, counts) in counts {
            summary.push(format!("osv {dir}: {}", counts.summary()));
            merge(tally.osv.entry(dir).or_default(), &counts);
        }
        return Ok(summary.join("; "));
    }
    if probe.cve.is_some() || probe.id.is_some() {
        let record = nvd::check_record_file(&origin, raw)?;
        let mut counts = Applied::default();
        nvd::apply(staging, std::slice::from_ref(&record), &mut counts)?;
        merge(tally.nvd.get_or_insert_with(Applied::default), &counts);
        return Ok(format!("nvd record {}: {}", record.id, counts.summary()));
    }
    Err(ImportError::Unknown {
        path: path.to_owned(),
    })
}

fn merge(total: &mut Applied, part: &Applied) {
    total.added += part.added;
    total.replaced += part.replaced;
    total.unchanged += part.unchanged;
    total.removed += part.removed;
    if let Some(newest) = &part.newest_modified {
        nvd::newest(&mut total.newest_modified, newest);
    }
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ImportError> {
    let read = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read)?;
    let mut body = Vec::new();
    file.take(limit + 1).read_to_end(&mut body).map_err(read)?;
    if body.len() as u64 > limit {
        return Err(ImportError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(body)
}
