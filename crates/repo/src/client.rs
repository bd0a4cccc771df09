//! The operator's side of repositories: `search`, `info`, `install`,
//! `upgrade`, `remove` and `list --outdated`, over the configured
//! `[[repositories]]`, the trust store and one plugin directory.
//!
//! Every operation that reads a repository first fetches and verifies its
//! index (signature by one of the repository's trusted keys, expiry, version
//! against what this host saw last) and records it as seen; an index that
//! fails is an error naming the repository, never a silently skipped one.
//! When two repositories list the same plugin name, the first configured one
//! supplies it, so a later repository cannot shadow a plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use secflow_trust::{KeyId, TrustStore};
use semver::Version;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fetch::{FetchError, Fetcher, Source};
use crate::index::{
    check_plugin_name, parse_requirement, verify_index, IndexError, IndexTrust, Release,
    VerifiedIndex, INDEX_FILE, MAX_INDEX_BYTES,
};
use crate::install::{InstallError, InstallRecord, Planned, PluginDir};
use crate::resolve::{self, Catalog, ReleaseDependencies, Requirement, ResolveError};
use crate::state::{RepositoryState, StateError};

/// Most repositories configured.
pub const MAX_REPOSITORIES: usize = 32;

/// One `[[repositories]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// A short name (as a plugin name is spelt): errors, state and install
    /// records use it.
    pub name: String,
    /// `http://host:port/path`, `file:///path` or an absolute path.
    pub url: String,
    /// Key ids (`ed25519:…`) allowed to sign this repository's index; each
    /// key must also be in `trust.trusted_keys`.
    pub trusted_keys: Vec<String>,
}

/// Everything the operations need from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub repositories: Vec<RepositoryConfig>,
    /// Where plugins are installed (one of `plugins.manifest_dirs`).
    pub plugin_dir: PathBuf,
    /// Where what was seen of each repository is kept.
    pub state_dir: PathBuf,
    /// Deadline of one request.
    pub timeout: Duration,
}

/// Why an operation did not complete. Nothing installed changed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no [[repositories]] are configured")]
    NoRepositories,
    #[error("{count} repositories are configured; at most {MAX_REPOSITORIES} are allowed")]
    TooManyRepositories { count: usize },
    #[error("repository {name:?}: {reason}")]
    Config { name: String, reason: String },
    #[error("cannot read repository {repository}")]
    Fetch {
        repository: String,
        #[source]
        source: FetchError,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}{1}")]
    Resolve(ResolveError, String),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("{spec:?} is not NAME or NAME@REQUIREMENT: {reason}")]
    Spec { spec: String, reason: String },
    #[error("plugin {name} is not installed from a repository")]
    NotInstalled { name: String },
    #[error("plugin {name} is not listed by any configured repository")]
    Unknown { name: String },
    #[error("cannot start the http client")]
    Runtime(#[source] std::io::Error),
}

/// A repository whose index verified.
#[derive(Debug)]
pub struct Fetched {
    pub name: String,
    pub source: Source,
    pub index: VerifiedIndex,
}

/// A plugin as `search` and `list --outdated` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub name: String,
    pub repository: String,
    pub newest: Version,
    pub category: String,
    pub description: String,
    /// The installed version, if any.
    pub installed: Option<String>,
}

/// What `install`, `upgrade` and `remove` changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Newly installed or replaced, in install order.
    pub installed: Vec<InstallRecord>,
    /// Already at the chosen version.
    pub unchanged: Vec<String>,
}

/// The operations, for one configuration and trust store.
#[derive(Debug)]
pub struct Client<'a> {
    settings: &'a Settings,
    trust: &'a TrustStore,
    fetcher: Fetcher,
    state: RepositoryState,
    plugins: PluginDir,
    now: fn() -> OffsetDateTime,
}

/// A parsed `NAME[@REQ]`.
pub fn parse_spec(spec: &str) -> Result<Requirement, ClientError> {
    let bad = |reason: String| ClientError::Spec {
        spec: spec.to_string(),
        reason,
    };
    let (name, text) = spec.split_once('@').unwrap_or((spec, "*"));
    check_plugin_name(name).map_err(bad)?;
    let requirement = parse_requirement(text).map_err(bad)?;
    Ok(Requirement {
        name: name.to_string(),
        text: text.to_string(),
        requirement,
    })
}

