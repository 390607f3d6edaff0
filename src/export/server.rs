//! `GET /api/audit/export` and `GET /api/audit/count`: the audit log, streamed.
//!
//! The handler checks who asks (admin, by cookie or stream token) and every parameter before
//! a single row goes out, so mistakes are a 400 JSON naming the parameter. It then answers at
//! once with the headers and a body fed by a producer through a channel of [`CHANNEL_CHUNKS`]
//! chunks. The producer has a blocking-pool thread to itself for the whole export (tracked by
//! the shutdown signal, so a stopping server waits for its audit row):
//!
//! - the producer reads one keyset page (`batch` rows), formats it into chunks of
//!   `flushEvery` rows, and sends them; the first chunk is on the wire before the second page
//!   is read;
//! - on an SQLite file, helpers on their own connections read and format pages beside it
//!   (`TIDINGS_EXPORT_THREADS`, default 2; pages are then spans of `batch` ids, see
//!   [`Producer::run_parallel`]) and it sends them in order: the same bytes, about twice as
//!   fast on two cores (`scripts/bench-export.sh`);
//! - an unfiltered NDJSON export on an SQLite file sends closed stretches of the log that an
//!   earlier export sent from a file instead (the export cache, `export::cache`): the same
//!   bytes, at the speed of a file server;
//! - a client that reads slowly fills the channel and the producer waits: the server holds at
//!   most a few chunks per export, whatever the row count;
//! - a client that goes away closes the channel; the producer sees it at its next send or
//!   pause and stops, so at most one more page is read;
//! - at shutdown, or on a database error, the body ends with an error, so the client sees a
//!   cut transfer (never a clean end) and resumes with `after=<last id>`;
//! - with `trailer=true` a complete NDJSON export ends with `{"done":true,"rows":N,"lastId":X}`.
//!
//! Each export is written to the audit log when it ends (action `EXPORT`) with its outcome,
//! the rows it sent and the rows it read. At most [`MAX_CONCURRENT_EXPORTS`] run at once.
//!
//! Tests: `tests/it/export.rs` (every parameter and error, headers, disconnect, resume).
//!
//! Length: over 600 lines, a third of them the parameters' checks (each with its own
//! sentence) and their tests; they stay beside the one route they describe.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{rejection::QueryRejection, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Extension, Json, Router,
};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use super::format::RowWriter;
use crate::{
    export::{
        cache::{segment_end, segment_of, segment_start, Builder, ExportCache, Segment},
        settings::{ExportConfig, ExportReader},
        store::{AuditFilter, AuditPages, Page},
    },
    protocol::{
        audit::{
            AUDIT_ACTIONS, BATCH_DEFAULT, BATCH_MAX, BATCH_MIN, DELAY_MS_MAX, FLUSH_EVERY_MAX,
        },
        ExportCount, ExportFormat, ExportTrailer,
    },
    server::{
        access::identity::{CurrentUser, StreamUser},
        clock,
        error::number_param,
        observe::metrics,
        ApiError, AppState, Shutdown,
    },
};

/// Chunks queued between the producer and the response body.
pub const CHANNEL_CHUNKS: usize = 2;
/// Exports running at once; one more gets a 503.
pub const MAX_CONCURRENT_EXPORTS: usize = 16;
/// Longest `user` filter accepted.
const MAX_USER_FILTER: usize = 64;

/// The export's routes.
pub fn router(exports: Exports) -> Router<AppState> {
    Router::new()
        .route("/api/audit/export", get(export))
        .route("/api/audit/count", get(count))
        .layer(Extension(exports))
}

/// What the export's routes share: how they read SQLite, the permits for running exports,
/// and the export cache (one of each per process). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Exports {
    config: ExportConfig,
    slots: Arc<Semaphore>,
    /// On an SQLite file, unless `TIDINGS_EXPORT_CACHE_MB=0`.
    cache: Option<Arc<ExportCache>>,
}

/// The export's shared part for `config` on `store`: once per process, at start-up.
pub fn start(config: ExportConfig, store: &crate::server::storage::Store) -> Exports {
    let cache = store.sqlite_file().and_then(|file| {
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        ExportCache::new(dir, config.cache_mb)
    });
    Exports {
        config,
        slots: Arc::new(Semaphore::new(MAX_CONCURRENT_EXPORTS)),
        cache,
    }
}

/// A validated export request.
#[derive(Clone, Debug, PartialEq)]
struct ExportParams {
    after: i64,
    limit: Option<u64>,
    batch: u32,
    flush_every: u32,
    delay: Duration,
    /// Filters (its `max_id` is set when the export starts).
    filter: AuditFilter,
    format: ExportFormat,
    trailer: bool,
    download: bool,
}

