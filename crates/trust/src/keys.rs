//! Ed25519 key files and key ids.
//!
//! Keys are kept in the formats every tool reads (contracts §4): public keys as
//! PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), private keys as PEM
//! PKCS#8 (`-----BEGIN PRIVATE KEY-----`), mode 0600 — what `openssl genpkey
//! -algorithm ed25519` and Python's `cryptography` write. Reading a key names
//! the file and what is wrong with it (a private key where a public one belongs,
//! an RSA key, bad base64), because a trust setup that fails quietly is one an
//! operator gets wrong.
//!
//! A key id names a public key in config files, logs and audit rows:
//! `ed25519:` and the first 16 bytes of the SHA-256 of the raw 32-byte public
//! key, in lowercase hex.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::Decode as _;
use ed25519_dalek::pkcs8::{
    spki, DecodePrivateKey, DecodePublicKey, Document, EncodePrivateKey, EncodePublicKey,
    KeypairBytes, PrivateKeyInfo,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
pub use secflow_core::key_id::{KeyId, KEY_ID_PREFIX};

/// Largest key file read: a PEM ed25519 key is about 120 bytes.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;
/// The PEM labels of the two formats.
const PUBLIC_LABEL: &str = "PUBLIC KEY";
const PRIVATE_LABEL: &str = "PRIVATE KEY";

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is larger than {limit} bytes, so it is not a key")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "key file {path} is not a PEM key file (no \"-----BEGIN {expected}-----\" line){hint}"
    )]
    NotPem {
        path: PathBuf,
        expected: &'static str,
        hint: &'static str,
    },
    #[error("key file {path} holds {found:?} where {expected:?} is needed: {hint}")]
    WrongKind {
        path: PathBuf,
        found: String,
        expected: &'static str,
        hint: &'static str,
    },
    #[error("key file {path} holds a {algorithm} key, not an ed25519 key")]
    WrongAlgorithm { path: PathBuf, algorithm: String },
    #[error("key file {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("private key file {path} can be read by other users (mode {mode:04o}); run `chmod 600 {path}`")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} already exists; remove it or choose another --out prefix")]
    Exists { path: PathBuf },
    #[error("cannot write key file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot gather randomness for a new key: {reason}")]
    Random { reason: String },
}

/// Reads an ed25519 public key from a PEM SubjectPublicKeyInfo file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = read_key_file(path)?;
    check_label(path, &text, PUBLIC_LABEL)?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| match e {
        spki::Error::OidUnknown { .. } => KeyError::WrongAlgorithm {
            path: path.to_path_buf(),
            algorithm: algorithm_name(key_algorithm(&text, PUBLIC_LABEL)),
        },
        other => KeyError::Malformed {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

/// Reads an ed25519 private key from a PEM PKCS#8 file that only its owner can
/// read.
pub fn read_private_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read_key_file(path)?;
    check_label(path, &text, PRIVATE_LABEL)?;
    let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| match e {
        ed25519_dalek::pkcs8::Error::PublicKey(spki::Error::OidUnknown { .. }) => {
            KeyError::WrongAlgorithm {
                path: path.to_path_buf(),
                algorithm: algorithm_name(key_algorithm(&text, PRIVATE_LABEL)),
            }
        }
        other => KeyError::Malformed {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let mode = std::fs::metadata(path)
        .map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(key)
}

/// A new key from the operating system's random source.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random {
        reason: e.to_string(),
    })?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// The PEM SubjectPublicKeyInfo text of `key`.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    // Encoding 32 bytes into a fixed-size structure cannot fail.
    key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
}

/// The two files `secflow keygen --out PREFIX` writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyPairFiles {
    /// `PREFIX.key`: PEM PKCS#8, mode 0600.
    pub private_key: PathBuf,
    /// `PREFIX.pub`: PEM SubjectPublicKeyInfo, mode 0644.
    pub public_key: PathBuf,
    pub key_id: KeyId,
}

