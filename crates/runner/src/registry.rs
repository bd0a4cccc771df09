//! Plugin discovery and the registry of plugin entries.
//!
//! Discovery turns the configured manifest directories into one entry per
//! manifest file, each with a status: a bad manifest is listed as `rejected`
//! (or `unavailable` when only a dependency is missing) with the reason, and
//! never stops the others. The registry has one owner, the supervisor; revoking
//! and reinstating change only the in-memory entry, and the caller persists the
//! matching `PluginState`.
//!
//! Which files are manifests, in each directory of `plugins.manifest_dirs`:
//! - every `<dir>/*.json` file;
//! - for every subdirectory `<dir>/<plugin>/`: `<dir>/<plugin>/manifest.json`
//!   when it exists, else every `<dir>/<plugin>/*.json` (one level only).
//!
//! Names starting with `.` are skipped; symlinked files and directories are
//! followed (the entrypoint must still lie below the manifest's own
//! directory). All files are taken in sorted path order, so the outcome does
//! not depend on directory order; when two manifests declare the same name,
//! the second in that order is rejected naming both files.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secflow_plugin_sdk::protocol::Category;
use serde::Serialize;
use serde_json::Value;

use secflow_core::config::Config;
use secflow_core::record::ErrorKind;
use secflow_manifest::{VerifiedPlugin, MAX_MANIFEST_BYTES};
// Listed with the entries it describes; defined in the core (manifests name it too).
pub use secflow_core::PluginStatus;
use secflow_store::PluginState;
use secflow_trust::TrustStore;

/// Most manifest files considered in one discovery; beyond it the rest are
/// skipped with a warning, so a misconfigured directory cannot stall the daemon.
pub const MAX_MANIFESTS: usize = 4096;

/// One discovered manifest, as `plugins.list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginEntry {
    pub name: String,
    pub version: String,
    pub category: Option<Category>,
    pub status: PluginStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub network: bool,
    pub manifest_path: PathBuf,
    /// The manifest's `code_hash`, when it could be read.
    #[serde(skip)]
    pub code_hash: Option<String>,
    /// Why it is rejected or unavailable.
    #[serde(skip)]
    pub error_kind: Option<ErrorKind>,
    /// The rejection is one an operator must look at (hash, signature, escape).
    #[serde(skip)]
    pub security_event: bool,
    /// The verified plugin; `Some` when the status is `active` or `revoked`.
    #[serde(skip)]
    pub plugin: Option<Arc<VerifiedPlugin>>,
}

/// A registry operation that does not apply.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no plugin named {name}")]
    NotFound { name: String },
    #[error("plugin {name} is {status}, not revoked, so there is nothing to reinstate")]
    NotRevoked { name: String, status: PluginStatus },
    #[error("plugin {name} is {status} and cannot be revoked: only an active plugin can")]
    NotRevocable { name: String, status: PluginStatus },
}

/// Every discovered plugin, sorted by name.
#[derive(Debug, Default)]
pub struct Registry {
    /// Sorted by (name, manifest path): for a duplicated name, the entry that
    /// holds the name comes first.
    entries: Vec<PluginEntry>,
}

impl Registry {
    /// Discovers and verifies every manifest in `config.plugins.manifest_dirs`;
    /// `states` are the persisted revocations to restore.
    pub fn discover(config: &Config, states: &[PluginState]) -> Registry {
        let mut entries = Vec::new();
        let mut first_path: HashMap<String, PathBuf> = HashMap::new();
        // Key files are read once per discovery, not once per manifest.
        let trust = TrustStore::load(&config.trust);
        for path in manifest_files(&config.plugins.manifest_dirs) {
            let entry = match first_path.get(&peek(&path).name) {
                Some(first) => duplicate(&path, first),
                None => verify(&path, config, &trust, states),
            };
            if entry.status != PluginStatus::Active {
                tracing::warn!(
                    plugin = %entry.name,
                    manifest = %path.display(),
                    status = %entry.status,
                    reason = entry.reason.as_deref().unwrap_or(""),
                    "plugin is not active"
                );
            }
            first_path.entry(entry.name.clone()).or_insert(path);
            entries.push(entry);
        }
        entries.sort_by(|a, b| (&a.name, &a.manifest_path).cmp(&(&b.name, &b.manifest_path)));
        Registry { entries }
    }

