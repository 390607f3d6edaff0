//! `GET /api/metrics/events` and `GET /api/logs/events`.
//!
//! Metrics: a `metrics` event at once (the newest sample) and then one a second, from the one
//! shared sampler (`server::observe::metrics`); the events carry no id, as a missed sample is not worth
//! replaying. With `?logs=<level>` an admin also gets the log tail on the same stream.
//!
//! Log tail: first a `ready` event (its id: where the replay starts; its data: the newest id,
//! the level and the log's `epoch`, which changes when the server restarts), then (without
//! `Last-Event-ID`) the latest [`REPLAY`] records at the level or above, or (with it) every
//! kept record after it, a `gap` first if some are no longer kept; then each new record as a
//! `log` event with its id. `?level=` (default `info`) picks the least severe level sent; an
//! unknown one is a 400. Non-admins get 403.
//!
//! Tests: `tests/it/dashboard.rs`.

use std::time::Duration;

use futures::future::BoxFuture;

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
    Json, Router,
};

use crate::{
    protocol::chat::ConnectionList,
    protocol::metrics::{
        LogLevel, LogReady, LOG_EVENT, LOG_GAP_EVENT, LOG_READY_EVENT, METRICS_EVENT,
    },
    server::{
        access::identity::{AdminUser, CurrentUser},
        clock,
        fanout::sse::{self, Event, Gone, SseOptions},
        fanout::topics::{Producer, TopicKind},
        observe::logs,
        observe::metrics,
        ApiError, AppState, StreamUser,
    },
};

/// Records replayed to a stream that starts without `Last-Event-ID`.
const REPLAY: usize = 200;
/// A stream that cannot take an event for this long is ended (and counted as slow).
const SEND_LIMIT: Duration = Duration::from_secs(10);
/// How soon the browser reconnects after a stream ends: a dashboard that waited the usual
/// 3 s would miss three samples each time.
const RETRY: Duration = Duration::from_millis(1000);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/metrics/events", get(metrics_events))
        .route("/api/logs/events", get(log_events))
        .route("/api/admin/connections", get(connections))
        .route(
            "/api/admin/users/{username}/disconnect",
            axum::routing::post(disconnect),
        )
}

/// `GET /api/admin/connections`: every live WebSocket and event stream, on every instance.
async fn connections(State(state): State<AppState>, _admin: AdminUser) -> Json<ConnectionList> {
    Json(ConnectionList {
        connections: state.streams.list_everywhere().await,
    })
}

/// `POST /api/admin/users/{username}/disconnect` → 204: signs the user out everywhere (their
/// sessions end, so a reconnect is refused) and closes every connection of theirs on every
/// instance at once.
async fn disconnect(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let Some(account) = state.store.user_by_name(&username).await? else {
        return Err(ApiError::NotFound(format!(
            "No account is named {username}."
        )));
    };
    let sessions = state.store.delete_sessions_of(account.id).await?;
    state.streams.end_user(account.id);
    let detail = serde_json::json!({ "by": admin.user.username, "sessions": sessions });
    state
        .store
        .audit("DISCONNECT", &username, &detail, clock::now_ms())
        .await?;
    tracing::info!(user = %username, by = %admin.user.username, sessions, "an admin disconnected a user");
    Ok(StatusCode::NO_CONTENT)
}

fn bad_level(value: &str) -> ApiError {
    let names: Vec<&str> = LogLevel::ALL.iter().map(|l| l.as_str()).collect();
    ApiError::bad_parameter(
        "level",
        format!("must be one of {}, not {value:?}.", names.join(", ")),
    )
}

/// The level a query parameter names (`default` when absent).
fn level_param(
    query: &[(String, String)],
    name: &str,
    default: Option<LogLevel>,
) -> Result<Option<LogLevel>, ApiError> {
    match query.iter().find(|(k, _)| k == name) {
        Some((_, v)) => LogLevel::parse(v).map(Some).ok_or_else(|| bad_level(v)),
        None => Ok(default),
    }
}

fn admin_only(user: &StreamUser) -> Result<(), ApiError> {
    if user.0.user.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Only admins may read the server log.".into(),
        ))
    }
}

/// The last-event id as a log record id.
fn log_id(headers: &HeaderMap, query: &[(String, String)]) -> Result<Option<u64>, ApiError> {
    Ok(sse::last_event_id(headers, query)?.map(|id| id as u64))
}

