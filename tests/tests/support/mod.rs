//! Fixtures for the integration tests: a throwaway supervisor home (config,
//! database, plugin dirs) per test, and plugins installed into it the way an
//! operator would (executable beside its manifest, code hash filled in).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use secflow_core::config::Config;
use secflow_core::record::RunRecord;
use secflow_runner::RunRequest;
use secflow_runner::Supervisor;
use secflow_store::{AuditEvent, AuditQuery, FindingQuery, StoredFinding};
use serde_json::{json, Map, Value};

/// Cargo's output dir for this build (`target/debug`): the workspace's other
/// binaries (`secflow`, the shipped plugins) are there.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// A workspace binary (built by `cargo test --workspace`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` before the tests (the README's test command does)",
        path.display()
    );
    path
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// One test's supervisor home.
pub struct TestBed {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// How to install a plugin.
pub struct Install<'a> {
    pub name: &'a str,
    pub executable: PathBuf,
    pub category: &'a str,
    pub config_schema: Value,
    pub sandbox: Value,
    pub dependencies: Vec<&'a str>,
    /// Extra or replacement manifest fields.
    pub overrides: Value,
}

impl<'a> Install<'a> {
    pub fn new(name: &'a str, executable: impl Into<PathBuf>) -> Install<'a> {
        Install {
            name,
            executable: executable.into(),
            category: "detector",
            config_schema: json!({}),
            sandbox: json!({"network": false, "filesystem": "readonly", "timeout_seconds": 30}),
            dependencies: Vec::new(),
            overrides: json!({}),
        }
    }
}

/// Per-run uids of the test beds: slot `n` is `TEST_UID_BASE + n *
/// TEST_UIDS_PER_BED`, `+ TEST_UIDS_PER_BED` (above the soak's homes).
const TEST_UID_BASE: u32 = 2_200_000_000;
const TEST_UIDS_PER_BED: u32 = 64;
const TEST_UID_SLOTS: u32 = 1 << 20;

/// Whether this process runs as root, which sandboxed runs need (per-run
/// uids, namespaces, mounts). Outside CI a test that needs it may skip: this
/// prints why (`needs` says what needs root). In CI it must run, so this fails.
pub fn root_or_skip(needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let reason = format!("{needs} need root (per-run uids, namespaces, mounts)");
    assert!(
        std::env::var_os("CI").is_none(),
        "{reason}, and CI must run them"
    );
    eprintln!("skipping: {reason}");
    false
}

/// Config knobs the fixture plugins read (each declared so it validates).
pub fn fixture_config_schema() -> Value {
    let int = |d: u64| json!({"type": "integer", "minimum": 0, "default": d});
    json!({
        "count": int(10),
        "delay_ms": int(0),
        "before_crash": int(3),
        "before_sleep": int(2),
        "valid": int(5),
        "invalid": int(3),
        "bytes": int(16 << 20),
        "mode": {"type": "string", "default": "exit"},
        "kind": {"type": "string", "default": "json"}
    })
}

/// Logs of the supervisor go to the test's captured output (`SECFLOW_LOG=debug`
/// to see more).
pub fn init_tracing() {
    let filter = std::env::var("SECFLOW_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

impl TestBed {
    /// The scan pipeline's web detector: nuclei with its built-in templates,
    /// network granted.
    pub fn install_nuclei_detector(&self) {
        self.install(Install {
            sandbox: json!({"network": true, "filesystem": "readonly", "timeout_seconds": 120}),
            config_schema: json!({"concurrency": {"type": "integer", "default": 16}}),
            ..Install::new("nuclei", workspace_bin("secflow-nuclei"))
        });
    }

    /// The scan pipeline's service detector: service-scan, which needs nmap.
    pub fn install_service_scan_detector(&self) {
        self.install(Install {
            dependencies: vec!["nmap"],
            config_schema: json!({
                "ports": {"type": "string", "default": ""},
                "timing": {"type": "integer", "minimum": 0, "maximum": 5, "default": 4}
            }),
            sandbox: json!({"network": true, "filesystem": "readonly", "timeout_seconds": 120}),
            ..Install::new("service-scan", workspace_bin("secflow-service-scan"))
        });
    }

    /// Installs a shipped plugin (the workspace binary `executable`) as staging
    /// would from `manifests/<name>.json`: its config schema, description and
    /// sandbox, with the sandbox's `read_paths` set to `read_paths`.
    pub fn install_shipped(&self, name: &str, executable: &str, read_paths: &[&Path]) -> PathBuf {
        let file = format!("manifests/{name}.json");
        let text = std::fs::read_to_string(workspace_root().join(&file)).expect(&file);
        let manifest: Value = serde_json::from_str(&text).expect("manifest is JSON");
        let mut sandbox = manifest["sandbox"].clone();
        sandbox["read_paths"] = json!(read_paths);
        self.install(Install {
            config_schema: manifest["config_schema"].clone(),
            sandbox,
            overrides: json!({"description": manifest["description"]}),
            ..Install::new(name, workspace_bin(executable))
        })
    }

    /// The scan pipeline's last two stages: cve-mapper (enricher) over the
    /// NVD records in tests/fixtures/nvd, and the analytics plugin.
    pub fn install_nvd_enricher_and_analytics(&self) {
        let data = workspace_root().join("tests/fixtures/nvd");
        self.install(Install {
            category: "enricher",
            config_schema: json!({
                "data_dir": {"type": "string", "default": data.display().to_string()},
                "sources": {"type": "array", "default": ["nvd"]},
                "cache_dir": {"type": "string", "default": ""}
            }),
            sandbox: json!({"network": false, "filesystem": "readonly", "timeout_seconds": 120,
                "read_paths": [data.display().to_string()]}),
            ..Install::new("cve-mapper", workspace_bin("secflow-cve-mapper"))
        });
        self.install(Install {
            category: "analytics",
            config_schema: json!({"top_targets": {"type": "integer", "default": 10}}),
            sandbox: json!({"network": false, "filesystem": "tmp", "timeout_seconds": 60}),
            ..Install::new("analytics", workspace_bin("secflow-analytics"))
        });
    }

    pub fn new() -> TestBed {
        TestBed::with_config("")
    }

    /// A home whose config has `extra` TOML appended (sections must not repeat
    /// the ones written here).
    pub fn with_config(extra: &str) -> TestBed {
        TestBed::with_sandbox_and_config("", extra)
    }

    /// A home whose `[sandbox]` section gets `sandbox_keys` too, and whose
    /// config has `extra` appended.
    pub fn with_sandbox_and_config(sandbox_keys: &str, extra: &str) -> TestBed {
        TestBed::with_sections("", sandbox_keys, extra)
    }

    /// A home whose `[storage]` section gets `storage_keys` too (another
    /// backend, say), whose `[sandbox]` gets `sandbox_keys`, and whose config
    /// has `extra` appended.
    pub fn with_sections(storage_keys: &str, sandbox_keys: &str, extra: &str) -> TestBed {
        init_tracing();
        // Each bed gets per-run uids of its own: tests run side by side, and
        // a uid names the run (the kernel's seccomp reports, RLIMIT_NPROC).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let slot = std::process::id()
            .wrapping_mul(64)
            .wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let uid_min = TEST_UID_BASE + (slot % TEST_UID_SLOTS) * TEST_UIDS_PER_BED;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        let config_path = dir.path().join("secflow.toml");
        let text = format!(
            "[plugins]\nmanifest_dirs = [\"plugins\"]\n\
             [storage]\npath = \"var/secflow.db\"\n{storage_keys}\
             [sandbox]\nwork_root = \"var/runs\"\n\
             uid_min = {uid_min}\nuid_count = {TEST_UIDS_PER_BED}\n{sandbox_keys}\
             [limits]\ncancel_grace_ms = 500\n{extra}"
        );
        std::fs::write(&config_path, text).unwrap();
        TestBed { dir, config_path }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).expect("test config loads")
    }

    pub fn plugin_dir(&self, name: &str) -> PathBuf {
        self.path().join("plugins").join(name)
    }

    /// Installs a plugin: copies its executable into `plugins/<name>/` and
    /// writes a manifest with the executable's code hash. Returns the manifest path.
    pub fn install(&self, spec: Install<'_>) -> PathBuf {
        let dir = self.plugin_dir(spec.name);
        std::fs::create_dir_all(&dir).unwrap();
        let file_name = spec.executable.file_name().unwrap().to_owned();
        let target = dir.join(&file_name);
        std::fs::copy(&spec.executable, &target).unwrap();
        let hash = secflow_trust::hash_file(&target).unwrap();
        let mut manifest = json!({
            "name": spec.name,
            "version": "1.0.0",
            "description": "test plugin",
            "author": "secflow tests",
            "category": spec.category,
            "entrypoint": file_name.to_string_lossy(),
            "dependencies": spec.dependencies,
            "config_schema": spec.config_schema,
            "code_hash": hash,
            "signature_type": "sha256",
            "sandbox": spec.sandbox,
        });
        if let Value::Object(extra) = spec.overrides {
            for (k, v) in extra {
                manifest[k] = v;
            }
        }
        let path = dir.join("manifest.json");
        std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
        path
    }

    /// Installs a test fixture plugin (a bin of this crate) as a detector.
    pub fn install_fixture(&self, name: &str, executable: &str) -> PathBuf {
        self.install(Install {
            config_schema: fixture_config_schema(),
            ..Install::new(name, executable)
        })
    }

    pub async fn supervisor(&self) -> Supervisor {
        Supervisor::open(self.config())
            .await
            .expect("supervisor opens")
    }

    /// Runs `secflow` with this home's config.
    pub fn secflow(&self, args: &[&str]) -> std::process::Output {
        Command::new(workspace_bin("secflow"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env_remove("SECFLOW_CONFIG")
            .output()
            .expect("secflow runs")
    }
}

/// Runs a plugin to its end with `config`.
pub async fn run(supervisor: &Supervisor, plugin: &str, config: Value) -> RunRecord {
    run_with(supervisor, plugin, config, Map::new(), None).await
}

pub async fn run_with(
    supervisor: &Supervisor,
    plugin: &str,
    config: Value,
    inputs: Map<String, Value>,
    timeout_ms: Option<u64>,
) -> RunRecord {
    let (_cancel, cancel_rx) = tokio::sync::watch::channel(false);
    let request = RunRequest {
        plugin: plugin.to_string(),
        inputs,
        config: config.as_object().cloned().unwrap_or_default(),
        timeout_ms,
        ..RunRequest::default()
    };
    supervisor
        .execute(request, cancel_rx)
        .await
        .expect("run executes")
}

/// Runs a plugin whose one input is `target` to its end.
pub async fn run_on_target(
    supervisor: &Supervisor,
    plugin: &str,
    target: &str,
    config: Value,
    timeout_ms: Option<u64>,
) -> RunRecord {
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!(target));
    run_with(supervisor, plugin, config, inputs, timeout_ms).await
}

/// The one JSON document a command wrote to stdout; panics showing both
/// streams when stdout is not one.
pub fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON document ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Every finding a run reported.
pub fn findings_of(supervisor: &Supervisor, run_id: &str) -> Vec<StoredFinding> {
    let mut query = FindingQuery {
        run_id: Some(run_id.to_string()),
        limit: Some(1000),
        ..FindingQuery::default()
    };
    let mut all = Vec::new();
    loop {
        let page = supervisor.store().findings(&query).unwrap();
        let n = page.findings.len();
        all.extend(page.findings);
        match page.next {
            Some(next) if n > 0 => query.after = Some(next),
            _ => return all,
        }
    }
}

/// Audit events of one kind.
pub fn audit_events(supervisor: &Supervisor, event: &str) -> Vec<AuditEvent> {
    supervisor
        .store()
        .audit(&AuditQuery {
            event: Some(event.to_string()),
            limit: Some(1000),
            ..AuditQuery::default()
        })
        .unwrap()
}

/// Proof of whether `fixture-marker` was ever executed: it connects to this
/// listener when it starts and names its own path (see
/// tests/plugins/fixture_marker.rs). The sandbox lets a plugin leave nothing
/// behind on disk, so the mark is a connection.
pub struct Witness {
    marks: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    addr: String,
}

impl Witness {
    pub fn new() -> Witness {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("witness listener");
        let addr = listener.local_addr().unwrap().to_string();
        let marks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = marks.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut line = String::new();
                let _ = std::io::Read::read_to_string(
                    &mut std::io::Read::take(stream, 4096),
                    &mut line,
                );
                if let Some(path) = line.strip_prefix("ran ") {
                    seen.lock().unwrap().push(path.trim().to_string());
                }
            }
        });
        Witness { marks, addr }
    }

