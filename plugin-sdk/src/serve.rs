//! The stdio session: runs one [`Plugin`] behind the protocol until `shutdown` or
//! end of input.
//!
//! A reader thread owns stdin so that `cancel` is seen while `run` executes on the
//! main thread: it sets the cancel flag at once and forwards requests, their
//! params already parsed ([`crate::inbound`]), over a channel. Every outgoing
//! message goes through one writer ([`crate::outbound`]: notifications of a run
//! in batches, responses at once) on a private duplicate of fd 1; fd 1 itself is
//! pointed at stderr so a stray `println!` in plugin code cannot corrupt the
//! protocol stream.

use std::any::Any;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::context::{Notice, NoticeSink, RunContext, RunSetup};
use crate::error::PluginError;
use crate::framing::{read_bounded_line, LineRead};
use crate::inbound::{parse_line, Line, Request};
use crate::outbound::{ProtocolWriter, SendError};
use crate::protocol::{
    code, method, Id, InitializeParams, InitializeResult, Message, RpcError, RunParams, RunResult,
    PROTOCOL_VERSION,
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
    Request(Request),
    /// End of input, or input that cannot be read further.
    End {
        clean: bool,
    },
}

/// The reader thread: parses each line, answers what it can itself
/// (malformed input, unknown methods), acts on `cancel`, forwards the rest.
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
        match parse_line(&line) {
            Line::Request(request) => {
                if tx.send(Inbound::Request(request)).is_err() {
                    return;
                }
            }
            Line::Cancel => {
                cancelled.store(true, Ordering::Release);
                // What the run sent before the cancel goes out now, not after
                // the batch delay: it is kept even if the plugin is killed
                // right after. A broken channel shows up on the session's
                // next write.
                let _ = writer.flush();
            }
            Line::Ignored => {}
            // Best effort, as above.
            Line::Refused { id, error } => {
                let _ = writer.send(&Message::error_response(id, error));
            }
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

/// Sends `run` notifications through the protocol writer.
struct WireSink<'a, W: Write> {
    writer: &'a ProtocolWriter<W>,
}

impl<W: Write> NoticeSink for WireSink<'_, W> {
    fn send(&mut self, notice: Notice) -> Result<(), PluginError> {
        match notice {
            Notice::Finding(p) => {
                let sent = self.writer.notify(method::FINDING, &p);
                self.outcome(|| format!("finding {}", p.seq), sent)
            }
            Notice::Progress(p) => {
                let sent = self.writer.notify(method::PROGRESS, &p);
                self.outcome(|| "progress notification".to_owned(), sent)
            }
            Notice::Log(p) => {
                let sent = self.writer.notify(method::LOG, &p);
                self.outcome(|| "log notification".to_owned(), sent)
            }
        }
    }

    fn send_serialized_finding(&mut self, seq: u64, finding: &[u8]) -> Result<(), PluginError> {
        let sent = self.writer.notify_serialized_finding(seq, finding);
        self.outcome(|| format!("finding {seq}"), sent)
    }
}

