//! The child side of the sandbox: everything prepared in the parent, then
//! applied between `fork` and `exec` with raw syscalls only.
//!
//! The process std forks (the "keeper") enters the network namespace,
//! unshares the PID and mount namespaces and forks a minimal init, PID 1 of the
//! new PID namespace, which forks the plugin. When the plugin ends, the init
//! hands its wait status to the keeper and exits, and the kernel kills
//! everything else in the namespace: `setsid` and double forks included. The
//! keeper ends the same way as the plugin (same exit code, or the same signal
//! re-raised), so the runner's pidfd, `wait4` and resource usage describe the
//! plugin. All three carry `PR_SET_PDEATHSIG = SIGKILL`, so they die with the
//! supervisor's spawner thread, which lives as long as the supervisor.
//!
//! Nothing here allocates, locks or logs: the strings, the mount plan and the
//! seccomp program are all built before the fork.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::seccomp::SeccompProgram;
use super::{Host, Layer, MountStep, SandboxPlan};

/// A run's directory: `<work_root>/<run_id>/` holding the plugin's writable
/// `work/` and the empty `root/` on which its view is built.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
    pub work: PathBuf,
    pub root: PathBuf,
}

/// Creates a run's directory; `work/` is owned by the plugin's uid/gid.
pub fn create_run_dir(
    work_root: &Path,
    run_id: &str,
    owner: Option<(u32, u32)>,
) -> io::Result<RunDir> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(work_root)?;
    // Canonical, so the paths the plugin is told are the ones its view shows.
    let dir = work_root.canonicalize()?.join(run_id);
    std::fs::DirBuilder::new().mode(0o711).create(&dir)?;
    let work = dir.join("work");
    let root = dir.join("root");
    std::fs::DirBuilder::new().mode(0o700).create(&work)?;
    std::fs::DirBuilder::new().mode(0o700).create(&root)?;
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&work, Some(uid), Some(gid))?;
    }
    Ok(RunDir { dir, work, root })
}

