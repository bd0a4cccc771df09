//! `secflow plugin search|info|install|upgrade|remove|list` and `secflow repo
//! build`: the repository client (`secflow_repo`) over this host's config and
//! trust store. After a change on disk a running daemon is asked to rediscover
//! its plugins, so an install needs no restart.

use std::process::ExitCode;

use secflow_core::config::Config;
use secflow_repo::cli::{PluginAction as RepoPluginAction, RepoAction};
use secflow_repo::client::{Client, ClientError, RepositoryConfig, Settings};
use secflow_trust::TrustStore;
use serde_json::{json, Value};

use super::client::DaemonClient;
use super::{error_chain, load_config, print_output, runtime, Cli, Failure};

/// What the repository operations need, from the config.
pub fn settings(config: &Config) -> Result<Settings, Failure> {
    let plugin_dir = config
        .install
        .plugin_dir_in(&config.plugins.manifest_dirs)
        .ok_or_else(|| Failure::usage("plugins.manifest_dirs is empty: nowhere to install"))?;
    Ok(Settings {
        repositories: config
            .repositories
            .iter()
            .map(|r| RepositoryConfig {
                name: r.name.clone(),
                url: r.url.clone(),
                trusted_keys: r.trusted_keys.clone(),
            })
            .collect(),
        plugin_dir,
        state_dir: config.install.state_dir.clone(),
        timeout: config.install.timeout(),
    })
}

fn failure(e: &secflow_repo::cli::CliError) -> Failure {
    use secflow_repo::cli::CliError;
    let status = match e {
        CliError::Client(
            ClientError::NoRepositories
            | ClientError::TooManyRepositories { .. }
            | ClientError::Config { .. }
            | ClientError::Spec { .. }
            | ClientError::NotInstalled { .. }
            | ClientError::Unknown { .. },
        ) => 2,
        _ => 1,
    };
    Failure {
        status,
        message: error_chain(e),
    }
}

pub fn plugin_command(cli: &Cli, action: &RepoPluginAction) -> Result<ExitCode, Failure> {
    let config = load_config(cli)?;
    let settings = settings(&config)?;
    let trust = TrustStore::load(&config.trust);
    let client = Client::new(&settings, &trust)
        .map_err(|e| failure(&secflow_repo::cli::CliError::Client(e)))?;
    let outcome = secflow_repo::cli::perform(action, &client).map_err(|e| failure(&e))?;
    let reload = if outcome.changed_plugins() {
        Some(reload_daemon(cli))
    } else {
        None
    };
    let mut document = outcome.to_json();
    if let (Some(reload), Value::Object(map)) = (&reload, &mut document) {
        map.insert("daemon".into(), reload.to_json());
    }
    print_output(cli, &document, |out| {
        outcome.write_text(out)?;
        if let Some(reload) = &reload {
            writeln!(out, "{}", reload.sentence())?;
        }
        Ok(())
    })
}

pub fn repo_command(cli: &Cli, action: &RepoAction) -> Result<ExitCode, Failure> {
    let outcome = secflow_repo::cli::perform_repo(action).map_err(|e| Failure {
        status: 1,
        message: error_chain(&e),
    })?;
    print_output(cli, &outcome.to_json(), |out| outcome.write_text(out))
}

/// Whether a running daemon picked up a change of installed plugins.
#[derive(Debug)]
pub enum Reload {
    /// It rediscovered its plugins: this many are listed now.
    Reloaded { socket: String, plugins: usize },
    /// No daemon answers at the socket: the next start discovers the change.
    NoDaemon { socket: String },
    /// A daemon answered but refused or failed the reload.
    Failed { socket: String, reason: String },
}

impl Reload {
    fn to_json(&self) -> Value {
        match self {
            Reload::Reloaded { socket, plugins } => {
                json!({"reloaded": true, "socket": socket, "plugins": plugins})
            }
            Reload::NoDaemon { socket } => json!({"reloaded": false, "socket": socket}),
            Reload::Failed { socket, reason } => {
                json!({"reloaded": false, "socket": socket, "error": reason})
            }
        }
    }

    fn sentence(&self) -> String {
        match self {
            Reload::Reloaded { socket, plugins } => {
                format!("the daemon at {socket} rediscovered its plugins ({plugins} listed)")
            }
            Reload::NoDaemon { socket } => {
                format!("no daemon answers at {socket}: it will find the change when it starts")
            }
            Reload::Failed { socket, reason } => format!(
                "the daemon at {socket} did not reload ({reason}): run `secflow plugins reload`"
            ),
        }
    }
}

/// Asks the daemon at the configured socket to rediscover its plugins.
fn reload_daemon(cli: &Cli) -> Reload {
    let socket = match super::socket_path(cli) {
        Ok(path) => path,
        Err(e) => {
            return Reload::Failed {
                socket: "?".into(),
                reason: e.message,
            }
        }
    };
    let shown = socket.display().to_string();
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            return Reload::Failed {
                socket: shown,
                reason: e.message,
            }
        }
    };
    runtime.block_on(async {
        let Ok(mut client) = DaemonClient::connect(&socket).await else {
            return Reload::NoDaemon {
                socket: shown.clone(),
            };
        };
        let reloaded = async {
            client.call("plugins.reload", Value::Null).await?;
            client.call("plugins.list", Value::Null).await
        }
        .await;
        match reloaded {
            Ok(listed) => Reload::Reloaded {
                socket: shown.clone(),
                plugins: listed.as_array().map_or(0, Vec::len),
            },
            Err(e) => Reload::Failed {
                socket: shown.clone(),
                reason: error_chain(&e),
            },
        }
    })
}