impl<W: Write> WireSink<'_, W> {
    /// `what` names the message in an error; it is only built for one.
    fn outcome(
        &self,
        what: impl FnOnce() -> String,
        sent: Result<(), SendError>,
    ) -> Result<(), PluginError> {
        match sent {
            Ok(()) => Ok(()),
            Err(SendError::TooLong(length)) => Err(PluginError::internal(format!(
                "{} is {length} bytes, over the supervisor's max_message_bytes of {}",
                what(),
                self.writer.max_message_bytes()
            ))),
            Err(SendError::Channel(err)) => Err(PluginError::internal(format!(
                "protocol channel closed while sending {}: {err}",
                what()
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

impl<P: Plugin, W: Write + Send> Session<P, W> {
    fn serve(&mut self, requests: Receiver<Inbound>) -> io::Result<ExitCode> {
        for inbound in requests {
            let request = match inbound {
                Inbound::Request(request) => request,
                Inbound::End { clean } => {
                    return Ok(if clean {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
            };
            match request {
                Request::Initialize { id, params } => {
                    let answer = self.initialize(params);
                    self.answer(id, answer)?;
                }
                Request::Run { id, params } => {
                    let answer = self.run(params);
                    self.answer(id, answer)?;
                }
                Request::Shutdown { id } => {
                    self.answer(id, Ok(json!({})))?;
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn answer(&self, id: Id, answer: Result<Value, RpcError>) -> io::Result<()> {
        let message = match answer {
            Ok(result) => Message::response(id.clone(), result),
            Err(error) => Message::error_response(id.clone(), error),
        };
        let length = match self.writer.send(&message) {
            Ok(()) => return Ok(()),
            Err(SendError::Channel(err)) => return Err(err),
            Err(SendError::TooLong(length)) => length,
        };
        let error = RpcError::new(
            code::INTERNAL_ERROR,
            format!(
                "the answer is {length} bytes, over the supervisor's max_message_bytes of {}",
                self.writer.max_message_bytes()
            ),
        );
        match self.writer.send(&Message::error_response(id, error)) {
            Ok(()) | Err(SendError::TooLong(_)) => Ok(()),
            Err(SendError::Channel(err)) => Err(err),
        }
    }

    fn initialize(
        &mut self,
        params: Result<Box<InitializeParams>, RpcError>,
    ) -> Result<Value, RpcError> {
        if self.init.is_some() {
            return Err(RpcError::new(
                code::INVALID_REQUEST,
                "initialize was already called",
            ));
        }
        let params = *params?;
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
            .set_max_message_bytes(params.limits.max_message_bytes);
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

    fn run(&mut self, params: Result<RunParams, RpcError>) -> Result<Value, RpcError> {
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
        let params = params?;
        let mut sink = WireSink {
            writer: &self.writer,
        };
        let mut ctx = RunContext::new(
            &mut sink,
            RunSetup {
                cancelled: &self.cancelled,
                config: &init.params.config,
                workdir: &init.workdir,
                state_dir: init.params.context.state_dir.as_deref().map(Path::new),
                deadline: init.deadline,
                max_findings: init.params.limits.max_findings,
            },
        );
        let plugin = &mut self.plugin;
        // Notifications are batched while the plugin runs; the answer below
        // writes whatever the batch still holds first.
        let outcome = self.writer.batching(|| {
            panic::catch_unwind(AssertUnwindSafe(|| plugin.run(&mut ctx, params.inputs)))
        });
        let findings = ctx.emitted();
        let incomplete = ctx.incomplete().cloned();
        match outcome {
            Ok(Ok(outputs)) => Ok(json!(RunResult {
                outputs,
                findings,
                incomplete,
            })),
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
    use std::sync::Mutex;

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
    fn every_batched_finding_is_written_before_the_run_answer() {
        let input = initialize_line(1)
            + r#"{"jsonrpc":"2.0","id":2,"method":"run","params":{"inputs":{"count":1000}}}"#
            + "\n";
        let (_, messages) = session(
            Counter {
                wait_for_cancel: false,
            },
            &input,
        );
        let answer_at = messages.iter().position(|m| m["id"] == 2).unwrap();
        let findings_at: Vec<usize> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m["method"] == "finding")
            .map(|(at, _)| at)
            .collect();
        assert_eq!(findings_at.len(), 1000);
        assert!(findings_at.iter().all(|&at| at < answer_at));
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
        // The plugin sends one finding, then waits for cancel: the finding must
        // reach the channel while the run goes on, not wait in a batch for
        // the run's answer.
        let started = Instant::now();
        while !out.messages().iter().any(|m| m["method"] == "finding") {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no finding while the run goes on"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!out.messages().iter().any(|m| m["id"] == 2));
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
