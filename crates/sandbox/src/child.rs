//! The child side of the sandbox: everything prepared in the parent, then
//! applied between `clone` and `exec` with raw syscalls only.
//!
//! No copy of the supervisor is made. One `clone(CLONE_VM | CLONE_NEWPID |
//! CLONE_NEWNS)` starts PID 1 of a new PID namespace in the supervisor's own
//! memory, on a stack of its own: it enters the shared empty network
//! namespace, builds the mount view and starts the plugin with `CLONE_VM |
//! CLONE_VFORK`, as `posix_spawn` does, which sets limits, identity and the
//! seccomp filter and executes the verified file. The init then reaps every
//! process of the namespace; when the plugin ends it sends the plugin's wait
//! status and the summed resource usage on the report pipe and exits, and the
//! kernel kills everything left in the namespace: `setsid` and double forks
//! included. Both carry `PR_SET_PDEATHSIG = SIGKILL`, tied to the
//! supervisor's long-lived spawner thread.
//!
//! Copying the supervisor three times (fork, fork, fork) was most of a run's
//! start-up cost, and the copies stayed alive for the whole run, so every page
//! the supervisor wrote meanwhile was copied again.
//!
//! Nothing here allocates, locks or logs: the strings, the mount plan and the
//! seccomp program are all built before the clone.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;

use super::seccomp::SeccompProgram;
use super::{Host, Layer, MountStep, SandboxPlan};
use secflow_manifest::NetworkGrant;

/// The empty directory under `work_root` on which every run's init mounts
/// the tmpfs its view is built in. One for all runs: each mounts it in its own
/// mount namespace, so runs never see each other's, and no run pays for a
/// directory of its own to create and remove (on ext4 each cost about 0.3 ms
/// a run here). It is not a run's leftover.
pub const VIEW_MOUNT_POINT: &str = ".view";

/// Where a run's work dir lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkDirIn {
    /// A tmpfs of its own in the run's mount namespace (`MountStep::WorkTmpfs`):
    /// nothing is made on the host, and it vanishes with the namespace.
    Namespace,
    /// A directory under `work_root` (a run without a mount namespace).
    Host,
}

impl WorkDirIn {
    /// Where a run with these applied layers keeps its work dir.
    pub fn for_layers(applied: &[Layer]) -> WorkDirIn {
        if applied.contains(&Layer::MountNamespace) {
            WorkDirIn::Namespace
        } else {
            WorkDirIn::Host
        }
    }
}

/// A run's directories: its private, writable work dir
/// `<work_root>/<run_id>` (a path in its view, and on the host only when
/// `on_host`), and the shared mount point its view is built on.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub work: PathBuf,
    pub root: PathBuf,
    pub on_host: bool,
}

/// Makes what a run's directories need: the shared mount point, and with
/// [`WorkDirIn::Host`] the work dir itself, owned by the plugin's uid/gid.
pub fn create_run_dir(
    work_root: &Path,
    run_id: &str,
    owner: Option<(u32, u32)>,
    place: WorkDirIn,
) -> io::Result<RunDir> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(work_root)?;
    // Canonical, so the paths the plugin is told are the ones its view shows.
    let work_root = work_root.canonicalize()?;
    let root = work_root.join(VIEW_MOUNT_POINT);
    match std::fs::DirBuilder::new().mode(0o700).create(&root) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    let work = work_root.join(run_id);
    let on_host = place == WorkDirIn::Host;
    if on_host {
        std::fs::DirBuilder::new().mode(0o700).create(&work)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&work, Some(uid), Some(gid))?;
        }
    }
    Ok(RunDir {
        work,
        root,
        on_host,
    })
}

