//! The repository index: the one signed document of a repository, and the
//! checks a fetched index must pass before anything in it is believed.
//!
//! The index plays the parts of TUF's timestamp and snapshot roles at once:
//! its `expires_at` bounds how long a captured copy can be replayed (a mirror
//! that stops updating is noticed), and its `version` only ever grows, so a
//! host that has seen version N refuses any index below N, and refuses a
//! different document under the same N. The signature is ed25519 over the
//! RFC 8785 canonical form of the document without its `signature` member,
//! exactly as a manifest's (docs/signing.md), so one implementation signs and
//! verifies both.
//!
//! The signature is checked first, on the parsed JSON object, before any field
//! of the document is interpreted; then the shape, the bounds and every name,
//! version, requirement, path and digest.

use std::collections::BTreeMap;
use std::str::FromStr as _;

use ed25519_dalek::{Signer as _, SigningKey};
use secflow_core::clock::{format_rfc3339, parse_rfc3339};
use secflow_trust::store::{decode_signature, encode_signature};
use secflow_trust::{check_hash_format, signed_bytes, KeyId, SignatureError, TrustStore};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// The index's file name at the root of a repository.
pub const INDEX_FILE: &str = "index.json";
/// The format this build reads and writes (`secflow_repository`).
pub const FORMAT_VERSION: u64 = 1;
/// Largest index read: thousands of plugins with dozens of versions each fit.
pub const MAX_INDEX_BYTES: u64 = 8 << 20;
/// Most plugins in one index.
pub const MAX_PLUGINS: usize = 4096;
/// Most versions of one plugin in one index.
pub const MAX_VERSIONS: usize = 256;
/// Most plugin dependencies of one release.
pub const MAX_DEPENDENCIES: usize = 32;
/// Largest plugin executable a repository may list.
pub const MAX_BINARY_BYTES: u64 = 512 << 20;
/// Largest manifest a repository may list (the supervisor's own limit).
pub const MAX_MANIFEST_BYTES: u64 = secflow_manifest::MAX_MANIFEST_BYTES;
/// Longest path of an artifact inside a repository.
const MAX_PATH_CHARS: usize = 1024;
/// Longest description kept from a manifest.
const MAX_DESCRIPTION_CHARS: usize = 4096;
/// How far in the future `generated_at` may be (clock skew).
const GENERATED_AT_SKEW: time::Duration = time::Duration::minutes(5);

/// A signed repository index as written in `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// The format version, [`FORMAT_VERSION`].
    pub secflow_repository: u64,
    /// Grows by at least one with every new index of the repository.
    pub version: u64,
    /// RFC 3339.
    pub generated_at: String,
    /// RFC 3339; past it the index is refused.
    pub expires_at: String,
    /// Plugin name → its releases.
    pub plugins: BTreeMap<String, PluginReleases>,
}

/// The releases of one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginReleases {
    /// Version (semver, as written in the manifest) → release.
    pub versions: BTreeMap<String, Release>,
}

/// One version of one plugin: what to download and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The manifest's `category`.
    pub category: String,
    /// The manifest's `description`.
    #[serde(default)]
    pub description: String,
    /// The manifest's `plugin_dependencies`: plugin name → semver requirement.
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
    /// The signed manifest.
    pub manifest: Artifact,
    /// The executable the manifest's `entrypoint` names.
    pub binary: Artifact,
}

/// A file of the repository, with the digest and size it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Relative to the repository root, `/`-separated.
    pub path: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// In bytes.
    pub size: u64,
}

/// What a host remembers of the newest index it accepted from a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenIndex {
    pub version: u64,
    /// `sha256:<hex>` of the index file.
    pub digest: String,
    pub expires_at: String,
}

/// An index whose signature, shape, freshness and version were checked.
#[derive(Debug, Clone)]
pub struct VerifiedIndex {
    pub index: Index,
    /// The key that signed it.
    pub signed_by: KeyId,
    /// `sha256:<hex>` of the index file as fetched.
    pub digest: String,
}

impl VerifiedIndex {
    /// What to remember of it.
    pub fn seen(&self) -> SeenIndex {
        SeenIndex {
            version: self.index.version,
            digest: self.digest.clone(),
            expires_at: self.index.expires_at.clone(),
        }
    }

    /// The release `name` `version`, if the index lists it.
    pub fn release(&self, name: &str, version: &semver::Version) -> Option<&Release> {
        self.index
            .plugins
            .get(name)?
            .versions
            .get(&version.to_string())
    }
}

