//! The server's own log, kept for the admin's log tail (`GET /api/logs/events`).
//!
//! [`RingLayer`] is a `tracing` layer beside the console one: every record that passes the
//! `RUST_LOG` filter is also turned into a [`LogRecord`] (level, target, message, fields, time)
//! with an id rising by one, and kept in a ring of the latest [`RING_RECORDS`] (each field cut
//! to [`VALUE_MAX_BYTES`] and each record to [`RECORD_MAX_BYTES`], so the ring's memory is
//! bounded whatever is logged). Streams read
//! the ring after the id they last sent ([`after`]) and wait for the next record on a `watch`
//! of the newest id ([`subscribe`]): a slow reader never holds up logging, and one that falls
//! more than a ring behind is told with a gap.
//!
//! Secrets never reach the ring: a field whose name says it holds one (password, token,
//! cookie, secret, authorization, session…) is replaced by `[redacted]`, and so is the value
//! of any `name=value` or `name: value` pair with such a name inside a message or a field
//! (a query string with `?token=`, a `Cookie:` header), and whatever follows `Bearer `.
//!
//! Dependencies' debug and trace records are not kept (only their info and above): hyper logs
//! each write at debug, and a log tail that logged its own writes would feed itself.
//!
//! Tests: `cargo test --features ssr server::observe::logs`; `tests/it/dashboard.rs` reads the stream.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    sync::{Arc, Mutex, OnceLock},
};

use tokio::sync::watch;
use tracing::{
    field::{Field, Visit},
    Event, Level, Subscriber,
};
use tracing_subscriber::{layer::Context, Layer};

use crate::protocol::metrics::{LogGap, LogLevel, LogRecord};
use crate::server::clock;

/// Records kept for replay.
pub const RING_RECORDS: usize = 2000;
/// Longest message or field value kept, in bytes (the rest is cut, marked with `…`).
pub const VALUE_MAX_BYTES: usize = 2000;
/// Bytes of message and fields one record keeps at most (so the ring holds at most about
/// `RING_RECORDS` × 8 KiB, whatever is logged).
pub const RECORD_MAX_BYTES: usize = 8 * 1024;
/// Fields kept per record at most.
const FIELDS_MAX: usize = 32;
/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Words that make a field name (or a `name=` inside text) a secret's.
const SECRET_WORDS: &[&str] = &[
    "api-key",
    "password",
    "passwd",
    "secret",
    "token",
    "cookie",
    "authorization",
    "session",
    "api_key",
    "apikey",
    "credential",
];

struct Ring {
    records: VecDeque<Arc<LogRecord>>,
    next_id: u64,
}

fn ring() -> &'static Mutex<Ring> {
    static RING: OnceLock<Mutex<Ring>> = OnceLock::new();
    RING.get_or_init(|| {
        Mutex::new(Ring {
            records: VecDeque::with_capacity(RING_RECORDS),
            next_id: 1,
        })
    })
}

fn newest() -> &'static watch::Sender<u64> {
    static NEWEST: OnceLock<watch::Sender<u64>> = OnceLock::new();
    NEWEST.get_or_init(|| watch::channel(0).0)
}

/// Keeps `record` (its id is given here) and wakes the streams.
fn push(mut record: LogRecord) {
    let id = {
        let mut ring = ring().lock().unwrap_or_else(|e| e.into_inner());
        record.id = ring.next_id;
        ring.next_id += 1;
        if ring.records.len() == RING_RECORDS {
            ring.records.pop_front();
        }
        ring.records.push_back(Arc::new(record));
        ring.next_id - 1
    };
    // Two threads logging at once may get here out of order: the newest id only rises.
    newest().send_if_modified(|newest| {
        let newer = id > *newest;
        if newer {
            *newest = id;
        }
        newer
    });
}

/// When this process's log began (ms since the epoch): ids restart at 1 with each process,
/// so a client that sees another epoch knows its ids mean nothing here.
pub fn epoch() -> i64 {
    static EPOCH: OnceLock<i64> = OnceLock::new();
    *EPOCH.get_or_init(clock::now_ms)
}

