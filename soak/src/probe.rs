//! What the daemon holds and what its runs left behind, read from `/proc` and
//! the file system: RSS, open fds, threads; processes in the per-run uid range
//! or under the daemon, zombies, run dirs, namespaces; and the database's
//! `PRAGMA integrity_check`.
//!
//! A leak shows as a difference between two snapshots, so everything here is
//! a plain value that can be compared and printed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The namespace kinds a run creates (sandbox.md): network, pid, mount.
const NAMESPACE_KINDS: &[&str] = &["net", "pid", "mnt"];

/// One process as `/proc/<pid>/status` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// `R`, `S`, `Z`, …
    pub state: char,
    pub name: String,
}

impl std::fmt::Display for ProcessInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (ppid {}, uid {}, state {})",
            self.pid, self.name, self.ppid, self.uid, self.state
        )
    }
}

/// Every process readable now (ones that exit while being read are skipped).
pub fn processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(process)
        .collect()
}

fn process(pid: u32) -> Option<ProcessInfo> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    Some(ProcessInfo {
        pid,
        name: field("Name:")?.to_string(),
        state: field("State:")?.chars().next()?,
        ppid: field("PPid:")?.parse().ok()?,
        // Real uid: the first of the four.
        uid: field("Uid:")?.split_whitespace().next()?.parse().ok()?,
    })
}

/// The processes descended from `root` (not `root` itself).
pub fn descendants(all: &[ProcessInfo], root: u32) -> Vec<ProcessInfo> {
    let mut found: Vec<ProcessInfo> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            if !found.iter().any(|f| f.pid == p.pid) {
                frontier.push(p.pid);
                found.push(p.clone());
            }
        }
    }
    found
}

/// What a process holds: resident memory, open fds, threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
}

/// `pid`'s usage now; `None` once it has gone.
pub fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let number = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Usage {
        rss_kib: number("VmRSS:")?,
        threads: number("Threads:")?,
        fds,
    })
}

/// Namespaces (`net:[4026…]`) held by the given processes, through their
/// `/proc/<pid>/ns/*` links or through an fd open on one.
pub fn namespaces_of(pids: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for pid in pids {
        for kind in NAMESPACE_KINDS {
            if let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")) {
                found.insert(link.to_string_lossy().into_owned());
            }
        }
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                if let Ok(link) = std::fs::read_link(fd.path()) {
                    let link = link.to_string_lossy().into_owned();
                    if NAMESPACE_KINDS
                        .iter()
                        .any(|k| link.starts_with(&format!("{k}:[")))
                    {
                        found.insert(link);
                    }
                }
            }
        }
    }
    found
}

/// Every distinct net, pid and mnt namespace on the host (shared machine:
/// reported for information, not asserted).
pub fn host_namespaces() -> BTreeSet<String> {
    namespaces_of(processes().into_iter().map(|p| p.pid))
}

/// What a daemon and its runs hold at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Processes whose uid is in the per-run range.
    pub in_uid_range: Vec<ProcessInfo>,
    /// Processes under the daemon.
    pub children: Vec<ProcessInfo>,
    /// Zombies among both.
    pub zombies: Vec<ProcessInfo>,
    /// Entries under the runs dir (`sandbox.work_root`).
    pub work_dirs: Vec<PathBuf>,
    /// Namespaces the daemon and its processes hold.
    pub namespaces: BTreeSet<String>,
}

impl Snapshot {
    /// Takes a snapshot of `daemon` (a pid, or none after it exited), the
    /// uid range and the runs dir.
    pub fn take(daemon: Option<u32>, uids: &std::ops::Range<u32>, work_root: &Path) -> Snapshot {
        let all = processes();
        let in_uid_range: Vec<ProcessInfo> = all
            .iter()
            .filter(|p| uids.contains(&p.uid))
            .cloned()
            .collect();
        let children = daemon.map(|d| descendants(&all, d)).unwrap_or_default();
        let mut zombies: Vec<ProcessInfo> = in_uid_range
            .iter()
            .chain(&children)
            .filter(|p| p.state == 'Z')
            .cloned()
            .collect();
        zombies.dedup_by_key(|p| p.pid);
        // The shared mount point of the runs' views is not a run's leftover.
        let work_dirs = std::fs::read_dir(work_root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name() != secflow_sandbox::VIEW_MOUNT_POINT)
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        let holders = daemon
            .into_iter()
            .chain(in_uid_range.iter().map(|p| p.pid))
            .chain(children.iter().map(|p| p.pid));
        Snapshot {
            namespaces: namespaces_of(holders),
            in_uid_range,
            children,
            zombies,
            work_dirs,
        }
    }

    /// What `self` holds that `baseline` did not: the leftovers. Empty when
    /// nothing leaked.
    pub fn leftovers_since(&self, baseline: &Snapshot) -> Vec<String> {
        let mut found = Vec::new();
        for p in &self.in_uid_range {
            found.push(format!("process in the per-run uid range: {p}"));
        }
        for p in &self.children {
            // A helper the daemon keeps for its whole life (a spawner) is in
            // the baseline with the same pid.
            if !baseline.children.iter().any(|b| b.pid == p.pid) {
                found.push(format!("process under the daemon: {p}"));
            }
        }
        for p in &self.zombies {
            found.push(format!("zombie: {p}"));
        }
        for d in &self.work_dirs {
            found.push(format!("run dir left: {}", d.display()));
        }
        for ns in self.namespaces.difference(&baseline.namespaces) {
            found.push(format!("namespace still held: {ns}"));
        }
        found
    }
}

/// Waits up to `patience` for `take()` to show no leftovers since `baseline`
/// (a run's teardown finishes just after its record is answered); returns the
/// leftovers of the last look.
pub fn settle(
    baseline: &Snapshot,
    patience: std::time::Duration,
    take: impl Fn() -> Snapshot,
) -> (Snapshot, Vec<String>) {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let now = take();
        let left = now.leftovers_since(baseline);
        if left.is_empty() || std::time::Instant::now() > deadline {
            return (now, left);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A connection of its own to the database file, opened with `mode`, that
/// waits up to 10 s for the daemon's writer.
fn open(
    database: &Path,
    mode: rusqlite::OpenFlags,
) -> Result<rusqlite::Connection, rusqlite::Error> {
    let conn = rusqlite::Connection::open_with_flags(
        database,
        mode | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// `PRAGMA integrity_check` of the database file (`"ok"` when sound), read
/// through a connection of its own.
pub fn integrity_check(database: &Path) -> Result<String, rusqlite::Error> {
    let conn = open(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows.join("; "))
}

/// Findings stored under a fingerprint another finding already has: 0 when
/// deduplication held (the writer rebuilds its fingerprint index from the
/// rows at every start, so a restart after SIGKILL is where it would break).
pub fn duplicate_fingerprints(database: &Path) -> Result<u64, rusqlite::Error> {
    let conn = open(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.query_row(
        "SELECT count(*) - count(DISTINCT fingerprint) FROM findings",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
}

/// Stored rows: findings (distinct fingerprints) and observations (a finding
/// seen by a run).
pub fn stored_counts(database: &Path) -> Result<(u64, u64), rusqlite::Error> {
    let conn = open(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let count = |sql: &str| conn.query_row(sql, [], |row| row.get::<_, i64>(0));
    let findings = count("SELECT COUNT(*) FROM findings")?;
    let observations = count("SELECT COUNT(*) FROM finding_observations")?;
    Ok((
        u64::try_from(findings).unwrap_or(0),
        u64::try_from(observations).unwrap_or(0),
    ))
}
