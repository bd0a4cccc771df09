//! `secflow plugin check`: drives a plugin executable through the protocol
//! contract step by step, under the same sandbox as a real run, and reports
//! each rule it keeps or breaks with a hint for the author.
//!
//! The runner's session ends a run at the first fault, which is right for
//! production but tells an author only the first mistake. The checker instead
//! spawns the plugin with the runner's own pieces (sandbox plan, admission,
//! `process::spawn`, the bounded stdout reader) and keeps going, in three
//! separate sessions: a full run ending with `shutdown`, a run that is sent
//! `cancel`, and a session whose stdin is closed after `initialize`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secflow_plugin_sdk::protocol::{
    self, code, method, Category, FindingParams, InitializeParams, InitializeResult, LogParams,
    Message, MessageKind, PluginRef, ProgressParams, ProtocolLimits, RunContextInfo, RunResult,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use secflow_core::config::{Config, RunLimits};
use secflow_manifest::{ConfigSchema, Manifest, SandboxSpec, SignatureType, VerifiedPlugin};
use secflow_runner::process::{self, ExitInfo, PluginProcess};
use secflow_runner::streams::{self, StdoutEvent};
use secflow_sandbox::{Host, Layer, RunDir, UidPool};

const INITIALIZE_ID: u64 = 1;
const RUN_ID: u64 = 2;
const SHUTDOWN_ID: u64 = 3;
/// Problems quoted per check; the rest are counted.
const MAX_QUOTED: usize = 8;
/// Longest stray stdout line quoted in a report.
const MAX_QUOTED_LINE: usize = 80;

/// A check that could not be started at all (as opposed to a failed check).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot use {path} as a plugin executable: {reason}")]
    Executable { path: PathBuf, reason: String },
    #[error("manifest {path} cannot be used: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("the sandbox cannot run {path} on this host: {reason}")]
    Sandbox { path: PathBuf, reason: String },
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct CheckRequest {
    pub executable: PathBuf,
    /// The plugin's manifest; without it one is generated, with the identity
    /// the plugin gives in its first `initialize` answer.
    pub manifest: Option<PathBuf>,
    /// The `run` inputs; without them a sample for the plugin's category.
    pub inputs: Option<Map<String, Value>>,
}

/// The rules of the protocol contract, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    Initialize,
    Run,
    JsonRpc,
    Seq,
    Count,
    Schema,
    Cancel,
    Shutdown,
    Eof,
    Stdout,
}

impl CheckId {
    pub const ALL: [CheckId; 10] = [
        CheckId::Initialize,
        CheckId::Run,
        CheckId::JsonRpc,
        CheckId::Seq,
        CheckId::Count,
        CheckId::Schema,
        CheckId::Cancel,
        CheckId::Shutdown,
        CheckId::Eof,
        CheckId::Stdout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Initialize => "initialize",
            CheckId::Run => "run",
            CheckId::JsonRpc => "json_rpc",
            CheckId::Seq => "seq",
            CheckId::Count => "count",
            CheckId::Schema => "schema",
            CheckId::Cancel => "cancel",
            CheckId::Shutdown => "shutdown",
            CheckId::Eof => "eof",
            CheckId::Stdout => "stdout",
        }
    }

    /// The rule, as the checklist states it.
    pub fn rule(self) -> &'static str {
        match self {
            CheckId::Initialize => "answers initialize with the expected identity",
            CheckId::Run => "answers run with a result",
            CheckId::JsonRpc => "sends only valid JSON-RPC 2.0 answers and known notifications",
            CheckId::Seq => "numbers findings 1, 2, 3, ... without gaps",
            CheckId::Count => "the run answer's findings count matches the findings sent",
            CheckId::Schema => "every finding is valid against schemas/finding.json",
            CheckId::Cancel => "answers run within the grace period after cancel",
            CheckId::Shutdown => "answers shutdown and exits",
            CheckId::Eof => "exits at end of input (stdin closed)",
            CheckId::Stdout => "writes nothing but protocol messages to stdout",
        }
    }

    /// What to do about a failure.
    pub fn hint(self) -> &'static str {
        match self {
            CheckId::Initialize => "answer initialize with {protocol_version: 1, name, version, category} exactly as the manifest declares them",
            CheckId::Run => "answer run with {outputs, findings} (or a JSON-RPC error) before exiting; the stderr tail below may say why it did not",
            CheckId::JsonRpc => "send only responses to the supervisor's requests (same id) and finding/progress/log notifications, each with \"jsonrpc\": \"2.0\"",
            CheckId::Seq => "give each finding notification seq = 1 for the first and +1 for each next one",
            CheckId::Count => "answer run with findings = the number of finding notifications sent",
            CheckId::Schema => "build findings with the SDK's Finding builder or check them against schemas/finding.json",
            CheckId::Cancel => "read stdin while working (on its own thread) and answer run with error -32800 soon after cancel",
            CheckId::Shutdown => "answer shutdown with {} and exit with status 0",
            CheckId::Eof => "exit with status 0 when stdin reaches end of file, even without shutdown",
            CheckId::Stdout => "write logs and debug output to stderr; stdout carries protocol messages only",
        }
    }
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not reached because an earlier step failed.
    Skipped,
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckItem {
    pub id: CheckId,
    pub rule: String,
    pub verdict: Verdict,
    /// What was seen; for a failure, each problem found (bounded).
    pub details: Vec<String>,
    /// What to do, for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The whole checklist of one executable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub executable: PathBuf,
    /// The identity checked against: the manifest's, or the one learned.
    pub plugin: Option<PluginIdentity>,
    /// `manifest` when a manifest was given, `learned` when generated.
    pub identity_source: String,
    pub checks: Vec<CheckItem>,
    /// The last of the plugin's stderr in the main session.
    pub stderr_tail: String,
}

