//! What this host can do for the sandbox, probed once per supervisor, and the
//! state every run shares: the one empty network namespace (entering it with
//! `setns` costs far less than creating a namespace per run, whose creation is
//! serialised in the kernel) and the compiled seccomp filter.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::seccomp::SeccompProgram;
use super::Layer;

/// The host's isolation abilities and the shared sandbox state.
#[derive(Debug)]
pub struct Host {
    is_root: bool,
    namespaces: Result<(), String>,
    netns: Result<OwnedFd, String>,
    seccomp: Result<Arc<SeccompProgram>, String>,
    /// For `network: "targets"`: the Landlock scope every such run enforces
    /// (the nftables rules themselves are the runner's), or why not.
    egress: Result<Arc<secflow_egress::ScopeRuleset>, String>,
}

/// What `secflow doctor` shows of the host.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub can_switch_uids: bool,
    pub pid_and_mount_namespaces: Result<(), String>,
    pub network_namespace: Result<(), String>,
    pub user_namespaces: bool,
    pub seccomp: Result<usize, String>,
    pub landlock_abi: Option<u32>,
    pub cgroup_v2_controllers: Option<Vec<String>>,
    /// Whether the kernel's seccomp kill reports can be read (see
    /// `sandbox::SeccompAudit`), or why not.
    pub seccomp_audit_log: Result<(), String>,
    /// Whether `network: "targets"` runs can be confined (nftables as root,
    /// Landlock scopes), or why not.
    pub egress: Result<(), String>,
}

impl Host {
    /// Probes the host and creates the shared empty network namespace.
    pub fn probe() -> Host {
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        let namespaces = in_scratch_thread(|| {
            // SAFETY: unshare on this throwaway thread only; it exits right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID) } != 0 {
                return Err(format!(
                    "unshare(CLONE_NEWNS|CLONE_NEWPID): {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(())
        });
        let netns = in_scratch_thread(empty_network_namespace);
        Host {
            is_root,
            namespaces,
            netns,
            seccomp: SeccompProgram::build().map(Arc::new),
            egress: egress_scope(is_root),
        }
    }

    /// A host that lacks `missing` and has everything else (without creating
    /// anything): for testing the admission policy.
    #[cfg(test)]
    pub fn lacking(missing: &[Layer]) -> Host {
        let no = |layer: Layer| {
            if missing.contains(&layer) {
                Err(format!("no {layer} here"))
            } else {
                Ok(())
            }
        };
        Host {
            is_root: !missing.contains(&Layer::Uid),
            namespaces: no(Layer::PidNamespace).and(no(Layer::MountNamespace)),
            netns: no(Layer::NetworkNamespace).and_then(|()| {
                std::fs::File::open("/dev/null")
                    .map(OwnedFd::from)
                    .map_err(|e| e.to_string())
            }),
            seccomp: no(Layer::Seccomp).and_then(|()| SeccompProgram::build().map(Arc::new)),
            egress: no(Layer::Egress).and_then(|()| {
                secflow_egress::ScopeRuleset::create()
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            }),
        }
    }

    /// Why this host cannot provide `layer`, or `None` when it can.
    pub fn lacks(&self, layer: Layer) -> Option<String> {
        match layer {
            Layer::Uid if !self.is_root => Some(
                "the supervisor does not run as root, so it cannot switch to a per-run uid".into(),
            ),
            Layer::Uid | Layer::Rlimits => None,
            Layer::PidNamespace | Layer::MountNamespace => self.namespaces.as_ref().err().cloned(),
            Layer::NetworkNamespace => self.netns.as_ref().err().cloned(),
            Layer::Seccomp => self.seccomp.as_ref().err().cloned(),
            Layer::Egress => self.egress.as_ref().err().cloned(),
        }
    }

    /// The shared empty network namespace, if there is one.
    pub fn netns_fd(&self) -> Option<RawFd> {
        self.netns.as_ref().ok().map(AsRawFd::as_raw_fd)
    }

    /// The Landlock scope of `network: "targets"` runs, if this host has it.
    pub fn egress_scope(&self) -> Option<Arc<secflow_egress::ScopeRuleset>> {
        self.egress.as_ref().ok().cloned()
    }

    pub fn seccomp(&self) -> Option<Arc<SeccompProgram>> {
        self.seccomp.as_ref().ok().cloned()
    }

    pub fn report(&self) -> HostReport {
        HostReport {
            can_switch_uids: self.is_root,
            pid_and_mount_namespaces: self.namespaces.clone(),
            network_namespace: self.netns.as_ref().map(|_| ()).map_err(Clone::clone),
            user_namespaces: std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0),
            seccomp: self.seccomp.as_ref().map(|p| p.len()).map_err(Clone::clone),
            landlock_abi: landlock_abi(),
            cgroup_v2_controllers: std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .ok()
                .map(|s| s.split_whitespace().map(str::to_string).collect()),
            seccomp_audit_log: super::SeccompAudit::open(0..0)
                .map(drop)
                .map_err(|e| format!("cannot join the audit log's read group: {e}")),
            egress: self.egress.as_ref().map(drop).map_err(Clone::clone),
        }
    }
}

/// What `network: "targets"` needs: root (nftables rules in the host's
/// network namespace), the `nft` tool, and Landlock scopes (ABI 6).
fn egress_scope(is_root: bool) -> Result<Arc<secflow_egress::ScopeRuleset>, String> {
    if !is_root {
        return Err(
            "the supervisor does not run as root, so it cannot install nftables rules".into(),
        );
    }
    secflow_egress::Nft::find().map_err(|e| e.to_string())?;
    secflow_egress::ScopeRuleset::create()
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Runs `f` on a new thread that exits afterwards, so namespace changes made
/// there never touch the supervisor's own threads.
fn in_scratch_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    std::thread::Builder::new()
        .name("secflow-probe".into())
        .spawn(f)
        .map_err(|e| format!("cannot start a probe thread: {e}"))?
        .join()
        .map_err(|_| "the probe thread panicked".to_string())?
}

/// A new network namespace with no interface up, kept alive by its fd.
fn empty_network_namespace() -> Result<OwnedFd, String> {
    // SAFETY: unshare on the calling (scratch) thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    let file = std::fs::File::open(Path::new("/proc/thread-self/ns/net"))
        .map_err(|e| format!("cannot open the new network namespace: {e}"))?;
    Ok(OwnedFd::from(file))
}

/// The Landlock ABI version the kernel offers, if any.
fn landlock_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no ruleset and allocates nothing.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (abi > 0).then_some(abi as u32)
}
