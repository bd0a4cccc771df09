//! Target-scoped egress through the real supervisor: a detector with
//! `network: "targets"` reaches its run's targets and nothing else, whatever
//! route its own code takes, and every refusal is on the run's record and in
//! the audit trail; nothing of the run's rules survives it.
//!
//! The hostile plugin is `fixture-hostile` (tests/plugins); the listeners are
//! on loopback addresses only. These need root and nftables (`scripts/setup`
//! installs it); outside CI a host without them skips, saying why.

mod support;

use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::sync::OnceLock;

use secflow_core::record::{RunRecord, RunStatus};
use secflow_core::PluginStatus;
use secflow_soak::Binaries;
use serde_json::{json, Map, Value};
use support::*;

const HOSTILE: &str = env!("CARGO_BIN_EXE_fixture-hostile");
/// The target of every run here (fixed by the issue).
const TARGET: &str = "127.0.0.2:8080";
const NFT_PATHS: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

fn nft_path() -> Option<&'static str> {
    NFT_PATHS
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// Whether this host can run these tests: root and the nft tool. Outside CI
/// a missing one skips (printing why); in CI it fails.
fn egress_available() -> bool {
    if !root_or_skip("the egress tests") {
        return false;
    }
    if nft_path().is_some() {
        return true;
    }
    let reason = "the egress tests need the nft tool (scripts/setup installs nftables)";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{reason}, and CI must run them"
    );
    eprintln!("skipping: {reason}");
    false
}

/// The listeners every test shares (the target's address is fixed).
struct Listeners {
    target: TcpListener,
    other_host: TcpListener,
    other_port: TcpListener,
    ipv6: TcpListener,
    udp_other_host: UdpSocket,
}

fn listeners() -> &'static Listeners {
    static L: OnceLock<Listeners> = OnceLock::new();
    L.get_or_init(|| {
        let tcp = |a: &str| TcpListener::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}"));
        let l = Listeners {
            target: tcp(TARGET),
            other_host: tcp("127.0.0.3:0"),
            other_port: tcp("127.0.0.2:0"),
            ipv6: tcp("[::1]:0"),
            udp_other_host: UdpSocket::bind("127.0.0.3:0").expect("bind udp on 127.0.0.3"),
        };
        for s in [&l.target, &l.other_host, &l.other_port, &l.ipv6] {
            s.set_nonblocking(true).unwrap();
        }
        l.udp_other_host.set_nonblocking(true).unwrap();
        l
    })
}

fn addr(l: &TcpListener) -> String {
    l.local_addr().unwrap().to_string()
}

/// Connections waiting on `listener`, accepted and counted.
fn accepted(listener: &TcpListener) -> usize {
    std::iter::from_fn(|| listener.accept().ok()).count()
}

fn install_scoped(bed: &TestBed, name: &str) {
    bed.install(Install {
        config_schema: Binaries::hostile_schema(),
        sandbox: json!({"network": "targets", "filesystem": "readonly", "timeout_seconds": 30}),
        ..Install::new(name, HOSTILE)
    });
}

fn results(record: &RunRecord) -> Map<String, Value> {
    record
        .outputs
        .get("results")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn outcome<'a>(results: &'a Map<String, Value>, key: &str) -> &'a str {
    results
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no outcome for {key}: {results:?}"))
}

fn refused(results: &Map<String, Value>, key: &str) {
    let got = outcome(results, key);
    assert!(got.starts_with("error"), "{key} got through: {results:?}");
}

fn was_refused(record: &RunRecord, destination: &str, protocol: &str, port: Option<u16>) -> bool {
    record
        .refused_egress
        .iter()
        .any(|r| r.destination == destination && r.protocol == protocol && r.port == port)
}

/// The run chains (`run_<uid>`) left in this process's egress tables for the
/// bed's uid range: none once no run is going.
fn run_chains_left(bed: &TestBed) -> Vec<String> {
    let nft = nft_path().unwrap();
    let sandbox = bed.config().sandbox;
    let uids = sandbox.uid_min..sandbox.uid_min + sandbox.uid_count;
    let out = std::process::Command::new(nft)
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain run_"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|uid| uid.parse::<u32>().is_ok_and(|u| uids.contains(&u)))
        .map(str::to_string)
        .collect()
}

