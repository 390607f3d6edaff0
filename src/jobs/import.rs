//! The `import` job (docs/interface.md, "Import"): consumes an NDJSON audit export as it arrives.
//!
//! - **Start**: `POST /api/audit/import {"source"}` (or `POST /api/jobs` with
//!   `kind:"import"`), admins only. The source must start with a prefix in
//!   `TIDINGS_IMPORT_SOURCES`, or, when that is unset, with this server's own origin; anything
//!   else is a 400 before a job exists.
//! - **Reading**: the body is read chunk by chunk through the export reader that
//!   `tidings export` uses too ([`ExportLines`]: lines across chunk and UTF-8 boundaries,
//!   parsed without copying, each judged against the last id kept); this job's policy is to
//!   warn about and skip whatever is wrong with a line. Rows are inserted in
//!   batches, idempotently (`ON CONFLICT (id) DO NOTHING`, ids kept), so importing the same
//!   rows twice adds nothing. Rows are keyed by id: a row whose id this log already has is
//!   skipped and counted as already present, even if this log's row differs (an import into
//!   a log whose own ids overlap the source's keeps its own rows).
//! - **Progress** is a `progress` event per batch (rows read of the total, which the source's
//!   count route gives when it is a Tidings export). A bad line (not JSON, not a row, an id
//!   out of order) is a `warning` with its line number, and the import goes on: the rows
//!   before and after it are kept.
//! - **Resume**: the checkpoint is the last imported id. A dropped connection (an error, or an
//!   end without the trailer) is retried from there with backoff; a restart of the server
//!   picks the job up from there too. The export's trailer (`trailer=true` is asked for)
//!   tells a complete stream from a cut one.
//! - **Reading this server's own export** needs the admin's rights: the job mints a short
//!   stream token from the session that started it, and sends it to this server only.
//!
//! Tests: `tests/it/import.rs`.

use std::time::Duration;

use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::runner::{Jobs, Run, Stop};
use crate::server::storage::audit::{AuditRecord, NewAuditRow};
use crate::{
    protocol::{
        export_read::{ExportLines, Judged},
        jobs::{CreateJob, JobEventKind},
        ndjson::DEFAULT_MAX_LINE,
        AuditRowRef, ExportCount, ExportQuery,
    },
    retry,
    server::{clock, ApiError, AppState, CurrentUser},
};

/// Rows inserted per batch (and per progress event).
const IMPORT_BATCH: usize = 2000;
/// Attempts in a row before an import that cannot read its source fails.
const ATTEMPTS: u32 = 5;
/// The largest id imported: 2^53, the largest integer every JSON reader (JavaScript's
/// numbers) holds exactly. Ids outside 1 to this are a warning and skipped.
pub const MAX_IMPORT_ID: i64 = 1 << 53;
/// Warnings sent at most; later bad lines are only counted.
const WARNINGS_MAX: u64 = 100;

/// What an import job keeps in its stored request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportParams {
    pub kind: String,
    pub source: String,
    /// The session that started it (to mint stream tokens for this server's own export).
    pub session_id: i64,
    /// This server's own origin that `source` is on (empty: another server's): tokens go to
    /// this origin only.
    pub own_origin: String,
}

