//! Where a plugin process is confined: the pure plan, and the one place that
//! applies it in the child between `fork` and `exec`.
//!
//! `plan()` turns a verified manifest and the config into a [`SandboxPlan`] without
//! touching the system. `SandboxPlan::prepare()` does the parent-side work that
//! allocates (C strings, the per-run work dir), so that
//! `PreparedSandbox::apply_in_child()` only makes raw syscalls on prepared data —
//! nothing after `fork` may allocate, lock or log.
//!
//! Applied today: a cleared environment with an allowlist, only fds 0–2 reach the
//! plugin, its own process group, a private work dir removed after the run, and
//! the executable run from the verified open file. The isolation layers of
//! docs/security.md (uid, namespaces, Landlock, limits, seccomp) attach here.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, RunLimits};
use crate::manifest::{FilesystemMode, VerifiedPlugin};

/// What a run's process is allowed, decided before anything is spawned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxPlan {
    pub network: bool,
    pub filesystem: FilesystemMode,
    pub read_paths: Vec<PathBuf>,
    pub limits: RunLimits,
    /// `PATH` as the plugin sees it.
    pub search_path: Vec<PathBuf>,
    /// Layers this build enforces for the plan, in the order applied (recorded
    /// in the run's audit event).
    pub layers: Vec<&'static str>,
}

/// Builds the plan for one run. Pure.
pub fn plan(plugin: &VerifiedPlugin, config: &Config) -> SandboxPlan {
    let spec = &plugin.manifest.sandbox;
    SandboxPlan {
        network: spec.network,
        filesystem: spec.filesystem,
        read_paths: spec.read_paths.clone(),
        limits: plugin.limits,
        search_path: config.plugins.search_path.clone(),
        layers: vec![
            "clean_env",
            "fd_hygiene",
            "process_group",
            "private_workdir",
            "exec_verified_fd",
        ],
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
    vec![
        ("PATH".into(), path),
        ("HOME".into(), workdir.clone()),
        ("TMPDIR".into(), workdir.clone()),
        ("LANG".into(), "C.UTF-8".into()),
        ("SECFLOW_WORKDIR".into(), workdir),
    ]
}

/// A plan made concrete for one spawn: everything the child needs, allocated.
#[derive(Debug)]
pub struct PreparedSandbox {
    exec: File,
    /// Interpreted files (`#!`) are run by the kernel through `/dev/fd/N`, so
    /// their descriptor must stay open across `exec`.
    keep_exec_fd_open: bool,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl SandboxPlan {
    /// Parent-side preparation. `exec` is the verified, open entrypoint.
    pub fn prepare(
        &self,
        exec: File,
        entrypoint: &Path,
        workdir: &Path,
    ) -> io::Result<PreparedSandbox> {
        let mut magic = [0u8; 2];
        let is_script = {
            use std::os::unix::fs::FileExt;
            exec.read_at(&mut magic, 0)? == 2 && magic == *b"#!"
        };
        let argv0 = CString::new(entrypoint.as_os_str().as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "entrypoint path contains a NUL byte",
            )
        })?;
        let envp = plugin_environment(self, workdir)
            .into_iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "environment value contains a NUL byte",
                )
            })?;
        Ok(PreparedSandbox {
            exec,
            keep_exec_fd_open: is_script,
            argv: vec![argv0],
            envp,
        })
    }
}

impl PreparedSandbox {
    /// Applies the plan in the forked child and executes the verified file.
    /// Returns only on failure.
    ///
    /// # Safety
    ///
    /// Must run in the child between `fork` and `exec` (a `pre_exec` closure): it
    /// only makes raw syscalls on data prepared in the parent, and replaces the
    /// process image on success.
    pub unsafe fn apply_in_child(&self) -> io::Error {
        let exec_fd: RawFd = self.exec.as_raw_fd();
        // SAFETY: close_range only changes descriptor flags of this (child) process.
        let rc = unsafe {
            libc::close_range(
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            )
        };
        if rc != 0 {
            return io::Error::last_os_error();
        }
        if self.keep_exec_fd_open {
            // SAFETY: clears FD_CLOEXEC on a descriptor this process owns.
            if unsafe { libc::fcntl(exec_fd, libc::F_SETFD, 0) } != 0 {
                return io::Error::last_os_error();
            }
        }
        let argv: [*const libc::c_char; 2] = [self.argv[0].as_ptr(), std::ptr::null()];
        // The env pointer array is built on the stack: no allocation after fork.
        const MAX_ENV: usize = 16;
        let mut envp: [*const libc::c_char; MAX_ENV + 1] = [std::ptr::null(); MAX_ENV + 1];
        for (slot, var) in envp.iter_mut().zip(self.envp.iter().take(MAX_ENV)) {
            *slot = var.as_ptr();
        }
        // SAFETY: argv and envp are NULL-terminated arrays of pointers into CStrings
        // that outlive this call; AT_EMPTY_PATH with "" executes `exec_fd` itself.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                exec_fd,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        io::Error::last_os_error()
    }
}

/// Creates a run's private work dir (mode 0700) under `root`.
pub fn create_workdir(root: &Path, run_id: &str) -> io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)?;
    let dir = root.join(run_id);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// Removes a run's work dir and everything the plugin left in it.
pub fn remove_workdir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
