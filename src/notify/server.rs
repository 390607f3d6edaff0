//! `POST /api/notifications` (admin) and `GET /api/notifications/events`.
//!
//! A notification is stored (for its id, and for replay), then published on the bus's
//! notifications topic: every WebSocket writes it as a `notification` message and every
//! subscriber of the event stream gets an SSE `notification` event. A stream that
//! reconnects with `Last-Event-ID` first gets what it missed (a few at most).
//!
//! Tests: `tests/it/chat.rs` (notifications reach sockets and streams).

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::Response,
    routing::{get, post},
    Json, Router,
};

use crate::{
    notify::store::NotificationRow,
    protocol::chat::{
        Notification, NotificationSent, SendNotification, ServerMsg, NOTIFICATION_KINDS,
        NOTIFICATION_MAX_CHARS,
    },
    server::{
        access::identity::{AdminUser, StreamUser},
        clock,
        fanout::bus::{Envelope, Received, NOTIFICATIONS},
        fanout::sse::{self, Event, SseOptions},
        fanout::ws,
        observe::metrics,
        ApiError, ApiJson, AppState,
    },
};

/// Missed notifications replayed to a reconnecting stream at most.
const REPLAY_MAX: i64 = 20;
/// Longest title, in characters.
const TITLE_MAX_CHARS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/notifications", post(send))
        .route("/api/notifications/events", get(events))
}

fn wire(row: &NotificationRow) -> Notification {
    Notification {
        id: row.id,
        kind: row.kind.clone(),
        title: row.title.clone(),
        message: row.message.clone(),
        timestamp: clock::rfc3339(row.created_at),
    }
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
    AdminUser(admin): AdminUser,
    ApiJson(body): ApiJson<SendNotification>,
) -> Result<Json<NotificationSent>, ApiError> {
    let title = checked(&body)?;
    let now = clock::now_ms();
    let row = state
        .store
        .create_notification(
            &body.kind,
            &title,
            body.message.trim(),
            &admin.user.username,
            now,
        )
        .await?;
    let notification = wire(&row);
    let msg = ServerMsg::Notification(notification.clone());
    metrics::record_messages(1);
    state.bus.publish(Envelope::new(
        NOTIFICATIONS,
        row.id,
        "notification",
        serde_json::to_string(&msg).expect("serializable"),
    ));
    Ok(Json(NotificationSent {
        sent: true,
        connection_count: ws::live_connections()
            + sse::live_connections()
            + state.bus.connections_elsewhere().await,
        notification,
    }))
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
    // A first connect starts from now. The id is read before subscribing and the replay
    // below covers anything stored in between, so nothing falls through the gap.
    let after = match asked {
        Some(a) => a,
        None => state.store.last_notification_id().await?,
    };
    let mut subscription = state.bus.subscribe(NOTIFICATIONS);
    let store = state.store.clone();
    let options = SseOptions {
        send_limit: Some(state.config.slow_client),
        ..SseOptions::for_user(&state, &user.0)?
    };
    Ok(sse::stream(
        options,
        state.shutdown.clone(),
        move |tx| async move {
            if asked.is_none() {
                // Say where "now" is with an id: the browser sends it back when it reconnects,
                // so what was sent while it was away is replayed, not lost.
                let ready = Event::new("{}").id(after).name("ready");
                if tx.send(&ready).await.is_err() {
                    return;
                }
            }
            let mut last = after;
            let missed = match store.notifications_after(after, REPLAY_MAX).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "replaying notifications failed");
                    Vec::new()
                }
            };
            for row in missed {
                let msg = ServerMsg::Notification(wire(&row));
                let event = Event::new(serde_json::to_string(&msg).expect("serializable"))
                    .id(row.id)
                    .name("notification");
                if tx.send(&event).await.is_err() {
                    return;
                }
                last = row.id;
            }
            loop {
                let received = tokio::select! {
                    r = subscription.recv() => r,
                    _ = tx.gone() => return,
                };
                match received {
                    Received::Message(m) if m.id > last => {
                        let event = Event::new(m.text()).id(m.id).name("notification");
                        if tx.send(&event).await.is_err() {
                            return;
                        }
                        last = m.id;
                    }
                    Received::Message(_) => {}
                    Received::Lagged(n) => ws::record_drops(n),
                    Received::Closed => return,
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: &str, message: &str) -> SendNotification {
        SendNotification {
            kind: kind.into(),
            message: message.into(),
            title: None,
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
    }
}