/// A time filter: RFC 3339 (`2026-11-23T10:00:00Z`, any offset) or a UTC date (`2026-11-23`).
fn time_ms(param: &str, value: &str) -> Result<i64, ApiError> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(ApiError::bad_parameter(
        param,
        format!("must be an RFC 3339 time such as 2026-11-23T10:00:00Z or a date such as 2026-11-23, not {value:?}."),
    ))
}

fn boolean(param: &str, value: &str) -> Result<bool, ApiError> {
    match value.trim() {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ApiError::bad_parameter(
            param,
            format!("must be true or false, not {other:?}."),
        )),
    }
}

/// For the fuzz target `export_query` (`fuzz/`): reads a query string as the route does (axum's
/// `Query`) and checks that what the validation accepts is within the documented bounds;
/// panics when it is not.
#[doc(hidden)]
pub fn fuzz_query(query: &str, accept: Option<&str>) {
    let Ok(uri) = format!("/api/audit/export?{query}").parse::<axum::http::Uri>() else {
        return;
    };
    let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(&uri) else {
        return;
    };
    if let Ok(p) = ExportParams::parse(&pairs, accept) {
        assert!((BATCH_MIN..=BATCH_MAX).contains(&p.batch), "{p:?}");
        assert!(p.flush_every >= 1, "{p:?}");
        assert!(
            p.delay <= Duration::from_millis(DELAY_MS_MAX.into()),
            "{p:?}"
        );
    }
}

impl ExportParams {
    /// Validates the query pairs; `accept` is the request's `Accept` header.
    fn parse(pairs: &[(String, String)], accept: Option<&str>) -> Result<Self, ApiError> {
        let mut seen: Vec<&str> = Vec::new();
        let mut p = Self {
            after: 0,
            limit: None,
            batch: BATCH_DEFAULT,
            flush_every: 0,
            delay: Duration::ZERO,
            filter: AuditFilter::default(),
            format: match accept {
                Some(a) if a.contains("text/csv") => ExportFormat::Csv,
                _ => ExportFormat::Ndjson,
            },
            trailer: false,
            download: false,
        };
        let mut flush_every = None;
        for (name, value) in pairs {
            if seen.contains(&name.as_str()) {
                return Err(ApiError::bad_parameter(name, "is given more than once."));
            }
            seen.push(name);
            match name.as_str() {
                "after" => p.after = number_param(name, value, 0..=i64::MAX)?,
                "limit" => p.limit = Some(number_param(name, value, 0..=u64::MAX)?),
                "batch" => p.batch = number_param(name, value, BATCH_MIN..=BATCH_MAX)?,
                "flushEvery" => flush_every = Some(number_param(name, value, 1..=FLUSH_EVERY_MAX)?),
                "delayMs" => {
                    p.delay = Duration::from_millis(number_param(name, value, 0..=DELAY_MS_MAX)?.into())
                }
                "action" => {
                    for action in value.split(',').map(str::trim) {
                        if !AUDIT_ACTIONS.contains(&action) {
                            return Err(ApiError::bad_parameter(
                                name,
                                format!(
                                    "must be one or more of {} (comma-separated), not {action:?}.",
                                    AUDIT_ACTIONS.join(", ")
                                ),
                            ));
                        }
                        if !p.filter.actions.iter().any(|a| a == action) {
                            p.filter.actions.push(action.to_string());
                        }
                    }
                }
                "user" => {
                    let chars = value.chars().count();
                    if chars == 0 || chars > MAX_USER_FILTER || value.chars().any(char::is_control)
                    {
                        return Err(ApiError::bad_parameter(
                            name,
                            format!("must be 1 to {MAX_USER_FILTER} characters without control characters."),
                        ));
                    }
                    p.filter.user = Some(value.clone());
                }
                "since" => p.filter.since_ms = Some(time_ms(name, value)?),
                "until" => p.filter.until_ms = Some(time_ms(name, value)?),
                "format" => {
                    p.format = match value.trim() {
                        "ndjson" => ExportFormat::Ndjson,
                        "csv" => ExportFormat::Csv,
                        other => {
                            return Err(ApiError::bad_parameter(name, format!("must be ndjson or csv, not {other:?}.")))
                        }
                    }
                }
                "trailer" => p.trailer = boolean(name, value)?,
                "download" => p.download = boolean(name, value)?,
                // The stream token, read by `StreamUser`.
                "token" => {}
                other => {
                    return Err(ApiError::bad_parameter(
                        other,
                        "is not a parameter of this route (after, limit, batch, flushEvery, delayMs, action, user, since, until, format, trailer, download, token).",
                    ))
                }
            }
        }
        if let (Some(since), Some(until)) = (p.filter.since_ms, p.filter.until_ms) {
            if since >= until {
                return Err(ApiError::bad_parameter(
                    "until",
                    "must be later than `since`.",
                ));
            }
        }
        if p.trailer && p.format == ExportFormat::Csv {
            return Err(ApiError::bad_parameter(
                "trailer",
                "is for NDJSON exports only (a CSV file has no place for it).",
            ));
        }
        p.flush_every = flush_every.unwrap_or(p.batch);
        Ok(p)
    }
}

