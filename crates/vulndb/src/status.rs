//! `secflow vulndb status`, and the health verdict `secflow doctor` and the
//! scan pipeline use: is there data, and how old is it.
//!
//! Age is measured from a source's last successful update or import
//! (`checked_at`), not from its newest record: a quiet week at NVD is not
//! stale data, an update timer that stopped firing is.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::store::{DataDir, SourceState, StoreError, CURRENT};

/// One source in the current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    /// `nvd`, `kev` or `osv/<ecosystem>`.
    pub source: String,
    pub records: u64,
    pub newest_modified: Option<String>,
    pub checked_at: String,
    /// Time since `checked_at` (`None` when it cannot be read).
    pub age: Option<Duration>,
    pub stale: bool,
    /// Where its files live (through `current`).
    pub path: PathBuf,
    pub origin: String,
}

/// What the data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub data_dir: PathBuf,
    /// The current generation; `None` without data written by `secflow vulndb`.
    pub generation: Option<String>,
    pub sources: Vec<SourceStatus>,
    /// Whether an interrupted update waits to be continued.
    pub interrupted: bool,
    pub max_age: Duration,
}

/// Reads the status of `data` as of `now`.
pub fn status(
    data: &DataDir,
    now: OffsetDateTime,
    max_age: Duration,
) -> Result<Status, StoreError> {
    let generation = if data.root().is_dir() {
        data.current()?
    } else {
        None
    };
    let state = data.state()?;
    let current = data.root().join(CURRENT);
    let row = |source: String, path: PathBuf, state: &SourceState| {
        let age = OffsetDateTime::parse(&state.checked_at, &Rfc3339)
            .ok()
            .map(|at| Duration::try_from(now - at).unwrap_or(Duration::ZERO));
        SourceStatus {
            source,
            records: state.records,
            newest_modified: state.newest_modified.clone(),
            checked_at: state.checked_at.clone(),
            stale: age.is_none_or(|age| age > max_age),
            age,
            path,
            origin: state.origin.clone(),
        }
    };
    let mut sources = Vec::new();
    if let Some(nvd) = &state.nvd {
        sources.push(row("nvd".into(), current.join("nvd"), nvd));
    }
    if let Some(kev) = &state.kev {
        sources.push(row("kev".into(), current.join(crate::kev::KEV_PATH), kev));
    }
    for (dir, osv) in &state.osv {
        sources.push(row(
            format!("osv/{dir}"),
            current.join("osv").join(dir),
            osv,
        ));
    }
    Ok(Status {
        data_dir: data.root().to_owned(),
        generation: generation.map(|g| g.name),
        sources,
        interrupted: data.interrupted(),
        max_age,
    })
}

/// Whether a scan can use the data, for `doctor` and the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The directory does not exist.
    Missing {
        data_dir: PathBuf,
    },
    /// It exists but holds no data.
    Empty {
        data_dir: PathBuf,
    },
    /// It holds `*.json` files that `secflow vulndb` did not write: usable,
    /// age unknown.
    Unmanaged {
        data_dir: PathBuf,
    },
    /// Sources not updated within the allowed age.
    Stale {
        data_dir: PathBuf,
        sources: Vec<(String, Option<Duration>)>,
    },
    Fresh {
        data_dir: PathBuf,
    },
}

impl Health {
    /// Whether cve-mapper has anything to read.
    pub fn has_data(&self) -> bool {
        matches!(
            self,
            Health::Unmanaged { .. } | Health::Stale { .. } | Health::Fresh { .. }
        )
    }

    /// The command that fixes it, when one does.
    pub fn remedy(&self) -> Option<&'static str> {
        match self {
            Health::Missing { .. } | Health::Empty { .. } | Health::Stale { .. } => Some(
                "run `secflow vulndb update` (or `secflow vulndb import FILE...` on a host without network access)",
            ),
            Health::Unmanaged { .. } | Health::Fresh { .. } => None,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Missing { data_dir } => {
                write!(
                    f,
                    "no vulnerability data: {} does not exist",
                    data_dir.display()
                )
            }
            Health::Empty { data_dir } => {
                write!(f, "no vulnerability data: {} is empty", data_dir.display())
            }
            Health::Unmanaged { data_dir } => write!(
                f,
                "vulnerability data in {} was not written by secflow vulndb; its age is unknown",
                data_dir.display()
            ),
            Health::Stale { data_dir, sources } => {
                let names: Vec<String> = sources
                    .iter()
                    .map(|(name, age)| match age {
                        Some(age) => format!("{name} ({})", days(*age)),
                        None => format!("{name} (age unknown)"),
                    })
                    .collect();
                write!(
                    f,
                    "stale vulnerability data in {}: {} not updated within the allowed age",
                    data_dir.display(),
                    names.join(", ")
                )
            }
            Health::Fresh { data_dir } => {
                write!(f, "vulnerability data in {} is current", data_dir.display())
            }
        }
    }
}

/// The health of the data under `data_dir` as of `now`.
pub fn health(
    data_dir: &Path,
    now: OffsetDateTime,
    max_age: Duration,
) -> Result<Health, StoreError> {
    let data_dir = data_dir.to_owned();
    if !data_dir.is_dir() {
        return Ok(Health::Missing { data_dir });
    }
    let data = DataDir::new(&data_dir);
    let status = status(&data, now, max_age)?;
    if status.generation.is_none() || status.sources.is_empty() {
        let hand_filled = crate::store::count_json(&data_dir)? > 0;
        return Ok(if hand_filled {
            Health::Unmanaged { data_dir }
        } else {
            Health::Empty { data_dir }
        });
    }
    let stale: Vec<(String, Option<Duration>)> = status
        .sources
        .iter()
        .filter(|s| s.stale)
        .map(|s| (s.source.clone(), s.age))
        .collect();
    Ok(if stale.is_empty() {
        Health::Fresh { data_dir }
    } else {
        Health::Stale {
            data_dir,
            sources: stale,
        }
    })
}

/// An age in whole days, or hours under two days.
pub fn days(age: Duration) -> String {
    let hours = age.as_secs() / 3600;
    if hours < 48 {
        format!("{hours} h")
    } else {
        format!("{} days", hours / 24)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data directory: {}", self.data_dir.display())?;
        match &self.generation {
            Some(generation) => writeln!(f, "current generation: {generation}")?,
            None => writeln!(
                f,
                "no data written by secflow vulndb yet: run `secflow vulndb update` or `secflow vulndb import FILE...`"
            )?,
        }
        if self.interrupted {
            writeln!(
                f,
                "an interrupted update is staged: `secflow vulndb update` continues it"
            )?;
        }
        if self.sources.is_empty() {
            return Ok(());
        }
        writeln!(
            f,
            "{:<16} {:>9}  {:<24}  {:<10}  path",
            "source", "records", "newest modification", "age"
        )?;
        for s in &self.sources {
            let age = match s.age {
                Some(age) if s.stale => format!("{} stale", days(age)),
                Some(age) => days(age),
                None => "unknown".into(),
            };
            writeln!(
                f,
                "{:<16} {:>9}  {:<24}  {:<10}  {}",
                s.source,
                s.records,
                s.newest_modified.as_deref().unwrap_or("-"),
                age,
                s.path.display()
            )?;
        }
        Ok(())
    }
}