/// Removes a run's work dir on the host and everything the plugin left in it
/// (a work dir in the run's namespace went with it).
pub fn remove_run_dir(run: &RunDir) -> io::Result<()> {
    if !run.on_host {
        return Ok(());
    }
    match std::fs::remove_dir_all(&run.work) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Setup steps, named in the error a failed setup reports.
const STEPS: &[&str] = &[
    "start its own process group",
    "enter the network namespace",
    "arrange file descriptors",
    "start the plugin",
    "make mounts private",
    "mount the root tmpfs",
    "build the filesystem view",
    "pivot_root",
    "set resource limits",
    "drop capabilities",
    "switch uid and gid",
    "set no_new_privs",
    "enforce the Landlock scope",
    "load the seccomp filter",
    "execute the plugin",
];
const STEP_GROUP: u8 = 0;
const STEP_NETNS: u8 = 1;
const STEP_FDS: u8 = 2;
const STEP_FORK: u8 = 3;
const STEP_PRIVATE: u8 = 4;
const STEP_ROOT: u8 = 5;
const STEP_VIEW: u8 = 6;
const STEP_PIVOT: u8 = 7;
const STEP_RLIMITS: u8 = 8;
const STEP_CAPS: u8 = 9;
const STEP_UID: u8 = 10;
const STEP_NNP: u8 = 11;
const STEP_SCOPE: u8 = 12;
const STEP_SECCOMP: u8 = 13;
const STEP_EXEC: u8 = 14;

enum Step {
    Dir(CString),
    File(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Bind {
        source: CString,
        target: CString,
        remount: libc::c_ulong,
    },
    Tmpfs {
        target: CString,
        data: CString,
        flags: libc::c_ulong,
    },
    Hide(CString),
    Proc(CString),
    Device {
        path: CString,
        rdev: libc::dev_t,
    },
    DevTmpfs(CString),
}

/// A plan made concrete for one spawn: everything the child needs, allocated.
pub struct PreparedSandbox {
    exec: File,
    /// Interpreted files (`#!`) are run by the kernel through `/dev/fd/N`, so
    /// their descriptor must stay open across `exec`.
    keep_exec_fd_open: bool,
    argv: Vec<CString>,
    envp: Vec<CString>,
    parent_pid: libc::pid_t,
    netns: Option<RawFd>,
    /// The Landlock scope of a `network: "targets"` run (never with `netns`:
    /// its descriptor takes the same slot).
    scope: Option<Arc<secflow_egress::ScopeRuleset>>,
    pid_namespace: bool,
    mount: Option<(CString, Vec<Step>)>,
    workdir: CString,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
    ids: Option<(libc::uid_t, libc::gid_t)>,
    seccomp: Option<Arc<SeccompProgram>>,
}

impl std::fmt::Debug for PreparedSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSandbox")
            .field("argv", &self.argv)
            .field("pid_namespace", &self.pid_namespace)
            .field("netns", &self.netns)
            .field("scope", &self.scope.is_some())
            .field("mount_steps", &self.mount.as_ref().map(|m| m.1.len()))
            .field("ids", &self.ids)
            .field("seccomp", &self.seccomp.as_ref().map(|s| s.len()))
            .finish()
    }
}

fn cstring(bytes: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a path or value contains a NUL byte",
        )
    })
}

fn under(root: &Path, path: &Path) -> io::Result<CString> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    cstring(root.join(relative).as_os_str().as_bytes())
}

impl SandboxPlan {
    /// Parent-side preparation of the layers in `applied`. `exec` is the
    /// verified, open entrypoint; `uid` the run's leased uid (gid alike).
    pub fn prepare(
        &self,
        host: &Host,
        applied: &[Layer],
        exec: File,
        entrypoint: &Path,
        run: &RunDir,
        uid: Option<u32>,
    ) -> io::Result<PreparedSandbox> {
        let has = |layer| applied.contains(&layer);
        if self.network == NetworkGrant::Targets && !has(Layer::Egress) && host.netns_fd().is_none()
        {
            // Left without its egress layer, a "targets" run gets no network;
            // without the empty namespace either it would get the host's.
            return Err(io::Error::other(
                "a network \"targets\" run without the egress layer needs the empty network namespace, which this host lacks",
            ));
        }
        let mut magic = [0u8; 2];
        let is_script = {
            use std::os::unix::fs::FileExt;
            exec.read_at(&mut magic, 0)? == 2 && magic == *b"#!"
        };
        let envp = super::plugin_environment(self, &run.work)
            .into_iter()
            .map(|(k, v)| cstring(format!("{k}={v}")))
            .collect::<io::Result<Vec<_>>>()?;
        let mount = if has(Layer::MountNamespace) {
            let view = self.view(&run.work, uid);
            let steps = view
                .steps
                .iter()
                .map(|step| prepare_step(step, &run.root))
                .collect::<io::Result<Vec<_>>>()?;
            Some((cstring(run.root.as_os_str().as_bytes())?, steps))
        } else {
            None
        };
        let l = &self.limits;
        let mib = |n: u64| n.saturating_mul(1 << 20);
        let mut rlimits = vec![(libc::RLIMIT_CORE, 0, 0)];
        if has(Layer::Rlimits) {
            rlimits.extend([
                (libc::RLIMIT_NOFILE, l.max_open_files, l.max_open_files),
                (libc::RLIMIT_NPROC, l.max_processes, l.max_processes),
                (libc::RLIMIT_CPU, l.cpu_seconds, l.cpu_seconds + 1),
                (libc::RLIMIT_DATA, mib(l.memory_mb), mib(l.memory_mb)),
                (
                    libc::RLIMIT_FSIZE,
                    mib(l.max_output_mb),
                    mib(l.max_output_mb),
                ),
            ]);
        }
        Ok(PreparedSandbox {
            exec,
            keep_exec_fd_open: is_script,
            argv: vec![cstring(entrypoint.as_os_str().as_bytes())?],
            envp,
            // SAFETY: getpid has no preconditions.
            parent_pid: unsafe { libc::getpid() },
            // A "targets" run whose egress layer was left out (allowed by
            // `allow_degraded`) gets no network rather than all of it.
            netns: if has(Layer::NetworkNamespace)
                || (self.network == NetworkGrant::Targets && !has(Layer::Egress))
            {
                host.netns_fd()
            } else {
                None
            },
            scope: if has(Layer::Egress) {
                host.egress_scope()
            } else {
                None
            },
            pid_namespace: has(Layer::PidNamespace),
            mount,
            workdir: cstring(run.work.as_os_str().as_bytes())?,
            rlimits,
            ids: if has(Layer::Uid) {
                uid.map(|u| (u, u))
            } else {
                None
            },
            seccomp: if has(Layer::Seccomp) {
                host.seccomp()
            } else {
                None
            },
        })
    }
}

