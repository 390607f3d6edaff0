//! The documented Jobs routes: create, list, status (JSON with `ETag`, or SSE by `Accept`),
//! cancel, and the event stream with `Last-Event-ID` replay.
//!
//! The event stream subscribes to the job's bus topic *first*, then replays the stored events
//! after the client's last id, then goes live, skipping what the replay already sent; a gap
//! (a lagging subscriber) is filled from the database. So a watcher sees every event exactly
//! once, in order, across reconnects and restarts. It ends after the terminal event; a
//! reconnect that already has it gets 204, so EventSource stops retrying.
//!
//! Tests: `tests/it/jobs.rs`.

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use futures::future::BoxFuture;

use super::store::JobRow;
use super::{
    runner::{topic, Jobs},
    settings::JobsConfig,
    store::NewJob,
};
use crate::{
    protocol::jobs::{
        CreateJob, ImportRequest, JobCreated, JobEventKind, JobList, JobState, JobStatus,
        STEPS_MAX, STEP_MS_MAX,
    },
    server::{
        access::identity::{CurrentUser, StreamUser},
        clock,
        fanout::bus::Received,
        fanout::sse::{self, Event, SseOptions},
        fanout::topics::{self, Producer, TopicKind},
        storage::{Backend, Store},
        ApiError, ApiJson, AppState,
    },
};

/// Jobs listed by `GET /api/jobs`.
const LIST_LIMIT: i64 = 50;
/// Events read from the database per replay page.
const REPLAY_PAGE: i64 = 500;

/// The routes, with the queue started on `state`'s database (its workers run until shutdown).
pub fn router(jobs: Jobs) -> Router<AppState> {
    Router::new()
        .route("/api/jobs", post(create).get(list))
        .route("/api/jobs/{id}", get(status))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/jobs/{id}/events", get(events))
        .route("/api/audit/import", post(import))
        .layer(Extension(jobs))
}

/// Starts the queue's workers for `state` with `config`: once per process, at start-up.
pub fn start(state: &AppState, config: &JobsConfig) -> Jobs {
    // An SQLite file with no Redis is one process's: what it left running is requeued at
    // start. With Redis, instances share the file (or PostgreSQL): only expired leases are.
    let sole = state.store.backend() == Backend::Sqlite && state.config.redis_url.is_none();
    Jobs::start(
        state.store.clone(),
        state.bus.clone(),
        state.signer.clone(),
        state.shutdown.clone(),
        config.clone(),
        &state.instance,
        sole,
    )
}

/// Checks a demo request; returns the number of steps.
fn check_demo(body: &CreateJob) -> Result<i64, ApiError> {
    let steps = body.steps();
    if !(1..=i64::from(STEPS_MAX)).contains(&steps) {
        return Err(ApiError::bad_parameter(
            "steps",
            format!("must be from 1 to {STEPS_MAX}."),
        ));
    }
    let step_ms = body.step_ms();
    if !(0..=i64::from(STEP_MS_MAX)).contains(&step_ms) {
        return Err(ApiError::bad_parameter(
            "stepMs",
            format!("must be from 0 to {STEP_MS_MAX}."),
        ));
    }
    if body.warn_at.len() > 100 {
        return Err(ApiError::bad_parameter(
            "warnAt",
            "may name at most 100 steps.",
        ));
    }
    if let Some(s) = body.warn_at.iter().find(|s| !(1..=steps).contains(*s)) {
        return Err(ApiError::bad_parameter(
            "warnAt",
            format!("names step {s}, outside 1 to {steps}."),
        ));
    }
    if let Some(s) = body.fail_at.filter(|s| !(1..=steps).contains(s)) {
        return Err(ApiError::bad_parameter(
            "failAt",
            format!("is {s}, outside 1 to {steps}."),
        ));
    }
    if body.source.is_some() {
        return Err(ApiError::bad_parameter(
            "source",
            "belongs to import jobs only.",
        ));
    }
    Ok(steps)
}