/// The request's validated parameters (its query, and `Accept` for the format), or a 400.
fn read_params(
    headers: &HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<ExportParams, ApiError> {
    let Query(pairs) = query.map_err(|e| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("The query string cannot be read: {e}."),
        )
    })?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    ExportParams::parse(&pairs, accept)
}

/// The admin behind a stream request, or 403.
fn admin(user: StreamUser) -> Result<CurrentUser, ApiError> {
    if user.0.user.is_admin() {
        Ok(user.0)
    } else {
        Err(ApiError::Forbidden(
            "Only admins may export the audit log.".into(),
        ))
    }
}

/// `GET /api/audit/count`: how many rows the same query would export.
async fn count(
    State(state): State<AppState>,
    user: StreamUser,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ExportCount>, ApiError> {
    admin(user)?;
    let mut params = read_params(&headers, query)?;
    params.filter.max_id = state.store.audit_max_id().await?;
    let count = state
        .store
        .audit_count_matching(params.after, &params.filter)
        .await?;
    Ok(Json(ExportCount {
        count: params.limit.map_or(count, |l| l.min(count)),
        max_id: params.filter.max_id,
    }))
}

/// `GET /api/audit/export`.
async fn export(
    State(state): State<AppState>,
    Extension(exports): Extension<Exports>,
    user: StreamUser,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let user = admin(user)?;
    let mut params = read_params(&headers, query)?;
    let permit = exports.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!(
            "{MAX_CONCURRENT_EXPORTS} exports are running already; try again in a moment."
        ))
    })?;
    params.filter.max_id = state.store.audit_max_id().await?;
    let portable = exports.config.reader == ExportReader::Sqlx;
    let pages = state
        .store
        .audit_pages(&params.filter, portable)?
        .on_own_thread();

    let (link, body) = Link::new(state.shutdown.clone());
    // The cache holds NDJSON of every row, read by rusqlite.
    let cache = exports.cache.clone().filter(|_| {
        params.format == ExportFormat::Ndjson && params.filter.selects_all() && pages.reads_here()
    });
    let producer = Producer {
        params: params.clone(),
        threads: exports.config.threads,
        pages,
        cache,
        link,
    };
    let store = state.store.clone();
    let username = user.user.username.clone();
    let (format, download) = (params.format, params.download);
    // The producer has a blocking-pool thread to itself for the whole export (at most
    // MAX_CONCURRENT_EXPORTS of them): pages are read there without a hop per page.
    // Tracked by the shutdown signal, so the server waits for its audit row before exiting.
    let runtime = tokio::runtime::Handle::current();
    let live = metrics::live_export();
    state.shutdown.spawn_blocking(move || {
        runtime.block_on(async move {
            let _live = live;
            let started = std::time::Instant::now();
            let report = producer.run().await;
            log_export(&store, &username, &params, &report, started.elapsed()).await;
            drop(permit);
        })
    });

    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(match format {
            ExportFormat::Ndjson => "application/x-ndjson; charset=utf-8",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if download {
        let disposition = format!(
            "attachment; filename=\"tidings-audit.{}\"",
            format.extension()
        );
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&disposition).expect("ASCII"),
        );
    }
    Ok(response)
}

/// How an export ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Every matching row was sent.
    Complete,
    /// The client went away.
    ClientGone,
    /// The server is shutting down.
    Shutdown,
    /// The database failed (logged).
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::ClientGone => "client_gone",
            Self::Shutdown => "shutdown",
            Self::Failed => "failed",
        }
    }
}

/// What the producer did.
struct Report {
    outcome: Outcome,
    rows_sent: u64,
    rows_read: u64,
    last_id: i64,
    reader: &'static str,
    /// Threads that read and formatted pages.
    threads: u8,
    /// Rows sent from the export cache rather than read.
    cached_rows: u64,
}

impl Report {
    /// An export from `after` by `reader`, before anything is read, on one thread.
    fn start(after: i64, reader: &'static str) -> Self {
        Self {
            outcome: Outcome::Complete,
            rows_sent: 0,
            rows_read: 0,
            last_id: after,
            reader,
            threads: 1,
            cached_rows: 0,
        }
    }

    /// The trailer of a complete NDJSON export of what this report counts, with its newline.
    fn trailer_line(&self) -> Vec<u8> {
        let trailer = ExportTrailer {
            done: true,
            rows: self.rows_read,
            last_id: self.last_id,
        };
        let mut line = serde_json::to_vec(&trailer).expect("serializable");
        line.push(b'\n');
        line
    }
}

type Chunk = Result<Bytes, std::io::Error>;

