//! The `[vulndb]` table of secflow.toml as written: where the vulnerability
//! data lives and how `secflow vulndb update` fetches it.
//!
//! The table lives in the core config so that one file configures the daemon,
//! the CLI and the update timer; its validation (URLs, the API key file) is
//! `secflow_vulndb::Settings::from_config`, run by the commands that fetch.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

/// Where cve-mapper's manifest reads the data by default.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/secflow/vulndb";
/// The NVD CVE API 2.0 endpoint.
pub const DEFAULT_NVD_URL: &str = "https://services.nvd.nist.gov/rest/json/cves/2.0";
/// The CISA KEV catalogue (JSON feed).
pub const DEFAULT_KEV_URL: &str =
    "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json";
/// OSV's bucket: `<base>/<ecosystem>/all.zip`.
pub const DEFAULT_OSV_URL: &str = "https://osv-vulnerabilities.storage.googleapis.com";
/// Ecosystems fetched by default: the package managers scans name most.
pub const DEFAULT_OSV_ECOSYSTEMS: &[&str] = &[
    "PyPI",
    "npm",
    "Go",
    "crates.io",
    "Maven",
    "RubyGems",
    "Packagist",
    "NuGet",
];
/// Data older than this is reported stale by `status` and `doctor`.
pub const DEFAULT_MAX_AGE_DAYS: u64 = 7;
/// Records per NVD page: the API's maximum.
pub const NVD_MAX_RESULTS_PER_PAGE: u32 = 2000;
/// The `[vulndb]` table as written (every key optional).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct VulndbConfig {
    /// The data directory cve-mapper reads (its manifest's `read_paths`).
    pub data_dir: PathBuf,
    /// NVD API key sent as the `apiKey` header (raises the limit to 50 requests per 30 s).
    /// Never shown: `doctor` prints the config, so it serializes as `<redacted>`.
    #[serde(serialize_with = "redacted")]
    pub api_key: String,
    /// A file holding the API key (read at start; wins over `api_key` when set).
    pub api_key_file: Option<PathBuf>,
    /// The NVD CVE API 2.0 endpoint.
    pub nvd_url: String,
    /// The KEV catalogue's URL.
    pub kev_url: String,
    /// The OSV bucket's base URL.
    pub osv_url: String,
    /// OSV ecosystems to fetch (`<osv_url>/<ecosystem>/all.zip`); empty: no OSV.
    pub osv_ecosystems: Vec<String>,
    /// Which sources `update` fetches.
    pub sources: Vec<SourceName>,
    /// Days after which data is reported stale.
    pub max_age_days: u64,
    /// Records per NVD page (1..=2000).
    pub results_per_page: u32,
    /// Seconds without a byte from the server before a request is abandoned.
    pub idle_timeout_secs: u64,
    /// Retries of a rate-limited (403/429), unavailable (5xx) or cut request.
    pub max_retries: u32,
    /// Largest OSV archive downloaded, in MiB.
    pub max_archive_mb: u64,
}

impl Default for VulndbConfig {
    fn default() -> Self {
        VulndbConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            api_key: String::new(),
            api_key_file: None,
            nvd_url: DEFAULT_NVD_URL.to_owned(),
            kev_url: DEFAULT_KEV_URL.to_owned(),
            osv_url: DEFAULT_OSV_URL.to_owned(),
            osv_ecosystems: DEFAULT_OSV_ECOSYSTEMS
                .iter()
                .map(|e| (*e).to_owned())
                .collect(),
            sources: vec![SourceName::Nvd, SourceName::Kev, SourceName::Osv],
            max_age_days: DEFAULT_MAX_AGE_DAYS,
            results_per_page: NVD_MAX_RESULTS_PER_PAGE,
            idle_timeout_secs: 60,
            max_retries: 6,
            max_archive_mb: 2048,
        }
    }
}

/// One data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceName {
    Nvd,
    Kev,
    Osv,
}

impl SourceName {
    /// The name used in the config, the layout and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceName::Nvd => "nvd",
            SourceName::Kev => "kev",
            SourceName::Osv => "osv",
        }
    }
}

impl std::fmt::Display for SourceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl VulndbConfig {
    /// Whether `path` is the data directory or lies under it (what cve-mapper
    /// reads through its `sandbox.read_paths`).
    pub fn holds(&self, path: &Path) -> bool {
        path.starts_with(&self.data_dir)
    }
}

/// A secret as it may be shown: whether it is set, not what it is.
fn redacted<S: Serializer>(secret: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if secret.is_empty() { "" } else { "<redacted>" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_vulndb_table_resolves_paths_against_the_config_file() {
        let config = Config::parse(
            "[vulndb]\ndata_dir = \"data/vulndb\"\napi_key_file = \"nvd.key\"\nmax_age_days = 3\n",
            Path::new("/etc/secflow/secflow.toml"),
        )
        .unwrap();
        assert_eq!(
            config.vulndb.data_dir,
            Path::new("/etc/secflow/data/vulndb")
        );
        assert_eq!(
            config.vulndb.api_key_file.as_deref(),
            Some(Path::new("/etc/secflow/nvd.key"))
        );
        assert_eq!(config.vulndb.max_age_days, 3);
        assert!(config
            .vulndb
            .holds(Path::new("/etc/secflow/data/vulndb/current")));
        assert!(!config.vulndb.holds(Path::new("/etc/secflow/data")));
    }

    #[test]
    fn an_unknown_vulndb_key_is_refused_by_name() {
        let err = Config::parse("[vulndb]\nnvd_api = \"x\"\n", Path::new("/s.toml")).unwrap_err();
        assert!(err.to_string().contains("nvd_api"), "{err}");
    }

    #[test]
    fn the_api_key_is_never_serialized() {
        let mut config = Config::default();
        config.vulndb.api_key = "0a1b2c3d-secret".into();
        let shown = serde_json::to_string(&config).unwrap();
        assert!(!shown.contains("0a1b2c3d-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
