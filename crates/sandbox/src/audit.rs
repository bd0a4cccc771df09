//! Seccomp kills as the kernel's audit log reports them: which run's process
//! made which forbidden system call.
//!
//! The filter kills a violating process with SIGSYS. The run sees that death
//! when the victim is the plugin (its wait status) or an orphan (the run's
//! init reaps it), but not when the plugin reaps a child of its own; and a
//! wait status never names the system call. The kernel logs every seccomp
//! kill as an audit record (type 1326, `AUDIT_SECCOMP`) with the victim's uid,
//! the architecture and the syscall number, whether or not auditd runs. Each
//! run has a uid of its own (`sandbox.uid_min..+uid_count`), so a record's
//! uid names the run.
//!
//! Records are read from the audit netlink socket's read-only multicast group
//! (`AUDIT_NLGRP_READLOG`, needs `CAP_AUDIT_READ`), without disturbing an
//! auditd. The kernel sends them from its audit thread, shortly after the
//! kill: a run's end drains what has arrived, and files each record under its
//! uid. A record that only arrives after its run has ended is older than the
//! next holder of the uid, so it is dropped with a warning, never blamed on
//! the next run.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use libseccomp::{ScmpArch, ScmpSyscall};
use serde::Serialize;

/// `AUDIT_SECCOMP`, the record type of a seccomp action.
const AUDIT_SECCOMP: u16 = 1326;
/// The read-only multicast group of the audit netlink socket.
const AUDIT_NLGRP_READLOG: u32 = 1;
/// Receive buffer asked for: a burst of kills must not overrun it.
const RECEIVE_BUFFER: libc::c_int = 4 << 20;
/// How often lost records are reported at most.
const OVERFLOW_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Largest audit message (`MAX_AUDIT_MESSAGE_LENGTH`) plus its header.
const MAX_MESSAGE: usize = 8970 + 16;
/// Most records filed and not yet collected, over all uids; a run keeps at
/// most this many of its own.
const MAX_FILED: usize = 4096;
const MAX_PER_RUN: usize = 64;
/// The audit stamp comes from the kernel's coarse clock (a tick behind, at
/// most 10 ms at HZ=100), and truncated to ms: a kill in a run's first
/// moments can be stamped before the run's start. A uid is reused only after
/// every other uid of the range (round robin), far longer than this.
const CLOCK_SLACK_MS: u64 = 100;

/// One process killed by the seccomp filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeccompKill {
    /// The victim's pid in the host's PID namespace.
    pub pid: i32,
    pub uid: u32,
    /// `comm`: the process name (at most 15 bytes, as the kernel keeps it).
    pub comm: String,
    /// The audit architecture (`AUDIT_ARCH_*`), e.g. `c000003e` for x86-64.
    pub arch: String,
    pub syscall: i64,
    /// The syscall's name for that architecture, when libseccomp knows it.
    pub name: Option<String>,
    /// When the kernel logged it, milliseconds since the Unix epoch.
    #[serde(skip)]
    pub at_ms: u64,
}

impl SeccompKill {
    /// `ptrace (101)`, or the number alone.
    pub fn syscall_label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.syscall),
            None => format!("syscall {}", self.syscall),
        }
    }
}

/// Reads seccomp kill records of the runs' uids from the audit log.
#[derive(Debug)]
pub struct SeccompAudit {
    socket: OwnedFd,
    uids: Range<u32>,
    filed: Mutex<Filed>,
}

#[derive(Debug, Default)]
struct Filed {
    by_uid: HashMap<u32, Vec<SeccompKill>>,
    count: usize,
    /// When records were last said to be lost.
    overflow_warned: Option<std::time::Instant>,
}

impl SeccompAudit {
    /// Joins the audit log's read-only multicast group, keeping the records
    /// of processes whose uid is in `uids` (the per-run uids). Fails where
    /// the kernel has no audit or the supervisor lacks `CAP_AUDIT_READ`.
    pub fn open(uids: Range<u32>) -> io::Result<SeccompAudit> {
        // SAFETY: socket/setsockopt/bind on a fresh descriptor we own, with
        // arguments on the stack.
        let socket = unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_AUDIT,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let socket = OwnedFd::from_raw_fd(fd);
            // Past `net.core.rmem_max` where allowed (root), else as much as
            // it allows. A smaller buffer still works; only a burst may then
            // be lost (see `drain`).
            for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
                let set = libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    (&RECEIVE_BUFFER as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
                if set == 0 {
                    break;
                }
            }
            let mut address: libc::sockaddr_nl = std::mem::zeroed();
            address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            address.nl_groups = AUDIT_NLGRP_READLOG;
            let bound = libc::bind(
                fd,
                (&address as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            );
            if bound != 0 {
                return Err(io::Error::last_os_error());
            }
            socket
        };
        Ok(SeccompAudit {
            socket,
            uids,
            filed: Mutex::new(Filed::default()),
        })
    }

