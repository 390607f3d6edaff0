//! NDJSON line decoding: a chunk is not a message.
//!
//! Bytes arrive in chunks that split lines anywhere, even inside a multi-byte UTF-8
//! character. [`LineDecoder`] keeps the unfinished tail between chunks and hands out only
//! whole lines, decoded as UTF-8 once complete. It accepts `\n` and `\r\n` endings and a last
//! line without a newline (`finish`), skips blank lines, and refuses a line longer than its
//! limit instead of growing without bound. The browser's export viewer, the command-line
//! consumer and the import job all use this one decoder.
//!
//! Tests: `cargo test --features ssr protocol::ndjson` (every split point of a sample).

/// A line the decoder could not hand out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    /// Line `line` (1-based) is not valid UTF-8.
    InvalidUtf8 { line: u64 },
    /// Line `line` grew past `max` bytes without a newline.
    TooLong { line: u64, max: u32 },
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidUtf8 { line } => write!(f, "line {line} is not valid UTF-8"),
            Self::TooLong { line, max } => write!(f, "line {line} is longer than {max} bytes"),
        }
    }
}

impl std::error::Error for LineError {}

/// One decoded line with its 1-based number in the stream (blank lines count too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub number: u64,
    pub text: String,
}

/// Splits a byte stream into lines across chunk boundaries.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    /// Lines handed out or skipped so far.
    lines_seen: u64,
    max_line: u32,
    /// Set after a too-long line: bytes are dropped until the next newline.
    skipping: bool,
}

/// Default longest line: 1 MiB (an audit row is a few hundred bytes).
pub const DEFAULT_MAX_LINE: u32 = 1 << 20;

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl LineDecoder {
    /// A decoder refusing lines over `max_line` bytes.
    pub fn new(max_line: u32) -> Self {
        Self {
            buf: Vec::new(),
            lines_seen: 0,
            max_line,
            skipping: false,
        }
    }

    /// How many lines (blank ones included) have been completed so far.
    pub fn lines_seen(&self) -> u64 {
        self.lines_seen
    }

    /// Feeds one chunk; returns the lines it completed, in order. A bad line is an `Err` in
    /// its place, and decoding goes on after it.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Line, LineError>> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.skipping {
                match rest.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        self.skipping = false;
                        rest = &rest[i + 1..];
                    }
                    None => return out,
                }
                continue;
            }
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.buf.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    if let Some(line) = self.take_line() {
                        out.push(line);
                    }
                }
                None => {
                    self.buf.extend_from_slice(rest);
                    rest = &[];
                }
            }
            if self.buf.len() > self.max_line as usize {
                self.lines_seen += 1;
                out.push(Err(LineError::TooLong {
                    line: self.lines_seen,
                    max: self.max_line,
                }));
                self.buf.clear();
                self.skipping = true;
            }
        }
        out
    }

    /// Ends the stream: the last line, if it had no newline.
    pub fn finish(&mut self) -> Option<Result<Line, LineError>> {
        if self.skipping {
            self.skipping = false;
            self.buf.clear();
            return None;
        }
        if self.buf.is_empty() {
            return None;
        }
        self.take_line()
    }

    /// Turns the buffer into a line (without its `\r`); `None` for a blank line.
    fn take_line(&mut self) -> Option<Result<Line, LineError>> {
        self.lines_seen += 1;
        let number = self.lines_seen;
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(
            String::from_utf8(bytes)
                .map(|text| Line { number, text })
                .map_err(|_| LineError::InvalidUtf8 { line: number }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        "{\"id\":1,\"user\":\"zoë\"}\r\n\n{\"id\":2,\"user\":\"日本\"}\n{\"id\":3,\"user\":\"🦀\"}";

    fn decode_in_chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Result<Line, LineError>> {
        let mut d = LineDecoder::default();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            out.extend(d.push(&bytes[start..cut]));
            start = cut;
        }
        out.extend(d.finish());
        out
    }

    fn texts(v: &[Result<Line, LineError>]) -> Vec<String> {
        v.iter().map(|l| l.as_ref().unwrap().text.clone()).collect()
    }

    #[test]
    fn every_single_split_point_gives_the_same_lines() {
        let bytes = SAMPLE.as_bytes();
        let whole = decode_in_chunks(bytes, &[]);
        assert_eq!(
            texts(&whole),
            [
                "{\"id\":1,\"user\":\"zoë\"}",
                "{\"id\":2,\"user\":\"日本\"}",
                "{\"id\":3,\"user\":\"🦀\"}"
            ]
        );
        let numbers: Vec<u64> = whole.iter().map(|l| l.as_ref().unwrap().number).collect();
        assert_eq!(numbers, [1, 3, 4], "the blank line counts as line 2");
        for cut in 1..bytes.len() {
            assert_eq!(
                decode_in_chunks(bytes, &[cut]),
                whole,
                "split at byte {cut}"
            );
        }
    }

    #[test]
    fn byte_by_byte_gives_the_same_lines() {
        let bytes = SAMPLE.as_bytes();
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(decode_in_chunks(bytes, &cuts), decode_in_chunks(bytes, &[]));
    }

    #[test]
    fn bad_utf8_is_reported_with_its_line_and_decoding_goes_on() {
        let mut d = LineDecoder::default();
        let out = d.push(b"ok\n\xff\xfe\nalso ok\n");
        assert_eq!(out[0].as_ref().unwrap().text, "ok");
        assert_eq!(out[1], Err(LineError::InvalidUtf8 { line: 2 }));
        assert_eq!(out[2].as_ref().unwrap().text, "also ok");
    }

    #[test]
    fn over_long_lines_are_refused_not_buffered() {
        let mut d = LineDecoder::new(8);
        let mut out = d.push(b"short\n0123456789");
        out.extend(d.push(b"abcdef\nnext\n"));
        assert_eq!(out[0].as_ref().unwrap().text, "short");
        assert_eq!(out[1], Err(LineError::TooLong { line: 2, max: 8 }));
        assert_eq!(out[2].as_ref().unwrap().number, 3);
        assert_eq!(out[2].as_ref().unwrap().text, "next");
        assert!(d.buf.capacity() < 64, "memory stays bounded");
    }
}
