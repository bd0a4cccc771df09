//! The stdio session: runs one [`Plugin`] behind the protocol until `shutdown` or
//! end of input.
//!
//! A reader thread owns stdin so that `cancel` is seen while `run` executes on the
//! main thread: it sets the cancel flag at once and forwards requests over a
//! channel. Every outgoing message goes through one locked writer, flushed per
//! message, on a private duplicate of fd 1; fd 1 itself is pointed at stderr so a
//! stray `println!` in plugin code cannot corrupt the protocol stream.

use std::any::Any;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::context::{Notice, NoticeSink, RunContext, RunSetup};
use crate::error::PluginError;
use crate::framing::{read_bounded_line, LineRead};
use crate::protocol::{
    code, method, Id, InitializeParams, InitializeResult, Message, MessageKind, RpcError,
    RunParams, RunResult, PROTOCOL_VERSION,
};
use crate::Plugin;

/// Default bound on one line from the supervisor ([`Plugin::MAX_INPUT_BYTES`]).
pub const DEFAULT_MAX_INPUT_BYTES: usize = 8 << 20;

/// Runs `plugin` on stdin/stdout until `shutdown` or end of input.
///
/// Returns success after a clean `shutdown` or end of input, failure when the
/// protocol channel breaks; call it as the whole of `main`.
pub fn serve<P: Plugin>(plugin: P) -> ExitCode {
    let protocol_out = match guard_stdout() {
        Ok(file) => file,
        Err(err) => {
            eprintln!(
                "{}: cannot set up the protocol channel on stdout: {err}",
                P::NAME
            );
            return ExitCode::FAILURE;
        }
    };
    serve_on(plugin, io::stdin(), protocol_out)
}

/// The channel guard: moves the protocol to a close-on-exec duplicate of fd 1
/// and points fd 1 at stderr.
fn guard_stdout() -> io::Result<File> {
    io::stdout().flush()?;
    // `try_clone_to_owned` duplicates with F_DUPFD_CLOEXEC, so tools the plugin
    // spawns do not inherit the protocol channel.
    let protocol = io::stdout().as_fd().try_clone_to_owned()?;
    // SAFETY: dup2 only operates on descriptor numbers; 2 and 1 are the process's
    // standard descriptors, and replacing fd 1 does not invalidate any Rust-owned
    // handle (std's stdout refers to fd 1 by number, which stays valid).
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(protocol))
}

/// The session proper, over any byte streams (the tests drive it in memory).
pub(crate) fn serve_on<P, R, W>(plugin: P, input: R, output: W) -> ExitCode
where
    P: Plugin,
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let writer = Arc::new(ProtocolWriter::new(output));
    let cancelled = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    {
        let writer = Arc::clone(&writer);
        let cancelled = Arc::clone(&cancelled);
        let spawned = std::thread::Builder::new()
            .name("secflow-protocol-reader".into())
            .spawn(move || read_requests(input, P::MAX_INPUT_BYTES, &writer, &cancelled, &tx));
        if let Err(err) = spawned {
            eprintln!(
                "{}: cannot start the protocol reader thread: {err}",
                P::NAME
            );
            return ExitCode::FAILURE;
        }
    }
    let mut session = Session {
        plugin,
        writer,
        cancelled,
        init: None,
        ran: false,
    };
    match session.serve(rx) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}: protocol channel closed: {err}", P::NAME);
            ExitCode::FAILURE
        }
    }
}

/// What the reader thread hands to the session.
enum Inbound {
    Request {
        id: Id,
        method: String,
        params: Value,
    },
    /// End of input, or input that cannot be read further.
    End { clean: bool },
}

