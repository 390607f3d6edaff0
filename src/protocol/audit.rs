//! The audit log on the wire: export rows (NDJSON lines or CSV records) and the trailer.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One audit row, one NDJSON line: `{"id":1,"at":"…","action":"LOGIN","user":"eric","detail":{…}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Strictly ascending within an export; resume with `after=<last id received>`.
    pub id: i64,
    /// RFC 3339 UTC time of the action.
    pub at: String,
    /// `LOGIN`, `SIGNUP`, `EXPORT`, … (synthetic rows may hold others).
    pub action: String,
    /// The acting username (synthetic rows may hold any string).
    pub user: String,
    /// Action-specific JSON object.
    pub detail: serde_json::Value,
}

/// The last NDJSON line of an export asked for with `trailer=true`: it tells a complete
/// export from one that was cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportTrailer {
    /// Always `true`.
    pub done: bool,
    /// Rows sent in this response.
    pub rows: u64,
    /// Id of the last row sent (`after` when none was sent).
    pub last_id: i64,
}

/// One line of an NDJSON export, as a consumer reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExportLine {
    /// The trailer (it has `done`, which rows never have).
    Trailer(ExportTrailer),
    /// A row.
    Row(AuditRow),
}

/// One export line parsed without copying: a row whose strings borrow from the line (unless
/// they hold escapes) and whose detail stays raw JSON. For consumers that verify rows and pass
/// them on (the command-line consumer, the browser viewer, the import job): no allocation per
/// field, no `Value` tree per detail.
#[derive(Debug, Deserialize)]
pub struct AuditRowRef<'a> {
    pub id: i64,
    #[serde(borrow)]
    pub at: Cow<'a, str>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub user: Cow<'a, str>,
    #[serde(borrow)]
    pub detail: &'a RawValue,
}

/// A line of an NDJSON export, parsed without copying.
#[derive(Debug)]
pub enum ExportLineRef<'a> {
    Row(AuditRowRef<'a>),
    Trailer(ExportTrailer),
}

impl<'a> ExportLineRef<'a> {
    /// Parses one line (without its newline).
    pub fn parse(line: &'a str) -> Result<Self, serde_json::Error> {
        if line.starts_with("{\"done\"") {
            return serde_json::from_str(line).map(Self::Trailer);
        }
        serde_json::from_str(line).map(Self::Row)
    }
}

/// Every action the app itself writes to the audit log; the export's `action` filter accepts
/// these (comma-separated for several).
pub const AUDIT_ACTIONS: &[&str] = &[
    "SIGNUP",
    "LOGIN",
    "LOGIN_FAILED",
    "LOGOUT",
    "EXPORT",
    "IMPORT",
    "JOB_CREATE",
    "JOB_CANCEL",
    "NOTIFY",
    "ASSISTANT_ASK",
];

/// Rows read per database page: the documented range and default.
pub const BATCH_MIN: u32 = 1;
pub const BATCH_MAX: u32 = 10_000;
pub const BATCH_DEFAULT: u32 = 500;
/// Rows per flush: at most this many (the default is `batch`).
pub const FLUSH_EVERY_MAX: u32 = 10_000;
/// Pause after each flush, in milliseconds: at most this long.
pub const DELAY_MS_MAX: u32 = 5_000;

/// What an export sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// A header row `id,at,action,user,detail`, then one record per row (`text/csv`).
    Csv,
}

impl ExportFormat {
    /// The `format=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }

    /// The file extension for a download.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }
}

/// The query of `GET /api/audit/export` (and, for its filters, `GET /api/audit/count`), as
/// clients build it. The server validates every parameter and names the bad one in a 400.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportQuery {
    /// Rows with an id greater than this (resume with the last id received).
    pub after: i64,
    /// At most this many rows (all when `None`).
    pub limit: Option<u64>,
    /// Rows read per database page (`BATCH_MIN..=BATCH_MAX`; `None`: the default).
    pub batch: Option<u32>,
    /// Rows per flush (`None`: equal to `batch`).
    pub flush_every: Option<u32>,
    /// Pause after each flush, in milliseconds (0 when `None`).
    pub delay_ms: Option<u32>,
    /// Only these actions (comma-separated in the query), from [`AUDIT_ACTIONS`].
    pub action: Option<String>,
    /// Only rows of this user.
    pub user: Option<String>,
    /// Only rows at or after this time (RFC 3339, or a `YYYY-MM-DD` date, UTC).
    pub since: Option<String>,
    /// Only rows before this time (RFC 3339, or a `YYYY-MM-DD` date, UTC).
    pub until: Option<String>,
    /// NDJSON (default) or CSV.
    pub format: ExportFormat,
    /// Append `{"done":true,"rows":N,"lastId":X}` after the last row.
    pub trailer: bool,
    /// Ask for `Content-Disposition: attachment` (a download link).
    pub download: bool,
}