/// Runs `plugin` through `secflow run --local` (the embedded supervisor,
/// with the daemon's sandbox) on the one target, with `config`.
fn run_cli(bed: &TestBed, plugin: &str, inputs: Value, config: Value) -> RunRecord {
    let input = bed.path().join(format!("{plugin}-inputs.json"));
    std::fs::write(&input, inputs.to_string()).unwrap();
    let out = bed.secflow(&[
        "--json",
        "run",
        plugin,
        "--local",
        "--input",
        input.to_str().unwrap(),
        "--config-json",
        &config.to_string(),
    ]);
    let doc = json_of(&out);
    serde_json::from_value(doc.get("run").cloned().unwrap_or(doc.clone()))
        .unwrap_or_else(|e| panic!("not a run record ({e}): {doc}"))
}

#[test]
fn a_targets_run_reaches_its_target_and_nothing_else() {
    if !egress_available() {
        return;
    }
    let l = listeners();
    let bed = TestBed::new();
    install_scoped(&bed, "scoped");
    let (other_host, other_port, ipv6) = (addr(&l.other_host), addr(&l.other_port), addr(&l.ipv6));
    let udp_other = l.udp_other_host.local_addr().unwrap().to_string();
    let metadata = "169.254.169.254:80";
    accepted(&l.target);

    let tcp = vec![TARGET, &other_host, &other_port, &ipv6, metadata];
    let record = run_cli(
        &bed,
        "scoped",
        json!({"target": TARGET}),
        json!({"attack": "connect_tcp", "targets": tcp}),
    );
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    let r = results(&record);
    assert_eq!(outcome(&r, TARGET), "ok", "the target is reachable: {r:?}");
    for blocked in [&other_host, &other_port, &ipv6, metadata] {
        refused(&r, blocked);
    }
    assert!(
        accepted(&l.target) >= 1,
        "the target saw the run's connection"
    );
    for (name, listener) in [
        ("127.0.0.3", &l.other_host),
        ("another port of the target", &l.other_port),
        ("::1", &l.ipv6),
    ] {
        assert_eq!(accepted(listener), 0, "{name} was reached");
    }
    let port = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    for (dest, a) in [
        ("127.0.0.3", &other_host),
        ("127.0.0.2", &other_port),
        ("::1", &ipv6),
    ] {
        assert!(
            was_refused(&record, dest, "tcp", port(a)),
            "{a} is not on the record: {:?}",
            record.refused_egress
        );
    }
    assert!(was_refused(&record, "169.254.169.254", "tcp", Some(80)));
    assert!(
        !was_refused(&record, "127.0.0.2", "tcp", Some(8080)),
        "the target is no refusal: {:?}",
        record.refused_egress
    );

    // A datagram (a DNS query to a resolver it was not given), a forked
    // child, a new thread: held to the same target.
    let escapes = run_cli(
        &bed,
        "scoped",
        json!({"target": TARGET}),
        json!({"attack": "connect_udp", "targets": [udp_other, "127.0.0.3:53", "[::1]:53"]}),
    );
    let r = results(&escapes);
    for blocked in [udp_other.as_str(), "127.0.0.3:53", "[::1]:53"] {
        refused(&r, blocked);
    }
    let mut buf = [0u8; 16];
    assert!(
        l.udp_other_host.recv_from(&mut buf).is_err(),
        "the datagram arrived"
    );
    assert!(was_refused(&escapes, "127.0.0.3", "udp", Some(53)));
    for attack in ["fork_connect", "thread_connect"] {
        let record = run_cli(
            &bed,
            "scoped",
            json!({"target": TARGET}),
            json!({"attack": attack, "targets": [TARGET, other_host]}),
        );
        let r = results(&record);
        assert_eq!(outcome(&r, TARGET), "ok", "{attack}: {r:?}");
        refused(&r, &other_host);
        assert!(
            was_refused(&record, "127.0.0.3", "tcp", port(&other_host)),
            "{attack}"
        );
    }
    assert_eq!(accepted(&l.other_host), 0, "127.0.0.3 was reached");

    // Raw and packet sockets: the plugin has no CAP_NET_RAW.
    let raw = run_cli(
        &bed,
        "scoped",
        json!({"target": TARGET}),
        json!({"attack": "raw_socket"}),
    );
    let r = results(&raw);
    for kind in ["raw_icmp", "raw_icmp6", "packet"] {
        refused(&r, kind);
    }

    // Each distinct destination is one audit event naming the run and plugin.
    let out = bed.secflow(&[
        "--json",
        "audit",
        "--local",
        "--event",
        "egress_refused",
        "--limit",
        "100",
    ]);
    let events = json_of(&out);
    let events = events.as_array().expect("audit events");
    let of_first: Vec<&Value> = events
        .iter()
        .filter(|e| e["run_id"] == json!(record.run_id))
        .collect();
    assert_eq!(
        of_first.len(),
        record.refused_egress.len(),
        "one event per destination: {of_first:?}"
    );
    assert!(of_first.iter().all(|e| e["plugin"] == "scoped"
        && e["security"] == true
        && e["details"]["destination"].is_string()));
    assert!(run_chains_left(&bed).is_empty(), "the runs' rules are gone");

    // Refusals revoke nothing by default.
    let out = bed.secflow(&["--json", "plugins", "--local"]);
    let listed = json_of(&out);
    let entry = listed
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "scoped"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(entry["status"], "active", "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_and_the_host_are_out_of_reach_by_sockets_abstract_sockets_or_signals() {
    if !egress_available() {
        return;
    }
    listeners();
    let bed = TestBed::new();
    install_scoped(&bed, "dialer");
    let supervisor = bed.supervisor().await;
    // The API socket's path (hidden by the mount view) and an abstract
    // socket of the host (shared with the host's network namespace, shut by
    // the Landlock scope).
    let api = bed.path().join("api.sock");
    let _api = UnixListener::bind(&api).unwrap();
    let name = format!("secflow-egress-test-{}", std::process::id());
    let abstract_listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixListener::bind_addr(&addr).unwrap()
    };
    abstract_listener.set_nonblocking(true).unwrap();
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!(TARGET));
    let unix = run_with(
        &supervisor,
        "dialer",
        json!({"attack": "unix_connect", "targets": [api.to_str().unwrap()]}),
        inputs.clone(),
        None,
    )
    .await;
    refused(&results(&unix), api.to_str().unwrap());
    let abs = run_with(
        &supervisor,
        "dialer",
        json!({"attack": "abstract_connect", "targets": [name]}),
        inputs,
        None,
    )
    .await;
    assert_eq!(abs.status, RunStatus::Succeeded, "{abs:?}");
    refused(&results(&abs), &name);
    assert!(
        abstract_listener.accept().is_err(),
        "the abstract socket was reached"
    );
    // Nor can it signal the supervisor (another uid, and outside its
    // Landlock domain).
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!(TARGET));
    let me = std::process::id().to_string();
    let kill = run_with(
        &supervisor,
        "dialer",
        json!({"attack": "signal", "targets": ["parent", me]}),
        inputs,
        None,
    )
    .await;
    assert_eq!(kill.status, RunStatus::Succeeded, "{kill:?}");
    let r = results(&kill);
    assert!(
        r.values()
            .all(|v| v.as_str().is_some_and(|s| s.starts_with("error"))),
        "a signal got through: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_cannot_widen_its_targets() {
    if !egress_available() {
        return;
    }
    let l = listeners();
    let bed = TestBed::new();
    install_scoped(&bed, "widener");
    let supervisor = bed.supervisor().await;
    // Its table: the one of this process with the bed's... any table of this
    // process will do; the plugin is refused changing every one.
    let out = std::process::Command::new(nft_path().unwrap())
        .args(["list", "tables"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let table = listing
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .find(|t| t.starts_with(&format!("secflow_egress_{}_", std::process::id())))
        .expect("the supervisor's egress table exists")
        .to_string();
    let other_host = addr(&l.other_host);
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!(TARGET));
    let record = run_with(
        &supervisor,
        "widener",
        json!({"attack": "widen", "targets": [nft_path().unwrap(), table, other_host]}),
        inputs,
        None,
    )
    .await;
    let r = results(&record);
    refused(&r, "nft");
    refused(&r, "/etc/hosts");
    refused(&r, &other_host);
    assert_eq!(accepted(&l.other_host), 0);
    // The next run of the same plugin is as scoped as the first.
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!(TARGET));
    let again = run_with(
        &supervisor,
        "widener",
        json!({"attack": "connect_tcp", "targets": [other_host]}),
        inputs,
        None,
    )
    .await;
    refused(&results(&again), &other_host);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_plugin_leaves_no_rules_behind() {
    if !egress_available() {
        return;
    }
    listeners();
    let bed = TestBed::new();
    install_scoped(&bed, "spinner");
    let supervisor = bed.supervisor().await;
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!(TARGET));
    let record = run_with(
        &supervisor,
        "spinner",
        json!({"attack": "spin"}),
        inputs,
        Some(1000),
    )
    .await;
    assert_eq!(record.status, RunStatus::TimedOut, "{record:?}");
    assert_eq!(record.signal, Some(libc::SIGKILL), "{record:?}");
    let invoked = audit_events(&supervisor, "plugin_invoked");
    let policy = &invoked
        .iter()
        .find(|e| e.run_id.as_deref() == Some(record.run_id.as_str()))
        .expect("the run's plugin_invoked event")
        .details["policy"];
    assert_eq!(policy["network"], "targets", "{policy}");
    assert!(
        policy["layers"]
            .as_array()
            .unwrap()
            .contains(&json!("egress"))
            && policy["egress"]["allows"][0]["transport"] == "tcp_udp",
        "the run was scoped to its target (tcp and udp): {policy}"
    );
    assert!(
        run_chains_left(&bed).is_empty(),
        "the run's rules outlived it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_left_by_a_dead_supervisor_are_removed_at_start() {
    if !egress_available() {
        return;
    }
    // A pid that no process has now: the table of a supervisor that crashed.
    let dead = (4_000_000..4_194_304)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let stale = format!("secflow_egress_{dead}_0");
    let nft = nft_path().unwrap();
    let made = std::process::Command::new(nft)
        .args(["add", "table", "inet", &stale])
        .status()
        .unwrap();
    assert!(made.success());
    let bed = TestBed::new();
    let _supervisor = bed.supervisor().await;
    let out = std::process::Command::new(nft)
        .args(["list", "tables"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains(&stale), "{listing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_egress_revokes_the_plugin_when_the_config_says_so() {
    if !egress_available() {
        return;
    }
    let l = listeners();
    let bed = TestBed::with_sandbox_and_config("revoke_on_refused_egress = true\n", "");
    install_scoped(&bed, "prober");
    let supervisor = bed.supervisor().await;
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!(TARGET));
    let other_host = addr(&l.other_host);
    let record = run_with(
        &supervisor,
        "prober",
        json!({"attack": "connect_tcp", "targets": [TARGET, other_host]}),
        inputs.clone(),
        None,
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    assert_eq!(record.refused_egress.len(), 1, "{record:?}");
    let entry = supervisor
        .plugins()
        .into_iter()
        .find(|e| e.name == "prober")
        .unwrap();
    assert_eq!(entry.status, PluginStatus::Revoked, "{entry:?}");
    assert!(
        entry
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("revoke_on_refused_egress")),
        "{entry:?}"
    );
    // A run that stays on its target is no reason: a fresh bed, same config.
    let calm = TestBed::with_sandbox_and_config("revoke_on_refused_egress = true\n", "");
    install_scoped(&calm, "calm");
    let supervisor = calm.supervisor().await;
    let ok = run_with(
        &supervisor,
        "calm",
        json!({"attack": "connect_tcp", "targets": [TARGET]}),
        inputs,
        None,
    )
    .await;
    assert!(ok.refused_egress.is_empty(), "{ok:?}");
    let entry = supervisor
        .plugins()
        .into_iter()
        .find(|e| e.name == "calm")
        .unwrap();
    assert_eq!(entry.status, PluginStatus::Active);
    accepted(&l.target);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_target_is_resolved_by_the_supervisor_and_handed_to_the_run() {
    if !egress_available() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let bed = TestBed::new();
    install_scoped(&bed, "resolver");
    let supervisor = bed.supervisor().await;
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!(format!("http://localhost:{port}/")));
    let by_name = format!("localhost:{port}");
    let record = run_with(
        &supervisor,
        "resolver",
        json!({"attack": "connect_name", "targets": [by_name, "localhost:9"]}),
        inputs,
        None,
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    let r = results(&record);
    assert_eq!(outcome(&r, &by_name), "ok", "{r:?}");
    refused(&r, "localhost:9");
    assert!(accepted(&listener) >= 1, "the target saw the run");
    let invoked = audit_events(&supervisor, "plugin_invoked");
    let policy = &invoked
        .iter()
        .find(|e| e.run_id.as_deref() == Some(record.run_id.as_str()))
        .expect("the run's plugin_invoked event")
        .details["policy"];
    assert_eq!(
        policy["egress"]["names"][0]["name"], "localhost",
        "{policy}"
    );
    let hosts_dir = bed.path().join("var/runs/.hosts");
    let left: Vec<_> = std::fs::read_dir(&hosts_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the run's hosts file outlived it: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_cannot_be_scoped_rejects_the_run_naming_it() {
    if !egress_available() {
        return;
    }
    let bed = TestBed::new();
    install_scoped(&bed, "named");
    let supervisor = bed.supervisor().await;
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!("gopher://127.0.0.2/"));
    let record = run_with(
        &supervisor,
        "named",
        json!({"attack": "connect_tcp", "targets": [TARGET]}),
        inputs,
        None,
    )
    .await;
    assert_eq!(record.status, RunStatus::Rejected, "{record:?}");
    let error = record.error.unwrap();
    assert!(
        error.message.contains("gopher://127.0.0.2/") && error.message.contains("no default port"),
        "{error:?}"
    );
}

/// One JSON-RPC request on a fresh connection to `socket`; its result.
fn rpc(socket: &std::path::Path, method: &str, params: Value) -> Option<Value> {
    use std::io::{BufRead, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let mut writer = stream.try_clone().ok()?;
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    writer.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply).ok()?;
    serde_json::from_str::<Value>(&reply)
        .ok()?
        .get("result")
        .cloned()
}

/// This listing's tables of process `pid`, with whether each has a run chain.
fn tables_of(pid: u32) -> Vec<(String, bool)> {
    let nft = nft_path().unwrap();
    let out = std::process::Command::new(nft)
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let prefix = format!("table inet secflow_egress_{pid}_");
    let mut tables: Vec<(String, bool)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.trim().strip_prefix(&prefix) {
            let name = rest.trim_end_matches(" {").to_string();
            tables.push((format!("secflow_egress_{pid}_{name}"), false));
        } else if line.trim().starts_with("chain run_") {
            if let Some(last) = tables.last_mut() {
                last.1 = true;
            }
        }
    }
    tables
}

#[test]
fn a_daemon_killed_mid_run_leaves_a_table_that_the_next_start_removes() {
    if !egress_available() {
        return;
    }
    listeners();
    let bed = TestBed::with_config("[api]\nsocket = \"api.sock\"\n");
    install_scoped(&bed, "lingerer");
    let log = std::fs::File::create(bed.path().join("secflowd.log")).unwrap();
    let mut daemon = std::process::Command::new(workspace_bin("secflowd"))
        .arg("--config")
        .arg(&bed.config_path)
        .env_remove("SECFLOW_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("secflowd starts");
    let socket = bed.path().join("api.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while rpc(&socket, "system.health", json!({})).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "secflowd did not serve"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let started = rpc(
        &socket,
        "runs.start",
        json!({"plugin": "lingerer", "inputs": {"target": TARGET}, "config": {"attack": "spin"}}),
    )
    .expect("runs.start answered");
    assert!(started["run_id"].is_string(), "{started}");
    // The run is scoped while it lasts: its chain is in the daemon's table.
    let pid = daemon.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !tables_of(pid).iter().any(|(_, chain)| *chain) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run was never scoped"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let left = tables_of(pid);
    assert_eq!(left.len(), 1, "the crash left its table: {left:?}");
    // The plugin died with its supervisor (its rules, now nobody's, stay
    // until the next start).
    let exe = bed.plugin_dir("lingerer").join("fixture-hostile");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alive = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path().join("exe")).ok())
            .any(|p| p == exe);
        if !alive {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the plugin outlived its daemon"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // The next supervisor to start removes it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let _supervisor = bed.supervisor().await;
        assert!(tables_of(pid).is_empty(), "{:?}", tables_of(pid));
    });
}
