//! Running plugins: the registry of verified plugins ([`registry`]), one run
//! from the verified executable to the stored run record (this module), and the
//! [`Supervisor`] that owns the registry, the store and the host's sandbox
//! capabilities for a process (the daemon or an embedded CLI command).
//!
//! The runner opens and hashes the entrypoint, prepares the sandbox, spawns the
//! plugin, drives the protocol session, reaps the process and records the
//! outcome (run record, telemetry, audit). It never panics on plugin behaviour:
//! every way a plugin can misbehave ends as a status and an error kind.

// `process` and `streams` are public for `secflow check`, which drives a
// plugin's process without the supervisor's bookkeeping.
pub mod process;
pub mod provenance;
pub mod registry;
mod session;
mod store;
pub mod streams;
pub mod supervisor;
mod verified;

pub use store::{
    export_sqlite, import_into_store, open_store, probe_store, ImportError, StoreProbe,
};
pub use supervisor::{Supervisor, SupervisorError};

// The pure decoders of what a plugin writes, reachable for the fuzz targets.
#[doc(hidden)]
pub use session::{decode_line, fast_finding, finding_params, PluginLine};
#[doc(hidden)]
pub use streams::{spawn_stdout_reader, StdoutEvent};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secflow_plugin_sdk::protocol::{
    self, Category, Incomplete, InitializeParams, PluginRef, ProtocolLimits, RunContextInfo,
};
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use process::ExitInfo;
use secflow_core::clock::now_rfc3339;
use secflow_core::config::{Config, RunLimits};
use secflow_core::record::{
    ErrorKind, RefusedEgress, RunError, RunRecord, RunStatus, REFUSED_EGRESS_KEY,
};
use secflow_egress::{AllowSet, EgressTable, Nft, Refusal, RunEgress, SystemResolver};
use secflow_manifest::VerifiedPlugin;
use secflow_sandbox::{
    EffectivePolicy, Host, Layer, PlanError, RunDir, SandboxPlan, SeccompAudit, SeccompKill,
    UidLease, UidPool,
};
use secflow_store::{AuditEvent, StoreWriter, TelemetryEvent, WriteOp};
use session::{Ending, SessionOutcome, SessionSpec};

pub use session::is_cancel_answer;

/// What the caller asks to run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub plugin: String,
    pub inputs: Map<String, Value>,
    /// The run's config before `config_schema` defaults are applied.
    pub config: Map<String, Value>,
    /// Wall-clock limit for this run; capped by the manifest's `timeout_seconds`.
    pub timeout_ms: Option<u64>,
    pub workflow_id: Option<String>,
    pub node_id: Option<String>,
    /// Uid of the caller, for the audit trail.
    pub actor_uid: Option<u32>,
}

/// Runs plugins; cheap to clone.
#[derive(Debug, Clone)]
pub struct Runner {
    config: Arc<Config>,
    store: StoreWriter,
    host: Arc<Host>,
    uids: UidPool,
    executables: Arc<verified::VerifiedExecutables>,
    /// The kernel's reports of seccomp kills, by uid; `None` where the audit
    /// log cannot be read (see `secflow_sandbox::SeccompAudit`).
    seccomp_audit: Option<Arc<SeccompAudit>>,
    /// This supervisor's nftables table for `network: "targets"` runs (one
    /// chain per running uid); `None` where the host cannot have one.
    egress: Option<Arc<EgressTable>>,
}

/// What `execute` needs of a prepared run.
struct Launch<'a> {
    plugin: &'a VerifiedPlugin,
    plan: &'a SandboxPlan,
    layers: &'a [Layer],
    exec: std::fs::File,
    run_dir: &'a RunDir,
    uid: Option<u32>,
    /// A `network: "targets"` run's rules, closed once its processes are gone.
    egress: Option<RunEgress<'a>>,
    started: Instant,
    /// `started` on the wall clock, ms since the Unix epoch (the kernel's
    /// audit records carry that clock).
    started_ms: u64,
    phases: &'a mut Phases,
}

