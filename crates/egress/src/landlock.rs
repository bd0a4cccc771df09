//! Landlock scoping for runs that stay in the host's network namespace.
//!
//! A `network: "targets"` run shares the host's network namespace, and with
//! it the host's abstract Unix sockets (which a mount namespace cannot hide,
//! and nftables does not see). Landlock's scopes (ABI 6, Linux 6.12) refuse
//! a connection to an abstract socket created outside the run's Landlock
//! domain, and a signal to a process outside it. The ruleset is made in the
//! parent; the child only calls `landlock_restrict_self` on it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
const LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
const LANDLOCK_SCOPE_SIGNAL: u64 = 2;
/// The first ABI with scopes.
pub const SCOPE_ABI: i64 = 6;

/// `struct landlock_ruleset_attr` as of ABI 6.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// A ruleset that handles no access rights and scopes abstract Unix sockets
/// and signals: the child enforces it with [`restrict_self`].
#[derive(Debug)]
pub struct ScopeRuleset {
    fd: OwnedFd,
}

/// Why the scope cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("the kernel's Landlock ABI is {abi}, and scoping abstract Unix sockets needs {SCOPE_ABI} (Linux 6.12)")]
    TooOld { abi: i64 },
    #[error("landlock_create_ruleset failed")]
    Create(#[source] std::io::Error),
}

impl ScopeRuleset {
    pub fn create() -> Result<ScopeRuleset, ScopeError> {
        // SAFETY: the version query takes no ruleset and allocates nothing.
        let abi = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        if abi < SCOPE_ABI {
            return Err(ScopeError::TooOld { abi: abi.max(0) });
        }
        let attr = RulesetAttr {
            handled_access_fs: 0,
            handled_access_net: 0,
            scoped: LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL,
        };
        // SAFETY: attr is a valid, initialised ruleset_attr of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                std::mem::size_of::<RulesetAttr>(),
                0u32,
            )
        };
        if fd < 0 {
            return Err(ScopeError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: the kernel just returned this fd, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(ScopeRuleset { fd })
    }

    /// The raw fd, for the child.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Enforces the ruleset `fd` on the calling thread and its future children.
/// Async-signal-safe (one syscall): for use between `fork` and `exec`, after
/// `no_new_privs` is set. Returns the raw result (0, or -1 with errno set).
pub fn restrict_self(fd: i32) -> libc::c_long {
    // SAFETY: a plain syscall on an fd number; a wrong fd only yields EBADF.
    unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) }
}
