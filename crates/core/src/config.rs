//! `secflow.toml`: loading, defaults and validation.
//!
//! Every key has its default here, in one place; an unknown key is an error that
//! names it. Relative paths are resolved against the config file's directory, so
//! the same file works whatever the current directory is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod fleet;
pub use fleet::{
    machine_hostname, HostConfig, StorageBackend, StorageUrlError, TlsMode, MAX_HOST_NAME_BYTES,
    MAX_POOL_SIZE, MAX_URL_FILE_BYTES,
};
pub mod repositories;
pub mod vulndb;
pub mod web;

pub use repositories::{InstallConfig, RepositoryEntry};
pub use vulndb::VulndbConfig;
pub use web::WebConfig;

/// Where the config is looked for when neither `--config` nor `SECFLOW_CONFIG` says.
pub const SYSTEM_CONFIG: &str = "/etc/secflow/secflow.toml";

/// A config that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// cannot read config file {path}
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// invalid config file {path}: {message}
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// invalid value in {path}: {message}
    #[error("invalid value in {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole supervisor configuration, with relative paths already resolved.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub plugins: PluginsConfig,
    pub storage: StorageConfig,
    pub api: ApiConfig,
    pub trust: TrustConfig,
    pub limits: LimitsConfig,
    pub sandbox: SandboxConfig,
    pub runs: RunsConfig,
    pub host: HostConfig,
    /// Vulnerability data: where cve-mapper reads it, how `secflow vulndb` fetches it.
    pub vulndb: VulndbConfig,
    /// The read-only web dashboard.
    pub web: WebConfig,
    /// Plugin repositories `secflow plugin install` reads (`[[repositories]]`).
    pub repositories: Vec<RepositoryEntry>,
    /// Where repository plugins are installed (`[install]`).
    pub install: InstallConfig,
    /// Where the file was loaded from (`None` for built-in defaults).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directories scanned for `*.json` manifests.
    pub manifest_dirs: Vec<PathBuf>,
    /// The PATH a plugin sees, and where its `dependencies` are looked up.
    pub search_path: Vec<PathBuf>,
}

impl Default for PluginsConfig {
    fn default() -> PluginsConfig {
        PluginsConfig {
            manifest_dirs: vec![PathBuf::from("manifests")],
            search_path: ["/usr/local/bin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        }
    }
}

/// Largest `storage.cache_mib`.
pub const MAX_CACHE_MIB: u32 = 4096;

/// Largest `storage.read_connections`.
pub const MAX_READ_CONNECTIONS: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The SQLite database file.
    pub path: PathBuf,
    /// Bound of the writer's queue (write operations waiting to be committed).
    pub queue_capacity: usize,
    /// Most write operations committed in one transaction.
    pub batch_size: usize,
    /// The writer connection's page cache, MiB. It fills as the database
    /// grows and then stays: the daemon's steady memory. Misses are served
    /// by the kernel's page cache, so more only pays on very large databases.
    pub cache_mib: u32,
    /// Most read connections, for queries answered side by side (opened on
    /// demand, kept once opened; each has its own small page cache).
    pub read_connections: usize,
    /// `sqlite` (the file at `path`) or `postgres` (the server at `url`).
    pub backend: StorageBackend,
    /// The PostgreSQL server, `postgres://user@host:port/db` (backend `postgres`).
    pub url: Option<String>,
    /// A file whose first line is the URL: keeps a password out of this file.
    pub url_file: Option<PathBuf>,
    /// Most connections to PostgreSQL for queries (the writer has its own).
    pub pool_size: usize,
    /// TLS to PostgreSQL: `disable`, `prefer` or `require`.
    pub tls: TlsMode,
    /// PEM certificates the PostgreSQL server's certificate is checked
    /// against (default: the public web roots).
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            path: PathBuf::from("var/secflow.db"),
            queue_capacity: 4096,
            batch_size: 2048,
            cache_mib: 8,
            read_connections: 4,
            backend: StorageBackend::Sqlite,
            url: None,
            url_file: None,
            pool_size: 8,
            tls: TlsMode::Prefer,
            tls_ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub socket: PathBuf,
    /// Peers allowed besides root.
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    pub max_connections: usize,
    pub max_request_bytes: usize,
    /// Requests of one connection being answered at once; the daemon stops
    /// reading that connection until one of them is answered.
    pub max_pending_requests: usize,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            socket: PathBuf::from("/run/secflow/secflowd.sock"),
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            max_connections: 256,
            max_request_bytes: 1 << 20,
            max_pending_requests: 64,
        }
    }
}

