//! The filesystem a plugin sees: a list of mount steps that builds a fresh root
//! from an allowlist. Computed in the parent (it looks at which system paths
//! exist and which are symlinks); the child only replays it.
//!
//! Every visible path keeps its host path, so the work dir in `initialize`, the
//! plugin's own directory and its `read_paths` mean the same inside and out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::SandboxPlan;
use secflow_manifest::FilesystemMode;

/// System trees shown read-only in `readonly` mode (if they exist on the host).
const READONLY_SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
/// What an executable needs to load, shown in `tmp` mode.
const TMP_SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Device nodes a plugin may use.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// One step of building the root, paths as seen inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// An empty directory (a mount point or a parent of one).
    Dir(PathBuf),
    /// An empty file (a mount point for a file).
    File(PathBuf),
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    /// The host path at the same path, read-only; `exec` allows executing from it.
    BindReadOnly {
        path: PathBuf,
        exec: bool,
    },
    /// The host path at the same path, writable (the work dir, device nodes).
    BindWritable {
        path: PathBuf,
    },
    /// A fresh writable tmpfs.
    Tmpfs {
        path: PathBuf,
        size_mb: u64,
        mode: u32,
    },
    /// The run's work dir: a fresh tmpfs, mode 0700, owned by the run's uid
    /// and gid, nothing executable in it.
    WorkTmpfs {
        path: PathBuf,
        size_mb: u64,
        owner: Option<u32>,
    },
    /// An empty read-only tmpfs over a supervisor-private path.
    Hide(PathBuf),
    /// A procfs for the run's PID namespace.
    Proc(PathBuf),
    /// A character device node with the host's device number (made with
    /// `mknod`, cheaper than a bind mount per device).
    Device {
        path: PathBuf,
        rdev: u64,
    },
    /// The device tmpfs: device nodes work in it, nothing can be executed.
    DevTmpfs(PathBuf),
    /// A host file at another path, read-only (a run's own `/etc/hosts`).
    BindFileAt {
        source: PathBuf,
        target: PathBuf,
    },
}

/// The whole view, in the order the steps must run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub steps: Vec<MountStep>,
}

/// Builds the view for `plan` with `workdir` writable, owned by `owner`.
pub fn build(plan: &SandboxPlan, workdir: &Path, owner: Option<u32>) -> View {
    let mut view = ViewBuilder::default();
    let system = match plan.filesystem {
        FilesystemMode::Readonly => READONLY_SYSTEM,
        FilesystemMode::Tmp => TMP_SYSTEM,
    };
    // The private tmpfs come first: a bind below /tmp (a work dir or plugin
    // dir there) must land inside the private /tmp, not under it.
    view.tmpfs(Path::new("/tmp"), plan.tmp_size_mb, 0o1777);
    let mut sources: Vec<PathBuf> = Vec::new();
    for path in system.iter().map(Path::new) {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    view.symlink(target, path.to_path_buf());
                }
            }
            Ok(meta) if meta.is_dir() => {
                view.bind(path, false, true);
                sources.push(path.to_path_buf());
            }
            _ => {}
        }
    }
    // A "targets" run's names, resolved by the supervisor, over the host's
    // /etc/hosts: the run can reach no DNS server it was not given.
    if let Some(hosts) = &plan.hosts_file {
        let etc_hosts = Path::new("/etc/hosts");
        if !sources.iter().any(|s| s == Path::new("/etc")) {
            view.dirs_for(Path::new("/etc"));
            view.steps.push(MountStep::File(etc_hosts.to_path_buf()));
        }
        view.steps.push(MountStep::BindFileAt {
            source: hosts.clone(),
            target: etc_hosts.to_path_buf(),
        });
    }
    view.bind(&plan.plugin_dir, false, true);
    sources.push(plan.plugin_dir.clone());
    for path in &plan.read_paths {
        view.bind(path, false, false);
        sources.push(path.clone());
    }
    // The work dir exists only in the run's namespace: a tmpfs there costs
    // no disk metadata to create and remove (a directory per run on ext4 was
    // about 0.35 ms of every run) and nothing of it can outlive the run.
    view.dirs_for(workdir);
    view.steps.push(MountStep::WorkTmpfs {
        path: workdir.to_path_buf(),
        size_mb: plan.work_size_mb,
        owner,
    });
    // Before the hides below: were the state root inside a visible tree, its
    // cover would hide this too, and writes fail rather than leak.
    if let Some(state) = &plan.state_dir {
        view.bind(state, true, false);
    }
    view.dirs_for(Path::new("/dev"));
    view.steps.push(MountStep::DevTmpfs("/dev".into()));
    for dev in DEVICES.iter().map(Path::new) {
        if let Ok(meta) = std::fs::metadata(dev) {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if meta.file_type().is_char_device() {
                view.steps.push(MountStep::Device {
                    path: dev.to_path_buf(),
                    rdev: meta.rdev(),
                });
            }
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        view.steps.push(MountStep::Symlink {
            target: target.into(),
            link: link.into(),
        });
    }
    view.dirs_for(Path::new("/proc"));
    view.steps.push(MountStep::Proc("/proc".into()));
    // A supervisor-private path inside a visible tree is covered up.
    for hidden in &plan.hidden {
        if sources.iter().any(|s| hidden.starts_with(s)) {
            view.steps.push(MountStep::Hide(hidden.clone()));
        }
    }
    View { steps: view.steps }
}

