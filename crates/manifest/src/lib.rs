//! Plugin manifests: parse, schema-check, resolve and verify one manifest file.
//!
//! A manifest is what makes an executable a plugin, so everything the runner
//! will rely on is checked here, once, before the plugin is listed as active:
//! the schema, `config_schema` and its defaults, the validity dates, the limits
//! (capped by the config), the entrypoint (inside the manifest's directory, no
//! symlinks, executable), its code hash, its signature against the trust store
//! and the declared dependencies. Pure policy apart from reading the manifest,
//! looking at the filesystem and hashing the entrypoint.
//!
//! An ed25519 signature covers the manifest document as read (its canonical
//! form, see `trust::store`), not the parsed struct, so a field this build does
//! not know is still bound by the signature.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use secflow_plugin_sdk::protocol::Category;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use secflow_core::clock::parse_rfc3339;
use secflow_core::config::{Config, RequestedLimits, RunLimits};
use secflow_core::record::ErrorKind;
use secflow_core::schema::{CompiledSchema, SchemaViolation};
use secflow_core::PluginStatus;
use secflow_trust::{KeyId, SignatureError, TrustError, TrustStore};

/// Largest manifest file read; a manifest is a few KiB, so more is a mistake or
/// an attack.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// How far in the future `created_at` may be (clock skew between the signing
/// host and this one) before the manifest counts as not yet valid.
pub const CREATED_AT_SKEW: time::Duration = time::Duration::minutes(5);

/// `sandbox.filesystem`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesystemMode {
    #[default]
    Readonly,
    Tmp,
}

/// `signature_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureType {
    #[default]
    Sha256,
    Ed25519,
}

/// `sandbox.network`: `false` (the default: no network at all), `true` (the
/// host's network), or `"targets"` (the host's network, but only the run's
/// input targets and `sandbox.egress` are reachable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkGrant {
    #[default]
    None,
    Host,
    Targets,
}

impl NetworkGrant {
    /// Whether the run has any network.
    pub fn any(self) -> bool {
        self != NetworkGrant::None
    }
}

impl Serialize for NetworkGrant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NetworkGrant::None => s.serialize_bool(false),
            NetworkGrant::Host => s.serialize_bool(true),
            NetworkGrant::Targets => s.serialize_str("targets"),
        }
    }
}

impl<'de> Deserialize<'de> for NetworkGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(false) => Ok(NetworkGrant::None),
            Value::Bool(true) => Ok(NetworkGrant::Host),
            Value::String(s) if s == "targets" => Ok(NetworkGrant::Targets),
            other => Err(serde::de::Error::custom(format!(
                "sandbox.network must be false, true or \"targets\", not {other}"
            ))),
        }
    }
}

/// The manifest's `sandbox` block, as written (limits not yet resolved).
///
/// Unknown keys are refused by the manifest schema, which runs before this is
/// deserialized (serde's `deny_unknown_fields` does not work with `flatten`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    #[serde(default)]
    pub network: NetworkGrant,
    /// With `network: "targets"`: CIDR blocks, hosts and `host:port`s the
    /// run may reach besides its targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    #[serde(default)]
    pub filesystem: FilesystemMode,
    #[serde(default)]
    pub read_paths: Vec<PathBuf>,
    /// A persistent, writable state directory kept across runs.
    #[serde(default)]
    pub state: bool,
    #[serde(flatten)]
    pub limits: RequestedLimits,
}

/// A manifest as written in `manifests/*.json` (contracts §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub author: String,
    pub category: Category,
    pub entrypoint: String,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub config_schema: Map<String, Value>,
    pub code_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default)]
    pub signature_type: SignatureType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub sandbox: SandboxSpec,
}

/// A manifest that passed every check: what the runner needs to start it.
#[derive(Debug)]
pub struct VerifiedPlugin {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    /// The entrypoint, canonical, inside the manifest's directory tree.
    pub entrypoint: PathBuf,
    /// Effective limits: manifest values, defaulted and capped by the config.
    pub limits: RunLimits,
    /// The declared dependencies, found on the plugin search path.
    pub dependencies: Vec<PathBuf>,
    /// Applies `config_schema` defaults and validates a run's config.
    pub config: ConfigSchema,
    /// The trusted key whose ed25519 signature covers the manifest; `None`
    /// for a `sha256` manifest (accepted only without `require_signatures`).
    pub signed_by: Option<KeyId>,
    /// `sha256:<hex>` of the manifest's bytes as read and verified; `None`
    /// for a manifest made up in memory (`secflow plugin check` without one).
    pub manifest_digest: Option<String>,
}

/// A manifest whose code hash and ed25519 signature verify
/// (`secflow manifest verify`).
#[derive(Debug)]
pub struct SignedManifest {
    pub manifest: Manifest,
    /// The entrypoint, canonical, inside the manifest's directory tree.
    pub entrypoint: PathBuf,
    /// The trusted key the signature verifies under.
    pub key_id: KeyId,
}

/// A manifest's `config_schema`, compiled: the run config must be an object
/// with only the declared keys, each valid against its schema.
#[derive(Debug)]
pub struct ConfigSchema {
    schema: CompiledSchema,
    defaults: Map<String, Value>,
}