/// Why an index is refused.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index of repository {repository} is larger than {limit} bytes")]
    TooLarge { repository: String, limit: u64 },
    #[error("index of repository {repository} is not a JSON object: {reason}")]
    Parse { repository: String, reason: String },
    #[error("index of repository {repository} has no signature member, and an unsigned index is never trusted")]
    Unsigned { repository: String },
    #[error("index of repository {repository} has a malformed signature: {problem}")]
    MalformedSignature {
        repository: String,
        problem: SignatureError,
    },
    #[error("index of repository {repository} is not signed by a trusted key: {problem} (the repository's keys: {repository_keys}; each must also be listed in trust.trusted_keys)")]
    Untrusted {
        repository: String,
        problem: SignatureError,
        repository_keys: String,
    },
    #[error("index of repository {repository} is signed by {key_id}, a key this host trusts but not for this repository (its keys: {repository_keys})")]
    WrongKey {
        repository: String,
        key_id: KeyId,
        repository_keys: String,
    },
    #[error("index of repository {repository} does not have the repository index shape: {reason}")]
    Shape { repository: String, reason: String },
    #[error("index of repository {repository} is format {found}; this build reads format {FORMAT_VERSION}")]
    Format { repository: String, found: u64 },
    #[error("index of repository {repository}: {reason}")]
    Invalid { repository: String, reason: String },
    #[error("index of repository {repository} expired at {expires_at}: the repository (or a mirror in between) has stopped publishing fresh indexes; refusing a possibly replayed copy")]
    Expired {
        repository: String,
        expires_at: String,
    },
    #[error("index of repository {repository} was generated at {generated_at}, in the future; check this host's clock")]
    FromTheFuture {
        repository: String,
        generated_at: String,
    },
    #[error("index of repository {repository} is version {found}, older than version {seen} already accepted on this host: refusing a rolled-back index")]
    RolledBack {
        repository: String,
        found: u64,
        seen: u64,
    },
    #[error("index of repository {repository} is version {version} with different contents than the version {version} accepted on this host ({seen_digest}, now {found_digest}): a repository must raise the version with every change")]
    VersionReused {
        repository: String,
        version: u64,
        seen_digest: String,
        found_digest: String,
    },
    #[error("cannot sign the index: {0}")]
    Canonical(#[from] secflow_trust::jcs::JcsError),
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The index document with its `signature` member, as `index.json` holds it.
pub fn sign_index(index: &Index, key: &SigningKey) -> Result<Vec<u8>, IndexError> {
    let Value::Object(mut doc) = serde_json::to_value(index).map_err(|e| IndexError::Shape {
        repository: "being built".into(),
        reason: e.to_string(),
    })?
    else {
        unreachable!("an Index serializes to an object")
    };
    let message = signed_bytes(&doc)?;
    let signature = key.sign(&message);
    doc.insert(
        "signature".into(),
        Value::String(encode_signature(&signature)),
    );
    let mut text =
        serde_json::to_vec_pretty(&Value::Object(doc)).map_err(|e| IndexError::Shape {
            repository: "being built".into(),
            reason: e.to_string(),
        })?;
    text.push(b'\n');
    Ok(text)
}

/// The key ids a repository's index may be signed with.
#[derive(Debug, Clone, Copy)]
pub struct IndexTrust<'a> {
    /// The host's trust store (`[trust]`): where the public keys come from.
    pub store: &'a TrustStore,
    /// The repository's `trusted_keys`: which of those may sign its index.
    pub repository_keys: &'a [KeyId],
}

/// Checks a fetched index, in this order: size, JSON object, signature (by a
/// key both the host and the repository trust), shape, format, contents,
/// dates against `now`, and version against what was `seen` before.
pub fn verify_index(
    repository: &str,
    bytes: &[u8],
    trust: IndexTrust<'_>,
    now: OffsetDateTime,
    seen: Option<&SeenIndex>,
) -> Result<VerifiedIndex, IndexError> {
    let repository_name = || repository.to_string();
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(IndexError::TooLarge {
            repository: repository_name(),
            limit: MAX_INDEX_BYTES,
        });
    }
    let doc: Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| IndexError::Parse {
        repository: repository_name(),
        reason: e.to_string(),
    })?;
    let signed_by = check_index_signature(repository, &doc, trust)?;
    let mut unsigned = doc;
    unsigned.remove("signature");
    let index: Index =
        serde_json::from_value(Value::Object(unsigned)).map_err(|e| IndexError::Shape {
            repository: repository_name(),
            reason: e.to_string(),
        })?;
    if index.secflow_repository != FORMAT_VERSION {
        return Err(IndexError::Format {
            repository: repository_name(),
            found: index.secflow_repository,
        });
    }
    check_contents(&index).map_err(|reason| IndexError::Invalid {
        repository: repository_name(),
        reason,
    })?;
    check_dates(repository, &index, now)?;
    let digest = digest_of(bytes);
    if let Some(seen) = seen {
        if index.version < seen.version {
            return Err(IndexError::RolledBack {
                repository: repository_name(),
                found: index.version,
                seen: seen.version,
            });
        }
        if index.version == seen.version && digest != seen.digest {
            return Err(IndexError::VersionReused {
                repository: repository_name(),
                version: index.version,
                seen_digest: seen.digest.clone(),
                found_digest: digest,
            });
        }
    }
    Ok(VerifiedIndex {
        index,
        signed_by,
        digest,
    })
}

