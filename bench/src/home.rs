//! A throwaway supervisor home per section: config, database, plugin dirs, and
//! plugins installed the way an operator would (executable beside its
//! manifest, `code_hash` filled in).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::BenchError;

/// One section's home directory.
#[derive(Debug)]
pub struct BenchHome {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Knobs of the home's config that the sections change.
#[derive(Debug, Clone)]
pub struct HomeSettings {
    /// `runs.max_concurrent`.
    pub max_concurrent: usize,
    /// `limits.max_findings`.
    pub max_findings: u64,
    /// `storage.read_connections`; `None` keeps the default.
    pub read_connections: Option<usize>,
    /// `[web]` on this loopback port, users in `<home>/web-tokens`.
    pub web_port: Option<u16>,
}

impl Default for HomeSettings {
    fn default() -> HomeSettings {
        HomeSettings {
            max_concurrent: 8,
            max_findings: 1_000_000,
            read_connections: None,
            web_port: None,
        }
    }
}

impl BenchHome {
    pub fn new(settings: &HomeSettings) -> Result<BenchHome, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("secflow-bench-")
            .tempdir()
            .map_err(|source| BenchError::Io {
                what: "creating the bench home".into(),
                source,
            })?;
        let config_path = dir.path().join("secflow.toml");
        let text = format!(
            "[plugins]\nmanifest_dirs = [\"plugins\"]\n\
             [storage]\npath = \"var/secflow.db\"\n{}\
             [sandbox]\nwork_root = \"var/runs\"\n\
             [api]\nsocket = \"api.sock\"\nmax_pending_requests = 1024\n\
             [runs]\nmax_concurrent = {}\nmax_queued = 100000\n\
             [limits]\nmax_findings = {}\n{}",
            settings
                .read_connections
                .map(|n| format!("read_connections = {n}\n"))
                .unwrap_or_default(),
            settings.max_concurrent,
            settings.max_findings,
            settings
                .web_port
                .map(|port| format!(
                    "[web]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"web-tokens\"\n"
                ))
                .unwrap_or_default(),
        );
        write(&config_path, text.as_bytes())?;
        Ok(BenchHome { dir, config_path })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("api.sock")
    }

    /// Installs `executable` as plugin `name` (a detector) with the config
    /// knobs the bench plugins read and room for a long, large stream.
    pub fn install(&self, name: &str, executable: &Path) -> Result<(), BenchError> {
        self.install_with_network(name, executable, json!(false))
    }

    /// [`BenchHome::install`] with `sandbox.network` set to `network`.
    pub fn install_with_network(
        &self,
        name: &str,
        executable: &Path,
        network: Value,
    ) -> Result<(), BenchError> {
        let dir = self.path().join("plugins").join(name);
        std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let file_name = executable.file_name().ok_or_else(|| {
            BenchError::Setup(format!("{} has no file name", executable.display()))
        })?;
        let installed = dir.join(file_name);
        std::fs::copy(executable, &installed).map_err(|source| BenchError::Io {
            what: format!("copying {}", executable.display()),
            source,
        })?;
        let code_hash = secflow_trust::hash_file(&installed)
            .map_err(|e| BenchError::Setup(format!("hashing {}: {e}", installed.display())))?;
        let int = |d: u64| json!({"type": "integer", "minimum": 0, "default": d});
        let manifest: Value = json!({
            "name": name, "version": "1.0.0", "category": "detector",
            "entrypoint": file_name.to_string_lossy(),
            "code_hash": code_hash,
            "config_schema": {"count": int(0), "hold_ms": int(0), "delay_ms": int(0)},
            "sandbox": {"network": network, "filesystem": "readonly", "timeout_seconds": 1800,
                        "max_output_mb": 1024}
        });
        write(&dir.join("manifest.json"), manifest.to_string().as_bytes())
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    std::fs::write(path, bytes).map_err(|source| BenchError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}