/// `POST /api/audit/import` and `POST /api/jobs` with `kind:"import"`.
pub async fn create(
    state: &AppState,
    jobs: &Jobs,
    user: &CurrentUser,
    body: &CreateJob,
) -> Result<Response, ApiError> {
    if !user.user.is_admin() {
        return Err(ApiError::Forbidden(
            "Only admins may import audit rows.".into(),
        ));
    }
    if body.steps.is_some()
        || body.step_ms.is_some()
        || !body.warn_at.is_empty()
        || body.fail_at.is_some()
    {
        return Err(ApiError::BadRequest {
            code: "invalid_parameter",
            message: "`steps`, `stepMs`, `warnAt` and `failAt` belong to demo jobs only.".into(),
        });
    }
    let source = body
        .source
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_parameter("source", "is required: the URL of an NDJSON export.")
        })?;
    let url = reqwest::Url::parse(source)
        .map_err(|_| ApiError::bad_parameter("source", format!("is not a URL: {source:?}.")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::bad_parameter(
            "source",
            "must be an http or https URL.",
        ));
    }
    // This server's own origins come from its configuration (or the port it listens on),
    // never from the request's Host, which the client chooses.
    let own: Vec<String> = state.own_origins();
    let sources = &jobs.config().import_sources;
    let allowed: Vec<String> = if sources.is_empty() {
        own.iter().map(|o| format!("{o}/")).collect()
    } else {
        sources.clone()
    };
    // Stream tokens go only to this server's own routes.
    let origin = own
        .iter()
        .find(|o| within(&url, &format!("{o}/")))
        .cloned()
        .unwrap_or_default();
    if !allowed.iter().any(|prefix| within(&url, prefix)) {
        return Err(ApiError::bad_parameter(
            "source",
            format!(
                "{source:?} is not an allowed import source (allowed: {}).",
                allowed.join(", ")
            ),
        ));
    }
    let params = ImportParams {
        kind: "import".into(),
        source: source.to_string(),
        session_id: user.session_id,
        own_origin: origin,
    };
    let params = serde_json::to_string(&params).expect("serializable");
    super::server::queue(state, jobs, user, "import", &params, 0).await
}

/// Whether `url` is under `prefix`: the same scheme, host and port, and a path that starts
/// with the prefix's (compared parsed, so `http://allowed@elsewhere/` or
/// `http://allowed.evil/` do not pass for `http://allowed`).
fn within(url: &reqwest::Url, prefix: &str) -> bool {
    let Ok(prefix) = reqwest::Url::parse(prefix) else {
        return false;
    };
    url.scheme() == prefix.scheme()
        && url.host_str() == prefix.host_str()
        && url.port_or_known_default() == prefix.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path().starts_with(prefix.path())
}

/// How one attempt at reading the source ended.
enum Attempt {
    /// The trailer arrived: everything was read.
    Complete,
    /// The source cannot be used (a refusal, not NDJSON): fail with this reason.
    Fatal(String),
    /// The connection dropped: try again from the checkpoint.
    Retry(String),
    /// The body ended cleanly without the trailer: a cut stream, or a source that sends none.
    Ended,
    /// Cancelled or shutdown.
    Stopped(Stop),
}

/// Counters across attempts.
#[derive(Default)]
struct Tally {
    read: i64,
    inserted: u64,
    bad: u64,
}

/// Runs an import job.
pub async fn run_import(run: &mut Run) {
    let Ok(params) = serde_json::from_str::<ImportParams>(&run.job.params) else {
        return run
            .finish(JobEventKind::Failed, "The import's request is unreadable.")
            .await;
    };
    // No redirects: a source must not send the job to an address the allowlist refuses.
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return run
                .finish(JobEventKind::Failed, &format!("No HTTP client: {e}."))
                .await
        }
    };
    let mut tally = Tally {
        read: run.job.step,
        ..Tally::default()
    };
    if run.resuming() {
        let message = format!(
            "Resuming after id {} ({} rows read so far).",
            checkpoint(run, &params),
            tally.read
        );
        run.emit(JobEventKind::Warning, &message, false).await;
    } else {
        run.emit(
            JobEventKind::Started,
            &format!("Reading {}.", shown(&params.source)),
            false,
        )
        .await;
    }
    if run.job.total == 0 {
        run.job.total = count(&client, run, &params).await.unwrap_or(0);
    }
    let mut failures = 0u32;
    loop {
        let read_before = tally.read;
        let outcome = attempt(&client, run, &params, &mut tally).await;
        if tally.read > read_before {
            // Only attempts in a row that bring nothing count towards giving up.
            failures = 0;
        }
        match outcome {
            // A source that sends no trailer (the documented export without `trailer=true`):
            // a clean end that brought nothing new after a first pass means it is all here.
            Attempt::Ended if tally.read == read_before && failures > 0 => {
                return complete(run, &params, &tally).await;
            }
            Attempt::Ended => {
                failures += 1;
                let why = format!(
                    "The stream ended after id {} without its trailer.",
                    checkpoint(run, &params)
                );
                if !retry_or_fail(run, &params, &mut failures, why).await {
                    return;
                }
            }
            Attempt::Complete => return complete(run, &params, &tally).await,
            Attempt::Fatal(why) => return run.finish(JobEventKind::Failed, &why).await,
            Attempt::Stopped(stop) => return run.stopped(stop).await,
            Attempt::Retry(why) => {
                failures += 1;
                if !retry_or_fail(run, &params, &mut failures, why).await {
                    return;
                }
            }
        }
    }
}

