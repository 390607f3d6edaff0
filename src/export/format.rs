//! Audit rows as NDJSON lines or CSV records, written straight into an output buffer.
//!
//! [`RowWriter`] is the export's hot path: the storage reader hands it borrowed columns and it
//! appends bytes, with no intermediate `AuditRow` or `serde_json::Value` per row. Strings are
//! JSON-escaped only when they hold a character that needs it; the detail column is already
//! JSON text (the app stores `serde_json::Value::to_string()`), so it is copied as is, and
//! anything that is not a JSON object is written as a JSON string so a line stays valid.
//! Times are formatted once per second and the milliseconds appended. Rows are grouped into
//! chunks of `flush_every` rows, each chunk one write on the wire.
//!
//! A CSV record is written by `protocol::csv`, which the command-line consumer (writing CSV
//! from a verified NDJSON stream) uses too. Tests: `cargo test --features ssr export::format` checks every
//! line against serde_json and every record against the CSV rules.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::{
    export::store::AuditSink,
    protocol::{
        csv::{csv_record, CSV_HEADER},
        ExportFormat,
    },
};

/// Formats rows and cuts them into chunks of `flush_every` rows.
pub struct RowWriter {
    format: ExportFormat,
    flush_every: u32,
    /// The chunk being filled.
    buf: Vec<u8>,
    /// Rows in `buf`.
    rows_in_buf: u32,
    /// Full chunks waiting to be sent (at most one page's worth), with their row counts.
    ready: VecDeque<(Bytes, u32)>,
    /// `YYYY-MM-DDT` of the last day formatted, and that day (days since the epoch).
    day: (i64, [u8; 11]),
}

impl RowWriter {
    /// A writer of `format` cutting chunks every `flush_every` rows (at least 1).
    pub fn new(format: ExportFormat, flush_every: u32) -> Self {
        let flush_every = flush_every.max(1);
        Self {
            format,
            flush_every,
            buf: Vec::with_capacity(chunk_capacity(flush_every)),
            rows_in_buf: 0,
            ready: VecDeque::new(),
            day: (i64::MIN, [b'0'; 11]),
        }
    }

    /// Starts a CSV export with its header row (nothing for NDJSON).
    pub fn header(&mut self) {
        if self.format == ExportFormat::Csv {
            self.buf.extend_from_slice(CSV_HEADER);
        }
    }

    /// Appends raw bytes (the trailer line) to the current chunk.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next full chunk and its row count, if one is ready.
    pub fn next_chunk(&mut self) -> Option<(Bytes, u32)> {
        self.ready.pop_front()
    }

    /// Everything not yet taken: the ready chunks, then what is in the buffer.
    pub fn drain_all(&mut self) -> Vec<(Bytes, u32)> {
        self.cut();
        self.ready.drain(..).collect()
    }

    /// Moves the buffer into `ready` if it holds anything.
    fn cut(&mut self) {
        if !self.buf.is_empty() {
            let next = Vec::with_capacity(chunk_capacity(self.flush_every));
            let bytes = Bytes::from(std::mem::replace(&mut self.buf, next));
            self.ready.push_back((bytes, self.rows_in_buf));
            self.rows_in_buf = 0;
        }
    }