/// Who a plugin says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginIdentity {
    pub name: String,
    pub version: String,
    pub category: Category,
}

impl CheckReport {
    /// Whether every check passed (a skipped one does not).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.verdict == Verdict::Pass)
    }

    /// The check named `id`.
    pub fn check(&self, id: CheckId) -> Option<&CheckItem> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// Problems found per check while the sessions ran.
#[derive(Debug, Default)]
struct Findings {
    problems: Vec<(CheckId, String)>,
    verdicts: Vec<(CheckId, Verdict, String)>,
}

impl Findings {
    fn problem(&mut self, id: CheckId, message: impl Into<String>) {
        self.problems.push((id, message.into()));
    }

    fn settle(&mut self, id: CheckId, verdict: Verdict, detail: impl Into<String>) {
        self.verdicts.push((id, verdict, detail.into()));
    }

    fn into_items(self) -> Vec<CheckItem> {
        CheckId::ALL
            .into_iter()
            .map(|id| {
                let problems: Vec<&String> = self
                    .problems
                    .iter()
                    .filter(|(p, _)| *p == id)
                    .map(|(_, m)| m)
                    .collect();
                let settled = self.verdicts.iter().find(|(v, _, _)| *v == id);
                let (verdict, mut details) = match settled {
                    Some((_, verdict, detail)) if problems.is_empty() => {
                        (*verdict, vec![detail.clone()])
                    }
                    _ if !problems.is_empty() => (
                        Verdict::Fail,
                        problems
                            .iter()
                            .take(MAX_QUOTED)
                            .map(|m| m.to_string())
                            .collect(),
                    ),
                    Some((_, verdict, detail)) => (*verdict, vec![detail.clone()]),
                    None => (Verdict::Pass, Vec::new()),
                };
                if problems.len() > MAX_QUOTED {
                    details.push(format!("... and {} more", problems.len() - MAX_QUOTED));
                }
                details.retain(|d| !d.is_empty());
                CheckItem {
                    id,
                    rule: id.rule().to_string(),
                    verdict,
                    details,
                    hint: (verdict == Verdict::Fail).then(|| id.hint().to_string()),
                }
            })
            .collect()
    }
}

/// The plugin as the checker runs it.
struct Subject<'a> {
    config: &'a Config,
    host: &'a Host,
    plugin: VerifiedPlugin,
    layers: Vec<Layer>,
    plan: secflow_sandbox::SandboxPlan,
    uids: UidPool,
    run_config: Map<String, Value>,
    /// The identity sent in `initialize` and expected back.
    expected: PluginRef,
    /// The category expected back; `None` until learned.
    category: Option<Category>,
    grace: Duration,
    timeout: Duration,
}