/// Reads pages and feeds the response body. See the module docs.
struct Producer {
    params: ExportParams,
    /// Threads it may read and format on (see [`Producer::run_parallel`]).
    threads: u8,
    /// Not `Sync` (a rusqlite connection): kept apart from `link`, which awaits borrow.
    pages: AuditPages,
    /// The export cache, when this export may use it (see [`Producer::run_parallel`]).
    cache: Option<Arc<ExportCache>>,
    link: Link,
}

/// The producer's side of the body: the channel, the shutdown signal, and why the export
/// was cut, if it was.
struct Link {
    tx: mpsc::Sender<Chunk>,
    shutdown: Shutdown,
    cut: Arc<std::sync::OnceLock<String>>,
}

impl Producer {
    async fn run(self) -> Report {
        let p = &self.params;
        let parallel = (self.threads > 1 || self.cache.is_some())
            && p.limit.is_none()
            && p.delay.is_zero()
            // More than one page to read.
            && self.pages.max_id().saturating_sub(p.after) > i64::from(p.batch);
        if parallel && self.pages.reads_here() {
            return self.run_parallel().await;
        }
        self.run_sequential().await
    }

    /// One thread reads keyset pages (`batch` rows after the last id) and sends them.
    async fn run_sequential(mut self) -> Report {
        let link = &self.link;
        let p = self.params.clone();
        let mut report = Report::start(p.after, self.pages.engine());
        let mut writer = RowWriter::new(p.format, p.flush_every);
        writer.header();
        let mut remaining = p.limit.unwrap_or(u64::MAX);
        loop {
            if let Some(outcome) = link.stopped() {
                report.outcome = outcome;
                break;
            }
            let want = remaining.min(u64::from(p.batch)) as u32;
            let (page, done) = if want == 0 {
                (None, true)
            } else {
                match self.pages.read(report.last_id, want, writer).await {
                    Ok((w, page)) => {
                        writer = w;
                        (Some(page), page.rows < want)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "audit export: reading a page failed");
                        report.outcome = Outcome::Failed;
                        return link.abort(report, "the database failed");
                    }
                }
            };
            if let Some(page) = page {
                report.rows_read += u64::from(page.rows);
                remaining -= u64::from(page.rows);
                report.last_id = page.last_id;
            }
            let mut chunks: Vec<(Bytes, u32)> =
                std::iter::from_fn(|| writer.next_chunk()).collect();
            if done || remaining == 0 {
                if p.trailer {
                    writer.raw(&report.trailer_line());
                }
                chunks.extend(writer.drain_all());
            }
            for (chunk, rows) in chunks {
                if let Err(outcome) = link.send_rows(&mut report, chunk, rows).await {
                    report.outcome = outcome;
                    return link.finish(report);
                }
                if !p.delay.is_zero() {
                    if let Err(outcome) = link.pause(p.delay).await {
                        report.outcome = outcome;
                        return link.finish(report);
                    }
                }
            }
            if done || remaining == 0 {
                return report;
            }
        }
        link.finish(report)
    }
}

/// A page read and formatted on a helper thread: its chunks and what it read.
type Formatted = anyhow::Result<(Vec<(Bytes, u32)>, Page)>;

