//! The soak: many runs of well-behaved and hostile plugins through one
//! `secflowd`, from several clients at once, with the daemon's RSS, fds and
//! threads sampled at start and after every tenth of the runs (the first tenth
//! is the warm-up), and the leftovers (processes, zombies, run dirs, uids,
//! namespaces) checked once every run has ended.
//!
//! The schedule is fixed by the plan: in every 20 runs, 16 are detectors
//! (`fixture-detector`, the findings budget spread over them) and 4 are the
//! hostile plugins of the sandbox tests (`fixture-hostile`: an escaping
//! double fork, a fork bomb, a memory hog, a forbidden syscall, a stderr flood,
//! a work-dir writer; now and then a CPU spinner and a run past its deadline).
//! Every run's outcome is checked against what that plugin must get.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{Binaries, Daemon, HarnessError, Home, Rpc};
use crate::probe::{self, Snapshot, Usage};

/// Detector plugins the findings are spread over (distinct fingerprints per plugin).
const DETECTORS: usize = 4;

/// How long the end-of-soak leftover check waits for the last teardowns.
const SETTLE: Duration = Duration::from_secs(15);

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub runs: u64,
    /// Findings the detector runs send in all (spread evenly over them).
    pub findings: u64,
    /// Clients calling `runs.execute` at once (each its own connection).
    pub clients: usize,
    /// Where the home goes (the temp dir when `None`).
    pub parent: Option<std::path::PathBuf>,
}

impl SoakPlan {
    /// The figure: 10 000 runs, 1 000 000 findings.
    pub fn full() -> SoakPlan {
        SoakPlan {
            runs: 10_000,
            findings: 1_000_000,
            clients: 8,
            parent: None,
        }
    }

    /// The CI version: 500 runs, 25 000 findings.
    pub fn short() -> SoakPlan {
        SoakPlan {
            runs: 500,
            findings: 25_000,
            clients: 8,
            parent: None,
        }
    }
}

/// A sample of the daemon's usage, taken after `runs` runs had ended.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub runs: u64,
    pub usage: Usage,
}

/// What the soak measured.
#[derive(Debug, Clone)]
pub struct SoakReport {
    pub runs: u64,
    pub elapsed: Duration,
    /// Runs by `status` (and `error.kind` when there is one).
    pub outcomes: BTreeMap<String, u64>,
    /// Sum of the run records' `findings`.
    pub findings_reported: u64,
    /// Findings the schedule's detectors were told to send.
    pub findings_planned: u64,
    /// Rows in the database at the end: distinct findings, observations.
    pub findings_stored: (u64, u64),
    /// Start (before any run), then after every tenth of the runs; the
    /// first tenth is the warm-up.
    pub samples: Vec<Sample>,
    /// Runs whose outcome was not what their plugin must get (first 20).
    pub unexpected: Vec<String>,
    pub unexpected_count: u64,
    /// Leftovers once every run had ended.
    pub leftovers: Vec<String>,
    /// Distinct net/pid/mnt namespaces on the host before and after (the
    /// machine is shared: for information).
    pub host_namespaces: (usize, usize),
    pub integrity: String,
}

impl SoakReport {
    /// RSS growth from the warm-up sample to the end, in percent.
    pub fn rss_growth_percent(&self) -> f64 {
        let warm = self.samples.get(1).map_or(0, |s| s.usage.rss_kib);
        let end = self.samples.last().map_or(0, |s| s.usage.rss_kib);
        if warm == 0 {
            return 0.0;
        }
        (end as f64 - warm as f64) * 100.0 / warm as f64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "runs": self.runs,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "runs_per_s": self.runs as f64 / self.elapsed.as_secs_f64().max(1e-9),
            "outcomes": self.outcomes,
            "findings_planned": self.findings_planned,
            "findings_reported": self.findings_reported,
            "findings_stored": {"distinct": self.findings_stored.0, "observations": self.findings_stored.1},
            "samples": self.samples.iter().map(|s| json!({
                "after_runs": s.runs,
                "rss_kib": s.usage.rss_kib,
                "fds": s.usage.fds,
                "threads": s.usage.threads,
            })).collect::<Vec<_>>(),
            "rss_growth_after_warmup_percent": self.rss_growth_percent(),
            "unexpected": self.unexpected,
            "unexpected_count": self.unexpected_count,
            "leftovers": self.leftovers,
            "host_namespaces": {"before": self.host_namespaces.0, "after": self.host_namespaces.1},
            "integrity_check": self.integrity,
        })
    }
}

/// What a run of one kind must end as.
#[derive(Debug, Clone)]
struct Expect {
    /// Acceptable `status[/kind]` words.
    outcomes: &'static [&'static str],
    findings: Option<u64>,
}

/// One scheduled run.
#[derive(Debug, Clone)]
struct Job {
    plugin: String,
    config: Value,
    timeout_ms: Option<u64>,
    expect: Expect,
    /// A violation revokes the plugin; the client reinstates it.
    reinstate: bool,
}