/// A receiver that changes whenever a record is kept (its value: the newest id).
pub fn subscribe() -> watch::Receiver<u64> {
    newest().subscribe()
}

/// The newest record's id (0 before the first).
pub fn newest_id() -> u64 {
    *newest().borrow()
}

/// What a stream sends next.
#[derive(Debug, Default)]
pub struct Tail {
    /// Set when records after the asked id are gone: the replay starts later.
    pub gap: Option<LogGap>,
    /// The kept records after the asked id at `min` or above, oldest first (at most `limit`,
    /// the newest ones when there are more).
    pub records: Vec<Arc<LogRecord>>,
    /// The id to continue after (the newest record looked at, sent or filtered out).
    pub last_id: u64,
}

/// The records after `after` (`None`: the latest `limit`) at level `min` or above. An id past
/// the newest comes from before a restart (ids start again at 1): it counts as `None`.
pub fn after(after: Option<u64>, min: LogLevel, limit: usize) -> Tail {
    let ring = ring().lock().unwrap_or_else(|e| e.into_inner());
    let last_id = ring.next_id - 1;
    let after = after.filter(|&a| a <= last_id);
    let first_kept = ring.records.front().map_or(ring.next_id, |r| r.id);
    let gap = match after {
        Some(a) if a + 1 < first_kept => Some(LogGap {
            after_id: a,
            first_available_id: first_kept,
        }),
        _ => None,
    };
    let from = after.unwrap_or(0);
    let mut records: Vec<Arc<LogRecord>> = ring
        .records
        .iter()
        .rev()
        .take_while(|r| r.id > from)
        .filter(|r| r.level >= min)
        .take(limit)
        .cloned()
        .collect();
    records.reverse();
    Tail {
        gap,
        records,
        last_id,
    }
}

