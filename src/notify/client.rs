//! The browser half of notifications: the page-wide stream behind the toasts, and the
//! admin's send. Compiled everywhere; only ever called in the browser.

use wasm_bindgen::{closure::Closure, JsCast};
use web_sys::{EventSource, MessageEvent};

use crate::{
    fetch::post_json,
    protocol::chat::{Notification, NotificationSent, SendNotification, ServerMsg},
};

/// `POST /api/notifications`.
pub async fn send(request: &SendNotification) -> Result<NotificationSent, String> {
    post_json("/api/notifications", request).await
}

/// The open notification stream; closed when dropped. The browser reconnects by itself
/// and, with `Last-Event-ID`, gets what it missed meanwhile.
pub struct Stream {
    source: EventSource,
    _listener: Closure<dyn FnMut(web_sys::Event)>,
}

impl Stream {
    /// Opens `/api/notifications/events`; `on_notification` hears each one.
    pub fn open(on_notification: impl Fn(Notification) + 'static) -> Result<Self, String> {
        let source = EventSource::new("/api/notifications/events")
            .map_err(|_| "This browser cannot open an event stream.".to_string())?;
        let listener = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            let data = e
                .dyn_ref::<MessageEvent>()
                .and_then(|m| m.data().as_string());
            if let Some(Ok(ServerMsg::Notification(n))) =
                data.map(|d| serde_json::from_str::<ServerMsg>(&d))
            {
                on_notification(n);
            }
        });
        source
            .add_event_listener_with_callback("notification", listener.as_ref().unchecked_ref())
            .map_err(|_| "This browser refused an event listener.".to_string())?;
        Ok(Self {
            source,
            _listener: listener,
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.source.close();
    }
}
