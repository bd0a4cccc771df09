//! The methods of the executor API (contracts §2): typed params in, the
//! supervisor's answer out.
//!
//! Params are objects with known fields only, so a misspelt field is an
//! `invalid params` error naming it instead of being silently ignored. Reads
//! from storage run on the blocking pool: SQLite calls must not stall the
//! runtime threads that carry every connection.

use std::sync::Arc;
use std::time::Instant;

use secflow_plugin_sdk::protocol::Severity;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::peer::Peer;
use super::rpc::{code, Answer, JsonText, RpcFailure};
use secflow_core::record::RunStatus;
use secflow_core::Layer;
use secflow_runner::registry::{PluginEntry, PluginStatus};
use secflow_runner::RunRequest;
use secflow_runner::{Supervisor, SupervisorError};
use secflow_store::{AuditQuery, FindingQuery, RunQuery, StorageError, TelemetryQuery};

/// Most rows one query answers; larger `limit`s are capped (use `after` to page).
pub const MAX_PAGE: u32 = 1000;
/// Rows answered when the caller gives no `limit`.
const DEFAULT_PAGE: u32 = 100;

/// Every method this API answers.
pub const METHODS: &[&str] = &[
    "system.health",
    "plugins.list",
    "plugins.reload",
    "plugins.revoke",
    "plugins.reinstate",
    "runs.execute",
    "runs.start",
    "runs.get",
    "runs.wait",
    "runs.cancel",
    "runs.list",
    "findings.query",
    "findings.get",
    "runs.provenance",
    "telemetry.query",
    "audit.query",
];

/// What a call needs besides its params.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub supervisor: Arc<Supervisor>,
    pub peer: Arc<Peer>,
    /// When the daemon started (for `uptime_ms`).
    pub started: Instant,
}

/// Runs one method.
pub async fn dispatch(
    ctx: &CallContext,
    method: &str,
    params: Value,
) -> Result<Answer, RpcFailure> {
    if method == "findings.query" {
        return findings_query(ctx, params).await.map(Answer::Text);
    }
    tree_method(ctx, method, params).await.map(Answer::Tree)
}

/// `findings.query`: a page of stored findings as text (see
/// `StoragePort::findings_text`), `{"findings": [...], "next": id}`.
async fn findings_query(ctx: &CallContext, params: Value) -> Result<JsonText, RpcFailure> {
    let p: FindingsParams = parse(params)?;
    let min_severity = p
        .min_severity
        .as_deref()
        .map(|s| {
            Severity::parse(s).ok_or_else(|| {
                RpcFailure::invalid_params(format!(
                    "unknown severity {s:?}: expected info, low, medium, high, critical or unknown"
                ))
            })
        })
        .transpose()?;
    for (field, text) in [("target", &p.target), ("text", &p.text)] {
        if let Some(text) = text {
            FindingQuery::check_search_text(field, text).map_err(RpcFailure::invalid_params)?;
        }
    }
    let query = FindingQuery {
        run_id: p.run_id,
        plugin: p.plugin,
        min_severity,
        limit: Some(page_limit(p.limit)),
        after: p.after,
        host: p.host,
        target: p.target,
        text: p.text,
        window: p.window,
    };
    let supervisor = Arc::clone(&ctx.supervisor);
    let page = blocking(move || {
        let page = supervisor.store().findings_text(&query)?;
        Ok((page.findings.into_text()?, page.next))
    })
    .await?;
    Ok(JsonText::object_with_array(
        "findings",
        &page.0,
        &[("next", page.1)],
    ))
}

