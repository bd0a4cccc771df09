//! The daemon's promises, end to end: the real `secflowd` binary on a temp
//! socket, driven by a JSON-RPC client written here (contracts §2) and by the
//! `secflow` client; shutdown, crash recovery, socket activation and the
//! systemd units.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const DETECTOR: &str = env!("CARGO_BIN_EXE_fixture-detector");
const SLEEPER: &str = env!("CARGO_BIN_EXE_fixture-sleeper");

/// A uid and gid no account uses (nobody/nogroup on Debian).
const OUTSIDER: u32 = 65534;

/// A running `secflowd`, killed if the test ends without stopping it.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `secflowd` on the bed's config (whose `api.socket` is
    /// `<bed>/api.sock`) and waits until it answers.
    fn start(bed: &TestBed) -> Daemon {
        Daemon::spawn(bed, Command::new(workspace_bin("secflowd")))
    }

    fn spawn(bed: &TestBed, mut command: Command) -> Daemon {
        let log = bed.path().join(format!(
            "secflowd-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = command
            .arg("--config")
            .arg(&bed.config_path)
            .env_remove("SECFLOW_CONFIG")
            .env("SECFLOW_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("secflowd starts");
        let mut daemon = Daemon {
            child: Some(child),
            socket: bed.path().join("api.sock"),
            log,
        };
        daemon.wait_until_serving();
        daemon
    }

    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Rpc::answered(&self.socket).is_some() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "secflowd exited with {status} before serving:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "secflowd did not serve within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn rpc(&self) -> Rpc {
        Rpc::connect(&self.socket)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our own child,
        // not yet reaped (we hold its `Child`).
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits for the daemon to exit (at most 60 s).
    fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "secflowd did not exit within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A JSON-RPC 2.0 client over the socket: one object per line.
struct Rpc {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Rpc {
    fn try_connect(path: &Path) -> std::io::Result<Rpc> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Rpc {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 1,
        })
    }

    /// A connection on which `system.health` was answered, if the daemon
    /// takes one now. A daemon that refuses it may close it before the
    /// request is written or read (EPIPE, ECONNRESET): that is "not now" too.
    fn answered(path: &Path) -> Option<Rpc> {
        let mut rpc = Rpc::try_connect(path).ok()?;
        let line = json!({"jsonrpc": "2.0", "id": 0, "method": "system.health", "params": {}});
        rpc.writer.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        match rpc.reader.read_line(&mut reply) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
        let reply: Value = serde_json::from_str(&reply).ok()?;
        reply.get("result").is_some().then_some(rpc)
    }

    fn connect(path: &Path) -> Rpc {
        Rpc::try_connect(path)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()))
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Sends a request and returns its id.
    fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(format!("{line}\n").as_bytes());
        id
    }

    /// The next message; `None` at end of stream.
    fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("the daemon writes JSON lines")),
            Err(e) => panic!("reading an answer failed: {e}"),
        }
    }

    /// The answer to `id` (answers to other ids are not expected here).
    fn answer(&mut self, id: u64) -> Result<Value, Value> {
        let message = self.read().expect("an answer before the end of stream");
        assert_eq!(message["jsonrpc"], "2.0", "{message}");
        assert_eq!(message["id"], json!(id), "{message}");
        match message.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(message["result"].clone()),
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.send(method, params);
        self.answer(id)
    }

    fn ok(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }
}

/// A bed whose config puts the API socket at `<bed>/api.sock`.
fn daemon_bed(extra: &str) -> TestBed {
    TestBed::with_config(&format!("[api]\nsocket = \"api.sock\"\n{extra}"))
}

fn install_sleeper(bed: &TestBed) {
    bed.install_fixture("sleeper", SLEEPER);
}

