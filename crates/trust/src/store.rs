//! The trust store and manifest signatures: which keys this host trusts, which
//! are revoked, and whether a signature was made by one of them.
//!
//! The store is loaded once per discovery from `[trust]` and then consulted for
//! every manifest, without I/O. It fails closed: a trusted key file that cannot
//! be read is left out (and named in every rejection it may explain), and a
//! revocation entry that cannot be read stops every signature from verifying,
//! since nobody can tell which key it meant to revoke.
//!
//! A manifest's signature (contracts §4) is `"ed25519:" + base64(signature)`
//! (standard alphabet, padded) over [`signed_bytes`]: the RFC 8785 canonical
//! JSON of the whole manifest without its `signature` member. The manifest
//! names no key; the signature is checked against each trusted key in turn.

use std::collections::BTreeSet;
use std::path::PathBuf;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde_json::{Map, Value};

use super::jcs::{self, JcsError};
use super::keys::{self, KeyId};
use secflow_core::config::{RevokedKey, TrustConfig};

/// How a signature value starts.
pub const SIGNATURE_PREFIX: &str = "ed25519:";

/// Why a manifest signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature_type is ed25519 but the manifest has no signature")]
    Missing,
    #[error("signature does not start with \"ed25519:\"")]
    Prefix,
    #[error("signature is not valid base64 (standard alphabet, padded): {reason}")]
    Base64 { reason: String },
    #[error("signature is {length} bytes long; an ed25519 signature is 64")]
    Length { length: usize },
    #[error("the manifest has no canonical form: {0}")]
    Canonical(JcsError),
    #[error("no key is trusted (trust.trusted_keys is empty{problems}), so no ed25519 signature can be verified")]
    NoTrustedKeys { problems: String },
    #[error("signed with key {key_id}, which is revoked (trust.revoked_keys)")]
    Revoked { key_id: KeyId },
    #[error("the signature verifies under none of the trusted keys ({trusted}): it was made with a key this host does not trust, or the manifest was changed after it was signed{problems}")]
    Unverified { trusted: String, problems: String },
    #[error("no signature is trusted while revocation entry {entry} cannot be loaded ({reason}); fix or remove it in trust.revoked_keys")]
    RevocationUnreadable { entry: String, reason: String },
}

/// `"ed25519:" + base64(signature)`.
pub fn encode_signature(signature: &Signature) -> String {
    format!(
        "{SIGNATURE_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    )
}

/// Reads a signature value written as [`encode_signature`] writes it; base64
/// must be canonical (padded, no stray bits), so a signature has one spelling.
pub fn decode_signature(text: &str) -> Result<Signature, SignatureError> {
    let encoded = text
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(SignatureError::Prefix)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| SignatureError::Base64 {
            reason: e.to_string(),
        })?;
    let bytes: [u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| SignatureError::Length {
            length: bytes.len(),
        })?;
    Ok(Signature::from_bytes(&bytes))
}

/// The bytes a manifest signature covers: the RFC 8785 canonical form of the
/// manifest object without its `signature` member, in UTF-8.
pub fn signed_bytes(manifest: &Map<String, Value>) -> Result<Vec<u8>, JcsError> {
    let mut unsigned = manifest.clone();
    unsigned.remove("signature");
    Ok(jcs::canonicalize(&Value::Object(unsigned))?.into_bytes())
}

/// Signs a manifest document in place: sets `signature_type` to `ed25519`,
/// then `signature` over everything else. Returns the signing key's id.
pub fn sign_manifest(
    manifest: &mut Map<String, Value>,
    key: &SigningKey,
) -> Result<KeyId, JcsError> {
    manifest.insert("signature_type".into(), Value::String("ed25519".into()));
    let message = signed_bytes(manifest)?;
    let signature = key.sign(&message);
    manifest.insert(
        "signature".into(),
        Value::String(encode_signature(&signature)),
    );
    Ok(KeyId::of(&key.verifying_key()))
}

