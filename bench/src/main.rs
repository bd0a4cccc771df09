//! `secflow-bench`: SecFlow's benchmark suite (issue 9), one program run by
//! `scripts/bench`. Eight sections, each measured beside its anchor in the same
//! run on the same machine where there is one: spawn, run throughput, findings
//! ingestion, API latency, footprint, dashboard pages, ingestion into the
//! fleet store (PostgreSQL), and the spawn cost of target-scoped egress. It prints a table, writes the figures as JSON and, when
//! asked, the generated part of BENCHMARKS.md.
//!
//! It drives the real release binaries (`secflowd`, the fixture detector, the
//! streaming plugin) found beside its own executable, in throwaway homes, as
//! root (the sandbox needs it).

mod daemon;
mod home;
mod report;
mod section;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde_json::{json, Value};

use report::Figure;

/// A failure that stops the suite.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bench setup: {0}")]
    Setup(String),
    #[error("{0}")]
    Plugin(String),
    #[error("secflowd: {0}")]
    Daemon(String),
    #[error(transparent)]
    Rpc(#[from] daemon::RpcError),
    #[error("bench database")]
    Sqlite(#[from] rusqlite::Error),
}

#[derive(Debug, Parser)]
#[command(
    name = "secflow-bench",
    about = "SecFlow's benchmark suite (run it with scripts/bench)"
)]
struct Args {
    /// A short smoke run (< 1 minute): every section, small sizes.
    #[arg(long)]
    quick: bool,
    /// Sections to run (comma-separated): spawn, throughput, ingest, api, footprint, fleet.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "spawn,throughput,ingest,api,footprint,dashboard,fleet,egress"
    )]
    sections: Vec<String>,
    /// Timed runs per spawn variant [full 300, quick 30].
    #[arg(long)]
    spawn_runs: Option<usize>,
    /// Runs per throughput variant [full 3000, quick 200].
    #[arg(long)]
    throughput_runs: Option<usize>,
    /// Runs in flight at once in the throughput section.
    #[arg(long, default_value_t = 64)]
    parallelism: usize,
    /// Findings streamed in the ingestion section [full 1000000, quick 50000].
    #[arg(long)]
    findings: Option<u64>,
    /// system.health requests per concurrency level (findings.query gets a tenth) [full 20000, quick 2000].
    #[arg(long)]
    api_requests: Option<usize>,
    /// Runs in flight in the footprint section.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Where secflowd, fixture-detector and bench-streamer are [default: beside this program].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The JSON report [default: <bin dir>/../bench/secflow-bench.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Rewrite the generated part of this Markdown file (BENCHMARKS.md).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// The executables the sections drive.
#[derive(Debug)]
pub struct Bins {
    pub secflowd: PathBuf,
    pub fixture_detector: PathBuf,
    pub streamer: PathBuf,
    pub bwrap: PathBuf,
    pub python: PathBuf,
}

impl Bins {
    fn find(dir: &Path) -> Result<Bins, BenchError> {
        let built = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(BenchError::Setup(format!(
                    "{} is not built; scripts/bench builds it (cargo build --release -p secflow-supervisor -p secflow-tests -p secflow-bench --bins)",
                    path.display()
                )))
            }
        };
        let installed = |name: &str| {
            on_path(name).ok_or_else(|| {
                BenchError::Setup(format!(
                    "{name} is not on PATH; scripts/bench installs it from Debian's packages"
                ))
            })
        };
        Ok(Bins {
            secflowd: built("secflowd")?,
            fixture_detector: built("fixture-detector")?,
            streamer: built("bench-streamer")?,
            bwrap: installed("bwrap")?,
            python: installed("python3")?,
        })
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Section sizes after `--quick` and the explicit options.
#[derive(Debug)]
struct Sizes {
    spawn_runs: usize,
    throughput_runs: usize,
    findings: u64,
    api_requests: usize,
}