/// `[trust]`: which manifest signatures this host accepts (docs/signing.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Reject every manifest without a valid ed25519 signature. Default false
    /// (the embedded demo); the production config turns it on.
    pub require_signatures: bool,
    /// Paths of ed25519 public key files (PEM SubjectPublicKeyInfo); a
    /// signature by any of them is accepted. Several at once allow rotation.
    pub trusted_keys: Vec<PathBuf>,
    /// Keys whose signatures are refused even when they are trusted: key ids
    /// (`ed25519:` and 32 hex digits, as `secflow keygen` prints) or public
    /// key files. Default empty.
    pub revoked_keys: Vec<RevokedKey>,
}

/// An entry of `trust.revoked_keys`: a key id, or the path of a public key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RevokedKey {
    Id(crate::KeyId),
    File(PathBuf),
}

impl TryFrom<String> for RevokedKey {
    type Error = String;

    fn try_from(text: String) -> Result<RevokedKey, String> {
        if text.starts_with(crate::KEY_ID_PREFIX) {
            return crate::KeyId::parse(&text)
                .map(RevokedKey::Id)
                .ok_or_else(|| {
                    format!("trust.revoked_keys entry {text:?} is not a key id (\"ed25519:\" and 32 lowercase hex digits)")
                });
        }
        if text.is_empty() {
            return Err("trust.revoked_keys has an empty entry".into());
        }
        Ok(RevokedKey::File(PathBuf::from(text)))
    }
}

impl From<RevokedKey> for String {
    fn from(key: RevokedKey) -> String {
        match key {
            RevokedKey::Id(id) => id.as_str().to_string(),
            RevokedKey::File(path) => path.display().to_string(),
        }
    }
}

/// `[sandbox]`: how runs are confined on this host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Parent of the per-run private work dirs (each removed after its run).
    pub work_root: PathBuf,
    /// First uid (and gid) of the range runs are given one of each; no account
    /// may use the range (`secflow doctor` checks).
    pub uid_min: u32,
    /// How many uids the range holds: the most runs at once.
    pub uid_count: u32,
    /// Size of each run's private `/tmp` (a tmpfs), MiB.
    pub tmp_size_mb: u64,
    /// Size of each run's work dir, MiB. With a mount namespace the work dir
    /// is a tmpfs of its own in the run's namespace (memory, bounded by
    /// this), which vanishes with the run; without one it is a directory
    /// under `work_root`, bounded per file by `max_output_mb`.
    pub work_size_mb: u64,
    /// Parent of the persistent per-plugin state dirs (`sandbox.state` in a
    /// manifest): `<state_root>/<plugin name>`, kept across runs.
    pub state_root: PathBuf,
    /// Isolation layers that may be left out when this host cannot provide
    /// them. Empty (the default) means fail closed: a run whose plan needs a
    /// layer the host lacks is rejected, naming the layer.
    pub allow_degraded: Vec<crate::Layer>,
    /// Whether a `network: "targets"` run that was refused a connection
    /// revokes its plugin (like a seccomp violation). Off by default: a
    /// scanner that follows a redirect off its target is not hostile.
    pub revoke_on_refused_egress: bool,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            work_root: PathBuf::from("var/runs"),
            uid_min: 2_000_000_000,
            uid_count: 1024,
            tmp_size_mb: 64,
            work_size_mb: 256,
            state_root: PathBuf::from("var/state"),
            allow_degraded: Vec::new(),
            revoke_on_refused_egress: false,
        }
    }
}