/// Writes `PREFIX.key` and `PREFIX.pub`; neither may exist yet.
pub fn write_key_pair(prefix: &Path, key: &SigningKey) -> Result<KeyPairFiles, KeyError> {
    let with_suffix = |suffix: &str| {
        let mut path = prefix.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    };
    let private_key = with_suffix(".key");
    let public_key = with_suffix(".pub");
    for path in [&private_key, &public_key] {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    // PKCS#8 v1 (no embedded public key), as OpenSSL writes it: the form every
    // reader accepts.
    let secret = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let private_pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Malformed {
            path: private_key.clone(),
            reason: e.to_string(),
        })?;
    write_new(&private_key, private_pem.as_bytes(), 0o600)?;
    write_new(
        &public_key,
        public_key_pem(&key.verifying_key()).as_bytes(),
        0o644,
    )?;
    Ok(KeyPairFiles {
        private_key,
        public_key,
        key_id: KeyId::of(&key.verifying_key()),
    })
}

/// Creates `path` (which must not exist) with `mode` from the start, so a
/// private key is never readable by others, not even for a moment.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let write_error = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_path_buf(),
            },
            _ => write_error(source),
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(write_error)
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_KEY_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| KeyError::NotPem {
        path: path.to_path_buf(),
        expected: PUBLIC_LABEL,
        hint: " (it is binary: DER keys must be converted to PEM, e.g. `openssl pkey -inform DER`)",
    })
}

/// Checks the PEM label before decoding, to say what the file is when it is
/// not the expected kind of key.
fn check_label(path: &Path, text: &str, expected: &'static str) -> Result<(), KeyError> {
    let label = text.lines().map(str::trim).find_map(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
    });
    let Some(found) = label else {
        let hint = if text.trim_start().starts_with("ssh-ed25519") {
            ": it is an OpenSSH public key; SecFlow reads PEM keys, as `secflow keygen` and `openssl pkey -pubout` write them"
        } else {
            ""
        };
        return Err(KeyError::NotPem {
            path: path.to_path_buf(),
            expected,
            hint,
        });
    };
    if found == expected {
        return Ok(());
    }
    let hint = match (expected, found) {
        (PUBLIC_LABEL, PRIVATE_LABEL) => {
            "it is a private key; give the public key (the .pub file `secflow keygen` wrote beside it), and keep the private key off this host"
        }
        (PRIVATE_LABEL, PUBLIC_LABEL) => {
            "it is a public key; signing needs the private key (the .key file `secflow keygen` wrote)"
        }
        (_, "ENCRYPTED PRIVATE KEY") => {
            "it is an encrypted private key; write a decrypted copy with `openssl pkcs8 -in FILE -out PLAIN` (mode 0600)"
        }
        (_, "OPENSSH PRIVATE KEY") => {
            "it is an OpenSSH private key; SecFlow reads PEM PKCS#8 keys, as `secflow keygen` and `openssl genpkey -algorithm ed25519` write them"
        }
        (_, "RSA PRIVATE KEY" | "RSA PUBLIC KEY") => "it is an RSA key; SecFlow signatures are ed25519",
        (_, "EC PRIVATE KEY") => "it is an elliptic-curve (ECDSA) key; SecFlow signatures are ed25519",
        (_, "CERTIFICATE") => "it is an X.509 certificate; give the bare ed25519 key",
        _ => "SecFlow reads PEM SubjectPublicKeyInfo public keys and PEM PKCS#8 private keys",
    };
    Err(KeyError::WrongKind {
        path: path.to_path_buf(),
        found: found.to_string(),
        expected,
        hint,
    })
}

/// The algorithm OID a PEM key declares (the decoder's own error names only
/// the OID it expected).
fn key_algorithm(text: &str, label: &str) -> Option<String> {
    let (_, der) = Document::from_pem(text).ok()?;
    let oid = if label == PUBLIC_LABEL {
        spki::SubjectPublicKeyInfoRef::from_der(der.as_bytes())
            .ok()?
            .algorithm
            .oid
    } else {
        PrivateKeyInfo::from_der(der.as_bytes()).ok()?.algorithm.oid
    };
    Some(oid.to_string())
}