fn options(state: &AppState, user: &StreamUser, topics: &[&str]) -> Result<SseOptions, ApiError> {
    Ok(SseOptions {
        // Ends like every stream (`TIDINGS_SSE_MAX_SECS`); the browser reconnects and resumes.
        retry: Some(RETRY),
        send_limit: Some(SEND_LIMIT),
        ..SseOptions::for_stream(
            state,
            &user.0,
            topics.iter().map(|t| t.to_string()).collect(),
        )?
    })
}

/// `GET /api/metrics/events`: see the module docs.
async fn metrics_events(
    State(state): State<AppState>,
    user: StreamUser,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let level = level_param(&query, "logs", None)?;
    if level.is_some() {
        admin_only(&user)?;
    }
    let after = log_id(&headers, &query)?;
    let topics: &[&str] = if level.is_some() {
        &["metrics", "logs"]
    } else {
        &["metrics"]
    };
    Ok(sse::stream(
        options(&state, &user, topics)?,
        state.shutdown.clone(),
        samples(&state, level.map(|l| (l, after))),
    ))
}

/// The producer of the metrics stream: a sample at once and then one a second, and with
/// `tail` the log records at that level after that id on the same stream.
fn samples(state: &AppState, tail: Option<(LogLevel, Option<u64>)>) -> Producer {
    let mut samples = state.metrics.subscribe();
    Box::new(move |tx: sse::Sender| {
        Box::pin(async move {
            let mut tail = match tail {
                Some((level, after)) => match LogTail::start(&tx, after, level).await {
                    Ok(tail) => Some(tail),
                    Err(Gone) => return,
                },
                None => None,
            };
            let mut first = true;
            loop {
                tokio::select! {
                    _ = tx.gone() => return,
                    changed = samples.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let mut sample = samples.borrow_and_update().clone();
                        if std::mem::take(&mut first) {
                            // The newest sample may be up to a second old: count the
                            // connections again, so this stream counts itself.
                            let mut now = (*sample).clone();
                            now.connections = metrics::connections_now();
                            sample = std::sync::Arc::new(now);
                        }
                        if tx.send(&Event::json(&*sample).name(METRICS_EVENT)).await.is_err() {
                            return;
                        }
                    }
                    more = async { tail.as_mut()?.wait().await }, if tail.is_some() => {
                        let Some(tail) = tail.as_mut().filter(|_| more.is_some()) else { return };
                        if tail.send_new(&tx).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }) as BoxFuture<'static, ()>
    })
}

/// `GET /api/logs/events`: see the module docs.
async fn log_events(
    State(state): State<AppState>,
    user: StreamUser,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    admin_only(&user)?;
    let level = level_param(&query, "level", Some(LogLevel::Info))?.unwrap_or_default();
    let after = log_id(&headers, &query)?;
    Ok(sse::stream(
        options(&state, &user, &["logs"])?,
        state.shutdown.clone(),
        log_tail(level, after),
    ))
}

/// The producer of the log tail: `ready`, the replay, then each new record.
fn log_tail(level: LogLevel, after: Option<u64>) -> Producer {
    Box::new(move |tx: sse::Sender| {
        Box::pin(async move {
            let Ok(mut tail) = LogTail::start(&tx, after, level).await else {
                return;
            };
            loop {
                tokio::select! {
                    _ = tx.gone() => return,
                    more = tail.wait() => {
                        if more.is_none() || tail.send_new(&tx).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }) as BoxFuture<'static, ()>
    })
}

/// The `metrics` topic of `GET /api/events`: the samples of `GET /api/metrics/events`.
pub struct MetricsTopic;

impl TopicKind for MetricsTopic {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn problem(&self, arg: Option<&str>) -> Option<String> {
        arg.map(|_| "`metrics` takes nothing after it.".to_string())
    }

    fn open<'a>(
        &'a self,
        state: &'a AppState,
        _user: &'a CurrentUser,
        _arg: Option<&'a str>,
        _after: Option<i64>,
    ) -> BoxFuture<'a, Result<Producer, ApiError>> {
        Box::pin(async move { Ok(samples(state, None)) })
    }
}

/// The `logs` topic of `GET /api/events` (admins): the log tail at `info` and above, or at
/// the level after the colon (`logs:warn`).
pub struct LogsTopic;

impl TopicKind for LogsTopic {
    fn name(&self) -> &'static str {
        "logs"
    }

    fn problem(&self, arg: Option<&str>) -> Option<String> {
        let names: Vec<&str> = LogLevel::ALL.iter().map(|l| l.as_str()).collect();
        arg.filter(|a| LogLevel::parse(a).is_none())
            .map(|a| format!("the level is one of {}, not {a:?}.", names.join(", ")))
    }

    fn open<'a>(
        &'a self,
        _state: &'a AppState,
        user: &'a CurrentUser,
        arg: Option<&'a str>,
        after: Option<i64>,
    ) -> BoxFuture<'a, Result<Producer, ApiError>> {
        Box::pin(async move {
            if !user.user.is_admin() {
                return Err(ApiError::Forbidden(
                    "only admins may read the server log.".into(),
                ));
            }
            let level = arg.and_then(LogLevel::parse).unwrap_or(LogLevel::Info);
            Ok(log_tail(level, after.map(|a| a.max(0) as u64)))
        })
    }
}

