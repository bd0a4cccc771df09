//! Runs the ferox scan engine outside the supervisor, for `scripts/bench-ferox`:
//! the same engine, runtime and settings path as the plugin, driven from the
//! command line so that it can be timed against feroxbuster, ffuf and gobuster.
//!
//! ```text
//! ferox-bench --url http://127.0.0.1:8080/ --wordlist words.txt [--concurrency 50]
//!             [--depth 0] [--extensions php,bak] [--no-calibration]
//! ```
//!
//! Prints one JSON line: requests, found, errors, seconds, requests per second.

use std::process::ExitCode;
use std::time::Instant;

use secflow_ferox::engine::{self, Event, Scan};
use secflow_ferox::settings::Settings;
use secflow_ferox::target::Target;
use secflow_ferox::wordlist;
use serde_json::{json, Map, Value};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ferox-bench: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut url = None;
    let mut config = Map::new();
    config.insert("depth".into(), json!(0));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--url" => url = Some(value("--url")?),
            "--wordlist" => {
                config.insert("wordlist".into(), json!(value("--wordlist")?));
            }
            "--concurrency" => {
                config.insert(
                    "concurrency".into(),
                    json!(number(&value("--concurrency")?)?),
                );
            }
            "--depth" => {
                config.insert("depth".into(), json!(number(&value("--depth")?)?));
            }
            "--extensions" => {
                let list: Vec<Value> = value("--extensions")?
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(|e| json!(e))
                    .collect();
                config.insert("extensions".into(), Value::Array(list));
            }
            "--no-calibration" => {
                config.insert("auto_calibrate".into(), json!(false));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let target = Target::parse(&url).map_err(|e| e.to_string())?;
    let settings = Settings::from_config(&config).map_err(|e| e.to_string())?;
    let words = match &settings.wordlist {
        Some(path) => wordlist::load(path).map_err(|e| engine::error_chain(&e))?,
        None => wordlist::parse(wordlist::DEFAULT_WORDLIST),
    };
    let runtime = engine::runtime().map_err(|e| format!("runtime: {e}"))?;
    let started = Instant::now();
    let summary = runtime.block_on(async {
        let mut scan = Scan::start(target, settings, &words)
            .await
            .map_err(|e| engine::error_chain(&e))?;
        while let Some(event) = scan.next_event().await {
            if let Event::Hit(hit) = event {
                eprintln!("{} {} {}", hit.measure.status, hit.measure.length, hit.url);
            }
        }
        Ok::<_, String>(scan.summary())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "requests": summary.requests,
            "found": summary.found,
            "errors": summary.errors,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "requests_per_second": (summary.requests as f64 / seconds).round(),
        })
    );
    Ok(())
}

fn number(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}
