//! The real `secflowd` on a bench home's socket, a blocking JSON-RPC client for
//! it, and its memory as the kernel reports it.
//!
//! The client is deliberately plain (one request, then its answer, on a std
//! Unix stream): the latency it measures is the daemon's plus one round trip,
//! without a client runtime in between.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::home::BenchHome;
use crate::BenchError;

/// A running `secflowd`; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `secflowd` on `home` and waits until it answers `system.health`.
    pub fn start(secflowd: &Path, home: &BenchHome) -> Result<Daemon, BenchError> {
        let log = home.path().join("secflowd.log");
        let log_file = std::fs::File::create(&log).map_err(|source| BenchError::Io {
            what: format!("creating {}", log.display()),
            source,
        })?;
        let child = Command::new(secflowd)
            .arg("--config")
            .arg(&home.config_path)
            .args(["--log-format", "json"])
            .env("SECFLOW_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|source| BenchError::Io {
                what: format!("starting {}", secflowd.display()),
                source,
            })?;
        let mut daemon = Daemon {
            child,
            socket: home.socket(),
            log,
        };
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(mut rpc) = Rpc::connect(&daemon.socket) {
                if rpc.call("system.health", Value::Null).is_ok() {
                    return Ok(daemon);
                }
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(BenchError::Daemon(format!(
                    "secflowd exited with {status} before serving: {}",
                    daemon.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(BenchError::Daemon(format!(
            "secflowd did not serve within 60 s: {}",
            daemon.log_text()
        )))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> Result<Rpc, BenchError> {
        Rpc::connect(&self.socket)
    }

    /// The resident set now and its peak so far.
    pub fn memory(&self) -> Result<Memory, BenchError> {
        Memory::of(self.pid())
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child this value owns and has not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's memory (`/proc/<pid>/status`), in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Result<Memory, BenchError> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            what: format!("reading {path}"),
            source,
        })?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        })
    }

    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// A JSON-RPC error answer or a broken connection.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("the daemon answered {method} with error {code}: {message}")]
    Answer {
        method: String,
        code: i64,
        message: String,
    },
    #[error("the api connection failed during {method}")]
    Io {
        method: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon's answer to {method} is not a JSON-RPC response: {detail}")]
    Malformed { method: String, detail: String },
}

/// One connection to the daemon's API.
#[derive(Debug)]
pub struct Rpc {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    line: String,
}

impl Rpc {
    pub fn connect(socket: &Path) -> Result<Rpc, BenchError> {
        let stream = UnixStream::connect(socket).map_err(|source| BenchError::Io {
            what: format!("connecting to {}", socket.display()),
            source,
        })?;
        let writer = stream.try_clone().map_err(|source| BenchError::Io {
            what: "cloning the api stream".into(),
            source,
        })?;
        Ok(Rpc {
            reader: BufReader::with_capacity(256 << 10, stream),
            writer,
            next_id: 1,
            line: String::with_capacity(4096),
        })
    }

    /// Sends one request and waits for its answer's `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let result = self.call_text(method, params)?;
        serde_json::from_str(result.get()).map_err(|e| RpcError::Malformed {
            method: method.to_string(),
            detail: e.to_string(),
        })
    }

    /// Sends one request and waits for its answer's `result`, as JSON text:
    /// the answer line is checked to be JSON but not built into a tree (what
    /// the latency section times is the daemon's round trip, not a tree
    /// built by a client sharing its cores).
    pub fn call_text(&mut self, method: &str, params: Value) -> Result<Box<RawValue>, RpcError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            request["params"] = params;
        }
        let io = |source| RpcError::Io {
            method: method.to_string(),
            source,
        };
        let malformed = |detail: String| RpcError::Malformed {
            method: method.to_string(),
            detail,
        };
        let mut text = request.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).map_err(io)?;
        loop {
            self.line.clear();
            let n = self.reader.read_line(&mut self.line).map_err(io)?;
            if n == 0 {
                return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let answer: BTreeMap<&str, &RawValue> =
                serde_json::from_str(&self.line).map_err(|e| malformed(e.to_string()))?;
            if answer.get("id").map(|v| v.get()) != Some(id.to_string().as_str()) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                let error: Value =
                    serde_json::from_str(error.get()).map_err(|e| malformed(e.to_string()))?;
                return Err(RpcError::Answer {
                    method: method.to_string(),
                    code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                });
            }
            return match answer.get("result") {
                Some(result) => Ok((*result).to_owned()),
                None => Err(malformed("the answer has neither result nor error".into())),
            };
        }
    }
}
