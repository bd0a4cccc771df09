//! What a plugin's `run` sees of its session: the findings stream, progress, logs,
//! cancellation, config, work dir and deadline.
//!
//! `RunContext` numbers findings itself (seq 1, 2, … without gaps) so that the
//! count in the `run` answer always matches what was sent; the same context type
//! serves the stdio session and the in-process test harness through [`NoticeSink`].

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::error::PluginError;
use crate::framing::find_newline;
use crate::protocol::{FindingParams, Incomplete, LogLevel, LogParams, ProgressParams};

/// A notification a plugin sends while `run` is pending.
#[derive(Debug, Clone)]
pub(crate) enum Notice {
    Finding(FindingParams),
    Progress(ProgressParams),
    Log(LogParams),
}

/// Where notifications go: the protocol channel, or the test harness's record.
pub(crate) trait NoticeSink {
    fn send(&mut self, notice: Notice) -> Result<(), PluginError>;

    /// Sends finding `seq` given as the bytes of one JSON object.
    fn send_serialized_finding(&mut self, seq: u64, finding: &[u8]) -> Result<(), PluginError>;
}

/// Longest slice [`RunContext::pause`] sleeps before looking at the cancel flag.
const PAUSE_SLICE: Duration = Duration::from_millis(10);

/// The plugin's handle on the current run.
pub struct RunContext<'a> {
    sink: &'a mut dyn NoticeSink,
    cancelled: &'a AtomicBool,
    config: &'a Map<String, Value>,
    workdir: &'a Path,
    state_dir: Option<&'a Path>,
    deadline: Instant,
    max_findings: u64,
    emitted: u64,
    incomplete: Option<Incomplete>,
}

impl fmt::Debug for RunContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("cancelled", &self.is_cancelled())
            .field("workdir", &self.workdir)
            .field("deadline", &self.deadline)
            .field("max_findings", &self.max_findings)
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

/// What a session hands to [`RunContext::new`].
pub(crate) struct RunSetup<'a> {
    pub cancelled: &'a AtomicBool,
    pub config: &'a Map<String, Value>,
    pub workdir: &'a Path,
    pub state_dir: Option<&'a Path>,
    pub deadline: Instant,
    pub max_findings: u64,
}