impl Producer {
    /// `threads` threads read and format pages at once; this one sends them in order.
    ///
    /// Pages are spans of ids rather than counts of rows, planned by this thread ahead of
    /// the reading: a span starts just before the first id after the previous span's end
    /// (one seek, [`AuditPages::next_id_here`], so a hole in the ids costs nothing, however
    /// large: an import may add a row with id 2^53) and covers `batch` ids, so it holds at
    /// most `batch` rows (ids are unique), fewer where ids are missing or filtered out.
    /// Spans go round the threads in turn: this thread reads its own, and each helper (its
    /// own connection, on a blocking-pool thread) reads the spans queued to it, in order, and
    /// queues back what it formatted (at most one page waiting beside the one it makes).
    /// Pages smaller than `flushEvery` rows are sent together. When the client leaves or
    /// the server stops, this thread stops at its next page and drops the helpers' queues,
    /// and each helper stops at its next page: at most one more page each is read. The bytes
    /// are the same as [`run_sequential`](Self::run_sequential)'s (a test compares). Like a
    /// keyset page, a span planned before an import fills a hole in it does not see the new
    /// row; the sequential path would, if the hole were ahead of its cursor.
    ///
    /// With the export cache (an unfiltered NDJSON export on SQLite), spans also stop at the
    /// cache's segment ends. A segment the export reaches from its start is sent from its file
    /// (after what is held: order is kept) if it is kept, closed within this export's snapshot,
    /// and the log's change counter, read again, is still the one the export started with (if
    /// it moved, the export reads every row from there on). Otherwise a closed segment is
    /// written to the cache as its pages are sent ([`Builder`]), and kept when the export moves
    /// past it if the counter did not move meanwhile.
    async fn run_parallel(self) -> Report {
        let p = self.params.clone();
        let span = i64::from(p.batch);
        let mut report = Report::start(p.after, self.pages.engine());
        // Each helper's own connection.
        let mut twins = Vec::new();
        while twins.len() + 1 < usize::from(self.threads) {
            match self.pages.twin() {
                Ok(Some(pages)) => twins.push(pages),
                // Without a second connection this thread reads every page.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "audit export: fewer reading threads");
                    break;
                }
            }
        }
        let threads = twins.len() + 1;
        // Spans planned and not yet sent, at most two per thread: each helper has its next
        // span queued while it reads one.
        let ahead = 2 * threads;
        let mut helpers = Vec::new();
        for pages in twins {
            let (jobs_tx, mut jobs) = mpsc::channel::<(i64, i64)>(ahead);
            let (tx, rx) = mpsc::channel::<Formatted>(1);
            let (format, flush_every) = (p.format, p.flush_every);
            tokio::task::spawn_blocking(move || {
                let mut writer = RowWriter::new(format, flush_every);
                while let Some((lo, hi)) = jobs.blocking_recv() {
                    let page = pages
                        .read_here(lo, hi, span as u32, &mut writer)
                        .map(|page| (writer.drain_all(), page));
                    if let Err(e) = &page {
                        // Logged here: the sender may stop on its closed queue before reading it.
                        tracing::error!(error = %e, "audit export: a helper's page read failed");
                    }
                    let failed = page.is_err();
                    if tx.blocking_send(page).is_err() || failed {
                        return;
                    }
                }
            });
            helpers.push((jobs_tx, rx));
        }
        report.threads = threads as u8;
        // The export cache and the log's change counter, when this export may use it.
        let mut kept = self
            .cache
            .as_ref()
            .and_then(|cache| match self.pages.epoch_here() {
                Ok(epoch) => Some((cache, epoch)),
                Err(e) => {
                    tracing::warn!(error = %e, "audit export: the cache's counter is unreadable");
                    None
                }
            });
        // The segment being written to the cache as it is sent, if any.
        let mut building: Option<Builder> = None;
        let mut writer = RowWriter::new(p.format, p.flush_every);
        writer.header();
        // Chunks of pages too small to send alone, and their rows.
        let mut held = bytes::BytesMut::new();
        let mut held_rows = 0u32;
        // What is planned and not yet sent, in order.
        let mut planned: std::collections::VecDeque<Planned> = Default::default();
        // Where the last planned span ends; `None` once no row is left after it.
        let mut cursor = Some(p.after);
        let mut turn = 0usize;
        loop {
            if let Some(outcome) = self.link.stopped() {
                report.outcome = outcome;
                break;
            }
            let planning = async {
                while planned.len() < ahead {
                    let Some(after) = cursor else { break };
                    let Some(first) = self.pages.next_id_here(after)? else {
                        cursor = None;
                        break;
                    };
                    let lo = first - 1;
                    let mut hi = lo.saturating_add(span);
                    // With the cache, spans stop at segment ends, and a segment ahead of
                    // everything sent so far is sent from its file if it is kept.
                    let mut whole = false;
                    if let Some((cache, epoch)) = kept {
                        let k = segment_of(first);
                        whole = after <= segment_start(k);
                        // Kept, within this export's snapshot, and the log's counter still
                        // the one this export started with (an import may fill a hole while
                        // it runs).
                        let segment = cache
                            .get(epoch, k)
                            .filter(|_| whole && segment_end(k) < self.pages.max_id());
                        if let Some(segment) = segment {
                            if self.pages.epoch_here()? == epoch {
                                cursor = Some(segment_end(k));
                                planned.push_back(Planned::Kept(segment));
                                continue;
                            }
                            // It moved: this export reads every row from here on.
                            kept = None;
                        }
                        hi = hi.min(segment_end(k));
                    }
                    cursor = Some(hi);
                    let owner = turn % threads;
                    turn += 1;
                    if owner > 0 && helpers[owner - 1].0.send((lo, hi)).await.is_err() {
                        anyhow::bail!("a reading thread stopped");
                    }
                    planned.push_back(Planned::Span {
                        lo,
                        hi,
                        owner,
                        whole,
                    });
                }
                anyhow::Ok(())
            };
            if let Err(e) = planning.await {
                tracing::error!(error = %e, "audit export: planning a page failed");
                report.outcome = Outcome::Failed;
                return self.link.abort(report, "the database failed");
            }
            let Some(next) = planned.pop_front() else {
                break;
            };
            let (lo, hi, owner, whole) = match next {
                Planned::Span {
                    lo,
                    hi,
                    owner,
                    whole,
                } => (lo, hi, owner, whole),
                Planned::Kept(segment) => {
                    self.keep(building.take());
                    // What is held goes first, then the file.
                    let held_sent = self.link.send_held(&mut report, &mut held, &mut held_rows);
                    if let Err(outcome) = held_sent.await {
                        report.outcome = outcome;
                        return self.link.finish(report);
                    }
                    if let Err(outcome) = self.send_kept(&mut report, &segment).await {
                        report.outcome = outcome;
                        return if outcome == Outcome::Failed {
                            self.link.abort(report, "the export cache failed")
                        } else {
                            self.link.finish(report)
                        };
                    }
                    continue;
                }
            };
            let formatted = if owner == 0 {
                self.pages
                    .read_here(lo, hi, p.batch, &mut writer)
                    .map(|page| (writer.drain_all(), page))
            } else {
                helpers[owner - 1]
                    .1
                    .recv()
                    .await
                    .unwrap_or_else(|| Err(anyhow::anyhow!("a reading thread stopped")))
            };
            let (chunks, page) = match formatted {
                Ok(formatted) => formatted,
                Err(e) => {
                    tracing::error!(error = %e, "audit export: reading a page failed");
                    report.outcome = Outcome::Failed;
                    return self.link.abort(report, "the database failed");
                }
            };
            report.rows_read += u64::from(page.rows);
            if page.rows > 0 {
                report.last_id = page.last_id;
            }
            if let Some((cache, epoch)) = kept {
                // A closed segment read from its start is written to the cache as it goes.
                let k = segment_of(lo + 1);
                if building.as_ref().is_some_and(|b| b.segment() != k) {
                    self.keep(building.take());
                }
                if building.is_none() && whole && segment_end(k) < self.pages.max_id() {
                    building = cache.builder(epoch, k);
                }
                if let Some(builder) = building.as_mut() {
                    builder.write_page(&chunks, page.last_id);
                }
            }
            for (chunk, rows) in chunks {
                let ready = if held.is_empty() && rows >= p.flush_every {
                    Some((chunk, rows))
                } else {
                    held.extend_from_slice(&chunk);
                    held_rows += rows;
                    (held_rows >= p.flush_every)
                        .then(|| (held.split().freeze(), std::mem::take(&mut held_rows)))
                };
                if let Some((chunk, rows)) = ready {
                    if let Err(outcome) = self.link.send_rows(&mut report, chunk, rows).await {
                        report.outcome = outcome;
                        return self.link.finish(report);
                    }
                }
            }
        }
        if report.outcome != Outcome::Complete {
            return self.link.finish(report);
        }
        self.keep(building.take());
        // Nothing left in it unless no span was planned at all (the CSV header, then).
        for (chunk, rows) in writer.drain_all() {
            held.extend_from_slice(&chunk);
            held_rows += rows;
        }
        if p.trailer {
            held.extend_from_slice(&report.trailer_line());
        }
        let held_sent = self.link.send_held(&mut report, &mut held, &mut held_rows);
        if let Err(outcome) = held_sent.await {
            report.outcome = outcome;
            return self.link.finish(report);
        }
        report
    }

    /// Keeps the segment `building` wrote, if the log's counter has not moved since the
    /// export read it (an error reading it keeps nothing).
    fn keep(&self, building: Option<Builder>) {
        let (Some(builder), Some(cache)) = (building, &self.cache) else {
            return;
        };
        match self.pages.epoch_here() {
            Ok(now) => {
                cache.keep(builder, now);
            }
            Err(e) => tracing::warn!(error = %e, "audit export: the cache's counter is unreadable"),
        }
    }

    /// Sends a kept segment from its file, a chunk of whole rows at a time, counting each
    /// chunk's rows as read (from the cache), and its last id, when it is read, as a page's.
    async fn send_kept(&self, report: &mut Report, segment: &Segment) -> Result<(), Outcome> {
        for chunk in segment.read() {
            let (chunk, block) = chunk.map_err(|e| {
                tracing::error!(error = %e, "audit export: reading the export cache failed");
                Outcome::Failed
            })?;
            report.rows_read += u64::from(block.rows);
            report.cached_rows += u64::from(block.rows);
            report.last_id = block.last_id;
            self.link.send_rows(report, chunk, block.rows).await?;
        }
        Ok(())
    }
}