/// Removes a run's directory and everything the plugin left in it.
pub fn remove_run_dir(run: &RunDir) -> io::Result<()> {
    match std::fs::remove_dir_all(&run.dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Setup steps, named in the error a failed setup reports.
const STEPS: &[&str] = &[
    "parent check",
    "enter the network namespace",
    "unshare the pid and mount namespaces",
    "fork the plugin",
    "make mounts private",
    "mount the root tmpfs",
    "build the filesystem view",
    "pivot_root",
    "set resource limits",
    "drop capabilities",
    "switch uid and gid",
    "set no_new_privs",
    "close file descriptors",
    "load the seccomp filter",
    "execute the plugin",
];
const STEP_PARENT: u8 = 0;
const STEP_NETNS: u8 = 1;
const STEP_UNSHARE: u8 = 2;
const STEP_FORK: u8 = 3;
const STEP_PRIVATE: u8 = 4;
const STEP_ROOT: u8 = 5;
const STEP_VIEW: u8 = 6;
const STEP_PIVOT: u8 = 7;
const STEP_RLIMITS: u8 = 8;
const STEP_CAPS: u8 = 9;
const STEP_UID: u8 = 10;
const STEP_NNP: u8 = 11;
const STEP_FDS: u8 = 12;
const STEP_SECCOMP: u8 = 13;
const STEP_EXEC: u8 = 14;

/// The read end of the pipe a failing child names its failed step on.
#[derive(Debug)]
pub struct SetupReport {
    read: OwnedFd,
}

impl SetupReport {
    /// The step that failed, if the child said.
    pub fn failed_step(&self) -> Option<&'static str> {
        let mut byte = 0u8;
        // SAFETY: non-blocking one-byte read into a stack byte from our own fd.
        let n = unsafe { libc::read(self.read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        (n == 1).then(|| STEPS.get(byte as usize).copied().unwrap_or("setup"))
    }
}

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
    pid_namespace: bool,
    mount: Option<(CString, Vec<Step>)>,
    workdir: CString,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
    ids: Option<(libc::uid_t, libc::gid_t)>,
    seccomp: Option<Arc<SeccompProgram>>,
    report: OwnedFd,
}

impl std::fmt::Debug for PreparedSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSandbox")
            .field("argv", &self.argv)
            .field("pid_namespace", &self.pid_namespace)
            .field("netns", &self.netns)
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
    ) -> io::Result<(PreparedSandbox, SetupReport)> {
        let has = |layer| applied.contains(&layer);
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
            let view = self.view(&run.work);
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
        let mut pipe = [0; 2];
        // SAFETY: pipe2 fills two fds into the array we own.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds are fresh and owned by nothing else.
        let (read, write) =
            unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        let prepared = PreparedSandbox {
            exec,
            keep_exec_fd_open: is_script,
            argv: vec![cstring(entrypoint.as_os_str().as_bytes())?],
            envp,
            // SAFETY: getpid has no preconditions.
            parent_pid: unsafe { libc::getpid() },
            netns: if has(Layer::NetworkNamespace) {
                host.netns_fd()
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
            report: write,
        };
        Ok((prepared, SetupReport { read }))
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

/// A failed setup step: its number goes to the report pipe, the errno to std.
struct Failed(u8);

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
        let Failed(step) = match self.keeper() {
            Ok(never) => match never {},
            Err(failed) => failed,
        };
        let error = io::Error::last_os_error();
        // SAFETY: a one-byte write of a stack byte to our report pipe.
        unsafe { libc::write(self.report.as_raw_fd(), (&step as *const u8).cast(), 1) };
        error
    }

    /// The first process: namespaces, then fork the plugin and mirror its end.
    fn keeper(&self) -> Result<std::convert::Infallible, Failed> {
        check(STEP_PARENT, || {
            // SAFETY: prctl/getppid on this process only.
            unsafe {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return -1;
                }
                // The parent may have died before the death signal was armed.
                if libc::getppid() != self.parent_pid {
                    *libc::__errno_location() = libc::ESRCH;
                    return -1;
                }
            }
            0
        })?;
        set_rlimit(libc::RLIMIT_CORE, 0, 0).map_err(|()| Failed(STEP_RLIMITS))?;
        if let Some(fd) = self.netns {
            // SAFETY: setns on an fd prepared (and kept open) by the parent.
            check(STEP_NETNS, || unsafe {
                libc::setns(fd, libc::CLONE_NEWNET)
            })?;
        }
        let mut flags = 0;
        if self.pid_namespace {
            flags |= libc::CLONE_NEWPID;
        }
        if self.mount.is_some() {
            flags |= libc::CLONE_NEWNS;
        }
        if flags != 0 {
            // SAFETY: unshare on this single-threaded child.
            check(STEP_UNSHARE, || unsafe { libc::unshare(flags) })?;
        }
        if self.pid_namespace {
            let mut status_pipe = [0; 2];
            // SAFETY: pipe2 into a stack array.
            check(STEP_FORK, || unsafe {
                libc::pipe2(status_pipe.as_mut_ptr(), libc::O_CLOEXEC)
            })?;
            let [status_read, status_write] = status_pipe;
            // SAFETY: fork in a single-threaded child; both sides only make syscalls.
            let init = unsafe { libc::fork() };
            if init < 0 {
                return Err(Failed(STEP_FORK));
            }
            if init > 0 {
                // SAFETY: the keeper never returns from here.
                unsafe { keep(init, status_read, status_write) }
            }
            // PID 1 of the new namespace: a minimal init, so that the plugin gets
            // ordinary signal semantics (PID 1 ignores default-action signals,
            // which turns abort() into SIGSEGV) and orphans are reaped.
            // SAFETY: prctl/close/fork on this process only.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                libc::close(status_read);
            }
            // SAFETY: fork in a single-threaded process.
            let plugin = unsafe { libc::fork() };
            if plugin < 0 {
                return Err(Failed(STEP_FORK));
            }
            if plugin > 0 {
                // SAFETY: init never returns from here.
                unsafe { init_reaper(plugin, status_write) }
            }
            // SAFETY: prctl/close on this process only.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                libc::close(status_write);
            }
        }
        self.plugin()
    }

    /// The plugin process: filesystem view, limits, identity, filter, exec.
    fn plugin(&self) -> Result<std::convert::Infallible, Failed> {
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
        check(STEP_PIVOT, || unsafe { libc::chdir(self.workdir.as_ptr()) })?;
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
        let exec_fd = self.exec.as_raw_fd();
        // SAFETY: close_range only changes descriptor flags of this process.
        check(STEP_FDS, || unsafe {
            libc::close_range(
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            )
        })?;
        if self.keep_exec_fd_open {
            // SAFETY: clears FD_CLOEXEC on a descriptor this process owns.
            check(STEP_FDS, || unsafe {
                libc::fcntl(exec_fd, libc::F_SETFD, 0)
            })?;
        }
        let argv: [*const libc::c_char; 2] = [self.argv[0].as_ptr(), std::ptr::null()];
        // The env pointer array is built on the stack: no allocation after fork.
        const MAX_ENV: usize = 16;
        let mut envp: [*const libc::c_char; MAX_ENV + 1] = [std::ptr::null(); MAX_ENV + 1];
        for (slot, var) in envp.iter_mut().zip(self.envp.iter().take(MAX_ENV)) {
            *slot = var.as_ptr();
        }
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
            Step::Tmpfs { target, data } => libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
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

/// Let go of every descriptor but `keep_fd`, which becomes fd 0: std's
/// exec-error pipe (so `spawn()` returns once the plugin execs) and the
/// plugin's stdio (so EOF comes when the plugin ends) must not be held here.
///
/// # Safety
///
/// Child-only: raw descriptor syscalls.
unsafe fn hold_only(keep_fd: libc::c_int) {
    // SAFETY: descriptor syscalls on this process.
    unsafe {
        libc::dup2(keep_fd, 0);
        libc::close_range(3, libc::c_uint::MAX, 0);
        libc::close(1);
        libc::close(2);
    }
}

/// Waits for `pid` (retrying on EINTR); its wait status, or `None`.
///
/// # Safety
///
/// Child-only.
unsafe fn wait_for(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a stack out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid || (pid == -1 && r > 0) {
            return Some(status);
        }
        // SAFETY: reading errno.
        if r < 0 && unsafe { *libc::__errno_location() } != libc::EINTR {
            return None;
        }
    }
}

