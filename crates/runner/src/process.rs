//! The plugin process: launch under a prepared sandbox, wait through a pidfd,
//! reap with `wait4` for its resource usage, and kill it with everything it
//! started.
//!
//! The runner owns the child outright: tokio's process driver never sees it, so
//! nothing else reaps it, and its pid cannot be reused while we still hold it
//! unreaped. Signals go through the pidfd.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, OnceLock};

use tokio::io::unix::AsyncFd;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use secflow_sandbox::{
    block_all_signals, pipe, read_exit_report, read_setup_report, ChildMemory, ChildStdio,
    LaunchError, Launched, PreparedSandbox,
};

/// A running plugin and its three pipes.
#[derive(Debug)]
pub struct PluginProcess {
    /// The plugin, or the init of its PID namespace.
    pid: libc::pid_t,
    pidfd: AsyncFd<OwnedFd>,
    /// With a PID namespace: where the init reports how the setup went, then
    /// the plugin's end.
    reports: Option<OwnedFd>,
    reaped: Option<ExitInfo>,
    /// The init's setup report: `None` until read (by `started` or `reap`).
    setup: Option<Result<(), LaunchError>>,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    /// Declared last: dropped after `Drop::drop` has reaped the init.
    _memory: ChildMemory,
}

/// How the process ended and what it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub cpu_ms: u64,
    /// Peak resident set, MiB (rounded up).
    pub memory_mb: u64,
    /// Orphans of the plugin the seccomp filter killed (see `ExitReport`).
    pub seccomp_kills: u32,
}

impl ExitInfo {
    /// "exited with status N" or "was killed by signal N"; `None` when the
    /// wait status said neither (the caller knows what else ended the run).
    pub fn describe(&self) -> Option<String> {
        match (self.exit_code, self.signal) {
            (Some(code), _) => Some(format!("exited with status {code}")),
            (None, Some(sig)) => Some(format!("was killed by signal {sig}")),
            (None, None) => None,
        }
    }
}

/// Launches the plugin under `sandbox`.
///
/// The launch happens on one long-lived thread (the spawner) that blocks every
/// signal: the children's `PR_SET_PDEATHSIG` fires when the thread that made
/// them ends, so launching from a runtime worker that may be retired would kill
/// healthy plugins; and the children start with every signal blocked, so no
/// handler of the supervisor's ever runs in them. A run's init also shares
/// the launching thread's errno slot (see `sandbox::child`), harmless only on
/// a thread that does nothing but launch.
///
/// With a PID namespace this resolves as soon as the run's init exists, before
/// the plugin has executed: a setup failure surfaces as a plugin that never
/// answers, and [`PluginProcess::setup_failure`] says which step failed once
/// the process is reaped ([`PluginProcess::started`] waits for it instead).
pub async fn spawn(sandbox: PreparedSandbox) -> Result<PluginProcess, LaunchError> {
    // Should this task be dropped while waiting, the spawner drops the
    // `Launched`, which kills and reaps the child.
    let launched = on_spawner(move || launch(sandbox))
        .await
        .map_err(|error| LaunchError { step: None, error })??;
    let (launched, stdin, stdout, stderr) = launched;
    let parent = |error: io::Error| LaunchError { step: None, error };
    let (pid, pidfd, reports, memory) = launched.into_parts();
    // SAFETY: the pidfd is a valid open descriptor owned by the AsyncFd for its
    // whole life; nothing else closes or replaces it.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
    let pidfd = match pidfd {
        Ok(pidfd) => pidfd,
        Err(e) => {
            // Without a registered pidfd we cannot wait: kill and reap it now.
            // SAFETY: wait on our own child after SIGKILL; only then are its
            // stacks unmapped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            drop(memory);
            return Err(parent(io::Error::other(e.to_string())));
        }
    };
    // From here on, dropping the process kills and reaps it.
    let mut process = PluginProcess {
        pid,
        pidfd,
        reports,
        reaped: None,
        setup: None,
        stdin: None,
        stdout: None,
        stderr: None,
        _memory: memory,
    };
    process.stdin =
        Some(ChildStdin::from_std(std::process::ChildStdin::from(stdin)).map_err(parent)?);
    process.stdout =
        Some(ChildStdout::from_std(std::process::ChildStdout::from(stdout)).map_err(parent)?);
    process.stderr =
        Some(ChildStderr::from_std(std::process::ChildStderr::from(stderr)).map_err(parent)?);
    Ok(process)
}

type Launch = (Launched, OwnedFd, OwnedFd, OwnedFd);

