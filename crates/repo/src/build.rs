//! `secflow repo build DIR --key K`: writes a repository's signed index from
//! the releases laid out under `DIR/plugins/<name>/<version>/`.
//!
//! Each release directory holds the plugin's signed `manifest.json` and the
//! executable its `entrypoint` names. The build checks what an installing
//! host will check about the pair (the manifest parses and names the
//! directory's plugin and version, it is ed25519-signed, the executable
//! hashes to its `code_hash`), so a mistake is caught before publishing. The
//! new index's version is one more than the `index.json` already in `DIR`,
//! so hosts that saw the old one accept the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use secflow_core::clock::format_rfc3339;
use secflow_manifest::SignatureType;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::index::{
    check_artifact_path, digest_of, expiry, sign_index, Artifact, Index, IndexError,
    PluginReleases, Release, FORMAT_VERSION, INDEX_FILE, MAX_BINARY_BYTES, MAX_INDEX_BYTES,
    MAX_MANIFEST_BYTES, MAX_PLUGINS, MAX_VERSIONS,
};
use crate::state::{read_bounded, write_atomically};

/// How long a built index is valid by default.
pub const DEFAULT_VALID_FOR: time::Duration = time::Duration::days(7);
/// The directory of releases inside a repository.
pub const PLUGINS_DIR: &str = "plugins";

/// Why no index was written.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("release {path}: {reason}")]
    Release { path: PathBuf, reason: String },
    #[error("the existing {path} cannot be read as an index ({reason}); the new index's version must exceed it, so fix or remove it")]
    Previous { path: PathBuf, reason: String },
    #[error("{0}")]
    Index(#[from] IndexError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a build wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub path: PathBuf,
    pub version: u64,
    pub releases: usize,
    pub expires_at: String,
}

/// Builds and signs `DIR/index.json`.
pub fn build(
    dir: &Path,
    key: &SigningKey,
    now: OffsetDateTime,
    valid_for: time::Duration,
) -> Result<Built, BuildError> {
    let index_path = dir.join(INDEX_FILE);
    let previous = previous_version(&index_path)?;
    let plugins_dir = dir.join(PLUGINS_DIR);
    let mut plugins: BTreeMap<String, PluginReleases> = BTreeMap::new();
    let mut releases = 0;
    for name_dir in sorted_dirs(&plugins_dir, MAX_PLUGINS)? {
        let name = file_name(&name_dir);
        let mut versions = BTreeMap::new();
        for version_dir in sorted_dirs(&name_dir, MAX_VERSIONS)? {
            let version = file_name(&version_dir);
            let release = read_release(dir, &version_dir, &name, &version)?;
            versions.insert(version, release);
            releases += 1;
        }
        if !versions.is_empty() {
            plugins.insert(name, PluginReleases { versions });
        }
    }
    let index = Index {
        secflow_repository: FORMAT_VERSION,
        version: previous.map_or(1, |v| v + 1),
        generated_at: format_rfc3339(now),
        expires_at: expiry(now, valid_for),
        plugins,
    };
    let bytes = sign_index(&index, key)?;
    write_atomically(&index_path, &bytes).map_err(|source| BuildError::Write {
        path: index_path.clone(),
        source,
    })?;
    Ok(Built {
        path: index_path,
        version: index.version,
        releases,
        expires_at: index.expires_at,
    })
}