/// Whether a field or parameter name is a secret's.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// `text` with the values of secret pairs replaced by [`REDACTED`]: `name=value` (also
/// URL-encoded, `name%3Dvalue`), `name: value`, `name:value` and JSON's `"name":"value"`, where
/// the name says it holds a secret; and whatever follows `Bearer ` or `Basic `. A quoted value
/// is replaced up to its closing quote (spaces and commas included); a bare one up to `&`, `;`,
/// a quote or white space.
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let is_name_byte = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.');
    // The end of a bare value starting at `v`.
    let bare_end = |v: usize| {
        let mut end = v;
        while end < bytes.len()
            && !matches!(
                bytes[end],
                b'&' | b';' | b'"' | b'\'' | b' ' | b'\n' | b'\r' | b'\t'
            )
        {
            end += 1;
        }
        end
    };
    // The end of the value starting at `v`: a quoted one runs to its closing quote (a
    // backslash escapes); a scheme word (`Bearer`, `Basic`) takes the credential after it.
    let value_end = |v: usize| -> (usize, usize) {
        if let Some(&quote) = bytes.get(v).filter(|&&q| q == b'"' || q == b'\'') {
            let mut end = v + 1;
            while end < bytes.len() && bytes[end] != quote {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            return (v + 1, end.min(bytes.len()));
        }
        let mut end = bare_end(v);
        let word = &bytes[v..end];
        if word.eq_ignore_ascii_case(b"bearer") || word.eq_ignore_ascii_case(b"basic") {
            let mut next = end;
            while bytes.get(next) == Some(&b' ') {
                next += 1;
            }
            if next > end && next < bytes.len() {
                end = bare_end(next);
            }
        }
        (v, end)
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let scheme = [&b"bearer "[..], &b"basic "[..]]
            .into_iter()
            .find(|w| bytes.len() > i + w.len() && bytes[i..i + w.len()].eq_ignore_ascii_case(w))
            .filter(|_| i == 0 || !is_name_byte(bytes[i - 1]));
        let separator = match bytes[i] {
            b'=' | b':' => Some(1),
            b'%' if bytes.len() >= i + 3 && bytes[i + 1..i + 3].eq_ignore_ascii_case(b"3d") => {
                Some(3)
            }
            _ => None,
        };
        let value_start = if let Some(w) = scheme {
            Some(i + w.len())
        } else if let Some(width) = separator {
            // The name before the separator: `name=`, `name = `, `Name: ` or `"name":`.
            let mut e = i;
            while e > 0 && bytes[e - 1] == b' ' {
                e -= 1;
            }
            let name = if e > 0 && bytes[e - 1] == b'"' {
                let close = e - 1;
                let open = text[..close].rfind('"').map_or(close, |q| q + 1);
                &text[open..close]
            } else {
                let mut s = e;
                while s > 0 && is_name_byte(bytes[s - 1]) {
                    s -= 1;
                }
                &text[s..e]
            };
            is_secret_name(name).then(|| {
                let mut v = i + width;
                while bytes.get(v) == Some(&b' ') {
                    v += 1;
                }
                v
            })
        } else {
            None
        };
        if let Some(v) = value_start {
            let (from, end) = value_end(v);
            if end > from {
                out.push_str(&text[copied..from]);
                out.push_str(REDACTED);
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// `text` cut to at most `max` bytes (on a character boundary), marked with `…` if cut.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Collects an event's message and fields.
struct Fields {
    message: String,
    fields: BTreeMap<String, String>,
    /// Bytes the record may still take.
    budget: usize,
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            message: String::new(),
            fields: BTreeMap::new(),
            budget: RECORD_MAX_BYTES,
        }
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        let name = field.name();
        if name != "message" && (self.fields.len() >= FIELDS_MAX || self.budget == 0) {
            return;
        }
        let value = if name != "message" && is_secret_name(name) {
            REDACTED.to_string()
        } else {
            // Cut first: redacting stays cheap, and a cut secret still has its name in front.
            redact(&bounded(value, VALUE_MAX_BYTES.min(self.budget)))
        };
        self.budget = self.budget.saturating_sub(value.len() + name.len());
        if name == "message" {
            self.message = value;
        } else {
            self.fields.insert(name.to_string(), value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.put(field, text);
    }
}

fn level_of(level: &Level) -> LogLevel {
    match *level {
        Level::TRACE => LogLevel::Trace,
        Level::DEBUG => LogLevel::Debug,
        Level::INFO => LogLevel::Info,
        Level::WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

/// The `tracing` layer that fills the ring (installed by `telemetry::init`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RingLayer;

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = level_of(meta.level());
        let target = meta.target();
        if level < LogLevel::Info && !target.starts_with("tidings") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        push(LogRecord {
            id: 0,
            level,
            target: target.to_string(),
            message: fields.message,
            fields: fields.fields,
            at: clock::rfc3339(clock::now_ms()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_text_are_redacted() {
        let cases = [
            (
                "GET /api/jobs/1/events?token=abc.def&x=1",
                "GET /api/jobs/1/events?token=[redacted]&x=1",
            ),
            ("password=hunter22 user=ann", "password=[redacted] user=ann"),
            (
                "Cookie: tidings_session=s3cr3t; other=1",
                "Cookie: [redacted]; other=1",
            ),
            ("authorization: Bearer xyz123", "authorization: [redacted]"),
            // The AI providers' key headers (OpenAI's is `authorization` above).
            ("x-api-key: sk-ant-api03-xyz", "x-api-key: [redacted]"),
            (
                "TIDINGS_AI_API_KEY=sk-proj-xyz",
                "TIDINGS_AI_API_KEY=[redacted]",
            ),
            (
                "sent Bearer xyz123 upstream",
                "sent Bearer [redacted] upstream",
            ),
            (
                r#"{"username":"ann","password":"hunter22"}"#,
                r#"{"username":"ann","password":"[redacted]"}"#,
            ),
            ("stream_token = tok9", "stream_token = [redacted]"),
            (
                r#"Login { username: "ann", password: "correct horse battery" }"#,
                r#"Login { username: "ann", password: "[redacted]" }"#,
            ),
            ("password=ab,cd next", "password=[redacted] next"),
            (r#"{"password":"a\"b c"}"#, r#"{"password":"[redacted]"}"#),
            (
                "/x?next=%2Fa%26token%3Dabc123&y=1",
                "/x?next=%2Fa%26token%3D[redacted]&y=1",
            ),
            ("x-api-key:abc123", "x-api-key:[redacted]"),
            (
                "Authorization: Basic dXNlcjpwdw==",
                "Authorization: [redacted]",
            ),
            ("at 12:30 the time=now", "at 12:30 the time=now"),
            ("room=general count=3", "room=general count=3"),
            ("a=b=c, é=ü", "a=b=c, é=ü"),
        ];
        for (text, want) in cases {
            assert_eq!(redact(text), want, "redacting {text:?}");
        }
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(VALUE_MAX_BYTES + 10);
        let cut = bounded(long, VALUE_MAX_BYTES);
        assert_eq!(cut.len(), VALUE_MAX_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("short".into(), 10), "short");
        // Never inside a character.
        assert_eq!(bounded("ééé".into(), 3), "é…");
    }

    /// Tests that fill the process-wide ring take turns (one floods it with 2000 records).
    static RING_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn the_ring_replays_after_an_id_filters_by_level_and_reports_gaps() {
        let _turn = RING_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        // The ring is process-wide (tests run in parallel): work relative to the newest id,
        // with a target of our own to pick our records out.
        let record = |level, message: &str| LogRecord {
            level,
            target: "tidings::ring_test".into(),
            message: message.into(),
            ..LogRecord::default()
        };
        let start = newest_id();
        push(record(LogLevel::Info, "one"));
        push(record(LogLevel::Warn, "two"));
        push(record(LogLevel::Error, "three"));
        let ours = |tail: &Tail| -> Vec<String> {
            tail.records
                .iter()
                .filter(|r| r.target == "tidings::ring_test" && r.id > start)
                .map(|r| r.message.clone())
                .collect()
        };
        let all = after(Some(start), LogLevel::Trace, RING_RECORDS);
        assert_eq!(ours(&all), ["one", "two", "three"]);
        assert!(all.gap.is_none());
        assert!(all.last_id >= start + 3);
        let warn = after(Some(start), LogLevel::Warn, RING_RECORDS);
        assert_eq!(ours(&warn), ["two", "three"]);
        // Ids rise by one.
        let ids: Vec<u64> = all
            .records
            .iter()
            .filter(|r| r.target == "tidings::ring_test" && r.id > start)
            .map(|r| r.id)
            .collect();
        assert_eq!(ids.windows(2).filter(|w| w[1] != w[0] + 1).count(), 0);

        // Past the ring: a gap, then what is kept.
        for i in 0..RING_RECORDS {
            push(record(LogLevel::Debug, &format!("filler {i}")));
        }
        let late = after(Some(start), LogLevel::Error, 10);
        let gap = late.gap.expect("a gap");
        assert_eq!(gap.after_id, start);
        assert!(gap.first_available_id > start + 3);
        assert!(late.records.len() <= 10);
        assert!(ring().lock().unwrap().records.len() <= RING_RECORDS);
    }

    #[test]
    fn events_become_records_with_fields_and_no_secrets() {
        let _turn = RING_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(RingLayer);
        let start = newest_id();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                target: "tidings::event_test",
                room = "general",
                password = "hunter22",
                uri = "/api/rooms/general/events?token=abc",
                "joined with session=xyz"
            );
            tracing::debug!(target: "hyper::proto", "flushed 12 bytes");
        });
        let tail = after(Some(start), LogLevel::Trace, RING_RECORDS);
        let mine: Vec<_> = tail
            .records
            .iter()
            .filter(|r| {
                r.target.starts_with("tidings::event_test") || r.target.starts_with("hyper")
            })
            .collect();
        assert_eq!(mine.len(), 1, "dependencies' debug records are not kept");
        let r = mine[0];
        assert_eq!(r.level, LogLevel::Warn);
        assert_eq!(r.message, "joined with session=[redacted]");
        assert_eq!(r.fields["room"], "general");
        assert_eq!(r.fields["password"], REDACTED);
        assert_eq!(
            r.fields["uri"],
            "/api/rooms/general/events?token=[redacted]"
        );
        assert!(!r.at.is_empty());
        let json = serde_json::to_string(r).unwrap();
        assert!(!json.contains("hunter22") && !json.contains("abc") && !json.contains("xyz"));
    }
}