fn check_index_signature(
    repository: &str,
    doc: &Map<String, Value>,
    trust: IndexTrust<'_>,
) -> Result<KeyId, IndexError> {
    let repository_keys = || {
        if trust.repository_keys.is_empty() {
            "none configured".to_string()
        } else {
            trust
                .repository_keys
                .iter()
                .map(KeyId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let text = doc
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| IndexError::Unsigned {
            repository: repository.to_string(),
        })?;
    let signature = decode_signature(text).map_err(|problem| IndexError::MalformedSignature {
        repository: repository.to_string(),
        problem,
    })?;
    let message = signed_bytes(doc).map_err(|e| IndexError::MalformedSignature {
        repository: repository.to_string(),
        problem: SignatureError::Canonical(e),
    })?;
    let key_id = trust
        .store
        .verify(&message, &signature)
        .map_err(|problem| IndexError::Untrusted {
            repository: repository.to_string(),
            problem,
            repository_keys: repository_keys(),
        })?;
    if !trust.repository_keys.contains(&key_id) {
        return Err(IndexError::WrongKey {
            repository: repository.to_string(),
            key_id,
            repository_keys: repository_keys(),
        });
    }
    Ok(key_id)
}

fn check_dates(repository: &str, index: &Index, now: OffsetDateTime) -> Result<(), IndexError> {
    let date = |field: &str, value: &str| {
        parse_rfc3339(value).map_err(|_| IndexError::Invalid {
            repository: repository.to_string(),
            reason: format!("{field} {value:?} is not an RFC 3339 date-time"),
        })
    };
    let generated_at = date("generated_at", &index.generated_at)?;
    let expires_at = date("expires_at", &index.expires_at)?;
    if expires_at <= now {
        return Err(IndexError::Expired {
            repository: repository.to_string(),
            expires_at: index.expires_at.clone(),
        });
    }
    if generated_at > now + GENERATED_AT_SKEW {
        return Err(IndexError::FromTheFuture {
            repository: repository.to_string(),
            generated_at: index.generated_at.clone(),
        });
    }
    Ok(())
}

/// Every name, version, requirement, path, digest and count of `index`.
fn check_contents(index: &Index) -> Result<(), String> {
    if index.plugins.len() > MAX_PLUGINS {
        return Err(format!(
            "it lists {} plugins, more than the {MAX_PLUGINS} allowed",
            index.plugins.len()
        ));
    }
    for (name, releases) in &index.plugins {
        check_plugin_name(name).map_err(|reason| format!("plugin {name:?}: {reason}"))?;
        if releases.versions.is_empty() {
            return Err(format!("plugin {name} lists no version"));
        }
        if releases.versions.len() > MAX_VERSIONS {
            return Err(format!(
                "plugin {name} lists {} versions, more than the {MAX_VERSIONS} allowed",
                releases.versions.len()
            ));
        }
        for (version, release) in &releases.versions {
            let what = format!("plugin {name} {version}");
            let parsed = semver::Version::from_str(version)
                .map_err(|e| format!("{what}: the version is not semver: {e}"))?;
            if parsed.to_string() != *version {
                return Err(format!(
                    "{what}: the version is not written canonically (as {parsed})"
                ));
            }
            check_release(release).map_err(|reason| format!("{what}: {reason}"))?;
        }
    }
    Ok(())
}

fn check_release(release: &Release) -> Result<(), String> {
    if !matches!(
        release.category.as_str(),
        "detector" | "enricher" | "analytics"
    ) {
        return Err(format!(
            "category {:?} is not a plugin category",
            release.category
        ));
    }
    if release.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(format!(
            "description is longer than {MAX_DESCRIPTION_CHARS} characters"
        ));
    }
    if release.dependencies.len() > MAX_DEPENDENCIES {
        return Err(format!(
            "it has {} dependencies, more than the {MAX_DEPENDENCIES} allowed",
            release.dependencies.len()
        ));
    }
    for (dependency, requirement) in &release.dependencies {
        check_plugin_name(dependency)
            .map_err(|reason| format!("dependency {dependency:?}: {reason}"))?;
        parse_requirement(requirement)
            .map_err(|reason| format!("dependency {dependency}: {reason}"))?;
    }
    for (which, artifact, limit) in [
        ("manifest", &release.manifest, MAX_MANIFEST_BYTES),
        ("binary", &release.binary, MAX_BINARY_BYTES),
    ] {
        check_artifact_path(&artifact.path).map_err(|reason| format!("{which} path: {reason}"))?;
        check_hash_format(&artifact.digest).map_err(|e| format!("{which} digest: {e}"))?;
        if artifact.size > limit {
            return Err(format!(
                "{which} is {} bytes, more than the {limit} allowed",
                artifact.size
            ));
        }
    }
    Ok(())
}

/// A plugin name as the manifest schema allows it.
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err("a plugin name is 1 to 64 lowercase letters, digits, '-' and '_', starting with a letter or a digit".into())
    }
}

