//! Section 1, spawn: a trivial plugin (the SDK fixture detector, no finding)
//! through spawn → initialize → run → shutdown → reaped, one run at a time,
//! five ways: unsandboxed (a bare `Command`, the floor); the full sandbox
//! around the same hand-driven session (the supervisor's plan, run dir, uid
//! and `PreparedSandbox::launch` — the sandbox's own cost, the figure the
//! targets are about); `bwrap --unshare-all --die-with-parent` around the same
//! binary; the full sandbox through the embedded supervisor's public API
//! (`Supervisor::execute`, which also verifies the code hash, runs the
//! protocol through the runner's tasks and stores the run); and `runs.execute`
//! through the daemon's socket (API + sandbox + storage).

use std::fs::File;
use std::io::BufReader;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use secflow_core::config::Config;
use secflow_manifest::VerifiedPlugin;
use secflow_runner::registry::Registry;
use secflow_runner::RunRequest;
use secflow_runner::Supervisor;
use secflow_sandbox::{block_all_signals, pipe, ChildStdio, Host, Layer, SandboxPlan, UidPool};
use serde_json::json;

use super::{bwrap_args, converse, drive, expect_succeeded, TRIVIAL};
use crate::daemon::Daemon;
use crate::home::{BenchHome, HomeSettings};
use crate::report::{Bound, Figure};
use crate::stats::Samples;
use crate::{BenchError, Bins};

const SECTION: &str = "1 spawn";

/// `n` timed calls of `one` after `n / 10` untimed ones.
fn time(n: usize, mut one: impl FnMut() -> Result<(), BenchError>) -> Result<Samples, BenchError> {
    for _ in 0..n / 10 {
        one()?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        one()?;
        samples.push(start.elapsed());
    }
    Ok(Samples::new(samples))
}

pub fn run(bins: &Bins, runs: usize) -> Result<Vec<Figure>, BenchError> {
    let trivial = &bins.fixture_detector;
    eprintln!("[1 spawn] unsandboxed, {runs} runs");
    let plain = time(runs, || drive(trivial, &[]))?;

    eprintln!("[1 spawn] full sandbox, same session driver, {runs} runs");
    let sandboxed = sandbox_only(trivial, runs)?;

    eprintln!("[1 spawn] full sandbox (Supervisor::execute), {runs} runs");
    let embedded = embedded(trivial, runs)?;

    eprintln!("[1 spawn] bwrap, {runs} runs");
    let bwrap = time(runs, || drive(&bins.bwrap, &bwrap_args(trivial)))?;

    eprintln!("[1 spawn] runs.execute through the daemon, {runs} runs");
    let home = BenchHome::new(&HomeSettings::default())?;
    home.install(TRIVIAL, trivial)?;
    let daemon = Daemon::start(&bins.secflowd, &home)?;
    let mut rpc = daemon.connect()?;
    let through_daemon = time(runs, || {
        let record = rpc.call("runs.execute", json!({"plugin": TRIVIAL}))?;
        expect_succeeded(&record)
    })?;
    drop(daemon);

    let (plain_ms, bwrap_ms) = (plain.median_ms(), bwrap.median_ms());
    Ok(vec![
        Figure::new(SECTION, "unsandboxed median", plain_ms, "ms"),
        Figure::new(SECTION, "unsandboxed p99", plain.p99_ms(), "ms"),
        Figure::new(SECTION, "bwrap median", bwrap_ms, "ms"),
        Figure::new(SECTION, "bwrap p99", bwrap.p99_ms(), "ms"),
        Figure::new(SECTION, "full sandbox median", sandboxed.median_ms(), "ms")
            .against("unsandboxed", plain_ms)
            .target(Bound::AtMost(2.0)),
        Figure::new(SECTION, "full sandbox median", sandboxed.median_ms(), "ms")
            .against("bwrap", bwrap_ms)
            .target(Bound::AtMost(0.35)),
        Figure::new(SECTION, "full sandbox p99", sandboxed.p99_ms(), "ms")
            .against("bwrap p99", bwrap.p99_ms()),
        Figure::new(
            SECTION,
            "Supervisor::execute median",
            embedded.median_ms(),
            "ms",
        )
        .against("bwrap", bwrap_ms),
        Figure::new(
            SECTION,
            "daemon runs.execute median",
            through_daemon.median_ms(),
            "ms",
        )
        .against("bwrap", bwrap_ms)
        .target(Bound::AtMost(0.3)),
        Figure::new(
            SECTION,
            "daemon runs.execute p99",
            through_daemon.p99_ms(),
            "ms",
        )
        .against("bwrap p99", bwrap.p99_ms()),
    ])
}

/// The full sandbox through the supervisor's public API, in this process.
fn embedded(trivial: &Path, runs: usize) -> Result<Samples, BenchError> {
    let home = BenchHome::new(&HomeSettings::default())?;
    home.install(TRIVIAL, trivial)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: "starting the tokio runtime".into(),
            source,
        })?;
    runtime.block_on(async {
        let config = Config::load(&home.config_path)
            .map_err(|e| BenchError::Setup(format!("bench config: {e}")))?;
        let supervisor = Supervisor::open(config)
            .await
            .map_err(|e| BenchError::Setup(format!("opening the supervisor: {e}")))?;
        let mut samples = Vec::with_capacity(runs);
        for i in 0..runs + runs / 10 {
            let (_cancel, cancelled) = tokio::sync::watch::channel(false);
            let request = RunRequest {
                plugin: TRIVIAL.into(),
                ..RunRequest::default()
            };
            let start = Instant::now();
            let record = supervisor
                .execute(request, cancelled)
                .await
                .map_err(|e| BenchError::Plugin(format!("Supervisor::execute: {e}")))?;
            let took: Duration = start.elapsed();
            if record.status.as_str() != "succeeded" {
                return Err(BenchError::Plugin(format!(
                    "a sandboxed run did not succeed: {record:?}"
                )));
            }
            if i >= runs / 10 {
                samples.push(took);
            }
        }
        Ok(Samples::new(samples))
    })
}