    /// `2026-11-23T16:21:59.123Z` for `ms`: the date is formatted once per day (by chrono),
    /// the time of day by arithmetic.
    fn write_time(&mut self, ms: i64) {
        let (day, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
        if day != self.day.0 {
            let text = crate::server::clock::rfc3339(day * 86_400_000);
            let mut head = [b'0'; 11];
            head.copy_from_slice(&text.as_bytes()[..11]);
            self.day = (day, head);
        }
        let (secs, milli) = (ms_of_day / 1000, ms_of_day % 1000);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let digit = |n: i64| b'0' + n as u8;
        self.buf.extend_from_slice(&self.day.1);
        self.buf.extend_from_slice(&[
            digit(h / 10),
            digit(h % 10),
            b':',
            digit(m / 10),
            digit(m % 10),
            b':',
            digit(s / 10),
            digit(s % 10),
            b'.',
            digit(milli / 100),
            digit(milli / 10 % 10),
            digit(milli % 10),
            b'Z',
        ]);
    }

    fn write_ndjson(&mut self, id: i64, at_ms: i64, action: &[u8], user: &[u8], detail: &[u8]) {
        let mut ids = itoa::Buffer::new();
        self.buf.extend_from_slice(b"{\"id\":");
        self.buf.extend_from_slice(ids.format(id).as_bytes());
        self.buf.extend_from_slice(b",\"at\":\"");
        self.write_time(at_ms);
        self.buf.extend_from_slice(b"\",\"action\":");
        json_string(&mut self.buf, action);
        self.buf.extend_from_slice(b",\"user\":");
        json_string(&mut self.buf, user);
        self.buf.extend_from_slice(b",\"detail\":");
        if detail.starts_with(b"{") && detail.ends_with(b"}") && plain_ascii(detail) {
            // Stored detail is compact JSON written by serde_json: copied as is.
            self.buf.extend_from_slice(detail);
        } else {
            let text = String::from_utf8_lossy(detail);
            match serde_json::from_str::<serde_json::Value>(&text) {
                // Pretty-printed, spaced or non-ASCII JSON: written compact, on one line.
                Ok(value) => {
                    serde_json::to_writer(&mut self.buf, &value).expect("writing to a Vec")
                }
                // Not JSON at all: kept as a JSON string so the line stays valid.
                Err(_) => json_string(&mut self.buf, text.as_bytes()),
            }
        }
        self.buf.extend_from_slice(b"}\n");
    }

    fn write_csv(&mut self, id: i64, at_ms: i64, action: &[u8], user: &[u8], detail: &[u8]) {
        let start = self.buf.len();
        self.write_time(at_ms);
        let at: [u8; 24] = self.buf[start..].try_into().expect("24-byte time");
        self.buf.truncate(start);
        let at = std::str::from_utf8(&at).expect("ASCII");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (action, user, detail) = (text(action), text(user), text(detail));
        csv_record(&mut self.buf, id, at, &action, &user, &detail);
    }
}

impl AuditSink for RowWriter {
    fn row(&mut self, id: i64, at_ms: i64, action: &[u8], user: &[u8], detail: &[u8]) {
        match self.format {
            ExportFormat::Ndjson => self.write_ndjson(id, at_ms, action, user, detail),
            ExportFormat::Csv => self.write_csv(id, at_ms, action, user, detail),
        }
        self.rows_in_buf += 1;
        if self.rows_in_buf >= self.flush_every {
            self.cut();
        }
    }
}

/// Room for a chunk of `rows` typical rows (capped: a huge `flush_every` grows as needed).
fn chunk_capacity(rows: u32) -> usize {
    (rows as usize * 256).min(1 << 20)
}

/// Whether every byte is printable ASCII or DEL (0x20..=0x7f), so the text is valid UTF-8
/// with no control character. Each 64-byte block is checked without an early exit, which the
/// compiler turns into vector instructions: this check runs over every byte exported.
fn plain_ascii(s: &[u8]) -> bool {
    s.chunks(64).all(|block| {
        block
            .iter()
            .fold(true, |ok, &b| ok & (b.wrapping_sub(0x20) < 0x60))
    })
}

/// Whether `s` can go between JSON quotes as it is: [`plain_ascii`] with no quote or
/// backslash, checked in the same one pass.
fn plain_json_text(s: &[u8]) -> bool {
    s.chunks(64).all(|block| {
        block.iter().fold(true, |ok, &b| {
            ok & (b.wrapping_sub(0x20) < 0x60) & (b != b'"') & (b != b'\\')
        })
    })
}

/// Appends `s` (UTF-8; invalid bytes become U+FFFD) as a JSON string.
fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    if plain_json_text(s) {
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
    } else {
        let text = String::from_utf8_lossy(s);
        serde_json::to_writer(out, text.as_ref()).expect("writing to a Vec");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AuditRow, ExportLine};

    fn all_bytes(w: &mut RowWriter) -> Vec<u8> {
        w.drain_all()
            .into_iter()
            .flat_map(|(b, _)| b.to_vec())
            .collect()
    }

