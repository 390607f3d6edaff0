//! Reading an audit export as it arrives: NDJSON rows in ascending id order, then (when asked
//! for) the trailer `{"done":true,"rows":N,"lastId":X}`, from a resume point (`after`).
//!
//! [`ExportLines`] splits the bytes into lines across chunks ([`LineDecoder`]), judges each
//! line against what came before ([`Judged`]: a row that follows, a row out of order, the
//! trailer and whether it agrees, or not a row at all) and keeps the position to resume from.
//! What to do with each judgement is the caller's policy: `tidings export` refuses a broken
//! stream, the import job warns and skips. Both read through this one reader.
//!
//! Tests: `cargo test --features ssr protocol::export_read`.

use super::{
    audit::{AuditRowRef, ExportLineRef, ExportTrailer},
    ndjson::{Line, LineDecoder, LineError},
};

/// One line of an export stream, judged against the rows kept before it.
#[derive(Debug)]
pub enum Judged<'a> {
    /// A row whose id follows the last one kept.
    Row(AuditRowRef<'a>),
    /// A row whose id does not follow: `id` ≤ `last_id`, the last one kept.
    OutOfOrder { id: i64, last_id: i64 },
    /// The end of the export. `agrees`: its count is the rows kept from this stream, and so
    /// is its last id (when there were rows).
    Trailer {
        trailer: ExportTrailer,
        agrees: bool,
    },
    /// Neither a row nor a trailer.
    NotARow(serde_json::Error),
}

/// Reads one export stream from a resume point; see the module docs.
#[derive(Debug)]
pub struct ExportLines {
    decoder: LineDecoder,
    last_id: i64,
    kept: u64,
}

impl ExportLines {
    /// A reader of a stream that starts after row `after`, refusing lines over `max_line`
    /// bytes.
    pub fn new(after: i64, max_line: u32) -> Self {
        Self {
            decoder: LineDecoder::new(max_line),
            last_id: after,
            kept: 0,
        }
    }

    /// The complete lines `chunk` finishes (a line may span chunks).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Line, LineError>> {
        self.decoder.push(chunk)
    }

    /// A last line the stream ended in the middle of, if any.
    pub fn finish(&mut self) -> Option<Result<Line, LineError>> {
        self.decoder.finish()
    }

    /// What `text` (one line) is, given the rows kept so far.
    pub fn judge<'l>(&self, text: &'l str) -> Judged<'l> {
        match ExportLineRef::parse(text) {
            Ok(ExportLineRef::Row(row)) if row.id <= self.last_id => Judged::OutOfOrder {
                id: row.id,
                last_id: self.last_id,
            },
            Ok(ExportLineRef::Row(row)) => Judged::Row(row),
            Ok(ExportLineRef::Trailer(trailer)) => Judged::Trailer {
                agrees: trailer.rows == self.kept
                    && (self.kept == 0 || trailer.last_id == self.last_id),
                trailer,
            },
            Err(e) => Judged::NotARow(e),
        }
    }

    /// Keeps the row `id` (one [`judge`](Self::judge) called a `Row`): the next row must
    /// follow it, and a resume starts after it.
    pub fn keep(&mut self, id: i64) {
        self.last_id = id;
        self.kept += 1;
    }

    /// The last row kept (or the resume point): where the next request starts.
    pub fn last_id(&self) -> i64 {
        self.last_id
    }

    /// Rows kept from this stream.
    pub fn kept(&self) -> u64 {
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str =
        r#"{"id":ID,"at":"2026-01-01T00:00:00.000Z","action":"LOGIN","user":"u","detail":{}}"#;

    fn row(id: i64) -> String {
        ROW.replace("ID", &id.to_string())
    }

    #[test]
    fn rows_follow_the_resume_point_and_the_trailer_is_checked() {
        let mut lines = ExportLines::new(5, 1 << 20);
        let stream = format!(
            "{}\n{}\n{}\nnot json\n{{\"done\":true,\"rows\":2,\"lastId\":7}}\n",
            row(6),
            row(4),
            row(7)
        );
        // Split mid-line: the reader joins the pieces.
        let (a, b) = stream.as_bytes().split_at(30);
        let got: Vec<Line> = [a, b]
            .into_iter()
            .flat_map(|c| lines.push(c))
            .map(|l| l.unwrap())
            .collect();
        assert_eq!(got.len(), 5);
        let mut seen = Vec::new();
        for line in &got {
            match lines.judge(&line.text) {
                Judged::Row(r) => {
                    let id = r.id;
                    lines.keep(id);
                    seen.push(format!("row {id}"));
                }
                Judged::OutOfOrder { id, last_id } => seen.push(format!("{id} after {last_id}")),
                Judged::Trailer { agrees, .. } => seen.push(format!("trailer {agrees}")),
                Judged::NotARow(_) => seen.push("bad".into()),
            }
        }
        assert_eq!(seen, ["row 6", "4 after 6", "row 7", "bad", "trailer true"]);
        assert_eq!((lines.last_id(), lines.kept()), (7, 2));
        assert!(matches!(
            lines.judge(r#"{"done":true,"rows":3,"lastId":7}"#),
            Judged::Trailer { agrees: false, .. }
        ));
        assert!(lines.finish().is_none());
    }
}