/// The full sandbox around the same hand-driven session as the unsandboxed
/// row: the supervisor's own plan, admission, uid lease, run dir and launch,
/// with the run dir removed after each run — without the code-hash check,
/// the runner's tasks and storage that `Supervisor::execute` adds.
fn sandbox_only(trivial: &Path, runs: usize) -> Result<Samples, BenchError> {
    let home = BenchHome::new(&HomeSettings::default())?;
    home.install(TRIVIAL, trivial)?;
    let setup = |what: &str| {
        let what = what.to_string();
        move |e: String| BenchError::Setup(format!("{what}: {e}"))
    };
    let config =
        Config::load(&home.config_path).map_err(|e| setup("bench config")(e.to_string()))?;
    let registry = Registry::discover(&config, &[]);
    let plugin = registry
        .get(TRIVIAL)
        .and_then(|entry| entry.plugin.clone())
        .ok_or_else(|| BenchError::Setup(format!("{TRIVIAL} is not active in the bench home")))?;
    let host = Host::probe();
    let plan = secflow_sandbox::plan(&plugin, &config)
        .map_err(|e| setup("the sandbox plan")(e.to_string()))?;
    let (layers, _) = plan
        .admit(&host, &[])
        .map_err(|e| setup("this host cannot give the full sandbox")(e.to_string()))?;
    let uids = UidPool::new(config.sandbox.uid_min, config.sandbox.uid_count);
    let run = Launcher {
        plugin: &plugin,
        plan: &plan,
        layers: &layers,
        host: &host,
        uids: &uids,
        config: &config,
    };
    // Launches come from one thread that blocks every signal, as the
    // runner's spawner thread does.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                block_all_signals();
                time(runs, || run.once())
            })
            .join()
            .map_err(|_| BenchError::Setup("the launch thread panicked".into()))?
    })
}

struct Launcher<'a> {
    plugin: &'a VerifiedPlugin,
    plan: &'a SandboxPlan,
    layers: &'a [Layer],
    host: &'a Host,
    uids: &'a UidPool,
    config: &'a Config,
}

impl Launcher<'_> {
    fn once(&self) -> Result<(), BenchError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| BenchError::Io { what, source }
        };
        let lease = self
            .uids
            .lease()
            .ok_or_else(|| BenchError::Setup("no sandbox uid is free".into()))?;
        let uid = lease.uid();
        let run_id = format!("bench-{}", secflow_runner::new_run_id());
        let run_dir = secflow_sandbox::create_run_dir(
            &self.config.sandbox.work_root,
            &run_id,
            Some((uid, uid)),
            secflow_sandbox::WorkDirIn::for_layers(self.layers),
        )
        .map_err(io("creating the run dir"))?;
        let entrypoint = &self.plugin.entrypoint;
        let exec = File::open(entrypoint).map_err(io("opening the plugin"))?;
        let prepared = self
            .plan
            .prepare(
                self.host,
                self.layers,
                exec,
                entrypoint,
                &run_dir,
                Some(uid),
            )
            .map_err(io("preparing the sandbox"))?;
        let (stdin_read, stdin_write) = pipe().map_err(io("making a pipe"))?;
        let (stdout_read, stdout_write) = pipe().map_err(io("making a pipe"))?;
        let null = File::options()
            .write(true)
            .open("/dev/null")
            .map_err(io("opening /dev/null"))?;
        let launched = prepared
            .launch(ChildStdio {
                stdin: stdin_read,
                stdout: stdout_write,
                stderr: OwnedFd::from(null),
            })
            .map_err(|e| {
                BenchError::Plugin(format!(
                    "the sandbox could not {}: {}",
                    e.step.unwrap_or("start"),
                    e.error
                ))
            })?;
        // This thread reaps the init itself; its memory is dropped after.
        let (pid, _pidfd, reports, memory) = launched.into_parts();
        let talked = converse(
            "the sandboxed plugin",
            File::from(stdin_write),
            BufReader::new(File::from(stdout_read)),
        );
        let mut status = 0;
        // SAFETY: reaping our own child (the run's init) with a stack out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        drop(memory);
        let report = match &reports {
            Some(fd) => {
                secflow_sandbox::read_setup_report(fd).map_err(|e| {
                    BenchError::Plugin(format!(
                        "the sandbox could not {}: {}",
                        e.step.unwrap_or("start"),
                        e.error
                    ))
                })?;
                secflow_sandbox::read_exit_report(fd)
            }
            None => None,
        };
        secflow_sandbox::remove_run_dir(&run_dir).map_err(io("removing the run dir"))?;
        drop(lease);
        talked?;
        match report {
            Some(report)
                if libc::WIFEXITED(report.status) && libc::WEXITSTATUS(report.status) == 0 =>
            {
                Ok(())
            }
            other => Err(BenchError::Plugin(format!(
                "the sandboxed plugin did not exit 0: {other:?}"
            ))),
        }
    }
}
