//! The storage backend keys (`[storage] backend`, `url`, `url_file`,
//! `pool_size`, `tls`, `tls_ca_file`) and the host's name (`[host] name`):
//! what a scan host needs to share one PostgreSQL store with a fleet.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StorageConfig;

/// Largest `storage.pool_size`.
pub const MAX_POOL_SIZE: usize = 64;

/// Longest `host.name`, in bytes (a DNS name's bound).
pub const MAX_HOST_NAME_BYTES: usize = 253;

/// Largest `storage.url_file`, in bytes: it holds one URL.
pub const MAX_URL_FILE_BYTES: u64 = 4096;

/// Which store keeps runs, findings, telemetry and audit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// The embedded database file `storage.path` (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL server at `storage.url`, shared by many hosts.
    Postgres,
}

impl StorageBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageBackend::Sqlite => "sqlite",
            StorageBackend::Postgres => "postgres",
        }
    }
}

/// Whether the connection to PostgreSQL is encrypted. A TLS connection
/// always verifies the server's certificate (against `storage.tls_ca_file`,
/// else the public web roots) and its name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP or a Unix socket.
    Disable,
    /// TLS when the server offers it, else plain (the default, as libpq's).
    #[default]
    Prefer,
    /// TLS or no connection.
    Require,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
        }
    }
}

/// `[host]`: who this supervisor is in a fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// The name recorded with every run, finding occurrence and audit event
    /// this host writes. Default: the machine's hostname.
    pub name: String,
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
            name: machine_hostname(),
        }
    }
}

/// The kernel's hostname, or `localhost` when it cannot be read.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A PostgreSQL URL that could not be had from the config.
#[derive(Debug, thiserror::Error)]
pub enum StorageUrlError {
    #[error("storage.backend is \"postgres\" but neither storage.url nor storage.url_file is set")]
    Missing,
    #[error("cannot read storage.url_file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage.url_file {path} is larger than {MAX_URL_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("storage.url_file {path} does not hold a postgres:// or postgresql:// url")]
    NotAUrl { path: PathBuf },
}

impl StorageConfig {
    /// The PostgreSQL URL: `storage.url`, or the first line of
    /// `storage.url_file` (a secret kept out of the config file).
    pub fn postgres_url(&self) -> Result<String, StorageUrlError> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let path = self.url_file.as_deref().ok_or(StorageUrlError::Missing)?;
        let read_error = |source| StorageUrlError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_URL_FILE_BYTES {
            return Err(StorageUrlError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        let url = text.lines().next().unwrap_or_default().trim().to_string();
        if !is_postgres_url(&url) {
            return Err(StorageUrlError::NotAUrl {
                path: path.to_path_buf(),
            });
        }
        Ok(url)
    }

    /// The server as an operator would name it in a message: the URL
    /// without its user info (a password never reaches a log).
    pub fn postgres_location(url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return "postgres server".to_string();
        };
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let rest = rest.split_once('?').map_or(rest, |(host, _)| host);
        format!("{scheme}://{rest}")
    }

    pub(super) fn resolve_fleet_paths(&mut self, base: &Path) {
        for path in [&mut self.url_file, &mut self.tls_ca_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    pub(super) fn validate_fleet(&self) -> Result<(), String> {
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            return Err(format!(
                "storage.pool_size must be between 1 and {MAX_POOL_SIZE}, not {}",
                self.pool_size
            ));
        }
        if self.url.is_some() && self.url_file.is_some() {
            return Err("storage.url and storage.url_file are both set: keep one".into());
        }
        if let Some(url) = &self.url {
            if !is_postgres_url(url) {
                return Err(format!(
                    "storage.url must start with postgres:// or postgresql://, not {:?}",
                    StorageConfig::postgres_location(url)
                ));
            }
        }
        match self.backend {
            StorageBackend::Postgres if self.url.is_none() && self.url_file.is_none() => Err(
                "storage.backend is \"postgres\" but neither storage.url nor storage.url_file is set"
                    .into(),
            ),
            StorageBackend::Sqlite if self.url.is_some() || self.url_file.is_some() => Err(
                "storage.url or storage.url_file is set but storage.backend is \"sqlite\": set backend = \"postgres\""
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

impl HostConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || name.len() > MAX_HOST_NAME_BYTES {
            return Err(format!(
                "host.name must be 1 to {MAX_HOST_NAME_BYTES} bytes, not {}",
                name.len()
            ));
        }
        if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "host.name {name:?} holds a space or control character"
            ));
        }
        Ok(())
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
