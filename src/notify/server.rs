//! Notifications: `POST /api/notifications` (admin), my inbox (`GET /api/notifications`,
//! `POST /api/notifications/read`) and `GET /api/notifications/events`.
//!
//! A notification is stored (for its id, the inbox and replay), then published on the bus's
//! notifications topic, addressed to its recipients (`to`; none: everyone): every WebSocket
//! of theirs writes it as a `notification` message and every event stream of theirs sends an
//! SSE `notification` event. A stream that reconnects with `Last-Event-ID`, or that fell
//! behind the bus, reads back everything of its user's it missed (`super::replay`), a `gap`
//! event first when some are no longer kept: never a silent loss.
//!
//! Tests: `tests/it/notify.rs` (per-user delivery, inbox, replay), `tests/it/chat.rs`.

use futures::future::BoxFuture;

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{get, post},
    Json, Router,
};

use super::replay::{self, wire};
use crate::{
    protocol::chat::{
        Inbox, InboxItem, MarkNotificationsRead, NotificationSent, SendNotification, ServerMsg,
        NOTIFICATION_KINDS, NOTIFICATION_MAX_CHARS,
    },
    server::{
        access::identity::{CurrentUser, Publisher, StreamUser},
        clock,
        error::number_param,
        fanout::bus::{Envelope, Received, NOTIFICATIONS},
        fanout::sse::{self, Event, SseOptions},
        fanout::topics::{Producer, TopicKind},
        fanout::ws,
        observe::metrics,
        ApiError, ApiJson, AppState,
    },
};

/// Notifications kept (the oldest go beyond it; a resume from before them hears `gap`).
pub const KEEP: i64 = 10_000;
/// Longest title, in characters.
const TITLE_MAX_CHARS: usize = 100;
/// Recipients one notification may name at most.
pub const RECIPIENTS_MAX: usize = 100;
/// Inbox entries per page by default, and at most.
const INBOX_DEFAULT: i64 = 50;
const INBOX_MAX: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/notifications", post(send).get(inbox))
        .route("/api/notifications/read", post(mark_read))
        .route("/api/notifications/events", get(events))
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request("invalid_notification", message)
}

/// Checks a request; returns the title to use.
fn checked(body: &SendNotification) -> Result<String, ApiError> {
    if !NOTIFICATION_KINDS.contains(&body.kind.as_str()) {
        return Err(bad(format!(
            "`kind` must be one of {}, not {:?}.",
            NOTIFICATION_KINDS.join(", "),
            body.kind
        )));
    }
    let chars = body.message.chars().count();
    if body.message.trim().is_empty() {
        return Err(bad("`message` needs some text.".into()));
    }
    if chars > NOTIFICATION_MAX_CHARS {
        return Err(bad(format!(
            "`message` is at most {NOTIFICATION_MAX_CHARS} characters; this one has {chars}."
        )));
    }
    if let Some(to) = &body.to {
        if to.is_empty() {
            return Err(bad(
                "`to` names at least one username; leave it out to send to everyone.".into(),
            ));
        }
        if to.len() > RECIPIENTS_MAX {
            return Err(bad(format!(
                "`to` names at most {RECIPIENTS_MAX} usernames; this one names {}.",
                to.len()
            )));
        }
    }
    let title = match &body.title {
        Some(t) if t.chars().count() > TITLE_MAX_CHARS => {
            return Err(bad(format!(
                "`title` is at most {TITLE_MAX_CHARS} characters."
            )))
        }
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => match body.kind.as_str() {
            "deploy" => "Deploy".into(),
            "maintenance" => "Maintenance".into(),
            _ => "Info".into(),
        },
    };
    Ok(title)
}