impl<'a> Client<'a> {
    pub fn new(settings: &'a Settings, trust: &'a TrustStore) -> Result<Client<'a>, ClientError> {
        if settings.repositories.len() > MAX_REPOSITORIES {
            return Err(ClientError::TooManyRepositories {
                count: settings.repositories.len(),
            });
        }
        for r in &settings.repositories {
            let config = |reason: String| ClientError::Config {
                name: r.name.clone(),
                reason,
            };
            check_plugin_name(&r.name)
                .map_err(|e| config(e.replace("a plugin name", "a repository name")))?;
            Source::parse(&r.url).map_err(|e| config(e.to_string()))?;
            if r.trusted_keys.is_empty() {
                return Err(config(
                    "trusted_keys is empty: name the key ids allowed to sign its index".into(),
                ));
            }
            for key in &r.trusted_keys {
                KeyId::parse(key).ok_or_else(|| {
                    config(format!(
                        "trusted_keys entry {key:?} is not a key id (ed25519:<hex>)"
                    ))
                })?;
            }
        }
        Ok(Client {
            settings,
            trust,
            fetcher: Fetcher::new(settings.timeout).map_err(ClientError::Runtime)?,
            state: RepositoryState::new(&settings.state_dir),
            plugins: PluginDir::new(&settings.plugin_dir),
            now: OffsetDateTime::now_utc,
        })
    }

    /// For tests: the clock the index's dates are checked against.
    pub fn with_clock(mut self, now: fn() -> OffsetDateTime) -> Client<'a> {
        self.now = now;
        self
    }

    /// Fetches and verifies every repository's index, remembering each as
    /// seen. The first failure is the error.
    pub fn refresh(&self) -> Result<Vec<Fetched>, ClientError> {
        if self.settings.repositories.is_empty() {
            return Err(ClientError::NoRepositories);
        }
        let _lock = self.state.lock()?;
        let mut fetched = Vec::new();
        for r in &self.settings.repositories {
            let source = Source::parse(&r.url).map_err(|e| ClientError::Config {
                name: r.name.clone(),
                reason: e.to_string(),
            })?;
            let bytes = self
                .fetcher
                .fetch_bytes(&source, INDEX_FILE, MAX_INDEX_BYTES)
                .map_err(|source| ClientError::Fetch {
                    repository: r.name.clone(),
                    source,
                })?;
            let keys: Vec<KeyId> = r
                .trusted_keys
                .iter()
                .filter_map(|k| KeyId::parse(k))
                .collect();
            let seen = self.state.seen(&r.name)?;
            let index = verify_index(
                &r.name,
                &bytes,
                IndexTrust {
                    store: self.trust,
                    repository_keys: &keys,
                },
                (self.now)(),
                seen.as_ref(),
            )?;
            if seen.as_ref() != Some(&index.seen()) {
                self.state.remember(&r.name, &index.seen())?;
            }
            fetched.push(Fetched {
                name: r.name.clone(),
                source,
                index,
            });
        }
        Ok(fetched)
    }

    /// The installed plugins that came from repositories.
    pub fn installed(&self) -> Result<Vec<InstallRecord>, ClientError> {
        Ok(self.plugins.installed()?)
    }

    /// Plugins whose name or description contains `term` (case-insensitive).
    pub fn search(&self, term: &str) -> Result<Vec<Listing>, ClientError> {
        let fetched = self.refresh()?;
        let installed = self.installed_versions()?;
        let term = term.to_lowercase();
        Ok(listings(&fetched, &installed)
            .into_iter()
            .filter(|l| l.name.contains(&term) || l.description.to_lowercase().contains(&term))
            .collect())
    }

    /// Every release of `name`, oldest first, with its repository.
    pub fn info(&self, name: &str) -> Result<(String, Vec<(Version, Release)>), ClientError> {
        let fetched = self.refresh()?;
        let (repository, releases) =
            supplier(&fetched, name).ok_or_else(|| ClientError::Unknown {
                name: name.to_string(),
            })?;
        let mut versions: Vec<(Version, Release)> = releases
            .iter()
            .filter_map(|(v, r)| Version::from_str(v).ok().map(|v| (v, r.clone())))
            .collect();
        versions.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((repository.name.clone(), versions))
    }

    /// Installed plugins with a newer release than the installed one.
    pub fn outdated(&self) -> Result<Vec<Listing>, ClientError> {
        let fetched = self.refresh()?;
        let installed = self.installed_versions()?;
        Ok(listings(&fetched, &installed)
            .into_iter()
            .filter(|l| {
                l.installed
                    .as_deref()
                    .and_then(|v| Version::from_str(v).ok())
                    .is_some_and(|v| v < l.newest)
            })
            .collect())
    }

    /// Installs `requests` and whatever they depend on. Installed plugins not
    /// named are held at their version.
    pub fn install(&self, requests: &[Requirement]) -> Result<Changes, ClientError> {
        let named: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
        self.apply(requests, |name| !named.contains(&name), true)
    }

    /// Upgrades `names` (every installed plugin when empty) to the newest
    /// releases their recorded requirements and dependents allow.
    pub fn upgrade(&self, names: &[String]) -> Result<Changes, ClientError> {
        let installed = self.installed()?;
        for name in names {
            if !installed.iter().any(|r| &r.name == name) {
                return Err(ClientError::NotInstalled { name: name.clone() });
            }
        }
        self.apply(
            &[],
            |name| !names.is_empty() && !names.iter().any(|n| n == name),
            false,
        )
    }

    /// Removes `name`; refused while another installed plugin depends on it.
    pub fn remove(&self, name: &str) -> Result<InstallRecord, ClientError> {
        let locked = self.plugins.lock()?;
        Ok(locked.remove(name)?)
    }

    /// Resolves the installed plugins plus `requests`, then stages every
    /// release that changes and, only if all verified, puts them in place.
    fn apply(
        &self,
        requests: &[Requirement],
        pinned: impl Fn(&str) -> bool,
        new_requests_recorded: bool,
    ) -> Result<Changes, ClientError> {
        let fetched = self.refresh()?;
        let locked = self.plugins.lock()?;
        let installed = self.installed()?;
        let mut catalog = Catalog::default();
        for f in &fetched {
            for (name, releases) in &f.index.index.plugins {
                if supplier(&fetched, name).is_some_and(|(s, _)| s.name == f.name) {
                    for (version, release) in &releases.versions {
                        if let Ok(version) = Version::from_str(version) {
                            catalog.add(name, version, dependencies_of(&release.dependencies));
                        }
                    }
                }
            }
        }
        let mut roots: Vec<Requirement> = requests.to_vec();
        let mut held = BTreeMap::new();
        for record in &installed {
            if let Ok(version) = Version::from_str(&record.version) {
                catalog.add(
                    &record.name,
                    version.clone(),
                    dependencies_of(&record.dependencies),
                );
                if pinned(&record.name) {
                    held.insert(record.name.clone(), version);
                }
            }
            if !roots.iter().any(|r| r.name == record.name) {
                if let Some(text) = &record.requested {
                    if let Ok(r) = parse_spec(&format!("{}@{text}", record.name)) {
                        roots.push(r);
                    }
                }
            }
        }
        let resolution = resolve::resolve(&catalog, &roots, &held).map_err(|e| {
            let note = if held.is_empty() {
                String::new()
            } else {
                format!(
                    "\n(installed plugins held at their version: {}; `secflow plugin upgrade` lets them move)",
                    held.iter()
                        .map(|(n, v)| format!("{n} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            ClientError::Resolve(e, note)
        })?;

        let mut changes = Changes::default();
        let mut staged = Vec::new();
        for (name, version) in &resolution.order {
            let record = installed.iter().find(|r| &r.name == name);
            let requested = match requests.iter().find(|r| &r.name == name) {
                Some(r) if new_requests_recorded => Some(r.text.clone()),
                _ => record.and_then(|r| r.requested.clone()),
            };
            if record.is_some_and(|r| r.version == version.to_string() && r.requested == requested)
            {
                changes.unchanged.push(name.clone());
                continue;
            }
            let (repository, releases) = supplier(&fetched, name)
                .ok_or_else(|| ClientError::Unknown { name: name.clone() })?;
            let release = releases
                .get(&version.to_string())
                .ok_or_else(|| ClientError::Unknown { name: name.clone() })?;
            staged.push(locked.stage(
                &self.fetcher,
                self.trust,
                &Planned {
                    name,
                    version,
                    repository: &repository.name,
                    source: &repository.source,
                    release,
                    requested,
                },
            )?);
        }
        for s in staged {
            changes.installed.push(locked.commit(s)?);
        }
        Ok(changes)
    }

    fn installed_versions(&self) -> Result<BTreeMap<String, String>, ClientError> {
        Ok(self
            .installed()?
            .into_iter()
            .map(|r| (r.name, r.version))
            .collect())
    }
}

/// The first repository that lists `name`, and its releases of it.
fn supplier<'f>(
    fetched: &'f [Fetched],
    name: &str,
) -> Option<(&'f Fetched, &'f BTreeMap<String, Release>)> {
    fetched
        .iter()
        .find_map(|f| f.index.index.plugins.get(name).map(|p| (f, &p.versions)))
}

fn listings(fetched: &[Fetched], installed: &BTreeMap<String, String>) -> Vec<Listing> {
    let mut names: Vec<&String> = fetched
        .iter()
        .flat_map(|f| f.index.index.plugins.keys())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (repository, releases) = supplier(fetched, name)?;
            let (newest, release) = releases
                .iter()
                .filter_map(|(v, r)| Version::from_str(v).ok().map(|v| (v, r)))
                .filter(|(v, _)| v.pre.is_empty())
                .max_by(|a, b| a.0.cmp(&b.0))?;
            Some(Listing {
                name: name.clone(),
                repository: repository.name.clone(),
                newest,
                category: release.category.clone(),
                description: release.description.clone(),
                installed: installed.get(name).cloned(),
            })
        })
        .collect()
}

fn dependencies_of(dependencies: &BTreeMap<String, String>) -> ReleaseDependencies {
    ReleaseDependencies {
        requirements: dependencies
            .iter()
            .filter_map(|(n, text)| {
                parse_requirement(text)
                    .ok()
                    .map(|req| (n.clone(), (text.clone(), req)))
            })
            .collect(),
    }
}
