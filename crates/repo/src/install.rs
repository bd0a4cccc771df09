//! Installing, replacing and removing repository plugins in a plugin
//! directory, so that what is runnable is always either the previous release
//! or the new one, completely verified.
//!
//! Layout of the plugin directory (one of `plugins.manifest_dirs`, so that
//! discovery finds what is installed):
//!
//! ```text
//! <dir>/<name>/manifest.json           the signed manifest
//! <dir>/<name>/<entrypoint>            the executable
//! <dir>/<name>/.secflow-install.json   what was installed, from where
//! <dir>/.staging/                      releases being downloaded (skipped by discovery)
//! <dir>/.lock                          held while the directory changes
//! ```
//!
//! A release is downloaded into a fresh directory under `.staging`, each
//! artifact checked against the size and digest of the verified index, the
//! manifest checked as discovery will check it (schema, dates, code hash,
//! ed25519 signature by a key of the trust store) and against the index
//! (name, version, code hash, plugin dependencies). Only then is it put in
//! place: `rename` for a new plugin, `renameat2(RENAME_EXCHANGE)` to swap it
//! with the installed release in one step. An install interrupted at any
//! point leaves a stray staging directory (removed by the next install) and
//! the previous release untouched.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use secflow_manifest::ManifestError;
use secflow_trust::TrustStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::fetch::{FetchError, Fetcher, Source};
use crate::index::{check_artifact_path, Release};
use crate::state::{read_bounded, sync_dir, write_atomically};

/// The install record's file name inside a plugin's directory.
pub const RECORD_FILE: &str = ".secflow-install.json";
/// The manifest's file name inside a plugin's directory.
pub const MANIFEST_FILE: &str = "manifest.json";
const STAGING_DIR: &str = ".staging";
const LOCK_FILE: &str = ".lock";
const MAX_RECORD_BYTES: u64 = 64 << 10;
/// Most plugin directories looked at when listing what is installed.
const MAX_INSTALLED: usize = 4096;

/// What was installed, kept beside the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    pub name: String,
    pub version: String,
    /// The `[[repositories]]` name it came from.
    pub repository: String,
    /// `sha256:<hex>` of `manifest.json`.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the executable (the manifest's `code_hash`).
    pub binary_digest: String,
    /// The manifest's `plugin_dependencies`.
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
    /// The requirement the operator asked for; `None` when it was installed
    /// only as another plugin's dependency.
    #[serde(default)]
    pub requested: Option<String>,
    /// RFC 3339.
    pub installed_at: String,
}

/// Why an install or a removal did not happen. In every case the installed
/// plugins are as they were.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot use plugin directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin directory {path} is being changed by another install (its lock is held)")]
    Busy { path: PathBuf },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{what} of plugin {name} {version} does not match the signed index: it hashes to {actual}, the index says {expected}; refusing a tampered or corrupted download")]
    Digest {
        name: String,
        version: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error(
        "the manifest of plugin {name} {version} does not agree with the signed index: {reason}"
    )]
    Disagrees {
        name: String,
        version: String,
        reason: String,
    },
    #[error("the manifest of plugin {name} {version} is refused")]
    Manifest {
        name: String,
        version: String,
        #[source]
        source: Box<ManifestError>,
    },
    #[error("{path} holds plugin {name} that was not installed from a repository (no {RECORD_FILE}); remove or move it by hand before installing over it")]
    NotManaged { path: PathBuf, name: String },
    #[error("plugin {name} is not installed from a repository in {dir}")]
    NotInstalled { name: String, dir: PathBuf },
    #[error("plugin {name} is needed by {needed_by}; remove those first")]
    Needed { name: String, needed_by: String },
    #[error("install record {path} is unreadable: {reason}")]
    Record { path: PathBuf, reason: String },
}

/// One release to install, with what the index says of it.
#[derive(Debug, Clone)]
pub struct Planned<'a> {
    pub name: &'a str,
    pub version: &'a semver::Version,
    pub repository: &'a str,
    pub source: &'a Source,
    pub release: &'a Release,
    pub requested: Option<String>,
}

/// A plugin directory that installs go to.
#[derive(Debug, Clone)]
pub struct PluginDir {
    root: PathBuf,
}

/// The plugin directory's lock, held while anything in it changes.
#[derive(Debug)]
pub struct Locked<'a> {
    dir: &'a PluginDir,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// A release downloaded and verified in the staging directory.
#[derive(Debug)]
pub struct Staged {
    name: String,
    path: PathBuf,
    record: InstallRecord,
}

impl Staged {
    pub fn record(&self) -> &InstallRecord {
        &self.record
    }
}