/// The hostile plugins: name, sandbox, config, expected outcome.
fn hostile_plugins() -> Vec<(&'static str, Value, Value, Expect)> {
    let sandbox = |extra: Value| {
        let mut s = json!({"network": false, "filesystem": "readonly", "timeout_seconds": 30});
        if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(extra.clone());
        }
        s
    };
    let ok = |findings| Expect {
        outcomes: &["succeeded"],
        findings: Some(findings),
    };
    vec![
        (
            "escaper",
            sandbox(json!({})),
            json!({"attack": "escape"}),
            ok(0),
        ),
        (
            "bomb",
            sandbox(json!({"max_processes": 16})),
            json!({"attack": "fork_bomb", "count": 100}),
            ok(0),
        ),
        (
            "hog",
            sandbox(json!({"memory_mb": 64})),
            json!({"attack": "findings_then", "then": "allocate", "mb": 512, "count": 2}),
            Expect {
                outcomes: &["failed/memory_limit"],
                findings: Some(2),
            },
        ),
        (
            "violator",
            sandbox(json!({})),
            json!({"attack": "findings_then", "then": "syscall", "targets": ["ptrace"], "count": 1}),
            // Another client may find it revoked between violation and reinstatement.
            Expect {
                outcomes: &["violated/sandbox_violation", "rejected/plugin_revoked"],
                findings: None,
            },
        ),
        (
            "noisy",
            sandbox(json!({"max_output_mb": 64})),
            json!({"attack": "flood_stderr", "mb": 8}),
            ok(0),
        ),
        (
            "writer",
            sandbox(json!({})),
            json!({"attack": "write", "targets": ["left-behind"]}),
            ok(0),
        ),
    ]
}

/// The whole schedule, in order.
fn schedule(plan: &SoakPlan) -> Vec<Job> {
    let hostile = hostile_plugins();
    let is_detector = |i: u64| i % 20 < 16;
    let detector_runs = (0..plan.runs).filter(|i| is_detector(*i)).count() as u64;
    let base = plan.findings / detector_runs.max(1);
    let extra = plan.findings % detector_runs.max(1);
    let (mut d, mut h) = (0u64, 0u64);
    let mut jobs = Vec::with_capacity(plan.runs as usize);
    for i in 0..plan.runs {
        if is_detector(i) {
            let count = base + u64::from(d < extra);
            jobs.push(Job {
                plugin: format!("detector-{}", d % DETECTORS as u64),
                config: json!({"count": count}),
                timeout_ms: None,
                expect: Expect {
                    outcomes: &["succeeded"],
                    findings: Some(count),
                },
                reinstate: false,
            });
            d += 1;
            continue;
        }
        let job = match h % 50 {
            // A CPU spinner stopped by its 1 s limit (rare: it burns the second).
            25 => Job {
                plugin: "spinner".into(),
                config: json!({"attack": "spin"}),
                timeout_ms: None,
                expect: Expect {
                    outcomes: &["failed/cpu_limit"],
                    findings: Some(0),
                },
                reinstate: false,
            },
            // A detector too slow for its deadline: cancelled, findings kept.
            49 => Job {
                plugin: "slow".into(),
                config: json!({"count": 100, "delay_ms": 50}),
                timeout_ms: Some(300),
                expect: Expect {
                    outcomes: &["timed_out/timeout"],
                    findings: None,
                },
                reinstate: false,
            },
            _ => {
                let (name, _, config, expect) = &hostile[(h % hostile.len() as u64) as usize];
                Job {
                    plugin: (*name).to_string(),
                    config: config.clone(),
                    timeout_ms: None,
                    expect: expect.clone(),
                    reinstate: *name == "violator",
                }
            }
        };
        jobs.push(job);
        h += 1;
    }
    jobs
}

/// Installs every plugin the schedule uses into `home`.
fn install(home: &Home, bins: &Binaries) -> Result<(), HarnessError> {
    let quiet = json!({"network": false, "filesystem": "readonly", "timeout_seconds": 60});
    for i in 0..DETECTORS {
        home.install(
            &format!("detector-{i}"),
            &bins.detector,
            quiet.clone(),
            Binaries::detector_schema(),
        )?;
    }
    home.install("slow", &bins.detector, quiet, Binaries::detector_schema())?;
    for (name, sandbox, _, _) in hostile_plugins() {
        home.install(name, &bins.hostile, sandbox, Binaries::hostile_schema())?;
    }
    let spinner = json!({"network": false, "filesystem": "readonly", "timeout_seconds": 30, "cpu_seconds": 1});
    home.install(
        "spinner",
        &bins.hostile,
        spinner,
        Binaries::hostile_schema(),
    )?;
    Ok(())
}

/// The `status[/kind]` word of a run record.
pub fn outcome_of(record: &Value) -> String {
    let status = record["status"].as_str().unwrap_or("?");
    match record["error"]["kind"].as_str() {
        Some(kind) => format!("{status}/{kind}"),
        None => status.to_string(),
    }
}

/// Shared tallies of the clients.
#[derive(Debug, Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    unexpected: Vec<String>,
    unexpected_count: u64,
    findings: u64,
}

