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
            // The line's next piece: up to its newline, or all that came.
            let end = rest.iter().position(|b| *b == b'\n');
            let piece = &rest[..end.unwrap_or(rest.len())];
            rest = end.map_or(&[][..], |i| &rest[i + 1..]);
            if self.buf.len() + piece.len() > self.max_line as usize {
                // Refused whether it came whole or grew past the limit over several chunks
                // (the same bytes give the same lines however they are cut), and never
                // copied: the rest of it, up to its newline, is dropped as it comes.
                self.lines_seen += 1;
                out.push(Err(LineError::TooLong {
                    line: self.lines_seen,
                    max: self.max_line,
                }));
                self.buf.clear();
                self.skipping = end.is_none();
                continue;
            }
            self.buf.extend_from_slice(piece);
            if end.is_some() {
                if let Some(line) = self.take_line() {
                    out.push(line);
                }
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
        // Refused as well when it comes whole with its newline (found by the property below:
        // it used to be refused only when it grew past the limit across chunks).
        let mut d = LineDecoder::new(8);
        let out = d.push(b"0123456789\nok\n");
        assert_eq!(out[0], Err(LineError::TooLong { line: 1, max: 8 }));
        assert_eq!(out[1].as_ref().unwrap().text, "ok");
    }

    // Properties (proptest): the decoder against a plain reference that splits the whole
    // input at once, for any bytes (valid or not), any line limit and any cuts.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// What the decoder must give for `bytes`, written as plainly as possible.
        fn reference(bytes: &[u8], max: u32) -> Vec<Result<Line, LineError>> {
            let mut parts: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            // After a final newline comes no line.
            if parts.last().is_some_and(|p| p.is_empty()) {
                parts.pop();
            }
            let mut out = Vec::new();
            for (i, raw) in parts.into_iter().enumerate() {
                let line = i as u64 + 1;
                if raw.len() > max as usize {
                    out.push(Err(LineError::TooLong { line, max }));
                    continue;
                }
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                if raw.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                out.push(match std::str::from_utf8(raw) {
                    Ok(text) => Ok(Line {
                        number: line,
                        text: text.to_owned(),
                    }),
                    Err(_) => Err(LineError::InvalidUtf8 { line }),
                });
            }
            out
        }

        /// Input that is mostly lines of text (any Unicode, blank lines, CRLF) with some
        /// invalid UTF-8 and lone CRs mixed in.
        fn input() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                4 => any::<String>().prop_map(String::into_bytes),
                2 => Just(b"\n".to_vec()),
                1 => Just(b"\r\n".to_vec()),
                1 => Just(b"\r".to_vec()),
                1 => Just(b"  \t".to_vec()),
                1 => prop::collection::vec(0x80u8..=0xff, 1..4),
                1 => "[a-z]{20,90}".prop_map(String::into_bytes),
            ];
            prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #![proptest_config(crate::properties::config(512))]

            #[test]
            fn any_cuts_give_the_reference_lines(
                bytes in input(),
                max in prop_oneof![Just(DEFAULT_MAX_LINE), 1u32..64],
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            ) {
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut d = LineDecoder::new(max);
                let mut got = Vec::new();
                let mut start = 0;
                for cut in cuts.into_iter().chain([bytes.len()]) {
                    got.extend(d.push(&bytes[start..cut]));
                    start = cut;
                    // Memory stays bounded by the limit, whatever comes.
                    prop_assert!(d.buf.len() <= max as usize);
                }
                got.extend(d.finish());
                prop_assert_eq!(got, reference(&bytes, max));
            }
        }
    }
}