    /// The kills of processes with `uid` logged at or after `since_ms`
    /// (milliseconds since the Unix epoch: when the run holding `uid` started),
    /// after reading every record that has arrived. Older records of `uid` are
    /// a previous run's that arrived too late for it: dropped, with a warning.
    pub fn kills_of(&self, uid: u32, since_ms: u64) -> Vec<SeccompKill> {
        let mut filed = self
            .filed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.drain(&mut filed);
        let (theirs, late) = filed.take(uid, since_ms);
        for kill in late {
            tracing::warn!(uid, pid = kill.pid, comm = %kill.comm, syscall = %kill.syscall_label(),
                "a seccomp kill was reported after the run that held its uid had ended");
        }
        theirs
    }

    /// Files every record waiting on the socket.
    fn drain(&self, filed: &mut Filed) {
        let mut buffer = [0u8; MAX_MESSAGE];
        loop {
            // SAFETY: recv into a buffer we own, at most its length.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // The kernel dropped records it could not queue: say so,
                    // and go on with what follows.
                    Some(libc::ENOBUFS) => {
                        // Other audit traffic fills the buffer between runs on
                        // a busy host: say so once in a while, not every run.
                        let due = filed
                            .overflow_warned
                            .is_none_or(|at| at.elapsed() >= OVERFLOW_WARNING_EVERY);
                        if due {
                            filed.overflow_warned = Some(std::time::Instant::now());
                            tracing::warn!("audit records were lost (the receive buffer overflowed, other audit traffic included); a seccomp kill may go unseen");
                        }
                        continue;
                    }
                    Some(libc::EAGAIN) => return,
                    _ => {
                        tracing::warn!(error = %error, "cannot read the audit log");
                        return;
                    }
                }
            }
            let message = &buffer[..n as usize];
            let Some((kind, payload)) = netlink_payload(message) else {
                continue;
            };
            if kind != AUDIT_SECCOMP {
                continue;
            }
            let Some(kill) = std::str::from_utf8(payload)
                .ok()
                .and_then(parse_seccomp_record)
            else {
                continue;
            };
            filed.file(kill, &self.uids);
        }
    }
}

impl Filed {
    /// Keeps `kill` if its uid is a run's, within the bounds.
    fn file(&mut self, kill: SeccompKill, uids: &Range<u32>) {
        if !uids.contains(&kill.uid) || self.count >= MAX_FILED {
            return;
        }
        let records = self.by_uid.entry(kill.uid).or_default();
        if records.len() < MAX_PER_RUN {
            records.push(kill);
            self.count += 1;
        }
    }

    /// The records of `uid`: those of the run that started at `since_ms`,
    /// and those older than it (a previous run's, reported too late).
    fn take(&mut self, uid: u32, since_ms: u64) -> (Vec<SeccompKill>, Vec<SeccompKill>) {
        let Some(records) = self.by_uid.remove(&uid) else {
            return (Vec::new(), Vec::new());
        };
        self.count -= records.len();
        records
            .into_iter()
            .partition(|k| k.at_ms + CLOCK_SLACK_MS >= since_ms)
    }
}

/// The type and payload of one netlink message (audit sends one per datagram).
fn netlink_payload(message: &[u8]) -> Option<(u16, &[u8])> {
    let header = std::mem::size_of::<libc::nlmsghdr>();
    let length = u32::from_ne_bytes(message.get(0..4)?.try_into().ok()?) as usize;
    let kind = u16::from_ne_bytes(message.get(4..6)?.try_into().ok()?);
    let payload = message.get(header..length.min(message.len()))?;
    // The text may end in NULs.
    let end = payload.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
    Some((kind, &payload[..end]))
}

/// Reads an `AUDIT_SECCOMP` record's text: `audit(SECONDS.MILLIS:SERIAL):
/// key=value …`. Only kills (a `sig` other than 0) count: the filter's other
/// actions are not logged as kills.
pub fn parse_seccomp_record(text: &str) -> Option<SeccompKill> {
    let rest = text.trim().strip_prefix("audit(")?;
    let (stamp, fields) = rest.split_once("):")?;
    let (seconds, rest) = stamp.split_once('.')?;
    let millis = rest.split(':').next()?;
    let at_ms = seconds.parse::<u64>().ok()? * 1000 + millis.parse::<u64>().ok()?;

    let mut values: HashMap<&str, &str> = HashMap::new();
    for field in fields.split_whitespace() {
        if let Some((key, value)) = field.split_once('=') {
            values.entry(key).or_insert(value);
        }
    }
    let sig: i32 = values.get("sig")?.parse().ok()?;
    if sig == 0 {
        return None;
    }
    let arch = values.get("arch")?.to_string();
    let syscall: i64 = values.get("syscall")?.parse().ok()?;
    Some(SeccompKill {
        pid: values.get("pid")?.parse().ok()?,
        uid: values.get("uid")?.parse().ok()?,
        comm: values
            .get("comm")
            .map(|c| c.trim_matches('"').to_string())
            .unwrap_or_default(),
        name: syscall_name(&arch, syscall),
        arch,
        syscall,
        at_ms,
    })
}