    pub fn get(&self, name: &str) -> Option<&PluginEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Every entry, sorted by name (then manifest path).
    pub fn entries(&self) -> impl Iterator<Item = &PluginEntry> {
        self.entries.iter()
    }

    /// Marks an active plugin revoked (again: updates the reason of a revoked one).
    pub fn revoke(&mut self, name: &str, reason: &str) -> Result<&PluginEntry, RegistryError> {
        let entry = self.get_mut(name)?;
        match entry.status {
            PluginStatus::Active | PluginStatus::Revoked => {
                entry.status = PluginStatus::Revoked;
                entry.reason = Some(reason.to_string());
                Ok(entry)
            }
            status @ (PluginStatus::Rejected | PluginStatus::Unavailable) => {
                Err(RegistryError::NotRevocable {
                    name: name.to_string(),
                    status,
                })
            }
        }
    }

    /// Makes a revoked plugin active again.
    pub fn reinstate(&mut self, name: &str) -> Result<&PluginEntry, RegistryError> {
        let entry = self.get_mut(name)?;
        if entry.status != PluginStatus::Revoked {
            return Err(RegistryError::NotRevoked {
                name: name.to_string(),
                status: entry.status,
            });
        }
        entry.status = PluginStatus::Active;
        entry.reason = None;
        Ok(entry)
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut PluginEntry, RegistryError> {
        self.entries
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| RegistryError::NotFound {
                name: name.to_string(),
            })
    }
}

/// The manifest files of `dirs`, following the rule in the module doc.
fn manifest_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = BTreeSet::new();
    for dir in dirs {
        for path in list_dir(dir, true) {
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() && is_json(&path) => {
                    files.insert(path);
                }
                Ok(meta) if meta.is_dir() => {
                    let manifest = path.join("manifest.json");
                    if manifest.is_file() {
                        files.insert(manifest);
                    } else {
                        files.extend(
                            list_dir(&path, false)
                                .into_iter()
                                .filter(|p| p.is_file() && is_json(p)),
                        );
                    }
                }
                _ => {}
            }
        }
    }
    if files.len() > MAX_MANIFESTS {
        tracing::warn!(
            found = files.len(),
            limit = MAX_MANIFESTS,
            "too many manifest files; only the first ones in path order are considered"
        );
    }
    files.into_iter().take(MAX_MANIFESTS).collect()
}

/// The non-hidden entries of `dir`; a missing or unreadable directory is a
/// warning when it is a configured one.
fn list_dir(dir: &Path, configured: bool) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect(),
        Err(e) => {
            if configured {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read manifest directory; skipping it");
            } else {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read plugin directory; skipping it");
            }
            Vec::new()
        }
    }
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// Loads one manifest and turns the outcome into an entry.
fn verify(path: &Path, config: &Config, trust: &TrustStore, states: &[PluginState]) -> PluginEntry {
    match secflow_manifest::load(path, config, trust) {
        Ok(plugin) => {
            let m = &plugin.manifest;
            let revocation =
                latest_state(states, &m.name, &m.version, &m.code_hash).filter(|s| s.revoked);
            PluginEntry {
                name: m.name.clone(),
                version: m.version.clone(),
                category: Some(m.category),
                status: if revocation.is_some() {
                    PluginStatus::Revoked
                } else {
                    PluginStatus::Active
                },
                reason: revocation.map(|s| {
                    s.reason
                        .clone()
                        .unwrap_or_else(|| "revoked by an operator".into())
                }),
                network: m.sandbox.network.any(),
                manifest_path: path.to_path_buf(),
                code_hash: Some(m.code_hash.clone()),
                error_kind: None,
                security_event: false,
                plugin: Some(Arc::new(plugin)),
            }
        }
        Err(error) => {
            let seen = peek(path);
            PluginEntry {
                name: seen.name,
                version: seen.version,
                category: seen.category,
                status: error.status(),
                reason: Some(error.to_string()),
                network: seen.network,
                manifest_path: path.to_path_buf(),
                code_hash: seen.code_hash,
                error_kind: Some(error.kind()),
                security_event: error.is_security_event(),
                plugin: None,
            }
        }
    }
}