fn prepare_step(step: &MountStep, root: &Path) -> io::Result<Step> {
    const RO: libc::c_ulong = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    Ok(match step {
        MountStep::Dir(p) => Step::Dir(under(root, p)?),
        MountStep::File(p) => Step::File(under(root, p)?),
        MountStep::Symlink { target, link } => Step::Symlink {
            target: cstring(target.as_os_str().as_bytes())?,
            link: under(root, link)?,
        },
        MountStep::BindReadOnly { path, exec } => Step::Bind {
            source: cstring(path.as_os_str().as_bytes())?,
            target: under(root, path)?,
            remount: if *exec { RO } else { RO | libc::MS_NOEXEC },
        },
        MountStep::BindFileAt { source, target } => Step::Bind {
            source: cstring(source.as_os_str().as_bytes())?,
            target: under(root, target)?,
            remount: RO | libc::MS_NOEXEC,
        },
        MountStep::BindWritable { path } => Step::Bind {
            source: cstring(path.as_os_str().as_bytes())?,
            target: under(root, path)?,
            // Device nodes keep working; nothing writable is executable.
            remount: libc::MS_NOSUID | libc::MS_NOEXEC,
        },
        MountStep::Tmpfs {
            path,
            size_mb,
            mode,
        } => Step::Tmpfs {
            target: under(root, path)?,
            data: cstring(format!("size={size_mb}m,mode={mode:o}"))?,
            flags: libc::MS_NOSUID | libc::MS_NODEV,
        },
        MountStep::WorkTmpfs {
            path,
            size_mb,
            owner,
        } => Step::Tmpfs {
            target: under(root, path)?,
            // Writable, so nothing in it is executable.
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: cstring(match owner {
                Some(id) => format!("size={size_mb}m,mode=700,uid={id},gid={id}"),
                None => format!("size={size_mb}m,mode=700"),
            })?,
        },
        MountStep::Hide(p) => Step::Hide(under(root, p)?),
        MountStep::Proc(p) => Step::Proc(under(root, p)?),
        MountStep::Device { path, rdev } => Step::Device {
            path: under(root, path)?,
            rdev: *rdev as libc::dev_t,
        },
        MountStep::DevTmpfs(p) => Step::DevTmpfs(under(root, p)?),
    })
}

/// A failed setup step and its errno.
struct Failed(u8);

/// The child ends of the plugin's standard streams, made by the caller.
#[derive(Debug)]
pub struct ChildStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Why a launch failed: the setup step (when the child got that far) and the
/// error.
#[derive(Debug)]
pub struct LaunchError {
    pub step: Option<&'static str>,
    pub error: io::Error,
}

impl LaunchError {
    fn parent(error: io::Error) -> Self {
        LaunchError { step: None, error }
    }

    fn child(step: u32, errno: i32) -> Self {
        LaunchError {
            step: Some(STEPS.get(step as usize).copied().unwrap_or("set up")),
            error: io::Error::from_raw_os_error(errno),
        }
    }
}

/// A launched sandbox. With a PID namespace `pid` is the namespace's init,
/// which reports on `reports` (see [`read_setup_report`], then
/// [`read_exit_report`]); without one it is the plugin.
///
/// Dropping it kills the process and waits for it: the children run on and
/// read [`ChildMemory`], which must not be freed under them. An owner that
/// reaps the process itself takes it over with [`Launched::into_parts`].
#[derive(Debug)]
pub struct Launched {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    pub reports: Option<OwnedFd>,
    pub memory: ChildMemory,
}