/// A public key with its id and where it came from.
#[derive(Debug, Clone)]
struct Key {
    id: KeyId,
    key: VerifyingKey,
}

/// The keys a host trusts and the ones it has revoked.
#[derive(Debug, Default)]
pub struct TrustStore {
    /// Trusted and not revoked.
    trusted: Vec<Key>,
    /// Keys known to be revoked (from trusted or revoked key files), to name
    /// the key of a signature that verifies under one.
    revoked_keys: Vec<Key>,
    /// Trusted key files that could not be loaded.
    problems: Vec<String>,
    /// A revocation entry that could not be loaded, and why.
    unreadable_revocation: Option<(String, String)>,
}

impl TrustStore {
    /// Loads the key files named by `[trust]`. Problems are logged and kept:
    /// they appear in the reason of every signature they may have affected.
    pub fn load(config: &TrustConfig) -> TrustStore {
        let mut store = TrustStore::default();
        let mut revoked_ids = BTreeSet::new();
        for entry in &config.revoked_keys {
            match entry {
                RevokedKey::Id(id) => {
                    revoked_ids.insert(id.clone());
                }
                RevokedKey::File(path) => match keys::read_public_key(path) {
                    Ok(key) => {
                        let id = KeyId::of(&key);
                        revoked_ids.insert(id.clone());
                        store.revoked_keys.push(Key { id, key });
                    }
                    Err(e) => {
                        let reason = secflow_core::error_chain(&e);
                        tracing::error!(entry = %path.display(), error = %reason, "cannot load a revoked key; no signature is trusted until it can be");
                        store
                            .unreadable_revocation
                            .get_or_insert((path.display().to_string(), reason));
                    }
                },
            }
        }
        for path in &config.trusted_keys {
            match keys::read_public_key(path) {
                Ok(key) => {
                    let id = KeyId::of(&key);
                    let key = Key { id, key };
                    if revoked_ids.contains(&key.id) {
                        store.revoked_keys.push(key);
                    } else if !store.trusted.iter().any(|k| k.id == key.id) {
                        store.trusted.push(key);
                    }
                }
                Err(e) => {
                    let reason = secflow_core::error_chain(&e);
                    tracing::error!(key = %path.display(), error = %reason, "cannot load a trusted key; signatures by it will not verify");
                    store.problems.push(reason);
                }
            }
        }
        store
    }

    /// A store that trusts exactly `keys` (`secflow manifest verify --key`).
    pub fn with_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> TrustStore {
        TrustStore {
            trusted: keys
                .into_iter()
                .map(|key| Key {
                    id: KeyId::of(&key),
                    key,
                })
                .collect(),
            ..TrustStore::default()
        }
    }

    /// The ids of the keys a signature is accepted from.
    pub fn trusted_ids(&self) -> Vec<KeyId> {
        self.trusted.iter().map(|k| k.id.clone()).collect()
    }

    /// Why some trusted key files were left out.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The id of the trusted key `signature` over `message` verifies under.
    /// Verification is strict (RFC 8032 with canonical `S` and no small-order
    /// keys), so a signature has no malleated twin.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<KeyId, SignatureError> {
        if let Some((entry, reason)) = &self.unreadable_revocation {
            return Err(SignatureError::RevocationUnreadable {
                entry: entry.clone(),
                reason: reason.clone(),
            });
        }
        if let Some(key) = self
            .trusted
            .iter()
            .find(|k| k.key.verify_strict(message, signature).is_ok())
        {
            return Ok(key.id.clone());
        }
        if let Some(key) = self
            .revoked_keys
            .iter()
            .find(|k| k.key.verify_strict(message, signature).is_ok())
        {
            return Err(SignatureError::Revoked {
                key_id: key.id.clone(),
            });
        }
        let problems = if self.problems.is_empty() {
            String::new()
        } else {
            format!("; left out: {}", self.problems.join("; "))
        };
        if self.trusted.is_empty() {
            return Err(SignatureError::NoTrustedKeys { problems });
        }
        Err(SignatureError::Unverified {
            trusted: self
                .trusted
                .iter()
                .map(|k| k.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            problems,
        })
    }