/// The reader thread: classifies each line, answers what it can itself
/// (malformed input, unknown methods), raises the cancel flag, forwards the rest.
fn read_requests<R: Read, W: Write>(
    input: R,
    max_bytes: usize,
    writer: &ProtocolWriter<W>,
    cancelled: &AtomicBool,
    tx: &Sender<Inbound>,
) {
    let mut reader = BufReader::with_capacity(64 << 10, input);
    let mut line = Vec::new();
    let clean = loop {
        match read_bounded_line(&mut reader, max_bytes, &mut line) {
            Ok(LineRead::Line) => {}
            Ok(LineRead::Eof) => break true,
            Ok(LineRead::TooLong) => {
                eprintln!(
                    "secflow-plugin-sdk: a supervisor message is over {max_bytes} bytes; stopping"
                );
                break false;
            }
            Err(err) => {
                eprintln!("secflow-plugin-sdk: cannot read stdin: {err}");
                break false;
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Some(request) = classify(&line, writer, cancelled) else {
            continue;
        };
        if tx.send(request).is_err() {
            return;
        }
    };
    // End of input lets a pending run finish (requests queued before it, such as
    // `shutdown`, are still served; a supervisor that died shows up as a failed
    // write). Unreadable input means the channel is broken: stop the run.
    if !clean {
        cancelled.store(true, Ordering::Release);
    }
    let _ = tx.send(Inbound::End { clean });
}

/// Turns one line into a request for the session, or handles it here.
fn classify<W: Write>(
    line: &[u8],
    writer: &ProtocolWriter<W>,
    cancelled: &AtomicBool,
) -> Option<Inbound> {
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(err) => {
            writer.reply_error(
                Value::Null,
                RpcError::new(code::PARSE_ERROR, format!("parse error: {err}")),
            );
            return None;
        }
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let message: Message = match serde_json::from_value(value) {
        Ok(message) => message,
        Err(err) => {
            writer.reply_error(
                id,
                RpcError::new(code::INVALID_REQUEST, format!("invalid request: {err}")),
            );
            return None;
        }
    };
    let kind = message.kind();
    let Message {
        id: message_id,
        method: name,
        params,
        ..
    } = message;
    match (kind, name, message_id) {
        (MessageKind::Request, Some(name), Some(id)) => match name.as_str() {
            method::INITIALIZE | method::RUN | method::SHUTDOWN => Some(Inbound::Request {
                id,
                method: name,
                params: params.unwrap_or(Value::Null),
            }),
            other => {
                writer.reply_error(
                    id,
                    RpcError::new(code::METHOD_NOT_FOUND, format!("unknown method {other:?}")),
                );
                None
            }
        },
        (MessageKind::Notification, Some(name), _) => {
            if name == method::CANCEL {
                cancelled.store(true, Ordering::Release);
            }
            None
        }
        // The plugin sends no requests, so a response is unexpected; JSON-RPC
        // forbids answering it.
        (MessageKind::Response, _, _) => None,
        _ => {
            writer.reply_error(
                id,
                RpcError::new(
                    code::INVALID_REQUEST,
                    "invalid request: not a JSON-RPC 2.0 request",
                ),
            );
            None
        }
    }
}

/// The one writer of the protocol channel.
struct ProtocolWriter<W: Write> {
    out: Mutex<BufWriter<W>>,
    /// The supervisor's `limits.max_message_bytes`, known after `initialize`.
    max_message_bytes: AtomicU64,
}

impl<W: Write> ProtocolWriter<W> {
    fn new(out: W) -> ProtocolWriter<W> {
        ProtocolWriter {
            out: Mutex::new(BufWriter::with_capacity(64 << 10, out)),
            max_message_bytes: AtomicU64::new(u64::MAX),
        }
    }

    /// Writes one message as one line and flushes it. A line longer than the
    /// supervisor accepts is not written: `Ok(Err(length))`.
    fn send(&self, message: &Message) -> io::Result<Result<(), usize>> {
        let line = message.to_line();
        let body = line.len() - 1;
        if body as u64 > self.max_message_bytes.load(Ordering::Relaxed) {
            return Ok(Err(body));
        }
        // A panic while holding the lock cannot leave a half-written line
        // behind a later message: each write is followed by a flush or an error.
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        out.write_all(line.as_bytes())?;
        out.flush()?;
        Ok(Ok(()))
    }

    /// Writes a `finding` notification around an already serialised finding
    /// and flushes it, with the bound of [`ProtocolWriter::send`].
    fn send_serialized_finding(&self, seq: u64, finding: &[u8]) -> io::Result<Result<(), usize>> {
        let head = format!(
            r#"{{"jsonrpc":"2.0","method":"{}","params":{{"seq":{seq},"finding":"#,
            method::FINDING
        );
        let body = head.len() + finding.len() + 2;
        if body as u64 > self.max_message_bytes.load(Ordering::Relaxed) {
            return Ok(Err(body));
        }
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        out.write_all(head.as_bytes())?;
        out.write_all(finding)?;
        out.write_all(b"}}\n")?;
        out.flush()?;
        Ok(Ok(()))
    }

    /// Best-effort error answer from the reader thread; a broken channel shows
    /// up on the session's next write.
    fn reply_error(&self, id: Id, error: RpcError) {
        let _ = self.send(&Message::error_response(id, error));
    }

    fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes.load(Ordering::Relaxed)
    }
}

/// Sends `run` notifications through the protocol writer.
struct WireSink<'a, W: Write> {
    writer: &'a ProtocolWriter<W>,
}