impl Launched {
    /// Hands the process to an owner that promises to reap it before it drops
    /// the memory: `(pid, pidfd, reports, memory)`.
    pub fn into_parts(self) -> (libc::pid_t, OwnedFd, Option<OwnedFd>, ChildMemory) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: each field is moved out exactly once from a value whose own
        // drop never runs (ManuallyDrop), so nothing is dropped twice.
        unsafe {
            (
                this.pid,
                std::ptr::read(&this.pidfd),
                std::ptr::read(&this.reports),
                std::ptr::read(&this.memory),
            )
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // SAFETY: our own unreaped child, signalled through its pidfd and then
        // waited for; only after that is its memory (a later field) unmapped.
        unsafe {
            pidfd_kill(&self.pidfd);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// What the cloned children use of the supervisor's memory (`CLONE_VM`): their
/// stacks and the prepared sandbox they read while setting up. Freed only once
/// the process that uses it has been reaped.
#[derive(Debug)]
pub struct ChildMemory {
    // Only owned, never read here: the children use them.
    _stacks: ChildStacks,
    _args: Box<ChildArgs>,
}

/// How the plugin ended, as the namespace's init saw it: the wait status and
/// the resource usage of the plugin and every process the init reaped.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct ExitReport {
    pub status: libc::c_int,
    pub cpu_us: u64,
    pub maxrss_kib: u64,
    /// Processes other than the plugin that the init reaped dead of SIGSYS:
    /// orphans of the plugin killed by the seccomp filter. (A child the
    /// plugin reaps itself is seen by nothing outside the kernel's audit log.)
    pub seccomp_kills: u32,
}

/// The first message on the report pipe: setup done (`step == SETUP_DONE`), or
/// the step that failed and its errno.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct SetupReport {
    step: u32,
    errno: i32,
}

const SETUP_DONE: u32 = u32::MAX;

/// Stacks for the two cloned children. They share the supervisor's memory
/// (`CLONE_VM`), so nothing is copied at spawn; each gets its own stack here,
/// below a guard page.
#[derive(Debug)]
struct ChildStacks {
    base: *mut libc::c_void,
}

// SAFETY: the mapping is plain memory owned by this value, never accessed
// through it; moving or sharing the owner between threads does not affect the
// processes running on it.
unsafe impl Send for ChildStacks {}
// SAFETY: as above: `&ChildStacks` only yields addresses.
unsafe impl Sync for ChildStacks {}

const STACK_SIZE: usize = 128 * 1024;
const GUARD_SIZE: usize = 4096;
/// Two stacks, each above its guard page.
const STACKS_LEN: usize = 2 * (GUARD_SIZE + STACK_SIZE);

impl ChildStacks {
    fn new() -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACKS_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stacks = ChildStacks { base };
        for guard in [0, GUARD_SIZE + STACK_SIZE] {
            // SAFETY: the guard pages lie inside the mapping made above.
            if unsafe { libc::mprotect(base.cast::<u8>().add(guard).cast(), GUARD_SIZE, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(stacks)
    }

    /// The top (stacks grow down) of stack `n` (0 or 1), 16-byte aligned.
    fn top(&self, n: usize) -> *mut libc::c_void {
        let end = (n + 1) * (GUARD_SIZE + STACK_SIZE);
        // SAFETY: `end` is at most the mapping's length.
        unsafe { self.base.cast::<u8>().add(end).cast() }
    }
}

impl Drop for ChildStacks {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the owner drops it
        // only once no child runs on it (see `Launched::stacks`).
        unsafe { libc::munmap(self.base, STACKS_LEN) };
    }
}

/// What the cloned children read: the prepared plan and the descriptors, on
/// the heap they share with the supervisor, owned by [`ChildMemory`].
struct ChildArgs {
    sandbox: PreparedSandbox,
    stdio: [RawFd; 3],
    report: RawFd,
    /// The top of the plugin child's stack (an address in the `ChildStacks`
    /// owned beside these args; kept as a number, only the init uses it).
    plugin_stack: usize,
    /// Written by the plugin child before it exits on a failed setup (the
    /// init, suspended by `CLONE_VFORK`, reads it after).
    failed_step: AtomicU32,
    failed_errno: AtomicI32,
}

/// Descriptor numbers in the init after `arrange_fds`.
const FD_EXEC: RawFd = 3;
const FD_REPORT: RawFd = 4;
const FD_NETNS: RawFd = 5;

impl std::fmt::Debug for ChildArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildArgs")
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

impl PreparedSandbox {
    /// Starts the plugin under this sandbox. Call from one long-lived thread
    /// that blocks every signal (the children inherit the mask, and the death
    /// signal is tied to this thread).
    ///
    /// With a PID namespace, one `clone(CLONE_VM | CLONE_NEWPID | …)` makes the
    /// namespace's init in the supervisor's own memory — no page tables are
    /// copied — which enters the network namespace, builds the mount view and
    /// starts the plugin with `CLONE_VM | CLONE_VFORK`, as `posix_spawn` does.
    /// This returns as soon as the init exists: the caller can write the
    /// plugin's first request while the init sets up, and learns how the setup
    /// went from [`read_setup_report`] (a failed step ends the init, so the
    /// plugin's stdout closes unanswered). Waiting here instead would put two
    /// more thread wake-ups on every run's path, each a scheduler slice on a
    /// loaded host.
    ///
    /// Without a PID namespace, the vfork-style child is made here directly and
    /// a failed setup is returned.
    pub fn launch(self, stdio: ChildStdio) -> Result<Launched, LaunchError> {
        let stacks = ChildStacks::new().map_err(LaunchError::parent)?;
        let mut pipe = [0; 2];
        // SAFETY: pipe2 fills two fds into the array we own.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(LaunchError::parent(io::Error::last_os_error()));
        }
        // SAFETY: both fds are fresh and owned by nothing else.
        let (report_read, report_write) =
            unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        let pid_namespace = self.pid_namespace;
        let args = Box::new(ChildArgs {
            sandbox: self,
            stdio: [
                stdio.stdin.as_raw_fd(),
                stdio.stdout.as_raw_fd(),
                stdio.stderr.as_raw_fd(),
            ],
            report: report_write.as_raw_fd(),
            plugin_stack: stacks.top(0) as usize,
            failed_step: AtomicU32::new(SETUP_DONE),
            failed_errno: AtomicI32::new(0),
        });
        let mut flags = libc::CLONE_VM | libc::CLONE_PIDFD | libc::SIGCHLD;
        if args.sandbox.mount.is_some() {
            flags |= libc::CLONE_NEWNS;
        }
        let entry: extern "C" fn(*mut libc::c_void) -> libc::c_int = if pid_namespace {
            flags |= libc::CLONE_NEWPID;
            init_main
        } else {
            flags |= libc::CLONE_VFORK;
            direct_main
        };
        let mut pidfd: libc::c_int = -1;
        let stack = if pid_namespace {
            stacks.top(1)
        } else {
            stacks.top(0)
        };
        // SAFETY: the child runs `entry` on its own stack inside our memory; it
        // only reads `args` (boxed, and owned with the stacks by the returned
        // `Launched`, which frees neither before the child is reaped) and makes
        // raw syscalls. glibc stores the pidfd through the parent-tid pointer.
        let pid = unsafe {
            libc::clone(
                entry,
                stack,
                flags,
                (&*args as *const ChildArgs).cast_mut().cast(),
                &mut pidfd as *mut libc::c_int,
            )
        };
        if pid < 0 {
            return Err(LaunchError::parent(io::Error::last_os_error()));
        }
        // SAFETY: CLONE_PIDFD gave us a fresh descriptor for the child.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        // The children have their own copies of these descriptors.
        drop(report_write);
        drop(stdio);
        // CLONE_VFORK: the direct child has executed or exited by now.
        let failed_step = args.failed_step.load(Ordering::Acquire);
        let failure = (!pid_namespace && failed_step != SETUP_DONE)
            .then(|| LaunchError::child(failed_step, args.failed_errno.load(Ordering::Acquire)));
        let launched = Launched {
            pid,
            pidfd,
            reports: pid_namespace.then_some(report_read),
            memory: ChildMemory {
                _stacks: stacks,
                _args: args,
            },
        };
        match failure {
            // Dropping `launched` reaps the child, which has exited.
            Some(failure) => Err(failure),
            None => Ok(launched),
        }
    }

