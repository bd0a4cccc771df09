//! `secflow plugin check EXECUTABLE`: the conformance checklist for plugin
//! authors (see `crate::check`), printed as text or as one JSON document.
//!
//! It needs no daemon and no database: only the sandbox settings of the config
//! (or the built-in defaults when there is no config file), so an author can
//! run it on a development machine before writing a manifest.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{error_chain, load_config, read_inputs, runtime, Cli, Failure, SYSTEM_CONFIG};
use crate::check::{check_plugin, render, CheckError, CheckRequest};
use secflow_core::config::Config;
use secflow_sandbox::Host;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The plugin executable (a binary or a `#!` script).
    pub executable: PathBuf,
    /// The plugin's manifest; without it the identity is learned from the
    /// plugin's first `initialize` answer.
    #[arg(long, value_name = "MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// The `run` inputs (a JSON object, or an array taken as the findings);
    /// without it a sample for the plugin's category.
    #[arg(long, value_name = "FILE")]
    pub input: Option<String>,
}

/// Runs the checklist; exit 0 only when every check passed, 1 when one failed,
/// 2 for bad usage (unreadable executable, invalid manifest or input).
pub fn check_command(cli: &Cli, args: &CheckArgs) -> Result<ExitCode, Failure> {
    let inputs = match &args.input {
        Some(source) => Some(read_inputs(Some(source))?),
        None => None,
    };
    // Without any config file the built-in defaults apply, with the work dirs
    // in a directory of our own under the system temp dir, removed afterwards.
    let scratch = (cli.config.is_none() && !std::path::Path::new(SYSTEM_CONFIG).exists())
        .then(|| std::env::temp_dir().join(format!("secflow-check-{}", std::process::id())));
    let config = match &scratch {
        Some(dir) => Config::defaults_in(dir),
        None => load_config(cli)?,
    };
    let request = CheckRequest {
        executable: args.executable.clone(),
        manifest: args.manifest.clone(),
        inputs,
    };
    let report = runtime()?.block_on(async {
        let host = Host::probe();
        check_plugin(&config, &host, request).await
    });
    if let Some(dir) = &scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    let report = report.map_err(|e| match e {
        CheckError::Sandbox { .. } => Failure::failed(error_chain(&e)),
        _ => Failure::usage(error_chain(&e)),
    })?;
    let mut out = std::io::stdout().lock();
    let written = if cli.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        out.write_all(render(&report).as_bytes())
    };
    written.map_err(|e| Failure::failed(format!("cannot write the report: {e}")))?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
