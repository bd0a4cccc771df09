//! The `secflow` command line: raw arguments (clap) first, then each command
//! against the daemon (through its socket) or, with `--local`, against an
//! embedded supervisor or the database directly. Both paths print the same
//! tables and the same `--json` documents.
//!
//! Exit status (contracts §1): 0 success, 1 a failed run or request, 2 bad usage
//! or bad input, 3 the daemon cannot be reached.

mod author;
mod check;
pub mod client;
mod doctor;
mod repository;
pub mod sarif;
mod scan;
mod storage;
mod table;
mod vulndb;
mod web;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secflow_plugin_sdk::protocol::Severity;
use serde::Serialize;
use serde_json::{json, Map, Value};

use client::{ClientError, DaemonClient, FindingDocs, PluginListing};
use secflow_core::config::Config;
use secflow_core::record::{RunRecord, RunStatus};
use secflow_runner::RunRequest;
use secflow_runner::Supervisor;
use secflow_store::{
    AuditEvent, AuditQuery, FindingQuery, RunQuery, StoragePort, TelemetryEvent, TelemetryQuery,
};
use table::Table;

pub use secflow_core::config::SYSTEM_CONFIG;
/// Largest `--input` document read.
const MAX_INPUT_BYTES: u64 = 256 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "secflow",
    version,
    about = "Run and inspect SecFlow security plugins"
)]
pub struct Cli {
    /// Config file (default: $SECFLOW_CONFIG, else /etc/secflow/secflow.toml).
    #[arg(long, global = true, env = "SECFLOW_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Daemon socket (default: api.socket from the config).
    #[arg(long, global = true, env = "SECFLOW_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Machine-readable output: one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Registered plugins with status and reason.
    Plugins {
        #[command(subcommand)]
        action: Option<PluginsAction>,
        /// Discover with the embedded supervisor instead of asking the daemon.
        #[arg(long, global = true)]
        local: bool,
    },
    /// Run one plugin and print its run record.
    Run(RunArgs),
    /// Stored run records.
    Runs {
        #[command(subcommand)]
        action: Option<RunsAction>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Read the database directly instead of asking the daemon.
        #[arg(long, global = true)]
        local: bool,
    },
    /// Stored findings.
    Findings(FindingsArgs),
    /// Telemetry events (one per run).
    Telemetry {
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Read the database directly instead of asking the daemon.
        #[arg(long)]
        local: bool,
    },
    /// The audit trail.
    Audit {
        #[arg(long, value_name = "KIND")]
        event: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Read the database directly instead of asking the daemon.
        #[arg(long)]
        local: bool,
    },
    /// Plugins from repositories (`search`, `info`, `install NAME[@REQ]`,
    /// `upgrade`, `remove`, `list [--outdated]`) and `plugin check EXECUTABLE`.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// For a repository's maintainer: `repo build DIR --key KEY`.
    Repo {
        #[command(subcommand)]
        action: secflow_repo::cli::RepoAction,
    },
    /// Plugin author tools.
    Manifest {
        #[command(subcommand)]
        action: ManifestAction,
    },
    /// Generate an ed25519 signing key pair (PREFIX.key, PREFIX.pub).
    Keygen(author::KeygenArgs),
    /// Which isolation features this host offers, and whether the config can be honoured.
    Doctor,
    /// The store's schema, and moving a SQLite database into PostgreSQL.
    Storage {
        #[command(subcommand)]
        action: storage::StorageAction,
    },
    /// The default pipeline against targets: every active detector, then
    /// every enricher over their findings, then every analytics plugin.
    Scan(scan::ScanArgs),
    /// Scan a built-in local target (an Apache 2.4.49 and an OpenSSH
    /// look-alike) with an embedded supervisor and a throwaway database.
    Demo(scan::DemoArgs),
    /// The vulnerability data cve-mapper reads: `update`, `import PATH...`, `status`.
    Vulndb {
        #[command(subcommand)]
        action: vulndb::VulndbAction,
    },
    /// The web dashboard: `web token --user NAME` issues a login.
    Web {
        #[command(subcommand)]
        action: web::WebAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginsAction {
    /// Registered plugins (the default).
    List,
    /// Rediscover manifests.
    Reload,
    /// Revoke a plugin until an operator reinstates it.
    Revoke {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift a revocation.
    Reinstate { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// Check a plugin executable against the protocol contract, under the sandbox.
    Check(check::CheckArgs),
    #[command(flatten)]
    Repository(secflow_repo::cli::PluginAction),
}

#[derive(Debug, Subcommand)]
pub enum RunsAction {
    /// One run record.
    Show { run_id: String },
}

#[derive(Debug, Subcommand)]
pub enum ManifestAction {
    /// Print the code hash (`sha256:<hex>`) of a plugin executable.
    Hash { file: PathBuf },
    /// Stage source manifests for a build: copy each plugin's executable from
    /// --bin-dir into --out/<name>/ and write its manifest there with the
    /// code_hash of that executable (and, with --key, an ed25519 signature).
    Stage {
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
        #[arg(long, value_name = "DIR")]
        bin_dir: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Sign each staged manifest with this private key.
        #[arg(long, value_name = "KEY")]
        key: Option<PathBuf>,
    },
    /// Fill in code_hash from the entrypoint and sign the manifest (ed25519).
    Sign(author::SignArgs),
    /// Check a manifest's code hash and ed25519 signature.
    Verify(author::VerifyArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub plugin: String,
    /// Inputs: a JSON object, or an array taken as `{"findings": [...]}`; `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    pub input: Option<String>,
    /// A config value (JSON, or a plain string); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Config as one JSON object (merged under --set).
    #[arg(long, value_name = "JSON")]
    pub config_json: Option<String>,
    /// Wall-clock limit in seconds (capped by the manifest's timeout_seconds).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Run in an embedded supervisor instead of the daemon.
    #[arg(long)]
    pub local: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FindingsFormat {
    Table,
    Json,
    Ndjson,
    /// SARIF 2.1.0, as GitHub code scanning accepts it.
    Sarif,
}

#[derive(Debug, Subcommand)]
pub enum FindingsAction {
    /// One finding with the provenance of the run that first reported it:
    /// plugin version, binary, manifest and sandbox policy digests.
    Show {
        id: i64,
        /// Read the database directly instead of asking the daemon.
        #[arg(long)]
        local: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FindingsArgs {
    #[command(subcommand)]
    pub action: Option<FindingsAction>,
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<String>,
    #[arg(long)]
    pub plugin: Option<String>,
    #[arg(long, value_name = "LEVEL", value_parser = parse_severity)]
    pub min_severity: Option<Severity>,
    /// Only findings this host (`[host] name`) observed.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Only findings whose target contains TEXT (ASCII case ignored).
    #[arg(long, value_name = "TEXT", value_parser = parse_target_text)]
    pub target: Option<String>,
    /// Only findings whose title or rule id contains TEXT (ASCII case ignored).
    #[arg(long, value_name = "TEXT", value_parser = parse_search_text)]
    pub text: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    #[arg(long, value_enum)]
    pub format: Option<FindingsFormat>,
    /// Read the database directly instead of asking the daemon.
    #[arg(long)]
    pub local: bool,
}

fn parse_target_text(s: &str) -> Result<String, String> {
    FindingQuery::check_search_text("--target", s).map(|()| s.to_string())
}

fn parse_search_text(s: &str) -> Result<String, String> {
    FindingQuery::check_search_text("--text", s).map(|()| s.to_string())
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s)
        .ok_or_else(|| "expected one of info, low, medium, high, critical, unknown".to_string())
}

/// A command failure with its exit status.
#[derive(Debug)]
pub struct Failure {
    pub status: u8,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            status: 2,
            message: message.into(),
        }
    }
    fn failed(message: impl Into<String>) -> Failure {
        Failure {
            status: 1,
            message: message.into(),
        }
    }
}

impl From<secflow_runner::SupervisorError> for Failure {
    fn from(e: secflow_runner::SupervisorError) -> Failure {
        let status = match e {
            secflow_runner::SupervisorError::UnknownPlugin(_)
            | secflow_runner::SupervisorError::UnknownFinding(_) => 2,
            _ => 1,
        };
        Failure {
            status,
            message: error_chain(&e),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            status: e.exit_status(),
            message: error_chain(&e),
        }
    }
}

impl From<secflow_store::StorageError> for Failure {
    fn from(e: secflow_store::StorageError) -> Failure {
        Failure::failed(error_chain(&e))
    }
}

pub use secflow_core::error_chain;

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match dispatch(&cli) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("secflow: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

fn dispatch(cli: &Cli) -> Result<ExitCode, Failure> {
    match &cli.command {
        Command::Manifest { action } => manifest_command(cli, action),
        Command::Keygen(args) => author::keygen_command(cli, args),
        Command::Plugin {
            action: PluginAction::Check(args),
        } => check::check_command(cli, args),
        Command::Plugin {
            action: PluginAction::Repository(action),
        } => repository::plugin_command(cli, action),
        Command::Repo { action } => repository::repo_command(cli, action),
        Command::Doctor => doctor::doctor_command(cli),
        Command::Storage { action } => storage::storage_command(cli, action),
        Command::Scan(args) => scan::scan_command(cli, args),
        Command::Demo(args) => scan::demo_command(cli, args),
        Command::Vulndb { action } => vulndb::vulndb_command(cli, action),
        Command::Web { action } => web::web_command(cli, action),
        Command::Plugins { action, local } => {
            let action = action.as_ref().unwrap_or(&PluginsAction::List);
            if *local {
                plugins_local(cli, action)
            } else {
                plugins_remote(cli, action)
            }
        }
        Command::Run(args) => run_command(cli, args),
        Command::Runs {
            action,
            limit,
            local,
        } => match action {
            Some(RunsAction::Show { run_id }) => {
                let record: RunRecord = if *local {
                    open_store(cli)?
                        .run(run_id)?
                        .ok_or_else(|| Failure::usage(format!("no run with id {run_id:?}")))?
                } else {
                    call_daemon(cli, "runs.get", json!({ "run_id": run_id }))?
                };
                print_output(cli, &record, |out| write_record(out, &record))
            }
            None => {
                let runs: Vec<RunRecord> = if *local {
                    open_store(cli)?.runs(&RunQuery {
                        limit: Some(*limit),
                        ..RunQuery::default()
                    })?
                } else {
                    call_daemon(cli, "runs.list", json!({ "limit": limit }))?
                };
                print_output(cli, &runs, |out| write_runs(out, &runs))
            }
        },
        Command::Findings(args) => findings_command(cli, args),
        Command::Telemetry {
            plugin,
            limit,
            local,
        } => {
            let events: Vec<TelemetryEvent> = if *local {
                open_store(cli)?.telemetry(&TelemetryQuery {
                    plugin: plugin.clone(),
                    run_id: None,
                    limit: Some(*limit),
                })?
            } else {
                call_daemon(
                    cli,
                    "telemetry.query",
                    json!({ "plugin": plugin, "limit": limit }),
                )?
            };
            print_output(cli, &events, |out| {
                let mut t = Table::new(&[
                    "TIME", "PLUGIN", "VERSION", "RUN", "OK", "MS", "CPU_MS", "MEM_MB", "FINDINGS",
                ]);
                for e in &events {
                    t.row(vec![
                        e.timestamp.clone(),
                        e.plugin.clone(),
                        e.version.clone(),
                        e.run_id.clone(),
                        e.success.to_string(),
                        e.duration_ms.to_string(),
                        e.cpu_ms.to_string(),
                        e.memory_mb.to_string(),
                        e.findings_processed.to_string(),
                    ]);
                }
                t.write(out)
            })
        }
        Command::Audit {
            event,
            limit,
            local,
        } => {
            let events: Vec<AuditEvent> = if *local {
                open_store(cli)?.audit(&AuditQuery {
                    event: event.clone(),
                    limit: Some(*limit),
                    ..AuditQuery::default()
                })?
            } else {
                call_daemon(
                    cli,
                    "audit.query",
                    json!({ "event": event, "limit": limit }),
                )?
            };
            print_output(cli, &events, |out| {
                let mut t = Table::new(&["TIME", "EVENT", "SECURITY", "PLUGIN", "UID", "MESSAGE"]);
                for e in &events {
                    t.row(vec![
                        e.timestamp.clone(),
                        e.event.clone(),
                        if e.security {
                            "yes".into()
                        } else {
                            String::new()
                        },
                        e.plugin.clone().unwrap_or_default(),
                        e.actor_uid.map(|u| u.to_string()).unwrap_or_default(),
                        e.message.clone(),
                    ]);
                }
                t.write(out)
            })
        }
    }
}

/// The daemon's socket: --socket / SECFLOW_SOCKET, else `api.socket` of the
/// config, else (no config file at all) the built-in default.
pub fn socket_path(cli: &Cli) -> Result<PathBuf, Failure> {
    if let Some(socket) = &cli.socket {
        return Ok(socket.clone());
    }
    if cli.config.is_none() && !Path::new(SYSTEM_CONFIG).exists() {
        return Ok(secflow_core::config::ApiConfig::default().socket);
    }
    Ok(load_config(cli)?.api.socket)
}

/// One call to the daemon.
fn call_daemon<T: serde::de::DeserializeOwned>(
    cli: &Cli,
    method: &str,
    params: Value,
) -> Result<T, Failure> {
    let path = socket_path(cli)?;
    runtime()?.block_on(async {
        let mut client = DaemonClient::connect(&path).await?;
        Ok(client.call_as(method, params).await?)
    })
}

/// The config named by --config / SECFLOW_CONFIG, else the system one.
pub fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CONFIG));
    if cli.config.is_none() && !path.exists() {
        return Err(Failure::usage(format!(
            "no config file: {SYSTEM_CONFIG} does not exist; pass --config PATH or set SECFLOW_CONFIG"
        )));
    }
    Config::load(&path).map_err(|e| Failure::usage(error_chain(&e)))
}

fn open_store(cli: &Cli) -> Result<Box<dyn StoragePort>, Failure> {
    let config = load_config(cli)?;
    Ok(secflow_runner::open_store(
        &config.storage,
        &config.host.name,
    )?)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))
}

fn plugins_local(cli: &Cli, action: &PluginsAction) -> Result<ExitCode, Failure> {
    let config = load_config(cli)?;
    runtime()?.block_on(async {
        let supervisor = Supervisor::open(config).await?;
        let result = match action {
            // Opening the supervisor has just discovered the manifests.
            PluginsAction::List | PluginsAction::Reload => {
                let entries: Vec<PluginListing> = supervisor
                    .plugins()
                    .iter()
                    .map(PluginListing::from)
                    .collect();
                print_plugins(cli, &entries)
            }
            PluginsAction::Revoke { name, reason } => {
                let entry = supervisor.revoke(name, reason, Some(current_uid())).await?;
                print_plugin_change(cli, &PluginListing::from(&entry), "revoked")
            }
            PluginsAction::Reinstate { name } => {
                let entry = supervisor.reinstate(name, Some(current_uid())).await?;
                print_plugin_change(cli, &PluginListing::from(&entry), "reinstated")
            }
        };
        supervisor.flush().await?;
        result
    })
}

fn plugins_remote(cli: &Cli, action: &PluginsAction) -> Result<ExitCode, Failure> {
    let path = socket_path(cli)?;
    runtime()?.block_on(async {
        let mut client = DaemonClient::connect(&path).await?;
        match action {
            PluginsAction::List | PluginsAction::Reload => {
                if matches!(action, PluginsAction::Reload) {
                    client.call("plugins.reload", Value::Null).await?;
                }
                let entries: Vec<PluginListing> =
                    client.call_as("plugins.list", Value::Null).await?;
                print_plugins(cli, &entries)
            }
            PluginsAction::Revoke { name, reason } => {
                let entry: PluginListing = client
                    .call_as("plugins.revoke", json!({ "name": name, "reason": reason }))
                    .await?;
                print_plugin_change(cli, &entry, "revoked")
            }
            PluginsAction::Reinstate { name } => {
                let entry: PluginListing = client
                    .call_as("plugins.reinstate", json!({ "name": name }))
                    .await?;
                print_plugin_change(cli, &entry, "reinstated")
            }
        }
    })
}

fn print_plugins(cli: &Cli, entries: &[PluginListing]) -> Result<ExitCode, Failure> {
    print_output(cli, &entries, |out| {
        let mut t = Table::new(&["NAME", "VERSION", "CATEGORY", "STATUS", "NETWORK", "REASON"]);
        for e in entries {
            t.row(vec![
                e.name.clone(),
                e.version.clone(),
                e.category
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.status.to_string(),
                if e.network { "yes".into() } else { "no".into() },
                e.reason.clone().unwrap_or_default(),
            ]);
        }
        t.write(out)
    })
}

fn print_plugin_change(cli: &Cli, entry: &PluginListing, verb: &str) -> Result<ExitCode, Failure> {
    print_output(cli, entry, |out| {
        writeln!(out, "{} {} {verb}", entry.name, entry.version)
    })
}

fn current_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn run_command(cli: &Cli, args: &RunArgs) -> Result<ExitCode, Failure> {
    let inputs = read_inputs(args.input.as_deref())?;
    let run_config = build_run_config(args.config_json.as_deref(), &args.set)?;
    let timeout_ms = match args.timeout {
        Some(secs) if secs.is_finite() && secs > 0.0 => Some((secs * 1000.0) as u64),
        Some(_) => {
            return Err(Failure::usage(
                "--timeout must be a positive number of seconds",
            ))
        }
        None => None,
    };
    let request = RunRequest {
        plugin: args.plugin.clone(),
        inputs,
        config: run_config,
        timeout_ms,
        actor_uid: Some(current_uid()),
        ..RunRequest::default()
    };
    if args.local {
        run_local(cli, request)
    } else {
        run_remote(cli, request)
    }
}

fn run_local(cli: &Cli, request: RunRequest) -> Result<ExitCode, Failure> {
    let config = load_config(cli)?;
    runtime()?.block_on(async {
        let supervisor = Supervisor::open(config).await?;
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        // Ctrl-C cancels the run cleanly (recorded `cancelled`) instead of
        // leaving it in flight.
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = cancel_tx.send(true);
            }
        });
        let record = supervisor.execute(request, cancel_rx).await?;
        supervisor.flush().await?;
        let findings = if cli.json {
            Vec::new()
        } else {
            supervisor
                .store()
                .findings(&FindingQuery {
                    run_id: Some(record.run_id.clone()),
                    limit: Some(1000),
                    ..FindingQuery::default()
                })?
                .findings
                .into_iter()
                .map(|f| f.finding)
                .collect()
        };
        print_run(cli, &record, &findings)
    })
}