    /// In the init or the direct child: put the descriptors the children need at
    /// fixed numbers and close every other one the supervisor had open.
    fn arrange_fds(&self, args: &ChildArgs) -> Result<(), Failed> {
        let exec = self.exec.as_raw_fd();
        let netns = self
            .netns
            .or(self.scope.as_ref().map(|s| s.raw_fd()))
            .unwrap_or(-1);
        let wanted = [
            args.stdio[0],
            args.stdio[1],
            args.stdio[2],
            exec,
            args.report,
            netns,
        ];
        let above = wanted.iter().copied().max().unwrap_or(0).max(FD_NETNS) + 1;
        let mut moved = [-1; 6];
        for (slot, &fd) in moved.iter_mut().zip(&wanted) {
            if fd >= 0 {
                // SAFETY: duplicating a descriptor this process holds.
                *slot = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
                if *slot < 0 {
                    return Err(Failed(STEP_FDS));
                }
            }
        }
        let exec_flags = if self.keep_exec_fd_open {
            0
        } else {
            libc::O_CLOEXEC
        };
        let targets = [
            (0, 0),
            (1, 0),
            (2, 0),
            (FD_EXEC, exec_flags),
            (FD_REPORT, libc::O_CLOEXEC),
            (FD_NETNS, libc::O_CLOEXEC),
        ];
        for (&from, &(to, flags)) in moved.iter().zip(&targets) {
            // SAFETY: dup3 onto a fixed number in this process's own table.
            if from >= 0 && unsafe { libc::dup3(from, to, flags) } < 0 {
                return Err(Failed(STEP_FDS));
            }
        }
        let first_free = if netns >= 0 { FD_NETNS + 1 } else { FD_NETNS };
        // SAFETY: closes descriptors of this process only (the table is a copy).
        check(STEP_FDS, || unsafe {
            libc::close_range(first_free as libc::c_uint, libc::c_uint::MAX, 0)
        })
    }

