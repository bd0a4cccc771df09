//! Spawn cost, side by side in one run: a trivial plugin (the SDK fixture
//! detector sending no finding) driven through initialize → run → shutdown →
//! reaped, three ways:
//!
//! - `plain`: `tokio::process::Command`, no isolation at all (the floor);
//! - `secflow`: `Supervisor::execute` with the full sandbox (per-run uid, PID,
//!   mount and network namespaces, rlimits, seccomp) — and also the protocol
//!   session, the code-hash check and the run's storage writes, so it measures
//!   more than the others;
//! - `bwrap`: `bwrap --unshare-all --die-with-parent` around the same binary
//!   (bubblewrap from Debian's packages; scripts/bench-spawn installs it).
//!
//! Run with `scripts/bench-spawn` (or `cargo bench -p secflow-tests --bench
//! spawn`). Prints a table and writes `target/bench/spawn.json`. Figures are
//! ratios within one run; this machine is shared and noisy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use secflow_supervisor::config::Config;
use secflow_supervisor::runner::RunRequest;
use secflow_supervisor::Supervisor;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PLUGIN: &str = env!("CARGO_BIN_EXE_fixture-detector");

fn runs() -> usize {
    std::env::var("SECFLOW_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Drives one session over a child's pipes by hand: the same three requests
/// the supervisor sends.
async fn drive(mut child: tokio::process::Child) {
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocol_version": 1, "run_id": "bench", "plugin": {"name": "bench", "version": "1.0.0"},
        "config": {"count": 0}, "context": {"workdir": "/tmp", "deadline_ms": 10000, "network": false},
        "limits": {"max_message_bytes": 8388608, "max_findings": 10}}});
    for (id, message) in [
        (1, init),
        (
            2,
            json!({"jsonrpc": "2.0", "id": 2, "method": "run", "params": {"inputs": {}}}),
        ),
        (
            3,
            json!({"jsonrpc": "2.0", "id": 3, "method": "shutdown", "params": {}}),
        ),
    ] {
        stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the plugin answers");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                break;
            }
        }
    }
    drop(stdin);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status}");
}

fn command(program: &str, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

async fn time<F, Fut>(n: usize, mut one: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n / 10 {
        one().await; // warm-up
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        one().await;
        samples.push(t.elapsed());
    }
    samples.sort();
    samples
}

fn median(s: &[Duration]) -> f64 {
    s[s.len() / 2].as_secs_f64() * 1e3
}

fn p99(s: &[Duration]) -> f64 {
    s[(s.len() * 99 / 100).min(s.len() - 1)].as_secs_f64() * 1e3
}

fn install(home: &Path) -> PathBuf {
    let dir = home.join("plugins/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("fixture-detector");
    std::fs::copy(PLUGIN, &exe).unwrap();
    let manifest = json!({
        "name": "bench", "version": "1.0.0", "category": "detector",
        "entrypoint": "fixture-detector",
        "code_hash": secflow_supervisor::trust::hash_file(&exe).unwrap(),
        "config_schema": {"count": {"type": "integer", "default": 0}},
        "sandbox": {"network": false, "filesystem": "readonly", "timeout_seconds": 30}
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let config = home.join("secflow.toml");
    std::fs::write(
        &config,
        "[plugins]\nmanifest_dirs = [\"plugins\"]\n[storage]\npath = \"var/secflow.db\"\n[sandbox]\nwork_root = \"var/runs\"\n",
    )
    .unwrap();
    config
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `SECFLOW_LOG=secflow_supervisor::runner=debug` prints each run's phases.
    if let Ok(filter) = std::env::var("SECFLOW_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let n = runs();
    let home = tempfile::tempdir().unwrap();
    let config = install(home.path());
    let supervisor = Supervisor::open(Config::load(&config).unwrap())
        .await
        .unwrap();

    let plain = time(n, || async {
        drive(command(PLUGIN, &[]).spawn().unwrap()).await
    })
    .await;
    let sandboxed = time(n, || async {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let request = RunRequest {
            plugin: "bench".into(),
            ..RunRequest::default()
        };
        let record = supervisor.execute(request, rx).await.unwrap();
        assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    })
    .await;
    let bwrap = which("bwrap");
    let wrapped = match &bwrap {
        Some(bwrap) => Some(
            time(n, || async {
                let args = [
                    "--unshare-all",
                    "--die-with-parent",
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    PLUGIN,
                ];
                drive(command(bwrap, &args).spawn().unwrap()).await
            })
            .await,
        ),
        None => {
            eprintln!("bwrap is not installed (scripts/bench-spawn installs bubblewrap): its row is left out");
            None
        }
    };

    let mut rows = vec![
        ("plain", &plain),
        ("secflow (full sandbox + storage)", &sandboxed),
    ];
    if let Some(w) = &wrapped {
        rows.push(("bwrap --unshare-all --die-with-parent", w));
    }
    println!("spawn → initialize → run → shutdown → reaped, {n} runs each, 2 cores");
    println!(
        "{:<40} {:>10} {:>10} {:>10}",
        "variant", "median ms", "p99 ms", "× plain"
    );
    for (name, s) in &rows {
        println!(
            "{name:<40} {:>10.3} {:>10.3} {:>10.2}",
            median(s),
            p99(s),
            median(s) / median(&plain)
        );
    }
    let mut report = json!({
        "runs": n,
        "plain": {"median_ms": median(&plain), "p99_ms": p99(&plain)},
        "secflow": {"median_ms": median(&sandboxed), "p99_ms": p99(&sandboxed)},
        "secflow_over_plain": median(&sandboxed) / median(&plain),
    });
    if let Some(w) = &wrapped {
        report["bwrap"] = json!({"median_ms": median(w), "p99_ms": p99(w)});
        report["secflow_over_bwrap"] = json!(median(&sandboxed) / median(w));
        println!("secflow / bwrap: {:.2}", median(&sandboxed) / median(w));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("spawn.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
}