/// On the spawner thread: the plugin's pipes (parent ends returned), then launch.
fn launch(sandbox: PreparedSandbox) -> Result<Launch, LaunchError> {
    let parent = |error: io::Error| LaunchError { step: None, error };
    let (stdin_read, stdin_write) = pipe().map_err(parent)?;
    let (stdout_read, stdout_write) = pipe().map_err(parent)?;
    let (stderr_read, stderr_write) = pipe().map_err(parent)?;
    let launched = sandbox.launch(ChildStdio {
        stdin: stdin_read,
        stdout: stdout_write,
        stderr: stderr_write,
    })?;
    Ok((launched, stdin_write, stdout_read, stderr_read))
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
                block_all_signals();
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

impl PluginProcess {
    /// Waits until the plugin has executed, or returns why the sandbox could
    /// not start it. Without a PID namespace the launch already said so.
    pub async fn started(&mut self) -> Result<(), LaunchError> {
        let Some(reports) = &self.reports else {
            return Ok(());
        };
        if self.setup.is_none() {
            let parent = |error: io::Error| LaunchError { step: None, error };
            let copy = reports.try_clone().map_err(parent)?;
            // SAFETY: `copy` is a fresh descriptor owned by the AsyncFd for its
            // whole (short) life; nothing else closes or replaces it.
            let watch =
                unsafe { AsyncFd::register_with_interest(copy, tokio::io::Interest::READABLE) }
                    .map_err(|e| parent(io::Error::other(e.to_string())))?;
            // Readable once the report is written or the init is gone; the
            // report is one small write, so the read below does not block.
            let _ready = watch.readable().await.map_err(parent)?;
            self.setup = Some(read_setup_report(reports));
        }
        match &self.setup {
            Some(Err(e)) => Err(LaunchError {
                step: e.step,
                error: io::Error::new(e.error.kind(), e.error.to_string()),
            }),
            _ => Ok(()),
        }
    }

    /// After `reap`: why the sandbox could not start the plugin, if it could
    /// not — the failed setup step, or an init that ended without a report.
    pub fn setup_failure(&self) -> Option<&LaunchError> {
        match &self.setup {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// Resolves when the process has exited (it is then a zombie until reaped).
    pub async fn exited(&self) -> io::Result<()> {
        if self.reaped.is_some() {
            return Ok(());
        }
        let mut guard = self.pidfd.readable().await?;
        guard.retain_ready();
        Ok(())
    }

    /// Kills the plugin and everything it started, with SIGKILL. With a PID
    /// namespace, killing its init ends the namespace; without one, the
    /// plugin's process group is killed too. Safe to call at any time before
    /// `reap`: the unreaped leader keeps the pid and group id reserved.
    pub fn kill_group(&self) {
        if self.reaped.is_some() {
            return;
        }
        // SAFETY: the pidfd is our own child's; failure (already dead) is harmless.
        unsafe { secflow_sandbox::pidfd_kill(self.pidfd.get_ref()) };
        if self.reports.is_none() {
            // SAFETY: the group id equals the unreaped leader's pid, which cannot
            // have been reused; kill(-pgid) only signals that group.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        }
    }

    /// Reaps the exited process and returns the plugin's status and resource
    /// usage. Call after `exited()`.
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
        let ms = |tv: libc::timeval| tv.tv_sec as u64 * 1000 + tv.tv_usec as u64 / 1000;
        let mut cpu_ms = ms(usage.ru_utime) + ms(usage.ru_stime);
        let mut maxrss_kib = usage.ru_maxrss as u64;
        let mut seccomp_kills = 0;
        if let Some(fd) = &self.reports {
            // The init has exited: both reports, if written, are in the pipe.
            if self.setup.is_none() {
                self.setup = Some(read_setup_report(fd));
            }
            match read_exit_report(fd) {
                Some(report) => {
                    status = report.status;
                    cpu_ms = report.cpu_us / 1000;
                    maxrss_kib = report.maxrss_kib;
                    seccomp_kills = report.seccomp_kills;
                }
                // The init was killed (deadline, cancel): its own end is the
                // run's. It ran in the supervisor's memory, so its peak RSS
                // says nothing of the plugin's.
                None => maxrss_kib = 0,
            }
        }
        let info = ExitInfo {
            exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            cpu_ms,
            memory_mb: maxrss_kib.div_ceil(1024),
            seccomp_kills,
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
            // SAFETY: blocking wait on our own child, which was just sent
            // SIGKILL; only then may its stack be unmapped (field drop order).
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
    }
}