/// Ends the import as complete, with its audit row.
async fn complete(run: &mut Run, params: &ImportParams, tally: &Tally) {
    let message = format!(
        "Imported {} rows: {} new, {} already present; {} bad lines.",
        tally.read,
        tally.inserted,
        tally.read as u64 - tally.inserted.min(tally.read as u64),
        tally.bad
    );
    let _ = run
        .store()
        .audit(
            "IMPORT",
            &run.job.owner,
            &serde_json::json!({"jobId": run.job.id, "source": shown(&params.source),
                "rows": tally.read, "inserted": tally.inserted, "badLines": tally.bad}),
            clock::now_ms(),
        )
        .await;
    run.finish(JobEventKind::Complete, &message).await;
}

/// After a failed attempt (`failures` in a row, counted already): a warning and a pause
/// before the next one (true), or the end of the job once there were [`ATTEMPTS`] (false).
async fn retry_or_fail(
    run: &mut Run,
    params: &ImportParams,
    failures: &mut u32,
    why: String,
) -> bool {
    if *failures >= ATTEMPTS {
        let message = format!("Gave up after {failures} attempts: {why}");
        run.finish(JobEventKind::Failed, &message).await;
        return false;
    }
    let message = format!(
        "{why} Trying again from id {} (attempt {} of {ATTEMPTS}).",
        checkpoint(run, params),
        *failures + 1
    );
    run.emit(JobEventKind::Warning, &message, false).await;
    let wait = retry::backoff(
        *failures,
        Duration::from_millis(500),
        Duration::from_secs(10),
    );
    if let Some(stop) = run.pause(wait).await {
        run.stopped(stop).await;
        return false;
    }
    true
}

/// The last imported id (before the first row: the source's own `after`, or 0).
fn checkpoint(run: &Run, params: &ImportParams) -> i64 {
    run.job
        .checkpoint
        .parse()
        .ok()
        .or_else(|| source_param(params, "after"))
        .unwrap_or(0)
}

/// A numeric query parameter of the source URL.
fn source_param(params: &ImportParams, name: &str) -> Option<i64> {
    let url = reqwest::Url::parse(&params.source).ok()?;
    let value = url.query_pairs().find(|(k, _)| k == name)?.1.parse().ok();
    value
}

/// Where the next request starts: `after` the checkpoint, and (when the source has a `limit`)
/// what is left of it. The source's other parameters stay as they are in its URL.
fn position(run: &Run, params: &ImportParams, tally: &Tally) -> ExportQuery {
    ExportQuery {
        after: checkpoint(run, params),
        limit: source_param(params, "limit").map(|limit| (limit - tally.read).max(0) as u64),
        ..ExportQuery::default()
    }
}

/// `url` with the value of any `token` parameter hidden, for messages.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "token" {
                        "…".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// `url` with `pairs` set (replacing any earlier value of the same names).
fn with_params(url: &str, pairs: &[(&str, String)]) -> Option<reqwest::Url> {
    let mut url = reqwest::Url::parse(url).ok()?;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !pairs.iter().any(|(name, _)| k == name))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    Some(url)
}

/// A stream token for this server's own routes (none for another server).
fn token_for(run: &Run, params: &ImportParams, url: &str) -> Option<String> {
    if params.own_origin.is_empty() || !url.starts_with(&format!("{}/", params.own_origin)) {
        return None;
    }
    let expires = clock::now_ms() / 1000 + 300;
    Some(run.signer().issue(params.session_id, expires))
}

