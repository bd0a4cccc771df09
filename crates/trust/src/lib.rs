//! What runs is what was verified: SHA-256 code hashes over an open file, the
//! file handle that is later executed, and the ed25519 signatures that bind a
//! manifest (its code hash, sandbox policy, config schema and dates) to a key
//! this host trusts.
//!
//! The runner opens the entrypoint once, hashes that open file and executes the
//! same descriptor (`execveat(fd, "", AT_EMPTY_PATH)`), so replacing the file on
//! disk between the check and the exec does not change what runs.
//!
//! - [`jcs`]: the RFC 8785 canonical JSON a signature covers;
//! - [`keys`]: key files (PEM), key generation and key ids;
//! - [`store`]: the trust store (trusted and revoked keys) and signatures.

pub mod jcs;
pub mod keys;
pub mod store;

pub use keys::{KeyError, KeyId, KEY_ID_PREFIX};
pub use store::{sign_manifest, signed_bytes, SignatureError, TrustStore};

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A code hash problem.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("code_hash {hash:?} is malformed: expected \"sha256:\" and 64 lowercase hex digits")]
    MalformedHash { hash: String },
    #[error(
        "{path} does not match its manifest: code_hash is {expected}, the file hashes to {actual}"
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// `sha256:<hex>` of everything readable from `reader`.
pub fn sha256_of(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// `sha256:<hex>` of a file.
pub fn hash_file(path: &Path) -> Result<String, TrustError> {
    let file = open_executable(path)?;
    sha256_of(&file).map_err(|source| TrustError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks the form of a `code_hash` value.
pub fn check_hash_format(hash: &str) -> Result<(), TrustError> {
    let ok = hash.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(TrustError::MalformedHash {
            hash: hash.to_string(),
        })
    }
}

/// Opens `path`, hashes the open file and returns it if the hash is `expected`.
/// The returned handle is what the runner executes.
pub fn open_verified(path: &Path, expected: &str) -> Result<File, TrustError> {
    check_hash_format(expected)?;
    let mut file = open_executable(path)?;
    let actual = sha256_of(&mut file).map_err(|source| TrustError::Read {
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
    Ok(file)
}

/// Opens a plugin executable for reading and executing, never through a symlink.
pub fn open_executable(path: &Path) -> Result<File, TrustError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| TrustError::Open {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_verifies_against_its_own_hash_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"hello")
            .unwrap();
        let hash = hash_file(&path).unwrap();
        assert_eq!(
            hash,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(open_verified(&path, &hash).is_ok());
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"swapped")
            .unwrap();
        let err = open_verified(&path, &hash).unwrap_err();
        assert!(matches!(err, TrustError::HashMismatch { .. }), "{err}");
    }

    #[test]
    fn malformed_hashes_are_named() {
        for bad in ["", "sha256:", "md5:abc", "sha256:ABCDEF"] {
            assert!(check_hash_format(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_symlinked_entrypoint_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(hash_file(&link), Err(TrustError::Open { .. })));
    }
}
