//! The protocol channel's output: the one writer of every message the plugin
//! sends, batching notifications so that a fast plugin does not pay a system
//! call (and the supervisor a wake-up) per finding.
//!
//! A message is serialised into one pending buffer. Notifications wait there
//! until [`BATCH_BYTES`] are pending, or are written at once when nothing was
//! written for [`BATCH_DELAY`] (an isolated finding goes out without delay);
//! otherwise a flusher thread writes them [`BATCH_DELAY`] after the last write
//! at the latest. A response, and [`ProtocolWriter::flush`] (called when the
//! supervisor's `cancel` arrives), write everything pending first. One buffer
//! keeps the wire order the order of sending, so every finding of a run is out
//! before its answer. Outside a run, and when the flusher thread cannot be
//! started, every message is written as it is sent.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::protocol::{method, Message};

/// Pending bytes that are written without waiting for the delay: the size of
/// a pipe's buffer, so one write fills what the supervisor can take at once.
pub(crate) const BATCH_BYTES: usize = 64 << 10;

/// Longest time a notification waits in the pending buffer.
pub(crate) const BATCH_DELAY: Duration = Duration::from_millis(5);

/// When a message must reach the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// A notification: may wait up to [`BATCH_DELAY`] in a batch.
    Batched,
    /// A response: written, with everything pending before it, before
    /// [`ProtocolWriter`]'s send returns.
    Now,
}

/// Why a message was not queued.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Its line (newline excluded) is this many bytes, over `max_message_bytes`;
    /// nothing was written.
    TooLong(usize),
    /// The channel is broken (this write, or an earlier one, failed).
    Channel(io::Error),
}

/// The one writer of the protocol channel, shared by the session, the reader
/// thread (error answers, `cancel`) and the flusher thread.
pub(crate) struct ProtocolWriter<W: Write> {
    outbox: Mutex<Outbox<W>>,
    /// Wakes the flusher when a batch starts waiting, or batching ends.
    wake: Condvar,
    /// The supervisor's `limits.max_message_bytes`, known after `initialize`.
    max_message_bytes: AtomicU64,
}

/// What the writer's lock guards.
struct Outbox<W> {
    out: W,
    /// Whole lines not yet written.
    pending: Vec<u8>,
    last_write: Instant,
    /// Whether a flusher thread runs; without one every message is written at once.
    batching: bool,
    /// Whether the flusher knows there are pending bytes (so that the
    /// producer wakes it once per batch, not once per message).
    flusher_armed: bool,
    /// The first write error: the channel stays broken, and every later send
    /// fails with it instead of buffering bytes that can never be written.
    broken: Option<(io::ErrorKind, String)>,
}

impl<W: Write> Outbox<W> {
    fn check(&self) -> Result<(), SendError> {
        match &self.broken {
            Some((kind, message)) => {
                Err(SendError::Channel(io::Error::new(*kind, message.clone())))
            }
            None => Ok(()),
        }
    }

    fn write_pending(&mut self) -> Result<(), SendError> {
        self.check()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self
            .out
            .write_all(&self.pending)
            .and_then(|()| self.out.flush());
        self.pending.clear();
        // One oversized message must not pin its buffer for the rest of the run.
        if self.pending.capacity() > 4 * BATCH_BYTES {
            self.pending.shrink_to(2 * BATCH_BYTES);
        }
        self.last_write = Instant::now();
        written.map_err(|err| {
            self.broken = Some((err.kind(), err.to_string()));
            SendError::Channel(err)
        })
    }
}

/// A notification, serialised straight from borrowed params (no JSON tree is
/// built); the same bytes as [`Message::notification`].
#[derive(Serialize)]
struct Notification<'a, P> {
    jsonrpc: &'static str,
    method: &'a str,
    params: &'a P,
}

impl<W: Write> ProtocolWriter<W> {
    pub(crate) fn new(out: W) -> ProtocolWriter<W> {
        ProtocolWriter {
            outbox: Mutex::new(Outbox {
                out,
                pending: Vec::with_capacity(2 * BATCH_BYTES),
                // As if the last write were long ago: the first message goes out at once.
                last_write: Instant::now()
                    .checked_sub(BATCH_DELAY)
                    .unwrap_or_else(Instant::now),
                batching: false,
                flusher_armed: false,
                broken: None,
            }),
            wake: Condvar::new(),
            max_message_bytes: AtomicU64::new(u64::MAX),
        }
    }