/// The total the source's count route gives, when the source is a Tidings export.
async fn count(client: &reqwest::Client, run: &Run, params: &ImportParams) -> Option<i64> {
    let mut url = with_params(&params.source, &[])?;
    if !url.path().ends_with("/api/audit/export") {
        return None;
    }
    let path = url.path().replace("/api/audit/export", "/api/audit/count");
    url.set_path(&path);
    let done = Tally {
        read: run.job.step,
        ..Tally::default()
    };
    let mut pairs = position(run, params, &done).for_count().to_pairs();
    if let Some(token) = token_for(run, params, url.as_str()) {
        pairs.push(("token", token));
    }
    let url = with_params(url.as_str(), &pairs)?;
    let res = client.get(url).send().await.ok()?;
    let body: ExportCount = res.error_for_status().ok()?.json().await.ok()?;
    Some(i64::try_from(body.count).ok()? + run.job.step)
}

/// One pass over the source from the checkpoint.
async fn attempt(
    client: &reqwest::Client,
    run: &mut Run,
    params: &ImportParams,
    tally: &mut Tally,
) -> Attempt {
    let mut pairs = ExportQuery {
        trailer: true,
        ..position(run, params, tally)
    }
    .to_pairs();
    if let Some(token) = token_for(run, params, &params.source) {
        pairs.push(("token", token));
    }
    let Some(url) = with_params(&params.source, &pairs) else {
        return Attempt::Fatal(format!("{:?} is not a URL.", params.source));
    };
    let mut res = match client
        .get(url)
        .header("accept", "application/x-ndjson")
        .send()
        .await
    {
        Ok(res) => res,
        // `without_url`: the URL may carry a stream token, which must not reach a message.
        Err(e) => {
            let e = e.without_url();
            return Attempt::Retry(format!("The source could not be reached ({e})."));
        }
    };
    let status = res.status();
    if !status.is_success() {
        let why = format!("The source answered {status}.");
        return if retry::retryable(status.as_u16()) {
            Attempt::Retry(why)
        } else {
            Attempt::Fatal(why)
        };
    }
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type.starts_with("application/x-ndjson") {
        return Attempt::Fatal(format!(
            "The source sent {content_type:?}, not NDJSON (application/x-ndjson)."
        ));
    }
    let mut lines = ExportLines::new(checkpoint(run, params), DEFAULT_MAX_LINE);
    let mut batch: Vec<AuditRecord> = Vec::with_capacity(IMPORT_BATCH);
    if pairs.iter().any(|(k, v)| *k == "limit" && v == "0") {
        return Attempt::Complete;
    }
    loop {
        let next = tokio::select! {
            next = res.chunk() => next,
            stop = run.interrupted() => return Attempt::Stopped(stop),
        };
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                let e = e.without_url();
                if let Err(outcome) = flush(run, &mut batch, tally).await {
                    return outcome;
                }
                let last_id = lines.last_id();
                return Attempt::Retry(format!("The connection dropped after id {last_id} ({e})."));
            }
        };
        for line in lines.push(&chunk) {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    warn(run, tally, &format!("Line skipped: {e}.")).await;
                    continue;
                }
            };
            if line.text.trim().is_empty() {
                continue;
            }
            // The policy for each line: anything wrong is a warning and the line is skipped.
            match lines.judge(&line.text) {
                Judged::Row(AuditRowRef { id, .. }) | Judged::OutOfOrder { id, .. }
                    if !(1..=MAX_IMPORT_ID).contains(&id) =>
                {
                    let why = format!(
                        "Line {}: id {id} is outside 1 to 2^53 ({MAX_IMPORT_ID}); skipped.",
                        line.number
                    );
                    warn(run, tally, &why).await;
                }
                Judged::Row(row) => {
                    let at = match chrono::DateTime::parse_from_rfc3339(&row.at) {
                        Ok(t) => t.timestamp_millis(),
                        Err(_) => {
                            let why = format!(
                                "Line {}: `at` is not an RFC 3339 time; skipped.",
                                line.number
                            );
                            warn(run, tally, &why).await;
                            continue;
                        }
                    };
                    lines.keep(row.id);
                    batch.push(AuditRecord {
                        id: row.id,
                        row: NewAuditRow {
                            at,
                            action: row.action.into_owned(),
                            username: row.user.into_owned(),
                            detail: row.detail.get().to_string(),
                        },
                    });
                    if batch.len() >= IMPORT_BATCH {
                        if let Err(outcome) = flush(run, &mut batch, tally).await {
                            return outcome;
                        }
                    }
                }
                Judged::OutOfOrder { id, last_id } => {
                    let why = format!(
                        "Line {}: id {id} does not follow id {last_id}; skipped.",
                        line.number
                    );
                    warn(run, tally, &why).await;
                }
                Judged::Trailer { trailer, agrees } => {
                    if let Err(outcome) = flush(run, &mut batch, tally).await {
                        return outcome;
                    }
                    if !agrees {
                        let why = format!(
                            "The source's trailer counts {} rows; {} arrived in good shape.",
                            trailer.rows,
                            lines.kept()
                        );
                        warn(run, tally, &why).await;
                    }
                    return Attempt::Complete;
                }
                Judged::NotARow(e) => {
                    let why = format!("Line {} is not an audit row ({e}); skipped.", line.number);
                    warn(run, tally, &why).await;
                }
            }
        }
    }
    // The body ended without the trailer: a last line cut short, or a source without one.
    if let Some(Ok(line)) = lines.finish() {
        if !line.text.trim().is_empty() {
            let why = format!("Line {} was cut short; skipped.", line.number);
            warn(run, tally, &why).await;
        }
    }
    if let Err(outcome) = flush(run, &mut batch, tally).await {
        return outcome;
    }
    Attempt::Ended
}

