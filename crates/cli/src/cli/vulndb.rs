//! `secflow vulndb update|import|status`: the vulnerability data cve-mapper
//! reads, fetched or imported into `[vulndb] data_dir` by `secflow-vulndb`,
//! and the health verdict `doctor` and `scan` report.
//!
//! These commands run as whoever invokes them (the systemd timer runs them as
//! the `secflow-vulndb` user), never inside a plugin sandbox: they are the one
//! writer of the data, cve-mapper only reads it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{error_chain, load_config, print_output, runtime, Cli, Failure};
use secflow_core::config::{Config, VulndbConfig};
use secflow_vulndb::progress::{Quiet, Terminal};
use secflow_vulndb::{DataDir, Health, Settings, Status};

#[derive(Debug, Subcommand)]
pub enum VulndbAction {
    /// Fetch NVD (incrementally), the CISA KEV catalogue and OSV archives into
    /// the data directory; an interrupted update is continued.
    Update,
    /// Import files already downloaded (NVD 2.0 pages or records, KEV JSON,
    /// OSV zips or JSON), for hosts without network access.
    Import {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Per source: records, newest modification, age, where it lives.
    Status,
}

pub fn vulndb_command(cli: &Cli, action: &VulndbAction) -> Result<ExitCode, Failure> {
    let config = load_config(cli)?;
    match action {
        VulndbAction::Update => update(cli, &config.vulndb),
        VulndbAction::Import { paths } => import(cli, &config.vulndb, paths),
        VulndbAction::Status => status(cli, &config.vulndb),
    }
}

fn settings(config: &VulndbConfig) -> Result<Settings, Failure> {
    Settings::from_config(config).map_err(|e| Failure::usage(error_chain(&e)))
}

fn update(cli: &Cli, config: &VulndbConfig) -> Result<ExitCode, Failure> {
    let settings = settings(config)?;
    let report = runtime()?.block_on(async {
        if cli.json {
            secflow_vulndb::update(&settings, &mut Quiet).await
        } else {
            secflow_vulndb::update(&settings, &mut Terminal::default()).await
        }
    });
    let report = report.map_err(|e| {
        Failure::failed(format!(
            "vulndb update stopped, the previous data in {} is still current: {}",
            settings.data_dir.display(),
            error_chain(&e)
        ))
    })?;
    let document = json!({
        "data_dir": settings.data_dir,
        "generation": report.generation,
        "resumed": report.resumed,
        "sources": report.sources.iter()
            .map(|(source, change)| json!({"source": source, "change": change}))
            .collect::<Vec<_>>(),
    });
    print_output(cli, &document, |out| {
        for (source, change) in &report.sources {
            writeln!(out, "{source}: {change}")?;
        }
        writeln!(
            out,
            "{} is now generation {}{}",
            settings.data_dir.display(),
            report.generation,
            if report.resumed {
                " (continued an interrupted update)"
            } else {
                ""
            }
        )
    })
}

fn import(cli: &Cli, config: &VulndbConfig, paths: &[PathBuf]) -> Result<ExitCode, Failure> {
    let settings = settings(config)?;
    let data = DataDir::new(&settings.data_dir);
    let report = secflow_vulndb::import(&data, paths).map_err(|e| {
        Failure::failed(format!(
            "vulndb import refused, the previous data in {} is unchanged: {}",
            settings.data_dir.display(),
            error_chain(&e)
        ))
    })?;
    let document = json!({
        "data_dir": settings.data_dir,
        "generation": report.generation,
        "files": report.files.iter()
            .map(|(path, change)| json!({"path": path, "change": change}))
            .collect::<Vec<_>>(),
    });
    print_output(cli, &document, |out| {
        for (path, change) in &report.files {
            writeln!(out, "{}: {change}", path.display())?;
        }
        writeln!(
            out,
            "{} is now generation {}",
            settings.data_dir.display(),
            report.generation
        )
    })
}

fn status(cli: &Cli, config: &VulndbConfig) -> Result<ExitCode, Failure> {
    let max_age = max_age(config);
    let data = DataDir::new(&config.data_dir);
    let status = secflow_vulndb::status(&data, OffsetDateTime::now_utc(), max_age)
        .map_err(|e| Failure::failed(error_chain(&e)))?;
    let health = health(config);
    print_output(cli, &status_document(&status, &health), |out| {
        write!(out, "{status}")?;
        match &health {
            Ok(h) if h.remedy().is_some() => writeln!(out, "\nwarning: {}", verdict(h)),
            Ok(_) => Ok(()),
            Err(e) => writeln!(out, "\nwarning: {e}"),
        }
    })
}

/// `status --json`: ages in seconds, the verdict `doctor` gives.
fn status_document(status: &Status, health: &Result<Health, String>) -> Value {
    json!({
        "data_dir": status.data_dir,
        "generation": status.generation,
        "interrupted": status.interrupted,
        "max_age_seconds": status.max_age.as_secs(),
        "sources": status.sources.iter().map(|s| json!({
            "source": s.source,
            "records": s.records,
            "newest_modified": s.newest_modified,
            "checked_at": s.checked_at,
            "age_seconds": s.age.map(|a| a.as_secs()),
            "stale": s.stale,
            "path": s.path,
            "origin": s.origin,
        })).collect::<Vec<_>>(),
        "health": match health {
            Ok(h) => VulndbCheck::from_health(h),
            Err(e) => VulndbCheck::unreadable(&status.data_dir, e),
        },
    })
}

fn max_age(config: &VulndbConfig) -> Duration {
    Duration::from_secs(config.max_age_days.max(1).saturating_mul(86_400))
}

fn health(config: &VulndbConfig) -> Result<Health, String> {
    secflow_vulndb::health(&config.data_dir, OffsetDateTime::now_utc(), max_age(config))
        .map_err(|e| error_chain(&e))
}

/// `<what is wrong>; <the command that fixes it>`.
fn verdict(health: &Health) -> String {
    match health.remedy() {
        Some(remedy) => format!("{health}; {remedy}"),
        None => health.to_string(),
    }
}

/// What `doctor` reports about the vulnerability data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VulndbCheck {
    pub data_dir: PathBuf,
    /// `missing`, `empty`, `unmanaged`, `stale`, `fresh` or `unreadable`.
    pub state: &'static str,
    /// A scan can enrich findings with it.
    pub usable: bool,
    /// The verdict in words, with the command that fixes it.
    pub message: String,
}