#[derive(Default)]
struct ViewBuilder {
    steps: Vec<MountStep>,
    dirs: BTreeSet<PathBuf>,
}

impl ViewBuilder {
    /// Directory steps for `path` and every parent not made yet.
    fn dirs_for(&mut self, path: &Path) {
        let mut missing: Vec<&Path> = path.ancestors().filter(|a| *a != Path::new("/")).collect();
        missing.reverse();
        for dir in missing {
            if self.dirs.insert(dir.to_path_buf()) {
                self.steps.push(MountStep::Dir(dir.to_path_buf()));
            }
        }
    }

    fn bind(&mut self, path: &Path, writable: bool, exec: bool) {
        if path.is_dir() {
            self.dirs_for(path);
        } else {
            if let Some(parent) = path.parent() {
                self.dirs_for(parent);
            }
            self.steps.push(MountStep::File(path.to_path_buf()));
        }
        self.steps.push(if writable {
            MountStep::BindWritable {
                path: path.to_path_buf(),
            }
        } else {
            MountStep::BindReadOnly {
                path: path.to_path_buf(),
                exec,
            }
        });
    }

    fn tmpfs(&mut self, path: &Path, size_mb: u64, mode: u32) {
        self.dirs_for(path);
        self.steps.push(MountStep::Tmpfs {
            path: path.to_path_buf(),
            size_mb,
            mode,
        });
    }

