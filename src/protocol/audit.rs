//! The audit log on the wire: export rows (NDJSON lines or CSV records) and the trailer.

use serde::{Deserialize, Serialize};

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
}
