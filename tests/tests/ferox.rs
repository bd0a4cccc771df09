//! The `ferox` content-discovery plugin end to end: the shipped executable and
//! manifest run by the real supervisor against the loopback fixture server
//! (`secflow_tests::http_fixture`), plus the stdio protocol for progress.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secflow_core::record::{RunRecord, RunStatus};
use secflow_runner::RunRequest;
use secflow_runner::Supervisor;
use secflow_tests::http_fixture::{HttpFixture, Route};
use serde_json::{json, Map, Value};
use support::*;

/// A test home with the ferox plugin installed from its shipped manifest;
/// `read_paths` are added to its sandbox.
fn install_ferox(read_paths: &[&std::path::Path]) -> TestBed {
    let bed = TestBed::new();
    bed.install_shipped("ferox", "secflow-ferox", read_paths);
    bed
}

async fn scan(supervisor: &Supervisor, target: &str, config: Value) -> RunRecord {
    run_on_target(supervisor, "ferox", target, config, None).await
}

/// The findings of a run keyed by `location.path`.
fn by_path(supervisor: &Supervisor, record: &RunRecord) -> Map<String, Value> {
    findings_of(supervisor, &record.run_id)
        .into_iter()
        .map(|f| {
            let path = f.finding["location"]["path"]
                .as_str()
                .expect("location.path")
                .to_owned();
            (path, f.finding)
        })
        .collect()
}

/// A wordlist file in `dir` (which the test grants as a read path).
fn wordlist(dir: &std::path::Path, words: &[&str]) -> String {
    let path = dir.join("words.txt");
    std::fs::write(&path, words.join("\n")).expect("write wordlist");
    path.to_string_lossy().into_owned()
}

/// The run stopped with words it could not try: partial, never succeeded,
/// naming how many were left; what it found is still valid.
fn partial(record: &RunRecord) -> u64 {
    assert_eq!(record.status, RunStatus::Partial, "{record:#?}");
    assert_eq!(record.findings_rejected, 0, "{record:#?}");
    let error = record.error.as_ref().expect("a partial run says why");
    assert_eq!(error.kind.as_str(), "incomplete", "{error:?}");
    error.untried.expect("how many words were left")
}

