//! `secflowd`: the SecFlow supervisor daemon (see `secflow_api::daemon`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use secflow_api::daemon::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "secflowd",
    version,
    about = "The SecFlow plugin supervisor daemon: serves the workflow executor's API on a Unix socket"
)]
struct Args {
    /// Config file.
    #[arg(
        long,
        env = "SECFLOW_CONFIG",
        value_name = "PATH",
        default_value = secflow_core::config::SYSTEM_CONFIG
    )]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    daemon::init_logging(args.log_format);
    match daemon::run(&args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = secflow_core::error_chain(&e);
            tracing::error!(error = %message, "secflowd failed");
            eprintln!("secflowd: {message}");
            ExitCode::FAILURE
        }
    }
}
