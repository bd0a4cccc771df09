//! The plugin's output pipes, drained concurrently and with bounds.
//!
//! A full pipe blocks the child, so stdout and stderr each have a task that
//! reads them as fast as they fill. stdout is cut into protocol lines no longer
//! than `max_message_bytes` (a longer line is fatal and is never buffered whole);
//! stderr keeps only its last `tail_bytes`.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

/// What the stdout task reports, in order.
#[derive(Debug)]
pub enum StdoutEvent {
    Line(Vec<u8>),
    /// A line passed `max_message_bytes`; the task stops reading.
    TooLong {
        limit: usize,
    },
    /// The total output passed `max_output_bytes`; the task stops reading.
    OutputLimit {
        limit: u64,
    },
    Eof,
    Failed(std::io::Error),
}

/// Reads protocol lines from `stdout` until EOF, an error or a bound is hit,
/// one event per message.
pub fn spawn_stdout_reader<R>(
    stdout: R,
    max_line: usize,
    max_output_bytes: u64,
) -> mpsc::Receiver<StdoutEvent>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    // A small queue: the session applies back-pressure to the plugin through it.
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut reader = Reader::new(stdout, max_line, max_output_bytes);
        loop {
            let event = reader.next().await;
            let last = !matches!(event, StdoutEvent::Line(_));
            if tx.send(event).await.is_err() || last {
                return;
            }
        }
    });
    rx
}

/// Most lines in one message of [`spawn_stdout_batches`].
pub const MAX_BATCH_LINES: usize = 256;

/// Like [`spawn_stdout_reader`], but each message carries, in order, every
/// complete line already buffered (at most [`MAX_BATCH_LINES`]): a plugin
/// streaming thousands of findings a second costs the session one channel
/// message per buffer read, not per line. The last event of the stream (EOF,
/// a bound, an error) ends its message.
pub fn spawn_stdout_batches<R>(
    stdout: R,
    max_line: usize,
    max_output_bytes: u64,
) -> mpsc::Receiver<Vec<StdoutEvent>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    // A message holds at most a buffer's worth of lines (plus the one being
    // completed), so the queue bounds memory to a few MiB and still applies
    // back-pressure to the plugin.
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut reader = Reader::new(stdout, max_line, max_output_bytes);
        loop {
            let mut events = Vec::with_capacity(16);
            let mut last;
            loop {
                let event = reader.next().await;
                last = !matches!(event, StdoutEvent::Line(_));
                events.push(event);
                if last || events.len() >= MAX_BATCH_LINES || !reader.has_buffered_line() {
                    break;
                }
            }
            if tx.send(events).await.is_err() || last {
                return;
            }
        }
    });
    rx
}

/// The line reader both senders share: bounded lines, bounded total output.
struct Reader<R> {
    reader: BufReader<R>,
    max_line: usize,
    max_output_bytes: u64,
    total: u64,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn new(stdout: R, max_line: usize, max_output_bytes: u64) -> Reader<R> {
        Reader {
            reader: BufReader::with_capacity(64 << 10, stdout),
            max_line,
            max_output_bytes,
            total: 0,
        }
    }

    async fn next(&mut self) -> StdoutEvent {
        match read_bounded_line(&mut self.reader, self.max_line).await {
            Ok(BoundedLine::Line(line)) => {
                self.total += line.len() as u64 + 1;
                if self.total > self.max_output_bytes {
                    StdoutEvent::OutputLimit {
                        limit: self.max_output_bytes,
                    }
                } else {
                    StdoutEvent::Line(line)
                }
            }
            Ok(BoundedLine::TooLong) => StdoutEvent::TooLong {
                limit: self.max_line,
            },
            Ok(BoundedLine::Eof) => StdoutEvent::Eof,
            Err(e) => StdoutEvent::Failed(e),
        }
    }

    /// Whether a whole line is in the buffer, so reading it will not wait.
    fn has_buffered_line(&self) -> bool {
        memchr(b'\n', self.reader.buffer()).is_some()
    }
}

enum BoundedLine {
    Line(Vec<u8>),
    TooLong,
    Eof,
}

/// One line without its `\n`, never holding more than `max` bytes of it.
/// A final line without a newline counts as a line.
async fn read_bounded_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<BoundedLine> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() {
                BoundedLine::Eof
            } else {
                BoundedLine::Line(line)
            });
        }
        let (chunk, found_newline) = match memchr(b'\n', available) {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        if line.len() + chunk.len() > max {
            return Ok(BoundedLine::TooLong);
        }
        line.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(found_newline);
        reader.consume(used);
        if found_newline {
            return Ok(BoundedLine::Line(line));
        }
    }
}

/// The first `needle` in `haystack`: SIMD, since every byte a plugin prints
/// is searched once for its line's end and once more to see whether the next
/// line is already buffered (a byte loop was a tenth of a streaming session's
/// time).
fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    memchr::memchr(needle, haystack)
}