/// `[runs]`: how many runs the daemon executes at once, and how many wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunsConfig {
    /// Runs executing at the same time; further runs wait in a queue.
    pub max_concurrent: usize,
    /// Runs waiting for a slot; a run started beyond this is refused.
    pub max_queued: usize,
}

impl Default for RunsConfig {
    fn default() -> RunsConfig {
        RunsConfig {
            max_concurrent: 8,
            max_queued: 1024,
        }
    }
}

/// Per-run resource limits, in the units of the manifest's `sandbox` block.
///
/// As `[limits.ceiling]`, a key left out keeps its built-in ceiling
/// ([`RunLimits::CEILING`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunLimits {
    pub memory_mb: u64,
    pub cpu_seconds: u64,
    pub timeout_seconds: u64,
    pub max_processes: u64,
    pub max_open_files: u64,
    pub max_output_mb: u64,
}

/// A manifest's optional limits, partially filled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedLimits {
    pub memory_mb: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub timeout_seconds: Option<u64>,
    pub max_processes: Option<u64>,
    pub max_open_files: Option<u64>,
    pub max_output_mb: Option<u64>,
}

/// A manifest limit that asked for more than the ceiling and got the ceiling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CappedLimit {
    pub field: &'static str,
    pub requested: u64,
    pub ceiling: u64,
}

impl std::fmt::Display for CappedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sandbox.{} = {} capped at the configured ceiling {}",
            self.field, self.requested, self.ceiling
        )
    }
}

impl Default for RunLimits {
    fn default() -> RunLimits {
        RunLimits::CEILING
    }
}

impl RunLimits {
    /// The built-in ceilings: what no manifest may exceed unless the config
    /// raises them.
    pub const CEILING: RunLimits = RunLimits {
        memory_mb: 4096,
        cpu_seconds: 3600,
        timeout_seconds: 7200,
        max_processes: 512,
        max_open_files: 4096,
        max_output_mb: 1024,
    };

    /// The effective limits of a manifest: its own values where it gives them,
    /// else the defaults, each capped at the ceiling. A manifest may only lower
    /// what this host grants; the capped fields are returned so they can be logged.
    pub fn resolve(
        requested: &RequestedLimits,
        defaults: &RunLimits,
        ceiling: &RunLimits,
    ) -> (RunLimits, Vec<CappedLimit>) {
        let mut capped = Vec::new();
        let mut pick = |field: &'static str, req: Option<u64>, def: u64, max: u64| match req {
            Some(v) if v > max => {
                capped.push(CappedLimit {
                    field,
                    requested: v,
                    ceiling: max,
                });
                max
            }
            Some(v) => v,
            None => def.min(max),
        };
        let limits = RunLimits {
            memory_mb: pick(
                "memory_mb",
                requested.memory_mb,
                defaults.memory_mb,
                ceiling.memory_mb,
            ),
            cpu_seconds: pick(
                "cpu_seconds",
                requested.cpu_seconds,
                defaults.cpu_seconds,
                ceiling.cpu_seconds,
            ),
            timeout_seconds: pick(
                "timeout_seconds",
                requested.timeout_seconds,
                defaults.timeout_seconds,
                ceiling.timeout_seconds,
            ),
            max_processes: pick(
                "max_processes",
                requested.max_processes,
                defaults.max_processes,
                ceiling.max_processes,
            ),
            max_open_files: pick(
                "max_open_files",
                requested.max_open_files,
                defaults.max_open_files,
                ceiling.max_open_files,
            ),
            max_output_mb: pick(
                "max_output_mb",
                requested.max_output_mb,
                defaults.max_output_mb,
                ceiling.max_output_mb,
            ),
        };
        (limits, capped)
    }
}

