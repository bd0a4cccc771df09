//! The code-hash check on the path of every run, without re-reading an
//! unchanged executable each time.
//!
//! Every run opens its entrypoint and executes that open file. Hashing a
//! multi-megabyte binary costs milliseconds, more than the rest of a sandboxed
//! spawn, so the hash of an open file is remembered with the file's identity:
//! device, inode, size, and modification and change times to the nanosecond.
//! Replacing the file (a new inode) or writing to it (a new ctime, which no
//! unprivileged process can set back) forces a fresh hash.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use secflow_trust::TrustError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Verified executables by path; one entry per plugin entrypoint.
#[derive(Debug, Default)]
pub struct VerifiedExecutables {
    known: Mutex<HashMap<PathBuf, (FileId, String)>>,
}

impl VerifiedExecutables {
    /// Opens `path` and returns the open file if its content hashes to
    /// `expected` — hashing it unless this very file was verified before.
    pub fn open(&self, path: &Path, expected: &str) -> Result<File, TrustError> {
        secflow_trust::check_hash_format(expected)?;
        let mut file = secflow_trust::open_executable(path)?;
        let meta = file.metadata().map_err(|source| TrustError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let id = FileId::of(&meta);
        {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known
                .get(path)
                .is_some_and(|(seen, hash)| *seen == id && hash == expected)
            {
                return Ok(file);
            }
        }
        let actual = secflow_trust::sha256_of(&mut file).map_err(|source| TrustError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if actual != expected {
            return Err(TrustError::HashMismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                actual,
            });
        }
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), (id, actual));
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_changed_file_is_hashed_again_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin");
        std::fs::write(&path, b"version one").unwrap();
        let hash = secflow_trust::hash_file(&path).unwrap();
        let cache = VerifiedExecutables::default();
        assert!(cache.open(&path, &hash).is_ok());
        assert!(
            cache.open(&path, &hash).is_ok(),
            "unchanged: served from the cache"
        );
        // Same size, written in place: the change time moves, so it is hashed again.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"version two")
            .unwrap();
        assert!(matches!(
            cache.open(&path, &hash),
            Err(TrustError::HashMismatch { .. })
        ));
        // Replaced by another file: a new inode.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"version one").unwrap();
        assert!(cache.open(&path, &hash).is_ok());
    }

    #[test]
    fn a_cached_file_is_still_checked_against_the_expected_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin");
        std::fs::write(&path, b"x").unwrap();
        let hash = secflow_trust::hash_file(&path).unwrap();
        let cache = VerifiedExecutables::default();
        cache.open(&path, &hash).unwrap();
        let other = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            cache.open(&path, &other),
            Err(TrustError::HashMismatch { .. })
        ));
    }
}