impl<W: Write> NoticeSink for WireSink<'_, W> {
    fn send(&mut self, notice: Notice) -> Result<(), PluginError> {
        let (name, params, what) = match notice {
            Notice::Finding(p) => (method::FINDING, json!(p), format!("finding {}", p.seq)),
            Notice::Progress(p) => (
                method::PROGRESS,
                json!(p),
                "progress notification".to_owned(),
            ),
            Notice::Log(p) => (method::LOG, json!(p), "log notification".to_owned()),
        };
        let sent = self.writer.send(&Message::notification(name, params));
        self.outcome(&what, sent)
    }

    fn send_serialized_finding(&mut self, seq: u64, finding: &[u8]) -> Result<(), PluginError> {
        let sent = self.writer.send_serialized_finding(seq, finding);
        self.outcome(&format!("finding {seq}"), sent)
    }
}

impl<W: Write> WireSink<'_, W> {
    fn outcome(&self, what: &str, sent: io::Result<Result<(), usize>>) -> Result<(), PluginError> {
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(length)) => Err(PluginError::internal(format!(
                "{what} is {length} bytes, over the supervisor's max_message_bytes of {}",
                self.writer.max_message_bytes()
            ))),
            Err(err) => Err(PluginError::internal(format!(
                "protocol channel closed while sending {what}: {err}"
            ))),
        }
    }
}

/// One plugin's session state, owned by the main thread.
struct Session<P, W: Write> {
    plugin: P,
    writer: Arc<ProtocolWriter<W>>,
    cancelled: Arc<AtomicBool>,
    init: Option<Initialized>,
    ran: bool,
}

/// What `initialize` established.
struct Initialized {
    params: InitializeParams,
    workdir: PathBuf,
    deadline: Instant,
}