fn run_remote(cli: &Cli, request: RunRequest) -> Result<ExitCode, Failure> {
    let path = socket_path(cli)?;
    runtime()?.block_on(async {
        let mut client = DaemonClient::connect(&path).await?;
        let params = json!({
            "plugin": request.plugin,
            "inputs": request.inputs,
            "config": request.config,
            "timeout_ms": request.timeout_ms,
        });
        let started = client.call("runs.start", params).await?;
        let run_id = started
            .get("run_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::failed("the daemon's runs.start answer has no run_id"))?
            .to_string();
        let wait = json!({ "run_id": run_id });
        // Ctrl-C cancels the run in the daemon (recorded `cancelled`); the
        // waiting connection is abandoned, so the cancel goes on its own.
        let record: RunRecord = tokio::select! {
            record = client.call_as("runs.wait", wait.clone()) => record?,
            _ = tokio::signal::ctrl_c() => {
                let mut canceller = DaemonClient::connect(&path).await?;
                canceller.call_as("runs.cancel", wait).await?
            }
        };
        let findings = if cli.json {
            Vec::new()
        } else {
            client
                .call_as::<FindingDocs>(
                    "findings.query",
                    json!({ "run_id": record.run_id, "limit": 1000 }),
                )
                .await?
                .findings
        };
        print_run(cli, &record, &findings)
    })
}

/// The run record (and, in human mode, its findings); exit 1 unless it succeeded.
fn print_run(cli: &Cli, record: &RunRecord, findings: &[Value]) -> Result<ExitCode, Failure> {
    print_output(cli, record, |out| {
        write_record(out, record)?;
        if !findings.is_empty() {
            writeln!(out)?;
            write_findings(out, findings)?;
        }
        Ok(())
    })?;
    Ok(if record.status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The run's inputs from `--input`: a JSON object, or an array of findings.
fn read_inputs(input: Option<&str>) -> Result<Map<String, Value>, Failure> {
    let Some(source) = input else {
        return Ok(Map::new());
    };
    let mut text = Vec::new();
    let read = if source == "-" {
        std::io::stdin()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut text)
    } else {
        std::fs::File::open(source).and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut text))
    };
    read.map_err(|e| Failure::usage(format!("cannot read --input {source}: {e}")))?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(Failure::usage(format!(
            "--input {source} is larger than {} MiB",
            MAX_INPUT_BYTES >> 20
        )));
    }
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Array(findings)) => Ok(Map::from_iter([("findings".to_string(), Value::Array(findings))])),
        Ok(_) => Err(Failure::usage(format!(
            "--input {source} must hold a JSON object (the inputs) or an array (taken as the findings)"
        ))),
        Err(e) => Err(Failure::usage(format!("--input {source} is not valid JSON: {e}"))),
    }
}