    /// Network namespace, mount view and working directory: the parts every
    /// process of the run shares.
    fn enter_namespaces(&self) -> Result<(), Failed> {
        if self.netns.is_some() {
            // SAFETY: setns on the namespace fd arranged at FD_NETNS, then close it.
            check(STEP_NETNS, || unsafe {
                libc::setns(FD_NETNS, libc::CLONE_NEWNET)
            })?;
            // SAFETY: closing our own descriptor.
            unsafe { libc::close(FD_NETNS) };
        }
        if let Some((root, steps)) = &self.mount {
            // SAFETY: mount calls in our private mount namespace, on prepared strings.
            unsafe {
                check(STEP_PRIVATE, || {
                    libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    )
                })?;
                check(STEP_ROOT, || {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        root.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        c"size=1m,nr_inodes=4096,mode=755".as_ptr().cast(),
                    )
                })?;
                // Device nodes and mount points get exactly the modes asked for.
                let umask = libc::umask(0);
                for step in steps {
                    check(STEP_VIEW, || apply_step(step))?;
                }
                libc::umask(umask);
                check(STEP_PIVOT, || libc::chdir(root.as_ptr()))?;
                check(STEP_PIVOT, || {
                    libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int
                })?;
                check(STEP_PIVOT, || {
                    libc::umount2(c".".as_ptr(), libc::MNT_DETACH)
                })?;
                check(STEP_PIVOT, || {
                    libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REMOUNT
                            | libc::MS_BIND
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | libc::MS_NODEV,
                        std::ptr::null(),
                    )
                })?;
            }
        }
        // SAFETY: chdir to a prepared path.
        check(STEP_PIVOT, || unsafe { libc::chdir(self.workdir.as_ptr()) })
    }

    /// The plugin process: limits, identity, signals, filter, exec. Returns
    /// only on failure.
    fn become_plugin(&self) -> Failed {
        match self.try_become_plugin() {
            Ok(never) => match never {},
            Err(failed) => failed,
        }
    }

    fn try_become_plugin(&self) -> Result<std::convert::Infallible, Failed> {
        for &(resource, soft, hard) in &self.rlimits {
            set_rlimit(resource, soft, hard).map_err(|()| Failed(STEP_RLIMITS))?;
        }
        if let Some((uid, gid)) = self.ids {
            // SAFETY: capability and identity changes on this process only.
            unsafe {
                for cap in 0..64 {
                    // Past the last capability the kernel answers EINVAL: done.
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                        if *libc::__errno_location() == libc::EINVAL {
                            break;
                        }
                        return Err(Failed(STEP_CAPS));
                    }
                }
                check(STEP_CAPS, || {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_CLEAR_ALL,
                        0,
                        0,
                        0,
                    )
                })?;
                check(STEP_UID, || libc::setgroups(1, &gid))?;
                check(STEP_UID, || libc::setresgid(gid, gid, gid))?;
                check(STEP_UID, || libc::setresuid(uid, uid, uid))?;
            }
        }
        // SAFETY: prctl on this process only.
        check(STEP_NNP, || unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        })?;
        if self.scope.is_some() {
            // The ruleset sits at FD_NETNS (arranged by the init); one syscall.
            check(STEP_SCOPE, || {
                secflow_egress::restrict_self(FD_NETNS) as libc::c_int
            })?;
            // SAFETY: closing our own descriptor (a copy of the init's table).
            unsafe { libc::close(FD_NETNS) };
        }
        let argv: [*const libc::c_char; 2] = [self.argv[0].as_ptr(), std::ptr::null()];
        // The env pointer array is built on the stack: no allocation after clone.
        const MAX_ENV: usize = 16;
        let mut envp: [*const libc::c_char; MAX_ENV + 1] = [std::ptr::null(); MAX_ENV + 1];
        for (slot, var) in envp.iter_mut().zip(self.envp.iter().take(MAX_ENV)) {
            *slot = var.as_ptr();
        }
        // SAFETY: signal dispositions and mask of this process only (no
        // CLONE_SIGHAND: the table is a copy).
        unsafe { default_signals() };
        // Loaded last: from here on only execveat runs under the filter.
        if let Some(program) = &self.seccomp {
            let fprog = program.as_fprog();
            // SAFETY: fprog points into the program, which outlives this call.
            check(STEP_SECCOMP, || unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &fprog as *const libc::sock_fprog,
                ) as libc::c_int
            })?;
        }
        // SAFETY: argv and envp are NULL-terminated arrays of pointers into CStrings
        // that outlive this call; AT_EMPTY_PATH with "" executes FD_EXEC itself.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                FD_EXEC,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        Err(Failed(STEP_EXEC))
    }
}

/// Runs a syscall wrapper; a negative result is the failure of `step`.
fn check(step: u8, call: impl FnOnce() -> libc::c_int) -> Result<(), Failed> {
    if call() < 0 {
        Err(Failed(step))
    } else {
        Ok(())
    }
}

fn set_rlimit(
    resource: libc::__rlimit_resource_t,
    soft: libc::rlim_t,
    hard: libc::rlim_t,
) -> Result<(), ()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit with a valid struct on the stack.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        Err(())
    } else {
        Ok(())
    }
}

