//! fixture-sleeper (raw protocol): sends some findings, then hangs for good. It
//! ignores SIGTERM (disposition SIG_IGN, set before anything else) and never reads
//! `cancel`, so only the supervisor's final kill (SIGKILL) ends it.
//!
//! Answers `initialize` with the expected name and version, category `detector`.
//!
//! Config knobs: `before_sleep` (integer, default 2): findings sent before sleeping.

use std::io;
use std::time::Duration;

use secflow_tests::fixture::{handshake, knob_u64, numbered_finding, send_finding};

fn ignore_sigterm() -> io::Result<()> {
    // SAFETY: `sigaction` is plain old data for which all-zero bytes are a valid
    // value (empty mask, no flags, no handler).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = libc::SIG_IGN;
    // SAFETY: installs the SIG_IGN disposition (no handler code runs) from a fully
    // initialised `action`; the previous action is not asked for (null).
    if unsafe { libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn main() {
    if let Err(err) = ignore_sigterm() {
        eprintln!("fixture-sleeper: cannot ignore SIGTERM: {err}");
        std::process::exit(2);
    }
    let (config, _run) = handshake();
    for i in 1..=knob_u64(&config, "before_sleep", 2) {
        send_finding(i, numbered_finding(i));
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
