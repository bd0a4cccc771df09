//! The `[web]` table: the read-only dashboard `secflowd` serves.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest a dashboard session lasts before the token is asked again.
pub const MAX_SESSION_HOURS: u64 = 24 * 30;

/// `[web]`: off unless `enabled`; on loopback unless `allow_remote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the dashboard (default false).
    pub enabled: bool,
    /// Address and port to listen on (plain HTTP: keep it on loopback, or put
    /// a TLS reverse proxy in front and set `allow_remote`).
    pub listen: SocketAddr,
    /// Listening on an address other than loopback must be asked for.
    pub allow_remote: bool,
    /// Who may log in: one `NAME SHA256-OF-TOKEN` line per user, written by
    /// `secflow web token` (tokens themselves are never stored).
    pub token_file: PathBuf,
    /// Hours a login lasts.
    pub session_hours: u64,
    /// Requests served at once; further connections wait.
    pub max_connections: usize,
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 7340)),
            allow_remote: false,
            token_file: PathBuf::from("web-tokens"),
            session_hours: 12,
            max_connections: 64,
        }
    }
}

impl WebConfig {
    /// Why this table cannot be used, naming the key.
    pub fn problem(&self) -> Option<String> {
        if !self.listen.ip().is_loopback() && !self.allow_remote {
            return Some(format!(
                "web.listen {} is not a loopback address: the dashboard speaks plain HTTP, so set web.allow_remote = true only behind a TLS proxy",
                self.listen
            ));
        }
        if !(1..=MAX_SESSION_HOURS).contains(&self.session_hours) {
            return Some(format!(
                "web.session_hours must be between 1 and {MAX_SESSION_HOURS}, not {}",
                self.session_hours
            ));
        }
        if self.max_connections == 0 {
            return Some("web.max_connections must be at least 1".into());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn the_dashboard_is_off_and_on_loopback_by_default() {
        let web = WebConfig::default();
        assert!(!web.enabled);
        assert!(web.listen.ip().is_loopback());
        assert_eq!(web.problem(), None);
    }

    #[test]
    fn a_remote_listen_address_must_be_asked_for() {
        let err = Config::parse(
            "[web]\nenabled = true\nlisten = \"0.0.0.0:7340\"\n",
            Path::new("/etc/secflow/secflow.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("web.listen 0.0.0.0:7340"), "{err}");
        let config = Config::parse(
            "[web]\nenabled = true\nlisten = \"0.0.0.0:7340\"\nallow_remote = true\ntoken_file = \"tokens\"\n",
            Path::new("/etc/secflow/secflow.toml"),
        )
        .unwrap();
        assert_eq!(config.web.token_file, Path::new("/etc/secflow/tokens"));
    }
}
