//! A real, private PostgreSQL server for tests (feature `testkit`): Debian's
//! `postgresql` binaries (`/usr/lib/postgresql/*/bin`, installed by
//! `scripts/setup`), a cluster made by `initdb` in a temporary directory,
//! `postgres` listening on 127.0.0.1 at a free port and on a Unix socket in
//! that directory, run as an unprivileged user because tests run as root.
//!
//! [`shared`] is one server per test process (each test takes its own
//! database from it with [`TestServer::fresh_database`]); [`TestServer::start`]
//! is a server of the caller's own, which it may stop and start again (the
//! fault tests). A server is stopped and its directory removed when it is
//! dropped, and the shared one when the process exits.
//!
//! Outside CI a machine without the binaries skips, saying why; in CI
//! (`CI=true`) their absence is a failure.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The user the server runs as when the tests run as root: Debian's
/// `postgres` (made by the package), else `nobody`.
const SERVER_USERS: [&str; 2] = ["postgres", "nobody"];

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running private server.
#[derive(Debug)]
pub struct TestServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

/// Why there is no server to test against.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    #[error(
        "no PostgreSQL binaries under /usr/lib/postgresql/*/bin (scripts/setup installs them)"
    )]
    NotInstalled,
    #[error("cannot prepare the test server: {0}")]
    Setup(String),
}

/// Whether the tests run in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The process's shared server, started on first use; `None` (after
/// printing why) outside CI when PostgreSQL is not installed. In CI a
/// server that cannot start fails the test.
pub fn shared() -> Option<&'static TestServer> {
    static SERVER: OnceLock<Option<TestServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let server = start_or_skip()?;
            // The harness ends the process with `exit`, which runs C atexit
            // handlers but no destructor of a static.
            *SHARED_DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some((
                server.dir.path().to_path_buf(),
                server.bin.clone(),
                server.user,
            ));
            // SAFETY: `stop_shared_at_exit` is an `extern "C" fn()` that
            // does not unwind: it takes a poisoned lock as it is and ignores
            // the stop's errors.
            unsafe { libc::atexit(stop_shared_at_exit) };
            Some(server)
        })
        .as_ref()
}

/// A server of the caller's own, or `None` (after printing why) outside CI
/// when PostgreSQL is not installed.
pub fn own() -> Option<TestServer> {
    start_or_skip()
}

