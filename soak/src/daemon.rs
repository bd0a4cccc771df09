//! A supervisor home, the `secflowd` running on it, and a JSON-RPC client for
//! its socket: what the soak and the fault trials start, kill and restart.
//!
//! Every home gets its own per-run uid range, so the leftover probes that look
//! for processes in that range see only this home's runs, even while other
//! supervisors (other tests) run on the same machine.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Start of the uid ranges handed to homes (each `UIDS_PER_HOME` wide), far
/// from the default range (2 000 000 000) that other tests use.
const UID_BASE: u32 = 2_100_000_000;
const UIDS_PER_HOME: u32 = 64;

/// How long `secflowd` may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A failure of the harness itself (not of the daemon under test).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hash plugin executable {path}: {reason}")]
    Hash { path: PathBuf, reason: String },
    #[error("secflowd did not serve on {socket}: {reason}\n{log}")]
    Start {
        socket: PathBuf,
        reason: String,
        log: String,
    },
    #[error("{0} is not built; run `cargo build --workspace --bins` first")]
    NotBuilt(PathBuf),
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError {
    let path = path.to_path_buf();
    move |source| HarnessError::Io { what, path, source }
}

/// The executables the drivers run.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub secflowd: PathBuf,
    /// `fixture-detector` (tests/plugins): `count` findings, `delay_ms` apart.
    pub detector: PathBuf,
    /// `fixture-hostile` (tests/plugins): one sandbox attack per run.
    pub hostile: PathBuf,
}

impl Binaries {
    /// The config schema to install `detector` with: its knobs, declared so that
    /// a run's config validates.
    pub fn detector_schema() -> Value {
        let int = |d: u64| json!({"type": "integer", "minimum": 0, "default": d});
        json!({"count": int(10), "delay_ms": int(0)})
    }

    /// The config schema to install `hostile` with: the attack and its knobs.
    pub fn hostile_schema() -> Value {
        json!({
            "attack": {"type": "string"},
            "then": {"type": "string", "default": "whoami"},
            "targets": {"type": "array", "items": {"type": "string"}, "default": []},
            "mb": {"type": "integer", "default": 64},
            "count": {"type": "integer", "default": 3}
        })
    }

    /// The binaries built beside the running executable (`target/<profile>/`).
    pub fn beside_current_exe() -> Result<Binaries, HarnessError> {
        let exe = std::env::current_exe().map_err(io_error("cannot locate", Path::new("self")))?;
        let dir = exe.parent().unwrap_or(Path::new("."));
        let find = |name: &str| {
            let path = dir.join(name);
            if path.exists() {
                Ok(path)
            } else {
                Err(HarnessError::NotBuilt(path))
            }
        };
        Ok(Binaries {
            secflowd: find("secflowd")?,
            detector: find("fixture-detector")?,
            hostile: find("fixture-hostile")?,
        })
    }
}

/// A throwaway supervisor home: config, database, plugins, run dirs, socket.
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub database: PathBuf,
    pub work_root: PathBuf,
    /// The per-run uids of this home: `uid_min..uid_min + uid_count`.
    pub uids: std::ops::Range<u32>,
}

impl Home {
    /// A new home under `parent` (the temp dir when `None`). `extra` is TOML
    /// appended to the config (its sections must not repeat the ones written
    /// here: plugins, storage, api, sandbox, runs).
    pub fn create(parent: Option<&Path>, extra: &str) -> Result<Home, HarnessError> {
        Home::create_with_database(parent, "var/secflow.db", extra)
    }

