//! Headless Chromium driven over the DevTools protocol, for the dashboard
//! tests: navigate, evaluate script in the page, wait for loads, take
//! screenshots. One page (target), one flat session, requests answered in
//! order; events that arrive meanwhile are kept until asked for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools answer or page load may take.
const STEP: Duration = Duration::from_secs(30);

/// Chromium's path, or `None` with the reason printed (outside CI only).
pub fn chromium_or_skip() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is required in CI (scripts/setup installs it)"
        );
        eprintln!("skipped: chromium is not installed (scripts/setup installs it); CI is not set");
    }
    found
}

/// A headless Chromium with one page, killed when dropped.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn launch(chromium: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // As the probe of this machine kind starts it: root needs --no-sandbox, and
        // the background-networking flags keep it off the (closed) network.
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium writes the port it chose and the browser's path here.
        let active = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + STEP;
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.to_owned(), path.to_owned());
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the DevTools websocket opens");
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        };
        let target = browser
            .browser_call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser
            .browser_call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser
    }

    async fn send(&mut self, session: Option<String>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::String(session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("a DevTools request is sent");
        loop {
            let message = self.read().await;
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    async fn read(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("chromium answers within 30 s")
                .expect("the DevTools websocket stays open")
                .expect("a DevTools message");
            if let Message::Text(text) = next {
                return serde_json::from_str(&text).expect("DevTools messages are JSON");
            }
        }
    }

    async fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params).await
    }

    /// A command to the page's session.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(session), method, params).await
    }

    /// Waits for the page's next `load` event (one already received counts).
    pub async fn wait_for_load(&mut self) {
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| e["method"] == "Page.loadEventFired")
            {
                self.events.drain(..=i);
                return;
            }
            let message = self.read().await;
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    /// Loads `url` and waits until the page (after any redirect) has loaded.
    pub async fn goto(&mut self, url: &str) {
        self.events.clear();
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for_load().await;
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Runs `action` (which navigates, e.g. a click on a submit button) and
    /// waits for the new page to load.
    pub async fn submit(&mut self, action: &str) {
        self.events.clear();
        self.eval(action).await;
        self.wait_for_load().await;
    }

    /// Polls `condition` (a boolean expression) until it holds.
    pub async fn wait_until(&mut self, condition: &str) {
        let deadline = Instant::now() + STEP;
        while self.eval(condition).await != Value::Bool(true) {
            assert!(Instant::now() < deadline, "{condition} never held");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's path (`location.pathname`).
    pub async fn path(&mut self) -> String {
        self.eval("location.pathname")
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// A PNG of the whole page.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }

    /// Console messages and CSP reports seen so far (`Runtime.consoleAPICalled`,
    /// `Runtime.exceptionThrown`).
    pub fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Runtime.exceptionThrown")
            .map(|e| e["params"].to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