/// Runs the checks on `request.executable` under the sandbox of `config` on
/// `host`.
pub async fn check_plugin(
    config: &Config,
    host: &Host,
    request: CheckRequest,
) -> Result<CheckReport, CheckError> {
    let entrypoint = request
        .executable
        .canonicalize()
        .map_err(|e| CheckError::Executable {
            path: request.executable.clone(),
            reason: e.to_string(),
        })?;
    let code_hash = secflow_trust::hash_file(&entrypoint).map_err(|e| CheckError::Executable {
        path: request.executable.clone(),
        reason: e.to_string(),
    })?;
    let (manifest, learned) = match &request.manifest {
        Some(path) => (read_manifest(path, &code_hash)?, false),
        None => (generated_manifest(&entrypoint, code_hash), true),
    };
    let manifest_path = request
        .manifest
        .clone()
        .unwrap_or_else(|| entrypoint.with_extension("json"));
    let schema =
        ConfigSchema::new(&manifest.config_schema).map_err(|reason| CheckError::Manifest {
            path: manifest_path.clone(),
            reason: format!("config_schema: {reason}"),
        })?;
    let run_config = schema.defaults().clone();
    let (limits, _capped) = RunLimits::resolve(
        &manifest.sandbox.limits,
        &config.limits.defaults(),
        &config.limits.ceiling,
    );
    let expected = PluginRef {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
    };
    let category = (!learned).then_some(manifest.category);
    let plugin = VerifiedPlugin {
        manifest,
        manifest_path,
        entrypoint: entrypoint.clone(),
        limits,
        dependencies: Vec::new(),
        config: schema,
        signed_by: None,
        manifest_digest: None,
    };
    let sandbox_error = |reason: String| CheckError::Sandbox {
        path: entrypoint.clone(),
        reason,
    };
    let plan = secflow_sandbox::plan(&plugin, config).map_err(|e| sandbox_error(e.to_string()))?;
    let (mut layers, _degraded) = plan
        .admit(host, &config.sandbox.allow_degraded)
        .map_err(|e| sandbox_error(e.to_string()))?;
    // A check has no targets: a `network: "targets"` plugin is checked with
    // no network at all (the shared empty namespace), not with the host's.
    layers.retain(|l| *l != Layer::Egress);
    let mut subject = Subject {
        config,
        host,
        plan,
        layers,
        uids: UidPool::new(config.sandbox.uid_min, config.sandbox.uid_count),
        run_config,
        expected,
        category,
        grace: Duration::from_millis(config.limits.cancel_grace_ms),
        timeout: Duration::from_secs(limits.timeout_seconds),
        plugin,
    };

    let mut found = Findings::default();
    let stderr_tail = subject
        .main_session(request.inputs, &mut found)
        .await
        .map_err(sandbox_error)?;
    let initialized = !found
        .problems
        .iter()
        .any(|(id, _)| *id == CheckId::Initialize)
        && subject.category.is_some();
    if initialized {
        subject
            .cancel_session(&mut found)
            .await
            .map_err(sandbox_error)?;
        subject
            .eof_session(&mut found)
            .await
            .map_err(sandbox_error)?;
    } else {
        for id in [CheckId::Cancel, CheckId::Eof] {
            found.settle(id, Verdict::Skipped, "not checked: initialize failed");
        }
    }
    let plugin = subject.category.map(|category| PluginIdentity {
        name: subject.expected.name.clone(),
        version: subject.expected.version.clone(),
        category,
    });
    Ok(CheckReport {
        executable: request.executable,
        plugin,
        identity_source: if learned { "learned" } else { "manifest" }.to_string(),
        checks: found.into_items(),
        stderr_tail,
    })
}

/// Reads the author's manifest; its `code_hash` may be missing (it is filled
/// when the plugin is staged) and is not compared: the check runs the given
/// executable.
fn read_manifest(path: &Path, code_hash: &str) -> Result<Manifest, CheckError> {
    let error = |reason: String| CheckError::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    if text.len() as u64 > secflow_manifest::MAX_MANIFEST_BYTES {
        return Err(error(format!(
            "larger than {} bytes",
            secflow_manifest::MAX_MANIFEST_BYTES
        )));
    }
    let mut doc: Value = serde_json::from_slice(&text).map_err(|e| error(e.to_string()))?;
    if let Some(fields) = doc.as_object_mut() {
        fields
            .entry("code_hash")
            .or_insert_with(|| json!(code_hash));
    }
    secflow_core::schema::validate_manifest(&doc).map_err(|violations| {
        let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
        error(listed.join("; "))
    })?;
    Manifest::deserialize(&doc).map_err(|e| error(e.to_string()))
}

/// A manifest for an executable that comes without one: named after the file,
/// no network, read-only filesystem, default limits.
fn generated_manifest(entrypoint: &Path, code_hash: String) -> Manifest {
    let stem = entrypoint
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_string());
    Manifest {
        name: stem,
        version: "0.0.0".to_string(),
        description: String::new(),
        author: String::new(),
        category: Category::Detector,
        entrypoint: entrypoint
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dependencies: Vec::new(),
        config_schema: Map::new(),
        code_hash,
        signature: None,
        signature_type: SignatureType::Sha256,
        created_at: None,
        expires_at: None,
        sandbox: SandboxSpec::default(),
    }
}