/// Waits until `run_id` has `count` findings stored.
fn wait_for_findings(rpc: &mut Rpc, run_id: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = rpc.ok("findings.query", json!({"run_id": run_id}));
        if page["findings"].as_array().unwrap().len() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} did not store {count} findings: {page}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn secflow(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("secflow"))
        .args(args)
        .env_remove("SECFLOW_CONFIG")
        .env_remove("SECFLOW_SOCKET")
        .output()
        .expect("secflow runs")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_api_method_answers_over_the_socket() {
    let bed = daemon_bed("[host]\nname = \"scan-api\"\n");
    bed.install_fixture("detector", DETECTOR);
    let daemon = Daemon::start(&bed);
    let mut rpc = daemon.rpc();

    let health = rpc.ok("system.health", Value::Null);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_ms"].as_u64().is_some(), "{health}");
    assert_eq!(health["plugins"]["active"], 1, "{health}");
    assert_eq!(health["active_runs"], 0, "{health}");
    assert!(health["isolation"].is_object(), "{health}");

    let plugins = rpc.ok("plugins.list", json!({}));
    assert_eq!(plugins[0]["name"], "detector");
    assert_eq!(plugins[0]["status"], "active");
    assert_eq!(plugins[0]["category"], "detector");
    assert_eq!(plugins[0]["network"], false);
    assert!(plugins[0]["manifest_path"]
        .as_str()
        .unwrap()
        .ends_with("manifest.json"));

    let record = rpc.ok(
        "runs.execute",
        json!({"plugin": "detector", "config": {"count": 3}, "timeout_ms": 30000,
               "context": {"workflow_id": "wf-1", "node_id": "scan"}}),
    );
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["findings"], 3);
    assert_eq!(record["workflow_id"], "wf-1");
    assert_eq!(record["node_id"], "scan");
    assert_eq!(record["outputs"]["emitted"], 3);
    let executed = record["run_id"].as_str().unwrap().to_string();

    let started = rpc.ok(
        "runs.start",
        json!({"plugin": "detector", "config": {"count": 2}}),
    );
    let run_id = started["run_id"].as_str().unwrap().to_string();
    let waited = rpc.ok("runs.wait", json!({"run_id": run_id}));
    assert_eq!(waited["status"], "succeeded", "{waited}");
    let got = rpc.ok("runs.get", json!({"run_id": run_id}));
    assert_eq!(got, waited, "runs.get of an ended run is its stored record");
    let cancelled_late = rpc.ok("runs.cancel", json!({"run_id": run_id}));
    assert_eq!(
        cancelled_late["status"], "succeeded",
        "cancelling an ended run changes nothing"
    );

    let runs = rpc.ok("runs.list", json!({"limit": 10, "plugin": "detector"}));
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert_eq!(runs[0]["run_id"], json!(run_id), "newest first");
    let none = rpc.ok("runs.list", json!({"status": "failed"}));
    assert_eq!(none, json!([]));

    let page = rpc.ok("findings.query", json!({"run_id": executed, "limit": 2}));
    assert_eq!(page["findings"].as_array().unwrap().len(), 2);
    let next = page["next"].as_i64().expect("a next cursor for the rest");
    let rest = rpc.ok(
        "findings.query",
        json!({"run_id": executed, "limit": 2, "after": next}),
    );
    assert_eq!(rest["findings"].as_array().unwrap().len(), 1);
    assert_eq!(rest["findings"][0]["plugin"]["name"], "detector");
    let severe = rpc.ok(
        "findings.query",
        json!({"run_id": executed, "min_severity": "medium"}),
    );
    assert_eq!(
        severe["findings"].as_array().unwrap().len(),
        1,
        "findings 1..3 are info, low, medium"
    );
    let on_host = rpc.ok("findings.query", json!({"host": "scan-api"}));
    assert_eq!(
        on_host["findings"].as_array().unwrap().len(),
        3,
        "{on_host}"
    );
    assert_eq!(on_host["findings"][0]["hosts"], json!(["scan-api"]));
    let elsewhere = rpc.ok("findings.query", json!({"host": "elsewhere"}));
    assert_eq!(elsewhere["findings"], json!([]));

    let telemetry = rpc.ok("telemetry.query", json!({"run_id": executed}));
    assert_eq!(telemetry[0]["event"], "plugin_executed");
    assert_eq!(telemetry[0]["findings_processed"], 3);

    let revoked = rpc.ok(
        "plugins.revoke",
        json!({"name": "detector", "reason": "under review"}),
    );
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["reason"], "under review");
    let refused = rpc.ok("runs.execute", json!({"plugin": "detector"}));
    assert_eq!(refused["status"], "rejected");
    assert_eq!(refused["error"]["kind"], "plugin_revoked");
    let reinstated = rpc.ok("plugins.reinstate", json!({"name": "detector"}));
    assert_eq!(reinstated["status"], "active");

    let audit = rpc.ok("audit.query", json!({"event": "plugin_revoked"}));
    assert_eq!(audit[0]["plugin"], "detector");
    assert_eq!(
        audit[0]["actor_uid"], 0,
        "the caller's uid (SO_PEERCRED) is on the audit trail"
    );
    let invoked = rpc.ok(
        "audit.query",
        json!({"event": "plugin_invoked", "plugin": "detector"}),
    );
    assert_eq!(invoked.as_array().unwrap().len(), 2);
    assert_eq!(invoked[0]["actor_uid"], 0);

    std::fs::remove_dir_all(bed.plugin_dir("detector")).unwrap();
    bed.install_fixture("second", DETECTOR);
    let reloaded = rpc.ok("plugins.reload", json!({}));
    assert_eq!(reloaded["active"], json!(["second"]), "{reloaded}");
    assert_eq!(reloaded["removed"], json!(["detector"]), "{reloaded}");
    assert_eq!(reloaded["rejected"], json!([]), "{reloaded}");

    let unknown = rpc
        .call("runs.start", json!({"plugin": "detector"}))
        .unwrap_err();
    assert_eq!(unknown["code"], -32014, "{unknown}");
    let unknown = rpc
        .call("runs.get", json!({"run_id": "no-such-run"}))
        .unwrap_err();
    assert_eq!(unknown["code"], -32014, "{unknown}");
}