/// The name of `syscall` on the audit architecture `arch`, where libseccomp
/// knows both.
fn syscall_name(arch: &str, syscall: i64) -> Option<String> {
    const X32_BIT: i64 = 0x4000_0000;
    let arch = match (u32::from_str_radix(arch, 16).ok()?, syscall & X32_BIT != 0) {
        (0xc000_003e, false) => ScmpArch::X8664,
        (0xc000_003e, true) => ScmpArch::X32,
        (0x4000_0003, _) => ScmpArch::X86,
        (0xc000_00b7, _) => ScmpArch::Aarch64,
        _ => return None,
    };
    ScmpSyscall::from(i32::try_from(syscall).ok()?)
        .get_name_by_arch(arch)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As this host's kernel logged a hostile fixture's ptrace.
    const PTRACE_KILL: &str = "audit(1795500792.718:2820): auid=4294967295 uid=2000000000 \
        gid=2000000000 ses=4294967295 pid=7700 comm=\"fixture-hostile\" \
        exe=\"/tmp/.tmp2dJmEs/plugins/orphaner/fixture-hostile\" sig=31 arch=c000003e \
        syscall=101 compat=0 ip=0x7efc93e9d829 code=0x80000000";

    #[test]
    fn a_kill_record_names_the_uid_the_process_and_the_syscall() {
        let kill = parse_seccomp_record(PTRACE_KILL).unwrap();
        assert_eq!(kill.uid, 2_000_000_000);
        assert_eq!(kill.pid, 7700);
        assert_eq!(kill.comm, "fixture-hostile");
        assert_eq!(kill.syscall, 101);
        assert_eq!(kill.name.as_deref(), Some("ptrace"));
        assert_eq!(kill.syscall_label(), "ptrace (101)");
        assert_eq!(kill.at_ms, 1_795_500_792_718);
    }

    #[test]
    fn an_x32_syscall_is_named_for_x32() {
        let record = PTRACE_KILL.replace("syscall=101", "syscall=1073741863");
        let kill = parse_seccomp_record(&record).unwrap();
        assert_eq!(kill.name.as_deref(), Some("getpid"));
    }

    #[test]
    fn records_that_are_not_kills_or_not_seccomp_text_are_ignored() {
        assert_eq!(
            parse_seccomp_record(&PTRACE_KILL.replace("sig=31", "sig=0")),
            None
        );
        assert_eq!(parse_seccomp_record("type=1326 something else"), None);
        assert_eq!(parse_seccomp_record(""), None);
    }

    fn kill_at(uid: u32, at_ms: u64) -> SeccompKill {
        SeccompKill {
            at_ms,
            uid,
            ..parse_seccomp_record(PTRACE_KILL).unwrap()
        }
    }

    #[test]
    fn a_run_gets_the_kills_of_its_uid_since_its_start_and_none_of_an_earlier_run() {
        let uids = 100..110;
        let mut filed = Filed::default();
        filed.file(kill_at(101, 5_000), &uids);
        filed.file(kill_at(101, 9_950), &uids); // coarse clock: just before the start
        filed.file(kill_at(101, 10_020), &uids);
        filed.file(kill_at(102, 10_030), &uids);
        filed.file(kill_at(7, 10_040), &uids); // not a run's uid
        let (theirs, late) = filed.take(101, 10_000);
        let at: Vec<u64> = theirs.iter().map(|k| k.at_ms).collect();
        assert_eq!(at, [9_950, 10_020]);
        assert_eq!(late.len(), 1, "the earlier run's record is not this run's");
        assert_eq!(
            filed.take(101, 10_000),
            (Vec::new(), Vec::new()),
            "taken once"
        );
        assert_eq!(filed.take(102, 10_000).0.len(), 1);
        assert_eq!(filed.take(7, 0).0.len(), 0);
        assert_eq!(filed.count, 0);
    }

    #[test]
    fn filing_is_bounded_per_run_and_in_all() {
        let uids = 0..u32::MAX;
        let mut filed = Filed::default();
        for _ in 0..MAX_PER_RUN + 10 {
            filed.file(kill_at(1, 1), &uids);
        }
        assert_eq!(filed.count, MAX_PER_RUN);
        for uid in 2..(MAX_FILED as u32 + 100) {
            filed.file(kill_at(uid, 1), &uids);
        }
        assert_eq!(filed.count, MAX_FILED);
    }

    #[test]
    fn a_netlink_message_gives_its_type_and_text_without_trailing_nuls() {
        let text = b"audit(1.2:3): sig=31\0\0";
        let mut message = Vec::new();
        let length = (16 + text.len()) as u32;
        message.extend_from_slice(&length.to_ne_bytes());
        message.extend_from_slice(&AUDIT_SECCOMP.to_ne_bytes());
        message.extend_from_slice(&[0; 10]);
        message.extend_from_slice(text);
        let (kind, payload) = netlink_payload(&message).unwrap();
        assert_eq!(kind, AUDIT_SECCOMP);
        assert_eq!(payload, b"audit(1.2:3): sig=31");
        assert_eq!(netlink_payload(&message[..3]), None);
    }
}