    pub(crate) fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn set_max_message_bytes(&self, bytes: u64) {
        self.max_message_bytes.store(bytes, Ordering::Relaxed);
    }

    /// A poisoned lock is taken anyway: the guarded state is consistent after
    /// every statement that can panic (a message is appended whole or cut back).
    fn lock(&self) -> MutexGuard<'_, Outbox<W>> {
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a response (or any message) and writes it at once.
    pub(crate) fn send(&self, message: &Message) -> Result<(), SendError> {
        self.queue(Urgency::Now, |line| serde_json::to_writer(line, message))
    }

    /// Sends a notification `method` with `params`, in a batch.
    pub(crate) fn notify<P: Serialize>(&self, method: &str, params: &P) -> Result<(), SendError> {
        let notification = Notification {
            jsonrpc: "2.0",
            method,
            params,
        };
        self.queue(Urgency::Batched, |line| {
            serde_json::to_writer(line, &notification)
        })
    }

    /// Sends a `finding` notification around an already serialised finding,
    /// in a batch.
    pub(crate) fn notify_serialized_finding(
        &self,
        seq: u64,
        finding: &[u8],
    ) -> Result<(), SendError> {
        self.queue(Urgency::Batched, |line| {
            // Infallible: writing into a Vec does not fail.
            let _ = write!(
                line,
                r#"{{"jsonrpc":"2.0","method":"{}","params":{{"seq":{seq},"finding":"#,
                method::FINDING
            );
            line.extend_from_slice(finding);
            line.extend_from_slice(b"}}");
            Ok(())
        })
    }

    /// Writes everything pending now.
    pub(crate) fn flush(&self) -> Result<(), SendError> {
        self.lock().write_pending()
    }

    /// Appends one line built by `serialise` and writes what is due.
    fn queue(
        &self,
        urgency: Urgency,
        serialise: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> Result<(), SendError> {
        let mut outbox = self.lock();
        outbox.check()?;
        let start = outbox.pending.len();
        if let Err(err) = serialise(&mut outbox.pending) {
            outbox.pending.truncate(start);
            return Err(SendError::Channel(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot serialise the message: {err}"),
            )));
        }
        let body = outbox.pending.len() - start;
        if body as u64 > self.max_message_bytes() {
            outbox.pending.truncate(start);
            return Err(SendError::TooLong(body));
        }
        outbox.pending.push(b'\n');
        let due = urgency == Urgency::Now
            || !outbox.batching
            || outbox.pending.len() >= BATCH_BYTES
            || outbox.last_write.elapsed() >= BATCH_DELAY;
        if due {
            outbox.write_pending()
        } else {
            if !outbox.flusher_armed {
                outbox.flusher_armed = true;
                self.wake.notify_one();
            }
            Ok(())
        }
    }

    /// Runs `work` with notifications batched: a flusher thread writes what
    /// waits longer than [`BATCH_DELAY`]; when `work` returns, everything
    /// pending is written and the flusher stops. When the thread cannot be
    /// started, `work` runs with every message written at once.
    pub(crate) fn batching<T>(&self, work: impl FnOnce() -> T) -> T
    where
        W: Send,
    {
        std::thread::scope(|scope| {
            self.lock().batching = true;
            let _stop = StopBatching(self);
            let flusher = std::thread::Builder::new()
                .name("secflow-protocol-flusher".into())
                .spawn_scoped(scope, || self.write_late_batches());
            if let Err(err) = flusher {
                self.lock().batching = false;
                eprintln!(
                    "secflow-plugin-sdk: cannot start the protocol flusher thread ({err}); \
                     every message is written at once"
                );
            }
            work()
            // `_stop` ends the flusher before the scope joins it, also when
            // `work` unwinds.
        })
    }

    /// The flusher thread: writes a waiting batch [`BATCH_DELAY`] after the
    /// last write, until batching ends or the channel breaks.
    fn write_late_batches(&self) {
        let mut outbox = self.lock();
        loop {
            if !outbox.batching || outbox.broken.is_some() {
                return;
            }
            if outbox.pending.is_empty() {
                outbox.flusher_armed = false;
                outbox = self
                    .wake
                    .wait(outbox)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            let due = outbox.last_write + BATCH_DELAY;
            let now = Instant::now();
            if now < due {
                outbox = self
                    .wake
                    .wait_timeout(outbox, due - now)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
                continue;
            }
            // A failure is kept in `broken`; the session sees it on its next send.
            let _ = outbox.write_pending();
        }
    }
}

/// Ends batching when dropped: writes what is pending and stops the flusher.
struct StopBatching<'a, W: Write>(&'a ProtocolWriter<W>);

