//! Plugin author tools: `secflow keygen`, `secflow manifest sign` and
//! `secflow manifest verify` (docs/signing.md).
//!
//! They make the signatures discovery checks, with the same code: `sign` fills
//! `code_hash` from the entrypoint as discovery will resolve it and signs the
//! canonical form discovery will verify; `verify` runs discovery's own checks
//! of the hash and the signature. Bad input (a key of the wrong kind, malformed
//! base64, a missing entrypoint, an unreadable file) is refused with exit
//! status 2 and a message naming the file and the fix.

use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use ed25519_dalek::SigningKey;
use serde_json::{json, Map, Value};

use super::{error_chain, load_config, print_output, Cli, Failure};
use secflow_manifest::{ManifestError, MAX_MANIFEST_BYTES};
use secflow_trust::{keys, store, KeyId, TrustStore};

/// `secflow keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path prefix: writes PREFIX.key (private, PEM PKCS#8, mode 0600) and
    /// PREFIX.pub (public, PEM SubjectPublicKeyInfo). Neither may exist.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
}

/// `secflow manifest sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The manifest; its entrypoint is resolved relative to its directory.
    pub manifest: PathBuf,
    /// The private key (PEM PKCS#8, mode 0600).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Write the signed manifest to FILE instead of stdout.
    #[arg(long, value_name = "FILE", conflicts_with = "in_place")]
    pub out: Option<PathBuf>,
    /// Replace MANIFEST with the signed manifest.
    #[arg(long)]
    pub in_place: bool,
}

/// `secflow manifest verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub manifest: PathBuf,
    /// A public key to verify against (repeatable); without it, the trusted
    /// and revoked keys of the config.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
}

/// `secflow keygen --out PREFIX`.
pub fn keygen_command(cli: &Cli, args: &KeygenArgs) -> Result<ExitCode, Failure> {
    if let Some(dir) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_key_dir(dir)?;
    }
    let key = keys::generate().map_err(|e| Failure::failed(error_chain(&e)))?;
    let files = keys::write_key_pair(&args.out, &key).map_err(key_failure)?;
    print_output(cli, &files, |out| {
        writeln!(
            out,
            "private key: {} (mode 0600; keep it secret, off the hosts that run plugins)",
            files.private_key.display()
        )?;
        writeln!(
            out,
            "public key:  {} (list it in trust.trusted_keys)",
            files.public_key.display()
        )?;
        writeln!(out, "key id:      {}", files.key_id)
    })
}

/// `secflow manifest sign MANIFEST --key KEY [--out FILE | --in-place]`.
pub fn sign_command(cli: &Cli, args: &SignArgs) -> Result<ExitCode, Failure> {
    let key = read_signing_key(&args.key)?;
    let (doc, key_id) = sign_file(&args.manifest, &key)?;
    let mut text = serde_json::to_string_pretty(&doc)
        .map_err(|e| Failure::failed(format!("cannot serialize the signed manifest: {e}")))?;
    text.push('\n');
    let target = match (&args.out, args.in_place) {
        (Some(out), _) => out.clone(),
        (None, true) => args.manifest.clone(),
        (None, false) => {
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|e| Failure::failed(format!("cannot write output: {e}")))?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    write_replacing(&target, text.as_bytes())?;
    let summary = json!({
        "manifest": target,
        "key_id": key_id,
        "code_hash": doc.get("code_hash"),
    });
    print_output(cli, &summary, |out| {
        writeln!(
            out,
            "signed {} with key {key_id} (code_hash {})",
            target.display(),
            doc.get("code_hash").and_then(Value::as_str).unwrap_or("")
        )
    })
}

/// `secflow manifest verify MANIFEST [--key PUB]...`.
pub fn verify_command(cli: &Cli, args: &VerifyArgs) -> Result<ExitCode, Failure> {
    let trust = if args.keys.is_empty() {
        TrustStore::load(&load_config(cli)?.trust)
    } else {
        TrustStore::with_keys(store::read_public_keys(&args.keys).map_err(key_failure)?)
    };
    let signed = secflow_manifest::verify_signed(&args.manifest, &trust).map_err(|e| {
        let message = error_chain(&e);
        match e {
            ManifestError::Read { .. }
            | ManifestError::NotAFile { .. }
            | ManifestError::TooLarge { .. }
            | ManifestError::Parse { .. } => Failure::usage(message),
            _ => Failure::failed(message),
        }
    })?;
    let m = &signed.manifest;
    let summary = json!({
        "manifest": args.manifest,
        "name": m.name,
        "version": m.version,
        "key_id": signed.key_id,
        "code_hash": m.code_hash,
        "entrypoint": signed.entrypoint,
        "expires_at": m.expires_at,
    });
    print_output(cli, &summary, |out| {
        writeln!(
            out,
            "{}: plugin {} {} is signed by trusted key {}; code_hash {} matches {}",
            args.manifest.display(),
            m.name,
            m.version,
            signed.key_id,
            m.code_hash,
            signed.entrypoint.display()
        )
    })
}

/// Creates the directory a new key goes in: its parents with the usual mode,
/// the directory itself (if new) only for its owner.
fn create_key_dir(dir: &Path) -> Result<(), Failure> {
    if dir.is_dir() {
        return Ok(());
    }
    let fail = |e: std::io::Error| {
        Failure::usage(format!("cannot create directory {}: {e}", dir.display()))
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(fail)
}

/// Reads a private key for signing; a bad key file is bad input (exit 2).
pub(super) fn read_signing_key(path: &Path) -> Result<SigningKey, Failure> {
    keys::read_private_key(path).map_err(key_failure)
}

fn key_failure(e: keys::KeyError) -> Failure {
    Failure::usage(error_chain(&e))
}

/// Signs the manifest at `path`: fills `code_hash` from its entrypoint,
/// checks the result against the manifest schema, and signs it.
fn sign_file(path: &Path, key: &SigningKey) -> Result<(Map<String, Value>, KeyId), Failure> {
    let bad = |why: String| Failure::usage(format!("cannot sign {}: {why}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(bad(format!(
            "it is larger than the {MAX_MANIFEST_BYTES} bytes a manifest may be"
        )));
    }
    let mut doc: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("it is not a JSON object: {e}")))?;
    let entrypoint = doc
        .get("entrypoint")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("it has no \"entrypoint\" string".into()))?;
    let executable =
        secflow_manifest::resolve_entrypoint(path, entrypoint).map_err(|e| bad(error_chain(&e)))?;
    let code_hash = secflow_trust::hash_file(&executable).map_err(|e| bad(error_chain(&e)))?;
    doc.insert("code_hash".into(), Value::String(code_hash));
    let key_id = secflow_trust::sign_manifest(&mut doc, key).map_err(|e| bad(e.to_string()))?;
    if let Err(violations) = secflow_core::schema::validate_manifest(&Value::Object(doc.clone())) {
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        return Err(bad(format!(
            "the manifest does not match the manifest schema: {}",
            list.join("; ")
        )));
    }
    Ok((doc, key_id))
}

