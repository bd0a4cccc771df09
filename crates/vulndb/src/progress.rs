//! What an update reports while it runs, and the terminal rendering of it.
//!
//! The library only emits [`Event`]s; a [`Progress`] decides what to show. On a
//! terminal [`Terminal`] redraws one status line; elsewhere (a systemd unit's
//! journal) it prints one line per event that matters.

use std::io::{IsTerminal, Write};
use std::time::Duration;

/// One step of an update or import.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// An NVD page was stored: `done` of `total` records of the current window.
    Page {
        window: usize,
        windows: usize,
        done: u64,
        total: u64,
    },
    /// Waiting for the rate limit before the next request.
    Waiting { delay: Duration },
    /// A request failed in a way that may pass; it is tried again after `delay`.
    Retrying {
        url: &'a str,
        attempt: u32,
        reason: String,
        delay: Duration,
    },
    /// A download finished.
    Downloaded { what: &'a str, bytes: u64 },
    /// The server said the copy we have is current (HTTP 304).
    Unchanged { what: &'a str },
    /// A source's changes were staged.
    Staged { what: &'a str, summary: String },
    /// An interrupted update is being continued.
    Resuming { what: String },
}

/// Receives progress events.
pub trait Progress {
    fn event(&mut self, event: Event<'_>);
}

/// Shows nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn event(&mut self, _: Event<'_>) {}
}

/// Progress on standard error: a redrawn line on a terminal, plain lines otherwise.
#[derive(Debug)]
pub struct Terminal {
    tty: bool,
    redrawn: bool,
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal {
            tty: std::io::stderr().is_terminal(),
            redrawn: false,
        }
    }
}

impl Progress for Terminal {
    fn event(&mut self, event: Event<'_>) {
        let mut err = std::io::stderr().lock();
        match event {
            Event::Page {
                window,
                windows,
                done,
                total,
            } => {
                let window = if windows > 1 {
                    format!(" (window {} of {windows})", window + 1)
                } else {
                    String::new()
                };
                let line = format!("nvd: {done} of {total} records{window}");
                if self.tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                    self.redrawn = true;
                } else if done == total {
                    let _ = writeln!(err, "{line}");
                }
            }
            Event::Waiting { delay } if self.tty => {
                let _ = write!(err, " (rate limit: waiting {:.1} s)", delay.as_secs_f64());
                self.redrawn = true;
            }
            Event::Waiting { .. } => {}
            other => {
                if self.redrawn {
                    let _ = writeln!(err);
                    self.redrawn = false;
                }
                let _ = writeln!(err, "{}", describe(&other));
            }
        }
        let _ = err.flush();
    }
}

fn describe(event: &Event<'_>) -> String {
    match event {
        Event::Retrying {
            url,
            attempt,
            reason,
            delay,
        } => format!(
            "{url}: {reason}; try {} in {:.1} s",
            attempt + 1,
            delay.as_secs_f64()
        ),
        Event::Downloaded { what, bytes } => format!("{what}: downloaded {bytes} bytes"),
        Event::Unchanged { what } => format!("{what}: unchanged since the last update"),
        Event::Staged { what, summary } => format!("{what}: {summary}"),
        Event::Resuming { what } => format!("resuming: {what}"),
        Event::Page { done, total, .. } => format!("nvd: {done} of {total} records"),
        Event::Waiting { delay } => format!("waiting {:.1} s", delay.as_secs_f64()),
    }
}