/// A `warning` event for a bad line (the first [`WARNINGS_MAX`]; later ones are counted).
async fn warn(run: &mut Run, tally: &mut Tally, why: &str) {
    tally.bad += 1;
    if tally.bad <= WARNINGS_MAX {
        run.emit(JobEventKind::Warning, why, false).await;
    } else if tally.bad == WARNINGS_MAX + 1 {
        let message = format!("More than {WARNINGS_MAX} bad lines: the rest are only counted.");
        run.emit(JobEventKind::Warning, &message, false).await;
    }
}

/// Inserts the batch, moves the checkpoint, reports progress, and checks for a stop.
async fn flush(
    run: &mut Run,
    batch: &mut Vec<AuditRecord>,
    tally: &mut Tally,
) -> Result<(), Attempt> {
    if batch.is_empty() {
        return Ok(());
    }
    match run.store().audit_import(batch).await {
        Ok(inserted) => tally.inserted += inserted,
        Err(e) => return Err(Attempt::Retry(format!("Storing rows failed ({e})."))),
    }
    tally.read += batch.len() as i64;
    let last = batch.last().map(|r| r.id).unwrap_or(0);
    batch.clear();
    run.job.step = tally.read;
    run.job.total = run.job.total.max(tally.read);
    run.job.checkpoint = last.to_string();
    let message = format!("{} rows read, {} new.", tally.read, tally.inserted);
    run.emit(JobEventKind::Progress, &message, true).await;
    match run.should_stop().await {
        Some(stop) => Err(Attempt::Stopped(stop)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_compared_as_urls_not_strings() {
        let ok = |u: &str, p: &str| within(&reqwest::Url::parse(u).unwrap(), p);
        assert!(ok(
            "http://a.example/api/audit/export?x=1",
            "http://a.example/"
        ));
        assert!(ok(
            "http://a.example:80/exports/1",
            "http://a.example/exports"
        ));
        assert!(!ok("http://a.example@10.0.0.5/", "http://a.example"));
        assert!(!ok("http://a.example.evil.net/", "http://a.example"));
        assert!(!ok("https://a.example/", "http://a.example/"));
        assert!(!ok("http://a.example:8080/", "http://a.example/"));
        assert!(!ok("http://a.example/other", "http://a.example/exports"));
    }

    #[test]
    fn query_parameters_are_replaced_not_doubled() {
        let url = with_params(
            "http://h/api/audit/export?after=5&action=LOGIN",
            &[("after", "9".into()), ("trailer", "true".into())],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://h/api/audit/export?action=LOGIN&after=9&trailer=true"
        );
    }
}
