//! Fuzzes what a workflow executor sends on the API socket, through the
//! daemon's own path: `api::rpc::read_frame` cuts the bytes into bounded lines
//! and `api::rpc::parse_line` classifies each one.
//!
//! Beyond "no panic": framing must match a plain model of the rules (an
//! oversized line is skipped to its newline and the next one is read); a
//! well-formed call must re-encode and parse to the same call; every line,
//! well-formed or not, must get an answer that is one line of JSON carrying
//! the id it must be answered to.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secflow_api::rpc::{code, parse_line, read_frame, response_line, Frame};
use serde_json::{json, Map, Value};

/// A small bound, so that inputs of a few KiB reach it.
const MAX_REQUEST: usize = 256;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
    })
}

/// What `read_frame` must return, call after call, for `data`.
fn model(data: &[u8]) -> Vec<Frame> {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut frames: Vec<Frame> = lines
        .into_iter()
        .map(|line| {
            if line.len() > MAX_REQUEST {
                Frame::TooLong
            } else {
                Frame::Line(line.to_vec())
            }
        })
        .collect();
    frames.push(Frame::Eof);
    frames
}

fn frames(data: &[u8], capacity: usize) -> Vec<Frame> {
    runtime().block_on(async {
        let mut reader = tokio::io::BufReader::with_capacity(capacity, data);
        let mut frames = Vec::new();
        loop {
            let frame = read_frame(&mut reader, MAX_REQUEST)
                .await
                .expect("a slice reads");
            let eof = frame == Frame::Eof;
            frames.push(frame);
            if eof {
                return frames;
            }
        }
    })
}

/// The answer line must be one JSON object answering `id`.
fn check_answer(line: &str, id: &Value) -> Value {
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    let answer: Value = serde_json::from_str(line).expect("an answer is JSON");
    assert_eq!(answer["jsonrpc"], "2.0");
    assert_eq!(&answer["id"], id);
    answer
}

fn check_line(line: &[u8]) {
    match parse_line(line) {
        Ok(call) => {
            // Re-encoded, the call parses to itself.
            let mut object = Map::new();
            object.insert("jsonrpc".into(), json!("2.0"));
            object.insert("method".into(), json!(call.method));
            if let Some(id) = &call.id {
                assert!(matches!(
                    id,
                    Value::Null | Value::String(_) | Value::Number(_)
                ));
                object.insert("id".into(), id.clone());
            }
            if !call.params.is_null() {
                assert!(call.params.is_object() || call.params.is_array());
                object.insert("params".into(), call.params.clone());
            }
            let encoded = Value::Object(object).to_string();
            assert_eq!(parse_line(encoded.as_bytes()), Ok(call.clone()));
            let id = call.id.unwrap_or(Value::Null);
            let answer = check_answer(&response_line(id.clone(), Ok(call.params.into())), &id);
            assert!(answer.get("error").is_none());
        }
        Err(malformed) => {
            assert!(
                [code::PARSE_ERROR, code::INVALID_REQUEST].contains(&malformed.failure.code),
                "{malformed:?}"
            );
            assert!(matches!(
                malformed.id,
                Value::Null | Value::String(_) | Value::Number(_)
            ));
            let answer = check_answer(
                &response_line(malformed.id.clone(), Err(malformed.failure.clone())),
                &malformed.id,
            );
            assert_eq!(answer["error"]["code"], json!(malformed.failure.code));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read buffer size, so lines span refills.
    let capacity = data.first().map_or(1, |&b| usize::from(b % 64) + 1);
    let got = frames(data, capacity);
    assert_eq!(got, model(data), "api framing");
    for frame in &got {
        if let Frame::Line(line) = frame {
            check_line(line);
        }
    }
});
