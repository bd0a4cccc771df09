//! `secflow storage migrate|export|import`: bring the configured store's
//! schema up to date, and move a host's SQLite database into the fleet's
//! PostgreSQL store with every count checked.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{error_chain, load_config, print_output, Cli, Failure};

#[derive(Debug, Subcommand)]
pub enum StorageAction {
    /// Apply the configured store's missing schema migrations now (the
    /// daemon also does at start).
    Migrate,
    /// Write the SQLite database (storage.path, or --sqlite) as a dump.
    Export(ExportArgs),
    /// Read a dump into the configured PostgreSQL store, in one
    /// transaction, checking that nothing was lost.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The SQLite database file (default: storage.path).
    #[arg(long, value_name = "PATH")]
    pub sqlite: Option<PathBuf>,
    /// Where the dump goes (created, not overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A dump written by `secflow storage export`.
    pub dump: PathBuf,
}

pub fn storage_command(cli: &Cli, action: &StorageAction) -> Result<ExitCode, Failure> {
    let config = load_config(cli)?;
    match action {
        StorageAction::Migrate => {
            drop(secflow_runner::open_store(
                &config.storage,
                &config.host.name,
            )?);
            let probe = secflow_runner::probe_store(&config.storage);
            let answer = json!({
                "backend": probe.backend,
                "location": probe.location,
                "schema_version": probe.schema_version,
            });
            print_output(cli, &answer, |out| {
                writeln!(
                    out,
                    "store {} at {}: schema version {}",
                    probe.backend.as_str(),
                    probe.location,
                    probe.schema_version.unwrap_or_default()
                )
            })?;
        }
        StorageAction::Export(args) => {
            let mut storage = config.storage.clone();
            if let Some(path) = &args.sqlite {
                storage.path = path.clone();
            }
            if !storage.path.exists() {
                return Err(Failure::usage(format!(
                    "no SQLite database at {}",
                    storage.path.display()
                )));
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&args.out)
                .map_err(|e| {
                    Failure::failed(format!("cannot create {}: {e}", args.out.display()))
                })?;
            let out = std::io::BufWriter::new(file);
            let counts = secflow_runner::export_sqlite(&storage, &config.host.name, out)
                .map_err(|e| Failure::failed(error_chain(&e)))?;
            print_output(cli, &counts, |out| {
                writeln!(out, "exported {counts} to {}", args.out.display())
            })?;
        }
        StorageAction::Import(args) => {
            let file = std::fs::File::open(&args.dump)
                .map_err(|e| Failure::usage(format!("cannot open {}: {e}", args.dump.display())))?;
            let report =
                secflow_runner::import_into_store(&config.storage, std::io::BufReader::new(file))
                    .map_err(|e| match e {
                    secflow_runner::ImportError::NotPostgres => Failure::usage(e.to_string()),
                    e => Failure::failed(error_chain(&e)),
                })?;
            print_output(cli, &report, |out| {
                writeln!(
                    out,
                    "imported {} ({} findings merged into ones the store already held)",
                    report.read, report.merged_findings
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
