//! The hostile plugins of sandbox.md, each contained: a real executable tries
//! the attack through the real supervisor, and the test asserts what it could
//! and could not do, the run's status and error kind, the audit trail, and that
//! the supervisor's own state (other runs' findings, the database) is intact.
//!
//! These run as root (the supervisor's production case); they need user-visible
//! namespaces, seccomp and mount rights, which CI has. Outside CI, a host that
//! lacks them skips with the reason printed.

mod support;

use std::path::Path;

use secflow_core::record::{ErrorKind, RunRecord, RunStatus};
use secflow_core::PluginStatus;
use secflow_runner::Supervisor;
use secflow_soak::Binaries;
use secflow_store::AuditEvent;
use serde_json::{json, Map, Value};
use support::*;

const HOSTILE: &str = env!("CARGO_BIN_EXE_fixture-hostile");
const DETECTOR: &str = env!("CARGO_BIN_EXE_fixture-detector");

/// Whether this host can run the sandbox; outside CI a host that cannot makes
/// the test skip (printing why); in CI it must.
fn sandbox_available() -> bool {
    root_or_skip("the sandbox tests")
}

fn install_hostile(bed: &TestBed, name: &str, sandbox: Value) {
    bed.install(Install {
        config_schema: Binaries::hostile_schema(),
        sandbox,
        ..Install::new(name, HOSTILE)
    });
}

fn default_sandbox() -> Value {
    json!({"network": false, "filesystem": "readonly", "timeout_seconds": 30})
}

