//! A loopback HTTP/1.1 server whose every answer is a function of the request,
//! and helpers that run the plugin in-process against it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use secflow_plugin_sdk::testing::{self, TestOutcome};
use serde_json::{json, Value};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status, headers (Content-Length is added), body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    /// No answer: the connection is closed once the request is read.
    pub fn dropped() -> Reply {
        Reply::new(0, &[], Vec::new())
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply::new(status, &[("Content-Type", "text/html")], body)
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// The server; it runs until the test process ends.
pub struct Server {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Arc::clone(&handler);
                let record = Arc::clone(&record);
                std::thread::spawn(move || serve(stream, &*handler, &record));
            }
        });
        Server { url, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, handler: &Handler, record: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.trim_end().split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let seen = Seen {
        method,
        target,
        headers,
        body,
    };
    let reply = handler(&seen);
    record.lock().unwrap().push(seen);
    if reply.status == 0 {
        // Reply::dropped(): close without an answer.
        return;
    }
    let reason = match reply.status {
        200 => "OK",
        404 => "Not Found",
        _ => "Status",
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (n, v) in &reply.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    let mut stream = stream;
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
}

/// The copied public templates (tests/fixtures/nuclei-templates).
pub fn real_templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/nuclei-templates")
}

/// Writes `yaml` to a temp file and returns its dir (kept for the test's life).
pub fn template_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

/// Runs the plugin in-process with `templates` against `url`.
pub fn run_plugin(templates: &[PathBuf], url: &str) -> TestOutcome {
    let paths: Vec<String> = templates.iter().map(|p| p.display().to_string()).collect();
    testing::run(
        secflow_nuclei::Nuclei,
        json!({"templates": paths, "request_timeout_ms": 5000}),
        json!({"target": url}),
    )
}

/// Runs the plugin in-process with one template file, `config` added to
/// the test defaults, against `url`.
pub fn run_plugin_with(template: &Path, url: &str, config: Value) -> TestOutcome {
    let mut full =
        json!({"templates": [template.display().to_string()], "request_timeout_ms": 5000});
    if let (Some(full), Value::Object(extra)) = (full.as_object_mut(), config) {
        full.extend(extra);
    }
    testing::run(secflow_nuclei::Nuclei, full, json!({"target": url}))
}

/// Runs one inline template against a server answering with `handler`.
pub fn run_inline(
    yaml: &str,
    handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> (TestOutcome, Server) {
    let server = Server::start(handler);
    let (_dir, path) = template_file(yaml);
    let outcome = run_plugin(&[path], &server.url);
    assert!(outcome.error.is_none(), "run failed: {:?}", outcome.error);
    (outcome, server)
}

pub fn rule_ids(outcome: &TestOutcome) -> Vec<String> {
    outcome
        .findings
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Validates a finding against schemas/finding.json.
pub fn schema_errors(finding: &Value) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/finding.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(finding)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}
