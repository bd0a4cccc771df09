//! Who may see the dashboard: users in the token file, and the sessions
//! their logins opened.
//!
//! The token file holds one `NAME SHA256HEX` line per user (`secflow web
//! token` appends them): a copy of the file grants nothing. A login presents
//! the token once and gets a session cookie (HttpOnly, SameSite=Strict);
//! scripts may send `Authorization: Bearer TOKEN` instead. The file is read
//! at every login, so a user added or removed takes effect without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 1 << 20;
/// Most sessions held; the oldest goes when a login would pass it.
pub const MAX_SESSIONS: usize = 1024;
/// Longest user name (letters, digits, `-`, `_`, `.`, `@`).
pub const MAX_USER_LEN: usize = 64;

/// Why the token file cannot be used or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read web token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write web token file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("web token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("web token file {path} line {line}: expected `NAME SHA256HEX`")]
    BadLine { path: PathBuf, line: usize },
    #[error("user name {0:?} must be 1 to {MAX_USER_LEN} letters, digits, '-', '_', '.' or '@'")]
    BadUser(String),
    #[error("user {user:?} already has a token in {path}; remove its line to issue a new one")]
    UserExists { user: String, path: PathBuf },
    #[error("cannot draw random bytes for a token: {0}")]
    Random(String),
}

/// The hex SHA-256 of a token, as the file stores it.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 32 random bytes in hex: a token or a session id.
pub fn random_secret() -> Result<String, TokenFileError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenFileError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// The users of a token file: (name, digest).
pub fn read_users(path: &Path) -> Result<Vec<(String, String)>, TokenFileError> {
    let read = |source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read(e)),
    };
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(TokenFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || TokenFileError::BadLine {
            path: path.to_owned(),
            line: i + 1,
        };
        let (name, digest) = line.split_once(' ').ok_or_else(bad)?;
        let digest = digest.trim();
        let hex_digest = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid_user(name) || !hex_digest {
            return Err(bad());
        }
        users.push((name.to_owned(), digest.to_ascii_lowercase()));
    }
    Ok(users)
}

/// Adds `user` to the token file (created 0600) and returns the new token,
/// which is shown once and never stored.
pub fn issue_token(path: &Path, user: &str) -> Result<String, TokenFileError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !valid_user(user) {
        return Err(TokenFileError::BadUser(user.to_owned()));
    }
    if read_users(path)?.iter().any(|(name, _)| name == user) {
        return Err(TokenFileError::UserExists {
            user: user.to_owned(),
            path: path.to_owned(),
        });
    }
    let token = random_secret()?;
    let write = |source| TokenFileError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(write)?;
    writeln!(file, "{user} {}", token_digest(&token)).map_err(write)?;
    file.sync_all().map_err(write)?;
    Ok(token)
}

/// The logged-in sessions and the token file they were opened against.
#[derive(Debug)]
pub struct Auth {
    token_file: PathBuf,
    lifetime: Duration,
    /// Session id → (user, expiry).
    sessions: Mutex<HashMap<String, (String, Instant)>>,
}

impl Auth {
    pub fn new(token_file: PathBuf, lifetime: Duration) -> Auth {
        Auth {
            token_file,
            lifetime,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The user a token belongs to (the file is read now).
    pub fn user_of_token(&self, token: &str) -> Result<Option<String>, TokenFileError> {
        let digest = token_digest(token.trim());
        Ok(read_users(&self.token_file)?
            .into_iter()
            .find(|(_, d)| *d == digest)
            .map(|(name, _)| name))
    }

    /// Opens a session for `user`; returns its id (the cookie's value).
    pub fn open_session(&self, user: String) -> Result<String, TokenFileError> {
        let id = random_secret()?;
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, (_, expiry)| *expiry > now);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, (_, expiry))| *expiry)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), (user, now + self.lifetime));
        Ok(id)
    }

    /// The user of a live session.
    pub fn user_of_session(&self, id: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(user, _)| user.clone())
    }

    pub fn close_session(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(id);
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_logs_its_user_in_and_the_file_holds_only_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-tokens");
        let token = issue_token(&path, "alice").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token), "the token itself is never stored");
        assert_eq!(text, format!("alice {}\n", token_digest(&token)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let auth = Auth::new(path.clone(), Duration::from_secs(60));
        assert_eq!(
            auth.user_of_token(&token).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(auth.user_of_token("guess").unwrap(), None);
        assert!(matches!(
            issue_token(&path, "alice"),
            Err(TokenFileError::UserExists { .. })
        ));
        assert!(matches!(
            issue_token(&path, "a b"),
            Err(TokenFileError::BadUser(_))
        ));
    }

    #[test]
    fn a_session_ends_at_its_expiry_or_logout() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::new(dir.path().join("t"), Duration::from_millis(50));
        let id = auth.open_session("bob".into()).unwrap();
        assert_eq!(auth.user_of_session(&id).as_deref(), Some("bob"));
        assert_eq!(auth.user_of_session("not-a-session"), None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(auth.user_of_session(&id), None, "expired");
        let id = auth.open_session("bob".into()).unwrap();
        auth.close_session(&id);
        assert_eq!(auth.user_of_session(&id), None, "logged out");
    }

    #[test]
    fn a_malformed_token_file_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-tokens");
        std::fs::write(&path, "# users\nalice 1234\n").unwrap();
        let err = read_users(&path).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