/// Sample `run` inputs for a category: a detector gets a target nothing
/// listens on; enrichers and analytics get one finding.
pub fn sample_inputs(category: Category) -> Map<String, Value> {
    let value = match category {
        Category::Detector => json!({"target": "http://127.0.0.1:9"}),
        Category::Enricher | Category::Analytics => json!({"findings": [
            secflow_plugin_sdk::Finding::new(
                "secflow.check.sample",
                "Sample finding from secflow plugin check",
                protocol::Severity::Medium,
                "http://127.0.0.1:9",
            )
            .into_value()
        ]}),
    };
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// What the next read from the plugin gave.
enum Next {
    Message(Box<Message>),
    /// The plugin closed stdout or broke a bound; nothing more will come.
    Closed,
    TimedOut,
}

/// One sandboxed process of the plugin and its pipes.
struct Session {
    process: PluginProcess,
    to_plugin: Option<mpsc::Sender<String>>,
    from_plugin: mpsc::Receiver<StdoutEvent>,
    stderr: Option<tokio::task::JoinHandle<(String, u64)>>,
    run_dir: RunDir,
    _lease: Option<secflow_sandbox::UidLease>,
    closed: bool,
    /// Finding notifications seen, and the next `seq` due.
    findings: u64,
    next_seq: u64,
    /// Checks that count findings in this session.
    counting: bool,
}

impl Subject<'_> {
    async fn spawn(&self, label: &str) -> Result<Session, String> {
        let lease = if self.layers.contains(&Layer::Uid) {
            Some(self.uids.lease().ok_or("no sandbox uid is free")?)
        } else {
            None
        };
        let uid = lease.as_ref().map(secflow_sandbox::UidLease::uid);
        let run_id = format!("check-{label}-{}", secflow_runner::new_run_id());
        let run_dir = secflow_sandbox::create_run_dir(
            &self.config.sandbox.work_root,
            &run_id,
            uid.map(|u| (u, u)),
            secflow_sandbox::WorkDirIn::for_layers(&self.layers),
        )
        .map_err(|e| {
            format!(
                "cannot create a work dir under {}: {e}",
                self.config.sandbox.work_root.display()
            )
        })?;
        if let Some(state) = &self.plan.state_dir {
            if let Err(e) = secflow_sandbox::prepare_state_dir(state, uid.map(|u| (u, u))) {
                let _ = secflow_sandbox::remove_run_dir(&run_dir);
                return Err(e.to_string());
            }
        }
        let entrypoint = &self.plugin.entrypoint;
        let exec = secflow_trust::open_executable(entrypoint).map_err(|e| e.to_string())?;
        let prepared = self
            .plan
            .prepare(self.host, &self.layers, exec, entrypoint, &run_dir, uid)
            .map_err(|e| format!("cannot prepare the sandbox: {e}"))?;
        // The checker reports a failed setup as such rather than as a plugin
        // that never answered: it waits for the plugin to have started.
        let spawned = match process::spawn(prepared).await {
            Ok(mut p) => p.started().await.map(|()| p),
            Err(e) => Err(e),
        };
        let mut process = match spawned {
            Ok(p) => p,
            Err(e) => {
                let _ = secflow_sandbox::remove_run_dir(&run_dir);
                return Err(match e.step {
                    Some(step) => format!("the sandbox could not {step}: {}", e.error),
                    None => format!("cannot start the plugin: {}", e.error),
                });
            }
        };
        let limits = &self.config.limits;
        let to_plugin = secflow_runner::spawn_stdin_writer(process.stdin.take());
        let from_plugin = match process.stdout.take() {
            Some(stdout) => streams::spawn_stdout_reader(
                stdout,
                limits.max_message_bytes as usize,
                self.plan.limits.max_output_mb.saturating_mul(1 << 20),
            ),
            None => mpsc::channel(1).1,
        };
        let stderr = process
            .stderr
            .take()
            .map(|s| streams::spawn_stderr_drain(s, limits.stderr_tail_bytes));
        Ok(Session {
            process,
            to_plugin: Some(to_plugin),
            from_plugin,
            stderr,
            run_dir,
            _lease: lease,
            closed: false,
            findings: 0,
            next_seq: 1,
            counting: false,
        })
    }

    fn initialize_params(&self, session: &Session) -> Value {
        let params = InitializeParams {
            protocol_version: protocol::PROTOCOL_VERSION,
            run_id: "secflow-plugin-check".to_string(),
            plugin: self.expected.clone(),
            config: self.run_config.clone(),
            context: RunContextInfo {
                workdir: session.run_dir.work.to_string_lossy().into_owned(),
                deadline_ms: self.timeout.as_millis() as u64,
                network: self.plan.network == secflow_manifest::NetworkGrant::Host,
                workflow_id: None,
                node_id: None,
                state_dir: self
                    .plan
                    .state_dir
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
            },
            limits: ProtocolLimits {
                max_message_bytes: self.config.limits.max_message_bytes,
                max_findings: self.config.limits.max_findings,
            },
        };
        serde_json::to_value(params).unwrap_or(Value::Null)
    }

    /// Sends `initialize` and checks the answer. Returns whether it passed.
    async fn initialize(&mut self, session: &mut Session, found: &mut Findings) -> bool {
        let params = self.initialize_params(session);
        session.send(Message::request(INITIALIZE_ID, method::INITIALIZE, params));
        let deadline = Instant::now() + self.timeout;
        let answer = loop {
            match session.next(deadline, found).await {
                Next::Message(m) if is_answer_to(&m, INITIALIZE_ID) => break m,
                Next::Message(m) => session.unexpected(*m, found),
                Next::Closed => {
                    let how = session.exit_description().await;
                    found.problem(
                        CheckId::Initialize,
                        format!("the plugin {how} without answering initialize"),
                    );
                    return false;
                }
                Next::TimedOut => {
                    found.problem(
                        CheckId::Initialize,
                        format!(
                            "no answer to initialize within {} s",
                            self.timeout.as_secs()
                        ),
                    );
                    return false;
                }
            }
        };
        if let Some(error) = answer.error {
            found.problem(
                CheckId::Initialize,
                format!(
                    "the plugin refused initialize: {} (code {})",
                    error.message, error.code
                ),
            );
            return false;
        }
        let result: InitializeResult =
            match serde_json::from_value(answer.result.unwrap_or(Value::Null)) {
                Ok(r) => r,
                Err(e) => {
                    found.problem(
                        CheckId::Initialize,
                        format!("malformed initialize result: {e}"),
                    );
                    return false;
                }
            };
        if result.protocol_version != protocol::PROTOCOL_VERSION {
            found.problem(
                CheckId::Initialize,
                format!(
                    "protocol_version {} where {} was expected",
                    result.protocol_version,
                    protocol::PROTOCOL_VERSION
                ),
            );
            return false;
        }
        let Some(category) = self.category else {
            // First contact without a manifest: learn who it is.
            self.expected = PluginRef {
                name: result.name,
                version: result.version,
            };
            self.category = Some(result.category);
            return true;
        };
        let said = (&result.name, &result.version, result.category);
        if said != (&self.expected.name, &self.expected.version, category) {
            found.problem(
                CheckId::Initialize,
                format!(
                    "the plugin says it is {} {} ({}) but {} {} ({}) was expected",
                    result.name,
                    result.version,
                    result.category,
                    self.expected.name,
                    self.expected.version,
                    category
                ),
            );
            return false;
        }
        true
    }

    /// initialize → run → shutdown (stdin left open) → exit. Returns the
    /// stderr tail.
    async fn main_session(
        &mut self,
        inputs: Option<Map<String, Value>>,
        found: &mut Findings,
    ) -> Result<String, String> {
        let mut session = self.spawn("main").await?;
        let learned = self.category.is_none();
        if !self.initialize(&mut session, found).await {
            for id in [
                CheckId::Run,
                CheckId::Seq,
                CheckId::Count,
                CheckId::Schema,
                CheckId::Shutdown,
            ] {
                found.settle(id, Verdict::Skipped, "not checked: initialize failed");
            }
            return Ok(session.end().await);
        }
        let identity = format!(
            "{} {} ({})",
            self.expected.name,
            self.expected.version,
            self.category.map(Category::as_str).unwrap_or_default()
        );
        found.settle(
            CheckId::Initialize,
            Verdict::Pass,
            if learned {
                format!("learned identity {identity}; put it in the plugin's manifest")
            } else {
                format!("identity {identity}")
            },
        );
        let category = self.category.unwrap_or(Category::Detector);
        let inputs = inputs.unwrap_or_else(|| sample_inputs(category));
        session.counting = true;
        session.send(Message::request(
            RUN_ID,
            method::RUN,
            json!({ "inputs": inputs }),
        ));
        let deadline = Instant::now() + self.timeout;
        let answered = self.await_run(&mut session, deadline, found).await;
        session.counting = false;
        match answered {
            RunAnswer::Result(result) => {
                found.settle(
                    CheckId::Run,
                    Verdict::Pass,
                    format!("answered with {} findings", result.findings),
                );
                if result.findings != session.findings {
                    found.problem(
                        CheckId::Count,
                        format!(
                            "the run answer says findings = {} but {} finding notifications were sent",
                            result.findings, session.findings
                        ),
                    );
                } else {
                    found.settle(
                        CheckId::Count,
                        Verdict::Pass,
                        format!("{} findings", session.findings),
                    );
                }
            }
            RunAnswer::Error(message) => {
                found.problem(CheckId::Run, message);
                found.settle(
                    CheckId::Count,
                    Verdict::Skipped,
                    "not checked: no run result",
                );
            }
            RunAnswer::None(message) => {
                found.problem(CheckId::Run, message);
                found.settle(
                    CheckId::Count,
                    Verdict::Skipped,
                    "not checked: no run result",
                );
                found.settle(
                    CheckId::Shutdown,
                    Verdict::Skipped,
                    "not checked: run was not answered",
                );
                return Ok(session.end().await);
            }
        }

        session.send(Message::request(SHUTDOWN_ID, method::SHUTDOWN, json!({})));
        let deadline = Instant::now() + self.grace;
        let mut answered = false;
        loop {
            match session.next(deadline, found).await {
                Next::Message(m) if is_answer_to(&m, SHUTDOWN_ID) => {
                    answered = true;
                    break;
                }
                Next::Message(m) => session.unexpected(*m, found),
                Next::Closed | Next::TimedOut => break,
            }
        }
        // stdin stays open: `shutdown` alone must make the plugin exit.
        let exit = session.wait_exit(deadline).await;
        match (answered, exit) {
            (
                true,
                Some(ExitInfo {
                    exit_code: Some(0), ..
                }),
            ) => found.settle(CheckId::Shutdown, Verdict::Pass, "exited with status 0"),
            (false, _) => found.problem(
                CheckId::Shutdown,
                format!(
                    "no answer to shutdown within the grace period ({} ms)",
                    self.grace.as_millis()
                ),
            ),
            (true, Some(exit)) => found.problem(
                CheckId::Shutdown,
                format!(
                    "the plugin {} after shutdown",
                    exit.describe().unwrap_or_else(|| "ended".to_owned())
                ),
            ),
            (true, None) => found.problem(
                CheckId::Shutdown,
                format!(
                    "the plugin answered shutdown but was still running {} ms later",
                    self.grace.as_millis()
                ),
            ),
        }
        Ok(session.end().await)
    }

    async fn await_run(
        &self,
        session: &mut Session,
        deadline: Instant,
        found: &mut Findings,
    ) -> RunAnswer {
        loop {
            match session.next(deadline, found).await {
                Next::Message(m) if is_answer_to(&m, RUN_ID) => {
                    if let Some(error) = m.error {
                        return RunAnswer::Error(format!(
                            "the plugin answered run with error {} ({})",
                            error.code, error.message
                        ));
                    }
                    return match serde_json::from_value::<RunResult>(
                        m.result.unwrap_or(Value::Null),
                    ) {
                        Ok(result) => RunAnswer::Result(result),
                        Err(e) => RunAnswer::Error(format!("malformed run result: {e}")),
                    };
                }
                Next::Message(m) => session.unexpected(*m, found),
                Next::Closed => {
                    let how = session.exit_description().await;
                    return RunAnswer::None(format!("the plugin {how} without answering run"));
                }
                Next::TimedOut => {
                    return RunAnswer::None(format!(
                        "no answer to run within {} s (the manifest's timeout_seconds)",
                        self.timeout.as_secs()
                    ))
                }
            }
        }
    }

    /// initialize → run → cancel at once → the run must be answered within
    /// the grace period (cancelled, or done already).
    async fn cancel_session(&mut self, found: &mut Findings) -> Result<(), String> {
        let mut session = self.spawn("cancel").await?;
        let mut ignored = Findings::default();
        if !self.initialize(&mut session, &mut ignored).await {
            found.problem(
                CheckId::Cancel,
                "the plugin did not answer initialize again in a second session",
            );
            session.end().await;
            return Ok(());
        }
        let category = self.category.unwrap_or(Category::Detector);
        session.send(Message::request(
            RUN_ID,
            method::RUN,
            json!({ "inputs": sample_inputs(category) }),
        ));
        session.send(Message::notification(
            method::CANCEL,
            json!({"reason": "cancelled"}),
        ));
        let deadline = Instant::now() + self.grace;
        match self.await_run(&mut session, deadline, &mut ignored).await {
            RunAnswer::Result(_) => found.settle(
                CheckId::Cancel,
                Verdict::Pass,
                "the run finished before the cancel took effect",
            ),
            RunAnswer::Error(message) if message.contains(&code::CANCELLED.to_string()) => found
                .settle(
                    CheckId::Cancel,
                    Verdict::Pass,
                    "answered -32800 (cancelled)",
                ),
            RunAnswer::Error(message) => found.settle(
                CheckId::Cancel,
                Verdict::Pass,
                format!("answered promptly, but not with -32800: {message}"),
            ),
            RunAnswer::None(_) => found.problem(
                CheckId::Cancel,
                format!(
                    "no answer to run within the grace period ({} ms) after cancel",
                    self.grace.as_millis()
                ),
            ),
        }
        session.end().await;
        Ok(())
    }

    /// initialize → close stdin → the plugin must exit.
    async fn eof_session(&mut self, found: &mut Findings) -> Result<(), String> {
        let mut session = self.spawn("eof").await?;
        let mut ignored = Findings::default();
        if !self.initialize(&mut session, &mut ignored).await {
            found.problem(
                CheckId::Eof,
                "the plugin did not answer initialize again in a third session",
            );
            session.end().await;
            return Ok(());
        }
        session.to_plugin = None;
        let deadline = Instant::now() + self.grace;
        match session.wait_exit(deadline).await {
            Some(ExitInfo {
                exit_code: Some(0), ..
            }) => found.settle(CheckId::Eof, Verdict::Pass, "exited with status 0"),
            Some(exit) => found.problem(
                CheckId::Eof,
                format!(
                    "the plugin {} at end of input",
                    exit.describe().unwrap_or_else(|| "ended".to_owned())
                ),
            ),
            None => found.problem(
                CheckId::Eof,
                format!(
                    "the plugin was still running {} ms after its stdin was closed",
                    self.grace.as_millis()
                ),
            ),
        }
        session.end().await;
        Ok(())
    }
}

