//! `secflow scan` and `secflow demo`: the default pipeline ([`crate::scan`])
//! run through the daemon or an embedded supervisor, with live progress and a
//! findings table and summary at the end (or one `{runs, findings, summary}`
//! JSON document with `--json`).
//!
//! Progress goes to stdout in human mode: on a terminal one line per run with
//! a spinner redrawn in place; otherwise the same line, printed plainly, with
//! no escape codes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::client::{DaemonClient, FindingDocs, PluginListing};
use super::table::Table;
use super::vulndb::vulndb_warning;
use super::{
    current_uid, error_chain, finding_place, load_config, runtime, socket_path, write_pretty, Cli,
    Failure,
};
use crate::demo::{self, DemoError, DemoHome, DemoOutcome};
use crate::scan::{
    self, max_cvss_of, LocalExecutor, NoProgress, ScanError, ScanExecutor, ScanProgress,
    ScanReport, ScanRun, ScanStep, FINDINGS_PAGE,
};
use secflow_core::record::{RunRecord, RunStatus};
use secflow_runner::RunRequest;
use secflow_runner::Supervisor;

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// What to scan: a URL (`http://host:port/`), `host:port` or a host; several
    /// targets make one scan (detectors run on each, enrichers over all).
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Run in an embedded supervisor instead of the daemon.
    #[arg(long)]
    pub local: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo's home (config, database, staged plugins); default: a new
    /// `secflow-demo-*` directory in the system's temp dir.
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
}

impl From<ScanError> for Failure {
    fn from(e: ScanError) -> Failure {
        match e {
            ScanError::Supervisor(e) => Failure::from(e),
            ScanError::Daemon(e) => Failure::from(e),
            ScanError::NoTarget => Failure::usage(e.to_string()),
            e => Failure::failed(error_chain(&e)),
        }
    }
}

impl From<DemoError> for Failure {
    fn from(e: DemoError) -> Failure {
        match e {
            DemoError::Scan(e) => Failure::from(e),
            e => Failure::failed(error_chain(&e)),
        }
    }
}

pub fn scan_command(cli: &Cli, args: &ScanArgs) -> Result<ExitCode, Failure> {
    let report = if args.local {
        let config = load_config(cli)?;
        runtime()?.block_on(async {
            let supervisor = Supervisor::open(config).await?;
            let mut executor = LocalExecutor::new(&supervisor, cancel_on_ctrl_c());
            let mut progress = progress_for(cli);
            let report = scan::run_scan(
                &mut executor,
                progress.as_mut(),
                &args.targets,
                Some(current_uid()),
            )
            .await;
            supervisor.flush().await?;
            Ok::<_, Failure>(report?)
        })?
    } else {
        let path = socket_path(cli)?;
        runtime()?.block_on(async {
            let mut executor = DaemonExecutor {
                client: DaemonClient::connect(&path).await?,
                socket: path,
            };
            let mut progress = progress_for(cli);
            let report = scan::run_scan(
                &mut executor,
                progress.as_mut(),
                &args.targets,
                Some(current_uid()),
            )
            .await?;
            Ok::<_, Failure>(report)
        })?
    };
    let mut report = report;
    if let Ok(config) = load_config(cli) {
        // The daemon reads the same file; without it there is no data dir to judge.
        report.summary.warnings.extend(vulndb_warning(&config));
    }
    print_report(cli, &report, &report, None)?;
    Ok(exit_code(&report))
}

pub fn demo_command(cli: &Cli, args: &DemoArgs) -> Result<ExitCode, Failure> {
    let home = match &args.home {
        Some(dir) => DemoHome::create_in(dir.clone())?,
        None => DemoHome::create()?,
    };
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot find the running secflow executable: {e}")))?;
    let bin_dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    home.stage_plugins(&bin_dir, |source, bin_dir, out| {
        super::stage_manifest(source, bin_dir, out, None).map_err(|f| f.message)
    })?;
    let outcome = runtime()?.block_on(async {
        let cancel = cancel_on_ctrl_c();
        let mut progress = progress_for(cli);
        demo::run(&home, progress.as_mut(), cancel, Some(current_uid())).await
    })?;
    print_report(cli, &outcome, &outcome.report, Some(&outcome))?;
    Ok(exit_code(&outcome.report))
}

fn exit_code(report: &ScanReport) -> ExitCode {
    if report.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A watch switch that Ctrl-C sets: the current run is cancelled (recorded
/// `cancelled`) and the scan stops there.
fn cancel_on_ctrl_c() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
        }
    });
    rx
}

