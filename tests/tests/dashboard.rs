//! Issue 19's dashboard, in a real browser: `secflowd` with `[web]` on,
//! fixture runs stored first, headless Chromium driven over the DevTools
//! protocol. Each test asserts what a person sees: where a request without
//! a login lands, counts, a filter that narrows, a chart drawn, a run's
//! audit trail, the live view filled by its script under the strict CSP.
//!
//! `SECFLOW_SCREENSHOTS=DIR` saves a PNG of each page there (docs/screenshots
//! holds the ones the README shows).

mod browser;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use browser::{chromium_or_skip, Browser};
use support::*;

const DETECTOR: &str = env!("CARGO_BIN_EXE_fixture-detector");

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `secflowd` serving the bed's dashboard, killed on drop.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(bed: &TestBed, port: u16) -> Daemon {
        let log = bed.path().join("secflowd.log");
        let child = Command::new(workspace_bin("secflowd"))
            .arg("--config")
            .arg(&bed.config_path)
            .env_remove("SECFLOW_CONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("secflowd starts");
        let mut daemon = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("secflowd exited with {status}:\n{}", daemon.log());
            }
            assert!(Instant::now() < deadline, "no dashboard:\n{}", daemon.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bed with the dashboard on `port`, three stored runs of a detector that
/// reports ten findings (info, low, medium, high, critical in turn), and a token.
fn dashboard_bed(port: u16) -> (TestBed, String) {
    let bed = TestBed::with_config(&format!(
        "[api]\nsocket = \"api.sock\"\n[host]\nname = \"scanner-a\"\n[web]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    bed.install_fixture("detector", DETECTOR);
    for _ in 0..3 {
        let run = bed.secflow(&["run", "detector", "--local", "--set", "count=10"]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let issued = json_of(&bed.secflow(&["--json", "web", "token", "--user", "alice"]));
    let token = issued["token"].as_str().unwrap().to_owned();
    (bed, token)
}

/// Sets the findings filter `field` to `value`, submits the form and
/// returns the count the page then shows.
async fn filter(page: &mut Browser, field: &str, value: &str) -> String {
    page.eval(&format!(
        "document.getElementById('filter-{field}').value = '{value}'"
    ))
    .await;
    page.submit("document.getElementById('apply-filters').click()")
        .await;
    page.eval("document.getElementById('finding-count').dataset.count")
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Saves a PNG of the page as `<dir>/<name>.png` when screenshots are asked for.
async fn shoot(page: &mut Browser, dir: &Option<std::path::PathBuf>, name: &str) {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), page.screenshot().await).unwrap();
    }
}

/// One raw HTTP/1.1 request; the status line and headers of the answer.
fn raw_request(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn nothing_but_the_login_page_is_reachable_without_a_token() {
    let port = free_port();
    let (bed, token) = dashboard_bed(port);
    let _daemon = Daemon::start(&bed, port);
    let get = |path: &str, extra: &str| {
        raw_request(
            port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n\r\n"
            ),
        )
    };
    for page in [
        "/",
        "/findings",
        "/runs",
        "/plugins",
        "/live",
        "/findings/1",
        "/static/live.js",
    ] {
        let answer = get(page, "");
        assert!(answer.starts_with("HTTP/1.1 303"), "{page}: {answer}");
        assert!(answer.contains("location: /login"), "{page}: {answer}");
        assert!(!answer.contains("detector"), "{page} leaks data: {answer}");
    }
    let api = get("/api/live", "");
    assert!(api.starts_with("HTTP/1.1 401"), "{api}");
    let wrong = get("/findings", "Authorization: Bearer not-the-token\r\n");
    assert!(wrong.starts_with("HTTP/1.1 303"), "{wrong}");
    let forged = get("/findings", "Cookie: secflow_session=0123456789abcdef\r\n");
    assert!(forged.starts_with("HTTP/1.1 303"), "{forged}");

    let ok = get("/findings", &format!("Authorization: Bearer {token}\r\n"));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{ok}"
    );
    assert!(ok.contains("x-frame-options: DENY"), "{ok}");
    assert!(!ok.contains("<script>"), "no inline script");

    // A login posted from another site is refused (CSRF), whatever the token.
    let body = format!("token={token}");
    let cross = raw_request(
        port,
        &format!(
            "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(cross.starts_with("HTTP/1.1 403"), "{cross}");
    // The dashboard changes nothing: other methods are refused.
    let refused = raw_request(
        port,
        &format!("DELETE /findings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    );
    assert!(refused.starts_with("HTTP/1.1 405"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_logs_in_filters_findings_reads_a_run_and_sees_the_charts() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let port = free_port();
    let (bed, token) = dashboard_bed(port);
    let daemon = Daemon::start(&bed, port);
    let shots = std::env::var_os("SECFLOW_SCREENSHOTS").map(std::path::PathBuf::from);
    let base = format!("http://127.0.0.1:{port}");
    let mut page = Browser::launch(&chromium).await;

    // Without a login every page leads to the login form.
    page.goto(&format!("{base}/findings")).await;
    assert_eq!(page.path().await, "/login");
    shoot(&mut page, &shots, "login").await;
    page.eval("document.getElementById('token').value = 'wrong'")
        .await;
    page.submit("document.getElementById('login').click()")
        .await;
    let error = page
        .eval("document.getElementById('login-error').textContent")
        .await;
    assert_eq!(error, "that token is not valid");

    page.eval(&format!(
        "document.getElementById('token').value = '{token}'"
    ))
    .await;
    page.submit("document.getElementById('login').click()")
        .await;
    assert_eq!(page.path().await, "/findings", "{}", daemon.log());
    let user = page
        .eval("document.querySelector('header .user').textContent")
        .await;
    assert_eq!(user, "alice");

    // Ten distinct findings (three runs of the same ten: deduplicated).
    let shown = page
        .eval("document.querySelectorAll('#findings tbody tr').length")
        .await;
    assert_eq!(shown, 10);
    assert_eq!(
        page.eval("document.getElementById('finding-count').dataset.count")
            .await,
        "10"
    );
    let seen = page
        .eval("[...document.querySelectorAll('#findings tbody tr td:nth-child(8)')].map(td => td.textContent)")
        .await;
    assert!(
        seen.as_array().unwrap().iter().all(|s| s == "3"),
        "every finding seen by the three runs: {seen}"
    );
    shoot(&mut page, &shots, "findings").await;

    // The severity filter narrows to what is at least high: two high, two critical.
    page.eval("document.getElementById('filter-severity').value = 'high'")
        .await;
    page.submit("document.getElementById('apply-filters').click()")
        .await;
    assert_eq!(
        page.eval("location.search").await,
        "?severity=high&plugin=&host=&target=&text=",
        "the filter is in the address, so it can be shared"
    );
    let severities = page
        .eval("[...document.querySelectorAll('#findings tbody .sev')].map(s => s.textContent)")
        .await;
    assert_eq!(
        severities,
        serde_json::json!(["high", "critical", "high", "critical"])
    );

    // The host filter: every finding was seen by this bed's host, none by another.
    let hosts = page
        .eval("[...document.querySelectorAll('#findings tbody tr td:nth-child(7)')].map(td => td.textContent)")
        .await;
    assert!(
        hosts.as_array().unwrap().iter().all(|h| h == "scanner-a"),
        "{hosts}"
    );
    assert_eq!(
        filter(&mut page, "host", "scanner-b").await,
        "0",
        "no finding was seen by another host"
    );
    assert_eq!(filter(&mut page, "host", "scanner-a").await, "4");

    // The text search looks in titles and rule ids, ignoring case: of the
    // four, only "Fixture finding 10" has "finding 1" in its title.
    assert_eq!(filter(&mut page, "text", "FINDING 1").await, "1");
    assert_eq!(
        page.eval("document.querySelector('#findings tbody tr').textContent.includes('Fixture finding 10')")
            .await,
        true
    );
    // The target search: the fixture's findings are all on 127.0.0.1:8080.
    assert_eq!(
        filter(&mut page, "target", "127.0.0.9").await,
        "0",
        "no finding on another target"
    );
    assert_eq!(filter(&mut page, "target", "127.0.0.1:8080").await, "1");

    // A finding's detail: its description and its occurrences.
    page.submit("document.querySelector('#findings tbody a').click()")
        .await;
    assert!(page.path().await.starts_with("/findings/"));
    assert_eq!(
        page.eval("document.getElementById('occurrences').textContent")
            .await,
        "3"
    );
    let description = page
        .eval("document.querySelector('.description').textContent")
        .await;
    assert_eq!(description, "A finding made up by a test fixture.");
    // What produced it: the fixture's executable, by the digest the run checked.
    let hash = secflow_trust::hash_file(std::path::Path::new(DETECTOR)).unwrap();
    assert_eq!(
        page.eval("document.getElementById('binary-digest').textContent")
            .await,
        hash.as_str()
    );
    shoot(&mut page, &shots, "finding").await;

    // Runs: the three stored runs, and a run's audit trail.
    page.goto(&format!("{base}/runs")).await;
    assert_eq!(
        page.eval("document.getElementById('run-count').dataset.count")
            .await,
        "3"
    );
    let statuses = page
        .eval("[...document.querySelectorAll('#runs tbody .status')].map(s => s.textContent)")
        .await;
    assert_eq!(
        statuses,
        serde_json::json!(["succeeded", "succeeded", "succeeded"])
    );
    shoot(&mut page, &shots, "runs").await;
    page.submit("document.querySelector('#runs tbody a').click()")
        .await;
    assert!(page.path().await.starts_with("/runs/"));
    let audit = page
        .eval("[...document.querySelectorAll('#audit tbody tr td:nth-child(2)')].map(td => td.textContent)")
        .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "plugin_invoked"),
        "the run's audit trail: {audit}"
    );
    shoot(&mut page, &shots, "run").await;

    // Plugins: status and the telemetry charts, drawn.
    page.goto(&format!("{base}/plugins")).await;
    let status = page
        .eval("document.querySelector('#plugins tbody .status').textContent")
        .await;
    assert_eq!(status, "active");
    let bars = page
        .eval("[...document.querySelectorAll('#chart-detector-runs rect.bar')].map(r => r.dataset.value)")
        .await;
    assert_eq!(bars, serde_json::json!(["3"]), "three runs today");
    let drawn = page
        .eval("document.querySelector('#chart-detector-runs rect.bar').getBoundingClientRect().height > 50")
        .await;
    assert_eq!(drawn, true, "the bar is drawn at full height");
    let lines = page
        .eval("document.querySelectorAll('#chart-detector-duration polyline').length")
        .await;
    assert_eq!(lines, 2, "p50 and p95");
    shoot(&mut page, &shots, "plugins").await;

    // The live view is filled by its script (allowed by the CSP: same origin).
    page.goto(&format!("{base}/live")).await;
    page.wait_until("document.getElementById('live-count').dataset.count === '0'")
        .await;
    assert_eq!(
        page.eval("document.getElementById('live-count').textContent")
            .await,
        "0 running, 0 queued"
    );
    shoot(&mut page, &shots, "live").await;
    assert!(page.errors().is_empty(), "{:?}", page.errors());

    // Logging out ends the session.
    page.submit("document.querySelector('header .logout button').click()")
        .await;
    assert_eq!(page.path().await, "/login");
    page.goto(&format!("{base}/runs")).await;
    assert_eq!(page.path().await, "/login");
}