enum RunAnswer {
    Result(RunResult),
    Error(String),
    None(String),
}

fn is_answer_to(message: &Message, id: u64) -> bool {
    message.kind() == MessageKind::Response
        && message.id.as_ref().and_then(Value::as_u64) == Some(id)
}

fn quote(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut quoted: String = text.chars().take(MAX_QUOTED_LINE).collect();
    if text.chars().count() > MAX_QUOTED_LINE {
        quoted.push_str("...");
    }
    quoted
}

impl Session {
    fn send(&mut self, message: Message) {
        if let Some(tx) = &self.to_plugin {
            let _ = tx.try_send(message.to_line());
        }
    }

    /// The next well-formed message; stray text and invalid messages are
    /// recorded as problems on the way, and findings are checked.
    async fn next(&mut self, deadline: Instant, found: &mut Findings) -> Next {
        loop {
            if self.closed {
                return Next::Closed;
            }
            let event = match tokio::time::timeout_at(deadline, self.from_plugin.recv()).await {
                Ok(event) => event,
                Err(_) => return Next::TimedOut,
            };
            let line = match event {
                Some(StdoutEvent::Line(line)) => line,
                Some(StdoutEvent::TooLong { limit }) => {
                    found.problem(
                        CheckId::JsonRpc,
                        format!("a line longer than max_message_bytes ({limit} bytes)"),
                    );
                    self.closed = true;
                    continue;
                }
                Some(StdoutEvent::OutputLimit { limit }) => {
                    found.problem(
                        CheckId::Stdout,
                        format!("more than {} MiB written to stdout", limit >> 20),
                    );
                    self.closed = true;
                    continue;
                }
                Some(StdoutEvent::Failed(e)) => {
                    found.problem(CheckId::Stdout, format!("reading stdout failed: {e}"));
                    self.closed = true;
                    continue;
                }
                Some(StdoutEvent::Eof) | None => {
                    self.closed = true;
                    continue;
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                found.problem(CheckId::Stdout, "an empty line on stdout");
                continue;
            }
            let value: Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(_) => {
                    found.problem(
                        CheckId::Stdout,
                        format!("a line that is not JSON: {:?}", quote(&line)),
                    );
                    continue;
                }
            };
            let message: Message = match serde_json::from_value(value) {
                Ok(m) => m,
                Err(e) => {
                    found.problem(
                        CheckId::JsonRpc,
                        format!("not a JSON-RPC message ({e}): {}", quote(&line)),
                    );
                    continue;
                }
            };
            match message.kind() {
                MessageKind::Response => return Next::Message(Box::new(message)),
                MessageKind::Notification => self.notification(message, found),
                MessageKind::Request => found.problem(
                    CheckId::JsonRpc,
                    format!(
                        "the plugin sent a request ({}); plugins may only answer and notify",
                        message.method.unwrap_or_default()
                    ),
                ),
                MessageKind::Invalid => found.problem(
                    CheckId::JsonRpc,
                    format!("an invalid JSON-RPC 2.0 message: {}", quote(&line)),
                ),
            }
        }
    }

