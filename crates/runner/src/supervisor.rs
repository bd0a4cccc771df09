//! The supervisor itself: config, storage, registry and runner wired together.
//!
//! The same object serves the embedded mode (`secflow run --local`, `demo`) and
//! the daemon. It owns the registry (discovery, revocation) and the store; runs
//! borrow a verified plugin from the registry and leave through the runner.
//!
//! The daemon starts runs with [`Supervisor::start`]: each gets an entry in the
//! table of in-flight runs (its cancel switch and the channel its final record
//! arrives on) and waits for one of `runs.max_concurrent` slots. The table is
//! what `runs.get`/`runs.wait`/`runs.cancel` consult while a run lasts, and
//! what [`Supervisor::drain`] cancels on shutdown; once a run has ended, its
//! record comes from storage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use secflow_plugin_sdk::protocol::Category;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::registry::{PluginEntry, Registry};
use crate::{open_store, RunRequest, Runner};
use secflow_core::clock::now_rfc3339;
use secflow_core::config::Config;
use secflow_core::record::{ErrorKind, RunError, RunRecord, RunStatus};
use secflow_core::PluginStatus;
use secflow_sandbox::Host;
use secflow_store::{AuditEvent, PluginState, StorageError, StoragePort, StoredFinding};

/// A supervisor-level failure (not a run outcome: those are run records).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database {path} is in use by another supervisor (a running secflowd?): talk to it without --local, or stop it first")]
    DatabaseBusy { path: std::path::PathBuf },
    #[error("cannot lock database {path}")]
    DatabaseLock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no plugin named {0:?} is registered (see `secflow plugins`)")]
    UnknownPlugin(String),
    #[error("plugin {name:?} cannot run: its manifest {manifest} is rejected: {reason}")]
    Unrunnable {
        name: String,
        manifest: String,
        reason: String,
    },
    #[error("cannot {action} plugin {name:?}: {reason}")]
    Registry {
        action: &'static str,
        name: String,
        reason: String,
    },
    #[error("no run with id {0:?}")]
    UnknownRun(String),
    #[error("no finding with id {0}")]
    UnknownFinding(i64),
    #[error("the supervisor is shutting down and accepts no new runs")]
    ShuttingDown,
    #[error(
        "{queued} runs are already waiting for a slot (runs.max_queued = {limit}); retry later"
    )]
    QueueFull { queued: usize, limit: usize },
}

/// A run started with [`Supervisor::start`] that has not ended yet.
#[derive(Debug)]
struct InFlight {
    /// The record as it was queued: what `runs.get` shows until the runner
    /// has stored its own.
    queued: RunRecord,
    /// Whether it holds a slot (is executing) rather than waiting for one.
    executing: bool,
    cancel: watch::Sender<bool>,
    /// Receives the final record, once committed.
    done: watch::Receiver<Option<RunRecord>>,
}

/// The in-flight runs, and whether new ones are still accepted.
#[derive(Debug, Default)]
struct RunTable {
    runs: HashMap<String, InFlight>,
    draining: bool,
}

/// How many started runs are executing and how many wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RunLoad {
    pub executing: usize,
    pub queued: usize,
}

/// The running supervisor.
#[derive(Debug)]
pub struct Supervisor {
    config: Arc<Config>,
    /// Held for the supervisor's life: one supervisor per database.
    _owner: DatabaseOwner,
    store: Box<dyn StoragePort>,
    registry: RwLock<Registry>,
    runner: Runner,
    runs: Mutex<RunTable>,
    slots: Arc<Semaphore>,
}