fn start_or_skip() -> Option<TestServer> {
    match TestServer::start() {
        Ok(server) => Some(server),
        Err(e @ TestServerError::NotInstalled) if !in_ci() => {
            eprintln!("skipping: {e}; CI is not \"true\", so this test is skipped");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// What the exit handler needs to stop the shared server: its directory,
/// its binaries and the user it runs as.
type SharedServer = (PathBuf, PathBuf, Option<(u32, u32)>);

static SHARED_DIR: Mutex<Option<SharedServer>> = Mutex::new(None);

extern "C" fn stop_shared_at_exit() {
    let taken = SHARED_DIR.lock().map(|mut d| d.take()).unwrap_or(None);
    if let Some((dir, bin, user)) = taken {
        let _ = pg_ctl_stop(&bin, &dir, user);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

impl TestServer {
    /// Makes a cluster in a new temporary directory and starts its server.
    pub fn start() -> Result<TestServer, TestServerError> {
        let bin = find_bin().ok_or(TestServerError::NotInstalled)?;
        let setup =
            |what: &str, e: &dyn std::fmt::Display| TestServerError::Setup(format!("{what}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("secflow-pg-")
            .tempdir()
            .map_err(|e| setup("temporary directory", &e))?;
        let user = server_user()?;
        if let Some((uid, gid)) = user {
            chown(dir.path(), uid, gid).map_err(|e| setup("chown", &e))?;
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| setup("chmod", &e))?;
        let output = command(&bin.join("initdb"), user)
            .args([
                "--auth=trust",
                "--username=secflow",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("--pgdata")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| setup("initdb", &e))?;
        if !output.status.success() {
            return Err(setup(
                "initdb",
                &String::from_utf8_lossy(&output.stderr).trim(),
            ));
        }
        let mut server = TestServer {
            dir,
            bin,
            port: 0,
            user,
            child: None,
        };
        server.start_again()?;
        Ok(server)
    }

    /// [`TestServer::start`] with TLS on: a CA made for it (its certificate
    /// at [`TestServer::ca_file`]) signs the server's certificate for
    /// 127.0.0.1. Needs `openssl` (a dependency of Debian's `postgresql`).
    pub fn start_with_tls() -> Result<TestServer, TestServerError> {
        let mut server = TestServer::start()?;
        server.stop();
        let dir = server.dir.path().to_path_buf();
        let openssl = |args: &[&str]| -> Result<(), TestServerError> {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| TestServerError::Setup(format!("openssl: {e}")))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(TestServerError::Setup(format!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                )))
            }
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=secflow test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])?;
        std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n")
            .map_err(|e| TestServerError::Setup(format!("san.ext: {e}")))?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ])?;
        for file in ["server.key", "server.crt"] {
            let path = dir.join(file);
            if let Some((uid, gid)) = server.user {
                chown(&path, uid, gid).map_err(|e| TestServerError::Setup(e.to_string()))?;
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| TestServerError::Setup(e.to_string()))?;
        }
        let conf = format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("data").join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| TestServerError::Setup(format!("postgresql.conf: {e}")))?;
        server.start_again()?;
        Ok(server)
    }

    /// The CA certificate of a server from [`TestServer::start_with_tls`].
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Starts the server again after [`TestServer::stop`], on the same port.
    pub fn start_again(&mut self) -> Result<(), TestServerError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| TestServerError::Setup(format!("{what}: {e}"));
        // A port taken between our probe and the server's bind: try others.
        for _ in 0..5 {
            if self.port == 0 {
                self.port = free_port().map_err(|e| setup("free port", &e))?;
            }
            let log = std::fs::File::create(self.dir.path().join("server.log"))
                .map_err(|e| setup("server log", &e))?;
            if let Some((uid, gid)) = self.user {
                chown(&self.dir.path().join("server.log"), uid, gid)
                    .map_err(|e| setup("chown", &e))?;
            }
            let child = command(&self.bin.join("postgres"), self.user)
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
                .arg(self.dir.path())
                .args(["-c", "fsync=off", "-c", "max_connections=200"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| setup("postgres", &e))?;
            self.child = Some(child);
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.stop();
                    let log = std::fs::read_to_string(self.dir.path().join("server.log"))
                        .unwrap_or_default();
                    if !log.contains("could not bind") {
                        return Err(setup("postgres did not start", &format!("{e}: {log}")));
                    }
                    self.port = 0;
                }
            }
        }
        Err(TestServerError::Setup(
            "postgres found no free port in five tries".into(),
        ))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited with {status}"));
                }
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (a fast shutdown: clients are disconnected, what
    /// they committed is kept). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = pg_ctl_stop(&self.bin, self.dir.path(), self.user);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the cluster's `postgres` database.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// The URL of `database` on this server, over TCP without TLS.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://secflow@127.0.0.1:{}/{database}", self.port)
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new, empty database on this server and its URL: each test its own.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
        self.url(&name)
    }

    /// Runs `sql` with the server's `psql` in `database`; its output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "secflow",
            ])
            .args(["-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The directory of the server's binaries (`psql`, `pg_dump`, …).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest installed version's binaries.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The uid and gid to run the server as: `None` when not root.
fn server_user() -> Result<Option<(u32, u32)>, TestServerError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in SERVER_USERS {
        let name = CString::new(name).map_err(|e| TestServerError::Setup(e.to_string()))?;
        // SAFETY: `name` is a valid C string; the returned record is read
        // at once, before any other call that could overwrite it.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: `pw` is non-null and points to libc's static record.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Ok(Some((uid, gid)));
        }
    }
    Err(TestServerError::Setup(
        "running as root and neither the postgres nor the nobody user exists".into(),
    ))
}

fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = user {
        // With a uid set and no groups, std also clears root's
        // supplementary groups before the exec.
        command.uid(uid).gid(gid);
        command.env("HOME", "/tmp");
    }
    command
}

fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

fn pg_ctl_stop(bin: &Path, dir: &Path, user: Option<(u32, u32)>) -> std::io::Result<()> {
    command(&bin.join("pg_ctl"), user)
        .args(["stop", "-m", "fast", "-w", "-t", "30", "-D"])
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|_| ())
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