    fn notification(&mut self, message: Message, found: &mut Findings) {
        let name = message.method.unwrap_or_default();
        let params = message.params.unwrap_or(Value::Null);
        match name.as_str() {
            method::FINDING if !self.counting => found.problem(
                CheckId::JsonRpc,
                "a finding notification while no run was pending",
            ),
            method::FINDING => match serde_json::from_value::<FindingParams>(params) {
                Ok(FindingParams { seq, finding }) => {
                    self.findings += 1;
                    if seq != self.next_seq {
                        found.problem(
                            CheckId::Seq,
                            format!("finding seq {seq} where {} was due", self.next_seq),
                        );
                    }
                    self.next_seq = seq.saturating_add(1);
                    if let Err(violations) = secflow_core::schema::validate_finding(&finding) {
                        for v in violations {
                            let at = if v.instance_path.is_empty() {
                                "(document)".to_string()
                            } else {
                                v.instance_path.clone()
                            };
                            found.problem(
                                CheckId::Schema,
                                format!("finding seq {seq} at {at}: {}", v.message),
                            );
                        }
                    }
                }
                Err(e) => found.problem(
                    CheckId::JsonRpc,
                    format!("malformed finding notification: {e}"),
                ),
            },
            method::PROGRESS => {
                if let Err(e) = serde_json::from_value::<ProgressParams>(params) {
                    found.problem(
                        CheckId::JsonRpc,
                        format!("malformed progress notification: {e}"),
                    );
                }
            }
            method::LOG => {
                if let Err(e) = serde_json::from_value::<LogParams>(params) {
                    found.problem(CheckId::JsonRpc, format!("malformed log notification: {e}"));
                }
            }
            other => found.problem(
                CheckId::JsonRpc,
                format!("an unknown notification {other:?}"),
            ),
        }
    }

