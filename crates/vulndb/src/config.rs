//! The `[vulndb]` table of secflow.toml as written, and the validated
//! [`Settings`] an update runs with.
//!
//! The raw table only has defaults; everything that can be wrong (a URL that
//! is not http(s), plain http to a remote host, an API key file that cannot be
//! read, an ecosystem name that cannot be a directory) is refused in
//! [`Settings::from_config`], before any request.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
pub use secflow_core::config::vulndb::{
    SourceName, VulndbConfig, DEFAULT_DATA_DIR, DEFAULT_KEV_URL, DEFAULT_MAX_AGE_DAYS,
    DEFAULT_NVD_URL, DEFAULT_OSV_ECOSYSTEMS, DEFAULT_OSV_URL, NVD_MAX_RESULTS_PER_PAGE,
};

/// Longest API key file read (NVD keys are 36-character UUIDs).
const MAX_API_KEY_BYTES: u64 = 256;
/// Longest ecosystem name accepted.
const MAX_ECOSYSTEM_LEN: usize = 64;

/// Why the `[vulndb]` table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL is not an absolute http(s) URL.
    #[error("vulndb.{key} {url:?} is not an absolute http or https url")]
    BadUrl { key: &'static str, url: String },
    /// Plain http is only for loopback (tests, local mirrors).
    #[error("vulndb.{key} {url:?} uses plain http to a host that is not loopback; use https")]
    PlainHttp { key: &'static str, url: String },
    /// The API key file cannot be read.
    #[error("vulndb.api_key_file {path}: cannot be read")]
    ApiKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The API key is not a printable token.
    #[error("vulndb api key {origin} is empty, longer than {MAX_API_KEY_BYTES} bytes or not printable ascii")]
    BadApiKey { origin: String },
    /// An ecosystem name that cannot be a URL segment and directory.
    #[error("vulndb.osv_ecosystems entry {name:?} is not an ecosystem name (letters, digits, '.', '-', '_', ' ', at most {MAX_ECOSYSTEM_LEN})")]
    BadEcosystem { name: String },
    #[error("vulndb.results_per_page {0} is outside 1..=2000")]
    ResultsPerPage(u32),
    #[error("vulndb.{key} must be at least 1")]
    Zero { key: &'static str },
    #[error("vulndb.data_dir {0:?} must be an absolute path")]
    RelativeDataDir(PathBuf),
}

/// A request budget: at most `requests` in any `window` (NVD: 5 per 30 s
/// without a key, 50 with one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: usize,
    pub window: Duration,
}

/// Validated settings of one update.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub api_key: Option<String>,
    pub nvd_url: Uri,
    pub kev_url: Uri,
    pub osv_url: Uri,
    pub osv_ecosystems: Vec<String>,
    pub sources: Vec<SourceName>,
    pub max_age: Duration,
    pub results_per_page: u32,
    pub idle_timeout: Duration,
    pub max_retries: u32,
    /// First retry delay; doubled per attempt (a `Retry-After` answer wins).
    pub retry_base: Duration,
    /// Longest wait between two retries.
    pub retry_cap: Duration,
    pub nvd_rate: RateLimit,
    pub max_archive_bytes: u64,
}

impl Settings {
    /// Validates `config` and reads the API key file.
    pub fn from_config(config: &VulndbConfig) -> Result<Settings, ConfigError> {
        if !config.data_dir.is_absolute() {
            return Err(ConfigError::RelativeDataDir(config.data_dir.clone()));
        }
        if !(1..=NVD_MAX_RESULTS_PER_PAGE).contains(&config.results_per_page) {
            return Err(ConfigError::ResultsPerPage(config.results_per_page));
        }
        for (key, value) in [
            ("max_age_days", config.max_age_days),
            ("idle_timeout_secs", config.idle_timeout_secs),
            ("max_archive_mb", config.max_archive_mb),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { key });
            }
        }
        for name in &config.osv_ecosystems {
            check_ecosystem(name)?;
        }
        let api_key = match &config.api_key_file {
            Some(path) => Some(read_api_key(path)?),
            None if config.api_key.is_empty() => None,
            None => Some(check_api_key(config.api_key.trim(), "vulndb.api_key")?),
        };
        let nvd_rate = RateLimit {
            requests: if api_key.is_some() { 50 } else { 5 },
            window: Duration::from_secs(30),
        };
        let mut sources = config.sources.clone();
        sources.sort();
        sources.dedup();
        Ok(Settings {
            data_dir: config.data_dir.clone(),
            api_key,
            nvd_url: parse_url("nvd_url", &config.nvd_url)?,
            kev_url: parse_url("kev_url", &config.kev_url)?,
            osv_url: parse_url("osv_url", config.osv_url.trim_end_matches('/'))?,
            osv_ecosystems: config.osv_ecosystems.clone(),
            sources,
            max_age: Duration::from_secs(config.max_age_days.saturating_mul(86_400)),
            results_per_page: config.results_per_page,
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_retries: config.max_retries,
            retry_base: Duration::from_secs(6),
            retry_cap: Duration::from_secs(120),
            nvd_rate,
            max_archive_bytes: config.max_archive_mb.saturating_mul(1 << 20),
        })
    }
}

