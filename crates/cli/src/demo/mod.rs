//! `secflow demo`: a complete scan on a fresh machine with nothing set up.
//!
//! It makes a throwaway supervisor home (config, database, plugin dir, NVD
//! data), stages the shipped plugins from the directory of the running
//! `secflow` executable, starts a local vulnerable-looking target
//! ([`target::DemoTarget`]) and runs the default pipeline ([`crate::scan`]) on
//! it with an embedded supervisor. The home is kept so its database can be
//! explored afterwards.

pub mod target;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::scan::{self, LocalExecutor, ScanError, ScanProgress, ScanReport};
use secflow_core::config::Config;
use secflow_runner::Supervisor;

/// The shipped manifests (`manifests/*.json`), staged by the demo.
const MANIFESTS: [(&str, &str); 5] = [
    (
        "analytics.json",
        include_str!("../../../../manifests/analytics.json"),
    ),
    (
        "cve-mapper.json",
        include_str!("../../../../manifests/cve-mapper.json"),
    ),
    (
        "ferox.json",
        include_str!("../../../../manifests/ferox.json"),
    ),
    (
        "nuclei.json",
        include_str!("../../../../manifests/nuclei.json"),
    ),
    (
        "service-scan.json",
        include_str!("../../../../manifests/service-scan.json"),
    ),
];

/// The NVD records of the products the demo target shows (Apache httpd 2.4.x,
/// OpenSSH 7.x), from tests/fixtures/nvd (see its PROVENANCE.md).
macro_rules! nvd_records {
    ($($id:literal),* $(,)?) => {
        [$(($id, include_str!(concat!("../../../../tests/fixtures/nvd/", $id, ".json")))),*]
    };
}
const NVD_RECORDS: [(&str, &str); 15] = nvd_records![
    "CVE-2017-15715",
    "CVE-2019-0211",
    "CVE-2021-40438",
    "CVE-2021-41773",
    "CVE-2021-42013",
    "CVE-2021-44790",
    "CVE-2022-22720",
    "CVE-2022-31813",
    "CVE-2023-25690",
    "CVE-2024-38476",
    "CVE-2016-6210",
    "CVE-2018-15473",
    "CVE-2020-15778",
    "CVE-2023-38408",
    "CVE-2024-6387",
];