/// When each phase of a run ended, in µs from its start: logged at debug level
/// (`SECFLOW_LOG=secflow_runner=debug`) to see where a slow run's
/// time went.
#[derive(Debug)]
struct Phases {
    start: Instant,
    marks: Vec<(&'static str, u128)>,
}

impl Phases {
    fn new(start: Instant) -> Phases {
        Phases {
            start,
            marks: Vec::with_capacity(10),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        self.marks.push((phase, self.start.elapsed().as_micros()));
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (phase, us)) in self.marks.iter().enumerate() {
            write!(f, "{}{phase}={us}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}

/// The run's error message when the sandbox could not start `entrypoint`.
fn launch_failure(entrypoint: &Path, e: &secflow_sandbox::LaunchError) -> String {
    match e.step {
        Some(step) => format!(
            "the sandbox could not {step} for {}: {}",
            entrypoint.display(),
            e.error
        ),
        None => format!("cannot start {}: {}", entrypoint.display(), e.error),
    }
}

/// A new run id: time-ordered (UUID v7), so ids sort by start.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A record for a run that is starting (or is refused before it starts).
pub fn base_record(
    run_id: &str,
    name: &str,
    version: &str,
    category: Category,
    request: &RunRequest,
) -> RunRecord {
    RunRecord {
        run_id: run_id.to_string(),
        plugin: name.to_string(),
        plugin_version: version.to_string(),
        category,
        status: RunStatus::Running,
        partial: false,
        exit_code: None,
        signal: None,
        started_at: now_rfc3339(),
        finished_at: None,
        duration_ms: 0,
        cpu_ms: 0,
        memory_mb: 0,
        findings: 0,
        findings_rejected: 0,
        outputs: Map::new(),
        error: None,
        stderr_tail: String::new(),
        workflow_id: request.workflow_id.clone(),
        node_id: request.node_id.clone(),
        refused_egress: Vec::new(),
    }
}

/// An audit event about a run.
pub fn audit_event(
    event: &str,
    security: bool,
    record: &RunRecord,
    actor_uid: Option<u32>,
    message: String,
    details: Value,
) -> AuditEvent {
    AuditEvent {
        id: 0,
        timestamp: now_rfc3339(),
        event: event.to_string(),
        security,
        plugin: Some(record.plugin.clone()),
        run_id: Some(record.run_id.clone()),
        actor_uid,
        message,
        details,
    }
}

impl Runner {
    pub fn new(config: Arc<Config>, store: StoreWriter, host: Arc<Host>) -> Runner {
        let uids = UidPool::new(config.sandbox.uid_min, config.sandbox.uid_count);
        let first = config.sandbox.uid_min;
        let run_uids = first..first.saturating_add(config.sandbox.uid_count);
        let seccomp_audit = match SeccompAudit::open(run_uids) {
            Ok(audit) => Some(Arc::new(audit)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kernel's audit log: a seccomp kill of a process the plugin reaps itself will go unseen, and violations will not name their system call");
                None
            }
        };
        // Installing the table also removes the tables of supervisors that
        // died without removing theirs (a crash, a SIGKILL).
        let egress = match host.lacks(Layer::Egress) {
            None => match Nft::find().and_then(EgressTable::install) {
                Ok(table) => Some(Arc::new(table)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the egress table: network \"targets\" runs will be rejected");
                    None
                }
            },
            Some(_) => None,
        };
        Runner {
            config,
            store,
            host,
            uids,
            executables: Arc::default(),
            seccomp_audit,
            egress,
        }
    }

    /// The host's sandbox abilities and shared state.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Stores a run that was refused before anything was spawned, with its audit
    /// event, and returns its final record.
    pub async fn reject(
        &self,
        mut record: RunRecord,
        error: RunError,
        security: bool,
        actor_uid: Option<u32>,
    ) -> RunRecord {
        tracing::warn!(run_id = %record.run_id, plugin = %record.plugin, kind = %error.kind, "run rejected: {}", error.message);
        let event = if security {
            error.kind.as_str()
        } else {
            "run_rejected"
        };
        let audit = audit_event(
            event,
            security,
            &record,
            actor_uid,
            error.message.clone(),
            json!({"kind": error.kind}),
        );
        record.status = RunStatus::Rejected;
        record.finished_at = Some(now_rfc3339());
        record.error = Some(error);
        self.finish(record, vec![audit]).await
    }

    /// Stores a run that did not start because data it reads is not on this
    /// host (`skipped`), with a `run_skipped` audit event.
    async fn skip(&self, mut record: RunRecord, message: String, actor: Option<u32>) -> RunRecord {
        tracing::warn!(run_id = %record.run_id, plugin = %record.plugin, "run skipped: {message}");
        let error = RunError::new(ErrorKind::DataUnavailable, message);
        let audit = audit_event(
            "run_skipped",
            false,
            &record,
            actor,
            error.message.clone(),
            json!({"kind": error.kind}),
        );
        record.status = RunStatus::Skipped;
        record.finished_at = Some(now_rfc3339());
        record.error = Some(error);
        self.finish(record, vec![audit]).await
    }

    /// [`Runner::reject`] for refusals that are not security events.
    async fn refuse(
        &self,
        record: RunRecord,
        kind: ErrorKind,
        message: String,
        actor: Option<u32>,
    ) -> RunRecord {
        self.reject(record, RunError::new(kind, message), false, actor)
            .await
    }

    /// Runs `plugin` with an already validated config; `record` is its fresh
    /// [`base_record`]. `cancel` set to `true` cancels the run.
    pub async fn run(
        &self,
        plugin: &VerifiedPlugin,
        record: RunRecord,
        request: RunRequest,
        config: Map<String, Value>,
        cancel: watch::Receiver<bool>,
    ) -> RunRecord {
        let started = Instant::now();
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut phases = Phases::new(started);
        let run_id = record.run_id.clone();
        let actor = request.actor_uid;
        if let Err(e) = self.store.send(WriteOp::RunStarted(record.clone())).await {
            tracing::error!(run_id = %run_id, error = %e, "cannot record run start");
        }

        // What runs is what was verified: hash the open file, execute that file.
        let exec = match self
            .executables
            .open(&plugin.entrypoint, &plugin.manifest.code_hash)
        {
            Ok(file) => file,
            Err(e) => {
                let kind = match e {
                    secflow_trust::TrustError::HashMismatch { .. } => ErrorKind::HashMismatch,
                    _ => ErrorKind::SpawnFailed,
                };
                let security = kind == ErrorKind::HashMismatch;
                return self
                    .reject(record, RunError::new(kind, e.to_string()), security, actor)
                    .await;
            }
        };

        phases.mark("verified");
        // Fail closed: a layer the plan needs and this host lacks rejects the run.
        let mut plan = match secflow_sandbox::plan(plugin, &self.config) {
            Ok(plan) => plan,
            Err(PlanError::ReadPathMissing { path }) => {
                let message = missing_data_message(&path, &self.config);
                return self.skip(record, message, actor).await;
            }
            Err(e) => {
                return self
                    .refuse(record, ErrorKind::SandboxUnavailable, e.to_string(), actor)
                    .await
            }
        };
        let (layers, degraded) = match plan.admit(&self.host, &self.config.sandbox.allow_degraded) {
            Ok(admitted) => admitted,
            Err(e) => {
                return self
                    .refuse(record, ErrorKind::SandboxUnavailable, e.to_string(), actor)
                    .await
            }
        };
        // A "targets" run's targets are resolved now, by the supervisor; the
        // run itself can ask no DNS server it was not given.
        let allow = if layers.contains(&Layer::Egress) {
            let targets = input_targets(&request.inputs);
            let entries = plan.egress.clone();
            let resolved = tokio::task::spawn_blocking(move || {
                secflow_egress::allow_set(&targets, &entries, &SystemResolver)
            })
            .await;
            match resolved {
                Ok(Ok(set)) => Some(set),
                Ok(Err(e)) => {
                    let message = format!("the run's egress cannot be scoped: {e}");
                    return self
                        .refuse(record, ErrorKind::InvalidInput, message, actor)
                        .await;
                }
                Err(e) => {
                    let message = format!("the run's targets could not be resolved: {e}");
                    return self
                        .refuse(record, ErrorKind::SpawnFailed, message, actor)
                        .await;
                }
            }
        } else {
            None
        };
        // The names the supervisor resolved, as the run's own /etc/hosts.
        let hosts_file = match &allow {
            Some(allow) if !allow.names.is_empty() && layers.contains(&Layer::MountNamespace) => {
                match RunHostsFile::write(&self.config.sandbox.work_root, &run_id, allow) {
                    Ok(file) => {
                        plan.hosts_file = Some(file.path.clone());
                        Some(file)
                    }
                    Err(e) => {
                        let message = format!("cannot write the run's hosts file: {e}");
                        return self
                            .refuse(record, ErrorKind::SpawnFailed, message, actor)
                            .await;
                    }
                }
            }
            _ => None,
        };
        let lease = if layers.contains(&Layer::Uid) {
            match self.uids.lease() {
                Some(lease) => Some(lease),
                None => {
                    let message = format!(
                        "every uid of sandbox.uid_min..+uid_count ({} uids) is in use by a running plugin",
                        self.config.sandbox.uid_count
                    );
                    return self
                        .refuse(record, ErrorKind::SandboxUnavailable, message, actor)
                        .await;
                }
            }
        } else {
            None
        };
        let uid = lease.as_ref().map(UidLease::uid);
        let egress = match &allow {
            Some(allow) => match self.scope_egress(uid, allow) {
                Ok(guard) => Some(guard),
                Err(message) => {
                    return self
                        .refuse(record, ErrorKind::SandboxUnavailable, message, actor)
                        .await
                }
            },
            None => None,
        };
        let run_dir = match secflow_sandbox::create_run_dir(
            &self.config.sandbox.work_root,
            &run_id,
            uid.map(|u| (u, u)),
            secflow_sandbox::WorkDirIn::for_layers(&layers),
        ) {
            Ok(dir) => dir,
            Err(e) => {
                let message = format!(
                    "cannot create the run's directory under {}: {e}",
                    self.config.sandbox.work_root.display()
                );
                return self
                    .refuse(record, ErrorKind::SpawnFailed, message, actor)
                    .await;
            }
        };
        if let Some(state) = &plan.state_dir {
            if let Err(e) = secflow_sandbox::prepare_state_dir(state, uid.map(|u| (u, u))) {
                let _ = secflow_sandbox::remove_run_dir(&run_dir);
                return self
                    .refuse(record, ErrorKind::SpawnFailed, e.to_string(), actor)
                    .await;
            }
        }
        phases.mark("run_dir");
        let policy = EffectivePolicy {
            layers: layers.clone(),
            degraded,
            uid,
            gid: uid,
            network: plan.network,
            egress: allow,
            filesystem: plan.filesystem,
            limits: plan.limits,
            mechanism: "rlimits with a per-run uid (RLIMIT_DATA for memory, RLIMIT_NPROC per uid)",
        };
        let invoked = audit_event(
            "plugin_invoked",
            false,
            &record,
            actor,
            format!("{} {} started", record.plugin, record.plugin_version),
            json!({
                "policy": &policy,
                "provenance": provenance::Provenance::of(plugin, &policy, &plan),
            }),
        );
        let _ = self.store.audit(invoked).await;

        let launch = Launch {
            plugin,
            plan: &plan,
            layers: &layers,
            exec,
            run_dir: &run_dir,
            uid,
            egress,
            started,
            started_ms,
            phases: &mut phases,
        };
        let record = self.execute(launch, record, request, config, cancel).await;
        phases.mark("executed");
        if let Err(e) = secflow_sandbox::remove_run_dir(&run_dir) {
            tracing::warn!(run_id = %run_id, dir = %run_dir.work.display(), error = %e, "cannot remove the run's directory");
        }
        // The uid returns to the pool only now: every process of the run is gone.
        drop(lease);
        drop(hosts_file);
        phases.mark("cleaned");
        tracing::debug!(run_id = %run_id, phases = %phases, "run phases (µs from start)");
        record
    }

    async fn execute(
        &self,
        launch: Launch<'_>,
        mut record: RunRecord,
        request: RunRequest,
        config: Map<String, Value>,
        cancel: watch::Receiver<bool>,
    ) -> RunRecord {
        let Launch {
            plugin,
            plan,
            layers,
            exec,
            run_dir,
            uid,
            egress,
            started,
            started_ms,
            phases,
        } = launch;
        let limits = &self.config.limits;
        let timeout = Duration::from_secs(plugin.limits.timeout_seconds).min(
            request
                .timeout_ms
                .map_or(Duration::MAX, Duration::from_millis),
        );
        let deadline = started + timeout;
        let actor = request.actor_uid;

        let prepared =
            match plan.prepare(&self.host, layers, exec, &plugin.entrypoint, run_dir, uid) {
                Ok(p) => p,
                Err(e) => {
                    let message = format!("cannot prepare the sandbox: {e}");
                    return self
                        .refuse(record, ErrorKind::SpawnFailed, message, actor)
                        .await;
                }
            };
        phases.mark("prepared");
        let mut child = match process::spawn(prepared).await {
            Ok(child) => child,
            Err(e) => {
                let message = launch_failure(&plugin.entrypoint, &e);
                return self
                    .refuse(record, ErrorKind::SpawnFailed, message, actor)
                    .await;
            }
        };

        phases.mark("spawned");
        let initialize = InitializeParams {
            protocol_version: protocol::PROTOCOL_VERSION,
            run_id: record.run_id.clone(),
            plugin: PluginRef {
                name: record.plugin.clone(),
                version: record.plugin_version.clone(),
            },
            config,
            context: RunContextInfo {
                workdir: run_dir.work.to_string_lossy().into_owned(),
                deadline_ms: timeout.as_millis() as u64,
                network: plan.network.any(),
                workflow_id: request.workflow_id.clone(),
                node_id: request.node_id.clone(),
                state_dir: plan
                    .state_dir
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
            },
            limits: ProtocolLimits {
                max_message_bytes: limits.max_message_bytes,
                max_findings: limits.max_findings,
            },
        };
        let spec = SessionSpec {
            run_id: record.run_id.clone(),
            name: record.plugin.clone(),
            version: record.plugin_version.clone(),
            category: record.category,
            initialize: serde_json::to_value(&initialize).unwrap_or(Value::Null),
            deadline,
            grace: Duration::from_millis(limits.cancel_grace_ms),
            max_findings: limits.max_findings,
        };
        let to_plugin = spawn_stdin_writer(child.stdin.take());
        let from_plugin = match child.stdout.take() {
            Some(stdout) => streams::spawn_stdout_batches(
                stdout,
                limits.max_message_bytes as usize,
                plan.limits.max_output_mb.saturating_mul(1 << 20),
            ),
            None => mpsc::channel(1).1,
        };
        let stderr = child
            .stderr
            .take()
            .map(|stderr| streams::spawn_stderr_drain(stderr, limits.stderr_tail_bytes));

        let outcome = session::drive(
            &spec,
            request.inputs,
            &child,
            to_plugin,
            from_plugin,
            cancel,
            &self.store,
        )
        .await;

        phases.mark("session");
        // The session killed the group; the leader is dead or dying.
        let exit = match tokio::time::timeout(Duration::from_secs(5), child.exited()).await {
            Ok(Ok(())) => child.reap().ok(),
            _ => None,
        };
        // The launch did not wait for the setup (see `process::spawn`): a step
        // that failed shows only now. An init that ended without a report
        // was killed: by the session at a deadline or cancel (the session's
        // ending says so), or by something else, which is a failed start too.
        let setup_failure = child
            .setup_failure()
            .filter(|e| e.step.is_some() || outcome.ending.is_none())
            .map(|e| launch_failure(&plugin.entrypoint, e));
        let (stderr_tail, stderr_bytes) = match stderr {
            Some(task) => match tokio::time::timeout(Duration::from_secs(1), task).await {
                Ok(Ok(tail)) => tail,
                _ => (String::new(), 0),
            },
            None => (String::new(), 0),
        };
        drop(child);
        let reported = match uid {
            Some(uid) if layers.contains(&Layer::Seccomp) => {
                let killed = exit
                    .as_ref()
                    .is_some_and(|e| e.signal == Some(libc::SIGSYS) || e.seccomp_kills > 0);
                self.seccomp_kills(uid, started_ms, killed).await
            }
            _ => Vec::new(),
        };
        // Every process of the run is gone: its rules go, and what they
        // refused is read back.
        let refusals = match egress.map(|e| off_the_runtime(|| e.close())) {
            Some(Ok(mut refusals)) => {
                refusals.truncate(secflow_egress::MAX_REFUSED_DESTINATIONS);
                refusals
            }
            Some(Err(e)) => {
                tracing::warn!(run_id = %record.run_id, error = %e, "cannot read back the run's refused egress");
                Vec::new()
            }
            None => Vec::new(),
        };

        phases.mark("reaped");
        if let Some(message) = setup_failure {
            return self
                .refuse(record, ErrorKind::SpawnFailed, message, actor)
                .await;
        }
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.finished_at = Some(now_rfc3339());
        if let Some(exit) = exit {
            record.exit_code = exit.exit_code;
            record.signal = exit.signal;
            record.cpu_ms = exit.cpu_ms;
            record.memory_mb = exit.memory_mb;
        }
        record.findings_rejected = outcome.rejected;
        let (status, error) = conclude(
            &outcome,
            exit.as_ref(),
            &reported,
            timeout,
            &plan.limits,
            &stderr_tail,
        );
        record.stderr_tail = stderr_tail;
        record.status = status;
        record.error = error;
        record.partial = !matches!(status, RunStatus::Succeeded | RunStatus::Rejected);
        if let Some(Ok(result)) = &outcome.run_answer {
            record.outputs = result.outputs.clone();
            // The stores keep the refusals under this key: a plugin cannot
            // write (or hide) them.
            record.outputs.remove(REFUSED_EGRESS_KEY);
        }
        record.refused_egress = refusals.iter().map(refused_egress).collect();
        tracing::info!(
            run_id = %record.run_id, plugin = %record.plugin, status = %record.status,
            findings = outcome.accepted, rejected = outcome.rejected, stderr_bytes,
            duration_ms = record.duration_ms, "run ended"
        );

        let mut audit = Vec::new();
        if let Some(error) = &record.error {
            if matches!(
                error.kind,
                ErrorKind::IdentityMismatch | ErrorKind::SandboxViolation
            ) {
                audit.push(audit_event(
                    error.kind.as_str(),
                    true,
                    &record,
                    actor,
                    error.message.clone(),
                    json!({"signal": record.signal, "seccomp_kills": reported}),
                ));
            }
        }
        for refusal in refusals
            .iter()
            .take(secflow_egress::MAX_REFUSED_DESTINATIONS)
        {
            let destination = match refusal.port {
                Some(port) => std::net::SocketAddr::new(refusal.destination, port).to_string(),
                None => refusal.destination.to_string(),
            };
            audit.push(audit_event(
                "egress_refused",
                true,
                &record,
                actor,
                format!(
                    "{} was refused {} {destination} ({} packets)",
                    record.plugin, refusal.protocol, refusal.packets
                ),
                json!({"destination": refusal.destination.to_string(), "protocol": refusal.protocol,
                       "port": refusal.port, "packets": refusal.packets}),
            ));
        }
        self.finish(record, audit).await
    }

    /// Installs the rules of a `network: "targets"` run for its uid.
    fn scope_egress(&self, uid: Option<u32>, allow: &AllowSet) -> Result<RunEgress<'_>, String> {
        let Some(uid) = uid else {
            return Err("network \"targets\" is enforced by the run's uid, and the uid layer is left out on this host".into());
        };
        let Some(table) = self.egress.as_deref() else {
            return Err("network \"targets\" needs the supervisor's nftables table, which could not be installed (see the daemon's log at start)".into());
        };
        off_the_runtime(|| table.open(uid, allow))
            .map_err(|e| format!("cannot scope the run's egress: {e}"))
    }

    /// The seccomp kills the kernel reported for the run that held `uid`
    /// (every process of it is gone by now). The kernel sends its reports a
    /// moment after the kill: when the run is known to have had one
    /// (`killed`), this waits a little for the report that names the call.
    async fn seccomp_kills(&self, uid: u32, started_ms: u64, killed: bool) -> Vec<SeccompKill> {
        let Some(audit) = &self.seccomp_audit else {
            return Vec::new();
        };
        let mut kills = audit.kills_of(uid, started_ms);
        let mut waited = Duration::ZERO;
        while killed && kills.is_empty() && waited < SECCOMP_REPORT_WAIT {
            tokio::time::sleep(SECCOMP_REPORT_POLL).await;
            waited += SECCOMP_REPORT_POLL;
            kills = audit.kills_of(uid, started_ms);
        }
        kills
    }

    /// Commits the final record, its telemetry and audit events; returns the
    /// record as stored (with storage's finding counts).
    async fn finish(&self, record: RunRecord, audit: Vec<AuditEvent>) -> RunRecord {
        for event in audit {
            let _ = self.store.audit(event).await;
        }
        let stored = match self.store.finish_run(record.clone()).await {
            Ok(stored) => stored,
            Err(e) => {
                // The writer retries this record (as failed) with its next batch.
                let reason = secflow_core::error_chain(&e);
                tracing::error!(run_id = %record.run_id, error = %reason, "cannot store the run record");
                let mut record = record;
                record.lost_to_storage(e.run_error_kind(), &reason);
                record
            }
        };
        let telemetry = TelemetryEvent {
            event: "plugin_executed".into(),
            plugin: stored.plugin.clone(),
            version: stored.plugin_version.clone(),
            run_id: stored.run_id.clone(),
            duration_ms: stored.duration_ms,
            cpu_ms: stored.cpu_ms,
            memory_mb: stored.memory_mb,
            findings_processed: stored.findings + stored.findings_rejected,
            success: stored.status == RunStatus::Succeeded,
            timestamp: now_rfc3339(),
        };
        let _ = self.store.send(WriteOp::Telemetry(telemetry)).await;
        stored
    }
}

/// A `"targets"` run's `/etc/hosts` on the host (bound read-only into its
/// view), removed when dropped.
struct RunHostsFile {
    path: std::path::PathBuf,
}

impl RunHostsFile {
    fn write(work_root: &Path, run_id: &str, allow: &AllowSet) -> std::io::Result<RunHostsFile> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = work_root.join(".hosts");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)?;
        let path = dir.join(run_id);
        std::fs::write(&path, allow.hosts_file())?;
        // Readable by the run's uid whatever the supervisor's umask.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(RunHostsFile { path })
    }
}

impl Drop for RunHostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `f`, which waits for the `nft` tool, without stalling the other
/// tasks of a multi-threaded runtime's worker (a current-thread runtime, the
/// CLI's, just runs it).
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The targets a run names in its inputs: `target` (a string) and
/// `targets` (an array of strings).
fn input_targets(inputs: &Map<String, Value>) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    if let Some(t) = inputs.get("target").and_then(Value::as_str) {
        targets.push(t.to_string());
    }
    if let Some(list) = inputs.get("targets").and_then(Value::as_array) {
        targets.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
    }
    targets
}