impl VulndbCheck {
    fn from_health(health: &Health) -> VulndbCheck {
        let (state, data_dir) = match health {
            Health::Missing { data_dir } => ("missing", data_dir),
            Health::Empty { data_dir } => ("empty", data_dir),
            Health::Unmanaged { data_dir } => ("unmanaged", data_dir),
            Health::Stale { data_dir, .. } => ("stale", data_dir),
            Health::Fresh { data_dir } => ("fresh", data_dir),
        };
        VulndbCheck {
            data_dir: data_dir.clone(),
            state,
            usable: health.has_data(),
            message: verdict(health),
        }
    }

    fn unreadable(data_dir: &std::path::Path, reason: &str) -> VulndbCheck {
        VulndbCheck {
            data_dir: data_dir.to_owned(),
            state: "unreadable",
            usable: false,
            message: format!("cannot read the vulnerability data: {reason}"),
        }
    }

    /// Whether the operator should act (anything but current or hand-filled data).
    pub fn needs_attention(&self) -> bool {
        !matches!(self.state, "fresh" | "unmanaged")
    }
}

/// The doctor's view of `config.vulndb`.
pub fn vulndb_check(config: &Config) -> VulndbCheck {
    match health(&config.vulndb) {
        Ok(h) => VulndbCheck::from_health(&h),
        Err(e) => VulndbCheck::unreadable(&config.vulndb.data_dir, &e),
    }
}

/// What a scan's summary warns about: data that is there but empty or stale.
/// A missing directory is not repeated here: cve-mapper's run is `skipped`
/// and its error already says so.
pub fn vulndb_warning(config: &Config) -> Option<String> {
    let check = vulndb_check(config);
    (check.needs_attention() && check.state != "missing").then_some(check.message)
}