/// Writes `bytes` to `target` through a temporary file in the same directory
/// and a rename, so a reader never sees half a manifest.
fn write_replacing(target: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let fail =
        |e: std::io::Error| Failure::failed(format!("cannot write {}: {e}", target.display()));
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile_in(dir).map_err(fail)?;
    temp.1
        .write_all(bytes)
        .and_then(|()| temp.1.sync_all())
        .map_err(fail)?;
    std::fs::rename(&temp.0, target).map_err(|e| {
        let _ = std::fs::remove_file(&temp.0);
        fail(e)
    })?;
    Ok(())
}

/// A new file `.<pid>.<n>.tmp` in `dir`, created exclusively.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut attempt = 0u32;
    loop {
        let path = dir.join(format!(
            ".secflow-sign.{}.{attempt}.tmp",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_manifest::fixtures::{plugin, write};
    use secflow_trust::SignatureError;

    fn author_key(dir: &Path) -> (SigningKey, keys::KeyPairFiles) {
        let key = keys::generate().unwrap();
        let files = keys::write_key_pair(&dir.join("author"), &key).unwrap();
        (key, files)
    }

    #[test]
    fn sign_fills_the_code_hash_and_a_signature_that_discovery_accepts() {
        let root = tempfile::tempdir().unwrap();
        let (path, mut doc) = plugin(root.path(), "probe");
        doc["code_hash"] = json!(format!("sha256:{}", "0".repeat(64)));
        write(&path, &doc);
        let (key, files) = author_key(root.path());
        let (signed, key_id) =
            sign_file(&path, &read_signing_key(&files.private_key).unwrap()).unwrap();
        assert_eq!(key_id, files.key_id);
        let exe = path.parent().unwrap().join("bin/probe");
        assert_eq!(
            signed["code_hash"],
            json!(secflow_trust::hash_file(&exe).unwrap())
        );
        assert_eq!(signed["signature_type"], json!("ed25519"));
        write(&path, &Value::Object(signed));
        let trust = TrustStore::with_keys([key.verifying_key()]);
        assert_eq!(
            secflow_manifest::verify_signed(&path, &trust)
                .unwrap()
                .key_id,
            key_id
        );
    }

    #[test]
    fn sign_refuses_a_manifest_whose_entrypoint_is_missing_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let (path, mut doc) = plugin(root.path(), "probe");
        doc["entrypoint"] = json!("bin/absent");
        write(&path, &doc);
        let (key, _) = author_key(root.path());
        let failure = sign_file(&path, &key).unwrap_err();
        assert_eq!(failure.status, 2);
        assert!(
            failure.message.contains("\"bin/absent\" does not exist"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn sign_refuses_a_public_key_and_an_unreadable_key_as_bad_input() {
        let root = tempfile::tempdir().unwrap();
        let (_, files) = author_key(root.path());
        let failure = read_signing_key(&files.public_key).unwrap_err();
        assert_eq!(failure.status, 2);
        assert!(
            failure.message.contains("it is a public key"),
            "{}",
            failure.message
        );
        let failure = read_signing_key(&root.path().join("nope.key")).unwrap_err();
        assert!(
            failure.message.contains("cannot read key file")
                && failure.message.contains("nope.key"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_manifest_changed_after_signing_fails_verification() {
        let root = tempfile::tempdir().unwrap();
        let (path, doc) = plugin(root.path(), "probe");
        write(&path, &doc);
        let (key, _) = author_key(root.path());
        let (mut signed, _) = sign_file(&path, &key).unwrap();
        signed["description"] = json!("changed after signing");
        write(&path, &Value::Object(signed));
        let err =
            secflow_manifest::verify_signed(&path, &TrustStore::with_keys([key.verifying_key()]))
                .unwrap_err();
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
    }

    #[test]
    fn writing_in_place_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("manifest.json");
        std::fs::write(&target, "old").unwrap();
        write_replacing(&target, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}