impl ConfigSchema {
    /// Compiles `config_schema` (property name → JSON Schema with an optional
    /// `default`). Each property must be a valid schema and each default must
    /// satisfy its own property's schema; the error names the key.
    pub fn new(properties: &Map<String, Value>) -> Result<ConfigSchema, String> {
        let mut defaults = Map::new();
        for (key, property) in properties {
            let compiled = CompiledSchema::compile(property).map_err(|e| {
                format!(
                    "config_schema.{key} is not a valid JSON schema: {}",
                    e.message
                )
            })?;
            if let Some(default) = property.get("default") {
                compiled.validate(default).map_err(|violations| {
                    format!(
                        "config_schema.{key}.default does not satisfy its own schema: {}",
                        join(&violations)
                    )
                })?;
                defaults.insert(key.clone(), default.clone());
            }
        }
        let whole = serde_json::json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        let schema =
            CompiledSchema::compile(&whole).map_err(|e| format!("config_schema {}", e.message))?;
        Ok(ConfigSchema { schema, defaults })
    }

    /// Applies the defaults for absent keys, then validates the merged config.
    /// The error names the offending key (as an instance path) and the reason.
    pub fn apply(&self, config: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut merged = config.clone();
        for (key, default) in &self.defaults {
            if !merged.contains_key(key) {
                merged.insert(key.clone(), default.clone());
            }
        }
        self.schema
            .validate(&Value::Object(merged.clone()))
            .map_err(|violations| {
                violations
                    .iter()
                    .map(|v| {
                        if v.instance_path.is_empty() {
                            format!("config: {}", v.message)
                        } else {
                            format!("config `{}`: {}", v.instance_path, v.message)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        Ok(merged)
    }

    /// The declared defaults, by key.
    pub fn defaults(&self) -> &Map<String, Value> {
        &self.defaults
    }
}

/// Why a manifest was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("manifest {path} is larger than the {limit} bytes allowed")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("manifest {path} is not valid JSON: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("manifest {path} does not match the manifest schema: {}", join(.violations))]
    Schema {
        path: PathBuf,
        violations: Vec<SchemaViolation>,
    },
    #[error("manifest {path} cannot be read as a manifest: {message}")]
    Deserialize { path: PathBuf, message: String },
    #[error("manifest {path}: {message}")]
    ConfigSchema { path: PathBuf, message: String },
    #[error("{manifest}: {field} {value:?} is not an RFC 3339 date-time")]
    InvalidTimestamp {
        manifest: String,
        field: &'static str,
        value: String,
    },
    #[error("{manifest} has expired: expires_at {expires_at} is in the past")]
    Expired {
        manifest: String,
        expires_at: String,
    },
    #[error("{manifest} is not yet valid: created_at {created_at} is in the future")]
    NotYetValid {
        manifest: String,
        created_at: String,
    },
    #[error("manifest {path}: entrypoint {entrypoint:?} escapes the manifest directory: {reason}")]
    EntrypointEscape {
        path: PathBuf,
        entrypoint: String,
        reason: String,
    },
    #[error("manifest {path}: entrypoint {entrypoint:?} {reason}")]
    Entrypoint {
        path: PathBuf,
        entrypoint: String,
        reason: String,
    },
    #[error("manifest {path}: sandbox.read_paths[{index}] {value:?} must be an absolute path without '..'")]
    ReadPath {
        path: PathBuf,
        index: usize,
        value: PathBuf,
    },
    #[error("manifest {path}: sandbox.egress[{index}] {value:?} cannot be used: {reason}")]
    Egress {
        path: PathBuf,
        index: usize,
        value: String,
        reason: String,
    },
    #[error("manifest {path}: sandbox.egress is only used with sandbox.network \"targets\" (it is {network})")]
    EgressWithoutTargets { path: PathBuf, network: String },
    #[error("manifest {path}: cannot hash entrypoint {entrypoint}")]
    Hash {
        path: PathBuf,
        entrypoint: PathBuf,
        #[source]
        source: TrustError,
    },
    #[error("manifest {path}: code_hash does not match entrypoint {entrypoint}: the manifest says {expected}, the file hashes to {actual}")]
    HashMismatch {
        path: PathBuf,
        entrypoint: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("manifest {path}: the ed25519 signature of plugin {name} is rejected: {problem}")]
    Signature {
        path: PathBuf,
        name: String,
        problem: SignatureError,
    },
    #[error("manifest {path}: trust.require_signatures is on and plugin {name} has no ed25519 signature (signature_type is sha256)")]
    SignatureRequired { path: PathBuf, name: String },
    #[error("manifest {path}: dependency {dependency:?} is not an executable on the plugin search path ({search_path})")]
    DependencyMissing {
        path: PathBuf,
        dependency: String,
        search_path: String,
    },
}

impl ManifestError {
    /// The status a plugin with this problem is listed with.
    pub fn status(&self) -> PluginStatus {
        match self {
            ManifestError::DependencyMissing { .. } => PluginStatus::Unavailable,
            _ => PluginStatus::Rejected,
        }
    }

    /// The run error kind of a run refused because of this problem.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ManifestError::HashMismatch { .. } => ErrorKind::HashMismatch,
            ManifestError::Signature { .. } | ManifestError::SignatureRequired { .. } => {
                ErrorKind::SignatureInvalid
            }
            ManifestError::DependencyMissing { .. } => ErrorKind::DependencyMissing,
            _ => ErrorKind::PluginRejected,
        }
    }

    /// Whether an operator must look at it: a tampered executable, a missing or
    /// unverifiable signature, a manifest outside its validity dates (the
    /// trust chain's expiry), or an entrypoint that tries to leave its directory.
    pub fn is_security_event(&self) -> bool {
        matches!(
            self,
            ManifestError::HashMismatch { .. }
                | ManifestError::Signature { .. }
                | ManifestError::SignatureRequired { .. }
                | ManifestError::Expired { .. }
                | ManifestError::NotYetValid { .. }
                | ManifestError::EntrypointEscape { .. }
        )
    }
}

/// Reads and verifies the manifest at `path`, in this order: read (at most
/// [`MAX_MANIFEST_BYTES`]), JSON, schema, `config_schema`, validity dates,
/// limits, entrypoint, `read_paths`, code hash, signature (against `trust`,
/// loaded once per discovery from `config.trust`), dependencies.
pub fn load(
    path: &Path,
    config: &Config,
    trust: &TrustStore,
) -> Result<VerifiedPlugin, ManifestError> {
    let bytes = read_document(path)?;
    let manifest_digest = secflow_trust::sha256_of(bytes.as_slice()).ok();
    let (doc, manifest) = parse_manifest(path, &bytes)?;
    let config_schema = ConfigSchema::new(&manifest.config_schema).map_err(|message| {
        ManifestError::ConfigSchema {
            path: path.to_path_buf(),
            message,
        }
    })?;
    check_validity(
        &manifest,
        &format!("manifest {}", path.display()),
        OffsetDateTime::now_utc(),
    )?;
    let (limits, capped) = RunLimits::resolve(
        &manifest.sandbox.limits,
        &config.limits.defaults(),
        &config.limits.ceiling,
    );
    for cap in &capped {
        tracing::warn!(manifest = %path.display(), plugin = %manifest.name, "{cap}");
    }
    let entrypoint = resolve_entrypoint(path, &manifest.entrypoint)?;
    check_read_paths(path, &manifest.sandbox.read_paths)?;
    check_egress(path, &manifest.sandbox)?;
    check_code_hash(path, &entrypoint, &manifest.code_hash)?;
    let signed_by = check_signature(
        path,
        &doc,
        &manifest,
        trust,
        config.trust.require_signatures,
    )?;
    let dependencies =
        find_dependencies(path, &manifest.dependencies, &config.plugins.search_path)?;
    Ok(VerifiedPlugin {
        manifest,
        manifest_path: path.to_path_buf(),
        entrypoint,
        limits,
        dependencies,
        config: config_schema,
        signed_by,
        manifest_digest,
    })
}

/// What `secflow manifest verify` checks: the manifest is well-formed and
/// within its validity dates, its entrypoint hashes to `code_hash`, and an
/// ed25519 signature by a key of `trust` covers it. What depends on the host
/// (limits, dependencies) is left to [`load`].
pub fn verify_signed(path: &Path, trust: &TrustStore) -> Result<SignedManifest, ManifestError> {
    let (doc, manifest) = read_manifest(path)?;
    check_validity(
        &manifest,
        &format!("manifest {}", path.display()),
        OffsetDateTime::now_utc(),
    )?;
    let entrypoint = resolve_entrypoint(path, &manifest.entrypoint)?;
    check_code_hash(path, &entrypoint, &manifest.code_hash)?;
    let key_id = check_signature(path, &doc, &manifest, trust, true)?.ok_or_else(|| {
        ManifestError::SignatureRequired {
            path: path.to_path_buf(),
            name: manifest.name.clone(),
        }
    })?;
    Ok(SignedManifest {
        manifest,
        entrypoint,
        key_id,
    })
}

/// Reads a manifest file, checks it against the manifest schema and parses
/// it; the document is kept because a signature covers it as written.
fn read_manifest(path: &Path) -> Result<(Map<String, Value>, Manifest), ManifestError> {
    parse_manifest(path, &read_document(path)?)
}

/// Parses a manifest from its bytes: JSON, the manifest schema, then the
/// struct. `path` only names the manifest in errors. What [`load`] and
/// [`verify_signed`] read goes through here, so it is fuzzed as is.
pub fn parse_manifest(
    path: &Path,
    bytes: &[u8],
) -> Result<(Map<String, Value>, Manifest), ManifestError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    secflow_core::schema::validate_manifest(&doc).map_err(|violations| ManifestError::Schema {
        path: path.to_path_buf(),
        violations,
    })?;
    let manifest = Manifest::deserialize(&doc).map_err(|e| ManifestError::Deserialize {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    match doc {
        Value::Object(map) => Ok((map, manifest)),
        // The schema admits objects only.
        _ => Err(ManifestError::Deserialize {
            path: path.to_path_buf(),
            message: "a manifest is a JSON object".into(),
        }),
    }
}

/// Checks `expires_at` (must not be past `now`) and `created_at` (must not be
/// more than [`CREATED_AT_SKEW`] after `now`); also usable at run time.
pub fn check_expiry(manifest: &Manifest, now: OffsetDateTime) -> Result<(), ManifestError> {
    let label = format!(
        "the manifest of plugin {} {}",
        manifest.name, manifest.version
    );
    check_validity(manifest, &label, now)
}

/// Reads the manifest's bytes, bounded, without following it into a FIFO or a
/// device.
fn read_document(path: &Path) -> Result<Vec<u8>, ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(ManifestError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let too_large = || ManifestError::TooLarge {
        path: path.to_path_buf(),
        limit: MAX_MANIFEST_BYTES,
    };
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

fn check_validity(
    manifest: &Manifest,
    label: &str,
    now: OffsetDateTime,
) -> Result<(), ManifestError> {
    let parse = |field: &'static str, value: &str| {
        parse_rfc3339(value).map_err(|_| ManifestError::InvalidTimestamp {
            manifest: label.to_string(),
            field,
            value: value.to_string(),
        })
    };
    if let Some(expires_at) = &manifest.expires_at {
        if parse("expires_at", expires_at)? <= now {
            return Err(ManifestError::Expired {
                manifest: label.to_string(),
                expires_at: expires_at.clone(),
            });
        }
    }
    if let Some(created_at) = &manifest.created_at {
        if parse("created_at", created_at)? > now + CREATED_AT_SKEW {
            return Err(ManifestError::NotYetValid {
                manifest: label.to_string(),
                created_at: created_at.clone(),
            });
        }
    }
    Ok(())
}

/// The directory a manifest's relative paths are relative to.
fn manifest_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Resolves the entrypoint inside the manifest's directory tree. `..` and a
/// symlink at any level below the manifest's directory are refused (the
/// directory itself may be reached through a symlink: it is canonicalized
/// first); the result must be a regular file with an exec bit.
pub fn resolve_entrypoint(path: &Path, entrypoint: &str) -> Result<PathBuf, ManifestError> {
    let escape = |reason: String| ManifestError::EntrypointEscape {
        path: path.to_path_buf(),
        entrypoint: entrypoint.to_string(),
        reason,
    };
    let invalid = |reason: String| ManifestError::Entrypoint {
        path: path.to_path_buf(),
        entrypoint: entrypoint.to_string(),
        reason,
    };
    let written = Path::new(entrypoint);
    if written.components().any(|c| c == Component::ParentDir) {
        return Err(escape("it contains '..'".into()));
    }
    let dir = manifest_dir(path);
    let canonical_dir = std::fs::canonicalize(dir).map_err(|source| ManifestError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let relative = if written.is_absolute() {
        let absolute_dir = std::path::absolute(dir).unwrap_or_else(|_| canonical_dir.clone());
        written
            .strip_prefix(&canonical_dir)
            .or_else(|_| written.strip_prefix(&absolute_dir))
            .map_err(|_| escape(format!("it is outside {}", canonical_dir.display())))?
    } else {
        written
    };
    let mut current = canonical_dir.clone();
    for component in relative.components() {
        match component {
            Component::Normal(part) => {
                current.push(part);
                let meta = std::fs::symlink_metadata(&current).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        invalid(format!("does not exist ({})", current.display()))
                    }
                    _ => invalid(format!("cannot be inspected ({}: {e})", current.display())),
                })?;
                if meta.file_type().is_symlink() {
                    return Err(escape(format!("{} is a symbolic link", current.display())));
                }
            }
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(escape(
                    "it is not a plain path below the manifest directory".into(),
                ));
            }
        }
    }
    let canonical = std::fs::canonicalize(&current)
        .map_err(|e| invalid(format!("cannot be resolved ({}: {e})", current.display())))?;
    if canonical != current || !canonical.starts_with(&canonical_dir) {
        return Err(escape(format!("it resolves to {}", canonical.display())));
    }
    let meta = std::fs::symlink_metadata(&canonical).map_err(|e| {
        invalid(format!(
            "cannot be inspected ({}: {e})",
            canonical.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(invalid(format!(
            "is not a regular file ({})",
            canonical.display()
        )));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(invalid(format!(
            "is not executable ({} has no exec bit)",
            canonical.display()
        )));
    }
    Ok(canonical)
}

fn check_read_paths(path: &Path, read_paths: &[PathBuf]) -> Result<(), ManifestError> {
    for (index, value) in read_paths.iter().enumerate() {
        if !value.is_absolute() || value.components().any(|c| c == Component::ParentDir) {
            return Err(ManifestError::ReadPath {
                path: path.to_path_buf(),
                index,
                value: value.clone(),
            });
        }
    }
    Ok(())
}

fn check_egress(path: &Path, sandbox: &SandboxSpec) -> Result<(), ManifestError> {
    if !sandbox.egress.is_empty() && sandbox.network != NetworkGrant::Targets {
        return Err(ManifestError::EgressWithoutTargets {
            path: path.to_path_buf(),
            network: serde_json::to_string(&sandbox.network).unwrap_or_default(),
        });
    }
    for (index, value) in sandbox.egress.iter().enumerate() {
        secflow_egress::check_egress_entry(value).map_err(|reason| ManifestError::Egress {
            path: path.to_path_buf(),
            index,
            value: value.chars().take(128).collect(),
            reason,
        })?;
    }
    Ok(())
}

fn check_code_hash(path: &Path, entrypoint: &Path, expected: &str) -> Result<(), ManifestError> {
    match secflow_trust::open_verified(entrypoint, expected) {
        Ok(_) => Ok(()),
        Err(TrustError::HashMismatch {
            expected, actual, ..
        }) => Err(ManifestError::HashMismatch {
            path: path.to_path_buf(),
            entrypoint: entrypoint.to_path_buf(),
            expected,
            actual,
        }),
        Err(source) => Err(ManifestError::Hash {
            path: path.to_path_buf(),
            entrypoint: entrypoint.to_path_buf(),
            source,
        }),
    }
}

/// The signature policy: an `ed25519` manifest must carry a signature by a
/// trusted, unrevoked key over its document; a `sha256` one is accepted only
/// when signatures are not required. Returns the signing key's id.
fn check_signature(
    path: &Path,
    doc: &Map<String, Value>,
    manifest: &Manifest,
    trust: &TrustStore,
    require_signatures: bool,
) -> Result<Option<KeyId>, ManifestError> {
    match manifest.signature_type {
        SignatureType::Ed25519 => {
            trust
                .verify_manifest(doc)
                .map(Some)
                .map_err(|problem| ManifestError::Signature {
                    path: path.to_path_buf(),
                    name: manifest.name.clone(),
                    problem,
                })
        }
        SignatureType::Sha256 if require_signatures => Err(ManifestError::SignatureRequired {
            path: path.to_path_buf(),
            name: manifest.name.clone(),
        }),
        SignatureType::Sha256 => Ok(None),
    }
}

/// Finds each dependency as an executable regular file on `search_path`, the
/// first match winning as it would on the plugin's PATH.
fn find_dependencies(
    path: &Path,
    dependencies: &[String],
    search_path: &[PathBuf],
) -> Result<Vec<PathBuf>, ManifestError> {
    dependencies
        .iter()
        .map(|dependency| {
            search_path
                .iter()
                .map(|dir| dir.join(dependency))
                .find(|candidate| {
                    std::fs::metadata(candidate)
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
                .ok_or_else(|| ManifestError::DependencyMissing {
                    path: path.to_path_buf(),
                    dependency: dependency.clone(),
                    search_path: search_path
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":"),
                })
        })
        .collect()
}

fn join(violations: &[SchemaViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Plugin directories for tests: a `#!/bin/sh` entrypoint and a manifest that
/// verifies against it.
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use serde_json::{json, Value};

    use secflow_core::config::Config;

    /// Writes an executable script at `path` (mode 0755) and returns its code hash.
    pub fn script(path: &Path, body: &str) -> String {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        secflow_trust::hash_file(path).unwrap()
    }

    /// `<root>/<name>/bin/<name>` and a valid manifest document for it; the
    /// manifest belongs at `<root>/<name>/manifest.json`.
    pub fn plugin(root: &Path, name: &str) -> (PathBuf, Value) {
        let dir = root.join(name);
        let hash = script(&dir.join("bin").join(name), "exit 0");
        let doc = json!({
            "name": name,
            "version": "1.0.0",
            "description": "test plugin",
            "author": "secflow tests",
            "category": "detector",
            "entrypoint": format!("bin/{name}"),
            "code_hash": hash,
            "signature_type": "sha256",
            "created_at": "2024-01-01T00:00:00Z",
            "expires_at": "2999-01-01T00:00:00Z",
            "sandbox": {"network": false, "filesystem": "readonly", "read_paths": []}
        });
        (dir.join("manifest.json"), doc)
    }

    pub fn write(path: &Path, doc: &Value) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    }

    /// Default config scanning `root`, with `<root>/.path` as the search path.
    pub fn config(root: &Path) -> Config {
        let mut config = Config::default();
        config.plugins.manifest_dirs = vec![root.to_path_buf()];
        config.plugins.search_path = vec![root.join(".path")];
        config
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{config, plugin, script, write};
    use super::*;
    use serde_json::json;

    /// Loads with the trust store `config` names, as discovery does.
    fn load(path: &Path, config: &Config) -> Result<VerifiedPlugin, ManifestError> {
        super::load(path, config, &TrustStore::load(&config.trust))
    }

    fn load_doc(
        doc: &Value,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        Result<VerifiedPlugin, ManifestError>,
    ) {
        let root = tempfile::tempdir().unwrap();
        let (path, mut base) = plugin(root.path(), "probe");
        base.as_object_mut()
            .unwrap()
            .extend(doc.as_object().unwrap().clone());
        write(&path, &base);
        let result = load(&path, &config(root.path()));
        (root, path, result)
    }

    fn rejection(doc: Value) -> (PathBuf, ManifestError) {
        let (_root, path, result) = load_doc(&doc);
        (path, result.unwrap_err())
    }

    #[test]
    fn a_valid_manifest_loads_with_config_defaults_applied_and_limits_capped() {
        let (_root, path, result) = load_doc(&json!({
            "config_schema": {
                "threads": {"type": "integer", "minimum": 1, "default": 10},
                "mode": {"enum": ["fast", "slow"]}
            },
            "sandbox": {"network": true, "memory_mb": 999_999, "timeout_seconds": 30}
        }));
        let plugin = result.unwrap();
        assert_eq!(plugin.manifest.name, "probe");
        assert_eq!(plugin.manifest_path, path);
        assert_eq!(plugin.manifest.sandbox.network, NetworkGrant::Host);
        assert_eq!(
            plugin.entrypoint,
            path.parent()
                .unwrap()
                .canonicalize()
                .unwrap()
                .join("bin/probe")
        );
        let limits = Config::default().limits;
        assert_eq!(
            plugin.limits.memory_mb, limits.ceiling.memory_mb,
            "capped at the ceiling"
        );
        assert_eq!(plugin.limits.timeout_seconds, 30, "lowered by the manifest");
        assert_eq!(plugin.limits.cpu_seconds, limits.cpu_seconds, "defaulted");
        let applied = plugin.config.apply(&Map::new()).unwrap();
        assert_eq!(Value::Object(applied), json!({"threads": 10}));
        let given: Map<String, Value> = json!({"threads": 2, "mode": "slow"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            plugin.config.apply(&given).unwrap(),
            given,
            "given values win over defaults"
        );
    }

    #[test]
    fn a_schema_error_names_the_manifest_file_and_the_field() {
        let (path, err) = rejection(json!({"sandbox": {"memory_mb": "lots"}}));
        let text = err.to_string();
        assert!(matches!(err, ManifestError::Schema { .. }), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("`/sandbox/memory_mb`"), "{text}");
        assert_eq!(err.status(), PluginStatus::Rejected);
        assert_eq!(err.kind(), ErrorKind::PluginRejected);
        assert!(!err.is_security_event());
    }

    #[test]
    fn a_manifest_without_code_hash_is_rejected_naming_code_hash() {
        let root = tempfile::tempdir().unwrap();
        let (path, mut doc) = plugin(root.path(), "probe");
        doc.as_object_mut().unwrap().remove("code_hash");
        write(&path, &doc);
        let err = load(&path, &config(root.path())).unwrap_err().to_string();
        assert!(
            err.contains("\"code_hash\" is a required property"),
            "{err}"
        );
    }

    #[test]
    fn a_misspelt_sandbox_key_is_rejected_rather_than_defaulted() {
        let (_, err) = rejection(json!({"sandbox": {"netwrok": true}}));
        assert!(err.to_string().contains("netwrok"), "{err}");
    }

    #[test]
    fn malformed_json_is_rejected_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("broken.json");
        std::fs::write(&path, b"{\"name\": ").unwrap();
        let err = load(&path, &config(root.path())).unwrap_err();
        assert!(matches!(err, ManifestError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("broken.json"), "{err}");
    }

    #[test]
    fn a_manifest_larger_than_1_mib_is_refused_unread() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("huge.json");
        std::fs::write(&path, vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize]).unwrap();
        let err = load(&path, &config(root.path())).unwrap_err();
        assert!(matches!(err, ManifestError::TooLarge { .. }), "{err}");
    }

    /// Loads the `probe` plugin after `edit` changed its directory (whose parent
    /// is a scratch root) and its manifest.
    fn load_edited(edit: impl FnOnce(&Path, &mut Value)) -> Result<VerifiedPlugin, ManifestError> {
        let root = tempfile::tempdir().unwrap();
        let (path, mut doc) = plugin(root.path(), "probe");
        edit(path.parent().unwrap(), &mut doc);
        write(&path, &doc);
        load(&path, &config(root.path()))
    }

    /// Points the entrypoint at a script outside the plugin directory, reached
    /// by `entrypoint`, after `link` prepared the plugin directory.
    fn escape_attempt(entrypoint: &str, link: impl FnOnce(&Path, &Path)) -> ManifestError {
        load_edited(|dir, doc| {
            let outside = dir.parent().unwrap().join("outside/tool");
            doc["code_hash"] = json!(script(&outside, "exit 0"));
            doc["entrypoint"] = json!(entrypoint.replace("$OUTSIDE", outside.to_str().unwrap()));
            link(dir, &outside);
        })
        .unwrap_err()
    }

    #[test]
    fn an_entrypoint_with_dotdot_is_refused_as_an_escape() {
        let err = escape_attempt("../outside/tool", |_, _| {});
        assert!(
            matches!(err, ManifestError::EntrypointEscape { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("\"../outside/tool\""), "{err}");
        assert!(err.is_security_event());
        assert_eq!(err.status(), PluginStatus::Rejected);
    }

    #[test]
    fn an_absolute_entrypoint_outside_the_manifest_directory_is_an_escape() {
        let err = escape_attempt("$OUTSIDE", |_, _| {});
        assert!(
            matches!(err, ManifestError::EntrypointEscape { .. }),
            "{err}"
        );
    }

    #[test]
    fn an_entrypoint_that_is_a_symlink_is_refused_even_inside_the_directory() {
        let err = escape_attempt("bin/link", |dir, _| {
            std::os::unix::fs::symlink(dir.join("bin/probe"), dir.join("bin/link")).unwrap();
        });
        assert!(
            matches!(err, ManifestError::EntrypointEscape { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn an_entrypoint_below_a_symlinked_directory_is_refused() {
        let err = escape_attempt("lib/tool", |dir, outside| {
            std::os::unix::fs::symlink(outside.parent().unwrap(), dir.join("lib")).unwrap();
        });
        assert!(
            matches!(err, ManifestError::EntrypointEscape { .. }),
            "{err}"
        );
    }

    #[test]
    fn an_absolute_entrypoint_inside_the_manifest_directory_is_accepted() {
        let root = tempfile::tempdir().unwrap();
        let (path, mut doc) = plugin(root.path(), "probe");
        let inside = path.parent().unwrap().join("bin/probe");
        doc["entrypoint"] = json!(inside.to_str().unwrap());
        write(&path, &doc);
        let plugin = load(&path, &config(root.path())).unwrap();
        assert_eq!(plugin.entrypoint, inside.canonicalize().unwrap());
    }

    #[test]
    fn a_missing_or_non_executable_entrypoint_is_rejected_without_a_security_event() {
        let root = tempfile::tempdir().unwrap();
        let (path, mut doc) = plugin(root.path(), "probe");
        doc["entrypoint"] = json!("bin/absent");
        write(&path, &doc);
        let err = load(&path, &config(root.path())).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!err.is_security_event());

        let exe = path.parent().unwrap().join("bin/probe");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
        doc["entrypoint"] = json!("bin/probe");
        write(&path, &doc);
        let err = load(&path, &config(root.path())).unwrap_err();
        assert!(err.to_string().contains("is not executable"), "{err}");
    }

    #[test]
    fn a_code_hash_mismatch_is_its_own_error_and_a_security_event() {
        let (_, err) = rejection(json!({"code_hash": format!("sha256:{}", "ab".repeat(32))}));
        assert!(matches!(err, ManifestError::HashMismatch { .. }), "{err}");
        assert!(
            err.to_string().contains("code_hash does not match"),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::HashMismatch);
        assert!(err.is_security_event());
        assert_eq!(err.status(), PluginStatus::Rejected);
    }

    #[test]
    fn an_expired_manifest_is_rejected_naming_expires_at_and_the_date() {
        let (path, err) = rejection(json!({"expires_at": "2020-02-03T04:05:06Z"}));
        let text = err.to_string();
        assert!(matches!(err, ManifestError::Expired { .. }), "{text}");
        assert!(text.contains("expires_at 2020-02-03T04:05:06Z"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[test]
    fn a_manifest_created_beyond_the_clock_skew_is_not_yet_valid() {
        let soon = secflow_core::clock::format_rfc3339(
            OffsetDateTime::now_utc() + time::Duration::minutes(2),
        );
        let (_root, _path, result) = load_doc(&json!({"created_at": soon}));
        assert!(result.is_ok(), "two minutes ahead is within the skew");

        let later = secflow_core::clock::format_rfc3339(
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        );
        let (_, err) = rejection(json!({"created_at": later}));
        assert!(matches!(err, ManifestError::NotYetValid { .. }), "{err}");
        assert!(
            err.to_string().contains("not yet valid: created_at"),
            "{err}"
        );
    }

    #[test]
    fn check_expiry_at_run_time_judges_against_the_given_clock() {
        let (_root, _path, result) = load_doc(&json!({"expires_at": "2999-01-01T00:00:00Z"}));
        let manifest = result.unwrap().manifest;
        assert!(check_expiry(&manifest, OffsetDateTime::now_utc()).is_ok());
        let after = parse_rfc3339("2999-01-01T00:00:01Z").unwrap();
        let err = check_expiry(&manifest, after).unwrap_err().to_string();
        assert!(
            err.contains("plugin probe 1.0.0") && err.contains("expires_at"),
            "{err}"
        );
    }

    /// A `probe` plugin whose manifest (after `edit`) is signed by `signer`,
    /// and a config trusting `trusted` (public key files in the scratch root).
    fn signed_probe(
        signer: &ed25519_dalek::SigningKey,
        trusted: &[&ed25519_dalek::SigningKey],
        edit: impl FnOnce(&mut Value),
    ) -> (tempfile::TempDir, PathBuf, Config) {
        let root = tempfile::tempdir().unwrap();
        let (path, mut doc) = plugin(root.path(), "probe");
        edit(&mut doc);
        secflow_trust::sign_manifest(doc.as_object_mut().unwrap(), signer).unwrap();
        write(&path, &doc);
        let mut config = config(root.path());
        config.trust.require_signatures = true;
        for (i, key) in trusted.iter().enumerate() {
            let file = root.path().join(format!(".key-{i}.pub"));
            std::fs::write(
                &file,
                secflow_trust::keys::public_key_pem(&key.verifying_key()),
            )
            .unwrap();
            config.trust.trusted_keys.push(file);
        }
        (root, path, config)
    }

    #[test]
    fn a_manifest_signed_by_a_trusted_key_loads_naming_the_key() {
        let key = secflow_trust::keys::generate().unwrap();
        let (_root, path, config) = signed_probe(&key, &[&key], |_| {});
        let plugin = load(&path, &config).unwrap();
        assert_eq!(
            plugin.signed_by,
            Some(KeyId::of(&key.verifying_key())),
            "discovery records who signed"
        );
        let signed = verify_signed(&path, &TrustStore::with_keys([key.verifying_key()])).unwrap();
        assert_eq!(signed.key_id, KeyId::of(&key.verifying_key()));
    }

    #[test]
    fn a_signed_manifest_edited_to_ask_for_network_is_rejected_as_a_security_event() {
        let key = secflow_trust::keys::generate().unwrap();
        let (_root, path, config) = signed_probe(&key, &[&key], |_| {});
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        doc["sandbox"]["network"] = json!(true);
        write(&path, &doc);
        let err = load(&path, &config).unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::Signature {
                    problem: SignatureError::Unverified { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("the ed25519 signature of plugin probe is rejected"),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::SignatureInvalid);
        assert!(err.is_security_event());
        assert_eq!(err.status(), PluginStatus::Rejected);
    }

    #[test]
    fn network_is_false_true_or_targets_and_bool_manifests_parse_as_before() {
        for (value, grant) in [
            (json!(false), NetworkGrant::None),
            (json!(true), NetworkGrant::Host),
            (json!("targets"), NetworkGrant::Targets),
        ] {
            let (_root, _path, result) = load_doc(&json!({"sandbox": {"network": value}}));
            let plugin = result.unwrap();
            assert_eq!(plugin.manifest.sandbox.network, grant);
            assert_eq!(
                serde_json::to_value(plugin.manifest.sandbox.network).unwrap(),
                value,
                "written back as read"
            );
        }
        let (_root, _path, result) = load_doc(&json!({"sandbox": {}}));
        assert_eq!(result.unwrap().manifest.sandbox.network, NetworkGrant::None);
        let (_, err) = rejection(json!({"sandbox": {"network": "everything"}}));
        assert!(err.to_string().contains("network"), "{err}");
    }

    #[test]
    fn egress_entries_are_checked_naming_the_entry_and_need_network_targets() {
        let (_root, _path, result) = load_doc(&json!({"sandbox": {
            "network": "targets", "egress": ["10.0.0.0/8", "[::1]:53", "updates.example:443"]
        }}));
        assert_eq!(result.unwrap().manifest.sandbox.egress.len(), 3);
        let (_, err) = rejection(json!({"sandbox": {
            "network": "targets", "egress": ["10.0.0.0/8", "10.0.0.1/8"]
        }}));
        assert!(
            matches!(err, ManifestError::Egress { index: 1, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("sandbox.egress[1] \"10.0.0.1/8\"")
                && err.to_string().contains("host bits are set"),
            "{err}"
        );
        let (_, err) = rejection(json!({"sandbox": {"network": true, "egress": ["10.0.0.0/8"]}}));
        assert!(
            err.to_string().contains(
                "sandbox.egress is only used with sandbox.network \"targets\" (it is true)"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_signed_targets_manifest_verifies_and_widening_its_egress_breaks_the_signature() {
        let key = secflow_trust::keys::generate().unwrap();
        let (_root, path, config) = signed_probe(&key, &[&key], |doc| {
            doc["sandbox"]["network"] = json!("targets");
            doc["sandbox"]["egress"] = json!(["127.0.0.2:53"]);
        });
        let plugin = load(&path, &config).unwrap();
        assert_eq!(plugin.manifest.sandbox.network, NetworkGrant::Targets);
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        doc["sandbox"]["egress"] = json!(["0.0.0.0/0"]);
        write(&path, &doc);
        let err = load(&path, &config).unwrap_err();
        assert!(matches!(err, ManifestError::Signature { .. }), "{err}");
    }

    #[test]
    fn an_ed25519_manifest_is_verified_even_when_signatures_are_not_required() {
        let (signer, trusted) = (
            secflow_trust::keys::generate().unwrap(),
            secflow_trust::keys::generate().unwrap(),
        );
        let (_root, path, mut config) = signed_probe(&signer, &[&trusted], |_| {});
        config.trust.require_signatures = false;
        let err = load(&path, &config).unwrap_err();
        assert!(matches!(err, ManifestError::Signature { .. }), "{err}");
    }

    #[test]
    fn an_ed25519_manifest_without_a_signature_is_rejected_naming_the_missing_signature() {
        let (_, err) = rejection(json!({"signature_type": "ed25519"}));
        assert!(
            matches!(
                err,
                ManifestError::Signature {
                    problem: SignatureError::Missing,
                    ..
                }
            ),
            "{err}"
        );
        let (_, err) = rejection(json!({"signature_type": "ed25519", "signature": "ed25519:AAAA"}));
        assert!(
            err.to_string()
                .contains("3 bytes long; an ed25519 signature is 64"),
            "{err}"
        );
    }

    #[test]
    fn verify_refuses_a_sha256_manifest_as_unsigned() {
        let root = tempfile::tempdir().unwrap();
        let (path, doc) = plugin(root.path(), "probe");
        write(&path, &doc);
        let key = secflow_trust::keys::generate().unwrap();
        let err = verify_signed(&path, &TrustStore::with_keys([key.verifying_key()])).unwrap_err();
        assert!(
            matches!(err, ManifestError::SignatureRequired { .. }),
            "{err}"
        );
    }

    #[test]
    fn expiry_and_not_yet_valid_are_security_events() {
        let (_, err) = rejection(json!({"expires_at": "2020-02-03T04:05:06Z"}));
        assert!(err.is_security_event(), "{err}");
        let later = secflow_core::clock::format_rfc3339(
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        );
        let (_, err) = rejection(json!({"created_at": later}));
        assert!(err.is_security_event(), "{err}");
    }

    #[test]
    fn require_signatures_rejects_a_sha256_only_manifest() {
        let root = tempfile::tempdir().unwrap();
        let (path, doc) = plugin(root.path(), "probe");
        write(&path, &doc);
        let mut config = config(root.path());
        assert!(load(&path, &config).is_ok());
        config.trust.require_signatures = true;
        let err = load(&path, &config).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("trust.require_signatures is on")
                && text.contains("no ed25519 signature"),
            "{text}"
        );
        assert_eq!(err.kind(), ErrorKind::SignatureInvalid);
    }

    #[test]
    fn a_missing_dependency_makes_the_plugin_unavailable_naming_the_executable() {
        let root = tempfile::tempdir().unwrap();
        let (path, mut doc) = plugin(root.path(), "probe");
        script(&root.path().join(".path/nmap"), "exit 0");
        doc["dependencies"] = json!(["nmap", "feroxbuster"]);
        write(&path, &doc);
        let err = load(&path, &config(root.path())).unwrap_err();
        assert!(
            matches!(err, ManifestError::DependencyMissing { ref dependency, .. } if dependency == "feroxbuster")
        );
        assert!(err.to_string().contains("\"feroxbuster\""), "{err}");
        assert_eq!(err.status(), PluginStatus::Unavailable);
        assert_eq!(err.kind(), ErrorKind::DependencyMissing);

        doc["dependencies"] = json!(["nmap"]);
        write(&path, &doc);
        let plugin = load(&path, &config(root.path())).unwrap();
        assert_eq!(plugin.dependencies, vec![root.path().join(".path/nmap")]);
    }

    #[test]
    fn a_relative_read_path_is_rejected_naming_its_index() {
        let (_, err) =
            rejection(json!({"sandbox": {"read_paths": ["/usr/share/wordlists", "wordlists"]}}));
        assert!(err.to_string().contains("sandbox.read_paths[1]"), "{err}");
    }

    #[test]
    fn a_config_default_that_violates_its_own_schema_names_the_key() {
        let (_, err) = rejection(
            json!({"config_schema": {"threads": {"type": "integer", "default": "many"}}}),
        );
        assert!(matches!(err, ManifestError::ConfigSchema { .. }), "{err}");
        assert!(
            err.to_string().contains("config_schema.threads.default"),
            "{err}"
        );
    }

    #[test]
    fn an_invalid_config_property_schema_names_the_key() {
        let (_, err) = rejection(json!({"config_schema": {"threads": {"type": "integr"}}}));
        assert!(
            err.to_string()
                .contains("config_schema.threads is not a valid JSON schema"),
            "{err}"
        );
    }

    #[test]
    fn a_run_config_with_an_unknown_or_invalid_key_is_refused_naming_it() {
        let schema = ConfigSchema::new(
            json!({"threads": {"type": "integer", "minimum": 1, "default": 4}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let unknown = schema
            .apply(json!({"thraeds": 8}).as_object().unwrap())
            .unwrap_err();
        assert!(unknown.contains("thraeds"), "{unknown}");
        let invalid = schema
            .apply(json!({"threads": 0}).as_object().unwrap())
            .unwrap_err();
        assert!(invalid.starts_with("config `/threads`: "), "{invalid}");
    }
}
