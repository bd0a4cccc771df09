//! `secflow web token --user NAME`: a dashboard login for one user.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::{error_chain, load_config, print_output, Cli, Failure};

#[derive(Debug, Subcommand)]
pub enum WebAction {
    /// Issue a dashboard token for a user: its digest is added to
    /// `[web] token_file`, the token is printed once.
    Token {
        /// Who the token is for (shown in the dashboard and the daemon's log).
        #[arg(long, default_value = "admin")]
        user: String,
    },
}

pub fn web_command(cli: &Cli, action: &WebAction) -> Result<ExitCode, Failure> {
    let config = load_config(cli)?;
    match action {
        WebAction::Token { user } => {
            let path = &config.web.token_file;
            let token = secflow_web::issue_token(path, user).map_err(|e| Failure {
                status: match e {
                    secflow_web::TokenFileError::BadUser(_)
                    | secflow_web::TokenFileError::UserExists { .. } => 2,
                    _ => 1,
                },
                message: error_chain(&e),
            })?;
            let url = format!("http://{}/login", config.web.listen);
            let document = json!({"user": user, "token": token, "token_file": path, "login": url});
            print_output(cli, &document, |out| {
                writeln!(out, "{token}")?;
                writeln!(
                    out,
                    "token for {user} (shown once; its SHA-256 is in {}); log in at {url}{}",
                    path.display(),
                    if config.web.enabled {
                        ""
                    } else {
                        " once [web] enabled = true"
                    }
                )
            })
        }
    }
}
