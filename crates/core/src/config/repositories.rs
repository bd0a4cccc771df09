//! `[[repositories]]` and `[install]`: where `secflow plugin install` finds
//! plugins, whose keys may sign each repository's index, and where installed
//! plugins and what was seen of each repository are kept.
//!
//! The entries are checked in full by `secflow_repo` when a command uses
//! them (URL form, key ids against the trust store); this table checks what
//! it can without the network or the trust store, so a broken config is
//! refused at load time naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest `install.timeout_seconds`.
pub const MAX_INSTALL_TIMEOUT_SECONDS: u64 = 600;

/// One `[[repositories]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryEntry {
    /// A short name (spelt as a plugin name is): install records, errors and
    /// the seen-index state use it.
    pub name: String,
    /// `http://host[:port]/path`, `file:///path` or an absolute path.
    pub url: String,
    /// Key ids (`ed25519:<hex>`) allowed to sign this repository's index;
    /// each must also be a key of `trust.trusted_keys`.
    pub trusted_keys: Vec<String>,
}

/// `[install]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstallConfig {
    /// Where plugins are installed; one of `plugins.manifest_dirs`, so that
    /// discovery finds them (default: the first of those).
    pub plugin_dir: Option<PathBuf>,
    /// What was seen of each repository (its newest accepted index version),
    /// so a rolled-back index is refused.
    pub state_dir: PathBuf,
    /// Deadline of one request to a repository.
    pub timeout_seconds: u64,
}

impl Default for InstallConfig {
    fn default() -> InstallConfig {
        InstallConfig {
            plugin_dir: None,
            state_dir: PathBuf::from("var/repositories"),
            timeout_seconds: 30,
        }
    }
}

impl InstallConfig {
    /// Deadline of one request.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    /// The plugin directory in use: `plugin_dir`, or the first manifest dir.
    pub fn plugin_dir_in(&self, manifest_dirs: &[PathBuf]) -> Option<PathBuf> {
        self.plugin_dir
            .clone()
            .or_else(|| manifest_dirs.first().cloned())
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(dir) = &mut self.plugin_dir {
            join(dir);
        }
        join(&mut self.state_dir);
    }

    /// Why the tables cannot be used, naming the key.
    pub fn problem(
        &self,
        repositories: &[RepositoryEntry],
        manifest_dirs: &[PathBuf],
    ) -> Option<String> {
        if !(1..=MAX_INSTALL_TIMEOUT_SECONDS).contains(&self.timeout_seconds) {
            return Some(format!(
                "install.timeout_seconds must be between 1 and {MAX_INSTALL_TIMEOUT_SECONDS}, not {}",
                self.timeout_seconds
            ));
        }
        if let Some(dir) = &self.plugin_dir {
            if !manifest_dirs.contains(dir) {
                return Some(format!(
                    "install.plugin_dir {} is not one of plugins.manifest_dirs: discovery would not find what is installed there",
                    dir.display()
                ));
            }
        }
        for (i, entry) in repositories.iter().enumerate() {
            if entry.name.is_empty() {
                return Some(format!("repositories[{i}].name is empty"));
            }
            if entry.url.is_empty() {
                return Some(format!("repositories[{i}] ({}): url is empty", entry.name));
            }
            if entry.trusted_keys.is_empty() {
                return Some(format!(
                    "repositories[{i}] ({}): trusted_keys is empty, so no index could verify",
                    entry.name
                ));
            }
            if repositories[..i].iter().any(|e| e.name == entry.name) {
                return Some(format!(
                    "repositories[{i}]: the name {:?} is used twice",
                    entry.name
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secflow.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
            .map(|mut c| {
                // Paths are resolved against the (deleted) temp dir: make them relative again.
                c.install.state_dir = c
                    .install
                    .state_dir
                    .strip_prefix(dir.path())
                    .unwrap()
                    .to_path_buf();
                c
            })
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn repositories_and_install_load_with_their_defaults() {
        let config = load(
            "[[repositories]]\nname = \"main\"\nurl = \"http://127.0.0.1:9/repo\"\ntrusted_keys = [\"ed25519:ab\"]\n",
        )
        .unwrap();
        assert_eq!(config.repositories.len(), 1);
        assert_eq!(config.repositories[0].name, "main");
        assert_eq!(config.install.state_dir, Path::new("var/repositories"));
        assert_eq!(config.install.timeout_seconds, 30);
        assert_eq!(
            config.install.plugin_dir_in(&config.plugins.manifest_dirs),
            config.plugins.manifest_dirs.first().cloned()
        );
    }

    #[test]
    fn a_bad_repository_or_install_table_is_refused_naming_the_key() {
        for (text, expected) in [
            (
                "[[repositories]]\nname = \"main\"\nurl = \"http://h/\"\ntrusted_keys = []\n",
                "repositories[0] (main): trusted_keys is empty",
            ),
            (
                "[[repositories]]\nname = \"a\"\nurl = \"http://h/\"\ntrusted_keys = [\"k\"]\n[[repositories]]\nname = \"a\"\nurl = \"http://i/\"\ntrusted_keys = [\"k\"]\n",
                "repositories[1]: the name \"a\" is used twice",
            ),
            (
                "[[repositories]]\nname = \"a\"\nurl = \"http://h/\"\ntrusted_keys = [\"k\"]\nmirror = true\n",
                "unknown field `mirror`",
            ),
            ("[install]\ntimeout_seconds = 0\n", "install.timeout_seconds must be between 1 and 600"),
            (
                "[install]\nplugin_dir = \"elsewhere\"\n",
                "is not one of plugins.manifest_dirs",
            ),
        ] {
            let error = load(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