/// Terminal progress in human mode; none with `--json`.
fn progress_for(cli: &Cli) -> Box<dyn ScanProgress> {
    if cli.json {
        Box::new(NoProgress)
    } else {
        Box::new(TerminalProgress::new(std::io::stdout().is_terminal()))
    }
}

/// Progress lines on stdout.
#[derive(Debug)]
struct TerminalProgress {
    /// Redraw the running line with a spinner (a terminal) or print plain lines.
    tty: bool,
    frame: usize,
}

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl TerminalProgress {
    fn new(tty: bool) -> TerminalProgress {
        TerminalProgress { tty, frame: 0 }
    }
}

/// `[2/7] detect  nuclei  http://127.0.0.1:8080/`
fn step_label(step: &ScanStep) -> String {
    let mut label = format!(
        "[{}/{}] {:<7} {:<12}",
        step.index,
        step.total,
        step.stage.as_str(),
        step.plugin
    );
    if let Some(target) = &step.target {
        label.push(' ');
        label.push_str(target);
    }
    label
}

/// `succeeded, 12 findings, 1.3s` (with the error kind when it failed).
fn run_outcome(run: &ScanRun) -> String {
    let r = &run.record;
    let mut text = format!(
        "{}, {} finding{}, {:.1}s",
        run.outcome(),
        r.findings,
        if r.findings == 1 { "" } else { "s" },
        r.duration_ms as f64 / 1000.0
    );
    let explained = !run.ok() || r.status == RunStatus::Skipped;
    if let (true, Some(e)) = (explained, &r.error) {
        text.push_str(&format!(" ({}: {})", e.kind, first_line(&e.message)));
    }
    text
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

impl ScanProgress for TerminalProgress {
    fn started(&mut self, step: &ScanStep) {
        let mut out = std::io::stdout().lock();
        let _ = if self.tty {
            write!(out, "\r\x1b[2K{} {}", SPINNER[0], step_label(step))
        } else {
            write!(out, "{} ... ", step_label(step))
        };
        let _ = out.flush();
    }

    fn tick(&mut self, step: &ScanStep, elapsed: Duration) {
        if !self.tty {
            return;
        }
        self.frame = (self.frame + 1) % SPINNER.len();
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2K{} {}  {:.1}s",
            SPINNER[self.frame],
            step_label(step),
            elapsed.as_secs_f64()
        );
        let _ = out.flush();
    }

    fn finished(&mut self, step: &ScanStep, run: &ScanRun) {
        let mut out = std::io::stdout().lock();
        let _ = if self.tty {
            let mark = if run.ok() { '✓' } else { '✗' };
            writeln!(
                out,
                "\r\x1b[2K{mark} {}  {}",
                step_label(step),
                run_outcome(run)
            )
        } else {
            writeln!(out, "{}", run_outcome(run))
        };
        let _ = out.flush();
    }
}

/// Prints `document` with `--json`; else the tables and summary of `report`
/// (and where the demo's database is).
fn print_report<T: serde::Serialize>(
    cli: &Cli,
    document: &T,
    report: &ScanReport,
    demo: Option<&DemoOutcome>,
) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = if cli.json {
        write_pretty(&mut out, document)
    } else {
        write_human(&mut out, report, demo)
    };
    written.map_err(|e| Failure::failed(format!("cannot write output: {e}")))
}

