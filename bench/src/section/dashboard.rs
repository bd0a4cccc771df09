//! Section 6, the dashboard: each page's answer time with N findings stored
//! (one streamed run), as a client with a bearer token sees it over one
//! keep-alive connection: p50 and p99 of 200 requests per page after a
//! warm-up. The issue's bound: a page answers in ≤ 50 ms with 1 000 000
//! findings. There is no anchor to run beside it; the bound is absolute.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{expect_succeeded, STREAMER};
use crate::daemon::Daemon;
use crate::home::{BenchHome, HomeSettings};
use crate::report::{Bound, Figure};
use crate::stats::Samples;
use crate::{BenchError, Bins};

const SECTION: &str = "6 dashboard";
const REQUESTS: usize = 200;
const WARM_UP: usize = 10;

pub fn run(bins: &Bins, findings: u64) -> Result<Vec<Figure>, BenchError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| BenchError::Io {
            what: "choosing a port for the dashboard".into(),
            source,
        })?;
    let home = BenchHome::new(&HomeSettings {
        max_findings: findings.max(1_000_000),
        web_port: Some(port),
        ..HomeSettings::default()
    })?;
    home.install(STREAMER, &bins.streamer)?;
    let token = secflow_web::issue_token(&home.path().join("web-tokens"), "bench")
        .map_err(|e| BenchError::Setup(format!("issuing a dashboard token: {e}")))?;
    let daemon = Daemon::start(&bins.secflowd, &home)?;
    eprintln!("[6 dashboard] storing {findings} findings");
    let record = daemon.connect()?.call(
        "runs.execute",
        json!({"plugin": STREAMER, "config": {"count": findings}, "timeout_ms": 1_800_000}),
    )?;
    expect_succeeded(&record)?;
    let run_id = record
        .get("run_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();

    let mut client = Client::connect(port, &token)?;
    let last_page = format!("/findings?after={}", findings.saturating_sub(50));
    let middle = findings / 2;
    let pages = [
        ("findings, first page", "/findings".to_owned()),
        (
            "findings, at least high",
            "/findings?severity=high".to_owned(),
        ),
        ("findings, a page near the end", last_page),
        // A search that matches nothing reads a whole window of ids
        // (secflow_web::SEARCH_WINDOW): the worst case.
        (
            "findings, text search matching none",
            "/findings?text=no-such-title".to_owned(),
        ),
        (
            "findings, target search matching none",
            "/findings?target=no-such-target".to_owned(),
        ),
        ("a finding's detail", format!("/findings/{}", middle.max(1))),
        ("runs", "/runs".to_owned()),
        ("a run's detail", format!("/runs/{run_id}")),
        ("plugins with charts", "/plugins".to_owned()),
    ];
    let mut figures = Vec::new();
    for (name, path) in &pages {
        eprintln!("[6 dashboard] {name}: GET {path}");
        let samples = client.time(path)?;
        let measure = format!("{name}, {findings} findings stored");
        figures.push(
            Figure::new(
                SECTION,
                format!("{measure}, p50"),
                samples.median_ms(),
                "ms",
            )
            .target(Bound::AtMost(50.0)),
        );
        figures.push(Figure::new(
            SECTION,
            format!("{measure}, p99"),
            samples.p99_ms(),
            "ms",
        ));
    }
    Ok(figures)
}

/// One keep-alive HTTP/1.1 connection with a bearer token.
struct Client {
    reader: BufReader<TcpStream>,
    token: String,
    port: u16,
}

impl Client {
    fn connect(port: u16, token: &str) -> Result<Client, BenchError> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|source| BenchError::Io {
            what: format!("connecting to the dashboard on port {port}"),
            source,
        })?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        Ok(Client {
            reader: BufReader::new(stream),
            token: token.to_owned(),
            port,
        })
    }

    /// One GET; the answer's body length. Anything but 200 is an error.
    fn get(&mut self, path: &str) -> Result<usize, BenchError> {
        let io = |what: &str| {
            let what = format!("{what} GET {path}");
            move |source| BenchError::Io { what, source }
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\r\n",
            self.port, self.token
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(io("sending"))?;
        let mut status = String::new();
        self.reader.read_line(&mut status).map_err(io("reading"))?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).map_err(io("reading"))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).map_err(io("reading"))?;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(BenchError::Setup(format!(
                "GET {path} answered {}",
                status.trim_end()
            )));
        }
        Ok(length)
    }

    fn time(&mut self, path: &str) -> Result<Samples, BenchError> {
        for _ in 0..WARM_UP {
            self.get(path)?;
        }
        let mut samples = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let started = Instant::now();
            self.get(path)?;
            samples.push(started.elapsed());
        }
        Ok(Samples::new(samples))
    }
}