/// A readable name for the algorithm OIDs people are likely to hand over.
fn algorithm_name(oid: Option<String>) -> String {
    let Some(oid) = oid else {
        return "non-ed25519 key of an unreadable algorithm".into();
    };
    let name = match oid.as_str() {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.10045.2.1" => "ECDSA (elliptic-curve)",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.3.101.113" => "Ed448",
        "1.2.840.10040.4.1" => "DSA",
        _ => return format!("non-ed25519 (algorithm OID {oid})"),
    };
    format!("{name} (OID {oid})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 (ECDSA) public key, as `openssl pkey -pubout` writes it.
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEWknvbQUHz9pOxUyabxd2mBxz5sCl
5kPfMHvT+VfLIbBek8/S85+/4BxkZe22IiN+ZsKbmXY1Uh02IkcxXoR7ug==
-----END PUBLIC KEY-----
";

    fn key_pair(dir: &Path) -> KeyPairFiles {
        write_key_pair(&dir.join("author"), &generate().unwrap()).unwrap()
    }

    #[test]
    fn a_generated_key_pair_reads_back_with_a_private_key_of_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let files = key_pair(dir.path());
        assert_eq!(files.private_key, dir.path().join("author.key"));
        assert_eq!(files.public_key, dir.path().join("author.pub"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.private_key), 0o600);
        let private = read_private_key(&files.private_key).unwrap();
        let public = read_public_key(&files.public_key).unwrap();
        assert_eq!(private.verifying_key(), public);
        assert_eq!(files.key_id, KeyId::of(&public));
        let pem = std::fs::read_to_string(&files.private_key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    }

    #[test]
    fn keygen_refuses_to_overwrite_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = key_pair(dir.path());
        let before = std::fs::read(&first.private_key).unwrap();
        let err = write_key_pair(&dir.path().join("author"), &generate().unwrap()).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&first.private_key).unwrap(), before);
    }

    #[test]
    fn a_key_id_is_ed25519_and_32_hex_digits_and_parses_back() {
        let key = generate().unwrap().verifying_key();
        let id = KeyId::of(&key);
        assert!(id.as_str().starts_with("ed25519:"));
        assert_eq!(id.as_str().len(), 8 + 32);
        assert_eq!(KeyId::parse(id.as_str()), Some(id));
        for bad in ["", "ed25519:", "ed25519:ABCDEF", "sha256:00", "keys/a.pub"] {
            assert_eq!(KeyId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_private_key_given_as_a_public_key_is_refused_naming_both_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let files = key_pair(dir.path());
        let err = read_public_key(&files.private_key).unwrap_err();
        assert!(matches!(err, KeyError::WrongKind { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("author.key") && text.contains("it is a private key"),
            "{text}"
        );
        let err = read_private_key(&files.public_key).unwrap_err().to_string();
        assert!(err.contains("it is a public key"), "{err}");
    }

    #[test]
    fn an_ecdsa_key_is_refused_naming_its_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ec.pub");
        std::fs::write(&path, EC_PUBLIC).unwrap();
        let err = read_public_key(&path).unwrap_err();
        assert!(matches!(err, KeyError::WrongAlgorithm { .. }), "{err}");
        assert!(err.to_string().contains("ECDSA"), "{err}");
    }

    #[test]
    fn malformed_base64_in_a_key_file_is_reported_as_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pub");
        std::fs::write(
            &path,
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA!!!!\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let err = read_public_key(&path).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("bad.pub"), "{err}");
    }

    #[test]
    fn a_missing_or_non_pem_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pub");
        let err = read_public_key(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Read { .. }), "{err}");
        let ssh = dir.path().join("id_ed25519.pub");
        std::fs::write(&ssh, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host\n").unwrap();
        let err = read_public_key(&ssh).unwrap_err().to_string();
        assert!(
            err.contains("not a PEM key file") && err.contains("OpenSSH"),
            "{err}"
        );
    }

    #[test]
    fn a_private_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = key_pair(dir.path());
        std::fs::set_permissions(&files.private_key, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = read_private_key(&files.private_key).unwrap_err();
        assert!(
            matches!(err, KeyError::TooOpen { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