    fn unexpected(&mut self, message: Message, found: &mut Findings) {
        found.problem(
            CheckId::JsonRpc,
            format!(
                "an answer to a request that was not pending (id {})",
                message.id.map(|id| id.to_string()).unwrap_or_default()
            ),
        );
    }

    /// Waits for the process to exit until `deadline` (its stdout reader keeps
    /// draining the pipe); reaps it when it did.
    async fn wait_exit(&mut self, deadline: Instant) -> Option<ExitInfo> {
        let exited = tokio::time::timeout_at(deadline, self.process.exited()).await;
        match exited {
            Ok(Ok(())) => self.process.reap().ok(),
            _ => None,
        }
    }

    /// How the process ended, once stdout closed (it is given a moment).
    async fn exit_description(&mut self) -> String {
        let exit = self
            .wait_exit(Instant::now() + Duration::from_millis(500))
            .await;
        exit.as_ref()
            .and_then(ExitInfo::describe)
            .unwrap_or_else(|| "closed its stdout".to_owned())
    }

    /// Kills what is left of the plugin, removes its work dir and returns
    /// its stderr tail.
    async fn end(mut self) -> String {
        self.to_plugin = None;
        self.process.kill_group();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.process.exited()).await;
        let _ = self.process.reap();
        let tail = match self.stderr.take() {
            Some(task) => match tokio::time::timeout(Duration::from_secs(1), task).await {
                Ok(Ok((tail, _))) => tail,
                _ => String::new(),
            },
            None => String::new(),
        };
        if let Err(e) = secflow_sandbox::remove_run_dir(&self.run_dir) {
            tracing::warn!(dir = %self.run_dir.work.display(), error = %e, "cannot remove the check's work dir");
        }
        tail
    }
}

