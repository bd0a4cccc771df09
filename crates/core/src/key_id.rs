//! Key ids: how the config, manifests and the audit trail name an ed25519
//! public key (the trust crate reads and checks the keys themselves).

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

/// How a key id starts.
pub const KEY_ID_PREFIX: &str = "ed25519:";
/// Hex digits after the prefix.
const KEY_ID_HEX_DIGITS: usize = 32;

/// The id of a public key: `ed25519:` + 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(key.as_bytes());
        KeyId(format!(
            "{KEY_ID_PREFIX}{}",
            hex::encode(&digest[..KEY_ID_HEX_DIGITS / 2])
        ))
    }

    /// Reads a key id written as [`KeyId::of`] writes it.
    pub fn parse(text: &str) -> Option<KeyId> {
        let hex = text.strip_prefix(KEY_ID_PREFIX)?;
        let well_formed = hex.len() == KEY_ID_HEX_DIGITS
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| KeyId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