/// The demo's config: everything in its home, relative to the config file.
const CONFIG: &str = "# secflow demo home (written by `secflow demo`).\n\
[plugins]\nmanifest_dirs = [\"plugins\"]\n\
[storage]\npath = \"secflow.db\"\n\
[sandbox]\nwork_root = \"runs\"\n\
[vulndb]\ndata_dir = \"nvd\"\n";

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the demo home {path}")]
    Home {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shipped manifest {file} is not a JSON object with a config_schema and sandbox")]
    Manifest { file: &'static str },
    #[error("cannot stage the demo's plugins from {bin_dir}: {reason} (build them first: cargo build --release --workspace)")]
    Stage { bin_dir: PathBuf, reason: String },
    #[error("demo config {path} does not load: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("cannot start the demo target on 127.0.0.1")]
    Target(#[source] std::io::Error),
    #[error(transparent)]
    Supervisor(#[from] secflow_runner::SupervisorError),
    #[error(transparent)]
    Scan(#[from] ScanError),
}

/// A demo's throwaway supervisor home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoHome {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub database: PathBuf,
    /// The NVD records cve-mapper reads.
    pub nvd_dir: PathBuf,
}

impl DemoHome {
    /// A new home under the system's temp dir, `secflow-demo-<uuid>`.
    pub fn create() -> Result<DemoHome, DemoError> {
        let dir = std::env::temp_dir().join(format!("secflow-demo-{}", uuid::Uuid::now_v7()));
        DemoHome::create_in(dir)
    }

    /// A new home in `dir`: the config and the NVD records (the plugins come
    /// with [`DemoHome::stage_plugins`]).
    pub fn create_in(dir: PathBuf) -> Result<DemoHome, DemoError> {
        let home = DemoHome {
            config_path: dir.join("secflow.toml"),
            database: dir.join("secflow.db"),
            nvd_dir: dir.join("nvd"),
            dir,
        };
        let io = |source| DemoError::Home {
            path: home.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&home.nvd_dir).map_err(io)?;
        std::fs::create_dir_all(home.dir.join("plugins")).map_err(io)?;
        std::fs::write(&home.config_path, CONFIG).map_err(io)?;
        for (id, text) in NVD_RECORDS {
            std::fs::write(home.nvd_dir.join(format!("{id}.json")), text).map_err(io)?;
        }
        Ok(home)
    }

    /// Stages the shipped plugins from `bin_dir` (where `cargo build` put
    /// them, beside `secflow`) into `plugins/`, with their code hashes;
    /// cve-mapper reads the home's NVD records. `stage` is the `manifest
    /// stage` step: (source manifest, bin dir, out dir) → error text.
    pub fn stage_plugins(
        &self,
        bin_dir: &Path,
        stage: impl Fn(&Path, &Path, &Path) -> Result<PathBuf, String>,
    ) -> Result<(), DemoError> {
        let sources = self.dir.join("manifests");
        std::fs::create_dir_all(&sources).map_err(|source| DemoError::Home {
            path: sources.clone(),
            source,
        })?;
        for (file, text) in MANIFESTS {
            let mut doc: Map<String, Value> =
                serde_json::from_str(text).map_err(|_| DemoError::Manifest { file })?;
            if doc.get("name").and_then(Value::as_str) == Some("cve-mapper") {
                self.point_at_nvd(&mut doc)
                    .ok_or(DemoError::Manifest { file })?;
            }
            let source = sources.join(file);
            let mut body = serde_json::to_string_pretty(&Value::Object(doc))
                .map_err(|_| DemoError::Manifest { file })?;
            body.push('\n');
            std::fs::write(&source, body).map_err(|e| DemoError::Home {
                path: source.clone(),
                source: e,
            })?;
            stage(&source, bin_dir, &self.dir.join("plugins")).map_err(|reason| {
                DemoError::Stage {
                    bin_dir: bin_dir.to_path_buf(),
                    reason,
                }
            })?;
        }
        Ok(())
    }

    /// Makes the home's NVD dir cve-mapper's default `data_dir` and lets the
    /// sandbox show it.
    fn point_at_nvd(&self, doc: &mut Map<String, Value>) -> Option<()> {
        let nvd = Value::String(self.nvd_dir.display().to_string());
        let schema = doc.get_mut("config_schema")?.get_mut("data_dir")?;
        schema
            .as_object_mut()?
            .insert("default".into(), nvd.clone());
        let sandbox = doc.get_mut("sandbox")?.as_object_mut()?;
        sandbox.insert("read_paths".into(), Value::Array(vec![nvd]));
        Some(())
    }

    pub fn config(&self) -> Result<Config, DemoError> {
        Config::load(&self.config_path).map_err(|e| DemoError::Config {
            path: self.config_path.clone(),
            reason: secflow_core::error_chain(&e),
        })
    }
}

/// What the demo did: the scan and what it scanned.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DemoOutcome {
    /// `{runs, findings, summary}` of the scan.
    #[serde(flatten)]
    pub report: ScanReport,
    pub http_target: String,
    pub ssh_target: String,
    pub database: PathBuf,
    pub config: PathBuf,
}

/// Starts the demo target and scans it with an embedded supervisor on the
/// (staged) `home`. Setting `cancel` cancels the current run and the scan.
pub async fn run(
    home: &DemoHome,
    progress: &mut dyn ScanProgress,
    cancel: watch::Receiver<bool>,
    actor_uid: Option<u32>,
) -> Result<DemoOutcome, DemoError> {
    let target = target::DemoTarget::start()
        .await
        .map_err(DemoError::Target)?;
    let supervisor = Supervisor::open(home.config()?).await?;
    let targets = [target.http_url(), target.ssh_target()];
    let mut executor = LocalExecutor::new(&supervisor, cancel);
    let report = scan::run_scan(&mut executor, progress, &targets, actor_uid).await?;
    supervisor.flush().await?;
    Ok(DemoOutcome {
        report,
        http_target: target.http_url(),
        ssh_target: target.ssh_target(),
        database: home.database.clone(),
        config: home.config_path.clone(),
    })
}
