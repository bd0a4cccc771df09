//! Section 3, findings ingestion: one plugin streams N schema-valid findings
//! with distinct fingerprints through the daemon (validated, fingerprinted,
//! deduplicated, committed in WAL). The rate runs from the plugin's first send
//! (it stamps the time on its stderr, which the run record keeps) to the
//! answer of `runs.execute`, which the daemon sends once the run's final
//! record — and so every finding queued before it — is committed.
//!
//! Anchors in the same run, on the very same documents: Python's `json` +
//! `sqlite3.executemany` loading the NDJSON with no validation, and a bare
//! rusqlite prepared-insert loop of the same rows (the ceiling: no parsing, no
//! validation, one table with one unique index).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};
use secflow_bench::corpus::write_finding;
use serde_json::{json, Value};

use super::{expect_succeeded, STREAMER};
use crate::daemon::{Daemon, Memory};
use crate::home::{BenchHome, HomeSettings};
use crate::report::{Bound, Figure};
use crate::{BenchError, Bins};

const SECTION: &str = "3 ingestion";

/// The loader the daemon is compared with: standard library only, no validation.
const PYTHON_LOADER: &str = r#"
import json, sqlite3, sys, time
path, db = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=NORMAL")
conn.execute(
    "CREATE TABLE findings (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE,"
    " rule_id TEXT NOT NULL, title TEXT NOT NULL, severity TEXT NOT NULL,"
    " target TEXT NOT NULL, document TEXT NOT NULL)")
start = time.perf_counter()
def rows():
    with open(path, "rb") as f:
        for line in f:
            d = json.loads(line)
            yield (d["location"]["url"], d["rule_id"], d["title"], d["severity"],
                   d["target"], line.decode())
with conn:
    conn.executemany(
        "INSERT INTO findings (fingerprint, rule_id, title, severity, target, document)"
        " VALUES (?, ?, ?, ?, ?, ?)", rows())
print(time.perf_counter() - start)
"#;

const BARE_SCHEMA: &str = "CREATE TABLE findings (id INTEGER PRIMARY KEY, \
    fingerprint TEXT NOT NULL UNIQUE, rule_id TEXT NOT NULL, title TEXT NOT NULL, \
    severity TEXT NOT NULL, target TEXT NOT NULL, document TEXT NOT NULL)";

pub fn run(bins: &Bins, count: u64) -> Result<Vec<Figure>, BenchError> {
    let home = BenchHome::new(&HomeSettings {
        max_findings: count.max(1_000_000),
        ..HomeSettings::default()
    })?;
    home.install(STREAMER, &bins.streamer)?;

    eprintln!("[3 ingestion] {count} findings through the daemon");
    let (daemon_rate, memory) = through_daemon(bins, &home, count)?;

    let ndjson = home.path().join("findings.ndjson");
    write_ndjson(&ndjson, count)?;
    eprintln!("[3 ingestion] the same NDJSON with python3 json + sqlite3 executemany");
    let python = python_loader(&bins.python, &ndjson, &home.path().join("python.db"), count)?;
    eprintln!("[3 ingestion] bare rusqlite prepared inserts");
    let bare = bare_inserts(&ndjson, &home.path().join("bare.db"), count)?;

    let measure = format!("daemon, {count} findings");
    Ok(vec![
        Figure::new(
            SECTION,
            "python3 json + sqlite3 executemany",
            python,
            "findings/s",
        ),
        Figure::new(
            SECTION,
            "bare rusqlite insert loop (ceiling)",
            bare,
            "findings/s",
        ),
        Figure::new(SECTION, measure.clone(), daemon_rate, "findings/s")
            .target(Bound::AtLeast(250_000.0)),
        Figure::new(SECTION, measure.clone(), daemon_rate, "findings/s")
            .against("python", python)
            .target(Bound::AtLeast(2.5)),
        Figure::new(SECTION, measure, daemon_rate, "findings/s")
            .against("bare insert", bare)
            .target(Bound::AtLeast(0.8)),
        Figure::new(
            SECTION,
            "daemon peak RSS during ingestion",
            memory.peak_mib(),
            "MiB",
        ),
    ])
}

