//! End-to-end repository behaviour: a repository built with `repo build`,
//! served by a real HTTP server on loopback, installed from into a plugin
//! directory. Every refusal must leave the installed plugins exactly as they
//! were, byte for byte.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use secflow_repo::client::{parse_spec, Client, ClientError, RepositoryConfig, Settings};
use secflow_repo::fetch::FetchError;
use secflow_repo::index::IndexError;
use secflow_repo::install::InstallError;
use secflow_trust::{keys, sign_manifest, KeyId, TrustStore};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// A minimal HTTP/1.1 file server on 127.0.0.1 for one repository
/// directory; `cut` makes it stop a named file's body after some bytes,
/// as a dropped connection would.
struct Server {
    url: String,
    cut: Arc<Mutex<Option<(String, usize)>>>,
}

impl Server {
    fn start(root: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/repo", listener.local_addr().unwrap());
        let cut: Arc<Mutex<Option<(String, usize)>>> = Arc::default();
        let shared = Arc::clone(&cut);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                let relative = path.strip_prefix("/repo/").unwrap_or("");
                match std::fs::read(root.join(relative)) {
                    Ok(body) => {
                        let keep = match &*shared.lock().unwrap() {
                            Some((name, n)) if name == relative => *n,
                            _ => body.len(),
                        };
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(&body[..keep]);
                    }
                    Err(_) => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            }
        });
        Server { url, cut }
    }
}

/// A repository directory, its maintainer key, a host (trust store, plugin
/// directory, state) configured for it, and the server.
struct World {
    _temp: tempfile::TempDir,
    repo: PathBuf,
    key: SigningKey,
    trust: TrustStore,
    settings: Settings,
    server: Server,
}

impl World {
    fn new() -> World {
        let temp = tempfile::tempdir().unwrap();
        let repo = temp.path().join("repo");
        std::fs::create_dir_all(repo.join("plugins")).unwrap();
        let key = keys::generate().unwrap();
        let trust = TrustStore::with_keys([key.verifying_key()]);
        let server = Server::start(repo.clone());
        let settings = Settings {
            repositories: vec![RepositoryConfig {
                name: "main".into(),
                url: server.url.clone(),
                trusted_keys: vec![KeyId::of(&key.verifying_key()).as_str().to_string()],
            }],
            plugin_dir: temp.path().join("plugins"),
            state_dir: temp.path().join("state"),
            timeout: Duration::from_secs(10),
        };
        World {
            _temp: temp,
            repo,
            key,
            trust,
            settings,
            server,
        }
    }

    /// Adds a signed release `name` `version` depending on `dependencies`.
    fn publish(&self, name: &str, version: &str, dependencies: &[(&str, &str)]) {
        let dir = self.repo.join("plugins").join(name).join(version);
        std::fs::create_dir_all(&dir).unwrap();
        let binary = format!("#!/bin/sh\necho {name} {version}\n");
        let path = dir.join(name);
        std::fs::write(&path, &binary).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let deps: serde_json::Map<String, serde_json::Value> = dependencies
            .iter()
            .map(|(n, r)| (n.to_string(), json!(r)))
            .collect();
        let mut doc = json!({
            "name": name,
            "version": version,
            "description": format!("the {name} plugin"),
            "category": "detector",
            "entrypoint": name,
            "code_hash": format!("sha256:{}", hex::encode(Sha256::digest(binary.as_bytes()))),
        });
        if !deps.is_empty() {
            doc["plugin_dependencies"] = serde_json::Value::Object(deps);
        }
        let serde_json::Value::Object(mut map) = doc else {
            unreachable!()
        };
        sign_manifest(&mut map, &self.key).unwrap();
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec_pretty(&map).unwrap(),
        )
        .unwrap();
    }

    /// `secflow repo build`.
    fn build(&self) -> u64 {
        secflow_repo::build::build(
            &self.repo,
            &self.key,
            OffsetDateTime::now_utc(),
            time::Duration::days(7),
        )
        .unwrap()
        .version
    }

    fn client(&self) -> Client<'_> {
        Client::new(&self.settings, &self.trust).unwrap()
    }

    fn install(&self, spec: &str) -> Result<secflow_repo::client::Changes, ClientError> {
        self.client().install(&[parse_spec(spec).unwrap()])
    }

    /// Every file of the plugin directory (staging included) with its bytes.
    fn installed_tree(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if path.file_name().is_some_and(|n| n != ".lock") {
                    out.insert(
                        path.strip_prefix(root).unwrap().to_path_buf(),
                        std::fs::read(&path).unwrap(),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(
            &self.settings.plugin_dir,
            &self.settings.plugin_dir,
            &mut out,
        );
        out
    }

    fn installed_version(&self, name: &str) -> Option<String> {
        self.client()
            .installed()
            .unwrap()
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.version)
    }
}