impl Supervisor {
    /// Opens the database, marks runs a previous process left in flight as
    /// interrupted, and discovers the plugins.
    pub async fn open(config: Config) -> Result<Supervisor, SupervisorError> {
        let config = Arc::new(config);
        // Before anything is marked interrupted: the runs in flight may be a
        // live daemon's.
        let owner = DatabaseOwner::claim(&config.storage.path)?;
        let store = open_store(&config.storage, &config.host.name)?;
        let interrupted = store.mark_interrupted()?;
        if interrupted > 0 {
            tracing::warn!(
                runs = interrupted,
                "runs left in flight by a previous supervisor marked interrupted"
            );
        }
        let host = Arc::new(Host::probe());
        let runner = Runner::new(config.clone(), store.writer(), host);
        let supervisor = Supervisor {
            _owner: owner,
            registry: RwLock::new(Registry::discover(&config, &store.plugin_states()?)),
            slots: Arc::new(Semaphore::new(config.runs.max_concurrent)),
            runs: Mutex::new(RunTable::default()),
            config,
            store,
            runner,
        };
        supervisor.audit_discovery().await;
        Ok(supervisor)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &dyn StoragePort {
        self.store.as_ref()
    }

    /// What this host can do for the sandbox (probed at open).
    pub fn host(&self) -> &Host {
        self.runner.host()
    }

    /// Every registered plugin, sorted by name.
    pub fn plugins(&self) -> Vec<PluginEntry> {
        self.read_registry().entries().cloned().collect()
    }

    /// Rediscovers the manifests; revocations persist.
    pub async fn reload(&self) -> Result<Vec<PluginEntry>, SupervisorError> {
        let registry = Registry::discover(&self.config, &self.store.plugin_states()?);
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = registry;
        self.audit_discovery().await;
        Ok(self.plugins())
    }

    /// Revokes a plugin (persisted) until an operator reinstates it.
    pub async fn revoke(
        &self,
        name: &str,
        reason: &str,
        actor_uid: Option<u32>,
    ) -> Result<PluginEntry, SupervisorError> {
        self.set_revoked(name, Some(reason), actor_uid).await
    }

    pub async fn reinstate(
        &self,
        name: &str,
        actor_uid: Option<u32>,
    ) -> Result<PluginEntry, SupervisorError> {
        self.set_revoked(name, None, actor_uid).await
    }

    async fn set_revoked(
        &self,
        name: &str,
        reason: Option<&str>,
        actor_uid: Option<u32>,
    ) -> Result<PluginEntry, SupervisorError> {
        let action = if reason.is_some() {
            "revoke"
        } else {
            "reinstate"
        };
        let entry = {
            let mut registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
            let changed = match reason {
                Some(reason) => registry.revoke(name, reason),
                None => registry.reinstate(name),
            };
            changed
                .map_err(|e| SupervisorError::Registry {
                    action,
                    name: name.to_string(),
                    reason: e.to_string(),
                })?
                .clone()
        };
        let state = PluginState {
            name: entry.name.clone(),
            version: entry.version.clone(),
            code_hash: entry.code_hash.clone().unwrap_or_default(),
            revoked: reason.is_some(),
            reason: reason.map(str::to_string),
            changed_at: now_rfc3339(),
            actor_uid,
        };
        let writer = self.store.writer();
        writer.set_plugin_state(state).await?;
        let event = if reason.is_some() {
            "plugin_revoked"
        } else {
            "plugin_reinstated"
        };
        let audit = AuditEvent {
            id: 0,
            timestamp: now_rfc3339(),
            event: event.into(),
            security: true,
            plugin: Some(entry.name.clone()),
            run_id: None,
            actor_uid,
            message: format!(
                "{} {} {event}{}",
                entry.name,
                entry.version,
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            details: json!({"code_hash": entry.code_hash}),
        };
        writer.audit(audit).await?;
        Ok(entry)
    }

    /// Runs a plugin to its end. Refusals (plugin not active, invalid config)
    /// are run records with status `rejected`; only an unknown or unreadable
    /// plugin is an error.
    pub async fn execute(
        &self,
        request: RunRequest,
        cancel: watch::Receiver<bool>,
    ) -> Result<RunRecord, SupervisorError> {
        self.execute_as(crate::new_run_id(), request, cancel).await
    }

    async fn execute_as(
        &self,
        run_id: String,
        request: RunRequest,
        cancel: watch::Receiver<bool>,
    ) -> Result<RunRecord, SupervisorError> {
        let (entry, category) = self.lookup_runnable(&request.plugin)?;
        let record = crate::base_record(&run_id, &entry.name, &entry.version, category, &request);
        let refusal = match (entry.status, &entry.plugin) {
            (PluginStatus::Active, Some(_)) => None,
            (PluginStatus::Revoked, _) => Some(ErrorKind::PluginRevoked),
            (PluginStatus::Unavailable, _) => Some(ErrorKind::DependencyMissing),
            _ => Some(entry.error_kind.unwrap_or(ErrorKind::PluginRejected)),
        };
        let plugin = match (refusal, &entry.plugin) {
            (None, Some(plugin)) => plugin.clone(),
            (kind, _) => {
                let kind = kind.unwrap_or(ErrorKind::PluginRejected);
                let reason = entry
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no reason recorded".into());
                let message = format!("plugin {} is {}: {reason}", entry.name, entry.status);
                self.start_refused(&record).await;
                return Ok(self
                    .runner
                    .reject(
                        record,
                        RunError::new(kind, message),
                        false,
                        request.actor_uid,
                    )
                    .await);
            }
        };
        if let Err(e) =
            secflow_manifest::check_expiry(&plugin.manifest, time::OffsetDateTime::now_utc())
        {
            self.start_refused(&record).await;
            return Ok(self
                .runner
                .reject(
                    record,
                    RunError::new(e.kind(), e.to_string()),
                    true,
                    request.actor_uid,
                )
                .await);
        }
        let config = match plugin.config.apply(&request.config) {
            Ok(config) => config,
            Err(reason) => {
                let message = format!(
                    "config for plugin {} is invalid: {reason}",
                    plugin.manifest.name
                );
                self.start_refused(&record).await;
                return Ok(self
                    .runner
                    .reject(
                        record,
                        RunError::new(ErrorKind::InvalidConfig, message),
                        false,
                        request.actor_uid,
                    )
                    .await);
            }
        };
        let record = self
            .runner
            .run(&plugin, record, request, config, cancel)
            .await;
        if record.status == RunStatus::Violated {
            // A sandbox violation revokes the plugin until an operator reinstates it.
            let reason = format!(
                "sandbox violation in run {}: {}",
                record.run_id,
                record
                    .error
                    .as_ref()
                    .map(|e| e.message.as_str())
                    .unwrap_or("")
            );
            if let Err(e) = self.revoke(&record.plugin, &reason, None).await {
                tracing::error!(plugin = %record.plugin, error = %e, "cannot revoke a plugin after a violation");
            }
        } else if self.config.sandbox.revoke_on_refused_egress && !record.refused_egress.is_empty()
        {
            let first = &record.refused_egress[0];
            let reason = format!(
                "run {} tried to reach {} destinations outside its targets (first: {} {}{}), and sandbox.revoke_on_refused_egress is on",
                record.run_id,
                record.refused_egress.len(),
                first.protocol,
                first.destination,
                first.port.map(|p| format!(" port {p}")).unwrap_or_default(),
            );
            if let Err(e) = self.revoke(&record.plugin, &reason, None).await {
                tracing::error!(plugin = %record.plugin, error = %e, "cannot revoke a plugin after refused egress");
            }
        }
        Ok(record)
    }

    /// Starts a run in the background and returns its id at once. The run
    /// waits for one of `runs.max_concurrent` slots; refusals (plugin not
    /// active, invalid config) end as `rejected` records like [`execute`].
    ///
    /// [`execute`]: Supervisor::execute
    pub fn start(self: &Arc<Self>, request: RunRequest) -> Result<String, SupervisorError> {
        let (entry, category) = self.lookup_runnable(&request.plugin)?;
        let run_id = crate::new_run_id();
        let queued = crate::base_record(&run_id, &entry.name, &entry.version, category, &request);
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(None);
        {
            let mut table = self.lock_runs();
            if table.draining {
                return Err(SupervisorError::ShuttingDown);
            }
            let waiting = table.runs.values().filter(|r| !r.executing).count();
            let limit = self.config.runs.max_queued;
            if waiting >= limit && self.slots.available_permits() == 0 {
                return Err(SupervisorError::QueueFull {
                    queued: waiting,
                    limit,
                });
            }
            table.runs.insert(
                run_id.clone(),
                InFlight {
                    queued: queued.clone(),
                    executing: false,
                    cancel: cancel_tx,
                    done: done_rx,
                },
            );
        }
        let supervisor = Arc::clone(self);
        let id = run_id.clone();
        tokio::spawn(async move {
            let record = supervisor
                .run_when_a_slot_frees(queued, request, cancel_rx)
                .await;
            supervisor.lock_runs().runs.remove(&id);
            // Nobody may be waiting; the record is in storage either way.
            let _ = done_tx.send(Some(record));
        });
        Ok(run_id)
    }

    async fn run_when_a_slot_frees(
        &self,
        queued: RunRecord,
        request: RunRequest,
        mut cancel: watch::Receiver<bool>,
    ) -> RunRecord {
        let permit = tokio::select! {
            permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
            _ = cancel.wait_for(|cancelled| *cancelled) => None,
        };
        let Some(_permit) = permit else {
            return self.cancel_queued(queued, request.actor_uid).await;
        };
        if let Some(run) = self.lock_runs().runs.get_mut(&queued.run_id) {
            run.executing = true;
        }
        let actor_uid = request.actor_uid;
        match self
            .execute_as(queued.run_id.clone(), request, cancel)
            .await
        {
            Ok(record) => record,
            // The plugin left the registry (a reload) while the run waited.
            Err(e) => {
                self.start_refused(&queued).await;
                let kind = match e {
                    SupervisorError::UnknownPlugin(_) => ErrorKind::PluginNotFound,
                    SupervisorError::Storage(_) => ErrorKind::StorageError,
                    _ => ErrorKind::PluginRejected,
                };
                self.runner
                    .reject(queued, RunError::new(kind, e.to_string()), false, actor_uid)
                    .await
            }
        }
    }

    /// Records a run cancelled before it got a slot: nothing was spawned.
    async fn cancel_queued(&self, mut record: RunRecord, actor_uid: Option<u32>) -> RunRecord {
        self.start_refused(&record).await;
        record.status = RunStatus::Cancelled;
        record.finished_at = Some(now_rfc3339());
        record.error = Some(RunError::new(
            ErrorKind::Cancelled,
            "the run was cancelled while it waited for a slot",
        ));
        let writer = self.store.writer();
        let audit = crate::audit_event(
            "run_cancelled",
            false,
            &record,
            actor_uid,
            format!("{} cancelled before it started", record.run_id),
            json!({}),
        );
        let _ = writer.audit(audit).await;
        match writer.finish_run(record.clone()).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(run_id = %record.run_id, error = %e, "cannot store the run record");
                record
            }
        }
    }

