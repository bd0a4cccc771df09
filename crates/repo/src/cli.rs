//! The `secflow plugin …` and `secflow repo build` subcommands: their
//! arguments and what they print, so that the `secflow` binary only has to
//! mount them and hand over the settings and the trust store.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use secflow_trust::keys;
use time::OffsetDateTime;

use semver::Version;
use serde_json::{json, Value};

use crate::client::{parse_spec, Changes, Client, ClientError, Listing};
use crate::index::Release;
use crate::install::InstallRecord;

/// `secflow plugin …`: plugins from the configured `[[repositories]]`.
#[derive(Debug, Clone, Subcommand)]
pub enum PluginAction {
    /// Plugins whose name or description contains TERM.
    Search { term: String },
    /// Every release of a plugin, with its dependencies.
    Info { name: String },
    /// Install NAME[@REQUIREMENT] (e.g. `probe@^1.2`) and its dependencies.
    Install {
        #[arg(required = true)]
        specs: Vec<String>,
    },
    /// Upgrade NAME (every installed plugin without one) within its recorded requirement.
    Upgrade { names: Vec<String> },
    /// Remove an installed plugin.
    Remove { name: String },
    /// Plugins installed from repositories.
    List {
        /// Only those with a newer release.
        #[arg(long)]
        outdated: bool,
    },
}