/// What the sending thread does next, in order (see [`Producer::run_parallel`]).
enum Planned {
    /// Reads the rows with ids in `(lo, hi]` on thread `owner` (0: this one) and sends them;
    /// `whole`: nothing of its cache segment was sent before it.
    Span {
        lo: i64,
        hi: i64,
        owner: usize,
        whole: bool,
    },
    /// Sends a kept segment from its file.
    Kept(Arc<Segment>),
}

impl Link {
    /// A link and the response body it feeds: every chunk sent, in order, then the end, which
    /// is an error if the export was cut ([`Link::abort`]) once the channel closes.
    fn new(shutdown: Shutdown) -> (Self, impl futures::Stream<Item = Chunk> + Send + 'static) {
        let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
        let cut = Arc::new(std::sync::OnceLock::new());
        let why = cut.clone();
        let mut ended = false;
        let body = futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|chunk| match chunk {
                Some(chunk) => Some(chunk),
                None if ended => None,
                None => {
                    ended = true;
                    why.get()
                        .map(|why| Err(std::io::Error::other(format!("export cut: {why}"))))
                }
            })
        });
        (Self { tx, shutdown, cut }, body)
    }

    /// Sends a chunk, waiting while the client is slow; fails when it is gone or at shutdown.
    async fn send(&self, chunk: Bytes) -> Result<(), Outcome> {
        tokio::select! {
            sent = self.tx.send(Ok(chunk)) => sent.map_err(|_| Outcome::ClientGone),
            _ = self.shutdown.cancelled() => Err(Outcome::Shutdown),
        }
    }

    /// Sends a chunk of `rows` rows, counted as sent once it is queued for the body.
    async fn send_rows(&self, report: &mut Report, chunk: Bytes, rows: u32) -> Result<(), Outcome> {
        self.send(chunk).await?;
        report.rows_sent += u64::from(rows);
        metrics::record_rows_exported(u64::from(rows));
        Ok(())
    }

    /// Sends what is held back (bytes of `rows` rows) as one chunk, if anything is, and
    /// empties it.
    async fn send_held(
        &self,
        report: &mut Report,
        held: &mut bytes::BytesMut,
        rows: &mut u32,
    ) -> Result<(), Outcome> {
        if held.is_empty() {
            return Ok(());
        }
        let chunk = held.split().freeze();
        self.send_rows(report, chunk, std::mem::take(rows)).await
    }

    /// Why the export must stop before its next page, if it must: the client left, or the
    /// server is stopping.
    fn stopped(&self) -> Option<Outcome> {
        if self.tx.is_closed() {
            Some(Outcome::ClientGone)
        } else if self.shutdown.is_triggered() {
            Some(Outcome::Shutdown)
        } else {
            None
        }
    }

    /// Waits `delay`, but not past the client's departure or shutdown.
    async fn pause(&self, delay: Duration) -> Result<(), Outcome> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.tx.closed() => Err(Outcome::ClientGone),
            _ = self.shutdown.cancelled() => Err(Outcome::Shutdown),
        }
    }

    /// Ends an export that did not complete: a cut transfer unless the client is gone.
    fn finish(&self, report: Report) -> Report {
        match report.outcome {
            Outcome::Shutdown => self.abort(report, "the server is shutting down"),
            _ => report,
        }
    }

    /// Ends the body with an error, so the client sees a cut transfer, not a clean end. The
    /// error comes after the chunks already queued, however full the queue is: the body yields
    /// it when the channel closes, as the producer ends.
    fn abort(&self, report: Report, why: &str) -> Report {
        let _ = self.cut.set(why.to_owned());
        report
    }
}