    /// A run's record now: in flight (status `running`) or as stored.
    pub fn run_record(&self, run_id: &str) -> Result<RunRecord, SupervisorError> {
        let queued = self.lock_runs().runs.get(run_id).map(|r| r.queued.clone());
        match (self.store.run(run_id)?, queued) {
            (Some(stored), _) => Ok(stored),
            (None, Some(queued)) => Ok(queued),
            (None, None) => Err(SupervisorError::UnknownRun(run_id.to_string())),
        }
    }

    /// One stored finding and the provenance of the run that first reported
    /// it (`None` for a run from before provenance was recorded).
    pub fn finding_with_provenance(
        &self,
        id: i64,
    ) -> Result<(StoredFinding, Option<crate::provenance::Provenance>), SupervisorError> {
        crate::provenance::finding_with_provenance(&*self.store, id)?
            .ok_or(SupervisorError::UnknownFinding(id))
    }

    /// The provenance recorded for a run.
    pub fn run_provenance(
        &self,
        run_id: &str,
    ) -> Result<Option<crate::provenance::Provenance>, SupervisorError> {
        Ok(crate::provenance::of_run(&*self.store, run_id)?)
    }

    /// A run's record once it has ended.
    pub async fn wait(&self, run_id: &str) -> Result<RunRecord, SupervisorError> {
        let done = self.lock_runs().runs.get(run_id).map(|r| r.done.clone());
        if let Some(mut done) = done {
            if let Ok(record) = done.wait_for(Option::is_some).await {
                if let Some(record) = record.clone() {
                    return Ok(record);
                }
            }
        }
        // Ended before we looked (or its task is gone): storage has it.
        self.run_record(run_id)
    }

