//! The browser half of notifications: the page-wide stream behind the toasts (on the shared
//! [`EventStream`]), and the admin's send. Compiled everywhere; only ever called in the
//! browser.

use crate::{
    events::EventStream,
    fetch::{get_json, post_json, send as send_request, Method},
    protocol::chat::{
        Inbox, MarkNotificationsRead, Notification, NotificationSent, SendNotification, ServerMsg,
    },
};

/// What the page-wide stream brings.
#[derive(Clone, Debug, PartialEq)]
pub enum Heard {
    /// A notification for me (to everyone or to me).
    New(Notification),
    /// My inbox was read up to this id (in this tab or another).
    Read(i64),
    /// A room I may read has messages up to this id (room, id, private).
    Activity(String, i64, bool),
}

/// `GET /api/notifications?limit=`: my latest notifications and how many are unread.
pub async fn inbox(limit: u32) -> Result<Inbox, String> {
    get_json(&format!("/api/notifications?limit={limit}")).await
}

/// `POST /api/notifications/read {"upTo"}`.
pub async fn mark_read(up_to: i64) -> Result<(), String> {
    send_request(
        Method::Post,
        "/api/notifications/read",
        Some(&MarkNotificationsRead { up_to }),
    )
    .await
}

/// `POST /api/notifications`.
pub async fn send(request: &SendNotification) -> Result<NotificationSent, String> {
    post_json("/api/notifications", request).await
}

/// Follows the `notifications` topic of the page's shared stream (`/api/events`); `on_heard`
/// hears each notification and each inbox mark. It stops when the returned handle is
/// dropped; the browser reconnects by itself and, with `Last-Event-ID`, gets what it missed
/// meanwhile.
pub fn open(on_heard: impl Fn(Heard) + 'static) -> Result<EventStream, String> {
    EventStream::topic(
        "notifications",
        None,
        &["notification", "notifications-read", "room-activity"],
        move |received| match serde_json::from_str::<ServerMsg>(&received.data) {
            Ok(ServerMsg::Notification(n)) => on_heard(Heard::New(n)),
            Ok(ServerMsg::NotificationsRead { up_to }) => on_heard(Heard::Read(up_to)),
            Ok(ServerMsg::RoomActivity {
                room,
                last_message_id,
                private,
            }) => on_heard(Heard::Activity(room, last_message_id, private)),
            _ => {}
        },
        |_| {},
    )
}