/// One stream's place in the log.
struct LogTail {
    level: LogLevel,
    /// The newest record looked at (sent or filtered out).
    last: u64,
    newest: tokio::sync::watch::Receiver<u64>,
}

impl LogTail {
    /// Subscribes, then sends `ready` and the replay.
    async fn start(tx: &sse::Sender, after: Option<u64>, level: LogLevel) -> Result<Self, Gone> {
        // Subscribe first: a record kept between the replay and the wait still wakes us.
        let newest = logs::subscribe();
        // An id past the newest comes from before a restart (ids start again at 1): start
        // afresh rather than wait for the ids to catch up.
        let after = after.filter(|&a| a <= logs::newest_id());
        let limit = if after.is_some() {
            logs::RING_RECORDS
        } else {
            REPLAY
        };
        let replay = logs::after(after, level, limit);
        // `ready` carries the id the replay starts after: a client that drops before the
        // replay is through reconnects from there, and nothing is skipped. Its data says how
        // far the log goes and which process wrote it (ids start again with each one).
        let start = after.unwrap_or_else(|| {
            replay
                .records
                .first()
                .map_or(replay.last_id, |r| r.id.saturating_sub(1))
        });
        let ready = LogReady {
            last_id: replay.last_id,
            level,
            epoch: logs::epoch(),
        };
        tx.send(&Event::json(&ready).id(start).name(LOG_READY_EVENT))
            .await?;
        let mut tail = Self {
            level,
            last: replay.last_id,
            newest,
        };
        tail.send(tx, replay).await?;
        Ok(tail)
    }

    /// Waits for a record newer than the last looked at; `None` when logging is gone.
    async fn wait(&mut self) -> Option<()> {
        let last = self.last;
        self.newest.wait_for(|&id| id > last).await.ok().map(|_| ())
    }

    /// Sends what was kept since the last look.
    async fn send_new(&mut self, tx: &sse::Sender) -> Result<(), Gone> {
        let tail = logs::after(Some(self.last), self.level, logs::RING_RECORDS);
        self.send(tx, tail).await
    }

    async fn send(&mut self, tx: &sse::Sender, tail: logs::Tail) -> Result<(), Gone> {
        if let Some(gap) = &tail.gap {
            tx.send(&Event::json(gap).name(LOG_GAP_EVENT)).await?;
        }
        for record in &tail.records {
            tx.send(&Event::json(&**record).id(record.id).name(LOG_EVENT))
                .await?;
        }
        self.last = self.last.max(tail.last_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_come_from_the_query_and_unknown_ones_are_refused() {
        let q = |v: &str| vec![("level".to_string(), v.to_string())];
        assert_eq!(
            level_param(&q("warn"), "level", Some(LogLevel::Info)).unwrap(),
            Some(LogLevel::Warn)
        );
        assert_eq!(
            level_param(&[], "level", Some(LogLevel::Info)).unwrap(),
            Some(LogLevel::Info)
        );
        assert_eq!(level_param(&[], "logs", None).unwrap(), None);
        let e = level_param(&q("loud"), "level", None).unwrap_err();
        assert!(
            e.to_string().contains("trace, debug, info, warn, error"),
            "{e}"
        );
    }
}