fn refused_egress(r: &Refusal) -> RefusedEgress {
    RefusedEgress {
        destination: r.destination.to_string(),
        protocol: r.protocol.clone(),
        port: r.port,
        packets: r.packets,
    }
}

/// How long a run that ended by a seccomp kill waits for the kernel's report
/// naming the call, and how often it looks.
const SECCOMP_REPORT_WAIT: Duration = Duration::from_millis(200);
const SECCOMP_REPORT_POLL: Duration = Duration::from_millis(10);

/// `" (ptrace (101), mount (165))"`: the distinct calls the kernel reported,
/// for a violation's message; empty when it reported none.
fn forbidden_calls(reported: &[SeccompKill]) -> String {
    let mut labels: Vec<String> = Vec::new();
    for kill in reported {
        let label = kill.syscall_label();
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    if labels.is_empty() {
        String::new()
    } else {
        format!(" ({})", labels.join(", "))
    }
}

/// The run's status and error from what the session saw and how the process
/// ended. Pure; the order of the checks is the precedence.
fn conclude(
    outcome: &SessionOutcome,
    exit: Option<&ExitInfo>,
    reported: &[SeccompKill],
    timeout: Duration,
    limits: &RunLimits,
    stderr_tail: &str,
) -> (RunStatus, Option<RunError>) {
    if let Some(fault) = &outcome.fault {
        if fault.kind == ErrorKind::IdentityMismatch {
            return (RunStatus::Rejected, Some(fault.clone()));
        }
    }
    // The seccomp filter kills with SIGSYS: a violation, whatever else happened.
    let calls = forbidden_calls(reported);
    if exit.and_then(|e| e.signal) == Some(libc::SIGSYS) {
        let message = format!(
            "the plugin made a forbidden system call{calls} and was killed by the seccomp filter (SIGSYS)"
        );
        return (
            RunStatus::Violated,
            Some(RunError::new(ErrorKind::SandboxViolation, message)),
        );
    }
    // Orphans the init reaped, and any process the kernel reported (the
    // plugin may have reaped its own children).
    let kills = exit
        .map_or(0, |e| e.seccomp_kills as usize)
        .max(reported.len());
    if kills > 0 {
        let message = format!(
            "{kills} process(es) the plugin started made a forbidden system call{calls} and were killed by the seccomp filter (SIGSYS)"
        );
        return (
            RunStatus::Violated,
            Some(RunError::new(ErrorKind::SandboxViolation, message)),
        );
    }
    if let Some(error) = resource_limit(exit, limits, stderr_tail) {
        return (RunStatus::Failed, Some(error));
    }
    match outcome.ending {
        Some(Ending::Deadline) => {
            let message = format!(
                "the run passed its deadline of {} ms and was stopped",
                timeout.as_millis()
            );
            return (
                RunStatus::TimedOut,
                Some(RunError::new(ErrorKind::Timeout, message)),
            );
        }
        Some(Ending::Cancelled) => {
            return (
                RunStatus::Cancelled,
                Some(RunError::new(ErrorKind::Cancelled, "the run was cancelled")),
            );
        }
        None => {}
    }
    if let Some(fault) = &outcome.fault {
        return (RunStatus::Failed, Some(fault.clone()));
    }
    let how = exit
        .and_then(ExitInfo::describe)
        .unwrap_or_else(|| "ended".to_owned());
    match &outcome.run_answer {
        Some(Err(error)) => {
            let mut e = RunError::new(
                ErrorKind::PluginError,
                format!(
                    "the plugin reported an error: {} (code {})",
                    error.message, error.code
                ),
            );
            e.code = error.code;
            (RunStatus::Failed, Some(e))
        }
        None => (
            RunStatus::Failed,
            Some(RunError::new(
                ErrorKind::PluginCrashed,
                format!("the plugin {how} without answering run"),
            )),
        ),
        Some(Ok(result)) => match exit {
            Some(ExitInfo {
                exit_code: Some(0), ..
            }) => match &result.incomplete {
                None => (RunStatus::Succeeded, None),
                Some(incomplete) => (RunStatus::Partial, Some(incomplete_error(incomplete))),
            },
            _ if outcome.killed => (
                RunStatus::Failed,
                Some(RunError::new(
                    ErrorKind::ProtocolViolation,
                    "the plugin did not exit after shutdown and end of input; it was killed",
                )),
            ),
            _ => (
                RunStatus::Failed,
                Some(RunError::new(
                    ErrorKind::PluginCrashed,
                    format!("the plugin {how} after answering run"),
                )),
            ),
        },
    }
}

/// Whether the process ended because it hit its CPU or memory limit.
///
/// CPU: `RLIMIT_CPU` sends SIGXCPU at the soft limit and SIGKILL at the hard
/// one. Memory: `RLIMIT_DATA` makes allocations fail, and programs then abort
/// or exit with an allocation error; a death with a peak RSS near the limit, or
/// an allocation failure in the stderr tail, is counted as `memory_limit`.
fn resource_limit(
    exit: Option<&ExitInfo>,
    limits: &RunLimits,
    stderr_tail: &str,
) -> Option<RunError> {
    let exit = exit?;
    let cpu_spent = exit.cpu_ms >= limits.cpu_seconds.saturating_mul(1000);
    if exit.signal == Some(libc::SIGXCPU) || (exit.signal == Some(libc::SIGKILL) && cpu_spent) {
        let message = format!(
            "the plugin used its {} s of CPU (sandbox.cpu_seconds) and was stopped",
            limits.cpu_seconds
        );
        return Some(RunError::new(ErrorKind::CpuLimit, message));
    }
    let died = exit.signal.is_some() || exit.exit_code.is_some_and(|c| c != 0);
    let near_limit = exit.memory_mb.saturating_mul(10) >= limits.memory_mb.saturating_mul(8);
    const ALLOCATION_FAILURES: &[&str] = &[
        "memory allocation of",
        "MemoryError",
        "out of memory",
        "Cannot allocate memory",
        "std::bad_alloc",
    ];
    let said_so = ALLOCATION_FAILURES.iter().any(|m| stderr_tail.contains(m));
    if died && (near_limit || said_so) {
        let message = format!(
            "the plugin ran out of its {} MiB of memory (sandbox.memory_mb; peak {} MiB)",
            limits.memory_mb, exit.memory_mb
        );
        return Some(RunError::new(ErrorKind::MemoryLimit, message));
    }
    None
}

/// The plugin's stdin, fed from a queue by its own task; dropping every sender
/// closes stdin (end of input for the plugin).
pub fn spawn_stdin_writer(stdin: Option<tokio::process::ChildStdin>) -> mpsc::Sender<String> {
    let (tx, mut rx) = mpsc::channel::<String>(64);
    if let Some(mut stdin) = stdin {
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    // The plugin closed its stdin; the session learns the rest from stdout.
                    return;
                }
            }
        });
    }
    tx
}

