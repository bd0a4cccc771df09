//! `secflow-soak`: the soak and SIGKILL trials of issue #10 against the real
//! `secflowd`, with the figures docs/reliability.md records. `scripts/soak`
//! builds and runs it.
//!
//! ```text
//! secflow-soak [soak|kill|all] [--short] [--runs N] [--findings N] [--clients N]
//!              [--trials N] [--seed S] [--dir PATH] [--json]
//! ```
//! Full (default): 10 000 runs with 1 000 000 findings, then 50 kill trials.
//! `--short` (CI): 500 runs with 25 000 findings, then 5 kill trials.
//! Exit status 0 when every target is met, 1 when one is not, 2 on bad usage.

use std::process::ExitCode;

use secflow_soak::kill::{self, KillPlan};
use secflow_soak::soak::{self, SoakPlan};
use secflow_soak::Binaries;
use serde_json::json;

/// The soak's memory target: RSS growth after warm-up below this.
const RSS_GROWTH_TARGET_PERCENT: f64 = 10.0;

#[derive(Debug)]
struct Args {
    soak: bool,
    kill: bool,
    soak_plan: SoakPlan,
    kill_plan: KillPlan,
    json: bool,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        soak: true,
        kill: true,
        soak_plan: SoakPlan::full(),
        kill_plan: KillPlan {
            trials: 50,
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1),
            parent: None,
        },
        json: false,
    };
    let mut overrides = Vec::new();
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = argv.next().ok_or(format!("{name} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match arg.as_str() {
            "soak" => (args.soak, args.kill) = (true, false),
            "kill" => (args.soak, args.kill) = (false, true),
            "all" => (args.soak, args.kill) = (true, true),
            "--short" => {
                args.soak_plan = SoakPlan::short();
                args.kill_plan.trials = 5;
            }
            "--runs" => overrides.push(("runs", value("--runs")?)),
            "--findings" => overrides.push(("findings", value("--findings")?)),
            "--clients" => overrides.push(("clients", value("--clients")?)),
            "--trials" => overrides.push(("trials", value("--trials")?)),
            "--seed" => args.kill_plan.seed = value("--seed")?,
            "--dir" => {
                let dir = argv.next().ok_or("--dir needs a path")?;
                args.soak_plan.parent = Some(dir.clone().into());
                args.kill_plan.parent = Some(dir.into());
            }
            "--json" => args.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    // Applied after --short, whatever the order on the command line.
    for (name, v) in overrides {
        match name {
            "runs" => args.soak_plan.runs = v,
            "findings" => args.soak_plan.findings = v,
            "clients" => args.soak_plan.clients = usize::try_from(v).unwrap_or(1).max(1),
            _ => args.kill_plan.trials = u32::try_from(v).unwrap_or(u32::MAX),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("secflow-soak: {e}");
            }
            eprintln!("usage: secflow-soak [soak|kill|all] [--short] [--runs N] [--findings N] [--clients N] [--trials N] [--seed S] [--dir PATH] [--json]");
            return ExitCode::from(2);
        }
    };
    let bins = match Binaries::beside_current_exe() {
        Ok(bins) => bins,
        Err(e) => {
            eprintln!("secflow-soak: {e}");
            return ExitCode::from(2);
        }
    };
    let mut met = true;
    let mut out = json!({});
    if args.soak {
        eprintln!(
            "soak: {} runs, {} findings, {} clients…",
            args.soak_plan.runs, args.soak_plan.findings, args.soak_plan.clients
        );
        match soak::run(&args.soak_plan, &bins) {
            Ok(report) => {
                // Flat: no more open after the last run than before the first
                // (the first sample may catch a start-up file still open).
                let fds_flat = match (report.samples.first(), report.samples.last()) {
                    (Some(start), Some(end)) => end.usage.fds <= start.usage.fds,
                    _ => false,
                };
                let ok = report.unexpected_count == 0
                    && report.leftovers.is_empty()
                    && report.integrity == "ok"
                    && fds_flat
                    && report.rss_growth_percent() < RSS_GROWTH_TARGET_PERCENT;
                met &= ok;
                out["soak"] = report.to_json();
                out["soak"]["targets_met"] = json!(ok);
                out["soak"]["fds_flat"] = json!(fds_flat);
            }
            Err(e) => {
                eprintln!("secflow-soak: soak: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.kill {
        eprintln!(
            "kill: {} trials, seed {}…",
            args.kill_plan.trials, args.kill_plan.seed
        );
        match kill::run(&args.kill_plan, &bins) {
            Ok(report) => {
                met &= report.failures.is_empty();
                out["kill"] = report.to_json();
            }
            Err(e) => {
                eprintln!("secflow-soak: kill trials: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    if met {
        ExitCode::SUCCESS
    } else {
        eprintln!("secflow-soak: a target was not met (see the report)");
        ExitCode::FAILURE
    }
}
