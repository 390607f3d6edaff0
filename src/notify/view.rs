//! Toasts on every page, and `/notifications`, where an admin sends one.
//!
//! `<Toasts/>` sits in the app shell: in the browser, while someone is signed in, it opens the
//! one notification stream the page holds (the stream needs a session) and shows each
//! notification for ten seconds (or until closed); it closes the stream at logout. Text is
//! rendered as text. Tests: `end2end/tests/chat.spec.ts`.

use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use send_wrapper::SendWrapper;

use super::{client, notify_role};
use crate::{
    auth::Session,
    protocol::chat::{Notification, SendNotification, NOTIFICATION_KINDS},
};

/// Toasts shown at once at most (the newest).
const TOASTS_MAX: usize = 5;
/// How long a toast stays.
const TOAST_MS: u64 = 10_000;

/// The notifications as toasts, on every page.
#[component]
pub fn Toasts() -> impl IntoView {
    let toasts = RwSignal::new(Vec::<Notification>::new());
    let stream = StoredValue::new(None::<SendWrapper<crate::events::EventStream>>);
    let session = Session::expect();
    let who = Memo::new(move |_| session.user().map(|u| u.username));
    Effect::new(move |_| {
        // Follows the session: signed out, no stream (it would only be refused); another user,
        // a fresh stream.
        let signed_in = who.get().is_some();
        stream.set_value(None);
        if !signed_in {
            return;
        }
        let opened = client::open(move |n| {
            if toasts.is_disposed() {
                return;
            }
            let id = n.id;
            toasts.update(|t| {
                if !t.iter().any(|x| x.id == id) {
                    t.push(n);
                    if t.len() > TOASTS_MAX {
                        t.remove(0);
                    }
                }
            });
            set_timeout(
                move || {
                    if !toasts.is_disposed() {
                        toasts.update(|t| t.retain(|x| x.id != id));
                    }
                },
                std::time::Duration::from_millis(TOAST_MS),
            );
        });
        if let Ok(s) = opened {
            stream.set_value(Some(SendWrapper::new(s)));
        }
    });
    on_cleanup(move || stream.set_value(None));
    view! {
        <div class="toasts" aria-live="polite" data-testid="toasts">
            <For each=move || toasts.get() key=|n| n.id let:n>
                <div class="toast" role="status" data-kind=n.kind.clone() data-id=n.id.to_string()>
                    <strong>{n.title.clone()}</strong>
                    <span class="toast-message">{n.message.clone()}</span>
                    <button type="button" aria-label="Dismiss"
                        on:click=move |_| toasts.update(|t| t.retain(|x| x.id != n.id))>"×"</button>
                </div>
            </For>
        </div>
    }
}

/// `/notifications`: what notifications are, and the admin's form.
#[component]
pub fn NotifyPage() -> impl IntoView {
    let role = Resource::new(|| (), |_| notify_role());
    view! {
        <section class="card">
            <h1>"Notifications"</h1>
            <p class="transport">
                "Server-Sent Events and WebSockets: a notification goes out once to every "
                "open WebSocket and every subscriber of the notification stream; the toasts on "
                "every page ride that one SSE stream, since a page only listens."
            </p>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || role.get().map(|r| match r {
                    Ok(Some(true)) => view! { <NotifyForm/> }.into_any(),
                    Ok(Some(false)) => view! {
                        <p data-testid="notify-admins-only">"Only admins can send notifications. Those sent appear here as toasts."</p>
                    }.into_any(),
                    Ok(None) => view! {
                        <p data-testid="notify-signin"><a href="/login">"Sign in"</a> " as an admin to send notifications."</p>
                    }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

/// The admin's form.
#[component]
fn NotifyForm() -> impl IntoView {
    let kind = RwSignal::new("info".to_string());
    let title = RwSignal::new(String::new());
    let message = RwSignal::new(String::new());
    let result = RwSignal::new(None::<Result<String, String>>);
    let busy = RwSignal::new(false);
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let request = SendNotification {
            kind: kind.get_untracked(),
            message: message.get_untracked(),
            title: Some(title.get_untracked()).filter(|t| !t.trim().is_empty()),
            to: None,
        };
        busy.set(true);
        spawn_local(async move {
            let sent = client::send(&request).await;
            if busy.is_disposed() {
                return;
            }
            result.set(Some(sent.map(|s| {
                format!(
                    "Sent to {} live connection{}.",
                    s.connection_count,
                    if s.connection_count == 1 { "" } else { "s" }
                )
            })));
            if matches!(result.get_untracked(), Some(Ok(_))) {
                message.set(String::new());
            }
            busy.set(false);
        });
    };
    view! {
        <form class="export-form" on:submit=on_submit data-testid="notify-form">
            <label>"Kind"
                <select name="kind" on:change=move |ev| kind.set(event_target_value(&ev)) prop:value=move || kind.get()>
                    {NOTIFICATION_KINDS.iter().map(|k| view! { <option value=*k>{*k}</option> }).collect_view()}
                </select>
            </label>
            <label>"Title" <input name="title" placeholder="(the kind)" maxlength="100" bind:value=title/></label>
            <label class="wide">"Message" <input name="message" maxlength="500" bind:value=message/></label>
            <div class="buttons">
                <button type="submit" disabled=move || busy.get()>"Send to everyone"</button>
            </div>
        </form>
        {move || result.get().map(|r| match r {
            Ok(s) => view! { <p class="ok" role="status" data-testid="notify-result">{s}</p> }.into_any(),
            Err(e) => view! { <p class="error" role="alert" data-testid="notify-error">{e}</p> }.into_any(),
        })}
    }
}