fn duplicate(path: &Path, first: &Path) -> PluginEntry {
    let seen = peek(path);
    let reason = format!(
        "manifest {} declares plugin {}, which {} already declares",
        path.display(),
        seen.name,
        first.display()
    );
    PluginEntry {
        reason: Some(reason),
        status: PluginStatus::Rejected,
        category: seen.category,
        network: seen.network,
        manifest_path: path.to_path_buf(),
        code_hash: seen.code_hash,
        error_kind: Some(ErrorKind::PluginRejected),
        security_event: false,
        plugin: None,
        name: seen.name,
        version: seen.version,
    }
}

/// The newest persisted state of exactly this build of a plugin.
fn latest_state<'a>(
    states: &'a [PluginState],
    name: &str,
    version: &str,
    code_hash: &str,
) -> Option<&'a PluginState> {
    states
        .iter()
        .filter(|s| s.name == name && s.version == version && s.code_hash == code_hash)
        .max_by(|a, b| a.changed_at.cmp(&b.changed_at))
}

/// What can be read from a manifest even when it does not verify, so that a
/// rejected plugin is listed under its own name.
struct Peek {
    name: String,
    version: String,
    category: Option<Category>,
    code_hash: Option<String>,
    network: bool,
}

fn peek(path: &Path) -> Peek {
    let doc: Option<Value> = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file() && m.len() <= MAX_MANIFEST_BYTES)
        .and_then(|_| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let text = |key: &str| {
        doc.as_ref()
            .and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .map(str::to_string)
    };
    Peek {
        name: text("name").unwrap_or_else(|| fallback_name(path)),
        version: text("version").unwrap_or_default(),
        category: doc
            .as_ref()
            .and_then(|d| d.get("category"))
            .and_then(|c| serde_json::from_value(c.clone()).ok()),
        code_hash: text("code_hash"),
        network: doc
            .as_ref()
            .and_then(|d| d.pointer("/sandbox/network"))
            .is_some_and(|n| n.as_bool().unwrap_or(n.as_str() == Some("targets"))),
    }
}

