//! The supervisor itself: config, storage, registry and runner wired together.
//!
//! The same object serves the embedded mode (`secflow run --local`, `demo`) and
//! the daemon. It owns the registry (discovery, revocation) and the store; runs
//! borrow a verified plugin from the registry and leave through the runner.

use std::sync::{Arc, RwLock};

use serde_json::json;
use tokio::sync::watch;

use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::manifest;
use crate::record::{ErrorKind, RunError, RunRecord};
use crate::registry::{PluginEntry, PluginStatus, Registry};
use crate::runner::{self, RunRequest, Runner};
use crate::storage::{AuditEvent, PluginState, SqliteStore, StorageError, StoragePort};

/// A supervisor-level failure (not a run outcome: those are run records).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Storage(#[from] StorageError),
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
}

/// The running supervisor.
#[derive(Debug)]
pub struct Supervisor {
    config: Arc<Config>,
    store: SqliteStore,
    registry: RwLock<Registry>,
    runner: Runner,
}

impl Supervisor {
    /// Opens the database, marks runs a previous process left in flight as
    /// interrupted, and discovers the plugins.
    pub async fn open(config: Config) -> Result<Supervisor, SupervisorError> {
        let config = Arc::new(config);
        let store = SqliteStore::open(
            &config.storage.path,
            config.storage.queue_capacity,
            config.storage.batch_size,
        )?;
        let interrupted = store.mark_interrupted()?;
        if interrupted > 0 {
            tracing::warn!(
                runs = interrupted,
                "runs left in flight by a previous supervisor marked interrupted"
            );
        }
        let runner = Runner::new(config.clone(), store.writer());
        let supervisor = Supervisor {
            registry: RwLock::new(Registry::discover(&config, &store.plugin_states()?)),
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
        &self.store
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
        let entry = self.lookup(&request.plugin)?;
        let run_id = runner::new_run_id();
        let category = entry.category.ok_or_else(|| SupervisorError::Unrunnable {
            name: entry.name.clone(),
            manifest: entry.manifest_path.display().to_string(),
            reason: entry.reason.clone().unwrap_or_default(),
        })?;
        let record = runner::base_record(&run_id, &entry.name, &entry.version, category, &request);
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
        if let Err(e) = manifest::check_expiry(&plugin.manifest, time::OffsetDateTime::now_utc()) {
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
        Ok(self
            .runner
            .run(&plugin, record, request, config, cancel)
            .await)
    }

    /// Waits until everything written so far is committed.
    pub async fn flush(&self) -> Result<(), SupervisorError> {
        Ok(self.store.writer().flush().await?)
    }

    async fn start_refused(&self, record: &RunRecord) {
        let _ = self
            .store
            .writer()
            .send(crate::storage::WriteOp::RunStarted(record.clone()))
            .await;
    }

    fn lookup(&self, name: &str) -> Result<PluginEntry, SupervisorError> {
        self.read_registry()
            .get(name)
            .cloned()
            .ok_or_else(|| SupervisorError::UnknownPlugin(name.to_string()))
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
