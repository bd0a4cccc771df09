//! The isolation layers a sandbox is built from, as the config and the audit
//! trail name them (the sandbox crate applies them).

use serde::{Deserialize, Serialize};

/// An isolation layer, as named in the config and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// A distinct unprivileged uid/gid, no capabilities, `no_new_privs`.
    Uid,
    /// A PID namespace whose init is the plugin.
    PidNamespace,
    /// A mount namespace with a root built from an allowlist.
    MountNamespace,
    /// The shared empty network namespace (only for `network: false`).
    NetworkNamespace,
    /// Memory, CPU, processes, open files, file size, core dumps.
    Rlimits,
    /// The seccomp filter.
    Seccomp,
    /// Target-scoped egress (only for `network: "targets"`): nftables rules
    /// for the run's uid in the host's network namespace, and a Landlock
    /// scope on abstract Unix sockets and signals.
    Egress,
}

impl Layer {
    pub const ALL: [Layer; 7] = [
        Layer::PidNamespace,
        Layer::MountNamespace,
        Layer::NetworkNamespace,
        Layer::Egress,
        Layer::Rlimits,
        Layer::Uid,
        Layer::Seccomp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Uid => "uid",
            Layer::PidNamespace => "pid_namespace",
            Layer::MountNamespace => "mount_namespace",
            Layer::NetworkNamespace => "network_namespace",
            Layer::Rlimits => "rlimits",
            Layer::Seccomp => "seccomp",
            Layer::Egress => "egress",
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
