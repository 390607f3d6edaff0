//! The export viewer's browser half: `fetch` with a streamed body, decoded line by line.
//!
//! `fetch` hands the body over as a `ReadableStream` of byte chunks that split lines anywhere
//! (even inside a UTF-8 character); the shared [`LineDecoder`] turns them into whole lines, and
//! each line is parsed without copying ([`ExportLineRef`]). The page learns about each chunk
//! once, not about each row, so a million rows cost a few thousand signal updates. Stopping
//! aborts the fetch through an `AbortController`; the server sees the disconnect and stops.
//!
//! Compiled everywhere so the view needs no `cfg`; only ever called in the browser.

use gloo_net::http::Request;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, ReadableStreamDefaultReader};

use crate::{
    fetch::{refusal, UNREACHABLE},
    protocol::{
        ndjson::{Line, LineDecoder},
        ExportCount, ExportLineRef, ExportQuery, ExportTrailer,
    },
};

/// Rows the page keeps for display (the latest ones).
pub const WINDOW: usize = 100;

/// A row as the table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShownRow {
    pub id: i64,
    pub at: String,
    pub action: String,
    pub user: String,
    /// The detail JSON, cut to a readable length.
    pub detail: String,
}

/// What one chunk brought.
#[derive(Debug, Default)]
pub struct ChunkReport {
    /// Rows in this chunk.
    pub rows: u64,
    /// Bytes in this chunk.
    pub bytes: u64,
    /// The chunk's last id (unchanged when it had no row).
    pub last_id: i64,
    /// Its latest rows, at most [`WINDOW`], oldest first.
    pub shown: Vec<ShownRow>,
}

/// How a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The trailer arrived and agreed with what came.
    Complete(ExportTrailer),
    /// Stopped by the page (the fetch was aborted).
    Aborted,
    /// The connection dropped or the stream was cut: resume from the last id.
    Dropped(String),
    /// The server refused, or sent something wrong: the sentence to show.
    Failed(String),
}

/// `GET /api/audit/count` for the same query.
pub async fn count(query: &ExportQuery) -> Result<ExportCount, String> {
    let response = Request::get(&format!(
        "/api/audit/count?{}",
        query.for_count().to_query_string()
    ))
    .send()
    .await
    .map_err(|_| UNREACHABLE.to_string())?;
    crate::fetch::parsed(response).await
}

/// Table rows for the lines at `indexes` (already checked to be rows).
fn shown_rows(lines: &[Line], indexes: &std::collections::VecDeque<usize>) -> Vec<ShownRow> {
    const MAX_DETAIL: usize = 160;
    indexes
        .iter()
        .filter_map(|&i| match ExportLineRef::parse(&lines[i].text) {
            Ok(ExportLineRef::Row(row)) => {
                let detail = row.detail.get();
                let detail = match detail.char_indices().nth(MAX_DETAIL) {
                    Some((cut, _)) => format!("{}…", &detail[..cut]),
                    None => detail.to_string(),
                };
                Some(ShownRow {
                    id: row.id,
                    at: row.at.into_owned(),
                    action: row.action.into_owned(),
                    user: row.user.into_owned(),
                    detail,
                })
            }
            _ => None,
        })
        .collect()
}

/// Streams `query` (NDJSON with a trailer), calling `on_chunk` once per chunk. Rows must
/// have ids above `last_id` and ascend; anything else fails the stream.
pub async fn stream(
    query: &ExportQuery,
    signal: &AbortSignal,
    mut last_id: i64,
    mut on_chunk: impl FnMut(ChunkReport),
) -> StreamEnd {
    let query = ExportQuery {
        trailer: true,
        download: false,
        format: Default::default(),
        ..query.clone()
    };
    let url = format!("/api/audit/export?{}", query.to_query_string());
    let response = match Request::get(&url).abort_signal(Some(signal)).send().await {
        Ok(r) => r,
        Err(_) if signal.aborted() => return StreamEnd::Aborted,
        Err(_) => return StreamEnd::Dropped(UNREACHABLE.into()),
    };
    if !response.ok() {
        let status = response.status();
        let why = refusal(response).await;
        return if status >= 500 {
            StreamEnd::Dropped(why)
        } else {
            StreamEnd::Failed(why)
        };
    }
    let Some(body) = response.body() else {
        return StreamEnd::Failed("The answer had no body.".into());
    };
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut decoder = LineDecoder::default();
    let mut rows_here = 0u64;
    loop {
        let result = match JsFuture::from(reader.read()).await {
            Ok(r) => r,
            Err(_) if signal.aborted() => return StreamEnd::Aborted,
            Err(_) => return StreamEnd::Dropped("The connection dropped.".into()),
        };
        let done = js_sys::Reflect::get(&result, &"done".into())
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        if done {
            return StreamEnd::Dropped("The stream ended before the export was complete.".into());
        }
        let bytes = js_sys::Reflect::get(&result, &"value".into())
            .map(|v| js_sys::Uint8Array::new(&v).to_vec())
            .unwrap_or_default();
        let mut report = ChunkReport {
            bytes: bytes.len() as u64,
            last_id,
            ..Default::default()
        };
        let mut lines = Vec::new();
        for line in decoder.push(&bytes) {
            match line {
                Ok(line) => lines.push(line),
                Err(e) => return StreamEnd::Failed(format!("The export is corrupt: {e}.")),
            }
        }
        // Indexes of the chunk's latest rows: only those become table rows.
        let mut latest = std::collections::VecDeque::with_capacity(WINDOW);
        for (index, line) in lines.iter().enumerate() {
            match ExportLineRef::parse(&line.text) {
                Ok(ExportLineRef::Row(row)) => {
                    if row.id <= last_id {
                        return StreamEnd::Failed(format!(
                            "The export is corrupt: id {} came after id {last_id}.",
                            row.id
                        ));
                    }
                    last_id = row.id;
                    rows_here += 1;
                    report.rows += 1;
                    report.last_id = row.id;
                    if latest.len() == WINDOW {
                        latest.pop_front();
                    }
                    latest.push_back(index);
                }
                Ok(ExportLineRef::Trailer(t)) => {
                    report.shown = shown_rows(&lines, &latest);
                    on_chunk(report);
                    if t.rows != rows_here {
                        return StreamEnd::Failed(format!(
                            "The server says it sent {} rows, but {rows_here} arrived.",
                            t.rows
                        ));
                    }
                    let _ = reader.cancel();
                    return StreamEnd::Complete(t);
                }
                Err(e) => {
                    return StreamEnd::Failed(format!(
                        "The export is corrupt: line {} is not a row ({e}).",
                        line.number
                    ))
                }
            }
        }
        report.shown = shown_rows(&lines, &latest);
        on_chunk(report);
    }
}
