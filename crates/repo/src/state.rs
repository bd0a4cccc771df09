//! What a host remembers of each repository between runs: the version, digest
//! and expiry of the newest index it accepted, so that an older index (a
//! rollback) or a changed one under the same version is refused later, even
//! if it is correctly signed.
//!
//! One small JSON file per repository, replaced atomically (write, fsync,
//! rename, fsync the directory): a crash leaves the old record or the new
//! one, never a torn file. A record that cannot be read is an error, never
//! "nothing seen", since forgetting it would reopen the rollback.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::index::{check_plugin_name, SeenIndex};

/// Largest state record read.
const MAX_RECORD_BYTES: u64 = 64 << 10;

/// Why the repository state cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("repository name {name:?} is invalid: {reason}")]
    Name { name: String, reason: String },
    #[error("cannot read repository state {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("repository state {path} is corrupt ({reason}); it guards against rolled-back indexes, so it is not ignored: restore it, or remove it to trust the next index as if first seen")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The directory of repository records (`<state_dir>/repositories`).
#[derive(Debug, Clone)]
pub struct RepositoryState {
    dir: PathBuf,
}

impl RepositoryState {
    pub fn new(dir: impl Into<PathBuf>) -> RepositoryState {
        RepositoryState { dir: dir.into() }
    }

    fn record_path(&self, repository: &str) -> Result<PathBuf, StateError> {
        check_plugin_name(repository).map_err(|reason| StateError::Name {
            name: repository.to_string(),
            reason: reason.replace("a plugin name", "a repository name"),
        })?;
        Ok(self.dir.join(format!("{repository}.json")))
    }

    /// Holds the state directory's lock (waiting for it) until dropped, so
    /// that two processes refreshing at once cannot write an older record
    /// over a newer one.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, StateError> {
        let write_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Write { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(write_error(&self.dir))?;
        let path = self.dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(write_error(&path))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
            StateError::Write {
                path,
                source: errno.into(),
            }
        })
    }

    /// The newest index accepted from `repository`, if any.
    pub fn seen(&self, repository: &str) -> Result<Option<SeenIndex>, StateError> {
        let path = self.record_path(repository)?;
        let bytes = match read_bounded(&path, MAX_RECORD_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// Records `seen` as the newest index accepted from `repository`.
    pub fn remember(&self, repository: &str, seen: &SeenIndex) -> Result<(), StateError> {
        let path = self.record_path(repository)?;
        std::fs::create_dir_all(&self.dir).map_err(|source| StateError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let mut text = serde_json::to_vec_pretty(seen).expect("a SeenIndex serializes");
        text.push(b'\n');
        write_atomically(&path, &text).map_err(|source| StateError::Write { path, source })
    }
}

/// Reads at most `limit` bytes of a regular file; a longer file is an error.
/// Opened non-blocking, so that a FIFO planted in place of the file does not
/// hang the reader.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// Replaces `path` with `bytes`: a temporary file beside it, fsync, rename,
/// fsync of the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// fsync of a directory, so that a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(version: u64) -> SeenIndex {
        SeenIndex {
            version,
            digest: format!("sha256:{}", "ab".repeat(32)),
            expires_at: "2030-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_remembered_index_is_read_back_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let state = RepositoryState::new(dir.path().join("repositories"));
        assert_eq!(state.seen("main").unwrap(), None);
        state.remember("main", &seen(3)).unwrap();
        state.remember("main", &seen(4)).unwrap();
        assert_eq!(state.seen("main").unwrap(), Some(seen(4)));
        assert_eq!(state.seen("other").unwrap(), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("repositories"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("main.json")]);
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = RepositoryState::new(dir.path());
        std::fs::write(dir.path().join("main.json"), b"{\"version\":").unwrap();
        let err = state.seen("main").unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_repository_name_cannot_escape_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = RepositoryState::new(dir.path());
        let err = state.remember("../evil", &seen(1)).unwrap_err();
        assert!(matches!(err, StateError::Name { .. }), "{err}");
    }
}