/// The version of the index already in the directory, read without
/// checking its signature (the maintainer may have rotated the key).
fn previous_version(path: &Path) -> Result<Option<u64>, BuildError> {
    let bytes = match read_bounded(path, MAX_INDEX_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(BuildError::Previous {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let doc: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|e| BuildError::Previous {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    doc.get("version")
        .and_then(Value::as_u64)
        .map(Some)
        .ok_or_else(|| BuildError::Previous {
            path: path.to_path_buf(),
            reason: "it has no numeric version".into(),
        })
}

fn read_release(root: &Path, dir: &Path, name: &str, version: &str) -> Result<Release, BuildError> {
    let refuse = |reason: String| BuildError::Release {
        path: dir.to_path_buf(),
        reason,
    };
    let manifest_path = dir.join("manifest.json");
    let bytes =
        read_bounded(&manifest_path, MAX_MANIFEST_BYTES).map_err(|source| BuildError::Read {
            path: manifest_path.clone(),
            source,
        })?;
    let (doc, parsed) = secflow_manifest::parse_manifest(&manifest_path, &bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if parsed.name != name || parsed.version != version {
        return Err(refuse(format!(
            "the manifest is of plugin {} {}, but the directory says {name} {version}",
            parsed.name, parsed.version
        )));
    }
    if parsed.signature_type != SignatureType::Ed25519 || parsed.signature.is_none() {
        return Err(refuse(
            "the manifest is not ed25519-signed (secflow manifest sign); hosts would refuse it"
                .into(),
        ));
    }
    check_artifact_path(&parsed.entrypoint)
        .map_err(|reason| refuse(format!("entrypoint: {reason}")))?;
    let binary_path = dir.join(&parsed.entrypoint);
    let binary = std::fs::File::open(&binary_path).map_err(|source| BuildError::Read {
        path: binary_path.clone(),
        source,
    })?;
    let size = binary
        .metadata()
        .map_err(|source| BuildError::Read {
            path: binary_path.clone(),
            source,
        })?
        .len();
    if size > MAX_BINARY_BYTES {
        return Err(refuse(format!(
            "the executable is larger than {MAX_BINARY_BYTES} bytes"
        )));
    }
    let binary_digest = secflow_trust::sha256_of(binary).map_err(|source| BuildError::Read {
        path: binary_path.clone(),
        source,
    })?;
    if binary_digest != parsed.code_hash {
        return Err(refuse(format!(
            "{} hashes to {binary_digest}, the manifest's code_hash is {}",
            binary_path.display(),
            parsed.code_hash
        )));
    }
    let relative = |path: &Path| -> Result<String, BuildError> {
        let text = path
            .strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| refuse(format!("{} has a name that is not UTF-8", path.display())))?
            .to_string();
        check_artifact_path(&text).map_err(refuse)?;
        Ok(text)
    };
    let dependencies = match doc.get("plugin_dependencies") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
        _ => BTreeMap::new(),
    };
    Ok(Release {
        category: parsed.category.as_str().to_string(),
        description: parsed.description.clone(),
        dependencies,
        manifest: Artifact {
            path: relative(&manifest_path)?,
            digest: digest_of(&bytes),
            size: bytes.len() as u64,
        },
        binary: Artifact {
            path: relative(&binary_path)?,
            digest: binary_digest,
            size,
        },
    })
}

/// The subdirectories of `dir` in name order, at most `limit`; hidden ones
/// are skipped.
fn sorted_dirs(dir: &Path, limit: usize) -> Result<Vec<PathBuf>, BuildError> {
    let entries = std::fs::read_dir(dir).map_err(|source| BuildError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    if dirs.len() > limit {
        return Err(BuildError::Release {
            path: dir.to_path_buf(),
            reason: format!(
                "it holds {} directories, more than the {limit} allowed",
                dirs.len()
            ),
        });
    }
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_trust::{keys, sign_manifest};
    use serde_json::json;

    /// A release directory with `binary` as its executable and a manifest
    /// whose code hash is `code_hash_of`'s, signed when `signed`.
    fn release(root: &Path, binary: &[u8], code_hash_of: &[u8], signed: bool, key: &SigningKey) {
        let dir = root.join("plugins/probe/1.0.0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("probe"), binary).unwrap();
        let doc = json!({
            "name": "probe", "version": "1.0.0", "category": "detector",
            "entrypoint": "probe", "code_hash": digest_of(code_hash_of),
            "plugin_dependencies": { "helper": "^1" },
        });
        let Value::Object(mut map) = doc else {
            unreachable!()
        };
        if signed {
            sign_manifest(&mut map, key).unwrap();
        }
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&map).unwrap()).unwrap();
    }

    #[test]
    fn each_build_raises_the_version_and_lists_digests_and_dependencies() {
        let root = tempfile::tempdir().unwrap();
        let key = keys::generate().unwrap();
        release(root.path(), b"exe", b"exe", true, &key);
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            build(root.path(), &key, now, DEFAULT_VALID_FOR)
                .unwrap()
                .version,
            1
        );
        let built = build(root.path(), &key, now, DEFAULT_VALID_FOR).unwrap();
        assert_eq!((built.version, built.releases), (2, 1));
        let doc: Value = serde_json::from_slice(&std::fs::read(built.path).unwrap()).unwrap();
        let entry = &doc["plugins"]["probe"]["versions"]["1.0.0"];
        assert_eq!(entry["binary"]["digest"], digest_of(b"exe"));
        assert_eq!(entry["binary"]["path"], "plugins/probe/1.0.0/probe");
        assert_eq!(entry["dependencies"]["helper"], "^1");
    }

    #[test]
    fn an_unsigned_manifest_or_a_binary_off_its_code_hash_is_refused() {
        let key = keys::generate().unwrap();
        let now = OffsetDateTime::now_utc();
        for (binary, hashed, signed, needle) in [
            (&b"exe"[..], &b"exe"[..], false, "not ed25519-signed"),
            (b"swapped", b"exe", true, "hashes to"),
        ] {
            let root = tempfile::tempdir().unwrap();
            release(root.path(), binary, hashed, signed, &key);
            let err = build(root.path(), &key, now, DEFAULT_VALID_FOR).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
            assert!(
                !root.path().join(INDEX_FILE).exists(),
                "no index is written"
            );
        }
    }
}