/// A semver requirement (Cargo's syntax: `^1.2`, `~1.2.3`, `>=1, <3`, `=1.0.0`, `*`).
pub fn parse_requirement(text: &str) -> Result<semver::VersionReq, String> {
    if text.len() > 256 {
        return Err("the version requirement is longer than 256 characters".into());
    }
    semver::VersionReq::parse(text)
        .map_err(|e| format!("{text:?} is not a semver version requirement: {e}"))
}

/// A relative, `/`-separated path of plain components: no `..`, no `.`, no
/// empty component, no backslash, not absolute.
pub fn check_artifact_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PATH_CHARS {
        return Err(format!("{path:?} must be 1 to {MAX_PATH_CHARS} characters"));
    }
    let plain = path.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    });
    if plain {
        Ok(())
    } else {
        Err(format!(
            "{path:?} is not a relative path of plain names (letters, digits, '.', '_', '-', '+')"
        ))
    }
}

/// `now` plus `valid_for`, as the index writes dates.
pub fn expiry(now: OffsetDateTime, valid_for: time::Duration) -> String {
    format_rfc3339(now + valid_for)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_trust::keys;

    fn index(version: u64, now: OffsetDateTime) -> Index {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let release = Release {
            category: "detector".into(),
            description: "probe".into(),
            dependencies: BTreeMap::from([("helper".to_string(), "^1".to_string())]),
            manifest: Artifact {
                path: "plugins/probe/1.0.0/manifest.json".into(),
                digest: digest.clone(),
                size: 10,
            },
            binary: Artifact {
                path: "plugins/probe/1.0.0/probe".into(),
                digest,
                size: 10,
            },
        };
        Index {
            secflow_repository: FORMAT_VERSION,
            version,
            generated_at: format_rfc3339(now),
            expires_at: expiry(now, time::Duration::days(1)),
            plugins: BTreeMap::from([(
                "probe".to_string(),
                PluginReleases {
                    versions: BTreeMap::from([("1.0.0".to_string(), release)]),
                },
            )]),
        }
    }

    struct Setup {
        key: SigningKey,
        store: TrustStore,
        ids: Vec<KeyId>,
    }

    fn setup() -> Setup {
        let key = keys::generate().unwrap();
        let store = TrustStore::with_keys([key.verifying_key()]);
        let ids = vec![KeyId::of(&key.verifying_key())];
        Setup { key, store, ids }
    }

    fn verify(
        s: &Setup,
        bytes: &[u8],
        now: OffsetDateTime,
        seen: Option<&SeenIndex>,
    ) -> Result<VerifiedIndex, IndexError> {
        let trust = IndexTrust {
            store: &s.store,
            repository_keys: &s.ids,
        };
        verify_index("main", bytes, trust, now, seen)
    }

    #[test]
    fn a_signed_index_verifies_and_names_its_key() {
        let s = setup();
        let now = OffsetDateTime::now_utc();
        let bytes = sign_index(&index(3, now), &s.key).unwrap();
        let verified = verify(&s, &bytes, now, None).unwrap();
        assert_eq!(verified.signed_by, s.ids[0]);
        assert_eq!(verified.index.version, 3);
        assert_eq!(verified.digest, digest_of(&bytes));
    }

    #[test]
    fn any_change_after_signing_is_refused() {
        let s = setup();
        let now = OffsetDateTime::now_utc();
        let bytes = sign_index(&index(3, now), &s.key).unwrap();
        let mut doc: Map<String, Value> = serde_json::from_slice(&bytes).unwrap();
        doc["plugins"]["probe"]["versions"]["1.0.0"]["binary"]["digest"] =
            Value::String(format!("sha256:{}", "cd".repeat(32)));
        let tampered = serde_json::to_vec(&doc).unwrap();
        let err = verify(&s, &tampered, now, None).unwrap_err();
        assert!(matches!(err, IndexError::Untrusted { .. }), "{err}");
    }

    #[test]
    fn a_key_the_host_trusts_but_the_repository_does_not_is_refused() {
        let s = setup();
        let other = keys::generate().unwrap();
        let store = TrustStore::with_keys([s.key.verifying_key(), other.verifying_key()]);
        let now = OffsetDateTime::now_utc();
        let bytes = sign_index(&index(1, now), &other).unwrap();
        let trust = IndexTrust {
            store: &store,
            repository_keys: &s.ids,
        };
        let err = verify_index("main", &bytes, trust, now, None).unwrap_err();
        assert!(matches!(err, IndexError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains(s.ids[0].as_str()), "{err}");
    }

    #[test]
    fn an_expired_index_and_one_from_the_future_are_refused() {
        let s = setup();
        let now = OffsetDateTime::now_utc();
        let bytes = sign_index(&index(1, now), &s.key).unwrap();
        let later = now + time::Duration::days(2);
        let err = verify(&s, &bytes, later, None).unwrap_err();
        assert!(matches!(err, IndexError::Expired { .. }), "{err}");
        let earlier = now - time::Duration::hours(1);
        let err = verify(&s, &bytes, earlier, None).unwrap_err();
        assert!(matches!(err, IndexError::FromTheFuture { .. }), "{err}");
    }

    #[test]
    fn an_older_version_or_a_changed_document_under_a_seen_version_is_refused() {
        let s = setup();
        let now = OffsetDateTime::now_utc();
        let v5 = verify(&s, &sign_index(&index(5, now), &s.key).unwrap(), now, None)
            .unwrap()
            .seen();
        let v4 = sign_index(&index(4, now), &s.key).unwrap();
        let err = verify(&s, &v4, now, Some(&v5)).unwrap_err();
        assert!(
            matches!(
                err,
                IndexError::RolledBack {
                    found: 4,
                    seen: 5,
                    ..
                }
            ),
            "{err}"
        );
        let mut changed = index(5, now);
        changed.plugins.clear();
        let err = verify(&s, &sign_index(&changed, &s.key).unwrap(), now, Some(&v5)).unwrap_err();
        assert!(matches!(err, IndexError::VersionReused { .. }), "{err}");
        let same = sign_index(&index(5, now), &s.key).unwrap();
        assert!(
            verify(&s, &same, now, Some(&v5)).is_ok(),
            "the same index again is fine"
        );
    }

    #[test]
    fn unsafe_paths_bad_versions_and_bad_requirements_are_named() {
        let s = setup();
        let now = OffsetDateTime::now_utc();
        type Change = fn(&mut Index);
        let cases: [(&str, Change); 4] = [
            ("../", |i| {
                i.plugins
                    .get_mut("probe")
                    .unwrap()
                    .versions
                    .get_mut("1.0.0")
                    .unwrap()
                    .binary
                    .path = "../../etc/passwd".into()
            }),
            ("not semver", |i| {
                let r = i.plugins["probe"].versions["1.0.0"].clone();
                i.plugins
                    .get_mut("probe")
                    .unwrap()
                    .versions
                    .insert("1.0".into(), r);
            }),
            ("not a semver version requirement", |i| {
                i.plugins
                    .get_mut("probe")
                    .unwrap()
                    .versions
                    .get_mut("1.0.0")
                    .unwrap()
                    .dependencies
                    .insert("helper".into(), "one point oh".into());
            }),
            ("plugin name", |i| {
                let r = i.plugins["probe"].clone();
                i.plugins.insert("Bad Name".into(), r);
            }),
        ];
        for (needle, change) in cases {
            let mut doc = index(1, now);
            change(&mut doc);
            let err = verify(&s, &sign_index(&doc, &s.key).unwrap(), now, None).unwrap_err();
            assert!(matches!(err, IndexError::Invalid { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(needle) || (needle == "../" && text.contains("plain names")),
                "{needle}: {text}"
            );
        }
    }

    #[test]
    fn an_unsigned_index_is_refused_before_its_contents_are_read() {
        let s = setup();
        let now = OffsetDateTime::now_utc();
        let bytes = serde_json::to_vec(&index(1, now)).unwrap();
        let err = verify(&s, &bytes, now, None).unwrap_err();
        assert!(matches!(err, IndexError::Unsigned { .. }), "{err}");
    }
}