    /// Points an installed `fixture-marker` executable at this witness.
    pub fn watch(&self, executable: &Path) {
        let mut path = executable.as_os_str().to_owned();
        path.push(".witness");
        std::fs::write(path, &self.addr).unwrap();
    }

    /// How many times a watched marker ran.
    pub fn runs(&self) -> usize {
        // The marker connects before it answers initialize, so by the time its
        // run record exists the connection was made; the thread may lag a little.
        std::thread::sleep(std::time::Duration::from_millis(50));
        self.marks.lock().unwrap().len()
    }

    /// Whether the marker installed at `executable` ever ran.
    pub fn ran(&self, executable: &Path) -> bool {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let path = executable.to_string_lossy();
        self.marks.lock().unwrap().iter().any(|m| *m == path)
    }
}

/// One witness for a whole test binary, for tests that install many markers.
pub fn witness() -> &'static Witness {
    static WITNESS: std::sync::OnceLock<Witness> = std::sync::OnceLock::new();
    WITNESS.get_or_init(Witness::new)
}

/// Installs `fixture-marker` as `name` (network granted so it can reach the
/// witness), watched by `witness`.
pub fn install_marker(bed: &TestBed, name: &str, witness: &Witness) -> PathBuf {
    let manifest = bed.install(Install {
        config_schema: fixture_config_schema(),
        sandbox: json!({"network": true, "filesystem": "readonly", "timeout_seconds": 30}),
        ..Install::new(name, env!("CARGO_BIN_EXE_fixture-marker"))
    });
    witness.watch(&bed.plugin_dir(name).join("fixture-marker"));
    manifest
}

/// What runs left under a work root: every entry but the shared mount point
/// the runs' views are built on.
pub fn leftover_run_dirs(work_root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(work_root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name() != secflow_sandbox::VIEW_MOUNT_POINT)
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