/// The methods answered with a JSON tree.
async fn tree_method(ctx: &CallContext, method: &str, params: Value) -> Result<Value, RpcFailure> {
    let supervisor = &ctx.supervisor;
    match method {
        "system.health" => {
            no_params(params)?;
            Ok(health(ctx))
        }
        "plugins.list" => {
            no_params(params)?;
            Ok(to_value(&supervisor.plugins()))
        }
        "plugins.reload" => {
            no_params(params)?;
            let before = supervisor.plugins();
            let after = supervisor.reload().await.map_err(supervisor_failure)?;
            Ok(reload_summary(&before, &after))
        }
        "plugins.revoke" => {
            let p: RevokeParams = parse(params)?;
            known_plugin(supervisor, &p.name)?;
            let entry = supervisor
                .revoke(&p.name, &p.reason, Some(ctx.peer.uid))
                .await
                .map_err(supervisor_failure)?;
            Ok(to_value(&entry))
        }
        "plugins.reinstate" => {
            let p: NameParams = parse(params)?;
            known_plugin(supervisor, &p.name)?;
            let entry = supervisor
                .reinstate(&p.name, Some(ctx.peer.uid))
                .await
                .map_err(supervisor_failure)?;
            Ok(to_value(&entry))
        }
        "runs.execute" => {
            let p: StartParams = parse(params)?;
            let run_id = supervisor
                .start(p.into_request(ctx.peer.uid))
                .map_err(supervisor_failure)?;
            let record = supervisor.wait(&run_id).await.map_err(supervisor_failure)?;
            Ok(to_value(&record))
        }
        "runs.start" => {
            let p: StartParams = parse(params)?;
            let run_id = supervisor
                .start(p.into_request(ctx.peer.uid))
                .map_err(supervisor_failure)?;
            Ok(json!({ "run_id": run_id }))
        }
        "findings.get" => {
            let p: FindingIdParams = parse(params)?;
            let supervisor = Arc::clone(supervisor);
            let (finding, provenance) =
                blocking(move || supervisor.finding_with_provenance(p.id)).await?;
            Ok(json!({"finding": finding.finding, "provenance": provenance}))
        }
        "runs.provenance" => {
            let p: RunIdParams = parse(params)?;
            let supervisor = Arc::clone(supervisor);
            let provenance = blocking(move || supervisor.run_provenance(&p.run_id)).await?;
            Ok(json!({"provenance": provenance}))
        }
        "runs.get" => {
            let p: RunIdParams = parse(params)?;
            let supervisor = Arc::clone(supervisor);
            let record = blocking(move || supervisor.run_record(&p.run_id)).await?;
            Ok(to_value(&record))
        }
        "runs.wait" => {
            let p: RunIdParams = parse(params)?;
            let record = supervisor
                .wait(&p.run_id)
                .await
                .map_err(supervisor_failure)?;
            Ok(to_value(&record))
        }
        "runs.cancel" => {
            let p: RunIdParams = parse(params)?;
            let record = supervisor
                .cancel(&p.run_id, Some(ctx.peer.uid))
                .await
                .map_err(supervisor_failure)?;
            Ok(to_value(&record))
        }
        "runs.list" => {
            let p: RunsListParams = parse(params)?;
            let status = p
                .status
                .as_deref()
                .map(|s| {
                    RunStatus::parse(s).ok_or_else(|| {
                        RpcFailure::invalid_params(format!(
                            "unknown run status {s:?}: expected running, succeeded, failed, \
                             timed_out, cancelled, violated or rejected"
                        ))
                    })
                })
                .transpose()?;
            let query = RunQuery {
                limit: Some(page_limit(p.limit)),
                plugin: p.plugin,
                status,
            };
            let supervisor = Arc::clone(supervisor);
            let runs = blocking(move || Ok(supervisor.store().runs(&query)?)).await?;
            Ok(to_value(&runs))
        }
        "telemetry.query" => {
            let p: TelemetryParams = parse(params)?;
            let query = TelemetryQuery {
                plugin: p.plugin,
                run_id: p.run_id,
                limit: Some(page_limit(p.limit)),
            };
            let supervisor = Arc::clone(supervisor);
            let events = blocking(move || Ok(supervisor.store().telemetry(&query)?)).await?;
            Ok(to_value(&events))
        }
        "audit.query" => {
            let p: AuditParams = parse(params)?;
            let query = AuditQuery {
                event: p.event,
                plugin: p.plugin,
                run_id: p.run_id,
                limit: Some(page_limit(p.limit)),
            };
            let supervisor = Arc::clone(supervisor);
            let events = blocking(move || Ok(supervisor.store().audit(&query)?)).await?;
            Ok(to_value(&events))
        }
        other => Err(
            RpcFailure::new(code::METHOD_NOT_FOUND, format!("no method named {other:?}"))
                .with_data(json!({ "methods": METHODS })),
        ),
    }
}

/// `runs.execute` / `runs.start` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartParams {
    plugin: String,
    #[serde(default)]
    inputs: Map<String, Value>,
    #[serde(default)]
    config: Map<String, Value>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    context: RunContextParams,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunContextParams {
    workflow_id: Option<String>,
    node_id: Option<String>,
}