/// The init of the run's PID namespace: reaps every orphan, and when the plugin
/// ends, passes its wait status to the keeper and exits — which ends every
/// process left in the namespace.
///
/// # Safety
///
/// Child-only; never returns.
unsafe fn init_reaper(plugin: libc::pid_t, status_write: libc::c_int) -> ! {
    // SAFETY: raw syscalls on this process; every path ends in _exit.
    unsafe {
        hold_only(status_write);
        loop {
            let mut status = 0;
            let r = libc::waitpid(-1, &mut status, 0);
            if r == plugin {
                libc::write(
                    0,
                    (&status as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>(),
                );
                libc::_exit(0);
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(0);
            }
        }
    }
}

/// The keeper's life after the fork: let go of everything, wait for the
/// namespace's init, and end exactly as the plugin ended.
///
/// # Safety
///
/// Child-only; never returns.
unsafe fn keep(init: libc::pid_t, status_read: libc::c_int, status_write: libc::c_int) -> ! {
    // SAFETY: raw syscalls on this process; every path ends in _exit or a fatal signal.
    unsafe {
        libc::close(status_write);
        hold_only(status_read);
        let init_status = wait_for(init).unwrap_or(127 << 8);
        let mut plugin_status: libc::c_int = 0;
        let n = libc::read(
            0,
            (&mut plugin_status as *mut libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        );
        // Without a report (init itself was killed), the init's end is the run's.
        let status = if n == std::mem::size_of::<libc::c_int>() as isize {
            plugin_status
        } else {
            init_status
        };
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let signal = libc::WTERMSIG(status);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal);
    }
}