/// The error of a `partial` run: how much the plugin left undone, and why.
fn incomplete_error(incomplete: &Incomplete) -> RunError {
    // The SDK bounds the reason; a plugin speaking the protocol by hand may not.
    let reason = Incomplete::new(incomplete.untried, incomplete.reason.clone()).reason;
    RunError {
        untried: Some(incomplete.untried),
        ..RunError::new(
            ErrorKind::Incomplete,
            format!("{} not tried: {reason}", incomplete.untried),
        )
    }
}

/// What a `skipped` run's error says: the missing path and, when it is the
/// vulnerability data directory, the command that fills it.
fn missing_data_message(path: &Path, config: &Config) -> String {
    if config.vulndb.holds(path) {
        format!(
            "no vulnerability data: {} does not exist; run `secflow vulndb update` (or `secflow vulndb import FILE...` on a host without network access)",
            path.display()
        )
    } else {
        format!(
            "sandbox.read_paths entry {} does not exist: the data this plugin reads is not installed on this host",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_plugin_sdk::protocol::{RpcError, RunResult};

    #[test]
    fn a_missing_vulnerability_data_dir_names_the_command_that_fills_it() {
        let mut config = Config::default();
        config.vulndb.data_dir = "/srv/secflow/vulndb".into();
        let message = missing_data_message(Path::new("/srv/secflow/vulndb"), &config);
        assert!(message.starts_with("no vulnerability data: /srv/secflow/vulndb does not exist"));
        assert!(message.contains("secflow vulndb update"), "{message}");
        assert!(message.contains("secflow vulndb import"), "{message}");
        let other = missing_data_message(Path::new("/srv/wordlists"), &config);
        assert!(other.contains("/srv/wordlists does not exist"), "{other}");
        assert!(!other.contains("vulndb"), "{other}");
    }

    const LIMITS: RunLimits = RunLimits {
        memory_mb: 100,
        cpu_seconds: 2,
        timeout_seconds: 10,
        max_processes: 8,
        max_open_files: 64,
        max_output_mb: 8,
    };

    fn exit(code: Option<i32>, signal: Option<i32>) -> ExitInfo {
        ExitInfo {
            exit_code: code,
            signal,
            cpu_ms: 0,
            memory_mb: 0,
            seccomp_kills: 0,
        }
    }

    #[test]
    fn a_clean_answer_and_exit_zero_is_success() {
        let outcome = SessionOutcome {
            run_answer: Some(Ok(RunResult::default())),
            ..Default::default()
        };
        assert_eq!(
            conclude(
                &outcome,
                Some(&exit(Some(0), None)),
                &[],
                Duration::ZERO,
                &LIMITS,
                ""
            )
            .0,
            RunStatus::Succeeded
        );
    }

    #[test]
    fn the_deadline_wins_over_a_crash_and_keeps_the_run_partial() {
        let outcome = SessionOutcome {
            ending: Some(Ending::Deadline),
            ..Default::default()
        };
        let (status, error) = conclude(
            &outcome,
            Some(&exit(None, Some(9))),
            &[],
            Duration::from_secs(1),
            &LIMITS,
            "",
        );
        assert_eq!(status, RunStatus::TimedOut);
        assert_eq!(error.unwrap().kind, ErrorKind::Timeout);
    }

    #[test]
    fn a_clean_answer_that_left_work_undone_is_partial_with_the_count_and_reason() {
        let outcome = SessionOutcome {
            run_answer: Some(Ok(RunResult {
                incomplete: Some(Incomplete::new(
                    18,
                    "18 words got no answer after 2 retries",
                )),
                ..RunResult::default()
            })),
            ..Default::default()
        };
        let (status, error) = conclude(
            &outcome,
            Some(&exit(Some(0), None)),
            &[],
            Duration::ZERO,
            &LIMITS,
            "",
        );
        assert_eq!(status, RunStatus::Partial);
        let error = error.expect("a partial run says what is missing");
        assert_eq!(error.kind, ErrorKind::Incomplete);
        assert_eq!(error.untried, Some(18));
        assert_eq!(
            error.message,
            "18 not tried: 18 words got no answer after 2 retries"
        );
    }

    #[test]
    fn an_identity_mismatch_is_a_rejection() {
        let outcome = SessionOutcome {
            fault: Some(RunError::new(ErrorKind::IdentityMismatch, "x")),
            ..Default::default()
        };
        assert_eq!(
            conclude(&outcome, None, &[], Duration::ZERO, &LIMITS, "").0,
            RunStatus::Rejected
        );
    }

    #[test]
    fn exiting_without_an_answer_is_a_crash_naming_the_status() {
        let (status, error) = conclude(
            &SessionOutcome::default(),
            Some(&exit(Some(3), None)),
            &[],
            Duration::ZERO,
            &LIMITS,
            "",
        );
        assert_eq!(status, RunStatus::Failed);
        let error = error.unwrap();
        assert_eq!(error.kind, ErrorKind::PluginCrashed);
        assert!(error.message.contains("status 3"), "{}", error.message);
    }

    #[test]
    fn a_plugin_error_keeps_its_code() {
        let outcome = SessionOutcome {
            run_answer: Some(Err(RpcError::new(-32002, "target unreachable"))),
            ..Default::default()
        };
        let (status, error) = conclude(
            &outcome,
            Some(&exit(Some(0), None)),
            &[],
            Duration::ZERO,
            &LIMITS,
            "",
        );
        assert_eq!(status, RunStatus::Failed);
        assert_eq!(error.unwrap().code, -32002);
    }

    #[test]
    fn an_orphan_killed_by_seccomp_makes_a_clean_run_a_violation() {
        let outcome = SessionOutcome {
            run_answer: Some(Ok(RunResult::default())),
            ..SessionOutcome::default()
        };
        let (status, error) = conclude(
            &outcome,
            Some(&ExitInfo {
                seccomp_kills: 1,
                ..exit(Some(0), None)
            }),
            &[],
            Duration::ZERO,
            &LIMITS,
            "",
        );
        assert_eq!(status, RunStatus::Violated);
        let error = error.unwrap();
        assert_eq!(error.kind, ErrorKind::SandboxViolation);
        assert!(
            error.message.contains("process(es) the plugin started"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_sigsys_death_is_a_violation() {
        let (status, error) = conclude(
            &SessionOutcome::default(),
            Some(&exit(None, Some(libc::SIGSYS))),
            &[],
            Duration::ZERO,
            &LIMITS,
            "",
        );
        assert_eq!(status, RunStatus::Violated);
        assert_eq!(error.unwrap().kind, ErrorKind::SandboxViolation);
    }

    fn reported(syscall: i64, name: &str) -> SeccompKill {
        SeccompKill {
            pid: 4242,
            uid: 2_000_000_001,
            comm: "helper".into(),
            arch: "c000003e".into(),
            syscall,
            name: Some(name.into()),
            at_ms: 0,
        }
    }

    #[test]
    fn a_child_the_plugin_reaped_itself_is_seen_through_the_kernel_s_report() {
        let outcome = SessionOutcome {
            run_answer: Some(Ok(RunResult::default())),
            ..SessionOutcome::default()
        };
        let kills = [
            reported(101, "ptrace"),
            reported(101, "ptrace"),
            reported(165, "mount"),
        ];
        let (status, error) = conclude(
            &outcome,
            Some(&exit(Some(0), None)),
            &kills,
            Duration::ZERO,
            &LIMITS,
            "",
        );
        assert_eq!(status, RunStatus::Violated);
        let message = error.unwrap().message;
        assert!(message.starts_with("3 process(es)"), "{message}");
        assert!(
            message.contains("(ptrace (101), mount (165))"),
            "each call named once: {message}"
        );
    }

    #[test]
    fn the_plugin_s_own_sigsys_death_names_the_call_when_the_kernel_reported_it() {
        let (_, error) = conclude(
            &SessionOutcome::default(),
            Some(&exit(None, Some(libc::SIGSYS))),
            &[reported(101, "ptrace")],
            Duration::ZERO,
            &LIMITS,
            "",
        );
        let message = error.unwrap().message;
        assert!(
            message.starts_with("the plugin made a forbidden system call (ptrace (101))"),
            "{message}"
        );
    }

    #[test]
    fn a_runs_targets_are_its_target_and_its_targets_list() {
        let inputs = json!({"target": "http://127.0.0.2:8080/", "targets": ["127.0.0.3", 7, "[::1]:53"],
                            "findings": ["not a target"]});
        assert_eq!(
            input_targets(inputs.as_object().unwrap()),
            ["http://127.0.0.2:8080/", "127.0.0.3", "[::1]:53"]
        );
        assert!(input_targets(&Map::new()).is_empty());
    }

    #[test]
    fn cpu_and_memory_limits_are_named() {
        let mut spun = exit(None, Some(libc::SIGXCPU));
        spun.cpu_ms = 2000;
        let (_, error) = conclude(
            &SessionOutcome::default(),
            Some(&spun),
            &[],
            Duration::ZERO,
            &LIMITS,
            "",
        );
        assert_eq!(error.unwrap().kind, ErrorKind::CpuLimit);
        let mut grew = exit(None, Some(libc::SIGABRT));
        grew.memory_mb = 95;
        let (_, error) = conclude(
            &SessionOutcome::default(),
            Some(&grew),
            &[],
            Duration::ZERO,
            &LIMITS,
            "",
        );
        assert_eq!(error.unwrap().kind, ErrorKind::MemoryLimit);
        let small = exit(None, Some(libc::SIGABRT));
        let said = "memory allocation of 1073741824 bytes failed";
        let (_, error) = conclude(
            &SessionOutcome::default(),
            Some(&small),
            &[],
            Duration::ZERO,
            &LIMITS,
            said,
        );
        assert_eq!(error.unwrap().kind, ErrorKind::MemoryLimit);
        let (_, error) = conclude(
            &SessionOutcome::default(),
            Some(&small),
            &[],
            Duration::ZERO,
            &LIMITS,
            "",
        );
        assert_eq!(
            error.unwrap().kind,
            ErrorKind::PluginCrashed,
            "an abort far from the limit is a crash"
        );
    }
}