impl<'a> RunContext<'a> {
    pub(crate) fn new(sink: &'a mut dyn NoticeSink, setup: RunSetup<'a>) -> RunContext<'a> {
        RunContext {
            sink,
            cancelled: setup.cancelled,
            config: setup.config,
            workdir: setup.workdir,
            state_dir: setup.state_dir,
            deadline: setup.deadline,
            max_findings: setup.max_findings,
            emitted: 0,
            incomplete: None,
        }
    }

    /// Sends one finding (a [`crate::Finding`] or any JSON object) with the next `seq`.
    ///
    /// Fails with [`PluginError::cancelled`] once the supervisor has sent `cancel`,
    /// so `ctx.emit(f)?` in a loop stops a cancelled run by itself; fails too when
    /// the finding is not a JSON object, when `max_findings` is reached, or when
    /// the protocol channel is gone.
    pub fn emit(&mut self, finding: impl Into<Value>) -> Result<(), PluginError> {
        if self.is_cancelled() {
            return Err(PluginError::cancelled());
        }
        let finding = finding.into();
        if !finding.is_object() {
            return Err(PluginError::internal(format!(
                "finding {} is not a JSON object",
                self.emitted + 1
            )));
        }
        if self.emitted >= self.max_findings {
            return Err(PluginError::internal(format!(
                "finding {} is over the limit of {} findings per run",
                self.emitted + 1,
                self.max_findings
            )));
        }
        let seq = self.emitted + 1;
        self.sink
            .send(Notice::Finding(FindingParams { seq, finding }))?;
        self.emitted = seq;
        Ok(())
    }

    /// Sends one finding already serialised as a JSON object (`{...}`, one line).
    ///
    /// For plugins that emit many large findings: no [`Value`] tree is built or
    /// copied, the bytes go to the channel as they are. They are not parsed
    /// here (the supervisor validates every finding); only the framing is
    /// checked: an object, and no newline that would split the line. Fails like
    /// [`RunContext::emit`] otherwise.
    pub fn emit_serialized(&mut self, finding: &[u8]) -> Result<(), PluginError> {
        if self.is_cancelled() {
            return Err(PluginError::cancelled());
        }
        let seq = self.emitted + 1;
        let trimmed = finding.trim_ascii();
        let newline = find_newline(finding).is_some();
        if !(trimmed.starts_with(b"{") && trimmed.ends_with(b"}")) || newline {
            return Err(PluginError::internal(format!(
                "finding {seq} is not one serialised JSON object on one line"
            )));
        }
        if self.emitted >= self.max_findings {
            return Err(PluginError::internal(format!(
                "finding {seq} is over the limit of {} findings per run",
                self.max_findings
            )));
        }
        self.sink.send_serialized_finding(seq, trimmed)?;
        self.emitted = seq;
        Ok(())
    }

    /// How many findings were sent so far (the `findings` of the `run` answer).
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Says that the run, although it answers `run` with outputs, could not do all
    /// its work: `untried` units (words, hosts, templates) were not done, for
    /// `reason`. The `run` answer then carries `incomplete` and the supervisor
    /// records the run as `partial` instead of `succeeded`. A later call replaces
    /// an earlier one.
    pub fn report_incomplete(&mut self, untried: u64, reason: impl Into<String>) {
        self.incomplete = Some(Incomplete::new(untried, reason));
    }

    /// What [`RunContext::report_incomplete`] set, if anything.
    pub fn incomplete(&self) -> Option<&Incomplete> {
        self.incomplete.as_ref()
    }

    /// Reports progress: `completed` of `total` units of work.
    pub fn progress(
        &mut self,
        completed: u64,
        total: Option<u64>,
        message: Option<&str>,
    ) -> Result<(), PluginError> {
        self.sink.send(Notice::Progress(ProgressParams {
            completed,
            total,
            message: message.map(str::to_owned),
        }))
    }

    /// Sends a log line that the supervisor records with the run.
    pub fn log(&mut self, level: LogLevel, message: impl Into<String>) -> Result<(), PluginError> {
        self.sink.send(Notice::Log(LogParams {
            level,
            message: message.into(),
            fields: None,
        }))
    }

    /// Sends a log line with structured fields.
    pub fn log_with(
        &mut self,
        level: LogLevel,
        message: impl Into<String>,
        fields: Map<String, Value>,
    ) -> Result<(), PluginError> {
        self.sink.send(Notice::Log(LogParams {
            level,
            message: message.into(),
            fields: Some(fields),
        }))
    }

    /// Whether the supervisor has asked the run to stop (`cancel`, or its stdin closed).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Fails with [`PluginError::cancelled`] if the run was cancelled; a
    /// checkpoint for long loops that emit nothing.
    pub fn check_cancelled(&self) -> Result<(), PluginError> {
        if self.is_cancelled() {
            Err(PluginError::cancelled())
        } else {
            Ok(())
        }
    }

    /// Sleeps for `duration`, waking early with [`PluginError::cancelled`] on cancel.
    pub fn pause(&self, duration: Duration) -> Result<(), PluginError> {
        let until = Instant::now() + duration;
        loop {
            self.check_cancelled()?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(PAUSE_SLICE));
        }
    }

    /// The run's config: the manifest's `config_schema` defaults merged with the
    /// caller's values, already validated by the supervisor.
    pub fn config(&self) -> &Map<String, Value> {
        self.config
    }

    /// The private, writable work directory of this run (removed after it).
    pub fn workdir(&self) -> &Path {
        self.workdir
    }

    /// The plugin's persistent state directory, kept across runs and writable
    /// by every run of this plugin (caches, indexes); `None` unless the
    /// manifest asks for `sandbox.state`.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir
    }

    /// When the supervisor will cancel the run.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left until [`RunContext::deadline`] (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}