/// The status JSON of a stored job.
pub fn status_of(job: &JobRow) -> JobStatus {
    JobStatus {
        id: job.id,
        kind: job.kind.clone(),
        status: JobState::parse(&job.status).unwrap_or(JobState::Failed),
        percent: job.percent,
        message: job.message.clone(),
        step: job.step,
        total: job.total,
        created_at: clock::rfc3339(job.created_at),
        updated_at: clock::rfc3339(job.updated_at),
        last_event_id: job.last_event_id,
        owner: job.owner.clone(),
    }
}

/// Queues a job for `user` and wakes a worker. Shared with `POST /api/audit/import`.
pub async fn queue(
    state: &AppState,
    jobs: &Jobs,
    user: &CurrentUser,
    kind: &str,
    params: &str,
    total: i64,
) -> Result<Response, ApiError> {
    let store = &state.store;
    let max = jobs.config().active_per_user;
    let now = clock::now_ms();
    let job = store
        .create_job_within(
            &NewJob {
                owner_id: user.user_id,
                owner: &user.user.username,
                kind,
                params,
                total,
                at: now,
            },
            (max > 0).then_some(i64::from(max)),
        )
        .await?
        .map_err(|open| {
            ApiError::too_many(
                "too_many_jobs",
                format!(
                    "You have {open} jobs waiting or running, the most one user may have \
                     (TIDINGS_MAX_ACTIVE_JOBS_PER_USER is {max}); let some finish or cancel \
                     them first."
                ),
            )
        })?;
    jobs.queued().await;
    let created = JobCreated {
        id: job.id,
        kind: job.kind.clone(),
        status: JobState::Queued,
        events_url: format!("/api/jobs/{}/events", job.id),
        status_url: format!("/api/jobs/{}", job.id),
    };
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/api/jobs/{}", job.id)).expect("ASCII"),
    );
    Ok(response)
}

/// `POST /api/jobs`.
async fn create(
    State(state): State<AppState>,
    Extension(jobs): Extension<Jobs>,
    user: CurrentUser,
    ApiJson(body): ApiJson<CreateJob>,
) -> Result<Response, ApiError> {
    match body.kind.as_str() {
        "demo" => {
            let steps = check_demo(&body)?;
            let params = serde_json::to_string(&body).expect("serializable");
            queue(&state, &jobs, &user, "demo", &params, steps).await
        }
        "import" => super::import::create(&state, &jobs, &user, &body).await,
        other => Err(ApiError::bad_parameter(
            "kind",
            format!("is {other:?}; it must be \"demo\" or \"import\"."),
        )),
    }
}

/// `POST /api/audit/import {"source"}`: an import job (docs/interface.md, "Import").
async fn import(
    State(state): State<AppState>,
    Extension(jobs): Extension<Jobs>,
    user: CurrentUser,
    ApiJson(body): ApiJson<ImportRequest>,
) -> Result<Response, ApiError> {
    let body = CreateJob {
        kind: "import".into(),
        source: Some(body.source),
        ..CreateJob::default()
    };
    super::import::create(&state, &jobs, &user, &body).await
}

/// `GET /api/jobs`: the caller's jobs, newest first.
async fn list(State(state): State<AppState>, user: CurrentUser) -> Result<Json<JobList>, ApiError> {
    let rows = state.store.jobs_of(user.user_id, LIST_LIMIT).await?;
    Ok(Json(JobList {
        jobs: rows.iter().map(status_of).collect(),
    }))
}

/// The job `id` names, if `user` may see it (its owner or an admin); 404 otherwise.
async fn visible_job(state: &AppState, user: &CurrentUser, id: &str) -> Result<JobRow, ApiError> {
    let missing = || ApiError::NotFound(format!("There is no job {id}."));
    let id: i64 = id.parse().map_err(|_| missing())?;
    let job = state.store.job(id).await?.ok_or_else(missing)?;
    if job.owner_id == user.user_id || user.user.is_admin() {
        Ok(job)
    } else {
        Err(missing())
    }
}