    #[test]
    fn ndjson_lines_are_what_serde_would_write() {
        let mut w = RowWriter::new(ExportFormat::Ndjson, 100);
        let cases = [
            (
                1,
                1_700_000_000_123,
                "LOGIN",
                "eric",
                r#"{"ip":"10.0.0.1"}"#,
            ),
            (
                2,
                1_700_000_000_999,
                "SEED",
                "quote\"back\\slash\nline",
                "{}",
            ),
            (3, 1_700_000_001_000, "ODD", "zoë 日本 🦀", "not json"),
            (4, -1, "PRETTY", "u", "{\n  \"a\": [1, 2]\n}"),
            (5, 0, "EMPTY", "", ""),
        ];
        for (id, at, action, user, detail) in cases {
            w.row(
                id,
                at,
                action.as_bytes(),
                user.as_bytes(),
                detail.as_bytes(),
            );
        }
        let text = String::from_utf8(all_bytes(&mut w)).unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), cases.len());
        for (line, (id, at, action, user, detail)) in lines.iter().zip(cases) {
            let ExportLine::Row(row) = serde_json::from_str::<ExportLine>(line).unwrap() else {
                panic!("not a row: {line}");
            };
            let want_detail = serde_json::from_str::<serde_json::Value>(detail)
                .unwrap_or_else(|_| serde_json::Value::String(detail.into()));
            assert_eq!(
                row,
                AuditRow {
                    id,
                    at: crate::server::clock::rfc3339(at),
                    action: action.into(),
                    user: user.into(),
                    detail: want_detail,
                }
            );
        }
        assert!(lines[0].starts_with(r#"{"id":1,"at":"2023-11-14T22:13:20.123Z","action""#));
        assert!(lines[3].contains(r#""at":"1969-12-31T23:59:59.999Z""#));
    }

    #[test]
    fn plain_ascii_finds_a_control_or_non_ascii_byte_anywhere() {
        let base = vec![b'a'; 200];
        assert!(plain_ascii(&base));
        assert!(plain_ascii(b""));
        assert!(plain_ascii(b" ~\x7f"));
        for at in [0, 1, 63, 64, 65, 127, 128, 199] {
            for bad in [0x00, 0x1f, 0x0a, 0x80, 0xc3, 0xff] {
                let mut text = base.clone();
                text[at] = bad;
                assert!(!plain_ascii(&text), "byte {bad:#x} at {at}");
            }
        }
    }

    #[test]
    fn non_ascii_and_invalid_bytes_still_make_valid_lines() {
        let mut w = RowWriter::new(ExportFormat::Ndjson, 100);
        w.row(1, 0, b"LOGIN", b"a\xffb", "{\"n\":\"zo\u{eb}\"}".as_bytes());
        w.row(2, 0, b"LOGIN", b"u", b"{\"tab\":\"a\tb\"}");
        w.row(3, 0, b"LOGIN", b"u", b"{\xff}");
        let text = String::from_utf8(all_bytes(&mut w)).unwrap();
        let rows: Vec<AuditRow> = text
            .lines()
            .map(
                |line| match serde_json::from_str::<ExportLine>(line).unwrap() {
                    ExportLine::Row(row) => row,
                    other => panic!("not a row: {other:?}"),
                },
            )
            .collect();
        assert_eq!(rows[0].user, "a\u{fffd}b");
        assert_eq!(rows[0].detail, serde_json::json!({"n": "zo\u{eb}"}));
        // A raw tab inside a JSON string is not JSON: kept as text, escaped.
        assert_eq!(rows[1].detail, serde_json::json!("{\"tab\":\"a\tb\"}"));
        assert_eq!(rows[2].detail, serde_json::json!("{\u{fffd}}"));
    }

    #[test]
    fn times_match_chrono_across_days_and_before_the_epoch() {
        let mut w = RowWriter::new(ExportFormat::Csv, 1_000_000);
        let times: Vec<i64> = (-3..3)
            .flat_map(|d| [0, 1, 999, 59_999, 3_599_999, 86_399_999].map(|t| d * 86_400_000 + t))
            .chain([1_700_000_000_123, 253_402_300_799_999])
            .collect();
        for &t in &times {
            let start = w.buf.len();
            w.write_time(t);
            let text = std::str::from_utf8(&w.buf[start..]).unwrap();
            assert_eq!(text, crate::server::clock::rfc3339(t), "{t}");
        }
    }

    #[test]
    fn csv_records_quote_what_needs_quoting() {
        let mut w = RowWriter::new(ExportFormat::Csv, 100);
        w.header();
        w.row(7, 1_700_000_000_000, b"LOGIN", b"a,b", br#"{"k":"v"}"#);
        w.row(8, 1_700_000_000_000, b"LOGIN", b"plain", b"line\nbreak");
        let text = String::from_utf8(all_bytes(&mut w)).unwrap();
        assert_eq!(
            text,
            "id,at,action,user,detail\r\n\
             7,2023-11-14T22:13:20.000Z,LOGIN,\"a,b\",\"{\"\"k\"\":\"\"v\"\"}\"\r\n\
             8,2023-11-14T22:13:20.000Z,LOGIN,plain,\"line\nbreak\"\r\n"
        );
    }

    #[test]
    fn csv_fields_that_a_spreadsheet_would_run_are_made_text() {
        let mut w = RowWriter::new(ExportFormat::Csv, 100);
        w.row(1, 0, b"=HYPERLINK(\"http://x\")", b"+1", b"-2");
        w.row(2, 0, b"@SUM(A1)", b"\tx", b"\rcmd,y");
        w.row(3, 0, b"LOGIN", b"a=b", br#"{"k":"=v"}"#);
        let text = String::from_utf8(all_bytes(&mut w)).unwrap();
        assert_eq!(
            text,
            "1,1970-01-01T00:00:00.000Z,\"'=HYPERLINK(\"\"http://x\"\")\",'+1,'-2\r\n\
             2,1970-01-01T00:00:00.000Z,'@SUM(A1),'\tx,\"'\rcmd,y\"\r\n\
             3,1970-01-01T00:00:00.000Z,LOGIN,a=b,\"{\"\"k\"\":\"\"=v\"\"}\"\r\n"
        );
    }

    #[test]
    fn chunks_hold_flush_every_rows() {
        let mut w = RowWriter::new(ExportFormat::Ndjson, 3);
        for id in 1..=7 {
            w.row(id, 0, b"A", b"u", b"{}");
        }
        let (first, rows) = w.next_chunk().unwrap();
        assert_eq!(first.iter().filter(|b| **b == b'\n').count(), 3);
        assert_eq!(rows, 3);
        assert!(w.next_chunk().is_some());
        assert!(w.next_chunk().is_none(), "the 7th row waits for more");
        let rest = w.drain_all();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].0.starts_with(b"{\"id\":7,"));
        assert_eq!(rest[0].1, 1);
        assert!(w.drain_all().is_empty());
    }
}