impl Sizes {
    fn of(args: &Args) -> Sizes {
        let pick = |explicit: Option<usize>, full: usize, quick: usize| {
            explicit.unwrap_or(if args.quick { quick } else { full })
        };
        Sizes {
            spawn_runs: pick(args.spawn_runs, 300, 30),
            throughput_runs: pick(args.throughput_runs, 3000, 200),
            findings: args
                .findings
                .unwrap_or(if args.quick { 50_000 } else { 1_000_000 }),
            api_requests: pick(args.api_requests, 20_000, 2_000),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(figures) => {
            if figures.iter().any(|f| f.met() == Some(false)) {
                eprintln!("some targets are not met (see the table)");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            eprintln!("secflow-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Vec<Figure>, BenchError> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .ok_or_else(|| BenchError::Setup("cannot tell where this program is".into()))?,
    };
    let bins = Bins::find(&bin_dir)?;
    let sizes = Sizes::of(args);
    for name in &args.sections {
        if ![
            "spawn",
            "throughput",
            "ingest",
            "api",
            "footprint",
            "dashboard",
            "fleet",
            "egress",
        ]
        .contains(&name.as_str())
        {
            return Err(BenchError::Setup(format!("unknown section {name:?}")));
        }
    }
    let wanted = |name: &str| args.sections.iter().any(|s| s == name);
    let mut figures = Vec::new();
    if wanted("spawn") {
        figures.extend(section::spawn::run(&bins, sizes.spawn_runs)?);
    }
    if wanted("throughput") {
        figures.extend(section::throughput::run(
            &bins,
            sizes.throughput_runs,
            args.parallelism,
        )?);
    }
    if wanted("ingest") {
        figures.extend(section::ingest::run(&bins, sizes.findings)?);
    }
    if wanted("api") {
        figures.extend(section::api::run(&bins, sizes.api_requests, &[1, 16, 64])?);
    }
    if wanted("footprint") {
        figures.extend(section::footprint::run(&bins, args.in_flight)?);
    }
    if wanted("dashboard") {
        figures.extend(section::dashboard::run(&bins, sizes.findings)?);
    }
    if wanted("fleet") {
        // The port's own batching needs fewer rows to show its rate.
        figures.extend(section::fleet::run(sizes.findings.min(200_000))?);
    }
    if wanted("egress") {
        figures.extend(section::egress::run(&bins, sizes.spawn_runs)?);
    }

    print!("{}", report::terminal_table(&figures));
    let settings = json!({
        "quick": args.quick,
        "sections": args.sections,
        "spawn_runs_per_variant": sizes.spawn_runs,
        "throughput_runs_per_variant": sizes.throughput_runs,
        "throughput_parallelism": args.parallelism,
        "findings": sizes.findings,
        "api_health_requests_per_level": sizes.api_requests,
        "footprint_in_flight": args.in_flight,
        "build": "release (cargo build --release)",
    });
    let machine = machine();
    let document = report::json_report(&settings, &machine, &figures);
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| bin_dir.join("../bench/secflow-bench.json"));
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
    }
    let text = serde_json::to_string_pretty(&document).unwrap_or_default();
    std::fs::write(&json_path, text).map_err(|source| BenchError::Io {
        what: format!("writing {}", json_path.display()),
        source,
    })?;
    eprintln!("figures written to {}", json_path.display());
    if let Some(markdown) = &args.markdown {
        let command = if args.quick {
            "scripts/bench --quick"
        } else {
            "scripts/bench"
        };
        report::write_markdown(markdown, command, &machine, &settings, &figures)?;
        eprintln!("table written to {}", markdown.display());
    }
    Ok(figures)
}

/// What the figures were measured on.
fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "date": date,
        "cpu": cpu,
        "cores": cores,
        "memory": format!("{memory_gib:.1} GiB"),
        "kernel": kernel,
        "commit": commit,
    })
}