fn results(record: &RunRecord) -> Map<String, Value> {
    record
        .outputs
        .get("results")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn denied(results: &Map<String, Value>, key: &str) -> bool {
    results
        .get(key)
        .and_then(Value::as_str)
        .is_some_and(|r| r.starts_with("error"))
}

async fn attack(supervisor: &Supervisor, plugin: &str, config: Value) -> RunRecord {
    run(supervisor, plugin, config).await
}

/// One hostile run in a fresh home: installs the fixture as `name` with
/// `sandbox`, runs `config` and returns the home (to inspect afterwards) and
/// the record. The supervisor is closed before returning.
async fn attack_once(name: &str, sandbox: Value, config: Value) -> (TestBed, RunRecord) {
    let bed = TestBed::new();
    install_hostile(&bed, name, sandbox);
    let supervisor = bed.supervisor().await;
    let record = attack(&supervisor, name, config).await;
    (bed, record)
}

/// Processes still running the given executable (by its installed path).
fn processes_running(exe: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(entry.path().join("exe")) {
            if target == exe {
                found.push(pid);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_is_not_root_has_no_capabilities_and_runs_under_seccomp() {
    if !sandbox_available() {
        return;
    }
    let bed = TestBed::new();
    install_hostile(&bed, "whoami", default_sandbox());
    let supervisor = bed.supervisor().await;
    let record = attack(&supervisor, "whoami", json!({"attack": "whoami"})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    let r = results(&record);
    let uid: u32 = r["Uid"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        uid >= 2_000_000_000,
        "runs as a uid from the sandbox range, not {uid}"
    );
    let gid: u32 = r["Gid"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(gid, uid);
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(r[caps], "0000000000000000", "{caps} must be empty");
    }
    assert_eq!(r["NoNewPrivs"], "1");
    assert_eq!(r["Seccomp"], "2", "a seccomp filter is loaded");
    assert_eq!(
        r["pid"], 2,
        "the plugin runs in its own PID namespace, under its init"
    );
    assert_eq!(
        r["ppid"], 1,
        "its parent is the namespace's init, not the supervisor"
    );
    supervisor.flush().await.unwrap();
    let invoked = audit_events(&supervisor, "plugin_invoked");
    let policy = &invoked
        .iter()
        .find(|e| e.run_id.as_deref() == Some(record.run_id.as_str()))
        .unwrap()
        .details["policy"];
    assert_eq!(
        policy["uid"], uid,
        "the audit trail records the effective policy: {policy}"
    );
    for layer in [
        "uid",
        "pid_namespace",
        "mount_namespace",
        "network_namespace",
        "rlimits",
        "seccomp",
    ] {
        assert!(
            policy["layers"].as_array().unwrap().contains(&json!(layer)),
            "{layer} in {policy}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_network_is_denied_unless_the_manifest_grants_it() {
    if !sandbox_available() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let bed = TestBed::new();
    install_hostile(&bed, "offline", default_sandbox());
    install_hostile(
        &bed,
        "online",
        json!({"network": true, "filesystem": "readonly", "timeout_seconds": 30}),
    );
    let supervisor = bed.supervisor().await;
    let config = json!({"attack": "connect_tcp", "targets": [addr]});
    let offline = attack(&supervisor, "offline", config.clone()).await;
    assert_eq!(offline.status, RunStatus::Succeeded, "{offline:?}");
    assert!(denied(&results(&offline), &addr), "{:?}", results(&offline));
    let online = attack(&supervisor, "online", config).await;
    assert_eq!(online.status, RunStatus::Succeeded, "{online:?}");
    assert_eq!(
        results(&online)[&addr],
        "ok",
        "network: true reaches the host's loopback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn supervisor_secrets_and_private_host_files_are_unreadable() {
    if !sandbox_available() {
        return;
    }
    let bed = TestBed::new();
    install_hostile(&bed, "reader", default_sandbox());
    let key = bed.path().join("signing-key.pem");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    let supervisor = bed.supervisor().await;
    let db = bed.path().join("var/secflow.db");
    let targets = [
        db.to_string_lossy().into_owned(),
        bed.config_path.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
        "/root/.bashrc".into(),
        "/etc/shadow".into(),
        "/home".into(),
    ];
    let record = attack(
        &supervisor,
        "reader",
        json!({"attack": "read", "targets": targets}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    let r = results(&record);
    for t in &targets {
        assert!(denied(&r, t), "{t} must be unreadable: {:?}", r.get(t));
    }
    let control = attack(
        &supervisor,
        "reader",
        json!({"attack": "read", "targets": ["/etc/hostname", "/usr/bin/env"]}),
    )
    .await;
    let r = results(&control);
    assert_eq!(r["/usr/bin/env"], "ok", "system files stay readable: {r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_land_only_in_the_work_dir_and_tmp() {
    if !sandbox_available() {
        return;
    }
    let bed = TestBed::new();
    install_hostile(&bed, "writer", default_sandbox());
    let supervisor = bed.supervisor().await;
    let own_dir = bed.plugin_dir("writer").join("planted");
    let targets = [
        own_dir.to_string_lossy().into_owned(),
        "/etc/planted".into(),
        "/usr/planted".into(),
        "planted-in-workdir".into(),
        "/tmp/planted".into(),
        "/dev/null".into(),
    ];
    let record = attack(
        &supervisor,
        "writer",
        json!({"attack": "write", "targets": targets}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    let r = results(&record);
    for t in &targets[..3] {
        assert!(denied(&r, t), "{t} must not be writable: {:?}", r.get(t));
    }
    assert_eq!(r["planted-in-workdir"], "ok");
    assert_eq!(r["/tmp/planted"], "ok");
    assert_eq!(r["/dev/null"], "ok", "device nodes work: {r:?}");
    assert!(
        !own_dir.exists()
            && !Path::new("/etc/planted").exists()
            && !Path::new("/tmp/planted").exists()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_work_dir_is_bounded_by_work_size_mb_and_never_touches_the_host() {
    if !sandbox_available() {
        return;
    }
    // The work dir is a tmpfs in the run's own mount namespace, owned by the
    // run's uid: filling it past sandbox.work_size_mb fails with ENOSPC, what
    // fits is writable, and the host's work root never holds any of it.
    let bed = TestBed::with_sandbox_and_config("work_size_mb = 4\n", "");
    install_hostile(&bed, "filler", default_sandbox());
    let supervisor = bed.supervisor().await;
    let fits = attack(
        &supervisor,
        "filler",
        json!({"attack": "fill", "targets": ["fits"], "mb": 2}),
    )
    .await;
    assert_eq!(fits.status, RunStatus::Succeeded, "{fits:?}");
    assert_eq!(results(&fits)["fits"], "ok");
    let overflow = attack(
        &supervisor,
        "filler",
        json!({"attack": "fill", "targets": ["too-big"], "mb": 8}),
    )
    .await;
    assert_eq!(overflow.status, RunStatus::Succeeded, "{overflow:?}");
    let r = results(&overflow);
    assert!(
        r["too-big"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{r:?}"
    );
    let left = leftover_run_dirs(&bed.path().join("var/runs"));
    assert!(left.is_empty(), "nothing on the host: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_past_the_limit_stops_the_plugin_as_memory_limit() {
    if !sandbox_available() {
        return;
    }
    let (_bed, record) = attack_once(
        "hog",
        json!({"memory_mb": 64, "timeout_seconds": 30}),
        json!({"attack": "findings_then", "then": "allocate", "mb": 1024, "count": 2}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed, "{record:?}");
    assert_eq!(
        record.error.as_ref().unwrap().kind,
        ErrorKind::MemoryLimit,
        "{record:?}"
    );
    assert_eq!(
        record.findings, 2,
        "findings sent before the attack are kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_past_the_limit_stops_the_plugin_as_cpu_limit() {
    if !sandbox_available() {
        return;
    }
    let (_bed, record) = attack_once(
        "spinner",
        json!({"cpu_seconds": 1, "timeout_seconds": 30}),
        json!({"attack": "spin"}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed, "{record:?}");
    assert_eq!(
        record.error.as_ref().unwrap().kind,
        ErrorKind::CpuLimit,
        "{record:?}"
    );
    assert_eq!(
        record.signal,
        Some(libc::SIGXCPU),
        "stopped by the CPU rlimit: {record:?}"
    );
    // rusage and the rlimit check account CPU time differently (ticks vs
    // runtime), so only "most of the second" is asserted.
    assert!(record.cpu_ms >= 500, "{record:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_is_contained_at_max_processes_and_leaves_nothing() {
    if !sandbox_available() {
        return;
    }
    let (bed, record) = attack_once(
        "bomb",
        json!({"max_processes": 16, "timeout_seconds": 30}),
        json!({"attack": "fork_bomb", "count": 500}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    let r = results(&record);
    assert!(r["forked"].as_u64().unwrap() < 16, "{r:?}");
    assert!(r["failed"].as_u64().unwrap() > 400, "{r:?}");
    let exe = bed.plugin_dir("bomb").join("fixture-hostile");
    assert!(
        processes_running(&exe).is_empty(),
        "every forked child died with the run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setsid_double_forked_child_does_not_outlive_the_run() {
    if !sandbox_available() {
        return;
    }
    let (bed, record) =
        attack_once("escaper", default_sandbox(), json!({"attack": "escape"})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    assert_eq!(results(&record)["escaped"], "child started");
    let exe = bed.plugin_dir("escaper").join("fixture-hostile");
    assert!(
        processes_running(&exe).is_empty(),
        "the escaped child is gone: {:?}",
        processes_running(&exe)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forbidden_syscalls_are_violations_that_revoke_the_plugin() {
    if !sandbox_available() {
        return;
    }
    let bed = TestBed::new();
    bed.install_fixture("detector", DETECTOR);
    let supervisor = bed.supervisor().await;
    let before = run(&supervisor, "detector", json!({"count": 5})).await;
    assert_eq!(before.status, RunStatus::Succeeded);
    // Each attack, and the call the kernel's audit record names for it.
    for (syscall, named) in [
        ("ptrace", "ptrace"),
        ("mount", "mount"),
        ("unshare", "unshare"),
        ("bpf", "bpf"),
        ("kexec_load", "kexec_load"),
        ("init_module", "init_module"),
        ("clone_newuser", "clone"),
        ("x32_getpid", "getpid"),
    ] {
        let name = format!("violator-{}", syscall.replace('_', "-"));
        install_hostile(&bed, &name, default_sandbox());
        supervisor.reload().await.unwrap();
        let record = attack(
            &supervisor,
            &name,
            json!({"attack": "findings_then", "then": "syscall", "targets": [syscall], "count": 1}),
        )
        .await;
        assert_eq!(record.status, RunStatus::Violated, "{syscall}: {record:?}");
        assert_eq!(
            record.error.as_ref().unwrap().kind,
            ErrorKind::SandboxViolation,
            "{syscall}"
        );
        assert_eq!(record.signal, Some(libc::SIGSYS), "{syscall}");
        let message = &record.error.as_ref().unwrap().message;
        assert!(
            message.contains(&format!("({named} (")),
            "{syscall}: the violation names the call: {message}"
        );
        assert_eq!(
            record.findings, 1,
            "{syscall}: the finding before the attack is kept"
        );
        let entry = supervisor
            .plugins()
            .into_iter()
            .find(|e| e.name == name)
            .unwrap();
        assert_eq!(entry.status, PluginStatus::Revoked, "{syscall}");
        let again = attack(&supervisor, &name, json!({"attack": "whoami"})).await;
        assert_eq!(
            again.status,
            RunStatus::Rejected,
            "{syscall}: a revoked plugin does not run"
        );
        assert_eq!(again.error.unwrap().kind, ErrorKind::PluginRevoked);
    }
    supervisor.flush().await.unwrap();
    assert!(audit_events(&supervisor, "sandbox_violation")
        .iter()
        .all(|e| e.security));
    assert_eq!(audit_events(&supervisor, "sandbox_violation").len(), 8);
    assert_eq!(audit_events(&supervisor, "plugin_revoked").len(), 8);
    assert_eq!(
        findings_of(&supervisor, &before.run_id).len(),
        5,
        "other runs' findings are intact"
    );
    drop(supervisor);

    // The revocation persists; an operator reinstates through the CLI.
    let reopened = bed.supervisor().await;
    let entry = reopened
        .plugins()
        .into_iter()
        .find(|e| e.name == "violator-ptrace")
        .unwrap();
    assert_eq!(
        entry.status,
        PluginStatus::Revoked,
        "revocations survive a restart"
    );
    drop(reopened);
    let out = bed.secflow(&["plugins", "reinstate", "violator-ptrace", "--local"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reopened = bed.supervisor().await;
    let entry = reopened
        .plugins()
        .into_iter()
        .find(|e| e.name == "violator-ptrace")
        .unwrap();
    assert_eq!(entry.status, PluginStatus::Active);
    assert_eq!(
        run(&reopened, "violator-ptrace", json!({"attack": "whoami"}))
            .await
            .status,
        RunStatus::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orphan_killed_by_seccomp_makes_the_run_a_violation_that_revokes_the_plugin() {
    if !sandbox_available() {
        return;
    }
    // The plugin itself behaves; a process it started and orphaned makes a
    // forbidden syscall. The run's init reaps that orphan and reports it.
    let (bed, record) = attack_once(
        "orphaner",
        default_sandbox(),
        json!({"attack": "orphan_syscall"}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Violated, "{record:?}");
    let error = record.error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::SandboxViolation);
    assert!(error.message.contains("1 process(es)"), "{}", error.message);
    assert_eq!(
        record.exit_code,
        Some(0),
        "the plugin itself exited cleanly"
    );
    assert_eq!(results(&record)["orphan_gone"], true);
    revoked_with_a_violation_event(&bed, "orphaner").await;
}

/// Asserts that `plugin` is revoked and that a security `sandbox_violation`
/// event names it; returns that event.
async fn revoked_with_a_violation_event(bed: &TestBed, plugin: &str) -> AuditEvent {
    let supervisor = bed.supervisor().await;
    let entry = supervisor
        .plugins()
        .into_iter()
        .find(|e| e.name == plugin)
        .unwrap();
    assert_eq!(entry.status, PluginStatus::Revoked, "{plugin}");
    audit_events(&supervisor, "sandbox_violation")
        .into_iter()
        .find(|e| e.security && e.plugin.as_deref() == Some(plugin))
        .unwrap_or_else(|| panic!("a sandbox_violation audit event names {plugin}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_the_plugin_reaps_itself_after_a_seccomp_kill_still_makes_the_run_a_violation() {
    if !sandbox_available() {
        return;
    }
    // Neither the plugin's exit nor the init's reaping shows this death: the
    // plugin waits for its own child. The kernel's audit record of the kill,
    // filed by the run's uid, does, and names the call.
    let (bed, record) = attack_once(
        "reaper",
        default_sandbox(),
        json!({"attack": "reaped_child_syscall"}),
    )
    .await;
    assert_eq!(
        results(&record)["child_signal"],
        libc::SIGSYS,
        "the child was killed: {record:?}"
    );
    assert_eq!(
        record.exit_code,
        Some(0),
        "the plugin itself exited cleanly"
    );
    assert_eq!(record.status, RunStatus::Violated, "{record:?}");
    let error = record.error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::SandboxViolation);
    assert!(error.message.contains("ptrace (101)"), "{}", error.message);
    let violation = revoked_with_a_violation_event(&bed, "reaper").await;
    let kill = &violation.details["seccomp_kills"][0];
    assert_eq!(kill["syscall"], 101);
    assert_eq!(kill["name"], "ptrace");
    assert_eq!(kill["comm"], "fixture-hostile");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_cannot_signal_the_supervisor() {
    if !sandbox_available() {
        return;
    }
    let bed = TestBed::new();
    install_hostile(&bed, "killer", default_sandbox());
    let supervisor = bed.supervisor().await;
    let me = std::process::id().to_string();
    let record = attack(
        &supervisor,
        "killer",
        json!({"attack": "signal", "targets": ["parent", me]}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    let r = results(&record);
    assert!(
        r.values().all(|v| v.as_str().unwrap().starts_with("error")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_unix_sockets_are_out_of_reach() {
    if !sandbox_available() {
        return;
    }
    let bed = TestBed::new();
    install_hostile(&bed, "dialer", default_sandbox());
    let supervisor = bed.supervisor().await;
    // A world-writable socket in the host's /tmp, and one like the daemon's API socket.
    let tmp_socket = std::env::temp_dir().join(format!("secflow-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&tmp_socket);
    let _tmp_listener = std::os::unix::net::UnixListener::bind(&tmp_socket).unwrap();
    std::fs::set_permissions(
        &tmp_socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let api_socket = bed.path().join("secflowd.sock");
    let _api_listener = std::os::unix::net::UnixListener::bind(&api_socket).unwrap();
    let mut targets = vec![
        tmp_socket.to_string_lossy().into_owned(),
        api_socket.to_string_lossy().into_owned(),
    ];
    if Path::new("/run/dbus/system_bus_socket").exists() {
        targets.push("/run/dbus/system_bus_socket".into());
    }
    let record = attack(
        &supervisor,
        "dialer",
        json!({"attack": "unix_connect", "targets": targets}),
    )
    .await;
    let _ = std::fs::remove_file(&tmp_socket);
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    let r = results(&record);
    for t in &targets {
        assert!(denied(&r, t), "{t} must be unreachable: {:?}", r.get(t));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stderr_flood_keeps_a_bounded_tail_and_the_run_succeeds() {
    if !sandbox_available() {
        return;
    }
    let (_bed, record) = attack_once(
        "noisy",
        json!({"timeout_seconds": 60, "max_output_mb": 128}),
        json!({"attack": "flood_stderr", "mb": 64}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    assert!(
        record.stderr_tail.len() <= 64 << 10,
        "{}",
        record.stderr_tail.len()
    );
    assert!(record.stderr_tail.contains("flood done"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_work_dir_is_private_and_removed_after_the_run() {
    if !sandbox_available() {
        return;
    }
    let (bed, record) = attack_once(
        "writer",
        default_sandbox(),
        json!({"attack": "write", "targets": ["left-behind"]}),
    )
    .await;
    assert_eq!(results(&record)["left-behind"], "ok");
    let runs = bed.path().join("var/runs");
    let left = leftover_run_dirs(&runs);
    assert!(left.is_empty(), "nothing survives the run: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_step_that_fails_rejects_the_run_naming_the_step_and_leaves_nothing() {
    if !sandbox_available() {
        return;
    }
    // The launch does not wait for the run's init to set up: a failed step
    // must still reach the record as such, not as a plugin that never spoke.
    // Here the last step fails: the script's interpreter is not in the view.
    let bed = TestBed::new();
    let script = bed.path().join("misscripted.sh");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bed.install(Install {
        config_schema: fixture_config_schema(),
        ..Install::new("misscripted", &script)
    });
    bed.install_fixture("fine", DETECTOR);
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "misscripted", json!({"count": 3})).await;
    assert_eq!(record.status, RunStatus::Rejected, "{record:?}");
    let error = record.error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::SpawnFailed, "{error:?}");
    assert!(
        error.message.contains("could not execute the plugin"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("No such file or directory"),
        "{}",
        error.message
    );
    assert_eq!(findings_of(&supervisor, &record.run_id).len(), 0);
    // Nothing of it is left, and the next run of another plugin is unaffected.
    let runs = bed.path().join("var/runs");
    let left = leftover_run_dirs(&runs);
    assert!(left.is_empty(), "nothing survives the run: {left:?}");
    let next = run(&supervisor, "fine", json!({"count": 3})).await;
    assert_eq!(next.status, RunStatus::Succeeded, "{next:?}");
    assert_eq!(next.findings, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_findings_in_one_run_are_all_stored() {
    if !sandbox_available() {
        return;
    }
    // sandbox.md: 10 000 findings per second for 10 s — all stored, no loss.
    let bed = TestBed::new();
    bed.install_fixture("flood", DETECTOR);
    let supervisor = bed.supervisor().await;
    let record = run(&supervisor, "flood", json!({"count": 100_000})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    assert_eq!(record.findings, 100_000);
    assert_eq!(record.findings_rejected, 0);
    assert_eq!(
        findings_of(&supervisor, &record.run_id).len(),
        100_000,
        "every finding is stored"
    );
}

#[test]
fn doctor_reports_every_layer_available_here_and_exits_0() {
    if !sandbox_available() {
        return;
    }
    let bed = TestBed::new();
    let out = bed.secflow(&["--json", "doctor"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["honoured"], true, "{report}");
    for layer in report["layers"].as_array().unwrap() {
        assert_eq!(layer["available"], true, "{layer}");
    }
    assert_eq!(
        report["host"]["seccomp_audit_log"],
        json!({"Ok": null}),
        "this machine's kernel reports seccomp kills: {report}"
    );
    let memory = report["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "limits.cancel_grace_ms")
        .unwrap();
    assert_eq!(
        memory["source"], "file",
        "the test config sets it: {memory}"
    );

    // A uid range that clashes with an account is reported and fails the check.
    let clash = TestBed::new();
    let text = std::fs::read_to_string(&clash.config_path).unwrap();
    let uids = clash.config().sandbox;
    let text = text
        .replace(
            &format!("uid_min = {}\n", uids.uid_min),
            "uid_min = 65530\n",
        )
        .replace(
            &format!("uid_count = {}\n", uids.uid_count),
            "uid_count = 8\n",
        );
    std::fs::write(&clash.config_path, text).unwrap();
    let out = clash.secflow(&["--json", "doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !report["uid_range"]["clashes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{report}"
    );
}

#[tokio::test]
async fn a_state_dir_persists_across_runs_of_its_plugin_and_no_other_plugin_sees_it() {
    let bed = TestBed::new();
    let mut with_state = default_sandbox();
    with_state["state"] = json!(true);
    install_hostile(&bed, "keeper", with_state);
    install_hostile(&bed, "snoop", default_sandbox());
    let supervisor = bed.supervisor().await;
    let state = supervisor.config().sandbox.state_root.join("keeper");
    let note = state.join("note").to_string_lossy().into_owned();

    let first = attack(
        &supervisor,
        "keeper",
        json!({"attack": "write", "targets": [&note]}),
    )
    .await;
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    assert!(!denied(&results(&first), &note), "{:?}", results(&first));
    // A later run has another uid, and still reads and appends to its state.
    let second = attack(
        &supervisor,
        "keeper",
        json!({"attack": "write", "targets": [&note]}),
    )
    .await;
    assert!(!denied(&results(&second), &note), "{:?}", results(&second));
    assert_eq!(std::fs::read(&note).unwrap(), b"pwned\npwned\n");
    let snooped = attack(
        &supervisor,
        "snoop",
        json!({"attack": "read", "targets": [&note]}),
    )
    .await;
    assert!(denied(&results(&snooped), &note), "{:?}", results(&snooped));
    // The work dir went with the run; the state stayed.
    assert!(state.is_dir());
}