/// `POST /api/notifications`.
async fn send(
    State(state): State<AppState>,
    publisher: Publisher,
    ApiJson(body): ApiJson<SendNotification>,
) -> Result<Json<NotificationSent>, ApiError> {
    // An admin, or another server by its API key.
    let publisher = publisher.admin_or_key()?;
    let title = checked(&body)?;
    let to = match &body.to {
        None => None,
        Some(names) => {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            let asked: Vec<&str> = names.iter().map(String::as_str).collect();
            let unknown = state.store.names_without_accounts(&asked).await?;
            if !unknown.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "No account is named {}: `to` names usernames.",
                    unknown.join(", ")
                )));
            }
            Some(names)
        }
    };
    let now = clock::now_ms();
    let row = state
        .store
        .create_notification(
            &body.kind,
            &title,
            body.message.trim(),
            publisher.name(),
            now,
            to.as_deref(),
            KEEP,
        )
        .await?;
    let notification = wire(&row);
    let msg = ServerMsg::Notification(notification.clone());
    metrics::record_messages(1);
    let mut envelope = Envelope::new(
        NOTIFICATIONS,
        row.id,
        "notification",
        serde_json::to_string(&msg).expect("serializable"),
    );
    if let Some(to) = to {
        envelope = envelope.to_users(to);
    }
    state.bus.publish(envelope);
    Ok(Json(NotificationSent {
        sent: true,
        connection_count: ws::live_connections()
            + sse::live_connections()
            + state.bus.connections_elsewhere().await,
        notification,
    }))
}