impl Drop for Link {
    /// A producer that panics drops its link unwinding: the body is cut then too, not ended
    /// as if the export were complete.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.cut.set("the export failed".to_owned());
        }
    }
}

/// Writes the EXPORT audit row (and a log line) for a finished export.
async fn log_export(
    store: &crate::server::storage::Store,
    username: &str,
    p: &ExportParams,
    r: &Report,
    elapsed: Duration,
) {
    let detail = json!({
        "format": p.format.as_str(),
        "after": p.after,
        "limit": p.limit,
        "filters": {
            "action": p.filter.actions,
            "user": p.filter.user,
            "since": p.filter.since_ms.map(clock::rfc3339),
            "until": p.filter.until_ms.map(clock::rfc3339),
        },
        "outcome": r.outcome.as_str(),
        "rowsSent": r.rows_sent,
        "rowsRead": r.rows_read,
        "lastId": r.last_id,
        "reader": r.reader,
        "threads": r.threads,
        "cachedRows": r.cached_rows,
        "ms": elapsed.as_millis() as u64,
    });
    tracing::info!(
        user = username,
        outcome = r.outcome.as_str(),
        rows_sent = r.rows_sent,
        rows_read = r.rows_read,
        cached_rows = r.cached_rows,
        last_id = r.last_id,
        ms = elapsed.as_millis() as u64,
        "audit export ended"
    );
    if let Err(e) = store
        .audit("EXPORT", username, &detail, clock::now_ms())
        .await
    {
        tracing::warn!(error = %e, "could not write the EXPORT audit row");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<ExportParams, String> {
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query);
        ExportParams::parse(&pairs, None).map_err(|e| e.message())
    }

    fn serde_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
        let uri: axum::http::Uri = format!("/x?{query}").parse().unwrap();
        Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .unwrap()
            .0
    }

    #[test]
    fn defaults_follow_the_documented_ones() {
        let p = parse("").unwrap();
        assert_eq!(
            (p.after, p.limit, p.batch, p.flush_every),
            (0, None, 500, 500)
        );
        assert_eq!(
            (p.delay, p.format, p.trailer),
            (Duration::ZERO, ExportFormat::Ndjson, false)
        );
        assert_eq!(
            parse("batch=50").unwrap().flush_every,
            50,
            "flushEvery defaults to batch"
        );
        let csv = ExportParams::parse(&[], Some("text/csv")).unwrap();
        assert_eq!(csv.format, ExportFormat::Csv);
        let explicit = ExportParams::parse(&[("format".into(), "ndjson".into())], Some("text/csv"));
        assert_eq!(
            explicit.unwrap().format,
            ExportFormat::Ndjson,
            "format= wins over Accept"
        );
    }

    #[test]
    fn every_parameter_is_read() {
        let p = parse(
            "after=10&limit=20&batch=30&flushEvery=5&delayMs=7&action=LOGIN,LOGOUT,LOGIN\
             &user=eric&since=2026-01-01&until=2026-01-02T00:00:00%2B01:00&format=csv&download=true&token=x",
        )
        .unwrap();
        assert_eq!(
            (p.after, p.limit, p.batch, p.flush_every),
            (10, Some(20), 30, 5)
        );
        assert_eq!(p.delay, Duration::from_millis(7));
        assert_eq!(p.filter.actions, ["LOGIN", "LOGOUT"]);
        assert_eq!(p.filter.user.as_deref(), Some("eric"));
        assert_eq!(p.filter.since_ms, Some(1_767_225_600_000));
        assert_eq!(p.filter.until_ms, Some(1_767_308_400_000));
        assert!(p.download && p.format == ExportFormat::Csv);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, param) in [
            ("after=abc", "`after`"),
            ("after=-1", "`after`"),
            ("limit=-5", "`limit`"),
            ("limit=1.5", "`limit`"),
            ("batch=0", "`batch`"),
            ("batch=10001", "`batch`"),
            ("flushEvery=0", "`flushEvery`"),
            ("delayMs=5001", "`delayMs`"),
            ("format=xml", "`format`"),
            ("since=yesterday", "`since`"),
            ("until=2026-13-01", "`until`"),
            ("since=2026-01-02&until=2026-01-01", "`until`"),
            ("action=DANCE", "`action`"),
            ("action=LOGIN,", "`action`"),
            ("user=", "`user`"),
            ("trailer=maybe", "`trailer`"),
            ("trailer=true&format=csv", "`trailer`"),
            ("limt=5", "`limt`"),
            ("after=1&after=2", "`after`"),
        ] {
            let message = parse(query).expect_err(query);
            assert!(message.starts_with(param), "{query}: {message}");
        }
    }

    /// Reads the body to its end: each chunk's text, then `Err(why)` if it was cut.
    async fn drain(body: impl futures::Stream<Item = Chunk>) -> (Vec<String>, Option<String>) {
        use futures::StreamExt;
        let mut body = std::pin::pin!(body);
        let mut chunks = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => chunks.push(String::from_utf8(bytes.to_vec()).unwrap()),
                Err(e) => {
                    assert!(body.next().await.is_none(), "nothing after the cut");
                    return (chunks, Some(e.to_string()));
                }
            }
        }
        (chunks, None)
    }

    #[tokio::test]
    async fn a_cut_reaches_a_stalled_client_after_every_queued_chunk() {
        let (link, body) = Link::new(Shutdown::new());
        // The client reads nothing: the queue fills up.
        for i in 0..CHANNEL_CHUNKS {
            link.send(Bytes::from(format!("chunk {i}"))).await.unwrap();
        }
        assert!(
            link.tx.try_send(Ok(Bytes::new())).is_err(),
            "the queue is full"
        );
        link.abort(Report::start(0, "rusqlite"), "the database failed");
        drop(link);
        let (chunks, cut) = drain(body).await;
        let sent: Vec<String> = (0..CHANNEL_CHUNKS).map(|i| format!("chunk {i}")).collect();
        assert_eq!(chunks, sent);
        assert_eq!(cut.as_deref(), Some("export cut: the database failed"));
    }

    #[tokio::test]
    async fn a_producer_that_panics_cuts_the_body() {
        let (link, body) = Link::new(Shutdown::new());
        link.send(Bytes::from_static(b"some")).await.unwrap();
        let producer = std::thread::spawn(move || {
            let _link = link;
            panic!("a bug in the producer");
        });
        assert!(producer.join().is_err());
        let (chunks, cut) = drain(body).await;
        assert_eq!(chunks, ["some"]);
        assert_eq!(cut.as_deref(), Some("export cut: the export failed"));
    }

    #[tokio::test]
    async fn an_export_that_is_not_cut_ends_cleanly() {
        let (link, body) = Link::new(Shutdown::new());
        link.send(Bytes::from_static(b"all")).await.unwrap();
        drop(link);
        assert_eq!(drain(body).await, (vec!["all".to_owned()], None));
    }
}