/// The file stem, or the plugin directory's name for `<plugin>/manifest.json`.
fn fallback_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem == "manifest" {
        if let Some(dir) = path.parent().and_then(Path::file_name) {
            return dir.to_string_lossy().into_owned();
        }
    }
    stem
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_manifest::fixtures::{config, plugin, script, write};
    use serde_json::json;

    fn state(entry: &PluginEntry, revoked: bool, changed_at: &str) -> PluginState {
        PluginState {
            name: entry.name.clone(),
            version: entry.version.clone(),
            code_hash: entry.code_hash.clone().unwrap(),
            revoked,
            reason: revoked.then(|| "sandbox violation in run 42".to_string()),
            changed_at: changed_at.to_string(),
            actor_uid: None,
        }
    }

    /// One good plugin and three bad manifests: tampered, unparseable, and one
    /// whose dependency is missing.
    fn four_manifests(root: &Path) {
        let (path, doc) = plugin(root, "good");
        write(&path, &doc);
        let (path, mut doc) = plugin(root, "tampered");
        script(&path.parent().unwrap().join("bin/tampered"), "echo swapped");
        doc["category"] = json!("enricher");
        write(&path, &doc);
        std::fs::write(root.join("broken.json"), b"{\"name\": \"broken\",").unwrap();
        let (path, mut doc) = plugin(root, "needs-tool");
        doc["dependencies"] = json!(["definitely-not-installed"]);
        write(&path, &doc);
    }

    #[test]
    fn discovery_lists_one_good_and_three_bad_manifests_with_their_statuses() {
        let root = tempfile::tempdir().unwrap();
        four_manifests(root.path());
        let registry = Registry::discover(&config(root.path()), &[]);
        let listed: Vec<(&str, PluginStatus)> = registry
            .entries()
            .map(|e| (e.name.as_str(), e.status))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("broken", PluginStatus::Rejected),
                ("good", PluginStatus::Active),
                ("needs-tool", PluginStatus::Unavailable),
                ("tampered", PluginStatus::Rejected),
            ]
        );

        let good = registry.get("good").unwrap();
        assert!(good.reason.is_none() && good.error_kind.is_none());
        assert_eq!(good.plugin.as_ref().unwrap().manifest.name, "good");

        let broken = registry.get("broken").unwrap();
        assert!(
            broken.reason.as_ref().unwrap().contains("broken.json"),
            "{:?}",
            broken.reason
        );
        assert!(broken.plugin.is_none());

        let tampered = registry.get("tampered").unwrap();
        assert_eq!(tampered.error_kind, Some(ErrorKind::HashMismatch));
        assert!(tampered.security_event);
        assert_eq!(
            tampered.category,
            Some(Category::Enricher),
            "read from the rejected manifest"
        );
        assert_eq!(tampered.version, "1.0.0");
        assert!(
            tampered.reason.as_ref().unwrap().contains("code_hash"),
            "{:?}",
            tampered.reason
        );

        let needs = registry.get("needs-tool").unwrap();
        assert_eq!(needs.error_kind, Some(ErrorKind::DependencyMissing));
        assert!(needs
            .reason
            .as_ref()
            .unwrap()
            .contains("definitely-not-installed"));
    }

    #[test]
    fn a_plugin_directory_with_manifest_json_ignores_its_other_json_files() {
        let root = tempfile::tempdir().unwrap();
        let (path, doc) = plugin(root.path(), "probe");
        write(&path, &doc);
        write(&path.with_file_name("wordlist.json"), &json!(["admin"]));
        write(&root.path().join(".hidden.json"), &json!({}));
        std::fs::write(root.path().join("README.md"), b"not a manifest").unwrap();
        let registry = Registry::discover(&config(root.path()), &[]);
        let names: Vec<&str> = registry.entries().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["probe"]);
    }

    #[test]
    fn a_plugin_directory_without_manifest_json_contributes_each_json_file() {
        let root = tempfile::tempdir().unwrap();
        let (path, doc) = plugin(root.path(), "probe");
        write(&path.with_file_name("probe.json"), &doc);
        let (path, doc) = plugin(&root.path().join("probe"), "nested-too-deep");
        write(&path, &doc);
        let registry = Registry::discover(&config(root.path()), &[]);
        let names: Vec<&str> = registry.entries().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["probe"],
            "only one level of subdirectories is scanned"
        );
        assert_eq!(registry.get("probe").unwrap().status, PluginStatus::Active);
    }

    #[test]
    fn a_missing_manifest_directory_is_skipped_not_fatal() {
        let root = tempfile::tempdir().unwrap();
        let (path, doc) = plugin(root.path(), "probe");
        write(&path, &doc);
        let mut config = config(root.path());
        config
            .plugins
            .manifest_dirs
            .insert(0, root.path().join("absent"));
        let registry = Registry::discover(&config, &[]);
        assert_eq!(registry.get("probe").unwrap().status, PluginStatus::Active);
    }

    #[test]
    fn a_second_manifest_with_the_same_name_is_rejected_naming_both_files() {
        let root = tempfile::tempdir().unwrap();
        let (first, mut doc) = plugin(root.path(), "a");
        doc["name"] = json!("dup");
        write(&first, &doc);
        let (second, mut doc) = plugin(root.path(), "b");
        doc["name"] = json!("dup");
        write(&second, &doc);
        let registry = Registry::discover(&config(root.path()), &[]);
        let dups: Vec<&PluginEntry> = registry.entries().filter(|e| e.name == "dup").collect();
        assert_eq!(dups.len(), 2);
        assert_eq!(dups[0].manifest_path, first);
        assert_eq!(dups[0].status, PluginStatus::Active);
        assert_eq!(dups[1].status, PluginStatus::Rejected);
        let reason = dups[1].reason.as_deref().unwrap();
        assert!(reason.contains(&first.display().to_string()), "{reason}");
        assert!(reason.contains(&second.display().to_string()), "{reason}");
        assert_eq!(
            registry.get("dup").unwrap().manifest_path,
            first,
            "the name belongs to the first"
        );
    }

    #[test]
    fn a_persisted_revocation_is_restored_for_the_same_build_only() {
        let root = tempfile::tempdir().unwrap();
        four_manifests(root.path());
        let config = config(root.path());
        let good = Registry::discover(&config, &[])
            .get("good")
            .unwrap()
            .clone();

        let revoked = state(&good, true, "2026-01-01T00:00:00Z");
        let registry = Registry::discover(&config, std::slice::from_ref(&revoked));
        let entry = registry.get("good").unwrap();
        assert_eq!(entry.status, PluginStatus::Revoked);
        assert_eq!(entry.reason.as_deref(), Some("sandbox violation in run 42"));
        assert!(
            entry.plugin.is_some(),
            "a revoked plugin stays verified for reinstatement"
        );

        let lifted = state(&good, false, "2026-01-02T00:00:00Z");
        let registry = Registry::discover(&config, &[lifted, revoked.clone()]);
        assert_eq!(
            registry.get("good").unwrap().status,
            PluginStatus::Active,
            "the newest state wins"
        );

        let other_build = PluginState {
            code_hash: format!("sha256:{}", "0".repeat(64)),
            ..revoked
        };
        let registry = Registry::discover(&config, &[other_build]);
        assert_eq!(registry.get("good").unwrap().status, PluginStatus::Active);
    }

    #[test]
    fn revoke_and_reinstate_change_only_a_verified_plugin() {
        let root = tempfile::tempdir().unwrap();
        four_manifests(root.path());
        let mut registry = Registry::discover(&config(root.path()), &[]);

        let entry = registry
            .revoke("good", "operator: suspicious traffic")
            .unwrap();
        assert_eq!(entry.status, PluginStatus::Revoked);
        assert_eq!(
            entry.reason.as_deref(),
            Some("operator: suspicious traffic")
        );
        let entry = registry.revoke("good", "second look").unwrap();
        assert_eq!(entry.reason.as_deref(), Some("second look"));
        let entry = registry.reinstate("good").unwrap();
        assert_eq!(
            (entry.status, entry.reason.clone()),
            (PluginStatus::Active, None)
        );

        let err = registry.reinstate("good").unwrap_err();
        assert!(matches!(err, RegistryError::NotRevoked { .. }), "{err}");
        let err = registry.revoke("tampered", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin tampered is rejected and cannot be revoked: only an active plugin can"
        );
        let err = registry.revoke("needs-tool", "x").unwrap_err();
        assert!(matches!(
            err,
            RegistryError::NotRevocable {
                status: PluginStatus::Unavailable,
                ..
            }
        ));
        let err = registry.reinstate("ghost").unwrap_err();
        assert_eq!(err.to_string(), "no plugin named ghost");
        assert_eq!(
            registry.get("tampered").unwrap().status,
            PluginStatus::Rejected
        );
    }

    #[test]
    fn an_entry_serializes_as_plugins_list_shows_it() {
        let root = tempfile::tempdir().unwrap();
        four_manifests(root.path());
        let registry = Registry::discover(&config(root.path()), &[]);
        let good = serde_json::to_value(registry.get("good").unwrap()).unwrap();
        let keys: Vec<&str> = good
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        for key in [
            "name",
            "version",
            "category",
            "status",
            "network",
            "manifest_path",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert_eq!(good["status"], json!("active"));
        let broken = serde_json::to_value(registry.get("broken").unwrap()).unwrap();
        assert_eq!(broken["status"], json!("rejected"));
        assert_eq!(broken["category"], Value::Null);
        assert!(broken["reason"].is_string());
    }
}