impl<P: Plugin, W: Write> Session<P, W> {
    fn serve(&mut self, requests: Receiver<Inbound>) -> io::Result<ExitCode> {
        for inbound in requests {
            let (id, name, params) = match inbound {
                Inbound::Request { id, method, params } => (id, method, params),
                Inbound::End { clean } => {
                    return Ok(if clean {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
            };
            let answer = match name.as_str() {
                method::INITIALIZE => self.initialize(params),
                method::RUN => self.run(params),
                method::SHUTDOWN => {
                    self.answer(id, Ok(json!({})))?;
                    return Ok(ExitCode::SUCCESS);
                }
                other => Err(RpcError::new(
                    code::METHOD_NOT_FOUND,
                    format!("unknown method {other:?}"),
                )),
            };
            self.answer(id, answer)?;
        }
        Ok(ExitCode::SUCCESS)
    }

    fn answer(&self, id: Id, answer: Result<Value, RpcError>) -> io::Result<()> {
        let message = match answer {
            Ok(result) => Message::response(id.clone(), result),
            Err(error) => Message::error_response(id.clone(), error),
        };
        if let Err(length) = self.writer.send(&message)? {
            let error = RpcError::new(
                code::INTERNAL_ERROR,
                format!(
                    "the answer is {length} bytes, over the supervisor's max_message_bytes of {}",
                    self.writer.max_message_bytes()
                ),
            );
            let _ = self.writer.send(&Message::error_response(id, error))?;
        }
        Ok(())
    }

    fn initialize(&mut self, params: Value) -> Result<Value, RpcError> {
        if self.init.is_some() {
            return Err(RpcError::new(
                code::INVALID_REQUEST,
                "initialize was already called",
            ));
        }
        let params: InitializeParams = parse_params(method::INITIALIZE, params)?;
        if params.protocol_version != PROTOCOL_VERSION {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                format!(
                    "protocol_version {} is not supported; {} speaks protocol version {PROTOCOL_VERSION}",
                    params.protocol_version,
                    P::NAME
                ),
            ));
        }
        let started = Instant::now();
        let deadline = started
            .checked_add(Duration::from_millis(params.context.deadline_ms))
            .unwrap_or(started + Duration::from_secs(365 * 24 * 3600));
        self.writer
            .max_message_bytes
            .store(params.limits.max_message_bytes, Ordering::Relaxed);
        self.plugin
            .initialize(&params)
            .map_err(|e| e.to_rpc_error())?;
        let identity = self.plugin.identity();
        let result = InitializeResult {
            protocol_version: PROTOCOL_VERSION,
            name: identity.name,
            version: identity.version,
            category: P::CATEGORY,
            capabilities: self.plugin.capabilities(),
        };
        self.init = Some(Initialized {
            workdir: PathBuf::from(&params.context.workdir),
            params,
            deadline,
        });
        Ok(json!(result))
    }

    fn run(&mut self, params: Value) -> Result<Value, RpcError> {
        let Some(init) = &self.init else {
            return Err(RpcError::new(
                code::INVALID_REQUEST,
                "run before initialize",
            ));
        };
        if self.ran {
            return Err(RpcError::new(
                code::INVALID_REQUEST,
                "run was already called; one run per session",
            ));
        }
        self.ran = true;
        let params: RunParams = parse_params(method::RUN, params)?;
        let mut sink = WireSink {
            writer: &self.writer,
        };
        let mut ctx = RunContext::new(
            &mut sink,
            RunSetup {
                cancelled: &self.cancelled,
                config: &init.params.config,
                workdir: &init.workdir,
                deadline: init.deadline,
                max_findings: init.params.limits.max_findings,
            },
        );
        let plugin = &mut self.plugin;
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| plugin.run(&mut ctx, params.inputs)));
        let findings = ctx.emitted();
        match outcome {
            Ok(Ok(outputs)) => Ok(json!(RunResult { outputs, findings })),
            Ok(Err(err)) if !err.is_cancelled() && self.cancelled.load(Ordering::Acquire) => Err(
                RpcError::new(code::CANCELLED, format!("run cancelled: {}", err.message())),
            ),
            Ok(Err(err)) => Err(err.to_rpc_error()),
            Err(payload) => Err(RpcError::new(
                code::INTERNAL_ERROR,
                format!(
                    "{} panicked during run: {}",
                    P::NAME,
                    panic_message(payload.as_ref())
                ),
            )),
        }
    }
}