#[test]
fn install_fetches_a_plugin_and_its_dependency_verified_and_runnable() {
    let w = World::new();
    w.publish("helper", "1.0.0", &[]);
    w.publish("helper", "1.4.0", &[]);
    w.publish("probe", "1.0.0", &[("helper", "^1.2")]);
    w.build();
    let changes = w.install("probe").unwrap();
    let order: Vec<(&str, &str)> = changes
        .installed
        .iter()
        .map(|r| (r.name.as_str(), r.version.as_str()))
        .collect();
    assert_eq!(order, vec![("helper", "1.4.0"), ("probe", "1.0.0")]);
    let dir = w.settings.plugin_dir.join("probe");
    // What discovery will do with it: the signed manifest verifies in place.
    let verified = secflow_manifest::verify_signed(&dir.join("manifest.json"), &w.trust).unwrap();
    assert_eq!(verified.manifest.version, "1.0.0");
    let out = std::process::Command::new(dir.join("probe"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"probe 1.0.0\n");
    let record = &changes.installed[1];
    assert_eq!(record.requested.as_deref(), Some("*"));
    assert_eq!(
        changes.installed[0].requested, None,
        "helper came as a dependency"
    );
    assert!(
        !w.settings
            .plugin_dir
            .join(".staging")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "nothing is left in staging"
    );
}

#[test]
fn upgrade_replaces_the_release_and_list_outdated_sees_it_first() {
    let w = World::new();
    w.publish("probe", "1.0.0", &[]);
    w.build();
    w.install("probe@^1").unwrap();
    w.publish("probe", "1.1.0", &[]);
    w.publish("probe", "2.0.0", &[]);
    w.build();
    let outdated = w.client().outdated().unwrap();
    assert_eq!(outdated.len(), 1);
    assert_eq!(outdated[0].installed.as_deref(), Some("1.0.0"));
    let changes = w.client().upgrade(&[]).unwrap();
    assert_eq!(changes.installed.len(), 1);
    assert_eq!(
        w.installed_version("probe").as_deref(),
        Some("1.1.0"),
        "the recorded requirement ^1 holds the upgrade below 2.0.0"
    );
}

#[test]
fn a_tampered_binary_is_refused_and_the_installed_release_stays() {
    let w = World::new();
    w.publish("probe", "1.0.0", &[]);
    w.build();
    w.install("probe").unwrap();
    w.publish("probe", "1.1.0", &[]);
    w.build();
    // Same size, other bytes: only the digest can tell.
    std::fs::write(
        w.repo.join("plugins/probe/1.1.0/probe"),
        b"#!/bin/sh\necho 0wned 1.1.0\n",
    )
    .unwrap();
    let before = w.installed_tree();
    let err = w.client().upgrade(&["probe".into()]).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Install(InstallError::Digest { what: "binary", .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("does not match the signed index"),
        "{err}"
    );
    assert_eq!(w.installed_tree(), before);
}

#[test]
fn a_rolled_back_index_is_refused_even_though_it_is_signed() {
    let w = World::new();
    w.publish("probe", "1.0.0", &[]);
    assert_eq!(w.build(), 1);
    let old = std::fs::read(w.repo.join("index.json")).unwrap();
    w.publish("probe", "1.1.0", &[]);
    assert_eq!(w.build(), 2);
    w.install("probe").unwrap();
    std::fs::write(w.repo.join("index.json"), old).unwrap();
    let before = w.installed_tree();
    let err = w.install("probe@=1.0.0").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Index(IndexError::RolledBack {
                found: 1,
                seen: 2,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("rolled-back"), "{err}");
    assert_eq!(w.installed_tree(), before);
}

#[test]
fn an_expired_index_is_refused() {
    let w = World::new();
    w.publish("probe", "1.0.0", &[]);
    w.build();
    let client = w
        .client()
        .with_clock(|| OffsetDateTime::now_utc() + time::Duration::days(8));
    let err = client.install(&[parse_spec("probe").unwrap()]).unwrap_err();
    assert!(
        matches!(err, ClientError::Index(IndexError::Expired { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(w.installed_tree().is_empty());
}

#[test]
fn an_index_signed_by_an_unknown_key_is_refused() {
    let mut w = World::new();
    w.publish("probe", "1.0.0", &[]);
    let stranger = keys::generate().unwrap();
    secflow_repo::build::build(
        &w.repo,
        &stranger,
        OffsetDateTime::now_utc(),
        time::Duration::days(7),
    )
    .unwrap();
    let err = w.install("probe").unwrap_err();
    assert!(
        matches!(err, ClientError::Index(IndexError::Untrusted { .. })),
        "{err}"
    );
    // Trusted by the host for manifests, but not named by the repository.
    w.trust = TrustStore::with_keys([w.key.verifying_key(), stranger.verifying_key()]);
    let err = w.install("probe").unwrap_err();
    assert!(
        matches!(err, ClientError::Index(IndexError::WrongKey { .. })),
        "{err}"
    );
    assert!(w.installed_tree().is_empty());
}

#[test]
fn unsatisfiable_dependencies_are_explained_and_nothing_is_installed() {
    let w = World::new();
    w.publish("helper", "1.0.0", &[]);
    w.publish("probe", "1.0.0", &[("helper", "^2")]);
    w.publish("mapper", "1.0.0", &[("helper", "^1")]);
    w.publish("wide", "1.0.0", &[("helper", "=1.0.0")]);
    w.build();
    let err = w.install("probe").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClientError::Resolve(..)), "{text}");
    assert!(text.contains("helper ^2"), "{text}");
    assert!(
        text.contains("the known versions of helper are 1.0.0"),
        "{text}"
    );
    assert!(w.installed_tree().is_empty());
}

#[test]
fn a_dependency_cycle_is_refused() {
    let w = World::new();
    w.publish("a", "1.0.0", &[("b", "^1")]);
    w.publish("b", "1.0.0", &[("a", "^1")]);
    w.build();
    let err = w.install("a").unwrap_err();
    assert!(
        err.to_string()
            .contains("refusing a dependency cycle: a 1.0.0 -> b 1.0.0 -> a 1.0.0"),
        "{err}"
    );
    assert!(w.installed_tree().is_empty());
}

#[test]
fn an_interrupted_download_is_refused_and_the_previous_release_still_runs() {
    let w = World::new();
    w.publish("probe", "1.0.0", &[]);
    w.build();
    w.install("probe").unwrap();
    w.publish("probe", "1.1.0", &[]);
    w.build();
    *w.server.cut.lock().unwrap() = Some(("plugins/probe/1.1.0/probe".into(), 5));
    let before = w.installed_tree();
    let err = w.client().upgrade(&[]).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Install(InstallError::Fetch(FetchError::Truncated {
                received: 5,
                ..
            }))
        ),
        "{err}"
    );
    assert!(err.to_string().contains("interrupted download"), "{err}");
    assert_eq!(w.installed_tree(), before);
    let out = std::process::Command::new(w.settings.plugin_dir.join("probe/probe"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"probe 1.0.0\n");
    // Served whole again, the same upgrade goes through.
    *w.server.cut.lock().unwrap() = None;
    w.client().upgrade(&[]).unwrap();
    assert_eq!(w.installed_version("probe").as_deref(), Some("1.1.0"));
}

#[test]
fn a_leftover_staging_directory_of_a_killed_install_is_cleared_and_ignored() {
    let w = World::new();
    w.publish("probe", "1.0.0", &[]);
    w.build();
    w.install("probe").unwrap();
    let stray = w.settings.plugin_dir.join(".staging/probe-9.9.9.1.1");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("manifest.json"), b"{").unwrap();
    w.publish("probe", "1.1.0", &[]);
    w.build();
    w.client().upgrade(&[]).unwrap();
    assert!(!stray.exists());
    assert_eq!(w.installed_version("probe").as_deref(), Some("1.1.0"));
}

#[test]
fn remove_is_refused_while_another_plugin_needs_it() {
    let w = World::new();
    w.publish("helper", "1.0.0", &[]);
    w.publish("probe", "1.0.0", &[("helper", "^1")]);
    w.build();
    w.install("probe").unwrap();
    let err = w.client().remove("helper").unwrap_err();
    assert!(
        err.to_string().contains("helper is needed by probe 1.0.0"),
        "{err}"
    );
    w.client().remove("probe").unwrap();
    w.client().remove("helper").unwrap();
    assert!(w.client().installed().unwrap().is_empty());
    assert!(!w.settings.plugin_dir.join("probe").exists());
}

#[test]
fn a_plugin_directory_not_installed_from_a_repository_is_not_overwritten() {
    let w = World::new();
    w.publish("probe", "1.0.0", &[]);
    w.build();
    let hand = w.settings.plugin_dir.join("probe");
    std::fs::create_dir_all(&hand).unwrap();
    std::fs::write(hand.join("manifest.json"), b"{}").unwrap();
    let before = w.installed_tree();
    let err = w.install("probe").unwrap_err();
    assert!(
        matches!(err, ClientError::Install(InstallError::NotManaged { .. })),
        "{err}"
    );
    let mut after = w.installed_tree();
    after.retain(|p, _| !p.starts_with(".staging"));
    assert_eq!(after, before);
}

#[test]
fn a_directory_repository_serves_as_well_as_http() {
    let mut w = World::new();
    w.publish("probe", "1.0.0", &[]);
    w.build();
    w.settings.repositories[0].url = format!("file://{}", w.repo.display());
    let hits = w.client().search("PROBE").unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].newest.to_string(), "1.0.0");
    w.install("probe").unwrap();
    assert_eq!(w.installed_version("probe").as_deref(), Some("1.0.0"));
}

#[test]
fn the_plugin_subcommands_say_what_they_did() {
    use secflow_repo::cli::{run_plugin, PluginAction};
    let w = World::new();
    w.publish("helper", "1.0.0", &[]);
    w.publish("probe", "1.0.0", &[("helper", "^1")]);
    w.build();
    let run = |action: PluginAction| {
        let mut out = Vec::new();
        run_plugin(&action, &w.client(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let text = run(PluginAction::Install {
        specs: vec!["probe@^1".into()],
    });
    assert!(
        text.contains("installed helper 1.0.0 from main\ninstalled probe 1.0.0 from main\n"),
        "{text}"
    );
    let text = run(PluginAction::List { outdated: false });
    assert!(
        text.contains("probe  1.0.0  main  binary sha256:"),
        "{text}"
    );
    assert!(
        text.contains("requested ^1") && text.contains("(dependency)"),
        "{text}"
    );
    w.publish("probe", "1.1.0", &[("helper", "^1")]);
    w.build();
    let text = run(PluginAction::List { outdated: true });
    assert_eq!(text, "probe  1.0.0 -> 1.1.0  (main)\n");
    let text = run(PluginAction::Info {
        name: "probe".into(),
    });
    assert!(
        text.starts_with("probe (repository main)\ninstalled: 1.0.0 from main\n  1.1.0  detector"),
        "{text}"
    );
    assert!(text.contains("needs helper ^1"), "{text}");
}

#[test]
fn a_missing_or_oversized_index_is_refused_with_what_the_server_did() {
    let mut w = World::new();
    w.publish("probe", "1.0.0", &[]);
    w.build();
    let base = w.settings.repositories[0].url.clone();
    w.settings.repositories[0].url = format!("{base}/nowhere");
    let err = w.install("probe").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Fetch {
                source: FetchError::Status { status: 404, .. },
                ..
            }
        ),
        "{err}"
    );
    w.settings.repositories[0].url = base;
    std::fs::write(w.repo.join("index.json"), vec![b' '; 9 << 20]).unwrap();
    let err = w.install("probe").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Fetch {
                source: FetchError::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(w.installed_tree().is_empty());
}