/// One view step inside the new root.
///
/// # Safety
///
/// Child-only: raw mount/mkdir/symlink syscalls on prepared C strings.
unsafe fn apply_step(step: &Step) -> libc::c_int {
    const NONE: *const libc::c_char = std::ptr::null();
    // SAFETY: every pointer is a prepared C string or null, as the calls allow.
    unsafe {
        match step {
            Step::Dir(path) => {
                if libc::mkdir(path.as_ptr(), 0o755) != 0
                    && *libc::__errno_location() != libc::EEXIST
                {
                    return -1;
                }
                0
            }
            Step::File(path) => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 {
                    return -1;
                }
                libc::close(fd);
                0
            }
            Step::Symlink { target, link } => libc::symlink(target.as_ptr(), link.as_ptr()),
            Step::Bind {
                source,
                target,
                remount,
            } => {
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    NONE,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return -1;
                }
                libc::mount(
                    NONE,
                    target.as_ptr(),
                    NONE,
                    libc::MS_REMOUNT | libc::MS_BIND | remount,
                    std::ptr::null(),
                )
            }
            Step::Tmpfs {
                target,
                data,
                flags,
            } => libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                *flags,
                data.as_ptr().cast(),
            ),
            Step::Hide(target) => libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=4k,mode=0".as_ptr().cast(),
            ),
            Step::Device { path, rdev } => libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, *rdev),
            Step::DevTmpfs(target) => libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"size=64k,nr_inodes=64,mode=755".as_ptr().cast(),
            ),
            Step::Proc(target) => libc::mount(
                c"proc".as_ptr(),
                target.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ),
        }
    }
}

/// This thread's errno. A `CLONE_VM` child shares its creator's thread
/// pointer, so this is the creator's slot. For the plugin child that is safe:
/// its creator, the init, is suspended by `CLONE_VFORK`. The init shares the
/// spawner thread's slot while the spawner goes on launching other runs; an
/// init fails a syscall (and reads errno) only on a setup failure, so at worst
/// the errno a setup failure reports, or one a concurrent launch reports, is
/// the other's. This is why launches stay on the spawner thread rather than
/// on runtime workers, whose I/O reads errno all the time.
fn errno() -> i32 {
    // SAFETY: reading the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Restores default dispositions for every handled or ignored signal (exec
/// keeps ignored ones; handlers are the supervisor's code) and unblocks all,
/// as `posix_spawn` does.
///
/// # Safety
///
/// Child-only: changes this process's signal table, which is a copy.
unsafe fn default_signals() {
    // SAFETY: sigaction/sigprocmask with stack structures on this process.
    unsafe {
        for signal in 1..libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
            {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Entry of the vfork-style child when there is no PID namespace: it is the
/// plugin. A failure is left in `args` for the suspended parent.
extern "C" fn direct_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive while the parent is
    // suspended by CLONE_VFORK.
    let args = unsafe { &*(arg as *const ChildArgs) };
    let sandbox = &args.sandbox;
    // SAFETY: prctl/getppid on this process only. The parent may have died
    // before the death signal was armed: then getppid names another process.
    let orphaned = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::getppid() != sandbox.parent_pid
    };
    if orphaned {
        // SAFETY: ends this process.
        unsafe { libc::_exit(127) }
    }
    let Failed(step) = match sandbox
        .arrange_fds(args)
        .and_then(|()| {
            // SAFETY: setpgid on this process: its own group, for kill(-pgid).
            check(STEP_GROUP, || unsafe { libc::setpgid(0, 0) })
        })
        .and_then(|()| sandbox.enter_namespaces())
    {
        Ok(()) => sandbox.become_plugin(),
        Err(failed) => failed,
    };
    args.failed_errno.store(errno(), Ordering::Release);
    args.failed_step.store(step as u32, Ordering::Release);
    // SAFETY: ends this process without running anything of the parent's.
    unsafe { libc::_exit(127) }
}

/// Entry of the plugin child made by the init (`CLONE_VM | CLONE_VFORK`).
extern "C" fn plugin_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the boxed ChildArgs, freed only after the init (and so
    // this child, which it reaps or outlives) has been reaped.
    let args = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: prctl on this process only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let Failed(step) = args.sandbox.become_plugin();
    args.failed_errno.store(errno(), Ordering::Release);
    args.failed_step.store(step as u32, Ordering::Release);
    // SAFETY: ends this process without running anything of the parent's.
    unsafe { libc::_exit(127) }
}

/// Entry of PID 1 of the run's PID namespace. It sets up what the run shares,
/// starts the plugin, reports, then reaps every process in the namespace
/// until the plugin ends, sends its end and exits — which ends every process
/// left in the namespace: `setsid` and double forks included.
extern "C" fn init_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the boxed ChildArgs, freed only after we are reaped.
    let args = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: prctl/setpgid on this process only. The death signal is tied to
    // the spawner thread, which lives as long as the supervisor: if the whole
    // supervisor died before it was armed, the report write below fails (the
    // read end is gone) and we exit.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::setpgid(0, 0);
    }
    let setup = args
        .sandbox
        .arrange_fds(args)
        .and_then(|()| args.sandbox.enter_namespaces());
    if let Err(Failed(step)) = setup {
        // SAFETY: report on the arranged descriptor (or the original one if
        // arranging failed), then end.
        unsafe {
            report_setup(FD_REPORT, step as u32, errno());
            report_setup(args.report, step as u32, errno());
            libc::_exit(0)
        }
    }
    // SAFETY: a vfork-style child on its own stack in this shared memory; we
    // are suspended until it executes or exits.
    let plugin = unsafe {
        libc::clone(
            plugin_main,
            args.plugin_stack as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        )
    };
    let (step, error) = if plugin < 0 {
        (STEP_FORK as u32, errno())
    } else {
        (
            args.failed_step.load(Ordering::Acquire),
            args.failed_errno.load(Ordering::Acquire),
        )
    };
    // The plugin has executed (or failed): `args` is no longer needed.
    // SAFETY: raw syscalls on this process; every path ends in _exit.
    unsafe {
        if !report_setup(FD_REPORT, step, error) || step != SETUP_DONE {
            libc::_exit(0);
        }
        // The plugin's streams and file are its own now.
        libc::close_range(0, FD_EXEC as libc::c_uint, 0);
        reap_until(plugin)
    }
}

