//! `secflowd`: the supervisor as a long-running service (contracts §1).
//!
//! This is wiring only: it takes the listening socket (from systemd socket
//! activation, or by binding `api.socket` itself), opens the [`Supervisor`],
//! serves the [`ApiServer`] on the socket, and turns signals into actions —
//! `SIGHUP` reloads plugins, `SIGTERM`/`SIGINT` drain: stop accepting, cancel
//! the runs (recorded `cancelled`), flush storage, exit 0. It tells systemd
//! where it stands (`READY=1`, `RELOADING=1`, `STOPPING=1`, watchdog pings).
//!
//! The systemd protocols are a few lines each and spoken here directly rather
//! than through a crate: `NOTIFY_SOCKET` may name an abstract socket (`@…`,
//! as in containers), which the small crates do not handle.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use secflow_web::Dashboard;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::ApiServer;
use secflow_core::config::{Config, ConfigError};
use secflow_runner::{Supervisor, SupervisorError};

/// Mode of the socket file the daemon binds: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of the socket's directory when the daemon has to create it.
const SOCKET_DIR_MODE: u32 = 0o750;
/// How long open connections get to receive their last answers at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for journald or a log shipper).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// The daemon could not start (or could not stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Web(#[from] secflow_web::WebError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
    #[error("cannot create the socket directory {path}")]
    SocketDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind the api socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "another daemon is already serving on {path}; stop it first or set a different api.socket"
    )]
    SocketInUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it (remove it or set a different api.socket)")]
    NotASocket { path: PathBuf },
    #[error("the socket passed by systemd (LISTEN_FDS) is not a listening unix stream socket")]
    ActivatedSocket(#[source] io::Error),
    #[error("invalid {var} in the environment: {value:?}")]
    Environment { var: &'static str, value: String },
    #[error("cannot install the signal handlers")]
    Signals(#[source] io::Error),
}

/// Sets up `tracing` to stderr in the chosen format; the filter comes from
/// `SECFLOW_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SECFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.with_ansi(io::stderr().is_terminal()).init(),
    }
}

/// Runs the daemon until `SIGTERM`/`SIGINT`; `Ok` after a clean drain.
pub fn run(config_path: &Path) -> Result<(), DaemonError> {
    let started = Instant::now();
    let config = Config::load(config_path)?;
    // Adopt the systemd socket while the process is still single-threaded:
    // the LISTEN_* variables are removed from the environment here.
    let activated = systemd::take_listen_fd()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("secflowd")
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(serve(config, activated, started))
}