    /// Cancels a run and returns its final record; a run that has already
    /// ended is returned as it is.
    pub async fn cancel(
        &self,
        run_id: &str,
        actor_uid: Option<u32>,
    ) -> Result<RunRecord, SupervisorError> {
        let signalled = match self.lock_runs().runs.get(run_id) {
            Some(run) => run.cancel.send(true).is_ok(),
            None => false,
        };
        if signalled {
            tracing::info!(run_id, ?actor_uid, "run cancellation requested");
        }
        self.wait(run_id).await
    }

    /// How many started runs are executing and how many wait.
    pub fn load(&self) -> RunLoad {
        let table = self.lock_runs();
        let executing = table.runs.values().filter(|r| r.executing).count();
        RunLoad {
            executing,
            queued: table.runs.len() - executing,
        }
    }

    /// Shutdown: refuses new runs, cancels every in-flight one, waits until
    /// each is recorded (`cancelled`, or however it ended first) and flushes
    /// storage. Returns how many runs were in flight.
    pub async fn drain(&self) -> Result<usize, SupervisorError> {
        let waiting: Vec<watch::Receiver<Option<RunRecord>>> = {
            let mut table = self.lock_runs();
            table.draining = true;
            table
                .runs
                .values()
                .map(|run| {
                    let _ = run.cancel.send(true);
                    run.done.clone()
                })
                .collect()
        };
        let count = waiting.len();
        for mut done in waiting {
            // An error means the run's task is gone; its record is stored anyway.
            let _ = done.wait_for(Option::is_some).await;
        }
        self.flush().await?;
        Ok(count)
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, RunTable> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until everything written so far is committed.
    pub async fn flush(&self) -> Result<(), SupervisorError> {
        Ok(self.store.writer().flush().await?)
    }

    async fn start_refused(&self, record: &RunRecord) {
        let _ = self
            .store
            .writer()
            .send(secflow_store::WriteOp::RunStarted(record.clone()))
            .await;
    }

    fn lookup(&self, name: &str) -> Result<PluginEntry, SupervisorError> {
        self.read_registry()
            .get(name)
            .cloned()
            .ok_or_else(|| SupervisorError::UnknownPlugin(name.to_string()))
    }

    /// The plugin `name` and its category, which a plugin whose manifest was
    /// rejected lacks: such a plugin cannot run, not even to a rejected record.
    fn lookup_runnable(&self, name: &str) -> Result<(PluginEntry, Category), SupervisorError> {
        let entry = self.lookup(name)?;
        let category = entry.category.ok_or_else(|| SupervisorError::Unrunnable {
            name: entry.name.clone(),
            manifest: entry.manifest_path.display().to_string(),
            reason: entry.reason.clone().unwrap_or_default(),
        })?;
        Ok((entry, category))
    }

    fn read_registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    /// One audit event per rejected or unavailable plugin found by discovery.
    async fn audit_discovery(&self) {
        let events: Vec<AuditEvent> = self
            .read_registry()
            .entries()
            .filter(|e| matches!(e.status, PluginStatus::Rejected | PluginStatus::Unavailable))
            .map(|e| AuditEvent {
                id: 0,
                timestamp: now_rfc3339(),
                event: match e.status {
                    PluginStatus::Unavailable => "plugin_unavailable".into(),
                    _ => "plugin_rejected".into(),
                },
                security: e.security_event,
                plugin: Some(e.name.clone()),
                run_id: None,
                actor_uid: None,
                message: e.reason.clone().unwrap_or_default(),
                details: json!({"manifest_path": e.manifest_path, "kind": e.error_kind}),
            })
            .collect();
        let writer = self.store.writer();
        for event in events {
            tracing::warn!(plugin = ?event.plugin, "{}", event.message);
            let _ = writer.audit(event).await;
        }
        // Discovery's verdicts are on record before anything else happens.
        if let Err(e) = writer.flush().await {
            tracing::error!(error = %e, "cannot store discovery audit events");
        }
    }
}

/// How long a held database lock is waited for before it counts as another
/// supervisor's (see `DatabaseOwner::claim`).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// An exclusive lock on `<database>.lock`: the daemon and an embedded
/// supervisor (`--local`) must not both run plugins and mark each other's runs
/// interrupted. Released when the supervisor is dropped (or its process dies).
#[derive(Debug)]
struct DatabaseOwner {
    _file: std::fs::File,
}

impl DatabaseOwner {
    fn claim(database: &std::path::Path) -> Result<DatabaseOwner, SupervisorError> {
        let mut path = database.as_os_str().to_owned();
        path.push(".lock");
        let path = std::path::PathBuf::from(path);
        let lock_error = |source| SupervisorError::DatabaseLock {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(lock_error)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_error)?;
        use std::os::fd::AsRawFd;
        // A flock belongs to the open file, and a run's init starts with a
        // copy of its supervisor's descriptors until it closes them, a moment
        // later: a lock just released can still be held that long (seen when
        // one process closes a supervisor and opens another while a third
        // runs plugins). Only a lock held past this grace is another owner.
        let grace = std::time::Instant::now() + LOCK_GRACE;
        loop {
            // SAFETY: flock on a descriptor we own; the lock lives as long as the file.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(DatabaseOwner { _file: file });
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(lock_error(error));
            }
            if std::time::Instant::now() >= grace {
                return Err(SupervisorError::DatabaseBusy {
                    path: database.to_path_buf(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
