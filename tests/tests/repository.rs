//! Issue 18 end to end, through the `secflow` binary and a host's config: a
//! repository built with `secflow repo build`, served over loopback HTTP,
//! installed from with `secflow plugin install`, the installed plugin run,
//! upgraded and removed, a running daemon told of each change. Every refusal
//! names what was wrong and leaves what is installed as it was.
//!
//! (The repository crate's own tests cover each check of the index, the
//! fetcher and the resolver in detail; these check that the product wires
//! them to the config, the trust store, discovery and the daemon.)

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use secflow_tests::http_fixture::{HttpFixture, Route};
use secflow_trust::{keys, KeyId};
use serde_json::{json, Value};
use support::*;

const DETECTOR: &str = env!("CARGO_BIN_EXE_fixture-detector");

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A host (`bed`) trusting the maintainer's key, configured with one
/// repository served from `repo` over loopback HTTP.
struct World {
    bed: TestBed,
    repo: PathBuf,
    key: PathBuf,
    _server: HttpFixture,
}

impl World {
    fn new() -> World {
        World::trusting_index_key_of("maintainer")
    }

    /// As [`World::new`], but the repository entry lists the key id of
    /// `index_key` (another key than the one signing the index, for the
    /// unknown-key case).
    fn trusting_index_key_of(index_key: &str) -> World {
        let bed = TestBed::new();
        for name in ["maintainer", "stranger"] {
            let prefix = bed.path().join("keys").join(name);
            let out = bed.secflow(&["keygen", "--out", prefix.to_str().unwrap()]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let repo = bed.path().join("repo");
        std::fs::create_dir_all(repo.join("plugins")).unwrap();
        let root = repo.clone();
        let server = HttpFixture::builder()
            .fallback(move |request| {
                let relative = request.path().trim_start_matches('/');
                match std::fs::read(root.join(relative)) {
                    Ok(body) if !relative.contains("..") => Route::ok(body),
                    _ => Route::new(404),
                }
            })
            .start();
        let id = KeyId::of(
            &keys::read_public_key(&bed.path().join("keys").join(format!("{index_key}.pub")))
                .unwrap(),
        );
        // The key id exists only after keygen: the tables go at the end.
        let mut config = std::fs::read_to_string(bed.path().join("secflow.toml")).unwrap();
        config.push_str(&format!(
            "[api]\nsocket = \"api.sock\"\n\
             [trust]\nrequire_signatures = true\ntrusted_keys = [\"keys/maintainer.pub\", \"keys/stranger.pub\"]\n\
             [[repositories]]\nname = \"main\"\nurl = \"{}\"\ntrusted_keys = [\"{}\"]\n",
            server.url(),
            id.as_str()
        ));
        std::fs::write(bed.path().join("secflow.toml"), config).unwrap();
        World {
            key: bed.path().join("keys").join("maintainer.key"),
            bed,
            repo,
            _server: server,
        }
    }

    /// Adds a release of the fixture detector named `name`, signed by the
    /// maintainer, needing `dependencies`.
    fn publish(&self, name: &str, version: &str, dependencies: Value) {
        let dir = self.repo.join("plugins").join(name).join(version);
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("fixture-detector");
        std::fs::copy(DETECTOR, &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let manifest = json!({
            "name": name,
            "version": version,
            "description": format!("{name}, a repository test plugin"),
            "author": "secflow tests",
            "category": "detector",
            "entrypoint": "fixture-detector",
            "config_schema": fixture_config_schema(),
            "plugin_dependencies": dependencies,
            "sandbox": {"network": false, "filesystem": "tmp", "timeout_seconds": 30},
        });
        let path = dir.join("manifest.json");
        std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
        let out = self.bed.secflow(&[
            "manifest",
            "sign",
            path.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
            "--in-place",
        ]);
        assert!(out.status.success(), "sign: {}", stderr(&out));
    }

    /// `secflow repo build` over the repository; the new index's version.
    fn build(&self) -> u64 {
        let out = self.bed.secflow(&[
            "--json",
            "repo",
            "build",
            self.repo.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "repo build: {}", stderr(&out));
        json_of(&out)["version"].as_u64().expect("index version")
    }

    fn plugin(&self, args: &[&str]) -> Output {
        let mut all = vec!["--json", "plugin"];
        all.extend_from_slice(args);
        self.bed.secflow(&all)
    }

    /// Name → version of what is installed from repositories.
    fn installed(&self) -> Vec<(String, String)> {
        let out = self.plugin(&["list"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut listed: Vec<(String, String)> = json_of(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        listed.sort();
        listed
    }

    /// Every file of the plugin directory with its bytes.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, into: &mut Vec<(PathBuf, Vec<u8>)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path
                    .file_name()
                    .is_some_and(|n| n == ".staging" || n == ".lock")
                {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, into);
                } else {
                    into.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.bed.path().join("plugins"), &mut files);
        files.sort();
        files
    }

    /// The plugins the embedded supervisor discovers, name → status.
    fn discovered(&self) -> Value {
        let out = self.bed.secflow(&["--json", "plugins", "--local"]);
        assert!(out.status.success(), "{}", stderr(&out));
        json_of(&out)
    }
}

/// Asserts `out` failed with a message containing each of `needles`.
fn refused(out: &Output, needles: &[&str]) {
    assert!(!out.status.success(), "expected a refusal: {}", stdout(out));
    let message = stderr(out);
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

fn status_of<'a>(plugins: &'a Value, name: &str) -> Option<&'a str> {
    plugins
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["status"].as_str())
}

#[test]
fn a_plugin_installed_with_its_dependency_runs_then_upgrades_and_is_removed() {
    let w = World::new();
    w.publish("helper", "1.0.0", json!({}));
    w.publish("probe", "1.0.0", json!({"helper": "^1"}));
    assert_eq!(w.build(), 1);

    let found = w.plugin(&["search", "REPOSITORY TEST"]);
    assert!(found.status.success(), "{}", stderr(&found));
    let found = json_of(&found);
    let names: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["helper", "probe"], "both descriptions match");

    let out = w.plugin(&["install", "probe@^1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let changes = json_of(&out);
    let order: Vec<&str> = changes["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["helper", "probe"], "the dependency first");
    assert_eq!(changes["daemon"]["reloaded"], false, "no daemon runs");
    assert_eq!(
        w.installed(),
        [
            ("helper".into(), "1.0.0".into()),
            ("probe".into(), "1.0.0".into())
        ]
    );

    // Discovery finds the installed plugins, signatures verified: they run.
    let plugins = w.discovered();
    assert_eq!(status_of(&plugins, "probe"), Some("active"), "{plugins:#}");
    let run = w
        .bed
        .secflow(&["--json", "run", "probe", "--local", "--set", "count=2"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(json_of(&run)["findings"], 2);

    // Each finding says what produced it: the installed release, byte for byte.
    let record: Value = serde_json::from_slice(
        &std::fs::read(w.bed.path().join("plugins/probe/.secflow-install.json")).unwrap(),
    )
    .unwrap();
    let listed = w.bed.secflow(&["--json", "findings", "--local"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let id = json_of(&listed)[0]["id"].as_i64().expect("a finding id");
    let shown = w
        .bed
        .secflow(&["--json", "findings", "show", &id.to_string(), "--local"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let shown = json_of(&shown);
    let provenance = &shown["provenance"];
    assert_eq!(shown["finding"]["id"], id);
    assert_eq!(provenance["plugin"], "probe");
    assert_eq!(provenance["version"], "1.0.0");
    assert_eq!(provenance["binary_digest"], record["binary_digest"]);
    assert_eq!(provenance["manifest_digest"], record["manifest_digest"]);
    let maintainer =
        KeyId::of(&keys::read_public_key(&w.bed.path().join("keys/maintainer.pub")).unwrap());
    assert_eq!(provenance["signed_by"], maintainer.as_str());
    assert!(
        provenance["policy_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:") && d.len() == 71),
        "{provenance}"
    );
    let text = w
        .bed
        .secflow(&["findings", "show", &id.to_string(), "--local"]);
    assert!(
        stdout(&text).contains(record["binary_digest"].as_str().unwrap()),
        "{}",
        stdout(&text)
    );
    let sarif = w.bed.secflow(&["findings", "--local", "--format", "sarif"]);
    let sarif: Value = serde_json::from_slice(&sarif.stdout).expect("sarif");
    let run_id = shown["finding"]["run_id"].as_str().unwrap();
    assert_eq!(
        sarif["runs"][0]["tool"]["driver"]["properties"]["provenance"][run_id],
        *provenance
    );
    refused(
        &w.bed.secflow(&["findings", "show", "999999", "--local"]),
        &["no finding with id 999999"],
    );

    // A newer release: listed as outdated, then upgraded within ^1.
    w.publish("probe", "1.1.0", json!({"helper": "^1"}));
    assert_eq!(w.build(), 2);
    let outdated = w.plugin(&["list", "--outdated"]);
    assert!(outdated.status.success(), "{}", stderr(&outdated));
    let outdated = json_of(&outdated);
    assert_eq!(outdated[0]["name"], "probe", "{outdated:#}");
    assert_eq!(outdated[0]["installed"], "1.0.0");
    assert_eq!(outdated[0]["newest"], "1.1.0");
    let up = w.plugin(&["upgrade"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(w.installed().contains(&("probe".into(), "1.1.0".into())));

    // The dependency cannot go while probe needs it; probe can.
    refused(&w.plugin(&["remove", "helper"]), &["helper", "probe"]);
    let removed = w.plugin(&["remove", "probe"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(json_of(&removed)["removed"]["version"], "1.1.0");
    assert_eq!(w.installed(), [("helper".into(), "1.0.0".into())]);
    assert_eq!(status_of(&w.discovered(), "probe"), None);
}

#[test]
fn every_refusal_names_what_was_wrong_and_changes_nothing_installed() {
    let w = World::new();
    w.publish("helper", "1.0.0", json!({}));
    w.publish("probe", "1.0.0", json!({"helper": "^1"}));
    w.build();
    let out = w.plugin(&["install", "probe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = w.snapshot();

    // No release satisfies the requirement: the resolver says why.
    refused(
        &w.plugin(&["install", "probe@^9"]),
        &["no release satisfies", "probe ^9"],
    );
    assert_eq!(w.snapshot(), before);

    // A dependency no release satisfies.
    w.publish("probe", "2.0.0", json!({"helper": "^5"}));
    w.build();
    refused(
        &w.plugin(&["install", "probe@^2"]),
        &["no release satisfies", "helper ^5"],
    );
    assert_eq!(w.snapshot(), before);

    // An older index than this host has seen: rolled back.
    let index = w.repo.join("index.json");
    let old = std::fs::read(&index).unwrap();
    w.build();
    let seen = w.plugin(&["search", "probe"]);
    assert!(seen.status.success(), "{}", stderr(&seen));
    let newest = std::fs::read(&index).unwrap();
    std::fs::write(&index, old).unwrap();
    refused(
        &w.plugin(&["search", "probe"]),
        &["main", "rolled-back index"],
    );
    refused(&w.plugin(&["upgrade"]), &["main", "rolled-back index"]);
    assert_eq!(w.snapshot(), before);
    std::fs::write(&index, newest).unwrap();

    // A binary changed after the index was signed.
    w.publish("probe", "1.2.0", json!({"helper": "^1"}));
    w.build();
    let binary = w.repo.join("plugins/probe/1.2.0/fixture-detector");
    let mut bytes = std::fs::read(&binary).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // same size, other bytes
    std::fs::write(&binary, bytes).unwrap();
    refused(
        &w.plugin(&["upgrade", "probe"]),
        &["binary of plugin probe 1.2.0 does not match the signed index"],
    );
    assert_eq!(w.snapshot(), before);
    assert_eq!(status_of(&w.discovered(), "probe"), Some("active"));
}

#[test]
fn an_index_signed_by_a_key_the_repository_entry_does_not_list_is_refused() {
    let w = World::trusting_index_key_of("stranger");
    w.publish("probe", "1.0.0", json!({}));
    w.build();
    let out = w.plugin(&["install", "probe"]);
    refused(&out, &["main", "not for this repository"]);
    assert!(w.snapshot().is_empty(), "nothing installed");
}

#[test]
fn an_expired_index_is_refused() {
    let w = World::new();
    w.publish("probe", "1.0.0", json!({}));
    // Signed by the maintainer's key, but thirty days ago for seven days.
    let key = keys::read_private_key(&w.key).unwrap();
    let month_ago = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    secflow_repo::build::build(&w.repo, &key, month_ago, time::Duration::days(7)).unwrap();
    refused(&w.plugin(&["install", "probe"]), &["main", "expired"]);
    assert!(w.snapshot().is_empty(), "nothing installed");
    // Rebuilt today, it installs.
    w.build();
    let out = w.plugin(&["install", "probe"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_bad_requirement_and_an_empty_repository_list_are_usage_errors() {
    let w = World::new();
    let out = w.plugin(&["install", "probe@not-a-requirement"]);
    refused(&out, &["probe@not-a-requirement"]);
    assert_eq!(out.status.code(), Some(2));

    let bare = TestBed::new();
    let out = bare.secflow(&["plugin", "search", "x"]);
    refused(&out, &["no [[repositories]] are configured"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `secflowd` on the bed's config, killed on drop.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(bed: &TestBed) -> Daemon {
        let socket = bed.config().api.socket;
        let child = Command::new(workspace_bin("secflowd"))
            .arg("--config")
            .arg(bed.path().join("secflow.toml"))
            .env_remove("SECFLOW_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("secflowd starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "no daemon at {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_running_daemon_picks_up_an_install_and_a_removal_without_a_restart() {
    let w = World::new();
    w.publish("probe", "1.0.0", json!({}));
    w.build();
    let _daemon = Daemon::start(&w.bed);
    let listed = |bed: &TestBed| {
        let out = bed.secflow(&["--json", "plugins"]);
        assert!(out.status.success(), "{}", stderr(&out));
        json_of(&out)
    };
    assert_eq!(status_of(&listed(&w.bed), "probe"), None);

    let out = w.plugin(&["install", "probe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json_of(&out)["daemon"]["reloaded"],
        true,
        "{}",
        stdout(&out)
    );
    assert_eq!(status_of(&listed(&w.bed), "probe"), Some("active"));
    let run = w
        .bed
        .secflow(&["--json", "run", "probe", "--set", "count=1"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(json_of(&run)["status"], "succeeded");
    let stored = w.bed.secflow(&["--json", "findings"]);
    let id = json_of(&stored)[0]["id"].as_i64().expect("a finding id");
    let shown = w
        .bed
        .secflow(&["--json", "findings", "show", &id.to_string()]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert_eq!(json_of(&shown)["provenance"]["version"], "1.0.0");

    let out = w.plugin(&["remove", "probe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out)["daemon"]["reloaded"], true);
    assert_eq!(status_of(&listed(&w.bed), "probe"), None);
}