    /// Verifies the `signature` member of a manifest document.
    pub fn verify_manifest(&self, manifest: &Map<String, Value>) -> Result<KeyId, SignatureError> {
        let text = manifest
            .get("signature")
            .and_then(Value::as_str)
            .ok_or(SignatureError::Missing)?;
        let signature = decode_signature(text)?;
        let message = signed_bytes(manifest).map_err(SignatureError::Canonical)?;
        self.verify(&message, &signature)
    }
}

/// The public key files of `paths`, for a store built from the command line.
pub fn read_public_keys(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>, keys::KeyError> {
    paths.iter().map(|p| keys::read_public_key(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sha2::Digest as _;

    fn manifest() -> Map<String, Value> {
        json!({
            "name": "probe",
            "version": "1.0.0",
            "category": "detector",
            "entrypoint": "bin/probe",
            "code_hash": format!("sha256:{}", "ab".repeat(32)),
            "sandbox": {"network": false}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn config_with(
        dir: &std::path::Path,
        trusted: &[&SigningKey],
        revoked: Vec<RevokedKey>,
    ) -> TrustConfig {
        let trusted_keys = trusted
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let path = dir.join(format!("trusted-{i}.pub"));
                std::fs::write(&path, keys::public_key_pem(&key.verifying_key())).unwrap();
                path
            })
            .collect();
        TrustConfig {
            require_signatures: true,
            trusted_keys,
            revoked_keys: revoked,
        }
    }

    #[test]
    fn the_worked_example_of_docs_signing_md_canonicalizes_to_the_documented_bytes() {
        let doc: Map<String, Value> = serde_json::from_str(
            r#"{
              "name": "port-probe",
              "version": "1.2.0",
              "description": "TCP probe \u2014 caf\u00e9 edition",
              "author": "Example Sec",
              "category": "detector",
              "entrypoint": "port-probe",
              "config_schema": {
                "timeout_ms": {"type": "integer", "minimum": 1, "default": 1500}
              },
              "code_hash": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
              "signature_type": "ed25519",
              "signature": "ed25519:placeholder",
              "created_at": "2026-01-01T00:00:00Z",
              "expires_at": "2027-01-01T00:00:00Z",
              "sandbox": {"network": true, "filesystem": "readonly", "timeout_seconds": 60}
            }"#,
        )
        .unwrap();
        let bytes = signed_bytes(&doc).unwrap();
        assert_eq!(bytes.len(), 488);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            "a29e51a54e030348ec4daac992ead084b6f25871d2b92bebb7e305b7ccc557d3"
        );
    }

    #[test]
    fn a_signed_manifest_verifies_and_names_its_key_whatever_its_member_order() {
        let key = keys::generate().unwrap();
        let mut doc = manifest();
        let id = sign_manifest(&mut doc, &key).unwrap();
        assert_eq!(doc["signature_type"], json!("ed25519"));
        let store = TrustStore::with_keys([key.verifying_key()]);
        assert_eq!(store.verify_manifest(&doc).unwrap(), id);
        let reordered: Map<String, Value> = doc.clone().into_iter().rev().collect();
        assert_eq!(store.verify_manifest(&reordered).unwrap(), id);
    }

    #[test]
    fn any_change_to_a_signed_field_breaks_the_signature() {
        let key = keys::generate().unwrap();
        let mut doc = manifest();
        sign_manifest(&mut doc, &key).unwrap();
        let store = TrustStore::with_keys([key.verifying_key()]);
        let mut network = doc.clone();
        network["sandbox"]["network"] = json!(true);
        let mut hash = doc.clone();
        hash["code_hash"] = json!(format!("sha256:{}", "cd".repeat(32)));
        let mut added = doc.clone();
        added.insert("expires_at".into(), json!("2999-01-01T00:00:00Z"));
        for tampered in [network, hash, added] {
            let err = store.verify_manifest(&tampered).unwrap_err();
            assert!(matches!(err, SignatureError::Unverified { .. }), "{err}");
        }
    }

    #[test]
    fn a_signature_by_an_untrusted_key_names_the_trusted_key_ids() {
        let (signer, trusted) = (keys::generate().unwrap(), keys::generate().unwrap());
        let mut doc = manifest();
        sign_manifest(&mut doc, &signer).unwrap();
        let store = TrustStore::with_keys([trusted.verifying_key()]);
        let err = store.verify_manifest(&doc).unwrap_err().to_string();
        assert!(
            err.contains(KeyId::of(&trusted.verifying_key()).as_str())
                && err.contains("a key this host does not trust"),
            "{err}"
        );
        let err = TrustStore::default().verify_manifest(&doc).unwrap_err();
        assert!(matches!(err, SignatureError::NoTrustedKeys { .. }), "{err}");
    }

    #[test]
    fn malformed_signature_values_are_told_apart() {
        assert_eq!(decode_signature("AAAA"), Err(SignatureError::Prefix));
        assert!(matches!(
            decode_signature("ed25519:not base64!"),
            Err(SignatureError::Base64 { .. })
        ));
        assert_eq!(
            decode_signature("ed25519:AAAA"),
            Err(SignatureError::Length { length: 3 })
        );
        let key = keys::generate().unwrap();
        let good = encode_signature(&key.sign(b"x"));
        assert_eq!(
            good.len(),
            8 + 88,
            "64 bytes are 88 base64 characters, padded"
        );
        assert!(
            matches!(
                decode_signature(good.trim_end_matches('=')),
                Err(SignatureError::Base64 { .. })
            ),
            "padding is required"
        );
    }

    #[test]
    fn a_revoked_key_is_named_whether_listed_by_id_or_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (keys::generate().unwrap(), keys::generate().unwrap());
        let mut doc = manifest();
        sign_manifest(&mut doc, &old).unwrap();
        let old_id = KeyId::of(&old.verifying_key());

        let by_id = config_with(
            dir.path(),
            &[&old, &new],
            vec![RevokedKey::Id(old_id.clone())],
        );
        let store = TrustStore::load(&by_id);
        assert_eq!(store.trusted_ids(), vec![KeyId::of(&new.verifying_key())]);
        assert_eq!(
            store.verify_manifest(&doc),
            Err(SignatureError::Revoked {
                key_id: old_id.clone()
            })
        );

        let old_file = dir.path().join("old.pub");
        std::fs::write(&old_file, keys::public_key_pem(&old.verifying_key())).unwrap();
        let by_file = config_with(dir.path(), &[&new], vec![RevokedKey::File(old_file)]);
        assert_eq!(
            TrustStore::load(&by_file).verify_manifest(&doc),
            Err(SignatureError::Revoked { key_id: old_id })
        );
    }

    #[test]
    fn an_unreadable_revocation_entry_fails_every_signature_closed() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::generate().unwrap();
        let mut doc = manifest();
        sign_manifest(&mut doc, &key).unwrap();
        let config = config_with(
            dir.path(),
            &[&key],
            vec![RevokedKey::File(dir.path().join("lost.pub"))],
        );
        let err = TrustStore::load(&config).verify_manifest(&doc).unwrap_err();
        assert!(
            matches!(err, SignatureError::RevocationUnreadable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("lost.pub"), "{err}");
    }

    #[test]
    fn an_unreadable_trusted_key_is_left_out_and_named_in_the_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::generate().unwrap();
        let mut doc = manifest();
        sign_manifest(&mut doc, &key).unwrap();
        let mut config = config_with(dir.path(), &[], Vec::new());
        config.trusted_keys.push(dir.path().join("missing.pub"));
        let store = TrustStore::load(&config);
        assert_eq!(store.problems().len(), 1);
        let err = store.verify_manifest(&doc).unwrap_err().to_string();
        assert!(err.contains("missing.pub"), "{err}");
    }
}