/// The `ETag` of a job's current state.
fn etag(job: &JobRow) -> String {
    format!(
        "\"job-{}-{}-{}-{}\"",
        job.id, job.last_event_id, job.status, job.updated_at
    )
}

/// Whether the request asks for an event stream.
fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// `GET /api/jobs/{id}`: the status JSON with an `ETag` (304 when `If-None-Match` matches),
/// or the event stream when `Accept: text/event-stream`.
async fn status(
    State(state): State<AppState>,
    user: StreamUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    if wants_events(&headers) {
        return events(State(state), user, Path(id), headers, query).await;
    }
    if query.0.iter().any(|(k, _)| k == "token") {
        // Stream tokens open stream routes only; the JSON status needs the session.
        return Err(ApiError::InvalidToken(
            "Stream tokens are accepted on event streams only; ask with Accept: text/event-stream."
                .into(),
        ));
    }
    let job = visible_job(&state, &user.0, &id).await?;
    let tag = etag(&job);
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == tag
        });
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Json(status_of(&job)).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&tag).expect("ASCII"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `POST /api/jobs/{id}/cancel`: 202 while the job is queued or running, 409 once it ended.
async fn cancel(
    State(state): State<AppState>,
    Extension(jobs): Extension<Jobs>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = visible_job(&state, &user, &id).await?;
    let before = jobs.cancel(&job).await?;
    match before.as_deref() {
        Some("queued" | "running") => {
            let job = state.store.job(job.id).await?.unwrap_or(job);
            Ok((StatusCode::ACCEPTED, Json(status_of(&job))).into_response())
        }
        Some(done) => Err(ApiError::Conflict {
            code: "job_finished",
            message: format!("Job {} has already ended ({done}).", job.id),
        }),
        None => Err(ApiError::NotFound(format!("There is no job {id}."))),
    }
}

/// `GET /api/jobs/{id}/events`: see the module docs.
async fn events(
    State(state): State<AppState>,
    user: StreamUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let after = sse::last_event_id(&headers, &query)?.unwrap_or(0);
    let job = visible_job(&state, &user.0, &id).await?;
    let finished = JobState::parse(&job.status).is_some_and(JobState::is_final);
    if finished && after > 0 && after >= job.last_event_id {
        // The client has the terminal event: 204 tells EventSource to stop reconnecting.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let produce = follow(&state, &job, after);
    let options = SseOptions::for_stream(&state, &user.0, vec![format!("job:{}", job.id)])?;
    Ok(sse::stream(options, state.shutdown.clone(), produce))
}

/// The `job:<id>` topic of `GET /api/events`: the same stream as `GET /api/jobs/{id}/events`
/// (another user's job, or none, is refused). A stream that has a job's terminal event hears
/// nothing more of it.
pub struct JobTopic;

impl TopicKind for JobTopic {
    fn name(&self) -> &'static str {
        "job"
    }

    fn problem(&self, arg: Option<&str>) -> Option<String> {
        topics::id_problem(arg, "job", "job")
    }

    fn open<'a>(
        &'a self,
        state: &'a AppState,
        user: &'a CurrentUser,
        arg: Option<&'a str>,
        after: Option<i64>,
    ) -> BoxFuture<'a, Result<Producer, ApiError>> {
        Box::pin(async move {
            let job = visible_job(state, user, arg.unwrap_or_default()).await?;
            let after = after.unwrap_or(0);
            let finished = JobState::parse(&job.status).is_some_and(JobState::is_final);
            if finished && after > 0 && after >= job.last_event_id {
                return Ok(Box::new(|_tx| Box::pin(async {}) as BoxFuture<'static, ()>) as Producer);
            }
            Ok(follow(state, &job, after))
        })
    }
}

/// Subscribes to `job`'s events and returns the producer that sends those after `after`:
/// the stored ones, then live ones, until the terminal event.
fn follow(state: &AppState, job: &JobRow, after: i64) -> Producer {
    // Subscribe before reading the backlog: nothing published in between is missed.
    let subscription = state.bus.subscribe(&topic(job.id));
    let store = state.store.clone();
    let job_id = job.id;
    Box::new(move |tx: sse::Sender| {
        Box::pin(async move {
            let mut subscription = subscription;
            let mut last = after;
            if !matches!(replay(&store, &tx, job_id, &mut last).await, Ok(false)) {
                return;
            }
            loop {
                let received = tokio::select! {
                    r = subscription.recv() => r,
                    _ = tx.gone() => return,
                };
                match received {
                    Received::Message(m) if m.id <= last => {}
                    Received::Message(m) if m.id == last + 1 => {
                        let event = Event::new(m.text()).id(m.id).name(&m.kind);
                        if tx.send(&event).await.is_err() || is_terminal(&m.kind) {
                            return;
                        }
                        last = m.id;
                    }
                    // A gap, or dropped messages: the database has them.
                    Received::Message(_) | Received::Lagged(_) => {
                        if !matches!(replay(&store, &tx, job_id, &mut last).await, Ok(false)) {
                            return;
                        }
                    }
                    Received::Closed => return,
                }
            }
        }) as BoxFuture<'static, ()>
    })
}

/// Sends the stored events after `*last`, page by page. `Ok(true)` once the terminal event
/// went out; `Err` when the client left or the database failed.
async fn replay(store: &Store, tx: &sse::Sender, job_id: i64, last: &mut i64) -> Result<bool, ()> {
    loop {
        let page = store
            .job_events_after(job_id, *last, REPLAY_PAGE)
            .await
            .map_err(|e| tracing::warn!(error = %e, job = job_id, "replaying job events failed"))?;
        let full = page.len() as i64 == REPLAY_PAGE;
        for e in page {
            let terminal = is_terminal(&e.event);
            let event = Event::new(e.data).id(e.id).name(&e.event);
            tx.send(&event).await.map_err(|_| ())?;
            *last = e.id;
            if terminal {
                return Ok(true);
            }
        }
        if !full {
            return Ok(false);
        }
    }
}

fn is_terminal(event: &str) -> bool {
    JobEventKind::parse(event).is_some_and(|k| k.final_state().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_requests_are_checked_with_the_parameter_named() {
        let ok = CreateJob {
            kind: "demo".into(),
            steps: Some(20),
            step_ms: Some(250),
            warn_at: vec![7],
            fail_at: None,
            source: None,
        };
        assert_eq!(check_demo(&ok).unwrap(), 20);
        let cases = [
            (
                CreateJob {
                    steps: Some(0),
                    ..ok.clone()
                },
                "`steps`",
            ),
            (
                CreateJob {
                    steps: Some(-3),
                    ..ok.clone()
                },
                "`steps`",
            ),
            (
                CreateJob {
                    steps: Some(1_000_000),
                    ..ok.clone()
                },
                "`steps`",
            ),
            (
                CreateJob {
                    step_ms: Some(-1),
                    ..ok.clone()
                },
                "`stepMs`",
            ),
            (
                CreateJob {
                    step_ms: Some(600_000),
                    ..ok.clone()
                },
                "`stepMs`",
            ),
            (
                CreateJob {
                    warn_at: vec![21],
                    ..ok.clone()
                },
                "`warnAt`",
            ),
            (
                CreateJob {
                    fail_at: Some(0),
                    ..ok.clone()
                },
                "`failAt`",
            ),
            (
                CreateJob {
                    source: Some("x".into()),
                    ..ok.clone()
                },
                "`source`",
            ),
        ];
        for (body, param) in cases {
            let e = check_demo(&body).unwrap_err();
            assert!(e.to_string().starts_with(param), "{body:?}: {e}");
        }
    }
}
