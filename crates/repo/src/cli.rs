//! The `secflow plugin …` and `secflow repo build` subcommands: their
//! arguments and what they print, so that the `secflow` binary only has to
//! mount them and hand over the settings and the trust store.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use secflow_trust::keys;
use time::OffsetDateTime;

use crate::client::{parse_spec, Changes, Client, ClientError, Listing};

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

/// Runs a `secflow plugin` action, printing to `out`.
pub fn run_plugin(
    action: &PluginAction,
    client: &Client<'_>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match action {
        PluginAction::Search { term } => {
            let hits = client.search(term)?;
            if hits.is_empty() {
                writeln!(out, "no plugin matches {term:?}")?;
            }
            for hit in hits {
                listing(out, &hit)?;
            }
        }
        PluginAction::Info { name } => {
            let (repository, releases) = client.info(name)?;
            let installed = client.installed()?.into_iter().find(|r| &r.name == name);
            writeln!(out, "{name} (repository {repository})")?;
            if let Some(r) = &installed {
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
        PluginAction::Install { specs } => {
            let requests = specs
                .iter()
                .map(|s| parse_spec(s))
                .collect::<Result<Vec<_>, _>>()?;
            changes(out, &client.install(&requests)?)?;
        }
        PluginAction::Upgrade { names } => changes(out, &client.upgrade(names)?)?,
        PluginAction::Remove { name } => {
            let record = client.remove(name)?;
            writeln!(out, "removed {} {}", record.name, record.version)?;
        }
        PluginAction::List { outdated: true } => {
            let outdated = client.outdated()?;
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
        PluginAction::List { outdated: false } => {
            for r in client.installed()? {
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

/// Runs a `secflow repo` action, printing to `out`.
pub fn run_repo(action: &RepoAction, out: &mut dyn Write) -> Result<(), CliError> {
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
            writeln!(
                out,
                "wrote {}: version {}, {} releases, signed by {}, expires {}",
                built.path.display(),
                built.version,
                built.releases,
                keys::KeyId::of(&key.verifying_key()),
                built.expires_at
            )?;
        }
    }
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
    if !changes.installed.is_empty() {
        writeln!(
            out,
            "run `secflow plugins reload` (or send SIGHUP to secflowd) for a running daemon to pick the change up"
        )?;
    }
    Ok(())
}
