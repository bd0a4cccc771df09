//! Fuzzes what a plugin writes on stdout, through the supervisor's own path:
//! the bounded line reader (`runner::spawn_stdout_reader`), then the line
//! decoder (`runner::decode_line`), then the typed params the session reads
//! (`runner::finding_params`, checked against serde's reading of the same),
//! and the session's fast path for findings (`runner::fast_finding`), checked
//! against the decoder.
//! The plugin side's framing (`secflow_plugin_sdk::framing`) reads the same
//! bytes too.
//!
//! Beyond "no panic": both readers must cut the bytes exactly as a plain
//! model of the framing rules does (lines, the line bound, the output bound);
//! a decoded message must re-encode to exactly one line that decodes to the
//! same message; an accepted finding must get a well-formed fingerprint.

#![no_main]

use std::io::{BufReader, Cursor};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secflow_plugin_sdk::framing::{read_bounded_line, LineRead};
use secflow_plugin_sdk::protocol::{
    method, FindingParams, InitializeResult, LogParams, ProgressParams, RunResult,
};
use secflow_runner::{
    decode_line, fast_finding, finding_params, spawn_stdout_reader, PluginLine, StdoutEvent,
};
use serde_json::Value;

/// Small bounds, so that inputs of a few KiB reach both limits.
const MAX_LINE: usize = 512;
const MAX_OUTPUT: u64 = 2048;

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Line(Vec<u8>),
    TooLong,
    OutputLimit,
    Eof,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
    })
}

/// The lines of `data` as the protocol defines them: split on `\n`, a last
/// line without `\n` counts, nothing after a final `\n`.
fn model_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// What the supervisor's stdout reader must report for `data`.
fn model_supervisor(data: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut total = 0u64;
    for line in model_lines(data) {
        if line.len() > MAX_LINE {
            events.push(Event::TooLong);
            return events;
        }
        total += line.len() as u64 + 1;
        if total > MAX_OUTPUT {
            events.push(Event::OutputLimit);
            return events;
        }
        events.push(Event::Line(line.to_vec()));
    }
    events.push(Event::Eof);
    events
}

fn supervisor_events(data: &[u8]) -> Vec<Event> {
    runtime().block_on(async {
        let mut rx = spawn_stdout_reader(Cursor::new(data.to_vec()), MAX_LINE, MAX_OUTPUT);
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(match event {
                StdoutEvent::Line(line) => Event::Line(line),
                StdoutEvent::TooLong { limit } => {
                    assert_eq!(limit, MAX_LINE);
                    Event::TooLong
                }
                StdoutEvent::OutputLimit { limit } => {
                    assert_eq!(limit, MAX_OUTPUT);
                    Event::OutputLimit
                }
                StdoutEvent::Eof => Event::Eof,
                StdoutEvent::Failed(e) => panic!("reading a byte slice failed: {e}"),
            });
        }
        events
    })
}

/// The SDK reader over `data`, with a small buffer so lines span refills.
fn sdk_events(data: &[u8]) -> Vec<Event> {
    let mut reader = BufReader::with_capacity(7, data);
    let mut line = Vec::new();
    let mut events = Vec::new();
    loop {
        match read_bounded_line(&mut reader, MAX_LINE, &mut line).expect("a slice reads") {
            LineRead::Line => events.push(Event::Line(line.clone())),
            LineRead::TooLong => {
                events.push(Event::TooLong);
                return events;
            }
            LineRead::Eof => {
                events.push(Event::Eof);
                return events;
            }
        }
    }
}