fn parse_params<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params)
        .map_err(|err| RpcError::new(code::INVALID_PARAMS, format!("{method} params: {err}")))
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "non-text panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Category;
    use crate::{Finding, Severity};
    use serde_json::Map;
    use std::sync::mpsc::SyncSender;

    /// Emits `count` findings, or waits for cancel when `wait_for_cancel`.
    struct Counter {
        wait_for_cancel: bool,
    }

    impl Plugin for Counter {
        const NAME: &'static str = "counter";
        const VERSION: &'static str = "0.1.0";
        const CATEGORY: Category = Category::Detector;

        fn run(
            &mut self,
            ctx: &mut RunContext,
            inputs: Map<String, Value>,
        ) -> Result<Map<String, Value>, PluginError> {
            if self.wait_for_cancel {
                ctx.emit(Finding::new("r", "t", Severity::Info, "h"))?;
                loop {
                    ctx.pause(Duration::from_millis(5))?;
                }
            }
            let count = inputs.get("count").and_then(Value::as_u64).unwrap_or(0);
            for i in 0..count {
                ctx.emit(Finding::new("r", format!("t{i}"), Severity::Low, "h"))?;
            }
            Ok(Map::new())
        }
    }

    /// An in-memory stdout the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn messages(&self) -> Vec<Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    /// A stdin fed line by line from the test, so that input can arrive mid-run.
    struct FedInput {
        lines: Receiver<String>,
        pending: Vec<u8>,
    }

    impl Read for FedInput {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pending.is_empty() {
                match self.lines.recv() {
                    Ok(line) => self.pending = line.into_bytes(),
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    fn fed_input() -> (SyncSender<String>, FedInput) {
        let (tx, rx) = mpsc::sync_channel(16);
        (
            tx,
            FedInput {
                lines: rx,
                pending: Vec::new(),
            },
        )
    }

    fn initialize_line(version: u32) -> String {
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocol_version": version, "run_id": "r1", "plugin": {"name": "counter", "version": "0.1.0"},
            "config": {}, "context": {"workdir": "/tmp", "deadline_ms": 60000, "network": false},
            "limits": {"max_message_bytes": 8388608, "max_findings": 1000}}})
        .to_string()
            + "\n"
    }

    fn session(plugin: Counter, input: &str) -> (ExitCode, Vec<Value>) {
        let out = Captured::default();
        let code = serve_on(
            plugin,
            io::Cursor::new(input.to_owned().into_bytes()),
            out.clone(),
        );
        (code, out.messages())
    }

    fn response(messages: &[Value], id: u64) -> &Value {
        messages
            .iter()
            .find(|m| m["id"] == id)
            .expect("a response with this id")
    }

    #[test]
    fn a_session_numbers_findings_from_one_without_gaps_and_reports_their_count() {
        let input = initialize_line(1)
            + r#"{"jsonrpc":"2.0","id":2,"method":"run","params":{"inputs":{"count":4}}}"#
            + "\n"
            + r#"{"jsonrpc":"2.0","id":3,"method":"shutdown"}"#
            + "\n";
        let (code, messages) = session(
            Counter {
                wait_for_cancel: false,
            },
            &input,
        );
        assert_eq!(code, ExitCode::SUCCESS);
        let init = response(&messages, 1);
        assert_eq!(init["result"]["name"], "counter");
        assert_eq!(init["result"]["category"], "detector");
        assert_eq!(init["result"]["protocol_version"], 1);
        let seqs: Vec<u64> = messages
            .iter()
            .filter(|m| m["method"] == "finding")
            .map(|m| m["params"]["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        assert_eq!(response(&messages, 2)["result"]["findings"], 4);
        assert_eq!(response(&messages, 3)["result"], json!({}));
    }

    #[test]
    fn another_protocol_version_is_refused_in_the_handshake() {
        let (_, messages) = session(
            Counter {
                wait_for_cancel: false,
            },
            &initialize_line(2),
        );
        let error = &response(&messages, 1)["error"];
        assert_eq!(error["code"], code::INVALID_PARAMS);
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("protocol_version 2"));
    }

    #[test]
    fn unknown_methods_and_malformed_lines_get_json_rpc_errors() {
        let input = initialize_line(1)
            + r#"{"jsonrpc":"2.0","id":7,"method":"teleport","params":{}}"#
            + "\nthis is not json\n";
        let (code, messages) = session(
            Counter {
                wait_for_cancel: false,
            },
            &input,
        );
        assert_eq!(code, ExitCode::SUCCESS, "end of input is a clean exit");
        assert_eq!(
            response(&messages, 7)["error"]["code"],
            code::METHOD_NOT_FOUND
        );
        assert!(messages
            .iter()
            .any(|m| m["id"].is_null() && m["error"]["code"] == code::PARSE_ERROR));
    }

    #[test]
    fn run_before_initialize_is_an_invalid_request() {
        let input =
            r#"{"jsonrpc":"2.0","id":5,"method":"run","params":{"inputs":{}}}"#.to_owned() + "\n";
        let (_, messages) = session(
            Counter {
                wait_for_cancel: false,
            },
            &input,
        );
        assert_eq!(
            response(&messages, 5)["error"]["code"],
            code::INVALID_REQUEST
        );
    }

    #[test]
    fn cancel_arriving_during_run_is_answered_with_the_cancelled_code() {
        let (tx, input) = fed_input();
        let out = Captured::default();
        let reader_out = out.clone();
        let handle = std::thread::spawn(move || {
            serve_on(
                Counter {
                    wait_for_cancel: true,
                },
                input,
                reader_out,
            )
        });
        tx.send(initialize_line(1)).unwrap();
        tx.send(
            r#"{"jsonrpc":"2.0","id":2,"method":"run","params":{"inputs":{}}}"#.to_owned() + "\n",
        )
        .unwrap();
        let started = Instant::now();
        while !out.messages().iter().any(|m| m["method"] == "finding") {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the run never started"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        tx.send(
            r#"{"jsonrpc":"2.0","method":"cancel","params":{"reason":"timeout"}}"#.to_owned()
                + "\n",
        )
        .unwrap();
        tx.send(r#"{"jsonrpc":"2.0","id":3,"method":"shutdown"}"#.to_owned() + "\n")
            .unwrap();
        assert_eq!(handle.join().unwrap(), ExitCode::SUCCESS);
        let messages = out.messages();
        assert_eq!(response(&messages, 2)["error"]["code"], code::CANCELLED);
        assert_eq!(response(&messages, 3)["result"], json!({}));
    }

    #[test]
    fn a_serialised_finding_goes_out_as_a_numbered_finding_and_a_broken_one_is_refused() {
        struct Serialised;
        impl Plugin for Serialised {
            const NAME: &'static str = "serialised";
            const VERSION: &'static str = "0.1.0";
            const CATEGORY: Category = Category::Enricher;
            fn run(
                &mut self,
                ctx: &mut RunContext,
                _: Map<String, Value>,
            ) -> Result<Map<String, Value>, PluginError> {
                ctx.emit(Finding::new("r", "first", Severity::Info, "h"))?;
                ctx.emit_serialized(br#"{"rule_id":"r","title":"second"}"#)?;
                let refused = ctx.emit_serialized(b"{\"title\":\"a\nb\"}").unwrap_err();
                assert!(refused.message().contains("finding 3"), "{refused}");
                Ok(Map::new())
            }
        }
        let input = initialize_line(1)
            + r#"{"jsonrpc":"2.0","id":2,"method":"run","params":{"inputs":{}}}"#
            + "\n";
        let out = Captured::default();
        serve_on(Serialised, io::Cursor::new(input.into_bytes()), out.clone());
        let messages = out.messages();
        let findings: Vec<&Value> = messages
            .iter()
            .filter(|m| m["method"] == "finding")
            .collect();
        assert_eq!(findings.len(), 2);
        assert_eq!(findings[1]["params"]["seq"], 2);
        assert_eq!(findings[1]["params"]["finding"]["title"], "second");
        assert_eq!(response(&messages, 2)["result"]["findings"], 2);
    }

    #[test]
    fn a_finding_longer_than_max_message_bytes_is_refused_before_it_is_sent() {
        struct Big;
        impl Plugin for Big {
            const NAME: &'static str = "big";
            const VERSION: &'static str = "0.1.0";
            const CATEGORY: Category = Category::Detector;
            fn run(
                &mut self,
                ctx: &mut RunContext,
                _: Map<String, Value>,
            ) -> Result<Map<String, Value>, PluginError> {
                ctx.emit(Finding::new("r", "x".repeat(4096), Severity::Info, "h"))?;
                Ok(Map::new())
            }
        }
        let input = initialize_line(1).replace("8388608", "1024")
            + r#"{"jsonrpc":"2.0","id":2,"method":"run","params":{"inputs":{}}}"#
            + "\n";
        let out = Captured::default();
        serve_on(Big, io::Cursor::new(input.into_bytes()), out.clone());
        let messages = out.messages();
        assert!(!messages.iter().any(|m| m["method"] == "finding"));
        let error = &response(&messages, 2)["error"];
        assert_eq!(error["code"], code::INTERNAL_ERROR);
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("max_message_bytes"));
    }
}