/// Writes the setup report; false if the supervisor is gone.
///
/// # Safety
///
/// Child-only: a raw write.
unsafe fn report_setup(fd: RawFd, step: u32, errno: i32) -> bool {
    let report = SetupReport { step, errno };
    let size = std::mem::size_of::<SetupReport>();
    // SAFETY: writes a stack value of `size` bytes.
    unsafe { libc::write(fd, (&report as *const SetupReport).cast(), size) == size as isize }
}

/// The init's life after setup: reap everything, and when `plugin` ends,
/// report its status and the summed usage of all reaped processes, and exit.
///
/// # Safety
///
/// Child-only; never returns.
unsafe fn reap_until(plugin: libc::pid_t) -> ! {
    let mut report = ExitReport::default();
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    // SAFETY: wait4/write/_exit with stack out-pointers on this process.
    unsafe {
        loop {
            let mut status = 0;
            let mut usage: libc::rusage = std::mem::zeroed();
            let pid = libc::wait4(-1, &mut status, 0, &mut usage);
            if pid > 0 {
                report.cpu_us += micros(usage.ru_utime) + micros(usage.ru_stime);
                report.maxrss_kib = report.maxrss_kib.max(usage.ru_maxrss as u64);
                if pid != plugin
                    && libc::WIFSIGNALED(status)
                    && libc::WTERMSIG(status) == libc::SIGSYS
                {
                    report.seccomp_kills += 1;
                }
            }
            if pid == plugin {
                report.status = status;
                libc::write(
                    FD_REPORT,
                    (&report as *const ExitReport).cast(),
                    std::mem::size_of::<ExitReport>(),
                );
                libc::_exit(0);
            }
            if pid < 0 && errno() != libc::EINTR {
                libc::_exit(0);
            }
        }
    }
}

/// Reads the init's setup report: blocks until the plugin has executed or the
/// setup failed. Ok when the plugin runs; otherwise the failed step and its
/// error, or that the init ended without a report (it was killed).
pub fn read_setup_report(fd: &OwnedFd) -> Result<(), LaunchError> {
    match read_report(fd) {
        Ok(report) if report.step == SETUP_DONE => Ok(()),
        Ok(report) => Err(LaunchError::child(report.step, report.errno)),
        Err(e) => Err(LaunchError {
            step: None,
            error: io::Error::other(format!("the sandbox init ended early: {e}")),
        }),
    }
}

fn read_report(fd: &OwnedFd) -> io::Result<SetupReport> {
    let mut report = SetupReport::default();
    let size = std::mem::size_of::<SetupReport>();
    loop {
        // SAFETY: reads at most `size` bytes into a stack value of that size.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut report as *mut SetupReport).cast(),
                size,
            )
        };
        if n == size as isize {
            return Ok(report);
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return Err(if n < 0 {
            io::Error::last_os_error()
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "no setup report")
        });
    }
}

/// Reads the init's exit report, once the init has exited and its setup
/// report has been read.
pub fn read_exit_report(fd: &OwnedFd) -> Option<ExitReport> {
    let mut report = ExitReport::default();
    let size = std::mem::size_of::<ExitReport>();
    // SAFETY: reads at most `size` bytes into a stack value of that size; the
    // writer has exited, so this does not block.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut report as *mut ExitReport).cast(),
            size,
        )
    };
    (n == size as isize).then_some(report)
}

/// Sends SIGKILL through a pidfd.
///
/// # Safety
///
/// `pidfd` must be a pidfd of our own child (failure when it is gone is
/// harmless).
pub unsafe fn pidfd_kill(pidfd: &OwnedFd) {
    // SAFETY: the caller guarantees a pidfd; a null siginfo is allowed.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// A pipe, both ends close-on-exec (the children arrange their own copies).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Blocks every signal on the calling thread, as `PreparedSandbox::launch`
/// requires of its caller: the process's signals go to other threads, and
/// children cloned here start with all blocked, so no handler of the caller's
/// ever runs in them.
pub fn block_all_signals() {
    // SAFETY: a full set on the stack; pthread_sigmask on this thread only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}