async fn serve(
    config: Config,
    activated: Option<OwnedFd>,
    started: Instant,
) -> Result<(), DaemonError> {
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let (listener, bound) = match activated {
        Some(fd) => (adopt_listener(fd)?, None),
        None => {
            let path = config.api.socket.clone();
            (bind_socket(&path)?, Some(path))
        }
    };
    let socket_name = bound
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the socket passed by systemd".into());

    let settings = config.api.clone();
    let web = config.web.clone();
    let supervisor = match Supervisor::open(config).await {
        Ok(supervisor) => Arc::new(supervisor),
        Err(e) => {
            if let Some(path) = &bound {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    let plugins = supervisor.plugins();
    let active = plugins
        .iter()
        .filter(|e| e.status == secflow_core::PluginStatus::Active)
        .count();
    tracing::info!(
        socket = %socket_name, plugins = plugins.len(), active,
        version = env!("CARGO_PKG_VERSION"), "secflowd ready"
    );

    let (stop, stopping) = watch::channel(false);
    let dashboard = if web.enabled {
        let listener = match secflow_web::bind(&web).await {
            Ok(listener) => listener,
            Err(e) => {
                if let Some(path) = &bound {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e.into());
            }
        };
        let address = listener.local_addr().map_or(web.listen, |a| a);
        tracing::info!(address = %address, token_file = %web.token_file.display(), "dashboard listening");
        let dashboard = Arc::new(Dashboard::new(Arc::clone(&supervisor), &web));
        let stopping = stopping.clone();
        Some(tokio::spawn(secflow_web::serve(
            listener,
            dashboard,
            web.max_connections,
            stopping,
        )))
    } else {
        None
    };

    let server = ApiServer::new(Arc::clone(&supervisor), settings, started);
    let serving = tokio::spawn(async move { server.serve(listener, stopping).await });
    let watchdog = systemd::watchdog_interval().map(|interval| {
        let supervisor = Arc::clone(&supervisor);
        tokio::spawn(watchdog(supervisor, interval))
    });
    systemd::notify(&format!(
        "READY=1\nSTATUS=serving {active} active plugins on {socket_name}"
    ));

    loop {
        tokio::select! {
            _ = hangup.recv() => {
                systemd::notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", systemd::monotonic_usec()));
                match supervisor.reload().await {
                    Ok(entries) => tracing::info!(plugins = entries.len(), "plugins reloaded (SIGHUP)"),
                    Err(e) => tracing::error!(error = %secflow_core::error_chain(&e), "plugin reload failed"),
                }
                systemd::notify("READY=1");
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    tracing::info!("shutting down: no new connections, cancelling runs");
    systemd::notify("STOPPING=1\nSTATUS=draining");
    let _ = stop.send(true);
    let connections = match serving.await {
        Ok(connections) => Some(connections),
        Err(e) => {
            tracing::error!(error = %e, "the api server task failed");
            None
        }
    };
    if let Some(path) = &bound {
        // New clients now fail fast (exit 3) instead of waiting on a dead socket.
        let _ = std::fs::remove_file(path);
    }
    let drained = supervisor.drain().await;
    if let Some(connections) = connections {
        connections.close(CLOSE_GRACE).await;
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if let Some(dashboard) = dashboard {
        let _ = dashboard.await;
    }
    let cancelled = drained?;
    tracing::info!(runs_cancelled = cancelled, "secflowd stopped");
    Ok(())
}

/// Pings the systemd watchdog at half its interval, but only while the
/// storage writer still commits: a wedged writer stops the pings and lets
/// systemd restart the daemon.
async fn watchdog(supervisor: Arc<Supervisor>, interval: Duration) {
    let period = interval / 2;
    loop {
        tokio::time::sleep(period).await;
        match tokio::time::timeout(period, supervisor.flush()).await {
            Ok(Ok(())) => systemd::notify("WATCHDOG=1"),
            // A full disk is not a wedged writer: it answers, the API serves,
            // and a restart would not bring space back.
            Ok(Err(secflow_runner::supervisor::SupervisorError::Storage(e)))
                if e.run_error_kind() == secflow_core::record::ErrorKind::StorageFull =>
            {
                tracing::error!(error = %secflow_core::error_chain(&e), "storage is full; runs fail as storage_full");
                systemd::notify("WATCHDOG=1");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %secflow_core::error_chain(&e), "storage is failing; watchdog not pinged")
            }
            Err(_) => tracing::error!("storage did not answer in time; watchdog not pinged"),
        }
    }
}

/// Binds `path` with mode 0660. A socket file left by a daemon that died is
/// replaced; one that still answers means another daemon is running.
pub fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let bind_error = |source| DaemonError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(SOCKET_DIR_MODE)
            .create(&dir)
            .map_err(|source| DaemonError::SocketDir {
                path: dir.clone(),
                source,
            })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(DaemonError::SocketInUse {
                        path: path.to_path_buf(),
                    })
                }
                Err(_) => {
                    tracing::info!(socket = %path.display(), "removing a stale socket file");
                    std::fs::remove_file(path).map_err(bind_error)?;
                }
            }
        }
        Ok(_) => {
            return Err(DaemonError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(e)),
    }
    // Bind under a temporary name, set the mode, then rename into place: the
    // socket never exists at `path` with a wider mode than 0660.
    let staging = dir.join(format!(".secflowd.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = std::os::unix::net::UnixListener::bind(&staging).map_err(bind_error)?;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(SOCKET_MODE))
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(bind_error(e));
    }
    listener.set_nonblocking(true).map_err(bind_error)?;
    UnixListener::from_std(listener).map_err(bind_error)
}

/// The listening socket passed by systemd, as a tokio listener.
fn adopt_listener(fd: OwnedFd) -> Result<UnixListener, DaemonError> {
    let listener = std::os::unix::net::UnixListener::from(fd);
    // A socket that is not AF_UNIX has no unix local address.
    let address = listener
        .local_addr()
        .map_err(DaemonError::ActivatedSocket)?;
    listener
        .set_nonblocking(true)
        .map_err(DaemonError::ActivatedSocket)?;
    tracing::info!(socket = ?address.as_pathname(), "using the socket passed by systemd");
    UnixListener::from_std(listener).map_err(DaemonError::ActivatedSocket)
}

/// The service manager's side: `sd_notify` and `sd_listen_fds`.
mod systemd {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    use std::time::Duration;

    use super::DaemonError;

    /// The first fd systemd passes (`SD_LISTEN_FDS_START`).
    const LISTEN_FDS_START: i32 = 3;

    /// Sends a state change to systemd, if it is listening (`NOTIFY_SOCKET`).
    /// Failures are logged: a missed notification must not stop the daemon.
    pub fn notify(state: &str) {
        let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let sent = UnixDatagram::unbound().and_then(|socket| {
            let bytes = target.as_bytes();
            match bytes.strip_prefix(b"@") {
                Some(name) => {
                    let address = SocketAddr::from_abstract_name(name)?;
                    socket.send_to_addr(state.as_bytes(), &address)
                }
                None => socket.send_to(state.as_bytes(), &target),
            }
        });
        if let Err(e) = sent {
            tracing::warn!(error = %e, socket = ?target, "cannot notify systemd");
        }
    }

    /// `WATCHDOG_USEC`, when the watchdog is on for this process.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.parse::<u32>().ok() == Some(std::process::id()));
        (for_us && usec > 0).then(|| Duration::from_micros(usec))
    }

    /// `CLOCK_MONOTONIC` in microseconds, for `RELOADING=1`.
    pub fn monotonic_usec() -> u64 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid, writable timespec for the duration of the
        // call; CLOCK_MONOTONIC is always available on Linux.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
            return 0;
        }
        now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
    }

    /// The socket passed by socket activation, if `LISTEN_PID` names this
    /// process; the `LISTEN_*` variables are removed either way so nothing
    /// started later inherits them. Call before any thread is spawned.
    pub fn take_listen_fd() -> Result<Option<OwnedFd>, DaemonError> {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        let (Some(pid), Some(fds)) = (pid, fds) else {
            return Ok(None);
        };
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return Ok(None);
        }
        let count: i32 = fds.parse().map_err(|_| DaemonError::Environment {
            var: "LISTEN_FDS",
            value: fds.clone(),
        })?;
        if count < 1 {
            return Ok(None);
        }
        if count > 1 {
            tracing::warn!(
                count,
                "systemd passed more than one socket; serving the first"
            );
        }
        // SAFETY: LISTEN_PID names this process, so systemd passed it fds
        // 3..3+LISTEN_FDS and nothing else in the process owns fd 3; the
        // variables are removed above, so it is adopted exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| DaemonError::ActivatedSocket(e.into()))?;
        Ok(Some(fd))
    }
}
