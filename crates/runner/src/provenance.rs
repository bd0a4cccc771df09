//! Provenance: what produced a run's findings — the plugin version, the
//! digest of the executable that ran, of the manifest as verified, and of the
//! effective sandbox policy — written into the run's `plugin_invoked` audit
//! event when it starts, so every finding (through the run that first
//! reported it) says where it came from.
//!
//! The policy digest covers what the sandbox enforces for this plugin on this
//! host (layers applied and degraded, network, filesystem, limits, visible
//! paths, tmpfs sizes), not what changes from run to run (the per-run uid), so
//! two runs under the same policy share a digest and a changed policy shows.

use secflow_manifest::VerifiedPlugin;
use secflow_sandbox::{EffectivePolicy, SandboxPlan};
use secflow_store::{AuditQuery, FindingQuery, StorageError, StoragePort, StoredFinding};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The audit event that carries a run's provenance.
pub const PROVENANCE_EVENT: &str = "plugin_invoked";

/// What produced a run's findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub plugin: String,
    pub version: String,
    /// `sha256:<hex>` of the executable, checked against the file executed.
    pub binary_digest: String,
    /// `sha256:<hex>` of the manifest's bytes as verified.
    pub manifest_digest: Option<String>,
    /// The key whose ed25519 signature covers the manifest, if signed.
    pub signed_by: Option<String>,
    /// `sha256:<hex>` of the canonical JSON of [`policy_document`].
    pub policy_digest: String,
}

/// The part of a run's policy that is the same for every run of the plugin
/// under the same config on the same host.
pub fn policy_document(policy: &EffectivePolicy, plan: &SandboxPlan) -> Value {
    json!({
        "layers": policy.layers,
        "degraded": policy.degraded,
        "network": policy.network,
        "filesystem": policy.filesystem,
        "limits": policy.limits,
        "mechanism": policy.mechanism,
        "plugin_dir": plan.plugin_dir,
        "read_paths": plan.read_paths,
        "state": plan.state_dir.is_some(),
        "hidden": plan.hidden,
        "search_path": plan.search_path,
        "tmp_size_mb": plan.tmp_size_mb,
        "work_size_mb": plan.work_size_mb,
    })
}

/// `sha256:<hex>` of `document` serialised with its object keys sorted.
pub fn digest_of(document: &Value) -> String {
    let canonical = canonical(document).to_string();
    secflow_trust::sha256_of(canonical.as_bytes()).unwrap_or_default()
}

/// `value` with every object's keys in sorted order, whatever serde_json's
/// map keeps (insertion order with `preserve_order`).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

impl Provenance {
    pub fn of(plugin: &VerifiedPlugin, policy: &EffectivePolicy, plan: &SandboxPlan) -> Provenance {
        Provenance {
            plugin: plugin.manifest.name.clone(),
            version: plugin.manifest.version.clone(),
            binary_digest: plugin.manifest.code_hash.clone(),
            manifest_digest: plugin.manifest_digest.clone(),
            signed_by: plugin.signed_by.as_ref().map(|k| k.as_str().to_string()),
            policy_digest: digest_of(&policy_document(policy, plan)),
        }
    }
}

/// The provenance recorded for `run_id`, if that run started (a run refused
/// before its start, or one from before provenance was recorded, has none).
pub fn of_run(store: &dyn StoragePort, run_id: &str) -> Result<Option<Provenance>, StorageError> {
    let events = store.audit(&AuditQuery {
        event: Some(PROVENANCE_EVENT.to_string()),
        run_id: Some(run_id.to_string()),
        limit: Some(1),
        ..AuditQuery::default()
    })?;
    Ok(events
        .into_iter()
        .find_map(|e| serde_json::from_value(e.details.get("provenance")?.clone()).ok()))
}

/// The stored finding `id` and the provenance of the run that first
/// reported it; `None` when there is no such finding.
pub fn finding_with_provenance(
    store: &dyn StoragePort,
    id: i64,
) -> Result<Option<(StoredFinding, Option<Provenance>)>, StorageError> {
    // The keyset cursor finds the first id above `id - 1`: the finding, if it exists.
    let page = store.findings(&FindingQuery {
        after: Some(id.saturating_sub(1)),
        limit: Some(1),
        ..FindingQuery::default()
    })?;
    let Some(finding) = page.findings.into_iter().find(|f| f.id == id) else {
        return Ok(None);
    };
    let provenance = of_run(store, &finding.run_id)?;
    Ok(Some((finding, provenance)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_does_not_depend_on_key_order_and_does_on_every_value() {
        let a = json!({"network": false, "limits": {"memory_mb": 256, "cpu_seconds": 30}});
        let b = json!({"limits": {"cpu_seconds": 30, "memory_mb": 256}, "network": false});
        assert_eq!(digest_of(&a), digest_of(&b));
        assert!(digest_of(&a).starts_with("sha256:"));
        let c = json!({"limits": {"cpu_seconds": 31, "memory_mb": 256}, "network": false});
        assert_ne!(digest_of(&a), digest_of(&c));
    }
}