/// `--config-json` merged with each `--set KEY=VALUE` (values parsed as JSON
/// when they are JSON, else taken as strings).
fn build_run_config(
    config_json: Option<&str>,
    sets: &[String],
) -> Result<Map<String, Value>, Failure> {
    let mut config = match config_json {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(Failure::usage("--config-json must be a JSON object")),
            Err(e) => {
                return Err(Failure::usage(format!(
                    "--config-json is not valid JSON: {e}"
                )))
            }
        },
    };
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--set {set:?} must be KEY=VALUE")))?;
        if key.is_empty() {
            return Err(Failure::usage(format!("--set {set:?} has an empty key")));
        }
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        config.insert(key.to_string(), value);
    }
    Ok(config)
}

fn findings_command(cli: &Cli, args: &FindingsArgs) -> Result<ExitCode, Failure> {
    if let Some(FindingsAction::Show { id, local }) = &args.action {
        return finding_show(cli, *id, *local);
    }
    let format = args.format.unwrap_or(if cli.json {
        FindingsFormat::Json
    } else {
        FindingsFormat::Table
    });
    let wanted = args.limit as usize;
    // Page through with the keyset cursor until --limit findings are read.
    let mut findings: Vec<Value> = Vec::new();
    let mut after = None;
    if args.local {
        let store = open_store(cli)?;
        loop {
            let page = store.findings(&FindingQuery {
                run_id: args.run_id.clone(),
                plugin: args.plugin.clone(),
                min_severity: args.min_severity,
                limit: Some(args.limit.min(1000)),
                after,
                host: args.host.clone(),
                target: args.target.clone(),
                text: args.text.clone(),
                window: None,
            })?;
            let got = page.findings.len();
            findings.extend(page.findings.into_iter().map(|f| f.finding));
            match page.next {
                Some(next) if got > 0 && findings.len() < wanted => after = Some(next),
                _ => break,
            }
        }
    } else {
        let path = socket_path(cli)?;
        runtime()?.block_on(async {
            let mut client = DaemonClient::connect(&path).await?;
            loop {
                let mut params = json!({
                    "run_id": args.run_id,
                    "plugin": args.plugin,
                    "min_severity": args.min_severity.map(Severity::as_str),
                    "limit": args.limit.min(1000),
                    "after": after,
                });
                for (name, value) in [
                    ("host", &args.host),
                    ("target", &args.target),
                    ("text", &args.text),
                ] {
                    if let Some(value) = value {
                        params[name] = json!(value);
                    }
                }
                let page: FindingDocs = client.call_as("findings.query", params).await?;
                let got = page.findings.len();
                findings.extend(page.findings);
                match page.next {
                    Some(next) if got > 0 && findings.len() < wanted => after = Some(next),
                    _ => return Ok::<(), Failure>(()),
                }
            }
        })?;
    }
    findings.truncate(wanted);
    let provenance = if format == FindingsFormat::Sarif {
        runs_provenance(cli, args.local, &findings)?
    } else {
        BTreeMap::new()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = match format {
        FindingsFormat::Table => write_findings(&mut out, &findings),
        FindingsFormat::Json => write_pretty(&mut out, &findings),
        FindingsFormat::Sarif => write_pretty(&mut out, &sarif::report(&findings, &provenance)),
        FindingsFormat::Ndjson => findings.iter().try_for_each(|f| {
            serde_json::to_writer(&mut out, f).map_err(std::io::Error::other)?;
            writeln!(out)
        }),
    };
    written.map_err(|e| Failure::failed(format!("cannot write output: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

fn write_pretty<T: Serialize>(out: &mut dyn Write, value: &T) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
    writeln!(out)
}

pub(crate) fn print_output<T: Serialize>(
    cli: &Cli,
    value: &T,
    human: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<ExitCode, Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = if cli.json {
        write_pretty(&mut out, value)
    } else {
        human(&mut out)
    };
    written.map_err(|e| Failure::failed(format!("cannot write output: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

fn write_record(out: &mut dyn Write, r: &RunRecord) -> std::io::Result<()> {
    let mut t = Table::new(&["FIELD", "VALUE"]);
    let error = r
        .error
        .as_ref()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .unwrap_or_default();
    for (k, v) in [
        ("run_id", r.run_id.clone()),
        (
            "plugin",
            format!("{} {} ({})", r.plugin, r.plugin_version, r.category),
        ),
        ("status", r.status.to_string()),
        ("partial", r.partial.to_string()),
        ("error", error),
        ("exit", describe_exit(r)),
        ("started_at", r.started_at.clone()),
        ("duration_ms", r.duration_ms.to_string()),
        ("cpu_ms", r.cpu_ms.to_string()),
        ("memory_mb", r.memory_mb.to_string()),
        ("findings", r.findings.to_string()),
        ("findings_rejected", r.findings_rejected.to_string()),
    ] {
        t.row(vec![k.to_string(), v]);
    }
    t.write(out)?;
    if !r.outputs.is_empty() {
        writeln!(out, "\noutputs:")?;
        serde_json::to_writer_pretty(&mut *out, &r.outputs).map_err(std::io::Error::other)?;
        writeln!(out)?;
    }
    if !r.stderr_tail.is_empty() {
        writeln!(out, "\nstderr (tail):\n{}", r.stderr_tail.trim_end())?;
    }
    Ok(())
}

fn describe_exit(r: &RunRecord) -> String {
    match (r.exit_code, r.signal) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "-".into(),
    }
}

fn write_runs(out: &mut dyn Write, runs: &[RunRecord]) -> std::io::Result<()> {
    let mut t = Table::new(&[
        "RUN", "PLUGIN", "STATUS", "STARTED", "MS", "FINDINGS", "ERROR",
    ]);
    for r in runs {
        t.row(vec![
            r.run_id.clone(),
            r.plugin.clone(),
            r.status.to_string(),
            r.started_at.clone(),
            r.duration_ms.to_string(),
            r.findings.to_string(),
            r.error
                .as_ref()
                .map(|e| e.kind.to_string())
                .unwrap_or_default(),
        ]);
    }
    t.write(out)
}

/// Stored finding documents (with their `id` and `occurrences`) as a table.
fn write_findings(out: &mut dyn Write, findings: &[Value]) -> std::io::Result<()> {
    let mut t = Table::new(&["ID", "SEVERITY", "RULE", "TARGET", "TITLE", "SEEN"]);
    for f in findings {
        let text = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let number = |k: &str| f.get(k).map(Value::to_string).unwrap_or_default();
        t.row(vec![
            number("id"),
            text("severity"),
            text("rule_id"),
            finding_place(f).to_string(),
            text("title"),
            number("occurrences"),
        ]);
    }
    t.write(out)
}

/// Where a finding document points: its location URL, else its target (`""`
/// when it has neither), as the tables and SARIF messages show it.
fn finding_place(finding: &Value) -> &str {
    finding
        .pointer("/location/url")
        .and_then(Value::as_str)
        .or_else(|| finding.get("target").and_then(Value::as_str))
        .unwrap_or("")
}

fn manifest_command(cli: &Cli, action: &ManifestAction) -> Result<ExitCode, Failure> {
    match action {
        ManifestAction::Hash { file } => {
            let hash =
                secflow_trust::hash_file(file).map_err(|e| Failure::usage(error_chain(&e)))?;
            print_output(
                cli,
                &serde_json::json!({"file": file, "code_hash": hash}),
                |out| writeln!(out, "{hash}"),
            )
        }
        ManifestAction::Sign(args) => author::sign_command(cli, args),
        ManifestAction::Verify(args) => author::verify_command(cli, args),
        ManifestAction::Stage {
            manifests,
            bin_dir,
            out,
            key,
        } => {
            let key = key.as_deref().map(author::read_signing_key).transpose()?;
            let mut staged = Vec::new();
            for manifest in manifests {
                staged.push(stage_manifest(manifest, bin_dir, out, key.as_ref())?);
            }
            print_output(cli, &staged, |w| {
                staged
                    .iter()
                    .try_for_each(|p| writeln!(w, "staged {}", p.display()))
            })
        }
    }
}

/// Copies a manifest's executable into `out/<name>/`, fills in its code_hash,
/// signs it with `key` if given and writes the manifest beside it. Returns the
/// staged manifest's path.
fn stage_manifest(
    source: &Path,
    bin_dir: &Path,
    out: &Path,
    key: Option<&ed25519_dalek::SigningKey>,
) -> Result<PathBuf, Failure> {
    let bad = |why: String| Failure::usage(format!("cannot stage {}: {why}", source.display()));
    let text = std::fs::read_to_string(source).map_err(|e| bad(e.to_string()))?;
    let mut doc: Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    let name = doc
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"name\"".into()))?
        .to_string();
    let entrypoint = doc
        .get("entrypoint")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"entrypoint\"".into()))?
        .to_string();
    let file_name = Path::new(&entrypoint)
        .file_name()
        .ok_or_else(|| bad(format!("entrypoint {entrypoint:?} names no file")))?;
    let binary = bin_dir.join(file_name);
    let dir = out.join(&name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
    let staged_binary = dir.join(file_name);
    // Replace, never write through: a running plugin may still have the old file open.
    let _ = std::fs::remove_file(&staged_binary);
    std::fs::copy(&binary, &staged_binary)
        .map_err(|e| bad(format!("cannot copy {}: {e}", binary.display())))?;
    let hash = secflow_trust::hash_file(&staged_binary).map_err(|e| bad(error_chain(&e)))?;
    doc.insert(
        "entrypoint".into(),
        Value::String(file_name.to_string_lossy().into_owned()),
    );
    doc.insert("code_hash".into(), Value::String(hash));
    if let Some(key) = key {
        secflow_trust::sign_manifest(&mut doc, key).map_err(|e| bad(e.to_string()))?;
    }
    let doc = Value::Object(doc);
    if let Err(violations) = secflow_core::schema::validate_manifest(&doc) {
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        return Err(bad(format!(
            "the staged manifest fails the schema: {}",
            list.join("; ")
        )));
    }
    let target = dir.join(
        source
            .file_name()
            .unwrap_or_else(|| std::ffi::OsStr::new("manifest.json")),
    );
    let mut body = serde_json::to_string_pretty(&doc).map_err(|e| bad(e.to_string()))?;
    body.push('\n');
    std::fs::write(&target, body)
        .map_err(|e| bad(format!("cannot write {}: {e}", target.display())))?;
    Ok(target)
}

/// The provenance of each run that first reported one of `findings`, by run id.
fn runs_provenance(
    cli: &Cli,
    local: bool,
    findings: &[Value],
) -> Result<BTreeMap<String, Value>, Failure> {
    let runs: std::collections::BTreeSet<String> = findings
        .iter()
        .filter_map(|f| f.get("run_id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut provenance = BTreeMap::new();
    if local {
        let store = open_store(cli)?;
        for run in runs {
            if let Some(p) = secflow_runner::provenance::of_run(&*store, &run)? {
                provenance.insert(run, json!(p));
            }
        }
    } else {
        let path = socket_path(cli)?;
        runtime()?.block_on(async {
            let mut client = DaemonClient::connect(&path).await?;
            for run in runs {
                let answer = client
                    .call("runs.provenance", json!({ "run_id": run }))
                    .await?;
                if !answer["provenance"].is_null() {
                    provenance.insert(run, answer["provenance"].clone());
                }
            }
            Ok::<(), Failure>(())
        })?;
    }
    Ok(provenance)
}

/// `secflow findings show ID`.
fn finding_show(cli: &Cli, id: i64, local: bool) -> Result<ExitCode, Failure> {
    let shown: Value = if local {
        let store = open_store(cli)?;
        let (finding, provenance) =
            secflow_runner::provenance::finding_with_provenance(&*store, id)?
                .ok_or_else(|| Failure::usage(format!("no finding with id {id}")))?;
        json!({"finding": finding.finding, "provenance": provenance})
    } else {
        call_daemon(cli, "findings.get", json!({ "id": id }))?
    };
    print_output(cli, &shown, |out| write_finding(out, &shown))
}

fn write_finding(out: &mut dyn Write, shown: &Value) -> std::io::Result<()> {
    let finding = &shown["finding"];
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut t = Table::new(&["FIELD", "VALUE"]);
    for key in [
        "id",
        "rule_id",
        "title",
        "severity",
        "target",
        "fingerprint",
        "run_id",
        "first_seen",
        "last_seen",
        "occurrences",
        "hosts",
    ] {
        if let Some(value) = finding.get(key) {
            t.row(vec![key.to_string(), text(value)]);
        }
    }
    if let Some(plugin) = finding.get("plugin") {
        t.row(vec![
            "plugin".into(),
            format!("{} {}", text(&plugin["name"]), text(&plugin["version"])),
        ]);
    }
    match shown.get("provenance") {
        Some(p) if !p.is_null() => {
            for key in [
                "binary_digest",
                "manifest_digest",
                "signed_by",
                "policy_digest",
            ] {
                t.row(vec![format!("provenance.{key}"), text(&p[key])]);
            }
        }
        _ => t.row(vec![
            "provenance".into(),
            "none recorded (a run from before provenance was kept)".into(),
        ]),
    }
    t.write(out)?;
    if let Some(description) = finding.get("description").and_then(Value::as_str) {
        writeln!(out, "\n{description}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_options_are_accepted_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["secflow", "runs", "--json", "--config", "/x.toml"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.config.as_deref(), Some(Path::new("/x.toml")));
        let cli = Cli::try_parse_from(["secflow", "--json", "plugins", "--local"]).unwrap();
        assert!(matches!(cli.command, Command::Plugins { local: true, .. }));
    }

    #[test]
    fn set_values_are_json_when_they_parse_and_strings_otherwise() {
        let config = build_run_config(
            Some(r#"{"a": 1, "b": "x"}"#),
            &["b=2".into(), "c=hello".into(), "d=[1]".into()],
        )
        .unwrap();
        assert_eq!(
            Value::Object(config),
            serde_json::json!({"a": 1, "b": 2, "c": "hello", "d": [1]})
        );
        assert_eq!(
            build_run_config(None, &["novalue".into()])
                .unwrap_err()
                .status,
            2
        );
        assert_eq!(build_run_config(Some("[1]"), &[]).unwrap_err().status, 2);
    }

    #[test]
    fn an_array_input_is_taken_as_the_findings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.json");
        std::fs::write(&path, r#"[{"rule_id": "r"}]"#).unwrap();
        let inputs = read_inputs(path.to_str()).unwrap();
        assert_eq!(inputs["findings"][0]["rule_id"], "r");
        std::fs::write(&path, "42").unwrap();
        assert_eq!(read_inputs(path.to_str()).unwrap_err().status, 2);
    }
}