    /// [`Home::create`] with the database at `database` (relative to the home).
    pub fn create_with_database(
        parent: Option<&Path>,
        database: &str,
        extra: &str,
    ) -> Result<Home, HarnessError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let builder = tempfile::Builder::new().prefix("secflow-soak-").tempdir_in(
            parent
                .map(Path::to_path_buf)
                .unwrap_or_else(std::env::temp_dir),
        );
        let dir = builder.map_err(io_error("cannot create a home in", Path::new("temp dir")))?;
        std::fs::create_dir_all(dir.path().join("plugins"))
            .map_err(io_error("cannot create", dir.path()))?;
        // Distinct per process and per home (4096 slots of 64 uids).
        let slot = std::process::id()
            .wrapping_mul(8)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        let uid_min = UID_BASE + (slot % 4096) * UIDS_PER_HOME;
        let config_path = dir.path().join("secflow.toml");
        // The default grace (2 s) between `shutdown` and a kill: on a loaded
        // 2-core host a well-behaved plugin can take more than half a second
        // to be scheduled and exit, and this is about leaks, not timing.
        let text = format!(
            "[plugins]\nmanifest_dirs = [\"plugins\"]\n\
             [storage]\npath = \"{database}\"\n\
             [api]\nsocket = \"api.sock\"\n\
             [sandbox]\nwork_root = \"var/runs\"\nuid_min = {uid_min}\nuid_count = {UIDS_PER_HOME}\n\
             [limits]\ncancel_grace_ms = 2000\n{extra}"
        );
        std::fs::write(&config_path, text).map_err(io_error("cannot write", &config_path))?;
        Ok(Home {
            socket: dir.path().join("api.sock"),
            database: dir.path().join(database),
            work_root: dir.path().join("var/runs"),
            uids: uid_min..uid_min + UIDS_PER_HOME,
            config_path,
            dir,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Installs `executable` as plugin `name` (a detector) the way an operator
    /// would: copied beside a manifest carrying its code hash.
    pub fn install(
        &self,
        name: &str,
        executable: &Path,
        sandbox: Value,
        config_schema: Value,
    ) -> Result<PathBuf, HarnessError> {
        let dir = self.path().join("plugins").join(name);
        std::fs::create_dir_all(&dir).map_err(io_error("cannot create", &dir))?;
        let file_name = executable
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        let target = dir.join(&file_name);
        std::fs::copy(executable, &target).map_err(io_error("cannot copy a plugin to", &target))?;
        let hash = secflow_trust::hash_file(&target).map_err(|e| HarnessError::Hash {
            path: target.clone(),
            reason: e.to_string(),
        })?;
        let manifest = json!({
            "name": name,
            "version": "1.0.0",
            "description": "soak plugin",
            "author": "secflow soak",
            "category": "detector",
            "entrypoint": file_name,
            "dependencies": [],
            "config_schema": config_schema,
            "code_hash": hash,
            "signature_type": "sha256",
            "sandbox": sandbox,
        });
        let path = dir.join("manifest.json");
        std::fs::write(&path, manifest.to_string()).map_err(io_error("cannot write", &path))?;
        Ok(target)
    }
}

/// A running `secflowd`, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `secflowd` on `home` and waits until it answers `system.health`.
    pub fn start(secflowd: &Path, home: &Home) -> Result<Daemon, HarnessError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let log = home.path().join(format!("secflowd-{stamp}.log"));
        let out = std::fs::File::create(&log).map_err(io_error("cannot create", &log))?;
        let err = out.try_clone().map_err(io_error("cannot open", &log))?;
        let child = Command::new(secflowd)
            .arg("--config")
            .arg(&home.config_path)
            .env_remove("SECFLOW_CONFIG")
            .env("SECFLOW_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_error("cannot start", secflowd))?;
        let mut daemon = Daemon {
            pid: child.id(),
            child: Some(child),
            socket: home.socket.clone(),
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut rpc) = Rpc::connect(&daemon.socket) {
                if rpc.call("system.health", json!({})).is_ok() {
                    return Ok(daemon);
                }
            }
            let exited = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                daemon.child = None;
                return Err(daemon.start_error(format!("it exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(daemon.start_error(format!("no answer within {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_error(&self, reason: String) -> HarnessError {
        HarnessError::Start {
            socket: self.socket.clone(),
            reason,
            log: self.log(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A new connection to the daemon's socket.
    pub fn rpc(&self) -> Result<Rpc, RpcError> {
        Rpc::connect(&self.socket)
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (graceful shutdown), then waits up to 60 s for the exit.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill has no memory preconditions; the pid is our child, not
        // yet reaped (we still hold its `Child`).
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("api connection failed")]
    Io(#[from] std::io::Error),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon answered something that is not a JSON-RPC response: {0}")]
    Garbled(String),
    #[error("the daemon answered with error {0}")]
    Remote(Value),
}

/// A JSON-RPC 2.0 client: one object per line, one call at a time.
#[derive(Debug)]
pub struct Rpc {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Rpc {
    /// Connects with a 120 s read timeout (a run through `runs.execute` may
    /// take long under load).
    pub fn connect(path: &Path) -> Result<Rpc, RpcError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Rpc {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 1,
        })
    }

    /// Calls `method` and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.writer.write_all(format!("{line}\n").as_bytes())?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(RpcError::Closed);
        }
        let message: Value =
            serde_json::from_str(&answer).map_err(|_| RpcError::Garbled(answer.clone()))?;
        if message["id"] != json!(id) {
            return Err(RpcError::Garbled(answer));
        }
        match message.get("error") {
            Some(error) => Err(RpcError::Remote(error.clone())),
            None => Ok(message["result"].clone()),
        }
    }

    /// Every finding id of `run_id`, through `findings.query` pages.
    pub fn finding_ids(&mut self, run_id: &str) -> Result<Vec<i64>, RpcError> {
        let mut ids = Vec::new();
        let mut after: Option<Value> = None;
        loop {
            let mut params = json!({"run_id": run_id, "limit": 1000});
            if let Some(after) = &after {
                params["after"] = after.clone();
            }
            let page = self.call("findings.query", params)?;
            let findings = page["findings"].as_array().cloned().unwrap_or_default();
            ids.extend(findings.iter().filter_map(|f| f["id"].as_i64()));
            match page.get("next") {
                Some(next) if !next.is_null() && !findings.is_empty() => after = Some(next.clone()),
                _ => return Ok(ids),
            }
        }
    }
}
