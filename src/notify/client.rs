//! The browser half of notifications: the page-wide stream behind the toasts (on the shared
//! [`EventStream`]), and the admin's send. Compiled everywhere; only ever called in the
//! browser.

use crate::{
    events::EventStream,
    fetch::post_json,
    protocol::chat::{Notification, NotificationSent, SendNotification, ServerMsg},
};

/// `POST /api/notifications`.
pub async fn send(request: &SendNotification) -> Result<NotificationSent, String> {
    post_json("/api/notifications", request).await
}

/// Opens `/api/notifications/events`; `on_notification` hears each one. The stream closes
/// when the returned handle is dropped; the browser reconnects by itself and, with
/// `Last-Event-ID`, gets what it missed meanwhile.
pub fn open(on_notification: impl Fn(Notification) + 'static) -> Result<EventStream, String> {
    EventStream::open(
        "/api/notifications/events",
        &["notification"],
        move |received| {
            if let Ok(ServerMsg::Notification(n)) =
                serde_json::from_str::<ServerMsg>(&received.data)
            {
                on_notification(n);
            }
        },
        |_| {},
    )
}