impl Drop for Staged {
    /// A staged release not put in place is discarded.
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl PluginDir {
    pub fn new(root: impl Into<PathBuf>) -> PluginDir {
        PluginDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir_error(&self, path: &Path) -> impl Fn(std::io::Error) -> InstallError {
        let path = path.to_path_buf();
        move |source| InstallError::Dir {
            path: path.clone(),
            source,
        }
    }

    /// Takes the directory's lock (without waiting) and clears what an
    /// interrupted install left in the staging directory.
    pub fn lock(&self) -> Result<Locked<'_>, InstallError> {
        let staging = self.root.join(STAGING_DIR);
        std::fs::create_dir_all(&staging).map_err(self.dir_error(&staging))?;
        let lock_path = self.root.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(self.dir_error(&lock_path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| InstallError::Busy {
                path: self.root.clone(),
            })?;
        for entry in std::fs::read_dir(&staging)
            .map_err(self.dir_error(&staging))?
            .flatten()
        {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing what an interrupted install left");
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
        Ok(Locked {
            dir: self,
            _lock: lock,
        })
    }

    /// The install records of the plugins installed from repositories.
    pub fn installed(&self) -> Result<Vec<InstallRecord>, InstallError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(InstallError::Dir {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut records = Vec::new();
        for entry in entries.flatten().take(MAX_INSTALLED) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(record) = self.record(&name)? {
                records.push(record);
            }
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// The install record of plugin `name`, if a repository installed it.
    pub fn record(&self, name: &str) -> Result<Option<InstallRecord>, InstallError> {
        let path = self.root.join(name).join(RECORD_FILE);
        let bytes = match read_bounded(&path, MAX_RECORD_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(InstallError::Record {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| InstallError::Record {
                path,
                reason: e.to_string(),
            })
    }
}

impl Locked<'_> {
    /// Downloads and verifies `plan` into the staging directory. Nothing
    /// installed changes.
    pub fn stage(
        &self,
        fetcher: &Fetcher,
        trust: &TrustStore,
        plan: &Planned<'_>,
    ) -> Result<Staged, InstallError> {
        let root = &self.dir.root;
        let version = plan.version.to_string();
        let path = root.join(STAGING_DIR).join(format!(
            "{}-{version}.{}.{}",
            plan.name,
            std::process::id(),
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        std::fs::create_dir(&path).map_err(self.dir.dir_error(&path))?;
        // From here on, dropping `staged` removes the directory.
        let staged = Staged {
            name: plan.name.to_string(),
            path,
            record: InstallRecord {
                name: plan.name.to_string(),
                version: version.clone(),
                repository: plan.repository.to_string(),
                manifest_digest: plan.release.manifest.digest.clone(),
                binary_digest: plan.release.binary.digest.clone(),
                dependencies: plan.release.dependencies.clone(),
                requested: plan.requested.clone(),
                installed_at: secflow_core::clock::now_rfc3339(),
            },
        };
        let disagrees = |reason: String| InstallError::Disagrees {
            name: plan.name.to_string(),
            version: version.clone(),
            reason,
        };

        let manifest_path = staged.path.join(MANIFEST_FILE);
        self.download(
            fetcher,
            plan,
            "manifest",
            &plan.release.manifest,
            &manifest_path,
        )?;
        let bytes = std::fs::read(&manifest_path).map_err(self.dir.dir_error(&manifest_path))?;
        let (doc, parsed) =
            secflow_manifest::parse_manifest(&manifest_path, &bytes).map_err(|e| {
                InstallError::Manifest {
                    name: plan.name.to_string(),
                    version: version.clone(),
                    source: Box::new(e),
                }
            })?;
        if parsed.name != plan.name || parsed.version != version {
            return Err(disagrees(format!(
                "the manifest is of plugin {} {}",
                parsed.name, parsed.version
            )));
        }
        if parsed.code_hash != plan.release.binary.digest {
            return Err(disagrees(format!(
                "its code_hash is {}, the index lists binary {}",
                parsed.code_hash, plan.release.binary.digest
            )));
        }
        let dependencies = plugin_dependencies(&doc).map_err(disagrees)?;
        if dependencies != plan.release.dependencies {
            return Err(disagrees(format!(
                "its plugin_dependencies are {dependencies:?}, the index lists {:?}",
                plan.release.dependencies
            )));
        }
        check_artifact_path(&parsed.entrypoint).map_err(|reason| {
            disagrees(format!(
                "its entrypoint must be a path inside the plugin's directory: {reason}"
            ))
        })?;
        if parsed.entrypoint == MANIFEST_FILE || parsed.entrypoint == RECORD_FILE {
            return Err(disagrees(format!(
                "its entrypoint is {:?}",
                parsed.entrypoint
            )));
        }

        let binary_path = staged.path.join(&parsed.entrypoint);
        if let Some(parent) = binary_path.parent() {
            std::fs::create_dir_all(parent).map_err(self.dir.dir_error(parent))?;
        }
        self.download(fetcher, plan, "binary", &plan.release.binary, &binary_path)?;
        std::fs::set_permissions(&binary_path, std::fs::Permissions::from_mode(0o755))
            .map_err(self.dir.dir_error(&binary_path))?;

        // What discovery will check: schema, dates, entrypoint, code hash and
        // an ed25519 signature by a key this host trusts.
        secflow_manifest::verify_signed(&manifest_path, trust).map_err(|e| {
            InstallError::Manifest {
                name: plan.name.to_string(),
                version: version.clone(),
                source: Box::new(e),
            }
        })?;

        let record_path = staged.path.join(RECORD_FILE);
        let mut text = serde_json::to_vec_pretty(&staged.record).expect("a record serializes");
        text.push(b'\n');
        write_atomically(&record_path, &text).map_err(self.dir.dir_error(&record_path))?;
        sync_dir(&staged.path).map_err(self.dir.dir_error(&staged.path))?;
        Ok(staged)
    }

    /// Fetches one artifact to `dest`, hashing it on the way, and checks the
    /// digest the index gives.
    fn download(
        &self,
        fetcher: &Fetcher,
        plan: &Planned<'_>,
        what: &'static str,
        artifact: &crate::index::Artifact,
        dest: &Path,
    ) -> Result<(), InstallError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(self.dir.dir_error(dest))?;
        let mut sink = HashingWriter {
            file,
            hasher: Sha256::new(),
        };
        fetcher.fetch(
            plan.source,
            &artifact.path,
            artifact.size,
            Some(artifact.size),
            &mut sink,
        )?;
        sink.file.sync_all().map_err(self.dir.dir_error(dest))?;
        let actual = format!("sha256:{}", hex::encode(sink.hasher.finalize()));
        if actual != artifact.digest {
            return Err(InstallError::Digest {
                name: plan.name.to_string(),
                version: plan.version.to_string(),
                what,
                expected: artifact.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Puts a staged release in place, in one rename: the previous release
    /// (if any) is runnable until the rename, the new one after it.
    pub fn commit(&self, staged: Staged) -> Result<InstallRecord, InstallError> {
        let target = self.dir.root.join(&staged.name);
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                rename(
                    &staged.path,
                    &target,
                    nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                )?;
            }
            Err(source) => {
                return Err(InstallError::Dir {
                    path: target,
                    source,
                })
            }
            Ok(_) => {
                if self.dir.record(&staged.name)?.is_none() {
                    return Err(InstallError::NotManaged {
                        path: target,
                        name: staged.name.clone(),
                    });
                }
                // The old release moves to the staging path; dropping
                // `staged` then removes it.
                rename(
                    &staged.path,
                    &target,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )?;
            }
        }
        sync_dir(&self.dir.root).map_err(self.dir.dir_error(&self.dir.root))?;
        Ok(staged.record.clone())
    }

    /// Removes plugin `name`, refused while another installed plugin
    /// depends on it. The directory disappears in one rename.
    pub fn remove(&self, name: &str) -> Result<InstallRecord, InstallError> {
        let record = self
            .dir
            .record(name)?
            .ok_or_else(|| InstallError::NotInstalled {
                name: name.to_string(),
                dir: self.dir.root.clone(),
            })?;
        let needed_by: Vec<String> = self
            .dir
            .installed()?
            .into_iter()
            .filter_map(|r| {
                r.dependencies
                    .get(name)
                    .map(|req| format!("{} {} ({name} {req})", r.name, r.version))
            })
            .collect();
        if !needed_by.is_empty() {
            return Err(InstallError::Needed {
                name: name.to_string(),
                needed_by: needed_by.join(", "),
            });
        }
        let target = self.dir.root.join(name);
        let graveyard = self
            .dir
            .root
            .join(STAGING_DIR)
            .join(format!("{name}.removed.{}", std::process::id()));
        std::fs::rename(&target, &graveyard).map_err(self.dir.dir_error(&target))?;
        sync_dir(&self.dir.root).map_err(self.dir.dir_error(&self.dir.root))?;
        let _ = std::fs::remove_dir_all(&graveyard);
        Ok(record)
    }
}

/// `renameat2(from, to, flags)`.
fn rename(from: &Path, to: &Path, flags: nix::fcntl::RenameFlags) -> Result<(), InstallError> {
    nix::fcntl::renameat2(nix::fcntl::AT_FDCWD, from, nix::fcntl::AT_FDCWD, to, flags).map_err(
        |e| InstallError::Dir {
            path: to.to_path_buf(),
            source: e.into(),
        },
    )
}

/// The manifest document's `plugin_dependencies` (already schema-checked).
fn plugin_dependencies(
    doc: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, String>, String> {
    match doc.get("plugin_dependencies") {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("plugin_dependencies.{k} is not a string")),
            })
            .collect(),
        Some(_) => Err("plugin_dependencies is not an object".into()),
    }
}

/// Writes to a file and hashes what it writes.
struct HashingWriter {
    file: std::fs::File,
    hasher: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
