//! Where a plugin process is confined: the pure plan, the host's abilities, and
//! the one place that applies the plan in the child between `fork` and `exec`.
//!
//! `plan()` turns a verified manifest and the config into a [`SandboxPlan`]
//! without touching the system. [`Host`] is probed once per supervisor (can it
//! switch uids, make namespaces, load seccomp filters?) and holds what every run
//! shares: the empty network namespace and the compiled seccomp filter.
//! [`SandboxPlan::admit`] decides, before anything is spawned, which layers this
//! host applies — failing closed unless the config allows a degradation — and
//! `SandboxPlan::prepare` allocates everything the child needs, so that
//! `PreparedSandbox::launch` clones the run's processes, which only make raw
//! syscalls on prepared data.
//!
//! The layers, in the order the child applies them: a PID namespace (the plugin
//! is its init, so everything it starts dies with it), a mount namespace with a
//! root built from an allowlist (system dirs, its own dir and `read_paths`
//! read-only; its work dir and a private `/tmp` writable; nothing else exists —
//! not the supervisor's database, config, keys or sockets, not `/root`, `/home`
//! or `/run`), the shared empty network namespace unless the manifest grants
//! network, resource limits, a distinct unprivileged uid/gid per concurrent run
//! with no capabilities and `no_new_privs`, a cleared environment and only fds
//! 0–2, then the seccomp filter, then `execveat` of the verified file.
//!
//! Why mount namespaces rather than Landlock: a root built from an allowlist
//! hides pathname Unix sockets (D-Bus, the daemon's API socket, sockets in a
//! shared `/tmp`) that Landlock (ABI ≤ 7) does not mediate, and it can hide a
//! secret inside an otherwise readable tree, which an allow-only Landlock
//! ruleset cannot express.

mod audit;
mod child;
mod host;
mod seccomp;
mod state;
mod uids;
mod view;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use audit::{SeccompAudit, SeccompKill};
pub use child::{
    block_all_signals, create_run_dir, pidfd_kill, pipe, read_exit_report, read_setup_report,
    remove_run_dir, ChildMemory, ChildStdio, ExitReport, LaunchError, Launched, PreparedSandbox,
    RunDir, WorkDirIn, VIEW_MOUNT_POINT,
};
pub use host::{Host, HostReport};
pub use secflow_core::Layer;
pub use state::{prepare_state_dir, StateError};
pub use uids::{UidLease, UidPool};
pub use view::{MountStep, View};

use secflow_core::config::{Config, RunLimits};
use secflow_manifest::{FilesystemMode, NetworkGrant, VerifiedPlugin};

/// A plan that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("sandbox.read_paths is not allowed with filesystem \"tmp\" (only the work dir, /tmp and what the executable needs are visible)")]
    ReadPathsWithTmp,
    #[error("sandbox.read_paths entry {path} cannot be used: {reason}")]
    ReadPath { path: PathBuf, reason: String },
    /// The path does not exist: data the plugin reads is not installed here
    /// (the run is `skipped`, not rejected).
    #[error("sandbox.read_paths entry {path} does not exist")]
    ReadPathMissing { path: PathBuf },
    #[error("the {layer} layer is required but this host cannot provide it: {reason}")]
    LayerUnavailable { layer: Layer, reason: String },
}

/// What a run's process is allowed, decided before anything is spawned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxPlan {
    pub network: NetworkGrant,
    /// With `network: "targets"`: the manifest's `sandbox.egress` entries,
    /// opened besides the run's targets.
    pub egress: Vec<String>,
    pub filesystem: FilesystemMode,
    /// The plugin's own directory, canonical (visible read-only).
    pub plugin_dir: PathBuf,
    /// Extra read-only paths, canonical (only with `filesystem: readonly`).
    pub read_paths: Vec<PathBuf>,
    /// The plugin's persistent state directory, writable (`sandbox.state`).
    pub state_dir: Option<PathBuf>,
    pub limits: RunLimits,
    /// Size of the private `/tmp`, MiB.
    pub tmp_size_mb: u64,
    /// Size of the work dir's tmpfs (with a mount namespace), MiB.
    pub work_size_mb: u64,
    /// `PATH` as the plugin sees it.
    pub search_path: Vec<PathBuf>,
    /// Supervisor-private paths to hide if they fall inside a visible tree.
    pub hidden: Vec<PathBuf>,
    /// The run's own `/etc/hosts` (a `"targets"` run's resolved names),
    /// bound over the host's; set by the runner once it has resolved them.
    pub hosts_file: Option<PathBuf>,
    /// Layers this plan needs.
    pub layers: Vec<Layer>,
}