/// The checklist as text, one line per check with details and hints.
pub fn render(report: &CheckReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "plugin check: {}", report.executable.display());
    if let Some(p) = &report.plugin {
        let _ = writeln!(
            out,
            "plugin: {} {} ({}), identity from the {}",
            p.name,
            p.version,
            p.category,
            if report.identity_source == "manifest" {
                "manifest"
            } else {
                "plugin's initialize answer (no --manifest)"
            }
        );
    }
    for item in &report.checks {
        let mark = match item.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "skip",
        };
        let _ = writeln!(out, "  [{mark}] {:<10} {}", item.id.as_str(), item.rule);
        for detail in &item.details {
            let _ = writeln!(out, "         {detail}");
        }
        if let Some(hint) = &item.hint {
            let _ = writeln!(out, "         hint: {hint}");
        }
    }
    let passed = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Pass)
        .count();
    let _ = writeln!(out, "{passed} of {} checks passed", report.checks.len());
    if !report.passed() && !report.stderr_tail.trim().is_empty() {
        let lines: Vec<&str> = report.stderr_tail.lines().collect();
        let _ = writeln!(out, "plugin stderr (last lines):");
        for line in &lines[lines.len().saturating_sub(10)..] {
            let _ = writeln!(out, "  | {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_fails_its_check_even_after_a_pass_was_recorded() {
        let mut found = Findings::default();
        found.settle(CheckId::Count, Verdict::Pass, "3 findings");
        found.problem(CheckId::Seq, "finding seq 4 where 3 was due");
        let items = found.into_items();
        let seq = items.iter().find(|c| c.id == CheckId::Seq).unwrap();
        assert_eq!(seq.verdict, Verdict::Fail);
        assert_eq!(seq.details, ["finding seq 4 where 3 was due"]);
        assert!(seq.hint.is_some());
        let count = items.iter().find(|c| c.id == CheckId::Count).unwrap();
        assert_eq!(count.verdict, Verdict::Pass);
        assert!(count.hint.is_none());
    }

    #[test]
    fn problems_are_quoted_up_to_a_bound_and_the_rest_counted() {
        let mut found = Findings::default();
        for i in 0..20 {
            found.problem(CheckId::Schema, format!("problem {i}"));
        }
        let items = found.into_items();
        let schema = items.iter().find(|c| c.id == CheckId::Schema).unwrap();
        assert_eq!(schema.details.len(), MAX_QUOTED + 1);
        assert_eq!(schema.details.last().unwrap(), "... and 12 more");
    }

    #[test]
    fn a_report_with_a_skipped_check_has_not_passed() {
        let mut found = Findings::default();
        found.settle(CheckId::Cancel, Verdict::Skipped, "not checked");
        let report = CheckReport {
            executable: "x".into(),
            plugin: None,
            identity_source: "learned".into(),
            checks: found.into_items(),
            stderr_tail: String::new(),
        };
        assert!(!report.passed());
        assert!(render(&report).contains("[skip] cancel"));
    }

    #[test]
    fn sample_inputs_give_a_detector_a_target_and_others_a_valid_finding() {
        assert!(sample_inputs(Category::Detector).contains_key("target"));
        let inputs = sample_inputs(Category::Enricher);
        let finding = &inputs["findings"][0];
        assert!(secflow_core::schema::validate_finding(finding).is_ok());
    }
}