fn read_api_key(path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::ApiKeyFile {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_API_KEY_BYTES {
        return Err(ConfigError::BadApiKey {
            origin: format!("in {}", path.display()),
        });
    }
    let text = fs::read_to_string(path).map_err(io)?;
    check_api_key(text.trim(), &format!("in {}", path.display()))
}

fn check_api_key(key: &str, origin: &str) -> Result<String, ConfigError> {
    let printable = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() as u64 > MAX_API_KEY_BYTES || !printable {
        return Err(ConfigError::BadApiKey {
            origin: origin.to_owned(),
        });
    }
    Ok(key.to_owned())
}

fn check_ecosystem(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ECOSYSTEM_LEN
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadEcosystem {
            name: name.to_owned(),
        })
    }
}

/// Parses an http(s) URL; plain http only to a loopback host.
fn parse_url(key: &'static str, url: &str) -> Result<Uri, ConfigError> {
    let bad = || ConfigError::BadUrl {
        key,
        url: url.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| bad())?;
    let host = uri.host().ok_or_else(bad)?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(ConfigError::PlainHttp {
            key,
            url: url.to_owned(),
        }),
        _ => Err(bad()),
    }
}

/// Whether `host` names this machine (`localhost`, 127.0.0.0/8, `[::1]`).
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_use_the_keyless_nvd_budget() {
        let settings = Settings::from_config(&VulndbConfig::default()).unwrap();
        assert_eq!(settings.nvd_rate.requests, 5);
        assert_eq!(settings.nvd_rate.window, Duration::from_secs(30));
        assert_eq!(settings.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(settings.data_dir, Path::new(DEFAULT_DATA_DIR));
    }

    #[test]
    fn an_api_key_file_raises_the_budget_to_fifty_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nvd.key");
        fs::write(&path, "0a1b2c3d-0000-1111-2222-333344445555\n").unwrap();
        let config = VulndbConfig {
            api_key_file: Some(path),
            ..VulndbConfig::default()
        };
        let settings = Settings::from_config(&config).unwrap();
        assert_eq!(
            settings.api_key.as_deref(),
            Some("0a1b2c3d-0000-1111-2222-333344445555")
        );
        assert_eq!(settings.nvd_rate.requests, 50);
    }

    #[test]
    fn a_missing_api_key_file_is_named_in_the_error() {
        let config = VulndbConfig {
            api_key_file: Some("/nonexistent/nvd.key".into()),
            ..VulndbConfig::default()
        };
        let error = Settings::from_config(&config).unwrap_err().to_string();
        assert_eq!(
            error,
            "vulndb.api_key_file /nonexistent/nvd.key: cannot be read"
        );
    }

    #[test]
    fn plain_http_is_refused_except_to_loopback() {
        let remote = VulndbConfig {
            nvd_url: "http://nvd.example/rest".into(),
            ..VulndbConfig::default()
        };
        assert!(matches!(
            Settings::from_config(&remote),
            Err(ConfigError::PlainHttp { key: "nvd_url", .. })
        ));
        let local = VulndbConfig {
            nvd_url: "http://127.0.0.1:8080/rest".into(),
            kev_url: "http://[::1]:9/kev.json".into(),
            osv_url: "http://localhost:9/".into(),
            ..VulndbConfig::default()
        };
        let settings = Settings::from_config(&local).unwrap();
        assert_eq!(settings.osv_url.to_string(), "http://localhost:9/");
        let ftp = VulndbConfig {
            kev_url: "ftp://127.0.0.1/kev".into(),
            ..VulndbConfig::default()
        };
        assert!(matches!(
            Settings::from_config(&ftp),
            Err(ConfigError::BadUrl { key: "kev_url", .. })
        ));
    }

    #[test]
    fn an_ecosystem_that_could_escape_its_directory_is_refused() {
        for name in ["../etc", "", ".hidden", "a/b"] {
            let config = VulndbConfig {
                osv_ecosystems: vec![name.into()],
                ..VulndbConfig::default()
            };
            assert!(
                matches!(
                    Settings::from_config(&config),
                    Err(ConfigError::BadEcosystem { .. })
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_table_refuses_unknown_keys_and_fills_the_rest_with_defaults() {
        let config: VulndbConfig = toml::from_str("max_age_days = 3").unwrap();
        assert_eq!(config.max_age_days, 3);
        assert_eq!(config.nvd_url, DEFAULT_NVD_URL);
        let error = toml::from_str::<VulndbConfig>("data_dirr = \"/x\"").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `data_dirr`"),
            "{error}"
        );
    }
}