/// `[limits]`: defaults for manifests that say nothing (the top-level keys), the
/// ceilings no manifest may exceed (`[limits.ceiling]`), and the protocol bounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub memory_mb: u64,
    pub cpu_seconds: u64,
    pub timeout_seconds: u64,
    pub max_processes: u64,
    pub max_open_files: u64,
    pub max_output_mb: u64,
    pub ceiling: RunLimits,
    /// Longest protocol line a plugin may send; a longer one is fatal.
    pub max_message_bytes: u64,
    /// Most findings one run may send.
    pub max_findings: u64,
    /// How much of a plugin's stderr is kept (its tail).
    pub stderr_tail_bytes: usize,
    /// Time between `cancel` and the kill.
    pub cancel_grace_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            memory_mb: 256,
            cpu_seconds: 60,
            timeout_seconds: 120,
            max_processes: 32,
            max_open_files: 256,
            max_output_mb: 64,
            ceiling: RunLimits::CEILING,
            max_message_bytes: 8 << 20,
            max_findings: 1_000_000,
            stderr_tail_bytes: 64 << 10,
            cancel_grace_ms: 2000,
        }
    }
}

impl LimitsConfig {
    pub fn defaults(&self) -> RunLimits {
        RunLimits {
            memory_mb: self.memory_mb,
            cpu_seconds: self.cpu_seconds,
            timeout_seconds: self.timeout_seconds,
            max_processes: self.max_processes,
            max_open_files: self.max_open_files,
            max_output_mb: self.max_output_mb,
        }
    }
}