impl StartParams {
    fn into_request(self, actor_uid: u32) -> RunRequest {
        RunRequest {
            plugin: self.plugin,
            inputs: self.inputs,
            config: self.config,
            timeout_ms: self.timeout_ms,
            workflow_id: self.context.workflow_id,
            node_id: self.context.node_id,
            actor_uid: Some(actor_uid),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunIdParams {
    run_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingIdParams {
    id: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeParams {
    name: String,
    reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsListParams {
    limit: Option<u32>,
    plugin: Option<String>,
    status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingsParams {
    run_id: Option<String>,
    plugin: Option<String>,
    min_severity: Option<String>,
    limit: Option<u32>,
    after: Option<i64>,
    host: Option<String>,
    /// Findings whose target contains this (ASCII case ignored).
    target: Option<String>,
    /// Findings whose title or rule id contains this (ASCII case ignored).
    text: Option<String>,
    /// Read only ids in `(after, after + window]`; `next` goes on.
    window: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryParams {
    plugin: Option<String>,
    run_id: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    event: Option<String>,
    plugin: Option<String>,
    run_id: Option<String>,
    limit: Option<u32>,
}

/// Params as a typed object; absent params are an empty object.
fn parse<T: DeserializeOwned>(params: Value) -> Result<T, RpcFailure> {
    let params = match params {
        Value::Null => Value::Object(Map::new()),
        Value::Object(object) => Value::Object(object),
        _ => {
            return Err(RpcFailure::invalid_params(
                "params must be an object (by-name); positional params are not supported",
            ))
        }
    };
    serde_json::from_value(params)
        .map_err(|e| RpcFailure::invalid_params(format!("invalid params: {e}")))
}

/// Methods without params accept none, `{}` or `[]`.
fn no_params(params: Value) -> Result<(), RpcFailure> {
    match params {
        Value::Null => Ok(()),
        Value::Object(o) if o.is_empty() => Ok(()),
        Value::Array(a) if a.is_empty() => Ok(()),
        _ => Err(RpcFailure::invalid_params("this method takes no params")),
    }
}

fn page_limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    // The API's types are plain data (string keys, no maps with other keys),
    // for which serialisation cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn known_plugin(supervisor: &Supervisor, name: &str) -> Result<(), RpcFailure> {
    if supervisor.plugins().iter().any(|e| e.name == name) {
        Ok(())
    } else {
        Err(supervisor_failure(SupervisorError::UnknownPlugin(
            name.to_string(),
        )))
    }
}

/// A supervisor error as the API answers it.
pub fn supervisor_failure(e: SupervisorError) -> RpcFailure {
    let code = match &e {
        SupervisorError::UnknownPlugin(_)
        | SupervisorError::UnknownRun(_)
        | SupervisorError::UnknownFinding(_) => code::NOT_FOUND,
        SupervisorError::Unrunnable { .. } => code::UNRUNNABLE,
        SupervisorError::Registry { .. } => code::INVALID_PARAMS,
        SupervisorError::ShuttingDown => code::SHUTTING_DOWN,
        SupervisorError::QueueFull { .. } => code::QUEUE_FULL,
        SupervisorError::Storage(_)
        | SupervisorError::DatabaseBusy { .. }
        | SupervisorError::DatabaseLock { .. } => code::INTERNAL_ERROR,
    };
    if code == code::INTERNAL_ERROR {
        tracing::error!(error = %secflow_core::error_chain(&e), "api request failed");
    }
    RpcFailure::new(code, secflow_core::error_chain(&e))
}

/// Runs a storage read on the blocking pool.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, SupervisorError> + Send + 'static,
) -> Result<T, RpcFailure> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result.map_err(supervisor_failure),
        Err(e) => Err(RpcFailure::new(
            code::INTERNAL_ERROR,
            format!("the storage read did not complete: {e}"),
        )),
    }
}

impl From<StorageError> for RpcFailure {
    fn from(e: StorageError) -> RpcFailure {
        supervisor_failure(SupervisorError::Storage(e))
    }
}

/// `plugins.reload`: which plugins are now active, rejected (or unavailable,
/// or revoked), and which manifests disappeared.
fn reload_summary(before: &[PluginEntry], after: &[PluginEntry]) -> Value {
    let names = |status: PluginStatus| -> Vec<&str> {
        after
            .iter()
            .filter(|e| e.status == status)
            .map(|e| e.name.as_str())
            .collect()
    };
    let removed: Vec<&str> = before
        .iter()
        .filter(|b| !after.iter().any(|a| a.name == b.name))
        .map(|b| b.name.as_str())
        .collect();
    json!({
        "active": names(PluginStatus::Active),
        "rejected": names(PluginStatus::Rejected),
        "unavailable": names(PluginStatus::Unavailable),
        "revoked": names(PluginStatus::Revoked),
        "removed": removed,
    })
}

fn health(ctx: &CallContext) -> Value {
    let plugins = ctx.supervisor.plugins();
    let count = |status: PluginStatus| plugins.iter().filter(|e| e.status == status).count();
    let load = ctx.supervisor.load();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": ctx.started.elapsed().as_millis() as u64,
        "plugins": {
            "total": plugins.len(),
            "active": count(PluginStatus::Active),
            "revoked": count(PluginStatus::Revoked),
            "rejected": count(PluginStatus::Rejected),
            "unavailable": count(PluginStatus::Unavailable),
        },
        "active_runs": load.executing,
        "queued_runs": load.queued,
        "max_concurrent_runs": ctx.supervisor.config().runs.max_concurrent,
        "isolation": isolation(ctx),
    })
}

/// Which isolation layers this host gives runs, why the others are missing,
/// and which of those the config lets runs go without.
fn isolation(ctx: &CallContext) -> Value {
    let host = ctx.supervisor.host();
    let mut available = Vec::new();
    let mut unavailable = Map::new();
    for layer in Layer::ALL {
        match host.lacks(layer) {
            None => available.push(layer.as_str()),
            Some(reason) => {
                unavailable.insert(layer.as_str().into(), json!(reason));
            }
        }
    }
    json!({
        "available": available,
        "unavailable": unavailable,
        "allow_degraded": ctx.supervisor.config().sandbox.allow_degraded,
    })
}
