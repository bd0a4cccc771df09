//! Newline-delimited framing with a bound on line length.
//!
//! Both ends of the protocol must refuse to buffer an unbounded line (a peer that
//! never sends `\n` would otherwise exhaust memory), so reading stops as soon as a
//! line grows past the bound.

use std::io::{self, BufRead};

/// What [`read_bounded_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    /// A line (without its `\n`) is in the buffer. The last line of the input
    /// counts even without a trailing newline.
    Line,
    /// The line is longer than the bound; the reader is left inside it.
    TooLong,
    /// End of input, nothing read.
    Eof,
}

/// Reads one line into `line` (cleared first), without the trailing `\n` (or `\r\n`).
pub fn read_bounded_line<R: BufRead + ?Sized>(
    reader: &mut R,
    max_bytes: usize,
    line: &mut Vec<u8>,
) -> io::Result<LineRead> {
    line.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(if line.is_empty() {
                LineRead::Eof
            } else {
                finish(line)
            });
        }
        let (chunk, newline) = match find_newline(available) {
            Some(at) => (&available[..at], true),
            None => (available, false),
        };
        if line.len() + chunk.len() > max_bytes {
            return Ok(LineRead::TooLong);
        }
        line.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(newline);
        reader.consume(used);
        if newline {
            return Ok(finish(line));
        }
    }
}

/// Position of the first `\n` in `bytes`.
///
/// Tests blocks of 32 bytes with a fold the compiler vectorises, then looks
/// inside the block that has one: several times faster than a byte-by-byte
/// `position` over the megabytes of a `run` line.
pub(crate) fn find_newline(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 32;
    let mut offset = 0;
    for block in bytes.chunks(BLOCK) {
        if block.iter().fold(false, |seen, &b| seen | (b == b'\n')) {
            return block.iter().position(|&b| b == b'\n').map(|at| offset + at);
        }
        offset += block.len();
    }
    None
}

fn finish(line: &mut Vec<u8>) -> LineRead {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    LineRead::Line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_on_newline_and_the_last_one_needs_none() {
        let mut input: &[u8] = b"one\r\ntwo\nthree";
        let mut line = Vec::new();
        for expected in [&b"one"[..], b"two", b"three"] {
            assert_eq!(
                read_bounded_line(&mut input, 16, &mut line).unwrap(),
                LineRead::Line
            );
            assert_eq!(line, expected);
        }
        assert_eq!(
            read_bounded_line(&mut input, 16, &mut line).unwrap(),
            LineRead::Eof
        );
    }

    #[test]
    fn the_first_newline_is_found_wherever_it_is_in_a_block() {
        for len in [0, 1, 31, 32, 33, 100] {
            let mut bytes = vec![b'x'; len];
            assert_eq!(find_newline(&bytes), None);
            for at in 0..len {
                bytes[at] = b'\n';
                assert_eq!(find_newline(&bytes), Some(at), "len {len}");
                if at + 1 < len {
                    bytes[at + 1] = b'\n';
                    assert_eq!(find_newline(&bytes), Some(at), "len {len}, two");
                    bytes[at + 1] = b'x';
                }
                bytes[at] = b'x';
            }
        }
    }

    #[test]
    fn a_line_longer_than_the_bound_is_reported_without_buffering_it() {
        let long = [b'x'; 100];
        let mut input = std::io::BufReader::with_capacity(8, &long[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_bounded_line(&mut input, 10, &mut line).unwrap(),
            LineRead::TooLong
        );
        assert!(line.len() <= 10);
    }
}
