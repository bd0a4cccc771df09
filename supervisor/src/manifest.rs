//! Plugin manifests: parse, schema-check, resolve and verify one manifest file.
//!
//! Pure policy apart from reading the manifest and hashing its entrypoint.

use std::path::PathBuf;

use secflow_plugin_sdk::protocol::Category;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{RequestedLimits, RunLimits};

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

/// The manifest's `sandbox` block, as written (limits not yet resolved).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub filesystem: FilesystemMode,
    #[serde(default)]
    pub read_paths: Vec<PathBuf>,
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
    pub config: (),
}