/// Builds the plan for one run. Pure apart from canonicalising paths.
pub fn plan(plugin: &VerifiedPlugin, config: &Config) -> Result<SandboxPlan, PlanError> {
    let spec = &plugin.manifest.sandbox;
    if spec.filesystem == FilesystemMode::Tmp && !spec.read_paths.is_empty() {
        return Err(PlanError::ReadPathsWithTmp);
    }
    let read_paths = spec
        .read_paths
        .iter()
        .map(|p| {
            p.canonicalize().map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => PlanError::ReadPathMissing { path: p.clone() },
                _ => PlanError::ReadPath {
                    path: p.clone(),
                    reason: e.to_string(),
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let plugin_dir = plugin
        .entrypoint
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut hidden: Vec<PathBuf> = Vec::new();
    hidden.extend(
        config
            .source
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf),
    );
    hidden.extend(config.storage.path.parent().map(Path::to_path_buf));
    // Other plugins' state; this plugin's own dir is bound back in.
    hidden.push(config.sandbox.state_root.clone());
    hidden.extend(config.api.socket.parent().map(Path::to_path_buf));
    hidden.extend(
        config
            .trust
            .trusted_keys
            .iter()
            .filter_map(|k| k.parent().map(Path::to_path_buf)),
    );
    let hidden = hidden
        .into_iter()
        .map(|p| p.canonicalize().unwrap_or(p))
        .collect();
    let layers = layers_for(spec.network);
    Ok(SandboxPlan {
        network: spec.network,
        egress: spec.egress.clone(),
        filesystem: spec.filesystem,
        plugin_dir,
        read_paths,
        state_dir: spec
            .state
            .then(|| config.sandbox.state_root.join(&plugin.manifest.name)),
        limits: plugin.limits,
        tmp_size_mb: config.sandbox.tmp_size_mb,
        work_size_mb: config.sandbox.work_size_mb,
        search_path: config.plugins.search_path.clone(),
        hidden,
        hosts_file: None,
        layers,
    })
}

/// The layers a plan needs: the empty network namespace without network,
/// the egress filter for `"targets"`, neither with the host's network.
fn layers_for(network: NetworkGrant) -> Vec<Layer> {
    Layer::ALL
        .into_iter()
        .filter(|l| match l {
            Layer::NetworkNamespace => network == NetworkGrant::None,
            Layer::Egress => network == NetworkGrant::Targets,
            _ => true,
        })
        .collect()
}

/// The layers a run gets on this host, and the ones left out (allowed by the
/// config), recorded in the run's audit event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectivePolicy {
    pub layers: Vec<Layer>,
    pub degraded: Vec<DegradedLayer>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub network: NetworkGrant,
    /// What a `network: "targets"` run may reach (after resolution).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<secflow_egress::AllowSet>,
    pub filesystem: FilesystemMode,
    pub limits: RunLimits,
    /// How memory and process counts are limited on this host.
    pub mechanism: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DegradedLayer {
    pub layer: Layer,
    pub reason: String,
}

impl SandboxPlan {
    /// Which layers this host applies to the plan. A layer the plan needs and
    /// the host lacks rejects the run, unless `allow_degraded` names it.
    pub fn admit(
        &self,
        host: &Host,
        allow_degraded: &[Layer],
    ) -> Result<(Vec<Layer>, Vec<DegradedLayer>), PlanError> {
        let mut applied = Vec::new();
        let mut degraded = Vec::new();
        for layer in &self.layers {
            match host.lacks(*layer) {
                None => applied.push(*layer),
                Some(reason) if allow_degraded.contains(layer) => degraded.push(DegradedLayer {
                    layer: *layer,
                    reason,
                }),
                Some(reason) => {
                    return Err(PlanError::LayerUnavailable {
                        layer: *layer,
                        reason,
                    })
                }
            }
        }
        Ok((applied, degraded))
    }

    /// The filesystem view of this plan for a run whose work dir is `workdir`.
    pub fn view(&self, workdir: &Path, owner: Option<u32>) -> View {
        view::build(self, workdir, owner)
    }
}

/// Environment variables a plugin gets; nothing else from the supervisor's
/// environment reaches it (no `NOTIFY_SOCKET`, `LISTEN_*`, credentials).
pub fn plugin_environment(plan: &SandboxPlan, workdir: &Path) -> Vec<(String, String)> {
    let path = plan
        .search_path
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let workdir = workdir.to_string_lossy().into_owned();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path),
        ("HOME".into(), workdir.clone()),
        ("TMPDIR".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("SECFLOW_WORKDIR".into(), workdir),
    ];
    if let Some(state) = &plan.state_dir {
        env.push((
            "SECFLOW_STATE_DIR".into(),
            state.to_string_lossy().into_owned(),
        ));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_core::config::LimitsConfig;

    fn plan(network: NetworkGrant) -> SandboxPlan {
        SandboxPlan {
            network,
            egress: Vec::new(),
            filesystem: FilesystemMode::Readonly,
            plugin_dir: "/opt/plugin".into(),
            read_paths: Vec::new(),
            state_dir: None,
            limits: LimitsConfig::default().defaults(),
            tmp_size_mb: 16,
            work_size_mb: 32,
            search_path: Vec::new(),
            hidden: Vec::new(),
            hosts_file: None,
            layers: layers_for(network),
        }
    }

    #[test]
    fn a_missing_layer_rejects_the_run_naming_it() {
        let host = Host::lacking(&[Layer::Seccomp]);
        let err = plan(NetworkGrant::None).admit(&host, &[]).unwrap_err();
        assert!(matches!(
            err,
            PlanError::LayerUnavailable {
                layer: Layer::Seccomp,
                ..
            }
        ));
        assert!(err.to_string().contains("seccomp"), "{err}");
    }

    #[test]
    fn a_missing_layer_is_left_out_only_when_the_config_allows_it() {
        let host = Host::lacking(&[Layer::Uid]);
        let (applied, degraded) = plan(NetworkGrant::None)
            .admit(&host, &[Layer::Uid])
            .unwrap();
        assert!(!applied.contains(&Layer::Uid));
        assert_eq!(degraded.len(), 1);
        assert_eq!(degraded[0].layer, Layer::Uid);
    }

    #[test]
    fn granted_network_needs_no_network_namespace() {
        let host = Host::lacking(&[Layer::NetworkNamespace]);
        assert!(plan(NetworkGrant::None).admit(&host, &[]).is_err());
        let (applied, _) = plan(NetworkGrant::Host).admit(&host, &[]).unwrap();
        assert!(!applied.contains(&Layer::NetworkNamespace));
    }

    #[test]
    fn a_targets_plan_needs_the_egress_layer_and_no_network_namespace() {
        let targets = plan(NetworkGrant::Targets);
        assert!(targets.layers.contains(&Layer::Egress));
        assert!(!targets.layers.contains(&Layer::NetworkNamespace));
        assert!(!plan(NetworkGrant::None).layers.contains(&Layer::Egress));
        assert!(!plan(NetworkGrant::Host).layers.contains(&Layer::Egress));
        let host = Host::lacking(&[Layer::Egress]);
        let err = targets.admit(&host, &[]).unwrap_err();
        assert!(err.to_string().contains("egress"), "{err}");
        let (applied, degraded) = targets.admit(&host, &[Layer::Egress]).unwrap();
        assert!(!applied.contains(&Layer::Egress));
        assert_eq!(degraded[0].layer, Layer::Egress);
    }

    #[test]
    fn layer_names_in_the_config_are_checked() {
        let ok: Vec<Layer> = toml::from_str::<std::collections::BTreeMap<String, Vec<Layer>>>(
            "l = [\"uid\", \"seccomp\"]",
        )
        .unwrap()
        .remove("l")
        .unwrap();
        assert_eq!(ok, vec![Layer::Uid, Layer::Seccomp]);
        assert!(
            toml::from_str::<std::collections::BTreeMap<String, Vec<Layer>>>("l = [\"landlock\"]")
                .is_err()
        );
    }
}
