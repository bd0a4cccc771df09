//! The trust chain end to end (issue 7): ed25519-signed manifests checked
//! against the configured trusted and revoked keys, each rejection reason with
//! its audit row and a run that never started, key rotation, persistent
//! revocation through the CLI, the author tools, and a manifest signed by an
//! independent implementation (Python's `cryptography`) following
//! docs/signing.md.
//!
//! Every plugin here is fixture-marker, which reports to a witness listener
//! when it is executed (network granted for that). A rejected plugin's stored
//! run record must have neither an exit status nor a signal, and the witness
//! must never have heard from it.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use secflow_core::record::{ErrorKind, RunStatus};
use secflow_runner::registry::{PluginEntry, PluginStatus};
use secflow_runner::Supervisor;
use secflow_trust::{keys, KeyId};
use serde_json::{json, Value};
use support::*;

const MARKER: &str = env!("CARGO_BIN_EXE_fixture-marker");
const DETECTOR: &str = env!("CARGO_BIN_EXE_fixture-detector");

/// A home whose config requires signatures and trusts the key files
/// `keys/<name>.pub` for each of `trusted` (generated with `secflow keygen`),
/// with `extra` lines added to `[trust]`.
fn signed_home(trusted: &[&str], extra: &str) -> TestBed {
    let list: Vec<String> = trusted
        .iter()
        .map(|name| format!("\"keys/{name}.pub\""))
        .collect();
    let bed = TestBed::with_config(&format!(
        "[trust]\nrequire_signatures = true\ntrusted_keys = [{}]\n{extra}\n",
        list.join(", ")
    ));
    for name in ["a", "b", "untrusted"] {
        keygen(&bed, name);
    }
    bed
}