/// Findings per second through the daemon, and the daemon's memory peak.
fn through_daemon(bins: &Bins, home: &BenchHome, count: u64) -> Result<(f64, Memory), BenchError> {
    let daemon = Daemon::start(&bins.secflowd, home)?;
    let pid = daemon.pid();
    let mut rpc = daemon.connect()?;
    let stop = AtomicBool::new(false);
    let (answer, peak) = std::thread::scope(|scope| {
        // Sampled as well as read from VmHWM: the sample shows the peak of the
        // ingestion itself, VmHWM the peak of the daemon's whole life.
        let sampler = scope.spawn(|| {
            let mut peak = Memory::default();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(m) = Memory::of(pid) {
                    peak.rss_kib = peak.rss_kib.max(m.rss_kib);
                    peak.peak_kib = peak.peak_kib.max(m.peak_kib);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak
        });
        let answer = rpc.call(
            "runs.execute",
            json!({"plugin": STREAMER, "config": {"count": count}, "timeout_ms": 1_800_000}),
        );
        let answered = SystemTime::now();
        stop.store(true, Ordering::Relaxed);
        let peak = sampler.join().unwrap_or_default();
        (answer.map(|record| (record, answered)), peak)
    });
    let (record, answered) = answer?;
    expect_succeeded(&record)?;
    let stored = record.get("findings").and_then(Value::as_u64).unwrap_or(0);
    if stored != count {
        return Err(BenchError::Plugin(format!(
            "the daemon stored {stored} findings of {count}: {record}"
        )));
    }
    let first_sent = first_sent(&record)?;
    let answered = answered
        .duration_since(UNIX_EPOCH)
        .map_err(|_| BenchError::Setup("the clock is before 1970".into()))?;
    let seconds = answered.saturating_sub(first_sent).as_secs_f64();
    Ok((count as f64 / seconds, peak))
}

/// When the plugin sent its first finding, from its stderr in the run record.
fn first_sent(record: &Value) -> Result<std::time::Duration, BenchError> {
    record
        .get("stderr_tail")
        .and_then(Value::as_str)
        .and_then(|tail| {
            tail.lines()
                .find_map(|l| l.strip_prefix("bench-first-sent-ns "))
                .and_then(|ns| ns.trim().parse::<u64>().ok())
        })
        .map(std::time::Duration::from_nanos)
        .ok_or_else(|| {
            BenchError::Plugin(format!("the run record has no first-send stamp: {record}"))
        })
}

fn write_ndjson(path: &Path, count: u64) -> Result<(), BenchError> {
    let io = |source| BenchError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    let mut line = Vec::with_capacity(1024);
    for i in 1..=count {
        line.clear();
        write_finding(&mut line, i);
        line.push(b'\n');
        out.write_all(&line).map_err(io)?;
    }
    out.flush().map_err(io)
}

fn python_loader(python: &Path, ndjson: &Path, db: &Path, count: u64) -> Result<f64, BenchError> {
    let out = Command::new(python)
        .arg("-c")
        .arg(PYTHON_LOADER)
        .arg(ndjson)
        .arg(db)
        .output()
        .map_err(|source| BenchError::Io {
            what: format!("running {}", python.display()),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let seconds: f64 = text.trim().parse().map_err(|_| {
        BenchError::Plugin(format!(
            "the python loader failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    Ok(count as f64 / seconds)
}

/// The ceiling: the rows are parsed before the clock starts; only the
/// prepared inserts and the commit are timed, with the daemon's durability
/// settings (WAL, synchronous = NORMAL).
fn bare_inserts(ndjson: &Path, db: &Path, count: u64) -> Result<f64, BenchError> {
    let text = std::fs::read_to_string(ndjson).map_err(|source| BenchError::Io {
        what: format!("reading {}", ndjson.display()),
        source,
    })?;
    let field = |d: &Value, k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let rows: Vec<[String; 6]> = text
        .lines()
        .map(|line| {
            let d: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let url = d
                .pointer("/location/url")
                .and_then(Value::as_str)
                .unwrap_or("");
            [
                url.to_string(),
                field(&d, "rule_id"),
                field(&d, "title"),
                field(&d, "severity"),
                field(&d, "target"),
                line.to_string(),
            ]
        })
        .collect();
    drop(text);
    let mut conn = Connection::open(db)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(BARE_SCHEMA)?;
    let start = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO findings (fingerprint, rule_id, title, severity, target, document) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for row in &rows {
            insert.execute(params![row[0], row[1], row[2], row[3], row[4], row[5]])?;
        }
    }
    tx.commit()?;
    let seconds = start.elapsed().as_secs_f64();
    if rows.len() as u64 != count {
        return Err(BenchError::Setup(format!(
            "{} rows read of {count}",
            rows.len()
        )));
    }
    Ok(count as f64 / seconds)
}