/// `secflow repo …`: for a repository's maintainer.
#[derive(Debug, Clone, Subcommand)]
pub enum RepoAction {
    /// Write and sign DIR/index.json from DIR/plugins/<name>/<version>/.
    Build {
        dir: PathBuf,
        /// The ed25519 private key (PEM) that signs the index.
        #[arg(long)]
        key: PathBuf,
        /// Days the index stays valid (1 to 366).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..=366))]
        valid_days: u16,
    },
}

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Build(#[from] crate::build::BuildError),
    #[error("cannot read the signing key")]
    Key(#[from] keys::KeyError),
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
}

/// What a `secflow plugin` action found or changed, to print as text or JSON.
#[derive(Debug, Clone)]
pub enum Outcome {
    Search {
        term: String,
        hits: Vec<Listing>,
    },
    Info {
        name: String,
        repository: String,
        installed: Option<InstallRecord>,
        releases: Vec<(Version, Release)>,
    },
    Changed(Changes),
    Removed(InstallRecord),
    Installed(Vec<InstallRecord>),
    Outdated(Vec<Listing>),
}

impl Outcome {
    /// Whether plugins on disk changed (a daemon should rediscover them).
    pub fn changed_plugins(&self) -> bool {
        match self {
            Outcome::Changed(changes) => !changes.installed.is_empty(),
            Outcome::Removed(_) => true,
            _ => false,
        }
    }

    /// The outcome for `--json`.
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Search { hits, .. } => Value::Array(hits.iter().map(listing_json).collect()),
            Outcome::Info {
                name,
                repository,
                installed,
                releases,
            } => json!({
                "name": name,
                "repository": repository,
                "installed": installed,
                "releases": releases.iter().rev().map(|(version, release)| json!({
                    "version": version.to_string(),
                    "category": release.category,
                    "description": release.description,
                    "dependencies": release.dependencies,
                    "binary_digest": release.binary.digest,
                    "manifest_digest": release.manifest.digest,
                })).collect::<Vec<_>>(),
            }),
            Outcome::Changed(changes) => json!({
                "installed": changes.installed,
                "unchanged": changes.unchanged,
            }),
            Outcome::Removed(record) => json!({ "removed": record }),
            Outcome::Installed(records) => json!(records),
            Outcome::Outdated(listings) => {
                Value::Array(listings.iter().map(listing_json).collect())
            }
        }
    }

    /// The outcome as the terminal shows it.
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Outcome::Search { term, hits } => {
                if hits.is_empty() {
                    writeln!(out, "no plugin matches {term:?}")?;
                }
                for hit in hits {
                    listing(out, hit)?;
                }
            }
            Outcome::Info {
                name,
                repository,
                installed,
                releases,
            } => {
                writeln!(out, "{name} (repository {repository})")?;
                if let Some(r) = installed {
                    writeln!(out, "installed: {} from {}", r.version, r.repository)?;
                }
                for (version, release) in releases.iter().rev() {
                    let deps: Vec<String> = release
                        .dependencies
                        .iter()
                        .map(|(n, r)| format!("{n} {r}"))
                        .collect();
                    writeln!(
                        out,
                        "  {version}  {}  binary {}  manifest {}{}",
                        release.category,
                        release.binary.digest,
                        release.manifest.digest,
                        if deps.is_empty() {
                            String::new()
                        } else {
                            format!("  needs {}", deps.join(", "))
                        }
                    )?;
                }
                if let Some((_, newest)) = releases.last() {
                    if !newest.description.is_empty() {
                        writeln!(out, "{}", newest.description)?;
                    }
                }
            }
            Outcome::Changed(c) => changes(out, c)?,
            Outcome::Removed(record) => {
                writeln!(out, "removed {} {}", record.name, record.version)?;
            }
            Outcome::Outdated(outdated) => {
                if outdated.is_empty() {
                    writeln!(out, "every installed plugin is at its newest release")?;
                }
                for l in outdated {
                    writeln!(
                        out,
                        "{}  {} -> {}  ({})",
                        l.name,
                        l.installed.as_deref().unwrap_or("-"),
                        l.newest,
                        l.repository
                    )?;
                }
            }
            Outcome::Installed(records) => {
                if records.is_empty() {
                    writeln!(out, "no plugin is installed from a repository")?;
                }
                for r in records {
                    writeln!(
                        out,
                        "{}  {}  {}  binary {}{}",
                        r.name,
                        r.version,
                        r.repository,
                        r.binary_digest,
                        r.requested
                            .as_deref()
                            .map(|q| format!("  requested {q}"))
                            .unwrap_or_else(|| "  (dependency)".into())
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Carries out a `secflow plugin` action.
pub fn perform(action: &PluginAction, client: &Client<'_>) -> Result<Outcome, CliError> {
    Ok(match action {
        PluginAction::Search { term } => Outcome::Search {
            term: term.clone(),
            hits: client.search(term)?,
        },
        PluginAction::Info { name } => {
            let (repository, releases) = client.info(name)?;
            let installed = client.installed()?.into_iter().find(|r| &r.name == name);
            Outcome::Info {
                name: name.clone(),
                repository,
                installed,
                releases,
            }
        }
        PluginAction::Install { specs } => {
            let requests = specs
                .iter()
                .map(|s| parse_spec(s))
                .collect::<Result<Vec<_>, _>>()?;
            Outcome::Changed(client.install(&requests)?)
        }
        PluginAction::Upgrade { names } => Outcome::Changed(client.upgrade(names)?),
        PluginAction::Remove { name } => Outcome::Removed(client.remove(name)?),
        PluginAction::List { outdated: true } => Outcome::Outdated(client.outdated()?),
        PluginAction::List { outdated: false } => Outcome::Installed(client.installed()?),
    })
}

/// Runs a `secflow plugin` action, printing to `out`.
pub fn run_plugin(
    action: &PluginAction,
    client: &Client<'_>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    perform(action, client)?.write_text(out)?;
    Ok(())
}

fn listing_json(l: &Listing) -> Value {
    json!({
        "name": l.name,
        "newest": l.newest.to_string(),
        "category": l.category,
        "repository": l.repository,
        "description": l.description,
        "installed": l.installed,
    })
}

/// What `secflow repo build` wrote, and the key that signed it.
#[derive(Debug, Clone)]
pub struct RepoOutcome {
    pub built: crate::build::Built,
    pub key_id: keys::KeyId,
}

impl RepoOutcome {
    /// The outcome for `--json`.
    pub fn to_json(&self) -> Value {
        json!({
            "index": self.built.path,
            "version": self.built.version,
            "releases": self.built.releases,
            "expires_at": self.built.expires_at,
            "key_id": self.key_id.as_str(),
        })
    }

    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "wrote {}: version {}, {} releases, signed by {}, expires {}",
            self.built.path.display(),
            self.built.version,
            self.built.releases,
            self.key_id,
            self.built.expires_at
        )
    }
}

/// Carries out a `secflow repo` action.
pub fn perform_repo(action: &RepoAction) -> Result<RepoOutcome, CliError> {
    match action {
        RepoAction::Build {
            dir,
            key,
            valid_days,
        } => {
            let key = keys::read_private_key(key)?;
            let built = crate::build::build(
                dir,
                &key,
                OffsetDateTime::now_utc(),
                time::Duration::days(i64::from(*valid_days)),
            )?;
            Ok(RepoOutcome {
                built,
                key_id: keys::KeyId::of(&key.verifying_key()),
            })
        }
    }
}

/// Runs a `secflow repo` action, printing to `out`.
pub fn run_repo(action: &RepoAction, out: &mut dyn Write) -> Result<(), CliError> {
    perform_repo(action)?.write_text(out)?;
    Ok(())
}

fn listing(out: &mut dyn Write, l: &Listing) -> std::io::Result<()> {
    writeln!(
        out,
        "{}  {}  {}  ({}){}{}",
        l.name,
        l.newest,
        l.category,
        l.repository,
        l.installed
            .as_deref()
            .map(|v| format!("  installed {v}"))
            .unwrap_or_default(),
        if l.description.is_empty() {
            String::new()
        } else {
            format!("\n    {}", l.description)
        }
    )
}

fn changes(out: &mut dyn Write, changes: &Changes) -> std::io::Result<()> {
    for r in &changes.installed {
        writeln!(
            out,
            "installed {} {} from {}",
            r.name, r.version, r.repository
        )?;
    }
    for name in &changes.unchanged {
        writeln!(out, "{name} is already at the chosen release")?;
    }
    Ok(())
}