impl ExportQuery {
    /// The query of `GET /api/audit/count` for this export: the same rows, without what only
    /// shapes the stream (pause, trailer, download).
    pub fn for_count(&self) -> Self {
        Self {
            delay_ms: None,
            trailer: false,
            download: false,
            ..self.clone()
        }
    }

    /// The query string (without `?`), leaving defaults out.
    pub fn to_query_string(&self) -> String {
        self.to_pairs()
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The query's parameters as name and value, leaving defaults out (for a URL that has
    /// parameters of its own).
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs: Vec<(&'static str, String)> = Vec::new();
        if self.after != 0 {
            pairs.push(("after", self.after.to_string()));
        }
        let numbers = [
            ("limit", self.limit),
            ("batch", self.batch.map(u64::from)),
            ("flushEvery", self.flush_every.map(u64::from)),
            ("delayMs", self.delay_ms.map(u64::from)),
        ];
        for (name, value) in numbers {
            if let Some(v) = value {
                pairs.push((name, v.to_string()));
            }
        }
        let texts = [
            ("action", &self.action),
            ("user", &self.user),
            ("since", &self.since),
            ("until", &self.until),
        ];
        for (name, value) in texts {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                pairs.push((name, v.to_string()));
            }
        }
        if self.format != ExportFormat::Ndjson {
            pairs.push(("format", self.format.as_str().to_string()));
        }
        if self.trailer {
            pairs.push(("trailer", "true".into()));
        }
        if self.download {
            pairs.push(("download", "true".into()));
        }
        pairs
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /api/audit/count` → how many rows the same query would export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportCount {
    /// Rows matching the filters after `after`, capped by `limit`.
    pub count: u64,
    /// The highest id in the log when counted (0 when empty).
    pub max_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_trailers_parse_apart() {
        let row = r#"{"id":7,"at":"2026-01-01T00:00:00.000Z","action":"LOGIN","user":"eric","detail":{"a":1}}"#;
        match serde_json::from_str::<ExportLine>(row).unwrap() {
            ExportLine::Row(r) => assert_eq!((r.id, r.user.as_str()), (7, "eric")),
            other => panic!("{other:?}"),
        }
        let trailer = r#"{"done":true,"rows":3,"lastId":7}"#;
        assert_eq!(
            serde_json::from_str::<ExportLine>(trailer).unwrap(),
            ExportLine::Trailer(ExportTrailer {
                done: true,
                rows: 3,
                last_id: 7
            })
        );
    }

    #[test]
    fn lines_parse_without_copying() {
        let line = r#"{"id":9,"at":"2026-01-01T00:00:00.000Z","action":"LOGIN","user":"a\"b","detail":{"x":[1,2]}}"#;
        let ExportLineRef::Row(row) = ExportLineRef::parse(line).unwrap() else {
            panic!("a row")
        };
        assert_eq!((row.id, row.user.as_ref()), (9, "a\"b"));
        assert!(matches!(row.action, Cow::Borrowed("LOGIN")));
        assert_eq!(row.detail.get(), r#"{"x":[1,2]}"#);
        let trailer = ExportLineRef::parse(r#"{"done":true,"rows":1,"lastId":9}"#).unwrap();
        assert!(matches!(
            trailer,
            ExportLineRef::Trailer(ExportTrailer {
                rows: 1,
                last_id: 9,
                ..
            })
        ));
        assert!(ExportLineRef::parse(r#"{"id":"x"}"#).is_err());
        assert!(ExportLineRef::parse("not json").is_err());
    }

    #[test]
    fn queries_leave_defaults_out_and_encode_values() {
        assert_eq!(ExportQuery::default().to_query_string(), "");
        let q = ExportQuery {
            after: 42,
            limit: Some(10),
            batch: Some(100),
            action: Some("LOGIN,LOGOUT".into()),
            user: Some("zoë & co".into()),
            since: Some("2026-01-01T00:00:00+01:00".into()),
            format: ExportFormat::Csv,
            trailer: true,
            ..Default::default()
        };
        assert_eq!(
            q.to_query_string(),
            "after=42&limit=10&batch=100&action=LOGIN%2CLOGOUT&user=zo%C3%AB%20%26%20co\
             &since=2026-01-01T00%3A00%3A00%2B01%3A00&format=csv&trailer=true"
        );
    }
}