fn write_human(
    out: &mut dyn Write,
    report: &ScanReport,
    demo: Option<&DemoOutcome>,
) -> std::io::Result<()> {
    let s = &report.summary;
    writeln!(out, "\nFindings ({}), most severe first:", s.findings)?;
    let mut t = Table::new(&["SEVERITY", "CVSS", "RULE", "WHERE", "TITLE", "CVES"]);
    for f in &report.findings {
        let text = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        t.row(vec![
            text("severity"),
            max_cvss_of(f)
                .map(|c| format!("{c:.1}"))
                .unwrap_or_default(),
            text("rule_id"),
            finding_place(f).to_string(),
            text("title"),
            cve_list(f),
        ]);
    }
    t.write(out)?;

    writeln!(out, "\nSummary")?;
    writeln!(out, "  targets:   {}", s.targets.join(", "))?;
    let b = &s.by_severity;
    writeln!(
        out,
        "  findings:  {} (critical {}, high {}, medium {}, low {}, info {}, unknown {})",
        s.findings, b.critical, b.high, b.medium, b.low, b.info, b.unknown
    )?;
    if !s.top_cves.is_empty() {
        let top: Vec<String> = s
            .top_cves
            .iter()
            .map(|c| {
                let mut text = c.cve.clone();
                if let Some(score) = c.max_cvss {
                    text.push_str(&format!(" {score:.1}"));
                }
                if c.kev_date_added.is_some() {
                    text.push_str(" KEV");
                }
                text
            })
            .collect();
        writeln!(out, "  top CVEs:  {}", top.join(", "))?;
    }
    for hit in &s.kev {
        writeln!(
            out,
            "  KEV:       {} added {}, due {} on {}",
            hit.cve,
            hit.date_added.as_deref().unwrap_or("?"),
            hit.due_date.as_deref().unwrap_or("?"),
            hit.targets.join(", ")
        )?;
    }
    let runs: Vec<String> = s.runs.iter().map(|(k, n)| format!("{n} {k}")).collect();
    writeln!(out, "  runs:      {}", runs.join(", "))?;
    for warning in &s.warnings {
        writeln!(out, "  warning:   {warning}")?;
    }
    for p in &s.skipped_plugins {
        writeln!(
            out,
            "  skipped:   {} ({}{})",
            p.name,
            p.status,
            p.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )?;
    }

    writeln!(out, "\nRuns:")?;
    let mut t = Table::new(&[
        "RUN", "STAGE", "PLUGIN", "TARGET", "STATUS", "FINDINGS", "MS", "ERROR",
    ]);
    for run in &report.runs {
        let r: &RunRecord = &run.record;
        t.row(vec![
            r.run_id.clone(),
            run.stage.as_str().to_string(),
            r.plugin.clone(),
            run.target.clone().unwrap_or_default(),
            run.outcome().to_string(),
            r.findings.to_string(),
            r.duration_ms.to_string(),
            r.error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, first_line(&e.message)))
                .unwrap_or_default(),
        ]);
    }
    t.write(out)?;
    if let Some(demo) = demo {
        writeln!(out, "\nDemo target: {} (an Apache 2.4.49 look-alike) and {} (an OpenSSH 7.2p2 banner); both stopped now.", demo.http_target, demo.ssh_target)?;
        writeln!(out, "Database:    {}", demo.database.display())?;
        writeln!(
            out,
            "Explore it:  secflow --config {} findings --local",
            demo.config.display()
        )?;
    }
    Ok(())
}

/// `CVE-2021-41773 (KEV), CVE-2021-42013`
fn cve_list(finding: &Value) -> String {
    finding
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let cve = v.get("cve").and_then(Value::as_str)?;
            Some(if v.get("kev").is_some_and(Value::is_object) {
                format!("{cve} (KEV)")
            } else {
                cve.to_string()
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Executes the pipeline's runs in the daemon: `runs.start`, then `runs.wait`
/// (Ctrl-C cancels the run in the daemon, on a connection of its own).
#[derive(Debug)]
struct DaemonExecutor {
    client: DaemonClient,
    socket: PathBuf,
}

impl ScanExecutor for DaemonExecutor {
    async fn plugins(&mut self) -> Result<Vec<PluginListing>, ScanError> {
        Ok(self.client.call_as("plugins.list", Value::Null).await?)
    }

    async fn execute(&mut self, request: RunRequest) -> Result<RunRecord, ScanError> {
        let params = json!({
            "plugin": request.plugin,
            "inputs": request.inputs,
            "config": request.config,
            "timeout_ms": request.timeout_ms,
        });
        let started = self.client.call("runs.start", params).await?;
        let run_id = started
            .get("run_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let wait = json!({ "run_id": run_id });
        let record = tokio::select! {
            record = self.client.call_as("runs.wait", wait.clone()) => record?,
            _ = tokio::signal::ctrl_c() => {
                let mut canceller = DaemonClient::connect(&self.socket).await?;
                let record = canceller.call_as("runs.cancel", wait).await?;
                // The abandoned runs.wait answer would confuse the next call.
                self.client = canceller;
                record
            }
        };
        Ok(record)
    }

    async fn findings_page(
        &mut self,
        run_id: &str,
        after: Option<i64>,
    ) -> Result<(Vec<Value>, Option<i64>), ScanError> {
        let page: FindingDocs = self
            .client
            .call_as(
                "findings.query",
                json!({ "run_id": run_id, "limit": FINDINGS_PAGE, "after": after }),
            )
            .await?;
        Ok((page.findings, page.next))
    }
}