/// Drains stderr to its end and returns its last `tail_bytes` (lossy UTF-8,
/// cut at a character boundary) and the total byte count.
pub fn spawn_stderr_drain<R>(stderr: R, tail_bytes: usize) -> tokio::task::JoinHandle<(String, u64)>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut stderr = stderr;
        let mut tail: std::collections::VecDeque<u8> =
            std::collections::VecDeque::with_capacity(tail_bytes.min(64 << 10));
        let mut buf = vec![0u8; 16 << 10];
        let mut total = 0u64;
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n as u64;
                    let chunk = &buf[..n];
                    let chunk = &chunk[chunk.len().saturating_sub(tail_bytes)..];
                    let overflow = (tail.len() + chunk.len()).saturating_sub(tail_bytes);
                    tail.drain(..overflow.min(tail.len()));
                    tail.extend(chunk);
                }
            }
        }
        let bytes: Vec<u8> = tail.into_iter().collect();
        (String::from_utf8_lossy(&bytes).into_owned(), total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn events(input: &'static [u8], max_line: usize, max_total: u64) -> Vec<String> {
        let mut rx = spawn_stdout_reader(input, max_line, max_total);
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            out.push(match e {
                StdoutEvent::Line(l) => format!("line:{}", String::from_utf8_lossy(&l)),
                StdoutEvent::TooLong { .. } => "too_long".into(),
                StdoutEvent::OutputLimit { .. } => "output_limit".into(),
                StdoutEvent::Eof => "eof".into(),
                StdoutEvent::Failed(e) => format!("failed:{e}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn lines_are_split_and_a_last_line_without_newline_counts() {
        assert_eq!(
            events(b"a\nbb\nccc", 10, 1000).await,
            ["line:a", "line:bb", "line:ccc", "eof"]
        );
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_fatal_and_ends_reading() {
        assert_eq!(
            events(b"ok\n0123456789abc\nnever\n", 10, 1000).await,
            ["line:ok", "too_long"]
        );
    }

    async fn batches(input: &'static [u8], max_line: usize, max_total: u64) -> Vec<Vec<String>> {
        let mut rx = spawn_stdout_batches(input, max_line, max_total);
        let mut out = Vec::new();
        while let Some(batch) = rx.recv().await {
            out.push(
                batch
                    .into_iter()
                    .map(|e| match e {
                        StdoutEvent::Line(l) => format!("line:{}", String::from_utf8_lossy(&l)),
                        StdoutEvent::TooLong { .. } => "too_long".into(),
                        StdoutEvent::OutputLimit { .. } => "output_limit".into(),
                        StdoutEvent::Eof => "eof".into(),
                        StdoutEvent::Failed(e) => format!("failed:{e}"),
                    })
                    .collect(),
            );
        }
        out
    }

    #[tokio::test]
    async fn buffered_lines_travel_together_in_order_and_the_end_closes_the_stream() {
        let got = batches(b"a\nbb\nccc", 10, 1000).await;
        let flat: Vec<&str> = got.iter().flatten().map(String::as_str).collect();
        assert_eq!(flat, ["line:a", "line:bb", "line:ccc", "eof"]);
        // Everything was buffered at once: far fewer messages than lines.
        assert!(got.len() < 4, "{got:?}");
    }

    #[tokio::test]
    async fn a_batch_never_holds_more_than_its_line_limit() {
        let input: &'static [u8] = Box::leak(
            "x\n"
                .repeat(MAX_BATCH_LINES * 2 + 1)
                .into_bytes()
                .into_boxed_slice(),
        );
        let got = batches(input, 10, 1 << 20).await;
        assert!(
            got.iter().all(|b| b.len() <= MAX_BATCH_LINES),
            "{:?}",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let lines = got
            .iter()
            .flatten()
            .filter(|e| e.starts_with("line:"))
            .count();
        assert_eq!(lines, MAX_BATCH_LINES * 2 + 1);
        assert_eq!(
            got.last().and_then(|b| b.last()).map(String::as_str),
            Some("eof")
        );
    }

    #[tokio::test]
    async fn batched_lines_keep_the_line_and_output_bounds() {
        let flat = |b: Vec<Vec<String>>| b.into_iter().flatten().collect::<Vec<_>>();
        assert_eq!(
            flat(batches(b"ok\n0123456789abc\nnever\n", 10, 1000).await),
            ["line:ok", "too_long"]
        );
        assert_eq!(
            flat(batches(b"aaaa\nbbbb\ncccc\n", 10, 12).await),
            ["line:aaaa", "line:bbbb", "output_limit"]
        );
    }

    #[tokio::test]
    async fn total_output_is_bounded() {
        assert_eq!(
            events(b"aaaa\nbbbb\ncccc\n", 10, 12).await,
            ["line:aaaa", "line:bbbb", "output_limit"]
        );
    }

    #[tokio::test]
    async fn stderr_keeps_only_its_tail() {
        let data: &'static [u8] = b"0123456789abcdefghij";
        let (tail, total) = spawn_stderr_drain(data, 5).await.unwrap();
        assert_eq!(tail, "fghij");
        assert_eq!(total, 20);
    }
}