impl<W: Write> Drop for StopBatching<'_, W> {
    fn drop(&mut self) {
        let mut outbox = self.0.lock();
        outbox.batching = false;
        // A failure is kept in `broken`; the session sees it on its next send.
        let _ = outbox.write_pending();
        drop(outbox);
        self.0.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    /// An in-memory channel that records each `write` call separately.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Writes {
        fn calls(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
    }

    /// A channel whose reader has gone away.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "broken pipe"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn finding(seq: u64) -> serde_json::Value {
        json!({"seq": seq, "finding": {"title": "t"}})
    }

    #[test]
    fn outside_a_run_every_notification_is_written_as_it_is_sent() {
        let out = Writes::default();
        let writer = ProtocolWriter::new(out.clone());
        writer.notify(method::FINDING, &finding(1)).unwrap();
        writer.notify(method::FINDING, &finding(2)).unwrap();
        assert_eq!(out.calls(), 2);
    }

    #[test]
    fn a_burst_of_notifications_is_written_in_few_writes_in_order() {
        let out = Writes::default();
        let writer = ProtocolWriter::new(out.clone());
        let finding = vec![b'x'; 1000];
        let serialised = [b"{\"title\":\"".as_slice(), &finding, b"\"}"].concat();
        writer.batching(|| {
            for seq in 1..=1000 {
                writer.notify_serialized_finding(seq, &serialised).unwrap();
            }
        });
        let text = out.text();
        let seqs: Vec<u64> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .map(|m| m["params"]["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
        // About a megabyte: one write per 64 KiB, not one per finding.
        assert!(out.calls() < 40, "{} writes for 1000 findings", out.calls());
    }

    #[test]
    fn a_response_writes_the_pending_notifications_before_itself() {
        let out = Writes::default();
        let writer = ProtocolWriter::new(out.clone());
        writer.batching(|| {
            writer.notify(method::FINDING, &finding(1)).unwrap();
            writer.notify(method::FINDING, &finding(2)).unwrap();
            writer
                .send(&Message::response(json!(2), json!({"findings": 2})))
                .unwrap();
            let text = out.text();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 3, "{text}");
            assert!(lines[2].contains(r#""id":2"#));
        });
    }

    #[test]
    fn a_waiting_notification_is_written_within_the_batch_delay() {
        let out = Writes::default();
        let writer = ProtocolWriter::new(out.clone());
        writer.batching(|| {
            // The first goes out at once (nothing was written lately), the
            // second waits for the flusher.
            writer.notify(method::FINDING, &finding(1)).unwrap();
            writer.notify(method::FINDING, &finding(2)).unwrap();
            let sent = Instant::now();
            while out.text().lines().count() < 2 {
                assert!(
                    sent.elapsed() < Duration::from_secs(2),
                    "the second finding was never written"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            // Generous against a loaded machine; the flusher aims at BATCH_DELAY.
            assert!(sent.elapsed() < BATCH_DELAY + Duration::from_millis(500));
        });
    }

    #[test]
    fn a_message_over_max_message_bytes_is_refused_and_nothing_of_it_is_written() {
        let out = Writes::default();
        let writer = ProtocolWriter::new(out.clone());
        writer.set_max_message_bytes(100);
        let refused = writer.notify_serialized_finding(1, &[b'x'; 200]);
        assert!(matches!(refused, Err(SendError::TooLong(length)) if length > 200));
        writer.notify(method::FINDING, &finding(1)).unwrap();
        assert_eq!(out.text().lines().count(), 1);
    }

    #[test]
    fn after_a_failed_write_every_send_fails_with_the_channel_error() {
        let writer = ProtocolWriter::new(Closed);
        writer.batching(|| {
            let _ = writer.notify(method::FINDING, &finding(1));
            let flushed = writer.flush();
            assert!(matches!(flushed, Err(SendError::Channel(ref e)) if e.kind() == io::ErrorKind::BrokenPipe));
            let again = writer.notify(method::FINDING, &finding(2));
            assert!(matches!(again, Err(SendError::Channel(ref e)) if e.kind() == io::ErrorKind::BrokenPipe));
        });
    }
}
