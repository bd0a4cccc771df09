//! The seccomp filter every plugin runs under, built once with libseccomp.
//!
//! A denylist with `SECCOMP_RET_KILL_PROCESS`: the families of sandbox.md §5
//! (mount and namespace changes, tracing, kernel and module control, keyrings,
//! `bpf`, `perf_event_open`, `userfaultfd`, `io_uring`, handle-based opens, …),
//! `clone` with any namespace flag, and every syscall of a foreign architecture
//! — including the x32 ABI, which libseccomp treats as one: a denylist built
//! without that check is bypassed by setting `__X32_SYSCALL_BIT`
//! (seccompiler#74). `clone3` fails with `ENOSYS`, so libcs fall back to `clone`,
//! whose flags the filter can see. libseccomp (the library youki and runc use)
//! compiles the rules into a binary tree, so the filter stays short and cheap.
//!
//! The compiled BPF is exported once; each child installs it with one raw
//! `seccomp(2)` call on data prepared here.

use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

/// Syscalls that kill the plugin on sight.
pub const DENIED: &[&str] = &[
    // Filesystem and namespace surgery.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    // Looking into or steering other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    // Kernel attack surface.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "add_key",
    "request_key",
    "keyctl",
    "fanotify_init",
    "lookup_dcookie",
    // Host control.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "vhangup",
    "uselib",
    "nfsservctl",
];

/// `clone` flags that create namespaces.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

/// A compiled filter, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Debug, Clone)]
pub struct SeccompProgram {
    instructions: Vec<libc::sock_filter>,
}

// SAFETY: sock_filter is plain data (integers); no pointers are shared.
unsafe impl Send for SeccompProgram {}
// SAFETY: as above; the program is never mutated after it is built.
unsafe impl Sync for SeccompProgram {}

impl SeccompProgram {
    /// Builds the filter for the native architecture.
    pub fn build() -> Result<SeccompProgram, String> {
        let fail = |what: &str, e: libseccomp::error::SeccompError| format!("seccomp: {what}: {e}");
        let mut filter =
            ScmpFilterContext::new(ScmpAction::Allow).map_err(|e| fail("new filter", e))?;
        // Foreign architectures, x32 included, end the process.
        filter
            .set_act_badarch(ScmpAction::KillProcess)
            .map_err(|e| fail("bad-arch action", e))?;
        // The child sets no_new_privs itself, in its own order.
        filter.set_ctl_nnp(false).map_err(|e| fail("nnp", e))?;
        // Binary tree of syscall numbers: short filter, cheap to install and run.
        filter
            .set_ctl_optimize(2)
            .map_err(|e| fail("optimize", e))?;
        for name in DENIED {
            let syscall = ScmpSyscall::from_name(name).map_err(|e| fail(name, e))?;
            filter
                .add_rule(ScmpAction::KillProcess, syscall)
                .map_err(|e| fail(name, e))?;
        }
        let clone = ScmpSyscall::from_name("clone").map_err(|e| fail("clone", e))?;
        for flag in NAMESPACE_FLAGS {
            let has_flag = ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(*flag), *flag);
            filter
                .add_rule_conditional(ScmpAction::KillProcess, clone, &[has_flag])
                .map_err(|e| fail("clone flags", e))?;
        }
        let clone3 = ScmpSyscall::from_name("clone3").map_err(|e| fail("clone3", e))?;
        filter
            .add_rule(ScmpAction::Errno(libc::ENOSYS), clone3)
            .map_err(|e| fail("clone3", e))?;
        let instructions = export(&filter)?;
        Ok(SeccompProgram { instructions })
    }

    pub fn len(&self) -> usize {
        self.instructions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }

    /// The `sock_fprog` the kernel takes; valid while `self` lives.
    pub fn as_fprog(&self) -> libc::sock_fprog {
        libc::sock_fprog {
            len: self.instructions.len() as u16,
            filter: self.instructions.as_ptr() as *mut libc::sock_filter,
        }
    }
}

/// Exports the filter as raw BPF through a memfd.
fn export(filter: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, String> {
    // SAFETY: memfd_create with a static name; returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"secflow-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "seccomp: memfd_create: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    filter
        .export_bpf(&fd)
        .map_err(|e| format!("seccomp: export: {e}"))?;
    let mut file = std::fs::File::from(fd);
    file.rewind().map_err(|e| format!("seccomp: export: {e}"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("seccomp: export: {e}"))?;
    let size = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % size != 0 || bytes.len() / size > u16::MAX as usize {
        return Err(format!(
            "seccomp: exported filter has an invalid size of {} bytes",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_short() {
        let program = SeccompProgram::build().unwrap();
        assert!(!program.is_empty());
        // A binary tree keeps the filter far below a linear chain of every rule.
        assert!(program.len() < 200, "{} instructions", program.len());
    }
}