/// Runs the soak and measures it.
pub fn run(plan: &SoakPlan, bins: &Binaries) -> Result<SoakReport, HarnessError> {
    let home = Home::create(
        plan.parent.as_deref(),
        &format!("[runs]\nmax_concurrent = {}\n", plan.clients.clamp(1, 32)),
    )?;
    install(&home, bins)?;
    let host_before = probe::host_namespaces().len();
    let mut daemon = Daemon::start(&bins.secflowd, &home)?;
    let pid = daemon.pid();
    let baseline = Snapshot::take(Some(pid), &home.uids, &home.work_root);
    let jobs = Arc::new(schedule(plan));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut samples = vec![Sample {
        runs: 0,
        usage: probe::usage(pid).unwrap_or_default(),
    }];

    let clients: Vec<_> = (0..plan.clients.max(1))
        .map(|_| {
            let (jobs, next, done, tally) =
                (jobs.clone(), next.clone(), done.clone(), tally.clone());
            let socket = home.socket.clone();
            std::thread::spawn(move || client(&socket, &jobs, &next, &done, &tally))
        })
        .collect();
    // Every tenth of the runs: the curve shows whether memory settles.
    let marks: Vec<u64> = (1..10).map(|tenth| plan.runs * tenth / 10).collect();
    let mut taken = 0;
    while done.load(Ordering::Relaxed) < plan.runs && clients.iter().any(|c| !c.is_finished()) {
        let now = done.load(Ordering::Relaxed);
        if taken < marks.len() && now >= marks[taken] {
            samples.push(Sample {
                runs: now,
                usage: probe::usage(pid).unwrap_or_default(),
            });
            taken += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in clients {
        let _ = c.join();
    }
    let elapsed = started.elapsed();

    let (_, leftovers) = probe::settle(&baseline, SETTLE, || {
        Snapshot::take(Some(pid), &home.uids, &home.work_root)
    });
    samples.push(Sample {
        runs: done.load(Ordering::Relaxed),
        usage: probe::usage(pid).unwrap_or_default(),
    });
    let findings_stored = probe::stored_counts(&home.database).unwrap_or_default();
    let host_after = probe::host_namespaces().len();
    let mut leftovers = leftovers;
    if daemon.stop().is_none_or(|s| !s.success()) {
        leftovers.push(format!("secflowd did not stop cleanly:\n{}", daemon.log()));
    }
    let integrity = probe::integrity_check(&home.database).unwrap_or_else(|e| e.to_string());

    let tally = Arc::try_unwrap(tally)
        .map(|t| {
            t.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
        .unwrap_or_default();
    let findings_planned = jobs
        .iter()
        .filter(|j| j.plugin.starts_with("detector-"))
        .filter_map(|j| j.config["count"].as_u64())
        .sum();
    Ok(SoakReport {
        runs: done.load(Ordering::Relaxed),
        elapsed,
        outcomes: tally.outcomes,
        findings_reported: tally.findings,
        findings_planned,
        findings_stored,
        samples,
        unexpected: tally.unexpected,
        unexpected_count: tally.unexpected_count,
        leftovers,
        host_namespaces: (host_before, host_after),
        integrity,
    })
}

/// One client: takes the next job until none are left.
fn client(
    socket: &std::path::Path,
    jobs: &[Job],
    next: &AtomicUsize,
    done: &AtomicU64,
    tally: &Mutex<Tally>,
) {
    let mut rpc = Rpc::connect(socket);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(job) = jobs.get(i) else { return };
        let mut params = json!({"plugin": job.plugin, "config": job.config});
        if let Some(ms) = job.timeout_ms {
            params["timeout_ms"] = json!(ms);
        }
        let answer = match rpc.as_mut() {
            Ok(rpc) => rpc.call("runs.execute", params).map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot connect: {e}")),
        };
        let mut t = tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match answer {
            Ok(record) => {
                let outcome = outcome_of(&record);
                let findings = record["findings"].as_u64().unwrap_or(0);
                t.findings += findings;
                let good = job.expect.outcomes.contains(&outcome.as_str())
                    && job.expect.findings.is_none_or(|f| f == findings);
                if !good {
                    t.unexpected_count += 1;
                    if t.unexpected.len() < 20 {
                        t.unexpected.push(format!(
                            "run {i} of {}: expected {:?} with {:?} findings, got {outcome} with {findings}: {}",
                            job.plugin,
                            job.expect.outcomes,
                            job.expect.findings,
                            record["error"]["message"]
                        ));
                    }
                }
                *t.outcomes.entry(outcome).or_default() += 1;
            }
            Err(e) => {
                t.unexpected_count += 1;
                if t.unexpected.len() < 20 {
                    t.unexpected
                        .push(format!("run {i} of {}: the call failed: {e}", job.plugin));
                }
                *t.outcomes.entry("call_failed".into()).or_default() += 1;
                // A broken connection is replaced for the next job.
                rpc = Rpc::connect(socket);
            }
        }
        drop(t);
        if job.reinstate {
            if let Ok(rpc) = rpc.as_mut() {
                let _ = rpc.call("plugins.reinstate", json!({"name": job.plugin}));
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}