    fn symlink(&mut self, target: PathBuf, link: PathBuf) {
        if let Some(parent) = link.parent() {
            if parent != Path::new("/") {
                self.dirs_for(parent);
            }
        }
        self.steps.push(MountStep::Symlink { target, link });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_core::config::LimitsConfig;
    use secflow_core::Layer;

    fn plan(filesystem: FilesystemMode, plugin_dir: &Path, hidden: Vec<PathBuf>) -> SandboxPlan {
        SandboxPlan {
            network: secflow_manifest::NetworkGrant::None,
            egress: Vec::new(),
            filesystem,
            plugin_dir: plugin_dir.to_path_buf(),
            read_paths: Vec::new(),
            state_dir: None,
            limits: LimitsConfig::default().defaults(),
            tmp_size_mb: 16,
            work_size_mb: 32,
            search_path: vec!["/usr/bin".into()],
            hidden,
            hosts_file: None,
            layers: Layer::ALL.to_vec(),
        }
    }

    fn binds(view: &View) -> Vec<(PathBuf, bool)> {
        view.steps
            .iter()
            .filter_map(|s| match s {
                MountStep::BindReadOnly { path, .. } => Some((path.clone(), false)),
                MountStep::BindWritable { path } => Some((path.clone(), true)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn only_the_allowlist_is_visible_and_only_the_work_dir_is_writable() {
        // The work dir is its own tmpfs owned by the run's uid; no host path
        // is bound writable.
        let plugin = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let view = build(
            &plan(FilesystemMode::Readonly, plugin.path(), vec![]),
            work.path(),
            Some(2_000_000_007),
        );
        let binds = binds(&view);
        assert!(binds.contains(&(PathBuf::from("/usr"), false)));
        assert!(binds.contains(&(PathBuf::from("/etc"), false)));
        assert!(binds.contains(&(plugin.path().to_path_buf(), false)));
        assert!(view.steps.contains(&MountStep::WorkTmpfs {
            path: work.path().to_path_buf(),
            size_mb: 32,
            owner: Some(2_000_000_007),
        }));
        let writable: Vec<_> = binds
            .iter()
            .filter(|(p, w)| *w && !p.starts_with("/dev"))
            .collect();
        assert!(
            writable.is_empty(),
            "no host path is writable: {writable:?}"
        );
        for absent in ["/root", "/home", "/run", "/var", "/sys"] {
            assert!(
                !binds.iter().any(|(p, _)| p.starts_with(absent)),
                "{absent} must not be visible"
            );
        }
        assert!(view.steps.contains(&MountStep::Proc("/proc".into())));
    }

    #[test]
    fn tmp_mode_shows_no_etc() {
        let plugin = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let view = build(
            &plan(FilesystemMode::Tmp, plugin.path(), vec![]),
            work.path(),
            Some(2_000_000_007),
        );
        assert!(!binds(&view).iter().any(|(p, _)| p.starts_with("/etc")));
    }

    #[test]
    fn a_runs_hosts_file_is_bound_over_etc_hosts_after_etc_in_either_mode() {
        let plugin = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        for mode in [FilesystemMode::Readonly, FilesystemMode::Tmp] {
            let mut plan = plan(mode, plugin.path(), vec![]);
            plan.hosts_file = Some("/srv/runs/.hosts/r1".into());
            let view = build(&plan, work.path(), None);
            let bind = MountStep::BindFileAt {
                source: "/srv/runs/.hosts/r1".into(),
                target: "/etc/hosts".into(),
            };
            let at = view.steps.iter().position(|s| *s == bind).expect("bound");
            let before = &view.steps[..at];
            assert!(
                before
                    .iter()
                    .any(|s| matches!(s, MountStep::BindReadOnly { path, .. } if path == Path::new("/etc")))
                    || before.contains(&MountStep::File("/etc/hosts".into())),
                "{mode:?}: its mount point exists first: {before:?}"
            );
        }
    }

    #[test]
    fn a_private_path_inside_a_visible_tree_is_hidden_after_it_is_bound() {
        let plugin = tempfile::tempdir().unwrap();
        let secret = plugin.path().join("keys");
        std::fs::create_dir(&secret).unwrap();
        let work = tempfile::tempdir().unwrap();
        let view = build(
            &plan(
                FilesystemMode::Readonly,
                plugin.path(),
                vec![secret.clone(), "/nowhere/else".into()],
            ),
            work.path(),
            Some(2_000_000_007),
        );
        let bind_at = view
            .steps
            .iter()
            .position(
                |s| matches!(s, MountStep::BindReadOnly { path, .. } if path == plugin.path()),
            )
            .unwrap();
        let hide_at = view
            .steps
            .iter()
            .position(|s| *s == MountStep::Hide(secret.clone()))
            .unwrap();
        assert!(hide_at > bind_at);
        assert!(!view
            .steps
            .contains(&MountStep::Hide("/nowhere/else".into())));
    }

    #[test]
    fn every_mount_point_has_its_parents_made_first() {
        let plugin = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let view = build(
            &plan(FilesystemMode::Readonly, plugin.path(), vec![]),
            work.path(),
            Some(2_000_000_007),
        );
        let mut made: BTreeSet<PathBuf> = BTreeSet::new();
        for step in &view.steps {
            let target = match step {
                MountStep::Dir(p) => {
                    assert!(
                        p.parent()
                            .is_none_or(|q| q == Path::new("/") || made.contains(q)),
                        "{p:?}"
                    );
                    made.insert(p.clone());
                    continue;
                }
                MountStep::File(p)
                | MountStep::Symlink { link: p, .. }
                | MountStep::BindFileAt { target: p, .. } => p.parent().unwrap().to_path_buf(),
                MountStep::BindReadOnly { path, .. } | MountStep::BindWritable { path } => {
                    if path.is_dir() {
                        path.clone()
                    } else {
                        continue;
                    }
                }
                MountStep::Tmpfs { path, .. }
                | MountStep::WorkTmpfs { path, .. }
                | MountStep::Proc(path)
                | MountStep::DevTmpfs(path) => path.clone(),
                MountStep::Device { path, .. } => path.parent().unwrap().to_path_buf(),
                // Hidden paths exist through the bind they are inside.
                MountStep::Hide(_) => continue,
            };
            assert!(
                target == Path::new("/") || made.contains(&target),
                "{target:?} used before it was made"
            );
        }
    }
}