/// `secflow keygen --out <home>/keys/<name>`.
fn keygen(bed: &TestBed, name: &str) -> PathBuf {
    let prefix = bed.path().join("keys").join(name);
    let out = bed.secflow(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    prefix.with_extension("key")
}

fn key_file(bed: &TestBed, name: &str, ext: &str) -> PathBuf {
    bed.path().join("keys").join(format!("{name}.{ext}"))
}

fn key_id(bed: &TestBed, name: &str) -> KeyId {
    KeyId::of(&keys::read_public_key(&key_file(bed, name, "pub")).unwrap())
}

/// `secflow manifest sign MANIFEST --key keys/<name>.key --in-place`.
fn sign(bed: &TestBed, manifest: &Path, key: &str) {
    let key = key_file(bed, key, "key");
    let out = bed.secflow(&[
        "manifest",
        "sign",
        manifest.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--in-place",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Installs fixture-marker as `name` with `overrides`, signed by `key`.
fn install_signed(bed: &TestBed, name: &str, key: &str, overrides: Value) -> PathBuf {
    let manifest = bed.install(Install {
        overrides,
        sandbox: json!({"network": true, "filesystem": "readonly", "timeout_seconds": 30}),
        ..Install::new(name, MARKER)
    });
    witness().watch(&bed.plugin_dir(name).join("fixture-marker"));
    sign(bed, &manifest, key);
    manifest
}

fn edit(manifest: &Path, change: impl FnOnce(&mut Value)) {
    let mut doc: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    change(&mut doc);
    std::fs::write(manifest, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

/// Whether the marker installed as `name` ever ran.
fn marker_ran(bed: &TestBed, name: &str) -> bool {
    witness().ran(&bed.plugin_dir(name).join("fixture-marker"))
}

fn entry(supervisor: &Supervisor, name: &str) -> PluginEntry {
    supervisor
        .plugins()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The uid this test runs as (the owner of the files it creates).
fn my_uid(bed: &TestBed) -> u32 {
    std::fs::metadata(bed.path()).unwrap().uid()
}

/// Asserts that `name` is rejected with a reason containing `reason`, that
/// discovery wrote a security audit row saying so, and that a run of it is
/// recorded `rejected` with `kind` and never started the executable.
async fn assert_rejected(bed: &TestBed, name: &str, reason: &str, kind: ErrorKind) {
    let supervisor = bed.supervisor().await;
    let listed = entry(&supervisor, name);
    assert_eq!(listed.status, PluginStatus::Rejected, "{listed:?}");
    let why = listed.reason.clone().unwrap_or_default();
    assert!(why.contains(reason), "{name}: {why}");

    let audited = audit_events(&supervisor, "plugin_rejected");
    assert!(
        audited
            .iter()
            .any(|e| e.security && e.plugin.as_deref() == Some(name) && e.message.contains(reason)),
        "no security audit row for {name}: {audited:?}"
    );

    let record = run(&supervisor, name, json!({})).await;
    assert_eq!(record.status, RunStatus::Rejected, "{record:?}");
    let error = record.error.as_ref().unwrap();
    assert_eq!(error.kind, kind, "{error:?}");
    assert!(error.message.contains(reason), "{}", error.message);
    supervisor.flush().await.unwrap();
    let stored = supervisor.store().run(&record.run_id).unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Rejected);
    assert!(
        !marker_ran(bed, name) && stored.exit_code.is_none() && stored.signal.is_none(),
        "{name} was executed although it is rejected: {stored:?}"
    );
}

/// Asserts that `name` is active and really runs: it exits 0 after sending
/// its one finding.
async fn assert_runs(bed: &TestBed, name: &str) {
    let supervisor = bed.supervisor().await;
    let listed = entry(&supervisor, name);
    assert_eq!(listed.status, PluginStatus::Active, "{listed:?}");
    let record = run(&supervisor, name, json!({})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:?}");
    assert_eq!(
        (record.exit_code, record.findings),
        (Some(0), 1),
        "{record:?}"
    );
    if listed.network {
        // The positive control of the witness: a marker that runs is heard.
        assert!(
            marker_ran(bed, name),
            "{name} ran but the witness did not hear it"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_manifest_is_rejected_when_signatures_are_required() {
    let bed = signed_home(&["a"], "");
    bed.install(Install::new("unsigned", MARKER));
    assert_rejected(
        &bed,
        "unsigned",
        "trust.require_signatures is on and plugin unsigned has no ed25519 signature",
        ErrorKind::SignatureInvalid,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_signed_by_an_unknown_key_is_rejected_naming_the_trusted_keys() {
    let bed = signed_home(&["a"], "");
    install_signed(&bed, "stranger", "untrusted", json!({}));
    let trusted = key_id(&bed, "a");
    assert_rejected(
        &bed,
        "stranger",
        &format!("verifies under none of the trusted keys ({trusted})"),
        ErrorKind::SignatureInvalid,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_signature_is_rejected_whether_forged_or_malformed() {
    let bed = signed_home(&["a"], "");
    let forged = install_signed(&bed, "forged", "a", json!({}));
    edit(&forged, |doc| {
        // Another valid 64-byte signature: the first byte changed.
        let sig = doc["signature"].as_str().unwrap().to_string();
        let flipped = if sig.as_bytes()[8] == b'A' { "B" } else { "A" };
        doc["signature"] = json!(format!("ed25519:{flipped}{}", &sig[9..]));
    });
    assert_rejected(
        &bed,
        "forged",
        "the ed25519 signature of plugin forged is rejected: the signature verifies under none",
        ErrorKind::SignatureInvalid,
    )
    .await;

    let garbled = install_signed(&bed, "garbled", "a", json!({}));
    edit(&garbled, |doc| {
        doc["signature"] = json!("ed25519:***not base64***")
    });
    assert_rejected(
        &bed,
        "garbled",
        "signature is not valid base64",
        ErrorKind::SignatureInvalid,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_signed_manifest_is_rejected_naming_expires_at() {
    let bed = signed_home(&["a"], "");
    install_signed(
        &bed,
        "expired",
        "a",
        json!({"expires_at": "2021-06-01T00:00:00Z"}),
    );
    assert_rejected(
        &bed,
        "expired",
        "has expired: expires_at 2021-06-01T00:00:00Z is in the past",
        ErrorKind::PluginRejected,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_manifest_created_in_the_future_is_not_yet_valid() {
    let bed = signed_home(&["a"], "");
    install_signed(
        &bed,
        "early",
        "a",
        json!({"created_at": "2998-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}),
    );
    assert_rejected(
        &bed,
        "early",
        "is not yet valid: created_at 2998-01-01T00:00:00Z is in the future",
        ErrorKind::PluginRejected,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_signed_by_a_revoked_key_is_rejected_naming_the_key() {
    // The id is known only once the key exists: write the config after keygen.
    let bed = signed_home(&["a", "b"], "");
    let revoked = key_id(&bed, "a");
    let config = std::fs::read_to_string(&bed.config_path).unwrap().replace(
        "require_signatures = true\n",
        &format!("require_signatures = true\nrevoked_keys = [\"{revoked}\"]\n"),
    );
    std::fs::write(&bed.config_path, config).unwrap();
    install_signed(&bed, "old-key", "a", json!({}));
    assert_rejected(
        &bed,
        "old-key",
        &format!("signed with key {revoked}, which is revoked (trust.revoked_keys)"),
        ErrorKind::SignatureInvalid,
    )
    .await;

    // Revoking by public key file works the same, and the other key still signs.
    let bed = signed_home(&["a", "b"], "revoked_keys = [\"keys/a.pub\"]");
    install_signed(&bed, "old-key", "a", json!({}));
    install_signed(&bed, "new-key", "b", json!({}));
    assert_rejected(
        &bed,
        "old-key",
        "which is revoked",
        ErrorKind::SignatureInvalid,
    )
    .await;
    assert_runs(&bed, "new-key").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_byte_flipped_in_the_binary_after_signing_is_rejected() {
    let bed = signed_home(&["a"], "");
    install_signed(&bed, "flipped", "a", json!({}));
    let exe = bed.plugin_dir("flipped").join("fixture-marker");
    let mut bytes = std::fs::read(&exe).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&exe, bytes).unwrap();
    assert_rejected(
        &bed,
        "flipped",
        "code_hash does not match entrypoint",
        ErrorKind::HashMismatch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_manifest_edited_to_grant_network_is_rejected() {
    let bed = signed_home(&["a"], "");
    let manifest = install_signed(&bed, "netless", "a", json!({"sandbox": {"network": false}}));
    edit(&manifest, |doc| doc["sandbox"]["network"] = json!(true));
    assert_rejected(
        &bed,
        "netless",
        "the ed25519 signature of plugin netless is rejected",
        ErrorKind::SignatureInvalid,
    )
    .await;
    let supervisor = bed.supervisor().await;
    assert!(
        entry(&supervisor, "netless").network,
        "listed as the manifest asks, and refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn re_signing_with_an_untrusted_key_is_rejected_and_a_second_trusted_key_is_accepted() {
    let bed = signed_home(&["a", "b"], "");
    let manifest = install_signed(&bed, "rotated", "a", json!({"sandbox": {"network": false}}));
    // An attacker grants network and re-signs with a key of their own.
    edit(&manifest, |doc| doc["sandbox"]["network"] = json!(true));
    sign(&bed, &manifest, "untrusted");
    assert_rejected(
        &bed,
        "rotated",
        "verifies under none of the trusted keys",
        ErrorKind::SignatureInvalid,
    )
    .await;

    // Key rotation: the same manifest signed by the second trusted key runs.
    edit(&manifest, |doc| doc["sandbox"]["network"] = json!(false));
    sign(&bed, &manifest, "b");
    assert_runs(&bed, "rotated").await;
    let out = bed.secflow(&["manifest", "verify", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(key_id(&bed, "b").as_str()), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_through_the_cli_persists_across_restart_and_reload_and_is_audited_with_the_uid(
) {
    let bed = signed_home(&["a"], "");
    install_signed(&bed, "marker", "a", json!({}));
    let uid = my_uid(&bed);
    let out = bed.secflow(&[
        "plugins",
        "revoke",
        "marker",
        "--reason",
        "suspicious traffic",
        "--local",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A new supervisor (a restart) and a reload both keep it revoked.
    let supervisor = bed.supervisor().await;
    let listed = entry(&supervisor, "marker");
    assert_eq!(listed.status, PluginStatus::Revoked);
    assert_eq!(listed.reason.as_deref(), Some("suspicious traffic"));
    supervisor.reload().await.unwrap();
    assert_eq!(entry(&supervisor, "marker").status, PluginStatus::Revoked);
    let record = run(&supervisor, "marker", json!({})).await;
    assert_eq!(record.status, RunStatus::Rejected);
    assert_eq!(record.error.unwrap().kind, ErrorKind::PluginRevoked);
    assert!(!marker_ran(&bed, "marker"));
    let revoked = audit_events(&supervisor, "plugin_revoked");
    assert!(
        revoked.iter().any(|e| e.security
            && e.actor_uid == Some(uid)
            && e.plugin.as_deref() == Some("marker")
            && e.message.contains("suspicious traffic")),
        "{revoked:?}"
    );
    drop(supervisor);

    // The revocation binds this build: a new binary, re-signed, is not revoked.
    let exe = bed.plugin_dir("marker").join("fixture-marker");
    let original = std::fs::read(&exe).unwrap();
    std::fs::remove_file(&exe).unwrap();
    std::fs::copy(DETECTOR, &exe).unwrap();
    sign(&bed, &bed.plugin_dir("marker").join("manifest.json"), "a");
    let supervisor = bed.supervisor().await;
    assert_eq!(entry(&supervisor, "marker").status, PluginStatus::Active);
    drop(supervisor);
    std::fs::remove_file(&exe).unwrap();
    std::fs::write(&exe, original).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    sign(&bed, &bed.plugin_dir("marker").join("manifest.json"), "a");

    let out = bed.secflow(&["plugins", "reinstate", "marker", "--local"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_runs(&bed, "marker").await;
    let supervisor = bed.supervisor().await;
    let reinstated = audit_events(&supervisor, "plugin_reinstated");
    assert!(
        reinstated.iter().any(|e| e.security
            && e.actor_uid == Some(uid)
            && e.plugin.as_deref() == Some("marker")),
        "{reinstated:?}"
    );
}

#[test]
fn the_author_tools_refuse_bad_input_with_exit_status_2_and_a_clear_message() {
    let bed = signed_home(&["a"], "");
    let manifest = bed.install(Install::new("tool", MARKER));
    let path = manifest.to_str().unwrap();
    let private = key_file(&bed, "a", "key");
    let public = key_file(&bed, "a", "pub");
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let expect_usage_error = |args: &[&str], says: &str| {
        let out = bed.secflow(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    };
    // The wrong kind of key: a public key to sign with, a private key to verify.
    expect_usage_error(
        &["manifest", "sign", path, "--key", public.to_str().unwrap()],
        "it is a public key",
    );
    expect_usage_error(
        &[
            "manifest",
            "verify",
            path,
            "--key",
            private.to_str().unwrap(),
        ],
        "it is a private key",
    );
    // A key file with malformed base64.
    let broken = bed.path().join("keys/broken.key");
    std::fs::write(
        &broken,
        "-----BEGIN PRIVATE KEY-----\n%%%%not-base64%%%%\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o600)).unwrap();
    expect_usage_error(
        &["manifest", "sign", path, "--key", broken.to_str().unwrap()],
        "broken.key is malformed",
    );
    // An unreadable key.
    expect_usage_error(
        &["manifest", "sign", path, "--key", "/nonexistent/author.key"],
        "cannot read key file /nonexistent/author.key",
    );
    // A manifest whose entrypoint is missing.
    edit(&manifest, |doc| doc["entrypoint"] = json!("gone"));
    expect_usage_error(
        &["manifest", "sign", path, "--key", private.to_str().unwrap()],
        "entrypoint \"gone\" does not exist",
    );
    // keygen never overwrites a key.
    expect_usage_error(
        &[
            "keygen",
            "--out",
            bed.path().join("keys/a").to_str().unwrap(),
        ],
        "already exists",
    );
}

#[test]
fn sign_prints_to_stdout_and_verify_fails_with_status_1_under_another_key() {
    let bed = signed_home(&["a"], "");
    let manifest = bed.install(Install::new("tool", MARKER));
    let private = key_file(&bed, "a", "key");
    let out = bed.secflow(&[
        "manifest",
        "sign",
        manifest.to_str().unwrap(),
        "--key",
        private.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let signed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(signed["signature_type"], json!("ed25519"));
    let unsigned: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(
        unsigned["signature_type"],
        json!("sha256"),
        "stdout mode leaves the file alone"
    );

    std::fs::write(&manifest, &out.stdout).unwrap();
    let verify = |key: &str| {
        bed.secflow(&[
            "--json",
            "manifest",
            "verify",
            manifest.to_str().unwrap(),
            "--key",
            key_file(&bed, key, "pub").to_str().unwrap(),
        ])
    };
    let ok = verify("a");
    assert!(ok.status.success(), "{}", stderr(&ok));
    let report: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["key_id"], json!(key_id(&bed, "a").as_str()));
    let other = verify("b");
    assert_eq!(other.status.code(), Some(1), "{}", stderr(&other));
    assert!(stderr(&other).contains("verifies under none of the trusted keys"));
}

/// An independent implementation of docs/signing.md: RFC 8785 canonical JSON
/// (integers and strings, as manifests hold) and ed25519 from `cryptography`.
const PYTHON_SIGNER: &str = r#"
import base64, json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

def quote(s):
    short = {'"': '\\"', '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t'}
    out = []
    for c in s:
        if c in short:
            out.append(short[c])
        elif ord(c) < 0x20:
            out.append('\\u%04x' % ord(c))
        else:
            out.append(c)
    return '"' + ''.join(out) + '"'

def jcs(v):
    if v is None:
        return 'null'
    if v is True:
        return 'true'
    if v is False:
        return 'false'
    if isinstance(v, int):
        assert abs(v) <= 2**53
        return str(v)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, list):
        return '[' + ','.join(jcs(x) for x in v) + ']'
    if isinstance(v, dict):
        names = sorted(v, key=lambda k: k.encode('utf-16-be'))
        return '{' + ','.join(quote(k) + ':' + jcs(v[k]) for k in names) + '}'
    raise ValueError('no floats in this test')

def signed_bytes(doc):
    return jcs({k: v for k, v in doc.items() if k != 'signature'}).encode('utf-8')

mode, manifest = sys.argv[1], sys.argv[2]
with open(manifest, encoding='utf-8') as f:
    doc = json.load(f)
if mode == 'sign':
    key = Ed25519PrivateKey.generate()
    with open(sys.argv[3], 'wb') as f:
        f.write(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    doc['signature_type'] = 'ed25519'
    doc['signature'] = 'ed25519:' + base64.b64encode(key.sign(signed_bytes(doc))).decode()
    with open(manifest, 'w', encoding='utf-8') as f:
        json.dump(doc, f, ensure_ascii=True, indent=1)
else:
    with open(sys.argv[3], 'rb') as f:
        public = serialization.load_pem_public_key(f.read())
    signature = base64.b64decode(doc['signature'][len('ed25519:'):], validate=True)
    public.verify(signature, signed_bytes(doc))
    print('verified')
"#;

/// `python3` with `cryptography`, or `None` (outside CI only) with the reason
/// printed.
fn python_with_cryptography() -> Option<&'static str> {
    let probe = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output();
    match probe {
        Ok(out) if out.status.success() => Some("python3"),
        other => {
            let why = match other {
                Ok(out) => stderr(&out),
                Err(e) => format!("python3 cannot be started: {e}"),
            };
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide python3 with the cryptography package (.ci/run installs it): {why}"
            );
            eprintln!(
                "skipping the interop test: python3 with the cryptography package is missing \
                 (pip install cryptography): {why}"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_signed_by_python_cryptography_verify_and_ours_verify_in_python() {
    let Some(python) = python_with_cryptography() else {
        return;
    };
    let bed = TestBed::with_config(
        "[trust]\nrequire_signatures = true\ntrusted_keys = [\"keys/python.pub\", \"keys/a.pub\"]\n",
    );
    keygen(&bed, "a");
    let script = bed.path().join("jcs_sign.py");
    std::fs::write(&script, PYTHON_SIGNER).unwrap();
    // Strings that exercise the escapes, non-ASCII text, a surrogate pair, and
    // member names whose UTF-16 order differs from their byte order.
    let manifest = bed.install(Install {
        config_schema: json!({
            "Zeta": {"type": "integer", "default": 7, "maximum": 9007199254740992_u64},
            "_x": {"type": "string", "default": "tab\there \"quoted\" back\\slash"},
            "alpha": {"type": "string", "default": "\u{7}bell \u{1f} unit"}
        }),
        overrides: json!({
            "description": "caf\u{e9} \u{20ac}5 \u{1f600} \u{fb33} line\nbreak",
            "created_at": "2024-01-01T00:00:00Z",
            "expires_at": "2999-01-01T00:00:00Z"
        }),
        ..Install::new("interop", MARKER)
    });
    let python_pub = bed.path().join("keys/python.pub");
    let out = Command::new(python)
        .arg(&script)
        .args([
            "sign",
            manifest.to_str().unwrap(),
            python_pub.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let verified = bed.secflow(&["manifest", "verify", manifest.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert_runs(&bed, "interop").await;

    // And the other way: what `secflow manifest sign` signs, Python verifies.
    sign(&bed, &manifest, "a");
    let out = Command::new(python)
        .arg(&script)
        .args([
            "verify",
            manifest.to_str().unwrap(),
            key_file(&bed, "a", "pub").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_library_signs_what_the_cli_verifies() {
    // `secflow_trust::sign_manifest` is what `secflow manifest stage --key` uses.
    let bed = signed_home(&["a"], "");
    let manifest = bed.install(Install::new("staged", MARKER));
    let key = keys::read_private_key(&key_file(&bed, "a", "key")).unwrap();
    let mut doc: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let id = secflow_trust::sign_manifest(&mut doc, &key).unwrap();
    assert_eq!(id, key_id(&bed, "a"));
    std::fs::write(&manifest, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = bed.secflow(&["manifest", "verify", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_shipped_production_config_requires_signatures() {
    let path = workspace_root().join("config/secflow.production.toml");
    let config = secflow_core::config::Config::load(&path).unwrap();
    assert!(config.trust.require_signatures);
    assert!(!config.trust.trusted_keys.is_empty());
    let dev =
        secflow_core::config::Config::load(&workspace_root().join("config/secflow.toml")).unwrap();
    assert!(
        !dev.trust.require_signatures,
        "the development config also accepts unsigned plugins"
    );
}
