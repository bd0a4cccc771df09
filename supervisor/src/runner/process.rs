//! The plugin process: spawn under a prepared sandbox, wait through a pidfd,
//! reap with `wait4` for its resource usage, and kill its whole process group.
//!
//! The runner owns the child outright: tokio's process driver never sees it, so
//! nothing else reaps it, and its pid cannot be reused while we still hold it
//! unreaped. Signals go through the pidfd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use tokio::io::unix::AsyncFd;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use crate::sandbox::PreparedSandbox;

/// A running plugin and its three pipes.
#[derive(Debug)]
pub struct PluginProcess {
    pid: libc::pid_t,
    pidfd: AsyncFd<OwnedFd>,
    reaped: Option<ExitInfo>,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

/// How the process ended and what it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub cpu_ms: u64,
    /// Peak resident set, MiB (rounded up).
    pub memory_mb: u64,
}

/// Spawns the plugin: fork, apply the sandbox in the child, exec the verified fd.
///
/// The fork happens on one long-lived thread (the spawner): the plugin's
/// `PR_SET_PDEATHSIG` fires when the thread that forked it ends, so forking from
/// a runtime worker that may be retired would kill healthy plugins.
pub async fn spawn(
    sandbox: PreparedSandbox,
    entrypoint: &Path,
    workdir: &Path,
) -> io::Result<PluginProcess> {
    let entrypoint = entrypoint.to_path_buf();
    let workdir = workdir.to_path_buf();
    let (child, pidfd) = on_spawner(move || fork_exec(sandbox, &entrypoint, &workdir)).await??;
    let mut child = child;
    let pid = child.id() as libc::pid_t;
    let stdin = child.stdin.take().map(ChildStdin::from_std).transpose()?;
    let stdout = child.stdout.take().map(ChildStdout::from_std).transpose()?;
    let stderr = child.stderr.take().map(ChildStderr::from_std).transpose()?;
    // SAFETY: the pidfd is a valid open descriptor owned by the AsyncFd for its
    // whole life; nothing else closes or replaces it.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(PluginProcess {
        pid,
        pidfd,
        reaped: None,
        stdin,
        stdout,
        stderr,
    })
}

fn fork_exec(
    sandbox: PreparedSandbox,
    entrypoint: &Path,
    workdir: &Path,
) -> io::Result<(std::process::Child, OwnedFd)> {
    let mut command = Command::new(entrypoint);
    command
        .env_clear()
        .current_dir(workdir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let in_child = move || {
        // SAFETY: this closure runs in the forked child, before exec, which is
        // exactly what apply_in_child requires.
        Err(unsafe { sandbox.apply_in_child() })
    };
    // SAFETY: the closure only makes raw syscalls on data prepared in the parent;
    // it does not allocate or take locks after fork.
    unsafe {
        command.pre_exec(in_child);
    }
    let mut child = command.spawn()?;
    match pidfd_open(child.id() as libc::pid_t) {
        Ok(fd) => Ok((child, fd)),
        Err(e) => {
            // Without a pidfd we cannot wait safely: kill and reap it now.
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Runs `job` on the spawner thread and returns its result.
async fn on_spawner<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("secflow-spawner".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .expect("the spawner thread starts");
        Mutex::new(tx)
    });
    let (done, result) = tokio::sync::oneshot::channel();
    let job: SpawnJob = Box::new(move || {
        let _ = done.send(job());
    });
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
    result
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped a spawn"))
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl PluginProcess {
    /// Resolves when the process has exited (it is then a zombie until reaped).
    pub async fn exited(&self) -> io::Result<()> {
        if self.reaped.is_some() {
            return Ok(());
        }
        let mut guard = self.pidfd.readable().await?;
        guard.retain_ready();
        Ok(())
    }

    /// Kills the whole process group with SIGKILL. Safe to call at any time
    /// before `reap`: the unreaped leader keeps the pid and group id reserved.
    pub fn kill_group(&self) {
        if self.reaped.is_some() {
            return;
        }
        // SAFETY: sending a signal through a pidfd we own; failure (already dead)
        // is harmless.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        // SAFETY: the group id equals the unreaped leader's pid, which cannot have
        // been reused; kill(-pgid) only signals that group.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
    }

    /// Reaps the exited process and returns its status and resource usage.
    /// Call after `exited()`.
    pub fn reap(&mut self) -> io::Result<ExitInfo> {
        if let Some(info) = self.reaped {
            return Ok(info);
        }
        let mut status: libc::c_int = 0;
        // SAFETY: zero-initialised rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own unreaped child, with valid out-pointers.
        let rc = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if rc == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "plugin process has not exited yet",
            ));
        }
        let exit_code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
        let ms = |tv: libc::timeval| tv.tv_sec as u64 * 1000 + tv.tv_usec as u64 / 1000;
        let info = ExitInfo {
            exit_code,
            signal,
            cpu_ms: ms(usage.ru_utime) + ms(usage.ru_stime),
            memory_mb: (usage.ru_maxrss as u64).div_ceil(1024),
        };
        self.reaped = Some(info);
        Ok(info)
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        // Never leave a plugin (or its group) running, nor a zombie behind.
        if self.reaped.is_none() {
            self.kill_group();
            let mut status = 0;
            // SAFETY: blocking wait4 on our own child, which was just sent SIGKILL.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
    }
}