fn succeeded(record: &RunRecord) {
    assert_eq!(record.status, RunStatus::Succeeded, "{record:#?}");
    assert_eq!(
        record.findings_rejected, 0,
        "every finding validates: {record:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_wordlist_finds_exposed_files_with_severities_that_reflect_what_they_are() {
    let server = HttpFixture::builder()
        .route(
            "/.git/config",
            Route::ok("[core]\n\trepositoryformatversion = 0\n\tbare = false\n"),
        )
        .route(
            "/.env",
            Route::ok("DB_PASSWORD=hunter2\nAPP_KEY=base64:abc\n"),
        )
        .route(
            "/backup.zip",
            Route::ok(vec![0x50, 0x4b, 0x03, 0x04, 0, 0]).header("Content-Type", "application/zip"),
        )
        .route("/admin", Route::redirect(301, "/admin/"))
        .route("/admin/", Route::new(401).body("authentication required\n"))
        .route(
            "/robots.txt",
            Route::ok("User-agent: *\nDisallow: /admin/\n"),
        )
        .start();
    let bed = install_ferox(&[]);
    let supervisor = bed.supervisor().await;

    let record = scan(&supervisor, &server.url(), json!({"depth": 0})).await;
    succeeded(&record);
    let found = by_path(&supervisor, &record);
    let expected = [
        ("/.git/config", "ferox.vcs-metadata", "high", 200),
        ("/.env", "ferox.secrets-file", "high", 200),
        ("/backup.zip", "ferox.backup-file", "medium", 200),
        ("/admin", "ferox.admin-panel", "low", 301),
        ("/admin/", "ferox.admin-panel", "low", 401),
        ("/robots.txt", "ferox.resource", "info", 200),
    ];
    for (path, rule, severity, status) in expected {
        let f = found
            .get(path)
            .unwrap_or_else(|| panic!("{path} not reported: {found:#?}"));
        assert_eq!(f["rule_id"], rule, "{path}");
        assert_eq!(f["severity"], severity, "{path}");
        assert_eq!(f["evidence"]["status"], status, "{path}");
        assert_eq!(
            f["location"]["url"],
            format!("{}{}", server.url().trim_end_matches('/'), path)
        );
    }
    assert_eq!(
        found.len(),
        expected.len(),
        "nothing else is reported: {:?}",
        found.keys()
    );
    let env = &found["/.env"]["evidence"];
    assert_eq!(
        (
            env["length"].as_u64(),
            env["words"].as_u64(),
            env["lines"].as_u64()
        ),
        (Some(39), Some(2), Some(2))
    );
    assert_eq!(
        found["/admin"]["evidence"]["redirect"],
        format!("{}admin/", server.url())
    );
    assert_eq!(record.outputs["complete"], true);
    let words = record.outputs["words"].as_u64().expect("words");
    assert!(words > 2000, "the embedded list is used: {words}");
    assert!(server.hits("/.svn/entries") == 1 && server.hits("/.env.production") == 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_answers_200_to_everything_yields_only_its_real_resources() {
    let server = HttpFixture::builder()
        .route("/.git/HEAD", Route::ok("ref: refs/heads/main\n"))
        .route(
            "/swagger.json",
            Route::ok("{\"openapi\": \"3.0.0\", \"paths\": {\"/users\": {}, \"/orders\": {}}}")
                .header("Content-Type", "application/json"),
        )
        .soft_404()
        .start();
    let bed = install_ferox(&[]);
    let supervisor = bed.supervisor().await;

    let record = scan(&supervisor, &server.url(), json!({"depth": 1})).await;
    succeeded(&record);
    let found = by_path(&supervisor, &record);
    let mut paths: Vec<&str> = found.keys().map(String::as_str).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/.git/HEAD", "/swagger.json"]);
    assert_eq!(found["/swagger.json"]["rule_id"], "ferox.api-docs");
    let wildcards = record.outputs["wildcards"].as_u64().expect("wildcards");
    assert!(
        wildcards > 2000,
        "the soft-404 answers were filtered: {:?}",
        record.outputs
    );
    assert!(
        record.outputs["calibration"]["/"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "the learnt signatures are reported: {:?}",
        record.outputs["calibration"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_calibration_a_soft_404_server_floods_the_results() {
    let server = HttpFixture::builder().soft_404().start();
    let words = tempfile::tempdir().expect("tempdir");
    let list = wordlist(words.path(), &["a", "b", "c", "d", "e"]);
    let bed = install_ferox(&[words.path()]);
    let supervisor = bed.supervisor().await;

    let config = json!({"wordlist": list, "depth": 0});
    let calibrated = scan(&supervisor, &server.url(), config.clone()).await;
    succeeded(&calibrated);
    assert_eq!(calibrated.findings, 0);
    let mut raw = config;
    raw["auto_calibrate"] = json!(false);
    let uncalibrated = scan(&supervisor, &server.url(), raw).await;
    succeeded(&uncalibrated);
    assert_eq!(
        uncalibrated.findings, 5,
        "every word looks found without calibration"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recursion_scans_found_directories_down_to_the_configured_depth() {
    let server = HttpFixture::builder()
        .route("/api", Route::redirect(301, "/api/"))
        .route("/api/", Route::ok("api root"))
        .route("/api/v1", Route::redirect(301, "/api/v1/"))
        .route("/api/v1/", Route::ok("v1 root"))
        .route("/api/v1/users", Route::ok("[{\"id\": 1}]"))
        .start();
    let words = tempfile::tempdir().expect("tempdir");
    let list = wordlist(words.path(), &["api", "v1", "users"]);
    let bed = install_ferox(&[words.path()]);
    let supervisor = bed.supervisor().await;

    let deep = scan(
        &supervisor,
        &server.url(),
        json!({"wordlist": list, "depth": 2}),
    )
    .await;
    succeeded(&deep);
    let found = by_path(&supervisor, &deep);
    for path in ["/api", "/api/v1", "/api/v1/users"] {
        assert!(
            found.contains_key(path),
            "{path} missing: {:?}",
            found.keys()
        );
    }
    assert_eq!(found["/api/v1/users"]["evidence"]["depth"], 2);
    assert_eq!(found["/api/v1"]["evidence"]["directory"], true);
    assert_eq!(deep.outputs["directories"], 3);

    let before = server.hits("/api/v1/users");
    let shallow = scan(
        &supervisor,
        &server.url(),
        json!({"wordlist": list, "depth": 1}),
    )
    .await;
    succeeded(&shallow);
    assert_eq!(
        server.hits("/api/v1/users"),
        before,
        "depth 1 does not scan /api/v1/"
    );
    assert_eq!(shallow.outputs["directories"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn extensions_method_and_headers_shape_every_request() {
    let server = HttpFixture::builder()
        .route("/config.bak", Route::ok("db_password = x\n"))
        .start();
    let words = tempfile::tempdir().expect("tempdir");
    let list = wordlist(words.path(), &["index", "config", "static/"]);
    let bed = install_ferox(&[words.path()]);
    let supervisor = bed.supervisor().await;

    let config = json!({
        "wordlist": list, "extensions": ["php", ".bak"], "method": "POST",
        "headers": {"X-Api-Key": "k-123"}, "depth": 0
    });
    let record = scan(&supervisor, &server.url(), config).await;
    succeeded(&record);
    let requests = server.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path()).collect();
    for expected in [
        "/index",
        "/index.php",
        "/index.bak",
        "/config",
        "/config.php",
        "/config.bak",
        "/static/",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} not requested: {paths:?}"
        );
    }
    assert!(
        !paths.contains(&"/static/.php"),
        "directory probes get no extension"
    );
    assert!(requests
        .iter()
        .all(|r| r.method == "POST" && r.header("x-api-key") == Some("k-123")));
    let found = by_path(&supervisor, &record);
    assert_eq!(found.len(), 1);
    assert_eq!(found["/config.bak"]["rule_id"], "ferox.backup-file");
    assert_eq!(found["/config.bak"]["location"]["method"], "POST");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_size_filters_drop_what_they_name() {
    let server = HttpFixture::builder()
        .route("/private", Route::new(403).body("forbidden"))
        .route("/teapot", Route::new(418).body("short and stout"))
        .route("/empty", Route::ok(""))
        .route("/page", Route::ok("a real page"))
        .start();
    let words = tempfile::tempdir().expect("tempdir");
    let list = wordlist(words.path(), &["private", "teapot", "empty", "page"]);
    let bed = install_ferox(&[words.path()]);
    let supervisor = bed.supervisor().await;

    let defaults = scan(
        &supervisor,
        &server.url(),
        json!({"wordlist": list, "depth": 0}),
    )
    .await;
    succeeded(&defaults);
    let mut seen: Vec<String> = by_path(&supervisor, &defaults).keys().cloned().collect();
    seen.sort();
    assert_eq!(
        seen,
        ["/empty", "/page", "/private"],
        "418 is not in the default status_codes"
    );

    let config = json!({"wordlist": list, "depth": 0, "filter_status": [403, 404], "filter_size": [0], "status_codes": []});
    let filtered = scan(&supervisor, &server.url(), config).await;
    succeeded(&filtered);
    let mut seen: Vec<String> = by_path(&supervisor, &filtered).keys().cloned().collect();
    seen.sort();
    assert_eq!(seen, ["/page", "/teapot"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_reported_and_followed_only_on_the_same_origin() {
    let server = HttpFixture::builder()
        .route("/old", Route::redirect(302, "/middle"))
        .route("/middle", Route::redirect(302, "/new"))
        .route("/new", Route::ok("the new page"))
        .route("/away", Route::redirect(302, "http://elsewhere.invalid/x"))
        .start();
    let words = tempfile::tempdir().expect("tempdir");
    let list = wordlist(words.path(), &["old", "away"]);
    let bed = install_ferox(&[words.path()]);
    let supervisor = bed.supervisor().await;

    let record = scan(
        &supervisor,
        &server.url(),
        json!({"wordlist": list, "depth": 0, "follow_redirects": true}),
    )
    .await;
    succeeded(&record);
    let found = by_path(&supervisor, &record);
    let old = &found["/old"]["evidence"];
    assert_eq!(old["redirect"], format!("{}middle", server.url()));
    assert_eq!(old["redirect_final"]["url"], format!("{}new", server.url()));
    assert_eq!(old["redirect_final"]["status"], 200);
    assert_eq!(old["redirect_final"]["hops"], 2);
    let away = &found["/away"]["evidence"];
    assert_eq!(away["redirect"], "http://elsewhere.invalid/x");
    assert!(
        away.get("redirect_final").is_none(),
        "another origin is not followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_slower_than_the_timeout_is_abandoned_without_stalling_the_scan() {
    let server = HttpFixture::builder()
        .route("/slow", Route::ok("late").delay(Duration::from_secs(5)))
        .route("/fast", Route::ok("quick"))
        .start();
    let words = tempfile::tempdir().expect("tempdir");
    let list = wordlist(words.path(), &["slow", "fast"]);
    let bed = install_ferox(&[words.path()]);
    let supervisor = bed.supervisor().await;

    let started = Instant::now();
    let record = scan(
        &supervisor,
        &server.url(),
        json!({"wordlist": list, "depth": 0, "timeout_ms": 300}),
    )
    .await;
    // The slow word got no answer even after retries: the scan says so.
    assert_eq!(partial(&record), 1);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let found = by_path(&supervisor, &record);
    assert!(found.contains_key("/fast") && !found.contains_key("/slow"));
    assert_eq!(record.outputs["errors"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_spaces_requests_over_time() {
    let server = HttpFixture::builder().start();
    let words = tempfile::tempdir().expect("tempdir");
    let list = wordlist(words.path(), &["a", "b", "c", "d", "e", "f", "g", "h"]);
    let bed = install_ferox(&[words.path()]);
    let supervisor = bed.supervisor().await;

    let config = json!({"wordlist": list, "depth": 0, "rate_limit": 20, "auto_calibrate": false});
    let record = scan(&supervisor, &server.url(), config).await;
    succeeded(&record);
    // The first request is the reachability check; the 8 words follow at 20/s.
    assert_eq!(server.requests().len(), 9);
    let duration = record.outputs["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        duration >= 350,
        "8 requests at 20/s take at least 350 ms, took {duration}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_scan_stops_promptly_and_keeps_its_findings() {
    let server = HttpFixture::builder()
        .route("/.git/config", Route::ok("[core]\n"))
        .fallback(|_| Route::new(404).delay(Duration::from_millis(100)))
        .start();
    let bed = install_ferox(&[]);
    let supervisor = bed.supervisor().await;

    let (cancel, cancel_rx) = tokio::sync::watch::channel(false);
    let mut inputs = Map::new();
    inputs.insert("target".into(), json!(server.url()));
    let request = RunRequest {
        plugin: "ferox".into(),
        inputs,
        config: json!({"concurrency": 4, "auto_calibrate": false})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..RunRequest::default()
    };
    let run = tokio::spawn(async move {
        let record = supervisor
            .execute(request, cancel_rx)
            .await
            .expect("run executes");
        (supervisor, record)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cancelled_at = Instant::now();
    cancel.send(true).expect("cancel");
    let (supervisor, record) = run.await.expect("run task");
    assert!(
        cancelled_at.elapsed() < Duration::from_millis(1500),
        "stopped {:?} after cancel",
        cancelled_at.elapsed()
    );
    assert_eq!(record.status, RunStatus::Cancelled, "{record:#?}");
    let found = by_path(&supervisor, &record);
    assert!(
        found.contains_key("/.git/config"),
        "the finding sent before the cancel is kept"
    );
    let sent = server.requests().len();
    assert!(
        sent < 200,
        "the scan did not run to the end: {sent} requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_that_cannot_finish_in_time_stops_before_the_deadline_with_what_it_found() {
    let server = HttpFixture::builder()
        .route("/.git/config", Route::ok("[core]\n"))
        .fallback(|_| Route::new(404).delay(Duration::from_millis(50)))
        .start();
    let bed = install_ferox(&[]);
    let supervisor = bed.supervisor().await;

    let config = json!({"concurrency": 2, "auto_calibrate": false});
    let record = run_on_target(&supervisor, "ferox", &server.url(), config, Some(3000)).await;
    assert!(partial(&record) > 0, "the deadline left words untried");
    assert!(
        record.duration_ms < 3000,
        "ended before the deadline: {} ms",
        record.duration_ms
    );
    assert_eq!(record.outputs["complete"], false);
    assert_eq!(record.outputs["stopped"], "deadline");
    assert!(by_path(&supervisor, &record).contains_key("/.git/config"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_target_fails_the_run_with_the_target_unreachable_code() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let bed = install_ferox(&[]);
    let supervisor = bed.supervisor().await;
    let record = scan(&supervisor, &format!("http://127.0.0.1:{port}/"), json!({})).await;
    assert_eq!(record.status, RunStatus::Failed, "{record:#?}");
    let error = record.error.expect("error");
    assert_eq!(error.code, -32002, "{error:?}");
    assert!(error.message.contains("unreachable"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_targets_are_scanned_and_certificate_checking_is_opt_in() {
    let server = HttpFixture::builder()
        .route("/.git/config", Route::ok("[core]\n"))
        .tls()
        .start();
    assert!(server.url().starts_with("https://"));
    let words = tempfile::tempdir().expect("tempdir");
    let list = wordlist(words.path(), &[".git/config", "nothing"]);
    let bed = install_ferox(&[words.path()]);
    let supervisor = bed.supervisor().await;

    let record = scan(
        &supervisor,
        &server.url(),
        json!({"wordlist": list, "depth": 0}),
    )
    .await;
    succeeded(&record);
    let found = by_path(&supervisor, &record);
    assert_eq!(found["/.git/config"]["severity"], "high");

    let strict = scan(
        &supervisor,
        &server.url(),
        json!({"wordlist": list, "tls_verify": true}),
    )
    .await;
    assert_eq!(
        strict.status,
        RunStatus::Failed,
        "a self-signed certificate is refused: {strict:#?}"
    );
    assert_eq!(strict.error.expect("error").code, -32002);
}

#[test]
fn progress_counts_requests_done_against_the_total_over_stdio() {
    let server = HttpFixture::builder()
        .route("/admin", Route::ok("panel"))
        .start();
    let mut child = Command::new(workspace_bin("secflow-ferox"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("plugin starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let workdir = tempfile::tempdir().expect("workdir");
    let mut send = move |message: Value| {
        writeln!(stdin, "{message}").expect("write");
        stdin.flush().expect("flush");
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocol_version": 1, "run_id": "r", "plugin": {"name": "ferox", "version": "1.0.0"},
        "config": {"depth": 0},
        "context": {"workdir": workdir.path(), "deadline_ms": 60000, "network": true},
        "limits": {"max_message_bytes": 8388608, "max_findings": 1000}}}),
    );
    send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "run", "params": {"inputs": {"target": server.url()}}}),
    );
    let mut progress = Vec::new();
    let mut findings = 0;
    let result = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).expect("read") > 0,
            "plugin closed stdout"
        );
        let message: Value = serde_json::from_str(&line).expect("a JSON line");
        match message["method"].as_str() {
            Some("progress") => progress.push((
                message["params"]["completed"].as_u64().expect("completed"),
                message["params"]["total"].as_u64().expect("total"),
            )),
            Some("finding") => findings += 1,
            _ if message["id"] == 2 => break message,
            _ => {}
        }
    };
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "shutdown", "params": {}}));
    drop(send);
    assert!(child.wait().expect("exit").success());

    assert_eq!(result["result"]["findings"], findings);
    assert_eq!(findings, 1);
    let (done, total) = *progress.last().expect("at least one progress notification");
    assert_eq!(done, total, "the last progress is complete: {progress:?}");
    assert_eq!(
        done,
        result["result"]["outputs"]["requests"]
            .as_u64()
            .expect("requests")
    );
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "completed never goes back: {progress:?}"
    );
    assert!(done > 2000);
}

/// A loopback target that answers its root (so it is reachable) and closes
/// every other request unanswered: a target that went away mid-scan, or a
/// filter that resets the scanner.
fn dropping_target() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            if line.starts_with("GET / ") {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_that_could_not_try_every_word_is_partial_never_succeeded() {
    let port = dropping_target();
    let words = tempfile::tempdir().unwrap();
    let list = wordlist(
        words.path(),
        &[".env", ".git/HEAD", "admin", "backup", "login"],
    );
    let bed = install_ferox(&[words.path()]);
    let supervisor = bed.supervisor().await;

    let record = scan(
        &supervisor,
        &format!("http://127.0.0.1:{port}/"),
        json!({"wordlist": list, "depth": 0, "retries": 1, "retry_backoff_ms": 5,
               "max_consecutive_failures": 0}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Partial, "{record:#?}");
    assert!(record.partial);
    let error = record
        .error
        .as_ref()
        .expect("a partial run says what it left");
    assert_eq!(error.kind.as_str(), "incomplete");
    assert_eq!(error.untried, Some(5), "{error:?}");
    assert!(
        error
            .message
            .contains("5 words got no answer after 1 retries"),
        "{error:?}"
    );
    supervisor.flush().await.unwrap();
    let stored = supervisor.store().run(&record.run_id).unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Partial);
    assert_eq!(stored.error.and_then(|e| e.untried), Some(5));
}
