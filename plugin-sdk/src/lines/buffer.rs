//! The bounded line splitter every transport reads into.

use std::ops::Range;

use serde::Deserialize;

/// How much a buffer can take beyond `max_line_length` in one read.
const CHUNK: usize = 4096;

/// How many bytes of a skipped line are shown in its report.
pub(crate) const SHOWN: usize = 80;

/// What ends a line.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LineEnd {
    /// CR, LF or CR LF, whichever comes (the default): blank lines are skipped anyway, so
    /// CR LF is one line end.
    #[default]
    Auto,
    /// LF; a CR before it is dropped.
    Lf,
    /// CR; an LF after it is dropped.
    Cr,
    /// CR LF only; a lone CR or LF is part of the line.
    Crlf,
}

/// What [`LineBuffer::next`] found in the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A complete, non-blank line (without its line end), as a range of [`LineBuffer::get`].
    Line(Range<usize>),
    /// A line longer than the limit, being skipped; the range holds its first bytes.
    Overlong(Range<usize>),
    /// No complete line: read more into [`LineBuffer::space`].
    More,
}

/// Splits a byte stream into lines of at most `max` bytes, holding at most `max` + 4 KiB.
#[derive(Debug)]
pub(crate) struct LineBuffer {
    data: Box<[u8]>,
    /// First byte not yet consumed.
    start: usize,
    /// End of the bytes read.
    end: usize,
    /// `start..scanned` holds no line end.
    scanned: usize,
    /// Inside an overlong line: drop bytes up to its end.
    skipping: bool,
    max: usize,
    line_end: LineEnd,
    /// Stream offset of `start`: the bytes consumed so far, through the last line's end.
    consumed: u64,
}

impl LineBuffer {
    pub(crate) fn new(max: usize, line_end: LineEnd) -> Self {
        Self {
            data: vec![0; max + CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            scanned: 0,
            skipping: false,
            max,
            line_end,
            consumed: 0,
        }
    }

    /// The bytes of a range returned by [`next`](LineBuffer::next), valid until the next
    /// [`space`](LineBuffer::space).
    pub(crate) fn get(&self, range: Range<usize>) -> &[u8] {
        &self.data[range]
    }

    /// Bytes of the stream consumed through the end of the last line returned or skipped.
    pub(crate) fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Bytes read past the last line end (a line still arriving), unless being skipped.
    pub(crate) fn remainder(&self) -> &[u8] {
        if self.skipping {
            &[]
        } else {
            &self.data[self.start..self.end]
        }
    }

    /// The next complete line, an overlong line to report, or `More`.
    pub(crate) fn next(&mut self) -> Next {
        loop {
            let Some((at, len)) = self.find_end() else {
                // In CR LF mode a CR at the very end may be the first half of a line end.
                self.scanned = match self.line_end {
                    LineEnd::Crlf
                        if self.end > self.scanned && self.data[self.end - 1] == b'\r' =>
                    {
                        self.end - 1
                    }
                    _ => self.end,
                };
                if self.skipping {
                    self.consume(self.scanned);
                    return Next::More;
                }
                if self.end - self.start > self.max {
                    self.skipping = true;
                    return Next::Overlong(self.start..self.start + SHOWN.min(self.max));
                }
                return Next::More;
            };
            let line = self.start..at;
            self.consume(at + len);
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            if line.len() > self.max {
                return Next::Overlong(line.start..line.start + SHOWN.min(self.max));
            }
            let line = self.trim(line);
            if !line.is_empty() {
                return Next::Line(line);
            }
        }
    }

    /// Room to read into: call after [`next`](LineBuffer::next) returned `More`. Moves the
    /// unfinished line to the front; at least 4 KiB.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        &mut self.data[self.end..]
    }

    /// Marks `n` bytes of [`space`](LineBuffer::space) as read.
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Appends bytes read elsewhere (at most 4 KiB, after `More`).
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        let space = self.space();
        let n = bytes.len().min(space.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
    }

    fn consume(&mut self, to: usize) {
        self.consumed += (to - self.start) as u64;
        self.start = to;
        self.scanned = self.scanned.max(to);
    }

    /// Where the next line end starts after `start`, and its length.
    fn find_end(&self) -> Option<(usize, usize)> {
        let from = self.scanned;
        let hay = &self.data[from..self.end];
        let found = match self.line_end {
            LineEnd::Auto => hay
                .iter()
                .position(|b| *b == b'\r' || *b == b'\n')
                .map(|i| (i, 1)),
            LineEnd::Lf => hay.iter().position(|b| *b == b'\n').map(|i| (i, 1)),
            LineEnd::Cr => hay.iter().position(|b| *b == b'\r').map(|i| (i, 1)),
            LineEnd::Crlf => hay.windows(2).position(|w| w == b"\r\n").map(|i| (i, 2)),
        };
        found.map(|(i, len)| (from + i, len))
    }

    fn trim(&self, line: Range<usize>) -> Range<usize> {
        let bytes = &self.data[line.clone()];
        match self.line_end {
            LineEnd::Lf if bytes.last() == Some(&b'\r') => line.start..line.end - 1,
            LineEnd::Cr if bytes.first() == Some(&b'\n') => line.start + 1..line.end,
            _ => line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the lines and how many were overlong.
    fn split(input: &[u8], max: usize, line_end: LineEnd, step: usize) -> (Vec<String>, usize) {
        let mut buffer = LineBuffer::new(max, line_end);
        let (mut lines, mut overlong) = (Vec::new(), 0);
        let mut rest = input;
        loop {
            match buffer.next() {
                Next::Line(r) => lines.push(String::from_utf8_lossy(buffer.get(r)).into_owned()),
                Next::Overlong(_) => overlong += 1,
                Next::More if rest.is_empty() => return (lines, overlong),
                Next::More => {
                    let n = step.min(rest.len());
                    buffer.extend(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn every_line_end_mode_splits_its_own_way_in_any_chunking() {
        let input = b"a\r\nb\rc\nd\r\n\r\ne";
        for step in [1, 2, 3, 100] {
            let auto = split(input, 100, LineEnd::Auto, step).0;
            assert_eq!(auto, ["a", "b", "c", "d"], "step {step}");
            assert_eq!(split(input, 100, LineEnd::Lf, step).0, ["a", "b\rc", "d"]);
            assert_eq!(split(input, 100, LineEnd::Cr, step).0, ["a", "b", "c\nd"]);
            assert_eq!(split(input, 100, LineEnd::Crlf, step).0, ["a", "b\rc\nd"]);
        }
    }

    #[test]
    fn overlong_lines_are_reported_once_and_skipped_to_their_end() {
        let mut input = b"12345\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 50_000));
        input.extend(b"\nok\n123456\nlast\n");
        for step in [1, 7, 4096] {
            let (lines, overlong) = split(&input, 5, LineEnd::Auto, step);
            assert_eq!(lines, ["12345", "ok", "last"], "step {step}");
            assert_eq!(overlong, 2, "step {step}");
        }
    }

    #[test]
    fn consumed_counts_through_the_last_line_end_only() {
        let mut buffer = LineBuffer::new(10, LineEnd::Lf);
        buffer.extend(b"one\n\ntwo\npart");
        assert!(matches!(buffer.next(), Next::Line(_)));
        assert_eq!(buffer.consumed(), 4);
        assert!(matches!(buffer.next(), Next::Line(_)));
        assert_eq!(
            buffer.consumed(),
            9,
            "the blank line is consumed with `two`"
        );
        assert_eq!(buffer.next(), Next::More);
        assert_eq!(buffer.remainder(), b"part");
    }
}