/// `GET /api/notifications?after=&limit=`: mine, oldest first (without `after`: the latest),
/// each with whether I read it, and how many are unread in all.
async fn inbox(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Inbox>, ApiError> {
    let mut after = None;
    let mut limit = INBOX_DEFAULT;
    for (k, v) in &query {
        match k.as_str() {
            "after" if !v.trim().is_empty() => {
                after = Some(number_param("after", v, 0..=i64::MAX)?)
            }
            "limit" => limit = number_param("limit", v, 1..=INBOX_MAX)?,
            _ => {}
        }
    }
    let me = &user.user.username;
    let store = &state.store;
    let (read_up_to, unread) = store.inbox_state(me).await?;
    let (rows, gap) = match after {
        None => (store.latest_notifications_for(me, limit).await?, false),
        Some(after) => {
            let gap = store
                .first_notification_id()
                .await?
                .is_some_and(|kept| after + 1 < kept);
            (store.notifications_for(me, after, limit).await?, gap)
        }
    };
    Ok(Json(Inbox {
        notifications: rows
            .iter()
            .map(|r| InboxItem {
                notification: wire(r),
                read: r.id <= read_up_to,
            })
            .collect(),
        unread,
        gap,
    }))
}

/// `POST /api/notifications/read {"upTo"}` → 204; my other connections hear
/// `notifications-read`.
async fn mark_read(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<MarkNotificationsRead>,
) -> Result<StatusCode, ApiError> {
    if body.up_to < 0 {
        return Err(ApiError::bad_parameter(
            "upTo",
            "is a notification id, 0 or more.",
        ));
    }
    let me = &user.user.username;
    let up_to = state.store.mark_notifications_read(me, body.up_to).await?;
    let msg = ServerMsg::NotificationsRead { up_to };
    state.bus.publish(
        Envelope::new(
            NOTIFICATIONS,
            0,
            "notifications-read",
            serde_json::to_string(&msg).expect("serializable"),
        )
        .to_users(vec![me.clone()]),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/notifications/events`: for signed-in users (a session or a stream token, like
/// every `/api/*` route); every page they open shows what arrives as toasts.
async fn events(
    State(state): State<AppState>,
    user: StreamUser,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let asked = sse::last_event_id(&headers, &query)?;
    let produce = open(&state, &user.0, asked).await?;
    let options = SseOptions {
        send_limit: Some(state.config.slow_client),
        ..SseOptions::for_stream(&state, &user.0, vec!["notifications".into()])?
    };
    Ok(sse::stream(options, state.shutdown.clone(), produce))
}

/// The `notifications` topic of `GET /api/events`: the same stream as
/// `GET /api/notifications/events`.
pub struct NotificationsTopic;

impl TopicKind for NotificationsTopic {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn problem(&self, arg: Option<&str>) -> Option<String> {
        arg.map(|_| "`notifications` takes nothing after it.".to_string())
    }

    fn open<'a>(
        &'a self,
        state: &'a AppState,
        user: &'a CurrentUser,
        _arg: Option<&'a str>,
        after: Option<i64>,
    ) -> BoxFuture<'a, Result<Producer, ApiError>> {
        Box::pin(open(state, user, after))
    }
}

/// Subscribes `user` to their notifications after `asked` (`None`: from now), and returns
/// the producer that sends them: a `ready` event first when starting from now (its id is
/// where "now" is), then the replay, then live ones; also `notifications-read`, `chat-read`
/// and `room-activity` of theirs.
async fn open(
    state: &AppState,
    user: &CurrentUser,
    asked: Option<i64>,
) -> Result<Producer, ApiError> {
    // A first connect starts from now. The id is read before subscribing and the replay
    // below covers anything stored in between, so nothing falls through the gap.
    let after = match asked {
        Some(a) => a,
        None => state.store.last_notification_id().await?,
    };
    let mut subscription = state.bus.subscribe(NOTIFICATIONS);
    let store = state.store.clone();
    let me = user.user.username.clone();
    Ok(Box::new(move |tx: sse::Sender| {
        Box::pin(async move {
            if asked.is_none() {
                // Say where "now" is with an id: the browser sends it back when it reconnects,
                // so what was sent while it was away is replayed, not lost.
                let ready = Event::new("{}").id(after).name("ready");
                if tx.send(&ready).await.is_err() {
                    return;
                }
            }
            let Ok(mut last) = read_back(&store, &tx, &me, after).await else {
                return;
            };
            loop {
                let received = tokio::select! {
                    r = subscription.recv() => r,
                    _ = tx.gone() => return,
                };
                match received {
                    Received::Message(m) if !m.is_for(&me) => {}
                    Received::Message(m) if m.kind == "notification" => {
                        if m.id > last {
                            let event = Event::new(m.text()).id(m.id).name("notification");
                            if tx.send(&event).await.is_err() {
                                return;
                            }
                            last = m.id;
                        }
                    }
                    Received::Message(m)
                        if matches!(
                            m.kind.as_str(),
                            "notifications-read" | "room-activity" | "chat-read"
                        ) =>
                    {
                        if tx.send(&Event::new(m.text()).name(&m.kind)).await.is_err() {
                            return;
                        }
                    }
                    Received::Message(_) => {}
                    Received::Lagged(n) => {
                        // Fell behind the bus: read back what this user missed, not only count it.
                        ws::record_drops(n);
                        match read_back(&store, &tx, &me, last).await {
                            Ok(l) => last = l,
                            Err(()) => return,
                        }
                    }
                    Received::Closed => return,
                }
            }
        }) as BoxFuture<'static, ()>
    }))
}

/// Sends `user`'s notifications after `after` (a `gap` first when some are no longer kept), a
/// page at a time; returns the last id sent (or `after`).
async fn read_back(
    store: &crate::server::storage::Store,
    tx: &sse::Sender,
    user: &str,
    after: i64,
) -> Result<i64, ()> {
    let mut last = after;
    let mut first = true;
    loop {
        let page = match replay::page(store, user, last, first).await {
            Ok(p) => p,
            Err(e) => {
                // Without them the stream would skip some: end it, and the browser resumes.
                tracing::warn!(error = %e, "replaying notifications failed");
                return Err(());
            }
        };
        first = false;
        if let Some(gap) = &page.gap {
            let data = serde_json::to_string(gap).expect("serializable");
            tx.send(&Event::new(data).name("gap"))
                .await
                .map_err(|_| ())?;
        }
        for row in &page.rows {
            let msg = ServerMsg::Notification(wire(row));
            let event = Event::new(serde_json::to_string(&msg).expect("serializable"))
                .id(row.id)
                .name("notification");
            tx.send(&event).await.map_err(|_| ())?;
        }
        last = page.last_id;
        if !page.more {
            return Ok(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: &str, message: &str) -> SendNotification {
        SendNotification {
            kind: kind.into(),
            message: message.into(),
            title: None,
            to: None,
        }
    }

    #[test]
    fn requests_are_checked_and_titled() {
        assert_eq!(checked(&req("deploy", "v2 is out")).unwrap(), "Deploy");
        assert!(checked(&req("party", "x"))
            .unwrap_err()
            .to_string()
            .contains("`kind`"));
        assert!(checked(&req("info", "  ")).is_err());
        assert!(checked(&req("info", &"x".repeat(501))).is_err());
        let titled = SendNotification {
            title: Some(" Heads up ".into()),
            ..req("info", "hi")
        };
        assert_eq!(checked(&titled).unwrap(), "Heads up");
        let nobody = SendNotification {
            to: Some(vec![]),
            ..req("info", "hi")
        };
        assert!(checked(&nobody).unwrap_err().to_string().contains("`to`"));
    }
}