impl Config {
    /// Loads and validates a config file; relative paths become relative to it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        config.resolve_paths(&base);
        config.source = Some(path.to_path_buf());
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Built-in defaults with relative paths resolved against `base`.
    pub fn defaults_in(base: &Path) -> Config {
        let mut config = Config::default();
        config.resolve_paths(base);
        config
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.plugins.manifest_dirs.iter_mut().for_each(join);
        join(&mut self.storage.path);
        self.storage.resolve_fleet_paths(base);
        join(&mut self.api.socket);
        join(&mut self.sandbox.work_root);
        join(&mut self.sandbox.state_root);
        self.trust.trusted_keys.iter_mut().for_each(join);
        join(&mut self.vulndb.data_dir);
        join(&mut self.web.token_file);
        self.install.resolve_paths(base);
        if let Some(path) = &mut self.vulndb.api_key_file {
            join(path);
        }
        for key in &mut self.trust.revoked_keys {
            if let RevokedKey::File(path) = key {
                join(path);
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        let d = l.defaults();
        for (name, value, ceiling) in [
            ("memory_mb", d.memory_mb, l.ceiling.memory_mb),
            ("cpu_seconds", d.cpu_seconds, l.ceiling.cpu_seconds),
            (
                "timeout_seconds",
                d.timeout_seconds,
                l.ceiling.timeout_seconds,
            ),
            ("max_processes", d.max_processes, l.ceiling.max_processes),
            ("max_open_files", d.max_open_files, l.ceiling.max_open_files),
            ("max_output_mb", d.max_output_mb, l.ceiling.max_output_mb),
        ] {
            if value == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
            if value > ceiling {
                return Err(format!(
                    "limits.{name} = {value} is above limits.ceiling.{name} = {ceiling}"
                ));
            }
        }
        if l.max_message_bytes < 1024 {
            return Err("limits.max_message_bytes must be at least 1024".into());
        }
        if self.sandbox.tmp_size_mb == 0 || self.sandbox.work_size_mb == 0 {
            return Err("sandbox.tmp_size_mb and sandbox.work_size_mb must be at least 1".into());
        }
        if self.storage.queue_capacity == 0 || self.storage.batch_size == 0 {
            return Err("storage.queue_capacity and storage.batch_size must be at least 1".into());
        }
        if !(1..=MAX_CACHE_MIB).contains(&self.storage.cache_mib) {
            return Err(format!(
                "storage.cache_mib must be between 1 and {MAX_CACHE_MIB} (MiB), not {}",
                self.storage.cache_mib
            ));
        }
        if !(1..=MAX_READ_CONNECTIONS).contains(&self.storage.read_connections) {
            return Err(format!(
                "storage.read_connections must be between 1 and {MAX_READ_CONNECTIONS}, not {}",
                self.storage.read_connections
            ));
        }
        self.storage.validate_fleet()?;
        self.host.validate()?;
        if self.runs.max_concurrent == 0 {
            return Err("runs.max_concurrent must be at least 1".into());
        }
        if self.runs.max_concurrent as u64 > u64::from(self.sandbox.uid_count) {
            return Err(format!(
                "runs.max_concurrent = {} is above sandbox.uid_count = {}: every concurrent run needs its own uid",
                self.runs.max_concurrent, self.sandbox.uid_count
            ));
        }
        if self.api.max_connections == 0 || self.api.max_pending_requests == 0 {
            return Err(
                "api.max_connections and api.max_pending_requests must be at least 1".into(),
            );
        }
        if self.api.max_request_bytes < 1024 {
            return Err("api.max_request_bytes must be at least 1024".into());
        }
        if self.sandbox.uid_min == 0 || self.sandbox.uid_count == 0 {
            return Err("sandbox.uid_min and sandbox.uid_count must be at least 1".into());
        }
        if u64::from(self.sandbox.uid_min) + u64::from(self.sandbox.uid_count) > u64::from(u32::MAX)
        {
            return Err("sandbox.uid_min + sandbox.uid_count passes the largest uid".into());
        }
        if let Some(problem) = self.web.problem() {
            return Err(problem);
        }
        if self.plugins.manifest_dirs.is_empty() {
            return Err("plugins.manifest_dirs must name at least one directory".into());
        }
        if let Some(problem) = self
            .install
            .problem(&self.repositories, &self.plugins.manifest_dirs)
        {
            return Err(problem);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/secflow/secflow.toml"))
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let c =
            parse("[storage]\npath = \"var/x.db\"\n[plugins]\nmanifest_dirs = [\"m\", \"/abs\"]\n")
                .unwrap();
        assert_eq!(c.storage.path, Path::new("/etc/secflow/var/x.db"));
        assert_eq!(
            c.plugins.manifest_dirs,
            vec![PathBuf::from("/etc/secflow/m"), PathBuf::from("/abs")]
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        let err = parse("[storage]\npaht = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("paht"), "{err}");
        assert!(err.contains("/etc/secflow/secflow.toml"), "{err}");
    }

    #[test]
    fn revoked_keys_take_key_ids_and_key_files_relative_to_the_config() {
        let id = format!("ed25519:{}", "0a".repeat(16));
        let c = parse(&format!(
            "[trust]\ntrusted_keys = [\"keys/a.pub\"]\nrevoked_keys = [\"{id}\", \"keys/old.pub\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.trust.trusted_keys,
            vec![PathBuf::from("/etc/secflow/keys/a.pub")]
        );
        assert_eq!(
            c.trust.revoked_keys,
            vec![
                RevokedKey::Id(crate::KeyId::parse(&id).unwrap()),
                RevokedKey::File(PathBuf::from("/etc/secflow/keys/old.pub")),
            ]
        );
        let err = parse("[trust]\nrevoked_keys = [\"ed25519:XYZ\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a key id"), "{err}");
        assert!(Config::default().trust.revoked_keys.is_empty());
    }

    #[test]
    fn a_default_above_its_ceiling_is_refused() {
        let err = parse("[limits]\nmemory_mb = 9000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.memory_mb"), "{err}");
    }

    #[test]
    fn the_writer_cache_is_bounded_and_a_bad_size_names_the_key() {
        assert_eq!(Config::default().storage.cache_mib, 8);
        assert_eq!(
            parse("[storage]\ncache_mib = 256\n")
                .unwrap()
                .storage
                .cache_mib,
            256
        );
        for bad in [0, u64::from(MAX_CACHE_MIB) + 1] {
            assert_storage_key_refused("cache_mib", bad);
        }
    }

    /// `[storage] key = bad` is refused, naming the key and the value.
    fn assert_storage_key_refused(key: &str, bad: u64) {
        let err = parse(&format!("[storage]\n{key} = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("storage.{key}")), "{err}");
        assert!(err.contains(&bad.to_string()), "{err}");
    }

    #[test]
    fn read_connections_are_bounded_and_a_bad_count_names_the_key() {
        assert_eq!(Config::default().storage.read_connections, 4);
        for bad in [0, MAX_READ_CONNECTIONS as u64 + 1] {
            assert_storage_key_refused("read_connections", bad);
        }
    }

    #[test]
    fn manifest_limits_default_and_are_capped_at_the_ceiling() {
        let l = LimitsConfig::default();
        let (got, capped) = RunLimits::resolve(
            &RequestedLimits {
                memory_mb: Some(64),
                max_processes: Some(100_000),
                ..Default::default()
            },
            &l.defaults(),
            &l.ceiling,
        );
        assert_eq!(got.memory_mb, 64, "a manifest may lower a limit");
        assert_eq!(
            got.cpu_seconds, l.cpu_seconds,
            "an unset limit takes the default"
        );
        assert_eq!(
            got.max_processes, l.ceiling.max_processes,
            "a raise stops at the ceiling"
        );
        assert_eq!(capped.len(), 1);
        assert_eq!(capped[0].field, "max_processes");
    }

    #[test]
    fn a_postgres_store_needs_one_url_and_a_bad_one_names_the_key() {
        let config = parse(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://secflow:pw@db.example:5432/secflow\"\npool_size = 16\ntls = \"require\"\n",
        )
        .unwrap();
        assert_eq!(config.storage.backend, StorageBackend::Postgres);
        assert_eq!(
            (config.storage.pool_size, config.storage.tls),
            (16, TlsMode::Require)
        );
        assert_eq!(
            config.storage.postgres_url().unwrap(),
            "postgres://secflow:pw@db.example:5432/secflow"
        );
        for (text, key) in [
            ("backend = \"postgres\"\n", "storage.url"),
            (
                "backend = \"postgres\"\nurl = \"mysql://x\"\n",
                "storage.url",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://h/d\"\nurl_file = \"u\"\n",
                "storage.url_file",
            ),
            ("url = \"postgres://h/d\"\n", "storage.backend"),
            ("pool_size = 0\n", "storage.pool_size"),
            ("backend = \"oracle\"\n", "backend"),
            ("tls = \"sometimes\"\n", "tls"),
        ] {
            let err = parse(&format!("[storage]\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn a_url_file_is_relative_to_the_config_and_its_first_line_is_the_url() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg.url"), "postgres://u:secret@h:5432/d\n").unwrap();
        let config = Config::parse(
            "[storage]\nbackend = \"postgres\"\nurl_file = \"pg.url\"\n",
            &dir.path().join("secflow.toml"),
        )
        .unwrap();
        assert_eq!(
            config.storage.postgres_url().unwrap(),
            "postgres://u:secret@h:5432/d"
        );
        assert_eq!(
            StorageConfig::postgres_location("postgres://u:secret@h:5432/d?sslmode=x"),
            "postgres://h:5432/d",
            "no password in what is shown"
        );
        std::fs::write(dir.path().join("pg.url"), "not a url\n").unwrap();
        let err = config.storage.postgres_url().unwrap_err().to_string();
        assert!(
            err.contains("storage.url_file") && err.contains("pg.url"),
            "{err}"
        );
    }

    #[test]
    fn the_host_name_defaults_to_the_hostname_and_a_bad_one_is_refused() {
        assert_eq!(Config::default().host.name, machine_hostname());
        assert_eq!(
            parse("[host]\nname = \"scan-01\"\n").unwrap().host.name,
            "scan-01"
        );
        for bad in ["", "two words"] {
            let err = parse(&format!("[host]\nname = {bad:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("host.name"), "{err}");
        }
    }
}