/// The SDK's framing: the same lines, less one trailing `\r`; no output bound.
fn model_sdk(data: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    for line in model_lines(data) {
        if line.len() > MAX_LINE {
            events.push(Event::TooLong);
            return events;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        events.push(Event::Line(line.to_vec()));
    }
    events.push(Event::Eof);
    events
}

/// Decodes one line as the session does and checks what it must guarantee.
fn check_line(line: &[u8]) {
    // The session tries its fast path first: it may leave any line to the
    // general path, but a finding it reads must be exactly what that path reads.
    if let Some((seq, finding, text)) = fast_finding(line) {
        let Ok(PluginLine::Notification(message)) = decode_line(line) else {
            panic!("the fast path read a finding from a line the decoder refuses");
        };
        assert_eq!(message.method.as_deref(), Some(method::FINDING));
        let params = finding_params(message.params.unwrap_or(Value::Null))
            .expect("the fast path read params the general path refuses");
        assert_eq!((params.seq, &params.finding), (seq, &finding));
        let reread: Value = serde_json::from_str(&text).expect("the finding's text parses");
        assert_eq!(reread, finding);
    }
    let decoded = match decode_line(line) {
        Ok(decoded) => decoded,
        Err(violation) => {
            assert!(!violation.is_empty());
            return;
        }
    };
    let message = match &decoded {
        PluginLine::Response(m) | PluginLine::Notification(m) => m,
    };
    // What the supervisor writes back is always exactly one line, and reads
    // back as the same message.
    let encoded = message.to_line();
    assert!(encoded.ends_with('\n'));
    assert_eq!(encoded.matches('\n').count(), 1, "{encoded:?}");
    let again = decode_line(encoded.trim_end_matches('\n').as_bytes())
        .expect("a re-encoded message decodes");
    let (again_message, same_kind) = match (&decoded, &again) {
        (PluginLine::Response(_), PluginLine::Response(m)) => (m, true),
        (PluginLine::Notification(_), PluginLine::Notification(m)) => (m, true),
        (_, PluginLine::Response(m) | PluginLine::Notification(m)) => (m, false),
    };
    assert!(same_kind, "the kind changed in a round trip: {encoded:?}");
    assert_eq!(
        serde_json::to_value(message).expect("a message serialises"),
        serde_json::to_value(again_message).expect("a message serialises"),
    );

    // The typed params and results the session reads next.
    let params = message.params.clone().unwrap_or(Value::Null);
    let result = message.result.clone().unwrap_or(Value::Null);
    match decoded {
        PluginLine::Notification(_) => match message.method.as_deref() {
            Some(method::FINDING) => {
                // The session's fast path must read exactly what serde reads.
                let fast = finding_params(params.clone());
                let slow = serde_json::from_value::<FindingParams>(params);
                match (fast, slow) {
                    (Ok(fast), Ok(slow)) => {
                        assert_eq!((fast.seq, &fast.finding), (slow.seq, &slow.finding));
                        check_finding(&fast.finding);
                    }
                    (Err(_), Err(_)) => {}
                    (fast, slow) => panic!("finding_params {fast:?} but serde {slow:?}"),
                }
            }
            Some(method::LOG) => {
                let _ = serde_json::from_value::<LogParams>(params);
            }
            Some(method::PROGRESS) => {
                let _ = serde_json::from_value::<ProgressParams>(params);
            }
            _ => {}
        },
        PluginLine::Response(_) => {
            let _ = serde_json::from_value::<InitializeResult>(result.clone());
            let _ = serde_json::from_value::<RunResult>(result);
        }
    }
}

fn check_finding(finding: &Value) {
    if secflow_core::schema::validate_finding(finding).is_err() {
        return;
    }
    let fingerprint = secflow_core::finding::fingerprint("fuzz", finding);
    let own = finding
        .get("fingerprint")
        .and_then(Value::as_str)
        .filter(|own| {
            !own.is_empty() && own.len() <= secflow_core::finding::MAX_PLUGIN_FINGERPRINT
        });
    match own {
        Some(own) => assert_eq!(fingerprint, own),
        None => {
            assert_eq!(fingerprint.len(), 64);
            assert!(fingerprint
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }
    let _ = secflow_core::finding::severity(finding);
}

fuzz_target!(|data: &[u8]| {
    let events = supervisor_events(data);
    assert_eq!(events, model_supervisor(data), "supervisor framing");
    assert_eq!(sdk_events(data), model_sdk(data), "sdk framing");
    for event in &events {
        if let Event::Line(line) = event {
            assert!(line.len() <= MAX_LINE && !line.contains(&b'\n'));
            check_line(line);
        }
    }
});
