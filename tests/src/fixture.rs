//! The raw end of the plugin protocol for the test-only plugins in `tests/plugins/`.
//!
//! The hostile fixtures must be able to break the protocol on purpose (wrong seq,
//! garbage lines, lies about their identity), which the SDK prevents, so they speak
//! it by hand through these few functions on stdin/stdout. The well-behaved
//! fixtures use the SDK and share [`EchoIdentity`].

use std::io::{self, Write};

use secflow_plugin_sdk::framing::{read_bounded_line, LineRead};
use secflow_plugin_sdk::protocol::{method, Id, InitializeParams, Message, MessageKind, RunParams};
use secflow_plugin_sdk::{
    Capabilities, Category, Finding, Plugin, PluginError, PluginRef, RunContext, Severity,
};
use serde_json::{json, Map, Value};

/// Longest line a fixture accepts from the supervisor.
const MAX_LINE: usize = 64 << 20;

/// The next message from stdin; `None` at end of input. Lines that are not
/// JSON-RPC messages are skipped (a fixture is not the place to judge them).
pub fn read_message() -> Option<Message> {
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        match read_bounded_line(&mut stdin, MAX_LINE, &mut line) {
            Ok(LineRead::Line) => {}
            Ok(LineRead::Eof) | Ok(LineRead::TooLong) | Err(_) => return None,
        }
        if let Ok(message) = serde_json::from_slice::<Message>(&line) {
            return Some(message);
        }
    }
}

/// Writes `value` as one line and flushes it.
pub fn send(value: &Value) {
    send_raw(format!("{value}\n").as_bytes());
}

/// Writes bytes as they are, flushed; exits quietly when the supervisor is gone.
pub fn send_raw(bytes: &[u8]) {
    let mut stdout = io::stdout().lock();
    if stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Waits for the request `name`, ignoring notifications; exits 0 at end of input.
pub fn expect_request(name: &str) -> (Id, Value) {
    loop {
        let Some(message) = read_message() else {
            std::process::exit(0);
        };
        if message.kind() == MessageKind::Request && message.method.as_deref() == Some(name) {
            let id = message.id.unwrap_or(Value::Null);
            return (id, message.params.unwrap_or(Value::Null));
        }
    }
}

/// Waits for `initialize`; exits 2 if its params do not parse.
pub fn expect_initialize() -> (Id, InitializeParams) {
    let (id, params) = expect_request(method::INITIALIZE);
    match serde_json::from_value(params) {
        Ok(init) => (id, init),
        Err(err) => {
            eprintln!("fixture: initialize params do not parse: {err}");
            std::process::exit(2);
        }
    }
}

/// Answers `initialize` as a detector called `name`, version `version`.
pub fn answer_initialize(id: Id, name: &str, version: &str) {
    let result = json!({"protocol_version": 1, "name": name, "version": version, "category": "detector",
                        "capabilities": {"cancel": false, "progress": false}});
    send(&json!(Message::response(id, result)));
}

/// Waits for `run`.
pub fn expect_run() -> (Id, RunParams) {
    let (id, params) = expect_request(method::RUN);
    (id, serde_json::from_value(params).unwrap_or_default())
}

/// The common opening: initialize (answered with the identity the supervisor
/// expects), then the `run` request. Returns the config and the run's id.
pub fn handshake() -> (Map<String, Value>, Id) {
    let (id, init) = expect_initialize();
    answer_initialize(id, &init.plugin.name, &init.plugin.version);
    let (run_id, _) = expect_run();
    (init.config, run_id)
}

/// Sends `finding` with `seq`.
pub fn send_finding(seq: u64, finding: Value) {
    send(&json!(Message::notification(
        method::FINDING,
        json!({"seq": seq, "finding": finding})
    )));
}

/// Answers `run` with `findings` as the count and `outputs`.
pub fn answer_run(id: Id, findings: u64, outputs: Value) {
    send(&json!(Message::response(
        id,
        json!({"outputs": outputs, "findings": findings})
    )));
}

/// Serves the end of a session: answers `shutdown` and returns, or returns at
/// end of input.
pub fn finish() {
    while let Some(message) = read_message() {
        if message.kind() == MessageKind::Request
            && message.method.as_deref() == Some(method::SHUTDOWN)
        {
            send(&json!(Message::response(
                message.id.unwrap_or(Value::Null),
                json!({})
            )));
            return;
        }
    }
}

/// How a session served by [`serve_empty_runs`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// `shutdown` came and was answered.
    Shutdown,
    /// Stdin closed first.
    EndOfInput,
}

/// Serves the rest of a session after `initialize` by the rules: answers every
/// `run` with no findings and empty outputs, answers `shutdown` and returns, or
/// returns at end of input.
pub fn serve_empty_runs() -> SessionEnd {
    while let Some(message) = read_message() {
        if message.kind() != MessageKind::Request {
            continue;
        }
        let id = message.id.unwrap_or(Value::Null);
        match message.method.as_deref() {
            Some(method::RUN) => answer_run(id, 0, json!({})),
            Some(method::SHUTDOWN) => {
                send(&json!(Message::response(id, json!({}))));
                return SessionEnd::Shutdown;
            }
            _ => {}
        }
    }
    SessionEnd::EndOfInput
}

/// The `i`-th finding of the fixture detectors (from 1): each distinct, with the
/// severity cycling info, low, medium, high, critical.
pub fn numbered_finding(i: u64) -> Value {
    const CYCLE: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];
    let severity = CYCLE[usize::try_from(i.saturating_sub(1) % 5).unwrap_or(0)];
    Finding::new(
        "fixture.rule",
        format!("Fixture finding {i}"),
        severity,
        "http://127.0.0.1:8080",
    )
    .location_url(format!("http://127.0.0.1:8080/item/{i}"))
    .description("A finding made up by a test fixture.")
    .into_value()
}

/// An integer knob from the config, or `default`.
pub fn knob_u64(config: &Map<String, Value>, name: &str, default: u64) -> u64 {
    config.get(name).and_then(Value::as_u64).unwrap_or(default)
}

/// A string knob from the config, or `default`.
pub fn knob_str<'a>(config: &'a Map<String, Value>, name: &str, default: &'a str) -> &'a str {
    config.get(name).and_then(Value::as_str).unwrap_or(default)
}

/// An SDK plugin that announces whatever name and version the supervisor
/// expects, so one fixture binary serves any test manifest; everything else is
/// the wrapped plugin's.
#[derive(Debug)]
pub struct EchoIdentity<P> {
    plugin: P,
    expected: Option<PluginRef>,
}

impl<P: Plugin> EchoIdentity<P> {
    pub fn new(plugin: P) -> EchoIdentity<P> {
        EchoIdentity {
            plugin,
            expected: None,
        }
    }
}

impl<P: Plugin> Plugin for EchoIdentity<P> {
    const NAME: &'static str = P::NAME;
    const VERSION: &'static str = P::VERSION;
    const CATEGORY: Category = P::CATEGORY;
    const MAX_INPUT_BYTES: usize = P::MAX_INPUT_BYTES;

    fn capabilities(&self) -> Capabilities {
        self.plugin.capabilities()
    }

    fn initialize(&mut self, init: &InitializeParams) -> Result<(), PluginError> {
        self.expected = Some(init.plugin.clone());
        self.plugin.initialize(init)
    }

    fn identity(&self) -> PluginRef {
        self.expected
            .clone()
            .unwrap_or_else(|| self.plugin.identity())
    }

    fn run(
        &mut self,
        ctx: &mut RunContext,
        inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        self.plugin.run(ctx, inputs)
    }
}