#[test]
fn one_connection_has_many_requests_in_flight_answered_as_they_complete() {
    let bed = daemon_bed("");
    bed.install_fixture("detector", DETECTOR);
    let daemon = Daemon::start(&bed);
    let mut rpc = daemon.rpc();

    let slow = rpc.send(
        "runs.execute",
        json!({"plugin": "detector", "config": {"count": 4, "delay_ms": 300}}),
    );
    // Requests run concurrently: wait (elsewhere) until the run executes.
    let mut watcher = daemon.rpc();
    let deadline = Instant::now() + Duration::from_secs(10);
    while watcher.ok("system.health", json!({}))["active_runs"] != 1 {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let quick = rpc.send("system.health", json!({}));
    let first = rpc.read().unwrap();
    assert_eq!(
        first["id"],
        json!(quick),
        "health is answered while the run goes on: {first}"
    );
    assert_eq!(first["result"]["active_runs"], 1, "{first}");
    let second = rpc.read().unwrap();
    assert_eq!(second["id"], json!(slow));
    assert_eq!(second["result"]["status"], "succeeded", "{second}");

    // A request arriving in pieces survives another one completing meanwhile.
    let run = rpc.send(
        "runs.execute",
        json!({"plugin": "detector", "config": {"count": 1}}),
    );
    rpc.send_raw(br#"{"jsonrpc":"2.0","id":"split","#);
    let done = rpc.read().unwrap();
    assert_eq!(done["id"], json!(run), "{done}");
    rpc.send_raw(b"\"method\":\"system.health\"}\n");
    let split = rpc.read().unwrap();
    assert_eq!(split["id"], "split", "{split}");
    assert!(split["result"]["version"].is_string(), "{split}");
}

#[test]
fn runs_beyond_the_concurrency_limit_wait_in_the_queue() {
    let bed = daemon_bed("[runs]\nmax_concurrent = 1\nmax_queued = 1\n");
    bed.install_fixture("detector", DETECTOR);
    let daemon = Daemon::start(&bed);
    let mut rpc = daemon.rpc();

    let params = json!({"plugin": "detector", "config": {"count": 3, "delay_ms": 200}});
    let first = rpc.ok("runs.start", params.clone())["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = rpc.ok("runs.start", params)["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The first takes the one slot as soon as its task runs; the second waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = rpc.ok("system.health", json!({}));
        if health["active_runs"] == 1 && health["queued_runs"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never one running and one queued: {health}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let full = rpc
        .call("runs.start", json!({"plugin": "detector"}))
        .unwrap_err();
    assert_eq!(full["code"], -32013, "the queue holds one run: {full}");
    let queued = rpc.ok("runs.get", json!({"run_id": second}));
    assert_eq!(queued["status"], "running", "a queued run is not ended");

    let first = rpc.ok("runs.wait", json!({"run_id": first}));
    let second = rpc.ok("runs.wait", json!({"run_id": second}));
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(second["status"], "succeeded", "{second}");
    assert!(
        second["started_at"].as_str().unwrap() >= first["finished_at"].as_str().unwrap(),
        "the second run started after the first ended: {first} {second}"
    );
}

#[test]
fn cancel_ends_a_running_run_keeping_its_findings_and_a_queued_one_before_it_starts() {
    let bed = daemon_bed("[runs]\nmax_concurrent = 1\n");
    install_sleeper(&bed);
    let daemon = Daemon::start(&bed);
    let mut rpc = daemon.rpc();

    let running = rpc.ok(
        "runs.start",
        json!({"plugin": "sleeper", "config": {"before_sleep": 2}}),
    )["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let queued = rpc.ok("runs.start", json!({"plugin": "sleeper"}))["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for_findings(&mut rpc, &running, 2);

    let record = rpc.ok("runs.cancel", json!({"run_id": queued}));
    assert_eq!(record["status"], "cancelled", "{record}");
    assert_eq!(record["error"]["kind"], "cancelled");
    assert_eq!(record["findings"], 0);

    let record = rpc.ok("runs.cancel", json!({"run_id": running}));
    assert_eq!(record["status"], "cancelled", "{record}");
    assert_eq!(record["partial"], true);
    assert_eq!(
        record["findings"], 2,
        "findings sent before the cancel are kept"
    );
    let stored = rpc.ok("runs.get", json!({"run_id": running}));
    assert_eq!(stored["status"], "cancelled");
    let health = rpc.ok("system.health", json!({}));
    assert_eq!(health["active_runs"], 0, "{health}");
}

#[test]
fn bad_json_unknown_methods_bad_params_and_oversized_requests_get_errors_and_the_connection_keeps_serving(
) {
    let bed = daemon_bed("max_request_bytes = 4096\n");
    let daemon = Daemon::start(&bed);
    let mut rpc = daemon.rpc();

    rpc.send_raw(b"{this is not json\n");
    let answer = rpc.read().unwrap();
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
    assert_eq!(answer["id"], Value::Null);

    rpc.send_raw(b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"system.health\"}]\n");
    assert_eq!(rpc.read().unwrap()["error"]["code"], -32600);
    rpc.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":77,\"method\":42}\n");
    let answer = rpc.read().unwrap();
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert_eq!(answer["id"], 77);

    let err = rpc.call("runs.teleport", json!({})).unwrap_err();
    assert_eq!(err["code"], -32601, "{err}");
    assert!(err["message"].as_str().unwrap().contains("runs.teleport"));

    let err = rpc.call("runs.get", json!({"run": "x"})).unwrap_err();
    assert_eq!(err["code"], -32602, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("run"),
        "names the field: {err}"
    );
    let err = rpc
        .call("findings.query", json!({"min_severity": "dire"}))
        .unwrap_err();
    assert_eq!(err["code"], -32602, "{err}");

    let huge = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"system.health\",\"params\":{{\"pad\":\"{}\"}}}}\n",
        "x".repeat(64 << 10)
    );
    rpc.send_raw(huge.as_bytes());
    let answer = rpc.read().unwrap();
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_request_bytes"),
        "{answer}"
    );

    let health = rpc.ok("system.health", json!({}));
    assert_eq!(health["active_runs"], 0, "the same connection still serves");
    let mut other = daemon.rpc();
    other.ok("system.health", json!({}));
}

#[test]
fn a_connection_beyond_max_connections_is_answered_32011_and_closed() {
    let bed = daemon_bed("max_connections = 1\n");
    let daemon = Daemon::start(&bed);
    // The slot frees once the daemon has seen a closed connection go.
    let take_the_slot = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(rpc) = Rpc::answered(&daemon.socket) {
                return rpc;
            }
            assert!(Instant::now() < deadline, "the one slot never freed");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut first = take_the_slot();
    let mut second = daemon.rpc();
    let refusal = second.read().expect("an answer before the close");
    assert_eq!(refusal["error"]["code"], -32011, "{refusal}");
    assert_eq!(refusal["id"], Value::Null);
    assert!(second.read().is_none(), "then the connection is closed");
    first.ok("system.health", json!({}));
    drop(first);
    take_the_slot();
}

#[test]
fn a_peer_whose_uid_is_not_allowed_is_answered_32010_audited_and_the_daemon_serves_on() {
    let bed = daemon_bed("");
    let daemon = Daemon::start(&bed);
    // Let the outsider reach the socket (as a member of the socket's group
    // would) so that the daemon's own check is what refuses it.
    std::fs::set_permissions(bed.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::os::unix::fs::chown(&daemon.socket, None, Some(OUTSIDER)).unwrap();

    let socket = daemon.socket.to_str().unwrap().to_string();
    let out = Command::new(workspace_bin("secflow"))
        .args(["--socket", &socket, "--json", "plugins"])
        .env_remove("SECFLOW_CONFIG")
        .uid(OUTSIDER)
        .gid(OUTSIDER)
        .output()
        .expect("secflow runs as the outsider");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("-32010"), "{message}");
    assert!(message.contains(&format!("uid {OUTSIDER}")), "{message}");
    assert!(message.contains(&socket), "{message}");
    assert!(out.stdout.is_empty());

    let mut rpc = daemon.rpc();
    let audit = rpc.ok("audit.query", json!({"event": "api_peer_rejected"}));
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit[0]["actor_uid"], OUTSIDER);
    assert_eq!(audit[0]["security"], true);
}

#[test]
fn the_secflow_client_goes_through_the_daemon_with_the_same_output_as_local() {
    let bed = daemon_bed("");
    bed.install_fixture("detector", DETECTOR);
    let daemon = Daemon::start(&bed);
    let config = bed.config_path.to_str().unwrap();

    let out = secflow(&[
        "--config", config, "--json", "run", "detector", "--set", "count=5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["findings"], 5);
    let run_id = record["run_id"].as_str().unwrap();
    let mut rpc = daemon.rpc();
    let audit = rpc.ok("audit.query", json!({"event": "plugin_invoked"}));
    assert_eq!(audit[0]["run_id"], json!(run_id), "the daemon ran it");

    let human = secflow(&["--config", config, "run", "detector", "--set", "count=2"]);
    assert_eq!(human.status.code(), Some(0), "{}", stderr(&human));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("succeeded") && text.contains("Fixture finding 2"),
        "{text}"
    );

    for args in [
        vec!["--json", "runs", "show", run_id],
        vec!["runs", "--limit", "5"],
        vec!["--json", "findings", "--run", run_id],
        vec!["findings", "--plugin", "detector", "--min-severity", "low"],
        vec!["findings", "--format", "ndjson"],
        vec!["--json", "telemetry"],
        vec!["audit", "--event", "run_rejected"],
    ] {
        let mut full = vec!["--config", config];
        full.extend(&args);
        let remote = secflow(&full);
        full.push("--local");
        let local = secflow(&full);
        assert_eq!(
            remote.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&remote)
        );
        assert_eq!(local.status.code(), Some(0), "{args:?}: {}", stderr(&local));
        assert_eq!(
            String::from_utf8_lossy(&remote.stdout),
            String::from_utf8_lossy(&local.stdout),
            "{args:?} prints the same through the daemon and locally"
        );
    }

    // An embedded supervisor would run plugins on the daemon's database (and
    // mark its running runs interrupted): it is refused while the daemon lives.
    let embedded = secflow(&["--config", config, "plugins", "--local"]);
    assert_eq!(embedded.status.code(), Some(1), "{}", stderr(&embedded));
    assert!(
        stderr(&embedded).contains("in use by another supervisor"),
        "{}",
        stderr(&embedded)
    );
    let remote = secflow(&["--config", config, "plugins"]);
    assert_eq!(remote.status.code(), Some(0), "{}", stderr(&remote));

    let sarif = secflow(&["--config", config, "findings", "--format", "sarif"]);
    assert_eq!(sarif.status.code(), Some(0), "{}", stderr(&sarif));
    let log: Value = serde_json::from_slice(&sarif.stdout).unwrap();
    assert_eq!(log["version"], "2.1.0");
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "one result per stored finding");
    assert!(results
        .iter()
        .all(|r| r["partialFingerprints"]["secflowFingerprint/v1"].is_string()));
    assert_eq!(
        log["runs"][0]["tool"]["driver"]["rules"][0]["id"],
        "fixture.rule"
    );

    let missing = secflow(&["--config", config, "run", "nothing-here"]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("nothing-here"));
    let missing = secflow(&["--config", config, "runs", "show", "no-such-run"]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
}

#[test]
fn the_client_exits_3_naming_the_socket_when_no_daemon_listens() {
    let bed = daemon_bed("");
    let socket = bed.path().join("api.sock");
    let config = bed.config_path.to_str().unwrap();
    for args in [
        vec!["--config", config, "plugins"],
        vec!["--config", config, "run", "detector"],
        vec!["--config", config, "findings", "--format", "sarif"],
    ] {
        let out = secflow(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&socket.display().to_string()),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let elsewhere = bed.path().join("elsewhere.sock");
    let out = secflow(&["--socket", elsewhere.to_str().unwrap(), "runs"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains(elsewhere.to_str().unwrap()));
}

#[test]
fn sigterm_drains_cancels_the_running_run_answers_its_waiter_and_exits_0() {
    let bed = daemon_bed("");
    install_sleeper(&bed);
    let mut daemon = Daemon::start(&bed);
    let mut rpc = daemon.rpc();
    let run_id = rpc.ok(
        "runs.start",
        json!({"plugin": "sleeper", "config": {"before_sleep": 3}}),
    )["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for_findings(&mut rpc, &run_id, 3);
    let waiter = rpc.send("runs.wait", json!({"run_id": run_id}));

    daemon.signal(libc::SIGTERM);
    let record = rpc
        .answer(waiter)
        .expect("the waiter gets the final record");
    assert_eq!(record["status"], "cancelled", "{record}");
    assert_eq!(record["findings"], 3);
    let status = daemon.wait();
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(
        !daemon.socket.exists(),
        "the socket file it bound is removed"
    );

    let stored = bed.secflow(&["--json", "runs", "show", &run_id, "--local"]);
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert_eq!(stored["status"], "cancelled", "recorded before exit");
    assert_eq!(stored["error"]["kind"], "cancelled");
}

#[test]
fn sighup_reloads_the_plugins() {
    let bed = daemon_bed("");
    let daemon = Daemon::start(&bed);
    let mut rpc = daemon.rpc();
    assert_eq!(rpc.ok("plugins.list", json!({})), json!([]));
    bed.install_fixture("detector", DETECTOR);
    daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rpc
        .ok("plugins.list", json!({}))
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rpc.ok("plugins.list", json!({}))[0]["status"], "active");
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_is_left_alone() {
    let bed = daemon_bed("");
    let socket = bed.path().join("api.sock");
    // A socket file nobody listens on, as a killed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let daemon = Daemon::start(&bed);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket file is created 0660");

    let second = Command::new(workspace_bin("secflowd"))
        .arg("--config")
        .arg(&bed.config_path)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("another daemon is already serving"),
        "{}",
        stderr(&second)
    );
    daemon.rpc().ok("system.health", json!({}));
}

#[test]
fn a_daemon_killed_mid_run_leaves_its_committed_findings_an_interrupted_run_and_no_plugin() {
    let bed = daemon_bed("");
    install_sleeper(&bed);
    let plugin_exe =
        std::fs::canonicalize(bed.plugin_dir("sleeper").join("fixture-sleeper")).unwrap();
    let mut daemon = Daemon::start(&bed);
    let mut rpc = daemon.rpc();
    let run_id = rpc.ok(
        "runs.start",
        json!({"plugin": "sleeper", "config": {"before_sleep": 5}}),
    )["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for_findings(&mut rpc, &run_id, 5);
    assert!(
        !processes_running(&plugin_exe).is_empty(),
        "the plugin runs before the kill"
    );

    daemon.signal(libc::SIGKILL);
    daemon.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_running(&plugin_exe);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "plugin processes outlived the daemon: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let database = bed.path().join("var/secflow.db");
    let integrity = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])")
        .arg(&database)
        .output()
        .expect("python3 runs (CI installs it)");
    assert_eq!(
        String::from_utf8_lossy(&integrity.stdout).trim(),
        "ok",
        "{}",
        stderr(&integrity)
    );

    let daemon = Daemon::start(&bed);
    let mut rpc = daemon.rpc();
    let record = rpc.ok("runs.get", json!({"run_id": run_id}));
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["error"]["kind"], "interrupted", "{record}");
    let page = rpc.ok("findings.query", json!({"run_id": run_id}));
    assert_eq!(
        page["findings"].as_array().unwrap().len(),
        5,
        "every committed finding survived: {page}"
    );
}

/// Pids of the processes whose executable is `exe`.
fn processes_running(exe: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(entry.path().join("exe")) {
            let target = target.to_string_lossy();
            let target = target.trim_end_matches(" (deleted)");
            if Path::new(target) == exe {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Whether a host tool the test needs is missing: fine on a developer's
/// machine (the test says why it does nothing), a failure in CI.
fn tool_missing(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return false;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{tool} is missing in CI; .ci/run installs it (apt-get install systemd)"
    );
    eprintln!("skipping: {tool} is not installed on this machine");
    true
}

#[test]
fn systemd_socket_activate_hands_the_socket_to_the_daemon() {
    if tool_missing("systemd-socket-activate") {
        return;
    }
    // The config names a different path: the daemon must serve the socket it
    // was handed, not bind its own.
    let bed = TestBed::with_config("[api]\nsocket = \"configured.sock\"\n");
    bed.install_fixture("detector", DETECTOR);
    let activated = bed.path().join("activated.sock");
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg("-l")
        .arg(&activated)
        .arg(workspace_bin("secflowd"));
    let log = bed.path().join("activate.log");
    let child = command
        .arg("--config")
        .arg(&bed.config_path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut daemon = Daemon {
        child: Some(child),
        socket: activated.clone(),
        log,
    };
    daemon.wait_until_serving();
    let mut rpc = daemon.rpc();
    let record = rpc.ok(
        "runs.execute",
        json!({"plugin": "detector", "config": {"count": 1}}),
    );
    assert_eq!(record["status"], "succeeded", "{record}");
    assert!(
        !bed.path().join("configured.sock").exists(),
        "the daemon did not bind api.socket itself"
    );
    assert!(
        daemon.log().contains("using the socket passed by systemd"),
        "{}",
        daemon.log()
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log());
}

#[test]
fn the_systemd_units_verify_clean_and_the_service_exposure_is_below_4() {
    if tool_missing("systemd-analyze") {
        return;
    }
    let units = workspace_root().join("systemd");
    let dir = tempfile::tempdir().unwrap();
    // `verify` checks that ExecStart exists: point it at the built binary.
    let service = std::fs::read_to_string(units.join("secflowd.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/secflowd "));
    let service = service.replace(
        "ExecStart=/usr/bin/secflowd ",
        &format!("ExecStart={} ", workspace_bin("secflowd").display()),
    );
    std::fs::write(dir.path().join("secflowd.service"), service).unwrap();
    std::fs::copy(
        units.join("secflowd.socket"),
        dir.path().join("secflowd.socket"),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("secflowd.service"))
        .arg(dir.path().join("secflowd.socket"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", stderr(&verify));
    assert_eq!(stderr(&verify).trim(), "", "verify is clean");

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(units.join("secflowd.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for secflowd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}{}", stderr(&security)));
    assert!(score < 4.0, "exposure {score} is not below 4.0:\n{text}");
}
